//! The per-cluster control plane (`strait controller`): destination, identity and policy
//! over the linkerd2-proxy-api contract, the proxy injector and the public API, and the
//! manifests that install it.
//!
//! Built by issue #3 over the `Store` of `strait-api` and the issuer of `strait-identity`.
//! [`inject`] is the proxy injector (CLI and admission webhook); [`install`] renders the
//! control plane's Kubernetes manifests for `strait install` and `strait upgrade`.

pub mod inject;
pub mod install;
