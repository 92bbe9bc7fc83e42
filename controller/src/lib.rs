//! The per-cluster control plane (`strait controller`): destination, identity and policy
//! over the linkerd2-proxy-api contract, the proxy injector and the public API, and the
//! manifests that install it.
//!
//! Every service reads cluster state through a `strait_api::Store` and never knows whether
//! it runs against Kubernetes or a local state directory. [`inject`] is the proxy injector
//! (CLI and admission webhook); [`install`] renders the control plane's Kubernetes
//! manifests for `strait install` and `strait upgrade`.

pub mod admin;
pub mod api;
pub mod check;
pub mod discovery;
pub mod endpoints;
pub mod identity;
pub mod inject;
pub mod install;
pub mod pods;
pub mod policy;
pub mod run;
pub mod streams;
#[cfg(test)]
mod test_support;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
