//! The inbound side (4143): what peers send to this pod's application.
//!
//! accept → target port (`SO_ORIGINAL_DST`; opaque ports skip everything) → TLS? (a
//! ClientHello naming this proxy's identity is terminated: mTLS from a meshed peer, the
//! client identity authenticated; one naming another server, or none, is the
//! application's own TLS and passes through untouched) → transport header (ALPN
//! `transport.l5d.io/v1`: the target port and session protocol) → **authorization**
//! ([`Authorize`], the hook the traffic-policy work fills from `InboundServerPolicies`)
//! → detect → forward to the application on `app_ip:port`; HTTP/1 that came over HTTP/2
//! (`l5d-orig-proto`) goes out as HTTP/1 again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use strait_identity::IdentityName;
use strait_identity::rustls::ServerConfig;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::client::{ConnectPlan, Connector, HttpEndpoint, Io, ORIG_PROTO, RspBody, Wire};
use crate::config::{Capture, Limits, PortSet};
use crate::detect::{self, ClientHello, Protocol};
use crate::io::{CountingIo, PrefixedIo};
use crate::metrics::{Classified, HttpStats, Registry, labels};
use crate::server::Drain;
use crate::transport_header::{self, Decoded, SessionProtocol, TransportHeader};

/// The header carrying the caller's mTLS identity to the application.
pub const CLIENT_ID_HEADER: &str = "l5d-client-id";

/// What the inbound side knows about a connection when it decides whether to serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundConn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The application address the connection is for.
    pub target: SocketAddr,
    /// The authenticated client identity (mTLS), if any.
    pub client_id: Option<IdentityName>,
    /// Whether the connection was TLS-terminated here.
    pub tls: bool,
    /// The server name of a TLS connection passed through to the application (its
    /// ClientHello named another server than this proxy).
    pub sni: Option<String>,
    /// The policy authorizer's memo of this connection's last allowed request.
    pub memo: crate::policy::authz::AllowMemo,
}

/// Why a connection is refused.
#[derive(Debug, thiserror::Error)]
#[error("unauthorized connection from {client} to {target}: {reason}")]
pub struct Denied {
    /// The client identity, or `unauthenticated`.
    pub client: String,
    /// The target.
    pub target: SocketAddr,
    /// Which policy said no.
    pub reason: String,
}

/// Why an HTTP request is refused, and with which status (403, or 404 when the server's
/// routes do not cover it).
#[derive(Debug)]
pub struct RequestDenied {
    /// The status to answer with.
    pub status: http::StatusCode,
    /// Who was refused, where, and by which policy.
    pub denied: Denied,
}

/// Inbound authorization: [`AllowAll`] (like Linkerd's `all-unauthenticated` default), or
/// [`crate::policy::authz::PolicyAuthorizer`] fed by `InboundServerPolicies/WatchPort`.
///
/// Opaque connections are decided once, by [`Authorize::authorize`] (a refused one is
/// closed); HTTP connections are decided per request, by
/// [`Authorize::authorize_request`] (a refused request is answered 403).
pub trait Authorize: Send + Sync + 'static {
    /// Decides on a connection once its client identity and target are known.
    fn authorize(&self, conn: &InboundConn) -> Result<(), Denied>;

    /// Waits (bounded) until the policy of `port` is known.
    fn ready(&self, _port: u16) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// Decides on one HTTP request; by default as for its connection.
    fn authorize_request(&self, conn: &InboundConn, _req: &Request<Incoming>) -> Result<(), RequestDenied> {
        self.authorize(conn).map_err(|denied| RequestDenied {
            status: http::StatusCode::FORBIDDEN,
            denied,
        })
    }
}

/// Allows everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorize for AllowAll {
    fn authorize(&self, _conn: &InboundConn) -> Result<(), Denied> {
        Ok(())
    }
}

