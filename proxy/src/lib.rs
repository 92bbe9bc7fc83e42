//! The sidecar data plane (`strait proxy`): inbound and outbound listeners, protocol
//! detection, mTLS, discovery, load balancing, metrics and the admin server.
//!
//! It speaks to the control plane only through the `linkerd2-proxy-api` gRPC services
//! (`Identity/Certify`, `Destination/Get`, `Destination/GetProfile`), so it runs against
//! Strait's controller or Linkerd's; it never links `kube`. With Linkerd's `*_SVC_NAME`
//! variables those connections are TLS verifying the service's identity under the trust
//! anchors: TLS without a client certificate to Identity, mTLS with the proxy's (renewed)
//! certificate to Destination and policy ([`control`]).
//!
//! # Processes: parse → build → spawn → drain
//! [`Config::from_source`] parses Linkerd's environment once; [`run`] binds every
//! listener, reports the bound addresses, certifies, serves, and on shutdown stops
//! accepting and drains in-flight work for the grace period.
//!
//! # Two ways to capture traffic
//! - **Transparent** ([`Capture::Transparent`], Linkerd's model): iptables in the pod's
//!   network namespace REDIRECT outbound connections to 4140 and inbound ones to 4143;
//!   each connection's real target is read with `SO_ORIGINAL_DST`. Meshed HTTP goes
//!   to the endpoint's own address over mTLS + HTTP/2 and the server pod's iptables hand
//!   it to its proxy, which reads the target port from `SO_ORIGINAL_DST` as well.
//! - **Explicit** ([`Capture::Explicit`], loopback runs without root): every pod has its
//!   own 127.x address; the application listens on `podIP:appPort`, its proxy on
//!   `podIP:4143/4140/4191`. The application sends to its proxy's 4140 and the target
//!   comes from the request: HTTP/1 absolute-form URI or `Host`, HTTP/2 `:authority`,
//!   and `CONNECT host:port` for opaque TCP. Nothing redirects at the server pod, so the
//!   client proxy dials the *peer proxy's* inbound port (the endpoint's opaque-transport
//!   port from discovery, else [`Config::peer_inbound_port`], 4143) and names the
//!   application port in Linkerd's opaque-transport header, `transport.l5d.io/v1`,
//!   negotiated by ALPN inside mTLS, with the session protocol (HTTP/2 for any HTTP, none
//!   for opaque) so the server proxy skips detection. The server proxy forwards to
//!   `app_ip:port`. That header is the same one Linkerd's proxies send to multicluster
//!   gateways (whose `name` field carries the target service), so the gateway accepts it
//!   on 4143/tcp with the same decoder ([`transport_header`]). Stock Linkerd refuses
//!   outbound connections to 127.0.0.0/8; explicit mode must allow them (transparent
//!   mode still refuses forwarding unknown targets to loopback).
//!
//! # Traffic policy
//! With `LINKERD2_PROXY_POLICY_SVC_ADDR`, outbound requests follow `OutboundPolicies`
//! (routes, filters, weighted backends, timeouts, retries, failure accrual) unless a
//! ServiceProfile with routes applies (its routes, timeouts, retries under its budget and
//! its response classes), and inbound connections and requests are authorized by
//! `InboundServerPolicies` ([`policy`]).
//!
//! HTTP/1.1 upgrades (WebSocket) travel as HTTP/1.1 on a connection of their own, inside
//! mTLS between proxies, and the two upgraded connections are joined after the 101.
//! HTTP/2 extended CONNECT (RFC 8441, WebSocket over HTTP/2) travels as one stream of the
//! proxies' HTTP/2 connection and reaches the application as extended CONNECT
//! ([`extended_connect`]); the streams are joined after a 2xx. Neither is ever retried.
//!
//! # Not in this version
//! Consumer routes, idle timeouts, inbound rate limits; gRPC classification from trailers
//! (only trailers-only responses and HTTP status classify); responses are counted at their
//! headers, not at the end of the body; HTTP/1.1 upgrades are not translated to extended
//! CONNECT (or back) for applications that speak only the other.
//!
//! # Pieces other crates reuse
//! [`discovery::Resolver`] (cached `Destination/Get` and `GetProfile` watches),
//! [`client::Connector`] (TCP + mTLS verifying the expected identity + transport header)
//! with [`client::ConnectPlan`], [`transport_header`], [`stream_header`] (the gateway's `strt`
//! header, which this crate speaks to a gateway's proxy entry), [`detect`], and [`metrics`].

pub mod admin;
pub mod balance;
pub mod client;
pub mod config;
pub mod control;
pub mod cork;
pub mod detect;
pub mod discovery;
pub mod extended_connect;
pub mod identity;
pub mod inbound;
pub mod io;
pub mod log;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod process;
pub mod server;
pub mod stream_header;
pub mod transport_header;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Capture, Config, ConfigError};
use strait_identity::{CertStore, ClientAuth};
use tokio::net::{TcpListener, TcpStream};

