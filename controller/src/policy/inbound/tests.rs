use std::time::Duration;

use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use pb::authn::Permit;
use pb::authn::permit_mesh_tls::Clients;
use strait_api::store::local::LocalStore;

use super::*;
use crate::test_support::{next, objects, serve_grpc};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: myapp-1
  namespace: production
  labels: {app: myapp}
spec:
  containers:
    - name: app
      image: myapp:latest
      ports: [{name: http, containerPort: 8080}]
      readinessProbe: {httpGet: {path: /ready, port: http}}
status: {podIP: 198.18.0.5}
"#;

fn pod(yaml: &str) -> Pod {
    strait_api::Kind::from_object(objects(yaml).remove(0)).unwrap()
}

fn facts(p: &Pod) -> PodFacts {
    PodFacts::from_pod(p).expect("test pods have a namespace and a name")
}

fn namespace_policy(yaml: &str) -> NamespacePolicy {
    let mut ns = NamespacePolicy::default();
    for o in objects(yaml) {
        let name = o.meta().name.clone().unwrap();
        match o {
            strait_api::Object::Server(s) => {
                ns.servers.insert(name, s);
            }
            strait_api::Object::ServerAuthorization(s) => {
                ns.server_authorizations.insert(name, s);
            }
            strait_api::Object::AuthorizationPolicy(s) => {
                ns.authorization_policies.insert(name, s);
            }
            strait_api::Object::MeshTlsAuthentication(s) => {
                ns.mesh_tls.insert(name, s);
            }
            strait_api::Object::NetworkAuthentication(s) => {
                ns.networks.insert(name, s);
            }
            strait_api::Object::PolicyHttpRoute(r) => {
                ns.http_routes.insert(name, r);
            }
            strait_api::Object::Namespace(n) => ns.annotations = n.metadata.annotations.unwrap_or_default(),
            other => panic!("unexpected {other:?}"),
        }
    }
    ns
}

fn authn_summary(a: &pb::Authz) -> String {
    match a.authentication.as_ref().and_then(|x| x.permit.as_ref()) {
        Some(Permit::Unauthenticated(_)) => "unauthenticated".into(),
        Some(Permit::MeshTls(m)) => match m.clients.as_ref() {
            Some(Clients::Unauthenticated(_)) => "any-mesh".into(),
            Some(Clients::Identities(ids)) => {
                let mut v: Vec<String> = ids.identities.iter().map(|i| i.name.clone()).collect();
                v.extend(ids.suffixes.iter().map(|s| format!("*.{}", s.parts.join("."))));
                v.join(",")
            }
            None => "?".into(),
        },
        None => "none".into(),
    }
}

fn summary(s: &pb::Server) -> Vec<(String, String, usize)> {
    s.authorizations
        .iter()
        .map(|a| (a.labels["name"].clone(), authn_summary(a), a.networks.len()))
        .collect()
}

