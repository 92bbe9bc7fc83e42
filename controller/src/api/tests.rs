use std::sync::Arc;

use hyper::StatusCode;
use strait_identity::{TrustDomain, generate};

use super::client::{ApiClient, ClientError};
use super::*;

struct Cluster {
    endpoint: ApiEndpoint,
    anchors: TrustAnchors,
    issuer: Issuer,
    store: LocalStore,
    tokens: LocalTokens,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn ident(sa: &str) -> IdentityName {
    IdentityName::new(sa, CONTROL_PLANE_NS, "cluster.local").unwrap()
}

async fn start() -> Cluster {
    let now = SystemTime::now();
    let (anchors, issuer) = generate(&TrustDomain::default(), now).unwrap();
    let server = ident(CONTROLLER_SA);
    let (chain, key) = issue(&issuer, &server, Duration::from_secs(3600), now).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = ApiEndpoint {
        address: listener.local_addr().unwrap().to_string(),
        server_identity: server.to_string(),
    };
    let store = LocalStore::in_memory();
    let tokens = LocalTokens::new(&[9; 32]);
    let api = Api {
        store: store.clone(),
        tokens: tokens.clone(),
        admin: ident(ADMIN_SA),
        trust_domain: "cluster.local".into(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let certs = CertStore::with_cert(chain, key).unwrap();
    let anchors2 = anchors.clone();
    tokio::spawn(async move {
        serve(listener, certs, &anchors2, api, async {
            let _ = rx.await;
        })
        .await
    });
    Cluster {
        endpoint,
        anchors,
        issuer,
        store,
        tokens,
        _stop: tx,
    }
}

fn client_as(c: &Cluster, sa: &str) -> ApiClient {
    let (chain, key) = issue(
        &c.issuer,
        &ident(sa),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap();
    ApiClient::new(
        c.endpoint.clone(),
        &c.anchors,
        &CertStore::with_cert(chain, key).unwrap(),
    )
    .unwrap()
}

/// Applies `manifests` again and checks that nothing changed.
async fn assert_unchanged(admin: &ApiClient, manifests: String) {
    let again = admin
        .request(Method::POST, "/v1/apply", manifests.into_bytes())
        .await
        .unwrap();
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "unchanged"),
        "{again}"
    );
}

#[tokio::test]
async fn the_admin_applies_lists_and_deletes() {
    let c = start().await;
    let admin = client_as(&c, ADMIN_SA);
    let v = admin
        .request(Method::GET, "/v1/version", Vec::new())
        .await
        .unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let manifests = [
        include_str!("../../../examples/linkerd-seed/01-namespace-injection.yaml"),
        include_str!("../../../examples/linkerd-seed/03-services.yaml"),
    ]
    .join("---\n");
    let out = admin
        .request(Method::POST, "/v1/apply", manifests.clone().into_bytes())
        .await
        .unwrap();
    let outcomes: Vec<String> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["object"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(outcomes[0], "namespace/production created");
    assert_eq!(outcomes.len(), 4);
    assert_unchanged(&admin, manifests).await;

    let svcs = admin
        .request(Method::GET, "/v1/objects/svc?namespace=production", Vec::new())
        .await
        .unwrap();
    assert_eq!(svcs["items"].as_array().unwrap().len(), 3);
    let one = admin
        .request(
            Method::GET,
            "/v1/objects/services?namespace=production&name=myapp-v2",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(one["items"][0]["spec"]["selector"]["version"], "v2");

    admin
        .request(Method::DELETE, "/v1/objects/svc/production/myapp-v2", Vec::new())
        .await
        .unwrap();
    let err = admin
        .request(Method::DELETE, "/v1/objects/svc/production/myapp-v2", Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }
        ),
        "{err}"
    );
    admin
        .request(Method::DELETE, "/v1/objects/ns/_/production", Vec::new())
        .await
        .unwrap();
    assert!(
        c.store.list_objects(KindId::Service, None).is_empty(),
        "the namespace took its services along"
    );
}

#[tokio::test]
async fn a_request_does_not_wait_for_a_delayed_ack() {
    // With Nagle's algorithm on, the request's last small TLS record waited for the
    // server's delayed ACK: every round trip took at least Linux's 40 ms minimum. The
    // fastest of a few (the minimum is robust to a busy machine) must beat it.
    let c = start().await;
    let admin = client_as(&c, ADMIN_SA);
    let mut fastest = Duration::MAX;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        admin
            .request(
                Method::POST,
                "/v1/apply",
                b"{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[]}".to_vec(),
            )
            .await
            .unwrap();
        fastest = fastest.min(started.elapsed());
    }
    assert!(
        fastest < Duration::from_millis(40),
        "fastest API round trip {fastest:?}"
    );
}

#[tokio::test]
async fn invalid_manifests_are_refused_whole_with_the_loaders_errors() {
    let c = start().await;
    let admin = client_as(&c, ADMIN_SA);
    let bad = "apiVersion: v1\nkind: Namespace\nmetadata: {name: production}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: production}\nspec:\n  ports: [{port: 70000}]\n";
    let err = admin
        .request(Method::POST, "/v1/apply", bad.as_bytes().to_vec())
        .await
        .unwrap_err();
    let ClientError::Status { status, body, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let problem = body["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("spec.ports[0].port: expected a port number 1-65535, found 70000"),
        "{problem}"
    );
    assert!(
        c.store
            .get_object(&ObjectKey::new(KindId::Namespace, "", "production"))
            .is_none(),
        "nothing applied"
    );

    let err = admin
        .request(Method::GET, "/v1/objects/gizmos", Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown kind"), "{err}");
    let err = admin
        .request(Method::POST, "/v1/pods", b"{}".to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a pod registration"), "{err}");
}

#[tokio::test]
async fn only_the_admin_identity_is_admitted() {
    let c = start().await;
    let intruder = client_as(&c, "frontend");
    let err = intruder
        .request(Method::GET, "/v1/version", Vec::new())
        .await
        .unwrap_err();
    let ClientError::Status { status, message, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("is not the cluster admin"), "{message}");

    // A certificate from another mesh's issuer does not even complete the handshake.
    let (other_anchors, other_issuer) = generate(&TrustDomain::default(), SystemTime::now()).unwrap();
    let (chain, key) = issue(
        &other_issuer,
        &ident(ADMIN_SA),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap();
    let stranger = ApiClient::new(
        c.endpoint.clone(),
        &c.anchors,
        &CertStore::with_cert(chain, key).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        stranger.request(Method::GET, "/v1/version", Vec::new()).await,
        Err(ClientError::Connect { .. })
    ));
    let _ = Arc::new(other_anchors);
}

#[tokio::test]
async fn pods_register_with_a_token_and_show_as_proxies() {
    let c = start().await;
    let admin = client_as(&c, ADMIN_SA);
    admin
        .request(
            Method::POST,
            "/v1/apply",
            b"apiVersion: v1\nkind: Namespace\nmetadata: {name: production}\n".to_vec(),
        )
        .await
        .unwrap();
    let reg = PodRegistration {
        namespace: "production".into(),
        name: "myapp-1".into(),
        labels: [
            ("app".to_string(), "myapp".to_string()),
            ("linkerd.io/control-plane-ns".to_string(), "linkerd".to_string()),
        ]
        .into(),
        annotations: Default::default(),
        service_account: "myapp".into(),
        ip: "198.18.0.5".into(),
        ports: vec![NamedPort {
            name: Some("http".into()),
            port: 8080,
        }],
        ready: true,
    };
    let out = admin
        .request(Method::POST, "/v1/pods", serde_json::to_vec(&reg).unwrap())
        .await
        .unwrap();
    let token = out["token"].as_str().unwrap();
    assert_eq!(
        c.tokens.verify(token.as_bytes()).unwrap(),
        ("production".into(), "myapp".into(), "myapp-1".into())
    );
    let pod: Pod = c.store.get("production", "myapp-1").await.unwrap().unwrap();
    assert_eq!(pod.status.unwrap().pod_ip.as_deref(), Some("198.18.0.5"));
    let proxies = admin
        .request(Method::GET, "/v1/proxies", Vec::new())
        .await
        .unwrap();
    assert_eq!(
        proxies["proxies"][0]["identity"],
        "myapp.production.serviceaccount.identity.linkerd.cluster.local"
    );

    let mut bad = reg.clone();
    bad.ip = "not-an-ip".into();
    let err = admin
        .request(Method::POST, "/v1/pods", serde_json::to_vec(&bad).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("expected an IPv4 or IPv6 address"),
        "{err}"
    );
    admin
        .request(Method::DELETE, "/v1/pods/production/myapp-1", Vec::new())
        .await
        .unwrap();
    assert!(
        c.store
            .get::<Pod>("production", "myapp-1")
            .await
            .unwrap()
            .is_none()
    );
}

fn client_with(c: &Cluster, id: &IdentityName) -> ApiClient {
    let (chain, key) = issue(&c.issuer, id, Duration::from_secs(3600), SystemTime::now()).unwrap();
    ApiClient::new(
        c.endpoint.clone(),
        &c.anchors,
        &CertStore::with_cert(chain, key).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_linked_clusters_mirror_reads_and_watches_but_cannot_write() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Service;
    use strait_api::WatchEvent;

    use super::store::ApiStore;

    let c = start().await;
    let reader_id = IdentityName::new(
        format!("{REMOTE_ACCESS_SA_PREFIX}west"),
        MULTICLUSTER_NS,
        "cluster.local",
    )
    .unwrap();
    assert!(is_remote_access(&reader_id, "cluster.local"));
    assert!(!is_remote_access(&reader_id, "other.domain"));
    assert!(!is_remote_access(&ident(ADMIN_SA), "cluster.local"));
    let admin = ApiStore::new(client_as(&c, ADMIN_SA), Duration::from_millis(20));
    let reader = ApiStore::new(client_with(&c, &reader_id), Duration::from_millis(20));
    let svc = |name: &str| -> strait_api::Object {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"port": 80}]},
        }))
        .unwrap();
        s.into_object()
    };
    admin.apply(vec![svc("a")]).await.unwrap();
    let mut watch = reader.watch::<Service>();
    let Some(Ok(WatchEvent::Restarted(all))) = watch.next().await else {
        panic!("no initial list")
    };
    assert_eq!(all.len(), 1);
    admin.apply(vec![svc("b")]).await.unwrap();
    let Some(Ok(WatchEvent::Applied(b))) = watch.next().await else {
        panic!("no change")
    };
    assert_eq!(b.metadata.name.as_deref(), Some("b"));
    admin
        .delete(&ObjectKey::new(KindId::Service, "default", "a"))
        .await
        .unwrap()
        .unwrap();
    let Some(Ok(WatchEvent::Deleted(a))) = watch.next().await else {
        panic!("no delete")
    };
    assert_eq!(a.metadata.name.as_deref(), Some("a"));
    let got: Option<Service> = reader.get("default", "b").await.unwrap();
    assert!(got.is_some());
    let e = reader.apply(vec![svc("c")]).await.unwrap_err().to_string();
    assert!(e.contains("may only read objects"), "{e}");
    let e = reader
        .delete(&ObjectKey::new(KindId::Service, "default", "b"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("may only read objects"), "{e}");
    // Another multicluster identity is not a reader.
    let other = IdentityName::new("linkerd-service-mirror", MULTICLUSTER_NS, "cluster.local").unwrap();
    let e = ApiStore::new(client_with(&c, &other), Duration::from_millis(20))
        .list::<Service>(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not the cluster admin"), "{e}");
}

#[tokio::test]
async fn the_gateway_reads_services_pods_and_links_and_nothing_else() {
    use k8s_openapi::api::core::v1::{Pod, Secret, Service};

    use super::store::ApiStore;

    let c = start().await;
    let gw_id = IdentityName::new(GATEWAY_SA, MULTICLUSTER_NS, "cluster.local").unwrap();
    assert!(is_gateway(&gw_id, "cluster.local"));
    assert!(!is_gateway(&gw_id, "other.domain"));
    assert!(!is_gateway(&ident(ADMIN_SA), "cluster.local"));
    let admin = ApiStore::new(client_as(&c, ADMIN_SA), Duration::from_millis(20));
    let gw = ApiStore::new(client_with(&c, &gw_id), Duration::from_millis(20));
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .unwrap();
    admin.apply(vec![svc.clone().into_object()]).await.unwrap();
    assert_eq!(gw.list::<Service>(None).await.unwrap().len(), 1);
    assert!(gw.get::<Service>("default", "a").await.unwrap().is_some());
    gw.list::<Pod>(Some("default")).await.unwrap();
    gw.list::<strait_api::mesh::link::Link>(None).await.unwrap();
    let e = gw.list::<Secret>(None).await.unwrap_err().to_string();
    assert!(e.contains("may only read services, pods and links"), "{e}");
    let e = gw.apply(vec![svc.into_object()]).await.unwrap_err().to_string();
    assert!(e.contains("may only read services, pods and links"), "{e}");
    let e = gw
        .delete(&ObjectKey::new(KindId::Service, "default", "a"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("may only read services, pods and links"), "{e}");
}

#[tokio::test]
async fn a_status_write_keeps_the_spec_as_stored_and_creates_nothing() {
    use k8s_openapi::api::core::v1::Service;

    use super::store::ApiStore;
    let c = start().await;
    let admin = ApiStore::new(client_as(&c, ADMIN_SA), Duration::from_millis(20));
    let svc = |port: u16, ingress: Option<&str>| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"port": port}]},
            "status": {"loadBalancer": {"ingress": ingress.map(|ip| vec![serde_json::json!({"ip": ip})])}},
        }))
        .unwrap()
    };
    admin.apply(vec![svc(80, None).into_object()]).await.unwrap();
    // A controller read the Service; meanwhile a user changes its spec.
    let read: Service = admin.get("default", "web").await.unwrap().unwrap();
    admin.apply(vec![svc(8080, None).into_object()]).await.unwrap();
    let mut report = read;
    report.status = svc(0, Some("10.0.0.7")).status;
    admin.apply_status(report.into_object()).await.unwrap();
    let now: Service = c.store.get("default", "web").await.unwrap().unwrap();
    assert_eq!(
        now.spec.unwrap().ports.unwrap()[0].port,
        8080,
        "the user's spec stays"
    );
    assert_eq!(
        now.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0]
            .ip
            .as_deref(),
        Some("10.0.0.7"),
        "the status is written"
    );
    // The status of an object that does not exist creates nothing.
    let mut gone = svc(80, Some("10.0.0.8"));
    gone.metadata.name = Some("gone".into());
    admin.apply_status(gone.into_object()).await.unwrap();
    assert!(c.store.get::<Service>("default", "gone").await.unwrap().is_none());
}

