//! `strait gateway`: runs a cluster's multi-cluster gateway.
//!
//! Flags are parsed into a [`GatewayConfig`] and credentials before any socket
//! is bound; every bad flag says what was expected.
//!
//! # The cross-cluster path, per cluster
//! For a pod in west to reach `myapp-east` with its own identity end to end:
//! - west's gateway: `--watch-links --proxy-entry ENTRY` (one link per Link object in
//!   west, such as `strait multicluster link --cluster-name east` printed against east;
//!   `--link east=EAST_QUIC[@IDENTITY]` configures one by hand, and `--proxy-entry
//!   east=ENTRY` is an entry of that link alone, for proxies of the version before);
//! - west's mirror: `strait mirror --gateway-entry ENTRY` (the Link's gateway address and
//!   probe must answer, as the probe still decides readiness);
//! - east's gateway: `--serve-exports` (west's mirror reads east's Services through
//!   the link), `--destination-addr EAST_DESTINATION`, plus
//!   `--endpoint-inbound-port 4143` when east's pods are not behind iptables
//!   (loopback/explicit capture);
//! - proxies need nothing new; both clusters' proxies must trust each other's
//!   certificates (one set of trust anchors).
//!
//! # Stock Linkerd proxies
//! `--linkerd-entry` also accepts Linkerd's mTLS gateway entry on TCP, on the QUIC
//! address's IP and port (4143/tcp beside 4143/udp; `--linkerd-entry-addr` puts it
//! elsewhere): stock linkerd2-proxies in linked clusters reach this cluster's services
//! there, as they reach Linkerd's gateway. That path needs `--destination-addr` (or
//! `--target`s) to resolve services, and unlike the Strait path the gateway terminates
//! the client's TLS, so servers see the gateway's identity, not the client's.
//!
//! With `--state-dir`, the admin address is also published there (`gateway.json`) for
//! `strait multicluster gateways` and `check`, which show each link's state.
//!
//! The first stdout line is JSON: `{"quic", "admin", "egress": [..], "proxy_entries": [..],
//! "linkerd_entry"}` (`linkerd_entry` is null without the entry).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use clap::{Args, ValueEnum};
use strait_gateway::{
    Authority, Chain, Congestion, Credentials, DestinationResolver, EgressRoute, Endpoint, Gateway,
    GatewayConfig, LinkSpec, LinkerdEntry, Protocol, ProxyEntry, Resolve, SessionState, StaticResolver,
    Target, default_gateway_identity,
};
use strait_identity::pki_types::pem::PemObject;
use strait_identity::pki_types::{CertificateDer, PrivateKeyDer};
use strait_identity::{CertStore, IdentityName, TrustAnchors, TrustDomain};

use super::multicluster::AnyStore;
use crate::Global;
use crate::exit;

