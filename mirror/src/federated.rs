//! Federated services (Linkerd 2.17's `mirror.linkerd.io/federated=member`), pure: from
//! the local cluster and every link's member Services, the `<svc>-federated` Services to
//! keep and the EndpointSlices that carry their remote members through the gateways.
//!
//! A federated Service is one per namespace/name that has a member anywhere: the local
//! Service when it carries `mirror.linkerd.io/federated: member`, and each linked
//! cluster's Service that its Link's `federatedServiceSelector` selects. As in Linkerd it
//! has no selector and names its members in annotations —
//! `multicluster.linkerd.io/local-discovery: <svc>` and
//! `multicluster.linkerd.io/remote-discovery: <svc>@<cluster>,…` — and its ports are the
//! union of the members' ports (by number; the first member to name a port names it).
//!
//! Linkerd resolves remote members over a flat network; Strait keeps its gateway path:
//! each remote member gets one EndpointSlice `<svc>-federated-<cluster>` whose endpoints
//! are that cluster's gateway (ready while the link's gateway is), annotated like a
//! gateway mirror (`remote-gateway-identity`, `remote-svc-fq-name`, and the local
//! gateway's proxy entry with the remote workload identity). The destination service
//! answers the union: local endpoints directly, remote members through the gateway.
//!
//! Invariants:
//! - Federated objects are owned by label `mirror.strait.io/federated: "true"` and never
//!   carry `mirror.linkerd.io/cluster-name`, so no link's own plan ever touches them, and
//!   this plan touches nothing else. A local object in the way is skipped and left alone.
//! - A link is a member source only once its mirror has a complete remote list; a link
//!   that drops keeps its last list (its slices turn not ready); a deleted Link stops
//!   being a source, so its members leave.
//! - Planning again over the applied result is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strait_api::labels::mirror as ml;
use strait_api::{Kind, KindId, Object, ObjectKey};

use crate::TRUE;
use crate::link::LinkConfig;
use crate::reconcile::{self, Gateway, LocalView, NsName, Plan, ServiceRange, SkipReason, Skipped};
use crate::selector::{label_equals, matches};

/// The suffix of a federated Service's name.
pub const FEDERATED_SUFFIX: &str = "-federated";

/// One link's contribution: its target's member Services, complete.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkMembers {
    /// The link.
    pub link: LinkConfig,
    /// The target's Services the link's federated selector selects.
    pub services: Vec<Service>,
    /// The remote workload identity of each member (for the proxy entry).
    pub identities: BTreeMap<NsName, String>,
    /// The link's gateway, with its readiness.
    pub gateway: Gateway,
}

/// The federated Service's name for `name`.
pub fn federated_name(name: &str) -> String {
    format!("{name}{FEDERATED_SUFFIX}")
}

/// Whether a local object is a federated object (owned by the federation task).
pub fn owned(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(ml::FEDERATED_OWNED))
        .is_some_and(|v| v == TRUE)
}

fn is_mirror(svc: &Service) -> bool {
    svc.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ml::MIRRORED_SERVICE))
        .is_some_and(|v| v == TRUE)
}

/// The members of a link: the remote Services its federated selector selects (mirrors of
/// other clusters never: that would chain clusters).
pub fn link_members<'a>(link: &LinkConfig, remote: impl IntoIterator<Item = &'a Service>) -> Vec<Service> {
    remote
        .into_iter()
        .filter(|s| !is_mirror(s) && matches(&link.federated_selector, s.metadata.labels.as_ref()))
        .cloned()
        .collect()
}

/// Every member of one federated Service.
#[derive(Default)]
struct Members<'a> {
    local: Option<&'a Service>,
    remote: BTreeMap<String, (&'a LinkMembers, &'a Service)>,
}

fn ports_of(svc: &Service) -> impl Iterator<Item = &ServicePort> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
}

