//! The mirror's I/O: one task per Link keeps the local cluster's mirrors in step with the
//! target cluster, and [`run_mirror`] runs one such task for every Link of the local
//! cluster, starting, restarting and removing them as Links change.
//!
//! Invariants:
//! - Nothing is planned before the first complete list of both sides; after a remote
//!   disconnect the last complete remote list stays in force (mirrors stay, endpoints turn
//!   not ready) until a new complete list replaces it in one step.
//! - Each plan is carried out against the view it was made from, and the mirror's own
//!   writes are folded into that view at once, so a slow watch never causes a duplicate.
//! - Mirrors are deleted only by a plan (remote Service gone or unselected) or when their
//!   Link is deleted; never on shutdown or on a failure.
//! - The Link's status (`status.mirrorServices`, one `Mirrored` condition per selected
//!   remote Service, see [`reconcile::link_status`]) is written only when it changes, onto
//!   the Link as read just before, through [`Store::apply_status`].
//! - Each link task publishes its target's federated members ([`Federation`]) after every
//!   round with a complete remote list; one federation task ([`run_federation`]) turns
//!   them, with the local Services, into the `<svc>-federated` Services, and writes each
//!   Link's `status.federatedServices` (what became of its members) when it differs from
//!   the Link as last seen; the link task writes `status.mirrorServices`. Each writes its
//!   own part onto the Link read just before, so neither undoes the other's.
//! - Remote Pods are watched only to learn the exported Services' workload identities and
//!   ready addresses (for the gateway's proxy entry, see [`crate::reconcile`]); their
//!   watch failing never marks the target disconnected, it only leaves those out until it
//!   returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use strait_api::mesh::link::{Link, LinkStatus};
use strait_api::{Kind, KindId, ObjectKey, Store, StoreError, WatchEvent};
use tokio::sync::watch;

use crate::federated;
use crate::link::LinkConfig;
use crate::probe::{self, GatewayHealth};
use crate::reconcile::{self, Gateway, LocalView, Mode, NsName, RemoteWorkload, ServiceRange};

/// How the mirror runs.
#[derive(Clone, Debug)]
pub struct MirrorOptions {
    /// Local mode: the range mirrors take cluster IPs from (Kubernetes allocates its own).
    pub service_range: Option<ServiceRange>,
    /// First delay before re-watching a target cluster that went away (doubles to 30 s).
    pub retry: Duration,
    /// The local gateway's proxy entry for every link (`strait gateway --proxy-entry
    /// ADDR`): mirrors of every target cluster send Strait proxies there, naming the link.
    pub gateway_entry: Option<SocketAddr>,
    /// The local gateway's proxy entry of one target cluster (by the Link's
    /// `targetClusterName`; an entry of that link alone, which wins over
    /// [`MirrorOptions::gateway_entry`]).
    pub gateway_entries: BTreeMap<String, SocketAddr>,
    /// Where link tasks publish their federated members for the federation task.
    pub federation: Federation,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        Self {
            service_range: None,
            retry: Duration::from_millis(500),
            gateway_entry: None,
            gateway_entries: BTreeMap::new(),
            federation: Federation::default(),
        }
    }
}

impl MirrorOptions {
    /// The local gateway's proxy entry for the link to `cluster`, if any.
    pub fn entry_for(&self, cluster: &str) -> Option<reconcile::Entry> {
        if let Some(addr) = self.gateway_entries.get(cluster) {
            return Some(reconcile::Entry {
                addr: *addr,
                link: None,
            });
        }
        self.gateway_entry.map(|addr| reconcile::Entry {
            addr,
            link: Some(cluster.to_string()),
        })
    }
}

/// What every running link contributes to federated services, by Link `namespace/name`:
/// `None` until the link's first complete remote list.
#[derive(Clone, Debug, Default)]
pub struct FederationState {
    /// Whether the Links themselves were listed (so the set of links is known).
    pub links_known: bool,
    /// Each running link's members.
    pub links: BTreeMap<String, Option<federated::LinkMembers>>,
    /// Which task owns each link's entry (the latest started).
    owners: BTreeMap<String, u64>,
}

/// The shared [`FederationState`]: link tasks write their part, the federation task
/// reads. A link task's handle owns its link's entry until a newer task of the same link
/// takes it over: a restarting link keeps its members (its previous task's, until the new
/// one publishes its own), and its old task, dropped late, never removes the new one's.
#[derive(Clone)]
pub struct Federation {
    shared: Arc<watch::Sender<FederationState>>,
    own: Option<(String, u64)>,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            shared: Arc::new(watch::Sender::new(FederationState::default())),
            own: None,
        }
    }
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").field("own", &self.own).finish()
    }
}

impl Federation {
    /// A handle for one task of `link`, which takes the link's entry over: `None` (not
    /// synced yet) for a new link, the members last published for a restarting one.
    pub fn for_link(&self, link: &str) -> Federation {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.shared.send_modify(|s| {
            s.owners.insert(link.to_string(), n);
            s.links.entry(link.to_string()).or_insert(None);
        });
        Federation {
            shared: self.shared.clone(),
            own: Some((link.to_string(), n)),
        }
    }

