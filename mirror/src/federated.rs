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
//! A remote member joins only if it can: a headless member (Linkerd's rule) or one whose
//! ports clash with the members before it (the same number with another protocol, or the
//! same name on another number) stays out. What became of every remote member
//! ([`MemberOutcome`]) is what its Link reports in `status.federatedServices`
//! ([`link_status`]), in Linkerd's shape: a `Mirrored` condition per member, naming the
//! federated Service.
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
    /// The remote workloads of each member (for the proxy entry).
    pub workloads: BTreeMap<NsName, reconcile::RemoteWorkload>,
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

/// What became of one remote member: joined its federated Service, or why not. This is
/// what the member's Link reports in `status.federatedServices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberOutcome {
    /// The member's cluster (its Link's `targetClusterName`).
    pub cluster: String,
    /// The remote Service.
    pub remote: NsName,
    /// The federated Service it joins (or would join).
    pub federated: String,
    /// `None` once joined; otherwise why it is not.
    pub skipped: Option<SkipReason>,
}

/// Plans the federated Services of the local cluster from its view and every link's
/// members (by cluster name; one entry per cluster).
pub fn plan(links: &[LinkMembers], local: &LocalView, range: Option<&ServiceRange>) -> Plan {
    plan_members(links, local, range).0
}

/// The members' part of one link's `status.federatedServices` (pure): one entry per
/// member of `cluster` in `outcomes`, in Linkerd's shape — a `Mirrored` condition, `True`
/// with the federated Service as `localRef` once joined, `False` with the reason and what
/// to do otherwise; times as in [`reconcile::link_status`].
pub fn link_status(
    cluster: &str,
    outcomes: &[MemberOutcome],
    previous: Option<&strait_api::mesh::link::LinkStatus>,
    now: &str,
) -> Vec<strait_api::mesh::link::ServiceStatus> {
    let earlier = previous.and_then(|p| p.federated_services.as_deref());
    let mut mine: Vec<&MemberOutcome> = outcomes.iter().filter(|o| o.cluster == cluster).collect();
    mine.sort_by(|a, b| a.remote.cmp(&b.remote));
    mine.into_iter()
        .map(|o| match &o.skipped {
            None => reconcile::mirrored_entry(
                earlier,
                &o.remote,
                &o.federated,
                "True",
                "Mirrored",
                String::new(),
                now,
            ),
            Some(r) => {
                let message = format!("cluster {cluster}: {}", r.message(&o.remote, &o.federated));
                reconcile::mirrored_entry(
                    earlier,
                    &o.remote,
                    &o.federated,
                    "False",
                    r.reason(),
                    message,
                    now,
                )
            }
        })
        .collect()
}