/// Flags of `strait gateway`.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// UDP address of the QUIC link (dialing and accepting).
    #[arg(long, default_value = "0.0.0.0:4143", value_name = "ADDR")]
    pub quic_addr: SocketAddr,
    /// Admin address: Linkerd's probe (`/ready`) and `/metrics`.
    #[arg(long, default_value = "0.0.0.0:4191", value_name = "ADDR")]
    pub admin_addr: SocketAddr,
    /// PEM trust anchors every gateway must chain to.
    #[arg(long, value_name = "FILE")]
    pub identity_trust_anchors_file: PathBuf,
    /// PEM certificate chain of this gateway (leaf first).
    #[arg(long, value_name = "FILE")]
    pub identity_cert_file: PathBuf,
    /// PEM private key of this gateway (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE")]
    pub identity_key_file: PathBuf,
    /// A gateway identity allowed to link to this one (repeatable; default: the
    /// linkerd-gateway identity in this gateway's trust domain).
    #[arg(long = "accept-identity", value_name = "IDENTITY")]
    pub accept: Vec<String>,
    /// A link to a remote gateway: NAME=ADDR or NAME=ADDR@IDENTITY (repeatable; the
    /// identity defaults to linkerd-gateway in this gateway's trust domain).
    #[arg(long = "link", value_name = "NAME=ADDR[@IDENTITY]")]
    pub links: Vec<String>,
    /// A local listener relayed to a remote service: LISTEN=LINK/AUTHORITY:PORT (repeatable).
    #[arg(long = "egress", value_name = "LISTEN=LINK/AUTHORITY:PORT")]
    pub egress: Vec<String>,
    /// A local service the ingress delivers to: AUTHORITY:PORT=ADDR (repeatable; checked
    /// before --destination-addr).
    #[arg(long = "target", value_name = "AUTHORITY:PORT=ADDR")]
    pub targets: Vec<String>,
    /// Where local proxies open cross-cluster streams: ADDR, a TCP listener for every
    /// link (each request names its link), or LINK=ADDR, a listener for one link, for
    /// proxies of the version before (repeatable: one ADDR, one LINK=ADDR per link).
    /// Mirrors point Strait proxies here (`strait mirror --gateway-entry ADDR`).
    #[arg(long = "proxy-entry", value_name = "[LINK=]ADDR")]
    pub proxy_entries: Vec<String>,
    /// Dial a link for every Link object of this cluster (`strait multicluster link`'s
    /// output, applied here), following them as they are applied, changed and deleted:
    /// its targetClusterName names the link, gatewayAddresses and gatewayPort say where
    /// the remote gateway listens, gatewayIdentity what it must prove. Read from the
    /// controller of --state-dir (as this gateway, read-only), or with --kubernetes from
    /// the Kubernetes API. A --link of the same name wins.
    #[arg(long)]
    pub watch_links: bool,
    /// Also accept Linkerd's mTLS gateway entry (TCP, ALPN transport.l5d.io/v1, the
    /// transport header) on the --quic-addr IP and port, for stock Linkerd proxies and
    /// networks that block UDP.
    #[arg(long)]
    pub linkerd_entry: bool,
    /// Put Linkerd's gateway entry on this TCP address instead (implies --linkerd-entry).
    #[arg(long, value_name = "ADDR")]
    pub linkerd_entry_addr: Option<SocketAddr>,
    /// The local controller's Destination service (host:port): the ingress resolves
    /// streams' targets there (after any --target).
    #[arg(long, value_name = "ADDR")]
    pub destination_addr: Option<String>,
    /// With --destination-addr, for clusters whose pods are not behind iptables
    /// (explicit capture): deliver to meshed endpoints' proxies on this inbound port
    /// (default: the address itself, which iptables hands to the proxy).
    #[arg(long, value_name = "PORT", requires = "destination_addr")]
    pub endpoint_inbound_port: Option<u16>,
    /// With --destination-addr: the Destination service's identity (as a proxy's
    /// LINKERD2_PROXY_DESTINATION_SVC_NAME): talk to it over mutual TLS with this
    /// gateway's certificate, verifying that identity. Without it, plaintext.
    #[arg(long, value_name = "IDENTITY", requires = "destination_addr")]
    pub destination_svc_name: Option<String>,
    /// Congestion controller of the links.
    #[arg(long, value_enum, default_value_t = CongestionArg::Bbr)]
    pub congestion: CongestionArg,
    /// Serve this cluster's Services, and its meshed pods' service accounts, addresses
    /// and readiness, to the gateways linked to this one: their clusters' mirrors read
    /// them through the link instead of through this cluster's API. Read from the controller of --state-dir
    /// (authenticated as this gateway, read-only), or with --kubernetes from the
    /// Kubernetes API.
    #[arg(long)]
    pub serve_exports: bool,
    /// With --serve-exports or --watch-links: read the Kubernetes API (the pod's service
    /// account or the kubeconfig) instead of a local cluster's controller.
    #[arg(long)]
    pub kubernetes: bool,
}

/// The ingress's Destination client: plaintext, or mutual TLS as this gateway verifying
/// `identity`.
fn destination_resolver(
    addr: &str,
    inbound_port: Option<u16>,
    identity: Option<IdentityName>,
    creds: &Credentials,
) -> Result<DestinationResolver, String> {
    let Some(identity) = identity else {
        return DestinationResolver::new(addr, inbound_port);
    };
    // The gateway's certificate is loaded before it starts: connections need not wait.
    let (_ready_tx, ready) = tokio::sync::watch::channel(true);
    let cert = strait_proxy::control::ClientCert::Proxy {
        store: creds.store.clone(),
        ready,
    };
    let channel = strait_proxy::control::channel(
        strait_proxy::control::Service::Destination,
        addr,
        Some(identity),
        &creds.anchors,
        cert,
    )
    .map_err(|e| e.to_string())?;
    Ok(DestinationResolver::from_channel(channel, inbound_port))
}

/// Serves a store's Services and meshed pods as the gateway's catalog.
struct StoreCatalog<S>(S);

