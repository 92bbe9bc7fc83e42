//! Measuring one path (direct, or through a pair): start the backend and the proxies,
//! wait until a request goes through, warm up, run the fixed rate while sampling every
//! measured process from `/proc`, run the saturation load, stop everything, and check
//! that the backend answered at least every success the load generators counted (so no
//! answer came from anywhere else).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::load::{self, FixedRate, FixedRateLoad, Saturation};
use super::process::{self, Running};
use super::tools::Tools;
use super::{Error, Layout, PairBuilder, ProcessSpec, pki};

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
        }
    }
}

/// A process's resource use during the fixed-rate run.
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    /// Which process.
    pub name: String,
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
    /// `direct`, or the pair's label.
    pub label: String,
    /// How it was configured.
    pub notes: String,
    /// The fixed-rate run.
    pub fixed: FixedRate,
    /// Proxies (then the backend) during the fixed-rate run.
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
    /// The `strait` binary (the backend is `strait demo server`).
    pub strait: &'a Path,
    /// Load settings.
    pub settings: Settings,
    /// Scratch directory (configs, certificates, logs).
    pub dir: PathBuf,
}

/// A free loopback port (bound and released; the benchmark owns the machine while it runs).
pub fn free_addr() -> Result<SocketAddr, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding a loopback port"))?;
    l.local_addr().map_err(Error::io("reading a bound address"))
}

/// Fresh addresses and certificates for one path.
pub fn layout(ctx: &Context<'_>, name: &str) -> Result<Layout, Error> {
    let dir = ctx.dir.join(name);
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    Ok(Layout {
        backend: free_addr()?,
        server_proxy: free_addr()?,
        client_proxy: free_addr()?,
        pki: pki::generate_into(&dir)?,
        dir,
    })
}

