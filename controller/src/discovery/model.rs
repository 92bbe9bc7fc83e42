//! The discovery model: what the destination service knows about services, pods and
//! endpoint slices, and the pure function from that to the endpoint set of one
//! `service:port` ([`resolve`]).
//!
//! Everything here is plain data built from store objects; nothing does I/O, so the
//! resolution rules (port mapping, identities, protocol hints, metric labels) are tested
//! table-driven without sockets.
//!
//! # Mirrors of remote services
//! A gateway-mode mirror's endpoints are the remote gateway (Linkerd's design): the
//! gateway identity and an `authority_override` naming the remote Service. When the
//! mirror also carries `mirror.strait.io/gateway-entry` and
//! `mirror.strait.io/remote-identity` (written by `strait mirror --gateway-entry`), the
//! service resolves instead to one endpoint at the local gateway's proxy entry, with the
//! remote *workload* identity (the client's TLS runs end to end to the remote proxy), the
//! same `authority_override`, and the metric label
//! [`GATEWAY_ENTRY_LABEL`]`=`[`GATEWAY_ENTRY_V1`], which tells a Strait proxy to open a
//! `strt` stream first. That endpoint is present while any remote-gateway endpoint is
//! ready, so the gateway probe still decides readiness. When the mirror also lists the
//! remote endpoints (`mirror.strait.io/remote-endpoints`), a Strait proxy gets one
//! endpoint per remote address instead, each labelled [`GATEWAY_VIA_LABEL`] with the
//! entry to dial ([`behind_entry`]), so its balancer spreads requests over the remote
//! pods as it does over local ones.
//!
//! Only Strait proxies get the entry endpoint: they mark themselves in the request's
//! `context_token` (`"strait":"v3"`; `"v1"` proxies, which predate per-pod remote
//! endpoints, get the entry itself, and `"v2"` proxies, which name no link, are not given
//! an entry of every link, see [`Caller`]); a stock linkerd2-proxy cannot speak
//! `strt`, so every other caller gets Linkerd's remote-gateway endpoint — the remote
//! gateway's address and port, its identity, the `authority_override`, and an
//! opaque-transport hint at the gateway port, so the proxy sends Linkerd's transport
//! header naming the service to the remote gateway's mTLS entry on 4143/tcp. One control
//! plane thus serves both kinds of proxies from the same mirrors.
//!
//! # Federated services and remote-discovery mirrors
//! A federated Service (`<svc>-federated`, kept by the mirror) and a remote-discovery
//! mirror resolve by *members* instead of their own endpoints: the local member named by
//! `multicluster.linkerd.io/local-discovery` resolves as itself, and each remote member
//! is an EndpointSlice marked `mirror.strait.io/gateway-cluster` whose endpoints are that
//! cluster's gateway ([`RemoteMember`]). Linkerd reads remote members' endpoints over a
//! flat network; Strait answers them through the gateway path, exactly as gateway
//! mirrors are answered (the proxy entry with the remote workload identity for Strait
//! proxies, the remote gateway for others). A federated Service's remote endpoints carry
//! [`TIER_LABEL`]`=`[`TIER_REMOTE`], so Strait proxies prefer the local endpoints and
//! fail over per request (see the proxy's `balance` module); a stock proxy balances over
//! all of them, as Linkerd's own federated services do.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strait_api::labels;

