//! The mirror's decisions, pure: from the target cluster's Services, the local cluster's
//! state and the gateway, which mirror objects to apply and which to delete.
//!
//! Invariants:
//! - Only objects this link owns are ever deleted or changed: a local object is owned when
//!   it carries `mirror.linkerd.io/mirrored-service: "true"` and
//!   `mirror.linkerd.io/cluster-name: <target>`. A local object in the way of a mirror
//!   that is not owned is reported ([`SkipReason::NameTaken`]) and left alone.
//! - The plan is a function of a complete snapshot of the remote side: the caller must hold
//!   back a snapshot that is not complete (before the first list, during a disconnect), so
//!   a transient failure never deletes mirrors; only `ready` changes then.
//! - A plan applied to the state it was computed from reaches a fixed point: planning again
//!   over the result is empty.
//!
//! # Strait proxies and the gateway's proxy entry
//! A gateway-mode mirror always keeps Linkerd's endpoints (the remote gateway, with its
//! identity). Two Strait annotations let the local Destination send Strait proxies
//! through the local gateway instead, with the client's TLS running end to end to the
//! remote workload: `mirror.strait.io/gateway-entry` (the local gateway's proxy entry for
//! this link, from `strait mirror --gateway-entry ADDR` or `CLUSTER=ADDR`; with the
//! first, `mirror.strait.io/gateway-link` names the link, which requests there name) and
//! `mirror.strait.io/remote-identity` (the remote workloads' identity, see
//! [`remote_workload`]), with `mirror.strait.io/remote-endpoints` (the addresses of those
//! workloads' ready pods, when the remote catalog gives them) so Strait proxies balance
//! over the remote pods themselves. None is ever copied from a remote Service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use strait_api::labels::mirror as ml;
use strait_api::mesh::link::{LinkCondition, LinkStatus, ObjectRef, ServiceStatus};
use strait_api::{Kind, KindId, Object, ObjectKey};

use crate::TRUE;
use crate::link::LinkConfig;
use crate::selector::{glob, matches};

/// `kubernetes.io/service-name`: the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The `managed-by` value of the mirror's EndpointSlices.
pub const MANAGED_BY: &str = "linkerd-service-mirror";
/// Suffix of a mirror's EndpointSlice name.
pub(crate) const SLICE_SUFFIX: &str = "-gateway";
/// Annotations never copied from a remote Service.
const NEVER_COPIED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

/// A namespaced name.
pub type NsName = (String, String);

/// How a remote Service is mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Through the target's gateway: endpoints at the gateway.
    Gateway,
    /// Remote discovery: in Linkerd (flat network) the destination service reads the
    /// target's endpoints; in Strait it reaches them through the gateway path (see
    /// [`remote_discovery_slice`]).
    RemoteDiscovery,
}

/// Why a selected remote Service has no mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its namespace does not exist in the local cluster (Linkerd skips these too).
    NamespaceNotFound,
    /// `<svc>-<cluster>` is longer than a Service name may be.
    NameTooLong,
    /// A local object of that name exists and is not this link's mirror.
    NameTaken(ObjectKey),
    /// No free address was left in the local service range.
    NoClusterIp,
    /// Federated members only: a port clashes with another member's (the same number
    /// with another protocol, or the same name on another number), so the federated
    /// Service could not carry both; the detail names the ports.
    PortConflict(String),
    /// Federated members only: a headless Service (`clusterIP: None`) cannot join a
    /// federated Service (Linkerd's rule).
    Headless,
}

