//! The `Store`: typed cluster state that every component reads and watches.
//!
//! Two backends implement it: [`local::LocalStore`] (in memory, persisted to a state
//! directory; local mode) and [`kube::KubeStore`] (the Kubernetes API). Controllers, the
//! mirror and the CLI are generic over [`Store`] and never know which one they hold.
//!
//! A watch yields [`WatchEvent::Restarted`] with the full current list first (and again
//! whenever it had to resynchronise), then [`WatchEvent::Applied`] / [`WatchEvent::Deleted`]
//! for each change, in order.

pub mod kube;
pub mod local;

use std::future::Future;

use futures::stream::BoxStream;

use crate::core::validate_object;
use crate::kinds::{Kind, Object, ObjectKey};

/// One change seen by a watch.
#[derive(Clone, Debug)]
pub enum WatchEvent<K> {
    /// The complete current set: replace everything known so far.
    Restarted(Vec<K>),
    /// An object was created or changed.
    Applied(K),
    /// An object was deleted (its last state).
    Deleted(K),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The batch holds an invalid object; nothing was applied.
    #[error("{key} is invalid, nothing was applied: {problems}")]
    Invalid {
        /// The first invalid object.
        key: ObjectKey,
        /// Its problems, one per line.
        problems: String,
    },
    /// The object's namespace does not exist.
    #[error(
        "namespace {namespace:?} not found (needed by {key}); create the Namespace first or in the same apply"
    )]
    NamespaceNotFound {
        /// The missing namespace.
        namespace: String,
        /// The object that needs it.
        key: ObjectKey,
    },
    /// Reading or writing the state directory failed.
    #[error("state directory {path}: {action}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state directory holds something that cannot be read back.
    #[error("state directory {path} is damaged: {detail}; move it aside to start from an empty state")]
    Corrupt {
        /// The file involved.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// Another process holds the state directory.
    #[error(
        "state directory {path} is in use by another strait process; stop it (strait down) or choose another --state-dir"
    )]
    Locked {
        /// The directory.
        path: String,
    },
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: ::kube::Error,
    },
    /// A local cluster's public API (another process's store) failed a request.
    #[error("cluster API at {address}: {action}: {detail}")]
    Remote {
        /// Where the API is.
        address: String,
        /// What was being done.
        action: String,
        /// What went wrong, and what to check.
        detail: String,
    },
    /// An object returned by the API could not be read as its kind.
    #[error("cannot read {what} returned by the API: {detail}")]
    Decode {
        /// Which object.
        what: String,
        /// What is wrong.
        detail: String,
    },
}

/// Typed resources: get, list, watch, apply, delete.
pub trait Store: Clone + Send + Sync + 'static {
    /// One object, if it exists. `namespace` is ignored for cluster-scoped kinds.
    fn get<K: Kind>(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<K>, StoreError>> + Send;

    /// Every object of a kind, in one namespace or (with `None`) in all.
    fn list<K: Kind>(
        &self,
        namespace: Option<&str>,
    ) -> impl Future<Output = Result<Vec<K>, StoreError>> + Send;

    /// Every object of a kind (all namespaces), then each change.
    fn watch<K: Kind>(&self) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>>;

    /// Creates or replaces objects; returns them as stored. Every object is validated
    /// first, and an invalid batch changes nothing.
    fn apply(&self, objects: Vec<Object>) -> impl Future<Output = Result<Vec<Object>, StoreError>> + Send;

    /// Deletes one object; returns its last state, or `None` if it did not exist.
    fn delete(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<Object>, StoreError>> + Send;

    /// Writes the `status` a controller reports for `object` (e.g. a Link's mirrored
    /// services). The default applies the object whole, as local stores keep a status sent
    /// with an object; the Kubernetes store writes the status subresource, which an apply
    /// of the object would not touch. Callers read the object just before, so its spec is
    /// the current one.
    fn apply_status(&self, object: Object) -> impl Future<Output = Result<(), StoreError>> + Send {
        let applied = self.apply(vec![object]);
        async move { applied.await.map(drop) }
    }
}

/// Refuses a batch if any object has a validation problem.
pub(crate) fn validate_batch(objects: &[Object]) -> Result<(), StoreError> {
    for o in objects {
        let problems = validate_object(o);
        if !problems.is_empty() {
            return Err(StoreError::Invalid {
                key: o.key(),
                problems: problems
                    .0
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
    }
    Ok(())
}
