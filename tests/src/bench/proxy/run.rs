//! Measuring one path (direct, or through a pair): start the backend and the proxies,
//! wait until a request goes through, warm up, run the fixed rate while sampling every
//! proxy from `/proc`, run the saturation load, stop everything, and check that the
//! backend answered at least every success the load generators counted (so no answer came
//! from anywhere else).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::load::{self, FixedRate, FixedRateLoad, Generator, Saturation};
use super::mesh::Backend;
use super::process::{self, Running};
use super::tools::Tools;
use super::{BuildContext, Error, Layout, Mesh, PairBuilder, pki};

/// How hard and how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Fixed rate, requests per second.
    pub rps: u32,
    /// Fixed-rate connections.
    pub connections: u32,
    /// Fixed-rate warm-up, not measured.
    pub warmup: Duration,
    /// Fixed-rate measured duration.
    pub duration: Duration,
    /// Saturation connections.
    pub saturation_connections: u32,
    /// Saturation duration.
    pub saturation_duration: Duration,
    /// The fixed-rate load generator.
    pub generator: Generator,
}

impl Settings {
    /// The issue's benchmark: 1000 RPS over 4 connections for 30 s after 5 s of warm-up;
    /// saturation with 16 connections for 15 s.
    pub fn issue() -> Self {
        Self {
            rps: 1000,
            connections: 4,
            warmup: Duration::from_secs(5),
            duration: Duration::from_secs(30),
            saturation_connections: 16,
            saturation_duration: Duration::from_secs(15),
            generator: Generator::Oha,
        }
    }
}

/// A process's resource use during a fixed-rate run.
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    /// Which process.
    pub name: String,
    /// CPU-seconds (user + system) used during the run.
    pub cpu_seconds: f64,
    /// CPU-seconds per second of wall time.
    pub cpu_per_sec: f64,
    /// Mean VmRSS over the samples, KiB.
    pub rss_avg_kib: u64,
    /// Largest VmRSS sampled, KiB.
    pub rss_max_kib: u64,
}

/// One path's figures.
#[derive(Clone, Debug)]
pub struct PathResult {
    /// `direct`, or the pair kind's name in [`super::PAIR_KINDS`].
    pub kind: String,
    /// `direct`, or the pair's label.
    pub label: String,
    /// How it was configured.
    pub notes: String,
    /// The fixed-rate run.
    pub fixed: FixedRate,
    /// The proxies during the fixed-rate run (client side, server side).
    pub usage: Vec<Usage>,
    /// The saturation run.
    pub saturation: Saturation,
    /// Requests the backend answered over the whole path's runs.
    pub backend_answered: u64,
    /// Successes the load generators counted over the same runs.
    pub generator_ok: u64,
}

/// What a run needs.
pub struct Context<'a> {
    /// The tools.
    pub tools: &'a Tools,
    /// The `strait` binary.
    pub strait: &'a Path,
    /// The control plane and backends.
    pub mesh: &'a Mesh,
    /// Load settings.
    pub settings: Settings,
    /// Scratch directory (configs, certificates, logs).
    pub dir: PathBuf,
}

impl Context<'_> {
    /// Fresh addresses (127.46.`n`.2/.3) and certificates for path `name`.
    pub fn layout(&self, n: u8, name: &str) -> Result<Layout, Error> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
        let pki = pki::issue_into(&dir, &self.mesh.id.anchors, &self.mesh.id.issuer)?;
        Ok(Layout::new(n, dir, pki))
    }

    fn fixed_load(&self, duration: Duration) -> FixedRateLoad {
        FixedRateLoad {
            rps: self.settings.rps,
            connections: self.settings.connections,
            duration,
        }
    }
}

