//! How the ingress role finds a local endpoint for a stream's target.
//!
//! The trait is deliberately small: one target in, one endpoint (or a typed
//! reason) out. [`StaticResolver`] serves tests and `strait gateway --target`;
//! [`DestinationResolver`] asks the local controller's `Destination/Get` (through the
//! proxy crate's cached [`strait_proxy::discovery::Resolver`]); [`Chain`] tries one
//! resolver, then the next.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use strait_identity::IdentityName;
use strait_proxy::discovery::{self, Resolution as Found, Watch};

use crate::proto::header::{Authority, RefusalReason, Target};

/// A local endpoint to deliver a stream to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The endpoint's mesh identity, when known; checked against the identity
    /// the client expects.
    pub identity: Option<IdentityName>,
    /// The application port behind `addr` when `addr` is the endpoint's proxy
    /// (told to the opener in the acceptance; see `proto::header`).
    pub app_port: Option<u16>,
}

/// Why a target has no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such service here.
    #[error("no service {0} in this cluster")]
    UnknownTarget(String),
    /// The service exists but has no ready endpoint.
    #[error("service {0} has no ready endpoints")]
    NoEndpoints(String),
    /// The local Destination service did not answer in time.
    #[error("discovery of {0} did not answer in time; is the controller's Destination service up?")]
    Unavailable(String),
    /// The service has ready endpoints, but none has the identity the client expects.
    #[error("no ready endpoint of {target} has the expected identity {expected} (found: {found})")]
    IdentityMismatch {
        /// The target.
        target: String,
        /// The identity the client expects.
        expected: String,
        /// The identities the endpoints have.
        found: String,
    },
}

impl ResolveError {
    /// The refusal sent back over the link.
    pub fn refusal(&self) -> RefusalReason {
        match self {
            ResolveError::UnknownTarget(_) => RefusalReason::UnknownTarget,
            ResolveError::NoEndpoints(_) | ResolveError::Unavailable(_) => RefusalReason::NoEndpoints,
            ResolveError::IdentityMismatch { .. } => RefusalReason::IdentityMismatch,
        }
    }
}

/// A boxed resolution, so resolvers can be held as `Arc<dyn Resolve>`.
pub type Resolution<'a> = Pin<Box<dyn Future<Output = Result<Endpoint, ResolveError>> + Send + 'a>>;

/// Picks a local endpoint for a target.
pub trait Resolve: Send + Sync + 'static {
    /// One endpoint for `target` (balancing is the resolver's business).
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a>;
}

/// A fixed table of `authority:port` → endpoint.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    table: HashMap<(Authority, u16), Endpoint>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the endpoint for `authority:port`.
    pub fn insert(&mut self, authority: Authority, port: u16, endpoint: Endpoint) -> &mut Self {
        self.table.insert((authority, port), endpoint);
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a> {
        let found = self
            .table
            .get(&(target.authority.clone(), target.port))
            .cloned()
            .ok_or_else(|| ResolveError::UnknownTarget(target.to_string()));
        Box::pin(std::future::ready(found))
    }
}

/// Tries each resolver in turn: the first answer other than
/// [`ResolveError::UnknownTarget`] wins (static `--target` entries before discovery).
pub struct Chain(pub Vec<Arc<dyn Resolve>>);

impl Resolve for Chain {
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a> {
        Box::pin(async move {
            let mut last = ResolveError::UnknownTarget(target.to_string());
            for r in &self.0 {
                match r.resolve(target).await {
                    Err(e @ ResolveError::UnknownTarget(_)) => last = e,
                    other => return other,
                }
            }
            Err(last)
        })
    }
}

