//! A running gateway: one QUIC endpoint that dials every link (configured, or set at
//! runtime through [`Running::registry`]) and accepts links from remote gateways, egress
//! listeners that relay local TCP connections over links, proxy entries where local
//! proxies open streams on a link ([`crate::entry`]), and the ingress role that delivers
//! remote streams to local endpoints, and optionally Linkerd's gateway entry on TCP
//! ([`crate::linkerd_entry`]) for stock proxies.
//!
//! [`Gateway::bind`] binds every socket first (port 0 works, for tests) and
//! reports the addresses; [`Gateway::run`] serves until the shutdown future
//! completes, then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use quinn::{Connection, Endpoint, VarInt};
use strait_identity::{IdentityName, NameError, TrustDomain};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::catalog::{self, Catalog};
use crate::entry::{self, ProxyEntry};
use crate::link::{LinkHandle, LinkSpec};
use crate::linkerd_entry;
use crate::links::Links;
use crate::metrics::Metrics;
use crate::proto::header::{self, RefusalReason, Reply, Request, Target};
use crate::proto::link::LinkConfig;
use crate::relay::{self, Downstream, RelayError};
use crate::resolve::Resolve;
use crate::tls::{self, Credentials, TlsError};

/// Service account and namespace of Linkerd's gateway.
pub const GATEWAY_SERVICE_ACCOUNT: &str = "linkerd-gateway";
/// Namespace of Linkerd's multicluster components.
pub const GATEWAY_NAMESPACE: &str = "linkerd-multicluster";

/// The default gateway identity in `trust_domain`:
/// `linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.<td>`.
pub fn default_gateway_identity(trust_domain: &TrustDomain) -> Result<IdentityName, NameError> {
    trust_domain.identity(GATEWAY_SERVICE_ACCOUNT, GATEWAY_NAMESPACE)
}

/// Congestion control of the link's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// BBR: keeps one shared window full under random loss. The default, because a
    /// link multiplexes every cross-cluster flow onto one window: in `bench gateway`
    /// (100 request flows, 1% loss of single packets each way) it carried 1.6–2.8×
    /// cubic's request rate, mostly at a lower p99, for 0.7–1.2× cubic's single-flow
    /// throughput on clean loopback (BENCHMARKS.md has the figures).
    Bbr,
    /// Cubic: best single-flow throughput on a clean path.
    Cubic,
}

/// QUIC transport tuning (figures measured on this project's machines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Congestion controller.
    pub congestion: Congestion,
    /// QUIC keep-alive (PING) interval.
    pub keep_alive: Duration,
    /// Idle timeout after which quinn declares a silent connection dead.
    pub idle_timeout: Duration,
    /// UDP socket send and receive buffer size (capped by the kernel's
    /// `net.core.{r,w}mem_max` without CAP_NET_ADMIN). At least the connection window:
    /// a receiver that falls behind then holds back its peer by flow control, where a
    /// smaller buffer drops packets the kernel counts nowhere quinn sees.
    pub socket_buffer: usize,
    /// Per-stream receive window (TCP's default autotuning stops at 6 MiB per connection).
    pub stream_window: u32,
    /// Per-connection receive and send window.
    pub connection_window: u32,
    /// Concurrent streams a peer may open.
    pub max_streams: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            congestion: Congestion::Bbr,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            socket_buffer: 16 << 20,
            stream_window: 4 << 20,
            connection_window: 8 << 20,
            max_streams: 10_000,
        }
    }
}

/// A local TCP listener whose connections go to one target over one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRoute {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The link's name.
    pub link: String,
    /// Where the remote gateway delivers.
    pub target: Target,
}

/// Where Linkerd's mTLS gateway entry listens (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkerdEntry {
    /// On the QUIC socket's IP and port (4143/tcp beside 4143/udp; with port 0, the
    /// port the QUIC socket was given).
    BesideQuic,
    /// Elsewhere.
    At(SocketAddr),
}

