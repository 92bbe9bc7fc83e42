//! Discovery: `Destination/Get` and `GetProfile` watches, one per target authority,
//! shared by every connection and request to it, following updates live.
//!
//! Invariants: the cache holds weak references, so a watch lives exactly as long as
//! someone uses it and its stream task is aborted with its last user; a watch's value is
//! only replaced by applying an update to the previous one ([`apply`], pure), except on
//! re-connection, where the controller sends a full snapshot and the state is reset.
//! Streams that end or fail are re-opened with exponential backoff (100 ms … 10 s); an
//! `InvalidArgument` answer means the controller cannot name that target, which is final
//! ("forward to the original address").
//!
//! # Endpoints behind a gateway's proxy entry
//! Linkerd's proto has no field saying "this endpoint is a Strait gateway's proxy entry":
//! the controller marks such endpoints with the metric label
//! [`GATEWAY_ENTRY_LABEL`]`=`[`GATEWAY_ENTRY_V1`] (a stock linkerd2-proxy only adds a
//! `dst_strait_gateway_entry` label to its metrics) and names the remote service in
//! `authority_override`. Such an endpoint carries [`Endpoint::gateway`], the `strt` open
//! request the proxy sends before its TLS ClientHello; the label itself is dropped.
//!
//! When the mirror knows the remote service's endpoints, the controller sends one such
//! endpoint per remote endpoint instead: its address is the remote endpoint's (as the
//! remote cluster knows it; distinct, so Linkerd's add/remove by address still works),
//! and [`GATEWAY_VIA_LABEL`] gives the entry to dial. The `strt` open then names that
//! endpoint ([`Target::endpoint`]), so the balancer spreads requests over the remote
//! endpoints with one connection each, as it does over local ones.
//!
//! When the entry serves every link of its gateway, [`GATEWAY_LINK_LABEL`] names the link
//! (the linked cluster) the `strt` request must name ([`Endpoint::link`]).
//!
//! The controller hands such endpoints only to proxies that can use them: every request
//! carries [`STRAIT_CONTEXT_KEY`]`:`[`STRAIT_CONTEXT_VERSION`] in its `context_token` (the JSON
//! Linkerd's proxies send with their namespace and pod), and stock proxies, which lack it,
//! get Linkerd's remote-gateway endpoint instead.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use linkerd2_proxy_api::destination::{
    self as pb, GetDestination, destination_client::DestinationClient, update::Update as U,
};
use strait_identity::IdentityName;
use tokio::sync::watch;

use crate::stream_header::{Authority, LinkName, Protocol, Target};

/// The metric label that marks an endpoint as a Strait gateway's proxy entry.
pub const GATEWAY_ENTRY_LABEL: &str = "strait_gateway_entry";
/// The metric label giving the gateway proxy entry to dial for a remote endpoint
/// (`ip:port`); the endpoint's own address is the remote endpoint's.
pub const GATEWAY_VIA_LABEL: &str = "strait_gateway_via";
/// The metric label giving the link to name at a gateway's proxy entry that serves every
/// link of its gateway (`strt` version 3): the linked cluster's name.
pub const GATEWAY_LINK_LABEL: &str = "strait_gateway_link";
/// The metric label giving an endpoint's failover tier (the controller's
/// `discovery::model::TIER_LABEL`): the balancer sends to the lowest tier that has a
/// usable endpoint. Without it an endpoint is tier 0.
pub const TIER_LABEL: &str = "strait_tier";
/// The tier of a federated Service's remote members (tier 1).
pub const TIER_REMOTE: &str = "remote";
/// The marker's value for the `strt` v1 exchange.
pub const GATEWAY_ENTRY_V1: &str = "strt-v1";
/// The `context_token` key by which this proxy tells Destination it speaks `strt`.
pub const STRAIT_CONTEXT_KEY: &str = "strait";
/// Its value: this proxy speaks `strt`, dials remote endpoints at the entry their
/// [`GATEWAY_VIA_LABEL`] names (`v1` proxies did not know that label: the controller
/// gives them the entry itself), and names the link [`GATEWAY_LINK_LABEL`] gives (`v2`
/// proxies did not: the controller gives them Linkerd's gateway endpoint instead of an
/// entry of every link).
pub const STRAIT_CONTEXT_VERSION: &str = "v3";

