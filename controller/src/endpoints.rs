//! Local mode's endpoint controller: keeps an EndpointSlice per Service in step with the
//! pods its selector matches, as Kubernetes' endpointslice controller does in a real
//! cluster. Discovery then reads EndpointSlices the same way in both modes.
//!
//! [`plan`] is pure: given a namespace's Services, Pods and the slices this controller
//! manages, it returns the slices to write and delete. [`run`] watches the store and
//! executes plans for the namespaces that changed.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strait_api::core::selector_matches;
use strait_api::{Kind, KindId, Object, ObjectKey, Store, WatchEvent};

use crate::discovery::model::SERVICE_NAME_LABEL;

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

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_ref());
    match conditions.and_then(|c| c.iter().find(|c| c.type_ == "Ready")) {
        Some(c) => c.status == "True",
        None => status.and_then(|s| s.phase.as_deref()) == Some("Running"),
    }
}

fn pod_ip(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let phase = pod.status.as_ref()?.phase.as_deref();
    (!matches!(phase, Some("Succeeded" | "Failed"))).then_some(ip)
}

/// The slices a Service should have: one per distinct port mapping among its pods
/// (named target ports may resolve differently per pod), named `<svc>-<n>`.
pub fn desired(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSlice> {
    let (Some(ns), Some(name)) = (svc.metadata.namespace.clone(), svc.metadata.name.clone()) else {
        return Vec::new();
    };
    let spec = svc.spec.clone().unwrap_or_default();
    let Some(selector) = spec.selector.filter(|s| !s.is_empty()) else {
        // Services without a selector have their endpoints managed by someone else.
        return Vec::new();
    };
    let ports = spec.ports.unwrap_or_default();
    let sel = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some(selector),
        match_expressions: None,
    };
    let mut groups: BTreeMap<Vec<PortMapping>, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if pod.metadata.namespace.as_deref() != Some(&ns) || !selector_matches(&sel, &labels) {
            continue;
        }
        let Some(ip) = pod_ip(pod) else { continue };
        let named: BTreeMap<String, i32> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| Some((p.name.clone()?, p.container_port)))
            .collect();
        let mapping: Option<Vec<PortMapping>> = ports
            .iter()
            .map(|p| {
                let target = match &p.target_port {
                    None => Some(p.port),
                    Some(IntOrString::Int(t)) => Some(*t),
                    Some(IntOrString::String(n)) => named.get(n).copied(),
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
        let ready = pod_ready(pod);
        // A pod whose subdomain is this service is reachable by its hostname, as in Kubernetes.
        let hostname = pod
            .spec
            .as_ref()
            .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
            .and_then(|s| s.hostname.clone());
        groups.entry(mapping).or_default().push(Endpoint {
            addresses: vec![ip],
            hostname,
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
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
                    namespace: Some(ns.clone()),
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

/// The changes that bring a namespace's managed slices in line with its Services and Pods.
pub fn plan(services: &[&Service], pods: &[&Pod], managed: &[&EndpointSlice]) -> Plan {
    let want: Vec<EndpointSlice> = services.iter().flat_map(|s| desired(s, pods)).collect();
    let want_names: BTreeSet<&str> = want.iter().filter_map(|s| s.metadata.name.as_deref()).collect();
    let have: BTreeMap<&str, &EndpointSlice> = managed
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, *s)))
        .collect();
    let mut out = Plan::default();
    for s in &want {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let same = have.get(name).is_some_and(|h| {
            h.endpoints == s.endpoints
                && h.ports == s.ports
                && h.address_type == s.address_type
                && h.metadata.labels == s.metadata.labels
        });
        if !same {
            out.apply.push(s.clone());
        }
    }
    out.delete = have
        .keys()
        .filter(|n| !want_names.contains(*n))
        .map(|n| n.to_string())
        .collect();
    out
}

/// Watches Services, Pods and managed slices; reconciles each namespace that changes.
pub async fn run<S: Store>(store: S) {
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut pods: BTreeMap<(String, String), Pod> = BTreeMap::new();
    let mut slices: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
    let mut svc_w = store.watch::<Service>();
    let mut pod_w = store.watch::<Pod>();
    let mut slice_w = store.watch::<EndpointSlice>();
    loop {
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        tokio::select! {
            Some(ev) = svc_w.next() => track(ev, &mut services, &mut dirty),
            Some(ev) = pod_w.next() => track(ev, &mut pods, &mut dirty),
            Some(ev) = slice_w.next() => match ev {
                // Only our own slices count. Writing them needs no reconcile; losing one
                // (deleted by someone else) or a resync does.
                Ok(WatchEvent::Restarted(items)) => {
                    dirty.extend(slices.keys().map(|k| k.0.clone()));
                    slices = items.into_iter().filter(ours).filter_map(|s| Some((key(&s)?, s))).collect();
                    dirty.extend(slices.keys().map(|k| k.0.clone()));
                }
                Ok(WatchEvent::Applied(s)) if ours(&s) => {
                    if let Some(k) = key(&s) {
                        slices.insert(k, s);
                    }
                }
                Ok(WatchEvent::Deleted(s)) if ours(&s) => {
                    if let Some(k) = key(&s) {
                        dirty.insert(k.0.clone());
                        slices.remove(&k);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "endpoint controller watch error"),
            },
            else => return,
        }
        for ns in dirty {
            let svcs: Vec<&Service> = in_namespace(&services, &ns).collect();
            let ps: Vec<&Pod> = in_namespace(&pods, &ns).collect();
            let managed: Vec<&EndpointSlice> = in_namespace(&slices, &ns).collect();
            let p = plan(&svcs, &ps, &managed);
            if !p.apply.is_empty() {
                let objs: Vec<Object> = p.apply.iter().cloned().map(Kind::into_object).collect();
                if let Err(e) = store.apply(objs).await {
                    tracing::warn!(namespace = %ns, error = %e, "cannot write endpoint slices");
                }
            }
            for name in p.delete {
                let key = ObjectKey::new(KindId::EndpointSlice, ns.clone(), name);
                if let Err(e) = store.delete(&key).await {
                    tracing::warn!(%key, error = %e, "cannot delete endpoint slice");
                }
            }
        }
    }
}

/// The objects of one namespace. Keys sort by namespace first, so they are one range:
/// reconciling a namespace costs its own objects, not a scan of the whole cluster per
/// event (which made loading N objects O(N²)).
fn in_namespace<'a, V>(map: &'a BTreeMap<(String, String), V>, ns: &'a str) -> impl Iterator<Item = &'a V> {
    map.range((ns.to_string(), String::new())..)
        .take_while(move |(k, _)| k.0 == ns)
        .map(|(_, v)| v)
}

fn ours(s: &EndpointSlice) -> bool {
    s.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY)
}

fn key<K: Kind>(k: &K) -> Option<(String, String)> {
    let m = k.metadata();
    Some((m.namespace.clone()?, m.name.clone()?))
}

fn track<K: Kind>(
    ev: Result<WatchEvent<K>, strait_api::StoreError>,
    map: &mut BTreeMap<(String, String), K>,
    dirty: &mut BTreeSet<String>,
) {
    match ev {
        Err(e) => tracing::warn!(error = %e, "endpoint controller watch error"),
        Ok(WatchEvent::Restarted(items)) => {
            dirty.extend(map.keys().map(|k| k.0.clone()));
            map.clear();
            for i in items {
                if let Some(k) = key(&i) {
                    dirty.insert(k.0.clone());
                    map.insert(k, i);
                }
            }
        }
        Ok(WatchEvent::Applied(i)) => {
            if let Some(k) = key(&i) {
                dirty.insert(k.0.clone());
                map.insert(k, i);
            }
        }
        Ok(WatchEvent::Deleted(i)) => {
            if let Some(k) = key(&i) {
                dirty.insert(k.0.clone());
                map.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests;
