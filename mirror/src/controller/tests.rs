//! The mirror end to end over two real local stores (target and local cluster).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use strait_api::store::local::LocalStore;
use strait_api::{Kind, KindId, Object, ObjectKey, Store, StoreError, WatchEvent};
use tokio::sync::watch;

use super::*;
use crate::reconcile::tests::{link, remote};

const BOUND: Duration = Duration::from_secs(10);

/// Waits (bounded) until `f` holds.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ns(store: &impl Store, name: &str) {
    let n: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    store.apply(vec![n.into_object()]).await.unwrap();
}

async fn put(store: &impl Store, svc: Service) {
    store.apply(vec![svc.into_object()]).await.unwrap();
}

async fn slice_ready(store: &impl Store, ns: &str, name: &str) -> Option<bool> {
    let s: EndpointSlice = store.get(ns, name).await.unwrap()?;
    s.endpoints?.first()?.conditions.as_ref()?.ready
}

async fn services(store: &impl Store) -> Vec<String> {
    let mut v: Vec<String> = store
        .list::<Service>(None)
        .await
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap(),
                s.metadata.name.as_deref().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

struct Running {
    health: watch::Sender<GatewayHealth>,
    report: watch::Receiver<LinkReport>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start<R: Store, L: Store>(remote: R, local: L) -> Running {
    start_with(remote, local, MirrorOptions::default())
}

fn start_with<R: Store, L: Store>(remote: R, local: L, opts: MirrorOptions) -> Running {
    let (health, health_rx) = watch::channel(GatewayHealth::default());
    let (report_tx, report) = watch::channel(LinkReport::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = MirrorOptions {
        retry: Duration::from_millis(20),
        ..opts
    };
    let task = tokio::spawn(run_link(
        link(),
        opts,
        remote,
        local,
        health_rx,
        report_tx,
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        health,
        report,
        stop,
        task,
    }
}

fn alive(up: bool) -> GatewayHealth {
    GatewayHealth {
        alive: up,
        ..Default::default()
    }
}

#[tokio::test]
async fn export_unexport_and_namespaces_between_two_clusters() {
    let (east, west) = (LocalStore::in_memory(), LocalStore::in_memory());
    ns(&east, "production").await;
    ns(&west, "production").await;
    put(&east, remote("production", "myapp", Some("true"), "1")).await;
    put(&east, remote("production", "private", None, "1")).await;
    // A west Service the mirror must never touch, although it is named like a mirror.
    let mut theirs = remote("production", "web-east", None, "1");
    theirs.metadata.labels = None;
    put(&west, theirs).await;
    let run = start(east.clone(), west.clone());

    eventually("myapp-east", async || {
        services(&west)
            .await
            .contains(&"production/myapp-east".to_string())
    })
    .await;
    let m: Service = west.get("production", "myapp-east").await.unwrap().unwrap();
    let labels = m.metadata.labels.unwrap();
    assert_eq!(labels["mirror.linkerd.io/mirrored-service"], "true");
    assert_eq!(labels["mirror.linkerd.io/cluster-name"], "east");
    assert_eq!(
        slice_ready(&west, "production", "myapp-east-gateway").await,
        Some(false),
        "not ready before the gateway answers"
    );
    assert!(
        !services(&west)
            .await
            .contains(&"production/private-east".to_string())
    );

    // The gateway answers: endpoints turn ready.
    run.health.send_replace(alive(true));
    eventually("ready endpoints", async || {
        slice_ready(&west, "production", "myapp-east-gateway").await == Some(true)
    })
    .await;

    // A service in a namespace west lacks is skipped and reported, then mirrored once
    // the namespace exists.
    ns(&east, "billing").await;
    put(&east, remote("billing", "ledger", Some("true"), "1")).await;
    let mut report = run.report.clone();
    eventually("NamespaceNotFound", async || {
        report
            .borrow_and_update()
            .skipped
            .iter()
            .any(|s| s.remote == "billing/ledger" && s.reason == "NamespaceNotFound")
    })
    .await;
    ns(&west, "billing").await;
    eventually("ledger-east", async || {
        services(&west).await.contains(&"billing/ledger-east".to_string())
    })
    .await;

    // Name conflict with the user's web-east: reported, left alone.
    put(&east, remote("production", "web", Some("true"), "1")).await;
    eventually("NameTaken", async || {
        report
            .borrow_and_update()
            .skipped
            .iter()
            .any(|s| s.reason == "NameTaken")
    })
    .await;
    let still: Service = west.get("production", "web-east").await.unwrap().unwrap();
    assert_eq!(still.metadata.labels, None, "the user's Service is untouched");

    // Unexport and delete remove the mirrors (and their slices).
    let mut unexported = remote("production", "myapp", None, "2");
    unexported
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("mirror.linkerd.io/exported");
    put(&east, unexported).await;
    eventually("myapp-east gone", async || {
        !services(&west)
            .await
            .contains(&"production/myapp-east".to_string())
    })
    .await;
    assert!(
        west.get::<EndpointSlice>("production", "myapp-east-gateway")
            .await
            .unwrap()
            .is_none()
    );
    east.delete(&ObjectKey::new(KindId::Service, "billing", "ledger"))
        .await
        .unwrap();
    eventually("ledger-east gone", async || {
        !services(&west).await.contains(&"billing/ledger-east".to_string())
    })
    .await;
    assert_eq!(services(&west).await, vec!["production/web-east"]);

    // Stopping the mirror deletes nothing.
    put(&east, remote("production", "myapp", Some("true"), "3")).await;
    eventually("myapp-east again", async || {
        services(&west)
            .await
            .contains(&"production/myapp-east".to_string())
    })
    .await;
    run.stop.send(()).unwrap();
    run.task.await.unwrap();
    assert!(
        services(&west)
            .await
            .contains(&"production/myapp-east".to_string())
    );
}

/// A target cluster whose connection can be cut: watches end while it is down and new
/// ones fail until it is back. Reads and writes go to the real store underneath.
#[derive(Clone)]
struct Flaky {
    inner: LocalStore,
    up: std::sync::Arc<watch::Sender<bool>>,
}

impl Store for Flaky {
    async fn get<K: Kind>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        self.inner.get(namespace, name).await
    }
    async fn list<K: Kind>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        self.inner.list(namespace).await
    }
    fn watch<K: Kind>(&self) -> futures::stream::BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        if !*self.up.borrow() {
            let e = StoreError::Corrupt {
                path: "east".into(),
                detail: "connection refused".into(),
            };
            return futures::stream::iter([Err(e)]).boxed();
        }
        let mut down = self.up.subscribe();
        self.inner
            .watch::<K>()
            .take_until(async move {
                let _ = down.wait_for(|up| !up).await;
            })
            .boxed()
    }
    async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        self.inner.apply(objects).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        self.inner.delete(key).await
    }
}

