use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::update::Update as U;
use strait_api::Store;
use strait_api::store::local::LocalStore;

use super::*;
use crate::discovery::index::{ClusterInfo, run};
use crate::test_support::{apply, next, serve_grpc};

#[test]
fn authorities() {
    let cd = "cluster.local";
    let svc = |ns: &str, n: &str, port| Target::Service {
        id: (ns.into(), n.into()),
        port,
    };
    assert_eq!(
        parse_authority("myapp.production.svc.cluster.local:80", cd),
        Ok(svc("production", "myapp", 80))
    );
    assert_eq!(
        parse_authority("myapp.production.svc.cluster.local.:8080", cd),
        Ok(svc("production", "myapp", 8080))
    );
    assert_eq!(
        parse_authority("myapp.production.svc:80", cd),
        Ok(svc("production", "myapp", 80))
    );
    assert_eq!(
        parse_authority("myapp.production.svc.cluster.local", cd),
        Ok(svc("production", "myapp", 80))
    );
    assert_eq!(
        parse_authority("198.18.0.5:8080", cd),
        Ok(Target::Ip("198.18.0.5:8080".parse().unwrap()))
    );
    assert_eq!(
        parse_authority("[fd00::1]:80", cd),
        Ok(Target::Ip("[fd00::1]:80".parse().unwrap()))
    );
    assert_eq!(
        parse_authority("web-0.nginx.production.svc.cluster.local:8080", cd),
        Ok(Target::PodHost {
            service: ("production".into(), "nginx".into()),
            hostname: "web-0".into(),
            port: 8080
        })
    );
    assert!(
        parse_authority("example.com:443", cd)
            .unwrap_err()
            .contains("not a service authority")
    );
    assert!(parse_authority("myapp.production.svc.cluster.local:http", cd).is_err());
}

fn ep(addr: &str) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        labels: Default::default(),
        identity: None,
        h2: false,
        opaque_transport_port: None,
        authority_override: None,
    }
}

fn res(addrs: &[&str]) -> Resolution {
    Resolution::Endpoints(Arc::new(
        addrs.iter().map(|a| (a.parse().unwrap(), ep(a))).collect(),
    ))
}

fn kinds(updates: &[pb::Update]) -> Vec<String> {
    updates
        .iter()
        .map(|u| match u.update.as_ref().unwrap() {
            U::Add(s) => format!("add{}", s.addrs.len()),
            U::Remove(s) => format!("remove{}", s.addrs.len()),
            U::NoEndpoints(n) => format!("none(exists={})", n.exists),
        })
        .collect()
}

#[test]
fn diffs() {
    let cases: &[(Option<Resolution>, Resolution, &[&str])] = &[
        (None, Resolution::NotFound, &["none(exists=false)"]),
        (None, res(&[]), &["none(exists=true)"]),
        (None, res(&["198.18.0.1:80", "198.18.0.2:80"]), &["add2"]),
        (
            Some(res(&["198.18.0.1:80"])),
            res(&["198.18.0.1:80", "198.18.0.2:80"]),
            &["add1"],
        ),
        (
            Some(res(&["198.18.0.1:80", "198.18.0.2:80"])),
            res(&["198.18.0.2:80"]),
            &["remove1"],
        ),
        (
            Some(res(&["198.18.0.1:80"])),
            res(&[]),
            &["remove1", "none(exists=true)"],
        ),
        (
            Some(res(&["198.18.0.1:80"])),
            Resolution::NotFound,
            &["remove1", "none(exists=false)"],
        ),
        (Some(res(&["198.18.0.1:80"])), res(&["198.18.0.1:80"]), &[]),
        (Some(Resolution::NotFound), Resolution::NotFound, &[]),
        (Some(Resolution::NotFound), res(&[]), &["none(exists=true)"]),
        (Some(res(&[])), res(&[]), &[]),
    ];
    for (prev, next, want) in cases {
        assert_eq!(kinds(&diff(prev.as_ref(), next)), *want, "{prev:?} -> {next:?}");
    }
}

