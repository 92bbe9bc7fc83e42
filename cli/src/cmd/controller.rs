//! `strait controller`: a cluster's control plane, in local mode (`--state-dir`) or
//! Kubernetes mode (`--kubernetes`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use strait_api::store::kube::KubeStore;
use strait_api::store::local::LocalStore;
use strait_controller::discovery::index::ClusterInfo;
use strait_controller::identity::TokenReviewValidator;
use strait_controller::policy::inbound::{DefaultPolicy, InboundConfig};
use strait_controller::run::{Bound, ControllerConfig, LocalIdentity, run};
use strait_identity::{Issuer, TrustAnchors, TrustDomain};

use crate::{Global, exit};

/// Arguments of `controller`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Read cluster state from the Kubernetes API (in-cluster or kubeconfig) instead of --state-dir.
    #[arg(long)]
    pub kubernetes: bool,
    /// Destination gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:8086")]
    pub destination_addr: SocketAddr,
    /// Identity gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub identity_addr: SocketAddr,
    /// Policy gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:8090")]
    pub policy_addr: SocketAddr,
    /// Admin (`/ready`, `/live`) listen address.
    #[arg(long, default_value = "0.0.0.0:9990")]
    pub admin_addr: SocketAddr,
    /// Local mode: the public API (mTLS, admin identity) the CLI uses while the controller
    /// owns the state directory.
    #[arg(long, default_value = "127.0.0.1:8085")]
    pub api_addr: SocketAddr,
    /// The mesh's trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Networks of the cluster's pods, comma-separated CIDRs (cluster-* inbound policies).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
    )]
    pub cluster_networks: Vec<String>,
    /// Default inbound policy: all-unauthenticated, all-authenticated, cluster-authenticated,
    /// cluster-unauthenticated, deny or audit.
    #[arg(long, default_value = "all-unauthenticated")]
    pub default_inbound_policy: String,
    /// Ports opaque on Services and pods without `config.linkerd.io/opaque-ports`, and on
    /// addresses outside the cluster: ports and ranges (`3306,9000-9010`), or "" for none
    /// (Linkerd's `proxy.opaquePorts`).
    #[arg(long, default_value = "25,587,3306,4444,5432,6379,9300,11211")]
    pub default_opaque_ports: String,
    /// Lifetime of issued proxy certificates, e.g. 24h.
    #[arg(long, default_value = "24h")]
    pub issuance_lifetime: String,
    /// Trust anchors (PEM); Kubernetes mode reads the installed ones from here.
    #[arg(long, value_name = "FILE")]
    pub identity_trust_anchors_file: Option<PathBuf>,
    /// Issuer certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub identity_issuer_certificate_file: Option<PathBuf>,
    /// Issuer private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub identity_issuer_key_file: Option<PathBuf>,
    /// Kubernetes mode: the installed values (`linkerd-config`'s `values`), for the proxy
    /// injector and the trust and cluster domains.
    #[arg(long, value_name = "FILE")]
    pub values_file: Option<PathBuf>,
    /// Kubernetes mode: the proxy-injector webhook's listen address.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,
    /// Kubernetes mode: the webhook's serving certificate (PEM); with --webhook-key-file it
    /// turns the webhook on.
    #[arg(long, value_name = "FILE")]
    pub webhook_cert_file: Option<PathBuf>,
    /// Kubernetes mode: the webhook's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub webhook_key_file: Option<PathBuf>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    exit::code(exit::FAILURE)
}