#[test]
fn workloads() {
    assert_eq!(
        parse_workload(r#"{"ns":"production","pod":"myapp-1"}"#),
        Ok(("production".into(), "myapp-1".into()))
    );
    assert_eq!(
        parse_workload("production:myapp-1"),
        Ok(("production".into(), "myapp-1".into()))
    );
    assert!(parse_workload("myapp-1").is_err());
    assert!(parse_workload(r#"{"ns":"production"}"#).is_err());
}

#[test]
fn without_a_server_the_default_policy_applies() {
    let cfg = InboundConfig::default();
    let p = pod(POD);
    let s = server_policy(&cfg, &facts(&p), 8080, &NamespacePolicy::default());
    assert_eq!(s.labels["name"], "all-unauthenticated");
    assert_eq!(s.labels["kind"], "default");
    assert_eq!(
        summary(&s),
        [(
            "all-unauthenticated".to_string(),
            "unauthenticated".to_string(),
            2
        )]
    );
    let Some(pb::proxy_protocol::Kind::Detect(d)) = s.protocol.unwrap().kind else {
        panic!("detect")
    };
    assert_eq!(d.timeout.unwrap().seconds, 10);
    let route_names: Vec<_> = d
        .http_routes
        .iter()
        .map(|r| format!("{:?}", r.metadata.as_ref().unwrap().kind))
        .collect();
    assert_eq!(
        d.http_routes.len(),
        2,
        "default and probe routes: {route_names:?}"
    );

    let ns = namespace_policy(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n  annotations: {config.linkerd.io/default-inbound-policy: deny}\n",
    );
    let s = server_policy(&cfg, &facts(&p), 8080, &ns);
    assert!(s.authorizations.is_empty(), "deny authorizes no one");
    assert_eq!(s.labels["name"], "deny");

    let mut annotated = p.clone();
    annotated.metadata.annotations = Some(
        [(
            "config.linkerd.io/default-inbound-policy".to_string(),
            "cluster-authenticated".to_string(),
        )]
        .into(),
    );
    let s = server_policy(&cfg, &facts(&annotated), 8080, &ns);
    assert_eq!(
        summary(&s),
        [("cluster-authenticated".to_string(), "any-mesh".to_string(), 5)],
        "the pod wins"
    );
}

/// Without a Server, a port of `config.linkerd.io/proxy-require-identity-inbound-ports`
/// (the pod's, else its namespace's) takes the authenticated form of the default policy,
/// as in Linkerd's policy controller; other ports keep the default.
#[test]
fn ports_that_require_identity_admit_meshed_clients_only() {
    let cfg = InboundConfig::default();
    let annotated = |p: &Pod, pairs: &[(&str, &str)]| {
        let mut p = p.clone();
        p.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    };
    let p = annotated(
        &pod(POD),
        &[(
            "config.linkerd.io/proxy-require-identity-inbound-ports",
            "8080, 9000-9001",
        )],
    );
    let none = NamespacePolicy::default();
    for port in [8080, 9001] {
        let s = server_policy(&cfg, &facts(&p), port, &none);
        assert_eq!(s.labels["name"], "all-authenticated", "{port}");
        assert_eq!(
            summary(&s),
            [("all-authenticated".to_string(), "any-mesh".to_string(), 2)]
        );
    }
    let s = server_policy(&cfg, &facts(&p), 9002, &none);
    assert_eq!(
        s.labels["name"], "all-unauthenticated",
        "other ports keep the default"
    );
    for (default, want) in [
        ("cluster-unauthenticated", "cluster-authenticated"),
        ("cluster-authenticated", "cluster-authenticated"),
        ("deny", "deny"),
        ("audit", "audit"),
    ] {
        let q = annotated(
            &p,
            &[
                ("config.linkerd.io/proxy-require-identity-inbound-ports", "8080"),
                ("config.linkerd.io/default-inbound-policy", default),
            ],
        );
        assert_eq!(
            server_policy(&cfg, &facts(&q), 8080, &none).labels["name"],
            want,
            "{default}"
        );
    }
    // The namespace's annotation applies to a pod without its own; the pod's wins.
    let ns = namespace_policy(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n  annotations: {config.linkerd.io/proxy-require-identity-inbound-ports: \"8080\"}\n",
    );
    let plain = pod(POD);
    assert_eq!(
        server_policy(&cfg, &facts(&plain), 8080, &ns).labels["name"],
        "all-authenticated"
    );
    let own = annotated(
        &plain,
        &[("config.linkerd.io/proxy-require-identity-inbound-ports", "9000")],
    );
    assert_eq!(
        server_policy(&cfg, &facts(&own), 8080, &ns).labels["name"],
        "all-unauthenticated"
    );
    // A pod's unreadable value is ignored: its namespace's still applies.
    let bad = annotated(
        &plain,
        &[(
            "config.linkerd.io/proxy-require-identity-inbound-ports",
            "8080,admin",
        )],
    );
    assert_eq!(
        server_policy(&cfg, &facts(&bad), 8080, &ns).labels["name"],
        "all-authenticated"
    );
    // A Server describing the port decides, whatever the annotation says.
    let with_server = namespace_policy(
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: web, namespace: production}\nspec:\n  podSelector: {matchLabels: {app: myapp}}\n  port: 8080\n  accessPolicy: all-unauthenticated\n",
    );
    let s = server_policy(&cfg, &facts(&p), 8080, &with_server);
    assert_eq!(s.labels["kind"], "server");
}

/// Without a Server, a port is opaque when the pod marks it, or, for a pod that marks
/// none, when it is one of the cluster's default opaque ports.
#[test]
fn without_a_server_the_cluster_s_default_opaque_ports_apply() {
    let kind = |cfg: &InboundConfig, p: &Pod, port| {
        let s = server_policy(cfg, &facts(p), port, &NamespacePolicy::default());
        match s.protocol.unwrap().kind.unwrap() {
            pb::proxy_protocol::Kind::Opaque(_) => "opaque",
            pb::proxy_protocol::Kind::Detect(_) => "detect",
            _ => "other",
        }
    };
    let linkerd = InboundConfig::default();
    let custom = InboundConfig {
        default_opaque_ports: vec![(8080, 8080)],
        ..InboundConfig::default()
    };
    let p = pod(POD);
    assert_eq!(kind(&linkerd, &p, 3306), "opaque");
    assert_eq!(kind(&linkerd, &p, 8080), "detect");
    assert_eq!(kind(&custom, &p, 3306), "detect");
    assert_eq!(kind(&custom, &p, 8080), "opaque");
    let mut annotated = p.clone();
    annotated.metadata.annotations =
        Some([("config.linkerd.io/opaque-ports".to_string(), "9000".to_string())].into());
    assert_eq!(
        kind(&custom, &annotated, 8080),
        "detect",
        "the pod's own list wins"
    );
    assert_eq!(kind(&custom, &annotated, 9000), "opaque");
}

#[test]
fn the_seed_server_authorizations() {
    let cfg = InboundConfig::default();
    let ns = namespace_policy(include_str!(
        "../../../../examples/linkerd-seed/09-server-authorization.yaml"
    ));
    let s = server_policy(&cfg, &facts(&pod(POD)), 8080, &ns);
    assert_eq!(s.labels["name"], "myapp-server");
    assert!(matches!(
        s.protocol.as_ref().unwrap().kind,
        Some(pb::proxy_protocol::Kind::Http2(_))
    ));
    let mut got = summary(&s);
    got.sort();
    assert_eq!(
        got,
        [
            (
                "myapp-auth".to_string(),
                "frontend.production.serviceaccount.identity.linkerd.cluster.local".to_string(),
                5
            ),
            ("myapp-auth-ingress".to_string(), "unauthenticated".to_string(), 5),
            (
                "myapp-auth-namespace".to_string(),
                "*.production.serviceaccount.identity.linkerd.cluster.local".to_string(),
                5
            ),
        ]
    );
    // Another port is not the Server's: the default policy applies there.
    assert_eq!(
        server_policy(&cfg, &facts(&pod(POD)), 9090, &ns).labels["kind"],
        "default"
    );
}

#[test]
fn the_seed_deny_by_default() {
    let cfg = InboundConfig::default();
    let seed = include_str!("../../../../examples/linkerd-seed/10-deny-by-default.yaml");
    let ns = namespace_policy(seed);
    for port in [80, 8080, 65535] {
        let s = server_policy(&cfg, &facts(&pod(POD)), port, &ns);
        assert_eq!(s.labels["name"], "all-pods");
        assert!(s.authorizations.is_empty(), "port {port}: {:?}", summary(&s));
    }
    // allow-frontend-to-api selects Servers labelled app=api: give one that label.
    let labelled = seed.replace(
        "  name: all-pods\n  namespace: production\n",
        "  name: all-pods\n  namespace: production\n  labels: {app: api}\n",
    );
    let s = server_policy(&cfg, &facts(&pod(POD)), 8080, &namespace_policy(&labelled));
    assert_eq!(
        summary(&s),
        [(
            "allow-frontend-to-api".to_string(),
            "frontend.production.serviceaccount.identity.linkerd.cluster.local".to_string(),
            5
        )]
    );
}

#[test]
fn authorization_policies_with_authentications() {
    let cfg = InboundConfig::default();
    let yaml = r#"
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: web, namespace: production}
spec: {podSelector: {matchLabels: {app: myapp}}, port: http}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: frontend-only, namespace: production}
spec:
  identityRefs: [{kind: ServiceAccount, name: frontend}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: office, namespace: production}
spec:
  networks: [{cidr: 198.18.0.0/16}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-from-frontend, namespace: production}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web}
  requiredAuthenticationRefs:
    - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: frontend-only}
    - {group: policy.linkerd.io, kind: NetworkAuthentication, name: office}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: dangling, namespace: production}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web}
  requiredAuthenticationRefs:
    - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: missing}