pub use crate::pods::{DEFAULT_PROXY_INBOUND_PORT, PodInfo, PodMap};
/// The metric label marking an endpoint as a Strait gateway's proxy entry (the proxy
/// crate's `discovery::GATEWAY_ENTRY_LABEL`).
pub const GATEWAY_ENTRY_LABEL: &str = "strait_gateway_entry";
/// The marker's value: the entry speaks `strt` v1.
pub const GATEWAY_ENTRY_V1: &str = "strt-v1";
/// The metric label giving the entry to dial when an endpoint's address is a remote
/// endpoint's (the proxy crate's `discovery::GATEWAY_VIA_LABEL`).
pub const GATEWAY_VIA_LABEL: &str = "strait_gateway_via";
/// The metric label giving the link a `strt` request at the entry must name, when the
/// entry serves every link of its gateway (the proxy crate's
/// `discovery::GATEWAY_LINK_LABEL`; from the mirror's `mirror.strait.io/gateway-link`).
/// A proxy that does not know it names no link, which such an entry accepts while the
/// gateway has one link.
pub const GATEWAY_LINK_LABEL: &str = "strait_gateway_link";
/// The metric label giving an endpoint's failover tier (the proxy crate's
/// `discovery::TIER_LABEL`): a Strait proxy balances over the lowest tier with a usable
/// endpoint. Endpoints without it are tier 0 (local).
pub const TIER_LABEL: &str = "strait_tier";
/// The tier of a federated Service's remote members.
pub const TIER_REMOTE: &str = "remote";

/// The `context_token` key by which a Strait proxy marks itself (the proxy crate's
/// `discovery::STRAIT_CONTEXT_KEY`).
pub const STRAIT_CONTEXT_KEY: &str = "strait";
/// The marker's first value: the proxy speaks `strt` to gateway proxy entries.
pub const STRAIT_CONTEXT_V1: &str = "v1";
/// The marker's second value: the proxy also dials remote endpoints at the entry their
/// [`GATEWAY_VIA_LABEL`] names.
pub const STRAIT_CONTEXT_V2: &str = "v2";
/// The marker's current value: the proxy also names the link [`GATEWAY_LINK_LABEL`] gives
/// at an entry of every link (`strt` version 3; the proxy crate's
/// `discovery::STRAIT_CONTEXT_VERSION`).
pub const STRAIT_CONTEXT_V3: &str = "v3";

/// Who asks: whether it can use a Strait gateway's proxy entry, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Caller {
    /// A stock linkerd2-proxy, or anything that does not say otherwise.
    Linkerd,
    /// A Strait proxy of the first version (`"strait":"v1"`): it speaks `strt` but knows
    /// nothing of [`GATEWAY_VIA_LABEL`], so it gets the entry itself, never one endpoint
    /// per remote pod (it would dial the remote pod's address).
    StraitV1,
    /// A Strait proxy of the second version (`"strait":"v2"`): it dials remote endpoints
    /// at their entry but names no link, so an entry of every link is not for it (it gets
    /// Linkerd's gateway endpoint there; an entry of one link, as before).
    StraitV2,
    /// A Strait proxy (or gateway) of this version (`"strait":"v3"`).
    Strait,
}

impl Caller {
    /// Reads the caller from a request's `context_token` (JSON such as
    /// `{"ns":"production","nodeName":"","pod":"web-1","strait":"v3"}`); anything that is
    /// not JSON, lacks the marker or has a value this controller does not know is a
    /// stock proxy (the answer every proxy can use).
    pub fn from_context_token(token: &str) -> Caller {
        let token = serde_json::from_str::<serde_json::Value>(token).ok();
        match token.as_ref().and_then(|v| v.get(STRAIT_CONTEXT_KEY)?.as_str()) {
            Some(STRAIT_CONTEXT_V3) => Caller::Strait,
            Some(STRAIT_CONTEXT_V2) => Caller::StraitV2,
            Some(STRAIT_CONTEXT_V1) => Caller::StraitV1,
            _ => Caller::Linkerd,
        }
    }

    /// Whether it speaks `strt` to a gateway's proxy entry.
    pub fn speaks_strt(self) -> bool {
        self != Caller::Linkerd
    }

    /// Whether it can use a proxy entry that requests must name `link` at (`None`: an
    /// entry of one link, which names none).
    pub fn can_use_entry(self, link: Option<&str>) -> bool {
        self.speaks_strt() && (link.is_none() || self == Caller::Strait)
    }
}