    /// Sets this link's part; tells readers only on a change. A no-op on a handle that is
    /// not a link's, or whose link a newer task took over.
    pub fn publish(&self, members: federated::LinkMembers) {
        let Some((link, n)) = &self.own else { return };
        self.shared.send_if_modified(|s| {
            if s.owners.get(link) != Some(n) {
                return false;
            }
            let slot = s.links.entry(link.clone()).or_default();
            if slot.as_ref() == Some(&members) {
                return false;
            }
            *slot = Some(members);
            true
        });
    }

    /// Removes `link`'s part (the Link is gone, or names another cluster now): its
    /// members leave. A link task that ends or fails leaves its members in place, as it
    /// leaves its mirrors: only a change of the Link removes them.
    pub fn forget(&self, link: &str) {
        self.shared.send_if_modified(|s| {
            s.owners.remove(link);
            s.links.remove(link).is_some()
        });
    }

    /// Marks the set of Links as known.
    pub fn links_known(&self) {
        self.shared
            .send_if_modified(|s| !std::mem::replace(&mut s.links_known, true));
    }

    /// A reader.
    pub fn subscribe(&self) -> watch::Receiver<FederationState> {
        self.shared.subscribe()
    }
}

const MAX_RETRY: Duration = Duration::from_secs(30);

/// Mirror objects deleted concurrently in one round.
const DELETES_IN_FLIGHT: usize = 16;

/// One mirror, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorEntry {
    /// `namespace/name` of the remote Service.
    pub remote: String,
    /// The local mirror's name (same namespace).
    pub mirror: String,
    /// `gateway` or `remote-discovery`.
    pub mode: &'static str,
}

/// A remote Service that is not mirrored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedEntry {
    /// `namespace/name` of the remote Service.
    pub remote: String,
    /// A CamelCase reason (`NamespaceNotFound`, …).
    pub reason: &'static str,
    /// What to do.
    pub message: String,
}

/// What a link's mirror reports (to `multicluster gateways` and `check`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkReport {
    /// `namespace/name` of the Link.
    pub link: String,
    /// The target cluster.
    pub cluster: String,
    /// The gateway's probe state.
    pub gateway: GatewayHealth,
    /// Whether the target is read through the gateway link (its gateway's catalog)
    /// rather than through its API with the Link's credentials.
    pub through_gateway: bool,
    /// Whether the target cluster is reachable now.
    pub remote_connected: bool,
    /// Whether a complete list of the target's Services was ever seen.
    pub synced: bool,
    /// Current mirrors.
    pub mirrors: Vec<MirrorEntry>,
    /// Selected Services that are not mirrored.
    pub skipped: Vec<SkippedEntry>,
    /// The last error (link configuration, credentials, target API, local writes).
    pub error: Option<String>,
}

/// Reports of every running link, by Link `namespace/name`.
pub type Reports = Arc<RwLock<BTreeMap<String, LinkReport>>>;