/// A target whose first Service watch, once `fire` is set, reports one error and then goes
/// on without a new list, as a Kubernetes watcher that resumes from its last resource
/// version does. Counts the Service watches opened.
#[derive(Clone)]
struct Blip {
    inner: LocalStore,
    fire: std::sync::Arc<watch::Sender<bool>>,
    service_watches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Store for Blip {
    async fn get<K: Kind>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        self.inner.get(namespace, name).await
    }
    async fn list<K: Kind>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        self.inner.list(namespace).await
    }
    fn watch<K: Kind>(&self) -> futures::stream::BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        let inner = self.inner.watch::<K>();
        if K::ID != KindId::Service
            || self
                .service_watches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                > 0
        {
            return inner;
        }
        let mut fired = self.fire.subscribe();
        let error = futures::stream::once(async move {
            let _ = fired.wait_for(|f| *f).await;
            Err(StoreError::Corrupt {
                path: "east".into(),
                detail: "watch stream interrupted".into(),
            })
        });
        // The first list, then the error as soon as it fires, then the rest of the watch.
        let mut inner = inner;
        futures::stream::once(async move {
            let first = inner.next().await;
            (first, inner, error)
        })
        .flat_map(|(first, rest, error)| {
            futures::stream::iter(first).chain(futures::stream::select(error, rest))
        })
        .boxed()
    }
    async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        self.inner.apply(objects).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn a_watch_error_without_a_new_list_leaves_no_mirror_not_ready() {
    let (east, west) = (LocalStore::in_memory(), LocalStore::in_memory());
    ns(&east, "production").await;
    ns(&west, "production").await;
    put(&east, remote("production", "a", Some("true"), "1")).await;
    let blip = Blip {
        inner: east.clone(),
        fire: std::sync::Arc::new(watch::channel(false).0),
        service_watches: Default::default(),
    };
    let run = start(blip.clone(), west.clone());
    run.health.send_replace(alive(true));
    eventually("a ready mirror", async || {
        slice_ready(&west, "production", "a-east-gateway").await == Some(true)
    })
    .await;
    // The watch fails once and goes on; nothing changes in east after that, so only a new
    // watch's list can make the mirror ready again.
    blip.fire.send_replace(true);
    eventually("the watch opened again and the mirror ready", async || {
        blip.service_watches.load(std::sync::atomic::Ordering::SeqCst) >= 2
            && slice_ready(&west, "production", "a-east-gateway").await == Some(true)
            && run.report.borrow().remote_connected
    })
    .await;
    run.stop.send(()).unwrap();
    run.task.await.unwrap();
}

