//! Where runs live and what they record, so that other commands find them:
//! `strait --cluster west …` finds west's state directory, `strait exec` a pod's address
//! or namespace, `strait logs` its log, and `strait down` whatever a run left behind.
//!
//! ```text
//! $STRAIT_HOME (default ~/.strait)/runs/<topology>-<slot>/
//!   run.json                        this run: isolation, slot, clusters and their addresses
//!   pids/                           pid of every process started (for `down` after a crash)
//!   clusters/<cluster>/state/       the controller's state directory
//!   clusters/<cluster>/pods.json    the cluster's pods as they run
//!   clusters/<cluster>/logs/        controller.log, mirror.log, gateway.log,
//!                                   <namespace>/<pod>/<container>.log
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The directory runs are kept under: `$STRAIT_HOME`, else `~/.strait`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("STRAIT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".strait"),
        None => std::env::temp_dir().join("strait-home"),
    }
}

/// The directory of every run.
pub fn runs_dir(home: &Path) -> PathBuf {
    home.join("runs")
}

/// One cluster of a run, with the addresses of its components.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    /// Its name.
    pub name: String,
    /// Its state directory (what `--state-dir` would be).
    pub state_dir: PathBuf,
    /// Its address block.
    pub block: String,
    /// Trust domain.
    pub trust_domain: String,
    /// DNS domain.
    pub cluster_domain: String,
    /// Destination gRPC.
    pub destination: String,
    /// Identity gRPC.
    pub identity: String,
    /// Policy gRPC.
    pub policy: String,
    /// The public API (mTLS).
    pub api: String,
    /// The cluster DNS (UDP and TCP).
    pub dns: String,
    /// The gateway's QUIC address.
    pub gateway: String,
    /// The gateway's probe and metrics.
    pub gateway_admin: String,
    /// The mirror's admin server.
    pub mirror_admin: String,
}

/// A run, as `run.json` holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// `<topology>-<slot>`.
    pub id: String,
    /// The topology's name.
    pub topology: String,
    /// The topology file.
    pub file: PathBuf,
    /// `netns` or `loopback`.
    pub isolation: String,
    /// The slot.
    pub slot: u32,
    /// The pid of `strait up`.
    pub pid: u32,
    /// `starting`, `ready` or `stopping`.
    pub status: String,
    /// The clusters.
    pub clusters: Vec<ClusterRecord>,
}

/// One pod as `pods.json` holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its address.
    pub ip: String,
    /// Its network namespace (`netns` isolation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Whether it has a proxy.
    pub injected: bool,
    /// Whether it is ready.
    pub ready: bool,
    /// Container name → log file.
    pub logs: Vec<(String, PathBuf)>,
    /// Restarts of its processes.
    pub restarts: u32,
}

impl RunRecord {
    /// Reads `run.json` of a run directory.
    pub fn read(dir: &Path) -> Result<RunRecord, String> {
        let path = dir.join("run.json");
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is damaged: {e}", path.display()))
    }

    /// Writes `run.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        write_json(&dir.join("run.json"), self)
    }

    /// Whether its `strait up` still runs.
    pub fn alive(&self) -> bool {
        crate::run::supervise::alive(self.pid)
    }
}

/// Writes JSON atomically (temporary file, then rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).expect("records serialize"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Every run directory under `home` with its record (damaged ones are skipped).
pub fn runs(home: &Path) -> Vec<(PathBuf, RunRecord)> {
    let mut out: Vec<(PathBuf, RunRecord)> = std::fs::read_dir(runs_dir(home))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            RunRecord::read(&dir).ok().map(|r| (dir, r))
        })
        .collect();
    out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    out
}

/// The running cluster named `name`: `NAME`, or `RUN/NAME` when several runs have one.
pub fn find_cluster(home: &Path, name: &str) -> Result<(PathBuf, RunRecord, ClusterRecord), String> {
    let (run_id, cluster) = match name.split_once('/') {
        Some((r, c)) => (Some(r), c),
        None => (None, name),
    };
    let mut found = Vec::new();
    let mut stale = Vec::new();
    for (dir, run) in runs(home) {
        if run_id.is_some_and(|r| r != run.id) {
            continue;
        }
        if let Some(c) = run.clusters.iter().find(|c| c.name == cluster) {
            if run.alive() {
                found.push((dir.clone(), run.clone(), c.clone()));
            } else {
                stale.push(run.id.clone());
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 if !stale.is_empty() => Err(format!(
            "cluster {name:?} belongs to run {} whose `strait up` is no longer running; start it again with `strait up`, or clean up with `strait down`",
            stale.join(", ")
        )),
        0 => Err(format!(
            "no running cluster named {name:?} (looked in {}); start one with `strait up TOPOLOGY`",
            runs_dir(home).display()
        )),
        _ => Err(format!(
            "several runs have a cluster {name:?} ({}); say which: --cluster RUN/{cluster}",
            found
                .iter()
                .map(|f| f.1.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The cluster directory of a run.
pub fn cluster_dir(run_dir: &Path, cluster: &str) -> PathBuf {
    run_dir.join("clusters").join(cluster)
}

/// The pods of a cluster of a run.
pub fn pods(run_dir: &Path, cluster: &str) -> Vec<PodRecord> {
    std::fs::read(cluster_dir(run_dir, cluster).join("pods.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Finds a pod by name (or unique prefix, e.g. the Deployment's name) in a cluster.
pub fn find_pod(
    run_dir: &Path,
    cluster: &str,
    namespace: Option<&str>,
    pod: &str,
) -> Result<PodRecord, String> {
    let all = pods(run_dir, cluster);
    let in_ns = |p: &&PodRecord| namespace.is_none_or(|n| n == p.namespace);
    if let Some(p) = all.iter().filter(in_ns).find(|p| p.name == pod) {
        return Ok(p.clone());
    }
    let matches: Vec<&PodRecord> = all
        .iter()
        .filter(in_ns)
        .filter(|p| p.name.starts_with(pod))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "no pod {pod:?} in cluster {cluster}{}; pods: {}",
            namespace.map(|n| format!(" namespace {n}")).unwrap_or_default(),
            all.iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        many => Err(format!(
            "{pod:?} matches several pods ({}); give the full name",
            many.iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
