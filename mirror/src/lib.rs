//! The service mirror (`strait mirror`): per-link watcher of a remote cluster's exported
//! services, mirror Services and their gateway endpoints, federated services
//! ([`federated`]), gateway probes, the catalog a gateway serves to linked clusters and
//! the store that reads it through the link ([`catalog`]), and the cluster DNS of local mode.
//!
//! Everything here is generic over the [`strait_api::Store`] of both sides: the mirror reads
//! the target cluster through one store and writes the local cluster through another, and
//! never knows whether either is Kubernetes or a local cluster. Decisions are pure
//! ([`reconcile`]); [`controller`] only feeds them state and carries out their plans.

pub mod admin;
pub mod catalog;
pub mod controller;
pub mod dns;
pub mod failover;
pub mod federated;
pub mod link;
pub mod probe;
pub mod reconcile;
pub mod selector;

pub use controller::{LinkHandle, MirrorOptions, run_link};
pub use link::{LinkConfig, LinkError};
pub use probe::{GatewayHealth, ProbeConfig};

/// The label value `mirror.linkerd.io/mirrored-service` and friends take.
pub(crate) const TRUE: &str = "true";