/// A running link task.
pub struct LinkHandle {
    task: tokio::task::JoinHandle<()>,
    spec: strait_api::mesh::link::LinkSpec,
    secret_version: Option<String>,
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateway addresses to mirror with, and the problem to report: what `resolved` gave
/// (remembered in `known`), or, when the names do not resolve, the addresses they last
/// resolved to. A lookup that fails for a moment must not empty every mirror's endpoints.
fn gateway_addresses(
    resolved: Result<Vec<IpAddr>, String>,
    known: &mut Vec<IpAddr>,
) -> (Vec<IpAddr>, Option<String>) {
    match resolved {
        Ok(a) => {
            known.clone_from(&a);
            (a, None)
        }
        Err(e) if known.is_empty() => (Vec::new(), Some(e)),
        Err(e) => (
            known.clone(),
            Some(format!("{e}; the mirrors keep the addresses it last resolved to")),
        ),
    }
}

/// Resolves gateway addresses: IPs as they are, names through the system resolver.
pub async fn resolve(addresses: &[String], port: u16) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for a in addresses {
        if let Ok(ip) = a.parse::<IpAddr>() {
            out.push(ip);
            continue;
        }
        match tokio::net::lookup_host((a.as_str(), port)).await {
            Ok(found) => out.extend(found.map(|s| s.ip())),
            Err(e) => problems.push(format!("gateway address {a:?} does not resolve: {e}")),
        }
    }
    if out.is_empty() && !problems.is_empty() {
        return Err(problems.join("; "));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn next_of<T>(s: &mut Option<BoxStream<'static, T>>) -> Option<T> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Local watches: namespaces, services and slices, each until its first list.
struct LocalWatches {
    namespaces: Option<BoxStream<'static, Result<WatchEvent<Namespace>, StoreError>>>,
    services: Option<BoxStream<'static, Result<WatchEvent<Service>, StoreError>>>,
    slices: Option<BoxStream<'static, Result<WatchEvent<EndpointSlice>, StoreError>>>,
    synced: [bool; 3],
}

fn apply_local<K: Kind>(view: &mut LocalView, ev: WatchEvent<K>, kind: KindId) {
    match ev {
        WatchEvent::Restarted(all) => {
            match kind {
                KindId::Namespace => view.namespaces.clear(),
                KindId::Service => view.services.clear(),
                _ => view.slices.clear(),
            }
            for o in all {
                reconcile::fold(view, o.into_object(), false);
            }
        }
        WatchEvent::Applied(o) => reconcile::fold(view, o.into_object(), false),
        WatchEvent::Deleted(o) => reconcile::fold(view, o.into_object(), true),
    }
}

/// Whether `l` is the Link `link` was read from.
fn is_link(l: &Link, link: &LinkConfig) -> bool {
    l.metadata.namespace.as_deref() == Some(link.namespace.as_str())
        && l.metadata.name.as_deref() == Some(link.name.as_str())
}

fn pod_key(p: &Pod) -> NsName {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

fn key_of(s: &Service) -> NsName {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

/// Keeps `link`'s mirrors in `local` in step with `remote` until `shutdown`.
pub async fn run_link<R: Store, L: Store>(
    link: LinkConfig,
    opts: MirrorOptions,
    remote: R,
    local: L,
    mut health: watch::Receiver<GatewayHealth>,
    report: watch::Sender<LinkReport>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut remote_services: BTreeMap<NsName, Service> = BTreeMap::new();
    let mut synced = false;
    let mut connected = false;
    let mut remote_watch = Some(remote.watch::<Service>());
    // Pods only matter with a proxy entry: without one, no watch.
    let wants_pods = opts.entry_for(&link.target_cluster).is_some();
    let mut remote_pods: BTreeMap<NsName, Pod> = BTreeMap::new();
    let mut pod_watch = wants_pods.then(|| remote.watch::<Pod>());
    let mut retry = opts.retry;
    let reconnect = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(reconnect);
    let mut waiting = false;
    // The Pod watch fails and comes back on its own, without touching the Services'
    // readiness.
    let pod_reconnect = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(pod_reconnect);
    let mut pod_waiting = false;
    let mut lw = LocalWatches {
        namespaces: Some(local.watch::<Namespace>()),
        services: Some(local.watch::<Service>()),
        slices: Some(local.watch::<EndpointSlice>()),
        synced: [false; 3],
    };
    let mut view = LocalView::default();
    let mut dirty = false;
    let mut last_error: Option<String> = None;
    // The gateway's addresses as last resolved, kept while its name does not resolve.
    let mut gateway_ips: Vec<IpAddr> = Vec::new();
    let mut written: Option<LinkStatus> = None;
    // The Link itself: another writer of its status (the federation task) that read it
    // before this task's last write puts the older `mirrorServices` back; this task then
    // writes its part again instead of trusting what it wrote last.
    let mut own_link = Some(local.watch::<Link>());
    report.send_modify(|r| {
        r.link = format!("{}/{}", link.namespace, link.name);
        r.cluster = link.target_cluster.clone();
        r.through_gateway = wants_pods;
    });
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            ev = next_of(&mut remote_watch) => {
                match ev {
                    Some(Ok(WatchEvent::Restarted(all))) => {
                        remote_services = all.into_iter().map(|s| (key_of(&s), s)).collect();
                        synced = true;
                        connected = true;
                        retry = opts.retry;
                        last_error = None;
                    }
                    Some(Ok(WatchEvent::Applied(s))) => {
                        connected = true;
                        remote_services.insert(key_of(&s), s);
                    }
                    Some(Ok(WatchEvent::Deleted(s))) => {
                        connected = true;
                        remote_services.remove(&key_of(&s));
                    }
                    // A failed watch is dropped and opened again: a new watch starts with
                    // the whole current set, the only event that proves the mirrors are in
                    // step again (a watch may go on after an error without one, and
                    // nothing else would make them ready while nothing changes remotely).
                    Some(Err(_)) | None => {
                        if let Some(Err(e)) = ev {
                            tracing::warn!(cluster = %link.target_cluster, error = %e, "target cluster watch failed; re-watching");
                            last_error = Some(format!("target cluster {}: {e}", link.target_cluster));
                        } else {
                            tracing::warn!(cluster = %link.target_cluster, "target cluster watch ended; re-watching");
                            last_error.get_or_insert_with(|| format!("target cluster {} went away; reconnecting", link.target_cluster));
                        }
                        connected = false;
                        remote_watch = None;
                        reconnect.as_mut().reset(tokio::time::Instant::now() + retry);
                        retry = (retry * 2).min(MAX_RETRY);
                        waiting = true;
                    }
                }
                dirty = true;
            }
            () = &mut reconnect, if waiting => {
                waiting = false;
                remote_watch = Some(remote.watch::<Service>());
            }
            () = &mut pod_reconnect, if pod_waiting => {
                pod_waiting = false;
                pod_watch = Some(remote.watch::<Pod>());
            }
            ev = next_of(&mut pod_watch) => {
                match ev {
                    Some(Ok(WatchEvent::Restarted(all))) => {
                        remote_pods = all.into_iter().map(|p| (pod_key(&p), p)).collect();
                    }
                    Some(Ok(WatchEvent::Applied(p))) => { remote_pods.insert(pod_key(&p), p); }
                    Some(Ok(WatchEvent::Deleted(p))) => { remote_pods.remove(&pod_key(&p)); }
                    // Dropped and opened again after a pause, as the Services' watch is
                    // (the pods known so far stay until the new watch's first list).
                    Some(Err(_)) | None => {
                        if let Some(Err(e)) = ev {
                            tracing::debug!(cluster = %link.target_cluster, error = %e, "target cluster pod watch failed; re-watching");
                        }
                        pod_watch = None;
                        pod_reconnect.as_mut().reset(tokio::time::Instant::now() + retry);
                        pod_waiting = true;
                    }
                }
                dirty = true;
            }
            ev = next_of(&mut lw.namespaces) => {
                match ev {
                    Some(Ok(e)) => { lw.synced[0] |= matches!(e, WatchEvent::Restarted(_)); apply_local(&mut view, e, KindId::Namespace) }
                    Some(Err(e)) => last_error = Some(format!("local cluster: {e}")),
                    None => lw.namespaces = Some(local.watch::<Namespace>()),
                }
                dirty = true;
            }
            ev = next_of(&mut lw.services) => {
                match ev {
                    Some(Ok(e)) => { lw.synced[1] |= matches!(e, WatchEvent::Restarted(_)); apply_local(&mut view, e, KindId::Service) }
                    Some(Err(e)) => last_error = Some(format!("local cluster: {e}")),
                    None => lw.services = Some(local.watch::<Service>()),
                }
                dirty = true;
            }
            ev = next_of(&mut lw.slices) => {
                match ev {
                    Some(Ok(e)) => { lw.synced[2] |= matches!(e, WatchEvent::Restarted(_)); apply_local(&mut view, e, KindId::EndpointSlice) }
                    Some(Err(e)) => last_error = Some(format!("local cluster: {e}")),
                    None => lw.slices = Some(local.watch::<EndpointSlice>()),
                }
                dirty = true;
            }
            ev = next_of(&mut own_link) => {
                let stored = match ev {
                    Some(Ok(WatchEvent::Restarted(all))) => all.into_iter().find(|l| is_link(l, &link)),
                    Some(Ok(WatchEvent::Applied(l))) if is_link(&l, &link) => Some(l),
                    Some(Ok(_)) => None,
                    Some(Err(e)) => {
                        tracing::debug!(link = %link.name, error = %e, "watch of the Link failed");
                        None
                    }
                    None => {
                        own_link = Some(local.watch::<Link>());
                        None
                    }
                };
                if let (Some(stored), Some(last)) = (stored, written.as_ref())
                    && stored.status.as_ref().and_then(|s| s.mirror_services.as_ref()) != last.mirror_services.as_ref()
                {
                    written = None;
                    dirty = true;
                }
            }
            changed = health.changed() => {
                if changed.is_err() {
                    // The probe task is gone (shutting down): keep the last state.
                    let last = health.borrow().clone();
                    health = watch::channel(last).1;
                }
                dirty = true;
            }
            () = std::future::ready(()), if dirty => {
                dirty = false;
                if !synced || lw.synced.contains(&false) {
                    continue;
                }
                let alive = health.borrow().alive;
                let workloads: BTreeMap<NsName, RemoteWorkload> = if wants_pods {
                    remote_services
                        .iter()
                        .filter_map(|(k, s)| Some((k.clone(), reconcile::remote_workload(&link, s, remote_pods.values())?)))
                        .collect()
                } else {
                    BTreeMap::new()
                };
                let error = reconcile_once(&link, &opts, &remote_services, &workloads, &local, &mut view, alive && connected, &report, &mut written, &mut gateway_ips).await;
                let error = error.or_else(|| last_error.clone());
                report.send_modify(|r| {
                    r.gateway = health.borrow().clone();
                    r.remote_connected = connected;
                    r.synced = synced;
                    r.error = error;
                });
            }
        }
    }
}

/// Plans and carries out one round; returns the first error.
#[allow(clippy::too_many_arguments)]
async fn reconcile_once<L: Store>(
    link: &LinkConfig,
    opts: &MirrorOptions,
    remote: &BTreeMap<NsName, Service>,
    workloads: &BTreeMap<NsName, RemoteWorkload>,
    local: &L,
    view: &mut LocalView,
    ready: bool,
    report: &watch::Sender<LinkReport>,
    written: &mut Option<LinkStatus>,
    known: &mut Vec<IpAddr>,
) -> Option<String> {
    let resolved = resolve(&link.gateway_addresses, link.gateway_port).await;
    let (addresses, problem) = gateway_addresses(resolved, known);
    let mut error = problem.map(|e| format!("link {}/{}: {e}", link.namespace, link.name));
    let gateway = Gateway {
        addresses,
        port: link.gateway_port,
        ready,
        entry: opts.entry_for(&link.target_cluster),
    };
    opts.federation.publish(federated::LinkMembers {
        link: link.clone(),
        services: federated::link_members(link, remote.values()),
        workloads: workloads.clone(),
        gateway: gateway.clone(),
    });
    let plan = reconcile::plan(
        link,
        remote.values(),
        workloads,
        view,
        &gateway,
        opts.service_range.as_ref(),
    );
    if !plan.apply.is_empty() {
        match local.apply(plan.apply.clone()).await {
            Ok(stored) => stored.into_iter().for_each(|o| reconcile::fold(view, o, false)),
            Err(_) => {
                // One bad object (a namespace deleted meanwhile, say) must not hold back
                // the others: retry them one by one and report what failed.
                for o in plan.apply.clone() {
                    let key = o.key();
                    match local.apply(vec![o]).await {
                        Ok(stored) => stored.into_iter().for_each(|o| reconcile::fold(view, o, false)),
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "cannot write mirror");
                            error.get_or_insert(format!("cannot write {key} in the local cluster: {e}"));
                        }
                    }
                }
            }
        }
    }
    // Deletes go out DELETES_IN_FLIGHT at a time (one request each over a cluster API,
    // so a thousand unexported Services would otherwise wait on each other's round
    // trips); every slice before any Service, as the plan orders them.
    let (slices, services): (Vec<ObjectKey>, Vec<ObjectKey>) = plan
        .delete
        .iter()
        .cloned()
        .partition(|k| k.kind != KindId::Service);
    for batch in [slices, services] {
        let mut pending = batch.into_iter();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            while in_flight.len() < DELETES_IN_FLIGHT {
                let Some(key) = pending.next() else { break };
                in_flight.push(delete_one(local, key));
            }
            let Some((key, result)) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(Some(o)) => reconcile::fold(view, o, true),
                Ok(None) => {}
                Err(e) => {
                    error.get_or_insert(format!("cannot delete {key} in the local cluster: {e}"));
                }
            }
        }
    }
    if let Err(e) = write_status(link, &plan, local, written).await {
        error.get_or_insert(e);
    }
    report.send_modify(|r| {
        r.mirrors = plan
            .mirrors
            .iter()
            .map(|((ns, name), mirror, mode)| MirrorEntry {
                remote: format!("{ns}/{name}"),
                mirror: mirror.clone(),
                mode: match mode {
                    Mode::Gateway => "gateway",
                    Mode::RemoteDiscovery => "remote-discovery",
                },
            })
            .collect();
        r.skipped = plan
            .skipped
            .iter()
            .map(|s| SkippedEntry {
                remote: format!("{}/{}", s.remote.0, s.remote.1),
                reason: s.reason.reason(),
                message: s.reason.message(&s.remote, &s.mirror),
            })
            .collect();
    });
    error
}