/// The original destination of a redirected connection (`SO_ORIGINAL_DST`). An IPv4
/// connection accepted on a dual-stack (`[::]`) listener was redirected by iptables, not
/// ip6tables: its local address is IPv4-mapped, and the IPv4 lookup answers.
pub fn original_dst(tcp: &TcpStream) -> std::io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(tcp);
    let addr = match tcp.local_addr()?.ip().to_canonical() {
        std::net::IpAddr::V4(_) => sock.original_dst_v4()?,
        std::net::IpAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket()
        .ok_or_else(|| std::io::Error::other("SO_ORIGINAL_DST returned a non-IP address"))
}

/// The addresses the proxy listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Inbound.
    pub inbound: SocketAddr,
    /// Outbound.
    pub outbound: SocketAddr,
    /// Admin.
    pub admin: SocketAddr,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}; is another process using the port?")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A control-plane address is unusable.
    #[error("{0}")]
    ControlPlane(#[from] control::ControlError),
    /// Key generation failed.
    #[error("{0}")]
    Identity(#[from] strait_identity::CsrError),
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { what, addr, source })
}

/// Warns about control-plane traffic that leaves the host in plaintext.
fn warn_plaintext(service: control::Service, addr: &str, tls: Option<&strait_identity::IdentityName>) {
    if tls.is_none() && !config::is_loopback(addr) {
        tracing::warn!(
            %service,
            %addr,
            "talking to the control plane in plaintext: set {} to the service's identity for TLS",
            service.name_var()
        );
    }
}

/// Inbound authorization: the policy controller's when configured (and this pod is named),
/// with the default inbound policy where it has none.
fn authorizer(
    cfg: &Config,
    policy: Option<policy::client::PolicyClient>,
    metrics: Arc<metrics::Registry>,
) -> Arc<dyn inbound::Authorize> {
    let default = policy::inbound::Defaults::new(
        &cfg.inbound_default_policy,
        &cfg.cluster_networks,
        cfg.require_identity_ports.clone(),
    );
    match (policy, &cfg.policy_workload) {
        (Some(p), Some(_)) => Arc::new(policy::authz::PolicyAuthorizer::new(p, default, metrics)),
        (Some(_), None) => {
            tracing::warn!(
                "{} is set but neither {} nor {} names this pod: inbound applies the default policy only",
                config::env::POLICY_SVC_ADDR,
                config::env::POLICY_WORKLOAD,
                config::env::DESTINATION_CONTEXT
            );
            Arc::new(policy::authz::StaticAuthorizer::new(default, metrics))
        }
        (None, _) if default.admit_all() => Arc::new(inbound::AllowAll),
        (None, _) => Arc::new(policy::authz::StaticAuthorizer::new(default, metrics)),
    }
}