impl<S: strait_api::Store> strait_gateway::Catalog for StoreCatalog<S> {
    fn watch(&self, resource: strait_gateway::Resource) -> tokio::sync::mpsc::Receiver<bytes::Bytes> {
        strait_mirror::catalog::serve(&self.0, resource)
    }
}

/// The cluster the gateway reads (`--serve-exports`, `--watch-links`): the Kubernetes API,
/// or the running controller of `--state-dir` reached with the gateway's own certificate
/// (which lets it read Services, Pods and Links, nothing else).
async fn cluster_store(g: &Global, args: &GatewayArgs, creds: &Credentials) -> Result<AnyStore, String> {
    let flags = match (args.serve_exports, args.watch_links) {
        (true, true) => "--serve-exports and --watch-links",
        (true, false) => "--serve-exports",
        _ => "--watch-links",
    };
    if args.kubernetes {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("{flags} --kubernetes: cannot reach the Kubernetes API: {e}; check KUBECONFIG or the in-cluster service account")
        })?;
        return Ok(AnyStore::Kube(strait_api::store::kube::KubeStore::new(client)));
    }
    let Some(dir) = g.state_dir.as_deref() else {
        return Err(format!(
            "{flags} needs the cluster to read: pass --state-dir DIR of a local cluster (before `gateway`), or --kubernetes"
        ));
    };
    use strait_controller::api::files::{self, EndpointFileError};
    let endpoint = files::read_endpoint(dir).map_err(|e| match e {
        EndpointFileError::Unreadable { .. } => format!(
            "{flags}: {e}; start the cluster's controller (`strait controller` or `strait up`) before its gateway"
        ),
        damaged => format!("{flags}: {damaged}"),
    })?;
    let client = strait_controller::api::client::ApiClient::new(endpoint, &creds.anchors, &creds.store)
        .map_err(|e| format!("{flags}: {e}"))?;
    Ok(AnyStore::Api(strait_controller::api::store::ApiStore::new(
        client,
        strait_controller::api::store::POLL,
    )))
}

/// `--congestion` values.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum CongestionArg {
    /// BBR: best under loss with many flows on one connection.
    Bbr,
    /// Cubic: best single-flow throughput on a clean path.
    Cubic,
}

/// A parsed, validated gateway setup.
#[derive(Debug)]
pub struct Setup {
    pub config: GatewayConfig,
    pub creds: Credentials,
    pub resolver: StaticResolver,
    /// `--destination-addr` and `--endpoint-inbound-port`, checked; the resolver is
    /// built inside the runtime.
    pub destination: Option<(String, Option<u16>)>,
    /// `--destination-svc-name`, checked.
    pub destination_identity: Option<IdentityName>,
}

