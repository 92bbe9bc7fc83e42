//! End-to-end test support and the benchmark harness.
//!
//! The bad-manifest corpus lives in `manifests/bad/` (each file names the exact errors it
//! must produce; `strait-api`'s tests run it). [`bench`] holds the benchmarks behind
//! `cargo run --release -p strait-tests --bin bench -- control-plane|proxy|policy|gateway`:
//! the control plane against a real `strait controller` process, the data plane with real
//! `strait proxy` and HAProxy processes, the multi-cluster gateway with real `strait
//! gateway` and stunnel processes; `tests/control_plane_smoke.rs` runs the
//! control-plane scenarios at a tiny size, and the data-plane harness's pure parts (load
//! generator output, pair configurations, the policy scenario's routes) have unit tests,
//! so the harness cannot rot.

pub mod bench;
