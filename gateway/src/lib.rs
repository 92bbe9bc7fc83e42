//! The multi-cluster gateway (`strait gateway`): one QUIC connection per linked cluster
//! pair, one stream per proxied connection, egress and ingress roles, Linkerd's probe.
//!
//! Built by issue #5: a sans-IO stream-framing and link core with an async quinn driver.
