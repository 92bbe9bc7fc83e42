//! One module per command family.

pub mod apply;
pub mod controller;
pub mod get;
pub mod inject;
pub mod install;
pub mod pending;
pub mod version;

use std::process::ExitCode;

use strait_api::store::kube::KubeStore;
use strait_api::store::local::LocalStore;

use crate::Global;
use crate::exit;

/// Opens the cluster state a command works on: `--state-dir`, or explains what to pass.
pub fn open_store(g: &Global) -> Result<LocalStore, ExitCode> {
    if let Some(cluster) = &g.cluster {
        eprintln!(
            "error: --cluster {cluster}: talking to a running local cluster needs `strait up`, which arrives with issue #6.\n\
             To work on a cluster's state directly, pass --state-dir DIR instead."
        );
        return Err(exit::code(exit::NOT_AVAILABLE));
    }
    let Some(dir) = &g.state_dir else {
        eprintln!(
            "error: no cluster selected.\n\
             Pass --state-dir DIR (or set STRAIT_STATE_DIR) to use a local cluster state directory; it is created if missing.\n\
             To only validate manifests, use `strait apply --dry-run=client -f FILE`."
        );
        return Err(exit::code(exit::FAILURE));
    };
    LocalStore::open(dir).map_err(|e| {
        eprintln!("error: {e}");
        exit::code(exit::FAILURE)
    })
}

/// The state of the cluster a command reads: a local state directory, or Kubernetes.
pub enum ClusterStore {
    /// `--state-dir DIR` (or `--cluster`, once `strait up` runs clusters).
    Local(LocalStore),
    /// The Kubernetes API of the current kubeconfig context (or the pod's service account).
    Kube(KubeStore),
}

/// Opens the cluster a command reads: `--state-dir` when given, otherwise the Kubernetes
/// cluster of the kubeconfig, as `linkerd upgrade` reads it.
pub fn open_cluster(g: &Global, rt: &tokio::runtime::Runtime) -> Result<ClusterStore, ExitCode> {
    if g.cluster.is_some() || g.state_dir.is_some() {
        return open_store(g).map(ClusterStore::Local);
    }
    match rt.block_on(kube::Client::try_default()) {
        Ok(client) => Ok(ClusterStore::Kube(KubeStore::new(client))),
        Err(e) => {
            eprintln!(
                "error: no Kubernetes cluster to read ({e}).\n\
                 Check your kubeconfig, or pass --state-dir DIR to use a local cluster's state directory."
            );
            Err(exit::code(exit::FAILURE))
        }
    }
}

/// A current-thread runtime for commands that talk to a store.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}