const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: production}
---
apiVersion: v1
kind: Service
metadata: {name: myapp, namespace: production}
spec:
  selector: {app: myapp}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: myapp-1
  namespace: production
  labels: {app: myapp, linkerd.io/control-plane-ns: linkerd, linkerd.io/proxy-deployment: myapp}
spec:
  serviceAccountName: myapp
  containers: [{name: app, image: "myapp:latest"}]
status: {podIP: 198.18.0.5}
---
apiVersion: v1
kind: Pod
metadata:
  name: myapp-2
  namespace: production
  labels: {app: myapp}
spec:
  containers: [{name: app, image: "myapp:latest"}]
status: {podIP: 198.18.0.6}
"#;

fn slice(addrs: &[(&str, &str)]) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|(ip, pod)| {
            format!("  - addresses: [{ip}]\n    conditions: {{ready: true}}\n    targetRef: {{kind: Pod, name: {pod}, namespace: production}}\n")
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: myapp-x\n  namespace: production\n  labels: {{kubernetes.io/service-name: myapp}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n{}",
        eps.concat()
    )
}

async fn serve(store: LocalStore) -> DestinationClient<tonic::transport::Channel> {
    let index = Index::new(ClusterInfo::default());
    tokio::spawn(run(index.clone(), store));
    let addr = serve_grpc(tonic::service::Routes::new(
        DestinationService::new(index).into_server(),
    ))
    .await;
    DestinationClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// A `Get` stream for `path` from a destination service over `store`.
async fn watch(store: &LocalStore, path: &str) -> tonic::Streaming<pb::Update> {
    let mut client = serve(store.clone()).await;
    client.get(get(path)).await.unwrap().into_inner()
}

/// `myapp` growing by one meshed pod at a time, from `myapp-1` at 198.18.0.5.
struct Growing {
    members: Vec<(String, String)>,
}

impl Growing {
    fn new() -> Self {
        Self {
            members: vec![("198.18.0.5".to_string(), "myapp-1".to_string())],
        }
    }

    /// The new pod and the slice naming every member, as YAML.
    fn add(&mut self, pod: &str, ip: &str) -> (String, String) {
        self.members.push((ip.to_string(), pod.to_string()));
        let refs: Vec<(&str, &str)> = self
            .members
            .iter()
            .map(|(a, p)| (a.as_str(), p.as_str()))
            .collect();
        (meshed_pod(pod, ip), slice(&refs))
    }
}

/// A meshed pod of `myapp` in `production`.
fn meshed_pod(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: production\n  labels: {{app: myapp, linkerd.io/control-plane-ns: linkerd}}\nspec:\n  serviceAccountName: myapp\n  containers: [{{name: app, image: \"myapp:latest\"}}]\nstatus: {{podIP: {ip}}}\n"
    )
}

fn get(path: &str) -> pb::GetDestination {
    pb::GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    }
}

#[tokio::test]
async fn get_follows_endpoints_live() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    apply(
        &store,
        &slice(&[("198.18.0.5", "myapp-1"), ("198.18.0.6", "myapp-2")]),
    )
    .await;
    let mut stream = watch(&store, "myapp.production.svc.cluster.local:80").await;

    let Some(U::Add(set)) = next(&mut stream).await.update else {
        panic!("expected the endpoints")
    };
    assert_eq!(set.addrs.len(), 2);
    let meshed = set
        .addrs
        .iter()
        .find(|a| a.metric_labels.get("pod").map(String::as_str) == Some("myapp-1"))
        .unwrap();
    assert_eq!(meshed.addr.as_ref().unwrap().port, 8080);
    let Some(pb::tls_identity::Strategy::DnsLikeIdentity(id)) =
        meshed.tls_identity.as_ref().unwrap().strategy.as_ref()
    else {
        panic!("a meshed endpoint has an identity")
    };
    assert_eq!(
        id.name,
        "myapp.production.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(meshed.metric_labels["deployment"], "myapp");
    assert_eq!(
        (
            set.metric_labels["namespace"].as_str(),
            set.metric_labels["service"].as_str()
        ),
        ("production", "myapp"),
        "namespace and service are the set's labels, as in Linkerd"
    );
    assert!(!meshed.metric_labels.contains_key("service"));
    assert!(matches!(
        meshed.protocol_hint.as_ref().unwrap().protocol,
        Some(pb::protocol_hint::Protocol::H2(_))
    ));
    let plain = set
        .addrs
        .iter()
        .find(|a| a.metric_labels.get("pod").map(String::as_str) == Some("myapp-2"))
        .unwrap();
    assert!(plain.tls_identity.is_none(), "an unmeshed pod gets no identity");

    apply(&store, &slice(&[("198.18.0.5", "myapp-1")])).await;
    let Some(U::Remove(gone)) = next(&mut stream).await.update else {
        panic!("expected a removal")
    };
    assert_eq!(gone.addrs.len(), 1);

    store
        .delete(&strait_api::ObjectKey::new(
            strait_api::KindId::EndpointSlice,
            "production",
            "myapp-x",
        ))
        .await
        .unwrap();
    assert!(matches!(next(&mut stream).await.update, Some(U::Remove(_))));
    assert!(matches!(
        next(&mut stream).await.update,
        Some(U::NoEndpoints(pb::NoEndpoints { exists: true }))
    ));
}

#[tokio::test]
async fn an_unknown_service_stays_open_until_it_exists() {
    let store = LocalStore::in_memory();
    apply(
        &store,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: production}\n",
    )
    .await;
    let mut stream = watch(&store, "myapp.production.svc.cluster.local:80").await;
    assert!(matches!(
        next(&mut stream).await.update,
        Some(U::NoEndpoints(pb::NoEndpoints { exists: false }))
    ));
    apply(&store, WORLD).await;
    assert!(matches!(
        next(&mut stream).await.update,
        Some(U::NoEndpoints(pb::NoEndpoints { exists: true }))
    ));
    apply(&store, &slice(&[("198.18.0.5", "myapp-1")])).await;
    assert!(matches!(next(&mut stream).await.update, Some(U::Add(_))));
}

#[tokio::test]
async fn get_by_pod_ip_and_bad_authorities() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    let mut client = serve(store).await;
    let mut stream = client.get(get("198.18.0.5:8080")).await.unwrap().into_inner();
    let Some(U::Add(set)) = next(&mut stream).await.update else {
        panic!()
    };
    assert_eq!(set.addrs[0].metric_labels["pod"], "myapp-1");
    assert!(set.addrs[0].tls_identity.is_some());

    let err = client.get(get("example.com:443")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("not a service authority"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn profiles_follow_service_profiles_and_traffic_splits() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    let mut client = serve(store.clone()).await;
    let mut stream = client
        .get_profile(get("myapp.production.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    let p = next(&mut stream).await;
    assert_eq!(p.fully_qualified_name, "myapp.production.svc.cluster.local");
    assert!(p.routes.is_empty() && p.dst_overrides.is_empty());

    apply(
        &store,
        include_str!("../../../../examples/linkerd-seed/08-serviceprofile.yaml"),
    )
    .await;
    let p = next(&mut stream).await;
    assert_eq!(p.routes.len(), 1);
    assert!(p.retry_budget.is_some());

    apply(
        &store,
        include_str!("../../../../examples/linkerd-seed/04-trafficsplit-canary.yaml"),
    )
    .await;
    let p = next(&mut stream).await;
    assert_eq!(p.dst_overrides.len(), 2);
    assert_eq!(p.dst_overrides[0].weight, 90_000);
}

/// Profiles mark the cluster's default opaque ports (`--default-opaque-ports`) opaque on
/// a Service without its own list and on addresses outside the cluster, not Linkerd's list.
#[tokio::test]
async fn profiles_use_the_cluster_s_default_opaque_ports() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    let index = Index::new(ClusterInfo {
        default_opaque_ports: vec![(80, 80), (9000, 9010)],
        ..ClusterInfo::default()
    });
    tokio::spawn(run(index.clone(), store.clone()));
    let id: NsName = ("production".into(), "myapp".into());
    // Asked once the index knows the Service (before, its profile is an unknown one's).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while index.service(&id).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index never saw the Service"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let addr = serve_grpc(tonic::service::Routes::new(
        DestinationService::new(index.clone()).into_server(),
    ))
    .await;
    let mut client = DestinationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut myapp = client
        .get_profile(get("myapp.production.svc.cluster.local:80"))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut myapp).await;
    assert_eq!(
        first.fully_qualified_name, "myapp.production.svc.cluster.local",
        "the Service's profile"
    );
    assert!(first.opaque_protocol, "port 80 is a default opaque port");
    for (path, opaque) in [("198.19.0.9:9005", true), ("198.19.0.9:3306", false)] {
        let mut stream = client.get_profile(get(path)).await.unwrap().into_inner();
        assert_eq!(next(&mut stream).await.opaque_protocol, opaque, "{path}");
    }
    // The Service's own annotation replaces the defaults, live.
    apply(
        &store,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: myapp\n  namespace: production\n  annotations: {config.linkerd.io/opaque-ports: \"443\"}\nspec:\n  selector: {app: myapp}\n  ports: [{port: 80, targetPort: 8080}]\n",
    )
    .await;
    assert!(
        !next(&mut myapp).await.opaque_protocol,
        "the stream follows the annotation"
    );
}

#[tokio::test]
async fn get_by_pod_dns_name() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    apply(
        &store,
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: myapp-x\n  namespace: production\n  labels: {kubernetes.io/service-name: myapp}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints:\n  - addresses: [198.18.0.5]\n    hostname: myapp-0\n    conditions: {ready: true}\n    targetRef: {kind: Pod, name: myapp-1, namespace: production}\n",
    )
    .await;
    let addr = serve_grpc(tonic::service::Routes::new(
        DestinationService::new(index_for(store).await).into_server(),
    ))
    .await;
    let mut client = DestinationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut stream = client
        .get(get("myapp-0.myapp.production.svc.cluster.local:9000"))
        .await
        .unwrap()
        .into_inner();
    let Some(U::Add(set)) = next(&mut stream).await.update else {
        panic!("the pod's endpoint")
    };
    assert_eq!(set.addrs.len(), 1);
    assert_eq!(
        set.addrs[0].addr.as_ref().unwrap().port,
        9000,
        "the pod port asked for, not a service port"
    );
    assert_eq!(set.addrs[0].metric_labels["pod"], "myapp-1");
    let mut none = client
        .get(get("nobody.myapp.production.svc.cluster.local:9000"))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        next(&mut none).await.update,
        Some(U::NoEndpoints(pb::NoEndpoints { exists: true }))
    ));
}

