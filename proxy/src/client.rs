//! Connecting to endpoints: the connect plan (pure), TCP + (for an endpoint behind a
//! gateway's proxy entry, the `strt` open request and its reply) + mTLS + transport
//! header, and the per-endpoint HTTP clients (one multiplexed HTTP/2 connection, or a pool of HTTP/1
//! connections) that every proxied connection shares.
//!
//! Invariants: an [`HttpEndpoint`] holds at most one live HTTP/2 connection, replaced
//! only once closed; its HTTP/1 pool holds idle-or-busy senders and hands out only ready
//! ones. Locks are held for a clone or a swap, never across I/O.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use strait_identity::rustls::ClientConfig;
use strait_identity::{CertStore, IdentityName, TrustAnchors};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stream_header::{self as strt, LinkName, Progress, RefusalReason, Reply, Target};
use crate::transport_header::{self, SessionProtocol, TransportHeader};

/// How long a gateway's proxy entry has to answer an open request (the remote ingress
/// resolves and connects first).
pub const GATEWAY_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of responses the proxy sends: the upstream's, or its own error text.
pub type RspBody = Either<crate::metrics::Classified<Incoming>, Full<Bytes>>;
/// The body of requests the proxy sends: the client's, or a buffered copy (retries).
pub type ReqBody = Either<Incoming, crate::outbound::Replay>;

/// Linkerd's header marking an HTTP/1 request carried over HTTP/2 between proxies.
pub const ORIG_PROTO: &str = "l5d-orig-proto";
/// Linkerd's header naming why the proxy answered instead of the application.
pub const PROXY_ERROR: &str = "l5d-proxy-error";
/// Set to `close` on an error answer after which the connection it came on closes, so
/// that a peer's outbound proxy closes its application's connection too (and the
/// application picks another replica), as linkerd2-proxy does.
pub const PROXY_CONNECTION: &str = "l5d-proxy-connection";

/// An I/O a proxied connection runs over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// What goes over a connection to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (meshed peers always; h2 apps).
    Http2,
    /// Bytes.
    Opaque,
}

/// How to reach one endpoint: decided from discovery before any I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectPlan {
    /// The address to dial (the endpoint, or its proxy's inbound port).
    pub addr: SocketAddr,
    /// The identity the server must prove (mTLS), or plaintext.
    pub tls: Option<IdentityName>,
    /// The transport header to send first inside TLS.
    pub header: Option<TransportHeader>,
    /// The protocol on the wire.
    pub wire: Wire,
    /// `addr` is a gateway's proxy entry: open a stream to this target first, and name
    /// the accepted endpoint's application port in the transport header.
    pub gateway: Option<EntryOpen>,
}

/// What a proxy asks a gateway's proxy entry for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryOpen {
    /// The link to name, when the entry serves every link of its gateway (`strt`
    /// version 3); `None` for an entry of one link.
    pub link: Option<LinkName>,
    /// Where the remote gateway is to deliver.
    pub target: Target,
}

impl From<Target> for EntryOpen {
    fn from(target: Target) -> Self {
        EntryOpen { link: None, target }
    }
}

/// Why an endpoint could not be used; each maps to Linkerd's HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Connecting failed (502).
    #[error("endpoint {addr} unreachable: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    /// The peer's identity or TLS failed (502).
    #[error("TLS with {addr} expecting {identity} failed: {reason}")]
    Tls {
        addr: SocketAddr,
        identity: IdentityName,
        reason: String,
    },
    /// Connecting took too long (504 when it is the request's deadline, 502 otherwise).
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// The upstream connection failed mid-request (502).
    #[error("upstream {addr} failed: {reason}")]
    Upstream { addr: SocketAddr, reason: String },
    /// The upstream cannot take an HTTP/2 extended CONNECT (RFC 8441) (502).
    #[error("{addr} does not accept extended CONNECT (RFC 8441): {reason}")]
    ExtendedConnect { addr: SocketAddr, reason: String },
    /// Discovery knows the service but it has no endpoints (503).
    #[error("service {0} has no endpoints")]
    NoEndpoints(String),
    /// The request's deadline passed (504).
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The request names no target (400).
    #[error("{0}")]
    BadRequest(String),
    /// Discovery is unavailable (503).
    #[error("discovery of {0} is unavailable")]
    Discovery(String),
    /// A gateway refused to open a stream to the remote service (503 when the service is
    /// unknown or unavailable there or the link is down, 502 otherwise).
    #[error("gateway {addr} refused {target} ({reason}): {message}")]
    GatewayRefused {
        addr: SocketAddr,
        target: String,
        reason: RefusalReason,
        message: String,
    },
}

impl ProxyError {
    /// Whether this failure to reach an endpoint behind the gateway proxy entry `via`
    /// condemns the path through that entry as a whole (the entry is unreachable, its
    /// link is down, or the remote cluster cannot serve the target) rather than the one
    /// remote endpoint (the remote gateway could not connect to it, or it failed TLS).
    pub fn fails_gateway_path(&self, via: SocketAddr) -> bool {
        match self {
            Self::Unreachable { addr, .. } | Self::ConnectTimeout(addr) => *addr == via,
            Self::GatewayRefused { addr, reason, .. } => {
                *addr == via
                    && !matches!(
                        reason,
                        RefusalReason::ConnectFailed | RefusalReason::IdentityMismatch
                    )
            }
            _ => false,
        }
    }

