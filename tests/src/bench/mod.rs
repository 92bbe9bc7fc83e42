//! The benchmarks. Control plane (issue #3): how fast a change reaches open
//! `Destination/Get` streams ([`scenarios::latency`]) and how much memory a controller
//! holding thousands of services and streams takes ([`scenarios::memory`]). Data plane
//! (issues #4 and #7): proxy pairs against a direct baseline and the cost of traffic
//! policy, in [`proxy`]. Multi-cluster (issue #5): the gateway pair's QUIC link against a
//! TCP+TLS tunnel and against no tunnel, in [`gateway`].
//!
//! The control-plane pieces, from the bottom: [`fixture`] builds the cluster objects (pure, no I/O);
//! [`target`] is the controller under test — a child `strait controller` process fed
//! through its public API, or an in-process control plane fed through its store;
//! [`watches`] opens real gRPC streams and timestamps every update as it arrives;
//! [`scenarios`] drives bounded rounds of changes and matches each expected delivery;
//! [`stats`] and [`report`] turn the samples into the table and `BENCHMARKS.md`.
//! Every wait is bounded and ends on a real event (a message, an answer, a deadline).

pub mod fixture;
pub mod gateway;
pub mod mirror;
pub mod proxy;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod target;
pub mod watches;

use std::process::Command;
use std::time::Duration;

/// A `cargo` command (the cargo running this binary, or `cargo`) for a build nested in a
/// benchmark. `cargo run` hands this process the tests package's variables; ring's build
/// script watches some of them (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, …), so a nested build
/// that kept them would rebuild ring and everything above it, and the next `cargo run`
/// would rebuild it back. The nested build gets the environment the outer cargo had.
pub fn nested_cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("CARGO_PKG_")
            || n.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&n.as_ref())
        {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// Why a benchmark could not run (a missed target is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The controller could not be started or stopped.
    #[error("controller: {0}")]
    Controller(String),
    /// The controller's public API refused or failed a request.
    #[error("controller API: {0}")]
    Api(#[from] strait_controller::api::client::ClientError),
    /// The in-process store refused a batch.
    #[error("store: {0}")]
    Store(#[from] strait_api::StoreError),
    /// A gRPC connection could not be made.
    #[error("cannot connect to the destination service at {addr}: {source}")]
    Connect {
        /// The address.
        addr: std::net::SocketAddr,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// A bounded wait ran out before the event it waited for.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What did not happen.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A stream ended or failed while the benchmark needed it.
    #[error("stream {stream} ({path}) ended: {detail}")]
    StreamEnded {
        /// Its index.
        stream: usize,
        /// Its authority.
        path: String,
        /// The status, if any.
        detail: String,
    },
    /// Local I/O (state directory, report file, /proc).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}