async fn index_for(store: LocalStore) -> Arc<Index> {
    let index = Index::new(ClusterInfo::default());
    tokio::spawn(run(index.clone(), store));
    index
}

/// A new meshed pod and the slice that names it, applied in one batch, reach a stream
/// together: the first update that carries the address already carries its identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_and_its_slice_in_one_batch_arrive_with_the_identity() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    apply(&store, &slice(&[("198.18.0.5", "myapp-1")])).await;
    let mut stream = watch(&store, "myapp.production.svc.cluster.local:80").await;
    let first = next(&mut stream).await.update;
    let Some(U::Add(_)) = first else {
        panic!("expected the first endpoints, got {first:?}")
    };
    let mut myapp = Growing::new();
    for i in 0..10u8 {
        let pod = format!("myapp-n{i}");
        let (pod_yaml, slice_yaml) = myapp.add(&pod, &format!("198.18.1.{i}"));
        apply(&store, &format!("{pod_yaml}---\n{slice_yaml}")).await;
        let Some(U::Add(set)) = next(&mut stream).await.update else {
            panic!("expected {pod} to be added")
        };
        assert_eq!(set.addrs.len(), 1, "only the new pod is added");
        assert!(
            set.addrs[0].tls_identity.is_some(),
            "round {i}: {pod} arrived without its identity"
        );
    }
}