fn start_backend(ctx: &Context<'_>, layout: &Layout) -> Result<Running, Error> {
    let spec = ProcessSpec {
        name: "backend".into(),
        program: ctx.strait.to_path_buf(),
        args: [
            "demo",
            "server",
            "--addr",
            &layout.backend.to_string(),
            "--response-size",
            "1KiB",
            "--name",
            "bench-backend",
        ]
        .map(String::from)
        .to_vec(),
        env: Vec::new(),
    };
    let mut backend = Running::start(&spec, &layout.dir)?;
    let addr = layout.backend;
    backend.wait_until("answering GET /", Duration::from_secs(15), || {
        process::http_ok(addr)
    })?;
    Ok(backend)
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

fn answered(backend_log: &str) -> Option<u64> {
    let rest = backend_log.split("answered ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Runs the loads against `entry` with `measured` (proxies, then the backend) sampled.
fn measure(
    ctx: &Context<'_>,
    label: &str,
    notes: String,
    entry: SocketAddr,
    mut measured: Vec<Running>,
) -> Result<PathResult, Error> {
    let s = ctx.settings;
    let load = |duration| FixedRateLoad {
        rps: s.rps,
        connections: s.connections,
        duration,
    };
    let mut generator_ok = 0;
    if !s.warmup.is_zero() {
        eprintln!(
            "{label}: warm-up, {} RPS over {} connections for {:?}",
            s.rps, s.connections, s.warmup
        );
        generator_ok += load::oha(&ctx.tools.oha, entry, load(s.warmup))?.ok;
    }
    eprintln!(
        "{label}: fixed rate, {} RPS over {} connections for {:?} (oha --latency-correction)",
        s.rps, s.connections, s.duration
    );
    let pids: Vec<u32> = measured.iter().map(Running::pid).collect();
    let cpu0: Vec<Option<Duration>> = pids.iter().map(|p| process::cpu_time(*p)).collect();
    let sampler = RssSampler::start(pids.clone());
    let t0 = Instant::now();
    let fixed = load::oha(&ctx.tools.oha, entry, load(s.duration));
    let wall = t0.elapsed();
    let cpu1: Vec<Option<Duration>> = pids.iter().map(|p| process::cpu_time(*p)).collect();
    let rss = sampler.finish();
    let fixed = fixed?;
    generator_ok += fixed.ok;
    for p in &mut measured {
        p.check_alive()?;
    }
    let mut usage = Vec::new();
    for (i, p) in measured.iter().enumerate() {
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
        usage.push(Usage {
            name: p.name.clone(),
            cpu_per_sec: (b - a).as_secs_f64() / wall.as_secs_f64(),
            rss_avg_kib: samples.iter().sum::<u64>() / samples.len() as u64,
            rss_max_kib: samples.iter().copied().max().unwrap_or(0),
        });
    }
    eprintln!(
        "{label}: saturation, wrk -t1 -c{} for {:?}",
        s.saturation_connections, s.saturation_duration
    );
    let saturation = load::wrk(
        &ctx.tools.wrk,
        entry,
        s.saturation_connections,
        s.saturation_duration,
    )?;
    generator_ok += saturation.requests.saturating_sub(saturation.errors);
    // Stop the proxies first, then the backend, whose log counts what it answered.
    let backend = measured.pop().expect("the backend is measured last");
    for p in measured {
        p.stop(Duration::from_secs(5));
    }
    let log = backend.stop(Duration::from_secs(15));
    let backend_answered = answered(&log)
        .ok_or_else(|| Error::Process(format!("the backend did not report what it answered:\n{log}")))?;
    if backend_answered < generator_ok {
        return Err(Error::Process(format!(
            "{label}: the load generators counted {generator_ok} successes but the backend answered only \
             {backend_answered}: something else answered"
        )));
    }
    Ok(PathResult {
        label: label.into(),
        notes,
        fixed,
        usage,
        saturation,
        backend_answered,
        generator_ok,
    })
}

/// The baseline: the load generators straight to the backend.
pub fn direct(ctx: &Context<'_>) -> Result<PathResult, Error> {
    let layout = layout(ctx, "direct")?;
    eprintln!("direct: starting the backend (strait demo server, 1 KiB answers)");
    let backend = start_backend(ctx, &layout)?;
    measure(
        ctx,
        "direct",
        "load generator → `strait demo server` (1 KiB JSON answers)".into(),
        layout.backend,
        vec![backend],
    )
}

/// Through a pair of proxies built by `builder`.
pub fn pair(ctx: &Context<'_>, name: &str, builder: PairBuilder) -> Result<PathResult, Error> {
    let layout = layout(ctx, name)?;
    let spec = builder(&layout)?;
    let label = spec.label.clone();
    eprintln!("{label}: starting the backend and the two proxies");
    let backend = start_backend(ctx, &layout)?;
    let mut support = Vec::new();
    for s in &spec.support {
        support.push(Running::start(s, &layout.dir)?);
    }
    let mut server = Running::start(&spec.server, &layout.dir)?;
    let server_addr = layout.server_proxy;
    server.wait_until("listening", Duration::from_secs(30), || {
        process::listening(server_addr)
    })?;
    let mut client = Running::start(&spec.client, &layout.dir)?;
    let entry = layout.client_proxy;
    client.wait_until("answering through the pair", Duration::from_secs(30), || {
        process::http_ok(entry)
    })?;
    // The hop between the proxies must refuse plaintext: otherwise it is not the mTLS hop.
    if process::http_ok(server_addr) {
        return Err(Error::Process(format!(
            "{label}: the server-side proxy answered plaintext HTTP on {server_addr}; the pair is not using TLS"
        )));
    }
    let result = measure(
        ctx,
        &label,
        spec.notes.clone(),
        entry,
        vec![client, server, backend],
    );
    drop(support);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backends_count_is_read_from_its_log() {
        let log = "{\"demo-server\":\"127.0.0.1:1\"}\ndemo server stopped: answered 31337 requests (0 injected failures)\n";
        assert_eq!(answered(log), Some(31337));
        assert_eq!(answered("killed"), None);
    }
}