/// `(namespace, name)`.
pub type NsName = (String, String);

/// A Service, as discovery needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Namespace and name.
    pub id: NsName,
    /// Ports by service port number: (port name, target port).
    pub ports: BTreeMap<u16, (Option<String>, Option<IntOrString>)>,
    /// The ClusterIP, if allocated (not for headless services).
    pub cluster_ip: Option<IpAddr>,
    /// Ports marked opaque by `config.linkerd.io/opaque-ports` on the Service; `None`
    /// without the annotation (the cluster's default opaque ports apply: see
    /// [`ServiceInfo::opaque_ports_or`]).
    pub opaque_ports: Option<Vec<(u16, u16)>>,
    /// For a mirror of a remote cluster's Service (gateway mode): the remote gateway's
    /// identity (`mirror.linkerd.io/remote-gateway-identity`), which its endpoints carry.
    pub remote_gateway_identity: Option<String>,
    /// For a mirror: the remote Service's name (`mirror.linkerd.io/remote-svc-fq-name`),
    /// which the gateway needs as the request's authority.
    pub remote_fq_name: Option<String>,
    /// For a gateway-mode mirror: the local gateway's proxy entry
    /// (`mirror.strait.io/gateway-entry`).
    pub gateway_entry: Option<SocketAddr>,
    /// For a gateway-mode mirror whose entry serves every link: the link to name there
    /// (`mirror.strait.io/gateway-link`).
    pub gateway_link: Option<String>,
    /// For a gateway-mode mirror: the remote workloads' identity
    /// (`mirror.strait.io/remote-identity`).
    pub remote_identity: Option<String>,
    /// For a gateway-mode mirror: the remote endpoints' addresses
    /// (`mirror.strait.io/remote-endpoints`), possibly none.
    pub remote_endpoints: Vec<IpAddr>,
    /// For a federated Service (`<svc>-federated`, see [`resolve`]): its local member
    /// (`multicluster.linkerd.io/local-discovery`), if any.
    pub local_discovery: Option<String>,
    /// Whether it resolves by members (see [`resolve`]): a federated Service, which names
    /// them in `multicluster.linkerd.io/local-discovery` or `…/remote-discovery:
    /// svc@cluster`, or a remote-discovery mirror (`…/remote-discovery: <cluster>`),
    /// whose one member is the remote Service through its cluster's gateway.
    pub federated: bool,
}

impl ServiceInfo {
    /// Reads a Service object.
    pub fn from_service(svc: &Service) -> Option<Self> {
        let meta = &svc.metadata;
        let id = (meta.namespace.clone()?, meta.name.clone()?);
        let spec = svc.spec.as_ref();
        let ports = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    u16::try_from(p.port).ok()?,
                    (p.name.clone(), p.target_port.clone()),
                ))
            })
            .collect();
        let cluster_ip = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let annotation = |k: &str| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let remote_endpoints = addresses(
            annotation(labels::mirror::REMOTE_ENDPOINTS),
            format_args!("Service {}/{}", id.0, id.1),
        );
        Some(Self {
            id,
            ports,
            cluster_ip,
            opaque_ports: opaque_ports(meta.annotations.as_ref()),
            remote_gateway_identity: annotation(labels::mirror::REMOTE_GATEWAY_IDENTITY),
            remote_fq_name: annotation(labels::mirror::REMOTE_SVC_FQ_NAME),
            gateway_entry: annotation(labels::mirror::GATEWAY_ENTRY).and_then(|a| a.parse().ok()),
            gateway_link: annotation(labels::mirror::GATEWAY_LINK),
            remote_identity: annotation(labels::mirror::REMOTE_IDENTITY),
            remote_endpoints,
            local_discovery: annotation(labels::mirror::LOCAL_DISCOVERY),
            federated: annotation(labels::mirror::LOCAL_DISCOVERY).is_some()
                || annotation(labels::mirror::REMOTE_DISCOVERY).is_some(),
        })
    }
}

