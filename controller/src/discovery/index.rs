//! The discovery index: one writer applies store watch events to in-memory state; gRPC
//! streams read it.
//!
//! Invariants: every change to a namespace bumps that namespace's generation *after* the
//! state is updated, and streams re-resolve when the generation of their namespace moves,
//! so a stream never misses the last change (it may skip intermediate ones, which is
//! what a watch of the current state should do). Readers take the read lock only to
//! resolve; nothing awaits while holding it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_api::mesh::profile::ServiceProfile;
use strait_api::mesh::split::TrafficSplit;
use strait_api::{Store, WatchEvent};
use tokio::sync::watch;

use super::model::{self, Caller, NsName, PodInfo, PodMap, Resolution, ServiceInfo, SliceInfo, View};
use crate::streams::Generations;

/// The cluster the index serves: its names, and the defaults of objects that set none.
#[derive(Clone, Debug)]
pub struct ClusterInfo {
    /// The mesh trust domain (`cluster.local`).
    pub trust_domain: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Ports that are opaque on a Service or pod without `config.linkerd.io/opaque-ports`,
    /// and on addresses the cluster does not know (Linkerd's destination controller
    /// `-default-opaque-ports`, from the `proxy.opaquePorts` value).
    pub default_opaque_ports: Vec<(u16, u16)>,
}

impl Default for ClusterInfo {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            default_opaque_ports: crate::policy::outbound::translate::DEFAULT_OPAQUE_PORTS.to_vec(),
        }
    }
}

#[derive(Default)]
struct State {
    services: BTreeMap<NsName, ServiceInfo>,
    slices: BTreeMap<NsName, BTreeMap<String, SliceInfo>>,
    /// Which service each slice belongs to, by (namespace, slice name).
    slice_owner: HashMap<NsName, NsName>,
    pods: PodMap,
    profiles: BTreeMap<NsName, ServiceProfile>,
    splits: BTreeMap<NsName, TrafficSplit>,
    /// Services by ClusterIP and pods by IP: `lookup_ip` without scanning 50k pods.
    service_ips: IpIndex<NsName>,
    pod_ips: IpIndex<PodKey>,
}

/// A pod's key in the address index: the record's own strings, no copies.
type PodKey = (Arc<str>, Arc<str>);

fn pod_key(p: &PodInfo) -> PodKey {
    (p.namespace.clone(), p.name.clone())
}

/// Objects by address; several may claim one (the first by name wins, as a scan would).
/// Almost every address has one owner, so each holds a small sorted vector, not a set.
struct IpIndex<K>(HashMap<IpAddr, Vec<K>>);

impl<K> Default for IpIndex<K> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Ord + Clone> IpIndex<K> {
    fn add(&mut self, ip: Option<IpAddr>, key: &K) {
        if let Some(ip) = ip {
            let owners = self.0.entry(ip).or_insert_with(|| Vec::with_capacity(1));
            if let Err(at) = owners.binary_search(key) {
                owners.insert(at, key.clone());
            }
        }
    }

    fn remove(&mut self, ip: Option<IpAddr>, key: &K) {
        if let Some(ip) = ip
            && let Some(owners) = self.0.get_mut(&ip)
        {
            owners.retain(|k| k != key);
            if owners.is_empty() {
                self.0.remove(&ip);
            }
        }
    }

    fn first(&self, ip: IpAddr) -> Option<&K> {
        self.0.get(&ip).and_then(|owners| owners.first())
    }

    /// Rebuilds from every (address, owner).
    fn rebuild(&mut self, entries: impl Iterator<Item = (Option<IpAddr>, K)>) {
        self.0.clear();
        for (ip, k) in entries {
            self.add(ip, &k);
        }
        self.0.shrink_to_fit();
    }
}

/// The object an Applied or Deleted event is about; `None` for a restart (everything).
fn event_key<K: strait_api::Kind>(ev: &WatchEvent<K>) -> Option<NsName> {
    match ev {
        WatchEvent::Restarted(_) => None,
        WatchEvent::Applied(o) | WatchEvent::Deleted(o) => key_of(o.metadata()),
    }
}