async fn delete_one<L: Store>(
    local: &L,
    key: ObjectKey,
) -> (ObjectKey, Result<Option<strait_api::Object>, StoreError>) {
    let result = local.delete(&key).await;
    (key, result)
}

/// Writes the Link's status after `plan` when it differs from what was last written
/// (`written`, which starts empty, so the first round compares with the stored status).
async fn write_status<L: Store>(
    link: &LinkConfig,
    plan: &reconcile::Plan,
    local: &L,
    written: &mut Option<LinkStatus>,
) -> Result<(), String> {
    let now = now_rfc3339;
    if let Some(last) = written.as_ref()
        && reconcile::link_status(plan, Some(last), &now()) == *last
    {
        return Ok(());
    }
    let what = || format!("Link {}/{}", link.namespace, link.name);
    let current = local
        .get::<Link>(&link.namespace, &link.name)
        .await
        .map_err(|e| format!("cannot read {} to write its status: {e}", what()))?;
    // A Link run from its config alone (no object to report on), or deleted meanwhile.
    let Some(mut current) = current else { return Ok(()) };
    let next = reconcile::link_status(plan, current.status.as_ref(), &now());
    if current.status.as_ref() != Some(&next) {
        current.status = Some(next.clone());
        local
            .apply_status(current.into_object())
            .await
            .map_err(|e| format!("cannot write the status of {}: {e}", what()))?;
    }
    *written = Some(next);
    Ok(())
}