impl SkipReason {
    /// A CamelCase reason, for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NamespaceNotFound => "NamespaceNotFound",
            Self::NameTooLong => "NameTooLong",
            Self::NameTaken(_) => "NameTaken",
            Self::NoClusterIp => "NoClusterIP",
            Self::PortConflict(_) => "PortConflict",
            // Linkerd's reason for a member it refuses.
            Self::Headless => "InvalidService",
        }
    }

    /// What an operator should do, for messages and `multicluster check`.
    pub fn message(&self, remote: &NsName, mirror: &str) -> String {
        let (ns, name) = remote;
        match self {
            Self::NamespaceNotFound => {
                format!("namespace {ns} does not exist in this cluster; create it to mirror {name}")
            }
            Self::NameTooLong => format!(
                "the mirror name {mirror} is longer than 63 characters; shorten the Service name or the link's cluster name"
            ),
            Self::NameTaken(key) => format!(
                "{key} already exists and is not a mirror of this link; rename or delete it to mirror {ns}/{name}"
            ),
            Self::NoClusterIp => {
                format!("no free address left in the service range for {ns}/{mirror}; widen the range")
            }
            Self::PortConflict(detail) => format!(
                "{detail}, so {ns}/{name} cannot join {ns}/{mirror}; give every member of {name} the same port names, numbers and protocols"
            ),
            Self::Headless => format!(
                "{ns}/{name} is headless (clusterIP: None) and cannot join {ns}/{mirror}; give it a cluster IP or remove its mirror.linkerd.io/federated label"
            ),
        }
    }
}

/// A remote Service that is selected but not mirrored, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The remote Service.
    pub remote: NsName,
    /// The mirror it would have.
    pub mirror: String,
    /// Why it has none.
    pub reason: SkipReason,
}

/// The local cluster as the mirror sees it.
#[derive(Clone, Debug, Default)]
pub struct LocalView {
    /// Namespaces that exist.
    pub namespaces: BTreeSet<String>,
    /// Every Service (to find conflicts and used cluster IPs).
    pub services: BTreeMap<NsName, Service>,
    /// Every EndpointSlice.
    pub slices: BTreeMap<NsName, EndpointSlice>,
}

/// Where a link's gateway is, and whether traffic should go there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    /// Its resolved addresses.
    pub addresses: Vec<IpAddr>,
    /// Its port.
    pub port: u16,
    /// Whether mirror endpoints are ready: the gateway answers its probe and the target
    /// cluster is reachable.
    pub ready: bool,
    /// The local gateway's proxy entry for this link, if Strait proxies are to use it.
    pub entry: Option<Entry>,
}

/// The local gateway's proxy entry for one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its address.
    pub addr: SocketAddr,
    /// The link each request must name, when the entry serves every link of the gateway
    /// (`strait gateway --proxy-entry ADDR`); `None` for an entry of this link alone.
    pub link: Option<String>,
}

/// What the mirror knows of a remote Service's meshed workloads (see [`remote_workload`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteWorkload {
    /// Their mesh identity.
    pub identity: String,
    /// The addresses of the ready pods with that identity, sorted (none when the remote
    /// catalog does not give pod addresses).
    pub endpoints: Vec<IpAddr>,
}

/// Most remote endpoint addresses one mirror lists: the annotation stays well under
/// Kubernetes' 256 KiB limit for all of an object's annotations (IPv6 included).
pub const MAX_REMOTE_ENDPOINTS: usize = 1000;

/// The meshed workloads of a remote Service (pure): their identity, from the service
/// accounts of the running meshed pods its selector matches, in its namespace, in the
/// trust domain of the link's gateway identity, and the addresses of the ready ones.
/// With several service accounts, the one with the most pods wins, ties going to the
/// first name in lexical order, so every mirror decides alike; the remote gateway then
/// delivers only to endpoints of that identity, so only their addresses are listed.
/// A pod is ready by its `Ready` condition, or its phase `Running` when it has none
/// (as the controller's endpoints are).
pub fn remote_workload<'a>(
    link: &LinkConfig,
    svc: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<RemoteWorkload> {
    const MARKER: &str = ".serviceaccount.identity.linkerd.";
    let trust_domain = link.gateway_identity.split_once(MARKER)?.1;
    let ns = svc.metadata.namespace.as_deref()?;
    let selector = svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ready: Vec<(&str, IpAddr)> = Vec::new();
    for pod in pods {
        let meta = &pod.metadata;
        let labels = meta.labels.as_ref();
        let meshed = strait_api::core::pod_is_meshed(meta);
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        let selected = selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if meta.namespace.as_deref() != Some(ns)
            || !meshed
            || !selected
            || matches!(phase, Some("Succeeded" | "Failed"))
        {
            continue;
        }
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default");
        *counts.entry(sa).or_default() += 1;
        let is_ready = strait_api::core::pod_is_ready(status);
        let ip = status.and_then(|s| s.pod_ip.as_deref()?.parse().ok());
        if let (true, Some(ip)) = (is_ready, ip) {
            ready.push((sa, ip));
        }
    }
    // Most pods first; on a tie the lexically first name compares as the greater.
    let (sa, _) = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))?;
    let mut endpoints: Vec<IpAddr> = ready
        .into_iter()
        .filter(|(s, _)| s == sa)
        .map(|(_, ip)| ip)
        .collect();
    endpoints.sort();
    endpoints.dedup();
    endpoints.truncate(MAX_REMOTE_ENDPOINTS);
    Some(RemoteWorkload {
        identity: format!("{sa}.{ns}{MARKER}{trust_domain}"),
        endpoints,
    })
}

