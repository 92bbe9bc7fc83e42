//! The data-plane benchmark of issue #4: a client proxy and a server proxy (`strait proxy`
//! child processes, explicit mode, mTLS between them) on loopback, against a direct
//! client → server baseline measured in the same run.
//!
//! Load comes from established generators: `h2load` (Debian's nghttp2-client) at a fixed
//! 1000 RPS over 4 HTTP/1.1 connections with a per-request log, and `wrk` for saturation.
//! The backend answers 1 KiB bodies. CPU and RSS are read from `/proc/<pid>` of each proxy
//! over the fixed-rate run. Not measured yet: the HAProxy pair the issue compares
//! saturation against.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use strait_api::Store;
use strait_api::loader::{LoadOptions, load_str};
use strait_api::store::local::LocalStore;
use strait_controller::run::{ControllerConfig, LocalIdentity};
use strait_identity::TrustDomain;

use super::BenchError;
use super::stats::{Summary, ms};
use super::target::Memory;

/// The target authority every request names.
pub const AUTHORITY: &str = "myapp.production.svc.cluster.local:80";
const CLIENT_IP: &str = "127.46.0.2";
const SERVER_IP: &str = "127.46.0.3";

/// What to run.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Fixed request rate, total.
    pub rps: u32,
    /// Connections for the fixed-rate runs.
    pub connections: u32,
    /// Measured seconds of each fixed-rate run (after the warm-up).
    pub duration: Duration,
    /// Warm-up dropped from each fixed-rate run.
    pub warmup: Duration,
    /// Saturation run length.
    pub saturation: Duration,
    /// Saturation connections.
    pub saturation_connections: u32,
}

impl ProxyConfig {
    /// The issue's sizes.
    pub fn issue() -> Self {
        Self {
            rps: 1000,
            connections: 4,
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(5),
            saturation: Duration::from_secs(15),
            saturation_connections: 16,
        }
    }
}

/// One fixed-rate run's latencies.
#[derive(Clone, Debug)]
pub struct FixedRate {
    /// Latency summary of successful requests after the warm-up.
    pub latency: Summary,
    /// Requests that failed (status -1 or not 200).
    pub failed: usize,
}

/// The figures.
#[derive(Clone, Debug)]
pub struct ProxyResult {
    /// The configuration.
    pub config: ProxyConfig,
    /// client → backend.
    pub direct: FixedRate,
    /// client → client proxy → (mTLS) → server proxy → backend.
    pub pair: FixedRate,
    /// VmRSS at the end of the fixed-rate run, KiB: client proxy, server proxy.
    pub rss_kib: (u64, u64),
    /// CPU seconds per second during the fixed-rate run: client proxy, server proxy.
    pub cpu: (f64, f64),
    /// Saturation requests/s: direct, pair.
    pub saturation_rps: (f64, f64),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// CPU seconds (user + system) used so far by `pid`.
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Result<f64, BenchError> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(io(format!("/proc/{pid}/stat")))?;
    parse_cpu(&stat)
        .map(|t| t as f64 / ticks_per_second)
        .ok_or_else(|| BenchError::Controller(format!("/proc/{pid}/stat does not parse")))
}

/// utime + stime (clock ticks) of a `/proc/<pid>/stat` line.
pub fn parse_cpu(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: count fields after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the full line are 12 and 13 after "pid (comm)".
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Latencies from an h2load `--log-file`: rows `start_us\tstatus\tduration_us`; rows that
/// started before `skip_until_us` are the warm-up.
pub fn parse_h2load_log(text: &str, warmup: Duration) -> FixedRate {
    let rows: Vec<(u64, i32, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut c = l.split('\t');
            Some((
                c.next()?.parse().ok()?,
                c.next()?.parse().ok()?,
                c.next()?.parse().ok()?,
            ))
        })
        .collect();
    let first = rows.iter().map(|r| r.0).min().unwrap_or(0);
    let skip = first + warmup.as_micros() as u64;
    let kept: Vec<&(u64, i32, u64)> = rows.iter().filter(|r| r.0 >= skip).collect();
    let failed = kept.iter().filter(|r| r.1 != 200).count();
    let samples: Vec<Duration> = kept
        .iter()
        .filter(|r| r.1 == 200)
        .map(|r| Duration::from_micros(r.2))
        .collect();
    FixedRate {
        latency: Summary::of(&samples),
        failed,
    }
}