/// The same property seen as closely as possible: a reader that resolves the moment the
/// namespace's generation moves never finds a new meshed address without its identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_told_only_after_a_whole_batch_is_indexed() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    apply(&store, &slice(&[("198.18.0.5", "myapp-1")])).await;
    let index = index_for(store.clone()).await;
    let svc: NsName = ("production".into(), "myapp".into());
    let mut rx = index.subscribe("production");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (index, stop, svc) = (index.clone(), stop.clone(), svc.clone());
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if rx.has_changed().unwrap_or(false) {
                    rx.mark_unchanged();
                    if let Resolution::Endpoints(eps) = index.resolve(&svc, 80, Caller::Linkerd) {
                        bad.extend(eps.values().filter(|e| e.identity.is_none()).map(|e| e.addr));
                    }
                }
                std::hint::spin_loop();
            }
            bad
        })
    };
    let mut myapp = Growing::new();
    for i in 0..150u8 {
        let (pod_yaml, slice_yaml) = myapp.add(&format!("myapp-n{i}"), &format!("198.18.1.{i}"));
        // Slice first, as an API apply orders kinds: the store still publishes the Pod first.
        apply(&store, &format!("{slice_yaml}---\n{pod_yaml}")).await;
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let bad = reader.join().unwrap();
    assert!(bad.is_empty(), "meshed addresses seen without identity: {bad:?}");
}

