//! `bench`: the benchmark harness's entry point.
//!
//! `cargo run --release -p strait-tests --bin bench -- control-plane` (or `-- proxy`) builds the `strait`
//! binary in the same profile (with the cargo that runs this), starts a fresh
//! `strait controller` child process for each scenario, prints the table and rewrites the
//! generated section of `BENCHMARKS.md` at the repository root. A debug build measures
//! nothing worth keeping, so it writes the file only when `--output` names one.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use strait_tests::bench::proxy::report::ProxyRun;
use strait_tests::bench::proxy::run::{Context, Settings};
use strait_tests::bench::proxy::{self, PAIR_KINDS};
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
    /// A proxy pair with mutual TLS against a direct baseline: latency at a fixed rate,
    /// CPU and memory per proxy, saturation (installs oha, wrk and haproxy if missing).
    Proxy(ProxyArgs),
}

#[derive(clap::Args, Debug)]
struct ProxyArgs {
    /// The `strait` binary (the backend is `strait demo server`; default: build it, same profile).
    #[arg(long, value_name = "FILE")]
    strait: Option<PathBuf>,
    /// Where to write the figures (default: BENCHMARKS.md at the repository root, release
    /// builds only).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the table only.
    #[arg(long, conflicts_with = "output")]
    no_write: bool,
    /// Pair kinds to measure (default: every kind this build has).
    #[arg(long, value_delimiter = ',')]
    pair: Vec<String>,
    /// Fixed-rate requests per second.
    #[arg(long, default_value_t = Settings::issue().rps)]
    rps: u32,
    /// Fixed-rate connections.
    #[arg(long, default_value_t = Settings::issue().connections)]
    connections: u32,
    /// Fixed-rate measured seconds.
    #[arg(long, default_value_t = Settings::issue().duration.as_secs())]
    duration: u64,
    /// Fixed-rate warm-up seconds (not measured).
    #[arg(long, default_value_t = Settings::issue().warmup.as_secs())]
    warmup: u64,
    /// Saturation seconds.
    #[arg(long, default_value_t = Settings::issue().saturation_duration.as_secs())]
    saturation_duration: u64,
    /// Where `oha` is installed when it is not on PATH (default: bench-tools beside the build).
    #[arg(long, value_name = "DIR")]
    tools_dir: Option<PathBuf>,
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

const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// Builds `strait` with the cargo running this binary, into the same target directory and
/// profile, and returns its path (beside this executable).
fn build_strait() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--locked", "-p", "strait", "--manifest-path"])
        .arg(repo_root().join("Cargo.toml"));
    if PROFILE == "release" {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}; pass --strait FILE", cargo.to_string_lossy()))?;
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

fn date_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string()
}

fn command_line() -> String {
    let args_line: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run {}-p strait-tests --bin bench -- {}",
        if PROFILE == "release" { "--release " } else { "" },
        args_line.join(" ")
    )
}

fn proxy_bench(args: &ProxyArgs, strait: &Path) -> Result<ProxyRun, String> {
    let machine = Machine::detect();
    let kinds: Vec<&(&str, proxy::PairBuilder)> = if args.pair.is_empty() {
        PAIR_KINDS.iter().collect()
    } else {
        args.pair
            .iter()
            .map(|name| {
                PAIR_KINDS.iter().find(|(n, _)| n == name).ok_or_else(|| {
                    let known: Vec<&str> = PAIR_KINDS.iter().map(|(n, _)| *n).collect();
                    format!("--pair {name}: expected one of {}", known.join(", "))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let tools_dir = match &args.tools_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("bench-tools")))
            .ok_or("cannot locate the build directory; pass --tools-dir DIR")?,
    };
    let tools = proxy::tools::ensure(&tools_dir).map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let settings = Settings {
        rps: args.rps,
        connections: args.connections,
        duration: std::time::Duration::from_secs(args.duration),
        warmup: std::time::Duration::from_secs(args.warmup),
        saturation_duration: std::time::Duration::from_secs(args.saturation_duration),
        ..Settings::issue()
    };
    if settings.rps == 0 || settings.connections == 0 || settings.duration.is_zero() {
        return Err("--rps, --connections and --duration must be above 0".into());
    }
    let ctx = Context {
        tools: &tools,
        strait,
        settings,
        dir: scratch.path().to_path_buf(),
    };
    let direct = proxy::run::direct(&ctx).map_err(|e| format!("direct: {e}"))?;
    let mut pairs = Vec::new();
    for (name, builder) in kinds {
        pairs.push(proxy::run::pair(&ctx, name, *builder).map_err(|e| format!("{name} pair: {e}"))?);
    }
    let mut not_measured = Vec::new();
    if !PAIR_KINDS.iter().any(|(n, _)| *n == "strait") {
        not_measured.push(
            "the `strait proxy` pair: `strait proxy` is not in this build yet (issue #4); it plugs in as one \
             more pair kind in `tests/src/bench/proxy/mod.rs` (`PAIR_KINDS`)"
                .to_string(),
        );
    }
    Ok(ProxyRun {
        machine,
        date: date_now(),
        command: command_line(),
        revision: revision(),
        settings,
        generators: format!("{}, {}", proxy::tools::oha_version(&tools.oha), "wrk (Debian)"),
        direct,
        pairs,
        not_measured,
    })
}

fn write_section(output: Option<PathBuf>, begin: &str, end: &str, section: &str) -> ExitCode {
    if let Some(path) = output {
        let existing = std::fs::read_to_string(&path).ok();
        let text = report::replace_section(existing.as_deref(), begin, end, section);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("figures written to {}", path.display());
    }
    ExitCode::SUCCESS
}

fn default_output(output: &Option<PathBuf>, no_write: bool) -> Option<PathBuf> {
    match (output, no_write, PROFILE) {
        (Some(o), _, _) => Some(o.clone()),
        (None, false, "release") => Some(repo_root().join("BENCHMARKS.md")),
        _ => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if PROFILE == "debug" {
        eprintln!("warning: a debug build; figures are not representative (use cargo run --release)");
    }
    let args = match cli.command {
        Bench::ControlPlane(args) => args,
        Bench::Proxy(args) => {
            let strait = match args.strait.clone().map_or_else(build_strait, Ok) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let run = match proxy_bench(&args, &strait) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!("{}", proxy::report::table(&run));
            return write_section(
                default_output(&args.output, args.no_write),
                proxy::report::BEGIN,
                proxy::report::END,
                &proxy::report::markdown(&run),
            );
        }
    };
    let strait = match args.strait.clone().map_or_else(build_strait, Ok) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let run = match rt.block_on(control_plane(&args, &strait)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report::table(&run));
    write_section(
        default_output(&args.output, args.no_write),
        report::BEGIN,
        report::END,
        &report::markdown(&run),
    )
}