/// Now in RFC 3339 to the second, as Kubernetes writes times.
fn now_rfc3339() -> String {
    use k8s_openapi::jiff::Timestamp;
    Timestamp::from_second(Timestamp::now().as_second())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Writes each Link's `status.federatedServices` (its members' outcomes, see
/// [`federated::link_status`]) where the Link as last seen (`seen`) differs; the Link is
/// read again just before, so the `mirrorServices` its link task wrote stay as they are.
async fn write_federated_status<L: Store>(
    local: &L,
    links: &[(String, String, String)],
    outcomes: &[federated::MemberOutcome],
    seen: &mut BTreeMap<NsName, Link>,
) {
    let now = now_rfc3339();
    for (ns, name, cluster) in links {
        let key = (ns.clone(), name.clone());
        let Some(last) = seen.get(&key) else { continue };
        let next = federated::link_status(cluster, outcomes, last.status.as_ref(), &now);
        let have = last.status.as_ref().and_then(|s| s.federated_services.clone());
        if have.unwrap_or_default() == next {
            continue;
        }
        let mut current = match local.get::<Link>(ns, name).await {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(link = %format!("{ns}/{name}"), error = %e, "cannot read the Link to write its federated services");
                continue;
            }
        };
        let mut status = current.status.take().unwrap_or_default();
        status.federated_services = Some(next);
        current.status = Some(status);
        match local.apply_status(current.clone().into_object()).await {
            Ok(()) => {
                seen.insert(key, current);
            }
            Err(e) => {
                tracing::warn!(link = %format!("{ns}/{name}"), error = %e, "cannot write the Link's federated services")
            }
        }
    }
}

/// Deletes every mirror object in `local` whose cluster no Link names: the mirrors of a
/// Link deleted (or renamed to another cluster) while no mirror ran, or whose removal
/// failed before. Returns what went.
pub async fn remove_orphans<L: Store>(
    local: &L,
    linked: &std::collections::BTreeSet<String>,
) -> Result<Vec<ObjectKey>, StoreError> {
    remove_mirrors_where(local, |m| {
        reconcile::mirror_cluster(m).is_some_and(|c| !linked.contains(c))
    })
    .await
}

