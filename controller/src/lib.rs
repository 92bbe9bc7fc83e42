//! The per-cluster control plane (`strait controller`): destination, identity and policy
//! over the linkerd2-proxy-api contract, the proxy injector and the public API.
//!
//! Built by issue #3 over the `Store` of `strait-api` and the issuer of `strait-identity`.
