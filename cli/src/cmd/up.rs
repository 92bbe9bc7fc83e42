//! `strait up`, `strait down`, `strait exec` and `strait logs`: local topologies
//! (`strait_topologies::run`), and the commands that reach into a running one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use strait_topologies::run::{self, UpOptions, registry};
use strait_topologies::topology::Isolation;

use crate::{Global, exit};

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    exit::code(exit::FAILURE)
}

/// Arguments of `up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// The topology file, e.g. topologies/west-east.yaml.
    pub topology: PathBuf,
    /// Override the topology's isolation: netns (root), loopback, or auto.
    #[arg(long, value_parser = isolation)]
    pub isolation: Option<Isolation>,
}

fn isolation(s: &str) -> Result<Isolation, String> {
    Isolation::parse(s).ok_or_else(|| format!("expected netns, loopback or auto, found {s:?}"))
}

/// Arguments of `down`.
#[derive(Args, Debug)]
pub struct DownArgs {
    /// Only the runs of this topology (its name, run id or file); default: every run.
    pub topology: Option<String>,
}

/// Arguments of `exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// CLUSTER/POD (a pod name, or a unique prefix of one such as its Deployment's name).
    pub target: String,
    /// The pod's namespace (default: any).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Arguments of `logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The pod (name or unique prefix); `--cluster` says in which cluster.
    pub pod: String,
    /// The pod's namespace (default: any).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The container: the workload's (default) or linkerd-proxy.
    #[arg(short, long)]
    pub container: Option<String>,
    /// Keep printing what is appended.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs `up` until Ctrl-C or `strait down`.
pub fn up(_g: &Global, args: &UpArgs) -> ExitCode {
    let strait = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return fail(format!(
                "cannot find the strait binary to run components with: {e}"
            ));
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let opts = UpOptions {
        topology: args.topology.clone(),
        isolation: args.isolation,
        home: registry::home(),
        strait,
    };
    match rt.block_on(run::up(opts, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "Nothing of this run is left running. Fix the problem above and run `strait up {}` again.",
                args.topology.display()
            );
            exit::code(exit::FAILURE)
        }
    }
}

/// Runs `down`.
pub fn down(args: &DownArgs) -> ExitCode {
    match run::down(&registry::home(), args.topology.as_deref()) {
        Ok(r) if r.stopped.is_empty() && r.cleaned.is_empty() => {
            eprintln!(
                "strait down: no run{} to stop (runs live in {})",
                args.topology
                    .as_deref()
                    .map(|t| format!(" of {t}"))
                    .unwrap_or_default(),
                registry::runs_dir(&registry::home()).display()
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            for id in &r.stopped {
                eprintln!("strait down: run {id} stopped");
            }
            for id in &r.cleaned {
                eprintln!("strait down: run {id} cleaned up (its strait up was not running)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{e}; run `strait down` again (as root for netns runs)")),
    }
}

/// Resolves `--cluster NAME` to the running cluster's state directory.
pub fn resolve_cluster(g: &Global) -> Result<Global, ExitCode> {
    let Some(name) = &g.cluster else {
        return Ok(g.clone());
    };
    if g.state_dir.is_some() {
        eprintln!("error: --cluster and --state-dir exclude each other: pick one");
        return Err(exit::code(exit::FAILURE));
    }
    match registry::find_cluster(&registry::home(), name) {
        Ok((_, _, c)) => Ok(Global {
            cluster: None,
            state_dir: Some(c.state_dir),
            log: g.log.clone(),
        }),
        Err(e) => {
            eprintln!("error: --cluster {name}: {e}");
            Err(exit::code(exit::FAILURE))
        }
    }
}

/// Runs `exec`: a command inside a pod's network namespace (with the cluster's DNS), or
/// in loopback mode with the pod's address and proxy in its environment.
pub fn exec(args: &ExecArgs) -> ExitCode {
    let Some((cluster, pod)) = args.target.split_once('/') else {
        return fail(format!(
            "{:?}: expected CLUSTER/POD, e.g. west/frontend",
            args.target
        ));
    };
    let (dir, run, c) = match registry::find_cluster(&registry::home(), cluster) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let p = match registry::find_pod(&dir, &c.name, args.namespace.as_deref(), pod) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = &p.netns {
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    let program = match args.command[0].as_str() {
        "strait" => std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "strait".into()),
        other => other.to_string(),
    };
    argv.push(program);
    argv.extend(args.command[1..].iter().cloned());
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("POD_NAME", &p.name)
        .env("POD_NAMESPACE", &p.namespace)
        .env("POD_IP", &p.ip)
        .env("STRAIT_CLUSTER", &c.name)
        .env_remove("STRAIT_STATE_DIR");
    if p.netns.is_none() && p.injected {
        let proxy = format!("{}:4140", p.ip);
        cmd.env("STRAIT_DEMO_PROXY", &proxy)
            .env("HTTP_PROXY", format!("http://{proxy}"))
            .env("http_proxy", format!("http://{proxy}"));
    }
    match cmd.status() {
        Ok(s) => match s.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
            None => exit::code(exit::FAILURE),
        },
        Err(e) => fail(format!(
            "cannot run {:?} in pod {}/{} of run {}: {e}",
            args.command[0], p.namespace, p.name, run.id
        )),
    }
}

/// Runs `logs`.
pub fn logs(g: &Global, args: &LogsArgs) -> ExitCode {
    let Some(cluster) = &g.cluster else {
        return fail("say which cluster: strait --cluster NAME logs POD");
    };
    let (dir, _, c) = match registry::find_cluster(&registry::home(), cluster) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let p = match registry::find_pod(&dir, &c.name, args.namespace.as_deref(), &args.pod) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let log = match &args.container {
        None => p.logs.first().cloned(),
        Some(name) => p.logs.iter().find(|(n, _)| n == name).cloned(),
    };
    let Some((_, path)) = log else {
        return fail(format!(
            "pod {} has no container {:?}; containers: {}",
            p.name,
            args.container.as_deref().unwrap_or_default(),
            p.logs
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = args.tail.map_or(0, |n| lines.len().saturating_sub(n));
    for l in &lines[from..] {
        println!("{l}");
    }
    if !args.follow {
        return ExitCode::SUCCESS;
    }
    let mut seen = text.len() as u64;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let Ok(bytes) = std::fs::read(&path) else { continue };
        if (bytes.len() as u64) < seen {
            seen = 0;
        }
        if (bytes.len() as u64) > seen {
            print!("{}", String::from_utf8_lossy(&bytes[seen as usize..]));
            seen = bytes.len() as u64;
        }
    }
}