#[tokio::test]
async fn a_dropped_link_keeps_mirrors_not_ready_and_resyncs_atomically() {
    let (east, west) = (LocalStore::in_memory(), LocalStore::in_memory());
    ns(&east, "production").await;
    ns(&west, "production").await;
    for name in ["a", "b"] {
        put(&east, remote("production", name, Some("true"), "1")).await;
    }
    let flaky = Flaky {
        inner: east.clone(),
        up: std::sync::Arc::new(watch::channel(true).0),
    };
    let run = start(flaky.clone(), west.clone());
    run.health.send_replace(alive(true));
    eventually("ready mirrors", async || {
        slice_ready(&west, "production", "a-east-gateway").await == Some(true)
            && slice_ready(&west, "production", "b-east-gateway").await == Some(true)
    })
    .await;

    // The link drops; meanwhile east deletes b and exports c.
    flaky.up.send_replace(false);
    east.delete(&ObjectKey::new(KindId::Service, "production", "b"))
        .await
        .unwrap();
    put(&east, remote("production", "c", Some("true"), "1")).await;
    eventually("not-ready endpoints", async || {
        slice_ready(&west, "production", "a-east-gateway").await == Some(false)
            && slice_ready(&west, "production", "b-east-gateway").await == Some(false)
    })
    .await;
    let mut report = run.report.clone();
    eventually("a disconnected report", async || {
        let r = report.borrow_and_update();
        !r.remote_connected
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("target cluster east"))
    })
    .await;
    assert_eq!(
        services(&west).await,
        vec!["production/a-east", "production/b-east"],
        "the last known mirrors stay while the link is down"
    );

    // Watch every west change from here: the resync must be one clean step.
    let mut changes = west.watch::<Service>();
    let _ = changes.next().await; // the initial list
    flaky.up.send_replace(true);
    eventually("resynced mirrors", async || {
        services(&west).await == vec!["production/a-east", "production/c-east"]
            && slice_ready(&west, "production", "a-east-gateway").await == Some(true)
    })
    .await;
    let mut seen = Vec::new();
    while let Some(Some(Ok(ev))) = futures::FutureExt::now_or_never(changes.next()) {
        seen.push(match ev {
            WatchEvent::Applied(s) => format!("applied {}", s.metadata.name.unwrap()),
            WatchEvent::Deleted(s) => format!("deleted {}", s.metadata.name.unwrap()),
            WatchEvent::Restarted(_) => "restarted".into(),
        });
    }
    seen.sort();
    assert_eq!(
        seen,
        vec!["applied c-east", "deleted b-east"],
        "a stays as it was; nothing is duplicated"
    );
    run.stop.send(()).unwrap();
}

fn link_object(name: &str, cluster: &str, secret: &str) -> Object {
    let l: strait_api::mesh::link::Link = serde_json::from_value(json!({
        "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link",
        "metadata": {"name": name, "namespace": "linkerd-multicluster"},
        "spec": {
            "targetClusterName": cluster, "clusterCredentialsSecret": secret,
            "gatewayAddress": "127.0.0.1", "gatewayPort": "4143",
            "gatewayIdentity": "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
            "probeSpec": {"port": "1", "period": "1s", "timeout": "1s"},
        },
    }))
    .unwrap();
    l.into_object()
}