async fn remove_mirrors_where<L: Store>(
    local: &L,
    doomed: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool,
) -> Result<Vec<ObjectKey>, StoreError> {
    let mut keys: Vec<ObjectKey> = local
        .list::<EndpointSlice>(None)
        .await?
        .iter()
        .filter(|s| doomed(&s.metadata))
        .map(|s| {
            ObjectKey::new(
                KindId::EndpointSlice,
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    keys.extend(
        local
            .list::<Service>(None)
            .await?
            .iter()
            .filter(|s| doomed(&s.metadata))
            .map(|s| {
                ObjectKey::new(
                    KindId::Service,
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.metadata.name.clone().unwrap_or_default(),
                )
            }),
    );
    for k in &keys {
        local.delete(k).await?;
    }
    Ok(keys)
}

/// How long after a sweep of orphaned mirrors the mirror sweeps once more (and how often
/// it checks its Links).
const SWEEP_AGAIN: Duration = Duration::from_secs(5);

/// How long the federation task waits for every running link's first complete list
/// before it plans without the links that have none (their members then join late).
pub const FEDERATION_HOLD: Duration = Duration::from_secs(10);

/// Keeps the local cluster's federated Services (see [`federated`]) in step with the
/// local member Services and every link's members, until `shutdown`. Nothing is planned
/// before the local lists and the set of Links are known and each running link has
/// listed its target once (or [`FEDERATION_HOLD`] passed), so a restarting mirror never
/// removes a federated member it merely has not heard from yet.
pub async fn run_federation<L: Store>(
    local: L,
    federation: Federation,
    range: Option<ServiceRange>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut state = federation.subscribe();
    let mut lw = LocalWatches {
        namespaces: Some(local.watch::<Namespace>()),
        services: Some(local.watch::<Service>()),
        slices: Some(local.watch::<EndpointSlice>()),
        synced: [false; 3],
    };
    let mut view = LocalView::default();
    // The Links, to report each one's members in its status.
    let mut link_watch = Some(local.watch::<Link>());
    let mut links_seen: BTreeMap<NsName, Link> = BTreeMap::new();
    let hold = tokio::time::sleep(FEDERATION_HOLD);
    tokio::pin!(hold);
    let mut held = true;
    let mut dirty = false;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            ev = next_of(&mut lw.namespaces) => {
                match ev {
                    Some(Ok(e)) => { lw.synced[0] |= matches!(e, WatchEvent::Restarted(_)); apply_local(&mut view, e, KindId::Namespace) }
                    Some(Err(e)) => tracing::warn!(error = %e, "federation: local namespace watch failed"),
                    None => lw.namespaces = Some(local.watch::<Namespace>()),
                }
                dirty = true;
            }
            ev = next_of(&mut lw.services) => {
                match ev {
                    Some(Ok(e)) => { lw.synced[1] |= matches!(e, WatchEvent::Restarted(_)); apply_local(&mut view, e, KindId::Service) }
                    Some(Err(e)) => tracing::warn!(error = %e, "federation: local service watch failed"),
                    None => lw.services = Some(local.watch::<Service>()),
                }
                dirty = true;
            }
            ev = next_of(&mut lw.slices) => {
                match ev {
                    Some(Ok(e)) => { lw.synced[2] |= matches!(e, WatchEvent::Restarted(_)); apply_local(&mut view, e, KindId::EndpointSlice) }
                    Some(Err(e)) => tracing::warn!(error = %e, "federation: local slice watch failed"),
                    None => lw.slices = Some(local.watch::<EndpointSlice>()),
                }
                dirty = true;
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
            }
            ev = next_of(&mut link_watch) => {
                let key = |l: &Link| (l.metadata.namespace.clone().unwrap_or_default(), l.metadata.name.clone().unwrap_or_default());
                match ev {
                    Some(Ok(WatchEvent::Restarted(all))) => links_seen = all.into_iter().map(|l| (key(&l), l)).collect(),
                    Some(Ok(WatchEvent::Applied(l))) => { links_seen.insert(key(&l), l); }
                    Some(Ok(WatchEvent::Deleted(l))) => { links_seen.remove(&key(&l)); }
                    Some(Err(e)) => tracing::warn!(error = %e, "federation: local Link watch failed"),
                    None => link_watch = Some(local.watch::<Link>()),
                }
                dirty = true;
            }
            () = &mut hold, if held => {
                held = false;
                dirty = true;
            }
            () = std::future::ready(()), if dirty => {
                dirty = false;
                if lw.synced.contains(&false) {
                    continue;
                }
                let (links, reporting): (Vec<federated::LinkMembers>, Vec<(String, String, String)>) = {
                    let s = state.borrow_and_update();
                    let waiting = !s.links_known || s.links.values().any(Option::is_none);
                    if waiting && held {
                        continue;
                    }
                    // One entry per cluster (two Links to one cluster name the same members).
                    let mut by_cluster = BTreeMap::new();
                    for m in s.links.values().flatten() {
                        by_cluster.entry(m.link.target_cluster.clone()).or_insert_with(|| m.clone());
                    }
                    // Every Link whose members are known reports them.
                    let reporting = s
                        .links
                        .values()
                        .flatten()
                        .map(|m| (m.link.namespace.clone(), m.link.name.clone(), m.link.target_cluster.clone()))
                        .collect();
                    (by_cluster.into_values().collect(), reporting)
                };
                let (plan, outcomes) = federated::plan_members(&links, &view, range.as_ref());
                for o in plan.apply {
                    let key = o.key();
                    match local.apply(vec![o]).await {
                        Ok(stored) => stored.into_iter().for_each(|o| reconcile::fold(&mut view, o, false)),
                        Err(e) => tracing::warn!(%key, error = %e, "cannot write federated service"),
                    }
                }
                for key in plan.delete {
                    match local.delete(&key).await {
                        Ok(Some(o)) => reconcile::fold(&mut view, o, true),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(%key, error = %e, "cannot delete federated object"),
                    }
                }
                for s in plan.skipped {
                    tracing::debug!(service = %format!("{}/{}", s.remote.0, s.remote.1), reason = s.reason.reason(), "no federated service");
                }
                write_federated_status(&local, &reporting, &outcomes, &mut links_seen).await;
            }
        }
    }
}

/// Builds the store of a link's target cluster: through the local gateway's proxy entry
/// for the link when there is one ([`crate::catalog::GatewayStore`]; no Secret is
/// needed), otherwise from its credentials Secret.
pub trait Connect<R>: Send + Sync + 'static {
    /// The target cluster's store, or what is wrong with the credentials. `secret` is
    /// `None` only for links read through a gateway entry.
    fn connect(&self, link: LinkConfig, secret: Option<Secret>) -> BoxFuture<'static, Result<R, String>>;
}