/// Parses every flag and loads the identity files.
pub fn parse(args: &GatewayArgs) -> Result<Setup, String> {
    let anchors = TrustAnchors::load(&args.identity_trust_anchors_file, SystemTime::now())
        .map_err(|e| format!("--identity-trust-anchors-file: {e}"))?;
    let chain = load_certs(&args.identity_cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&args.identity_key_file).map_err(|e| {
        format!(
            "--identity-key-file {}: no usable PEM private key ({e})",
            args.identity_key_file.display()
        )
    })?;
    // Session tickets keyed from the gateway's key: restarted, it resumes its links.
    let sessions = SessionState::with_ticket_secret(key.secret_der());
    let store = CertStore::with_cert(chain, key).map_err(|e| {
        format!(
            "--identity-cert-file {} / --identity-key-file {}: {e}",
            args.identity_cert_file.display(),
            args.identity_key_file.display()
        )
    })?;
    let me = store
        .identity()
        .ok_or("--identity-cert-file: the certificate carries no mesh identity")?;
    let trust_domain = TrustDomain::new(me.trust_domain()).map_err(|e| e.to_string())?;
    let default_peer = default_gateway_identity(&trust_domain).map_err(|e| e.to_string())?;

    let accept = if args.accept.is_empty() {
        vec![default_peer.clone()]
    } else {
        args.accept
            .iter()
            .map(|a| identity("--accept-identity", a))
            .collect::<Result<_, _>>()?
    };
    let mut config = GatewayConfig::new(args.quic_addr, accept);
    config.tuning.congestion = match args.congestion {
        CongestionArg::Bbr => Congestion::Bbr,
        CongestionArg::Cubic => Congestion::Cubic,
    };
    config.linkerd_entry = match (args.linkerd_entry_addr, args.linkerd_entry) {
        (Some(addr), _) => Some(LinkerdEntry::At(addr)),
        (None, true) => Some(LinkerdEntry::BesideQuic),
        (None, false) => None,
    };
    for link in &args.links {
        config.links.push(parse_link(link, &default_peer)?);
    }
    for route in &args.egress {
        config.egress.push(parse_egress(route)?);
    }
    for entry in &args.proxy_entries {
        let entry = parse_proxy_entry(entry)?;
        if config.proxy_entries.iter().any(|e| e.link == entry.link) {
            return Err(match &entry.link {
                Some(link) => format!("--proxy-entry: link {link:?} has two entries; give each link one LINK=ADDR"),
                None => "--proxy-entry: two entries for every link; give one ADDR (and LINK=ADDR for single links)"
                    .to_string(),
            });
        }
        config.proxy_entries.push(entry);
    }
    if args.kubernetes && !args.serve_exports && !args.watch_links {
        return Err("--kubernetes says where --serve-exports and --watch-links read the cluster: pass one of them, or drop --kubernetes".into());
    }
    let destination = match &args.destination_addr {
        Some(addr) => {
            parse_host_port("--destination-addr", addr)?;
            if args.endpoint_inbound_port == Some(0) {
                return Err("--endpoint-inbound-port: expected a port 1-65535, found 0".into());
            }
            Some((addr.clone(), args.endpoint_inbound_port))
        }
        None => None,
    };
    let destination_identity = args
        .destination_svc_name
        .as_deref()
        .map(|n| {
            n.parse::<IdentityName>().map_err(|e| {
                format!("--destination-svc-name {n:?}: expected a mesh identity such as linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local ({e})")
            })
        })
        .transpose()?;
    let mut resolver = StaticResolver::new();
    for t in &args.targets {
        let (authority, port, addr) = parse_target(t)?;
        resolver.insert(
            authority,
            port,
            Endpoint {
                addr,
                identity: None,
                app_port: None,
            },
        );
    }
    Ok(Setup {
        config,
        creds: Credentials {
            store,
            anchors,
            sessions,
        },
        resolver,
        destination,
        destination_identity,
    })
}

/// `ADDR` (every link) or `LINK=ADDR`.
pub fn parse_proxy_entry(value: &str) -> Result<ProxyEntry, String> {
    let Some((link, listen)) = value.split_once('=') else {
        let listen = value
            .parse()
            .map_err(|_| format!("--proxy-entry {value:?}: expected ADDR (a TCP IP:PORT) or LINK=ADDR"))?;
        return Ok(ProxyEntry { listen, link: None });
    };
    if link.is_empty() || link.contains('.') || Authority::new(link).is_err() {
        return Err(format!(
            "--proxy-entry {value:?}: the link name {link:?} must be a DNS label, as in --link NAME=…"
        ));
    }
    Ok(ProxyEntry {
        listen: addr("--proxy-entry", value, listen)?,
        link: Some(link.to_owned()),
    })
}

/// `HOST:PORT` (a name or an IP, and a port 1-65535).
pub fn parse_host_port(flag: &str, value: &str) -> Result<(), String> {
    let bad = || format!("{flag} {value:?}: expected HOST:PORT (e.g. 127.0.0.1:8086)");
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 && !host.is_empty() && !host.contains('/') => Ok(()),
        _ => Err(bad()),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let err = |e: &dyn std::fmt::Display| format!("--identity-cert-file {}: {e}", path.display());
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    if chain.is_empty() {
        return Err(err(&"no CERTIFICATE in the file"));
    }
    Ok(chain)
}

fn identity(flag: &str, value: &str) -> Result<IdentityName, String> {
    value
        .parse()
        .map_err(|e| format!("{flag} {value:?}: not a mesh identity ({e})"))
}

fn addr(flag: &str, whole: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} {whole:?}: {value:?} is not an IP:PORT address"))
}