/// Settings of the inbound side.
#[derive(Clone, Debug)]
pub struct InboundConfig {
    /// Capture mode.
    pub capture: Capture,
    /// Protocol detection (and header) timeout.
    pub detect_timeout: Duration,
    /// Ports forwarded without detection.
    pub opaque_ports: PortSet,
    /// The application's IP.
    pub app_ip: std::net::IpAddr,
    /// This proxy's identity: only a ClientHello naming it is TLS-terminated here.
    pub local_identity: IdentityName,
    /// The proxy's own listeners, never a valid target (they would loop).
    pub own_addrs: Vec<SocketAddr>,
    /// Limits.
    pub limits: Limits,
    /// TCP keepalive of accepted connections (`LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE`).
    pub keepalive: Option<std::time::Duration>,
}

/// The header a client's proxy names the request's logical target in (Linkerd's).
pub const CANONICAL_DST_HEADER: &str = "l5d-dst-canonical";

/// The inbound proxy.
pub struct Inbound {
    cfg: InboundConfig,
    tls: tokio_rustls::TlsAcceptor,
    connector: Arc<Connector>,
    metrics: Arc<Registry>,
    authz: Arc<dyn Authorize>,
    apps: Mutex<HashMap<(u16, Wire), Arc<HttpEndpoint>>>,
    /// Where the ServiceProfiles of the names requests arrive for come from (their route
    /// series, `direction="inbound"`), when discovery is configured.
    profiles: Option<crate::discovery::Resolver>,
}

/// Most distinct names one connection's requests get route series for.
const MAX_PROFILES_PER_CONN: usize = 64;

/// How long a connection's first request for a name waits for the name's profile.
const PROFILE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a request names its logical target, as linkerd2-proxy's inbound side reads it
/// for profile discovery: `l5d-dst-canonical` (set by the client's proxy), else the
/// request's authority or `Host`.
fn logical_raw<B>(req: &Request<B>) -> Option<&str> {
    if let Some(v) = req.headers().get(CANONICAL_DST_HEADER) {
        return v.to_str().ok().map(str::trim);
    }
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// The logical name `raw` ([`logical_raw`]) names, when it is a name (an address names no
/// profile): lower case, port 80 when it gives none.
fn logical_name(raw: &str) -> Option<String> {
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, Some(p)),
        _ => (raw, None),
    };
    let host = host.trim_end_matches('.');
    let is_name = !host.is_empty()
        && host.parse::<std::net::IpAddr>().is_err()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    is_name.then(|| format!("{}:{}", host.to_ascii_lowercase(), port.unwrap_or("80")))
}

/// The answer to a refused request: its status with `l5d-proxy-error`, or gRPC's
/// `PERMISSION_DENIED` / `UNIMPLEMENTED` for gRPC requests.
fn refused_response(r: &RequestDenied, req: &Request<Incoming>) -> Response<RspBody> {
    let msg = r.denied.to_string();
    if crate::client::is_grpc(req.headers()) {
        let code = if r.status == http::StatusCode::NOT_FOUND {
            12
        } else {
            7
        };
        return crate::client::grpc_response(code, &msg);
    }
    let mut rsp = Response::new(Either::Right(http_body_util::Full::new(bytes::Bytes::from(
        format!("{msg}\n"),
    ))));
    *rsp.status_mut() = r.status;
    if let Ok(v) = http::HeaderValue::from_str(&msg) {
        rsp.headers_mut().insert(crate::client::PROXY_ERROR, v);
    }
    rsp
}

/// Why a connection was dropped before forwarding.
#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad transport header: {0}")]
    Header(String),
    #[error("no target port: explicit mode needs a transport header from a meshed peer")]
    NoTarget,
    #[error("target {0} is the proxy itself")]
    Loop(SocketAddr),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("application {0} unreachable: {1}")]
    App(SocketAddr, String),
}

