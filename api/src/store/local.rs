//! The local backend: cluster state in memory, persisted to a state directory.
//!
//! Invariants:
//! - Every change is one journal record (`journal.log`: length, CRC-32, JSON batch) that is
//!   written and synced *before* memory changes; a batch is atomic because a torn or
//!   corrupt record at the tail is discarded (and truncated) on the next open.
//! - `snapshot.json` is replaced atomically (write, sync, rename, sync directory) when the
//!   journal grows; records at or below the snapshot's sequence number are skipped on
//!   replay, so a crash between the rename and the journal truncation is harmless.
//! - Watchers subscribe under the state lock that writers hold while they publish, so a
//!   watch never misses or repeats a change between its first list and its first event.
//! - A batch is published with EndpointSlices last: when a reader of several kinds sees a
//!   slice, the Pods and Services of the same batch are already waiting on their watches.
//! - One process owns a state directory at a time (an exclusive lock on `lock`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use super::{Store, StoreError, WatchEvent, validate_batch};
use crate::kinds::{self, KINDS, Kind, KindId, Object, ObjectKey};

/// Where time comes from (an input, so tests control it).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Journal size past which the state is compacted into a new snapshot.
const COMPACT_BYTES: u64 = 8 << 20;
/// Changes a slow watcher may fall behind before it is resynchronised with a fresh list,
/// for the kinds that come in bulk (a deployment's pods and their endpoints).
const WATCH_BUFFER: usize = 4096;
/// The same for every other kind. A channel's ring is allocated whole when the store
/// opens; a 4096-slot ring for each of the ~30 kinds was 6 MiB of a controller's memory.
const WATCH_BUFFER_SMALL: usize = 256;
/// Namespaces a new cluster starts with, as in Kubernetes.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// What an apply did to one object (kubectl's words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and did not change.
    Unchanged,
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
        })
    }
}

/// In-memory store, optionally persisted to a directory. Cheap to clone.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    persist: Mutex<Option<Persist>>,
    channels: Vec<broadcast::Sender<Change>>,
    clock: Clock,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<ObjectKey, Stored>,
    resource_version: u64,
    seq: u64,
    /// The Services holding each cluster IP: as in Kubernetes, an IP is allocated once
    /// (more than one holder only in a state written before the store checked).
    cluster_ips: HashMap<String, BTreeSet<ObjectKey>>,
}

