//! `bench`: the benchmark harness's entry point.
//!
//! `cargo run --release -p strait-tests --bin bench -- control-plane|proxy|policy|gateway|mirror` builds
//! the `strait` binary in the same profile (with the cargo that runs this), starts the
//! processes each benchmark measures (a fresh `strait controller` per control-plane
//! scenario; `strait proxy` and HAProxy pairs for the data plane), prints the tables and
//! rewrites the benchmark's generated section of `BENCHMARKS.md` at the repository root.
//! A debug build measures nothing worth keeping, so it writes the file only when
//! `--output` names one.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use strait_tests::bench::gateway::{self, Settings as GatewaySettings};
use strait_tests::bench::mirror::{self, Settings as MirrorSettings};
use strait_tests::bench::proxy::load::Generator;
use strait_tests::bench::proxy::policy::PolicySettings;
use strait_tests::bench::proxy::report::{PolicyRun, ProxyRun, Round, RunInfo};
use strait_tests::bench::proxy::run::{Context, Settings};
use strait_tests::bench::proxy::{self, Mesh, PAIR_KINDS};
use strait_tests::bench::report::{self, Machine, Run};
use strait_tests::bench::scenarios::{self, LatencyConfig, MemoryConfig};
use strait_tests::bench::target::{ChildController, ControlPlane, InProcess};

/// Strait's benchmark harness.
#[derive(Parser, Debug)]
#[command(name = "bench", max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Change propagation to open Destination/Get streams, and controller memory at scale.
    ControlPlane(ControlPlaneArgs),
    /// Proxy pairs with mTLS (strait, HAProxy) against a direct baseline: added latency at a
    /// fixed rate (oha, or h2load), RSS and CPU per proxy, saturation throughput (wrk).
    Proxy(ProxyArgs),
    /// The client-side strait proxy's CPU per request with ten HTTPRoutes and retries against
    /// no routes, in alternating phases of one run.
    Policy(PolicyArgs),
    /// Gateway pairs (QUIC link) against a stunnel pair and against no tunnel: single-flow
    /// throughput and CPU per byte, hop latency, many request flows under packet loss
    /// between two network namespaces (root).
    Gateway(GatewayArgs),
    /// The service mirror between two linked local clusters (every component a process):
    /// export and unexport delays to the linked cluster's Destination and through its
    /// proxy, and many Services exported at once, against the same changes to local
    /// Services.
    Mirror(MirrorArgs),
}

#[derive(clap::Args, Debug)]
struct MirrorArgs {
    /// The `strait` binary (default: build it, same profile); the sidecars run as the
    /// `strait-proxy` beside it when it is there.
    #[arg(long, value_name = "FILE")]
    strait: Option<PathBuf>,
    /// Where to write the figures (default: BENCHMARKS.md at the repository root, release
    /// builds only).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the section only.
    #[arg(long, conflicts_with = "output")]
    no_write: bool,
    /// Export/unexport rounds (each with its baselines).
    #[arg(long, default_value_t = MirrorSettings::issue().samples)]
    samples: usize,
    /// Services exported in one apply (0: skip).
    #[arg(long, default_value_t = MirrorSettings::issue().bulk)]
    bulk: usize,
}

#[derive(clap::Args, Debug)]
struct GatewayArgs {
    /// The `strait` binary to run as the gateways (default: build it, same profile).
    #[arg(long, value_name = "FILE")]
    strait: Option<PathBuf>,
    /// Where to write the figures (default: BENCHMARKS.md at the repository root, release
    /// builds only).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the section only.
    #[arg(long, conflicts_with = "output")]
    no_write: bool,
    /// Alternating rounds of the throughput and latency measurements.
    #[arg(long, default_value_t = GatewaySettings::issue().rounds)]
    rounds: u32,
    /// MiB of each throughput transfer.
    #[arg(long, default_value_t = GatewaySettings::issue().bulk_bytes >> 20)]
    bulk_mib: u64,
    /// Round trips per path per latency round.
    #[arg(long, default_value_t = GatewaySettings::issue().latency_requests)]
    latency_requests: usize,
    /// Concurrent request flows under loss.
    #[arg(long, default_value_t = GatewaySettings::issue().flows)]
    flows: usize,
    /// Measured seconds of each flows round.
    #[arg(long, default_value_t = GatewaySettings::issue().flow_window.as_secs())]
    flow_seconds: u64,
    /// Rounds of the flows measurement.
    #[arg(long, default_value_t = GatewaySettings::issue().flow_rounds)]
    flow_rounds: u32,
    /// Percent of packets dropped each way between the namespaces.
    #[arg(long, default_value_t = GatewaySettings::issue().loss_percent)]
    loss: u32,
    /// Congestion controllers of the gateway pairs, the gateway's default first (the
    /// targets are judged for each).
    #[arg(long, value_delimiter = ',', default_values_t = ["bbr".to_string(), "cubic".to_string()],
          value_parser = ["bbr", "cubic"])]
    congestion: Vec<String>,
}

