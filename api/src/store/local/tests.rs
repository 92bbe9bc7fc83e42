use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};

use super::*;
use crate::loader::{LoadOptions, load_str};

fn objects(yaml: &str) -> Vec<Object> {
    load_str("test.yaml", yaml, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|l| l.object)
        .collect()
}

const PRODUCTION: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n";

fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: production\nspec:\n  selector:\n    app: {name}\n  ports:\n    - port: {port}\n      targetPort: 8080\n"
    )
}

fn fixed_clock() -> Clock {
    Arc::new(|| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

#[tokio::test]
async fn a_new_store_has_the_kubernetes_namespaces() {
    let store = LocalStore::in_memory();
    let ns: Vec<Namespace> = store.list(None).await.unwrap();
    let names: Vec<_> = ns.iter().map(|n| n.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["default", "kube-public", "kube-system"]);
}

#[tokio::test]
async fn apply_assigns_metadata_and_reapply_is_a_no_op() {
    let store = LocalStore::build(None, fixed_clock()).unwrap();
    store.apply(objects(PRODUCTION)).await.unwrap();
    let first = store.apply(objects(&service("myapp", 80))).await.unwrap();
    let meta = first[0].meta().clone();
    assert!(meta.uid.is_some());
    assert_eq!(meta.generation, Some(1));
    let rv: u64 = meta.resource_version.clone().unwrap().parse().unwrap();
    assert_eq!(rv, store.resource_version());

    // The same object again changes nothing.
    let again = store.apply(objects(&service("myapp", 80))).await.unwrap();
    assert_eq!(again[0].meta().resource_version, meta.resource_version);
    assert_eq!(store.resource_version(), rv);

    // A changed spec bumps resourceVersion and generation, keeping uid and creation time.
    let changed = store.apply(objects(&service("myapp", 81))).await.unwrap();
    let m2 = changed[0].meta();
    assert_eq!(m2.uid, meta.uid);
    assert_eq!(m2.creation_timestamp, meta.creation_timestamp);
    assert_eq!(m2.generation, Some(2));
    assert_eq!(m2.resource_version, Some((rv + 1).to_string()));

    let got: Service = store.get("production", "myapp").await.unwrap().unwrap();
    assert_eq!(got.spec.unwrap().ports.unwrap()[0].port, 81);
}

#[tokio::test]
async fn objects_need_their_namespace() {
    let store = LocalStore::in_memory();
    let err = store.apply(objects(&service("myapp", 80))).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NamespaceNotFound { namespace, .. } if namespace == "production"),
        "{err}"
    );
    assert!(err.to_string().contains("create the Namespace first"), "{err}");
    // In the same batch it is fine.
    let both = objects(&format!("{PRODUCTION}---\n{}", service("myapp", 80)));
    store.apply(both).await.unwrap();
}

#[tokio::test]
async fn an_invalid_object_refuses_the_whole_batch() {
    let store = LocalStore::in_memory();
    let mut batch = objects(PRODUCTION);
    let mut bad = objects(&service("myapp", 80)).remove(0);
    if let Object::Service(s) = &mut bad {
        s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 70000;
    }
    batch.push(bad);
    let err = store.apply(batch).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("spec.ports[0].port"), "{err}");
    assert!(
        store.get::<Namespace>("", "production").await.unwrap().is_none(),
        "nothing was applied"
    );
}