/// The cluster IPs a Service holds (`spec.clusterIP` and `spec.clusterIPs`, without the
/// empty and `None` ones), normalized; nothing for other kinds.
fn cluster_ips(o: &Object) -> Vec<String> {
    let Object::Service(svc) = o else {
        return Vec::new();
    };
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let mut ips: Vec<String> = spec
        .cluster_ip
        .iter()
        .chain(spec.cluster_ips.iter().flatten())
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(|ip| {
            ip.parse::<std::net::IpAddr>()
                .map_or_else(|_| ip.clone(), |a| a.to_string())
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

impl State {
    /// Rebuilds [`State::cluster_ips`] from the objects (after loading them).
    fn reindex(&mut self) {
        self.cluster_ips.clear();
        let services: Vec<(ObjectKey, Object)> = self
            .objects
            .iter()
            .filter(|(k, _)| k.kind == KindId::Service)
            .map(|(k, s)| (k.clone(), s.object(k.kind)))
            .collect();
        for (k, o) in &services {
            self.index(k, None, Some(o));
        }
    }

    /// Moves `key`'s cluster IPs in the index from those of `old` to those of `new`.
    fn index(&mut self, key: &ObjectKey, old: Option<&Object>, new: Option<&Object>) {
        for ip in old.map(cluster_ips).unwrap_or_default() {
            if let Some(holders) = self.cluster_ips.get_mut(&ip) {
                holders.remove(key);
                if holders.is_empty() {
                    self.cluster_ips.remove(&ip);
                }
            }
        }
        for ip in new.map(cluster_ips).unwrap_or_default() {
            self.cluster_ips.entry(ip).or_default().insert(key.clone());
        }
    }

    /// The cluster IPs `key` holds as stored.
    fn stored_ips(&self, key: &ObjectKey) -> Vec<String> {
        self.objects
            .get(key)
            .map(|s| cluster_ips(&s.object(key.kind)))
            .unwrap_or_default()
    }
}

/// An object as the store keeps it: its compact JSON text, with the most common
/// Kubernetes fragments folded into single bytes (see [`packed`]). A typed Kubernetes
/// object (a Pod, say) takes several kilobytes of mostly empty optional fields; its JSON a
/// few hundred bytes, about half of which are field names every Pod repeats. Readers
/// decode what they read; each watcher decodes each change once.
#[derive(Clone)]
struct Stored(Arc<[u8]>);

impl Stored {
    fn of(o: &Object) -> Self {
        Self(packed::pack(&o.to_json()).into())
    }

    /// The object's JSON text.
    fn json(&self) -> Vec<u8> {
        packed::unpack(&self.0)
    }

    fn object(&self, kind: KindId) -> Object {
        Object::from_json(kind, &self.json()).expect("the store decodes what it encoded")
    }

    fn typed<K: Kind>(&self) -> K {
        serde_json::from_slice(&self.json()).expect("the store decodes what it encoded")
    }

    /// Its `metadata.resourceVersion`, read without decoding the whole object.
    fn resource_version(&self) -> Option<String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            resource_version: Option<String>,
        }
        #[derive(Deserialize)]
        struct Head {
            metadata: Meta,
        }
        serde_json::from_slice::<Head>(&self.json())
            .ok()?
            .metadata
            .resource_version
    }
}

/// Compact JSON with common fragments as single bytes.
///
/// Compact JSON never holds a raw byte below 0x20 (control characters in strings are
/// escaped, and there is no whitespace), so those bytes are free to stand for fragments:
/// byte `i` (1 ≤ i ≤ [`FRAGMENTS`]`.len()`) is `FRAGMENTS[i - 1]`. Packing replaces the
/// longest fragment found at each position; unpacking expands every such byte. Any text
/// that holds none of the fragments packs to itself.
mod packed {
    /// Field names and values that (nearly) every stored Pod, Service or EndpointSlice
    /// repeats, in the order serde writes them. At most 31: bytes 1..=31.
    pub(super) const FRAGMENTS: &[&str] = &[
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{",
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{",
        "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\",\"addressType\":\"",
        "\"creationTimestamp\":\"",
        "\"generation\":",
        "\"labels\":{",
        "\"name\":\"",
        "\"namespace\":\"",
        "\"resourceVersion\":\"",
        "\"uid\":\"",
        "\"spec\":{",
        "\"status\":{",
        "\"containers\":[{",
        "\"image\":\"",
        "\"serviceAccountName\":\"",
        "\"conditions\":[{\"status\":\"True\",\"type\":\"Ready\"}]",
        "\"phase\":\"Running\"",
        "\"podIP\":\"",
        "\"linkerd.io/control-plane-ns\":\"linkerd\"",
        "\"linkerd.io/proxy-deployment\":\"",
        "\"annotations\":{",
        "\"ports\":[{",
        "\"containerPort\":",
        "\"protocol\":\"TCP\"",
        "{\"addresses\":[\"",
        "\"conditions\":{\"ready\":true,\"serving\":true,\"terminating\":false}",
        "\"targetRef\":{\"kind\":\"Pod\",",
        "\"kubernetes.io/service-name\":\"",
        "\"targetPort\":",
        "\"clusterIP\":\"",
        "\"port\":",
    ];

    /// `json` with fragments folded.
    pub(super) fn pack(json: &[u8]) -> Vec<u8> {
        debug_assert!(FRAGMENTS.len() < 0x20);
        let mut out = Vec::with_capacity(json.len());
        let mut i = 0;
        while i < json.len() {
            let rest = &json[i..];
            let found = if matches!(rest[0], b'"' | b'{') {
                FRAGMENTS
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| rest.starts_with(f.as_bytes()))
                    .max_by_key(|(_, f)| f.len())
            } else {
                None
            };
            match found {
                Some((n, f)) => {
                    out.push(n as u8 + 1);
                    i += f.len();
                }
                None => {
                    out.push(rest[0]);
                    i += 1;
                }
            }
        }
        out
    }

    /// The JSON text of `packed`.
    pub(super) fn unpack(packed: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(packed.len() * 2);
        for &b in packed {
            match FRAGMENTS.get(usize::from(b).wrapping_sub(1)) {
                Some(f) if b < 0x20 => out.extend_from_slice(f.as_bytes()),
                _ => out.push(b),
            }
        }
        out
    }
}

#[derive(Clone)]
enum Change {
    Applied(Stored),
    Deleted(Stored),
}

struct Persist {
    dir: PathBuf,
    journal: File,
    journal_len: u64,
    _lock: File,
}

#[derive(Serialize, Deserialize)]
struct Record {
    seq: u64,
    resource_version: u64,
    ops: Vec<Op>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Put(Value),
    Delete(ObjectKey),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    format: u32,
    seq: u64,
    resource_version: u64,
    objects: Vec<Value>,
}

impl LocalStore {
    /// A store that lives only in memory (tests, `--dry-run`).
    pub fn in_memory() -> Self {
        Self::build(None, system_clock()).expect("an in-memory store cannot fail to open")
    }

    /// Opens (or creates) the store persisted in `dir`, resuming from its last state.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::build(Some(dir), system_clock())
    }

    /// Like [`LocalStore::open`] / [`LocalStore::in_memory`] with a given clock.
    pub fn build(dir: Option<&Path>, clock: Clock) -> Result<Self, StoreError> {
        let mut state = State::default();
        let persist = match dir {
            Some(d) => Some(open_dir(d, &mut state)?),
            None => None,
        };
        state.reindex();
        let fresh = state.seq == 0;
        let channels = KINDS
            .iter()
            .map(|k| broadcast::channel(watch_buffer(k.id)).0)
            .collect();
        let store = Self {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                persist: Mutex::new(persist),
                channels,
                clock,
            }),
        };
        if fresh {
            let namespaces = INITIAL_NAMESPACES
                .iter()
                .map(|n| {
                    Object::Namespace(Namespace {
                        metadata: ObjectMeta {
                            name: Some((*n).into()),
                            ..Default::default()
                        },
                        ..Default::default()
                    })
                })
                .collect();
            store.apply_now(namespaces)?;
        }
        Ok(store)
    }

    /// The highest resourceVersion assigned so far.
    pub fn resource_version(&self) -> u64 {
        self.read().resource_version
    }

    /// Applies like [`Store::apply`] and says what happened to each object, as kubectl
    /// reports it.
    pub async fn apply_reporting(
        &self,
        objects: Vec<Object>,
    ) -> Result<Vec<(Object, ApplyOutcome)>, StoreError> {
        let before: Vec<Option<String>> = {
            let state = self.read();
            objects
                .iter()
                .map(|o| state.objects.get(&o.key()).and_then(Stored::resource_version))
                .collect()
        };
        let stored = self.apply(objects).await?;
        Ok(stored
            .into_iter()
            .zip(before)
            .map(|(o, before)| {
                let outcome = match before {
                    None => ApplyOutcome::Created,
                    Some(rv) if Some(&rv) == o.meta().resource_version.as_ref() => ApplyOutcome::Unchanged,
                    Some(_) => ApplyOutcome::Configured,
                };
                (o, outcome)
            })
            .collect())
    }

    /// Writes the `status` of each of `objects` onto the stored object, all or none (as
    /// one batch): [`Store::apply_status`] for several objects at once.
    pub async fn apply_statuses(&self, objects: Vec<Object>) -> Result<(), StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_locked(objects, true).map(drop))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// One object of any kind, if it exists.
    pub fn get_object(&self, key: &ObjectKey) -> Option<Object> {
        self.read().objects.get(key).map(|o| o.object(key.kind))
    }

    /// Every object of a kind, in one namespace or all.
    pub fn list_objects(&self, kind: KindId, namespace: Option<&str>) -> Vec<Object> {
        self.read()
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(k, o)| o.object(k.kind))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn apply_now(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        self.apply_locked(objects, false)
    }

    /// Applies `objects`; with `status_only`, each takes only its `status` onto the object
    /// as stored (read under the same lock, so a spec written meanwhile is kept), and an
    /// object that does not exist is left absent.
    fn apply_locked(&self, objects: Vec<Object>, status_only: bool) -> Result<Vec<Object>, StoreError> {
        validate_batch(&objects)?;
        let mut persist = self.inner.persist.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        // Namespaces must exist, or come in the same batch (as `kubectl apply -f dir` allows).
        let mut namespaces: BTreeSet<String> = state
            .objects
            .keys()
            .filter(|k| k.kind == KindId::Namespace)
            .map(|k| k.name.clone())
            .collect();
        namespaces.extend(
            objects
                .iter()
                .filter(|o| o.kind_id() == KindId::Namespace)
                .map(|o| o.key().name),
        );
        // (A status is only written onto an object that exists: no namespace to check.)
        for o in objects.iter().filter(|_| !status_only) {
            let key = o.key();
            if !key.namespace.is_empty() && !namespaces.contains(&key.namespace) {
                return Err(StoreError::NamespaceNotFound {
                    namespace: key.namespace.clone(),
                    key,
                });
            }
        }
        let now = (self.inner.clock)();
        let mut rv = state.resource_version;
        let mut results = Vec::with_capacity(objects.len());
        let mut changed: Vec<Object> = Vec::new();
        for o in objects {
            let key = o.key();
            // A batch may name an object twice; the later one wins, as in kubectl.
            let existing = match changed.iter().rev().find(|c| c.key() == key) {
                Some(c) => Some(c.clone()),
                None => state.objects.get(&key).map(|s| s.object(key.kind)),
            };
            let o = match (status_only, &existing) {
                (false, _) => o,
                (true, None) => continue,
                (true, Some(current)) => with_status_of(current, &o)?,
            };
            let stored = prepare(o, existing.as_ref(), now, &mut rv)?;
            match stored {
                Some(s) => {
                    results.push(s.clone());
                    changed.push(s);
                }
                None => results.push(existing.expect("unchanged implies existing")),
            }
        }
        if changed.is_empty() {
            return Ok(results);
        }
        check_cluster_ips(&state, &changed)?;
        let seq = state.seq + 1;
        let mut stored: Vec<(ObjectKey, Stored)> = changed.iter().map(|o| (o.key(), Stored::of(o))).collect();
        // Watches are per kind; a reader that sees an EndpointSlice must be able to find
        // the Pods and Services it names from the same batch already waiting.
        stored.sort_by_key(|(k, _)| publishes_late(k.kind));
        if let Some(p) = persist.as_mut() {
            p.append(&record_bytes(
                seq,
                rv,
                stored.iter().map(|(_, s)| RecordOp::Put(s)),
            ))?;
        }
        state.seq = seq;
        state.resource_version = rv;
        // Each Service's IPs move in the index once, from before the batch to its last
        // version in it (a batch may name a Service twice).
        let mut services: BTreeMap<ObjectKey, Option<Object>> = BTreeMap::new();
        for (key, _) in stored.iter().filter(|(k, _)| k.kind == KindId::Service) {
            if !services.contains_key(key) {
                services.insert(key.clone(), state.objects.get(key).map(|o| o.object(key.kind)));
            }
        }
        for (key, s) in stored {
            let kind = key.kind;
            state.objects.insert(key, s.clone());
            let _ = self.inner.channels[kind as usize].send(Change::Applied(s));
        }
        for (key, before) in services {
            let after = state.objects.get(&key).map(|o| o.object(key.kind));
            state.index(&key, before.as_ref(), after.as_ref());
        }
        if let Some(p) = persist.as_mut() {
            p.maybe_compact(&state)?;
        }
        Ok(results)
    }

    fn delete_now(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        let mut persist = self.inner.persist.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        let Some(target) = state.objects.get(key).cloned() else {
            return Ok(None);
        };
        // Deleting a namespace deletes everything in it, as in Kubernetes.
        let mut doomed: Vec<ObjectKey> = Vec::new();
        if key.kind == KindId::Namespace {
            doomed.extend(state.objects.keys().filter(|k| k.namespace == key.name).cloned());
        }
        doomed.push(key.clone());
        let (seq, rv) = (state.seq + 1, state.resource_version + 1);
        if let Some(p) = persist.as_mut() {
            p.append(&record_bytes(seq, rv, doomed.iter().map(RecordOp::Delete)))?;
        }
        state.seq = seq;
        state.resource_version = rv;
        for k in doomed {
            if let Some(o) = state.objects.remove(&k) {
                if k.kind == KindId::Service {
                    state.index(&k, Some(&o.object(k.kind)), None);
                }
                let _ = self.inner.channels[k.kind as usize].send(Change::Deleted(o));
            }
        }
        if let Some(p) = persist.as_mut() {
            p.maybe_compact(&state)?;
        }
        Ok(Some(target.object(key.kind)))
    }
}

