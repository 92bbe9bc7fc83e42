//! The sidecar data plane (`strait proxy`): inbound and outbound listeners, protocol
//! detection, mTLS, discovery, load balancing, routes, retries, timeouts, authorization,
//! metrics and the admin server.
//!
//! Built by issue #4 on top of `strait-api` and `strait-identity`; it never links `kube`.
