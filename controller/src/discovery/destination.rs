//! `io.linkerd.proxy.destination.Destination`: `Get` streams the endpoints of an authority
//! and `GetProfile` its profile, each following the index live.
//!
//! Authorities are `<svc>.<ns>.svc.<cluster-domain>:<port>` (the trailing dot and a missing
//! cluster domain are accepted) or `IP:port` (a ClusterIP, or a pod). An authority that
//! names no service yields `NoEndpoints { exists: false }` and the stream stays open, so a
//! service created later starts flowing without the proxy re-asking, as with Linkerd.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::net::TcpAddress;
use tonic::{Request, Response, Status};

use super::index::{Index, IpTarget};
use super::model::{Caller, Endpoint, NsName, Resolution};
use super::profile::destination_profile;
use crate::streams::BoxStream;

/// Linkerd's default endpoint weight.
const DEFAULT_WEIGHT: u32 = 10_000;

/// What a destination request asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A service port.
    Service {
        /// Namespace and name.
        id: NsName,
        /// The service port.
        port: u16,
    },
    /// One pod of a service by its DNS hostname (`web-0.nginx.ns.svc…`), on a pod port.
    PodHost {
        /// The service's namespace and name.
        service: NsName,
        /// The pod's hostname.
        hostname: String,
        /// The pod port.
        port: u16,
    },
    /// An address.
    Ip(SocketAddr),
}

/// Parses `GetDestination.path`.
pub fn parse_authority(path: &str, cluster_domain: &str) -> Result<Target, String> {
    let (host, port) = match path.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("{path:?}: the port is not a number 1-65535"))?;
            (h, port)
        }
        _ => (path, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target::Ip(SocketAddr::new(ip, port)));
    }
    let host = host.trim_end_matches('.');
    let rest = host
        .strip_suffix(cluster_domain)
        .map(|r| r.trim_end_matches('.'))
        .unwrap_or(host);
    let labels: Vec<&str> = rest.split('.').collect();
    match labels.as_slice() {
        [host, name, ns, "svc"] if !host.is_empty() && !name.is_empty() && !ns.is_empty() => {
            Ok(Target::PodHost {
                service: (ns.to_string(), name.to_string()),
                hostname: host.to_string(),
                port,
            })
        }
        [name, ns, "svc"] if !name.is_empty() && !ns.is_empty() => Ok(Target::Service {
            id: (ns.to_string(), name.to_string()),
            port,
        }),
        _ => Err(format!(
            "{path:?} is not a service authority; expected <service>.<namespace>.svc.{cluster_domain}:<port> or IP:port"
        )),
    }
}

/// The updates that take a proxy from `prev` to `next`.
pub fn diff(prev: Option<&Resolution>, next: &Resolution) -> Vec<pb::Update> {
    use pb::update::Update as U;
    let empty = Default::default();
    let prev_eps = match prev {
        Some(Resolution::Endpoints(e)) => e.as_ref(),
        _ => &empty,
    };
    let mut out = Vec::new();
    let removed: Vec<TcpAddress> = match next {
        Resolution::NotFound => prev_eps.keys().map(|a| tcp(*a)).collect(),
        Resolution::Endpoints(e) => prev_eps
            .keys()
            .filter(|a| !e.contains_key(a))
            .map(|a| tcp(*a))
            .collect(),
    };
    if !removed.is_empty() {
        out.push(pb::Update {
            update: Some(U::Remove(pb::AddrSet { addrs: removed })),
        });
    }
    match next {
        Resolution::NotFound => {
            if prev != Some(next) {
                out.push(pb::Update {
                    update: Some(U::NoEndpoints(pb::NoEndpoints { exists: false })),
                });
            }
        }
        Resolution::Endpoints(e) => {
            let changed: Vec<&Endpoint> = e
                .iter()
                .filter(|(a, ep)| prev_eps.get(a) != Some(ep))
                .map(|(_, ep)| ep)
                .collect();
            if !changed.is_empty() {
                out.push(pb::Update {
                    update: Some(U::Add(add_set(&changed))),
                });
            } else if e.is_empty()
                && (!prev_eps.is_empty() || !matches!(prev, Some(Resolution::Endpoints(_))))
            {
                out.push(pb::Update {
                    update: Some(U::NoEndpoints(pb::NoEndpoints { exists: true })),
                });
            }
        }
    }
    out
}

/// Labels every endpoint of a resolution shares, sent once per set as Linkerd does.
const SET_LABELS: [&str; 2] = ["namespace", "service"];