fn config(args: &ControllerArgs, local: bool) -> Result<ControllerConfig, String> {
    let cluster_networks = args
        .cluster_networks
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| {
            strait_api::mesh::formats::cidr(n.trim())
                .map_err(|e| format!("--cluster-networks {n:?}: expected {e}"))
        })
        .collect::<Result<_, _>>()?;
    let default_policy = DefaultPolicy::parse(&args.default_inbound_policy).ok_or_else(|| {
        format!(
            "--default-inbound-policy {:?}: expected one of {}",
            args.default_inbound_policy,
            strait_api::labels::config::DEFAULT_INBOUND_POLICIES.join(", ")
        )
    })?;
    let lifetime = strait_api::names::duration(&args.issuance_lifetime)
        .map_err(|e| format!("--issuance-lifetime {:?}: expected {e}", args.issuance_lifetime))?;
    if lifetime < Duration::from_secs(60) {
        return Err(format!(
            "--issuance-lifetime {:?}: expected at least 1m",
            args.issuance_lifetime
        ));
    }
    TrustDomain::new(&args.trust_domain)
        .map_err(|e| format!("--trust-domain {:?}: {e}", args.trust_domain))?;
    let default_opaque_ports = match args.default_opaque_ports.trim() {
        "" => Vec::new(),
        v => strait_api::names::port_ranges(v).map_err(|e| {
            format!(
                "--default-opaque-ports {:?}: expected {e}, or \"\" for none",
                args.default_opaque_ports
            )
        })?,
    };
    Ok(ControllerConfig {
        destination_addr: args.destination_addr,
        identity_addr: args.identity_addr,
        policy_addr: args.policy_addr,
        admin_addr: args.admin_addr,
        cluster: ClusterInfo {
            trust_domain: args.trust_domain.clone(),
            cluster_domain: args.cluster_domain.clone(),
            default_opaque_ports: default_opaque_ports.clone(),
        },
        inbound: InboundConfig {
            cluster_networks,
            default_policy,
            trust_domain: args.trust_domain.clone(),
            default_opaque_ports,
        },
        issuance_lifetime: lifetime,
        local_endpoints: local,
    })
}

/// The webhook's TLS config and injection config, when its certificate files are given.
type WebhookSetup = (
    std::sync::Arc<strait_identity::rustls::ServerConfig>,
    strait_controller::inject::InjectConfig,
);

fn webhook_setup(args: &ControllerArgs, anchors: &TrustAnchors) -> Result<Option<WebhookSetup>, String> {
    use strait_identity::pki_types::pem::PemObject;
    use strait_identity::pki_types::{CertificateDer, PrivateKeyDer};
    use strait_identity::rustls;
    let (Some(cert), Some(key)) = (&args.webhook_cert_file, &args.webhook_key_file) else {
        if args.webhook_cert_file.is_some() || args.webhook_key_file.is_some() {
            return Err("give both --webhook-cert-file and --webhook-key-file, or neither".into());
        }
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--webhook-cert-file {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--webhook-key-file {}: {e}", key.display()))?;
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("webhook certificate: {e}"))?;
    let values = match &args.values_file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).map_err(|e| format!("--values-file {}: {e}", f.display()))?;
            strait_controller::install::values::Values::from_yaml(&text)
                .map_err(|e| format!("--values-file {}: {e}", f.display()))?
        }
        None => Default::default(),
    };
    Ok(Some((
        std::sync::Arc::new(tls),
        strait_controller::inject::InjectConfig::new(values, anchors.to_pem()),
    )))
}

/// The issuer named by the `--identity-*` flags, if any were given (all three or none).
fn issuer_from_flags(args: &ControllerArgs) -> Result<Option<(TrustAnchors, Issuer)>, String> {
    let now = SystemTime::now();
    match (&args.identity_trust_anchors_file, &args.identity_issuer_certificate_file, &args.identity_issuer_key_file) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(crt), Some(key)) => {
            let anchors = TrustAnchors::load(ca, now).map_err(|e| e.to_string())?;
            let issuer = Issuer::load_files(crt, key, &anchors, now).map_err(|e| e.to_string())?;
            Ok(Some((anchors, issuer)))
        }
        _ => Err("give all three of --identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file, or none".into()),
    }
}