"#;
    let s = server_policy(&cfg, &facts(&pod(POD)), 8080, &namespace_policy(yaml));
    assert_eq!(s.labels["name"], "web", "the named port http resolves to 8080");
    assert_eq!(
        summary(&s),
        [(
            "web-from-frontend".to_string(),
            "frontend.production.serviceaccount.identity.linkerd.cluster.local".to_string(),
            1
        )],
        "a policy whose authentication is missing authorizes nothing"
    );
}

async fn serve(store: LocalStore) -> InboundServerPoliciesClient<tonic::transport::Channel> {
    let index = InboundIndex::new(InboundConfig::default());
    tokio::spawn(run(index.clone(), store));
    let addr = serve_grpc(tonic::service::Routes::new(
        InboundPolicyService::new(index).into_server(),
    ))
    .await;
    InboundServerPoliciesClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn watch_port_follows_policy_changes() {
    let store = LocalStore::in_memory();
    store
        .apply(objects(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: production}}\n---\n{POD}"
        )))
        .await
        .unwrap();
    let mut client = serve(store.clone()).await;
    let spec = |w: &str| pb::PortSpec {
        workload: w.into(),
        port: 8080,
    };
    // The index fills asynchronously: wait (bounded) until it knows the pod.
    let mut stream = None;
    for _ in 0..500 {
        match client
            .watch_port(spec(r#"{"ns":"production","pod":"myapp-1"}"#))
            .await
        {
            Ok(s) => {
                stream = Some(s.into_inner());
                break;
            }
            Err(e) if e.code() == tonic::Code::NotFound => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut stream = stream.expect("the pod becomes known within 10 s");
    assert_eq!(next(&mut stream).await.labels["name"], "all-unauthenticated");
    store
        .apply(objects(include_str!(
            "../../../../examples/linkerd-seed/09-server-authorization.yaml"
        )))
        .await
        .unwrap();
    let s = next(&mut stream).await;
    assert_eq!(s.labels["name"], "myapp-server");

    let err = client.get_port(spec("production:nope")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client.get_port(spec("nope")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[test]
fn routes_whose_parent_is_the_server_carry_route_level_authorization() {
    let cfg = InboundConfig::default();
    let yaml = r#"
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: web, namespace: production}
spec: {podSelector: {matchLabels: {app: myapp}}, port: 8080, proxyProtocol: HTTP/1}
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: web-from-anyone, namespace: production}
spec:
  server: {name: web}
  client: {unauthenticated: true}
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: admin, namespace: production}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: web}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /admin}, method: POST}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-admin, value: "1"}]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: ops, namespace: production}
spec:
  identities: ["ops.production.serviceaccount.identity.linkerd.cluster.local"]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: admin-from-ops, namespace: production}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: admin}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: ops}]