impl Inbound {
    /// The inbound proxy; `server_tls` must be the mesh server config (client
    /// certificates optional), `connector` dials the application, and `profiles` (when
    /// discovery is configured) finds the ServiceProfiles of the names requests arrive
    /// for (their inbound route series).
    pub fn new(
        cfg: InboundConfig,
        mut server_tls: ServerConfig,
        connector: Arc<Connector>,
        metrics: Arc<Registry>,
        authz: Arc<dyn Authorize>,
        profiles: Option<crate::discovery::Resolver>,
    ) -> Arc<Self> {
        server_tls.alpn_protocols = vec![transport_header::ALPN.to_vec()];
        Arc::new(Self {
            cfg,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(server_tls)),
            connector,
            metrics,
            authz,
            apps: Mutex::new(HashMap::new()),
            profiles,
        })
    }

    /// Serves one accepted connection.
    pub async fn handle(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, drain: Drain) {
        if let Some(idle) = self.cfg.keepalive
            && let Err(e) = crate::io::set_keepalive(&tcp, idle)
        {
            tracing::debug!(%peer, error = %e, "cannot turn on TCP keepalive");
        }
        if let Err(e) = self.clone().serve(tcp, peer, drain).await {
            tracing::info!(%peer, error = %e, "inbound connection closed");
        }
    }

    fn app_client(&self, port: u16, wire: Wire) -> Arc<HttpEndpoint> {
        let mut apps = self.apps.lock().unwrap_or_else(PoisonError::into_inner);
        apps.entry((port, wire))
            .or_insert_with(|| {
                let plan = ConnectPlan {
                    addr: SocketAddr::new(self.cfg.app_ip, port),
                    tls: None,
                    header: None,
                    wire,
                    gateway: None,
                };
                Arc::new(HttpEndpoint::new(plan, self.connector.clone()))
            })
            .clone()
    }

    async fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        drain: Drain,
    ) -> Result<(), InboundError> {
        let orig_dst = match self.cfg.capture {
            Capture::Transparent => Some(crate::original_dst(&tcp)?),
            Capture::Explicit => None,
        };
        if let Some(dst) = orig_dst
            && self.cfg.opaque_ports.contains(dst.port())
        {
            // Skip-ports: no detection, no TLS termination (Linkerd forwards them as is).
            let conn = InboundConn {
                peer,
                target: SocketAddr::new(self.cfg.app_ip, dst.port()),
                client_id: None,
                tls: false,
                sni: None,
                memo: Default::default(),
            };
            self.authz.ready(dst.port()).await;
            self.authz.authorize(&conn)?;
            let io = CountingIo::new(tcp, self.metrics.tcp(Self::tcp_labels(&conn)));
            return self.forward_opaque(io, &conn).await;
        }
        let mut tcp = tcp;
        let mut buf = BytesMut::new();
        let started = tokio::time::Instant::now();
        let first = detect::read_and_detect(&mut tcp, &mut buf, true, self.cfg.detect_timeout).await?;
        if first != Protocol::Tls {
            let port = orig_dst.map(|d| d.port()).ok_or(InboundError::NoTarget)?;
            let conn = self.conn(peer, port, None, false)?;
            let io = PrefixedIo::new(buf, tcp);
            return self.after_authz(io, first, conn, drain).await;
        }
        // Only a ClientHello for this proxy is terminated (Linkerd's rule): another server
        // name, or none (clients dialling an address send none), is the application's own
        // TLS and goes to it untouched, as opaque TCP.
        let left = self.cfg.detect_timeout.saturating_sub(started.elapsed());
        let hello = detect::read_client_hello(&mut tcp, &mut buf, left).await?;
        let sni = match hello {
            ClientHello::Sni(name) if name.eq_ignore_ascii_case(self.cfg.local_identity.as_str()) => None,
            ClientHello::Sni(name) => Some(Some(name)),
            ClientHello::NoSni | ClientHello::NotHello | ClientHello::Incomplete => Some(None),
        };
        if let Some(sni) = sni {
            let port = orig_dst.map(|d| d.port()).ok_or(InboundError::NoTarget)?;
            let mut conn = self.conn(peer, port, None, false)?;
            conn.sni = sni;
            tracing::debug!(%peer, sni = ?conn.sni, "TLS for another server: passing it through");
            return self
                .after_authz(PrefixedIo::new(buf, tcp), Protocol::Opaque, conn, drain)
                .await;
        }
        let tls = tokio::time::timeout(
            self.cfg.detect_timeout,
            self.tls.accept(PrefixedIo::new(buf, tcp)),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (client_id, has_header) = {
            let c = tls.get_ref().1;
            (
                strait_identity::peer_identity(c),
                c.alpn_protocol() == Some(transport_header::ALPN),
            )
        };
        let mut tls = tls;
        let mut buf = BytesMut::new();
        let (port, session) = if has_header {
            let h = self.read_header(&mut tls, &mut buf).await?;
            (h.port, h.protocol)
        } else {
            (orig_dst.map(|d| d.port()).ok_or(InboundError::NoTarget)?, None)
        };
        let conn = self.conn(peer, port, client_id, true)?;
        let io = PrefixedIo::new(buf, tls);
        let proto = match session {
            Some(SessionProtocol::Http1) => Protocol::Http1,
            Some(SessionProtocol::Http2) => Protocol::Http2,
            None if has_header || self.cfg.opaque_ports.contains(port) => Protocol::Opaque,
            None => {
                let mut io = io;
                let mut more = BytesMut::new();
                let p = detect::read_and_detect(&mut io, &mut more, false, self.cfg.detect_timeout).await?;
                return self.after_authz(PrefixedIo::new(more, io), p, conn, drain).await;
            }
        };
        self.after_authz(io, proto, conn, drain).await
    }

    fn conn(
        &self,
        peer: SocketAddr,
        port: u16,
        client_id: Option<IdentityName>,
        tls: bool,
    ) -> Result<InboundConn, InboundError> {
        let target = SocketAddr::new(self.cfg.app_ip, port);
        if self
            .cfg
            .own_addrs
            .iter()
            .any(|a| a.port() == port && (a.ip() == target.ip() || a.ip().is_unspecified()))
        {
            return Err(InboundError::Loop(target));
        }
        let conn = InboundConn {
            peer,
            target,
            client_id,
            tls,
            sni: None,
            memo: Default::default(),
        };
        Ok(conn)
    }

    async fn read_header<I: Io>(
        &self,
        io: &mut I,
        buf: &mut BytesMut,
    ) -> Result<TransportHeader, InboundError> {
        let deadline = tokio::time::Instant::now() + self.cfg.detect_timeout;
        loop {
            match TransportHeader::decode(buf) {
                Decoded::Header(h, n) => {
                    let _ = buf.split_to(n);
                    return Ok(h);
                }
                Decoded::Invalid(e) => return Err(InboundError::Header(e)),
                Decoded::NeedMore => {}
            }
            buf.reserve(1024);
            match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
                Err(_) => return Err(InboundError::Header("timed out waiting for the header".into())),
                Ok(Ok(0)) => {
                    return Err(InboundError::Header(
                        "the peer closed before the header ended".into(),
                    ));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// The labels of a connection's metrics: `direction`, [`peer`], `target_addr`, and its
    /// TLS as Linkerd writes it (`tls="true",client_id=…` when terminated here,
    /// `tls="opaque",sni=…` when passed through, else `tls="no_identity"` with the reason).
    fn conn_labels(conn: &InboundConn, peer: Option<&str>) -> String {
        let target = conn.target.to_string();
        let id = conn.client_id.as_ref().map(|i| i.to_string());
        let mut pairs: Vec<(&str, &str)> = vec![("direction", "inbound")];
        if let Some(p) = peer {
            pairs.push(("peer", p));
        }
        pairs.push(("target_addr", &target));
        match (&id, conn.tls, &conn.sni) {
            (Some(id), _, _) => {
                pairs.push(("tls", "true"));
                pairs.push(("client_id", id));
            }
            (None, true, _) => {
                pairs.push(("tls", "true"));
                pairs.push(("client_id", ""));
            }
            (None, false, Some(sni)) => {
                pairs.push(("tls", "opaque"));
                pairs.push(("sni", sni));
            }
            (None, false, None) => {
                pairs.push(("tls", "no_identity"));
                pairs.push(("no_tls_reason", "no_tls_from_remote"));
            }
        }
        labels(&pairs)
    }

    fn tcp_labels(conn: &InboundConn) -> String {
        Self::conn_labels(conn, Some("src"))
    }

    async fn after_authz<I: Io>(
        self: Arc<Self>,
        io: I,
        proto: Protocol,
        conn: InboundConn,
        drain: Drain,
    ) -> Result<(), InboundError> {
        self.authz.ready(conn.target.port()).await;
        match proto {
            Protocol::Http1 | Protocol::Http2 => {
                let io = CountingIo::new(io, self.metrics.tcp(Self::tcp_labels(&conn)));
                self.serve_http(io, proto == Protocol::Http2, conn, drain).await;
                Ok(())
            }
            Protocol::Opaque | Protocol::Tls => {
                // A refused connection is closed before it is counted as open.
                self.authz.authorize(&conn)?;
                let io = CountingIo::new(io, self.metrics.tcp(Self::tcp_labels(&conn)));
                self.forward_opaque(io, &conn).await
            }
        }
    }

    async fn forward_opaque<I: Io>(&self, mut io: I, conn: &InboundConn) -> Result<(), InboundError> {
        let plan = ConnectPlan {
            addr: conn.target,
            tls: None,
            header: None,
            wire: Wire::Opaque,
            gateway: None,
        };
        let mut app = self
            .connector
            .connect(&plan)
            .await
            .map_err(|e| InboundError::App(conn.target, e.to_string()))?;
        let _ = tokio::io::copy_bidirectional(&mut io, &mut app).await;
        Ok(())
    }

    async fn serve_http<I: Io>(self: Arc<Self>, io: I, h2: bool, conn: InboundConn, drain: Drain) {
        let port = conn.target.port();
        let h1_app = self.app_client(port, Wire::Http1);
        let h2_app = self.app_client(port, Wire::Http2);
        let base = Self::conn_labels(&conn, None);
        let stats_cache: Arc<Mutex<HashMap<String, Arc<HttpStats>>>> = Arc::default();
        // The profiles of the names this connection's requests arrive for, held while it
        // lives (the resolver shares one watch per name between connections).
        // By the raw value requests name them with (see `logical_raw`); `None`: not a name.
        type Named = Option<(
            Arc<str>,
            Arc<crate::discovery::Watch<Option<crate::discovery::Profile>>>,
        )>;
        type Profiles = HashMap<String, Named>;
        let profiles: Arc<Mutex<Profiles>> = Arc::default();
        // Route series by name: their label strings are built once per connection.
        let series_cache: Arc<Mutex<HashMap<String, crate::metrics::RouteSeriesCache>>> = Arc::default();
        let resolver = self.profiles.clone();
        let metrics = self.metrics.clone();
        let authz = self.authz.clone();
        // Linkerd's inbound proxy tells the application who called: the client's mTLS
        // identity in `l5d-client-id`, and no such header at all from a client without
        // one (a value the client sent itself would be a forgery).
        let client_id = conn
            .client_id
            .as_ref()
            .and_then(|id| http::HeaderValue::from_str(id.as_ref()).ok());
        let conn = Arc::new(conn);
        let svc = move |mut req: Request<Incoming>| {
            match &client_id {
                Some(v) => {
                    req.headers_mut().insert(CLIENT_ID_HEADER, v.clone());
                }
                None => {
                    req.headers_mut().remove(CLIENT_ID_HEADER);
                }
            }
            let refused = authz.authorize_request(&conn, &req).err();
            let authority = req
                .uri()
                .authority()
                .map(|a| a.as_str())
                .or_else(|| {
                    req.headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                })
                .unwrap_or("");
            // Label strings are built once per authority and connection, not per request.
            let stats = {
                let mut c = stats_cache.lock().unwrap_or_else(PoisonError::into_inner);
                match c.get(authority) {
                    Some(s) => s.clone(),
                    None => {
                        let s = metrics.http(format!("{},{base}", labels(&[("authority", authority)])));
                        c.insert(authority.to_string(), s.clone());
                        s
                    }
                }
            };
            let app = if req.version() != http::Version::HTTP_2 || req.headers().contains_key(ORIG_PROTO) {
                h1_app.clone()
            } else {
                h2_app.clone()
            };
            // The profile of the target the request names. A meshed peer's connection
            // (long-lived, multiplexed) waits briefly on its first request for a name for
            // the profile's first answer, as Linkerd's inbound side discovers it before
            // routing; other clients' requests count on routes once it is in.
            let profile = resolver.as_ref().and_then(|r| {
                let raw = logical_raw(&req)?;
                let mut p = profiles.lock().unwrap_or_else(PoisonError::into_inner);
                match p.get(raw) {
                    Some(known) => known.clone().map(|(n, w)| (n, w, false)),
                    None if p.len() < MAX_PROFILES_PER_CONN => {
                        let named = logical_name(raw).map(|n| {
                            let w = r.profile(&n);
                            (Arc::<str>::from(n), w)
                        });
                        p.insert(raw.to_string(), named.clone());
                        named.map(|(n, w)| (n, w, conn.client_id.is_some()))
                    }
                    None => None,
                }
            });
            let metrics = metrics.clone();
            let series_cache = series_cache.clone();
            async move {
                let start = Instant::now();
                // The ServiceProfile route the request takes, when the profile has routes:
                // its series, and its response classes for every series of it.
                let route = match profile {
                    None => None,
                    Some((name, watch, wait)) => {
                        if wait && watch.with(Option::is_none) {
                            let mut rx = watch.subscribe();
                            let _ = tokio::time::timeout(PROFILE_WAIT, rx.changed()).await;
                        }
                        watch
                            .with(|p| p.as_ref().map(|p| p.policy.clone()))
                            .filter(|policy| !policy.routes.is_empty())
                            .map(|policy| {
                                let matched = policy
                                    .route(req.method(), req.uri().path())
                                    .cloned()
                                    .map(Arc::new);
                                let series = series_cache
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .entry(name.to_string())
                                    .or_default()
                                    .get(&metrics, "inbound", &name, matched.as_deref());
                                (series, matched)
                            })
                    }
                };
                stats.request();
                if let Some((s, _)) = &route {
                    s.route.request();
                }
                let grpc = crate::client::is_grpc_call(&req);
                let mut rsp: Response<RspBody> = if let Some(r) = refused {
                    let rsp = refused_response(&r, &req);
                    stats.answered(&rsp, crate::client::is_grpc(req.headers()), start.elapsed());
                    rsp
                } else {
                    match app.send(req).await {
                        Ok(rsp) => {
                            let classifier = match route.as_ref().and_then(|(_, m)| m.clone()) {
                                Some(m) => crate::metrics::Classifier::Route(m),
                                None => crate::metrics::Classifier::Default,
                            };
                            let head = crate::metrics::Pending::head(&rsp);
                            let pending =
                                crate::metrics::Pending::new(stats, head, grpc, start.elapsed(), classifier);
                            rsp.map(|b| Either::Left(Classified::new(b, Some(pending))))
                        }
                        Err(e) => {
                            let rsp = e.response_for(grpc);
                            stats.answered(&rsp, grpc, start.elapsed());
                            rsp
                        }
                    }
                };
                if let Some((s, _)) = &route {
                    crate::metrics::count_also(&mut rsp, &s.route, grpc, start);
                }
                Ok::<_, Infallible>(rsp)
            }
        };
        crate::server::serve_http(io, h2, crate::server::Client::Peer, svc, &self.cfg.limits, &drain).await;
    }
}
