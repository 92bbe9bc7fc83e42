//! The route index: one writer applies store watch events for Services, HTTPRoutes (both
//! groups), GRPCRoutes and TrafficSplits to a [`Snapshot`]; outbound policy streams read it.
//!
//! Invariants, as in the discovery index: every change to a namespace bumps that
//! namespace's generation *after* the snapshot is updated, and a stream subscribes to a
//! namespace before it evaluates against it, so it never misses the last change (it may
//! skip intermediate ones). Readers hold the read lock only while translating; nothing
//! awaits while holding it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use strait_api::mesh::gateway_api::{GrpcRoute, HttpRoute as GatewayHttpRoute};
use strait_api::mesh::policy::HttpRoute as PolicyHttpRoute;
use strait_api::mesh::split::TrafficSplit;
use strait_api::{Kind, Store, StoreError, WatchEvent};
use tokio::sync::watch;

use super::translate::Snapshot;
use crate::discovery::model::NsName;
use crate::streams::Generations;

/// The index. Cheap to share as `Arc<RouteIndex>`.
pub struct RouteIndex {
    state: RwLock<Snapshot>,
    generations: Generations,
    /// Whether the store's first state of every watched kind is in (see [`run`]).
    pub synced: crate::streams::Synced,
}

impl Default for RouteIndex {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            generations: Generations::default(),
            // Services, the two HTTPRoute kinds, GRPCRoutes and TrafficSplits (see [`run`]).
            synced: crate::streams::Synced::new(5),
        }
    }
}

impl RouteIndex {
    /// An empty index.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A receiver that changes whenever anything in `namespace` changes.
    pub fn subscribe(&self, namespace: &str) -> watch::Receiver<u64> {
        self.generations.subscribe(namespace)
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        self.generations.close();
    }

    /// Runs `f` over the current snapshot.
    pub fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self, f: impl FnOnce(&mut Snapshot) -> Vec<String>) {
        let touched = {
            let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
            f(&mut s)
        };
        self.generations.bump(touched);
    }

    /// Applies one Service event.
    pub fn on_service(&self, ev: WatchEvent<Service>) {
        self.write(|s| replace_all(&mut s.services, ev, |o| &o.metadata));
    }

    /// Applies one `policy.linkerd.io` HTTPRoute event.
    pub fn on_policy_http_route(&self, ev: WatchEvent<PolicyHttpRoute>) {
        self.write(|s| replace_all(&mut s.policy_http_routes, ev, |o| &o.metadata));
    }

    /// Applies one `gateway.networking.k8s.io` HTTPRoute event.
    pub fn on_gateway_http_route(&self, ev: WatchEvent<GatewayHttpRoute>) {
        self.write(|s| replace_all(&mut s.gateway_http_routes, ev, |o| &o.metadata));
    }

    /// Applies one GRPCRoute event.
    pub fn on_grpc_route(&self, ev: WatchEvent<GrpcRoute>) {
        self.write(|s| replace_all(&mut s.grpc_routes, ev, |o| &o.metadata));
    }

    /// Applies one TrafficSplit event.
    pub fn on_split(&self, ev: WatchEvent<TrafficSplit>) {
        self.write(|s| replace_all(&mut s.splits, ev, |o| &o.metadata));
    }
}

/// Applies an event to a map keyed by (namespace, name); returns the namespaces touched.
fn replace_all<K: Kind + PartialEq>(
    map: &mut BTreeMap<NsName, K>,
    ev: WatchEvent<K>,
    meta: impl Fn(&K) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<String> {
    let key = |o: &K| {
        let m = meta(o);
        Some((m.namespace.clone()?, m.name.clone()?))
    };
    let mut touched = Vec::new();
    match ev {
        WatchEvent::Restarted(items) => {
            touched.extend(map.keys().map(|k| k.0.clone()));
            map.clear();
            for item in items {
                if let Some(k) = key(&item) {
                    touched.push(k.0.clone());
                    map.insert(k, item);
                }
            }
        }
        WatchEvent::Applied(item) => {
            if let Some(k) = key(&item)
                && map.get(&k) != Some(&item)
            {
                touched.push(k.0.clone());
                map.insert(k, item);
            }
        }
        WatchEvent::Deleted(item) => {
            if let Some(k) = key(&item)
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

/// Feeds the index from `store` until every watch ends; returns why.
pub async fn run<S: Store>(index: Arc<RouteIndex>, store: S) -> StoreError {
    let mut services = store.watch::<Service>();
    let mut policy_routes = store.watch::<PolicyHttpRoute>();
    let mut gateway_routes = store.watch::<GatewayHttpRoute>();
    let mut grpc_routes = store.watch::<GrpcRoute>();
    let mut splits = store.watch::<TrafficSplit>();
    use crate::streams::completes;
    loop {
        let (kind, restart, result) = tokio::select! {
            Some(ev) = services.next() => (0, completes(&ev), ev.map(|e| index.on_service(e))),
            Some(ev) = policy_routes.next() => (1, completes(&ev), ev.map(|e| index.on_policy_http_route(e))),
            Some(ev) = gateway_routes.next() => (2, completes(&ev), ev.map(|e| index.on_gateway_http_route(e))),
            Some(ev) = grpc_routes.next() => (3, completes(&ev), ev.map(|e| index.on_grpc_route(e))),
            Some(ev) = splits.next() => (4, completes(&ev), ev.map(|e| index.on_split(e))),
            else => return StoreError::Decode { what: "watches".into(), detail: "every watch ended".into() },
        };
        if let Err(e) = result {
            // The kube watcher retries by itself; log and keep going.
            tracing::warn!(error = %e, "outbound route index: watch error");
        }
        if restart {
            index.synced.restarted(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn split(ns: &str, name: &str, service: &str) -> TrafficSplit {
        let mut ts = TrafficSplit::new(
            name,
            strait_api::mesh::split::TrafficSplitSpec {
                service: service.into(),
                backends: vec![],
                matches: None,
            },
        );
        ts.metadata = ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        };
        ts
    }

    #[test]
    fn changes_bump_only_their_namespace_and_only_when_something_changed() {
        let index = RouteIndex::new();
        let mut prod = index.subscribe("production");
        let mut other = index.subscribe("other");
        let cases: Vec<(WatchEvent<TrafficSplit>, bool, bool)> = vec![
            (WatchEvent::Applied(split("production", "a", "web")), true, false),
            // The same object again changes nothing.
            (WatchEvent::Applied(split("production", "a", "web")), false, false),
            (WatchEvent::Applied(split("other", "b", "web")), false, true),
            (WatchEvent::Deleted(split("production", "a", "web")), true, false),
            (WatchEvent::Deleted(split("production", "a", "web")), false, false),
            // A restart touches the namespaces it removes from and adds to.
            (
                WatchEvent::Restarted(vec![split("production", "c", "web")]),
                true,
                true,
            ),
        ];
        for (i, (ev, want_prod, want_other)) in cases.into_iter().enumerate() {
            index.on_split(ev);
            assert_eq!(prod.has_changed().unwrap(), want_prod, "case {i}: production");
            assert_eq!(other.has_changed().unwrap(), want_other, "case {i}: other");
            prod.mark_unchanged();
            other.mark_unchanged();
        }
        let names: Vec<NsName> = index.read(|s| s.splits.keys().cloned().collect());
        assert_eq!(names, [("production".to_string(), "c".to_string())]);
    }
}
