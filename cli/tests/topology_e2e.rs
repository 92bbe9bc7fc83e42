//! End to end: `strait up topologies/west-east.yaml` with real processes, real sockets,
//! real mTLS and (as root) real network namespaces, iptables and DNS; then what a user
//! does against it, and `strait down` leaving nothing behind.
//!
//! These live with the `strait` binary's package because only its tests can name the
//! built binary. Each test has its own `STRAIT_HOME`; runs take distinct slots, so tests
//! run in parallel without colliding. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `strait` under test: the one cargo built with these tests, or `STRAIT_E2E_BINARY`
/// (a release build, for the measurements in BENCHMARKS.md).
fn strait_binary() -> PathBuf {
    std::env::var_os("STRAIT_E2E_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strait")))
}

/// Whether the `strait` under test is an optimised build.
fn release_binary() -> bool {
    std::env::var_os("STRAIT_E2E_BINARY").is_some() || !cfg!(debug_assertions)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// One run of a topology, stopped (and checked clean) when dropped if the test did not.
struct Run {
    home: tempfile::TempDir,
    up: Option<Child>,
    log: PathBuf,
}

impl Run {
    fn strait(&self) -> Command {
        let mut c = Command::new(strait_binary());
        c.env("STRAIT_HOME", self.home.path())
            .env_remove("STRAIT_STATE_DIR")
            .env_remove("STRAIT_CLUSTER")
            .env_remove("STRAIT_LOG");
        c
    }

    fn start(isolation: &str) -> Run {
        Self::start_topology("west-east", isolation)
    }

    fn start_topology(topology: &str, isolation: &str) -> Run {
        let home = tempfile::tempdir().unwrap();
        let log = home.path().join("up.log");
        let mut run = Run { home, up: None, log };
        let child = run.spawn_up(topology, isolation, &run.log);
        run.up = Some(child);
        let started = Instant::now();
        run.wait("the run to be ready", Duration::from_secs(60), |r| {
            r.record().is_some_and(|rec| rec["status"] == "ready")
        });
        eprintln!("ready in {:.1}s", started.elapsed().as_secs_f64());
        run
    }

    /// Starts `strait up topologies/<topology>.yaml` in this run's home, output to `log`.
    fn spawn_up(&self, topology: &str, isolation: &str, log: &Path) -> Child {
        let out = std::fs::File::create(log).unwrap();
        self.strait()
            .args([
                "up",
                &repo()
                    .join(format!("topologies/{topology}.yaml"))
                    .display()
                    .to_string(),
                "--isolation",
                isolation,
            ])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn up_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn run_dir(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.home.path().join("runs"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("run.json").exists())
    }

    fn record(&self) -> Option<Value> {
        serde_json::from_slice(&std::fs::read(self.run_dir()?.join("run.json")).ok()?).ok()
    }

    fn pods(&self, cluster: &str) -> Vec<Value> {
        let Some(dir) = self.run_dir() else {
            return Vec::new();
        };
        std::fs::read(dir.join("clusters").join(cluster).join("pods.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok())
            .unwrap_or_default()
    }

    fn pod(&self, cluster: &str, prefix: &str) -> Value {
        self.pods(cluster)
            .into_iter()
            .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .unwrap_or_else(|| {
                panic!(
                    "no pod {prefix}* in {cluster}: {:?}\n{}",
                    self.pods(cluster),
                    self.up_log()
                )
            })
    }

    fn wait(&self, what: &str, limit: Duration, mut ok: impl FnMut(&Run) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; strait up said:\n{}",
                self.up_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.strait().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "strait {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `strait exec CLUSTER/POD -- strait demo client URL`: the JSON report.
    fn client(&self, pod: &str, url: &str, requests: u32) -> Value {
        self.client_at(pod, url, requests, 50)
    }

    fn client_at(&self, pod: &str, url: &str, requests: u32, rps: u32) -> Value {
        let (n, rps) = (requests.to_string(), rps.to_string());
        let out = self.cli(&[
            "exec",
            pod,
            "--",
            "strait",
            "demo",
            "client",
            url,
            "--requests",
            &n,
            "--rps",
            &rps,
            "-o",
            "json",
            "--progress",
            "0",
            "--timeout",
            "5s",
            "--concurrency",
            "4",
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "demo client in {pod}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Stops the run with `strait down` and checks that nothing is left.
    fn down(mut self) {
        let slot = self
            .record()
            .filter(|r| r["isolation"] == "netns")
            .map(|r| r["slot"].as_u64().unwrap());
        let pids = self.recorded_pids();
        let out = self.cli(&["down"]);
        assert!(
            out.status.success(),
            "down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut up = self.up.take().unwrap();
        let status = wait_child(&mut up, Duration::from_secs(30));
        assert_eq!(
            status,
            Some(0),
            "strait up exits cleanly after down:\n{}",
            self.up_log()
        );
        assert!(
            self.up_log().contains("everything this run created is removed"),
            "{}",
            self.up_log()
        );
        assert_nothing_left(&self, slot, &pids);
    }

    fn recorded_pids(&self) -> Vec<u32> {
        let Some(dir) = self.run_dir() else {
            return Vec::new();
        };
        std::fs::read_dir(dir.join("pids"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
            .collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut up) = self.up.take() {
            let _ = self.cli(&["down"]);
            if wait_child(&mut up, Duration::from_secs(20)).is_none() {
                let _ = up.kill();
            }
        }
    }
}

fn wait_child(c: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn assert_nothing_left(run: &Run, slot: Option<u64>, pids: &[u32]) {
    assert!(run.run_dir().is_none(), "the run directory is removed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<&u32> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
    if let (Some(slot), true) = (slot, is_root()) {
        let netns = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(
            !netns.lines().any(|l| l.starts_with(&format!("strait-{slot}-"))),
            "network namespaces left: {netns}"
        );
        let links =
            String::from_utf8_lossy(&Command::new("ip").args(["-o", "link"]).output().unwrap().stdout)
                .into_owned();
        assert!(
            !links.contains(&format!(": st{slot}c")),
            "interfaces left: {links}"
        );
        let etc: Vec<String> = std::fs::read_dir("/etc/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("strait-{slot}-")))
            .collect();
        assert!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
    }
}

/// What every isolation mode must do.
fn exercise(run: &Run) {
    // Pods are registered with their cluster's control plane and visible like kubectl's.
    let pods = run.ok(&[
        "--cluster",
        "east",
        "get",
        "pods",
        "-n",
        "production",
        "-o",
        "name",
    ]);
    assert_eq!(
        pods.lines().filter(|l| l.starts_with("pod/myapp-v")).count(),
        2,
        "{pods}"
    );
    let west = run.ok(&["--cluster", "west", "get", "pods", "-n", "production"]);
    assert!(west.contains("frontend-"), "{west}");

    // Meshed traffic inside east: mTLS both ways. `myapp` answers from its pods, and each
    // version through its own Service. (Which of two healthy endpoints P2C picks for 30
    // requests depends on their latency estimates, so the split itself is the canary
    // test's business, with a TrafficSplit that fixes it.)
    let report = run.client("east/myapp-v1", "http://myapp.production.svc.cluster.local/", 30);
    assert_eq!(report["succeeded"], 30, "{report:#}");
    assert!(
        report["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] == "myapp" && s["cluster"] == "east"),
        "myapp's pods answer: {report:#}"
    );
    for version in ["v1", "v2"] {
        let url = format!("http://myapp-{version}.production.svc.cluster.local/");
        let r = run.client("east/myapp-v1", &url, 5);
        assert_eq!(r["succeeded"], 5, "{r:#}");
        assert!(
            r["servers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["version"] == version),
            "myapp-{version} answers with {version}: {r:#}"
        );
    }
    let v2 = run.pod("east", "myapp-v2");
    let metrics = metrics(&format!("{}:4191", v2["ip"].as_str().unwrap()));
    assert!(
        metrics.lines().any(|l| l.starts_with("request_total{")
            && l.contains("direction=\"inbound\"")
            && l.contains("tls=\"true\"")
            && l.contains("client_id=\"myapp.production.serviceaccount.identity.linkerd.cluster.local\"")),
        "east's inbound metrics show the mTLS client identity:\n{metrics}"
    );

    // Across clusters: west's frontend reaches east's myapp through both gateways, and
    // east's proxy authenticates the frontend itself (the client's mTLS runs end to end).
    let report = run.client(
        "west/frontend",
        "http://myapp-east.production.svc.cluster.local/",
        20,
    );
    assert_eq!(report["succeeded"], 20, "{report:#}");
    assert!(
        report["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["cluster"] == "east"),
        "east answers: {report:#}"
    );
    let east_metrics: String = run
        .pods("east")
        .iter()
        .map(|p| crate::metrics(&format!("{}:4191", p["ip"].as_str().unwrap())))
        .collect();
    assert!(
        east_metrics.lines().any(|l| l.starts_with("request_total{")
            && l.contains("direction=\"inbound\"")
            && l.contains("tls=\"true\"")
            && l.contains("client_id=\"frontend.production.serviceaccount.identity.linkerd.cluster.local\"")),
        "east's proxies see west's frontend identity:\n{east_metrics}"
    );

    // West's mirror reads east through the gateway link, not through east's API: east's
    // gateway serves it two catalog watches (Services, meshed pods), and the Link's
    // credentials are not needed — the export below is followed without them.
    let record = run.record().expect("the run's record");
    let east_gateway = record["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "east")
        .expect("east's record")["gatewayAdmin"]
        .as_str()
        .unwrap()
        .to_string();
    let gw_metrics = crate::metrics(&east_gateway);
    assert!(
        gw_metrics
            .lines()
            .any(|l| l == "gateway_inbound_catalog_watches 2"),
        "east's gateway serves west's mirror:\n{gw_metrics}"
    );
    // The mirror lists east's pods, so the frontend's proxy picked an east pod itself and
    // each stream named it; east's gateway delivered every one to the pod it named.
    let named = |result: &str| {
        let series = format!("gateway_inbound_named_endpoint_streams_total{{result=\"{result}\"}} ");
        gw_metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert!(
        named("delivered").is_some_and(|n| n >= 1) && named("elsewhere") == Some(0),
        "east's gateway delivers streams to the pods they name:\n{gw_metrics}"
    );
    run.ok(&[
        "--cluster",
        "west",
        "delete",
        "secret",
        "cluster-credentials-east",
        "-n",
        "linkerd-multicluster",
    ]);

    // The export: the mirror follows the label, both ways. The mirror shows as kubectl
    // shows a Service: a cluster IP of west's and the remote Service's port.
    let mirror = run.ok(&[
        "--cluster",
        "west",
        "get",
        "svc",
        "myapp-east",
        "-n",
        "production",
    ]);
    let cells: Vec<&str> = mirror
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(cells.first(), Some(&"myapp-east"), "{mirror}");
    assert_eq!(cells.get(1), Some(&"ClusterIP"), "{mirror}");
    assert!(
        cells
            .get(2)
            .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
        "{mirror}"
    );
    assert_eq!(cells.get(4), Some(&"80/TCP"), "{mirror}");
    run.ok(&[
        "--cluster",
        "east",
        "label",
        "svc",
        "myapp",
        "-n",
        "production",
        "mirror.linkerd.io/exported-",
    ]);
    run.wait("the mirror to go", Duration::from_secs(15), |r| {
        !r.cli(&[
            "--cluster",
            "west",
            "get",
            "svc",
            "myapp-east",
            "-n",
            "production",
        ])
        .status
        .success()
    });
    run.ok(&[
        "--cluster",
        "east",
        "label",
        "svc",
        "myapp",
        "-n",
        "production",
        "mirror.linkerd.io/exported=true",
    ]);
    run.wait("the mirror to return", Duration::from_secs(15), |r| {
        r.cli(&[
            "--cluster",
            "west",
            "get",
            "svc",
            "myapp-east",
            "-n",
            "production",
        ])
        .status
        .success()
    });
    let gateways = run.ok(&["--cluster", "west", "multicluster", "gateways"]);
    assert!(
        gateways
            .lines()
            .any(|l| l.starts_with("east") && l.contains("True")),
        "{gateways}"
    );
    // West's gateway dials east because west holds east's Link (`--watch-links`, applied
    // by `strait up` after the gateway started): no link is configured by hand.
    let mut logs = Vec::new();
    logs_named(run.home.path(), "gateway.log", &mut logs);
    assert!(
        logs.iter().any(|(_, log)| log
            .lines()
            .any(|l| l.contains("link added from its Link") && l.contains("east"))),
        "{:?}",
        logs.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    // A crashed workload is restarted, and the restart is visible.
    let before = run.pod("east", "myapp-v2");
    let dir = run.run_dir().unwrap();
    let pid_file = std::fs::read_dir(dir.join("pids"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("east_production_myapp-v2") && n.ends_with("_myapp-v2.pid")
        })
        .expect("the workload's pid file");
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let killed = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(killed.success(), "kill the workload's process group {pid}");
    run.wait("the workload to be restarted", Duration::from_secs(15), |r| {
        r.up_log().contains(&format!(
            "east/production/{}/myapp-v2 was killed by signal 9",
            before["name"].as_str().unwrap()
        )) && r.pod("east", "myapp-v2")["restarts"].as_u64() >= Some(1)
    });
    run.wait("the restarted workload to answer", Duration::from_secs(15), |r| {
        r.client(
            "east/myapp-v1",
            "http://myapp-v2.production.svc.cluster.local/",
            3,
        )["succeeded"]
            == 3
    });

    // Turning injection off for the namespace re-creates its pods without proxies, as a
    // rollout would; turning it back on brings the proxies back.
    run.ok(&[
        "--cluster",
        "east",
        "annotate",
        "namespace",
        "production",
        "linkerd.io/inject-",
    ]);
    run.wait(
        "east's pods to be re-created without proxies",
        Duration::from_secs(20),
        |r| {
            let pods = r.pods("east");
            pods.len() == 2 && pods.iter().all(|p| p["injected"] == false && p["ready"] == true)
        },
    );
    assert_ne!(run.pod("east", "myapp-v2")["name"], before["name"]);
    run.ok(&[
        "--cluster",
        "east",
        "annotate",
        "namespace",
        "production",
        "linkerd.io/inject=enabled",
    ]);
    run.wait("east's pods to get proxies again", Duration::from_secs(20), |r| {
        let pods = r.pods("east");
        pods.len() == 2 && pods.iter().all(|p| p["injected"] == true && p["ready"] == true)
    });
}

fn metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Every sidecar log of the run (`…/logs/linkerd-proxy.log`).
fn proxy_logs(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    logs_named(dir, "linkerd-proxy.log", out);
}

/// Every log of the run called `name`.
fn logs_named(dir: &Path, name: &str, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            logs_named(&path, name, out);
        } else if path.file_name().is_some_and(|n| n == name) {
            out.push((path.clone(), std::fs::read_to_string(&path).unwrap_or_default()));
        }
    }
}

/// The sidecars reached their control plane over TLS (the `*_SVC_NAME` identities) and
/// never in plaintext or with a refused handshake.
fn assert_control_plane_tls(run: &Run) {
    let mut logs = Vec::new();
    proxy_logs(run.home.path(), &mut logs);
    assert!(
        !logs.is_empty(),
        "no sidecar logs under {}",
        run.home.path().display()
    );
    let tls = |log: &str, service: &str| {
        log.lines().any(|l| {
            l.contains("control plane reached over TLS") && l.contains(&format!("service={service}"))
        })
    };
    for (path, log) in &logs {
        assert!(
            tls(log, "identity"),
            "{}: no TLS to identity:\n{log}",
            path.display()
        );
        for bad in ["control-plane connection refused", "control plane in plaintext"] {
            assert!(!log.contains(bad), "{}: {bad}:\n{log}", path.display());
        }
    }
    assert!(
        logs.iter().any(|(_, log)| tls(log, "destination")),
        "no sidecar reached destination over TLS"
    );
    // East's gateway resolved west's streams through Destination over mutual TLS too.
    let mut gateways = Vec::new();
    logs_named(run.home.path(), "gateway.log", &mut gateways);
    assert!(
        gateways.iter().any(|(_, log)| tls(log, "destination")),
        "no gateway reached destination over TLS: {:?}",
        gateways.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (path, log) in &gateways {
        for bad in ["control-plane connection refused", "control plane in plaintext"] {
            assert!(!log.contains(bad), "{}: {bad}:\n{log}", path.display());
        }
    }
}

#[test]
fn west_east_on_loopback_addresses() {
    let run = Run::start("loopback");
    assert!(run.up_log().contains("west-east is up in"), "{}", run.up_log());
    exercise(&run);
    assert_control_plane_tls(&run);
    unlink_and_link_again(&run);
    run.down();
}

/// Lines of the clusters' gateway logs that contain every one of `parts`.
fn gateway_log_lines(run: &Run, parts: &[&str]) -> usize {
    let mut logs = Vec::new();
    logs_named(run.home.path(), "gateway.log", &mut logs);
    logs.iter()
        .flat_map(|(_, log)| log.lines())
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// East's Link deleted from west at runtime, then applied again: west's gateway stops the
/// link and dials it again, the mirror goes and comes back, and west's frontend reaches
/// east again through the new link with its own identity.
fn unlink_and_link_again(run: &Run) {
    let check = |r: &Run| {
        let out = r.cli(&["--cluster", "west", "multicluster", "check"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let report = check(run);
    assert!(
        report.contains("√ the local gateway has a link to east"),
        "{report}"
    );
    let ns = ["-n", "linkerd-multicluster"];
    let yaml = run.ok(&[
        &["--cluster", "west", "get", "links", "east", "-o", "yaml"][..],
        &ns,
    ]
    .concat());
    assert!(yaml.contains("targetClusterName: east"), "{yaml}");
    let file = run.home.path().join("link-east.yaml");
    std::fs::write(&file, &yaml).unwrap();
    run.ok(&[&["--cluster", "west", "delete", "links", "east"][..], &ns].concat());
    run.wait(
        "west's gateway to stop the link to east",
        Duration::from_secs(20),
        |r| gateway_log_lines(r, &["Link deleted; link stopped", "east"]) == 1,
    );
    let mirror = [
        "--cluster",
        "west",
        "get",
        "svc",
        "myapp-east",
        "-n",
        "production",
    ];
    run.wait("the mirror myapp-east to go", Duration::from_secs(20), |r| {
        !r.cli(&mirror).status.success()
    });
    run.ok(&["--cluster", "west", "apply", "-f", file.to_str().unwrap()]);
    run.wait(
        "west's gateway to dial east again",
        Duration::from_secs(20),
        |r| gateway_log_lines(r, &["link added from its Link", "east"]) == 2,
    );
    run.wait(
        "the mirror myapp-east to come back",
        Duration::from_secs(20),
        |r| r.cli(&mirror).status.success(),
    );
    run.wait(
        "check to see the link to east again",
        Duration::from_secs(20),
        |r| check(r).contains("√ the local gateway has a link to east"),
    );
    run.wait(
        "west's frontend to reach east again",
        Duration::from_secs(20),
        |r| {
            r.client(
                "west/frontend",
                "http://myapp-east.production.svc.cluster.local/",
                5,
            )["succeeded"]
                == 5
        },
    );
}

#[test]
fn west_east_in_network_namespaces() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must run the netns topology"
        );
        eprintln!("SKIPPED west_east_in_network_namespaces: needs root");
        return;
    }
    let run = Run::start("netns");
    // The cluster DNS answers inside the pod's namespace, for Services and mirrors, and
    // plain names reach services through iptables capture. The mirror follows east through
    // the gateway link, which may still be coming up when `strait up` reports ready.
    let lookup = [
        "exec",
        "west/frontend",
        "--",
        "getent",
        "hosts",
        "myapp-east.production.svc.cluster.local",
    ];
    run.wait(
        "the mirror myapp-east in west's DNS",
        Duration::from_secs(15),
        |r| r.cli(&lookup).status.success(),
    );
    let hosts = run.ok(&lookup);
    assert!(
        hosts.starts_with("198.1"),
        "the mirror resolves to its cluster IP: {hosts}"
    );
    let short = run.client("east/myapp-v1", "http://myapp/", 5);
    assert_eq!(short["succeeded"], 5, "search domains and capture: {short:#}");
    exercise(&run);
    assert_control_plane_tls(&run);

    // A crash of `strait up` itself: `strait down` still removes everything.
    let slot = run
        .record()
        .filter(|r| r["isolation"] == "netns")
        .map(|r| r["slot"].as_u64().unwrap());
    let pids = run.recorded_pids();
    let mut run = run;
    let mut up = run.up.take().unwrap();
    up.kill().unwrap();
    up.wait().unwrap();
    let out = run.cli(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cleaned up"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(&run, slot, &pids);
}

#[test]
fn a_broken_topology_starts_nothing_and_says_where() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: strait.io/v1alpha1\nkind: Topology\nmetadata: {name: bad}\nspec:\n  clusters:\n    - name: west\n      manifests: [nowhere]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .env("STRAIT_HOME", home.path())
        .args(["up", &file.display().to_string(), "--isolation", "loopback"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.yaml:7:19: document 1 (topology): spec.clusters[0].manifests[0]: expected an existing file or directory"),
        "{err}"
    );
    assert!(err.contains("Nothing of this run is left running"), "{err}");
    assert!(
        !home.path().join("runs").exists()
            || std::fs::read_dir(home.path().join("runs"))
                .unwrap()
                .next()
                .is_none()
    );

    // An image without a command is found before anything starts, with the file to fix.
    let dir = home.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("d.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: db, namespace: default}\nspec:\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: postgres:16}]}\n",
    )
    .unwrap();
    std::fs::write(
        &file,
        "apiVersion: strait.io/v1alpha1\nkind: Topology\nmetadata: {name: bad}\nspec:\n  clusters:\n    - name: west\n      manifests: [m]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .env("STRAIT_HOME", home.path())
        .args(["up", &file.display().to_string(), "--isolation", "loopback"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cluster west: deployment/default/db: container \"db\": image \"postgres:16\" has no command; add it under spec.images"),
        "{err}"
    );

    // Commands against a cluster that is not running say how to start one.
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .env("STRAIT_HOME", home.path())
        .args(["--cluster", "west", "get", "pods"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no running cluster named \"west\"") && err.contains("strait up"),
        "{err}"
    );
}

#[test]
fn the_seeds_canary_splits_90_10_within_3_percent() {
    let run = Run::start_topology("canary", "loopback");
    let report = run.client_at(
        "local/frontend",
        "http://myapp.production.svc.cluster.local/",
        2000,
        500,
    );
    assert_eq!(report["succeeded"], 2000, "{report:#}");
    let by_version = |v: &str| -> u64 {
        report["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["version"] == v)
            .map(|s| s["requests"].as_u64().unwrap())
            .sum()
    };
    let v2 = by_version("v2") as f64 / 2000.0;
    assert_eq!(by_version("v1") + by_version("v2"), 2000, "{report:#}");
    assert!(
        (v2 - 0.10).abs() <= 0.03,
        "myapp-v2 got {:.1}% of 2000 requests, expected 10% ± 3%",
        v2 * 100.0
    );
    run.down();
}

#[test]
fn a_dead_gateway_fails_traffic_over_to_the_next_cluster_and_back() {
    let run = Run::start_topology("failover", "loopback");
    let weights = |r: &Run| -> Vec<(String, u64)> {
        let out = r.cli(&[
            "--cluster",
            "west",
            "get",
            "trafficsplit",
            "myapp",
            "-n",
            "production",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["spec"]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                (
                    b["service"].as_str().unwrap_or_default().to_string(),
                    b["weight"].as_u64().unwrap_or(99),
                )
            })
            .collect()
    };
    let primary = vec![("myapp-east".to_string(), 1), ("myapp-central".to_string(), 0)];
    let failed_over = vec![("myapp-east".to_string(), 0), ("myapp-central".to_string(), 1)];
    run.wait("the primary to serve", Duration::from_secs(10), |r| {
        weights(r) == primary
    });
    let answered_by = |r: &Run| -> Vec<String> {
        let rep = r.client("west/frontend", "http://myapp.production.svc.cluster.local/", 10);
        let mut clusters: Vec<String> = rep["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["cluster"].as_str().unwrap_or_default().to_string())
            .collect();
        clusters.dedup();
        if rep["succeeded"] != 10 {
            clusters.push(format!("{} failed", rep["failed"]));
        }
        clusters
    };
    run.wait("east to answer", Duration::from_secs(10), |r| {
        answered_by(r) == ["east"]
    });
    // Freeze east's gateway: it stops answering probes (and relaying) without exiting, so
    // the supervisor does not restart it.
    let pid_file = run.run_dir().unwrap().join("pids/east_gateway.pid");
    let pid = std::fs::read_to_string(pid_file).unwrap().trim().to_string();
    assert!(
        Command::new("kill")
            .args(["-s", "STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    run.wait("failover to central", Duration::from_secs(15), |r| {
        weights(r) == failed_over
    });
    run.wait("central to answer", Duration::from_secs(15), |r| {
        answered_by(r) == ["central"]
    });
    let gateways = run.ok(&["--cluster", "west", "multicluster", "gateways"]);
    assert!(
        gateways
            .lines()
            .any(|l| l.starts_with("east") && l.contains("False")),
        "{gateways}"
    );
    assert!(
        Command::new("kill")
            .args(["-s", "CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    run.wait("traffic to return to east", Duration::from_secs(15), |r| {
        weights(r) == primary
    });
    run.wait("east to answer again", Duration::from_secs(15), |r| {
        answered_by(r) == ["east"]
    });
    run.down();
}

#[test]
fn two_runs_of_one_topology_never_collide() {
    let first = Run::start("loopback");
    // A second run of the same topology, in the same home.
    let log = first.home.path().join("second.log");
    let mut second = first.spawn_up("west-east", "loopback", &log);
    let records = |r: &Run| -> Vec<Value> {
        std::fs::read_dir(r.home.path().join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path().join("run.json")).ok()?).ok())
            .collect()
    };
    first.wait("the second run to be ready", Duration::from_secs(60), |r| {
        let recs = records(r);
        recs.len() == 2 && recs.iter().all(|rec| rec["status"] == "ready")
    });
    let recs = records(&first);
    assert_ne!(recs[0]["id"], recs[1]["id"]);
    assert_ne!(recs[0]["slot"], recs[1]["slot"]);
    assert_ne!(recs[0]["clusters"][0]["block"], recs[1]["clusters"][0]["block"]);
    // A bare cluster name is now ambiguous, and the error says how to pick.
    let out = first.cli(&["--cluster", "west", "get", "pods", "-A"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("several runs have a cluster \"west\"") && err.contains("--cluster RUN/west"),
        "{err}"
    );
    for rec in &recs {
        let id = rec["id"].as_str().unwrap();
        let pods = first.ok(&[
            "--cluster",
            &format!("{id}/east"),
            "get",
            "pods",
            "-n",
            "production",
            "-o",
            "name",
        ]);
        assert_eq!(pods.lines().count(), 2, "{id}: {pods}");
    }
    // Stopping one run leaves the other serving.
    let second_id = recs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .find(|id| {
            std::fs::read_to_string(first.home.path().join("runs").join(id).join("run.json"))
                .is_ok_and(|t| t.contains(&format!("\"pid\": {}", second.id())))
        })
        .expect("the second run's record");
    let out = first.cli(&["down", &second_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(wait_child(&mut second, Duration::from_secs(30)), Some(0));
    let report = first.client("east/myapp-v1", "http://myapp.production.svc.cluster.local/", 5);
    assert_eq!(report["succeeded"], 5, "the first run still serves: {report:#}");
    first.down();
}

#[test]
fn deny_by_default_allows_only_the_frontend() {
    for isolation in ["loopback", "netns"] {
        if isolation == "netns" && !is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            continue;
        }
        let run = Run::start_topology("deny-by-default", isolation);
        let url = "http://api.production.svc.cluster.local/";
        let allowed = run.client("local/frontend", url, 10);
        assert_eq!(allowed["succeeded"], 10, "{isolation}: {allowed:#}");
        let denied = run.client("local/intruder", url, 10);
        assert_eq!(denied["failed"], 10, "{isolation}: {denied:#}");
        let errors = denied["errors"].to_string();
        assert!(
            errors.contains("HTTP 403")
                && errors.contains("default.production.serviceaccount.identity.linkerd.cluster.local"),
            "{isolation}: a denial is a 403 naming the client: {errors}"
        );
        let api = run.pod("local", "api");
        let m = metrics(&format!("{}:4191", api["ip"].as_str().unwrap()));
        assert!(
            m.lines()
                .any(|l| l.starts_with("inbound_http_authz_deny_total") && !l.ends_with(" 0")),
            "{isolation}: denials are counted:\n{m}"
        );
        run.down();
    }
}

/// What one failover under load looked like, from the client's per-request timeline.
#[derive(Debug)]
struct Failover {
    requests: u64,
    failed: u64,
    achieved_rps: f64,
    /// From the kill to the first answer, through a surviving path, to a request sent
    /// after the kill, ms.
    first_surviving_ms: f64,
    /// From the kill to the start of the first 100 ms window (of requests by send time)
    /// from which on every window's requests succeed (at most one failure in 100, for
    /// a request sent on the dying path in the instant before the client's proxy could
    /// know), ms.
    flowing_ms: f64,
    /// From the kill to the completion of the last failed request, ms (0 without any):
    /// requests in flight on the dead path fail when the failure is detected.
    last_failure_ms: f64,
    /// The slowest request sent in the second after the kill, ms.
    worst_latency_ms: f64,
}

/// A window of requests by send time, for [`Failover::flowing_ms`].
const WINDOW_MS: f64 = 100.0;

impl Failover {
    /// Traffic flows again through the surviving path once both have happened.
    fn recovery_ms(&self) -> f64 {
        self.first_surviving_ms.max(self.flowing_ms)
    }

    fn figures(&self) -> String {
        format!(
            "{} requests at {:.0} RPS, {} failed ({:.3}%); after the kill: first answer through the surviving path {:.0} ms, requests succeeding again from {:.0} ms, recovery {:.0} ms, last failure {:.0} ms, slowest request sent in the second after {:.0} ms",
            self.requests,
            self.achieved_rps,
            self.failed,
            self.failed as f64 * 100.0 / self.requests.max(1) as f64,
            self.first_surviving_ms,
            self.flowing_ms,
            self.recovery_ms(),
            self.last_failure_ms,
            self.worst_latency_ms
        )
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn failover_of(report: &Value, killed_unix_ms: u64, surviving: &[&str]) -> Failover {
    let kill = killed_unix_ms as f64 - report["started_unix_ms"].as_f64().unwrap();
    let mut first_surviving = f64::INFINITY;
    let mut last_failure: f64 = 0.0;
    let mut worst: f64 = 0.0;
    // (requests, failures) by window after the kill, by send time.
    let mut windows: std::collections::BTreeMap<u64, (u32, u32)> = Default::default();
    for s in report["timeline"].as_array().expect("a timeline") {
        let at = s["at_ms"].as_f64().unwrap();
        let latency = s["latency_ms"].as_f64().unwrap();
        let done = at + latency - kill;
        let ok = s["ok"].as_bool().unwrap();
        if !ok && done >= 0.0 {
            last_failure = last_failure.max(done);
        }
        let cluster = s["cluster"].as_str().unwrap_or_default();
        if ok && at >= kill && surviving.contains(&cluster) {
            first_surviving = first_surviving.min(done);
        }
        if (kill..kill + 1000.0).contains(&at) {
            worst = worst.max(latency);
        }
        if at >= kill {
            let w = windows.entry(((at - kill) / WINDOW_MS) as u64).or_default();
            w.0 += 1;
            w.1 += u32::from(!ok);
        }
    }
    // The first window after which no window has more than 1% failures.
    let bad = |(n, f): &(u32, u32)| *f * 100 > *n;
    let flowing = windows
        .iter()
        .rev()
        .find(|(_, w)| bad(w))
        .map_or(0.0, |(i, _)| (*i + 1) as f64 * WINDOW_MS);
    Failover {
        requests: report["requests"].as_u64().unwrap(),
        failed: report["failed"].as_u64().unwrap(),
        achieved_rps: report["achieved_rps"].as_f64().unwrap(),
        first_surviving_ms: first_surviving,
        flowing_ms: flowing,
        last_failure_ms: last_failure,
        worst_latency_ms: worst,
    }
}

/// A fixed-rate load with a kill in it.
#[derive(Clone, Copy, Debug)]
struct Load {
    rps: u32,
    secs: u32,
    /// When the kill comes, after the start.
    after: Duration,
}

impl Load {
    /// The measurement against an optimised build: 1000 RPS for 4 s. A debug
    /// build's path (client, its proxy, two gateways, the server's proxy, five debug
    /// processes) answers in tens to hundreds of milliseconds on two shared cores and
    /// cannot carry that rate; against one the test runs 100 RPS for 8 s.
    fn for_binary() -> Load {
        if release_binary() {
            Load {
                rps: 1000,
                secs: 4,
                after: Duration::from_millis(1500),
            }
        } else {
            Load {
                rps: 100,
                secs: 8,
                after: Duration::from_millis(3000),
            }
        }
    }
}

/// Federated load: `strait demo client` in west's frontend at a fixed rate, every
/// request in the report's timeline; `kill` runs `load.after` into it and returns when
/// it killed (Unix ms).
fn federated_load(run: &Run, load: Load, kill: impl FnOnce() -> u64) -> (Value, u64) {
    let Load { rps, secs, after } = load;
    let (duration, rps) = (format!("{secs}s"), rps.to_string());
    // The report (a few hundred KB with its timeline) goes to a file: a pipe nobody reads
    // during the run would block the client.
    let out_path = run.home.path().join("load.json");
    let err_path = run.home.path().join("load.err");
    let mut client = run
        .strait()
        .args([
            "exec",
            "west/frontend",
            "--",
            "strait",
            "demo",
            "client",
            "http://myapp-federated.production.svc.cluster.local/",
            "--duration",
            &duration,
            "--rps",
            &rps,
            // Each connection has one request in flight: enough of them that requests
            // stuck on a dead path do not hold the offered rate back.
            "--concurrency",
            "100",
            "--timeout",
            "5s",
            "--progress",
            "0",
            "--timeline",
            "-o",
            "json",
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let killed = kill();
    let status = wait_child(&mut client, Duration::from_secs(u64::from(secs) + 20));
    if status.is_none() {
        let _ = client.kill();
        let _ = client.wait();
    }
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    // For a closer look: every load report, timeline included, kept where asked.
    if let Some(d) = std::env::var_os("STRAIT_E2E_REPORT_DIR") {
        let _ = std::fs::write(Path::new(&d).join(format!("load-{killed}.json")), &stdout);
    }
    let report: Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "load client (exit {status:?}): {e}: {}{}",
            String::from_utf8_lossy(&stdout),
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    });
    (report, killed)
}

/// SIGKILLs every process whose pid file in the run's `pids/` starts with `prefix`;
/// returns when (Unix ms) and how many.
fn kill_recorded(run: &Run, prefix: &str) -> (u64, usize) {
    let dir = run.run_dir().unwrap().join("pids");
    let pids: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| Some(std::fs::read_to_string(e.path()).ok()?.trim().to_string()))
        .collect();
    let at = unix_ms();
    for pid in &pids {
        assert!(
            Command::new("kill")
                .args(["-s", "KILL", pid])
                .status()
                .unwrap()
                .success()
        );
    }
    (at, pids.len())
}

#[test]
fn a_federated_service_fails_over_under_load_within_a_second() {
    let run = Run::start_topology("federated", "loopback");
    let url = "http://myapp-federated.production.svc.cluster.local/";
    let annotations = |r: &Run| -> Value {
        let out = r.cli(&[
            "--cluster",
            "west",
            "get",
            "svc",
            "myapp-federated",
            "-n",
            "production",
            "-o",
            "json",
        ]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)["metadata"]["annotations"].clone()
    };
    run.wait(
        "myapp-federated with its three members",
        Duration::from_secs(30),
        |r| {
            let a = annotations(r);
            a["multicluster.linkerd.io/local-discovery"] == "myapp"
                && a["multicluster.linkerd.io/remote-discovery"] == "myapp@central,myapp@east"
        },
    );
    // Each Link reports its member in Linkerd's shape: status.federatedServices, one
    // entry for production/myapp, Mirrored into myapp-federated.
    run.wait(
        "each Link to report its federated member",
        Duration::from_secs(15),
        |r| {
            ["east", "central"].iter().all(|link| {
                let out = r.cli(&[
                    "--cluster",
                    "west",
                    "get",
                    "link",
                    link,
                    "-n",
                    "linkerd-multicluster",
                    "-o",
                    "json",
                ]);
                let v = serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null);
                let entries = v["status"]["federatedServices"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                entries.len() == 1
                    && entries[0]["remoteRef"]["namespace"] == "production"
                    && entries[0]["remoteRef"]["name"] == "myapp"
                    && entries[0]["conditions"][0]["type"] == "Mirrored"
                    && entries[0]["conditions"][0]["status"] == "True"
                    && entries[0]["conditions"][0]["localRef"]["name"] == "myapp-federated"
            })
        },
    );
    let answered_by = |r: &Run, n: u32| -> Vec<String> {
        let rep = r.client("west/frontend", url, n);
        let mut clusters: Vec<String> = rep["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["cluster"].as_str().unwrap_or_default().to_string())
            .collect();
        clusters.sort();
        clusters.dedup();
        if rep["succeeded"] != n {
            clusters.push(format!("{} failed", rep["failed"]));
        }
        clusters
    };
    // Local endpoints first: west answers everything while it can.
    run.wait("west to answer", Duration::from_secs(15), |r| {
        answered_by(r, 20) == ["west"]
    });
    // The remote members are resolved and ready (their gateways answer probes).
    let west_slice = |r: &Run, slice: &str| {
        let out = r.cli(&[
            "--cluster",
            "west",
            "get",
            "endpointslice",
            slice,
            "-n",
            "production",
            "-o",
            "json",
        ]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    let ready = |r: &Run, slice: &str| west_slice(r, slice)["endpoints"][0]["conditions"]["ready"] == true;
    run.wait("both remote members to be ready", Duration::from_secs(20), |r| {
        ready(r, "myapp-federated-east") && ready(r, "myapp-federated-central")
    });
    // Each remote member lists its two pods, so west's proxies balance over them (and a
    // dead gateway takes both down at once).
    let listed = |r: &Run, slice: &str| {
        let v = west_slice(r, slice);
        let list = v["metadata"]["annotations"]["mirror.strait.io/remote-endpoints"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        list.split(',')
            .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
            .count()
    };
    run.wait(
        "each remote member to list its two pods",
        Duration::from_secs(20),
        |r| listed(r, "myapp-federated-east") == 2 && listed(r, "myapp-federated-central") == 2,
    );

    // 1. Every local endpoint dies (the pod's app and proxy, SIGKILL) under 1000 RPS.
    let load = Load::for_binary();
    let (report, killed) = federated_load(&run, load, || {
        let (at, n) = kill_recorded(&run, "west_production_myapp-");
        assert_eq!(n, 4, "west's two myapp pods, each an app and a proxy");
        at
    });
    let local = failover_of(&report, killed, &["east", "central"]);
    eprintln!("every local endpoint killed: {}", local.figures());

    // 2. A remote gateway is killed: the local member leaves the federated service
    //    (label removed), so east and central share the load; then east's gateway dies.
    run.ok(&[
        "--cluster",
        "west",
        "label",
        "svc",
        "myapp",
        "-n",
        "production",
        "mirror.linkerd.io/federated-",
    ]);
    run.wait("the local member to leave", Duration::from_secs(15), |r| {
        annotations(r)["multicluster.linkerd.io/local-discovery"].is_null()
    });
    // P2C between two healthy members promises no split: only that west no longer answers.
    run.wait(
        "only the remote members to answer",
        Duration::from_secs(20),
        |r| {
            let by = answered_by(r, 40);
            !by.is_empty() && by.iter().all(|c| c == "central" || c == "east")
        },
    );
    let (report, killed) = federated_load(&run, load, || {
        let (at, n) = kill_recorded(&run, "east_gateway");
        assert_eq!(n, 1, "east has one gateway");
        at
    });
    let gateway = failover_of(&report, killed, &["central"]);
    let east_before = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["cluster"] == "east"
                && s["at_ms"].as_f64().unwrap() + s["latency_ms"].as_f64().unwrap()
                    < (killed - report["started_unix_ms"].as_u64().unwrap()) as f64
        })
        .count();
    assert!(
        east_before > 0,
        "east carried none of the load before its gateway died: the case is not exercised"
    );
    eprintln!("a remote gateway killed: {}", gateway.figures());
    eprintln!("(load: {load:?}, release build: {})", release_binary());

    for (what, f) in [
        ("every local endpoint killed", &local),
        ("a remote gateway killed", &gateway),
    ] {
        let offered = f64::from(load.rps * load.secs);
        assert!(
            f.achieved_rps >= 0.9 * f64::from(load.rps) && f.requests as f64 >= 0.9 * offered,
            "{what}: the load did not reach {} RPS: {}",
            load.rps,
            f.figures()
        );
        assert!(
            f.recovery_ms() < 1000.0,
            "{what}: traffic did not flow through the surviving path within 1 s: {}",
            f.figures()
        );
        // What fails is what was in flight on the dead path when it died (a request
        // cannot be moved once sent): a share of about latency / duration. The issue's
        // budget is for the optimised build, whose requests take milliseconds; a debug
        // build's take tens to hundreds under the parallel test run, so there the
        // failures are only printed (the recovery assertion above still holds them to
        // requests sent within a second of the kill).
        if release_binary() {
            assert!(
                f.failed * 200 < f.requests,
                "{what}: 0.5% or more of the requests failed: {}",
                f.figures()
            );
        }
    }
    run.down();
}