/// `current` with the `status` of `from` (a `from` without one keeps the stored status,
/// as every apply does).
fn with_status_of(current: &Object, from: &Object) -> Result<Object, StoreError> {
    let mut value = current.to_value();
    let status = from.to_value().get("status").cloned();
    if let Some(map) = value.as_object_mut() {
        match status {
            Some(s) => {
                map.insert("status".into(), s);
            }
            None => {
                map.remove("status");
            }
        }
    }
    Object::from_value(current.kind_id(), value).map_err(|e| StoreError::Decode {
        what: current.key().to_string(),
        detail: e.to_string(),
    })
}

impl Store for LocalStore {
    async fn get<K: Kind>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let key = ObjectKey::new(K::ID, namespace, name);
        Ok(self.read().objects.get(&key).map(Stored::typed::<K>))
    }

    async fn list<K: Kind>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        Ok(list_kind::<K>(&self.read(), namespace))
    }

    fn watch<K: Kind>(&self) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        let (rx, snapshot) = {
            let state = self.read();
            (
                self.inner.channels[K::ID as usize].subscribe(),
                list_kind::<K>(&state, None),
            )
        };
        let store = self.clone();
        futures::stream::unfold((store, rx, Some(snapshot)), |(store, mut rx, first)| async move {
            if let Some(items) = first {
                return Some((Ok(WatchEvent::Restarted(items)), (store, rx, None)));
            }
            let event = match rx.recv().await {
                Ok(Change::Applied(o)) => WatchEvent::Applied(o.typed()),
                Ok(Change::Deleted(o)) => WatchEvent::Deleted(o.typed()),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too far behind: start over from a consistent list.
                    let (new_rx, items) = {
                        let state = store.read();
                        (rx.resubscribe(), list_kind::<K>(&state, None))
                    };
                    rx = new_rx;
                    WatchEvent::Restarted(items)
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(event), (store, rx, None)))
        })
        .boxed()
    }

    async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        let this = self.clone();
        // Appending to the journal syncs to disk: keep that off the async workers.
        tokio::task::spawn_blocking(move || this.apply_now(objects))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Only the status: the stored object's spec and metadata stay as they are, even if
    /// they changed since the caller read the object.
    async fn apply_status(&self, object: Object) -> Result<(), StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_locked(vec![object], true).map(drop))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        let this = self.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || this.delete_now(&key))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// How far a watcher of `kind` may fall behind before it is resynchronised.
