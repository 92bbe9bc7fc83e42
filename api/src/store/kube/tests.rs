//! The kube backend against kube's mock service: exact requests, canned responses.

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Service;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::*;
use crate::kinds::KindId;
use crate::mesh::policy::Server;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn client() -> (KubeStore, Handle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (KubeStore::new(kube::Client::new(svc, "default")), handle)
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn service_json(name: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "production", "resourceVersion": rv},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
    })
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

#[tokio::test]
async fn get_reads_one_typed_object() {
    let (store, mut handle) = client();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/production/services/myapp");
        send.send_response(json_response(StatusCode::OK, &service_json("myapp", "7")));
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(req.uri().path(), "/api/v1/namespaces/production/services/nope");
        send.send_response(json_response(StatusCode::NOT_FOUND, &not_found()));
    });
    let svc: Service = store.get("production", "myapp").await.unwrap().unwrap();
    assert_eq!(svc.metadata.resource_version.as_deref(), Some("7"));
    assert!(
        store
            .get::<Service>("production", "nope")
            .await
            .unwrap()
            .is_none()
    );
    server.await.unwrap();
}

#[tokio::test]
async fn list_uses_the_crd_path_of_the_storage_version() {
    let (store, mut handle) = client();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(
            req.uri().path(),
            "/apis/policy.linkerd.io/v1beta3/namespaces/production/servers"
        );
        send.send_response(json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": "policy.linkerd.io/v1beta3", "kind": "ServerList", "metadata": {"resourceVersion": "9"},
                "items": [{
                    "apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
                    "metadata": {"name": "myapp-server", "namespace": "production"},
                    "spec": {"podSelector": {"matchLabels": {"app": "myapp"}}, "port": 8080, "proxyProtocol": "HTTP/2"}
                }]
            }),
        ));
    });
    let servers: Vec<Server> = store.list(Some("production")).await.unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].metadata.name.as_deref(), Some("myapp-server"));
    server.await.unwrap();
}

#[tokio::test]
async fn apply_is_a_forced_server_side_apply_without_server_fields() {
    let (store, mut handle) = client();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/production/services/myapp");
        let query = req.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("fieldManager=strait"), "{query}");
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(req.headers()["content-type"], "application/apply-patch+yaml");
        let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        assert_eq!(body["kind"], "Service");
        assert!(body["metadata"].get("resourceVersion").is_none(), "{body}");
        send.send_response(json_response(StatusCode::OK, &service_json("myapp", "12")));
    });
    let mut obj: Object = serde_json::from_value::<Service>(service_json("myapp", "3"))
        .unwrap()
        .into_object();
    obj.meta_mut().namespace = Some("production".into());
    let out = store.apply(vec![obj]).await.unwrap();
    assert_eq!(out[0].meta().resource_version.as_deref(), Some("12"));
    server.await.unwrap();
}

#[tokio::test]
async fn apply_refuses_an_invalid_batch_before_any_request() {
    let (store, mut handle) = client();
    let mut bad = service_json("myapp", "1");
    bad["spec"]["ports"][0]["port"] = json!(0);
    let obj = serde_json::from_value::<Service>(bad).unwrap().into_object();
    let err = store.apply(vec![obj]).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    // No request was made: the mock has nothing queued.
    drop(store);
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn delete_returns_the_last_state() {
    let (store, mut handle) = client();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("get");
        assert_eq!(req.method(), Method::GET);
        send.send_response(json_response(StatusCode::OK, &service_json("myapp", "5")));
        let (req, send) = handle.next_request().await.expect("delete");
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/production/services/myapp");
        send.send_response(json_response(
            StatusCode::OK,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ));
        let (_req, send) = handle.next_request().await.expect("get of a missing one");
        send.send_response(json_response(StatusCode::NOT_FOUND, &not_found()));
    });
    let key = ObjectKey::new(KindId::Service, "production", "myapp");
    let last = store.delete(&key).await.unwrap().unwrap();
    assert_eq!(last.meta().resource_version.as_deref(), Some("5"));
    let missing = ObjectKey::new(KindId::Service, "production", "gone");
    assert!(store.delete(&missing).await.unwrap().is_none());
    server.await.unwrap();
}

#[tokio::test]
async fn watch_lists_then_streams_changes() {
    let (store, mut handle) = client();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("list");
        assert_eq!(req.uri().path(), "/api/v1/services");
        send.send_response(json_response(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "10"},
                    "items": [service_json("a", "8")]}),
        ));
        let (req, send) = handle.next_request().await.expect("watch");
        let query = req.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("watch=true"), "{query}");
        assert!(query.contains("resourceVersion=10"), "{query}");
        let mut lines = Vec::new();
        for (ty, obj) in [
            ("ADDED", service_json("b", "11")),
            ("DELETED", service_json("a", "12")),
        ] {
            lines.extend(serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap());
            lines.push(b'\n');
        }
        send.send_response(
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from(lines))
                .unwrap(),
        );
        handle
    });
    let mut watch = store.watch::<Service>();
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Restarted(items) => assert_eq!(items[0].metadata.name.as_deref(), Some("a")),
        other => panic!("expected the initial list, got {other:?}"),
    }
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Applied(s) => assert_eq!(s.metadata.name.as_deref(), Some("b")),
        other => panic!("expected b, got {other:?}"),
    }
    match watch.next().await.unwrap().unwrap() {
        WatchEvent::Deleted(s) => assert_eq!(s.metadata.name.as_deref(), Some("a")),
        other => panic!("expected a deleted, got {other:?}"),
    }
    drop(watch);
    drop(server);
}
