//! End to end over a real socket: a LocalStore feeds the discovery and route indexes, a
//! tonic server serves them on 127.0.0.1:0, and the proxy API's own client asks.

use std::time::Duration;

use linkerd2_proxy_api::meta::metadata::Kind as MetaKind;
use linkerd2_proxy_api::net::TcpAddress;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use strait_api::store::local::LocalStore;
use strait_api::{KindId, ObjectKey, Store};

use super::*;
use crate::discovery::index::ClusterInfo;
use crate::test_support::{apply, next, serve_grpc};

const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: production}
---
apiVersion: v1
kind: Service
metadata: {name: myapp, namespace: production}
spec:
  clusterIP: 198.18.0.10
  selector: {app: myapp}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: myapp-v1, namespace: production}
spec:
  clusterIP: 198.18.0.11
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: myapp-v2, namespace: production}
spec:
  clusterIP: 198.18.0.12
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: myapp-1, namespace: production, labels: {app: myapp}}
spec:
  containers: [{name: app, image: "myapp:latest"}]
status: {podIP: 198.18.0.5}
"#;

const ROUTING: &str = include_str!("../../../../examples/linkerd-seed/05-httproute-routing.yaml");
const SPLIT: &str = include_str!("../../../../examples/linkerd-seed/04-trafficsplit-canary.yaml");

async fn delete(store: &LocalStore, kind: KindId, name: &str) {
    let gone = store
        .delete(&ObjectKey::new(kind, "production", name))
        .await
        .unwrap();
    assert!(gone.is_some(), "{kind} {name} existed");
}