fn watch_buffer(kind: KindId) -> usize {
    match kind {
        KindId::Pod | KindId::Service | KindId::EndpointSlice | KindId::Endpoints => WATCH_BUFFER,
        _ => WATCH_BUFFER_SMALL,
    }
}

/// Kinds that name other objects of their batch, so are published after them.
fn publishes_late(kind: KindId) -> bool {
    matches!(kind, KindId::EndpointSlice | KindId::Endpoints)
}

fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

fn list_kind<K: Kind>(state: &State, namespace: Option<&str>) -> Vec<K> {
    state
        .objects
        .iter()
        .filter(|(k, _)| k.kind == K::ID && namespace.is_none_or(|ns| k.namespace == ns))
        .map(|(_, o)| o.typed())
        .collect()
}

/// The object as it will be stored, or `None` if storing it would change nothing.
/// Refuses a batch that would give a cluster IP to a second Service (as the Kubernetes
/// API server does), naming the Service, the field and the Service that holds the IP. A
/// Service keeps what it already holds (even an IP a state written before this check
/// gave to two).
fn check_cluster_ips(state: &State, changed: &[Object]) -> Result<(), StoreError> {
    // The batch's Services as they will be (the later of two versions wins, as in apply).
    let mut batch: HashMap<ObjectKey, Vec<String>> = HashMap::new();
    for o in changed.iter().filter(|o| o.kind_id() == KindId::Service) {
        batch.insert(o.key(), cluster_ips(o));
    }
    let mut claimed: HashMap<&str, Vec<&ObjectKey>> = HashMap::new();
    for (key, ips) in &batch {
        for ip in ips {
            claimed.entry(ip.as_str()).or_default().push(key);
        }
    }
    for (key, ips) in &batch {
        let had = state.stored_ips(key);
        for ip in ips.iter().filter(|ip| !had.contains(ip)) {
            // Its holders after the batch: stored ones the batch leaves on it, and the
            // batch's other Services that take it.
            let stored = state
                .cluster_ips
                .get(ip)
                .into_iter()
                .flatten()
                .filter(|h| *h != key && batch.get(*h).is_none_or(|moved| moved.contains(ip)));
            let others = claimed[ip.as_str()].iter().copied().filter(|h| *h != key);
            if let Some(holder) = stored.chain(others).next() {
                return Err(StoreError::Invalid {
                    key: key.clone(),
                    problems: format!(
                        "spec.clusterIP: {ip} is already allocated to {holder}; choose a free address, or leave clusterIP empty"
                    ),
                });
            }
        }
    }
    Ok(())
}