#[tokio::test]
async fn run_mirror_follows_links_and_their_credentials() {
    let (east, west) = (LocalStore::in_memory(), LocalStore::in_memory());
    for store in [&east, &west] {
        ns(store, "production").await;
    }
    ns(&west, "linkerd-multicluster").await;
    put(&east, remote("production", "myapp", Some("true"), "1")).await;
    let reports = Reports::default();
    let east2 = east.clone();
    let connect = move |_: LinkConfig, s: Option<Secret>| {
        let r = match s
            .as_ref()
            .and_then(|s| s.string_data.as_ref())
            .and_then(|d| d.get("cluster"))
            .map(String::as_str)
        {
            Some("east") => Ok(east2.clone()),
            other => Err(format!("no cluster named {other:?}")),
        };
        async move { r }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_mirror(
        west.clone(),
        connect,
        MirrorOptions::default(),
        reports.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    // A Link without its Secret is reported with what to do.
    west.apply(vec![link_object("east", "east", "cluster-credentials-east")])
        .await
        .unwrap();
    eventually("missing secret report", async || {
        reports
            .read()
            .unwrap()
            .get("linkerd-multicluster/east")
            .and_then(|r| r.error.clone())
            .is_some_and(|e| {
                e.contains("credentials Secret linkerd-multicluster/cluster-credentials-east not found")
                    && e.contains("strait multicluster link --cluster-name east")
            })
    })
    .await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cluster-credentials-east", "namespace": "linkerd-multicluster"},
        "stringData": {"cluster": "east"},
    }))
    .unwrap();
    west.apply(vec![secret.into_object()]).await.unwrap();
    eventually("myapp-east", async || {
        services(&west)
            .await
            .contains(&"production/myapp-east".to_string())
    })
    .await;
    eventually("a report with the mirror", async || {
        reports
            .read()
            .unwrap()
            .get("linkerd-multicluster/east")
            .is_some_and(|r| r.mirrors.len() == 1 && r.cluster == "east")
    })
    .await;
    // Nothing answers on the probe port: the gateway is reported down.
    eventually("probe failures", async || {
        reports
            .read()
            .unwrap()
            .get("linkerd-multicluster/east")
            .is_some_and(|r| r.gateway.failures > 0 && !r.gateway.alive)
    })
    .await;

    // Deleting the Link removes its mirrors.
    west.delete(&ObjectKey::new(KindId::Link, "linkerd-multicluster", "east"))
        .await
        .unwrap();
    eventually("mirrors removed", async || {
        !services(&west)
            .await
            .contains(&"production/myapp-east".to_string())
    })
    .await;
    assert!(
        west.get::<EndpointSlice>("production", "myapp-east-gateway")
            .await
            .unwrap()
            .is_none()
    );
    assert!(reports.read().unwrap().is_empty());
    stop.send(()).unwrap();
    task.await.unwrap();
}

mod kube_mode {
    //! The same controller against Kubernetes APIs (kube's mock service): the target's
    //! Services come from a list + watch, mirrors go out as server-side applies.

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::Value;
    use strait_api::store::kube::KubeStore;
    use tower_test::mock;

    use super::*;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn ok(v: &Value) -> Response<Body> {
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(v).unwrap()))
            .unwrap()
    }

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "10"}, "items": items})
    }

    /// Answers lists from `lists` (by path), keeps watches open, records and echoes
    /// applies.
    async fn serve(
        mut handle: Handle,
        lists: Vec<(&'static str, Value)>,
        applies: tokio::sync::mpsc::UnboundedSender<(String, String, Value)>,
    ) {
        let mut open_watches = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or_default().to_string();
            if query.contains("watch=true") {
                open_watches.push(send);
                continue;
            }
            if req.method() == http::Method::PATCH {
                let ctype = req.headers()["content-type"].to_str().unwrap().to_string();
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let mut v: Value = serde_json::from_slice(&body).unwrap();
                applies
                    .send((format!("{path}?{query}"), ctype, v.clone()))
                    .unwrap();
                v["metadata"]["resourceVersion"] = json!("11");
                send.send_response(ok(&v));
                continue;
            }
            // The Link object itself is not in this API: the mirror skips its status.
            if req.method() == http::Method::GET && path.contains("/links/") {
                let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404});
                let mut rsp = ok(&status);
                *rsp.status_mut() = http::StatusCode::NOT_FOUND;
                send.send_response(rsp);
                continue;
            }
            match lists.iter().find(|(p, _)| *p == path) {
                Some((_, v)) => send.send_response(ok(v)),
                None => panic!("unexpected request {} {path}?{query}", req.method()),
            }
        }
    }

    #[tokio::test]
    async fn watches_a_kubernetes_target_and_applies_mirrors_server_side() {
        let (remote_svc, remote_handle) = mock::pair::<Request<Body>, Response<Body>>();
        let (local_svc, local_handle) = mock::pair::<Request<Body>, Response<Body>>();
        let remote = KubeStore::new(kube::Client::new(remote_svc, "default"));
        let local = KubeStore::new(kube::Client::new(local_svc, "default"));
        let mut exported = serde_json::to_value(remote_svc_value()).unwrap();
        exported["apiVersion"] = json!("v1");
        exported["kind"] = json!("Service");
        let (tx, mut applies) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(serve(
            remote_handle,
            vec![("/api/v1/services", list("Service", vec![exported]))],
            tx.clone(),
        ));
        tokio::spawn(serve(
            local_handle,
            vec![
                (
                    "/api/v1/namespaces",
                    list(
                        "Namespace",
                        vec![
                            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "production"}}),
                        ],
                    ),
                ),
                ("/api/v1/services", list("Service", vec![])),
                (
                    "/apis/discovery.k8s.io/v1/endpointslices",
                    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {"resourceVersion": "10"}, "items": []}),
                ),
                // The link task follows its own Link's status.
                (
                    "/apis/multicluster.linkerd.io/v1alpha3/links",
                    json!({"apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "LinkList", "metadata": {"resourceVersion": "10"}, "items": []}),
                ),
            ],
            tx,
        ));
        let run = start(remote, local);
        let (path, ctype, svc) = tokio::time::timeout(BOUND, applies.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            path,
            "/api/v1/namespaces/production/services/myapp-east?&force=true&fieldManager=strait"
        );
        assert_eq!(ctype, "application/apply-patch+yaml");
        assert_eq!(
            svc["metadata"]["labels"]["mirror.linkerd.io/mirrored-service"],
            "true"
        );
        assert_eq!(
            svc["metadata"]["labels"]["mirror.linkerd.io/cluster-name"],
            "east"
        );
        assert_eq!(
            svc["metadata"]["annotations"]["mirror.linkerd.io/remote-resource-version"],
            "7"
        );
        assert_eq!(
            svc["spec"].get("clusterIP"),
            None,
            "Kubernetes allocates the cluster IP"
        );
        let (path, _, slice) = tokio::time::timeout(BOUND, applies.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            path,
            "/apis/discovery.k8s.io/v1/namespaces/production/endpointslices/myapp-east-gateway?&force=true&fieldManager=strait"
        );
        assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.2");
        assert_eq!(slice["ports"][0]["port"], 4143);
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "myapp-east"
        );
        run.stop.send(()).unwrap();
    }

    fn remote_svc_value() -> Service {
        remote("production", "myapp", Some("true"), "7")
    }
}