    /// The status Linkerd answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unreachable { .. }
            | Self::Tls { .. }
            | Self::Upstream { .. }
            | Self::ConnectTimeout(_)
            | Self::ExtendedConnect { .. } => StatusCode::BAD_GATEWAY,
            Self::NoEndpoints(_) | Self::Discovery(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::GatewayRefused { reason, .. } => match reason {
                RefusalReason::UnknownTarget
                | RefusalReason::NoEndpoints
                | RefusalReason::ShuttingDown
                | RefusalReason::Overloaded
                | RefusalReason::LinkDown => StatusCode::SERVICE_UNAVAILABLE,
                RefusalReason::ConnectFailed
                | RefusalReason::IdentityMismatch
                | RefusalReason::UnsupportedVersion
                | RefusalReason::Malformed
                | RefusalReason::NotServed => StatusCode::BAD_GATEWAY,
            },
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The gRPC status a gRPC caller sees for this error, as linkerd2-proxy answers:
    /// `DEADLINE_EXCEEDED` for a timeout, `INTERNAL` for a request the proxy cannot
    /// forward, `UNAVAILABLE` otherwise.
    pub fn grpc_code(&self) -> u32 {
        match self.status() {
            StatusCode::GATEWAY_TIMEOUT => 4,
            StatusCode::BAD_REQUEST => 13,
            _ => 14,
        }
    }

    /// The response a client sees: for a gRPC request (`grpc`), a trailers-only gRPC
    /// answer ([`grpc_response`]); otherwise the HTTP status ([`ProxyError::response`]).
    pub fn response_for(&self, grpc: bool) -> Response<RspBody> {
        if grpc {
            let mut rsp = grpc_response(self.grpc_code(), &self.to_string());
            self.mark_close(&mut rsp);
            rsp
        } else {
            self.response()
        }
    }

    /// The response a client sees, with `l5d-proxy-error`.
    pub fn response(&self) -> Response<RspBody> {
        let msg = self.to_string();
        let mut rsp = Response::new(Either::Right(Full::new(Bytes::from(format!("{msg}\n")))));
        *rsp.status_mut() = self.status();
        if let Ok(v) = HeaderValue::from_str(&msg) {
            rsp.headers_mut().insert(PROXY_ERROR, v);
        }
        rsp.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        self.mark_close(&mut rsp);
        rsp
    }

    /// Whether the connection the request came on closes after this answer, as
    /// linkerd2-proxy closes it after a failure to reach or hear from the target (502,
    /// 503): its client (an application, or a peer's proxy told by [`PROXY_CONNECTION`])
    /// connects again, and may reach another replica. Answers a new connection would not
    /// change leave it open: a request the proxy could not read (400), a deadline the
    /// request's own policy set (504, Linkerd's non-fatal timeout), and a target that
    /// cannot take an extended CONNECT.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            Self::BadRequest(_) | Self::Timeout(_) | Self::ExtendedConnect { .. }
        )
    }

    fn mark_close<B>(&self, rsp: &mut Response<B>) {
        if self.closes_connection() {
            rsp.headers_mut()
                .insert(PROXY_CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

/// Whether a request is a gRPC call the proxy answers as one (error answers as gRPC
/// statuses, a body failing midway rescued with gRPC trailers), as linkerd2-proxy
/// decides: gRPC's content type on an HTTP/2 request that was HTTP/2 from its start.
/// gRPC-Web and other HTTP/1 requests cannot carry trailers to their client.
pub fn is_grpc_call<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2 && !req.headers().contains_key(ORIG_PROTO) && is_grpc(req.headers())
}

/// Whether a request is gRPC, by its content type.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A trailers-only gRPC answer, as linkerd2-proxy gives a gRPC caller in place of an
/// HTTP error: 200, `grpc-status` `code`, `grpc-message` and `l5d-proxy-error` `msg`,
/// and no body (a gRPC client reads the status from the headers only when the stream
/// ends with them).
pub fn grpc_response(code: u32, msg: &str) -> Response<RspBody> {
    let mut rsp = Response::new(Either::Right(Full::default()));
    let h = rsp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    put_grpc_status(h, code, msg);
    rsp
}

/// Writes a gRPC status the proxy gives in place of the application's: `grpc-status`
/// `code`, and `msg` as `grpc-message` and `l5d-proxy-error` when it is a valid header
/// value. In a trailers-only answer's headers, or in the trailers ending a stream.
pub fn put_grpc_status(h: &mut http::HeaderMap, code: u32, msg: &str) {
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(msg) {
        h.insert("grpc-message", v.clone());
        h.insert(PROXY_ERROR, v);
    }
}

/// Dials endpoints: TCP, then mTLS verifying the expected identity, then the header.
pub struct Connector {
    plain_tls: Arc<ClientConfig>,
    header_tls: Arc<ClientConfig>,
    connect_timeout: Duration,
    source: Option<IpAddr>,
    keepalive: Option<Duration>,
}

impl Connector {
    /// A connector presenting `store`'s certificate and trusting `anchors`.
    pub fn new(store: &CertStore, anchors: &TrustAnchors, connect_timeout: Duration) -> Self {
        let plain_tls = strait_identity::client_config(store, anchors);
        let mut header_tls = Arc::unwrap_or_clone(strait_identity::client_config(store, anchors));
        header_tls.alpn_protocols = vec![transport_header::ALPN.to_vec()];
        Self {
            plain_tls,
            header_tls: Arc::new(header_tls),
            connect_timeout,
            source: None,
            keepalive: None,
        }
    }

    /// Connections probe their peer after `idle` without traffic (TCP keepalive).
    pub fn with_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }

    /// Connections leave from `ip` (the pod's address in explicit mode, where the kernel
    /// would otherwise pick 127.0.0.1 for every loopback pod), so servers see, count and
    /// authorize the pod's own address. Applies to destinations of the same family and
    /// scope (loopback or not) as `ip`.
    pub fn with_source(mut self, ip: IpAddr) -> Self {
        self.source = (!ip.is_unspecified()).then_some(ip);
        self
    }

    async fn tcp(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let source = self
            .source
            .filter(|s| s.is_ipv4() == addr.is_ipv4() && s.is_loopback() == addr.ip().is_loopback());
        let Some(source) = source else {
            return TcpStream::connect(addr).await;
        };
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(addr).await
    }

    /// A TCP connection to `addr`, within the connect timeout.
    async fn dial(&self, addr: SocketAddr) -> Result<TcpStream, ProxyError> {
        let tcp = tokio::time::timeout(self.connect_timeout, self.tcp(addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout(addr))?
            .map_err(|e| ProxyError::Unreachable {
                addr,
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        if let Some(idle) = self.keepalive
            && let Err(e) = crate::io::set_keepalive(&tcp, idle)
        {
            tracing::debug!(%addr, error = %e, "cannot turn on TCP keepalive");
        }
        Ok(tcp)
    }

    /// The `strt` open at the gateway proxy entry `addr` (see [`open_stream`]).
    async fn open_at_entry(
        &self,
        tcp: &mut TcpStream,
        addr: SocketAddr,
        open: &EntryOpen,
    ) -> Result<Option<u16>, ProxyError> {
        let target = &open.target;
        tokio::time::timeout(GATEWAY_REPLY_TIMEOUT, open_stream(tcp, open))
            .await
            .map_err(|_| ProxyError::ConnectTimeout(addr))?
            .map_err(|e| match e {
                OpenError::Refused { reason, message } => ProxyError::GatewayRefused {
                    addr,
                    target: target.to_string(),
                    reason,
                    message,
                },
                OpenError::Io(reason) => ProxyError::Unreachable { addr, reason },
            })
    }

    /// Opens a connection following `plan`.
    pub async fn connect(&self, plan: &ConnectPlan) -> Result<BoxIo, ProxyError> {
        let addr = plan.addr;
        let mut tcp = self.dial(addr).await?;
        let mut header = plan.header.clone();
        if let Some(open) = &plan.gateway {
            let target = &open.target;
            let mut opened = self.open_at_entry(&mut tcp, addr, open).await;
            if let Err(ProxyError::GatewayRefused {
                reason: RefusalReason::UnsupportedVersion,
                ..
            }) = &opened
                && target.endpoint.is_some()
            {
                // A gateway on the path speaks strt v1 only (a linked cluster not yet
                // upgraded): open again without naming the endpoint; that gateway picks.
                tracing::debug!(entry = %addr, %target, "the gateway path cannot name endpoints; opening without");
                tcp = self.dial(addr).await?;
                let unnamed = EntryOpen {
                    link: open.link.clone(),
                    target: Target {
                        endpoint: None,
                        ..target.clone()
                    },
                };
                opened = self.open_at_entry(&mut tcp, addr, &unnamed).await;
            }
            if let (Some(h), Some(port)) = (header.as_mut(), opened?) {
                h.port = port;
            }
        }
        let Some(identity) = &plan.tls else {
            return Ok(Box::new(tcp));
        };
        let config = if header.is_some() {
            self.header_tls.clone()
        } else {
            self.plain_tls.clone()
        };
        let tls_err = |reason: String| ProxyError::Tls {
            addr,
            identity: identity.clone(),
            reason,
        };
        let mut tls = tokio::time::timeout(
            self.connect_timeout,
            tokio_rustls::TlsConnector::from(config).connect(identity.server_name(), tcp),
        )
        .await
        .map_err(|_| ProxyError::ConnectTimeout(addr))?
        .map_err(|e| tls_err(e.to_string()))?;
        if let Some(h) = &header {
            if tls.get_ref().1.alpn_protocol() != Some(transport_header::ALPN) {
                return Err(tls_err("the peer did not accept transport.l5d.io/v1".into()));
            }
            tls.write_all(&h.encode())
                .await
                .map_err(|e| ProxyError::Unreachable {
                    addr,
                    reason: e.to_string(),
                })?;
        }
        Ok(Box::new(tls))
    }
}

enum OpenError {
    Refused { reason: RefusalReason, message: String },
    Io(String),
}

/// The `strt` exchange with a gateway's proxy entry: writes the open request, reads
/// exactly the reply frame (nothing of what follows), returns the accepted endpoint's
/// application port.
async fn open_stream<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    open: &EntryOpen,
) -> Result<Option<u16>, OpenError> {
    let io_err = |e: std::io::Error| OpenError::Io(format!("gateway entry: {e}"));
    let mut frame = Vec::with_capacity(128);
    strt::encode_entry_request(
        open.link.as_ref(),
        &strt::Request::Open(open.target.clone()),
        &mut frame,
    );
    io.write_all(&frame).await.map_err(io_err)?;
    let mut buf = vec![0u8; strt::ENVELOPE_LEN];
    io.read_exact(&mut buf).await.map_err(io_err)?;
    loop {
        match strt::decode_reply(&buf) {
            Ok(Progress::Complete(d)) => {
                return match d.frame {
                    Reply::Accepted { app_port } => Ok(app_port),
                    Reply::Refused { reason, message } => Err(OpenError::Refused { reason, message }),
                };
            }
            Ok(Progress::Incomplete { needed }) => {
                let have = buf.len();
                buf.resize(needed, 0);
                io.read_exact(&mut buf[have..]).await.map_err(io_err)?;
            }
            Err(e) => return Err(OpenError::Io(format!("gateway entry answered badly: {e}"))),
        }
    }
}

/// Rewrites a request's authority to `authority` (Linkerd's `authority_override`: a
/// mirror's remote service is named as the remote cluster knows it).
pub fn override_authority<B>(req: &mut Request<B>, authority: &str) {
    let Ok(value) = HeaderValue::from_str(authority) else {
        return;
    };
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        if let Ok(a) = authority.parse() {
            parts.authority = Some(a);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    if req.headers().contains_key(http::header::HOST) || req.version() != Version::HTTP_2 {
        req.headers_mut().insert(http::header::HOST, value);
    }
}

/// Makes a request fit HTTP/2 to a peer proxy: absolute URI from `Host`, and
/// `l5d-orig-proto` so the server proxy restores HTTP/1.
pub fn upgrade_to_h2<B>(req: &mut Request<B>) {
    if req.version() == Version::HTTP_2 {
        return;
    }
    let orig = if req.version() == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    req.headers_mut()
        .insert(ORIG_PROTO, HeaderValue::from_static(orig));
    if req.uri().authority().is_none()
        && let Some(host) = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    {
        let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(pq)
            .build()
        {
            *req.uri_mut() = uri;
        }
    }
    req.headers_mut().remove(http::header::HOST);
    *req.version_mut() = Version::HTTP_2;
}

/// Makes a request fit HTTP/1 to an application: origin-form URI, `Host` from the
/// authority, `l5d-orig-proto` consumed.
pub fn downgrade_to_h1<B>(req: &mut Request<B>) {
    let orig = req.headers_mut().remove(ORIG_PROTO);
    if req.version() != Version::HTTP_2 {
        return;
    }
    if let Some(a) = req.uri().authority().cloned()
        && !req.headers().contains_key(http::header::HOST)
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    // Origin form: the path and query as they are (a shared copy, not parsed again).
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = if orig.as_ref().is_some_and(|v| v == "HTTP/1.0") {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
}

/// The HTTP client of one endpoint, shared by every connection that balances onto it.
pub struct HttpEndpoint {
    plan: ConnectPlan,
    connector: Arc<Connector>,
    h2: Mutex<Option<H2Conn>>,
    h2_connecting: tokio::sync::Mutex<()>,
    /// HTTP/2 connections made so far (each one's [`H2Conn::id`]).
    h2_dialed: std::sync::atomic::AtomicU64,
    h1: Mutex<Vec<http1::SendRequest<ReqBody>>>,
    tcp: Option<Arc<crate::metrics::TcpStats>>,
}

const MAX_IDLE_H1: usize = 64;

/// How long an extended CONNECT waits for a new HTTP/2 connection's server preface.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);

/// One live HTTP/2 connection: its sender, and whether its server accepts extended
/// CONNECT (from its preface).
#[derive(Clone)]
struct H2Conn {
    sender: http2::SendRequest<ReqBody>,
    connect_protocol: crate::extended_connect::ConnectProtocol,
    /// Which connection of this endpoint it is, so that forgetting a closed one never
    /// forgets its successor.
    id: u64,
}

impl HttpEndpoint {
    /// A client following `plan` (whose wire is HTTP/1 or HTTP/2).
    pub fn new(plan: ConnectPlan, connector: Arc<Connector>) -> Self {
        Self {
            plan,
            connector,
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            h2_dialed: std::sync::atomic::AtomicU64::new(0),
            h1: Mutex::new(Vec::new()),
            tcp: None,
        }
    }

    /// Counts this client's connections in `tcp`.
    pub fn with_tcp(mut self, tcp: Arc<crate::metrics::TcpStats>) -> Self {
        self.tcp = Some(tcp);
        self
    }

    async fn dial(&self) -> Result<BoxIo, ProxyError> {
        let io = self.connector.connect(&self.plan).await?;
        Ok(match &self.tcp {
            Some(t) => Box::new(crate::io::CountingIo::new(io, t.clone())),
            None => io,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &ConnectPlan {
        &self.plan
    }

    fn upstream_err(&self, e: hyper::Error) -> ProxyError {
        ProxyError::Upstream {
            addr: self.plan.addr,
            reason: e.to_string(),
        }
    }

    /// Makes sure a connection is ready before a request is sent on it, so that failing to
    /// connect (refused, timed out, TLS, a gateway entry's refusal) leaves the request
    /// unsent and free to go to another endpoint.
    pub async fn ensure_connected(&self) -> Result<(), ProxyError> {
        match self.plan.wire {
            Wire::Http2 => self.h2_sender().await.map(drop),
            _ => {
                let s = self.h1_sender().await?;
                let mut pool = self.h1.lock().unwrap_or_else(PoisonError::into_inner);
                if pool.len() < MAX_IDLE_H1 {
                    pool.push(s);
                }
                Ok(())
            }
        }
    }

    /// Sends `req`, adapting its version to the wire.
    pub async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        self.send_body(req.map(Either::Left)).await
    }

    /// Sends `req` whose body may be a buffered copy, adapting its version to the wire.
    pub async fn send_body(&self, mut req: Request<ReqBody>) -> Result<Response<Incoming>, ProxyError> {
        if let Some(open) = &self.plan.gateway {
            override_authority(&mut req, &open.target.to_string());
        }
        if is_upgrade(&req) {
            return self.send_upgrade(req).await;
        }
        if crate::extended_connect::is_extended_connect(&req) {
            return self.send_extended_connect(req).await;
        }
        match self.plan.wire {
            Wire::Http2 => {
                if self.plan.tls.is_some() {
                    upgrade_to_h2(&mut req);
                } else if req.version() != Version::HTTP_2 {
                    // An unmeshed h2 app reached from an HTTP/1 client: plain version change.
                    upgrade_to_h2(&mut req);
                    req.headers_mut().remove(ORIG_PROTO);
                }
                let H2Conn {
                    sender: mut s, id, ..
                } = self.h2_sender().await?;
                let req = match s.ready().await {
                    Ok(()) => match s.try_send_request(req).await {
                        Ok(rsp) => return Ok(rsp),
                        Err(mut e) => match e.take_message() {
                            Some(req) => req,
                            None => return Err(self.upstream_err(e.into_error())),
                        },
                    },
                    Err(_) => req,
                };
                // The connection stopped taking requests before this one went out (a
                // peer's GOAWAY after its error closed the connection): nothing was sent,
                // so once more on a new connection.
                tracing::debug!(addr = %self.plan.addr, "HTTP/2 connection closed; sending on a new one");
                self.forget_h2(id);
                let mut s = self.h2_sender().await?.sender;
                s.ready().await.map_err(|e| self.upstream_err(e))?;
                s.send_request(req).await.map_err(|e| self.upstream_err(e))
            }
            _ => {
                downgrade_to_h1(&mut req);
                let mut s = self.h1_sender().await?;
                let rsp = s.send_request(req).await.map_err(|e| self.upstream_err(e));
                // The connection serves the next request once this response's body is read;
                // until then `is_ready` keeps it from being handed out.
                if rsp.is_ok() {
                    let mut pool = self.h1.lock().unwrap_or_else(PoisonError::into_inner);
                    if pool.len() < MAX_IDLE_H1 {
                        pool.push(s);
                    }
                }
                rsp
            }
        }
    }

    /// An HTTP/1.1 upgrade (WebSocket, …): sent as HTTP/1.1 on a connection of its own,
    /// to a peer proxy too (an upgraded stream cannot share HTTP/2), and once the server
    /// switches protocols, the client's and the server's upgraded connections are joined.
    async fn send_upgrade(&self, mut req: Request<ReqBody>) -> Result<Response<Incoming>, ProxyError> {
        let client_side = hyper::upgrade::on(&mut req);
        let guard = crate::server::tunnel_guard(&req);
        downgrade_to_h1(&mut req);
        let mut plan = self.plan.clone();
        plan.wire = Wire::Http1;
        if let Some(h) = plan.header.as_mut() {
            h.protocol = session_for(Wire::Http1);
        }
        // The gateway stream is opened by the connector; the authority is already set.
        let io = self.connector.connect(&plan).await?;
        let io: BoxIo = match &self.tcp {
            Some(t) => Box::new(crate::io::CountingIo::new(io, t.clone())),
            None => io,
        };
        let (mut s, conn) = http1::Builder::new()
            .handshake::<_, ReqBody>(TokioIo::new(io))
            .await
            .map_err(|e| self.upstream_err(e))?;
        let addr = self.plan.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "HTTP/1 upgrade connection ended");
            }
        });
        let mut rsp = s.send_request(req).await.map_err(|e| self.upstream_err(e))?;
        if rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            join_upgraded(addr, client_side, hyper::upgrade::on(&mut rsp), guard);
        }
        Ok(rsp)
    }

    /// An HTTP/2 extended CONNECT (RFC 8441, e.g. WebSocket over HTTP/2): one stream of
    /// the endpoint's HTTP/2 connection (a peer proxy's, or the application's), sent only
    /// once the server's preface enables the protocol; after a 2xx the client's and the
    /// server's streams are joined. Never retried: the client's stream is handed over.
    async fn send_extended_connect(
        &self,
        mut req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let addr = self.plan.addr;
        let refuse = |reason: &str| ProxyError::ExtendedConnect {
            addr,
            reason: reason.to_string(),
        };
        if self.plan.wire != Wire::Http2 {
            return Err(refuse("it speaks HTTP/1, and extended CONNECT is HTTP/2's"));
        }
        let conn = self.h2_sender().await?;
        let mut answer = conn.connect_protocol.clone();
        match tokio::time::timeout(PREFACE_TIMEOUT, answer.wait_for(Option::is_some)).await {
            Ok(Ok(v)) if *v == Some(true) => {}
            Ok(Ok(_)) => {
                return Err(refuse(
                    "its HTTP/2 SETTINGS do not enable it (SETTINGS_ENABLE_CONNECT_PROTOCOL)",
                ));
            }
            Ok(Err(_)) => return Err(refuse("the HTTP/2 connection closed before its SETTINGS")),
            Err(_) => {
                return Err(refuse(&format!("no HTTP/2 SETTINGS within {PREFACE_TIMEOUT:?}")));
            }
        }
        let client_side = hyper::upgrade::on(&mut req);
        let guard = crate::server::tunnel_guard(&req);
        let mut s = conn.sender;
        s.ready().await.map_err(|e| self.upstream_err(e))?;
        let mut rsp = s.send_request(req).await.map_err(|e| self.upstream_err(e))?;
        if rsp.status().is_success() {
            join_upgraded(addr, client_side, hyper::upgrade::on(&mut rsp), guard);
        }
        Ok(rsp)
    }

    async fn h2_sender(&self) -> Result<H2Conn, ProxyError> {
        if let Some(s) = self.live_h2() {
            return Ok(s);
        }
        let _one = self.h2_connecting.lock().await;
        if let Some(s) = self.live_h2() {
            return Ok(s);
        }
        let io = self.dial().await?;
        // hyper spawns the connection's task through the executor: the cork's flushes it.
        let (io, cork) = crate::cork::cork(io);
        let (io, connect_protocol) = crate::extended_connect::PrefaceIo::new(io);
        let (s, conn) = http2::Builder::new(cork.executor())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(3))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.upstream_err(e))?;
        let addr = self.plan.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "HTTP/2 connection ended");
            }
        });
        let conn = H2Conn {
            sender: s,
            connect_protocol,
            id: self.h2_dialed.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        *self.h2.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection `id` if it is still the one in use.
    fn forget_h2(&self, id: u64) {
        let mut g = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if g.as_ref().is_some_and(|c| c.id == id) {
            *g = None;
        }
    }

    fn live_h2(&self) -> Option<H2Conn> {
        let g = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        g.as_ref().filter(|c| !c.sender.is_closed()).cloned()
    }

    async fn h1_sender(&self) -> Result<http1::SendRequest<ReqBody>, ProxyError> {
        {
            let mut pool = self.h1.lock().unwrap_or_else(PoisonError::into_inner);
            pool.retain(|s| !s.is_closed());
            if let Some(i) = pool.iter().position(|s| s.is_ready()) {
                return Ok(pool.swap_remove(i));
            }
        }
        let io = self.dial().await?;
        let (mut s, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.upstream_err(e))?;
        let addr = self.plan.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "HTTP/1 connection ended");
            }
        });
        s.ready().await.map_err(|e| self.upstream_err(e))?;
        Ok(s)
    }
}