/// Picks the endpoint a stream for `target` goes to (pure): the eligible endpoint the
/// target names ([`Target::endpoint`], a client balancing over this service's endpoints
/// itself), else the `n`th in a round-robin over the eligible ones (also when the named
/// endpoint is gone or not eligible: the client's view may lag, and any eligible
/// endpoint serves the stream correctly).
///
/// Eligible: every ready endpoint, or when the client expects an identity, those
/// with that identity (a service whose pods run under several service accounts
/// still serves the clients that expect one of them). A meshed endpoint is dialed
/// at its proxy's inbound port (the opaque-transport hint's port, else
/// `inbound_port` for clusters whose pods are not behind iptables, else the
/// address itself, which iptables hands to the proxy), and the acceptance names
/// the application port.
pub fn pick(
    target: &Target,
    found: &Found,
    n: usize,
    inbound_port: Option<u16>,
) -> Result<Endpoint, ResolveError> {
    let endpoints = match found {
        Found::Pending => return Err(ResolveError::Unavailable(target.to_string())),
        Found::Unknown => return Err(ResolveError::UnknownTarget(target.to_string())),
        Found::Endpoints(e) => e,
    };
    // An endpoint behind this cluster's own gateway entry (a mirror of yet another
    // cluster) is never a delivery target: streams do not chain through clusters.
    let local: Vec<&discovery::Endpoint> = endpoints.values().filter(|e| e.gateway.is_none()).collect();
    if local.is_empty() {
        return Err(ResolveError::NoEndpoints(target.to_string()));
    }
    let eligible: Vec<&discovery::Endpoint> = local
        .iter()
        .copied()
        .filter(|e| target.identity.is_none() || e.identity == target.identity)
        .collect();
    if eligible.is_empty() {
        let mut found: Vec<String> = local
            .iter()
            .map(|e| e.identity.as_ref().map_or("none".to_string(), |i| i.to_string()))
            .collect();
        found.sort();
        found.dedup();
        return Err(ResolveError::IdentityMismatch {
            target: target.to_string(),
            expected: target
                .identity
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_default(),
            found: found.join(", "),
        });
    }
    let named = target
        .endpoint
        .and_then(|ip| eligible.iter().copied().find(|e| e.addr.ip() == ip));
    let ep = named.unwrap_or(eligible[n % eligible.len()]);
    let proxy_port = ep
        .identity
        .as_ref()
        .and(ep.opaque_transport_port.or(inbound_port));
    Ok(Endpoint {
        addr: SocketAddr::new(ep.addr.ip(), proxy_port.unwrap_or(ep.addr.port())),
        identity: ep.identity.clone(),
        app_port: Some(ep.addr.port()),
    })
}

/// How long a stream waits for discovery's first answer about a new target.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(3);

/// Resolves through the local controller's `Destination/Get`
/// (`strait gateway --destination-addr`).
///
/// Invariants: a target's watch stays open while streams keep asking for it, so they
/// pick from a live endpoint set without a round trip; a watch no stream has asked for
/// during the idle timeout is closed (at the next resolution), and a target discovery
/// does not know is forgotten at once, so peers naming arbitrary authorities hold no
/// watches.
pub struct DestinationResolver {
    discovery: discovery::Resolver,
    watches: Mutex<Watches>,
    next: AtomicUsize,
    inbound_port: Option<u16>,
    idle: Duration,
}

/// The open watches, when each was last asked for, and when they were last swept.
struct Watches {
    held: HashMap<String, (Arc<Watch<Found>>, tokio::time::Instant)>,
    swept: tokio::time::Instant,
}

/// How long a target's watch stays open without a stream asking for it (Linkerd's
/// inbound discovery idle timeout).
pub const DISCOVERY_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

impl DestinationResolver {
    /// A resolver asking the Destination service at `addr` (`host:port`, plaintext,
    /// connected lazily); `inbound_port` is where meshed endpoints' proxies listen when
    /// nothing redirects to them (explicit capture), else `None`.
    pub fn new(addr: &str, inbound_port: Option<u16>) -> Result<Self, String> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("{addr:?} is not a host:port address ({e})"))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self::from_channel(channel, inbound_port))
    }

    /// A resolver over an existing channel to the Destination service, e.g. mutual TLS
    /// verifying the controller's identity (`strait_proxy::control::channel`).
    pub fn from_channel(channel: tonic::transport::Channel, inbound_port: Option<u16>) -> Self {
        Self {
            discovery: discovery::Resolver::new(
                channel,
                crate::gateway::GATEWAY_NAMESPACE,
                crate::gateway::GATEWAY_SERVICE_ACCOUNT,
            ),
            watches: Mutex::new(Watches {
                held: HashMap::new(),
                swept: tokio::time::Instant::now(),
            }),
            next: AtomicUsize::new(0),
            inbound_port,
            idle: DISCOVERY_IDLE_TIMEOUT,
        }
    }

    /// Closes watches unused for `idle` instead of [`DISCOVERY_IDLE_TIMEOUT`].
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// How many targets are watched.
    pub fn watched(&self) -> usize {
        self.watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
            .len()
    }

    fn watch(&self, key: &str) -> Arc<Watch<Found>> {
        let now = tokio::time::Instant::now();
        let mut w = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(w.swept) >= self.idle / 2 {
            let idle = self.idle;
            w.held.retain(|_, (_, used)| now.duration_since(*used) < idle);
            w.swept = now;
        }
        let entry = w
            .held
            .entry(key.to_string())
            .or_insert_with(|| (self.discovery.resolve(key), now));
        entry.1 = now;
        entry.0.clone()
    }
}