/// A gateway's configuration, parsed and validated before anything binds.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The QUIC (UDP) address links are accepted on and dialed from.
    pub quic_addr: SocketAddr,
    /// Links to remote gateways.
    pub links: Vec<LinkSpec>,
    /// Gateway identities accepted from remote gateways.
    pub accept: Vec<IdentityName>,
    /// Egress listeners.
    pub egress: Vec<EgressRoute>,
    /// Proxy entries: one for every link (requests name theirs), and at most one per
    /// link for proxies of the version before.
    pub proxy_entries: Vec<ProxyEntry>,
    /// Linkerd's gateway entry for stock proxies (TCP, mTLS, transport header), if any.
    pub linkerd_entry: Option<LinkerdEntry>,
    /// Link timing.
    pub link: LinkConfig,
    /// QUIC tuning.
    pub tuning: Tuning,
    /// How long an egress connection waits for its link to be up.
    pub open_timeout: Duration,
    /// How long the ingress waits to connect to a local endpoint.
    pub connect_timeout: Duration,
}

impl GatewayConfig {
    /// A config listening on `quic_addr` with default timing and no links.
    pub fn new(quic_addr: SocketAddr, accept: Vec<IdentityName>) -> Self {
        GatewayConfig {
            quic_addr,
            links: Vec::new(),
            accept,
            egress: Vec::new(),
            proxy_entries: Vec::new(),
            linkerd_entry: None,
            link: LinkConfig::default(),
            tuning: Tuning::default(),
            open_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A socket could not be bound.
    #[error("could not bind {what} on {addr}: {source} (is the address free and local?)")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An egress route or proxy entry names a link that is not configured.
    #[error("{what} {listen} names link {link:?}, which is not configured (links: {known})")]
    UnknownLink {
        /// `egress` or `proxy entry`.
        what: &'static str,
        /// The route's listener.
        listen: SocketAddr,
        /// The missing link.
        link: String,
        /// The links that exist.
        known: String,
    },
    /// Two links have the same name.
    #[error("link {0:?} is configured twice")]
    DuplicateLink(String),
}

/// A bound, not yet running gateway.
pub struct Gateway {
    config: GatewayConfig,
    creds: Credentials,
    endpoint: Endpoint,
    egress: Vec<(EgressRoute, TcpListener)>,
    entries: Vec<(ProxyEntry, TcpListener)>,
    linkerd_entry: Option<TcpListener>,
    resolver: Arc<dyn Resolve>,
    catalog: Option<Arc<dyn Catalog>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates the config, builds TLS and binds every socket.
    pub async fn bind(
        config: GatewayConfig,
        creds: Credentials,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, GatewayError> {
        for (i, link) in config.links.iter().enumerate() {
            if config.links[..i].iter().any(|l| l.name == link.name) {
                return Err(GatewayError::DuplicateLink(link.name.clone()));
            }
        }
        let routes = config.egress.iter().map(|r| ("egress", r.listen, &r.link));
        let entries = config
            .proxy_entries
            .iter()
            .filter_map(|e| Some(("proxy entry", e.listen, e.link.as_ref()?)));
        for (what, listen, link) in routes.chain(entries) {
            if !config.links.iter().any(|l| &l.name == link) {
                return Err(GatewayError::UnknownLink {
                    what,
                    listen,
                    link: link.clone(),
                    known: config
                        .links
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let server = tls::quic_server_config(&creds, config.accept.clone())?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(transport(&config.tuning));
        let (socket, beside) = bind_link_socket(&config).await?;
        let endpoint = Endpoint::new(
            endpoint_config(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| GatewayError::Bind {
            what: "the QUIC link socket",
            addr: config.quic_addr,
            source,
        })?;
        let mut egress = Vec::new();
        for route in &config.egress {
            let listener = TcpListener::bind(route.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    what: "an egress listener",
                    addr: route.listen,
                    source,
                })?;
            egress.push((route.clone(), listener));
        }
        let mut entries = Vec::new();
        for entry in &config.proxy_entries {
            let listener = TcpListener::bind(entry.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    what: "a proxy entry",
                    addr: entry.listen,
                    source,
                })?;
            entries.push((entry.clone(), listener));
        }
        let linkerd_entry = match (config.linkerd_entry, beside) {
            (None, _) => None,
            (Some(LinkerdEntry::BesideQuic), beside) => beside,
            (Some(LinkerdEntry::At(addr)), _) => Some(bind_linkerd_entry(addr).await?),
        };
        let mut metrics = Metrics::default();
        metrics.inbound.resumed = creds.sessions.accepted.clone();
        let metrics = Arc::new(metrics);
        Ok(Gateway {
            config,
            creds,
            endpoint,
            egress,
            entries,
            linkerd_entry,
            resolver,
            catalog: None,
            metrics,
        })
    }

    /// Serves `catalog` to linked gateways' `watch` streams (their clusters' mirrors
    /// read this cluster's Services through the link). Without one, watches are
    /// refused as `not-served`.
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or(self.config.quic_addr)
    }

    /// The bound egress addresses, in config order.
    pub fn egress_addrs(&self) -> Vec<SocketAddr> {
        self.egress
            .iter()
            .map(|(r, l)| l.local_addr().unwrap_or(r.listen))
            .collect()
    }

    /// The bound proxy-entry addresses, in config order.
    pub fn proxy_entry_addrs(&self) -> Vec<SocketAddr> {
        self.entries
            .iter()
            .map(|(e, l)| l.local_addr().unwrap_or(e.listen))
            .collect()
    }

    /// The bound address of Linkerd's gateway entry, if configured.
    pub fn linkerd_entry_addr(&self) -> Option<SocketAddr> {
        self.linkerd_entry.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The gateway's metrics (for the admin server).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The QUIC endpoint (e.g. to rebind it to a new socket: migration).
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// Starts every link, the ingress and the egress listeners; returns
    /// handles on the links and a future that completes once `shutdown` has
    /// fired and everything drained.
    pub fn start(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Running, GatewayError> {
        let Gateway {
            config,
            creds,
            endpoint,
            egress,
            entries,
            linkerd_entry,
            resolver,
            catalog,
            metrics,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let registry = Links::new(
            endpoint.clone(),
            creds.clone(),
            transport(&config.tuning),
            config.link.clone(),
            metrics.clone(),
        );

        let mut tasks = JoinSet::new();
        let mut links = Vec::new();
        for spec in &config.links {
            links.push(registry.add_configured(spec.clone())?);
        }
        for (route, listener) in egress {
            let link = registry
                .get(&route.link)
                .expect("routes were checked against links in bind");
            tasks.spawn(serve_egress(
                listener,
                link,
                route.target,
                config.open_timeout,
                stop_rx.clone(),
            ));
        }
        for (entry, listener) in entries {
            let route = match &entry.link {
                Some(name) => entry::Route::Link(
                    registry
                        .get(name)
                        .expect("entries were checked against links in bind"),
                ),
                None => entry::Route::Named(registry.clone()),
            };
            tasks.spawn(entry::serve(
                listener,
                route,
                config.open_timeout,
                config.link.drain_timeout,
                stop_rx.clone(),
            ));
        }
        if let Some(listener) = linkerd_entry {
            let entry = linkerd_entry::Entry {
                acceptor: linkerd_entry::acceptor(&creds.store, &creds.anchors),
                connector: Arc::new(strait_proxy::client::Connector::new(
                    &creds.store,
                    &creds.anchors,
                    config.connect_timeout,
                )),
                resolver: resolver.clone(),
                metrics: metrics.entry.clone(),
            };
            tasks.spawn(linkerd_entry::serve(
                listener,
                entry,
                config.link.drain_timeout,
                stop_rx.clone(),
            ));
        }
        tasks.spawn(serve_ingress(
            endpoint.clone(),
            IngressSettings {
                admission: tls::PeerVerifier::new(&creds.anchors, config.accept.clone())?,
                resolver,
                catalog: catalog::Server::new(catalog),
                metrics: metrics.clone(),
                connect_timeout: config.connect_timeout,
                drain: config.link.drain_timeout,
            },
            stop_rx.clone(),
        ));
        let drained = registry.clone();
        let done = async move {
            shutdown.await;
            // From here on, new link attempts go unanswered instead of refused. A linking
            // gateway offers one of its session tickets with every attempt and spends it
            // either way: refused, its attempts during the drain would use up its tickets
            // and the re-link to a successor on this address would need a full handshake.
            // Unanswered, its pending attempt completes with the successor and resumes.
            endpoint.set_server_config(None);
            let _ = stop_tx.send(true);
            drained.shutdown().await;
            while tasks.join_next().await.is_some() {}
            endpoint.close(VarInt::from_u32(0), b"gateway shutting down");
            endpoint.wait_idle().await;
        };
        Ok(Running {
            links,
            registry,
            metrics,
            done: Box::pin(done),
        })
    }
}

/// Lets the connections of an entry that stopped accepting finish for up to `grace` (the
/// links' drain period), then tells those still open to stop through `cut` (a relay then
/// ends on its error path, resetting both sides, where an aborted one would end them as
/// if complete), and a second later closes what remains, so shutdown always ends.
pub(crate) async fn drain_connections(
    mut conns: JoinSet<()>,
    grace: Duration,
    cut: watch::Sender<bool>,
    what: &str,
) {
    let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(
            open = conns.len(),
            ?grace,
            "{what}: the drain period is over; closing the connections still open"
        );
        cut.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        conns.shutdown().await;
    }
}

/// Completes once `signal` is set (a stop or a cut), or its sender is gone. Owning its
/// receiver, it holds no borrow of the watch across a `select!`.
pub(crate) async fn until_set(mut signal: watch::Receiver<bool>) {
    let _ = signal.wait_for(|s| *s).await;
}

/// A started gateway.
pub struct Running {
    /// The configured links, in config order.
    pub links: Vec<LinkHandle>,
    /// Every link by name, configured or set at runtime ([`Links::set_watched`]).
    pub registry: Links,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// Completes after shutdown has drained everything. Must be polled (e.g.
    /// spawned) for shutdown to proceed.
    pub done: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

/// The largest UDP payload path MTU discovery tries. quinn sends up to 10 packets per
/// GSO batch and the kernel refuses a batch over 64 KiB with EMSGSIZE, which quinn-udp
/// swallows: with 9000-byte jumbo packets every full batch was lost, black-hole detection
/// fell back to 1200 bytes, and the link ran at a third of its speed. A 6500-byte packet
/// fits ten to a batch, and on a 9000-byte network it carries 4.5× a 1452-byte one.
pub const MAX_UDP_PAYLOAD: u16 = 6500;
/// Packets per GSO batch in quinn (`MAX_TRANSMIT_SEGMENTS`).
const QUINN_GSO_SEGMENTS: usize = 10;
/// The most UDP payload one send may carry over IPv4 (65535 less IP and UDP headers).
const MAX_GSO_BYTES: usize = 65_507;
const _: () = assert!(MAX_UDP_PAYLOAD as usize * QUINN_GSO_SEGMENTS <= MAX_GSO_BYTES);

fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    let _ = config.max_udp_payload_size(MAX_UDP_PAYLOAD);
    config
}

fn transport(t: &Tuning) -> Arc<quinn::TransportConfig> {
    let mut c = quinn::TransportConfig::default();
    c.keep_alive_interval(Some(t.keep_alive));
    c.max_idle_timeout(quinn::IdleTimeout::try_from(t.idle_timeout).ok());
    c.stream_receive_window(VarInt::from_u32(t.stream_window));
    c.receive_window(VarInt::from_u32(t.connection_window));
    c.send_window(u64::from(t.connection_window));
    c.max_concurrent_bidi_streams(VarInt::from_u32(t.max_streams));
    c.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Round-robin between streams with data to send (quinn's default, kept on purpose).
    // In-order sending (`false`) was tried against the lockstep of many concurrent answers,
    // but quinn then sends one stream's whole buffer before any other stream's: in `bench
    // gateway` a bulk transfer starved the link's probe streams until the link was abandoned.
    c.send_fairness(true);
    // Packets start at 1200 bytes and grow to what the path carries (1452 on a 1500-byte
    // Ethernet path, MAX_UDP_PAYLOAD on loopback or jumbo frames). A burst of losses of
    // large packets only (a receiver that fell behind looks the same as a black hole) drops
    // back to 1200: discovery starts again after 1 s, not quinn's 60 s.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    mtu.black_hole_cooldown(Duration::from_secs(1));
    c.mtu_discovery_config(Some(mtu));
    match t.congestion {
        Congestion::Bbr => c.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
        Congestion::Cubic => {
            c.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
    };
    Arc::new(c)
}

/// The link's UDP socket and, for [`LinkerdEntry::BesideQuic`], the TCP listener on the
/// same port. With port 0 the kernel picks the UDP port, which another socket may hold on
/// TCP: a few other ports are tried before giving up.
async fn bind_link_socket(
    config: &GatewayConfig,
) -> Result<(std::net::UdpSocket, Option<TcpListener>), GatewayError> {
    let udp = |addr| {
        udp_socket(addr, config.tuning.socket_buffer).map_err(|source| GatewayError::Bind {
            what: "the QUIC link socket",
            addr,
            source,
        })
    };
    if config.linkerd_entry != Some(LinkerdEntry::BesideQuic) {
        return Ok((udp(config.quic_addr)?, None));
    }
    let mut tries = if config.quic_addr.port() == 0 { 16 } else { 1 };
    loop {
        let socket = udp(config.quic_addr)?;
        let addr = socket.local_addr().unwrap_or(config.quic_addr);
        match bind_linkerd_entry(addr).await {
            Ok(listener) => return Ok((socket, Some(listener))),
            Err(GatewayError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && tries > 1 =>
            {
                tries -= 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn bind_linkerd_entry(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind {
            what: "Linkerd's gateway entry (TCP)",
            addr,
            source,
        })
}

fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps these at net.core.{r,w}mem_max (often 200 KiB–4 MiB, where a
    // fast link drops packets); with CAP_NET_ADMIN the FORCE options go past the cap.
    if !force_buffer(&socket, libc::SO_RCVBUFFORCE, buffer) {
        let _ = socket.set_recv_buffer_size(buffer);
    }
    if !force_buffer(&socket, libc::SO_SNDBUFFORCE, buffer) {
        let _ = socket.set_send_buffer_size(buffer);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Sets a socket buffer past `net.core.*mem_max` (needs CAP_NET_ADMIN); false if refused.
fn force_buffer(socket: &socket2::Socket, option: libc::c_int, size: usize) -> bool {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open for the call (borrowed from `socket`), and the
    // option value is a c_int that lives across the call, with its exact length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Makes a new UDP socket on `addr` with the gateway's buffer sizes, e.g. to
/// [`Endpoint::rebind`] a gateway whose address changed.
pub fn link_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    udp_socket(addr, Tuning::default().socket_buffer)
}

async fn serve_egress(
    listener: TcpListener,
    link: LinkHandle,
    target: Target,
    open_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(egress_conn(tcp, peer, link.clone(), target.clone(), open_timeout));
                }
                Err(e) => tracing::warn!(error = %e, "egress accept failed"),
            },
            Some(_) = conns.join_next() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Connections in flight finish on their own (the link drains for them).
    while conns.join_next().await.is_some() {}
}

async fn egress_conn(tcp: TcpStream, peer: SocketAddr, link: LinkHandle, target: Target, timeout: Duration) {
    let metrics = link.metrics().clone();
    let (send, recv) = match link.open(&target, timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, %target, error = %e, "could not relay a connection");
            return;
        }
    };
    metrics.streams_open.fetch_add(1, Ordering::Relaxed);
    // The link's own drain ends this relay (its connection closes at the deadline).
    let result = relay::relay(
        tcp,
        send,
        recv,
        Downstream::AwaitReply,
        metrics.bytes.clone(),
        std::future::pending(),
    )
    .await;
    metrics.streams_open.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(_) => {}
        Err(RelayError::Refused { reason, message }) => {
            metrics.refusals.add(reason);
            tracing::info!(%peer, %target, link = %link.spec().name, %reason, %message, "remote gateway refused the stream");
        }
        Err(e) => tracing::debug!(%peer, %target, error = %e, "egress relay ended with an error"),
    }
}

async fn serve_ingress(endpoint: Endpoint, settings: IngressSettings, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    let (conn_stop_tx, conn_stop) = watch::channel(false);
    let settings = Arc::new(settings);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    conns.spawn(ingress_conn(incoming, settings.clone(), conn_stop.clone()));
                }
                None => break,
            },
            Some(_) = conns.join_next() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = conn_stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}

/// What every ingress connection shares.
struct IngressSettings {
    admission: Arc<tls::PeerVerifier>,
    resolver: Arc<dyn Resolve>,
    catalog: catalog::Server,
    metrics: Arc<Metrics>,
    connect_timeout: Duration,
    /// How long relayed streams may take to finish once the gateway is shutting down.
    drain: Duration,
}

/// Serves one remote gateway's link. When the gateway shuts down, the link drains: its
/// relayed streams go on for up to the drain period, catalog watches end, and probes and
/// new watches are refused as `shutting-down`, which tells the remote gateway to stop
/// opening streams here and to link again (an open sent before it learned that is still
/// relayed); then the connection closes.
async fn ingress_conn(
    incoming: quinn::Incoming,
    settings: Arc<IngressSettings>,
    stop: watch::Receiver<bool>,
) {
    let IngressSettings {
        admission, metrics, ..
    } = &*settings;
    let remote = incoming.remote_address();
    let conn: Connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "refused a link from a remote gateway");
            return;
        }
    };
    // The handshake already verified a full handshake's chain; a resumed session carries
    // the chain verified when it was first made, perhaps by a predecessor with other
    // anchors or accepted identities, perhaps before the certificate expired: verify it
    // again, now, here.
    let peer = match tls::verify_linking_peer(&conn, admission) {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(%remote, peer = ?tls::quic_peer_identity(&conn).as_ref().map(|p| p.as_str()), %why, "refused a link from a remote gateway");
            conn.close(crate::link::CLOSE_REFUSED, b"gateway identity not accepted");
            return;
        }
    };
    tracing::info!(%remote, peer = %peer, "remote gateway linked");
    metrics.inbound.connections_open.fetch_add(1, Ordering::Relaxed);
    let mut streams = JoinSet::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(ingress_stream(send, recv, settings.clone(), stop.clone()));
                }
                Err(e) => {
                    tracing::info!(%remote, reason = %e, "remote gateway's link ended");
                    break;
                }
            },
            Some(_) = streams.join_next() => {
                if deadline.is_some() && streams.is_empty() {
                    break;
                }
            }
            _ = until_set(stop.clone()), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + settings.drain);
                tracing::info!(%remote, streams = streams.len(), "draining the remote gateway's link");
                if streams.is_empty() {
                    break;
                }
            }
            _ = crate::link::sleep_until(deadline) => {
                tracing::info!(%remote, streams = streams.len(), drain = ?settings.drain, "the drain period is over; closing the link's streams still open");
                // Closing the connection fails its streams, so each relay ends on its
                // error path (its TCP connection reset, not ended as if complete);
                // aborting a relay would end its stream and its TCP connection cleanly.
                conn.close(crate::link::CLOSE_SHUTDOWN, b"gateway shutting down");
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while streams.join_next().await.is_some() {}
                })
                .await;
                streams.shutdown().await;
                break;
            }
        }
    }
    if deadline.is_some() {
        conn.close(crate::link::CLOSE_SHUTDOWN, b"gateway shutting down");
    }
    while streams.join_next().await.is_some() {}
    metrics.inbound.connections_open.fetch_sub(1, Ordering::Relaxed);
}

