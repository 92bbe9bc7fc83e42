//! What the controller keeps of a Pod: one compact, immutable [`PodInfo`] per pod
//! version, shared by every index that follows Pods (discovery, the endpoint controller,
//! inbound policy).
//!
//! Each index keeps its own Pod watch, so each keeps its own ordering guarantees (the
//! discovery index sees a batch's Pods before its EndpointSlices), but a pod decoded by
//! one index is handed to the others as the same `Arc`: [`shared`] looks the new record up
//! by content before keeping it. A cluster holds tens of thousands of pods, and a copy per
//! index (each with its own strings and map keys) was most of a controller's memory.
//!
//! Invariants:
//! - A [`PodInfo`] never changes once shared; a changed pod is a new record.
//! - The sharing table holds only weak references: a record lives as long as some index
//!   holds it. Dead slots are swept when the table has doubled since the last sweep.
//! - [`PodMap`] keys borrow the record's own namespace and name (`Arc<str>`), so an index
//!   pays a pointer per pod for its keys, not two strings.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strait_api::labels::{self, intern::Labels};

/// The proxy's inbound port, where opaque traffic to a meshed pod is sent.
pub const DEFAULT_PROXY_INBOUND_PORT: u16 = 4143;

/// A Pod, as the controller's indexes need it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodInfo {
    /// Its namespace (one shared copy per namespace name).
    pub namespace: Arc<str>,
    /// Its name.
    pub name: Arc<str>,
    /// Its uid, for the endpoints' `targetRef`.
    pub uid: Option<Box<str>>,
    /// Its labels (interned: pods of one workload share one set).
    pub labels: Labels,
    /// Its address, once it has one.
    pub ip: Option<IpAddr>,
    /// Its `Ready` condition (the phase `Running` when it has no conditions).
    pub ready: bool,
    /// It has finished (`Succeeded` or `Failed`): no longer an endpoint.
    pub finished: bool,
    /// Whether a proxy runs beside it (the injector's `linkerd.io/control-plane-ns` label,
    /// or the proxy version annotation).
    pub meshed: bool,
    /// The proxy's inbound port (`config.linkerd.io/proxy-inbound-port`).
    pub proxy_inbound_port: u16,
    /// Its service account (the first part of its identity).
    pub service_account: Box<str>,
    /// The owning workload, as a metric label (`deployment` → `myapp`).
    pub owner: Option<(Cow<'static, str>, Box<str>)>,
    /// Ports marked opaque by `config.linkerd.io/opaque-ports` on the pod; `None` without
    /// it (the cluster's default opaque ports apply: see [`PodInfo::is_opaque`]).
    pub opaque_ports: Option<Box<[(u16, u16)]>>,
    /// Its `config.linkerd.io/default-inbound-policy` annotation.
    pub default_policy: Option<Box<str>>,
    /// Ports of its `config.linkerd.io/proxy-require-identity-inbound-ports`; `None`
    /// without it (its namespace's applies).
    pub require_identity_ports: Option<Box<[(u16, u16)]>>,
    /// Named container ports, in container order.
    pub named_ports: Box<[(Box<str>, u16)]>,
    /// HTTP GET probes of its containers: (port, path).
    pub probes: Box<[(u16, Box<str>)]>,
    /// `spec.hostname`.
    pub hostname: Option<Box<str>>,
    /// `spec.subdomain`.
    pub subdomain: Option<Box<str>>,
}