async fn meshed_pod(store: &impl Store, name: &str, sa: &str) {
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "production",
            "labels": {"app": "myapp", "linkerd.io/control-plane-ns": "linkerd"}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "x"}]},
        "status": {"phase": "Running"},
    }))
    .unwrap();
    store.apply(vec![p.into_object()]).await.unwrap();
}

async fn strait_annotations(store: &impl Store) -> BTreeMap<String, String> {
    let m: Option<Service> = store.get("production", "myapp-east").await.unwrap();
    m.and_then(|m| m.metadata.annotations)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("mirror.strait.io/"))
        .collect()
}

#[tokio::test]
async fn with_a_gateway_entry_mirrors_follow_the_remote_workloads_identity() {
    let (east, west) = (LocalStore::in_memory(), LocalStore::in_memory());
    ns(&east, "production").await;
    ns(&west, "production").await;
    put(&east, remote("production", "myapp", Some("true"), "1")).await;
    let opts = MirrorOptions {
        gateway_entries: [("east".to_string(), "127.0.0.1:4180".parse().unwrap())].into(),
        ..Default::default()
    };
    let run = start_with(east.clone(), west.clone(), opts);
    eventually("the mirror", async || {
        services(&west)
            .await
            .contains(&"production/myapp-east".to_string())
    })
    .await;
    assert!(
        strait_annotations(&west).await.is_empty(),
        "no meshed remote pod yet"
    );

    meshed_pod(&east, "myapp-1", "myapp").await;
    let id = |sa: &str| format!("{sa}.production.serviceaccount.identity.linkerd.cluster.local");
    eventually("the remote identity", async || {
        strait_annotations(&west)
            .await
            .get("mirror.strait.io/remote-identity")
            == Some(&id("myapp"))
    })
    .await;
    assert_eq!(
        strait_annotations(&west).await["mirror.strait.io/gateway-entry"],
        "127.0.0.1:4180"
    );

    // The workloads move to another service account: the mirror follows.
    east.delete(&ObjectKey::new(KindId::Pod, "production", "myapp-1"))
        .await
        .unwrap();
    meshed_pod(&east, "myapp-2", "myapp-v2").await;
    eventually("the new identity", async || {
        strait_annotations(&west)
            .await
            .get("mirror.strait.io/remote-identity")
            == Some(&id("myapp-v2"))
    })
    .await;
    let _ = run.stop.send(());
    let _ = tokio::time::timeout(BOUND, run.task).await;
}

/// The Link's `Mirrored` condition for `ns/name`: (status, reason, message).
async fn mirrored(store: &impl Store, ns: &str, name: &str) -> Option<(String, String, String)> {
    let l: Link = store.get("linkerd-multicluster", "east").await.unwrap()?;
    let entry = l.status?.mirror_services?.into_iter().find(|s| {
        s.remote_ref
            .as_ref()
            .is_some_and(|r| r.namespace.as_deref() == Some(ns) && r.name.as_deref() == Some(name))
    })?;
    let c = entry.conditions?.into_iter().find(|c| c.type_ == "Mirrored")?;
    Some((
        c.status,
        c.reason.unwrap_or_default(),
        c.message.unwrap_or_default(),
    ))
}

