//! Local mode's endpoint controller: keeps an EndpointSlice per Service in step with the
//! pods its selector matches, as Kubernetes' endpointslice controller does in a real
//! cluster. Discovery then reads EndpointSlices the same way in both modes.
//!
//! [`plan`] is pure: given a Service, the pods of its namespace and the slices this
//! controller manages for it, it returns the slices to write and delete. [`run`] watches
//! the store, keeps summaries of Services and the shared records of Pods
//! ([`crate::pods`]), and executes plans for the Services whose pods, spec or slices
//! changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strait_api::core::selector_matches;
use strait_api::{Kind, KindId, Object, ObjectKey, Store, WatchEvent};

use crate::discovery::model::SERVICE_NAME_LABEL;
use crate::pods::{PodInfo, PodMap};

/// The `managed-by` label value of slices this controller owns.
pub const MANAGED_BY: &str = "endpointslice-controller.strait.io";
/// Kubernetes' label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// What to change in one namespace.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Slices to create or replace.
    pub apply: Vec<EndpointSlice>,
    /// Slices to delete, by name.
    pub delete: Vec<String>,
}

/// A service port as resolved for one pod: (port name, target port, protocol).
type PortMapping = (Option<String>, i32, String);

/// What the controller keeps of a Service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSummary {
    name: String,
    /// The selector; services without one have their endpoints managed by someone else.
    selector: Option<LabelSelector>,
    ports: Vec<ServicePort>,
    /// `spec.publishNotReadyAddresses`: its endpoints are ready whatever their pods say
    /// (StatefulSet peers that must find each other before they are ready).
    publish_not_ready: bool,
}

impl ServiceSummary {
    /// The summary of a Service.
    pub fn of(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        Self {
            name: svc.metadata.name.clone().unwrap_or_default(),
            selector: spec
                .and_then(|s| s.selector.clone())
                .filter(|s| !s.is_empty())
                .map(|labels| LabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                }),
            ports: spec.and_then(|s| s.ports.clone()).unwrap_or_default(),
            publish_not_ready: spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false),
        }
    }

    fn selects(&self, pod: &PodInfo) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|sel| selector_matches(sel, &pod.labels))
    }
}