fn announce(b: Bound) {
    // One JSON line on stdout for supervisors (`strait up`) and scripts; the rest is logs.
    println!("{}", serde_json::to_string(&b).expect("addresses serialize"));
    eprintln!(
        "control plane ready: destination {}, identity {}, policy {}, admin {}",
        b.destination, b.identity, b.policy, b.admin
    );
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Two malloc arenas instead of glibc's eight per core: the controller's threads all
/// allocate index entries of the same few shapes, and per-thread arenas only kept freed
/// memory apart (about 20 MiB of 300 at 5000 services; BENCHMARKS.md).
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Runs `controller`.
pub fn controller(g: &Global, args: &ControllerArgs) -> ExitCode {
    limit_malloc_arenas();
    let local = !args.kubernetes;
    let cfg = match config(args, local) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let flags = match issuer_from_flags(args) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    if args.kubernetes {
        if g.state_dir.is_some() {
            return fail(
                "--kubernetes and --state-dir exclude each other: pick the Kubernetes API or a local state directory",
            );
        }
        let Some((anchors, issuer)) = flags else {
            return fail(
                "Kubernetes mode needs the issuer: pass --identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file (mounted from the linkerd-identity-issuer Secret)",
            );
        };
        let webhook = match webhook_setup(args, &anchors) {
            Ok(w) => w,
            Err(e) => return fail(e),
        };
        return rt.block_on(async {
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    return fail(format!(
                        "cannot reach the Kubernetes API: {e}; check KUBECONFIG or the in-cluster service account"
                    ));
                }
            };
            let store = KubeStore::new(client.clone());
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let stopped = move || {
                let mut rx = stop_rx.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            };
            if let Some((tls, config)) = webhook {
                let listener = match tokio::net::TcpListener::bind(args.webhook_addr).await {
                    Ok(l) => l,
                    Err(e) => return fail(format!("cannot listen on {} for the injector webhook: {e}", args.webhook_addr)),
                };
                let hook = std::sync::Arc::new(strait_controller::inject::webhook::Webhook::new(
                    std::sync::Arc::new(config),
                    strait_controller::inject::webhook::StoreNamespaces(store.clone()),
                ));
                tokio::spawn(strait_controller::inject::server::serve(listener, tls, hook, stopped()));
            }
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            match run(cfg, store, anchors, issuer, TokenReviewValidator::new(client), announce, stopped()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        });
    }
    let Some(dir) = &g.state_dir else {
        return fail(
            "pass --state-dir DIR for a local cluster's control plane, or --kubernetes to run against the Kubernetes API",
        );
    };
    let store = match LocalStore::open(dir) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let trust_domain = TrustDomain::new(&args.trust_domain).expect("validated in config");
    let identity =
        match LocalIdentity::load_or_create(&dir.join("identity"), &trust_domain, SystemTime::now()) {
            Ok(i) => i,
            Err(e) => return fail(format!("{e} (in {})", dir.join("identity").display())),
        };
    let (anchors, issuer) = flags.unwrap_or((identity.anchors.clone(), identity.issuer.clone()));
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let api = match start_api(
            dir,
            args,
            &issuer,
            &identity.anchors,
            identity.tokens.clone(),
            store.clone(),
            stopped(),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let result = run(cfg, store, anchors, issuer, identity.tokens, announce, stopped()).await;
        let _ = std::fs::remove_file(strait_controller::api::files::endpoint(dir));
        api.abort();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    })
}