/// What every data-plane benchmark takes.
#[derive(clap::Args, Debug)]
struct DataPlaneArgs {
    /// The `strait` binary to run as the proxies (default: build it, same profile).
    #[arg(long, value_name = "FILE")]
    strait: Option<PathBuf>,
    /// Where to write the figures (default: BENCHMARKS.md at the repository root, release
    /// builds only).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the section only.
    #[arg(long, conflicts_with = "output")]
    no_write: bool,
    /// Fixed request rate, total.
    #[arg(long, default_value_t = Settings::issue().rps)]
    rps: u32,
    /// Fixed-rate connections.
    #[arg(long, default_value_t = Settings::issue().connections)]
    connections: u32,
    /// Warm-up seconds before each fixed-rate run.
    #[arg(long, default_value_t = Settings::issue().warmup.as_secs())]
    warmup_seconds: u64,
    /// The fixed-rate load generator: oha paces requests evenly and times each from when
    /// it was due (built once with `cargo install` if missing); h2load sends
    /// per-connection bursts on a 10 ms timer.
    #[arg(long, value_enum, default_value_t = Generator::Oha)]
    fixed_rate_generator: Generator,
}

#[derive(clap::Args, Debug)]
struct ProxyArgs {
    #[command(flatten)]
    common: DataPlaneArgs,
    /// Pair kinds to measure (default: all).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PAIR_KINDS.iter().map(|(n, _)| *n)))]
    pair: Vec<String>,
    /// Measured seconds of each fixed-rate run.
    #[arg(long, default_value_t = Settings::issue().duration.as_secs())]
    seconds: u64,
    /// Seconds of each saturation run.
    #[arg(long, default_value_t = Settings::issue().saturation_duration.as_secs())]
    saturation_seconds: u64,
    /// Connections of each saturation run.
    #[arg(long, default_value_t = Settings::issue().saturation_connections)]
    saturation_connections: u32,
    /// Interleaved rounds of every path (the targets are judged on their median).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

#[derive(clap::Args, Debug)]
struct PolicyArgs {
    #[command(flatten)]
    common: DataPlaneArgs,
    /// Rounds of (no routes, ten routes).
    #[arg(long, default_value_t = PolicySettings::issue().rounds)]
    rounds: u32,
    /// Measured seconds of each phase.
    #[arg(long, default_value_t = PolicySettings::issue().duration.as_secs())]
    seconds: u64,
}

#[derive(clap::Args, Debug)]
struct ControlPlaneArgs {
    /// The `strait` binary to run as the controller (default: build it, same profile).
    #[arg(long, value_name = "FILE")]
    strait: Option<PathBuf>,
    /// Where to write the figures (default: BENCHMARKS.md at the repository root, release
    /// builds only).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the table only.
    #[arg(long, conflicts_with = "output")]
    no_write: bool,
    /// Run one scenario only.
    #[arg(long, value_enum)]
    only: Option<Scenario>,
    /// Rounds of changes in the latency scenario.
    #[arg(long, default_value_t = LatencyConfig::issue().rounds)]
    rounds: usize,
    /// Services in the memory scenario (the issue's size by default).
    #[arg(long, default_value_t = MemoryConfig::issue().services)]
    memory_services: usize,
    /// Watches in the memory scenario.
    #[arg(long, default_value_t = MemoryConfig::issue().watches)]
    memory_watches: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Latency,
    Memory,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Where tools built for the benchmarks go: `bench-tools` in this executable's target
/// directory (`target/bench-tools`).
fn bench_tools_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("bench-tools")))
        .unwrap_or_else(|| repo_root().join("target/bench-tools"))
}

