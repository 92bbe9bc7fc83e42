//! The controller under test.
//!
//! [`ChildController`] is the real thing: the `strait controller` binary in local mode, in
//! its own process, with a fresh state directory, every listener on 127.0.0.1:0, fed
//! through its public API (mTLS, the admin certificate it writes into the state
//! directory) exactly as `strait apply` feeds it. Its memory is its own: `/proc/<pid>`.
//! [`InProcess`] runs the same control plane (`strait_controller::run::run`, local endpoint
//! controller on) inside the calling process, fed through its `LocalStore`; the smoke test
//! uses it so that it needs no second binary, and it has no memory figures of its own.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use hyper::Method;
use strait_api::store::local::LocalStore;
use strait_api::{Object, Store};
use strait_controller::api::client::ApiClient;
use strait_controller::api::{ApiEndpoint, files};
use strait_controller::identity::LocalTokens;
use strait_controller::run::{ControllerConfig, RunError, run};
use strait_identity::TrustDomain;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::BenchError;

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the most ever resident, KiB.
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads `VmRSS` and `VmHWM` of `pid`.
    pub fn of(pid: u32) -> Result<Self, BenchError> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            what: format!("cannot read {path}"),
            source,
        })?;
        Self::parse(&text).ok_or_else(|| BenchError::Controller(format!("{path} has no VmRSS/VmHWM")))
    }

    /// Parses the text of a `/proc/<pid>/status` file.
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
        };
        Some(Self {
            rss_kib: field("VmRSS")?,
            hwm_kib: field("VmHWM")?,
        })
    }
}

/// How long a controller may take to start listening.
pub const STARTUP: Duration = Duration::from_secs(30);

/// A controller, child or in-process.
pub enum ControlPlane {
    /// `strait controller` in its own process.
    Child(Box<ChildController>),
    /// The same control plane inside this process.
    InProcess(InProcess),
}

impl ControlPlane {
    /// The destination gRPC address.
    pub fn destination(&self) -> SocketAddr {
        match self {
            Self::Child(c) => c.destination,
            Self::InProcess(p) => p.destination,
        }
    }

    /// Applies a batch of objects as one change; returns once the store holds it.
    pub async fn apply(&self, objects: Vec<Object>) -> Result<(), BenchError> {
        match self {
            Self::Child(c) => c.apply(objects).await,
            Self::InProcess(p) => p.store.apply(objects).await.map(drop).map_err(Into::into),
        }
    }

    /// The controller process's memory; `None` in process (it would be the harness's).
    pub fn memory(&self) -> Result<Option<Memory>, BenchError> {
        match self {
            Self::Child(c) => Memory::of(c.pid).map(Some),
            Self::InProcess(_) => Ok(None),
        }
    }

    /// Stops the controller and waits for it to end.
    pub async fn stop(self) -> Result<(), BenchError> {
        match self {
            Self::Child(c) => c.stop().await,
            Self::InProcess(p) => p.stop().await,
        }
    }
}

/// `strait controller --state-dir <tmp>` as a child process.
pub struct ChildController {
    child: tokio::process::Child,
    pid: u32,
    destination: SocketAddr,
    api: ApiClient,
    // Removed when the benchmark ends; the child must be gone by then.
    _dir: tempfile::TempDir,
}

impl ChildController {
    /// Starts `strait` (the binary at that path) with a fresh state directory and waits for
    /// the line announcing its bound addresses.
    pub async fn spawn(strait: &Path) -> Result<Box<Self>, BenchError> {
        let io = |what: String| move |source| BenchError::Io { what, source };
        let dir = tempfile::Builder::new()
            .prefix("strait-bench-")
            .tempdir()
            .map_err(io("cannot create a state directory".into()))?;
        // STRAIT_BENCH_WRAPPER (e.g. `heaptrack -o /tmp/cp`) runs the controller under a
        // profiler; the announcement is then the first JSON line among the wrapper's own.
        let wrapper: Vec<String> = std::env::var("STRAIT_BENCH_WRAPPER")
            .map(|w| w.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(args).arg(strait);
                c
            }
            None => tokio::process::Command::new(strait),
        };
        cmd.arg("--state-dir")
            .arg(dir.path())
            .args(["--log", "warn", "controller"]);
        for flag in [
            "--destination-addr",
            "--identity-addr",
            "--policy-addr",
            "--admin-addr",
            "--api-addr",
        ] {
            cmd.args([flag, "127.0.0.1:0"]);
        }
        cmd.env_remove("STRAIT_CLUSTER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(io(format!("cannot start {}", strait.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::Controller("the controller exited at once".into()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        // The first stdout line is the JSON of the bound addresses, printed once every
        // listener (and the public API, published before) is open.
        let first_json = async {
            loop {
                match lines.next_line().await {
                    Ok(Some(l)) if l.trim_start().starts_with('{') => return Ok(Some(l)),
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        };
        let line = tokio::time::timeout(STARTUP, first_json)
            .await
            .map_err(|_| BenchError::Timeout {
                what: "the controller to announce its addresses".into(),
                after: STARTUP,
            })?
            .map_err(io("cannot read the controller's stdout".into()))?
            .ok_or_else(|| BenchError::Controller("the controller exited before listening".into()))?;
        let bound: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| BenchError::Controller(format!("unreadable announcement {line:?}: {e}")))?;
        let destination = bound["destination"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| BenchError::Controller(format!("no destination address in {line:?}")))?;
        let api = api_client(dir.path())?;
        let this = Self {
            child,
            pid,
            destination,
            api,
            _dir: dir,
        };
        this.api.request(Method::GET, "/v1/version", Vec::new()).await?;
        Ok(Box::new(this))
    }

    async fn apply(&self, objects: Vec<Object>) -> Result<(), BenchError> {
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": objects.iter().map(Object::to_value).collect::<Vec<_>>(),
        });
        let body = serde_json::to_vec(&list).expect("objects serialize");
        self.api.request(Method::POST, "/v1/apply", body).await?;
        Ok(())
    }

    async fn stop(mut self) -> Result<(), BenchError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| BenchError::Io { what, source }
        };
        self.child
            .start_kill()
            .map_err(io("cannot stop the controller"))?;
        self.child
            .wait()
            .await
            .map_err(io("cannot wait for the controller"))?;
        Ok(())
    }
}