/// `Requests/sec:` of wrk's output.
pub fn parse_wrk(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

async fn apply(store: &LocalStore, yaml: &str) -> Result<(), BenchError> {
    let objs = load_str("bench.yaml", yaml, &LoadOptions::default())
        .map_err(|e| BenchError::Controller(e.to_string()))?
        .into_iter()
        .map(|l| l.object)
        .collect();
    store.apply(objs).await.map(drop).map_err(Into::into)
}

async fn backend(addr: SocketAddr) -> Result<(), BenchError> {
    use http_body_util::Full;
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io(format!("backend on {addr}")))?;
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { return };
            let _ = tcp.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let b = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(b))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(())
}

async fn ready(admin: SocketAddr, within: Duration) -> Result<(), BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            let _ = s
                .write_all(b"GET /ready HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
                .await;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            if out.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BenchError::Timeout {
        what: format!("the proxy with admin {admin} to be ready"),
        after: within,
    })
}

/// Runs the whole benchmark with the `strait` binary at `strait`.
pub async fn run(strait: &Path, config: ProxyConfig) -> Result<ProxyResult, BenchError> {
    let dir = tempfile::tempdir().map_err(io("temporary directory"))?;
    let id = LocalIdentity::load_or_create(
        &dir.path().join("identity"),
        &TrustDomain::default(),
        SystemTime::now(),
    )
    .map_err(|e| BenchError::Controller(e.to_string()))?;
    let store = LocalStore::in_memory();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let cfg = ControllerConfig {
        destination_addr: any,
        identity_addr: any,
        policy_addr: any,
        admin_addr: any,
        local_endpoints: true,
        ..Default::default()
    };
    let (btx, brx) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(strait_controller::run::run(
        cfg,
        store.clone(),
        id.anchors.clone(),
        id.issuer.clone(),
        id.tokens.clone(),
        move |b| {
            let _ = btx.send(b);
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    let bound = brx
        .await
        .map_err(|_| BenchError::Controller("the controller stopped before listening".into()))?;
    let pod = |name: &str, app: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: production\n  labels: {{app: {app}, linkerd.io/control-plane-ns: linkerd}}\nspec:\n  serviceAccountName: {app}\n  containers: [{{name: app, image: x}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
        )
    };
    apply(
        &store,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: production}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: myapp, namespace: production}}\nspec:\n  selector: {{app: myapp}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\n{}---\n{}",
            pod("web-1", "web", CLIENT_IP),
            pod("myapp-1", "myapp", SERVER_IP)
        ),
    )
    .await?;
    let backend_addr: SocketAddr = format!("{SERVER_IP}:8080").parse().expect("an address");
    backend(backend_addr).await?;

    let spawn = |name: &str, sa: &str, ip: &str| -> Result<tokio::process::Child, BenchError> {
        let token = dir.path().join(format!("{name}.token"));
        std::fs::write(&token, id.tokens.mint("production", sa, name)).map_err(io("token file"))?;
        tokio::process::Command::new(strait)
            .arg("proxy")
            .env("STRAIT_PROXY_CAPTURE", "explicit")
            .env(
                "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
                bound.destination.to_string(),
            )
            .env("LINKERD2_PROXY_IDENTITY_SVC_ADDR", bound.identity.to_string())
            .env("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", id.anchors.to_pem())
            .env(
                "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
                format!("{sa}.production.serviceaccount.identity.linkerd.cluster.local"),
            )
            .env("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", &token)
            .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", format!("{ip}:4143"))
            .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", format!("{ip}:4140"))
            .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", format!("{ip}:4191"))
            .env("LINKERD2_PROXY_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("cannot start {}", strait.display())))
    };
    let mut server = spawn("myapp-1", "myapp", SERVER_IP)?;
    let mut client = spawn("web-1", "web", CLIENT_IP)?;
    let admin = |ip: &str| -> SocketAddr { format!("{ip}:4191").parse().expect("an address") };
    ready(admin(SERVER_IP), Duration::from_secs(30)).await?;
    ready(admin(CLIENT_IP), Duration::from_secs(30)).await?;
    let (cpid, spid) = (
        client
            .id()
            .ok_or_else(|| BenchError::Controller("client proxy exited".into()))?,
        server
            .id()
            .ok_or_else(|| BenchError::Controller("server proxy exited".into()))?,
    );

    let h2load = |target: String, log: std::path::PathBuf| {
        let per_conn = (config.rps / config.connections).max(1);
        let secs = (config.duration + config.warmup).as_secs();
        let mut c = tokio::process::Command::new("h2load");
        c.args(["--h1", "-t", "1", "-c", &config.connections.to_string()])
            .args(["--rps", &per_conn.to_string(), "-D", &secs.to_string()])
            .arg(format!("--log-file={}", log.display()))
            .args(["-H", &format!(":authority: {AUTHORITY}")])
            .arg(target)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let fixed = |name: &str, target: String| {
        let log = dir.path().join(format!("{name}.log"));
        let mut cmd = h2load(target, log.clone());
        async move {
            let st = cmd
                .status()
                .await
                .map_err(io("cannot run h2load (apt-get install nghttp2-client)"))?;
            if !st.success() {
                return Err(BenchError::Controller(format!("h2load failed: {st}")));
            }
            let text = std::fs::read_to_string(&log).map_err(io("h2load log"))?;
            Ok::<_, BenchError>(parse_h2load_log(&text, config.warmup))
        }
    };
    eprintln!(
        "proxy: direct baseline, {} RPS over {} connections",
        config.rps, config.connections
    );
    let direct = fixed("direct", format!("http://{backend_addr}/")).await?;
    eprintln!("proxy: through the proxy pair");
    let ticks = 100.0;
    let (c0, s0, t0) = (
        cpu_seconds(cpid, ticks)?,
        cpu_seconds(spid, ticks)?,
        Instant::now(),
    );
    let pair = fixed("pair", format!("http://{CLIENT_IP}:4140/")).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (
        (cpu_seconds(cpid, ticks)? - c0) / elapsed,
        (cpu_seconds(spid, ticks)? - s0) / elapsed,
    );
    let rss_kib = (Memory::of(cpid)?.rss_kib, Memory::of(spid)?.rss_kib);

    let wrk = |target: String| {
        let secs = config.saturation.as_secs();
        async move {
            let out = tokio::process::Command::new("wrk")
                .args(["-t1", "-c", &config.saturation_connections.to_string(), "-d"])
                .arg(format!("{secs}s"))
                .args(["-H", &format!("Host: {AUTHORITY}")])
                .arg(target)
                .output()
                .await
                .map_err(io("cannot run wrk (apt-get install wrk)"))?;
            parse_wrk(&String::from_utf8_lossy(&out.stdout))
                .ok_or_else(|| BenchError::Controller("wrk printed no Requests/sec".into()))
        }
    };
    eprintln!("proxy: saturation, direct and through the pair");
    let saturation_rps = (
        wrk(format!("http://{backend_addr}/")).await?,
        wrk(format!("http://{CLIENT_IP}:4140/")).await?,
    );
    let _ = client.kill().await;
    let _ = server.kill().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    Ok(ProxyResult {
        config,
        direct,
        pair,
        rss_kib,
        cpu,
        saturation_rps,
    })
}

const BEGIN: &str = "<!-- BEGIN proxy: generated by `bench proxy`; edits here are replaced -->";
const END: &str = "<!-- END proxy -->";

fn verdict(ok: bool) -> &'static str {
    if ok { "pass" } else { "**FAIL**" }
}

/// The generated section of `BENCHMARKS.md`.
pub fn markdown(r: &ProxyResult, header: &str) -> String {
    let (d, p) = (&r.direct.latency, &r.pair.latency);
    let delta = |a: Duration, b: Duration| a.saturating_sub(b);
    let (d50, d99) = (delta(p.p50, d.p50), delta(p.p99, d.p99));
    // Latency deltas only count when every request of both runs succeeded.
    let clean = r.pair.failed == 0 && r.direct.failed == 0 && p.count > 0 && d.count > 0;
    let mib = |k: u64| k as f64 / 1024.0;
    let mut s = format!("{BEGIN}\n## Data plane: a proxy pair\n\n{header}\n\n");
    s.push_str(&format!(
        "Fixed rate: {} RPS over {} HTTP/1.1 connections for {} s (first {} s dropped), 1 KiB responses, h2load `--rps` (it paces on a 10 ms timer, so both runs carry the same burst artefacts).\n\n",
        r.config.rps,
        r.config.connections,
        (r.config.duration + r.config.warmup).as_secs(),
        r.config.warmup.as_secs()
    ));
    s.push_str("| run | requests | failed | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n");
    for (name, f) in [("direct", &r.direct), ("through the pair", &r.pair)] {
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            f.latency.count,
            f.failed,
            ms(f.latency.p50),
            ms(f.latency.p99),
            ms(f.latency.max)
        ));
    }
    s.push_str(&format!(
        "\n| target | measured | result |\n|---|---:|---|\n| added p50 ≤ 0.25 ms | {} | {} |\n| added p99 ≤ 0.50 ms | {} | {} |\n| RSS ≤ 15 MiB per proxy | client {:.1} MiB, server {:.1} MiB | {} |\n| CPU ≤ 0.1 s/s per proxy | client {:.3}, server {:.3} | {} |\n| saturation ≥ HAProxy pair | pair {:.0} RPS (direct {:.0} RPS, {} connections) | not compared: the HAProxy pair is not in the harness yet |\n",
        ms(d50),
        verdict(clean && d50 <= Duration::from_micros(250)),
        ms(d99),
        verdict(clean && d99 <= Duration::from_micros(500)),
        mib(r.rss_kib.0),
        mib(r.rss_kib.1),
        verdict(r.rss_kib.0.max(r.rss_kib.1) <= 15 * 1024),
        r.cpu.0,
        r.cpu.1,
        verdict(r.cpu.0.max(r.cpu.1) <= 0.1),
        r.saturation_rps.1,
        r.saturation_rps.0,
        r.config.saturation_connections,
    ));
    s.push_str(END);
    s.push('\n');
    s
}