fn prepare(
    obj: Object,
    existing: Option<&Object>,
    now: SystemTime,
    rv: &mut u64,
) -> Result<Option<Object>, StoreError> {
    let mut value = obj.to_value();
    let old = existing.map(Object::to_value);
    // Status is written by controllers, not by apply: keep it unless the caller sent one.
    if let Some(old_status) = old
        .as_ref()
        .and_then(|o| o.get("status"))
        .filter(|s| !s.is_null())
        && value.get("status").is_none_or(Value::is_null)
    {
        value["status"] = old_status.clone();
    }
    let mut candidate = Object::from_value(obj.kind_id(), value).map_err(|e| StoreError::Corrupt {
        path: "(apply)".into(),
        detail: format!("{} does not round-trip: {e}", obj.key()),
    })?;
    if let (Some(old_obj), Some(old_v)) = (existing, &old) {
        let new_v = candidate.to_value();
        if comparable(&new_v) == comparable(old_v) {
            return Ok(None);
        }
        let spec_changed = old_v.get("spec") != new_v.get("spec");
        let old_meta = old_obj.meta();
        let meta = candidate.meta_mut();
        meta.uid = old_meta.uid.clone();
        meta.creation_timestamp = old_meta.creation_timestamp.clone();
        meta.generation = Some(old_meta.generation.unwrap_or(1) + i64::from(spec_changed));
    } else {
        let meta = candidate.meta_mut();
        meta.uid = Some(uid(now, *rv + 1));
        meta.creation_timestamp = Some(time(now));
        meta.generation = Some(1);
    }
    *rv += 1;
    let meta = candidate.meta_mut();
    meta.resource_version = Some(rv.to_string());
    meta.managed_fields = None;
    Ok(Some(candidate))
}