impl Resolve for DestinationResolver {
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a> {
        Box::pin(async move {
            let key = target.to_string();
            let watch = self.watch(&key);
            let mut rx = watch.subscribe();
            let _ = tokio::time::timeout(DISCOVERY_WAIT, rx.wait_for(|r| *r != Found::Pending)).await;
            let found = rx.borrow().clone();
            if found == Found::Unknown {
                self.watches
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .held
                    .remove(&key);
            }
            pick(
                target,
                &found,
                self.next.fetch_add(1, Ordering::Relaxed),
                self.inbound_port,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    /// Watches nobody asks for during the idle timeout are closed; asked-for ones stay.
    #[tokio::test(start_paused = true)]
    async fn idle_watches_are_closed() {
        use super::*;
        // Nothing listens there: every watch stays pending, which is all this needs.
        let r = DestinationResolver::new("127.0.0.1:9", None)
            .unwrap()
            .with_idle_timeout(Duration::from_secs(10));
        let target = |name: &str| Target {
            authority: Authority::new(name.to_string()).unwrap(),
            port: 80,
            protocol: crate::proto::header::Protocol::Opaque,
            identity: None,
            endpoint: None,
        };
        let (a, b) = (target("a.ns.svc.cluster.local"), target("b.ns.svc.cluster.local"));
        assert!(r.resolve(&a).await.is_err());
        assert!(r.resolve(&b).await.is_err());
        assert_eq!(r.watched(), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(r.resolve(&b).await.is_err());
        tokio::time::advance(Duration::from_secs(6)).await;
        // a: unused for 15 s (closed); b: asked for 9 s ago (kept).
        assert!(r.resolve(&b).await.is_err());
        assert_eq!(r.watched(), 1);
        assert!(r.resolve(&a).await.is_err());
        assert_eq!(r.watched(), 2, "a target asked for again is watched again");
    }

    use super::*;
    use crate::proto::header::{Authority, Protocol};

    fn id(sa: &str) -> IdentityName {
        IdentityName::new(sa, "production", "cluster.local").unwrap()
    }

    fn ep(addr: &str, identity: Option<&str>, opaque: Option<u16>) -> discovery::Endpoint {
        discovery::Endpoint {
            addr: addr.parse().unwrap(),
            weight: 1,
            identity: identity.map(id),
            h2: identity.is_some(),
            opaque_transport_port: opaque,
            labels: BTreeMap::new(),
            gateway: None,
            via: None,
            link: None,
            authority_override: None,
        }
    }

    fn found(eps: Vec<discovery::Endpoint>) -> Found {
        Found::Endpoints(Arc::new(eps.into_iter().map(|e| (e.addr, e)).collect()))
    }

    fn target(identity: Option<&str>) -> Target {
        Target {
            authority: Authority::new("myapp.production.svc.cluster.local").unwrap(),
            port: 80,
            protocol: Protocol::Http2,
            identity: identity.map(id),
            endpoint: None,
        }
    }

    #[test]
    fn picks_dial_the_proxy_and_name_the_app_port() {
        let cases: Vec<(Option<u16>, Option<u16>, &str)> = vec![
            // Transparent cluster: the address itself (iptables redirects to the proxy).
            (None, None, "10.0.0.1:8080"),
            // The opaque-transport hint names the proxy's inbound port.
            (Some(4143), None, "10.0.0.1:4143"),
            // Explicit cluster: the configured inbound port.
            (None, Some(4143), "10.0.0.1:4143"),
            (Some(4200), Some(4143), "10.0.0.1:4200"),
        ];
        for (opaque, inbound, want) in cases {
            let f = found(vec![ep("10.0.0.1:8080", Some("myapp"), opaque)]);
            let e = pick(&target(Some("myapp")), &f, 0, inbound).unwrap();
            assert_eq!(e.addr.to_string(), want, "{opaque:?} {inbound:?}");
            assert_eq!(e.app_port, Some(8080));
            assert_eq!(e.identity, Some(id("myapp")));
        }
        // Unmeshed endpoints are dialed as they are, whatever the inbound port.
        let f = found(vec![ep("10.0.0.1:8080", None, None)]);
        let e = pick(&target(None), &f, 0, Some(4143)).unwrap();
        assert_eq!(e.addr.to_string(), "10.0.0.1:8080");
    }

    #[test]
    fn picks_round_robin_over_endpoints_with_the_expected_identity() {
        let f = found(vec![
            ep("10.0.0.1:8080", Some("myapp"), None),
            ep("10.0.0.2:8080", Some("other"), None),
            ep("10.0.0.3:8080", Some("myapp"), None),
        ]);
        let picked: Vec<String> = (0..4)
            .map(|n| {
                pick(&target(Some("myapp")), &f, n, None)
                    .unwrap()
                    .addr
                    .to_string()
            })
            .collect();
        assert_eq!(
            picked,
            ["10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.1:8080", "10.0.0.3:8080"]
        );
        // Without an expectation every endpoint takes its turn.
        let all: std::collections::BTreeSet<String> = (0..3)
            .map(|n| pick(&target(None), &f, n, None).unwrap().addr.to_string())
            .collect();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn a_named_endpoint_is_picked_while_it_is_eligible() {
        let f = found(vec![
            ep("10.0.0.1:8080", Some("myapp"), None),
            ep("10.0.0.2:8080", Some("other"), None),
            ep("10.0.0.3:8080", Some("myapp"), None),
        ]);
        let named = |ip: &str| Target {
            endpoint: Some(ip.parse().unwrap()),
            ..target(Some("myapp"))
        };
        for n in 0..4 {
            let e = pick(&named("10.0.0.3"), &f, n, None).unwrap();
            assert_eq!(e.addr.to_string(), "10.0.0.3:8080", "turn {n}");
        }
        // Gone, or not of the expected identity: the round robin over eligible ones.
        for gone in ["10.0.0.9", "10.0.0.2"] {
            let picked: std::collections::BTreeSet<String> = (0..2)
                .map(|n| pick(&named(gone), &f, n, None).unwrap().addr.to_string())
                .collect();
            assert_eq!(
                picked,
                ["10.0.0.1:8080", "10.0.0.3:8080"].map(String::from).into(),
                "{gone}"
            );
        }
    }

    #[test]
    fn failures_are_typed_refusals() {
        let t = target(Some("myapp"));
        let cases = [
            (pick(&t, &Found::Unknown, 0, None), RefusalReason::UnknownTarget),
            (pick(&t, &Found::Pending, 0, None), RefusalReason::NoEndpoints),
            (pick(&t, &found(vec![]), 0, None), RefusalReason::NoEndpoints),
            (
                pick(
                    &t,
                    &found(vec![discovery::Endpoint {
                        gateway: Some(t.clone()),
                        ..ep("10.0.0.9:4180", Some("myapp"), None)
                    }]),
                    0,
                    None,
                ),
                RefusalReason::NoEndpoints,
            ),
            (
                pick(
                    &t,
                    &found(vec![ep("10.0.0.2:8080", Some("other"), None)]),
                    0,
                    None,
                ),
                RefusalReason::IdentityMismatch,
            ),
        ];
        for (got, reason) in cases {
            let e = got.unwrap_err();
            assert_eq!(e.refusal(), reason, "{e}");
        }
        let e = pick(
            &t,
            &found(vec![ep("10.0.0.2:8080", Some("other"), None)]),
            0,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("other.production.serviceaccount"), "{e}");
    }

    #[tokio::test]
    async fn a_chain_falls_through_unknown_targets_only() {
        let mut table = StaticResolver::new();
        let endpoint = Endpoint {
            addr: "127.0.0.1:1".parse().unwrap(),
            identity: None,
            app_port: None,
        };
        table.insert(Authority::new("known").unwrap(), 80, endpoint.clone());
        let chain = Chain(vec![Arc::new(StaticResolver::new()), Arc::new(table)]);
        let known = Target {
            authority: Authority::new("known").unwrap(),
            ..target(None)
        };
        assert_eq!(chain.resolve(&known).await.unwrap(), endpoint);
        let e = chain.resolve(&target(None)).await.unwrap_err();
        assert_eq!(e.refusal(), RefusalReason::UnknownTarget);
    }
}