/// Joins an upgraded client stream with the upstream's once both sides have switched
/// (after a 101, or a 2xx to an extended CONNECT), copying until either side ends; the
/// serving connection's `guard` lives as long as the tunnel.
fn join_upgraded(
    addr: SocketAddr,
    client_side: hyper::upgrade::OnUpgrade,
    server_side: hyper::upgrade::OnUpgrade,
    guard: Option<crate::server::Drain>,
) {
    tokio::spawn(async move {
        let _guard = guard;
        match tokio::try_join!(client_side, server_side) {
            Ok((a, b)) => {
                let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                    tracing::debug!(%addr, error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(%addr, error = %e, "the upgrade was not completed"),
        }
    });
}

/// Whether `req` asks to switch protocols (HTTP/1.1 `Connection: upgrade` with an
/// `Upgrade` header, e.g. WebSocket). `CONNECT` is handled as a tunnel elsewhere.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    is_upgrade_head(req.version(), req.headers())
}

/// [`is_upgrade`] on a request's version and headers.
pub fn is_upgrade_head(version: Version, headers: &http::HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(http::header::UPGRADE)
        && headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The session protocol a meshed HTTP connection announces in its transport header.
pub fn session_for(wire: Wire) -> Option<SessionProtocol> {
    match wire {
        Wire::Http1 => Some(SessionProtocol::Http1),
        Wire::Http2 => Some(SessionProtocol::Http2),
        Wire::Opaque => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_callers_get_trailers_only_statuses_others_http_errors() {
        use hyper::body::Body as _;
        let mut grpc = http::HeaderMap::new();
        grpc.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&grpc));
        assert!(!is_grpc(&http::HeaderMap::new()));
        let cases = [
            (
                ProxyError::Timeout(Duration::from_secs(1)),
                StatusCode::GATEWAY_TIMEOUT,
                "4",
            ),
            (
                ProxyError::NoEndpoints("myapp:80".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "14",
            ),
            (
                ProxyError::BadRequest("no authority".into()),
                StatusCode::BAD_REQUEST,
                "13",
            ),
        ];
        for (e, http_status, grpc_status) in cases {
            let rsp = e.response_for(true);
            assert_eq!(rsp.status(), StatusCode::OK, "{e}");
            assert_eq!(rsp.headers()["grpc-status"], grpc_status, "{e}");
            assert_eq!(rsp.headers()["content-type"], "application/grpc", "{e}");
            assert_eq!(rsp.headers()[PROXY_ERROR], e.to_string().as_str(), "{e}");
            assert_eq!(rsp.headers()["grpc-message"], e.to_string().as_str(), "{e}");
            assert!(rsp.body().is_end_stream(), "trailers-only: no body ({e})");
            let rsp = e.response_for(false);
            assert_eq!(rsp.status(), http_status, "{e}");
            assert!(rsp.headers().get("grpc-status").is_none(), "{e}");
            assert!(!rsp.body().is_end_stream(), "{e}");
        }
    }

    #[test]
    fn http1_requests_travel_as_http2_and_come_back() {
        let mut req = Request::builder()
            .uri("/path?q=1")
            .header("host", "myapp.production.svc.cluster.local:80")
            .body(())
            .unwrap();
        upgrade_to_h2(&mut req);
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(
            req.uri().to_string(),
            "http://myapp.production.svc.cluster.local:80/path?q=1"
        );
        assert_eq!(req.headers()[ORIG_PROTO], "HTTP/1.1");
        assert!(req.headers().get("host").is_none());
        downgrade_to_h1(&mut req);
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri().to_string(), "/path?q=1");
        assert_eq!(req.headers()["host"], "myapp.production.svc.cluster.local:80");
        assert!(req.headers().get(ORIG_PROTO).is_none());
    }

    #[test]
    fn only_failures_of_the_entry_or_link_condemn_the_gateway_path() {
        let via: SocketAddr = "127.0.0.9:4180".parse().unwrap();
        let other: SocketAddr = "127.0.0.9:4181".parse().unwrap();
        let refused = |addr, reason| ProxyError::GatewayRefused {
            addr,
            target: "myapp.production.svc.cluster.local:80".into(),
            reason,
            message: String::new(),
        };
        let unreachable = |addr| ProxyError::Unreachable {
            addr,
            reason: "refused".into(),
        };
        let path_wide = [
            unreachable(via),
            ProxyError::ConnectTimeout(via),
            refused(via, RefusalReason::LinkDown),
            refused(via, RefusalReason::ShuttingDown),
            refused(via, RefusalReason::NoEndpoints),
            refused(via, RefusalReason::UnknownTarget),
        ];
        for e in path_wide {
            assert!(e.fails_gateway_path(via), "{e}");
            assert!(!e.fails_gateway_path(other), "another entry: {e}");
        }
        // The remote gateway reached the link but not this endpoint: only it is down.
        let endpoint_only = [
            refused(via, RefusalReason::ConnectFailed),
            refused(via, RefusalReason::IdentityMismatch),
            ProxyError::Tls {
                addr: via,
                identity: "myapp.production.serviceaccount.identity.linkerd.cluster.local"
                    .parse()
                    .unwrap(),
                reason: "bad certificate".into(),
            },
        ];
        for e in endpoint_only {
            assert!(!e.fails_gateway_path(via), "{e}");
        }
    }

    #[test]
    fn authority_overrides_rewrite_uri_and_host() {
        let remote = "myapp.production.svc.cluster.local:80";
        let mut req = Request::builder()
            .uri("/x")
            .header("host", "myapp-east.production.svc.cluster.local")
            .body(())
            .unwrap();
        override_authority(&mut req, remote);
        assert_eq!(req.headers()["host"], remote);
        assert_eq!(req.uri().to_string(), "/x");
        let mut req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://myapp-east.production.svc.cluster.local:80/x?q")
            .body(())
            .unwrap();
        override_authority(&mut req, remote);
        assert_eq!(req.uri().to_string(), format!("http://{remote}/x?q"));
        assert!(req.headers().get("host").is_none());
    }

    /// An opaque open of `myapp.production.svc.cluster.local:80`, naming `endpoint`.
    fn myapp_target(endpoint: Option<std::net::IpAddr>) -> Target {
        use crate::stream_header::{Authority, Protocol};
        Target {
            authority: Authority::new("myapp.production.svc.cluster.local").unwrap(),
            port: 80,
            protocol: Protocol::Opaque,
            identity: None,
            endpoint,
        }
    }

    /// A connector without a certificate (plaintext plans only).
    fn test_connector() -> Connector {
        let (anchors, _) = strait_identity::generate(
            &strait_identity::TrustDomain::default(),
            std::time::SystemTime::now(),
        )
        .unwrap();
        Connector::new(&CertStore::new(), &anchors, Duration::from_secs(2))
    }

    /// A fake proxy entry on a real socket: reads the open request, answers with
    /// `reply`, then echoes; the connector passes a refusal up as a typed error.
    async fn fake_entry(reply: Reply) -> (SocketAddr, tokio::task::JoinHandle<Option<strt::Request>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut tcp, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let request = loop {
                let mut chunk = [0u8; 64];
                let n = tcp.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Progress::Complete(d) = strt::decode_request(&buf).unwrap() {
                    break d.frame;
                }
            };
            let mut frame = Vec::new();
            strt::encode_reply(&reply, strt::VERSION, &mut frame);
            tcp.write_all(&frame).await.unwrap();
            let (mut r, mut w) = tcp.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            Some(request)
        });
        (addr, task)
    }

    #[tokio::test]
    async fn the_connector_opens_a_stream_at_a_gateway_entry_first() {
        let target = myapp_target(None);
        let connector = test_connector();

        let (addr, entry) = fake_entry(Reply::Accepted { app_port: Some(8080) }).await;
        let plan = ConnectPlan {
            addr,
            tls: None,
            header: None,
            wire: Wire::Opaque,
            gateway: Some(target.clone().into()),
        };
        let mut io = connector.connect(&plan).await.unwrap();
        io.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping", "bytes after the reply are the connection's");
        drop(io);
        assert_eq!(entry.await.unwrap(), Some(strt::Request::Open(target.clone())));

        let (addr, _entry) = fake_entry(Reply::Refused {
            reason: RefusalReason::UnknownTarget,
            message: "no service myapp.production.svc.cluster.local:80 in this cluster".into(),
        })
        .await;
        let plan = ConnectPlan { addr, ..plan };
        let Err(e) = connector.connect(&plan).await else {
            panic!("a refusal expected")
        };
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
        let rsp = e.response();
        let header = rsp.headers()[PROXY_ERROR].to_str().unwrap().to_string();
        assert!(
            header.contains("unknown-target") && header.contains("no service"),
            "{header}"
        );
    }

    /// An entry as a gateway that speaks strt v1 only answers: a version-2 request is
    /// refused (`unsupported-version`, in a version-1 reply), a version-1 open accepted
    /// and echoed. Serves `conns` connections; returns the requests it accepted.
    async fn v1_entry(conns: usize) -> (SocketAddr, tokio::task::JoinHandle<Vec<strt::Request>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut accepted = Vec::new();
            for _ in 0..conns {
                let (mut tcp, _) = l.accept().await.unwrap();
                let mut head = [0u8; strt::ENVELOPE_LEN];
                tcp.read_exact(&mut head).await.unwrap();
                let len = usize::from(u16::from_be_bytes([head[5], head[6]]));
                let mut body = vec![0u8; len];
                tcp.read_exact(&mut body).await.unwrap();
                let mut frame = Vec::new();
                if head[4] != 1 {
                    let refusal = Reply::Refused {
                        reason: RefusalReason::UnsupportedVersion,
                        message: format!("header version {} is not supported", head[4]),
                    };
                    strt::encode_reply(&refusal, 1, &mut frame);
                    tcp.write_all(&frame).await.unwrap();
                    continue;
                }
                let bytes = [head.as_slice(), &body].concat();
                let Ok(Progress::Complete(d)) = strt::decode_request(&bytes) else {
                    panic!("a version-1 request")
                };
                accepted.push(d.frame);
                strt::encode_reply(&Reply::Accepted { app_port: Some(8080) }, 1, &mut frame);
                tcp.write_all(&frame).await.unwrap();
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
            accepted
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_v1_gateway_path_gets_the_open_again_without_the_endpoint() {
        let named = myapp_target(Some("10.42.0.7".parse().unwrap()));
        let connector = test_connector();
        let (addr, entry) = v1_entry(2).await;
        let plan = ConnectPlan {
            addr,
            tls: None,
            header: None,
            wire: Wire::Opaque,
            gateway: Some(named.clone().into()),
        };
        let mut io = connector.connect(&plan).await.unwrap();
        io.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        drop(io);
        let unnamed = Target {
            endpoint: None,
            ..named
        };
        assert_eq!(entry.await.unwrap(), [strt::Request::Open(unnamed.clone())]);

        // An open that names nothing is version 1 already: refused, it is not repeated.
        let (addr, _entry) = fake_entry(Reply::Refused {
            reason: RefusalReason::UnsupportedVersion,
            message: "no".into(),
        })
        .await;
        let plan = ConnectPlan {
            addr,
            gateway: Some(unnamed.into()),
            ..plan
        };
        let Err(e) = connector.connect(&plan).await else {
            panic!("a refusal expected")
        };
        assert!(e.to_string().contains("unsupported-version"), "{e}");
    }

    #[test]
    fn errors_have_linkerd_statuses_and_header() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let cases = [
            (
                ProxyError::Unreachable {
                    addr: a,
                    reason: "refused".into(),
                },
                502,
            ),
            (ProxyError::NoEndpoints("x".into()), 503),
            (ProxyError::Timeout(Duration::from_secs(1)), 504),
            (ProxyError::ConnectTimeout(a), 502),
            (
                ProxyError::GatewayRefused {
                    addr: a,
                    target: "myapp.production.svc.cluster.local:80".into(),
                    reason: RefusalReason::UnknownTarget,
                    message: "no service".into(),
                },
                503,
            ),
            (
                ProxyError::GatewayRefused {
                    addr: a,
                    target: "myapp.production.svc.cluster.local:80".into(),
                    reason: RefusalReason::IdentityMismatch,
                    message: "served by other".into(),
                },
                502,
            ),
        ];
        for (e, status) in cases {
            let r = e.response();
            assert_eq!(r.status().as_u16(), status, "{e}");
            assert_eq!(r.headers()[PROXY_ERROR], e.to_string().as_str());
        }
    }
}