/// An object's value without the fields the store itself maintains.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            meta.remove(f);
        }
    }
    v
}

fn time(t: SystemTime) -> Time {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let ts =
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    Time(ts)
}

/// A UUID-shaped identifier, unique per store (derived from time and resourceVersion).
fn uid(now: SystemTime, rv: u64) -> String {
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let a = splitmix(nanos ^ rv.rotate_left(32));
    let b = splitmix(a ^ rv);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io { path, action, source }
}

fn corrupt(path: &Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail,
    }
}

fn decode_object(path: &Path, v: Value) -> Result<Object, StoreError> {
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let info =
        kinds::lookup(&api_version, &kind).map_err(|e| corrupt(path, format!("stored object: {e}")))?;
    Object::from_value(info.id, v).map_err(|e| corrupt(path, format!("stored {kind}: {e}")))
}

/// Locks the directory, loads the snapshot, replays the journal and truncates a torn tail.
fn open_dir(dir: &Path, state: &mut State) -> Result<Persist, StoreError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create"))?;
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path, "open"))?;
    if lock.try_lock().is_err() {
        return Err(StoreError::Locked {
            path: dir.display().to_string(),
        });
    }

    let snap_path = dir.join("snapshot.json");
    match std::fs::read(&snap_path) {
        Ok(bytes) => {
            let snap: Snapshot = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(&snap_path, format!("unreadable snapshot: {e}")))?;
            if snap.format != 1 {
                return Err(corrupt(
                    &snap_path,
                    format!("snapshot format {} is not 1", snap.format),
                ));
            }
            state.seq = snap.seq;
            state.resource_version = snap.resource_version;
            for v in snap.objects {
                let o = decode_object(&snap_path, v)?;
                state.objects.insert(o.key(), Stored::of(&o));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&snap_path, "read")(e)),
    }

    let journal_path = dir.join("journal.log");
    let mut journal = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&journal_path)
        .map_err(io_err(&journal_path, "open"))?;
    let mut bytes = Vec::new();
    journal
        .read_to_end(&mut bytes)
        .map_err(io_err(&journal_path, "read"))?;
    let mut offset = 0usize;
    while let Some((record, len)) = read_record(&bytes[offset..]) {
        let record: Record = match serde_json::from_slice(record) {
            Ok(r) => r,
            Err(_) => break,
        };
        if record.seq > state.seq {
            for op in record.ops {
                match op {
                    Op::Put(v) => {
                        let o = decode_object(&journal_path, v)?;
                        state.objects.insert(o.key(), Stored::of(&o));
                    }
                    Op::Delete(k) => {
                        state.objects.remove(&k);
                    }
                }
            }
            state.seq = record.seq;
            state.resource_version = record.resource_version;
        }
        offset += len;
    }
    if offset < bytes.len() {
        // A batch whose record was not completely written never happened.
        tracing::warn!(
            path = %journal_path.display(),
            discarded_bytes = bytes.len() - offset,
            "discarding an incomplete journal record left by an interrupted write"
        );
        journal
            .set_len(offset as u64)
            .map_err(io_err(&journal_path, "truncate"))?;
        journal.sync_all().map_err(io_err(&journal_path, "sync"))?;
    }
    journal
        .seek(SeekFrom::End(0))
        .map_err(io_err(&journal_path, "seek"))?;
    Ok(Persist {
        dir: dir.to_path_buf(),
        journal,
        journal_len: offset as u64,
        _lock: lock,
    })
}