/// The slices a Service should have: one per distinct port mapping among its pods
/// (named target ports may resolve differently per pod), named `<svc>-<n>`.
pub fn desired<'a>(
    namespace: &str,
    svc: &ServiceSummary,
    pods: impl IntoIterator<Item = &'a PodInfo>,
) -> Vec<EndpointSlice> {
    if svc.selector.is_none() {
        return Vec::new();
    }
    let name = &svc.name;
    let mut groups: BTreeMap<Vec<PortMapping>, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        if !svc.selects(pod) {
            continue;
        }
        let Some(ip) = pod.ip.filter(|_| !pod.finished).map(|ip| ip.to_string()) else {
            continue;
        };
        let mapping: Option<Vec<PortMapping>> = svc
            .ports
            .iter()
            .map(|p| {
                let target = match &p.target_port {
                    None => Some(p.port),
                    Some(IntOrString::Int(t)) => Some(*t),
                    Some(IntOrString::String(n)) => pod.named_port(n).map(i32::from),
                }?;
                Some((
                    p.name.clone(),
                    target,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        // A pod that lacks a named port is not an endpoint, as in Kubernetes.
        let Some(mapping) = mapping else { continue };
        // A pod whose subdomain is this service is reachable by its hostname, as in Kubernetes.
        let hostname = pod
            .hostname
            .as_deref()
            .filter(|_| pod.subdomain.as_deref() == Some(name.as_str()))
            .map(String::from);
        groups.entry(mapping).or_default().push(Endpoint {
            addresses: vec![ip],
            hostname,
            // As Kubernetes' EndpointSlice controller: `ready` is always true for a Service
            // that publishes not-ready addresses; `serving` is the pod's readiness.
            conditions: Some(EndpointConditions {
                ready: Some(pod.ready || svc.publish_not_ready),
                serving: Some(pod.ready),
                terminating: Some(false),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: pod.uid.as_deref().map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if groups.is_empty() {
        // An empty slice tells readers the service has no endpoints yet.
        groups.insert(Vec::new(), Vec::new());
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (mapping, mut endpoints))| {
            endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{i}")),
                    namespace: Some(namespace.to_string()),
                    labels: Some(
                        [
                            (SERVICE_NAME_LABEL.to_string(), name.clone()),
                            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                },
                address_type: if endpoints.iter().any(|e| e.addresses[0].contains(':')) {
                    "IPv6"
                } else {
                    "IPv4"
                }
                .into(),
                endpoints: Some(endpoints),
                ports: Some(
                    mapping
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name,
                            port: Some(port),
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

/// A fingerprint of what a slice says (its endpoints, ports, address type and labels):
/// the controller remembers this, not the slices themselves.
pub fn digest(s: &EndpointSlice) -> u64 {
    use std::hash::{Hash, Hasher};
    let content = serde_json::to_vec(&(&s.endpoints, &s.ports, &s.address_type, &s.metadata.labels))
        .unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    h.finish()
}

/// The changes that bring one Service's managed slices (`have`: name → digest) in line
/// with its pods; a Service that is gone (`None`) keeps no slices.
pub fn plan<'a>(
    namespace: &str,
    svc: Option<&ServiceSummary>,
    pods: impl IntoIterator<Item = &'a PodInfo>,
    have: &BTreeMap<String, u64>,
) -> Plan {
    let want = svc.map(|s| desired(namespace, s, pods)).unwrap_or_default();
    let want_names: BTreeSet<&str> = want.iter().filter_map(|s| s.metadata.name.as_deref()).collect();
    let mut out = Plan::default();
    for s in &want {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        if have.get(name) != Some(&digest(s)) {
            out.apply.push(s.clone());
        }
    }
    out.delete = have
        .keys()
        .filter(|n| !want_names.contains(n.as_str()))
        .cloned()
        .collect();
    out
}

type NsName = (String, String);

/// What the controller knows; slices by the (namespace, service) that owns them.
#[derive(Default)]
struct State {
    services: BTreeMap<NsName, ServiceSummary>,
    pods: PodMap,
    slices: BTreeMap<NsName, BTreeMap<String, u64>>,
}

impl State {
    /// Marks every service of `ns` that selects `pod` dirty.
    fn touch_selecting(&self, ns: &str, pod: &PodInfo, dirty: &mut BTreeSet<NsName>) {
        for (key, svc) in in_namespace_keyed(&self.services, ns) {
            if svc.selects(pod) {
                dirty.insert(key.clone());
            }
        }
    }

    fn on_pod(&mut self, ev: WatchEvent<Pod>, dirty: &mut BTreeSet<NsName>) {
        match ev {
            WatchEvent::Restarted(items) => {
                self.pods = items.iter().filter_map(crate::pods::shared).collect();
                dirty.extend(self.services.keys().cloned());
            }
            WatchEvent::Applied(p) => {
                let Some(new) = crate::pods::shared(&p) else {
                    return;
                };
                match self.pods.get(&new.namespace, &new.name) {
                    Some(old) if Arc::ptr_eq(old, &new) || **old == *new => return,
                    Some(old) => self.touch_selecting(&new.namespace, old, dirty),
                    None => {}
                }
                self.touch_selecting(&new.namespace, &new, dirty);
                self.pods.insert(new);
            }
            WatchEvent::Deleted(p) => {
                if let Some((ns, name)) = key(&p)
                    && let Some(old) = self.pods.remove(&ns, &name)
                {
                    self.touch_selecting(&ns, &old, dirty);
                }
            }
        }
    }

    fn on_service(&mut self, ev: WatchEvent<Service>, dirty: &mut BTreeSet<NsName>) {
        match ev {
            WatchEvent::Restarted(items) => {
                dirty.extend(self.services.keys().cloned());
                self.services = items
                    .iter()
                    .filter_map(|s| Some((key(s)?, ServiceSummary::of(s))))
                    .collect();
                dirty.extend(self.services.keys().cloned());
            }
            WatchEvent::Applied(s) => {
                if let Some(k) = key(&s) {
                    dirty.insert(k.clone());
                    self.services.insert(k, ServiceSummary::of(&s));
                }
            }
            WatchEvent::Deleted(s) => {
                if let Some(k) = key(&s) {
                    dirty.insert(k.clone());
                    self.services.remove(&k);
                }
            }
        }
    }

    /// Only our own slices count. Writing them needs no reconcile; losing one (deleted by
    /// someone else) or a resync does.
    fn on_slice(&mut self, ev: WatchEvent<EndpointSlice>, dirty: &mut BTreeSet<NsName>) {
        let owner = |s: &EndpointSlice| -> Option<(NsName, String)> {
            let labels = s.metadata.labels.as_ref()?;
            (labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)).then_some(())?;
            let (ns, name) = key(s)?;
            Some(((ns, labels.get(SERVICE_NAME_LABEL)?.clone()), name))
        };
        match ev {
            WatchEvent::Restarted(items) => {
                dirty.extend(self.slices.keys().cloned());
                self.slices.clear();
                for s in &items {
                    if let Some((svc, name)) = owner(s) {
                        dirty.insert(svc.clone());
                        self.slices.entry(svc).or_default().insert(name, digest(s));
                    }
                }
            }
            WatchEvent::Applied(s) => {
                if let Some((svc, name)) = owner(&s) {
                    self.slices.entry(svc).or_default().insert(name, digest(&s));
                }
            }
            WatchEvent::Deleted(s) => {
                if let Some((svc, name)) = owner(&s) {
                    if let Some(m) = self.slices.get_mut(&svc) {
                        m.remove(&name);
                        if m.is_empty() {
                            self.slices.remove(&svc);
                        }
                    }
                    dirty.insert(svc);
                }
            }
        }
    }
}

/// Events handled before reconciling, at most: a burst is reconciled in one write.
const MAX_BATCH: usize = 1024;

/// Watches Services, Pods and managed slices; reconciles each Service whose pods,
/// selector, ports or slices changed.
pub async fn run<S: Store>(store: S) {
    use futures::stream::{self, StreamExt};
    let mut state = State::default();
    let mut events = stream::select_all([
        store.watch::<Pod>().map(Ev::Pod).boxed(),
        store.watch::<Service>().map(Ev::Service).boxed(),
        store.watch::<EndpointSlice>().map(Ev::Slice).boxed(),
    ]);
    // Whatever else is already waiting is taken in too, so a burst becomes one write.
    while let Some(batch) = crate::streams::next_batch(&mut events, MAX_BATCH).await {
        let mut dirty: BTreeSet<NsName> = BTreeSet::new();
        for ev in batch {
            match ev {
                Ev::Service(Ok(e)) => state.on_service(e, &mut dirty),
                Ev::Pod(Ok(e)) => state.on_pod(e, &mut dirty),
                Ev::Slice(Ok(e)) => state.on_slice(e, &mut dirty),
                Ev::Service(Err(e)) | Ev::Pod(Err(e)) | Ev::Slice(Err(e)) => {
                    tracing::warn!(error = %e, "endpoint controller watch error")
                }
            }
        }
        reconcile(&store, &mut state, dirty).await;
    }
}

#[allow(clippy::large_enum_variant)] // one at a time, handled at once
enum Ev {
    Service(Result<WatchEvent<Service>, strait_api::StoreError>),
    Pod(Result<WatchEvent<Pod>, strait_api::StoreError>),
    Slice(Result<WatchEvent<EndpointSlice>, strait_api::StoreError>),
}

async fn reconcile<S: Store>(store: &S, state: &mut State, dirty: BTreeSet<NsName>) {
    let empty = BTreeMap::new();
    let mut apply: Vec<EndpointSlice> = Vec::new();
    let mut delete: Vec<ObjectKey> = Vec::new();
    for svc_key in &dirty {
        let (ns, _) = svc_key;
        let pods = state.pods.in_namespace(ns).map(|p| &**p);
        let have = state.slices.get(svc_key).unwrap_or(&empty);
        let p = plan(ns, state.services.get(svc_key), pods, have);
        apply.extend(p.apply);
        delete.extend(
            p.delete
                .into_iter()
                .map(|name| ObjectKey::new(KindId::EndpointSlice, ns.clone(), name)),
        );
    }
    if !apply.is_empty() {
        let digests: Vec<(NsName, String, u64)> = apply
            .iter()
            .filter_map(|s| {
                let ns = s.metadata.namespace.clone()?;
                let svc = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
                Some(((ns, svc), s.metadata.name.clone()?, digest(s)))
            })
            .collect();
        let objs: Vec<Object> = apply.into_iter().map(Kind::into_object).collect();
        match store.apply(objs).await {
            // Remember what was written now: a reconcile before the watch echoes it back
            // would otherwise write it again.
            Ok(_) => {
                for (svc, name, d) in digests {
                    state.slices.entry(svc).or_default().insert(name, d);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot write endpoint slices"),
        }
    }
    for key in delete {
        if let Err(e) = store.delete(&key).await {
            tracing::warn!(%key, error = %e, "cannot delete endpoint slice");
        }
    }
}

/// The objects of one namespace. Keys sort by namespace first, so they are one range:
/// reconciling costs the namespace's own objects, not a scan of the whole cluster per
/// event (which made loading N objects O(N²)).
fn in_namespace_keyed<'a, V>(
    map: &'a BTreeMap<(String, String), V>,
    ns: &'a str,
) -> impl Iterator<Item = (&'a (String, String), &'a V)> {
    map.range((ns.to_string(), String::new())..)
        .take_while(move |(k, _)| k.0 == ns)
}

fn key<K: Kind>(k: &K) -> Option<(String, String)> {
    let m = k.metadata();
    Some((m.namespace.clone()?, m.name.clone()?))
}

#[cfg(test)]
mod tests;