/// Plans the federated Services of the local cluster from its view and every link's
/// members (by cluster name; one entry per cluster).
pub fn plan(links: &[LinkMembers], local: &LocalView, range: Option<&ServiceRange>) -> Plan {
    let member = label_equals(ml::FEDERATED, ml::FEDERATED_MEMBER);
    let mut by_service: BTreeMap<NsName, Members<'_>> = BTreeMap::new();
    for svc in local.services.values() {
        if !is_mirror(svc) && !owned(&svc.metadata) && matches(&member, svc.metadata.labels.as_ref()) {
            by_service
                .entry(reconcile::ns_name(&svc.metadata))
                .or_default()
                .local = Some(svc);
        }
    }
    for lm in links {
        for svc in &lm.services {
            by_service
                .entry(reconcile::ns_name(&svc.metadata))
                .or_default()
                .remote
                .insert(lm.link.target_cluster.clone(), (lm, svc));
        }
    }
    let mut out = Plan::default();
    let mut desired: BTreeMap<ObjectKey, Object> = BTreeMap::new();
    let mut used: BTreeSet<Ipv4Addr> = local
        .services
        .values()
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok())
        .collect();
    for ((ns, name), members) in &by_service {
        let fed_name = federated_name(name);
        let skip = |reason| Skipped {
            remote: (ns.clone(), name.clone()),
            mirror: fed_name.clone(),
            reason,
        };
        if !local.namespaces.contains(ns) {
            out.skipped.push(skip(SkipReason::NamespaceNotFound));
            continue;
        }
        if fed_name.len() > 63 {
            out.skipped.push(skip(SkipReason::NameTooLong));
            continue;
        }
        let key = (ns.clone(), fed_name.clone());
        let existing = local.services.get(&key);
        if existing.is_some_and(|e| !owned(&e.metadata)) {
            out.skipped.push(skip(SkipReason::NameTaken(ObjectKey::new(
                KindId::Service,
                ns,
                &fed_name,
            ))));
            continue;
        }
        // Ports: the union by number, the first member (local, then clusters by name)
        // naming each.
        let mut ports: BTreeMap<i32, ServicePort> = BTreeMap::new();
        let all = members
            .local
            .into_iter()
            .chain(members.remote.values().map(|(_, s)| *s));
        for p in all.flat_map(ports_of) {
            ports.entry(p.port).or_insert_with(|| ServicePort {
                name: p.name.clone(),
                port: p.port,
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
                ..Default::default()
            });
        }
        let mut annotations = BTreeMap::new();
        if members.local.is_some() {
            annotations.insert(ml::LOCAL_DISCOVERY.to_string(), name.clone());
        }
        if !members.remote.is_empty() {
            let remote: Vec<String> = members.remote.keys().map(|c| format!("{name}@{c}")).collect();
            annotations.insert(ml::REMOTE_DISCOVERY_FEDERATED.to_string(), remote.join(","));
        }
        let kept_ip = existing.and_then(|e| e.spec.as_ref()?.cluster_ip.clone());
        let Ok(ip) = reconcile::cluster_ip(kept_ip, range, &fed_name, &mut used) else {
            out.skipped.push(skip(SkipReason::NoClusterIp));
            continue;
        };
        let svc = Service {
            metadata: ObjectMeta {
                name: Some(fed_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(BTreeMap::from([
                    (ml::MIRRORED_SERVICE.to_string(), TRUE.to_string()),
                    (ml::FEDERATED_OWNED.to_string(), TRUE.to_string()),
                ])),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: ip,
                ports: Some(ports.values().cloned().collect()),
                ..Default::default()
            }),
            status: None,
        };
        for (cluster, (lm, remote)) in &members.remote {
            let slice_name = format!("{fed_name}-{cluster}");
            if local
                .slices
                .get(&(ns.clone(), slice_name.clone()))
                .is_some_and(|s| !owned(&s.metadata))
            {
                out.skipped.push(skip(SkipReason::NameTaken(ObjectKey::new(
                    KindId::EndpointSlice,
                    ns,
                    &slice_name,
                ))));
                continue;
            }
            let slice = member_slice(lm, &svc, remote, &slice_name);
            desired.insert(key_of(&slice), slice.into_object());
        }
        out.mirrors
            .push(((ns.clone(), name.clone()), fed_name, reconcile::Mode::Gateway));
        desired.insert(key_of(&svc), svc.into_object());
    }
    let mut apply: Vec<Object> = desired
        .iter()
        .filter(|(key, o)| {
            let k = (key.namespace.clone(), key.name.clone());
            let stored = match key.kind {
                KindId::Service => local.services.get(&k).map(|s| s.clone().into_object()),
                _ => local.slices.get(&k).map(|s| s.clone().into_object()),
            };
            stored.is_none_or(|s| reconcile::fingerprint(&s) != reconcile::fingerprint(o))
        })
        .map(|(_, o)| o.clone())
        .collect();
    apply.sort_by_key(|o| o.kind_id() != KindId::Service);
    out.apply = apply;
    let mut delete: Vec<ObjectKey> = local
        .slices
        .values()
        .filter(|s| owned(&s.metadata))
        .map(key_of)
        .chain(local.services.values().filter(|s| owned(&s.metadata)).map(key_of))
        .filter(|k| !desired.contains_key(k))
        .collect();
    delete.sort_by_key(|k| k.kind == KindId::Service);
    out.delete = delete;
    out
}