fn add_set(eps: &[&Endpoint]) -> pb::WeightedAddrSet {
    let mut set_labels = std::collections::HashMap::new();
    for key in SET_LABELS {
        if let Some(v) = eps.first().and_then(|e| e.labels.get(key)) {
            set_labels.insert(key.to_string(), v.clone());
        }
    }
    pb::WeightedAddrSet {
        addrs: eps.iter().map(|e| weighted_addr(e)).collect(),
        metric_labels: set_labels,
    }
}

fn tcp(addr: SocketAddr) -> TcpAddress {
    TcpAddress {
        ip: Some(addr.ip().into()),
        port: u32::from(addr.port()),
    }
}

/// One endpoint in the proxy's terms.
pub fn weighted_addr(e: &Endpoint) -> pb::WeightedAddr {
    use pb::protocol_hint::{H2, Opaque, OpaqueTransport, Protocol};
    use pb::tls_identity::{DnsLikeIdentity, Strategy};
    let tls_identity = e.identity.as_ref().map(|id| pb::TlsIdentity {
        strategy: Some(Strategy::DnsLikeIdentity(DnsLikeIdentity { name: id.clone() })),
        server_name: Some(DnsLikeIdentity { name: id.clone() }),
    });
    let protocol_hint = match (e.opaque_transport_port, e.h2) {
        (Some(port), _) => Some(pb::ProtocolHint {
            protocol: Some(Protocol::Opaque(Opaque {})),
            opaque_transport: Some(OpaqueTransport {
                inbound_port: u32::from(port),
            }),
        }),
        (None, true) => Some(pb::ProtocolHint {
            protocol: Some(Protocol::H2(H2 {})),
            opaque_transport: None,
        }),
        (None, false) => None,
    };
    pb::WeightedAddr {
        addr: Some(tcp(e.addr)),
        weight: DEFAULT_WEIGHT,
        metric_labels: e
            .labels
            .iter()
            .filter(|(k, _)| !SET_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tls_identity,
        protocol_hint,
        authority_override: e.authority_override.as_ref().map(|a| pb::AuthorityOverride {
            authority_override: a.clone(),
        }),
        ..Default::default()
    }
}

/// The Destination service.
#[derive(Clone)]
pub struct DestinationService {
    index: Arc<Index>,
}

impl DestinationService {
    /// A service answering from `index`.
    pub fn new(index: Arc<Index>) -> Self {
        Self { index }
    }

    /// The tonic server for this service (with small per-stream buffers: see
    /// [`super::server`]).
    pub fn into_server(self) -> super::server::DestinationServer {
        super::server::DestinationServer::new(self)
    }

    fn target(&self, req: &pb::GetDestination) -> Result<Target, Status> {
        parse_authority(&req.path, &self.index.names().cluster_domain).map_err(Status::invalid_argument)
    }

    fn follow<T, F>(&self, namespace: Option<String>, eval: F) -> BoxStream<T>
    where
        T: Send + 'static,
        F: FnMut(&Index) -> Vec<T> + Send + 'static,
    {
        let rx = self
            .index
            .subscribe(namespace.as_deref().unwrap_or(crate::streams::NO_NAMESPACE));
        crate::streams::follow(self.index.clone(), rx, eval)
    }
}

#[tonic::async_trait]
impl pb::destination_server::Destination for DestinationService {
    type GetStream = BoxStream<pb::Update>;
    type GetProfileStream = BoxStream<pb::DestinationProfile>;

    async fn get(&self, request: Request<pb::GetDestination>) -> Result<Response<Self::GetStream>, Status> {
        let target = self.target(request.get_ref())?;
        // Not before the index holds the store's state: an existing Service or pod would
        // be answered as unknown.
        self.index.synced.wait().await;
        // Only Strait proxies are handed Strait gateway entries (see `model`).
        let caller = Caller::from_context_token(&request.get_ref().context_token);
        let index = self.index.clone();
        let (namespace, resolve): (Option<String>, Box<dyn Fn(&Index) -> Resolution + Send>) = match target {
            Target::Service { id, port } => (
                Some(id.0.clone()),
                Box::new(move |ix: &Index| ix.resolve(&id, port, caller)),
            ),
            Target::PodHost {
                service,
                hostname,
                port,
            } => (
                Some(service.0.clone()),
                Box::new(move |ix: &Index| ix.resolve_hostname(&service, &hostname, port)),
            ),
            Target::Ip(addr) => match index.lookup_ip(addr.ip()) {
                Some(IpTarget::Service(id)) => (
                    Some(id.0.clone()),
                    Box::new(move |ix: &Index| ix.resolve(&id, addr.port(), caller)),
                ),
                Some(IpTarget::Pod(pod)) => {
                    let ns = pod.namespace.to_string();
                    let f: Box<dyn Fn(&Index) -> Resolution + Send> =
                        Box::new(move |ix: &Index| match ix.lookup_ip(addr.ip()) {
                            Some(IpTarget::Pod(p)) => {
                                let e = ix.resolve_pod(&p, addr.port());
                                Resolution::Endpoints(Arc::new([(e.addr, e)].into()))
                            }
                            _ => Resolution::NotFound,
                        });
                    (Some(ns), f)
                }
                None => (None, Box::new(|_: &Index| Resolution::NotFound)),
            },
        };
        let mut last: Option<Resolution> = None;
        let stream = self.follow(namespace, move |ix| {
            let next = resolve(ix);
            let updates = diff(last.as_ref(), &next);
            last = Some(next);
            updates
        });
        Ok(Response::new(stream))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let target = self.target(request.get_ref())?;
        self.index.synced.wait().await;
        let cd = self.index.names().cluster_domain.clone();
        let (namespace, make): (
            Option<String>,
            Box<dyn Fn(&Index) -> pb::DestinationProfile + Send>,
        ) = match target {
            Target::PodHost {
                service,
                hostname,
                port,
            } => {
                let ns = service.0.clone();
                (
                    Some(ns),
                    Box::new(
                        move |ix: &Index| match ix.resolve_hostname(&service, &hostname, port) {
                            Resolution::Endpoints(e) if !e.is_empty() => {
                                let ep = e.values().next().expect("non-empty");
                                // Meshed or not, a port the Service (or the cluster's
                                // defaults) marks opaque is opaque.
                                let defaults = &ix.names().default_opaque_ports;
                                let by_service =
                                    ix.service(&service).is_some_and(|s| s.is_opaque(port, defaults));
                                pb::DestinationProfile {
                                    fully_qualified_name: format!(
                                        "{hostname}.{}.{}.svc.{cd}",
                                        service.1, service.0
                                    ),
                                    opaque_protocol: ep.opaque_transport_port.is_some() || by_service,
                                    endpoint: Some(weighted_addr(ep)),
                                    ..Default::default()
                                }
                            }
                            _ => default_profile(ix, port),
                        },
                    ),
                )
            }
            Target::Service { id, port } => {
                let ns = id.0.clone();
                (
                    Some(ns),
                    Box::new(move |ix: &Index| service_profile(ix, &id, port, &cd)),
                )
            }
            Target::Ip(addr) => match self.index.lookup_ip(addr.ip()) {
                Some(IpTarget::Service(id)) => {
                    let ns = id.0.clone();
                    (
                        Some(ns),
                        Box::new(move |ix: &Index| service_profile(ix, &id, addr.port(), &cd)),
                    )
                }
                Some(IpTarget::Pod(pod)) => {
                    let ns = pod.namespace.to_string();
                    (
                        Some(ns),
                        Box::new(move |ix: &Index| match ix.lookup_ip(addr.ip()) {
                            Some(IpTarget::Pod(p)) => {
                                let e = ix.resolve_pod(&p, addr.port());
                                pb::DestinationProfile {
                                    // Meshed or not: its annotation, else the defaults.
                                    opaque_protocol: p
                                        .is_opaque(addr.port(), &ix.names().default_opaque_ports),
                                    endpoint: Some(weighted_addr(&e)),
                                    ..Default::default()
                                }
                            }
                            _ => default_profile(ix, addr.port()),
                        }),
                    )
                }
                // An address outside the cluster: opaque on the default opaque ports.
                None => (None, Box::new(move |ix: &Index| default_profile(ix, addr.port()))),
            },
        };
        let mut last: Option<pb::DestinationProfile> = None;
        let stream = self.follow(namespace, move |ix| {
            let next = make(ix);
            if last.as_ref() == Some(&next) {
                return Vec::new();
            }
            last = Some(next.clone());
            vec![next]
        });
        Ok(Response::new(stream))
    }
}

/// The profile of a target the cluster does not know (or no longer knows): opaque on the
/// cluster's default opaque ports, nothing else.
fn default_profile(ix: &Index, port: u16) -> pb::DestinationProfile {
    pb::DestinationProfile {
        opaque_protocol: ix
            .names()
            .default_opaque_ports
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&port)),
        ..Default::default()
    }
}

fn service_profile(ix: &Index, id: &NsName, port: u16, cluster_domain: &str) -> pb::DestinationProfile {
    let fqdn = format!("{}.{}.svc.{cluster_domain}", id.1, id.0);
    let svc = ix.service(id);
    let opaque = svc
        .as_ref()
        .is_some_and(|s| s.is_opaque(port, &ix.names().default_opaque_ports));
    let profile = ix.profile(&id.0, &fqdn);
    let splits = ix.splits_for(id);
    destination_profile(&fqdn, port, opaque, profile.as_ref(), &splits, cluster_domain)
}

#[cfg(test)]
mod tests;