/// The `context_token` of every request: Linkerd's fields, and the Strait marker.
/// `namespace` and `pod` are identity parts (DNS labels), so nothing needs escaping.
pub fn context_token(namespace: &str, pod: &str) -> String {
    format!(
        "{{\"ns\":\"{namespace}\",\"nodeName\":\"\",\"pod\":\"{pod}\",\"{STRAIT_CONTEXT_KEY}\":\"{STRAIT_CONTEXT_VERSION}\"}}"
    )
}
use tonic::transport::Channel;

/// One endpoint as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Where the workload listens.
    pub addr: SocketAddr,
    /// Relative weight.
    pub weight: u32,
    /// Its proxy's identity: meshed endpoints get mTLS.
    pub identity: Option<IdentityName>,
    /// Its proxy accepts HTTP/2 (every meshed endpoint).
    pub h2: bool,
    /// Opaque traffic goes to this inbound port with a transport header.
    pub opaque_transport_port: Option<u16>,
    /// Metric labels (`pod`, `deployment`, `serviceaccount`, `namespace`, …).
    pub labels: BTreeMap<String, String>,
    /// For a gateway's proxy entry: where the remote gateway is to deliver (the
    /// `authority_override`, with the endpoint's identity; the protocol is the plan's).
    pub gateway: Option<Target>,
    /// For a remote endpoint reached through a gateway's proxy entry: the entry to dial
    /// (`addr` is then the remote endpoint's address, which `gateway` names).
    pub via: Option<SocketAddr>,
    /// For a gateway's proxy entry that serves every link: the link to name there. With
    /// [`Endpoint::via`] it makes the endpoint's path: one entry, one link, one cluster.
    pub link: Option<LinkName>,
    /// Linkerd's `authority_override` on any other endpoint (a Linkerd multicluster
    /// gateway): the service `name` and `port` its transport header must carry.
    pub authority_override: Option<(String, u16)>,
}

impl Endpoint {
    /// Its failover tier: 0 (local) unless [`TIER_LABEL`] says [`TIER_REMOTE`] (1).
    pub fn tier(&self) -> u8 {
        u8::from(self.labels.get(TIER_LABEL).map(String::as_str) == Some(TIER_REMOTE))
    }
}

/// The `strt` target of a marked endpoint: `authority_override` as `name:port`.
fn gateway_target(
    authority: &str,
    identity: Option<&IdentityName>,
    endpoint: Option<IpAddr>,
) -> Option<Target> {
    let (name, port) = authority.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    Some(Target {
        authority: Authority::new(name.trim_end_matches('.').to_ascii_lowercase()).ok()?,
        port,
        protocol: Protocol::Opaque,
        identity: identity.cloned(),
        endpoint,
    })
}

/// What is known about a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No answer yet.
    Pending,
    /// The control plane does not know the target: forward to its original address.
    Unknown,
    /// The target's current endpoints (possibly none).
    Endpoints(Arc<BTreeMap<SocketAddr, Endpoint>>),
}