/// What an `IP` in a destination request refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpTarget {
    /// A Service's ClusterIP.
    Service(NsName),
    /// A pod's IP.
    Pod(Arc<PodInfo>),
}

/// The index. Cheap to share as `Arc<Index>`.
pub struct Index {
    names: ClusterInfo,
    state: RwLock<State>,
    generations: Generations,
    /// Resolutions by service and port, with the namespace generation they were made at:
    /// every stream of a service re-resolves after a change, and they share one answer.
    resolved: Mutex<HashMap<ResolvedKey, (u64, Resolution)>>,
    /// Whether the store's first state of every watched kind is in (see [`run`]).
    pub synced: crate::streams::Synced,
}

/// What a resolution is cached by: the service, the port, and who asked (see
/// [`Caller`]).
type ResolvedKey = (NsName, u16, Caller);

/// Cached resolutions at most; past it the cache starts over (it only saves work).
const MAX_RESOLVED: usize = 1 << 16;

impl Index {
    /// An empty index.
    pub fn new(names: ClusterInfo) -> Arc<Self> {
        Arc::new(Self {
            names,
            state: RwLock::default(),
            generations: Generations::default(),
            resolved: Mutex::default(),
            synced: crate::streams::Synced::new(Event::KINDS),
        })
    }

    /// The cluster's names and defaults.
    pub fn names(&self) -> &ClusterInfo {
        &self.names
    }

    /// A receiver that changes whenever anything in `namespace` changes.
    pub fn subscribe(&self, namespace: &str) -> watch::Receiver<u64> {
        self.generations.subscribe(namespace)
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        self.generations.close();
    }

