//! The data-plane benchmark of issue #4: a client-side and a server-side proxy with mutual
//! TLS between them on loopback, against a direct client → server baseline measured in
//! the same run. HTTP/1.1, 1 KiB answers from `strait demo server`; fixed 1000 RPS over 4
//! connections with `oha --latency-correction` (latency deltas, and per proxy process
//! RSS and CPU-seconds per second from `/proc`), then a saturation run with `wrk`.
//!
//! ```text
//! load generator ─▶ client-side proxy ══ mTLS ══▶ server-side proxy ─▶ demo server
//!                   layout.client_proxy            layout.server_proxy   layout.backend
//! ```
//!
//! A *pair kind* is a [`PairBuilder`]: given the [`Layout`] (addresses and the mesh PKI
//! the harness generated), it returns the commands that start the two proxies (and any
//! process they need first, such as a controller). [`haproxy::pair`] is one; the
//! `strait proxy` pair plugs in the same way, as one more entry in [`PAIR_KINDS`] whose
//! builder starts `strait proxy` twice with Linkerd's proxy environment. Everything else
//! (start, readiness, load, `/proc` sampling, request accounting, stop, report) is shared.
//!
//! The pieces: [`tools`] finds or installs the load generators and HAProxy; [`pki`] writes
//! the certificates; [`process`] runs and samples child processes; [`load`] drives `oha`
//! and `wrk` and parses their output; [`run`] measures one path; [`report`] prints the table
//! and the generated section of `BENCHMARKS.md`.

pub mod haproxy;
pub mod load;
pub mod pki;
pub mod process;
pub mod report;
pub mod run;
pub mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the benchmark could not run (a missed target is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool is missing and could not be installed.
    #[error("{0}")]
    Tool(String),
    /// A process could not be started, did not become ready, or failed.
    #[error("{0}")]
    Process(String),
    /// A load generator's output could not be read.
    #[error("{tool} output: {detail}")]
    Output {
        /// `oha` or `wrk`.
        tool: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Certificates could not be made.
    #[error("certificates: {0}")]
    Pki(String),
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// A process to start: program, arguments, environment.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// A short name for reports and logs (`client-side haproxy`).
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// The two proxies of a pair, wired to a [`Layout`].
#[derive(Clone, Debug)]
pub struct PairSpec {
    /// How the report names the path, e.g. `HAProxy 2.6 pair`.
    pub label: String,
    /// Processes started before the proxies (e.g. a controller); not measured.
    pub support: Vec<ProcessSpec>,
    /// Listens in plaintext on `layout.client_proxy`, forwards over mTLS to
    /// `layout.server_proxy`.
    pub client: ProcessSpec,
    /// Listens with mTLS on `layout.server_proxy`, forwards to `layout.backend`.
    pub server: ProcessSpec,
    /// One line on how the pair is configured, for the report.
    pub notes: String,
}

/// Where everything listens, and the generated mesh PKI (PEM files).
#[derive(Clone, Debug)]
pub struct Layout {
    /// The demo server.
    pub backend: SocketAddr,
    /// The server-side proxy's mTLS listener.
    pub server_proxy: SocketAddr,
    /// The client-side proxy's plaintext listener (where the load goes).
    pub client_proxy: SocketAddr,
    /// A scratch directory for configuration files and logs.
    pub dir: PathBuf,
    /// The certificates.
    pub pki: pki::Pki,
}

/// Builds a pair's commands for a layout.
pub type PairBuilder = fn(&Layout) -> Result<PairSpec, Error>;

/// The pair kinds this build can measure, by `--pair` name. The `strait proxy` pair is
/// added here once `strait proxy` exists (issue #4).
pub const PAIR_KINDS: &[(&str, PairBuilder)] = &[("haproxy", haproxy::pair)];
