//! The multi-cluster gateway benchmarks (issue #5, "Speed"): real `strait gateway` pairs
//! against a TCP+TLS tunnel (a stunnel pair) and against no tunnel at all, every baseline
//! measured in the same run, in alternating rounds.
//!
//! - **throughput** (loopback): one flow pushes a large payload through each tunnel;
//!   Gbit/s and the CPU both tunnel processes spent per GiB (from `/proc`);
//! - **hop latency** (loopback): paced request/answer round trips on a warm connection,
//!   client → backend directly and through the gateway pair (egress, QUIC link,
//!   ingress), and through the stunnel pair for reference;
//! - **request flows under loss**: two network namespaces joined by a veth with random
//!   loss on both ingresses ([`netns`]); many concurrent closed-loop request flows through
//!   each tunnel (one QUIC stream each on the gateways' single connection, one TCP+TLS
//!   connection each through stunnel); request rate and p50/p99.
//!
//! Each gateway pair runs with one `--congestion` value, so the same run also compares
//! the congestion controllers. The pieces: [`tunnel`] starts the tunnels, [`traffic`]
//! is the backend and the clients (in this process), [`report`] the tables and the
//! `BENCHMARKS.md` section.

pub mod netns;
pub mod report;
pub mod traffic;
pub mod tunnel;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use super::proxy::Error;
use super::proxy::process;
use super::proxy::tools::which;
use super::stats::percentile;
use traffic::{Backend, Request};
use tunnel::{Kind, Site, Tunnel};

/// How much and how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Alternating rounds of the throughput and latency measurements.
    pub rounds: u32,
    /// Payload of each throughput measurement.
    pub bulk_bytes: u64,
    /// Paced round trips per second in the latency measurement.
    pub latency_rate: u32,
    /// Round trips per path per round (after 200 not measured).
    pub latency_requests: usize,
    /// Concurrent request flows.
    pub flows: usize,
    /// Request payload of each flow's requests, bytes.
    pub flow_request: usize,
    /// Answer size, bytes.
    pub flow_answer: usize,
    /// Not measured at the start of each flows run.
    pub flow_warmup: Duration,
    /// Measured window of each flows run.
    pub flow_window: Duration,
    /// Rounds of the flows measurement.
    pub flow_rounds: u32,
    /// Percent of packets dropped in each direction between the namespaces.
    pub loss_percent: u32,
    /// The gateway pairs' congestion controllers; the first is the gateway's default,
    /// which the targets are judged on.
    pub congestion: Vec<&'static str>,
}

impl Settings {
    /// The issue's benchmark.
    pub fn issue() -> Self {
        Settings {
            rounds: 5,
            bulk_bytes: 1 << 30,
            latency_rate: 1000,
            latency_requests: 2000,
            flows: 100,
            flow_request: 256,
            flow_answer: 16 * 1024,
            flow_warmup: Duration::from_secs(2),
            flow_window: Duration::from_secs(10),
            flow_rounds: 3,
            loss_percent: 1,
            congestion: vec!["bbr", "cubic"],
        }
    }
}

/// The issue's targets.
pub mod targets {
    use std::time::Duration;
    /// Added p50 of the gateway hop.
    pub const HOP_P50: Duration = Duration::from_micros(150);
    /// Single-flow throughput against stunnel's.
    pub const THROUGHPUT_RATIO: f64 = 1.0;
}

/// One throughput measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Transfer {
    /// Gbit/s of payload.
    pub gbit_per_s: f64,
    /// CPU-seconds of both tunnel processes per GiB of payload.
    pub cpu_s_per_gib: f64,
}

/// One tunnel's throughput rounds.
#[derive(Clone, Debug)]
pub struct ThroughputPath {
    /// Which tunnel.
    pub kind: Kind,
    /// One per round.
    pub rounds: Vec<Transfer>,
}

/// One path's latency rounds.
#[derive(Clone, Debug)]
pub struct LatencyPath {
    /// `direct`, or the tunnel.
    pub label: String,
    /// Each round's p50 and p99.
    pub rounds: Vec<(Duration, Duration)>,
}

/// One flows run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowsRound {
    /// Requests per second.
    pub rate: f64,
    /// Median round trip.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Flows that failed or stalled.
    pub errors: u64,
    /// CPU time both tunnel processes spent per answered request over the whole run
    /// (warm-up included).
    pub cpu_per_request: Duration,
}