    fn with_view<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&View {
            services: &s.services,
            slices: &s.slices,
            pods: &s.pods,
            trust_domain: &self.names.trust_domain,
            default_opaque_ports: &self.names.default_opaque_ports,
        })
    }

    /// The current endpoints of `service:port`.
    ///
    /// The generation is read before the state: an answer cached under generation `g`
    /// reflects at least every change bumped up to `g`, so it is reused only while the
    /// generation is still `g`.
    pub fn resolve(&self, service: &NsName, port: u16, caller: Caller) -> Resolution {
        let generation = self.generations.current(&service.0);
        let key = (service.clone(), port, caller);
        if let Some(g) = generation
            && let Some((at, r)) = self.resolved.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && *at == g
        {
            return r.clone();
        }
        let r = self.with_view(|v| model::resolve(v, service, port, caller));
        if let (Some(g), Resolution::Endpoints(_)) = (generation, &r) {
            let mut cache = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_RESOLVED {
                cache.clear();
            }
            cache.insert(key, (g, r.clone()));
        }
        r
    }

    /// The endpoint with DNS hostname `hostname` in `service`, on `port`.
    pub fn resolve_hostname(&self, service: &NsName, hostname: &str, port: u16) -> Resolution {
        self.with_view(|v| model::resolve_hostname(v, service, hostname, port))
    }

    /// A pod's endpoint on `port`.
    pub fn resolve_pod(&self, pod: &PodInfo, port: u16) -> model::Endpoint {
        self.with_view(|v| model::resolve_pod(v, pod, port))
    }

    /// What an IP address is: a ClusterIP or a pod IP.
    pub fn lookup_ip(&self, ip: IpAddr) -> Option<IpTarget> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        if let Some(svc) = s.service_ips.first(ip) {
            return Some(IpTarget::Service(svc.clone()));
        }
        let (ns, name) = s.pod_ips.first(ip)?;
        s.pods.get(ns, name).cloned().map(IpTarget::Pod)
    }

    /// The service, if it exists.
    pub fn service(&self, id: &NsName) -> Option<ServiceInfo> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .services
            .get(id)
            .cloned()
    }

    /// The ServiceProfile named `name` in `namespace`.
    pub fn profile(&self, namespace: &str, name: &str) -> Option<ServiceProfile> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        s.profiles
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The TrafficSplits of a namespace whose root service is `service`.
    pub fn splits_for(&self, service: &NsName) -> Vec<TrafficSplit> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        s.splits
            .iter()
            .filter(|((ns, _), ts)| *ns == service.0 && ts.spec.service == service.1)
            .map(|(_, ts)| ts.clone())
            .collect()
    }

    fn write(&self, f: impl FnOnce(&mut State) -> Vec<String>) -> Vec<String> {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    /// Applies one event and tells the streams of the namespaces it touched.
    pub fn on(&self, ev: Event) {
        let touched = self.apply(ev);
        self.generations.bump(touched);
    }

    /// Applies one event without telling anyone; returns the namespaces it touched.
    fn apply(&self, ev: Event) -> Vec<String> {
        match ev {
            Event::Service(ev) => self.write(|s| {
                let key = event_key(&ev);
                if let Some(k) = &key {
                    let old = s.services.get(k).and_then(|v| v.cluster_ip);
                    s.service_ips.remove(old, k);
                }
                let touched = replace_all(&mut s.services, ev, |svc| {
                    ServiceInfo::from_service(svc).map(|i| (i.id.clone(), i))
                });
                match &key {
                    Some(k) => {
                        let new = s.services.get(k).and_then(|v| v.cluster_ip);
                        s.service_ips.add(new, k);
                    }
                    None => s
                        .service_ips
                        .rebuild(s.services.iter().map(|(k, v)| (v.cluster_ip, k.clone()))),
                }
                touched
            }),
            Event::Pod(ev) => self.write(|s| apply_pod(s, ev)),
            Event::Profile(ev) => {
                self.write(|s| replace_all(&mut s.profiles, ev, |p| Some((key_of(&p.metadata)?, p.clone()))))
            }
            Event::Split(ev) => {
                self.write(|s| replace_all(&mut s.splits, ev, |t| Some((key_of(&t.metadata)?, t.clone()))))
            }
            Event::Slice(ev) => self.apply_slice(ev),
        }
    }

    /// Applies one Service event.
    pub fn on_service(&self, ev: WatchEvent<Service>) {
        self.on(Event::Service(ev));
    }

    /// Applies one Pod event.
    pub fn on_pod(&self, ev: WatchEvent<Pod>) {
        self.on(Event::Pod(ev));
    }

    /// Applies one ServiceProfile event.
    pub fn on_profile(&self, ev: WatchEvent<ServiceProfile>) {
        self.on(Event::Profile(ev));
    }

    /// Applies one TrafficSplit event.
    pub fn on_split(&self, ev: WatchEvent<TrafficSplit>) {
        self.on(Event::Split(ev));
    }

    /// Applies one EndpointSlice event.
    pub fn on_slice(&self, ev: WatchEvent<EndpointSlice>) {
        self.on(Event::Slice(ev));
    }

    fn apply_slice(&self, ev: WatchEvent<EndpointSlice>) -> Vec<String> {
        self.write(|s| {
            let mut touched = Vec::new();
            let mut remove = |s: &mut State, key: &NsName| {
                if let Some(owner) = s.slice_owner.remove(key) {
                    if let Some(slices) = s.slices.get_mut(&owner) {
                        slices.remove(&key.1);
                    }
                    touched.push(owner.0);
                }
            };
            match ev {
                WatchEvent::Restarted(all) => {
                    touched.extend(s.slice_owner.values().map(|o| o.0.clone()));
                    s.slices.clear();
                    s.slice_owner.clear();
                    for slice in &all {
                        insert_slice(s, slice, &mut touched);
                    }
                }
                WatchEvent::Applied(slice) => {
                    if let Some(key) = key_of(&slice.metadata) {
                        remove(s, &key);
                    }
                    insert_slice(s, &slice, &mut touched);
                }
                WatchEvent::Deleted(slice) => {
                    if let Some(key) = key_of(&slice.metadata) {
                        remove(s, &key);
                    }
                }
            }
            touched.sort();
            touched.dedup();
            touched
        })
    }
}

/// A store event the index follows.
#[allow(clippy::large_enum_variant)] // one at a time, moved straight into the index
pub enum Event {
    /// A Service changed.
    Service(WatchEvent<Service>),
    /// An EndpointSlice changed.
    Slice(WatchEvent<EndpointSlice>),
    /// A Pod changed.
    Pod(WatchEvent<Pod>),
    /// A ServiceProfile changed.
    Profile(WatchEvent<ServiceProfile>),
    /// A TrafficSplit changed.
    Split(WatchEvent<TrafficSplit>),
}

