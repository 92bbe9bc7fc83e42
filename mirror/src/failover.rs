//! Cross-cluster failover, as Linkerd's failover operator (linkerd-failover) does it: the
//! weights of a `TrafficSplit` follow the readiness of its backends.
//!
//! A split is managed when it carries the label `failover.linkerd.io/controlled-by:
//! linkerd-failover` (the operator's Helm default) or `app.kubernetes.io/managed-by:
//! linkerd-failover` (its README's), and names its primary backend in the annotation
//! `failover.linkerd.io/primary-service`. Then:
//! - while the primary has a ready endpoint, it gets all the weight (1) and every other
//!   backend 0;
//! - otherwise, if any secondary is ready, the primary gets 0 and the ready secondaries
//!   share the weight equally (1 each);
//! - when nothing is ready, the weights stay as they are and clients fail as they would.
//!
//! Backends are usually mirrors (`myapp-east`), whose endpoints the service mirror marks
//! not ready when their gateway stops answering: a dead gateway fails traffic over to the
//! next cluster, and its return brings traffic back. [`decide`] is the pure rule;
//! [`run_failover`] feeds it a store's TrafficSplits and EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_api::mesh::split::TrafficSplit;
use strait_api::mesh::weight::Weight;
use strait_api::{Kind, Store, WatchEvent};

/// The annotation naming the primary backend.
pub const PRIMARY_SERVICE: &str = "failover.linkerd.io/primary-service";
/// The label the operator's Helm chart selects by.
pub const CONTROLLED_BY: &str = "failover.linkerd.io/controlled-by";
/// The label its README selects by.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value both labels take.
pub const OPERATOR: &str = "linkerd-failover";

/// Whether the operator manages `split`; its primary backend if so.
pub fn primary(split: &TrafficSplit) -> Option<&str> {
    let labels = split.metadata.labels.as_ref()?;
    let managed = [CONTROLLED_BY, MANAGED_BY]
        .iter()
        .any(|l| labels.get(*l).map(String::as_str) == Some(OPERATOR));
    if !managed {
        return None;
    }
    split
        .metadata
        .annotations
        .as_ref()?
        .get(PRIMARY_SERVICE)
        .map(String::as_str)
}

/// The weights `split` should have, when they differ from its current ones.
pub fn decide(split: &TrafficSplit, ready: impl Fn(&str) -> bool) -> Option<Vec<i64>> {
    let primary = primary(split)?;
    let backends = &split.spec.backends;
    let want: Vec<i64> = if ready(primary) {
        backends.iter().map(|b| i64::from(b.service == primary)).collect()
    } else {
        let secondaries: Vec<bool> = backends
            .iter()
            .map(|b| b.service != primary && ready(&b.service))
            .collect();
        if !secondaries.contains(&true) {
            return None;
        }
        secondaries.into_iter().map(i64::from).collect()
    };
    let current: Vec<Option<f64>> = backends.iter().map(|b| b.weight.value()).collect();
    let same = current.iter().zip(&want).all(|(c, w)| *c == Some(*w as f64));
    (!same).then_some(want)
}

/// The ready Services of a namespace, from their EndpointSlices.
#[derive(Default, Debug)]
pub struct Readiness {
    /// (namespace, slice name) → (service, has a ready address).
    slices: BTreeMap<(String, String), (String, bool)>,
}

impl Readiness {
    fn on_slice(&mut self, ev: WatchEvent<EndpointSlice>) {
        let key = |s: &EndpointSlice| {
            (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            )
        };
        let value = |s: &EndpointSlice| {
            let service = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .cloned()
                .unwrap_or_default();
            let ready = s.endpoints.iter().flatten().any(|e| {
                !e.addresses.is_empty() && e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
            });
            (service, ready)
        };
        match ev {
            WatchEvent::Restarted(all) => self.slices = all.iter().map(|s| (key(s), value(s))).collect(),
            WatchEvent::Applied(s) => {
                self.slices.insert(key(&s), value(&s));
            }
            WatchEvent::Deleted(s) => {
                self.slices.remove(&key(&s));
            }
        }
    }

