//! Declarative local multi-cluster topologies and the runtime behind `strait up`:
//! network namespaces or loopback addresses, per-cluster control planes, gateways,
//! mirrors and meshed workloads, supervised and cleaned up.
//!
//! What is here so far are the pieces a topology's pods are made of: [`demo`], the
//! workloads (`strait demo server|client`) that answer with who they are and measure what
//! they see, and [`init`], the pod's traffic redirection to its proxy (`strait init`, the
//! iptables rules of Linkerd's proxy-init). The topology files and the runner arrive with
//! the rest of issue #6.

pub mod demo;
pub mod init;