/// The addresses of `object`'s `mirror.strait.io/remote-endpoints` value; entries that
/// are not addresses are skipped with a warning (the mirror writes it; a hand-edited
/// value loses only them).
fn addresses(value: Option<String>, object: impl std::fmt::Display) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for entry in value.iter().flat_map(|v| v.split(',')) {
        match entry.trim().parse() {
            Ok(ip) => out.push(ip),
            Err(_) => tracing::warn!(
                "{} of {object}: {entry:?} is not an IP address; skipped (the mirror writes this annotation: remove it, and the mirror writes it again)",
                labels::mirror::REMOTE_ENDPOINTS
            ),
        }
    }
    out
}

/// The Service's own opaque ports, from `config.linkerd.io/opaque-ports` (a value that does
/// not parse marks none, and the policy controller reports it); `None` without it.
fn opaque_ports(annotations: Option<&BTreeMap<String, String>>) -> Option<Vec<(u16, u16)>> {
    annotations
        .and_then(|a| a.get(labels::config::OPAQUE_PORTS))
        .map(|v| strait_api::names::port_ranges(v).unwrap_or_default())
}

impl ServiceInfo {
    /// The ports opaque on this Service: its own, else the cluster's `defaults` (as the
    /// policy controller does).
    pub fn opaque_ports_or<'a>(&'a self, defaults: &'a [(u16, u16)]) -> &'a [(u16, u16)] {
        self.opaque_ports.as_deref().unwrap_or(defaults)
    }

    /// Whether `port` is opaque on this Service, with the cluster's `defaults`.
    pub fn is_opaque(&self, port: u16, defaults: &[(u16, u16)]) -> bool {
        in_ranges(self.opaque_ports_or(defaults), port)
    }
}

fn in_ranges(ranges: &[(u16, u16)], port: u16) -> bool {
    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port))
}

/// One address of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The address.
    pub ip: IpAddr,
    /// Whether it is ready to receive traffic.
    pub ready: bool,
    /// The pod behind it, if any.
    pub pod: Option<NsName>,
    /// Its zone.
    pub zone: Option<String>,
    /// Its DNS hostname (`web-0` of a StatefulSet), reachable as `<host>.<svc>.<ns>.svc…`.
    pub hostname: Option<String>,
}

/// An EndpointSlice, as discovery needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The service it belongs to (label `kubernetes.io/service-name`).
    pub service: NsName,
    /// Ports by name (`None` for the unnamed port).
    pub ports: BTreeMap<Option<String>, u16>,
    /// Its endpoints.
    pub endpoints: Vec<SliceEndpoint>,
    /// For a federated Service's slice carrying a remote member: how to reach it.
    pub remote: Option<RemoteMember>,
}

/// A remote member of a federated Service, from its EndpointSlice (written by the
/// mirror's federation task): the endpoints are the member cluster's gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMember {
    /// The member's cluster (`mirror.strait.io/gateway-cluster`).
    pub cluster: String,
    /// The remote gateway's identity (`mirror.linkerd.io/remote-gateway-identity`).
    pub gateway_identity: String,
    /// The remote Service (`mirror.linkerd.io/remote-svc-fq-name`).
    pub fq_name: String,
    /// The local gateway's proxy entry for the member's link
    /// (`mirror.strait.io/gateway-entry`).
    pub entry: Option<SocketAddr>,
    /// The link to name at that entry, when it serves every link
    /// (`mirror.strait.io/gateway-link`).
    pub link: Option<String>,
    /// The remote workloads' identity (`mirror.strait.io/remote-identity`).
    pub identity: Option<String>,
    /// The remote endpoints' addresses (`mirror.strait.io/remote-endpoints`).
    pub endpoints: Vec<IpAddr>,
}