impl PodInfo {
    /// Reads a Pod object; `None` without a namespace and name.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let namespace = namespace_name(meta.namespace.as_deref()?);
        let name: Arc<str> = meta.name.as_deref()?.into();
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let labels_map = meta.labels.clone().unwrap_or_default();
        let annotations = meta.annotations.as_ref();
        let annotation = |k: &str| {
            annotations
                .and_then(|a| a.get(k))
                .map(|v| Box::<str>::from(v.as_str()))
        };
        let meshed = strait_api::core::pod_is_meshed(meta);
        let owner = owner_of(pod, &labels_map);
        let phase = status.and_then(|s| s.phase.as_deref());
        let ready = strait_api::core::pod_is_ready(status);
        let containers = spec.into_iter().flat_map(|s| s.containers.iter());
        let named_ports: Box<[(Box<str>, u16)]> = containers
            .clone()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| Some((p.name.as_deref()?.into(), u16::try_from(p.container_port).ok()?)))
            .collect();
        let mut probes = Vec::new();
        for c in containers {
            let named: BTreeMap<&str, i32> = c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.as_deref()?, p.container_port)))
                .collect();
            let gets = [
                c.liveness_probe.as_ref(),
                c.readiness_probe.as_ref(),
                c.startup_probe.as_ref(),
            ]
            .into_iter()
            .flatten()
            .filter_map(|p| p.http_get.as_ref());
            for g in gets {
                let port = match &g.port {
                    IntOrString::Int(p) => Some(*p),
                    IntOrString::String(n) => named.get(n.as_str()).copied(),
                };
                if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
                    probes.push((port, g.path.as_deref().unwrap_or("/").into()));
                }
            }
        }
        Some(Self {
            namespace,
            name,
            uid: meta.uid.as_deref().map(Into::into),
            ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            ready,
            finished: matches!(phase, Some("Succeeded" | "Failed")),
            meshed,
            proxy_inbound_port: annotations
                .and_then(|a| a.get(labels::config::PROXY_INBOUND_PORT))
                .and_then(|p| p.parse().ok())
                .unwrap_or(DEFAULT_PROXY_INBOUND_PORT),
            service_account: spec
                .and_then(|s| s.service_account_name.as_deref())
                .unwrap_or("default")
                .into(),
            owner,
            // Without the annotation, the cluster's default opaque ports apply (the
            // injector gives the proxy the same list for its inbound side).
            opaque_ports: annotations
                .and_then(|a| a.get(labels::config::OPAQUE_PORTS))
                .map(|v| strait_api::names::port_ranges(v).unwrap_or_default().into()),
            default_policy: annotation(labels::config::DEFAULT_INBOUND_POLICY),
            // An unreadable value is ignored (the namespace's applies), and said.
            require_identity_ports: annotations
                .and_then(|a| a.get(labels::config::PROXY_REQUIRE_IDENTITY_INBOUND_PORTS))
                .and_then(|v| match strait_api::names::port_ranges(v) {
                    Ok(p) => Some(p.into()),
                    Err(expected) => {
                        tracing::warn!(
                            pod = ?meta.name,
                            namespace = ?meta.namespace,
                            annotation = labels::config::PROXY_REQUIRE_IDENTITY_INBOUND_PORTS,
                            value = %v,
                            "expected {expected}; ignoring it"
                        );
                        None
                    }
                }),
            named_ports,
            probes: probes.into(),
            hostname: spec.and_then(|s| s.hostname.as_deref()).map(Into::into),
            subdomain: spec.and_then(|s| s.subdomain.as_deref()).map(Into::into),
            labels: labels::intern::interned(labels_map),
        })
    }

    /// `(namespace, name)` as owned strings.
    pub fn id(&self) -> (String, String) {
        (self.namespace.to_string(), self.name.to_string())
    }

    /// The container port named `name` (the first, if several claim it).
    pub fn named_port(&self, name: &str) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, p)| *p)
    }

    /// Its `pod-template-hash` label, a metric label.
    pub fn template_hash(&self) -> Option<&str> {
        self.labels.get("pod-template-hash").map(String::as_str)
    }

    /// Whether port `port` is opaque on the pod: marked so by its annotation, or without
    /// one, in the cluster's `defaults`.
    pub fn is_opaque(&self, port: u16, defaults: &[(u16, u16)]) -> bool {
        self.opaque_ports
            .as_deref()
            .unwrap_or(defaults)
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&port))
    }
}

/// The workload that owns a pod, as Linkerd labels metrics: from owner references, with a
/// ReplicaSet resolved to its Deployment by the pod-template-hash suffix.
fn owner_of(pod: &Pod, labels_map: &BTreeMap<String, String>) -> Option<(Cow<'static, str>, Box<str>)> {
    let deployment = Cow::Borrowed("deployment");
    if let Some(d) = labels_map.get(labels::PROXY_DEPLOYMENT_LABEL) {
        return Some((deployment, d.as_str().into()));
    }
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let name = match labels_map.get("pod-template-hash") {
                Some(h) => owner.name.strip_suffix(&format!("-{h}")).unwrap_or(&owner.name),
                None => &owner.name,
            };
            Some((deployment, name.into()))
        }
        kind => Some((Cow::Owned(kind.to_ascii_lowercase()), owner.name.as_str().into())),
    }
}

