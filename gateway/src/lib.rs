//! The multi-cluster gateway (`strait gateway`): one QUIC connection per linked cluster
//! pair, one stream per proxied connection, egress and ingress roles, Linkerd's probe.
//!
//! The protocol lives in a sans-IO core ([`proto`]): the stream-open header and the
//! link state machine. [`link`] drives a link over quinn, [`links`] holds the links by
//! name and changes them at runtime (a watcher of `Link` objects sets them), [`gateway`] runs the
//! egress and ingress roles on one QUIC endpoint, [`entry`] is where local proxies
//! open streams (the client sidecar's own mTLS session then runs through both
//! gateways to the server sidecar), [`linkerd_entry`] is Linkerd's mTLS gateway
//! entry on TCP for stock proxies (the gateway terminates their TLS), [`catalog`] serves
//! this cluster's Services to linked clusters' mirrors, [`relay`] moves bytes with half-close,
//! [`resolve`] is how the ingress finds local endpoints (static or through the
//! controller's Destination API), [`tls`]
//! authenticates gateways to each other, and [`admin`] serves `/ready` and
//! `/metrics`.

pub mod admin;
pub mod catalog;
pub mod entry;
pub mod gateway;
pub mod link;
pub mod linkerd_entry;
pub mod links;
pub mod metrics;
pub mod proto;
pub mod relay;
pub mod resolve;
pub mod tickets;
pub mod tls;

pub use catalog::Catalog;
pub use entry::ProxyEntry;
pub use gateway::{
    Congestion, EgressRoute, Gateway, GatewayConfig, GatewayError, LinkerdEntry, MAX_UDP_PAYLOAD, Running,
    Tuning, default_gateway_identity,
};
pub use link::{LinkFailure, LinkHandle, LinkSpec, OpenError};
pub use links::{Changes, Links};
pub use proto::header::{Authority, LinkName, Protocol, RefusalReason, Resource, Target};
pub use proto::link::LinkConfig;
pub use resolve::{Chain, DestinationResolver, Endpoint, Resolve, ResolveError, StaticResolver};
pub use tls::{Credentials, SessionState};