/// `existing` with the proxy section replaced (or appended).
pub fn update_file(existing: &str, section: &str) -> String {
    match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if e > b => {
            let end = e + END.len();
            let end = if existing[end..].starts_with('\n') {
                end + 1
            } else {
                end
            };
            format!("{}{section}{}", &existing[..b], &existing[end..])
        }
        _ => format!(
            "{}\n{section}",
            existing.trim_end_matches('\n').to_string() + "\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_from_proc_stat() {
        let stat = "1234 (strait proxy) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 4 0 5 0";
        assert_eq!(parse_cpu(stat), Some(300));
    }

    #[test]
    fn h2load_logs_drop_the_warm_up_and_count_failures() {
        let log =
            "1000000\t200\t500\n1500000\t200\t900\n3000000\t200\t700\n3100000\t-1\t10\n3200000\t200\t300\n";
        let f = parse_h2load_log(log, Duration::from_secs(1));
        assert_eq!(f.latency.count, 2);
        assert_eq!(f.failed, 1);
        assert_eq!(f.latency.max, Duration::from_micros(700));
    }

    #[test]
    fn wrk_rate() {
        assert_eq!(
            parse_wrk("  Requests/sec:  12345.67\nTransfer/sec: 1MB"),
            Some(12345.67)
        );
        assert_eq!(parse_wrk("nothing"), None);
    }

    #[test]
    fn the_section_is_replaced_in_place() {
        let a = update_file("# B\n\nintro\n", &format!("{BEGIN}\none\n{END}\n"));
        let b = update_file(&a, &format!("{BEGIN}\ntwo\n{END}\n"));
        assert!(
            b.contains("two") && !b.contains("one") && b.starts_with("# B\n\nintro\n"),
            "{b}"
        );
    }
}