/// The admin's client of a running controller's state directory (as `strait apply` builds it).
fn api_client(dir: &Path) -> Result<ApiClient, BenchError> {
    use strait_identity::pki_types::pem::PemObject;
    use strait_identity::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: PathBuf| {
        std::fs::read(&p).map_err(|source| BenchError::Io {
            what: format!("cannot read {}", p.display()),
            source,
        })
    };
    let bad = |what: &str, e: &dyn std::fmt::Display| BenchError::Controller(format!("{what}: {e}"));
    let endpoint: ApiEndpoint =
        serde_json::from_slice(&read(files::endpoint(dir))?).map_err(|e| bad("api.json", &e))?;
    let anchors = strait_identity::TrustAnchors::load(files::anchors(dir), SystemTime::now())
        .map_err(|e| bad("trust anchors", &e))?;
    let chain = CertificateDer::pem_slice_iter(&read(files::admin_cert(dir))?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("admin certificate", &e))?;
    let key =
        PrivateKeyDer::from_pem_slice(&read(files::admin_key(dir))?).map_err(|e| bad("admin key", &e))?;
    let admin = strait_identity::CertStore::with_cert(chain, key).map_err(|e| bad("admin identity", &e))?;
    Ok(ApiClient::new(endpoint, &anchors, &admin)?)
}

/// The control plane of `strait controller` in local mode, run inside this process.
pub struct InProcess {
    store: LocalStore,
    destination: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl InProcess {
    /// Starts it on 127.0.0.1:0 over an empty in-memory store.
    pub async fn start() -> Result<Self, BenchError> {
        let (anchors, issuer) = strait_identity::generate(&TrustDomain::default(), SystemTime::now())
            .map_err(|e| BenchError::Controller(format!("cannot generate an issuer: {e}")))?;
        let cfg = ControllerConfig::ephemeral(IpAddr::from([127, 0, 0, 1]));
        let store = LocalStore::in_memory();
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(run(
            cfg,
            store.clone(),
            anchors,
            issuer,
            LocalTokens::new(&[7; 32]),
            move |b| {
                let _ = bound_tx.send(b);
            },
            async {
                let _ = stop_rx.await;
            },
        ));
        let bound = match tokio::time::timeout(STARTUP, bound_rx).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                let e = handle.await.map_err(|e| BenchError::Controller(e.to_string()))?;
                return Err(BenchError::Controller(format!(
                    "it stopped before listening: {e:?}"
                )));
            }
            Err(_) => {
                return Err(BenchError::Timeout {
                    what: "the in-process controller to listen".into(),
                    after: STARTUP,
                });
            }
        };
        Ok(Self {
            store,
            destination: bound.destination,
            stop,
            handle,
        })
    }

    async fn stop(self) -> Result<(), BenchError> {
        let _ = self.stop.send(());
        match tokio::time::timeout(STARTUP, self.handle).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(BenchError::Controller(e.to_string())),
            Ok(Err(e)) => Err(BenchError::Controller(e.to_string())),
            Err(_) => Err(BenchError::Timeout {
                what: "the in-process controller to drain".into(),
                after: STARTUP,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_memory_fields() {
        let status = "Name:\tstrait\nVmPeak:\t  900 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                rss_kib: 10240,
                hwm_kib: 20480
            })
        );
        assert_eq!(
            Memory::parse("Name:\tkthreadd\n"),
            None,
            "kernel threads have none"
        );
    }

    #[test]
    fn this_process_has_resident_memory() {
        let m = Memory::of(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
    }
}
