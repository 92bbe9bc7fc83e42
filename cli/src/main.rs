//! `strait`: every user command and every component's entry point, in one binary.
//!
//! Commands parse their flags into typed arguments here, then call one function each in
//! [`cmd`]. A command that a later piece of work fills in says so plainly and exits with
//! [`exit::NOT_AVAILABLE`]; it never pretends to have done something.

mod cmd;
mod exit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A Linkerd-compatible service mesh whose centrepiece is multi-cluster federation.
#[derive(Parser, Debug)]
#[command(name = "strait", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command understands.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// A running local cluster to talk to (started by `strait up`).
    #[arg(long, global = true, env = "STRAIT_CLUSTER")]
    pub cluster: Option<String>,
    /// A local cluster's state directory to read and write directly (no running cluster needed).
    #[arg(long, global = true, env = "STRAIT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log filter, e.g. `info` or `warn,strait=debug`.
    #[arg(long, global = true, env = "STRAIT_LOG", default_value = "warn")]
    pub log: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the Kubernetes manifests of the control plane (or its CRDs with --crds).
    Install(cmd::install::InstallArgs),
    /// Print the manifests that upgrade an installed control plane.
    Upgrade(cmd::install::InstallArgs),
    /// Print every object `install` created, for `kubectl delete -f -`.
    Uninstall,
    /// Check that the mesh (or, with --pre, the cluster before installing) is healthy.
    Check {
        /// Check the cluster is ready for an install instead of checking an installed mesh.
        #[arg(long)]
        pre: bool,
    },
    /// Add the proxy to workloads in manifests (files, directories or - for stdin).
    Inject(cmd::inject::InjectArgs),
    /// Remove the proxy from workloads in manifests.
    Uninject(cmd::inject::UninjectArgs),
    /// Create or update objects from manifests.
    Apply(cmd::apply::ApplyArgs),
    /// Show objects of a kind.
    Get(cmd::get::GetArgs),
    /// Delete objects by kind and name, or those named in manifests.
    Delete(cmd::get::DeleteArgs),
    /// Set or remove labels of an object (`key=value`, `key-`).
    Label(cmd::label::MetaArgs),
    /// Set or remove annotations of an object (`key=value`, `key-`).
    Annotate(cmd::label::MetaArgs),
    /// Start every cluster of a topology on this machine, link them, and keep them running.
    Up(cmd::up::UpArgs),
    /// Stop runs started by `up` (all, or one topology's) and remove everything they created.
    Down(cmd::up::DownArgs),
    /// Run a command inside a pod of a running topology: `strait exec west/frontend -- curl …`.
    Exec(cmd::up::ExecArgs),
    /// Print a pod's logs (`--cluster NAME logs POD [-c linkerd-proxy]`).
    Logs(cmd::up::LogsArgs),
    /// Multi-cluster federation: gateways, links and mirrors.
    #[command(subcommand)]
    Multicluster(Multicluster),
    /// Observability: golden metrics, live traffic and the dashboard.
    #[command(subcommand)]
    Viz(Viz),
    /// Write a ServiceProfile for a service (from a template or an OpenAPI spec).
    Profile {
        /// The service.
        service: String,
        /// Namespace of the service.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// An OpenAPI (Swagger) file to derive routes from.
        #[arg(long)]
        open_api: Option<PathBuf>,
    },
    /// Low-level diagnostics: proxy metrics, endpoints, policies.
    Diagnostics {
        /// What to inspect: proxy-metrics, endpoints, policy.
        what: String,
        /// The target, e.g. pod/myapp-1.
        target: Option<String>,
    },
    /// Print the client version (and the control plane's, when one is reachable).
    Version(cmd::version::VersionArgs),
    /// Run the sidecar proxy (component entry point), configured by Linkerd's proxy environment.
    Proxy(Box<cmd::proxy::ProxyArgs>),
    /// Run a cluster's control plane: destination, identity, policy, injector, public API.
    Controller(Box<cmd::controller::ControllerArgs>),
    /// Run a cluster's multi-cluster gateway.
    Gateway(Box<cmd::gateway::GatewayArgs>),
    /// Run the service mirror for every Link of a cluster (and, in local mode, its DNS).
    Mirror(Box<cmd::multicluster::MirrorArgs>),
    /// Set up a pod's traffic redirection to its proxy (iptables, like linkerd-init).
    Init(cmd::init::InitArgs),
    /// Demo workloads for topologies and tests: a server that says who it is, a fixed-rate client.
    #[command(subcommand)]
    Demo(cmd::demo::Demo),
}

