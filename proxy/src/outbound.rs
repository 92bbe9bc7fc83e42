//! The outbound side (4140): what the application sends out.
//!
//! accept → detect (HTTP/1, HTTP/2, else opaque) → target (original destination, or the
//! request's authority / `CONNECT` in explicit mode; in ingress mode an HTTP request's
//! `l5d-dst-override` header first) → logical target (profile: TrafficSplit
//! overrides) → concrete target (Destination/Get) → balancer (P2C peak-EWMA) → endpoint
//! client (mTLS + HTTP/2 to meshed peers, plaintext otherwise). A target discovery does
//! not know is forwarded to its original address in plaintext.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::balance::{self, Balancer, Pick};
use crate::client::{BoxIo, ConnectPlan, Connector, HttpEndpoint, ProxyError, RspBody, Wire, session_for};
use crate::config::{Capture, Limits};
use crate::detect::{self, Protocol};
use crate::discovery::{Endpoint, Resolver};
use crate::io::{CountingIo, PrefixedIo};
use crate::metrics::{Classified, HttpStats, Registry, TcpStats, labels};
use crate::server::Drain;
use crate::transport_header::TransportHeader;

mod replay;
pub use replay::Replay;
mod route;

/// How long a request waits for discovery's first answer about a new target.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(3);
/// How many endpoints one request may try to connect to before it fails.
pub const CONNECT_TRIES: usize = 4;

/// Decides how to reach `ep` for traffic of protocol `app` (pure).
///
/// Meshed endpoints get mTLS with their identity and HTTP/2 for any HTTP. In explicit
/// mode the client cannot rely on redirection at the server pod, so it dials the peer
/// proxy's inbound port and names the application port in a transport header (with the
/// session protocol, so the peer skips detection). In transparent mode it dials the
/// endpoint itself (the server pod's iptables hand the connection to its proxy) except
/// for endpoints whose port the server pod marks opaque, which Linkerd tunnels to the
/// inbound port with a header too (naming the session protocol for HTTP).
///
/// An endpoint behind a gateway's proxy entry (a mirror of a remote service) is the same
/// in both modes: dial the entry, open a `strt` stream to the remote service, then mTLS
/// with the remote workload's identity and a transport header whose port the remote
/// gateway's acceptance fills in (HTTP goes as HTTP/2: the remote peer is meshed). A
/// remote endpoint of its own ([`Endpoint::via`]) dials the entry it names, and its
/// `strt` target names the endpoint.
pub fn plan(capture: Capture, ep: &Endpoint, app: Wire, peer_inbound_port: u16) -> ConnectPlan {
    if let Some(target) = &ep.gateway {
        let wire = if app == Wire::Opaque {
            Wire::Opaque
        } else {
            Wire::Http2
        };
        let protocol = match wire {
            Wire::Opaque => crate::stream_header::Protocol::Opaque,
            _ => crate::stream_header::Protocol::Http2,
        };
        let header = ep.identity.as_ref().map(|_| TransportHeader {
            port: target.port,
            name: None,
            protocol: session_for(wire),
        });
        return ConnectPlan {
            addr: ep.via.unwrap_or(ep.addr),
            tls: ep.identity.clone(),
            header,
            wire: if ep.identity.is_some() { wire } else { app },
            gateway: Some(crate::client::EntryOpen {
                link: ep.link.clone(),
                target: crate::stream_header::Target {
                    protocol,
                    ..target.clone()
                },
            }),
        };
    }
    let Some(identity) = ep.identity.clone() else {
        return ConnectPlan {
            addr: ep.addr,
            tls: None,
            header: None,
            wire: app,
            gateway: None,
        };
    };
    let tunnel = match (capture, ep.opaque_transport_port) {
        (Capture::Explicit, p) => Some(p.unwrap_or(peer_inbound_port)),
        (Capture::Transparent, Some(p)) => Some(p),
        (Capture::Transparent, None) => None,
    };
    // HTTP through a tunnel (an explicit-mode peer, or a port the server pod marks opaque)
    // goes as HTTP/2 with its session protocol in the header, as Linkerd's proxy sends
    // it: the peer serves it as HTTP, never as bytes to forward (an h2 or gRPC request
    // sent as HTTP/1 bytes would reach an h2-only application it cannot speak to).
    let wire = if app == Wire::Opaque {
        Wire::Opaque
    } else if ep.h2 || tunnel.is_some() {
        Wire::Http2
    } else {
        app
    };
    match tunnel {
        // A Linkerd gateway's endpoint names the remote service in the header.
        Some(port) => ConnectPlan {
            addr: SocketAddr::new(ep.addr.ip(), port),
            tls: Some(identity),
            header: Some(TransportHeader {
                port: ep.authority_override.as_ref().map_or(ep.addr.port(), |(_, p)| *p),
                name: ep.authority_override.as_ref().map(|(n, _)| n.clone()),
                protocol: session_for(wire),
            }),
            wire,
            gateway: None,
        },
        None => ConnectPlan {
            addr: ep.addr,
            tls: Some(identity),
            header: None,
            wire,
            gateway: None,
        },
    }
}