impl<R, F, Fut> Connect<R> for F
where
    F: Fn(LinkConfig, Option<Secret>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, String>> + Send + 'static,
{
    fn connect(&self, link: LinkConfig, secret: Option<Secret>) -> BoxFuture<'static, Result<R, String>> {
        Box::pin(self(link, secret))
    }
}

/// Starts one link: its gateway probe and its mirror task.
fn start_link<R: Store, L: Store>(
    cfg: LinkConfig,
    opts: MirrorOptions,
    remote: R,
    local: L,
    reports: Reports,
) -> tokio::task::JoinHandle<()> {
    let key = format!("{}/{}", cfg.namespace, cfg.name);
    let mut opts = opts;
    opts.federation = opts.federation.for_link(&key);
    tokio::spawn(async move {
        let (health_tx, health_rx) = watch::channel(GatewayHealth::default());
        let (report_tx, mut report_rx) = watch::channel(LinkReport::default());
        let probe_cfg = cfg.probe.clone();
        let (addresses, port) = (cfg.gateway_addresses.clone(), cfg.probe.port);
        let probe = probe::run(
            probe_cfg,
            move || {
                let addresses = addresses.clone();
                async move {
                    let ips = resolve(&addresses, port).await?;
                    ips.first()
                        .map(|ip| SocketAddr::new(*ip, port))
                        .ok_or_else(|| "the link has no gateway address".to_string())
                }
            },
            health_tx,
            std::future::pending(),
        );
        let publish = async {
            while report_rx.changed().await.is_ok() {
                let r = report_rx.borrow_and_update().clone();
                reports.write().expect("reports lock").insert(key.clone(), r);
            }
        };
        let mirror = run_link(
            cfg,
            opts,
            remote,
            local,
            health_rx,
            report_tx,
            std::future::pending(),
        );
        tokio::join!(probe, mirror, publish);
    })
}

