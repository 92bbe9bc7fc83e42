//! Traffic policy from the control plane: outbound routes, retries, timeouts and failure
//! accrual (`OutboundPolicies`), ServiceProfile routes and retry budgets
//! (`Destination/GetProfile`), and inbound authorization (`InboundServerPolicies`).
//!
//! Each policy arrives as protobuf and is converted once, when it changes, into the typed
//! structures here ([`outbound`], [`profile`], [`inbound`]); a message that does not read
//! is refused with an error naming the object, the field and what was expected, and the
//! previous policy stays in force. Decisions on the request path are pure functions over
//! those snapshots ([`matching`], [`retry`], [`accrual`], [`inbound::decide`]); the thin
//! async part that follows the streams lives in [`client`].

pub mod accrual;
pub mod authz;
pub mod client;
pub mod inbound;
pub mod matching;
pub mod outbound;
pub mod profile;
pub mod retry;

use std::time::Duration;

/// A policy message that cannot be used: which object, which field, what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {problem}")]
pub struct PolicyError {
    /// The policy object (`outbound policy for myapp.production.svc.cluster.local:80`,
    /// `httproute policy.linkerd.io production/myapp-routes`).
    pub object: String,
    /// The field (`rules[1].matches[0].path.regex`).
    pub field: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

impl PolicyError {
    pub(crate) fn new(object: &str, field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            object: object.to_string(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A protobuf duration as a std one; negative or absurd durations are errors.
pub(crate) fn duration(
    object: &str,
    field: &str,
    d: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, PolicyError> {
    match d {
        None => Ok(None),
        Some(d) => Duration::try_from(*d).map(Some).map_err(|_| {
            PolicyError::new(
                object,
                field,
                format!(
                    "{}s {}ns is not a duration; expected a non-negative one",
                    d.seconds, d.nanos
                ),
            )
        }),
    }
}