fn endpoint(addr: pb::WeightedAddr, set_labels: &HashMap<String, String>) -> Option<Endpoint> {
    let tcp = addr.addr?;
    let ip = IpAddr::try_from(tcp.ip?).ok()?;
    let port = u16::try_from(tcp.port).ok()?;
    let identity = addr.tls_identity.and_then(|t| match t.strategy? {
        pb::tls_identity::Strategy::DnsLikeIdentity(d) => d.name.parse().ok(),
        _ => None,
    });
    let (h2, opaque_transport_port) = match addr.protocol_hint {
        Some(h) => (
            matches!(h.protocol, Some(pb::protocol_hint::Protocol::H2(_))),
            h.opaque_transport
                .and_then(|o| u16::try_from(o.inbound_port).ok())
                .filter(|p| *p != 0),
        ),
        None => (false, None),
    };
    let mut labels: BTreeMap<String, String> =
        set_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.extend(addr.metric_labels);
    let authority_override = addr.authority_override.map(|a| a.authority_override);
    let mut named = None;
    let via = labels.remove(GATEWAY_VIA_LABEL);
    let link = labels.remove(GATEWAY_LINK_LABEL);
    let gateway = match labels.remove(GATEWAY_ENTRY_LABEL).as_deref() {
        None => {
            named = authority_override.as_deref().and_then(|a| {
                let (name, port) = a.rsplit_once(':')?;
                let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
                Some((name.trim_end_matches('.').to_ascii_lowercase(), port))
            });
            None
        }
        Some(GATEWAY_ENTRY_V1) => {
            let authority = authority_override;
            let endpoint = via.is_some().then_some(ip);
            let target = authority
                .as_deref()
                .and_then(|a| gateway_target(a, identity.as_ref(), endpoint));
            if target.is_none() {
                // Dialing the entry with TLS would fail; leave the endpoint out instead.
                tracing::warn!(%ip, %port, ?authority, "gateway entry endpoint without a usable authority_override; ignored");
                return None;
            }
            target
        }
        Some(other) => {
            tracing::warn!(%ip, %port, marker = other, "gateway entry endpoint of an unknown version; ignored");
            return None;
        }
    };
    let link = match link {
        None => None,
        Some(_) if gateway.is_none() => {
            tracing::warn!(%ip, %port, "{GATEWAY_LINK_LABEL} on an endpoint that is not behind a gateway entry; ignored");
            return None;
        }
        Some(l) => match LinkName::new(l) {
            Ok(link) => Some(link),
            Err(e) => {
                tracing::warn!(%ip, %port, error = %e, "{GATEWAY_LINK_LABEL} is not a link name; endpoint ignored");
                return None;
            }
        },
    };
    let via = match via {
        None => None,
        Some(_) if gateway.is_none() => {
            tracing::warn!(%ip, %port, "{GATEWAY_VIA_LABEL} on an endpoint that is not behind a gateway entry; ignored");
            return None;
        }
        Some(v) => match v.parse::<SocketAddr>() {
            Ok(entry) => Some(entry),
            Err(_) => {
                tracing::warn!(%ip, %port, via = v, "{GATEWAY_VIA_LABEL} is not an ip:port; endpoint ignored");
                return None;
            }
        },
    };
    Some(Endpoint {
        addr: SocketAddr::new(ip, port),
        weight: addr.weight.max(1),
        identity,
        h2,
        opaque_transport_port,
        labels,
        gateway,
        via,
        link,
        authority_override: named,
    })
}

/// Applies one `Destination/Get` update to the current resolution.
pub fn apply(current: &Resolution, update: pb::Update) -> Resolution {
    let mut eps = match current {
        Resolution::Endpoints(e) => (**e).clone(),
        _ => BTreeMap::new(),
    };
    match update.update {
        Some(U::Add(set)) => {
            for a in set.addrs {
                if let Some(e) = endpoint(a, &set.metric_labels) {
                    eps.insert(e.addr, e);
                }
            }
        }
        Some(U::Remove(set)) => {
            for a in set.addrs {
                if let (Some(ip), port) = (a.ip.and_then(|ip| IpAddr::try_from(ip).ok()), a.port)
                    && let Ok(port) = u16::try_from(port)
                {
                    eps.remove(&SocketAddr::new(ip, port));
                }
            }
        }
        Some(U::NoEndpoints(ne)) => {
            if !ne.exists {
                return Resolution::Unknown;
            }
            eps.clear();
        }
        None => return current.clone(),
    }
    Resolution::Endpoints(Arc::new(eps))
}

/// A live watch; the stream is closed when the last clone of the `Arc` drops.
pub struct Watch<T> {
    rx: watch::Receiver<T>,
    /// The task following the control plane's answer (`None`: the answer is final).
    task: Option<tokio::task::AbortHandle>,
}

impl<T> Drop for Watch<T> {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl<T: Clone> Watch<T> {
    /// A receiver following the value.
    pub fn subscribe(&self) -> watch::Receiver<T> {
        self.rx.clone()
    }