/// The authority as the request spells it (`:authority`/absolute-form, else `Host`).
fn raw_authority<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// The target of an explicit-mode request: absolute-form or `:authority`, else `Host`;
/// port 80 when none is given.
pub fn request_target<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let authority = raw_authority(req).ok_or_else(|| {
        ProxyError::BadRequest("the request names no target: no authority and no Host header".into())
    })?;
    Ok(target_of(authority))
}

/// `authority` as a target's key: lower case, with port 80 when it names none.
fn target_of(authority: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    let has_port = match authority.rsplit_once(':') {
        Some((h, p)) => !h.is_empty() && !p.contains(']') && p.parse::<u16>().is_ok(),
        None => false,
    };
    if has_port {
        authority
    } else {
        format!("{authority}:80")
    }
}

/// Whether what follows an authority's host is nothing or `:<port>`.
fn port_ok(rest: &str) -> bool {
    rest.is_empty() || rest.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())
}

/// The header that names an ingress-mode request's target (Linkerd's).
pub const DST_OVERRIDE_HEADER: &str = "l5d-dst-override";

/// The target an ingress-mode request names in `l5d-dst-override` (`name[:port]`, port
/// 80 when it names none): `None` without the header (the request goes to its original
/// destination). A value that names no service (an address, a URL, junk) is refused, as
/// linkerd2-proxy refuses it: an ingress that forwards its clients' headers must not
/// become a relay to whatever address they name.
fn dst_override<B>(req: &Request<B>) -> Result<Option<String>, ProxyError> {
    let Some(v) = req.headers().get(DST_OVERRIDE_HEADER) else {
        return Ok(None);
    };
    let bad = |v: &str| {
        ProxyError::BadRequest(format!(
            "{DST_OVERRIDE_HEADER} must name a service as name[:port] (not an address); found {v:?}"
        ))
    };
    let Ok(v) = v.to_str().map(str::trim) else {
        return Err(bad("(not text)"));
    };
    match v.parse::<http::uri::Authority>() {
        Ok(a)
            if !a.host().is_empty()
                && !v.contains('@')
                && port_ok(&v[a.host().len()..])
                && !a.host().starts_with('[')
                && a.host().parse::<std::net::IpAddr>().is_err() =>
        {
            Ok(Some(v.to_string()))
        }
        _ => Err(bad(v)),
    }
}

/// Settings of the outbound side.
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    /// Capture mode.
    pub capture: Capture,
    /// Protocol detection timeout.
    pub detect_timeout: Duration,
    /// Per-request deadline (504 after), if any.
    pub request_timeout: Option<Duration>,
    /// Peer proxies' inbound port (explicit mode).
    pub peer_inbound_port: u16,
    /// Limits.
    pub limits: Limits,
    /// The proxy's own listeners: never a forwarding target (that would loop).
    pub own_addrs: Vec<SocketAddr>,
    /// A target no connection has used for this long is forgotten: its discovery and
    /// policy watches end and its endpoints' connections close
    /// (`LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT`, Linkerd's 5 s by default).
    pub idle_timeout: Duration,
    /// Ingress mode: an HTTP request naming its target in `l5d-dst-override` goes there
    /// (see [`DST_OVERRIDE_HEADER`]), whatever its connection's original destination.
    pub ingress: bool,
}

struct EpValue {
    /// Failure accrual (used when the target's policy configures it).
    breaker: crate::policy::accrual::Breaker,
    stats: Arc<HttpStats>,
    tcp: Arc<TcpStats>,
    h1: OnceLock<Arc<HttpEndpoint>>,
    h2: OnceLock<Arc<HttpEndpoint>>,
}

struct Concrete {
    balancer: Balancer<EpValue>,
    /// When a request last asked for it ([`Outbound::now_ms`]): a policy's backends are
    /// held only by the requests in flight, and must outlive the gaps between them.
    last_used: std::sync::atomic::AtomicU64,
}

/// A connection's last target: the raw authority it was named by, and its logical target.
type LastTarget = Mutex<Option<(String, Arc<Logical>)>>;

/// The weighted concrete targets of a logical one, swapped whole on profile changes.
type Split = Arc<RwLock<Arc<Vec<(Arc<Concrete>, u32)>>>>;