fn key_of<K: Kind>(o: &K) -> ObjectKey {
    let m = o.metadata();
    ObjectKey::new(
        K::ID,
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// The EndpointSlice carrying one remote member: the link's gateway (as a gateway
/// mirror's slice), on the gateway port under the federated Service's name of each port
/// the member has.
fn member_slice(lm: &LinkMembers, fed: &Service, remote: &Service, slice_name: &str) -> EndpointSlice {
    let link = &lm.link;
    let (ns, name) = reconcile::ns_name(&remote.metadata);
    let fed_name = fed.metadata.name.clone().unwrap_or_default();
    // The gateway mirror's slice, for the endpoints and address type.
    let as_mirror = reconcile::mirror_service(link, remote, reconcile::Mode::Gateway, None, None);
    let mut slice = reconcile::mirror_slice(link, &as_mirror, &lm.gateway);
    let remote_ports: BTreeSet<i32> = ports_of(remote).map(|p| p.port).collect();
    slice.ports = Some(
        ports_of(fed)
            .filter(|p| remote_ports.contains(&p.port))
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(i32::from(lm.gateway.port)),
                protocol: Some("TCP".into()),
                app_protocol: None,
            })
            .collect(),
    );
    let mut annotations = BTreeMap::from([
        (
            ml::REMOTE_GATEWAY_IDENTITY.to_string(),
            link.gateway_identity.clone(),
        ),
        (
            ml::REMOTE_SVC_FQ_NAME.to_string(),
            format!("{name}.{ns}.svc.{}", link.target_domain),
        ),
    ]);
    if let (Some(entry), Some(identity)) = (lm.gateway.entry, lm.identities.get(&(ns.clone(), name.clone())))
    {
        annotations.insert(ml::GATEWAY_ENTRY.to_string(), entry.to_string());
        annotations.insert(ml::REMOTE_IDENTITY.to_string(), identity.clone());
    }
    slice.metadata = ObjectMeta {
        name: Some(slice_name.to_string()),
        namespace: Some(ns),
        labels: Some(BTreeMap::from([
            (reconcile::SERVICE_NAME_LABEL.to_string(), fed_name),
            (
                reconcile::MANAGED_BY_LABEL.to_string(),
                reconcile::MANAGED_BY.to_string(),
            ),
            (ml::FEDERATED_OWNED.to_string(), TRUE.to_string()),
            (ml::GATEWAY_CLUSTER.to_string(), link.target_cluster.clone()),
        ])),
        annotations: Some(annotations),
        ..Default::default()
    };
    slice
}

#[cfg(test)]
mod tests;