/// A mirror of a remote Service resolves to the remote gateway, meshed with the gateway's
/// identity and with the remote Service's name as the authority to send, as in Linkerd.
#[tokio::test]
async fn a_mirror_resolves_to_the_gateway_with_its_identity_and_the_remote_authority() {
    let store = LocalStore::in_memory();
    apply(
        &store,
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: production}
---
apiVersion: v1
kind: Service
metadata:
  name: myapp-east
  namespace: production
  labels: {mirror.linkerd.io/mirrored-service: "true", mirror.linkerd.io/cluster-name: east}
  annotations:
    mirror.linkerd.io/remote-gateway-identity: linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local
    mirror.linkerd.io/remote-svc-fq-name: myapp.production.svc.east.local
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: myapp-east-gateway
  namespace: production
  labels: {kubernetes.io/service-name: myapp-east}
addressType: IPv4
ports: [{name: http, port: 4143}]
endpoints:
  - addresses: [198.18.16.2]
    conditions: {ready: true}
"#,
    )
    .await;
    let mut stream = watch(&store, "myapp-east.production.svc.cluster.local:8080").await;
    let Some(U::Add(set)) = next(&mut stream).await.update else {
        panic!("expected the gateway endpoint")
    };
    assert_eq!(set.addrs.len(), 1);
    let a = &set.addrs[0];
    assert_eq!(a.addr.as_ref().unwrap().port, 4143);
    let Some(pb::tls_identity::Strategy::DnsLikeIdentity(id)) =
        a.tls_identity.as_ref().unwrap().strategy.as_ref()
    else {
        panic!("the gateway endpoint is meshed")
    };
    assert_eq!(
        id.name,
        "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(
        a.authority_override.as_ref().unwrap().authority_override,
        "myapp.production.svc.east.local:8080"
    );
}

/// Streams of one service share a cached resolution; each change still reaches all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_one_service_all_follow_every_change() {
    let store = LocalStore::in_memory();
    apply(&store, WORLD).await;
    apply(&store, &slice(&[("198.18.0.5", "myapp-1")])).await;
    let mut client = serve(store.clone()).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = client
            .get(get("myapp.production.svc.cluster.local:80"))
            .await
            .unwrap()
            .into_inner();
        let Some(U::Add(set)) = next(&mut s).await.update else {
            panic!("expected the first endpoints")
        };
        assert_eq!(set.addrs.len(), 1);
        streams.push(s);
    }
    let mut myapp = Growing::new();
    for i in 0..10u8 {
        let pod = format!("myapp-c{i}");
        let (pod_yaml, slice_yaml) = myapp.add(&pod, &format!("198.18.2.{i}"));
        apply(&store, &format!("{pod_yaml}---\n{slice_yaml}")).await;
        for (n, s) in streams.iter_mut().enumerate() {
            let Some(U::Add(set)) = next(s).await.update else {
                panic!("stream {n} missed {pod}")
            };
            let got: Vec<_> = set.addrs.iter().map(|a| a.metric_labels["pod"].clone()).collect();
            assert_eq!(got, std::slice::from_ref(&pod), "stream {n}");
        }
    }
}
