//! `bench`: the benchmark harness's entry point.
//!
//! `cargo run --release -p strait-tests --bin bench -- control-plane` builds the `strait`
//! binary in the same profile (with the cargo that runs this), starts a fresh
//! `strait controller` child process for each scenario, prints the table and rewrites the
//! generated section of `BENCHMARKS.md` at the repository root. A debug build measures
//! nothing worth keeping, so it writes the file only when `--output` names one.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
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
    /// A `strait proxy` pair with mTLS against a direct baseline: added latency at a fixed
    /// rate (h2load), RSS and CPU per proxy, saturation throughput (wrk).
    Proxy(ProxyArgs),
}

#[derive(clap::Args, Debug)]
struct ProxyArgs {
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
    /// Measured seconds of each fixed-rate run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds of each saturation run.
    #[arg(long, default_value_t = 15)]
    saturation_seconds: u64,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if PROFILE == "debug" {
        eprintln!("warning: a debug build; figures are not representative (use cargo run --release)");
    }
    match cli.command {
        Bench::ControlPlane(args) => control_plane_main(&args),
        Bench::Proxy(args) => proxy_main(&args),
    }
}

fn write_output(
    output: Option<&PathBuf>,
    no_write: bool,
    update: impl FnOnce(Option<&str>) -> String,
) -> ExitCode {
    let output = match (output, no_write, PROFILE) {
        (Some(o), _, _) => Some(o.clone()),
        (None, false, "release") => Some(repo_root().join("BENCHMARKS.md")),
        _ => None,
    };
    if let Some(path) = output {
        let existing = std::fs::read_to_string(&path).ok();
        let text = update(existing.as_deref());
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("figures written to {}", path.display());
    }
    ExitCode::SUCCESS
}

fn proxy_main(args: &ProxyArgs) -> ExitCode {
    use strait_tests::bench::proxy;
    let strait = match args.strait.clone().map_or_else(build_strait, Ok) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = proxy::ProxyConfig {
        duration: std::time::Duration::from_secs(args.seconds),
        saturation: std::time::Duration::from_secs(args.saturation_seconds),
        ..proxy::ProxyConfig::issue()
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let result = match rt.block_on(proxy::run(&strait, config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let machine = Machine::detect();
    let args_line: Vec<String> = std::env::args().skip(1).collect();
    let header = format!(
        "- **Date:** {}\n- **Machine:** {} cores ({}), load average {} at the start\n- **Command:** `cargo run {}-p strait-tests --bin bench -- {}`\n- **Proxies:** two `strait proxy` ({PROFILE} build) child processes in explicit mode on 127.46.0.2 and 127.46.0.3, mTLS between them; controller and 1 KiB backend in the bench process; h2load and wrk as load\n- **Revision:** `{}`",
        k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        machine.nproc,
        machine.cpu,
        machine.load,
        if PROFILE == "release" { "--release " } else { "" },
        args_line.join(" "),
        revision()
    );
    let section = proxy::markdown(&result, &header);
    println!("{section}");
    write_output(args.output.as_ref(), args.no_write, |existing| {
        proxy::update_file(existing.unwrap_or("# Benchmarks\n"), &section)
    })
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
    let run = match rt.block_on(control_plane(args, &strait)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report::table(&run));
    write_output(args.output.as_ref(), args.no_write, |existing| {
        report::update_file(existing, &report::markdown(&run))
    })
}