#[tokio::test]
async fn watch_starts_with_a_list_then_follows_changes_of_its_kind() {
    let store = LocalStore::in_memory();
    store
        .apply(objects(&format!("{PRODUCTION}---\n{}", service("a", 80))))
        .await
        .unwrap();
    let mut watch = store.watch::<Service>();
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Restarted(items) => assert_eq!(items.len(), 1),
        other => panic!("expected the initial list, got {other:?}"),
    }
    // A change of another kind is not seen by this watch.
    store
        .apply(objects(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: production\n",
        ))
        .await
        .unwrap();
    store.apply(objects(&service("b", 80))).await.unwrap();
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Applied(s) => assert_eq!(s.metadata.name.as_deref(), Some("b")),
        other => panic!("expected b applied, got {other:?}"),
    }
    store
        .delete(&ObjectKey::new(KindId::Service, "production", "a"))
        .await
        .unwrap();
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Deleted(s) => assert_eq!(s.metadata.name.as_deref(), Some("a")),
        other => panic!("expected a deleted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_resynchronised() {
    let store = LocalStore::in_memory();
    store.apply(objects(PRODUCTION)).await.unwrap();
    let mut watch = store.watch::<ConfigMap>();
    assert!(matches!(watch.next().await.unwrap().unwrap(), WatchEvent::Restarted(v) if v.is_empty()));
    assert_eq!(watch_buffer(KindId::ConfigMap), WATCH_BUFFER_SMALL);
    for i in 0..(WATCH_BUFFER_SMALL + 10) {
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: production\ndata:\n  n: \"{i}\"\n"
        );
        store.apply_now(objects(&cm)).unwrap();
    }
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Restarted(items) => {
            assert_eq!(items.len(), 1);
            let n = items[0].data.as_ref().unwrap()["n"].clone();
            assert_eq!(
                n,
                (WATCH_BUFFER_SMALL + 9).to_string(),
                "the resync shows the latest state"
            );
        }
        other => panic!("expected a resync, got {other:?}"),
    }
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let store = LocalStore::in_memory();
    store
        .apply(objects(&format!("{PRODUCTION}---\n{}", service("a", 80))))
        .await
        .unwrap();
    let gone = store
        .delete(&ObjectKey::new(KindId::Namespace, "", "production"))
        .await
        .unwrap();
    assert!(gone.is_some());
    assert!(store.list::<Service>(None).await.unwrap().is_empty());
    assert!(
        store
            .delete(&ObjectKey::new(KindId::Namespace, "", "production"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn status_survives_an_apply_without_status() {
    let store = LocalStore::in_memory();
    store.apply(objects(PRODUCTION)).await.unwrap();
    let mut svc = objects(&service("a", 80)).remove(0);
    if let Object::Service(s) = &mut svc {
        s.status = Some(
            serde_json::from_value(serde_json::json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.9"}]}}))
                .unwrap(),
        );
    }
    store.apply(vec![svc]).await.unwrap();
    store.apply(objects(&service("a", 81))).await.unwrap();
    let got: Service = store.get("production", "a").await.unwrap().unwrap();
    assert!(got.status.unwrap().load_balancer.unwrap().ingress.is_some());
}

#[tokio::test]
async fn state_persists_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let rv = {
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .apply(objects(&format!("{PRODUCTION}---\n{}", service("a", 80))))
            .await
            .unwrap();
        store
            .delete(&ObjectKey::new(KindId::Namespace, "", "kube-public"))
            .await
            .unwrap();
        store.resource_version()
    };
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.resource_version(), rv);
    assert!(store.get::<Service>("production", "a").await.unwrap().is_some());
    assert!(
        store.get::<Namespace>("", "kube-public").await.unwrap().is_none(),
        "deletes persist too"
    );
    let next = store.apply(objects(&service("b", 80))).await.unwrap();
    assert_eq!(next[0].meta().resource_version, Some((rv + 1).to_string()));
}

#[tokio::test]
async fn a_torn_journal_record_is_discarded_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LocalStore::open(dir.path()).unwrap();
        store.apply(objects(PRODUCTION)).await.unwrap();
    }
    let journal = dir.path().join("journal.log");
    let good_len = std::fs::metadata(&journal).unwrap().len();
    // Simulate a crash in the middle of writing a batch of two services.
    {
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .apply(objects(&format!("{}---\n{}", service("a", 80), service("b", 80))))
            .await
            .unwrap();
    }
    let full_len = std::fs::metadata(&journal).unwrap().len();
    let f = OpenOptions::new().write(true).open(&journal).unwrap();
    f.set_len(good_len + (full_len - good_len) / 2).unwrap();
    drop(f);

    let store = LocalStore::open(dir.path()).unwrap();
    assert!(
        store.list::<Service>(None).await.unwrap().is_empty(),
        "neither half of the torn batch survives"
    );
    assert!(store.get::<Namespace>("", "production").await.unwrap().is_some());
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        good_len,
        "the torn tail is truncated"
    );
    store.apply(objects(&service("c", 80))).await.unwrap();
    drop(store);
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.list::<Service>(None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_corrupted_record_is_treated_as_the_end_of_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .apply(objects(&format!("{PRODUCTION}---\n{}", service("a", 80))))
            .await
            .unwrap();
    }
    let journal = dir.path().join("journal.log");
    let mut bytes = std::fs::read(&journal).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&journal, &bytes).unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.get::<Service>("production", "a").await.unwrap().is_none());
}