impl Event {
    /// How many kinds the index watches.
    const KINDS: u32 = 5;
}

/// Events applied before streams are told, at most: bounds how long a burst can delay
/// the first notification.
const MAX_BATCH: usize = 1024;

/// Applies a Pod event to the pods and their addresses; returns the namespaces touched.
fn apply_pod(s: &mut State, ev: WatchEvent<Pod>) -> Vec<String> {
    let mut touched: Vec<String> = Vec::new();
    match ev {
        WatchEvent::Restarted(items) => {
            touched.extend(s.pods.namespaces().map(String::from));
            s.pods = items.iter().filter_map(crate::pods::shared).collect();
            touched.extend(s.pods.namespaces().map(String::from));
            s.pod_ips.rebuild(s.pods.iter().map(|p| (p.ip, pod_key(p))));
        }
        WatchEvent::Applied(pod) => {
            if let Some(new) = crate::pods::shared(&pod) {
                let old = s.pods.get(&new.namespace, &new.name);
                if old.is_none_or(|o| !Arc::ptr_eq(o, &new) && **o != *new) {
                    let key = pod_key(&new);
                    if let Some(old) = s.pods.insert(new.clone()) {
                        s.pod_ips.remove(old.ip, &key);
                    }
                    s.pod_ips.add(new.ip, &key);
                    touched.push(new.namespace.to_string());
                }
            }
        }
        WatchEvent::Deleted(pod) => {
            let m = &pod.metadata;
            if let (Some(ns), Some(name)) = (m.namespace.as_deref(), m.name.as_deref())
                && let Some(old) = s.pods.remove(ns, name)
            {
                s.pod_ips.remove(old.ip, &pod_key(&old));
                touched.push(ns.to_string());
            }
        }
    }
    touched.sort();
    touched.dedup();
    touched
}