/// Adds the annotations that send Strait proxies through the local gateway's proxy
/// entry (see the module docs), when both the entry and the remote workload are known.
pub(crate) fn annotate_entry(
    annotations: &mut BTreeMap<String, String>,
    entry: Option<&Entry>,
    workload: Option<&RemoteWorkload>,
) {
    let (Some(entry), Some(workload)) = (entry, workload) else {
        return;
    };
    annotations.insert(ml::GATEWAY_ENTRY.into(), entry.addr.to_string());
    if let Some(link) = &entry.link {
        annotations.insert(ml::GATEWAY_LINK.into(), link.clone());
    }
    annotations.insert(ml::REMOTE_IDENTITY.into(), workload.identity.clone());
    if !workload.endpoints.is_empty() {
        let list: Vec<String> = workload.endpoints.iter().map(IpAddr::to_string).collect();
        annotations.insert(ml::REMOTE_ENDPOINTS.into(), list.join(","));
    }
}

/// An IPv4 range mirrors take cluster IPs from (local mode; Kubernetes allocates its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRange {
    base: u32,
    size: u32,
}

impl ServiceRange {
    /// Parses `a.b.c.d/len` (len 8–30).
    pub fn parse(s: &str) -> Result<Self, String> {
        let expected = || format!("an IPv4 range such as 10.96.0.0/16 (prefix 8-30), found {s:?}");
        let (ip, len) = s.split_once('/').ok_or_else(expected)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| expected())?;
        let len: u32 = len.parse().map_err(|_| expected())?;
        if !(8..=30).contains(&len) {
            return Err(expected());
        }
        let mask = u32::MAX << (32 - len);
        Ok(Self {
            base: u32::from(ip) & mask,
            size: 1 << (32 - len),
        })
    }

    /// A free address for `name`: the same one every time while it is free (a hash of the
    /// name), the next free one otherwise. Network and broadcast addresses are never used.
    pub(crate) fn allocate(&self, name: &str, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let usable = self.size - 2;
        let start = name.bytes().fold(2_166_136_261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16_777_619)
        }) % usable;
        (0..usable)
            .map(|i| Ipv4Addr::from(self.base + 1 + (start + i) % usable))
            .find(|ip| !used.contains(ip))
    }
}

