//! `strait demo server|client`: the demo workloads of topologies and tests
//! (`strait_topologies::demo`). Flags and the pod's environment become typed configs here;
//! the library does the rest.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use strait_topologies::demo::client::{self, ClientConfig, Protocol, Stop, Target};
use strait_topologies::demo::server::{Server, ServerConfig};
use strait_topologies::demo::{Identity, parse_duration, parse_fraction, parse_size};

use crate::{Global, exit};

/// The demo workloads.
#[derive(Subcommand, Debug)]
pub enum Demo {
    /// Answer HTTP/1.1, HTTP/2 and gRPC on one port with this pod's cluster, name, version
    /// and pod, with optional added latency and failures.
    #[command(disable_version_flag = true)]
    Server(ServerArgs),
    /// Send requests at a fixed rate and report success rate, latency and who answered.
    Client(ClientArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration("", s).map_err(|e| format!("expected {}", e.expected))
}

fn fraction(s: &str) -> Result<f64, String> {
    parse_fraction("", s).map_err(|e| format!("expected {}", e.expected))
}

fn size(s: &str) -> Result<usize, String> {
    parse_size("", s).map_err(|e| format!("expected {}", e.expected))
}

fn host_port(s: &str) -> Result<String, String> {
    let expected = "expected host:port, e.g. 127.0.0.1:4140";
    let (host, port) = s.rsplit_once(':').ok_or(expected)?;
    if host.is_empty() || !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return Err(expected.into());
    }
    Ok(s.to_string())
}

/// Arguments of `demo server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Listen address (port 0 picks a free one; the bound address is printed as JSON).
    #[arg(long, env = "STRAIT_DEMO_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// The workload's name, as a Deployment's.
    #[arg(long, env = "STRAIT_DEMO_NAME", default_value = "demo")]
    pub name: String,
    /// The workload's version (its `version` label).
    #[arg(long = "version", env = "STRAIT_DEMO_VERSION", default_value = "v1")]
    pub app_version: String,
    /// The cluster it runs in (default: the global --cluster, else `local`).
    #[arg(long, env = "STRAIT_DEMO_CLUSTER")]
    pub cluster_name: Option<String>,
    /// The pod's name (default: $HOSTNAME, as in a Kubernetes pod, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub pod: Option<String>,
    /// The pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Latency added to every answer (probes excepted), e.g. 20ms.
    #[arg(long, env = "STRAIT_DEMO_LATENCY", default_value = "0", value_parser = duration, value_name = "DURATION")]
    pub latency: Duration,
    /// Fraction of requests answered with HTTP 500 / gRPC UNAVAILABLE, evenly spread (0.1 or 10%).
    #[arg(long, env = "STRAIT_DEMO_FAILURE_RATE", default_value = "0", value_parser = fraction, value_name = "FRACTION")]
    pub failure_rate: f64,
    /// Exact size of every answer body, e.g. 1KiB (default: just the answer).
    #[arg(long, env = "STRAIT_DEMO_RESPONSE_SIZE", value_parser = size, value_name = "SIZE")]
    pub response_size: Option<usize>,
}

/// How `demo client` prints its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Lines for people.
    Text,
    /// One JSON object (progress still goes to stderr as text).
    Json,
}

/// The protocols of `demo client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// gRPC (the demo service) over HTTP/2.
    Grpc,
}

/// Arguments of `demo client`.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Where to send requests: http://host:port/path or host:port.
    #[arg(value_name = "URL")]
    pub url: String,
    /// The protocol.
    #[arg(long, value_enum, default_value = "http1")]
    pub protocol: ProtocolArg,
    /// Requests per second over all connections.
    #[arg(long, default_value_t = 10.0)]
    pub rps: f64,
    /// How long to send for (default 10s unless --requests is given).
    #[arg(long, value_parser = duration, value_name = "DURATION", conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// How many requests to send.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Send through this HTTP proxy (host:port); HTTP/1 requests then use the absolute form.
    #[arg(long, env = "STRAIT_DEMO_PROXY", value_parser = host_port, value_name = "HOST:PORT")]
    pub proxy: Option<String>,
    /// Bound on each request, connecting included.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// How to print the final report.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: ReportFormat,
    /// List every request (when scheduled, latency, outcome, cluster) in the JSON report.
    #[arg(long)]
    pub timeline: bool,
    /// How often to print progress to stderr (0 for never).
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    pub progress: Duration,
    /// Exit with status 1 when the success rate is below this (0.99 or 99%).
    #[arg(long, value_parser = fraction, value_name = "FRACTION")]
    pub min_success: Option<f64>,
}

/// Runs `demo server` or `demo client`.
pub fn demo(g: &Global, d: Demo) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match d {
        Demo::Server(a) => rt.block_on(server(g, a)),
        Demo::Client(a) => rt.block_on(run_client(a)),
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn server(g: &Global, a: ServerArgs) -> ExitCode {
    let identity = Identity {
        name: a.name,
        version: a.app_version,
        cluster: a
            .cluster_name
            .or_else(|| g.cluster.clone())
            .unwrap_or_else(|| "local".into()),
        pod: a.pod.unwrap_or_else(host_name),
        namespace: a.namespace,
    };
    let config = ServerConfig {
        identity: identity.clone(),
        latency: a.latency,
        failure_rate: a.failure_rate,
        response_size: a.response_size,
    };
    let server = match Server::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let listener = match tokio::net::TcpListener::bind(a.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {} (--addr): {e}", a.addr);
            return exit::code(exit::FAILURE);
        }
    };
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({ "demo-server": bound, "server": identity })
    );
    match server.serve(listener, shutdown_signal()).await {
        Ok(stats) => {
            eprintln!(
                "demo server stopped: answered {} requests ({} injected failures)",
                stats.requests, stats.failures
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: serving on {bound}: {e}");
            exit::code(exit::FAILURE)
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run_client(a: ClientArgs) -> ExitCode {
    let target = match Target::parse("URL", &a.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let stop = match (a.requests, a.duration) {
        (Some(n), _) => Stop::Requests(n),
        (None, Some(d)) => Stop::Duration(d),
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    let config = ClientConfig {
        target,
        protocol: match a.protocol {
            ProtocolArg::Http1 => Protocol::Http1,
            ProtocolArg::Http2 => Protocol::Http2,
            ProtocolArg::Grpc => Protocol::Grpc,
        },
        rps: a.rps,
        stop,
        concurrency: a.concurrency,
        proxy: a.proxy,
        timeout: a.timeout,
        timeline: a.timeline,
    };
    let progress = (!a.progress.is_zero()).then(|| {
        let f: client::Progress = Box::new(|r| eprintln!("{}", r.progress_line()));
        (a.progress, f)
    });
    let report = match client::run(config, progress).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    match a.output {
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!("{}", serde_json::to_string(&report).expect("reports serialize")),
    }
    if let Some(min) = a.min_success
        && report.success_rate < min
    {
        eprintln!(
            "error: success rate {:.2}% is below --min-success {:.2}%",
            report.success_rate * 100.0,
            min * 100.0
        );
        return exit::code(exit::FAILURE);
    }
    ExitCode::SUCCESS
}