/// Waits (at most 5 s) until `ready` holds, re-checking whenever `rx` moves.
async fn until(mut rx: watch::Receiver<u64>, ready: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !ready() {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the index caught up within 5s");
}

/// Serves both indexes fed from `store`, once they hold the Service `myapp`.
async fn serve(store: LocalStore) -> OutboundPoliciesClient<tonic::transport::Channel> {
    let discovery = Index::new(ClusterInfo::default());
    let routes = RouteIndex::new();
    let id: NsName = ("production".into(), "myapp".into());
    let (drx, rrx) = (discovery.subscribe("production"), routes.subscribe("production"));
    tokio::spawn(crate::discovery::index::run(discovery.clone(), store.clone()));
    tokio::spawn(run(routes.clone(), store));
    until(drx, || discovery.service(&id).is_some()).await;
    until(rrx, || routes.read(|s| s.services.contains_key(&id))).await;

    let addr = serve_grpc(tonic::service::Routes::new(
        OutboundPolicyService::new(discovery, routes).into_server(),
    ))
    .await;
    OutboundPoliciesClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn authority(a: &str) -> pb::TrafficSpec {
    pb::TrafficSpec {
        source_workload: "production:client".into(),
        target: Some(Target::Authority(a.into())),
    }
}

fn addr(a: &str) -> pb::TrafficSpec {
    let a: std::net::SocketAddr = a.parse().unwrap();
    pb::TrafficSpec {
        source_workload: "production:client".into(),
        target: Some(Target::Addr(TcpAddress::from(a))),
    }
}

/// `(protocol, route names, split weights of the first rule)` of a policy.
fn summary(p: &pb::OutboundPolicy) -> (&'static str, Vec<String>, Vec<u32>) {
    use pb::proxy_protocol::Kind;
    let routes = match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(Kind::Detect(d)) => &d.http1.as_ref().unwrap().routes,
        Some(Kind::Opaque(_)) => return ("opaque", vec![], vec![]),
        other => panic!("unexpected protocol {other:?}"),
    };
    let names = routes
        .iter()
        .map(|r| match r.metadata.as_ref().and_then(|m| m.kind.as_ref()) {
            Some(MetaKind::Resource(r)) => r.name.clone(),
            Some(MetaKind::Default(d)) => format!("default:{d}"),
            None => "?".into(),
        })
        .collect();
    let weights = match routes[0].rules[0].backends.as_ref().and_then(|b| b.kind.as_ref()) {
        Some(pb::http_route::distribution::Kind::RandomAvailable(r)) => {
            r.backends.iter().map(|b| b.weight).collect()
        }
        _ => vec![],
    };
    ("detect", names, weights)
}

fn parent(p: &pb::OutboundPolicy) -> (String, String, u32) {
    match p.metadata.as_ref().and_then(|m| m.kind.as_ref()) {
        Some(MetaKind::Resource(r)) => (r.namespace.clone(), r.name.clone(), r.port),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn watch_follows_routes_splits_and_the_service_live() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    let mut client = serve(store.clone()).await;
    let mut stream = client
        .watch(authority("myapp.production.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();

    let first = next(&mut stream).await;
    assert_eq!(parent(&first), ("production".into(), "myapp".into(), 80));
    assert_eq!(summary(&first), ("detect", vec!["default:http".into()], vec![]));

    apply(&store, ROUTING).await;
    assert_eq!(
        summary(&next(&mut stream).await),
        ("detect", vec!["myapp-routes".into()], vec![1])
    );

    delete(&store, KindId::PolicyHttpRoute, "myapp-routes").await;
    assert_eq!(
        summary(&next(&mut stream).await),
        ("detect", vec!["default:http".into()], vec![]),
        "back to the default route"
    );

    apply(&store, SPLIT).await;
    assert_eq!(
        summary(&next(&mut stream).await),
        ("detect", vec!["default:http".into()], vec![90_000, 10_000])
    );

    // The Service goes away and comes back opaque: the stream stays open through it and
    // sends nothing until there is a new policy.
    delete(&store, KindId::Service, "myapp").await;
    apply(
        &store,
        &WORLD
            .replace(
                "metadata: {name: myapp, namespace: production}",
                "metadata: {name: myapp, namespace: production, annotations: {config.linkerd.io/opaque-ports: \"80\"}}",
            ),
    )
    .await;
    assert_eq!(summary(&next(&mut stream).await).0, "opaque");
}

#[tokio::test]
async fn watch_follows_a_backend_namespace_it_starts_to_depend_on() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    apply(&store, ROUTING).await;
    let mut client = serve(store.clone()).await;
    let mut stream = client.watch(addr("198.18.0.10:80")).await.unwrap().into_inner();
    // The weighted rule's second backend: its metadata's namespace, and its filter count
    // (a backend that cannot be used has a failure injector).
    let second_backend = |p: &pb::OutboundPolicy| -> (String, usize) {
        let Some(pb::proxy_protocol::Kind::Detect(d)) = p.protocol.as_ref().unwrap().kind.as_ref() else {
            panic!("{p:?}")
        };
        let Some(pb::http_route::distribution::Kind::RandomAvailable(r)) =
            &d.http1.as_ref().unwrap().routes[0].rules[2]
                .backends
                .as_ref()
                .unwrap()
                .kind
        else {
            panic!("{p:?}")
        };
        let b = r.backends[1].backend.as_ref().unwrap();
        let Some(MetaKind::Resource(m)) = b
            .backend
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .kind
            .as_ref()
        else {
            panic!("{b:?}")
        };
        (m.namespace.clone(), b.filters.len())
    };
    assert_eq!(second_backend(&next(&mut stream).await), ("production".into(), 0));

    // The stream starts to depend on staging only now...
    apply(
        &store,
        &ROUTING.replace(
            "        - name: myapp-v2\n          port: 80\n          weight: 10",
            "        - name: myapp-v2\n          namespace: staging\n          port: 80\n          weight: 10",
        ),
    )
    .await;
    assert_eq!(
        second_backend(&next(&mut stream).await),
        ("staging".into(), 1),
        "staging/myapp-v2 does not exist yet: its share fails"
    );
    // ... and sees a change there.
    apply(
        &store,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: staging}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: myapp-v2, namespace: staging}\nspec:\n  ports: [{port: 80}]\n",
    )
    .await;
    assert_eq!(
        second_backend(&next(&mut stream).await),
        ("staging".into(), 0),
        "the backend Service appeared in another namespace"
    );
}

#[tokio::test]
async fn get_by_cluster_ip_and_not_found_targets() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    apply(&store, ROUTING).await;
    let mut client = serve(store.clone()).await;

    let p = client.get(addr("198.18.0.10:80")).await.unwrap().into_inner();
    assert_eq!(parent(&p), ("production".into(), "myapp".into(), 80));
    let p = client.get(addr("198.18.0.11:80")).await.unwrap().into_inner();
    assert_eq!(parent(&p), ("production".into(), "myapp-v1".into(), 80));

    for (spec, what) in [
        (addr("198.18.0.99:80"), "an unknown address"),
        (addr("198.18.0.5:8080"), "a pod IP"),
        (authority("example.com:443"), "a name that is not a service"),
        (
            authority("nope.production.svc.cluster.local:80"),
            "a Service that does not exist",
        ),
    ] {
        let err = client.get(spec.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "Get of {what}: {err:?}");
        let err = client.watch(spec).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "Watch of {what}: {err:?}");
    }
    let err = client
        .get(pb::TrafficSpec {
            source_workload: String::new(),
            target: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