/// Samples VmRSS of `pids` every 250 ms until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<u64>>>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = vec![Vec::new(); pids.len()];
            while !flag.load(Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(kib) = process::rss_kib(*pid) {
                        samples[i].push(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic")
    }
}

/// A warm-up (not measured, when `warmup` is not zero), then a fixed-rate run of
/// `duration` against `http://entry<path>` with `measured` sampled from `/proc`.
pub fn fixed_rate(
    ctx: &Context<'_>,
    label: &str,
    entry: std::net::SocketAddr,
    path: &str,
    warmup: Duration,
    duration: Duration,
    measured: &mut [Running],
) -> Result<(FixedRate, Vec<Usage>, u64), Error> {
    let s = ctx.settings;
    // h2load appends to an existing log: every run writes a fresh file of its own.
    let file: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let log = |run: &str| -> Result<PathBuf, Error> {
        let p = ctx.dir.join(format!("{file}.{run}.h2load.log"));
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("cannot remove {}", p.display()))(e))
            }
            _ => Ok(p),
        }
    };
    let mut warm_ok = 0;
    if !warmup.is_zero() {
        warm_ok = load::fixed_rate(
            ctx.tools,
            s.generator,
            entry,
            path,
            ctx.fixed_load(warmup),
            &log("warmup")?,
        )?
        .ok;
    }
    eprintln!(
        "{label}: fixed rate, {} RPS over {} connections for {duration:?} ({})",
        s.rps,
        s.connections,
        s.generator.name()
    );
    let pids: Vec<u32> = measured.iter().map(Running::pid).collect();
    let cpu0 = process::cpu_times(&pids);
    let sampler = RssSampler::start(pids.clone());
    let t0 = Instant::now();
    let measured_log = log("measured")?;
    let fixed = load::fixed_rate(
        ctx.tools,
        s.generator,
        entry,
        path,
        ctx.fixed_load(duration),
        &measured_log,
    );
    let wall = t0.elapsed();
    let cpu1 = process::cpu_times(&pids);
    let rss = sampler.finish();
    let fixed = fixed?;
    let mut usage = Vec::new();
    for (i, p) in measured.iter_mut().enumerate() {
        p.check_alive()?;
        let (Some(a), Some(b)) = (cpu0[i], cpu1[i]) else {
            return Err(Error::Process(format!(
                "cannot read the CPU time of {} from /proc",
                p.name
            )));
        };
        let samples = &rss[i];
        if samples.is_empty() {
            return Err(Error::Process(format!(
                "cannot read the RSS of {} from /proc",
                p.name
            )));
        }
        let cpu = (b - a).as_secs_f64();
        usage.push(Usage {
            name: p.name.clone(),
            cpu_seconds: cpu,
            cpu_per_sec: cpu / wall.as_secs_f64(),
            rss_avg_kib: samples.iter().sum::<u64>() / samples.len() as u64,
            rss_max_kib: samples.iter().copied().max().unwrap_or(0),
        });
    }
    Ok((fixed, usage, warm_ok + fixed.ok))
}

/// A pair of proxies, started and answering, with its backend.
pub struct StartedPair {
    /// The report's name for it.
    pub label: String,
    /// How it is configured.
    pub notes: String,
    /// Its addresses.
    pub layout: Layout,
    /// Client side, server side.
    pub proxies: Vec<Running>,
    /// The backend behind the server side.
    pub backend: Backend,
}

/// Starts path `n`'s backend, the pair `builder` makes, and waits until a request goes
/// through it; checks that the hop between the proxies refuses plaintext.
pub fn start_pair(
    ctx: &Context<'_>,
    n: u8,
    name: &str,
    builder: PairBuilder,
    policy: bool,
) -> Result<StartedPair, Error> {
    let layout = ctx.layout(n, name)?;
    let spec = builder(
        &layout,
        &BuildContext {
            strait: ctx.strait,
            mesh: ctx.mesh,
            policy,
        },
    )?;
    let label = spec.label.clone();
    eprintln!("{label}: starting the backend and the two proxies");
    ctx.mesh.apply(&spec.objects)?;
    let backend = ctx.mesh.backend(layout.backend)?;
    let mut server = Running::start(&spec.server, &layout.dir)?;
    let server_addr = layout.server_proxy;
    server.wait_until("listening", Duration::from_secs(30), || {
        process::listening(server_addr)
    })?;
    let mut client = Running::start(&spec.client, &layout.dir)?;
    let entry = layout.client_proxy;
    client.wait_until("answering through the pair", Duration::from_secs(30), || {
        process::http_ok(entry, "/")
    })?;
    // The hop between the proxies must refuse plaintext: otherwise it is not the mTLS hop.
    if process::http_ok(server_addr, "/") {
        return Err(Error::Process(format!(
            "{label}: the server-side proxy answered plaintext HTTP on {server_addr}; the pair is not using TLS"
        )));
    }
    Ok(StartedPair {
        label,
        notes: spec.notes,
        layout,
        proxies: vec![client, server],
        backend,
    })
}