/// The cluster IP of a Service the mirror owns: the one it `kept`, else a fresh one from
/// `range` (marked in `used`), else none when no range is configured. `Err` when the
/// range is full.
pub(crate) fn cluster_ip(
    kept: Option<String>,
    range: Option<&ServiceRange>,
    name: &str,
    used: &mut BTreeSet<Ipv4Addr>,
) -> Result<Option<String>, ()> {
    match (kept, range) {
        (Some(ip), _) => Ok(Some(ip)),
        (None, Some(r)) => {
            let ip = r.allocate(name, used).ok_or(())?;
            used.insert(ip);
            Ok(Some(ip.to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// What to do to the local cluster.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Objects to create or update (Services before their EndpointSlices).
    pub apply: Vec<Object>,
    /// Owned objects to delete.
    pub delete: Vec<ObjectKey>,
    /// Selected remote Services that are not mirrored.
    pub skipped: Vec<Skipped>,
    /// Every mirror that should exist: (remote Service, local mirror name, mode).
    pub mirrors: Vec<(NsName, String, Mode)>,
}

impl Plan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.delete.is_empty()
    }
}

/// The cluster a local mirror object mirrors (`mirror.linkerd.io/cluster-name` on an
/// object labelled `mirror.linkerd.io/mirrored-service: "true"`), if it is one.
pub fn mirror_cluster(meta: &ObjectMeta) -> Option<&str> {
    let labels = meta.labels.as_ref()?;
    if labels.get(ml::MIRRORED_SERVICE).map(String::as_str) != Some(TRUE) {
        return None;
    }
    labels.get(ml::CLUSTER_NAME).map(String::as_str)
}

/// Whether a local object belongs to `link`.
pub fn owned(link: &LinkConfig, meta: &ObjectMeta) -> bool {
    let labels = meta.labels.as_ref();
    labels
        .and_then(|l| l.get(ml::MIRRORED_SERVICE))
        .map(String::as_str)
        == Some(TRUE)
        && labels.and_then(|l| l.get(ml::CLUSTER_NAME)) == Some(&link.target_cluster)
}

/// How `svc` is mirrored, if at all.
pub fn mode(link: &LinkConfig, svc: &Service) -> Option<Mode> {
    let labels = svc.metadata.labels.as_ref();
    // A mirror is never mirrored again: that would chain clusters into loops.
    if labels
        .and_then(|l| l.get(ml::MIRRORED_SERVICE))
        .map(String::as_str)
        == Some(TRUE)
    {
        return None;
    }
    if matches(&link.selector, labels) {
        Some(Mode::Gateway)
    } else if matches(&link.remote_discovery_selector, labels) {
        Some(Mode::RemoteDiscovery)
    } else {
        None
    }
}

pub(crate) fn ns_name(meta: &ObjectMeta) -> NsName {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn copied(
    from: Option<&BTreeMap<String, String>>,
    excluded: &[String],
    never: impl Fn(&str) -> bool,
) -> BTreeMap<String, String> {
    from.into_iter()
        .flatten()
        .filter(|(k, _)| !never(k) && !excluded.iter().any(|p| glob(p, k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn ours(link: &LinkConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ml::MIRRORED_SERVICE.to_string(), TRUE.to_string()),
        (ml::CLUSTER_NAME.to_string(), link.target_cluster.clone()),
    ])
}

/// The mirror Service of `remote` (without a cluster IP); in gateway mode, with the
/// proxy entry and the remote identity when both are known.
pub fn mirror_service(
    link: &LinkConfig,
    remote: &Service,
    mode: Mode,
    entry: Option<&Entry>,
    workload: Option<&RemoteWorkload>,
) -> Service {
    let (ns, name) = ns_name(&remote.metadata);
    let mut labels = copied(remote.metadata.labels.as_ref(), &link.excluded_labels, |k| {
        k.starts_with("mirror.linkerd.io/") || k.starts_with("multicluster.linkerd.io/")
    });
    labels.extend(ours(link));
    let mut annotations = copied(
        remote.metadata.annotations.as_ref(),
        &link.excluded_annotations,
        |k| {
            NEVER_COPIED_ANNOTATIONS.contains(&k)
                || k.starts_with("mirror.linkerd.io/")
                || k.starts_with("multicluster.linkerd.io/")
                || k.starts_with(ml::STRAIT_PREFIX)
        },
    );
    annotations.insert(
        ml::REMOTE_RESOURCE_VERSION.into(),
        remote.metadata.resource_version.clone().unwrap_or_default(),
    );
    annotations.insert(
        ml::REMOTE_SVC_FQ_NAME.into(),
        format!("{name}.{ns}.svc.{}", link.target_domain),
    );
    match mode {
        Mode::Gateway => {
            annotations.insert(ml::REMOTE_GATEWAY_IDENTITY.into(), link.gateway_identity.clone());
            annotate_entry(&mut annotations, entry, workload);
        }
        Mode::RemoteDiscovery => {
            annotations.insert(ml::REMOTE_DISCOVERY.into(), link.target_cluster.clone());
            annotations.insert(ml::REMOTE_SERVICE.into(), name.clone());
        }
    }
    let ports = remote
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.port,
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
            ..Default::default()
        })
        .collect();
    Service {
        metadata: ObjectMeta {
            name: Some(link.mirror_name(&name)),
            namespace: Some(ns),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

/// The EndpointSlice of a gateway-mode mirror: every gateway address, on the gateway port
/// under each of the Service's port names.
pub fn mirror_slice(link: &LinkConfig, mirror: &Service, gateway: &Gateway) -> EndpointSlice {
    let (ns, name) = ns_name(&mirror.metadata);
    let mut labels = ours(link);
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let annotations = BTreeMap::from([
        (
            ml::REMOTE_GATEWAY_IDENTITY.to_string(),
            link.gateway_identity.clone(),
        ),
        (
            ml::REMOTE_SVC_FQ_NAME.to_string(),
            mirror
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ml::REMOTE_SVC_FQ_NAME).cloned())
                .unwrap_or_default(),
        ),
    ]);
    let v6 = gateway.addresses.first().is_some_and(IpAddr::is_ipv6);
    let endpoints = gateway
        .addresses
        .iter()
        .filter(|a| a.is_ipv6() == v6)
        .map(|a| Endpoint {
            addresses: vec![a.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(gateway.ready),
                serving: Some(gateway.ready),
                terminating: Some(false),
            }),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let ports = mirror
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(i32::from(gateway.port)),
            protocol: Some("TCP".into()),
            app_protocol: None,
        })
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{name}{SLICE_SUFFIX}")),
            namespace: Some(ns),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
        endpoints: Some(endpoints),
        ports: Some(ports),
    }
}

/// The EndpointSlice of a remote-discovery mirror (Strait): Linkerd resolves such a
/// mirror by reading the target cluster's endpoints over a flat network; Strait reaches
/// them through the gateway path instead, so the slice holds the link's gateway (as a
/// gateway mirror's does) and is marked [`ml::GATEWAY_CLUSTER`], with the local
/// gateway's proxy entry and the remote workload identity when both are known; the
/// destination service then answers the mirror as it answers a federated Service's
/// remote member.
pub fn remote_discovery_slice(
    link: &LinkConfig,
    mirror: &Service,
    gateway: &Gateway,
    workload: Option<&RemoteWorkload>,
) -> EndpointSlice {
    let mut slice = mirror_slice(link, mirror, gateway);
    if let Some(labels) = slice.metadata.labels.as_mut() {
        labels.insert(ml::GATEWAY_CLUSTER.into(), link.target_cluster.clone());
    }
    if let Some(annotations) = slice.metadata.annotations.as_mut() {
        annotate_entry(annotations, gateway.entry.as_ref(), workload);
    }
    slice
}

/// The fields the mirror sets, to compare desired and stored objects (servers add
/// defaults and bookkeeping the mirror must not fight).
pub(crate) fn fingerprint(o: &Object) -> Value {
    let v = o.to_value();
    let meta = json!({"labels": v["metadata"]["labels"], "annotations": v["metadata"]["annotations"]});
    match o.kind_id() {
        KindId::Service => {
            json!({"meta": meta, "ports": v["spec"]["ports"], "clusterIP": v["spec"]["clusterIP"]})
        }
        _ => {
            json!({"meta": meta, "addressType": v["addressType"], "endpoints": v["endpoints"], "ports": v["ports"]})
        }
    }
}

/// Plans the local mirrors of `link` from a complete snapshot of the target's Services
/// (and their workloads, by remote Service, see [`remote_workload`]).
pub fn plan<'a>(
    link: &LinkConfig,
    remote: impl IntoIterator<Item = &'a Service>,
    workloads: &BTreeMap<NsName, RemoteWorkload>,
    local: &LocalView,
    gateway: &Gateway,
    range: Option<&ServiceRange>,
) -> Plan {
    let mut out = Plan::default();
    let mut desired: BTreeMap<ObjectKey, Object> = BTreeMap::new();
    let mut used: BTreeSet<Ipv4Addr> = local
        .services
        .values()
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok())
        .collect();
    for svc in remote {
        let Some(mode) = mode(link, svc) else { continue };
        let remote_key = ns_name(&svc.metadata);
        let mirror_name = link.mirror_name(&remote_key.1);
        let skip = |reason| Skipped {
            remote: remote_key.clone(),
            mirror: mirror_name.clone(),
            reason,
        };
        if !local.namespaces.contains(&remote_key.0) {
            out.skipped.push(skip(SkipReason::NamespaceNotFound));
            continue;
        }
        if mirror_name.len() > 63 {
            out.skipped.push(skip(SkipReason::NameTooLong));
            continue;
        }
        let mirror_key = (remote_key.0.clone(), mirror_name.clone());
        let existing = local.services.get(&mirror_key);
        if existing.is_some_and(|e| !owned(link, &e.metadata)) {
            out.skipped.push(skip(SkipReason::NameTaken(ObjectKey::new(
                KindId::Service,
                &mirror_key.0,
                &mirror_key.1,
            ))));
            continue;
        }
        let slice_key = (remote_key.0.clone(), format!("{mirror_name}{SLICE_SUFFIX}"));
        if local
            .slices
            .get(&slice_key)
            .is_some_and(|s| !owned(link, &s.metadata))
        {
            out.skipped.push(skip(SkipReason::NameTaken(ObjectKey::new(
                KindId::EndpointSlice,
                &slice_key.0,
                &slice_key.1,
            ))));
            continue;
        }
        let workload = workloads.get(&remote_key);
        let mut mirror = mirror_service(link, svc, mode, gateway.entry.as_ref(), workload);
        let kept_ip = existing.and_then(|e| e.spec.as_ref()?.cluster_ip.clone());
        let Ok(ip) = cluster_ip(kept_ip, range, &mirror_name, &mut used) else {
            out.skipped.push(skip(SkipReason::NoClusterIp));
            continue;
        };
        if let Some(spec) = mirror.spec.as_mut() {
            spec.cluster_ip = ip;
        }
        let slice = match mode {
            Mode::Gateway => mirror_slice(link, &mirror, gateway),
            Mode::RemoteDiscovery => remote_discovery_slice(link, &mirror, gateway, workload),
        };
        desired.insert(slice.metadata_key(), slice.into_object());
        desired.insert(mirror.metadata_key(), mirror.into_object());
        out.mirrors.push((remote_key, mirror_name, mode));
    }
    // Services first, so an EndpointSlice never names a Service that is not there yet.
    let mut apply: Vec<Object> = desired
        .iter()
        .filter(|(key, o)| {
            let stored = match key.kind {
                KindId::Service => local
                    .services
                    .get(&(key.namespace.clone(), key.name.clone()))
                    .map(|s| s.clone().into_object()),
                _ => local
                    .slices
                    .get(&(key.namespace.clone(), key.name.clone()))
                    .map(|s| s.clone().into_object()),
            };
            stored.is_none_or(|s| fingerprint(&s) != fingerprint(o))
        })
        .map(|(_, o)| o.clone())
        .collect();
    apply.sort_by_key(|o| o.kind_id() != KindId::Service);
    out.apply = apply;
    let owned_keys = local
        .services
        .values()
        .filter(|s| owned(link, &s.metadata))
        .map(MetadataKey::metadata_key)
        .chain(
            local
                .slices
                .values()
                .filter(|s| owned(link, &s.metadata))
                .map(MetadataKey::metadata_key),
        );
    // Slices first: a Service is never left without being the last to go.
    let mut delete: Vec<ObjectKey> = owned_keys.filter(|k| !desired.contains_key(k)).collect();
    delete.sort_by_key(|k| k.kind == KindId::Service);
    out.delete = delete;
    out
}