/// One tunnel's flows rounds.
#[derive(Clone, Debug)]
pub struct FlowsPath {
    /// Which tunnel.
    pub kind: Kind,
    /// One per round.
    pub rounds: Vec<FlowsRound>,
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Results {
    /// Throughput, stunnel first.
    pub throughput: Vec<ThroughputPath>,
    /// Hop latency: direct, the default gateway pair, stunnel.
    pub latency: Vec<LatencyPath>,
    /// Request flows under loss, stunnel first.
    pub flows: Vec<FlowsPath>,
    /// Packets the loss rules dropped (client side, server side).
    pub dropped: (u64, u64),
    /// `net.core.rmem_max` / `wmem_max` on the host.
    pub socket_limits: (u64, u64),
    /// Requests the backends answered and requests the clients counted.
    pub accounting: (u64, u64),
}

/// What a run needs.
pub struct Context<'a> {
    /// The `strait` binary.
    pub strait: &'a Path,
    /// The `stunnel` binary.
    pub stunnel: PathBuf,
    /// Scratch directory.
    pub dir: PathBuf,
    /// The runtime the clients and backends run on.
    pub rt: &'a tokio::runtime::Runtime,
}

/// Each tool's binary and its Debian package.
pub const PACKAGES: &[(&str, &str)] = &[
    ("stunnel4", "stunnel4"),
    ("ethtool", "ethtool"),
    ("nft", "nftables"),
    ("ip", "iproute2"),
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Finds stunnel, ethtool, nft and ip, installing missing packages with apt-get (root
/// only: the namespaces need root anyway); returns stunnel's path.
pub fn ensure_tools() -> Result<PathBuf, Error> {
    if !is_root() {
        return Err(Error::Tool(
            "bench gateway creates network namespaces and nftables rules: run it as root".into(),
        ));
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, p)| *p)
        .collect();
    if !missing.is_empty() {
        eprintln!("tools: apt-get install -y {}", missing.join(" "));
        let ok = Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            return Err(Error::Tool(format!(
                "could not install {}; install them with apt-get",
                missing.join(" ")
            )));
        }
    }
    which("stunnel4").ok_or_else(|| Error::Tool("stunnel4 is still missing".into()))
}

/// `stunnel -version`'s identification, e.g. `stunnel 5.68, OpenSSL 3.0.9`.
pub fn stunnel_version(stunnel: &Path) -> String {
    let out = Command::new(stunnel).arg("-version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
        .unwrap_or_default();
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("stunnel ")?.split_whitespace().next())
        .map(|v| format!("stunnel {v}"));
    let openssl = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Compiled with OpenSSL ")?
                .split_whitespace()
                .next()
        })
        .map(|v| format!("OpenSSL {v}"));
    [version, openssl]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
}

fn sysctl(key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn kinds(settings: &Settings) -> Vec<Kind> {
    std::iter::once(Kind::Stunnel)
        .chain(settings.congestion.iter().map(|c| Kind::Gateway(c)))
        .collect()
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        what: what.to_string(),
        source: e,
    }
}

/// Counts of answers: what the backend answered must cover what the clients counted.
#[derive(Default)]
struct Accounting {
    answered: u64,
    counted: u64,
}

impl Accounting {
    fn check(&mut self, what: &str, answered: u64, counted: u64) -> Result<(), Error> {
        self.answered += answered;
        self.counted += counted;
        if answered < counted {
            return Err(Error::Accounting(format!(
                "{what}: the clients counted {counted} answers but the backend answered only {answered}"
            )));
        }
        Ok(())
    }
}