/// As Linkerd's injector does for Services, a Service applied without its own
/// `config.linkerd.io/opaque-ports` takes its namespace's: the namespace of the same
/// batch, or the stored one.
#[tokio::test]
async fn services_take_their_namespace_s_opaque_ports() {
    use k8s_openapi::api::core::v1::Service;
    let c = start().await;
    let admin = client_as(&c, ADMIN_SA);
    let svc = |name: &str, own: Option<&str>| {
        let ann = own
            .map(|p| format!("\n  annotations: {{config.linkerd.io/opaque-ports: \"{p}\"}}"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: db{ann}\nspec:\n  ports: [{{port: 5000}}]\n"
        )
    };
    let batch = [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: db\n  annotations: {config.linkerd.io/opaque-ports: \"5000-5010\"}\n".to_string(),
        svc("inherits", None),
        svc("own", Some("6000")),
    ]
    .join("---\n");
    admin
        .request(Method::POST, "/v1/apply", batch.clone().into_bytes())
        .await
        .unwrap();
    admin
        .request(Method::POST, "/v1/apply", svc("later", None).into_bytes())
        .await
        .unwrap();
    let opaque = |s: Service| {
        s.metadata
            .annotations
            .and_then(|a| a.get("config.linkerd.io/opaque-ports").cloned())
    };
    let get = |name: &'static str| {
        let store = c.store.clone();
        async move { store.get::<Service>("db", name).await.unwrap().unwrap() }
    };
    assert_eq!(opaque(get("inherits").await).as_deref(), Some("5000-5010"));
    assert_eq!(opaque(get("own").await).as_deref(), Some("6000"));
    assert_eq!(opaque(get("later").await).as_deref(), Some("5000-5010"));
    // Applying the same manifests again changes nothing.
    assert_unchanged(&admin, batch).await;
    // A namespace without the annotation gives nothing.
    admin
        .request(
            Method::POST,
            "/v1/apply",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: plain\n  namespace: default\nspec:\n  ports: [{port: 80}]\n"
                .as_bytes()
                .to_vec(),
        )
        .await
        .unwrap();
    let plain: Service = c.store.get("default", "plain").await.unwrap().unwrap();
    assert_eq!(opaque(plain), None);
}