impl RemoteMember {
    fn from_meta(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Self> {
        let cluster = meta
            .labels
            .as_ref()?
            .get(labels::mirror::GATEWAY_CLUSTER)?
            .clone();
        let a = meta.annotations.as_ref()?;
        let get = |k: &str| a.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Self {
            cluster,
            gateway_identity: get(labels::mirror::REMOTE_GATEWAY_IDENTITY)?,
            fq_name: get(labels::mirror::REMOTE_SVC_FQ_NAME)?,
            entry: get(labels::mirror::GATEWAY_ENTRY).and_then(|e| e.parse().ok()),
            link: get(labels::mirror::GATEWAY_LINK),
            identity: get(labels::mirror::REMOTE_IDENTITY),
            endpoints: addresses(
                get(labels::mirror::REMOTE_ENDPOINTS),
                format_args!(
                    "EndpointSlice {}/{}",
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default()
                ),
            ),
        })
    }
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl SliceInfo {
    /// Reads an EndpointSlice object.
    pub fn from_slice(slice: &EndpointSlice) -> Option<Self> {
        let meta = &slice.metadata;
        let ns = meta.namespace.clone()?;
        let svc = meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().filter(|n| !n.is_empty()),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                let pod = e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| Some((r.namespace.clone().unwrap_or_else(|| ns.clone()), r.name.clone()?)));
                let (zone, hostname) = (e.zone.clone(), e.hostname.clone());
                e.addresses.iter().filter_map(move |a| {
                    Some(SliceEndpoint {
                        ip: a.parse().ok()?,
                        ready,
                        pod: pod.clone(),
                        zone: zone.clone(),
                        hostname: hostname.clone(),
                    })
                })
            })
            .collect();
        Some(Self {
            service: (ns, svc),
            ports,
            endpoints,
            remote: RemoteMember::from_meta(meta),
        })
    }
}

/// One endpoint as the proxy is told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Metric labels (`pod`, `deployment`, `serviceaccount`, `zone`, …).
    pub labels: BTreeMap<String, String>,
    /// The identity to require of it, when it is meshed.
    pub identity: Option<String>,
    /// Whether to speak HTTP/2 to it (meshed peers multiplex).
    pub h2: bool,
    /// For opaque traffic to a meshed pod: the proxy's inbound port to tunnel to.
    pub opaque_transport_port: Option<u16>,
    /// The authority to send instead of the one asked for (a mirror's endpoints are the
    /// remote gateway, which routes by the remote Service's name).
    pub authority_override: Option<String>,
}

/// What a `service:port` resolves to right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No such service.
    NotFound,
    /// The service exists; these are its ready endpoints (possibly none).
    Endpoints(Arc<BTreeMap<SocketAddr, Endpoint>>),
}

/// The cluster facts a resolution reads.
pub struct View<'a> {
    /// Services by id.
    pub services: &'a BTreeMap<NsName, ServiceInfo>,
    /// Slices of each service, by slice name.
    pub slices: &'a BTreeMap<NsName, BTreeMap<String, SliceInfo>>,
    /// Pods by namespace and name.
    pub pods: &'a PodMap,
    /// The mesh's trust domain, for endpoint identities.
    pub trust_domain: &'a str,
    /// Ports opaque on Services and pods that mark none themselves.
    pub default_opaque_ports: &'a [(u16, u16)],
}