/// Runs every measurement; the tunnels, namespaces and backends are gone when it returns.
pub fn run(ctx: &Context<'_>, settings: &Settings) -> Result<Results, Error> {
    let pki = tunnel::pki(&ctx.dir)?;
    let _enter = ctx.rt.enter();
    let mut accounting = Accounting::default();

    // Loopback: throughput and hop latency.
    let (client_ip, server_ip) = (
        IpAddr::V4(Ipv4Addr::new(127, 47, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(127, 47, 0, 3)),
    );
    let backend = Backend::start(None, SocketAddr::new(server_ip, 18080)).map_err(io_err("backend"))?;
    let setup = tunnel::Setup {
        strait: ctx.strait,
        stunnel: &ctx.stunnel,
        pki: &pki,
        dir: &ctx.dir.join("loopback"),
        client: Site {
            ns: None,
            ip: client_ip,
        },
        server: Site {
            ns: None,
            ip: server_ip,
        },
        backend: backend.addr(),
    };
    let mut tunnels = Vec::new();
    for (n, kind) in kinds(settings).into_iter().enumerate() {
        tunnels.push(tunnel::start(kind, n as u16, &setup)?);
    }
    let throughput = throughput(ctx, settings, &mut tunnels, &backend, &mut accounting)?;
    let latency = latency(ctx, settings, &mut tunnels, &backend, &mut accounting)?;
    for t in tunnels {
        t.stop();
    }
    drop(backend);

    // Two namespaces and a lossy veth: request flows.
    let link = netns::LossyLink::create(settings.loss_percent)?;
    let backend =
        Backend::start(Some(&link.b), SocketAddr::new(link.b_ip(), 18080)).map_err(io_err("backend"))?;
    let setup = tunnel::Setup {
        dir: &ctx.dir.join("netns"),
        client: Site {
            ns: Some(link.a.clone()),
            ip: link.a_ip(),
        },
        server: Site {
            ns: Some(link.b.clone()),
            ip: link.b_ip(),
        },
        backend: backend.addr(),
        ..setup
    };
    let mut tunnels = Vec::new();
    for (n, kind) in kinds(settings).into_iter().enumerate() {
        tunnels.push(tunnel::start(kind, n as u16, &setup)?);
    }
    let dropped0 = link.dropped();
    let flows = flows(ctx, settings, &mut tunnels, &backend, &mut accounting)?;
    let dropped1 = link.dropped();
    for t in tunnels {
        t.stop();
    }
    drop(backend);
    drop(link);
    Ok(Results {
        throughput,
        latency,
        flows,
        dropped: (dropped1.0 - dropped0.0, dropped1.1 - dropped0.1),
        socket_limits: (sysctl("net.core.rmem_max"), sysctl("net.core.wmem_max")),
        accounting: (accounting.answered, accounting.counted),
    })
}

fn cpu(pids: &[u32]) -> Result<Duration, Error> {
    pids.iter()
        .map(|p| {
            process::cpu_time(*p)
                .ok_or_else(|| Error::Process(format!("cannot read the CPU time of process {p}")))
        })
        .sum()
}

fn throughput(
    ctx: &Context<'_>,
    settings: &Settings,
    tunnels: &mut [Tunnel],
    backend: &Backend,
    accounting: &mut Accounting,
) -> Result<Vec<ThroughputPath>, Error> {
    let mut paths: Vec<ThroughputPath> = tunnels
        .iter()
        .map(|t| ThroughputPath {
            kind: t.kind,
            rounds: Vec::new(),
        })
        .collect();
    for round in 0..settings.rounds {
        for (i, t) in tunnels.iter_mut().enumerate() {
            eprintln!(
                "throughput round {}/{}: {} MiB through the {}",
                round + 1,
                settings.rounds,
                settings.bulk_bytes >> 20,
                t.kind.label()
            );
            let before = backend.requests();
            let pids = t.pids();
            let (took, cpu_used) = ctx
                .rt
                .block_on(async {
                    let mut conn = traffic::connect(None, t.entry, 1).await?.remove(0);
                    // Warm: the stream (or TLS connection) is up before the clock starts.
                    traffic::exchange(&mut conn, &Request::new(16, 16), &mut Vec::new()).await?;
                    let cpu0 = cpu(&pids).map_err(std::io::Error::other)?;
                    let took = tokio::time::timeout(
                        Duration::from_secs(120),
                        traffic::bulk(&mut conn, settings.bulk_bytes),
                    )
                    .await
                    .map_err(|_| std::io::Error::other("the transfer took over 120 s"))??;
                    let cpu1 = cpu(&pids).map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>((took, cpu1 - cpu0))
                })
                .map_err(io_err(&format!("throughput through the {}", t.kind.label())))?;
            t.check_alive()?;
            accounting.check(&t.kind.label(), backend.requests() - before, 2)?;
            let gib = settings.bulk_bytes as f64 / f64::from(1u32 << 30);
            paths[i].rounds.push(Transfer {
                gbit_per_s: settings.bulk_bytes as f64 * 8.0 / took.as_secs_f64() / 1e9,
                cpu_s_per_gib: cpu_used.as_secs_f64() / gib,
            });
        }
    }
    Ok(paths)
}

fn latency(
    ctx: &Context<'_>,
    settings: &Settings,
    tunnels: &mut [Tunnel],
    backend: &Backend,
    accounting: &mut Accounting,
) -> Result<Vec<LatencyPath>, Error> {
    // Direct, the default gateway pair, stunnel.
    let gateway = tunnels
        .iter()
        .position(|t| matches!(t.kind, Kind::Gateway(_)))
        .ok_or_else(|| Error::Process("no gateway pair to measure".into()))?;
    let entries: Vec<(String, SocketAddr, Option<usize>)> = vec![
        ("direct".into(), backend.addr(), None),
        (
            tunnels[gateway].kind.label(),
            tunnels[gateway].entry,
            Some(gateway),
        ),
        (tunnels[0].kind.label(), tunnels[0].entry, Some(0)),
    ];
    let mut paths: Vec<LatencyPath> = entries
        .iter()
        .map(|(label, _, _)| LatencyPath {
            label: label.clone(),
            rounds: Vec::new(),
        })
        .collect();
    let request = Request::new(64, 64);
    for round in 0..settings.rounds {
        for (i, (label, addr, tunnel)) in entries.iter().enumerate() {
            eprintln!(
                "latency round {}/{}: {} round trips at {}/s, {label}",
                round + 1,
                settings.rounds,
                settings.latency_requests,
                settings.latency_rate
            );
            let before = backend.requests();
            let mut samples = ctx
                .rt
                .block_on(async {
                    let mut conn = traffic::connect(None, *addr, 1).await?.remove(0);
                    traffic::paced(&mut conn, &request, settings.latency_rate, 200).await?;
                    let bound = Duration::from_secs(60);
                    tokio::time::timeout(
                        bound,
                        traffic::paced(
                            &mut conn,
                            &request,
                            settings.latency_rate,
                            settings.latency_requests,
                        ),
                    )
                    .await
                    .map_err(|_| std::io::Error::other("round trips stalled"))?
                })
                .map_err(io_err(&format!("latency through {label}")))?;
            if let Some(t) = tunnel {
                tunnels[*t].check_alive()?;
            }
            accounting.check(
                label,
                backend.requests() - before,
                200 + settings.latency_requests as u64,
            )?;
            samples.sort_unstable();
            paths[i]
                .rounds
                .push((percentile(&samples, 50.0), percentile(&samples, 99.0)));
        }
    }
    Ok(paths)
}

fn flows(
    ctx: &Context<'_>,
    settings: &Settings,
    tunnels: &mut [Tunnel],
    backend: &Backend,
    accounting: &mut Accounting,
) -> Result<Vec<FlowsPath>, Error> {
    let mut paths: Vec<FlowsPath> = tunnels
        .iter()
        .map(|t| FlowsPath {
            kind: t.kind,
            rounds: Vec::new(),
        })
        .collect();
    let request = Request::new(settings.flow_request, settings.flow_answer);
    for round in 0..settings.flow_rounds {
        for (i, t) in tunnels.iter_mut().enumerate() {
            eprintln!(
                "flows round {}/{}: {} flows for {:?} through the {} ({}% loss each way)",
                round + 1,
                settings.flow_rounds,
                settings.flows,
                settings.flow_window,
                t.kind.label(),
                settings.loss_percent
            );
            let before = backend.requests();
            let pids = t.pids();
            let cpu0 = cpu(&pids)?;
            let mut r = ctx
                .rt
                .block_on(async {
                    let conns = traffic::connect(t.ns.as_deref(), t.entry, settings.flows).await?;
                    Ok::<_, std::io::Error>(
                        traffic::flows(
                            conns,
                            &request,
                            settings.flow_warmup,
                            settings.flow_window,
                            Duration::from_secs(5),
                        )
                        .await,
                    )
                })
                .map_err(io_err(&format!("flows through the {}", t.kind.label())))?;
            t.check_alive()?;
            let cpu_used = cpu(&pids)? - cpu0;
            // Answers still in flight when the flows stopped may land after the count.
            std::thread::sleep(Duration::from_millis(200));
            let answered = backend.requests() - before;
            accounting.check(&t.kind.label(), answered, r.completed)?;
            r.latencies.sort_unstable();
            paths[i].rounds.push(FlowsRound {
                rate: r.rate(),
                p50: percentile(&r.latencies, 50.0),
                p99: percentile(&r.latencies, 99.0),
                errors: r.errors,
                cpu_per_request: cpu_used / answered.max(1) as u32,
            });
        }
    }
    Ok(paths)
}

/// The median of `values` (upper median for an even count); 0 when empty.
pub fn median<T: Copy + PartialOrd + Default>(values: impl IntoIterator<Item = T>) -> T {
    let mut v: Vec<T> = values.into_iter().collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or_default()
}