fn insert_slice(s: &mut State, slice: &EndpointSlice, touched: &mut Vec<String>) {
    let (Some(key), Some(info)) = (key_of(&slice.metadata), SliceInfo::from_slice(slice)) else {
        return;
    };
    touched.push(info.service.0.clone());
    s.slice_owner.insert(key.clone(), info.service.clone());
    s.slices
        .entry(info.service.clone())
        .or_default()
        .insert(key.1, info);
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<NsName> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// Applies an event to a map keyed by (namespace, name); returns the namespaces touched.
fn replace_all<K, V>(
    map: &mut BTreeMap<NsName, V>,
    ev: WatchEvent<K>,
    read: impl Fn(&K) -> Option<(NsName, V)>,
) -> Vec<String>
where
    K: strait_api::Kind,
    V: PartialEq,
{
    let mut touched: Vec<String> = Vec::new();
    match ev {
        WatchEvent::Restarted(items) => {
            touched.extend(map.keys().map(|k| k.0.clone()));
            map.clear();
            for item in &items {
                if let Some((k, v)) = read(item) {
                    touched.push(k.0.clone());
                    map.insert(k, v);
                }
            }
        }
        WatchEvent::Applied(item) => {
            if let Some((k, v)) = read(&item)
                && map.get(&k) != Some(&v)
            {
                touched.push(k.0.clone());
                map.insert(k, v);
            }
        }
        WatchEvent::Deleted(item) => {
            if let Some((k, _)) = read(&item)
                && map.remove(&k).is_some()
            {
                touched.push(k.0);
            }
        }
    }
    touched.sort();
    touched.dedup();
    touched
}

/// Feeds the index from `store` until a watch ends; returns the error that ended it.
///
/// Events that are already waiting are applied together before any stream is told: a
/// store batch (a Pod and the EndpointSlice naming it, say) arrives on one watch per
/// kind, and telling streams between the two would show a meshed endpoint without its
/// identity for a moment.
pub async fn run<S: Store>(index: Arc<Index>, store: S) -> strait_api::StoreError {
    use futures::stream::{self, StreamExt};
    // Each event comes with its kind's number, for [`Index::synced`].
    fn kind<K, E>(
        n: u32,
        ev: Result<WatchEvent<K>, E>,
        f: fn(WatchEvent<K>) -> Event,
    ) -> (u32, bool, Result<Event, E>) {
        (n, crate::streams::completes(&ev), ev.map(f))
    }
    let mut events = stream::select_all([
        store
            .watch::<Service>()
            .map(|e| kind(0, e, Event::Service))
            .boxed(),
        store
            .watch::<EndpointSlice>()
            .map(|e| kind(1, e, Event::Slice))
            .boxed(),
        store.watch::<Pod>().map(|e| kind(2, e, Event::Pod)).boxed(),
        store
            .watch::<ServiceProfile>()
            .map(|e| kind(3, e, Event::Profile))
            .boxed(),
        store
            .watch::<TrafficSplit>()
            .map(|e| kind(4, e, Event::Split))
            .boxed(),
    ]);
    while let Some(batch) = crate::streams::next_batch(&mut events, MAX_BATCH).await {
        let mut touched: Vec<String> = Vec::new();
        let mut done = Vec::new();
        for (n, complete, result) in batch {
            if complete {
                done.push(n);
            }
            match result {
                Ok(ev) => touched.extend(index.apply(ev)),
                // The kube watcher retries by itself; log and keep going.
                Err(e) => tracing::warn!(error = %e, "watch error"),
            }
        }
        touched.sort();
        touched.dedup();
        index.generations.bump(touched);
        // Only now that the batch is applied (and streams told).
        for n in done {
            index.synced.restarted(n);
        }
    }
    strait_api::StoreError::Decode {
        what: "watches".into(),
        detail: "every watch ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "production"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "production"},
            "status": {"podIP": ip}
        }))
        .unwrap()
    }

    fn target(ix: &Index, ip: &str) -> Option<String> {
        ix.lookup_ip(ip.parse().unwrap()).map(|t| match t {
            IpTarget::Service(id) => format!("svc/{}", id.1),
            IpTarget::Pod(p) => format!("pod/{}", p.name),
        })
    }

    #[test]
    fn addresses_follow_creates_changes_deletes_and_restarts() {
        let ix = Index::new(ClusterInfo::default());
        ix.on_service(WatchEvent::Restarted(vec![
            svc("myapp", "10.96.0.10"),
            svc("web", "10.96.0.11"),
        ]));
        ix.on_pod(WatchEvent::Restarted(vec![pod("myapp-1", "10.0.0.5")]));
        assert_eq!(target(&ix, "10.96.0.10").as_deref(), Some("svc/myapp"));
        assert_eq!(target(&ix, "10.0.0.5").as_deref(), Some("pod/myapp-1"));
        assert_eq!(target(&ix, "10.0.0.6"), None);

        // A pod that moves frees its old address.
        ix.on_pod(WatchEvent::Applied(pod("myapp-1", "10.0.0.6")));
        assert_eq!(target(&ix, "10.0.0.5"), None);
        assert_eq!(target(&ix, "10.0.0.6").as_deref(), Some("pod/myapp-1"));

        // Two services claiming one address: the first by name answers until it goes.
        ix.on_service(WatchEvent::Applied(svc("aaa", "10.96.0.11")));
        assert_eq!(target(&ix, "10.96.0.11").as_deref(), Some("svc/aaa"));
        ix.on_service(WatchEvent::Deleted(svc("aaa", "10.96.0.11")));
        assert_eq!(target(&ix, "10.96.0.11").as_deref(), Some("svc/web"));

        // A ClusterIP wins over a pod with the same address; a restart forgets the rest.
        ix.on_pod(WatchEvent::Applied(pod("odd", "10.96.0.10")));
        assert_eq!(target(&ix, "10.96.0.10").as_deref(), Some("svc/myapp"));
        ix.on_service(WatchEvent::Restarted(vec![]));
        assert_eq!(target(&ix, "10.96.0.10").as_deref(), Some("pod/odd"));
        ix.on_pod(WatchEvent::Deleted(pod("odd", "10.96.0.10")));
        assert_eq!(target(&ix, "10.96.0.10"), None);
    }
}