/// `NAME=ADDR[@IDENTITY]`.
pub fn parse_link(value: &str, default_identity: &IdentityName) -> Result<LinkSpec, String> {
    let (name, rest) = value
        .split_once('=')
        .ok_or_else(|| format!("--link {value:?}: expected NAME=ADDR[@IDENTITY]"))?;
    if name.is_empty() || Authority::new(name).is_err() || name.contains('.') {
        return Err(format!(
            "--link {value:?}: the cluster name {name:?} must be a DNS label (lowercase letters, digits, '-')"
        ));
    }
    let (address, id) = match rest.split_once('@') {
        Some((a, i)) => (a, identity("--link", i)?),
        None => (rest, default_identity.clone()),
    };
    Ok(LinkSpec {
        name: name.to_owned(),
        addr: addr("--link", value, address)?,
        identity: id,
    })
}

/// `LISTEN=LINK/AUTHORITY:PORT`.
pub fn parse_egress(value: &str) -> Result<EgressRoute, String> {
    let shape = || format!("--egress {value:?}: expected LISTEN=LINK/AUTHORITY:PORT");
    let (listen, rest) = value.split_once('=').ok_or_else(shape)?;
    let (link, target) = rest.split_once('/').ok_or_else(shape)?;
    let (authority, port) = authority_port("--egress", value, target)?;
    Ok(EgressRoute {
        listen: addr("--egress", value, listen)?,
        link: link.to_owned(),
        target: Target {
            authority,
            port,
            protocol: Protocol::Opaque,
            identity: None,
            endpoint: None,
        },
    })
}

/// `AUTHORITY:PORT=ADDR`.
pub fn parse_target(value: &str) -> Result<(Authority, u16, SocketAddr), String> {
    let (target, address) = value
        .split_once('=')
        .ok_or_else(|| format!("--target {value:?}: expected AUTHORITY:PORT=ADDR"))?;
    let (authority, port) = authority_port("--target", value, target)?;
    Ok((authority, port, addr("--target", value, address)?))
}

fn authority_port(flag: &str, whole: &str, value: &str) -> Result<(Authority, u16), String> {
    let (authority, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{flag} {whole:?}: {value:?} needs a port (AUTHORITY:PORT)"))?;
    let authority = Authority::new(authority).map_err(|e| format!("{flag} {whole:?}: {e}"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{flag} {whole:?}: port {port:?} must be 1-65535"))?;
    Ok((authority, port))
}

/// Runs the gateway until SIGTERM or Ctrl-C.
pub fn gateway(g: &Global, args: &GatewayArgs) -> ExitCode {
    let setup = match parse(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    rt.block_on(async move {
        let resolver: Arc<dyn Resolve> = match &setup.destination {
            None => Arc::new(setup.resolver),
            Some((addr, inbound_port)) => match destination_resolver(
                addr,
                *inbound_port,
                setup.destination_identity.clone(),
                &setup.creds,
            ) {
                Ok(d) => Arc::new(Chain(vec![Arc::new(setup.resolver), Arc::new(d)])),
                Err(e) => {
                    eprintln!("error: --destination-addr: {e}");
                    return exit::code(exit::FAILURE);
                }
            },
        };
        let store = if args.serve_exports || args.watch_links {
            match cluster_store(g, args, &setup.creds).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::code(exit::FAILURE);
                }
            }
        } else {
            None
        };
        let catalog = store
            .clone()
            .filter(|_| args.serve_exports)
            .map(|s| Arc::new(StoreCatalog(s)) as Arc<dyn strait_gateway::Catalog>);
        let gw = match Gateway::bind(setup.config, setup.creds, resolver).await {
            Ok(gw) => match catalog {
                Some(c) => gw.with_catalog(c),
                None => gw,
            },
            Err(e) => {
                eprintln!("error: {e}");
                return exit::code(exit::FAILURE);
            }
        };
        let admin = match tokio::net::TcpListener::bind(args.admin_addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: could not bind the admin port on {}: {e}", args.admin_addr);
                return exit::code(exit::FAILURE);
            }
        };
        let bound = serde_json::json!({
            "quic": gw.quic_addr().to_string(),
            "admin": admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "egress": gw.egress_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "proxy_entries": gw.proxy_entry_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "linkerd_entry": gw.linkerd_entry_addr().map(|a| a.to_string()),
        });
        // `strait multicluster gateways` and `check` find the gateway here (published
        // before the announcement, so whoever reads that finds the file).
        let published = g.state_dir.as_deref().map(super::multicluster::gateway_file);
        if let Some(file) = &published {
            let _ = std::fs::write(file, serde_json::json!({"admin": bound["admin"]}).to_string());
        }
        println!("{bound}");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = gw.metrics();
        let mut admin_stop = stop_rx.clone();
        let admin_task = tokio::spawn(strait_gateway::admin::serve(admin, metrics, async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        }));
        let mut gw_stop = stop_rx;
        let running = match gw.start(async move {
            let _ = gw_stop.wait_for(|s| *s).await;
        }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::code(exit::FAILURE);
            }
        };
        let watcher = store
            .filter(|_| args.watch_links)
            .map(|s| tokio::spawn(super::gateway_links::follow(s, running.registry.clone())));
        terminated().await;
        if let Some(w) = watcher {
            w.abort();
        }
        let _ = stop_tx.send(true);
        running.done.await;
        let _ = admin_task.await;
        if let Some(file) = &published {
            let _ = std::fs::remove_file(file);
        }
        ExitCode::SUCCESS
    })
}