"#;
    let s = server_policy(&cfg, &facts(&pod(POD)), 8080, &namespace_policy(yaml));
    let Some(pb::proxy_protocol::Kind::Http1(h1)) = s.protocol.unwrap().kind else {
        panic!("HTTP/1")
    };
    assert_eq!(
        h1.routes.len(),
        1,
        "the route replaces the default and probe routes"
    );
    let r = &h1.routes[0];
    let Some(linkerd2_proxy_api::meta::metadata::Kind::Resource(res)) = &r.metadata.as_ref().unwrap().kind
    else {
        panic!()
    };
    assert_eq!((res.kind.as_str(), res.name.as_str()), ("HTTPRoute", "admin"));
    let names: Vec<&str> = r
        .authorizations
        .iter()
        .map(|a| a.labels["name"].as_str())
        .collect();
    assert_eq!(names, ["web-from-anyone", "admin-from-ops"]);
    let m = &r.rules[0].matches[0];
    assert!(
        matches!(m.path.as_ref().unwrap().kind, Some(hr::path_match::Kind::Prefix(ref p)) if p == "/admin")
    );
    assert!(m.method.is_some());
    assert!(matches!(
        r.rules[0].filters[0].kind,
        Some(pb::http_route::filter::Kind::RequestHeaderModifier(_))
    ));
    // The server-level list is unchanged (it guards non-HTTP traffic).
    assert_eq!(s.authorizations.len(), 1);
}

/// A pod's record changing only in what policy reads re-evaluates its streams; a status
/// change does not.
#[test]
fn require_identity_annotations_are_policy_facts() {
    let p = pod(POD);
    let mut q = p.clone();
    q.metadata.annotations = Some(
        [(
            "config.linkerd.io/proxy-require-identity-inbound-ports".to_string(),
            "8080".to_string(),
        )]
        .into(),
    );
    assert!(!same_policy_facts(&facts(&p), &facts(&q)));
    let mut r = p.clone();
    r.status.as_mut().unwrap().pod_ip = Some("198.18.0.6".into());
    assert!(same_policy_facts(&facts(&p), &facts(&r)));
}