/// One framed record at the start of `buf`: (payload, framed length), if complete and intact.
fn read_record(buf: &[u8]) -> Option<(&[u8], usize)> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    let payload = buf.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, 8 + len))
}

/// One operation of a journal record being written.
enum RecordOp<'a> {
    Put(&'a Stored),
    Delete(&'a ObjectKey),
}

/// A journal record's JSON text (the shape [`Record`] reads back), written from the
/// stored text of each object without decoding it again.
fn record_bytes<'a>(seq: u64, resource_version: u64, ops: impl Iterator<Item = RecordOp<'a>>) -> Vec<u8> {
    let mut out = format!("{{\"seq\":{seq},\"resource_version\":{resource_version},\"ops\":[").into_bytes();
    for (i, op) in ops.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match op {
            RecordOp::Put(s) => {
                out.extend_from_slice(b"{\"put\":");
                out.extend_from_slice(&s.json());
            }
            RecordOp::Delete(k) => {
                out.extend_from_slice(b"{\"delete\":");
                serde_json::to_writer(&mut out, k).expect("keys serialize");
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

impl Persist {
    fn append(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join("journal.log");
        let mut framed = Vec::with_capacity(payload.len() + 8);
        framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        framed.extend_from_slice(payload);
        let result = self
            .journal
            .write_all(&framed)
            .and_then(|()| self.journal.sync_data());
        if let Err(e) = result {
            // Cut off whatever part of the record reached the file, so the journal stays valid.
            let _ = self.journal.set_len(self.journal_len);
            let _ = self.journal.seek(SeekFrom::End(0));
            return Err(io_err(&path, "append")(e));
        }
        self.journal_len += framed.len() as u64;
        Ok(())
    }

    fn maybe_compact(&mut self, state: &State) -> Result<(), StoreError> {
        if self.journal_len < COMPACT_BYTES {
            return Ok(());
        }
        self.compact(state)
    }

    fn compact(&mut self, state: &State) -> Result<(), StoreError> {
        // The shape `Snapshot` reads back, streamed from each object's stored text: a
        // snapshot is as large as the store, and building it in memory first doubled the
        // store's peak footprint at every compaction.
        let tmp = self.dir.join("snapshot.json.tmp");
        let dst = self.dir.join("snapshot.json");
        let f = File::create(&tmp).map_err(io_err(&tmp, "create"))?;
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, f);
        let written = (|| {
            write!(
                w,
                "{{\"format\":1,\"seq\":{},\"resourceVersion\":{},\"objects\":[",
                state.seq, state.resource_version
            )?;
            for (i, o) in state.objects.values().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                w.write_all(&o.json())?;
            }
            w.write_all(b"]}")?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()
        })();
        written.map_err(io_err(&tmp, "write"))?;
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst, "replace"))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir, "sync"))?;
        let journal = self.dir.join("journal.log");
        self.journal.set_len(0).map_err(io_err(&journal, "truncate"))?;
        self.journal
            .seek(SeekFrom::Start(0))
            .map_err(io_err(&journal, "seek"))?;
        self.journal.sync_all().map_err(io_err(&journal, "sync"))?;
        self.journal_len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
