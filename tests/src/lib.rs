//! End-to-end test support and the benchmark harness.
//!
//! The bad-manifest corpus lives in `manifests/bad/` (each file names the exact errors it
//! must produce; `strait-api`'s tests run it). Topology-based end-to-end tests and the
//! benchmarks arrive with the control plane, proxy and `strait up` (issues #3, #4, #6).
