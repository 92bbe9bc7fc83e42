//! The per-cluster control plane (`strait controller`): destination, identity and policy
//! over the linkerd2-proxy-api contract, the proxy injector and the public API.
//!
//! Every service reads cluster state through a `strait_api::Store` and never knows whether
//! it runs against Kubernetes or a local state directory.

pub mod admin;
pub mod api;
pub mod discovery;
pub mod endpoints;
pub mod identity;
pub mod policy;
pub mod run;
pub mod streams;