async fn ingress_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    settings: Arc<IngressSettings>,
    stop: watch::Receiver<bool>,
) {
    let IngressSettings {
        resolver,
        catalog,
        metrics,
        connect_timeout,
        ..
    } = &*settings;
    let inbound = &metrics.inbound;
    let refuse = |reason: RefusalReason, message: String| {
        inbound.refusals.add(reason);
        let mut frame = Vec::with_capacity(64 + message.len());
        header::encode_reply(&Reply::Refused { reason, message }, header::VERSION, &mut frame);
        frame
    };
    let (request, pipelined) =
        match tokio::time::timeout(crate::entry::REQUEST_TIMEOUT, relay::read_request(&mut recv)).await {
            Ok(Ok(r)) => r,
            Ok(Err(RelayError::Header(e))) => {
                let frame = refuse(e.refusal(), e.to_string());
                finish_refusal(send, recv, frame).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "inbound stream ended before its header");
                return;
            }
            Err(_) => {
                let message = format!("no request within {:?}", crate::entry::REQUEST_TIMEOUT);
                finish_refusal(send, recv, refuse(RefusalReason::Malformed, message)).await;
                return;
            }
        };
    // Draining: probes and watches are refused, which tells the linking gateway to link
    // again; an open that was on its way before it learned that is still relayed (within
    // the drain period, like the streams already open), rather than failed.
    if *stop.borrow() && !matches!(request, Request::Open(_)) {
        let message = "this gateway is shutting down; link again".to_string();
        finish_refusal(send, recv, refuse(RefusalReason::ShuttingDown, message)).await;
        return;
    }
    let target = match request {
        Request::Probe => {
            inbound.probes.fetch_add(1, Ordering::Relaxed);
            let mut frame = Vec::with_capacity(16);
            header::encode_reply(&Reply::Accepted { app_port: None }, header::VERSION, &mut frame);
            let _ = send.write_all(&frame).await;
            let _ = send.finish();
            return;
        }
        Request::Watch(resource) => return catalog.serve(resource, send, recv, metrics, stop).await,
        Request::Open(target) => target,
    };
    let endpoint = match resolver.resolve(&target).await {
        Ok(e) => e,
        Err(e) => {
            let frame = refuse(e.refusal(), e.to_string());
            finish_refusal(send, recv, frame).await;
            return;
        }
    };
    if let (Some(expected), Some(actual)) = (&target.identity, &endpoint.identity)
        && expected != actual
    {
        let message = format!("{target} is served by {actual}, not the expected {expected}");
        let frame = refuse(RefusalReason::IdentityMismatch, message);
        finish_refusal(send, recv, frame).await;
        return;
    }
    let tcp = match tokio::time::timeout(*connect_timeout, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let message = format!("connecting to {target} at {}: {e}", endpoint.addr);
            let frame = refuse(RefusalReason::ConnectFailed, message);
            finish_refusal(send, recv, frame).await;
            return;
        }
        Err(_) => {
            let message = format!("connecting to {target} at {} timed out", endpoint.addr);
            let frame = refuse(RefusalReason::ConnectFailed, message);
            finish_refusal(send, recv, frame).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    if let Some(named) = target.endpoint {
        let counter = if named == endpoint.addr.ip() {
            &inbound.named_delivered
        } else {
            &inbound.named_elsewhere
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let mut frame = Vec::with_capacity(16);
    let accepted = Reply::Accepted {
        app_port: endpoint.app_port,
    };
    header::encode_reply(&accepted, header::VERSION, &mut frame);
    if send.write_all(&frame).await.is_err() {
        return;
    }
    inbound.streams_total.fetch_add(1, Ordering::Relaxed);
    inbound.streams_open.fetch_add(1, Ordering::Relaxed);
    let result = relay::relay(
        tcp,
        send,
        recv,
        Downstream::Ready(pipelined),
        inbound.bytes.clone(),
        // The drain deadline closes the connection, which ends this relay.
        std::future::pending(),
    )
    .await;
    inbound.streams_open.fetch_sub(1, Ordering::Relaxed);
    if let Err(e) = result {
        tracing::debug!(%target, error = %e, "inbound relay ended with an error");
    }
}

async fn finish_refusal(mut send: quinn::SendStream, mut recv: quinn::RecvStream, frame: Vec<u8>) {
    let _ = send.write_all(&frame).await;
    let _ = send.finish();
    // The opener's pipelined payload is not wanted.
    let _ = recv.stop(relay::RELAY_ERROR);
    // Keep the stream until the peer has the refusal, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}