/// The endpoints of `service:port` for `caller`: the ready addresses of its slices at the
/// target port the service port maps to, each with the identity, protocol hint and labels
/// of its pod (a mirror's: see the module docs).
pub fn resolve(view: &View<'_>, service: &NsName, port: u16, caller: Caller) -> Resolution {
    let Some(svc) = view.services.get(service) else {
        return Resolution::NotFound;
    };
    let Some((port_name, target)) = svc.ports.get(&port) else {
        // The service exists but not on this port: nothing to send traffic to.
        return Resolution::Endpoints(Arc::default());
    };
    if svc.federated {
        return Resolution::Endpoints(Arc::new(federated(view, svc, port_name.as_ref(), port, caller)));
    }
    let mut out = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for slice in view.slices.get(service).into_iter().flat_map(|s| s.values()) {
        // Slices name their ports after the service's ports; an unnamed service port
        // matches the unnamed slice port.
        let slice_port = slice.ports.get(port_name).copied();
        for e in slice.endpoints.iter().filter(|e| e.ready) {
            let pod = e
                .pod
                .as_ref()
                .and_then(|p| view.pods.get(&p.0, &p.1))
                .map(|p| &**p);
            let Some(target_port) = slice_port.or_else(|| target_port(target.as_ref(), pod, port)) else {
                continue;
            };
            let addr = SocketAddr::new(e.ip, target_port);
            if !seen.insert(addr) {
                continue;
            }
            out.insert(addr, endpoint(view, svc, addr, pod, e.zone.as_deref(), port));
        }
    }
    if caller.can_use_entry(svc.gateway_link.as_deref())
        && let Some(entry) = gateway_entry(svc, port)
        && !out.is_empty()
    {
        let remote = remote_endpoints(caller, &svc.remote_endpoints);
        let eps = behind_entry(entry, remote, port);
        return Resolution::Endpoints(Arc::new(eps.map(|e| (e.addr, e)).collect()));
    }
    Resolution::Endpoints(Arc::new(out))
}

/// The endpoints of a federated Service: its local member's endpoints as they are, and
/// each ready remote member through the gateway path — for a Strait caller one endpoint
/// at the local gateway's proxy entry with the remote workload identity (when the member
/// carries both), else the remote gateway as Linkerd's proxies reach a gateway mirror.
/// Remote endpoints carry [`TIER_LABEL`]`=`[`TIER_REMOTE`]: a Strait proxy sends to
/// them only when no local endpoint is usable (see the proxy's balancer).
fn federated(
    view: &View<'_>,
    svc: &ServiceInfo,
    port_name: Option<&String>,
    port: u16,
    caller: Caller,
) -> BTreeMap<SocketAddr, Endpoint> {
    let mut out = BTreeMap::new();
    let ns = &svc.id.0;
    if let Some(local) = &svc.local_discovery {
        let id = (ns.clone(), local.clone());
        // A member is never itself federated (that would recurse).
        if view.services.get(&id).is_some_and(|m| !m.federated)
            && let Resolution::Endpoints(eps) = resolve(view, &id, port, caller)
        {
            out.extend(eps.iter().map(|(a, e)| (*a, e.clone())));
        }
    }
    for slice in view.slices.get(&svc.id).into_iter().flat_map(|s| s.values()) {
        let Some(member) = &slice.remote else { continue };
        // The member's cluster lacks this port: its slice does not name it.
        let Some(gateway_port) = slice.ports.get(&port_name.cloned()).copied() else {
            continue;
        };
        let ready: Vec<IpAddr> = slice.endpoints.iter().filter(|e| e.ready).map(|e| e.ip).collect();
        if ready.is_empty() {
            continue;
        }
        let mut labels = BTreeMap::from([
            ("namespace".to_string(), ns.clone()),
            ("service".to_string(), svc.id.1.clone()),
            ("target_cluster_name".to_string(), member.cluster.clone()),
            (TIER_LABEL.to_string(), TIER_REMOTE.to_string()),
        ]);
        let authority_override = Some(format!("{}:{port}", member.fq_name));
        if caller.can_use_entry(member.link.as_deref())
            && let (Some(entry), Some(identity)) = (member.entry, &member.identity)
        {
            labels.insert(GATEWAY_ENTRY_LABEL.to_string(), GATEWAY_ENTRY_V1.to_string());
            if let Some(link) = &member.link {
                labels.insert(GATEWAY_LINK_LABEL.to_string(), link.clone());
            }
            let at_entry = Endpoint {
                addr: entry,
                labels,
                identity: Some(identity.clone()),
                h2: true,
                opaque_transport_port: None,
                authority_override,
            };
            // A remote address equal to one already here (clusters with overlapping pod
            // ranges) is left out: local endpoints keep their place.
            for e in behind_entry(at_entry, remote_endpoints(caller, &member.endpoints), port) {
                out.entry(e.addr).or_insert(e);
            }
            continue;
        }
        for ip in ready {
            let addr = SocketAddr::new(ip, gateway_port);
            out.insert(
                addr,
                Endpoint {
                    addr,
                    labels: labels.clone(),
                    identity: Some(member.gateway_identity.clone()),
                    h2: false,
                    opaque_transport_port: Some(gateway_port),
                    authority_override: authority_override.clone(),
                },
            );
        }
    }
    out
}

