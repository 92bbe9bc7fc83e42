//! End-to-end test support and the benchmark harness.
//!
//! The bad-manifest corpus lives in `manifests/bad/` (each file names the exact errors it
//! must produce; `strait-api`'s tests run it). [`bench`] holds the control-plane
//! benchmarks that `cargo run --release -p strait-tests --bin bench -- control-plane`
//! runs against a real `strait controller` process; `tests/control_plane_smoke.rs` runs the
//! same scenarios at a tiny size so the harness cannot rot. Topology-based end-to-end
//! tests arrive with the proxy and `strait up` (issues #4, #6).

pub mod bench;