const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// Builds `strait` with the cargo running this binary, into the same target directory and
/// profile, and returns its path (beside this executable).
fn build_strait() -> Result<PathBuf, String> {
    let mut cmd = strait_tests::bench::nested_cargo();
    cmd.args(["build", "--locked", "-p", "strait", "--manifest-path"])
        .arg(repo_root().join("Cargo.toml"));
    if PROFILE == "release" {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}; pass --strait FILE", cmd.get_program()))?;
    if !status.success() {
        return Err(format!("building strait failed ({status})"));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    let strait = exe.with_file_name("strait");
    if !strait.is_file() {
        return Err(format!(
            "strait was built but is not at {}; pass --strait FILE",
            strait.display()
        ));
    }
    Ok(strait)
}

fn revision() -> String {
    Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn control_plane(args: &ControlPlaneArgs, strait: &Path) -> Result<Run, String> {
    let machine = Machine::detect();
    let runs = |s| args.only.is_none_or(|o| o == s);
    let (mut latency, mut latency_in_process) = (None, None);
    if runs(Scenario::Latency) {
        let config = LatencyConfig {
            rounds: args.rounds,
            ..LatencyConfig::issue()
        };
        eprintln!(
            "latency: starting a controller; {} watches, {} rounds",
            config.watches, config.rounds
        );
        let cp = ControlPlane::Child(ChildController::spawn(strait).await.map_err(|e| e.to_string())?);
        let result = scenarios::latency(&cp, config.clone()).await;
        cp.stop().await.map_err(|e| e.to_string())?;
        latency = Some(result.map_err(|e| format!("latency scenario: {e}"))?);

        eprintln!("latency: the same against an in-process control plane (diagnostic)");
        let cp = ControlPlane::InProcess(InProcess::start().await.map_err(|e| e.to_string())?);
        let result = scenarios::latency(&cp, config).await;
        cp.stop().await.map_err(|e| e.to_string())?;
        latency_in_process = Some(result.map_err(|e| format!("in-process latency scenario: {e}"))?);
    }
    let mut memory = None;
    if runs(Scenario::Memory) {
        let config = MemoryConfig {
            services: args.memory_services,
            watches: args.memory_watches,
            ..MemoryConfig::issue()
        };
        eprintln!(
            "memory: starting a controller; {} services × {} endpoints, {} watches",
            config.services, config.endpoints, config.watches
        );
        let cp = ControlPlane::Child(ChildController::spawn(strait).await.map_err(|e| e.to_string())?);
        let result = scenarios::memory(&cp, config).await;
        cp.stop().await.map_err(|e| e.to_string())?;
        memory = Some(result.map_err(|e| format!("memory scenario: {e}"))?);
    }
    let args_line: Vec<String> = std::env::args().skip(1).collect();
    Ok(Run {
        machine,
        date: k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        command: format!(
            "cargo run {}-p strait-tests --bin bench -- {}",
            if PROFILE == "release" { "--release " } else { "" },
            args_line.join(" ")
        ),
        revision: revision(),
        controller: format!(
            "`strait controller` ({PROFILE} build) as a child process in local mode, fresh state \
             directory per scenario, fed through its public API; clients in the bench process on \
             the same machine"
        ),
        latency,
        latency_in_process,
        memory,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if PROFILE == "debug" {
        eprintln!("warning: a debug build; figures are not representative (use cargo run --release)");
    }
    match cli.command {
        Bench::ControlPlane(args) => control_plane_main(&args),
        Bench::Proxy(args) => proxy_main(&args),
        Bench::Policy(args) => policy_main(&args),
        Bench::Gateway(args) => gateway_main(&args),
        Bench::Mirror(args) => mirror_main(&args),
    }
}

/// Ends a benchmark: the error, or the run's table on stdout and `update` (the file's
/// current text → its new text) written to `output` (BENCHMARKS.md by default in release
/// builds; nowhere with `no_write`).
fn publish<R>(
    result: Result<R, String>,
    table: impl FnOnce(&R) -> String,
    output: Option<&PathBuf>,
    no_write: bool,
    update: impl FnOnce(&R, Option<&str>) -> String,
) -> ExitCode {
    let run = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", table(&run));
    let output = match (output, no_write, PROFILE) {
        (Some(o), _, _) => Some(o.clone()),
        (None, false, "release") => Some(repo_root().join("BENCHMARKS.md")),
        _ => None,
    };
    if let Some(path) = output {
        let existing = std::fs::read_to_string(&path).ok();
        let text = update(&run, existing.as_deref());
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("figures written to {}", path.display());
    }
    ExitCode::SUCCESS
}

/// Updates BENCHMARKS.md by replacing the section between `begin` and `end` with `markdown`.
fn section<R>(
    begin: &'static str,
    end: &'static str,
    markdown: fn(&R) -> String,
) -> impl FnOnce(&R, Option<&str>) -> String {
    move |run, existing| report::replace_section(existing, begin, end, &markdown(run))
}

fn run_info(generators: String) -> RunInfo {
    let args_line: Vec<String> = std::env::args().skip(1).collect();
    RunInfo {
        machine: Machine::detect(),
        date: k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        command: format!(
            "cargo run {}-p strait-tests --bin bench -- {}",
            if PROFILE == "release" { "--release " } else { "" },
            args_line.join(" ")
        ),
        revision: revision(),
        generators,
    }
}

/// The tools, the control plane and a scratch directory, then `body`; everything the
/// benchmark started stops when it returns.
fn data_plane<T>(
    common: &DataPlaneArgs,
    settings: Settings,
    body: impl FnOnce(&Context<'_>, RunInfo) -> Result<T, proxy::Error>,
) -> Result<T, String> {
    let strait = common.strait.clone().map_or_else(build_strait, Ok)?;
    // `strait proxy` becomes the lean sidecar binary beside it; without it the proxies
    // run inside the whole CLI binary, whose resident text is larger.
    let lean = strait.with_file_name("strait-proxy");
    if !lean.is_file() {
        return Err(format!(
            "{} is missing: the sidecar runs as that binary; build it with `cargo build --release -p strait` (both binaries), or let the bench build them (no --strait)",
            lean.display()
        ));
    }
    let tools = proxy::tools::ensure(settings.generator, &bench_tools_dir()).map_err(|e| e.to_string())?;
    let info = run_info(proxy::tools::generators(&tools));
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let mesh = Mesh::start().map_err(|e| e.to_string())?;
    let ctx = Context {
        tools: &tools,
        strait: &strait,
        mesh: &mesh,
        settings,
        dir: scratch.path().to_path_buf(),
    };
    body(&ctx, info).map_err(|e| e.to_string())
}

fn settings(common: &DataPlaneArgs) -> Settings {
    Settings {
        rps: common.rps,
        connections: common.connections,
        warmup: std::time::Duration::from_secs(common.warmup_seconds),
        generator: common.fixed_rate_generator,
        ..Settings::issue()
    }
}

fn proxy_main(args: &ProxyArgs) -> ExitCode {
    let settings = Settings {
        duration: std::time::Duration::from_secs(args.seconds),
        saturation_duration: std::time::Duration::from_secs(args.saturation_seconds),
        saturation_connections: args.saturation_connections,
        ..settings(&args.common)
    };
    let result = data_plane(&args.common, settings, |ctx, info| {
        let chosen: Vec<_> = PAIR_KINDS
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| args.pair.is_empty() || args.pair.iter().any(|p| p.as_str() == *name))
            .collect();
        let mut rounds = Vec::new();
        for round in 0..args.rounds as usize {
            eprintln!("round {} of {}", round + 1, args.rounds);
            let direct = proxy::run::direct(ctx)?;
            // Each round starts one pair later, so no pair always runs right after direct.
            let mut pairs = Vec::new();
            for k in 0..chosen.len() {
                let (i, (name, builder)) = chosen[(round + k) % chosen.len()];
                pairs.push(proxy::run::pair(ctx, i as u8 + 1, name, *builder)?);
            }
            rounds.push(Round { direct, pairs });
        }
        Ok(ProxyRun {
            info,
            settings,
            rounds,
        })
    });
    publish(
        result,
        proxy::report::table,
        args.common.output.as_ref(),
        args.common.no_write,
        section(proxy::report::BEGIN, proxy::report::END, proxy::report::markdown),
    )
}

fn policy_main(args: &PolicyArgs) -> ExitCode {
    let policy = PolicySettings {
        rounds: args.rounds,
        warmup: std::time::Duration::from_secs(args.common.warmup_seconds),
        duration: std::time::Duration::from_secs(args.seconds),
    };
    let result = data_plane(&args.common, settings(&args.common), |ctx, info| {
        let result = proxy::policy::run(ctx, 1, policy)?;
        Ok(PolicyRun { info, result })
    });
    publish(
        result,
        proxy::report::policy_table,
        args.common.output.as_ref(),
        args.common.no_write,
        section(
            proxy::report::POLICY_BEGIN,
            proxy::report::POLICY_END,
            proxy::report::policy_markdown,
        ),
    )
}

fn control_plane_main(args: &ControlPlaneArgs) -> ExitCode {
    let strait = match args.strait.clone().map_or_else(build_strait, Ok) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    publish(
        rt.block_on(control_plane(args, &strait)),
        report::table,
        args.output.as_ref(),
        args.no_write,
        |run, existing| report::update_file(existing, &report::markdown(run)),
    )
}

fn gateway_main(args: &GatewayArgs) -> ExitCode {
    let settings = GatewaySettings {
        rounds: args.rounds,
        bulk_bytes: args.bulk_mib << 20,
        latency_requests: args.latency_requests,
        flows: args.flows,
        flow_window: std::time::Duration::from_secs(args.flow_seconds),
        flow_rounds: args.flow_rounds,
        loss_percent: args.loss,
        congestion: args
            .congestion
            .iter()
            .map(|c| if c == "cubic" { "cubic" } else { "bbr" })
            .collect(),
        ..GatewaySettings::issue()
    };
    let result = (|| -> Result<gateway::report::GatewayRun, String> {
        let stunnel = gateway::ensure_tools().map_err(|e| e.to_string())?;
        let strait = args.strait.clone().map_or_else(build_strait, Ok)?;
        let info = run_info(gateway::stunnel_version(&stunnel));
        let (scratch, rt) = scratch_and_runtime()?;
        let ctx = gateway::Context {
            strait: &strait,
            stunnel,
            dir: scratch.path().to_path_buf(),
            rt: &rt,
        };
        let results = gateway::run(&ctx, &settings).map_err(|e| e.to_string())?;
        Ok(gateway::report::GatewayRun {
            info,
            settings: settings.clone(),
            results,
        })
    })();
    publish(
        result,
        gateway::report::text,
        args.output.as_ref(),
        args.no_write,
        section(
            gateway::report::BEGIN,
            gateway::report::END,
            gateway::report::markdown,
        ),
    )
}

/// A scratch directory and a two-worker runtime for a benchmark's clients and servers.
fn scratch_and_runtime() -> Result<(tempfile::TempDir, tokio::runtime::Runtime), String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    Ok((scratch, rt))
}

fn mirror_main(args: &MirrorArgs) -> ExitCode {
    let settings = MirrorSettings {
        samples: args.samples,
        bulk: args.bulk,
        ..MirrorSettings::issue()
    };
    let result = (|| -> Result<mirror::report::MirrorRun, String> {
        let strait = args.strait.clone().map_or_else(build_strait, Ok)?;
        let sidecar = Some(strait.with_file_name("strait-proxy")).filter(|p| p.is_file());
        let info = run_info(String::new());
        let (scratch, rt) = scratch_and_runtime()?;
        let ctx = mirror::Context {
            strait: &strait,
            sidecar,
            dir: scratch.path().to_path_buf(),
            rt: &rt,
        };
        let results = mirror::run(&ctx, &settings).map_err(|e| e.to_string());
        if results.is_err() {
            // The processes' logs explain a failure: keep them.
            let kept = scratch.keep();
            eprintln!("logs kept in {}", kept.join("logs").display());
        }
        Ok(mirror::report::MirrorRun {
            info,
            settings,
            results: results?,
        })
    })();
    publish(
        result,
        mirror::report::text,
        args.output.as_ref(),
        args.no_write,
        section(
            mirror::report::BEGIN,
            mirror::report::END,
            mirror::report::markdown,
        ),
    )
}
