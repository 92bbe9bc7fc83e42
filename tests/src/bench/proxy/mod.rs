//! The data-plane benchmarks: proxy pairs with mutual TLS between them on loopback,
//! against a direct client → backend baseline measured in the same run (issue #4), and
//! the cost of traffic policy in the same `strait proxy` pair (issue #7).
//!
//! ```text
//! load generator ─▶ client-side proxy ══ mTLS ══▶ server-side proxy ─▶ backend
//!                   layout.client_proxy            layout.server_proxy   layout.backend
//! ```
//!
//! A *pair kind* is a [`PairBuilder`]: given the [`Layout`] (addresses, the mesh PKI) and
//! the [`Mesh`] (the control plane in this process), it returns what to start — the two
//! proxy processes and the cluster objects the control plane must hold first. The
//! [`strait`] pair, the [`haproxy`] pair and the [`stunnel`] pair (a TLS byte relay: the
//! floor for any two processes doing the hop) are the entries of [`PAIR_KINDS`]; everything
//! else (start, readiness, load, `/proc` sampling, request accounting, stop, report) is
//! shared by [`run`].
//!
//! The pieces: [`tools`] finds or installs oha, h2load, wrk, HAProxy and stunnel; [`mesh`] runs the
//! controller and the backends in process; [`pki`] issues the certificates of the pairs
//! that do not ask the identity service; [`process`] runs and samples child processes;
//! [`load`] drives `h2load` and `wrk` and parses their output; [`run`] measures one path;
//! [`policy`] is issue #7's scenario; [`report`] prints the tables and the generated
//! sections of `BENCHMARKS.md`.

pub mod haproxy;
pub mod load;
pub mod mesh;
pub mod pki;
pub mod policy;
pub mod process;
pub mod report;
pub mod run;
pub mod strait;
pub mod stunnel;
pub mod tools;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub use mesh::Mesh;

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
        /// `h2load` or `wrk`.
        tool: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Certificates could not be made.
    #[error("certificates: {0}")]
    Pki(String),
    /// The in-process control plane failed or refused objects.
    #[error("control plane: {0}")]
    Mesh(String),
    /// Requests went somewhere other than the scenario expects.
    #[error("{0}")]
    Accounting(String),
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
    /// Cluster objects (YAML) the control plane holds before the proxies start.
    pub objects: String,
    /// Listens in plaintext on `layout.client_proxy`, forwards over mTLS to
    /// `layout.server_proxy`.
    pub client: ProcessSpec,
    /// Listens with mTLS on `layout.server_proxy`, forwards to `layout.backend`.
    pub server: ProcessSpec,
    /// One line on how the pair is configured, for the report.
    pub notes: String,
}

/// The authority every request names (the strait pair routes by it; the others ignore it).
pub const AUTHORITY: &str = "myapp.production.svc.cluster.local:80";

/// Where everything of one path listens, and the mesh PKI (PEM files).
///
/// Each path has its own pair of loopback addresses, 127.46.`n`.2 (the client pod) and
/// 127.46.`n`.3 (the server pod), with the ports of a Linkerd pod: the strait proxies
/// tell pods apart by address, and no path reuses another's sockets.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The client pod's address.
    pub client_ip: IpAddr,
    /// The server pod's address.
    pub server_ip: IpAddr,
    /// The backend (server pod, 8080).
    pub backend: SocketAddr,
    /// The server-side proxy's mTLS listener (server pod, 4143).
    pub server_proxy: SocketAddr,
    /// The client-side proxy's plaintext listener (client pod, 4140), where the load goes.
    pub client_proxy: SocketAddr,
    /// A scratch directory for configuration files and logs.
    pub dir: PathBuf,
    /// The certificates.
    pub pki: pki::Pki,
}

impl Layout {
    /// The addresses of path `n` (0–255).
    pub fn addresses(n: u8) -> (IpAddr, IpAddr) {
        (
            IpAddr::V4(Ipv4Addr::new(127, 46, n, 2)),
            IpAddr::V4(Ipv4Addr::new(127, 46, n, 3)),
        )
    }

    /// Path `n`'s layout in a fresh temporary directory, with certificates from a fresh
    /// issuer (for the pair builders' tests; the directory lives as long as the guard).
    #[cfg(test)]
    pub fn for_tests(n: u8) -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let td = strait_identity::TrustDomain::default();
        let (anchors, issuer) =
            strait_identity::generate(&td, std::time::SystemTime::now()).expect("a test issuer");
        let pki = pki::issue_into(dir.path(), &anchors, &issuer).expect("test certificates");
        let layout = Self::new(n, dir.path().to_path_buf(), pki);
        (dir, layout)
    }

    /// Path `n`'s layout with its scratch directory `dir` and certificates.
    pub fn new(n: u8, dir: PathBuf, pki: pki::Pki) -> Self {
        let (client_ip, server_ip) = Self::addresses(n);
        Self {
            client_ip,
            server_ip,
            backend: SocketAddr::new(server_ip, 8080),
            server_proxy: SocketAddr::new(server_ip, 4143),
            client_proxy: SocketAddr::new(client_ip, 4140),
            dir,
            pki,
        }
    }
}

/// What a pair builder gets: the `strait` binary and the control plane.
pub struct BuildContext<'a> {
    /// The `strait` binary.
    pub strait: &'a std::path::Path,
    /// The control plane in this process.
    pub mesh: &'a Mesh,
    /// Whether proxies that can follow traffic policy do (the strait pair's policy
    /// controller address).
    pub policy: bool,
}

/// Builds a pair's commands for a layout.
pub type PairBuilder = fn(&Layout, &BuildContext<'_>) -> Result<PairSpec, Error>;

/// The pair kinds this build measures, by `--pair` name, in report order.
pub const PAIR_KINDS: &[(&str, PairBuilder)] = &[
    ("strait", strait::pair),
    ("haproxy", haproxy::pair),
    ("stunnel", stunnel::pair),
];