async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> IdentityName {
        default_gateway_identity(&TrustDomain::default()).unwrap()
    }

    #[test]
    fn links_parse_with_and_without_identity() {
        let l = parse_link("east=127.0.0.2:4143", &gw()).unwrap();
        assert_eq!(
            (l.name.as_str(), l.addr.port(), &l.identity),
            ("east", 4143, &gw())
        );
        let l = parse_link(
            "east=127.0.0.2:4143@gw.other.serviceaccount.identity.linkerd.cluster.local",
            &gw(),
        )
        .unwrap();
        assert_eq!(
            l.identity.as_str(),
            "gw.other.serviceaccount.identity.linkerd.cluster.local"
        );
    }

    #[test]
    fn bad_flags_say_what_was_expected() {
        let cases = [
            (
                parse_link("east", &gw()).unwrap_err(),
                "expected NAME=ADDR[@IDENTITY]",
            ),
            (
                parse_link("East=127.0.0.1:1", &gw()).unwrap_err(),
                "must be a DNS label",
            ),
            (
                parse_link("east=nowhere", &gw()).unwrap_err(),
                "is not an IP:PORT address",
            ),
            (
                parse_link("east=127.0.0.1:1@bogus", &gw()).unwrap_err(),
                "not a mesh identity",
            ),
            (
                parse_egress("127.0.0.1:1=east").unwrap_err(),
                "expected LISTEN=LINK/AUTHORITY:PORT",
            ),
            (
                parse_egress("127.0.0.1:1=east/web.default").unwrap_err(),
                "needs a port",
            ),
            (
                parse_egress("127.0.0.1:1=east/web:0").unwrap_err(),
                "must be 1-65535",
            ),
            (
                parse_egress("127.0.0.1:1=east/Web:80").unwrap_err(),
                "only lowercase",
            ),
            (
                parse_target("web:80").unwrap_err(),
                "expected AUTHORITY:PORT=ADDR",
            ),
            (parse_target("web:80=x").unwrap_err(), "is not an IP:PORT address"),
            (
                parse_proxy_entry("localhost:4180").unwrap_err(),
                "expected ADDR (a TCP IP:PORT) or LINK=ADDR",
            ),
            (
                parse_proxy_entry("East=127.0.0.1:4180").unwrap_err(),
                "must be a DNS label",
            ),
            (
                parse_proxy_entry("east=localhost:4180").unwrap_err(),
                "is not an IP:PORT address",
            ),
            (
                parse_host_port("--destination-addr", "127.0.0.1").unwrap_err(),
                "--destination-addr \"127.0.0.1\": expected HOST:PORT",
            ),
            (
                parse_host_port("--destination-addr", "127.0.0.1:0").unwrap_err(),
                "expected HOST:PORT",
            ),
        ];
        let e = parse_proxy_entry("east=127.0.0.1:4180").unwrap();
        assert_eq!((e.link.as_deref(), e.listen.port()), (Some("east"), 4180));
        let e = parse_proxy_entry("127.0.0.1:4180").unwrap();
        assert_eq!((e.link, e.listen.port()), (None, 4180));
        assert!(parse_host_port("--destination-addr", "controller.linkerd.svc:8086").is_ok());
        for (err, expected) in cases {
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
        let r = parse_egress("127.0.0.1:15001=east/web.default.svc.cluster.local:8080").unwrap();
        assert_eq!((r.link.as_str(), r.target.port), ("east", 8080));
        let (a, p, addr) = parse_target("web.default.svc.cluster.local:80=127.0.0.1:8080").unwrap();
        assert_eq!(
            (a.as_str(), p, addr.port()),
            ("web.default.svc.cluster.local", 80, 8080)
        );
    }
}