#[derive(Subcommand, Debug)]
enum Multicluster {
    /// Print the gateway and service-mirror manifests.
    Install(cmd::multicluster::InstallArgs),
    /// Print the Link and credentials that let another cluster mirror this one.
    Link(Box<cmd::multicluster::LinkArgs>),
    /// Print everything a link created, for deletion.
    Unlink {
        /// The linked cluster's name.
        #[arg(long)]
        cluster_name: String,
    },
    /// Show the linked clusters' gateways: alive, services, latency.
    Gateways {
        /// The mirror's admin address (default: the one the local cluster's mirror published).
        #[arg(long)]
        mirror_addr: Option<String>,
        /// The local gateway's admin address, to show its links' state (default: the one
        /// the local cluster's gateway published, if any).
        #[arg(long)]
        gateway_admin_addr: Option<String>,
    },
    /// Check links, credentials, trust, mirrors and gateways.
    Check {
        /// The mirror's admin address (default: the one the local cluster's mirror published).
        #[arg(long)]
        mirror_addr: Option<String>,
        /// The local gateway's admin address, to check its links (default: the one the
        /// local cluster's gateway published, if any).
        #[arg(long)]
        gateway_admin_addr: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum Viz {
    /// Golden metrics per resource: success rate, request rate, latency.
    Stat { resource: String },
    /// Live view of the most frequent requests.
    Top { resource: String },
    /// Stream live requests through the proxies.
    Tap { resource: String },
    /// Golden metrics per route.
    Routes { resource: String },
    /// The traffic graph between resources, with identities.
    Edges { resource: String },
    /// Serve the web dashboard.
    Dashboard,
}

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// YAML documents.
    Yaml,
    /// A JSON object, or a `List` for several.
    Json,
    /// `kind/name` lines.
    Name,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The proxy logs at LINKERD2_PROXY_LOG's level, set up once its configuration parsed.
    if !matches!(cli.command, Command::Proxy(_)) {
        init_logging(&cli.global.log);
    }
    // `--cluster NAME` names a running cluster of `strait up`: commands that read or
    // write cluster state reach it through its state directory.
    let resolved;
    let g = match cli.command {
        Command::Demo(_) | Command::Logs(_) | Command::Up(_) | Command::Down(_) | Command::Exec(_) => {
            &cli.global
        }
        _ if cli.global.cluster.is_none() => &cli.global,
        _ => match cmd::up::resolve_cluster(&cli.global) {
            Ok(r) => {
                resolved = r;
                &resolved
            }
            Err(code) => return code,
        },
    };
    use cmd::pending::not_available as later;
    match cli.command {
        Command::Install(a) => cmd::install::install(&a),
        Command::Upgrade(a) => cmd::install::upgrade(g, &a),
        Command::Uninstall => cmd::install::uninstall(),
        Command::Check { pre } => cmd::check::check(g, pre),
        Command::Inject(a) => cmd::inject::inject(g, &a),
        Command::Uninject(a) => cmd::inject::uninject(&a),
        Command::Apply(a) => cmd::apply::apply(g, &a),
        Command::Get(a) => cmd::get::get(g, &a),
        Command::Delete(a) => cmd::get::delete(g, &a),
        Command::Label(a) => cmd::label::run(g, cmd::label::Field::Labels, &a),
        Command::Annotate(a) => cmd::label::run(g, cmd::label::Field::Annotations, &a),
        Command::Up(a) => cmd::up::up(g, &a),
        Command::Down(a) => cmd::up::down(&a),
        Command::Exec(a) => cmd::up::exec(&a),
        Command::Logs(a) => cmd::up::logs(g, &a),
        Command::Multicluster(m) => match m {
            Multicluster::Install(a) => cmd::multicluster::install(&a),
            Multicluster::Link(a) => cmd::multicluster::link(g, &a),
            Multicluster::Unlink { cluster_name } => cmd::multicluster::unlink(g, &cluster_name),
            Multicluster::Gateways {
                mirror_addr,
                gateway_admin_addr,
            } => cmd::multicluster::gateways(g, mirror_addr.as_deref(), gateway_admin_addr.as_deref()),
            Multicluster::Check {
                mirror_addr,
                gateway_admin_addr,
            } => cmd::multicluster::check(g, mirror_addr.as_deref(), gateway_admin_addr.as_deref()),
        },
        Command::Viz(v) => {
            let name = match v {
                Viz::Stat { .. } => "viz stat",
                Viz::Top { .. } => "viz top",
                Viz::Tap { .. } => "viz tap",
                Viz::Routes { .. } => "viz routes",
                Viz::Edges { .. } => "viz edges",
                Viz::Dashboard => "viz dashboard",
            };
            cmd::pending::not_planned_yet(name, "observability (viz)")
        }
        Command::Profile { .. } => later("profile", 7, "ServiceProfile generation"),
        Command::Diagnostics { .. } => {
            cmd::pending::not_planned_yet("diagnostics", "observability (diagnostics)")
        }
        Command::Version(a) => cmd::version::version(g, &a),
        Command::Proxy(a) => cmd::proxy::proxy(&a),
        Command::Controller(a) => cmd::controller::controller(g, &a),
        Command::Gateway(a) => cmd::gateway::gateway(g, &a),
        Command::Mirror(a) => cmd::multicluster::mirror(g, &a),
        Command::Init(a) => cmd::init::init(&a),
        Command::Demo(d) => cmd::demo::demo(g, d),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: --log {filter:?} is not a valid log filter ({e}); using \"warn\"");
        tracing_subscriber::EnvFilter::new("warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs written to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
