//! Runs and supervises the processes of a run, like a kubelet: each in its own process
//! group, its output appended to its log file, restarted with backoff when it exits, every
//! restart announced; stopped with SIGTERM, then SIGKILL after a grace period.
//!
//! Each process's pid is also written to the run's `pids/` directory, so `strait down`
//! can stop what a crashed `strait up` left running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// One process to run.
#[derive(Clone, Debug)]
pub struct ProcSpec {
    /// A unique name: `west/controller`, `west/production/myapp-1a2b3c4d-0/proxy`.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment, added to a cleared one (PATH, HOME and LANG are kept).
    pub env: Vec<(String, String)>,
    /// A network namespace to run it in (`ip netns exec`).
    pub netns: Option<String>,
    /// A user (and group) id to run it as.
    pub uid: Option<u32>,
    /// Where its output goes.
    pub log: PathBuf,
}

impl ProcSpec {
    fn command(&self) -> tokio::process::Command {
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Some(uid) = self.uid {
            argv.extend([
                "setpriv".to_string(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "--".into(),
            ]);
        }
        argv.push(self.program.display().to_string());
        argv.extend(self.args.iter().cloned());
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd.env_clear();
        for keep in ["PATH", "HOME", "LANG", "TMPDIR"] {
            if let Ok(v) = std::env::var(keep) {
                cmd.env(keep, v);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(std::process::Stdio::null());
        cmd.process_group(0);
        // SAFETY: prctl only; async-signal-safe. A process whose supervisor dies gets
        // SIGTERM instead of running on unsupervised.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        cmd
    }
}

/// What is known about a supervised process.
#[derive(Clone, Debug, Default)]
pub struct ProcStatus {
    /// The running process, if any.
    pub pid: Option<u32>,
    /// How often it was restarted.
    pub restarts: u32,
    /// How its last run ended.
    pub last_exit: Option<String>,
}

struct Entry {
    stop: watch::Sender<bool>,
    status: Arc<Mutex<ProcStatus>>,
    task: tokio::task::JoinHandle<()>,
}

/// The processes of a run.
pub struct Supervisor {
    pids: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    quiet_names: bool,
}

const GRACE: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long before exiting restarts without delay.
const HEALTHY: Duration = Duration::from_secs(60);

fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.pid", name.replace('/', "_")))
}

/// Sends `sig` to the process group `pid` leads.
pub fn signal_group(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 1
    {
        // SAFETY: kill(2) on a process group this run started.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// Whether a process is alive.
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks for existence.
    let exists = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
    // A zombie has exited; only its parent has not collected it yet.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}

/// Stops every process recorded in a `pids/` directory (SIGTERM, then SIGKILL): for
/// cleaning up after a run whose supervisor died.
pub fn kill_recorded(dir: &Path) -> usize {
    let mut pids = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Some(pid) = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            pids.push(pid);
        }
        let _ = std::fs::remove_file(e.path());
    }
    for pid in &pids {
        signal_group(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &pids {
        if alive(*pid) {
            signal_group(*pid, libc::SIGKILL);
        }
    }
    pids.len()
}

impl Supervisor {
    /// A supervisor recording pids in `pids`.
    pub fn new(pids: PathBuf) -> Self {
        let _ = std::fs::create_dir_all(&pids);
        Self {
            pids,
            entries: Mutex::new(BTreeMap::new()),
            quiet_names: false,
        }
    }

    /// Starts `spec` and keeps it running until [`Supervisor::stop`].
    pub fn start(&self, spec: ProcSpec) -> Result<(), String> {
        if let Some(dir) = spec.log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let name = spec.name.clone();
        let (stop, mut stopped) = watch::channel(false);
        let status = Arc::new(Mutex::new(ProcStatus::default()));
        let st = status.clone();
        let pid_path = pid_file(&self.pids, &spec.name);
        let quiet = self.quiet_names;
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&spec.log);
                let child = log.and_then(|log| {
                    let mut cmd = spec.command();
                    cmd.stdout(log.try_clone()?).stderr(log);
                    cmd.spawn()
                });
                let started = Instant::now();
                let exit = match child {
                    Ok(mut child) => {
                        let pid = child.id();
                        st.lock().expect("status lock").pid = pid;
                        if let Some(pid) = pid {
                            let _ = std::fs::write(&pid_path, pid.to_string());
                        }
                        tokio::select! {
                            r = child.wait() => match r {
                                Ok(s) => describe_exit(s),
                                Err(e) => format!("cannot be waited for: {e}"),
                            },
                            () = stop_requested(&mut stopped) => {
                                if let Some(pid) = pid {
                                    signal_group(pid, libc::SIGTERM);
                                    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                                        signal_group(pid, libc::SIGKILL);
                                        let _ = child.wait().await;
                                    }
                                }
                                let _ = std::fs::remove_file(&pid_path);
                                st.lock().expect("status lock").pid = None;
                                return;
                            }
                        }
                    }
                    Err(e) => format!("could not start: {e}"),
                };
                let _ = std::fs::remove_file(&pid_path);
                if started.elapsed() >= HEALTHY {
                    backoff = Duration::from_millis(500);
                }
                let restarts = {
                    let mut s = st.lock().expect("status lock");
                    s.pid = None;
                    s.last_exit = Some(exit.clone());
                    s.restarts += 1;
                    s.restarts
                };
                if !quiet {
                    eprintln!(
                        "strait up: {} {exit}; restart #{restarts} in {:.1}s (log: {})",
                        spec.name,
                        backoff.as_secs_f64(),
                        spec.log.display()
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    () = stop_requested(&mut stopped) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        let previous = self
            .entries
            .lock()
            .expect("entries lock")
            .insert(name, Entry { stop, status, task });
        if let Some(p) = previous {
            let _ = p.stop.send(true);
        }
        Ok(())
    }

    /// The status of a process.
    pub fn status(&self, name: &str) -> Option<ProcStatus> {
        let entries = self.entries.lock().expect("entries lock");
        entries
            .get(name)
            .map(|e| e.status.lock().expect("status lock").clone())
    }

    /// Names of every supervised process.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .lock()
            .expect("entries lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Stops the processes whose names start with `prefix`, and waits for them.
    pub async fn stop_prefix(&self, prefix: &str) {
        let stopping: Vec<Entry> = {
            let mut entries = self.entries.lock().expect("entries lock");
            let names: Vec<String> = entries
                .keys()
                .filter(|n| n.starts_with(prefix))
                .cloned()
                .collect();
            names.into_iter().filter_map(|n| entries.remove(&n)).collect()
        };
        for e in &stopping {
            let _ = e.stop.send(true);
        }
        for e in stopping {
            let _ = e.task.await;
        }
    }

    /// Stops every process.
    pub async fn stop_all(&self) {
        self.stop_prefix("").await;
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".into(),
    }
}

/// Resolves once a stop is requested (without holding the channel's guard).
async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