struct Logical {
    authority: String,
    /// The name its metrics carry, Linkerd's logical address: the profile's fully
    /// qualified name with the target's port (so `10.96.0.7:80` and `myapp:80` both
    /// count as `myapp.production.svc.cluster.local:80`), else the authority. Set once:
    /// by the first profile answer, or by whatever needs it before one comes (a profile
    /// slower than [`DISCOVERY_WAIT`] leaves the target under its raw authority until it
    /// is forgotten).
    name: Arc<OnceLock<String>>,
    /// Where to go when discovery does not know the target.
    fallback: Option<SocketAddr>,
    /// Its concrete targets; empty until the profile answers (see [`Outbound::split`]).
    concretes: Split,
    /// Requests the proxy answered itself, or sent to the original address (made on
    /// first use, under [`Logical::name`]).
    stats: OnceLock<Arc<HttpStats>>,
    metrics: Arc<Registry>,
    fallback_clients: [OnceLock<Arc<HttpEndpoint>>; 2],
    /// True once the profile answered (or there is none).
    split_ready: tokio::sync::watch::Receiver<bool>,
    /// The profile (ServiceProfile routes and retry budget).
    profile: tokio::sync::watch::Receiver<Option<crate::discovery::Profile>>,
    /// The `OutboundPolicies` answer, when a policy controller is configured.
    policy: Option<Arc<crate::policy::client::PolicyWatch<crate::policy::outbound::OutboundPolicy>>>,
    /// The profile's retry budget, shared by the target's requests.
    budget: Mutex<Option<Arc<crate::policy::retry::Budget>>>,
    /// When a connection last looked it up (ms since the outbound side started).
    last_used: std::sync::atomic::AtomicU64,
    /// [`Logical::name`] as `l5d-dst-canonical` tells a peer proxy (`None`: an address).
    canonical: OnceLock<Option<http::HeaderValue>>,
    /// Its ServiceProfile route series.
    route_series: Mutex<crate::metrics::RouteSeriesCache>,
    task: tokio::task::AbortHandle,
}

impl Drop for Logical {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Logical {
    fn name(&self) -> &str {
        self.name.get_or_init(|| self.authority.clone())
    }

    /// Names the target in `l5d-dst-canonical` on a request to a meshed endpoint, as
    /// linkerd2-proxy does: the peer's inbound side finds the target's ServiceProfile by
    /// it (its route series). A target known only by its address gets no header.
    fn set_canonical(&self, headers: &mut http::HeaderMap) {
        let v = self.canonical.get_or_init(|| {
            let name = self.name();
            let host = name.rsplit_once(':').map_or(name, |(h, _)| h);
            let is_name = !host.starts_with('[') && host.parse::<std::net::IpAddr>().is_err();
            is_name.then(|| http::HeaderValue::from_str(name).ok()).flatten()
        });
        if let Some(v) = v {
            headers.insert(crate::inbound::CANONICAL_DST_HEADER, v.clone());
        }
    }

    fn stats(&self) -> &Arc<HttpStats> {
        self.stats.get_or_init(|| {
            let target = self
                .fallback
                .map(|a| a.to_string())
                .unwrap_or_else(|| self.authority.clone());
            self.metrics.http(labels(&[
                ("direction", "outbound"),
                ("authority", self.name()),
                ("target_addr", &target),
                ("tls", "no_identity"),
                ("no_tls_reason", "not_provided_by_service_discovery"),
            ]))
        })
    }
}

/// The name a target's metrics carry once its profile names the Service: `fqdn` with
/// the port of `authority` (`host:port` or `[v6]:port`).
fn logical_name(fqdn: &str, authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((_, port)) => format!("{fqdn}:{port}"),
        None => fqdn.to_string(),
    }
}

/// The outbound proxy.
pub struct Outbound {
    cfg: OutboundConfig,
    resolver: Resolver,
    connector: Arc<Connector>,
    metrics: Arc<Registry>,
    logicals: Mutex<HashMap<String, Arc<Logical>>>,
    /// Balancers by the logical name their metrics carry, then by concrete authority: a
    /// Service reached as itself and as a TrafficSplit's backend has one of each, as in
    /// Linkerd, whose concrete targets live under their parent.
    concretes: Mutex<HashMap<String, HashMap<String, Arc<Concrete>>>>,
    src_tcp: Arc<TcpStats>,
    policy: Option<crate::policy::client::PolicyClient>,
    /// The clock of `Logical::last_used`.
    epoch: std::time::Instant,
}

/// The labels of `ep`'s series: `name` is the logical target's (Linkerd labels an
/// endpoint with its parent's name, so a TrafficSplit's backends count under the apex),
/// and `concrete` the authority `ep` was resolved from, which names its Service when
/// the controller's labels do not.
fn endpoint_labels(name: &str, concrete: &str, ep: &Endpoint, peer: Option<&str>) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![("direction", "outbound")];
    if let Some(p) = peer {
        pairs.push(("peer", p));
    }
    pairs.push(("authority", name));
    let target = ep.addr.to_string();
    pairs.push(("target_addr", &target));
    let id = ep.identity.as_ref().map(|i| i.to_string());
    match &id {
        Some(id) => {
            pairs.push(("tls", "true"));
            pairs.push(("server_id", id));
        }
        None => {
            pairs.push(("tls", "no_identity"));
            pairs.push(("no_tls_reason", "not_provided_by_service_discovery"));
        }
    }
    // `<service>.<namespace>.svc.<domain>:port` names the destination even when the
    // controller's metric labels do not.
    // A balancer resolved from an address (a cluster IP) takes its Service from the
    // logical name.
    let named = if concrete.contains(".svc.") {
        concrete
    } else {
        name
    };
    let mut svc = named.split_once(".svc.").map(|(s, _)| s.split('.'));
    let service = svc.as_mut().and_then(|n| n.next());
    let namespace = svc.as_mut().and_then(|n| n.next());
    let dst: Vec<(String, &str)> = ep
        .labels
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (format!("dst_{}", crate::metrics::label_name(k)), v.as_str()))
        .collect();
    let mut out = labels(&pairs);
    if let Some(s) = service
        && !ep.labels.contains_key("service")
    {
        out.push(',');
        out.push_str(&labels(&[("dst_service", s)]));
    }
    if let Some(n) = namespace
        && !ep.labels.contains_key("namespace")
    {
        out.push(',');
        out.push_str(&labels(&[("dst_namespace", n)]));
    }
    for (k, v) in &dst {
        out.push(',');
        out.push_str(&labels(&[(k.as_str(), v)]));
    }
    out
}