/// Runs a mirror for every Link in `local` until `shutdown`: reads each Link and its
/// credentials Secret, connects to the target through `connect`, and restarts the link
/// when either changes. A deleted Link's mirrors are deleted. A Link that cannot start
/// (bad field, missing Secret, bad credentials) is reported and retried.
pub async fn run_mirror<L: Store, R: Store>(
    local: L,
    connect: impl Connect<R>,
    opts: MirrorOptions,
    reports: Reports,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let federation = tokio::spawn(run_federation(
        local.clone(),
        opts.federation.clone(),
        opts.service_range,
        std::future::pending(),
    ))
    .abort_handle();
    let _federation = AbortOnDrop(federation);
    let mut links: BTreeMap<String, Link> = BTreeMap::new();
    let mut running: BTreeMap<String, LinkHandle> = BTreeMap::new();
    let mut watch = local.watch::<Link>();
    let mut secrets = local.watch::<Secret>();
    let mut synced = false;
    // Mirrors of clusters no Link names are removed once the Links are listed, after a
    // Link goes or names another cluster, and again at every wake-up until that succeeds;
    // then once more a tick later, for a write of a stopped link task that was still on
    // its way (a store write already under way completes even when its task stops).
    let mut sweep_now = false;
    let mut sweep_again: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(SWEEP_AGAIN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            ev = watch.next() => {
                let Some(ev) = ev else {
                    watch = local.watch::<Link>();
                    continue;
                };
                let gone: Vec<Link> = match ev {
                    Ok(WatchEvent::Restarted(all)) => {
                        synced = true;
                        sweep_now = true;
                        opts.federation.links_known();
                        let new: BTreeMap<String, Link> = all.into_iter().map(|l| (link_key(&l), l)).collect();
                        // A Link that names another cluster since the last list (changed
                        // while the watch was away): as for an update, below.
                        for (key, l) in &new {
                            if links.get(key).is_some_and(|b| b.spec.target_cluster_name != l.spec.target_cluster_name) {
                                running.remove(key);
                                opts.federation.forget(key);
                            }
                        }
                        let gone = links.iter().filter(|(k, _)| !new.contains_key(*k)).map(|(_, l)| l.clone()).collect();
                        links = new;
                        gone
                    }
                    Ok(WatchEvent::Applied(l)) => {
                        let key = link_key(&l);
                        let before = links.insert(key.clone(), l.clone());
                        if before.is_some_and(|b| b.spec.target_cluster_name != l.spec.target_cluster_name) {
                            // Its task must not put back what the sweep removes.
                            running.remove(&key);
                            opts.federation.forget(&key);
                            sweep_now = true;
                        }
                        Vec::new()
                    }
                    Ok(WatchEvent::Deleted(l)) => { links.remove(&link_key(&l)); sweep_now = true; vec![l] }
                    Err(e) => { tracing::warn!(error = %e, "watch of Links failed"); Vec::new() }
                };
                for l in gone {
                    let key = link_key(&l);
                    running.remove(&key);
                    opts.federation.forget(&key);
                    reports.write().expect("reports lock").remove(&key);
                }
            }
            ev = secrets.next() => {
                if ev.is_none() {
                    secrets = local.watch::<Secret>();
                }
            }
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        if synced && (sweep_now || sweep_again.is_some_and(|t| now >= t)) {
            // Another Link may mirror the same cluster: its mirrors stay.
            let linked = links
                .values()
                .filter_map(|l| l.spec.target_cluster_name.clone())
                .collect();
            match remove_orphans(&local, &linked).await {
                Ok(keys) => {
                    sweep_again = sweep_now.then(|| now + SWEEP_AGAIN);
                    sweep_now = false;
                    if !keys.is_empty() {
                        tracing::info!(
                            removed = keys.len(),
                            "removed the mirrors of clusters no Link names"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove the mirrors of clusters no Link names; retrying")
                }
            }
        }
        if synced {
            ensure_links(&links, &mut running, &local, &connect, &opts, &reports).await;
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A Link's `namespace/name`, how the mirror (and the gateway) key Links.
pub fn link_key(l: &Link) -> String {
    format!(
        "{}/{}",
        l.metadata.namespace.as_deref().unwrap_or_default(),
        l.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Starts links that are not running, restarts those whose spec or Secret changed.
async fn ensure_links<L: Store, R: Store>(
    links: &BTreeMap<String, Link>,
    running: &mut BTreeMap<String, LinkHandle>,
    local: &L,
    connect: &impl Connect<R>,
    opts: &MirrorOptions,
    reports: &Reports,
) {
    for (key, l) in links {
        let fail = |error: String| {
            tracing::warn!(link = %key, %error, "link not mirrored");
            let mut r = reports.write().expect("reports lock");
            let e = r.entry(key.clone()).or_default();
            e.link = key.clone();
            e.cluster = l.spec.target_cluster_name.clone().unwrap_or_default();
            e.error = Some(error);
        };
        let cfg = match LinkConfig::from_link(l) {
            Ok(c) => c,
            Err(e) => {
                running.remove(key);
                fail(format!("{e}"));
                continue;
            }
        };
        // A link with a gateway entry is read through the gateway: its Secret is optional.
        let through_gateway = opts.entry_for(&cfg.target_cluster).is_some();
        let secret = match local.get::<Secret>(&cfg.namespace, &cfg.credentials_secret).await {
            Ok(Some(s)) => Some(s),
            Ok(None) if through_gateway => None,
            Ok(None) => {
                running.remove(key);
                fail(format!(
                    "link {key}: credentials Secret {}/{} not found; apply the whole output of `strait multicluster link --cluster-name {}` (run against the target cluster)",
                    cfg.namespace, cfg.credentials_secret, cfg.target_cluster
                ));
                continue;
            }
            Err(e) => {
                fail(format!("link {key}: cannot read its credentials Secret: {e}"));
                continue;
            }
        };
        let secret_version = secret.as_ref().and_then(|s| s.metadata.resource_version.clone());
        if let Some(h) = running.get(key)
            && h.spec == l.spec
            && h.secret_version == secret_version
            && !h.task.is_finished()
        {
            continue;
        }
        running.remove(key);
        let remote = match connect.connect(cfg.clone(), secret).await {
            Ok(r) => r,
            Err(e) if through_gateway => {
                fail(format!("link {key}: {e}"));
                continue;
            }
            Err(e) => {
                fail(format!(
                    "link {key}: credentials Secret {}/{}: {e}",
                    cfg.namespace, cfg.credentials_secret
                ));
                continue;
            }
        };
        tracing::info!(link = %key, cluster = %cfg.target_cluster, through_gateway, "mirroring");
        let task = start_link(cfg, opts.clone(), remote, local.clone(), reports.clone());
        running.insert(
            key.clone(),
            LinkHandle {
                task,
                spec: l.spec.clone(),
                secret_version,
            },
        );
    }
}

#[cfg(test)]
mod tests;