#[tokio::test]
async fn the_link_status_names_a_missing_namespace_until_it_appears() {
    let (east, west) = (LocalStore::in_memory(), LocalStore::in_memory());
    ns(&east, "production").await;
    ns(&east, "billing").await;
    ns(&west, "production").await;
    ns(&west, "linkerd-multicluster").await;
    let l: Link = serde_json::from_value(json!({
        "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link",
        "metadata": {"name": "east", "namespace": "linkerd-multicluster"},
        "spec": {
            "targetClusterName": "east",
            "clusterCredentialsSecret": "cluster-credentials-east",
            "gatewayAddress": "127.0.0.2",
            "gatewayPort": "4143",
            "gatewayIdentity": "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
        },
    }))
    .unwrap();
    let spec = l.spec.clone();
    west.apply(vec![l.into_object()]).await.unwrap();
    put(&east, remote("production", "myapp", Some("true"), "1")).await;
    put(&east, remote("billing", "ledger", Some("true"), "1")).await;
    let run = start(east.clone(), west.clone());

    // Skipped, with a condition saying why and what to do, as Linkerd's mirror does.
    eventually("a NamespaceNotFound condition", async || {
        mirrored(&west, "billing", "ledger")
            .await
            .is_some_and(|(s, r, _)| s == "False" && r == "NamespaceNotFound")
    })
    .await;
    let (_, _, message) = mirrored(&west, "billing", "ledger").await.unwrap();
    assert!(
        message.contains("namespace billing does not exist in this cluster; create it"),
        "{message}"
    );
    let (status, reason, _) = mirrored(&west, "production", "myapp").await.unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Mirrored"));
    assert!(!services(&west).await.contains(&"billing/ledger-east".to_string()));

    // The namespace appears: mirrored, and the condition clears.
    ns(&west, "billing").await;
    eventually("the condition to clear", async || {
        mirrored(&west, "billing", "ledger")
            .await
            .is_some_and(|(s, r, _)| s == "True" && r == "Mirrored")
    })
    .await;
    assert!(services(&west).await.contains(&"billing/ledger-east".to_string()));
    let l: Link = west.get("linkerd-multicluster", "east").await.unwrap().unwrap();
    assert_eq!(l.spec, spec, "the status write leaves the spec alone");
    let entry = &l.status.unwrap().mirror_services.unwrap()[0];
    assert_eq!(
        entry.controller_name.as_deref(),
        Some("linkerd.io/service-mirror")
    );
    let _ = run.stop.send(());
    run.task.await.unwrap();
}