/// The endpoint of a mirror at the local gateway's proxy entry, when the mirror names an
/// entry, the remote workloads' identity and the remote Service (see the module docs).
fn gateway_entry(svc: &ServiceInfo, service_port: u16) -> Option<Endpoint> {
    svc.remote_gateway_identity.as_ref()?;
    let addr = svc.gateway_entry?;
    let identity = svc.remote_identity.clone()?;
    let remote = svc.remote_fq_name.as_ref()?;
    let mut labels = BTreeMap::from([
        ("namespace".to_string(), svc.id.0.clone()),
        ("service".to_string(), svc.id.1.clone()),
        (GATEWAY_ENTRY_LABEL.to_string(), GATEWAY_ENTRY_V1.to_string()),
    ]);
    if let Some(link) = &svc.gateway_link {
        labels.insert(GATEWAY_LINK_LABEL.to_string(), link.clone());
    }
    Some(Endpoint {
        addr,
        labels,
        identity: Some(identity),
        h2: true,
        opaque_transport_port: None,
        authority_override: Some(format!("{remote}:{service_port}")),
    })
}

/// The remote endpoints `caller` may be given one by one (none for a first-version
/// Strait proxy: it gets the entry itself).
fn remote_endpoints(caller: Caller, listed: &[IpAddr]) -> &[IpAddr] {
    if caller >= Caller::StraitV2 { listed } else { &[] }
}

/// A Strait caller's endpoints behind a gateway's proxy entry (`at_entry`, addressed at
/// the entry): one per remote endpoint address, at that address on the service port,
/// with [`GATEWAY_VIA_LABEL`] naming the entry to dial; the entry itself when the mirror
/// lists no remote endpoint (an older remote gateway's catalog, or no ready pod).
fn behind_entry(
    at_entry: Endpoint,
    remote: &[IpAddr],
    service_port: u16,
) -> impl Iterator<Item = Endpoint> + '_ {
    let whole = remote.is_empty().then(|| at_entry.clone());
    let entry = at_entry.addr.to_string();
    let each = remote.iter().map(move |ip| {
        let mut e = at_entry.clone();
        e.addr = SocketAddr::new(*ip, service_port);
        e.labels.insert(GATEWAY_VIA_LABEL.to_string(), entry.clone());
        e
    });
    whole.into_iter().chain(each)
}

/// The endpoint of a service whose DNS hostname is `hostname` (a StatefulSet pod,
/// `web-0.nginx.ns.svc…`), on the pod port asked for, as Linkerd resolves pod DNS names.
pub fn resolve_hostname(view: &View<'_>, service: &NsName, hostname: &str, port: u16) -> Resolution {
    let Some(svc) = view.services.get(service) else {
        return Resolution::NotFound;
    };
    let found = view
        .slices
        .get(service)
        .into_iter()
        .flat_map(|s| s.values())
        .flat_map(|s| s.endpoints.iter())
        .find(|e| e.ready && e.hostname.as_deref() == Some(hostname));
    let out = found
        .map(|e| {
            let pod = e
                .pod
                .as_ref()
                .and_then(|p| view.pods.get(&p.0, &p.1))
                .map(|p| &**p);
            let addr = SocketAddr::new(e.ip, port);
            (addr, endpoint(view, svc, addr, pod, e.zone.as_deref(), port))
        })
        .into_iter()
        .collect();
    Resolution::Endpoints(Arc::new(out))
}