/// Why `svc`'s ports cannot join a federated Service whose ports so far are `ports`:
/// a port number already carried with another protocol, or a port name already used by
/// another number (a Service's port names must be unique).
fn port_conflict(svc: &Service, ports: &BTreeMap<i32, ServicePort>) -> Option<String> {
    let tcp = |p: &ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
    for p in ports_of(svc) {
        if let Some(have) = ports.get(&p.port)
            && tcp(have) != tcp(p)
        {
            return Some(format!(
                "port {} is {} here and {} in another member",
                p.port,
                tcp(p),
                tcp(have)
            ));
        }
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty())
            && let Some(other) = ports
                .values()
                .find(|q| q.port != p.port && q.name.as_deref() == Some(name))
        {
            return Some(format!(
                "port name {name} is port {} here and port {} in another member",
                p.port, other.port
            ));
        }
    }
    None
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// [`plan`], with what became of every remote member.
pub fn plan_members(
    links: &[LinkMembers],
    local: &LocalView,
    range: Option<&ServiceRange>,
) -> (Plan, Vec<MemberOutcome>) {
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
    let mut outcomes: Vec<MemberOutcome> = Vec::new();
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
        let outcome = |cluster: &str, skipped: Option<SkipReason>| MemberOutcome {
            cluster: cluster.to_string(),
            remote: (ns.clone(), name.clone()),
            federated: fed_name.clone(),
            skipped,
        };
        // A reason that keeps the whole federated Service out keeps every member out.
        let all_out = |reason: SkipReason, out: &mut Plan, outcomes: &mut Vec<MemberOutcome>| {
            outcomes.extend(members.remote.keys().map(|c| outcome(c, Some(reason.clone()))));
            out.skipped.push(skip(reason));
        };
        if !local.namespaces.contains(ns) {
            all_out(SkipReason::NamespaceNotFound, &mut out, &mut outcomes);
            continue;
        }
        if fed_name.len() > 63 {
            all_out(SkipReason::NameTooLong, &mut out, &mut outcomes);
            continue;
        }
        let key = (ns.clone(), fed_name.clone());
        let existing = local.services.get(&key);
        if existing.is_some_and(|e| !owned(&e.metadata)) {
            let taken = ObjectKey::new(KindId::Service, ns, &fed_name);
            all_out(SkipReason::NameTaken(taken), &mut out, &mut outcomes);
            continue;
        }
        // Ports: the union by number, the first member (local, then clusters by name)
        // naming each; a remote member that is headless or whose ports clash with the
        // union so far stays out (and says why).
        let mut ports: BTreeMap<i32, ServicePort> = BTreeMap::new();
        let add = |svc: &Service, ports: &mut BTreeMap<i32, ServicePort>| {
            for p in ports_of(svc) {
                ports.entry(p.port).or_insert_with(|| ServicePort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: p.app_protocol.clone(),
                    ..Default::default()
                });
            }
        };
        if let Some(svc) = members.local {
            add(svc, &mut ports);
        }
        let mut joined: BTreeMap<&String, (&LinkMembers, &Service)> = BTreeMap::new();
        let mut refused: Vec<MemberOutcome> = Vec::new();
        for (cluster, (lm, svc)) in &members.remote {
            let why = if is_headless(svc) {
                Some(SkipReason::Headless)
            } else {
                port_conflict(svc, &ports)
                    .map(|d| SkipReason::PortConflict(format!("in cluster {cluster}, {d}")))
            };
            match why {
                Some(reason) => refused.push(outcome(cluster, Some(reason))),
                None => {
                    add(svc, &mut ports);
                    joined.insert(cluster, (*lm, *svc));
                }
            }
        }
        outcomes.extend(refused);
        if members.local.is_none() && joined.is_empty() {
            // Nobody left to federate.
            continue;
        }
        let mut annotations = BTreeMap::new();
        if members.local.is_some() {
            annotations.insert(ml::LOCAL_DISCOVERY.to_string(), name.clone());
        }
        if !joined.is_empty() {
            let remote: Vec<String> = joined.keys().map(|c| format!("{name}@{c}")).collect();
            annotations.insert(ml::REMOTE_DISCOVERY_FEDERATED.to_string(), remote.join(","));
        }
        let kept_ip = existing.and_then(|e| e.spec.as_ref()?.cluster_ip.clone());
        let Ok(ip) = reconcile::cluster_ip(kept_ip, range, &fed_name, &mut used) else {
            outcomes.extend(joined.keys().map(|c| outcome(c, Some(SkipReason::NoClusterIp))));
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
        for (cluster, (lm, remote)) in &joined {
            let slice_name = format!("{fed_name}-{cluster}");
            if local
                .slices
                .get(&(ns.clone(), slice_name.clone()))
                .is_some_and(|s| !owned(&s.metadata))
            {
                let reason = SkipReason::NameTaken(ObjectKey::new(KindId::EndpointSlice, ns, &slice_name));
                outcomes.push(outcome(cluster, Some(reason.clone())));
                out.skipped.push(skip(reason));
                continue;
            }
            let slice = member_slice(lm, &svc, remote, &slice_name);
            desired.insert(key_of(&slice), slice.into_object());
            outcomes.push(outcome(cluster, None));
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
    (out, outcomes)
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
    let workload = lm.workloads.get(&(ns.clone(), name.clone()));
    reconcile::annotate_entry(&mut annotations, lm.gateway.entry.as_ref(), workload);
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
pub(crate) mod tests;

/// One finding of `strait multicluster check` about federated services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Whether it holds.
    pub ok: bool,
    /// What was checked.
    pub what: String,
    /// What is wrong and what to do, when it does not hold.
    pub hint: Option<String>,
}

/// The `svc@cluster` members a federated Service's annotation lists.
fn listed_members(svc: &Service) -> Vec<(String, String)> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ml::REMOTE_DISCOVERY_FEDERATED))
        .map(|v| {
            v.split(',')
                .filter_map(|m| {
                    let (name, cluster) = m.trim().split_once('@')?;
                    Some((name.to_string(), cluster.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the local cluster's federated services against what the Links report (pure):
///
/// - per Link, every member its `status.federatedServices` lists joined: a `False`
///   condition fails with its message; a `True` one needs the `<svc>-federated` Service
///   to exist, be the mirror's, and list `<svc>@<cluster>`;
/// - per federated Service, every `<svc>@<cluster>` it lists has a Link to that cluster,
///   an EndpointSlice `<svc>-federated-<cluster>` carrying it, and (when `alive` is known,
///   from the mirror's gateway probes) a live gateway.
pub fn check(
    links: &[strait_api::mesh::link::Link],
    services: &[Service],
    slices: &[EndpointSlice],
    alive: Option<&BTreeMap<String, bool>>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let find = |ns: &str, name: &str| {
        services
            .iter()
            .find(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(name))
    };
    for l in links {
        let cluster = l.spec.target_cluster_name.clone().unwrap_or_default();
        let link = format!(
            "{}/{}",
            l.metadata.namespace.as_deref().unwrap_or_default(),
            l.metadata.name.as_deref().unwrap_or_default()
        );
        let entries = l
            .status
            .as_ref()
            .and_then(|s| s.federated_services.as_deref())
            .unwrap_or_default();
        if entries.is_empty() {
            continue;
        }
        let mut problems = Vec::new();
        for e in entries {
            let (Some(remote), Some(c)) = (
                e.remote_ref.as_ref(),
                e.conditions
                    .as_ref()
                    .and_then(|c| c.iter().find(|c| c.type_ == "Mirrored")),
            ) else {
                problems.push(format!(
                    "Link {link}: an entry of status.federatedServices has no remoteRef or no Mirrored condition; restart `strait mirror` to rewrite it"
                ));
                continue;
            };
            let ns = remote.namespace.clone().unwrap_or_default();
            let name = remote.name.clone().unwrap_or_default();
            let fed = c
                .local_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| federated_name(&name));
            if c.status != "True" {
                problems.push(format!(
                    "{ns}/{name} of cluster {cluster} is not in {ns}/{fed} ({}): {}",
                    c.reason.as_deref().unwrap_or("no reason"),
                    c.message.as_deref().unwrap_or_default()
                ));
                continue;
            }
            match find(&ns, &fed) {
                None => problems.push(format!(
                    "Link {link} reports {ns}/{name} of cluster {cluster} in {ns}/{fed}, but that Service does not exist; check that `strait mirror` runs (`strait multicluster gateways`) and read its log"
                )),
                Some(s) if !owned(&s.metadata) => problems.push(format!(
                    "{ns}/{fed} exists but is not the mirror's federated Service (no label {}: \"true\"); rename or delete it",
                    ml::FEDERATED_OWNED
                )),
                Some(s) if !listed_members(s).contains(&(name.clone(), cluster.clone())) => problems.push(format!(
                    "{ns}/{fed} does not list {name}@{cluster} in its {} annotation although Link {link} reports it joined; the mirror has not caught up: check that `strait mirror` runs and read its log",
                    ml::REMOTE_DISCOVERY_FEDERATED
                )),
                Some(_) => {}
            }
        }
        out.push(Finding {
            ok: problems.is_empty(),
            what: format!("federated members of cluster {cluster} have joined their federated services"),
            hint: (!problems.is_empty()).then(|| problems.join("\n")),
        });
    }
    let clusters: BTreeSet<String> = links
        .iter()
        .filter_map(|l| l.spec.target_cluster_name.clone())
        .collect();
    for s in services.iter().filter(|s| owned(&s.metadata)) {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let fed = s.metadata.name.clone().unwrap_or_default();
        let mut problems = Vec::new();
        for (name, cluster) in listed_members(s) {
            if !clusters.contains(&cluster) {
                problems.push(format!(
                    "it lists {name}@{cluster} but no Link targets cluster {cluster}: link that cluster again (`strait multicluster link --cluster-name {cluster}`), or restart `strait mirror` so it drops the member"
                ));
                continue;
            }
            let slice = format!("{fed}-{cluster}");
            let has_slice = slices.iter().any(|sl| {
                sl.metadata.namespace.as_deref() == Some(ns.as_str())
                    && sl.metadata.name.as_deref() == Some(slice.as_str())
                    && sl
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(reconcile::SERVICE_NAME_LABEL))
                        == Some(&fed)
            });
            if !has_slice {
                problems.push(format!(
                    "member {name}@{cluster} has no EndpointSlice {ns}/{slice}, so no traffic reaches it; check that `strait mirror` runs and read its log"
                ));
            }
            if let Some(alive) = alive
                && !alive.get(&cluster).copied().unwrap_or(false)
            {
                problems.push(format!(
                    "the gateway of cluster {cluster} is not alive, so {name}@{cluster} gets no traffic; `strait multicluster gateways` shows why"
                ));
            }
        }
        out.push(Finding {
            ok: problems.is_empty(),
            what: format!("federated service {ns}/{fed} reaches all its members"),
            hint: (!problems.is_empty()).then(|| problems.join("\n")),
        });
    }
    out
}