#[tokio::test]
async fn compaction_survives_a_crash_before_the_journal_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.log");
    let store = LocalStore::open(dir.path()).unwrap();
    store
        .apply(objects(&format!("{PRODUCTION}---\n{}", service("a", 80))))
        .await
        .unwrap();
    let old_journal = std::fs::read(&journal).unwrap();
    {
        let mut persist = store.inner.persist.lock().unwrap();
        let state = store.inner.state.read().unwrap();
        persist.as_mut().unwrap().compact(&state).unwrap();
    }
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    store.apply(objects(&service("b", 80))).await.unwrap();
    drop(store);
    let reopened = LocalStore::open(dir.path()).unwrap();
    assert_eq!(reopened.list::<Service>(None).await.unwrap().len(), 2);
    drop(reopened);

    // As if the process died after the snapshot was renamed but before the truncation:
    // the old records are all at or below the snapshot's sequence number.
    std::fs::write(&journal, &old_journal).unwrap();
    let reopened = LocalStore::open(dir.path()).unwrap();
    let names: Vec<_> = reopened
        .list::<Service>(None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["a"], "replay skips records the snapshot already holds");
}

#[tokio::test]
async fn one_process_owns_a_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = LocalStore::open(dir.path()).unwrap();
    let err = LocalStore::open(dir.path()).err().expect("second open must fail");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("strait down"), "{err}");
}

#[tokio::test]
async fn a_damaged_snapshot_is_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("snapshot.json"), b"{not json").unwrap();
    let err = LocalStore::open(dir.path()).err().expect("must fail");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("snapshot.json"), "{err}");
}

#[test]
fn stored_text_folds_common_fragments_and_reads_back_exactly() {
    let pod = objects(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: production\n  labels: {app: web, linkerd.io/control-plane-ns: linkerd}\n  annotations: {note: \"a \\\"name\\\": in a string\"}\nspec:\n  serviceAccountName: web\n  containers: [{name: app, image: web, ports: [{name: http, containerPort: 8080, protocol: TCP}]}]\nstatus:\n  phase: Running\n  podIP: 10.0.0.5\n  conditions: [{type: Ready, status: \"True\"}]\n",
    )
    .remove(0);
    let json = pod.to_json();
    let stored = Stored::of(&pod);
    assert_eq!(stored.json(), json, "unpacking gives back the exact text");
    assert!(
        stored.0.len() * 2 < json.len() + 120,
        "a Pod's field names fold away: {} of {} bytes",
        stored.0.len(),
        json.len()
    );
    let back = k8s_openapi::api::core::v1::Pod::from_object(stored.object(KindId::Pod)).unwrap();
    assert_eq!(Some(back), k8s_openapi::api::core::v1::Pod::from_object(pod));

    // Text without fragments is itself; every fragment fits one byte below 0x20.
    assert_eq!(packed::pack(b"[1,2,\"x\"]"), b"[1,2,\"x\"]");
    assert!(packed::FRAGMENTS.len() < 0x20);
    for (i, f) in packed::FRAGMENTS.iter().enumerate() {
        assert_eq!(packed::pack(f.as_bytes()), [i as u8 + 1], "{f} packs to its byte");
        assert_eq!(packed::unpack(&[i as u8 + 1]), f.as_bytes());
    }
}

fn service_at(name: &str, ip: &str) -> Object {
    objects(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: production\nspec:\n  clusterIP: {ip}\n  ports:\n    - port: 80\n"
    ))
    .remove(0)
}