/// A single pod, addressed by IP (`Get` of `IP:port` for a pod IP).
pub fn resolve_pod(view: &View<'_>, pod: &PodInfo, port: u16) -> Endpoint {
    let addr = SocketAddr::new(pod.ip.unwrap_or(IpAddr::from([0, 0, 0, 0])), port);
    let mut e = endpoint_for_pod(view, addr, Some(pod), None, port, &[]);
    e.labels.insert("namespace".into(), pod.namespace.to_string());
    e
}

fn target_port(target: Option<&IntOrString>, pod: Option<&PodInfo>, port: u16) -> Option<u16> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => u16::try_from(*p).ok(),
        Some(IntOrString::String(name)) => pod?.named_port(name),
    }
}

fn endpoint(
    view: &View<'_>,
    svc: &ServiceInfo,
    addr: SocketAddr,
    pod: Option<&PodInfo>,
    zone: Option<&str>,
    service_port: u16,
) -> Endpoint {
    let mut e = endpoint_for_pod(
        view,
        addr,
        pod,
        zone,
        service_port,
        svc.opaque_ports_or(view.default_opaque_ports),
    );
    e.labels.insert("namespace".into(), svc.id.0.clone());
    e.labels.insert("service".into(), svc.id.1.clone());
    // A mirror's endpoints are the remote cluster's gateway: meshed with the gateway's
    // identity, addressed by the remote Service's name, as Linkerd's destination does, and
    // opaque to the gateway port, so proxies send the transport header naming the service.
    if pod.is_none()
        && let Some(gateway) = &svc.remote_gateway_identity
    {
        e.identity = Some(gateway.clone());
        e.h2 = false;
        e.opaque_transport_port = Some(addr.port());
        e.authority_override = svc
            .remote_fq_name
            .as_ref()
            .map(|name| format!("{name}:{service_port}"));
    }
    e
}

fn endpoint_for_pod(
    view: &View<'_>,
    addr: SocketAddr,
    pod: Option<&PodInfo>,
    zone: Option<&str>,
    service_port: u16,
    service_opaque: &[(u16, u16)],
) -> Endpoint {
    let mut labels = BTreeMap::new();
    if let Some(z) = zone {
        labels.insert("zone".into(), z.to_string());
    }
    let Some(pod) = pod else {
        return Endpoint {
            addr,
            labels,
            identity: None,
            h2: false,
            opaque_transport_port: None,
            authority_override: None,
        };
    };
    labels.insert("pod".into(), pod.name.to_string());
    labels.insert("serviceaccount".into(), pod.service_account.to_string());
    if let Some((kind, name)) = &pod.owner {
        labels.insert(kind.to_string(), name.to_string());
    }
    if let Some(h) = pod.template_hash() {
        labels.insert("pod_template_hash".into(), h.to_string());
    }
    if !pod.meshed {
        return Endpoint {
            addr,
            labels,
            identity: None,
            h2: false,
            opaque_transport_port: None,
            authority_override: None,
        };
    }
    let identity = format!(
        "{}.{}.serviceaccount.identity.linkerd.{}",
        pod.service_account, pod.namespace, view.trust_domain
    );
    let opaque =
        pod.is_opaque(addr.port(), view.default_opaque_ports) || in_ranges(service_opaque, service_port);
    Endpoint {
        addr,
        labels,
        identity: Some(identity),
        h2: true,
        opaque_transport_port: opaque.then_some(pod.proxy_inbound_port),
        authority_override: None,
    }
}

#[cfg(test)]
mod tests;
