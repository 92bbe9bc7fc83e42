//! Declarative local multi-cluster topologies and the runtime behind `strait up`:
//! network namespaces or loopback addresses, per-cluster control planes, gateways,
//! mirrors and meshed workloads, supervised and cleaned up.
//!
//! Built by issue #6.