/// As the Kubernetes API server does, the store gives a cluster IP to one Service only:
/// a second is refused with the field and the holder named, nothing of its batch is
/// applied, and the IP is free again once its holder moves off it or goes, also after a
/// restart.
#[tokio::test]
async fn a_cluster_ip_belongs_to_one_service() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    store.apply(objects(PRODUCTION)).await.unwrap();
    store.apply(vec![service_at("a", "10.96.0.10")]).await.unwrap();
    // Re-applying the holder is no conflict.
    store.apply(vec![service_at("a", "10.96.0.10")]).await.unwrap();
    let err = store
        .apply(vec![service_at("c", "10.96.0.11"), service_at("b", "10.96.0.10")])
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Invalid { .. }), "{msg}");
    assert!(
        msg.contains("production") && msg.contains("spec.clusterIP: 10.96.0.10 is already allocated to"),
        "{msg}"
    );
    assert!(
        store.get::<Service>("production", "c").await.unwrap().is_none(),
        "nothing applied"
    );
    // Two Services of one batch cannot share one either.
    assert!(
        store
            .apply(vec![service_at("c", "10.96.0.12"), service_at("d", "10.96.0.12")])
            .await
            .is_err()
    );
    // One batch may move the IP from its holder to another Service.
    store
        .apply(vec![service_at("a", "10.96.0.20"), service_at("b", "10.96.0.10")])
        .await
        .unwrap();
    // After a restart the allocations are known again; a deleted holder frees its IP.
    drop(store);
    let store = LocalStore::open(dir.path()).unwrap();
    assert!(store.apply(vec![service_at("e", "10.96.0.20")]).await.is_err());
    store
        .delete(&ObjectKey::new(KindId::Service, "production", "a"))
        .await
        .unwrap();
    store.apply(vec![service_at("e", "10.96.0.20")]).await.unwrap();
    // A batch naming a Service twice: only its last version counts, and the IP its first
    // version names stays with its holder.
    store
        .apply(vec![service_at("f", "10.96.0.10"), service_at("f", "10.96.0.40")])
        .await
        .unwrap();
    assert!(store.apply(vec![service_at("g", "10.96.0.10")]).await.is_err());
    // Services without a cluster IP (headless, or none yet) never conflict.
    store
        .apply(vec![service_at("h1", "None"), service_at("h2", "None")])
        .await
        .unwrap();
}

/// A state written before the store checked may hold two Services on one IP: each keeps
/// it (its updates pass), no third may take it, and it stays taken while either holds it.
#[test]
fn services_that_already_share_an_ip_keep_it() {
    let mut state = State::default();
    for name in ["a", "b"] {
        let o = service_at(name, "10.96.0.30");
        state.objects.insert(o.key(), Stored::of(&o));
    }
    state.reindex();
    assert!(check_cluster_ips(&state, &[service_at("b", "10.96.0.30")]).is_ok());
    assert!(check_cluster_ips(&state, &[service_at("a", "10.96.0.30")]).is_ok());
    assert!(check_cluster_ips(&state, &[service_at("c", "10.96.0.30")]).is_err());
    let a = service_at("a", "10.96.0.30");
    state.objects.remove(&a.key());
    state.index(&a.key(), Some(&a), None);
    assert!(
        check_cluster_ips(&state, &[service_at("c", "10.96.0.30")]).is_err(),
        "b still holds it"
    );
}

/// A status report of several objects is written whole or not at all.
#[tokio::test]
async fn statuses_of_a_batch_are_written_together_or_not_at_all() {
    let store = LocalStore::in_memory();
    let yaml = [PRODUCTION.to_string(), service("a", 80), service("b", 81)].join("---\n");
    store.apply(objects(&yaml)).await.unwrap();
    let with_status = |name: &str, ip: &str| -> Object {
        let mut v = objects(&service(name, 80)).remove(0).to_value();
        v["status"] = serde_json::json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        Object::from_value(KindId::Service, v).unwrap()
    };
    let ingress = |s: Option<Service>| s.and_then(|s| s.status?.load_balancer?.ingress?.first()?.ip.clone());
    // The second object is invalid (a name Kubernetes refuses): neither status is written.
    let mut bad = with_status("b", "10.0.0.2");
    if let Object::Service(s) = &mut bad {
        s.metadata.name = Some("B_".into());
    }
    let e = store
        .apply_statuses(vec![with_status("a", "10.0.0.1"), bad])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("B_"), "{e}");
    assert_eq!(ingress(store.get("production", "a").await.unwrap()), None);
    // Both valid: both written, and the specs stay as stored.
    store
        .apply_statuses(vec![with_status("a", "10.0.0.1"), with_status("b", "10.0.0.2")])
        .await
        .unwrap();
    let b: Option<Service> = store.get("production", "b").await.unwrap();
    assert_eq!(
        b.as_ref().unwrap().spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        81
    );
    assert_eq!(
        ingress(store.get("production", "a").await.unwrap()).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(ingress(b).as_deref(), Some("10.0.0.2"));
}
