//! The multi-cluster gateway (`strait gateway`): one QUIC connection per linked cluster
//! pair, one stream per proxied connection, egress and ingress roles, Linkerd's probe.
//!
//! The protocol lives in a sans-IO core ([`proto`]): the stream-open header and the
//! link state machine. The async driver wraps it for quinn and tokio.

pub mod proto;