#[tokio::test]
async fn a_status_write_that_crosses_the_link_tasks_is_undone() {
    let (east, west) = (LocalStore::in_memory(), LocalStore::in_memory());
    ns(&east, "production").await;
    ns(&west, "production").await;
    ns(&west, "linkerd-multicluster").await;
    west.apply(vec![link_object("east", "east", "cluster-credentials-east")])
        .await
        .unwrap();
    put(&east, remote("production", "myapp", Some("true"), "1")).await;
    let run = start(east.clone(), west.clone());
    eventually("myapp mirrored in the status", async || {
        mirrored(&west, "production", "myapp").await.is_some()
    })
    .await;
    // Another writer that read the Link before the link task's write puts the older status
    // back (nothing else changes, so no other event would make the link task write again).
    let mut stale: Link = west.get("linkerd-multicluster", "east").await.unwrap().unwrap();
    stale.status = Some(LinkStatus {
        mirror_services: Some(Vec::new()),
        federated_services: None,
    });
    // The link task may put its part back as soon as the write is stored, so the stale write
    // is seen landing in the Link's watch rather than by reading the Link afterwards.
    let mut links = west.watch::<Link>();
    west.apply_status(stale.into_object()).await.unwrap();
    let landed = tokio::time::timeout(BOUND, async {
        while let Some(event) = links.next().await {
            if let WatchEvent::Applied(l) = event.unwrap()
                && l.metadata.name.as_deref() == Some("east")
                && l.status
                    .and_then(|s| s.mirror_services)
                    .is_some_and(|m| m.is_empty())
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(landed, Ok(true), "the stale write landed");
    eventually("the link task to write its part again", async || {
        mirrored(&west, "production", "myapp")
            .await
            .is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let _ = run.stop.send(());
    run.task.await.unwrap();
}

/// `status.federatedServices` of the Link `linkerd-multicluster/east`: (remote, status,
/// reason, local) of each entry's `Mirrored` condition.
async fn federated_status(store: &impl Store) -> Vec<(String, String, String, String)> {
    let Some(l): Option<Link> = store.get("linkerd-multicluster", "east").await.unwrap() else {
        return Vec::new();
    };
    l.status
        .and_then(|s| s.federated_services)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let r = e.remote_ref?;
            let c = e.conditions?.into_iter().find(|c| c.type_ == "Mirrored")?;
            Some((
                format!("{}/{}", r.namespace?, r.name?),
                c.status,
                c.reason.unwrap_or_default(),
                c.local_ref?.name?,
            ))
        })
        .collect()
}

#[tokio::test]
async fn the_link_reports_its_federated_members_beside_its_mirrors() {
    let (east, west) = (LocalStore::in_memory(), LocalStore::in_memory());
    for store in [&east, &west] {
        ns(store, "production").await;
    }
    ns(&east, "billing").await;
    ns(&west, "linkerd-multicluster").await;
    let member = |ns: &str, name: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"mirror.linkerd.io/federated": "member"}},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap()
    };
    put(&east, member("production", "myapp")).await;
    put(&east, member("billing", "ledger")).await;
    put(&east, remote("production", "web", Some("true"), "1")).await;
    let mut link = link_object("east", "east", "cluster-credentials-east");
    if let Object::Link(l) = &mut link {
        l.spec.federated_service_selector = Some(
            serde_json::from_value(json!({"matchLabels": {"mirror.linkerd.io/federated": "member"}}))
                .unwrap(),
        );
        l.spec.selector = Some(
            serde_json::from_value(json!({"matchLabels": {"mirror.linkerd.io/exported": "true"}})).unwrap(),
        );
    }
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cluster-credentials-east", "namespace": "linkerd-multicluster"},
        "stringData": {"cluster": "east"},
    }))
    .unwrap();
    west.apply(vec![secret.into_object(), link]).await.unwrap();
    let east2 = east.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_mirror(
        west.clone(),
        move |_: LinkConfig, _: Option<Secret>| std::future::ready(Ok(east2.clone())),
        MirrorOptions::default(),
        Reports::default(),
        async {
            let _ = stopped.await;
        },
    ));

    // Joined, and skipped for a namespace this cluster lacks, in Linkerd's shape; the
    // mirror services the link task reports stay beside them.
    let want = vec![
        (
            "billing/ledger".to_string(),
            "False".to_string(),
            "NamespaceNotFound".to_string(),
            "ledger-federated".to_string(),
        ),
        (
            "production/myapp".to_string(),
            "True".to_string(),
            "Mirrored".to_string(),
            "myapp-federated".to_string(),
        ),
    ];
    eventually("federated members in the Link status", async || {
        federated_status(&west).await == want
    })
    .await;
    // Two writers, one status: each keeps the other's part (and the federation task
    // restores its part should a write of the link task's cross it).
    eventually("the mirror beside them", async || {
        mirrored(&west, "production", "web")
            .await
            .is_some_and(|(s, _, _)| s == "True")
            && federated_status(&west).await == want
    })
    .await;
    assert!(
        services(&west)
            .await
            .contains(&"production/myapp-federated".to_string())
    );

    // The namespace appears: the member joins and its condition turns True.
    ns(&west, "billing").await;
    eventually("ledger to join", async || {
        federated_status(&west)
            .await
            .first()
            .is_some_and(|e| e.1 == "True" && e.2 == "Mirrored")
    })
    .await;
    assert!(
        services(&west)
            .await
            .contains(&"billing/ledger-federated".to_string())
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[test]
fn a_gateway_name_that_stops_resolving_keeps_the_addresses_it_last_had() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let mut known = Vec::new();
    // Never resolved: nothing to mirror with, and the error.
    let (a, e) = gateway_addresses(Err("gateway address \"gw\" does not resolve".into()), &mut known);
    assert_eq!(
        (a, e.as_deref()),
        (vec![], Some("gateway address \"gw\" does not resolve"))
    );
    let (a, e) = gateway_addresses(Ok(vec![ip("10.0.0.7")]), &mut known);
    assert_eq!((a, e), (vec![ip("10.0.0.7")], None));
    // A failed lookup later: the last addresses stay, and the report says so.
    let (a, e) = gateway_addresses(Err("gateway address \"gw\" does not resolve".into()), &mut known);
    assert_eq!(a, vec![ip("10.0.0.7")]);
    assert!(e.unwrap().contains("keep the addresses it last resolved to"));
    // A new answer replaces them.
    let (a, _) = gateway_addresses(Ok(vec![ip("10.0.0.8")]), &mut known);
    assert_eq!(a, vec![ip("10.0.0.8")]);
    assert_eq!(known, vec![ip("10.0.0.8")]);
}