/// The shared copy of `pod`'s record: the one another index already holds when the pod is
/// unchanged, otherwise a new one. `None` without a namespace and name.
pub fn shared(pod: &Pod) -> Option<Arc<PodInfo>> {
    PodInfo::from_pod(pod).map(share)
}

/// The shared copy of `info` (see [`shared`]).
pub fn share(info: PodInfo) -> Arc<PodInfo> {
    let hash = {
        let mut h = std::hash::DefaultHasher::new();
        info.hash(&mut h);
        h.finish()
    };
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = t.records.get(&hash).and_then(Weak::upgrade)
        && *found == info
    {
        return found;
    }
    if t.records.len() >= (2 * t.swept_at).max(1024) {
        t.records.retain(|_, w| w.strong_count() > 0);
        t.swept_at = t.records.len();
    }
    // A different record with the same hash loses its slot: it stays correct, only unshared.
    let shared = Arc::new(info);
    t.records.insert(hash, Arc::downgrade(&shared));
    shared
}

struct Table {
    /// Records by content hash.
    records: HashMap<u64, Weak<PodInfo>>,
    /// Size after the last sweep.
    swept_at: usize,
    /// Namespace names, one copy each.
    namespaces: HashSet<Arc<str>>,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(Table {
            records: HashMap::new(),
            swept_at: 0,
            namespaces: HashSet::new(),
        })
    })
}

/// The shared copy of a namespace's name. Namespaces are few; the set only grows.
fn namespace_name(ns: &str) -> Arc<str> {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = t.namespaces.get(ns) {
        return found.clone();
    }
    let shared: Arc<str> = ns.into();
    t.namespaces.insert(shared.clone());
    shared
}

/// Pods by namespace and name, each a shared record. Keys are the record's own strings.
#[derive(Clone, Debug, Default)]
pub struct PodMap {
    by_ns: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Arc<PodInfo>>>,
    len: usize,
}

impl PodMap {
    /// The pod `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<PodInfo>> {
        self.by_ns.get(namespace)?.get(name)
    }

    /// Keeps `pod`, replacing the record of the same name; returns the one replaced.
    pub fn insert(&mut self, pod: Arc<PodInfo>) -> Option<Arc<PodInfo>> {
        let old = self
            .by_ns
            .entry(pod.namespace.clone())
            .or_default()
            .insert(pod.name.clone(), pod);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Forgets the pod `namespace/name`; returns its record.
    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        let pods = self.by_ns.get_mut(namespace)?;
        let old = pods.remove(name)?;
        if pods.is_empty() {
            self.by_ns.remove(namespace);
        }
        self.len -= 1;
        Some(old)
    }

    /// The pods of one namespace, by name.
    pub fn in_namespace<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Arc<PodInfo>> + 'a {
        self.by_ns.get(namespace).into_iter().flat_map(|m| m.values())
    }

    /// Every pod, by namespace and name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.by_ns.values().flat_map(|m| m.values())
    }

    /// The namespaces that hold pods.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.by_ns.keys().map(|k| &**k)
    }

    /// How many pods.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no pod.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every pod.
    pub fn clear(&mut self) {
        self.by_ns.clear();
        self.len = 0;
    }
}