    /// Whether `service` in `namespace` has a ready endpoint.
    pub fn ready(&self, namespace: &str, service: &str) -> bool {
        self.slices
            .iter()
            .any(|((ns, _), (svc, ready))| ns == namespace && svc == service && *ready)
    }
}

fn key(s: &TrafficSplit) -> (String, String) {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

/// Keeps the managed TrafficSplits of `store` following their backends' readiness until
/// `shutdown`; a lost watch is re-opened.
pub async fn run_failover<S: Store>(store: S, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            e = watch_once(&store) => {
                tracing::warn!(error = %e, "failover lost its watch; re-opening it");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            () = &mut shutdown => return,
        }
    }
}

async fn watch_once<S: Store>(store: &S) -> String {
    let mut splits_w = store.watch::<TrafficSplit>();
    let mut slices_w = store.watch::<EndpointSlice>();
    let mut splits: BTreeMap<(String, String), TrafficSplit> = BTreeMap::new();
    let mut ready = Readiness::default();
    loop {
        let changed: BTreeSet<(String, String)> = tokio::select! {
            ev = splits_w.next() => match ev {
                Some(Ok(WatchEvent::Restarted(all))) => {
                    splits = all.into_iter().map(|s| (key(&s), s)).collect();
                    splits.keys().cloned().collect()
                }
                Some(Ok(WatchEvent::Applied(s))) => {
                    let k = key(&s);
                    splits.insert(k.clone(), s);
                    BTreeSet::from([k])
                }
                Some(Ok(WatchEvent::Deleted(s))) => {
                    splits.remove(&key(&s));
                    BTreeSet::new()
                }
                Some(Err(e)) => return e.to_string(),
                None => return "the TrafficSplit watch ended".into(),
            },
            ev = slices_w.next() => match ev {
                Some(Ok(ev)) => {
                    ready.on_slice(ev);
                    splits.keys().cloned().collect()
                }
                Some(Err(e)) => return e.to_string(),
                None => return "the EndpointSlice watch ended".into(),
            },
        };
        for k in changed {
            let Some(split) = splits.get(&k) else { continue };
            let Some(weights) = decide(split, |svc| ready.ready(&k.0, svc)) else {
                continue;
            };
            let mut updated = split.clone();
            for (b, w) in updated.spec.backends.iter_mut().zip(&weights) {
                b.weight = Weight::Int(*w);
            }
            updated.metadata.resource_version = None;
            let summary: Vec<String> = updated
                .spec
                .backends
                .iter()
                .map(|b| format!("{}={}", b.service, b.weight))
                .collect();
            match store.apply(vec![updated.clone().into_object()]).await {
                Ok(_) => {
                    tracing::info!(split = %format!("{}/{}", k.0, k.1), weights = %summary.join(","), "failover: weights changed");
                    splits.insert(k, updated);
                }
                Err(e) => {
                    tracing::warn!(split = %format!("{}/{}", k.0, k.1), error = %e, "failover: cannot update the split")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(labels: &[(&str, &str)], primary: Option<&str>, weights: &[(&str, i64)]) -> TrafficSplit {
        let mut v = serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": "myapp", "namespace": "production", "labels": {}, "annotations": {}},
            "spec": {"service": "myapp", "backends": weights.iter().map(|(s, w)| serde_json::json!({"service": s, "weight": w})).collect::<Vec<_>>()},
        });
        for (k, val) in labels {
            v["metadata"]["labels"][k] = serde_json::json!(val);
        }
        if let Some(p) = primary {
            v["metadata"]["annotations"][PRIMARY_SERVICE] = serde_json::json!(p);
        }
        serde_json::from_value(v).unwrap()
    }

    const MANAGED: &[(&str, &str)] = &[(CONTROLLED_BY, OPERATOR)];

    #[test]
    fn a_ready_primary_takes_all_the_weight() {
        let s = split(
            MANAGED,
            Some("myapp-east"),
            &[("myapp-east", 0), ("myapp-central", 1)],
        );
        assert_eq!(decide(&s, |_| true), Some(vec![1, 0]));
        let settled = split(
            MANAGED,
            Some("myapp-east"),
            &[("myapp-east", 1), ("myapp-central", 0)],
        );
        assert_eq!(decide(&settled, |_| true), None, "no change when already right");
    }

    #[test]
    fn a_dead_primary_fails_over_to_every_ready_secondary_equally() {
        let s = split(
            MANAGED,
            Some("myapp"),
            &[
                ("myapp", 1),
                ("myapp-east", 0),
                ("myapp-central", 0),
                ("myapp-asia", 0),
            ],
        );
        let ready = |svc: &str| svc == "myapp-east" || svc == "myapp-asia";
        assert_eq!(decide(&s, ready), Some(vec![0, 1, 0, 1]));
        // Everything down: weights stay, clients fail as they would.
        assert_eq!(decide(&s, |_| false), None);
    }

    #[test]
    fn only_managed_splits_with_a_primary_are_touched() {
        let unmanaged = split(&[], Some("myapp"), &[("myapp", 0), ("b", 1)]);
        assert_eq!(decide(&unmanaged, |_| true), None);
        let other_operator = split(&[(CONTROLLED_BY, "someone-else")], Some("myapp"), &[("myapp", 0)]);
        assert_eq!(decide(&other_operator, |_| true), None);
        let no_primary = split(MANAGED, None, &[("myapp", 0)]);
        assert_eq!(decide(&no_primary, |_| true), None);
        let readme_label = split(
            &[(MANAGED_BY, OPERATOR)],
            Some("myapp"),
            &[("myapp", 0), ("b", 1)],
        );
        assert_eq!(decide(&readme_label, |_| true), Some(vec![1, 0]));
    }

    #[tokio::test]
    async fn the_operator_follows_endpoint_readiness_in_a_store() {
        use strait_api::store::local::LocalStore;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let ns =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "production"}});
        let slice = |svc: &str, ready: bool| {
            serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{svc}-x"), "namespace": "production", "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["198.18.0.5"], "conditions": {"ready": ready}}],
                "ports": [{"port": 80}]})
        };
        let ts = split(
            MANAGED,
            Some("myapp-east"),
            &[("myapp-east", 1), ("myapp-central", 0)],
        );
        let objs = |vals: Vec<serde_json::Value>| {
            vals.into_iter()
                .map(|v| {
                    let info = strait_api::kinds::lookup(
                        v["apiVersion"].as_str().unwrap(),
                        v["kind"].as_str().unwrap(),
                    )
                    .unwrap();
                    strait_api::Object::from_value(info.id, v).unwrap()
                })
                .collect::<Vec<_>>()
        };
        store
            .apply(objs(vec![
                ns,
                slice("myapp-east", true),
                slice("myapp-central", true),
            ]))
            .await
            .unwrap();
        store.apply(vec![ts.into_object()]).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_failover(store.clone(), async {
            let _ = stopped.await;
        }));
        let weights = |store: LocalStore| async move {
            let s: TrafficSplit = store.get("production", "myapp").await.unwrap().unwrap();
            s.spec
                .backends
                .iter()
                .map(|b| b.weight.value().unwrap() as i64)
                .collect::<Vec<_>>()
        };
        let wait_for = |want: Vec<i64>| {
            let store = store.clone();
            async move {
                // Up to 10 s: the store syncs every write to disk.
                for _ in 0..500 {
                    if weights(store.clone()).await == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!(
                    "weights never became {want:?}: {:?}",
                    weights(store.clone()).await
                );
            }
        };
        // East's gateway dies: its mirror's endpoints become not ready.
        store.apply(objs(vec![slice("myapp-east", false)])).await.unwrap();
        wait_for(vec![0, 1]).await;
        // It comes back.
        store.apply(objs(vec![slice("myapp-east", true)])).await.unwrap();
        wait_for(vec![1, 0]).await;
        let _ = stop.send(());
        task.await.unwrap();
    }
}