/// `Kind::metadata` as an [`ObjectKey`].
trait MetadataKey {
    fn metadata_key(&self) -> ObjectKey;
}

impl<K: Kind> MetadataKey for K {
    fn metadata_key(&self) -> ObjectKey {
        let m = self.metadata();
        ObjectKey::new(
            K::ID,
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }
}

/// Folds an applied or deleted object into the view (so the next plan sees the mirror's
/// own writes before their watch events arrive).
pub fn fold(view: &mut LocalView, object: Object, deleted: bool) {
    let key = ns_name(object.meta());
    match object {
        Object::Namespace(n) => {
            let name = n.metadata.name.unwrap_or_default();
            if deleted {
                view.namespaces.remove(&name);
            } else {
                view.namespaces.insert(name);
            }
        }
        Object::Service(s) => {
            if deleted {
                view.services.remove(&key);
            } else {
                view.services.insert(key, s);
            }
        }
        Object::EndpointSlice(s) => {
            if deleted {
                view.slices.remove(&key);
            } else {
                view.slices.insert(key, s);
            }
        }
        _ => {}
    }
}

/// The controller name on the Link status entries this mirror writes (Linkerd's).
pub const CONTROLLER_NAME: &str = "linkerd.io/service-mirror";

/// One Link status entry in Linkerd's shape (pure): the remote Service, and one
/// `Mirrored` condition naming the local Service it is (or would be) part of. The
/// condition keeps its `lastTransitionTime` from the entry for the same remote Service in
/// `earlier` while its status and reason stay the same.
pub(crate) fn mirrored_entry(
    earlier: Option<&[ServiceStatus]>,
    remote: &NsName,
    local: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &str,
) -> ServiceStatus {
    let old = earlier
        .into_iter()
        .flatten()
        .find(|s| {
            s.remote_ref.as_ref().is_some_and(|r| {
                r.namespace.as_deref() == Some(remote.0.as_str())
                    && r.name.as_deref() == Some(remote.1.as_str())
            })
        })
        .and_then(|s| {
            s.conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Mirrored")
                .cloned()
        });
    let unchanged = old
        .as_ref()
        .is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason));
    let transition = match (&old, unchanged) {
        (Some(c), true) => c.last_transition_time.clone(),
        _ => Some(now.to_string()),
    };
    ServiceStatus {
        controller_name: Some(CONTROLLER_NAME.into()),
        remote_ref: Some(ObjectRef {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: Some(remote.1.clone()),
            namespace: Some(remote.0.clone()),
        }),
        conditions: Some(vec![LinkCondition {
            type_: "Mirrored".into(),
            status: status.into(),
            last_probe_time: None,
            last_transition_time: transition,
            reason: Some(reason.into()),
            message: Some(message),
            local_ref: Some(ObjectRef {
                group: None,
                kind: Some("Service".into()),
                name: Some(local.to_string()),
                namespace: Some(remote.0.clone()),
            }),
        }]),
    }
}