/// Issues the controller's and the admin's certificates, binds the public API, and
/// publishes its address in the state directory.
async fn start_api(
    dir: &std::path::Path,
    args: &ControllerArgs,
    issuer: &Issuer,
    anchors: &TrustAnchors,
    tokens: strait_controller::identity::LocalTokens,
    store: LocalStore,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use strait_controller::api::{self, ADMIN_SA, CONTROL_PLANE_NS, CONTROLLER_SA, files};
    let now = SystemTime::now();
    let id = |sa: &str| {
        strait_identity::IdentityName::new(sa, CONTROL_PLANE_NS, &args.trust_domain)
            .map_err(|e| e.to_string())
    };
    let (server_id, admin_id) = (id(CONTROLLER_SA)?, id(ADMIN_SA)?);
    let lifetime = Duration::from_secs(30 * 24 * 3600);
    let (chain, key) = api::issue(issuer, &server_id, lifetime, now)?;
    let (admin_chain, admin_key) = api::issue(issuer, &admin_id, lifetime, now)?;
    let pem: String = admin_chain
        .iter()
        .map(|c| strait_identity::encode_pem("CERTIFICATE", c))
        .collect();
    std::fs::write(files::admin_cert(dir), pem)
        .map_err(|e| format!("cannot write the admin certificate: {e}"))?;
    strait_controller::run::write_private(
        &files::admin_key(dir),
        strait_identity::encode_pem("PRIVATE KEY", admin_key.secret_der()).as_bytes(),
    )
    .map_err(|e| format!("cannot write the admin key: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.api_addr).await.map_err(|e| {
        format!(
            "cannot listen on {} for the public API: {e}; pass --api-addr",
            args.api_addr
        )
    })?;
    let address = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    let endpoint = api::ApiEndpoint {
        address,
        server_identity: server_id.to_string(),
    };
    let tmp = files::endpoint(dir).with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&endpoint).expect("serializes"))
        .and_then(|()| std::fs::rename(&tmp, files::endpoint(dir)))
        .map_err(|e| format!("cannot publish the API address: {e}"))?;
    let certs = strait_identity::CertStore::with_cert(chain, key).map_err(|e| e.to_string())?;
    let anchors = anchors.clone();
    let state = api::Api {
        store,
        tokens,
        admin: admin_id,
        trust_domain: args.trust_domain.clone(),
    };
    Ok(tokio::spawn(async move {
        api::serve(listener, certs, &anchors, state, shutdown).await
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use strait_api::Object;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ControllerArgs,
    }

    fn parse(args: &[&str]) -> Result<ControllerConfig, String> {
        let cmd = Cmd::try_parse_from(std::iter::once("controller").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        config(&cmd.args, false)
    }

    /// The arguments `strait install` gives the controller, after `--log LEVEL controller`.
    fn installed_args(set: &[&str]) -> Vec<String> {
        let options = strait_controller::install::Options {
            set: set.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let rendered = strait_controller::install::install(&options, SystemTime::now()).unwrap();
        let deployment = rendered
            .objects
            .iter()
            .find_map(|o| match o {
                Object::Deployment(d)
                    if d.metadata.name.as_deref()
                        == Some(strait_controller::install::manifests::CONTROLLER) =>
                {
                    Some(d)
                }
                _ => None,
            })
            .expect("the controller's Deployment");
        let args = deployment.spec.template.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        let at = args.iter().position(|a| a == "controller").unwrap();
        args[at + 1..].to_vec()
    }

    /// What `install --set` chose for the policy and destination controllers reaches them:
    /// Linkerd's chart passes these values as its controllers' flags.
    #[test]
    fn install_values_reach_the_controller_flags() {
        let args = installed_args(&[
            "proxy.opaquePorts=3306,9000-9010",
            "proxy.defaultInboundPolicy=deny",
            "clusterNetworks=10.9.0.0/16",
            "identity.issuer.issuanceLifetime=48h",
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let cfg = parse(&refs).unwrap();
        assert_eq!(cfg.cluster.default_opaque_ports, [(3306, 3306), (9000, 9010)]);
        assert_eq!(cfg.inbound.default_opaque_ports, [(3306, 3306), (9000, 9010)]);
        assert_eq!(cfg.inbound.default_policy, DefaultPolicy::Deny);
        assert_eq!(cfg.inbound.cluster_networks.len(), 1);
        assert_eq!(cfg.issuance_lifetime, Duration::from_secs(48 * 3600));

        // Empty lists are Linkerd's "none".
        let args = installed_args(&["proxy.opaquePorts=", "clusterNetworks="]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let cfg = parse(&refs).unwrap();
        assert!(cfg.cluster.default_opaque_ports.is_empty());
        assert!(cfg.inbound.cluster_networks.is_empty());

        // The defaults are Linkerd's.
        let cfg = parse(&[]).unwrap();
        assert_eq!(
            cfg.cluster.default_opaque_ports,
            strait_controller::policy::outbound::translate::DEFAULT_OPAQUE_PORTS
        );
    }

    #[test]
    fn a_bad_default_opaque_ports_flag_says_what_was_expected() {
        for bad in ["3306,mysql", "0", "10-5", "70000"] {
            let e = parse(&["--default-opaque-ports", bad]).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "--default-opaque-ports {bad:?}: expected a comma-separated list of ports"
                )),
                "{e}"
            );
        }
    }
}