fn measure(
    ctx: &Context<'_>,
    kind: &str,
    label: &str,
    notes: String,
    entry: std::net::SocketAddr,
    backend: &Backend,
    measured: &mut [Running],
) -> Result<PathResult, Error> {
    let s = ctx.settings;
    let before = backend.requests();
    let (fixed, usage, fixed_ok) = fixed_rate(ctx, label, entry, "/", s.warmup, s.duration, measured)?;
    eprintln!(
        "{label}: saturation, wrk -t1 -c{} for {:?}",
        s.saturation_connections, s.saturation_duration
    );
    let pids: Vec<u32> = measured.iter().map(Running::pid).collect();
    let cpu0 = process::cpu_times(&pids);
    let machine0 = process::machine_ticks();
    let mut saturation = load::wrk(
        &ctx.tools.wrk,
        entry,
        s.saturation_connections,
        s.saturation_duration,
    )?;
    let machine1 = process::machine_ticks();
    let cpu1 = process::cpu_times(&pids);
    for p in measured.iter_mut() {
        p.check_alive()?;
    }
    // Whether the run used the machine: a pair that leaves cores idle is bound by how its
    // stages overlap, not by what a request costs.
    saturation.machine_busy = match (machine0, machine1) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0) as f64 / (t1 - t0) as f64),
        _ => None,
    };
    if saturation.requests > 0 {
        saturation.proxy_cpu_us = cpu0
            .iter()
            .zip(&cpu1)
            .filter_map(|(a, b)| Some((b.as_ref()?.saturating_sub(*a.as_ref()?)).as_secs_f64()))
            .map(|cpu| cpu * 1e6 / saturation.requests as f64)
            .collect();
    }
    let generator_ok = fixed_ok + saturation.requests.saturating_sub(saturation.errors);
    let backend_answered = backend.requests() - before;
    if backend_answered < generator_ok {
        return Err(Error::Accounting(format!(
            "{label}: the load generators counted {generator_ok} successes but the backend answered only \
             {backend_answered}: something else answered"
        )));
    }
    Ok(PathResult {
        kind: kind.into(),
        label: label.into(),
        notes,
        fixed,
        usage,
        saturation,
        backend_answered,
        generator_ok,
    })
}

/// The baseline: the load generators straight to the backend (path 0).
pub fn direct(ctx: &Context<'_>) -> Result<PathResult, Error> {
    let layout = ctx.layout(0, "direct")?;
    eprintln!("direct: starting the backend (in process, 1 KiB answers)");
    let backend = ctx.mesh.backend(layout.backend)?;
    measure(
        ctx,
        "direct",
        "direct",
        "load generator → backend (hyper HTTP/1.1 in the bench process, 1 KiB answers)".into(),
        layout.backend,
        &backend,
        &mut [],
    )
}

/// Through path `n`'s pair of proxies built by `builder`.
pub fn pair(ctx: &Context<'_>, n: u8, name: &str, builder: PairBuilder) -> Result<PathResult, Error> {
    let mut p = start_pair(ctx, n, name, builder, true)?;
    let result = measure(
        ctx,
        name,
        &p.label,
        p.notes.clone(),
        p.layout.client_proxy,
        &p.backend,
        &mut p.proxies,
    );
    for proxy in p.proxies {
        proxy.stop(Duration::from_secs(5));
    }
    result
}
