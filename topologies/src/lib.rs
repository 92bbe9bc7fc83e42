//! Declarative local multi-cluster topologies and the runtime behind `strait up`:
//! network namespaces or loopback addresses, per-cluster control planes, gateways,
//! mirrors and meshed workloads, supervised and cleaned up.
//!
//! - [`topology`]: the topology file (clusters, manifests, image mappings, links).
//! - [`plan`]: which pods a cluster's Deployments and Namespaces call for.
//! - [`run`]: `strait up` / `strait down`: addresses and namespaces, the supervisor,
//!   the run registry that `--cluster`, `exec` and `logs` read.
//! - [`demo`]: the workloads (`strait demo server|client`) that answer with who they are
//!   and measure what they see.
//! - [`init`]: the pod's traffic redirection to its proxy (`strait init`, the iptables
//!   rules of Linkerd's proxy-init).

pub mod demo;
pub mod init;
pub mod plan;
pub mod run;
pub mod topology;
