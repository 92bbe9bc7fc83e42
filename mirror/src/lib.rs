//! The service mirror (`strait mirror`): per-link watcher of a remote cluster's exported
//! services, mirror Services and endpoints, federated services, and cluster DNS.
//!
//! Built by issue #5 over the `Store` of `strait-api`.