    /// The current value.
    pub fn current(&self) -> T {
        self.rx.borrow().clone()
    }

    /// `f` of the current value, without a copy of it.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.rx.borrow())
    }
}

/// A target's ServiceProfile, as far as the proxy uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// The target's fully qualified name without a trailing dot, when the control plane
    /// knows it (`<svc>.<ns>.svc.<domain>` for a Service, `<host>.<svc>.<ns>.svc.<domain>`
    /// for a StatefulSet pod): the logical name its metrics carry, as Linkerd's proxy
    /// labels them, whatever address the application used.
    pub name: Option<String>,
    /// TrafficSplit: weighted authorities that replace the target.
    pub dst_overrides: Vec<(String, u32)>,
    /// The target is opaque.
    pub opaque: bool,
    /// ServiceProfile routes and retry budget.
    pub policy: Arc<crate::policy::profile::ProfilePolicy>,
}

fn profile(p: pb::DestinationProfile) -> Profile {
    let policy = crate::policy::profile::ProfilePolicy::from_pb(&p).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "refusing the profile's routes");
        Default::default()
    });
    let name = p.fully_qualified_name.trim_end_matches('.');
    Profile {
        name: (!name.is_empty()).then(|| name.to_string()),
        policy: Arc::new(policy),
        dst_overrides: p
            .dst_overrides
            .into_iter()
            .filter(|o| o.weight > 0 && !o.authority.is_empty())
            .map(|o| (o.authority, o.weight))
            .collect(),
        opaque: p.opaque_protocol,
    }
}

type Cache<T> = Mutex<HashMap<String, Weak<Watch<T>>>>;

/// Resolves targets through the Destination service; cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

/// Which targets the proxy asks the control plane about (Linkerd's
/// `LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES` and `…_PROFILE_NETWORKS`): names under
/// one of the suffixes, addresses inside one of the networks. Any other target goes to
/// its original address at once, and the control plane never hears of it.
#[derive(Clone, Debug, Default)]
pub struct Allow {
    /// Name suffixes, lower case without the final dot (`svc.cluster.local`); `None`:
    /// every name; an empty list: none.
    pub suffixes: Option<Vec<String>>,
    /// Networks; `None`: every address; an empty list: none.
    pub networks: Option<Vec<crate::policy::inbound::IpNet>>,
}

impl Allow {
    /// Parses Linkerd's comma-separated values (`svc.cluster.local.`, `.` for every name;
    /// CIDRs); `None` for a variable that is not set.
    pub fn parse(suffixes: Option<&str>, networks: Option<&str>) -> Result<Self, String> {
        let suffixes = suffixes.map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                // `.` (the root) becomes the empty suffix, which every name has.
                .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                .collect::<Vec<_>>()
        });
        let networks = match networks {
            None => None,
            Some(v) => Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::parse)
                    .collect::<Result<Vec<_>, String>>()?,
            ),
        };
        Ok(Self { suffixes, networks })
    }

    /// Whether the control plane is asked about `authority` (`name:port` or `IP:port`).
    pub fn allows(&self, authority: &str) -> bool {
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => authority,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self
                .networks
                .as_ref()
                .is_none_or(|nets| nets.iter().any(|n| n.contains(ip)));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.suffixes.as_ref().is_none_or(|sfx| {
            sfx.iter().any(|s| {
                s.is_empty() || name == *s || name.strip_suffix(s.as_str()).is_some_and(|r| r.ends_with('.'))
            })
        })
    }
}

struct Inner {
    client: DestinationClient<Channel>,
    allow: Allow,
    context_token: String,
    endpoints: Cache<Resolution>,
    profiles: Cache<Option<Profile>>,
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1u32 << failures.min(7))
        .min(Duration::from_secs(10))
}

impl Resolver {
    /// A resolver over `channel`; `namespace` goes into the context token like Linkerd's.
    pub fn new(channel: Channel, namespace: &str, pod: &str) -> Self {
        Self::with_allow(channel, namespace, pod, Allow::default())
    }