/// Runs the proxy until `shutdown` resolves, then drains; `on_bound` hears the bound
/// addresses once every listener is open.
pub async fn run(
    cfg: Config,
    on_bound: impl FnOnce(Bound) + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let inbound_l = bind("inbound", cfg.inbound_addr).await?;
    let outbound_l = bind("outbound", cfg.outbound_addr).await?;
    let admin_l = bind("admin", cfg.admin_addr).await?;
    let local = |l: &TcpListener, a| l.local_addr().unwrap_or(a);
    let bound = Bound {
        inbound: local(&inbound_l, cfg.inbound_addr),
        outbound: local(&outbound_l, cfg.outbound_addr),
        admin: local(&admin_l, cfg.admin_addr),
    };

    let store = CertStore::new();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    // Identity: TLS without a client certificate; destination and policy: mTLS with the
    // proxy's certificate, once it has one.
    let proxy_cert = control::ClientCert::Proxy {
        store: store.clone(),
        ready: ready_rx.clone(),
    };
    let control = |service, addr: &str, tls: &Option<strait_identity::IdentityName>, cert| {
        warn_plaintext(service, addr, tls.as_ref());
        control::channel(service, addr, tls.clone(), &cfg.trust_anchors, cert)
    };
    let identity = identity::Identity::new(
        cfg.local_identity.clone(),
        cfg.token_file.clone(),
        control(
            control::Service::Identity,
            &cfg.identity_addr,
            &cfg.identity_tls,
            control::ClientCert::None,
        )?,
        store.clone(),
    )?;
    let metrics = Arc::new(metrics::Registry::with_retain_idle(cfg.metrics_retain_idle));
    let identity_task = tokio::spawn(identity.run(ready_tx, metrics.clone()));
    let resolver = discovery::Resolver::with_allow(
        control(
            control::Service::Destination,
            &cfg.destination_addr,
            &cfg.destination_tls,
            proxy_cert.clone(),
        )?,
        cfg.local_identity.namespace(),
        cfg.local_identity.service_account(),
        cfg.discovery_allow.clone(),
    );
    let mut connector = client::Connector::new(&store, &cfg.trust_anchors, cfg.connect_timeout)
        .with_keepalive(cfg.outbound_connect_keepalive);
    // The inbound side dials the application only, within its own connect timeout.
    let mut app_connector = client::Connector::new(&store, &cfg.trust_anchors, cfg.inbound_connect_timeout);
    if cfg.capture == config::Capture::Explicit {
        connector = connector.with_source(cfg.app_ip);
        app_connector = app_connector.with_source(cfg.app_ip);
    }
    let connector = Arc::new(connector);
    let policy = match &cfg.policy_addr {
        Some(addr) => Some(policy::client::PolicyClient::new(
            control(control::Service::Policy, addr, &cfg.policy_tls, proxy_cert)?,
            cfg.policy_workload.clone().unwrap_or_default(),
        )),
        None => None,
    };
    let outbound = outbound::Outbound::with_policy(
        outbound::OutboundConfig {
            capture: cfg.capture,
            detect_timeout: cfg.outbound_detect_timeout,
            request_timeout: cfg.request_timeout,
            peer_inbound_port: cfg.peer_inbound_port,
            limits: cfg.limits.clone(),
            own_addrs: vec![bound.inbound, bound.outbound, bound.admin],
            idle_timeout: cfg.outbound_idle_timeout,
            ingress: cfg.ingress,
        },
        resolver.clone(),
        connector.clone(),
        metrics.clone(),
        policy.clone(),
    );
    let server_tls = Arc::unwrap_or_clone(strait_identity::server_config(
        &store,
        &cfg.trust_anchors,
        ClientAuth::Optional,
    ));
    let admin_tls = Arc::new(server_tls.clone());
    let inbound = inbound::Inbound::new(
        inbound::InboundConfig {
            capture: cfg.capture,
            detect_timeout: cfg.detect_timeout,
            opaque_ports: cfg.inbound_opaque_ports.clone(),
            app_ip: cfg.app_ip,
            local_identity: cfg.local_identity.clone(),
            own_addrs: vec![bound.inbound, bound.outbound, bound.admin],
            limits: cfg.limits.clone(),
            keepalive: cfg.inbound_accept_keepalive,
        },
        server_tls,
        Arc::new(app_connector),
        metrics.clone(),
        authorizer(&cfg, policy, metrics.clone()),
        Some(resolver),
    );

    let (control, drain) = server::drain();
    let max = cfg.limits.max_connections;
    // `POST /shutdown` on the admin server, when enabled, starts the same drain as SIGTERM.
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
    {
        let admin_tls = admin::AdminTls {
            acceptor: tokio_rustls::TlsAcceptor::from(admin_tls),
            local_identity: cfg.local_identity.clone(),
        };
        let limits = cfg.limits.clone();
        let admin = admin::Admin {
            ready: ready_rx.clone(),
            metrics: metrics.clone(),
            shutdown: cfg.shutdown_endpoint.then(|| shutdown_tx.clone()),
        };
        tokio::spawn(server::accept_loop(
            admin_l,
            max,
            drain.clone(),
            "admin",
            move |tcp, _, d| admin::handle(tcp, admin.clone(), admin_tls.clone(), limits.clone(), d),
        ));
    }
    // Serve meshed traffic only with an identity: until then /ready says 503 and
    // connections wait in the listen backlog.
    let serving = {
        let drain = drain.clone();
        let mut ready = ready_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = ready.wait_for(|r| *r) => { if r.is_err() { return; } }
                _ = drain.signaled() => return,
            }
            tracing::info!(?bound, "identity ready; serving");
            let i = inbound.clone();
            let o = outbound.clone();
            tokio::join!(
                server::accept_loop(inbound_l, max, drain.clone(), "inbound", move |tcp, peer, d| {
                    i.clone().handle(tcp, peer, d)
                }),
                server::accept_loop(outbound_l, max, drain.clone(), "outbound", move |tcp, peer, d| {
                    o.clone().handle(tcp, peer, d)
                }),
            );
        })
    };
    drop(drain);
    tracing::info!(?bound, "proxy listening");
    on_bound(bound);

    tokio::select! {
        () = shutdown => {}
        _ = shutdown_rx.wait_for(|s| *s) => {}
    }
    drop(shutdown_tx);
    tracing::info!("shutting down: draining connections");
    let clean = control.drain(cfg.shutdown_grace).await;
    if !clean {
        tracing::warn!(grace = ?cfg.shutdown_grace, "connections still open after the grace period; closing them");
    }
    serving.abort();
    identity_task.abort();
    Ok(())
}