/// A local cluster whose next `fail` deletes fail.
#[derive(Clone)]
struct FailingDeletes {
    inner: LocalStore,
    fail: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Store for FailingDeletes {
    async fn get<K: Kind>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        self.inner.get(namespace, name).await
    }
    async fn list<K: Kind>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        self.inner.list(namespace).await
    }
    fn watch<K: Kind>(&self) -> futures::stream::BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        self.inner.watch::<K>()
    }
    async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        self.inner.apply(objects).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .fail
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Corrupt {
                path: "west".into(),
                detail: format!("cannot delete {key}: disk full"),
            });
        }
        self.inner.delete(key).await
    }
}

/// Mirrors of a cluster no Link names go: those a Link deleted while no mirror ran left
/// behind (removed at start, after a removal that failed is tried again), and those of a
/// Link that now names another cluster. Ordinary Services stay.
#[tokio::test]
async fn mirrors_of_clusters_no_link_names_are_removed() {
    let (east, local) = (LocalStore::in_memory(), LocalStore::in_memory());
    for store in [&east, &local] {
        ns(store, "production").await;
    }
    ns(&local, "linkerd-multicluster").await;
    put(&east, remote("production", "myapp", Some("true"), "1")).await;
    let stale: Service = serde_json::from_value(json!({
        "metadata": {"name": "db-gone", "namespace": "production", "labels": {
            "mirror.linkerd.io/mirrored-service": "true", "mirror.linkerd.io/cluster-name": "gone"}},
        "spec": {"clusterIP": "10.96.0.77", "ports": [{"port": 5432}]},
    }))
    .unwrap();
    put(&local, stale).await;
    put(&local, remote("production", "web", None, "1")).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cluster-credentials-east", "namespace": "linkerd-multicluster"},
        "stringData": {"cluster": "east"},
    }))
    .unwrap();
    local
        .apply(vec![
            secret.into_object(),
            link_object("east", "east", "cluster-credentials-east"),
        ])
        .await
        .unwrap();
    let west = FailingDeletes {
        inner: local.clone(),
        fail: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1)),
    };
    let east2 = east.clone();
    let connect = move |_: LinkConfig, _: Option<Secret>| {
        let r: Result<LocalStore, String> = Ok(east2.clone());
        async move { r }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_mirror(
        west.clone(),
        connect,
        MirrorOptions::default(),
        Reports::default(),
        async {
            let _ = stopped.await;
        },
    ));
    eventually("the mirror of the linked cluster", async || {
        services(&local)
            .await
            .contains(&"production/myapp-east".to_string())
    })
    .await;
    // The first removal failed; it is tried again (at the next event or tick).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while services(&local).await.contains(&"production/db-gone".to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale mirror was not removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        west.fail.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a removal failed first"
    );

    // The Link now names another cluster: the old cluster's mirrors go, the new ones come.
    local
        .apply(vec![link_object("east", "east2", "cluster-credentials-east")])
        .await
        .unwrap();
    eventually("the mirrors follow the cluster's new name", async || {
        let s = services(&local).await;
        s.contains(&"production/myapp-east2".to_string()) && !s.contains(&"production/myapp-east".to_string())
    })
    .await;
    assert!(
        local
            .get::<EndpointSlice>("production", "myapp-east-gateway")
            .await
            .unwrap()
            .is_none()
    );
    assert!(services(&local).await.contains(&"production/web".to_string()));
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// A link task that restarts (its Link changed, or it ended) keeps its link's federated
/// members in place until the new task publishes its own; the old task, dropped late,
/// neither overwrites nor removes them; only forgetting the Link removes them.
#[test]
fn a_restarting_link_keeps_its_federated_members_until_its_link_goes() {
    use crate::federated::tests::members;
    let fed = Federation::default();
    let state = fed.subscribe();
    let cluster = |s: &FederationState| {
        s.links
            .get("linkerd-multicluster/east")
            .cloned()
            .flatten()
            .map(|m| (m.link.target_cluster, m.gateway.ready))
    };
    let first = fed.for_link("linkerd-multicluster/east");
    assert_eq!(cluster(&state.borrow()), None, "a new link has no members yet");
    first.publish(members("east", &[], true));
    let second = fed.for_link("linkerd-multicluster/east");
    assert_eq!(
        cluster(&state.borrow()),
        Some(("east".into(), true)),
        "the restarted link keeps its members"
    );
    first.publish(members("east", &[], false));
    drop(first);
    assert_eq!(
        cluster(&state.borrow()),
        Some(("east".into(), true)),
        "the old task no longer writes"
    );
    second.publish(members("east", &[], false));
    assert_eq!(cluster(&state.borrow()), Some(("east".into(), false)));
    fed.forget("linkerd-multicluster/east");
    assert!(state.borrow().links.is_empty());
}