    /// A resolver that asks only about the targets `allow` allows.
    pub fn with_allow(channel: Channel, namespace: &str, pod: &str, allow: Allow) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: DestinationClient::new(channel),
                allow,
                context_token: context_token(namespace, pod),
                endpoints: Mutex::new(HashMap::new()),
                profiles: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn request(&self, path: &str) -> GetDestination {
        GetDestination {
            scheme: "k8s".into(),
            path: path.to_string(),
            context_token: self.inner.context_token.clone(),
        }
    }

    fn cached<T: Clone + Send + Sync + 'static>(
        cache: &Cache<T>,
        key: &str,
        initial: T,
        spawn: impl FnOnce(watch::Sender<T>) -> tokio::task::AbortHandle,
    ) -> Arc<Watch<T>> {
        let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = c.get(key).and_then(Weak::upgrade) {
            return w;
        }
        c.retain(|_, w| w.strong_count() > 0);
        let (tx, rx) = watch::channel(initial);
        let task = Some(spawn(tx));
        let w = Arc::new(Watch { rx, task });
        c.insert(key.to_string(), Arc::downgrade(&w));
        w
    }

    /// The endpoints of `authority` (`name:port` or `IP:port`), followed live.
    pub fn resolve(&self, authority: &str) -> Arc<Watch<Resolution>> {
        if !self.inner.allow.allows(authority) {
            let (tx, rx) = watch::channel(Resolution::Unknown);
            drop(tx);
            return Arc::new(Watch { rx, task: None });
        }
        Self::cached(&self.inner.endpoints, authority, Resolution::Pending, |tx| {
            let this = self.clone();
            let req = self.request(authority);
            tokio::spawn(async move { this.follow_endpoints(req, tx).await }).abort_handle()
        })
    }

    /// The profile of `authority`; `None` until answered or when there is none.
    pub fn profile(&self, authority: &str) -> Arc<Watch<Option<Profile>>> {
        if !self.inner.allow.allows(authority) {
            // No profile, ever: the closed watch says so at once.
            let (tx, rx) = watch::channel(None);
            drop(tx);
            return Arc::new(Watch { rx, task: None });
        }
        Self::cached(&self.inner.profiles, authority, None, |tx| {
            let this = self.clone();
            let req = self.request(authority);
            tokio::spawn(async move { this.follow_profile(req, tx).await }).abort_handle()
        })
    }

    async fn follow_endpoints(self, req: GetDestination, tx: watch::Sender<Resolution>) {
        let mut failures = 0;
        loop {
            let mut client = self.inner.client.clone();
            match client.get(req.clone()).await {
                Ok(rsp) => {
                    let mut stream = rsp.into_inner();
                    let mut state = Resolution::Pending;
                    loop {
                        match stream.message().await {
                            Ok(Some(update)) => {
                                failures = 0;
                                state = apply(&state, update);
                                if *tx.borrow() != state {
                                    tx.send_replace(state.clone());
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(path = %req.path, error = %e, "destination stream failed");
                                break;
                            }
                        }
                    }
                }
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    tracing::debug!(path = %req.path, error = %s, "not a mesh destination");
                    tx.send_replace(Resolution::Unknown);
                    return;
                }
                Err(s) => {
                    tracing::info!(path = %req.path, error = %s, "destination unavailable; retrying");
                }
            }
            failures += 1;
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    async fn follow_profile(self, req: GetDestination, tx: watch::Sender<Option<Profile>>) {
        let mut failures = 0;
        loop {
            let mut client = self.inner.client.clone();
            match client.get_profile(req.clone()).await {
                Ok(rsp) => {
                    let mut stream = rsp.into_inner();
                    while let Ok(Some(p)) = stream.message().await {
                        failures = 0;
                        tx.send_replace(Some(profile(p)));
                    }
                }
                Err(s) if s.code() == tonic::Code::InvalidArgument => return,
                Err(s) => tracing::debug!(path = %req.path, error = %s, "profile unavailable; retrying"),
            }
            failures += 1;
            tokio::time::sleep(backoff(failures)).await;
        }
    }
}

#[cfg(test)]
mod tests;