impl Outbound {
    /// The outbound proxy.
    pub fn new(
        cfg: OutboundConfig,
        resolver: Resolver,
        connector: Arc<Connector>,
        metrics: Arc<Registry>,
    ) -> Arc<Self> {
        Self::with_policy(cfg, resolver, connector, metrics, None)
    }

    /// The outbound proxy following `OutboundPolicies` through `policy` (routes, retries,
    /// timeouts, failure accrual).
    pub fn with_policy(
        cfg: OutboundConfig,
        resolver: Resolver,
        connector: Arc<Connector>,
        metrics: Arc<Registry>,
        policy: Option<crate::policy::client::PolicyClient>,
    ) -> Arc<Self> {
        let src_tcp = metrics.tcp(labels(&[("direction", "outbound"), ("peer", "src")]));
        let this = Arc::new(Self {
            cfg,
            resolver,
            connector,
            metrics,
            logicals: Mutex::new(HashMap::new()),
            concretes: Mutex::new(HashMap::new()),
            src_tcp,
            policy,
            epoch: std::time::Instant::now(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&this);
            let every = (this.cfg.idle_timeout / 2).max(Duration::from_millis(50));
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(this) = weak.upgrade() else { return };
                    this.evict_idle();
                }
            });
        }
        this
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Forgets targets idle for longer than the idle timeout that no connection holds,
    /// then the balancers that nothing holds and no request asked for within the idle
    /// timeout. Returns how many targets went.
    pub(crate) fn evict_idle(&self) -> usize {
        let now = self.now_ms();
        let idle = u64::try_from(self.cfg.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let gone: Vec<Arc<Logical>> = {
            let mut ls = self.logicals.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<String> = ls
                .iter()
                .filter(|(_, l)| {
                    Arc::strong_count(l) == 1
                        && now.saturating_sub(l.last_used.load(std::sync::atomic::Ordering::Relaxed)) >= idle
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| ls.remove(k)).collect()
        };
        let n = gone.len();
        if n > 0 {
            tracing::debug!(targets = n, "forgetting idle targets");
        }
        // Their profile tasks end when aborted; a balancer still held by a request in
        // flight goes at a later sweep.
        drop(gone);
        self.concretes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, by_name| {
                by_name.retain(|_, c| {
                    Arc::strong_count(c) > 1
                        || now.saturating_sub(c.last_used.load(std::sync::atomic::Ordering::Relaxed)) < idle
                });
                !by_name.is_empty()
            });
        n
    }

    /// How many targets and balancers are held (for tests and diagnostics).
    pub fn held(&self) -> (usize, usize) {
        (
            self.logicals.lock().unwrap_or_else(PoisonError::into_inner).len(),
            self.concretes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .map(HashMap::len)
                .sum(),
        )
    }

    /// The balancer of `authority` under the logical target named `name` (the name its
    /// endpoints' series carry).
    fn concrete(self: &Arc<Self>, name: &str, authority: &str) -> Arc<Concrete> {
        let now = self.now_ms();
        let mut c = self.concretes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(x) = c.get(name).and_then(|by| by.get(authority)) {
            x.last_used.store(now, std::sync::atomic::Ordering::Relaxed);
            return x.clone();
        }
        let metrics = self.metrics.clone();
        let (label, auth) = (name.to_string(), authority.to_string());
        let balancer = Balancer::new(self.resolver.resolve(authority), move |ep| EpValue {
            breaker: Default::default(),
            stats: metrics.http(endpoint_labels(&label, &auth, ep, None)),
            tcp: metrics.tcp(endpoint_labels(&label, &auth, ep, Some("dst"))),
            h1: OnceLock::new(),
            h2: OnceLock::new(),
        });
        let x = Arc::new(Concrete {
            balancer,
            last_used: std::sync::atomic::AtomicU64::new(now),
        });
        c.entry(name.to_string())
            .or_default()
            .insert(authority.to_string(), x.clone());
        x
    }

    fn logical(self: &Arc<Self>, authority: &str, fallback: Option<SocketAddr>) -> Arc<Logical> {
        if let Some(l) = self
            .logicals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(authority)
        {
            l.last_used
                .store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
            return l.clone();
        }
        let concretes: Split = Arc::default();
        let name: Arc<OnceLock<String>> = Arc::default();
        // The target's endpoint resolution starts together with its profile's, before the
        // balancer that uses it exists; the profile task lets it go once the profile has
        // answered (a split's apex is never resolved for itself).
        let mut warm = Some(self.resolver.resolve(authority));
        let profile = self.resolver.profile(authority);
        let profile_rx = profile.subscribe();
        let policy = self.policy.as_ref().map(|p| p.outbound(authority));
        // Requests wait (briefly) for the first profile answer so that a TrafficSplit
        // applies from the first request on, and so that their series carry the name the
        // profile gives the target.
        let (split_tx, split_ready) = tokio::sync::watch::channel(false);
        let task = {
            let this = Arc::downgrade(self);
            let (list, name) = (concretes.clone(), name.clone());
            let auth = authority.to_string();
            let mut rx = profile.subscribe();
            tokio::spawn(async move {
                let _keep = profile;
                loop {
                    let current = rx.borrow_and_update().clone();
                    if let Some(p) = current {
                        let Some(this) = this.upgrade() else { return };
                        let name = name.get_or_init(|| {
                            p.name
                                .as_deref()
                                .map_or_else(|| auth.clone(), |n| logical_name(n, &auth))
                        });
                        let next: Vec<(Arc<Concrete>, u32)> = if p.dst_overrides.is_empty() {
                            vec![(this.concrete(name, &auth), 1)]
                        } else {
                            p.dst_overrides
                                .iter()
                                .map(|(a, w)| (this.concrete(name, a), *w))
                                .collect()
                        };
                        *list.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
                        warm = None;
                        split_tx.send_replace(true);
                    }
                    if rx.changed().await.is_err() {
                        // No profile for this target (or the resolver is gone).
                        drop(warm);
                        split_tx.send_replace(true);
                        return;
                    }
                }
            })
            .abort_handle()
        };
        let l = Arc::new(Logical {
            authority: authority.to_string(),
            name,
            fallback,
            concretes,
            stats: OnceLock::new(),
            metrics: self.metrics.clone(),
            fallback_clients: Default::default(),
            split_ready,
            profile: profile_rx,
            policy,
            budget: Mutex::new(None),
            last_used: std::sync::atomic::AtomicU64::new(self.now_ms()),
            canonical: OnceLock::new(),
            route_series: Mutex::default(),
            task,
        });
        self.logicals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(authority.to_string())
            .or_insert(l)
            .clone()
    }

    /// The logical target's weighted concrete targets; the target itself when its
    /// profile has not answered (or has no split).
    fn split(self: &Arc<Self>, l: &Logical) -> Arc<Vec<(Arc<Concrete>, u32)>> {
        let list = l.concretes.read().unwrap_or_else(PoisonError::into_inner).clone();
        if !list.is_empty() {
            return list;
        }
        let mut w = l.concretes.write().unwrap_or_else(PoisonError::into_inner);
        if w.is_empty() {
            *w = Arc::new(vec![(self.concrete(l.name(), &l.authority), 1)]);
        }
        w.clone()
    }

    async fn pick_concrete(self: &Arc<Self>, l: &Logical) -> Arc<Concrete> {
        if !*l.split_ready.borrow() {
            let mut rx = l.split_ready.clone();
            // Without an answer in time, route to the target itself.
            let _ = tokio::time::timeout(DISCOVERY_WAIT, rx.wait_for(|r| *r)).await;
        }
        let list = self.split(l);
        if list.len() == 1 {
            return list[0].0.clone();
        }
        let weights: Vec<u32> = list.iter().map(|(_, w)| *w).collect();
        let i = balance::weighted(&weights, balance::random()).unwrap_or(0);
        list[i].0.clone()
    }

    /// The HTTP client of a picked endpoint for `app`, made on first use.
    fn endpoint_client(&self, ep: &balance::Balanced<EpValue>, app: Wire) -> Arc<HttpEndpoint> {
        let slot = if app == Wire::Http2 {
            &ep.value.h2
        } else {
            &ep.value.h1
        };
        slot.get_or_init(|| {
            let plan = plan(self.cfg.capture, &ep.endpoint, app, self.cfg.peer_inbound_port);
            Arc::new(HttpEndpoint::new(plan, self.connector.clone()).with_tcp(ep.value.tcp.clone()))
        })
        .clone()
    }

    /// The picked endpoint's client, connected. When connecting fails (before anything is
    /// sent) the endpoint is marked down and the balancer picks again — another endpoint
    /// of its tier, or of the next tier when its tier has none left (see
    /// [`crate::balance`]) — up to [`CONNECT_TRIES`] endpoints; then the last failure.
    async fn connected(
        &self,
        concrete: &Concrete,
        first: Arc<balance::Balanced<EpValue>>,
        app: Wire,
        usable: impl Fn(&balance::Balanced<EpValue>) -> bool,
    ) -> Result<(Arc<HttpEndpoint>, Arc<balance::Balanced<EpValue>>), ProxyError> {
        let mut ep = first;
        let mut tried = 0;
        loop {
            let client = self.endpoint_client(&ep, app);
            let err = match client.ensure_connected().await {
                Ok(()) => {
                    ep.mark_up();
                    return Ok((client, ep));
                }
                Err(e) => e,
            };
            ep.mark_down();
            if let Some(via) = ep.endpoint.via
                && err.fails_gateway_path(via)
            {
                let down = concrete.balancer.mark_down_via(via, ep.endpoint.link.as_ref());
                tracing::info!(entry = %via, endpoints = down, error = %err, "gateway path failed; its remote endpoints are down");
            }
            tried += 1;
            tracing::info!(endpoint = %ep.endpoint.addr, error = %err, "cannot connect; trying another endpoint");
            if tried >= CONNECT_TRIES {
                return Err(err);
            }
            match concrete.balancer.pick_where(Duration::ZERO, &usable).await {
                Ok(Pick::Endpoint(next)) if !next.is_down() => ep = next,
                _ => return Err(err),
            }
        }
    }

    /// The client of the original destination, for a target discovery does not know.
    async fn fallback_client(&self, l: &Logical, app: Wire) -> Result<Arc<HttpEndpoint>, ProxyError> {
        let slot = &l.fallback_clients[usize::from(app == Wire::Http2)];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let addr = self.fallback_addr(l).await?;
        Ok(slot
            .get_or_init(|| {
                let plan = ConnectPlan {
                    addr,
                    tls: None,
                    header: None,
                    wire: app,
                    gateway: None,
                };
                Arc::new(HttpEndpoint::new(plan, self.connector.clone()))
            })
            .clone())
    }

    async fn fallback_addr(&self, l: &Logical) -> Result<SocketAddr, ProxyError> {
        if self.cfg.ingress && l.fallback.is_none() {
            // A name from `l5d-dst-override` that discovery does not know: Linkerd's
            // ingress requires a profile for it, and never resolves it in DNS.
            return Err(ProxyError::Unreachable {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: format!(
                    "{} is not known to discovery; in ingress mode {DST_OVERRIDE_HEADER} must name a service of the mesh's clusters",
                    l.authority
                ),
            });
        }
        let addr = match l.fallback {
            Some(a) => a,
            None => tokio::net::lookup_host(l.authority.as_str())
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| ProxyError::Unreachable {
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                    reason: format!("{} is not known to discovery and does not resolve", l.authority),
                })?,
        };
        // `::ffff:127.0.0.1` is 127.0.0.1, and `0.0.0.0` (`::`) reaches this host.
        let ip = addr.ip().to_canonical();
        if ip.is_unspecified() {
            return Err(ProxyError::Unreachable {
                addr,
                reason: "refusing to forward to the unspecified address (it is this host)".into(),
            });
        }
        if self
            .cfg
            .own_addrs
            .iter()
            .any(|a| a.port() == addr.port() && (a.ip().to_canonical() == ip || a.ip().is_unspecified()))
        {
            return Err(ProxyError::Unreachable {
                addr,
                reason: "the target is this proxy itself; name the service in the request".into(),
            });
        }
        // Stock Linkerd refuses loopback targets (they would loop back into the proxy
        // under iptables); explicit mode's pods live on 127.x, so only transparent refuses.
        if self.cfg.capture == Capture::Transparent && ip.is_loopback() {
            return Err(ProxyError::Unreachable {
                addr,
                reason: "refusing to forward to a loopback address".into(),
            });
        }
        Ok(addr)
    }

    /// Proxies one HTTP request to its target.
    async fn http(
        self: &Arc<Self>,
        l: &Arc<Logical>,
        req: Request<Incoming>,
        app: Wire,
    ) -> Response<RspBody> {
        let grpc = crate::client::is_grpc_call(&req);
        if let Some(policy) = self.policy_of(l).await {
            let mut req = req;
            return match self.plan(l, &policy, &mut req).await {
                route::Plan::Respond(rsp) => *rsp,
                route::Plan::Forward(f) => self.execute(l, *f, req, app).await,
            };
        }
        let start = Instant::now();
        let concrete = self.pick_concrete(l).await;
        let (client, stats, ewma_ep) = match concrete.balancer.pick(DISCOVERY_WAIT).await {
            Pick::Endpoint(ep) => match self.connected(&concrete, ep, app, |_| true).await {
                Ok((client, ep)) => (client, ep.value.stats.clone(), Some(ep)),
                Err(e) => return self.error(l.stats(), start, grpc, e),
            },
            Pick::Unknown => {
                let client = match self.fallback_client(l, app).await {
                    Ok(c) => c,
                    Err(e) => return self.error(l.stats(), start, grpc, e),
                };
                (client, l.stats().clone(), None)
            }
            Pick::NoEndpoints => {
                return self.error(
                    l.stats(),
                    start,
                    grpc,
                    ProxyError::NoEndpoints(l.authority.clone()),
                );
            }
            Pick::Pending => {
                return self.error(l.stats(), start, grpc, ProxyError::Discovery(l.authority.clone()));
            }
        };
        stats.request();
        let in_flight = ewma_ep.as_ref().map(|e| e.ewma.start());
        let mut req = req;
        if ewma_ep.as_ref().is_some_and(|e| e.endpoint.identity.is_some()) {
            l.set_canonical(req.headers_mut());
        }
        let version = req.version();
        let sent = client.send(req);
        let result = match self.cfg.request_timeout {
            Some(t) => tokio::time::timeout(t, sent)
                .await
                .unwrap_or(Err(ProxyError::Timeout(t))),
            None => sent.await,
        };
        if let Some(f) = in_flight {
            f.observe();
        }
        match result {
            Ok(rsp) => {
                let (mut parts, body) = Classified::response(rsp, stats, grpc, start.elapsed()).into_parts();
                parts.version = version;
                Response::from_parts(parts, Either::Left(body))
            }
            Err(e) => {
                tracing::info!(authority = %l.authority, error = %e, "request failed");
                let rsp = e.response_for(grpc);
                stats.answered(&rsp, grpc, start.elapsed());
                rsp
            }
        }
    }

    fn error(&self, stats: &HttpStats, start: Instant, grpc: bool, e: ProxyError) -> Response<RspBody> {
        stats.request();
        let rsp = e.response_for(grpc);
        stats.answered(&rsp, grpc, start.elapsed());
        tracing::info!(error = %e, "answering with {}", rsp.status());
        rsp
    }

    /// Whether discovery marks the target opaque: its profile's `opaque_protocol`, or an
    /// `OutboundPolicies` answer whose protocol is opaque (waiting briefly, for both
    /// answers at once, as every first request to a target does).
    async fn marked_opaque(&self, l: &Logical) -> bool {
        let profile = async {
            if !*l.split_ready.borrow() {
                let mut rx = l.split_ready.clone();
                let _ = tokio::time::timeout(DISCOVERY_WAIT, rx.wait_for(|r| *r)).await;
            }
            l.profile.borrow().as_ref().is_some_and(|p| p.opaque)
        };
        let policy = async {
            match &l.policy {
                Some(w) => matches!(
                    w.ready(DISCOVERY_WAIT).await,
                    crate::policy::client::Known::Some(p) if p.protocol == crate::policy::outbound::Protocol::Opaque
                ),
                None => false,
            }
        };
        let (by_profile, by_policy) = tokio::join!(profile, policy);
        by_profile || by_policy
    }

    /// The balancer an opaque connection goes to: the profile's split when the profile
    /// has one (a ServiceProfile's `dstOverrides` win over the policy, as in Linkerd),
    /// else a weighted pick among the policy's opaque backends when it names them (a
    /// TCPRoute's, or a TrafficSplit's), else the target itself.
    async fn opaque_concrete(self: &Arc<Self>, l: &Arc<Logical>) -> Result<Arc<Concrete>, ProxyError> {
        let split = self.pick_concrete(l).await;
        if l.profile
            .borrow()
            .as_ref()
            .is_some_and(|p| !p.dst_overrides.is_empty())
        {
            return Ok(split);
        }
        if let Some(w) = &l.policy
            && let crate::policy::client::Known::Some(p) = w.ready(DISCOVERY_WAIT).await
            && !p.opaque.is_empty()
        {
            let weights: Vec<u32> = p.opaque.iter().map(|b| b.weight).collect();
            let chosen =
                balance::weighted(&weights, balance::random()).and_then(|i| p.opaque[i].authority.as_deref());
            return match chosen {
                Some(a) => Ok(self.concrete(l.name(), a)),
                None => Err(ProxyError::Unreachable {
                    addr: l.fallback.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                    reason: format!(
                        "the opaque route of {}'s policy has no usable backend",
                        l.authority
                    ),
                }),
            };
        }
        Ok(split)
    }

    /// Opens an opaque connection to `authority`'s endpoint (or its original address).
    async fn connect_opaque(self: &Arc<Self>, l: &Arc<Logical>) -> Result<BoxIo, ProxyError> {
        let concrete = self.opaque_concrete(l).await?;
        match concrete.balancer.pick(DISCOVERY_WAIT).await {
            Pick::Endpoint(ep) => {
                let plan = plan(
                    self.cfg.capture,
                    &ep.endpoint,
                    Wire::Opaque,
                    self.cfg.peer_inbound_port,
                );
                let io = self.connector.connect(&plan).await?;
                Ok(Box::new(CountingIo::new(io, ep.value.tcp.clone())))
            }
            Pick::Unknown => {
                let addr = self.fallback_addr(l).await?;
                let plan = ConnectPlan {
                    addr,
                    tls: None,
                    header: None,
                    wire: Wire::Opaque,
                    gateway: None,
                };
                self.connector.connect(&plan).await
            }
            Pick::NoEndpoints => Err(ProxyError::NoEndpoints(l.authority.clone())),
            Pick::Pending => Err(ProxyError::Discovery(l.authority.clone())),
        }
    }

    /// Serves one accepted connection from the application.
    pub async fn handle(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, drain: Drain) {
        let orig_dst = match self.cfg.capture {
            Capture::Transparent => match crate::original_dst(&tcp) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "no original destination; is iptables redirecting to this port?");
                    return;
                }
            },
            Capture::Explicit => None,
        };
        let mut io = CountingIo::new(tcp, self.src_tcp.clone());
        let fixed = orig_dst.map(|a| self.logical(&a.to_string(), Some(a)));
        // Discovery first, as Linkerd does: a target marked opaque (`opaque-ports`, the
        // default opaque ports) skips detection, so a protocol whose server speaks first
        // (MySQL, SMTP, …) does not wait out the detection timeout.
        // Linkerd's ingress mode always detects: an HTTP request may name another target.
        if let Some(l) = &fixed
            && !self.cfg.ingress
            && self.marked_opaque(l).await
        {
            if let Err(e) = self.opaque(io, l).await {
                tracing::info!(%peer, error = %e, "opaque connection failed");
            }
            return;
        }
        let mut buf = BytesMut::new();
        let proto = match detect::read_and_detect(&mut io, &mut buf, false, self.cfg.detect_timeout).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection failed during detection");
                return;
            }
        };
        let io = PrefixedIo::new(buf, io);
        match proto {
            Protocol::Http1 | Protocol::Http2 => {
                let wire = if proto == Protocol::Http2 {
                    Wire::Http2
                } else {
                    Wire::Http1
                };
                self.serve_http(io, wire, fixed, drain).await;
            }
            Protocol::Opaque | Protocol::Tls => match fixed {
                Some(l) => {
                    if let Err(e) = self.opaque(io, &l).await {
                        tracing::info!(%peer, error = %e, "opaque connection failed");
                    }
                }
                None => tracing::info!(
                    %peer,
                    "explicit mode: a non-HTTP connection must start with CONNECT host:port; closing"
                ),
            },
        }
    }

    async fn opaque<I: crate::client::Io>(
        self: &Arc<Self>,
        mut io: I,
        l: &Arc<Logical>,
    ) -> Result<(), ProxyError> {
        let mut upstream = self.connect_opaque(l).await?;
        let _ = tokio::io::copy_bidirectional(&mut io, &mut upstream).await;
        Ok(())
    }

    async fn serve_http<I: crate::client::Io>(
        self: Arc<Self>,
        io: I,
        wire: Wire,
        fixed: Option<Arc<Logical>>,
        drain: Drain,
    ) {
        let last: Arc<LastTarget> = Arc::default();
        let this = self.clone();
        let svc = move |req: Request<Incoming>| {
            let this = this.clone();
            let fixed = fixed.clone();
            let last = last.clone();
            async move { Ok::<_, Infallible>(this.route(req, wire, fixed, &last).await) }
        };
        crate::server::serve_http(
            io,
            wire == Wire::Http2,
            crate::server::Client::App,
            svc,
            &self.cfg.limits,
            &drain,
        )
        .await;
    }

    async fn route(
        self: &Arc<Self>,
        req: Request<Incoming>,
        wire: Wire,
        fixed: Option<Arc<Logical>>,
        last: &LastTarget,
    ) -> Response<RspBody> {
        // An ingress-mode request naming its target goes there; any other goes to its
        // connection's original destination (transparent), or to its authority (explicit).
        let mut req = req;
        let named = if self.cfg.ingress {
            match dst_override(&req) {
                Ok(n) => n,
                Err(e) => return e.response_for(crate::client::is_grpc_call(&req)),
            }
        } else {
            None
        };
        if named.is_some() {
            // Spent here, as Linkerd's ingress strips it.
            req.headers_mut().remove(DST_OVERRIDE_HEADER);
        }
        let l = match (named.as_deref(), fixed) {
            (None, Some(l)) => l,
            (named, _) => {
                let Some(raw) = named.or_else(|| raw_authority(&req)) else {
                    let e = ProxyError::BadRequest(
                        "the request names no target: no authority and no Host header".into(),
                    );
                    return e.response_for(crate::client::is_grpc_call(&req));
                };
                // Most connections name one target: compare the raw name with the last
                // one before normalizing (no allocation on the hot path).
                let cached = last
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .filter(|(r, _)| r == raw)
                    .map(|(_, l)| l.clone());
                match cached {
                    Some(l) => l,
                    None => {
                        let l = self.logical(&target_of(raw), None);
                        *last.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some((raw.to_string(), l.clone()));
                        l
                    }
                }
            }
        };
        // Plain CONNECT opens a tunnel to its target; an extended CONNECT (a `:protocol`,
        // RFC 8441) is a request to the target's application, routed like any other.
        if req.method() == Method::CONNECT && !crate::extended_connect::is_extended_connect(&req) {
            return self.connect_tunnel(req, l).await;
        }
        self.http(&l, req, wire).await
    }

    /// `CONNECT host:port`: an opaque tunnel through the mesh (explicit mode's way to
    /// carry non-HTTP traffic).
    async fn connect_tunnel(self: &Arc<Self>, req: Request<Incoming>, l: Arc<Logical>) -> Response<RspBody> {
        let upstream = match self.connect_opaque(&l).await {
            Ok(u) => u,
            Err(e) => return e.response(),
        };
        let guard = crate::server::tunnel_guard(&req);
        tokio::spawn(async move {
            let _guard = guard;
            match hyper::upgrade::on(req).await {
                Ok(up) => {
                    let mut up = TokioIo::new(up);
                    let mut upstream = upstream;
                    let _ = tokio::io::copy_bidirectional(&mut up, &mut upstream).await;
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        let mut rsp = Response::new(Either::Right(Full::default()));
        *rsp.status_mut() = StatusCode::OK;
        rsp
    }
}

#[cfg(test)]
mod tests;