/// The Link's `status.mirrorServices` after `plan` (pure): one entry per selected remote
/// Service with a `Mirrored` condition — `True` for a mirror, `False` with the skip's
/// reason and what to do for a skipped one (a missing namespace, say), so the condition
/// clears by turning `True` once the cause is gone. A condition whose status and reason
/// did not change keeps its `lastTransitionTime` from `previous`; `now` is RFC 3339.
/// Federated services are left as they are.
pub fn link_status(plan: &Plan, previous: Option<&LinkStatus>, now: &str) -> LinkStatus {
    let earlier = previous.and_then(|p| p.mirror_services.as_deref());
    let entry = |remote: &NsName, mirror: &str, status: &str, reason: &str, message: String| {
        mirrored_entry(earlier, remote, mirror, status, reason, message, now)
    };
    let mut services: Vec<(NsName, ServiceStatus)> = plan
        .mirrors
        .iter()
        .map(|(remote, mirror, _)| {
            (
                remote.clone(),
                entry(remote, mirror, "True", "Mirrored", String::new()),
            )
        })
        .chain(plan.skipped.iter().map(|s| {
            let message = s.reason.message(&s.remote, &s.mirror);
            (
                s.remote.clone(),
                entry(&s.remote, &s.mirror, "False", s.reason.reason(), message),
            )
        }))
        .collect();
    services.sort_by(|a, b| a.0.cmp(&b.0));
    LinkStatus {
        mirror_services: Some(services.into_iter().map(|(_, s)| s).collect()),
        federated_services: previous.and_then(|p| p.federated_services.clone()),
    }
}

#[cfg(test)]
pub(crate) mod tests;