impl FromIterator<Arc<PodInfo>> for PodMap {
    fn from_iter<I: IntoIterator<Item = Arc<PodInfo>>>(iter: I) -> Self {
        let mut m = Self::default();
        for p in iter {
            m.insert(p);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, extra: serde_json::Value) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": "pods-test",
                         "labels": {"app": "web", "pod-template-hash": "5d9f",
                                    "linkerd.io/control-plane-ns": "linkerd"},
                         "annotations": {"config.linkerd.io/opaque-ports": "3306,9000-9002",
                                         "config.linkerd.io/default-inbound-policy": "deny"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": "web-5d9f", "uid": "u", "controller": true}]},
            "spec": {"serviceAccountName": "web", "hostname": "web-0", "subdomain": "web",
                     "containers": [{"name": "app",
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}}}]},
            "status": {"podIP": ip, "phase": "Running"}
        });
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                v.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_pod_is_read_once_into_what_every_index_needs() {
        let p = PodInfo::from_pod(&pod("web-1", "10.0.0.5", serde_json::json!({}))).unwrap();
        assert_eq!((&*p.namespace, &*p.name), ("pods-test", "web-1"));
        assert_eq!(p.ip, Some("10.0.0.5".parse().unwrap()));
        assert!(p.ready && !p.finished && p.meshed);
        assert_eq!(p.service_account.as_ref(), "web");
        assert_eq!(
            p.owner.as_ref().map(|(k, n)| (k.as_ref(), n.as_ref())),
            Some(("deployment", "web"))
        );
        assert_eq!(p.template_hash(), Some("5d9f"));
        // Its own list, whatever the cluster's defaults.
        assert!(p.is_opaque(3306, &[]) && p.is_opaque(9001, &[]) && !p.is_opaque(8080, &[(8080, 8080)]));
        assert_eq!(p.default_policy.as_deref(), Some("deny"));
        assert_eq!(p.named_port("http"), Some(8080));
        assert_eq!(p.named_port("grpc"), None);
        assert_eq!(&*p.probes, &[(8080, "/ready".into())]);
        assert_eq!(
            (p.hostname.as_deref(), p.subdomain.as_deref()),
            (Some("web-0"), Some("web"))
        );
        assert_eq!(p.proxy_inbound_port, DEFAULT_PROXY_INBOUND_PORT);

        let done = PodInfo::from_pod(&pod(
            "web-2",
            "10.0.0.6",
            serde_json::json!({"status": {"podIP": "10.0.0.6", "phase": "Succeeded"}}),
        ))
        .unwrap();
        assert!(done.finished && !done.ready, "no Ready condition and not Running");
        let nameless: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(PodInfo::from_pod(&nameless).is_none());
    }

    #[test]
    fn indexes_share_one_record_per_pod_version() {
        let a = shared(&pod("share-1", "10.0.0.5", serde_json::json!({}))).unwrap();
        let b = shared(&pod("share-1", "10.0.0.5", serde_json::json!({}))).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same pod decoded twice is one record");
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
        let moved = shared(&pod("share-1", "10.0.0.9", serde_json::json!({}))).unwrap();
        assert!(!Arc::ptr_eq(&a, &moved), "a changed pod is a new record");
        assert_eq!(moved.ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(a.ip, Some("10.0.0.5".parse().unwrap()), "records never change");

        // Once no one holds a record, an equal pod gets a fresh one.
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none());
        let again = shared(&pod("share-1", "10.0.0.5", serde_json::json!({}))).unwrap();
        assert_eq!(again.ip, Some("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn the_map_finds_pods_by_namespace_and_name() {
        let mut m = PodMap::default();
        let p1 = shared(&pod("map-1", "10.0.0.5", serde_json::json!({}))).unwrap();
        let p2 = shared(&pod("map-2", "10.0.0.6", serde_json::json!({}))).unwrap();
        assert!(m.insert(p1.clone()).is_none());
        assert!(m.insert(p2.clone()).is_none());
        assert_eq!(m.len(), 2);
        assert!(Arc::ptr_eq(m.get("pods-test", "map-1").unwrap(), &p1));
        assert!(m.get("pods-test", "map-3").is_none() && m.get("other", "map-1").is_none());
        let names: Vec<&str> = m.in_namespace("pods-test").map(|p| &*p.name).collect();
        assert_eq!(names, ["map-1", "map-2"]);
        assert!(m.insert(p1.clone()).is_some(), "a second insert replaces");
        assert_eq!(m.len(), 2);
        assert!(m.remove("pods-test", "map-1").is_some());
        assert!(m.remove("pods-test", "map-1").is_none());
        assert_eq!(m.namespaces().collect::<Vec<_>>(), ["pods-test"]);
        m.remove("pods-test", "map-2");
        assert!(m.is_empty() && m.namespaces().next().is_none());
    }
}
