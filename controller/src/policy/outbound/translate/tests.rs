//! The translation, table-driven: the seed's manifests must produce exactly the protos
//! written out here, and each rule (precedence, attachment, opaque ports, gRPC, annotations,
//! broken backends) is checked case by case.

#![allow(deprecated)] // The expected protos set the deprecated timeouts Linkerd still sends.

use linkerd2_proxy_api::meta::metadata::Kind as MetaKind;
use strait_api::Object;
use strait_api::loader::{LoadOptions, load_str};

use super::*;

const SERVICES: &str = include_str!("../../../../../examples/linkerd-seed/03-services.yaml");
const SPLIT: &str = include_str!("../../../../../examples/linkerd-seed/04-trafficsplit-canary.yaml");
const ROUTING: &str = include_str!("../../../../../examples/linkerd-seed/05-httproute-routing.yaml");
const RETRIES: &str = include_str!("../../../../../examples/linkerd-seed/06-httproute-retries.yaml");
const TIMEOUTS: &str = include_str!("../../../../../examples/linkerd-seed/07-httproute-timeouts.yaml");

fn snapshot(docs: &[&str]) -> Snapshot {
    let mut s = Snapshot::default();
    for doc in docs {
        let loaded = load_str("t.yaml", doc, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        for l in loaded {
            let key = (
                l.object.meta().namespace.clone().unwrap(),
                l.object.meta().name.clone().unwrap(),
            );
            match l.object {
                Object::Service(o) => drop(s.services.insert(key, o)),
                Object::PolicyHttpRoute(o) => drop(s.policy_http_routes.insert(key, o)),
                Object::GatewayHttpRoute(o) => drop(s.gateway_http_routes.insert(key, o)),
                Object::GrpcRoute(o) => drop(s.grpc_routes.insert(key, o)),
                Object::TrafficSplit(o) => drop(s.splits.insert(key, o)),
                other => panic!("unexpected {:?}", other.kind_id()),
            }
        }
    }
    s
}

fn myapp() -> NsName {
    ("production".into(), "myapp".into())
}

fn eval(docs: &[&str], port: u16) -> Evaluation {
    outbound_policy(&snapshot(docs), &myapp(), port, &Settings::default())
}

fn policy(docs: &[&str], port: u16) -> pb::OutboundPolicy {
    let ev = eval(docs, port);
    assert_eq!(ev.warnings, vec![], "no warnings expected");
    ev.policy.expect("the service exists")
}

// === The expected protos, written out ===

fn d(secs: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: secs, nanos })
}

fn svc_meta(name: &str, port: u32) -> meta::Metadata {
    meta::Metadata {
        kind: Some(MetaKind::Resource(meta::Resource {
            group: "core".into(),
            kind: "Service".into(),
            name: name.into(),
            namespace: "production".into(),
            section: String::new(),
            port,
        })),
    }
}

fn default_meta(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(MetaKind::Default(name.into())),
    }
}

fn balancer(name: &str, port: u32) -> pb::Backend {
    use pb::backend::{BalanceP2c, EndpointDiscovery, Kind, balance_p2c, endpoint_discovery};
    pb::Backend {
        metadata: Some(svc_meta(name, port)),
        queue: Some(pb::Queue {
            capacity: 100,
            failfast_timeout: d(3, 0),
        }),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: format!("{name}.production.svc.cluster.local:{port}"),
                    },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: d(0, 30_000_000),
                decay: d(10, 0),
            })),
        })),
    }
}

fn prefix(p: &str) -> http_pb::HttpRouteMatch {
    http_pb::HttpRouteMatch {
        path: Some(http_pb::PathMatch {
            kind: Some(http_pb::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

fn route_backend(backend: pb::Backend) -> pb::http_route::RouteBackend {
    pb::http_route::RouteBackend {
        backend: Some(backend),
        filters: vec![],
        request_timeout: None,
    }
}

fn first(backend: pb::Backend) -> Option<pb::http_route::Distribution> {
    use pb::http_route::distribution::{FirstAvailable, Kind};
    Some(pb::http_route::Distribution {
        kind: Some(Kind::FirstAvailable(FirstAvailable {
            backends: vec![route_backend(backend)],
        })),
    })
}

fn random(backends: Vec<(pb::http_route::RouteBackend, u32)>) -> Option<pb::http_route::Distribution> {
    use pb::http_route::distribution::{Kind, RandomAvailable};
    Some(pb::http_route::Distribution {
        kind: Some(Kind::RandomAvailable(RandomAvailable {
            backends: backends
                .into_iter()
                .map(|(b, weight)| pb::http_route::WeightedRouteBackend {
                    backend: Some(b),
                    weight,
                })
                .collect(),
        })),
    })
}

fn rule(
    matches: Vec<http_pb::HttpRouteMatch>,
    backends: Option<pb::http_route::Distribution>,
) -> pb::http_route::Rule {
    pb::http_route::Rule {
        matches,
        filters: vec![],
        backends,
        request_timeout: None,
        timeouts: Some(http_pb::Timeouts::default()),
        retry: None,
        allow_l5d_request_headers: false,
    }
}

fn policy_route(name: &str, rules: Vec<pb::http_route::Rule>) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(MetaKind::Resource(meta::Resource {
                group: "policy.linkerd.io".into(),
                kind: "HTTPRoute".into(),
                name: name.into(),
                namespace: "production".into(),
                ..Default::default()
            })),
        }),
        hosts: vec![],
        rules,
    }
}

fn default_route(backends: Option<pb::http_route::Distribution>) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: Some(default_meta("http")),
        hosts: vec![],
        rules: vec![rule(vec![prefix("/")], backends)],
    }
}

fn opaque_to(kind: pb::opaque_route::distribution::Kind) -> pb::proxy_protocol::Opaque {
    pb::proxy_protocol::Opaque {
        routes: vec![pb::OpaqueRoute {
            metadata: Some(default_meta("opaq")),
            rules: vec![pb::opaque_route::Rule {
                backends: Some(pb::opaque_route::Distribution { kind: Some(kind) }),
                filters: vec![],
            }],
        }],
    }
}

fn opaque_to_myapp() -> pb::proxy_protocol::Opaque {
    use pb::opaque_route::distribution::{FirstAvailable, Kind};
    opaque_to(Kind::FirstAvailable(FirstAvailable {
        backends: vec![pb::opaque_route::RouteBackend {
            backend: Some(balancer("myapp", 80)),
            filters: vec![],
        }],
    }))
}

fn detect(
    routes: Vec<pb::HttpRoute>,
    opaque: pb::proxy_protocol::Opaque,
    accrual: Option<pb::FailureAccrual>,
) -> pb::OutboundPolicy {
    pb::OutboundPolicy {
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Detect(pb::proxy_protocol::Detect {
                timeout: d(10, 0),
                opaque: Some(opaque),
                http1: Some(pb::proxy_protocol::Http1 {
                    routes: routes.clone(),
                    failure_accrual: accrual,
                }),
                http2: Some(pb::proxy_protocol::Http2 {
                    routes,
                    failure_accrual: accrual,
                }),
            })),
        }),
        metadata: Some(svc_meta("myapp", 80)),
    }
}

fn http1_routes(p: &pb::OutboundPolicy) -> &[pb::HttpRoute] {
    match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(pb::proxy_protocol::Kind::Detect(d)) => &d.http1.as_ref().unwrap().routes,
        other => panic!("expected Detect, got {other:?}"),
    }
}

fn route_name(r: &pb::HttpRoute) -> String {
    match r.metadata.as_ref().and_then(|m| m.kind.as_ref()) {
        Some(MetaKind::Resource(r)) => r.name.clone(),
        Some(MetaKind::Default(d)) => format!("default:{d}"),
        None => "?".into(),
    }
}

// === The seed ===

#[test]
fn a_service_without_routes_gets_the_default_route() {
    assert_eq!(
        policy(&[SERVICES], 80),
        detect(
            vec![default_route(first(balancer("myapp", 80)))],
            opaque_to_myapp(),
            None
        )
    );
}

#[test]
fn seed_05_header_path_and_weighted_default() {
    let want = policy_route(
        "myapp-routes",
        vec![
            rule(
                vec![http_pb::HttpRouteMatch {
                    headers: vec![http_pb::HeaderMatch {
                        name: "x-canary".into(),
                        value: Some(http_pb::header_match::Value::Exact(b"true".to_vec())),
                    }],
                    ..prefix("/")
                }],
                random(vec![(route_backend(balancer("myapp-v2", 80)), 1)]),
            ),
            rule(
                vec![prefix("/api/v2")],
                random(vec![(route_backend(balancer("myapp-v2", 80)), 1)]),
            ),
            rule(
                vec![prefix("/")],
                random(vec![
                    (route_backend(balancer("myapp-v1", 80)), 90),
                    (route_backend(balancer("myapp-v2", 80)), 10),
                ]),
            ),
        ],
    );
    assert_eq!(
        policy(&[SERVICES, ROUTING], 80),
        detect(vec![want], opaque_to_myapp(), None)
    );
}

#[test]
fn seed_06_retry_headers_are_set_by_a_request_header_modifier() {
    let mut r = rule(
        vec![prefix("/api")],
        random(vec![(route_backend(balancer("myapp", 80)), 1)]),
    );
    r.filters = vec![pb::http_route::Filter {
        kind: Some(pb::http_route::filter::Kind::RequestHeaderModifier(
            http_pb::RequestHeaderModifier {
                add: Some(http_types::Headers { headers: vec![] }),
                set: Some(http_types::Headers {
                    headers: vec![
                        http_types::headers::Header {
                            name: "l5d-retry-http".into(),
                            value: b"5xx".to_vec(),
                        },
                        http_types::headers::Header {
                            name: "l5d-retry-limit".into(),
                            value: b"3".to_vec(),
                        },
                    ],
                }),
                remove: vec![],
            },
        )),
    }];
    // The filter's headers are the route owner's: they become the rule's retry policy
    // (5xx, 3 retries), so retries apply without `allow_l5d_request_headers`.
    r.retry = Some(pb::http_route::Retry {
        max_retries: 3,
        max_request_bytes: RETRY_MAX_REQUEST_BYTES,
        conditions: Some(pb::http_route::retry::Conditions {
            status_ranges: vec![pb::http_route::retry::conditions::StatusRange { start: 500, end: 599 }],
        }),
        timeout: None,
        backoff: Some(retry_backoff()),
    });
    assert_eq!(
        policy(&[SERVICES, RETRIES], 80),
        detect(
            vec![policy_route("myapp-retries", vec![r])],
            opaque_to_myapp(),
            None
        )
    );
}

#[test]
fn seed_07_request_and_backend_timeouts() {
    // backendRequest bounds each backend request: the response timeout (the backend's
    // deprecated request timeout is ignored by proxies and stays unset).
    let backend = route_backend(balancer("myapp", 80));
    let mut r = rule(vec![prefix("/api")], random(vec![(backend, 1)]));
    r.request_timeout = d(10, 0);
    r.timeouts = Some(http_pb::Timeouts {
        request: d(10, 0),
        response: d(8, 0),
        ..Default::default()
    });
    assert_eq!(
        policy(&[SERVICES, TIMEOUTS], 80),
        detect(
            vec![policy_route("myapp-timeouts", vec![r])],
            opaque_to_myapp(),
            None
        )
    );
}

#[test]
fn seed_04_traffic_split_weights_the_default_route() {
    let want_http = random(vec![
        (route_backend(balancer("myapp-v1", 80)), 90_000),
        (route_backend(balancer("myapp-v2", 80)), 10_000),
    ]);
    let want_opaque = {
        use pb::opaque_route::distribution::{Kind, RandomAvailable};
        opaque_to(Kind::RandomAvailable(RandomAvailable {
            backends: ["myapp-v1", "myapp-v2"]
                .iter()
                .zip([90_000, 10_000])
                .map(|(name, weight)| pb::opaque_route::WeightedRouteBackend {
                    backend: Some(pb::opaque_route::RouteBackend {
                        backend: Some(balancer(name, 80)),
                        filters: vec![],
                    }),
                    weight,
                })
                .collect(),
        }))
    };
    assert_eq!(
        policy(&[SERVICES, SPLIT], 80),
        detect(vec![default_route(want_http)], want_opaque, None)
    );
    // v1alpha1 quantities keep their milli-values.
    let quantities = SPLIT
        .replace(
            "apiVersion: split.smi-spec.io/v1alpha2",
            "apiVersion: split.smi-spec.io/v1alpha1",
        )
        .replace("weight: 90", "weight: 900m")
        .replace("weight: 10", "weight: 100m");
    let p = policy(&[SERVICES, &quantities], 80);
    let Some(pb::http_route::distribution::Kind::RandomAvailable(r)) =
        &http1_routes(&p)[0].rules[0].backends.as_ref().unwrap().kind
    else {
        panic!("{p:?}")
    };
    let weights: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [900, 100]);
}

#[test]
fn an_http_route_replaces_the_split_default_route() {
    let p = policy(&[SERVICES, SPLIT, ROUTING], 80);
    let names: Vec<String> = http1_routes(&p).iter().map(route_name).collect();
    assert_eq!(names, ["myapp-routes"]);
}

// === Which routes apply, in which order ===

fn route_yaml(kind: &str, name: &str, created: Option<&str>, parent: &str) -> String {
    let api = match kind {
        "policy" => "policy.linkerd.io/v1beta3\nkind: HTTPRoute",
        "gateway" => "gateway.networking.k8s.io/v1\nkind: HTTPRoute",
        _ => "gateway.networking.k8s.io/v1\nkind: GRPCRoute",
    };
    let created = created
        .map(|c| format!("  creationTimestamp: \"{c}\"\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: {api}\nmetadata:\n  name: {name}\n  namespace: production\n{created}spec:\n  parentRefs: [{parent}]\n  rules: [{{}}]\n"
    )
}

#[test]
fn routes_are_ordered_oldest_first_then_by_name() {
    let parent = "{name: myapp, kind: Service, group: core}";
    let docs = [
        route_yaml("policy", "untimed", None, parent),
        route_yaml("gateway", "zeta", Some("2024-01-01T00:00:00Z"), parent),
        route_yaml("policy", "newest", Some("2024-03-01T00:00:00Z"), parent),
        route_yaml("gateway", "beta", Some("2024-02-01T00:00:00Z"), parent),
        route_yaml("policy", "alpha", Some("2024-02-01T00:00:00Z"), parent),
    ];
    let docs: Vec<&str> = std::iter::once(SERVICES)
        .chain(docs.iter().map(String::as_str))
        .collect();
    let p = policy(&docs, 80);
    let names: Vec<String> = http1_routes(&p).iter().map(route_name).collect();
    assert_eq!(names, ["zeta", "alpha", "beta", "newest", "untimed"]);
}

#[test]
fn attachment() {
    let svc = myapp();
    let parent = |yaml: &str| -> Vec<ParentReference> { vec![serde_json::from_str(yaml).unwrap()] };
    let cases: &[(&str, &str, u16, bool)] = &[
        (
            r#"{"name": "myapp", "kind": "Service", "group": "core"}"#,
            "production",
            80,
            true,
        ),
        (
            r#"{"name": "myapp", "kind": "Service", "group": ""}"#,
            "production",
            80,
            true,
        ),
        (r#"{"name": "myapp", "kind": "Service"}"#, "production", 80, true),
        (r#"{"name": "myapp", "kind": "service"}"#, "production", 80, true),
        (
            r#"{"name": "myapp", "kind": "Service", "port": 80}"#,
            "production",
            80,
            true,
        ),
        (
            r#"{"name": "myapp", "kind": "Service", "port": 8080}"#,
            "production",
            80,
            false,
        ),
        (
            r#"{"name": "myapp", "kind": "Service", "namespace": "production"}"#,
            "production",
            80,
            true,
        ),
        // Consumer routes (in another namespace) are not supported.
        (
            r#"{"name": "myapp", "kind": "Service", "namespace": "production"}"#,
            "client",
            80,
            false,
        ),
        (r#"{"name": "myapp", "kind": "Service"}"#, "client", 80, false),
        (
            r#"{"name": "myapp", "kind": "Service", "namespace": "other"}"#,
            "production",
            80,
            false,
        ),
        // Parent references default to a Gateway.
        (r#"{"name": "myapp"}"#, "production", 80, false),
        (
            r#"{"name": "myapp", "kind": "Server", "group": "policy.linkerd.io"}"#,
            "production",
            80,
            false,
        ),
        (
            r#"{"name": "myapp", "kind": "Service", "group": "apps"}"#,
            "production",
            80,
            false,
        ),
        (r#"{"name": "web", "kind": "Service"}"#, "production", 80, false),
    ];
    for (p, route_ns, port, want) in cases {
        assert_eq!(
            attaches(Some(&parent(p)), route_ns, &svc, *port),
            *want,
            "{p} from {route_ns} on port {port}"
        );
    }
    assert!(!attaches(None, "production", &svc, 80));
}

#[test]
fn a_route_for_another_port_leaves_the_default_route() {
    let route = route_yaml(
        "policy",
        "other-port",
        None,
        "{name: myapp, kind: Service, port: 8080}",
    );
    let p = policy(&[SERVICES, &route], 80);
    let names: Vec<String> = http1_routes(&p).iter().map(route_name).collect();
    assert_eq!(names, ["default:http"]);
}

// === Protocols ===

fn service(annotations: &str, ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(|p| format!("{{port: {p}}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: myapp\n  namespace: production\n  annotations: {{{annotations}}}\nspec:\n  ports: [{}]\n",
        ports.join(", ")
    )
}

fn protocol_name(p: &pb::OutboundPolicy) -> &'static str {
    match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(pb::proxy_protocol::Kind::Detect(_)) => "detect",
        Some(pb::proxy_protocol::Kind::Opaque(_)) => "opaque",
        Some(pb::proxy_protocol::Kind::Grpc(_)) => "grpc",
        _ => "other",
    }
}

#[test]
fn opaque_ports() {
    let cases: &[(&str, u16, &str, usize)] = &[
        (
            "config.linkerd.io/opaque-ports: \"8080,9000-9100\"",
            9050,
            "opaque",
            0,
        ),
        (
            "config.linkerd.io/opaque-ports: \"8080,9000-9100\"",
            8080,
            "opaque",
            0,
        ),
        (
            "config.linkerd.io/opaque-ports: \"8080,9000-9100\"",
            80,
            "detect",
            0,
        ),
        // Linkerd's default opaque ports apply when the annotation is absent...
        ("", 3306, "opaque", 0),
        ("", 5432, "opaque", 0),
        ("", 3307, "detect", 0),
        // ... and not when it is present.
        ("config.linkerd.io/opaque-ports: \"8080\"", 3306, "detect", 0),
    ];
    for (annotations, port, want, warnings) in cases {
        let svc = service(annotations, &[*port]);
        let ev = eval(&[&svc], *port);
        assert_eq!(ev.warnings.len(), *warnings, "{annotations} port {port}");
        let p = ev.policy.unwrap();
        assert_eq!(protocol_name(&p), *want, "{annotations} port {port}");
        assert_eq!(p.metadata, Some(svc_meta("myapp", u32::from(*port))));
    }
    let opaque = policy(
        &[&service("config.linkerd.io/opaque-ports: \"80\"", &[80]), ROUTING],
        80,
    );
    assert_eq!(
        opaque.protocol.unwrap().kind,
        Some(pb::proxy_protocol::Kind::Opaque(opaque_to_myapp())),
        "an opaque port ignores HTTP routes"
    );
}

const GREETER: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: greeter
  namespace: production
  annotations: {retry.linkerd.io/grpc: "unavailable", retry.linkerd.io/limit: "2"}
spec:
  parentRefs: [{name: myapp, kind: Service, group: core, port: 80}]
  hostnames: ["*.example.com", "greeter.example.com"]
  rules:
    - matches:
        - method: {service: helloworld.Greeter, method: SayHello}
          headers: [{name: x-canary, value: "1"}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {remove: [x-debug]}
      backendRefs: [{name: myapp-v2, port: 80, weight: 3}]
    - {}
"#;

#[test]
fn grpc_routes_make_a_grpc_protocol() {
    use pb::grpc_route::distribution::{FirstAvailable, Kind, RandomAvailable};
    let p = policy(&[SERVICES, GREETER, ROUTING], 80);
    let Some(pb::proxy_protocol::Kind::Grpc(grpc)) = p.protocol.and_then(|p| p.kind) else {
        panic!("expected gRPC")
    };
    let retry = Some(pb::grpc_route::Retry {
        max_retries: 2,
        max_request_bytes: 65536,
        conditions: Some(pb::grpc_route::retry::Conditions {
            unavailable: true,
            ..Default::default()
        }),
        timeout: None,
        backoff: Some(pb::ExponentialBackoff {
            min_backoff: d(0, 25_000_000),
            max_backoff: d(0, 250_000_000),
            jitter_ratio: 1.0,
            respect_retry_after_hint: false,
        }),
    });
    let rule = |matches, filters, backends| pb::grpc_route::Rule {
        matches,
        filters,
        backends: Some(pb::grpc_route::Distribution { kind: Some(backends) }),
        request_timeout: None,
        timeouts: Some(http_pb::Timeouts::default()),
        retry,
        allow_l5d_request_headers: false,
    };
    let want = pb::GrpcRoute {
        metadata: Some(meta::Metadata {
            kind: Some(MetaKind::Resource(meta::Resource {
                group: "gateway.networking.k8s.io".into(),
                kind: "GRPCRoute".into(),
                name: "greeter".into(),
                namespace: "production".into(),
                ..Default::default()
            })),
        }),
        hosts: vec![
            http_pb::HostMatch {
                r#match: Some(http_pb::host_match::Match::Suffix(http_pb::host_match::Suffix {
                    reverse_labels: vec!["com".into(), "example".into()],
                })),
            },
            http_pb::HostMatch {
                r#match: Some(http_pb::host_match::Match::Exact("greeter.example.com".into())),
            },
        ],
        rules: vec![
            rule(
                vec![grpc_pb::GrpcRouteMatch {
                    rpc: Some(grpc_pb::GrpcRpcMatch {
                        service: "helloworld.Greeter".into(),
                        method: "SayHello".into(),
                    }),
                    headers: vec![http_pb::HeaderMatch {
                        name: "x-canary".into(),
                        value: Some(http_pb::header_match::Value::Exact(b"1".to_vec())),
                    }],
                }],
                vec![pb::grpc_route::Filter {
                    kind: Some(pb::grpc_route::filter::Kind::RequestHeaderModifier(
                        http_pb::RequestHeaderModifier {
                            add: Some(http_types::Headers::default()),
                            set: Some(http_types::Headers::default()),
                            remove: vec!["x-debug".into()],
                        },
                    )),
                }],
                Kind::RandomAvailable(RandomAvailable {
                    backends: vec![pb::grpc_route::WeightedRouteBackend {
                        weight: 3,
                        backend: Some(pb::grpc_route::RouteBackend {
                            backend: Some(balancer("myapp-v2", 80)),
                            filters: vec![],
                            request_timeout: None,
                        }),
                    }],
                }),
            ),
            // A rule without backends goes to the Service itself.
            rule(
                vec![],
                vec![],
                Kind::FirstAvailable(FirstAvailable {
                    backends: vec![pb::grpc_route::RouteBackend {
                        backend: Some(balancer("myapp", 80)),
                        filters: vec![],
                        request_timeout: None,
                    }],
                }),
            ),
        ],
    };
    assert_eq!(grpc.routes, vec![want]);
    assert_eq!(grpc.failure_accrual, None);
}

#[test]
fn unsupported_grpc_matches_and_filters() {
    let regex = GREETER.replace(
        "method: {service: helloworld.Greeter, method: SayHello}",
        "method: {type: RegularExpression, service: \"helloworld\\\\..*\"}",
    );
    let ev = eval(&[SERVICES, &regex], 80);
    assert!(
        matches!(&ev.warnings[..], [Warning::RouteIgnored { what, .. }] if what.contains("RegularExpression")),
        "{:?}",
        ev.warnings
    );
    assert_eq!(
        protocol_name(ev.policy.as_ref().unwrap()),
        "detect",
        "with its only gRPC route ignored, the port falls back to HTTP detection"
    );

    let response_edit = GREETER.replace(
        "type: RequestHeaderModifier\n          requestHeaderModifier: {remove: [x-debug]}",
        "type: ResponseHeaderModifier\n          responseHeaderModifier: {remove: [x-debug]}",
    );
    let ev = eval(&[SERVICES, &response_edit], 80);
    assert!(matches!(&ev.warnings[..], [Warning::FilterIgnored { .. }]));
    let Some(pb::proxy_protocol::Kind::Grpc(grpc)) = ev.policy.unwrap().protocol.unwrap().kind else {
        panic!()
    };
    assert_eq!(grpc.routes[0].rules[0].filters, vec![]);
}

// === Annotations ===

#[test]
fn service_annotations_set_defaults_and_route_annotations_override_them() {
    let svc = service(
        "retry.linkerd.io/http: \"5xx\", retry.linkerd.io/limit: \"2\", timeout.linkerd.io/request: \"5s\", timeout.linkerd.io/response: \"1s\", balancer.linkerd.io/failure-accrual: consecutive, balancer.linkerd.io/failure-accrual-consecutive-max-failures: \"3\"",
        &[80],
    );
    let p = policy(&[&svc], 80);
    let want_retry = Some(pb::http_route::Retry {
        max_retries: 2,
        max_request_bytes: 65536,
        conditions: Some(pb::http_route::retry::Conditions {
            status_ranges: vec![pb::http_route::retry::conditions::StatusRange { start: 500, end: 599 }],
        }),
        timeout: None,
        backoff: Some(pb::ExponentialBackoff {
            min_backoff: d(0, 25_000_000),
            max_backoff: d(0, 250_000_000),
            jitter_ratio: 1.0,
            respect_retry_after_hint: false,
        }),
    });
    let want_accrual = Some(pb::FailureAccrual {
        kind: Some(pb::failure_accrual::Kind::ConsecutiveFailures(
            pb::failure_accrual::ConsecutiveFailures {
                max_failures: 3,
                backoff: Some(pb::ExponentialBackoff {
                    min_backoff: d(1, 0),
                    max_backoff: d(60, 0),
                    jitter_ratio: 0.5,
                    respect_retry_after_hint: false,
                }),
            },
        )),
        ejection: None,
    });
    let mut default = default_route(first(balancer("myapp", 80)));
    default.rules[0].retry = want_retry.clone();
    default.rules[0].request_timeout = d(5, 0);
    default.rules[0].timeouts = Some(http_pb::Timeouts {
        request: d(5, 0),
        response: d(1, 0),
        idle: None,
    });
    assert_eq!(p, detect(vec![default], opaque_to_myapp(), want_accrual));

    // A route's rules take the Service's retry and timeouts unless the route sets its own.
    let p = policy(&[&svc, TIMEOUTS], 80);
    let r = &http1_routes(&p)[0].rules[0];
    // The rule's backendRequest (8 s) bounds each attempt of the Service's retry.
    let mut retry_per_try = want_retry.clone();
    retry_per_try.as_mut().unwrap().timeout = d(8, 0);
    assert_eq!(r.retry, retry_per_try, "the Service's retry");
    assert_eq!(
        r.timeouts,
        Some(http_pb::Timeouts {
            request: d(10, 0),
            response: d(8, 0),
            ..Default::default()
        }),
        "the rule's own timeouts replace the Service's timeouts"
    );
    let annotated = TIMEOUTS.replace(
        "  namespace: production\n",
        "  namespace: production\n  annotations: {retry.linkerd.io/http: \"gateway-error\", timeout.linkerd.io/request: \"3s\"}\n",
    );
    let p = policy(&[&svc, &annotated], 80);
    let r = &http1_routes(&p)[0].rules[0];
    assert_eq!(
        r.retry
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .status_ranges,
        vec![pb::http_route::retry::conditions::StatusRange { start: 502, end: 504 }],
        "the route's retry"
    );
    assert_eq!(r.retry.as_ref().unwrap().max_retries, 1);
    assert_eq!(
        r.request_timeout,
        d(3, 0),
        "the route's annotation beats the rule's timeouts.request"
    );
}

#[test]
fn bad_annotations_are_ignored_with_a_warning() {
    let svc = service(
        "retry.linkerd.io/http: \"4xx\", balancer.linkerd.io/failure-accrual: magic, config.linkerd.io/opaque-ports: \"http\"",
        &[80],
    );
    let ev = eval(&[&svc], 80);
    let texts: Vec<String> = ev.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(texts.len(), 3, "{texts:#?}");
    for (w, needle) in texts.iter().zip([
        "config.linkerd.io/opaque-ports",
        "failure-accrual",
        "retry.linkerd.io/http",
    ]) {
        assert!(w.starts_with("service production/myapp: "), "{w}");
        assert!(w.contains(needle), "{w} should name {needle}");
    }
    assert_eq!(
        ev.policy.unwrap(),
        detect(
            vec![default_route(first(balancer("myapp", 80)))],
            opaque_to_myapp(),
            None
        )
    );
}

// === Filters, hosts and backends ===

const GATEWAY_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge, namespace: production}
spec:
  parentRefs: [{name: myapp, kind: Service, port: 80}]
  hostnames: [myapp.example.com]
  rules:
    - matches:
        - path: {type: Exact, value: /old}
          method: POST
          queryParams: [{type: RegularExpression, name: v, value: "^2"}]
          headers: [{type: RegularExpression, name: x-user, value: "^a"}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: new.example.com, path: {type: ReplaceFullPath, replaceFullPath: /new}, port: 8443}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-served-by, value: strait}]}
    - matches: [{path: {type: RegularExpression, value: "/v[0-9]+/.*"}}]
      backendRefs:
        - {name: missing, port: 80}
        - {name: ext, kind: EgressNetwork, group: policy.linkerd.io, port: 443}
        - {name: myapp-v1, port: 80, weight: 0}
"#;

#[test]
fn gateway_routes_filters_hosts_and_broken_backends() {
    use http_pb::path_match::Kind as Path;
    let p = policy(&[SERVICES, GATEWAY_ROUTE], 80);
    let route = &http1_routes(&p)[0];
    assert_eq!(
        route.hosts,
        vec![http_pb::HostMatch {
            r#match: Some(http_pb::host_match::Match::Exact("myapp.example.com".into())),
        }]
    );
    let [redirecting, splitting] = &route.rules[..] else {
        panic!("{route:?}")
    };
    assert_eq!(
        redirecting.matches,
        vec![http_pb::HttpRouteMatch {
            path: Some(http_pb::PathMatch {
                kind: Some(Path::Exact("/old".into())),
            }),
            headers: vec![http_pb::HeaderMatch {
                name: "x-user".into(),
                value: Some(http_pb::header_match::Value::Regex("^a".into())),
            }],
            query_params: vec![http_pb::QueryParamMatch {
                name: "v".into(),
                value: Some(http_pb::query_param_match::Value::Regex("^2".into())),
            }],
            method: Some(http::Method::POST.into()),
        }]
    );
    assert_eq!(
        redirecting.filters,
        vec![
            pb::http_route::Filter {
                kind: Some(pb::http_route::filter::Kind::Redirect(http_pb::RequestRedirect {
                    scheme: Some("https".into()),
                    host: "new.example.com".into(),
                    path: Some(http_pb::PathModifier {
                        replace: Some(http_pb::path_modifier::Replace::Full("/new".into())),
                    }),
                    port: 8443,
                    status: 302,
                })),
            },
            pb::http_route::Filter {
                kind: Some(pb::http_route::filter::Kind::ResponseHeaderModifier(
                    http_pb::ResponseHeaderModifier {
                        add: Some(http_types::Headers {
                            headers: vec![http_types::headers::Header {
                                name: "x-served-by".into(),
                                value: b"strait".to_vec(),
                            }],
                        }),
                        set: Some(http_types::Headers::default()),
                        remove: vec![],
                    },
                )),
            },
        ]
    );
    assert_eq!(redirecting.backends, first(balancer("myapp", 80)));

    assert_eq!(
        splitting.matches[0].path,
        Some(http_pb::PathMatch {
            kind: Some(Path::Regex("/v[0-9]+/.*".into())),
        })
    );
    let failing = |metadata, message: &str| pb::http_route::RouteBackend {
        backend: Some(pb::Backend {
            metadata: Some(metadata),
            queue: Some(pb::Queue {
                capacity: 100,
                failfast_timeout: d(3, 0),
            }),
            kind: None,
        }),
        filters: vec![pb::http_route::Filter {
            kind: Some(pb::http_route::filter::Kind::FailureInjector(
                http_pb::HttpFailureInjector {
                    status: 500,
                    message: message.into(),
                    ratio: None,
                },
            )),
        }],
        request_timeout: None,
    };
    assert_eq!(
        splitting.backends,
        random(vec![
            (failing(svc_meta("missing", 80), "Service not found missing"), 1),
            (
                failing(
                    default_meta("invalid"),
                    "unsupported backend type policy.linkerd.io EgressNetwork"
                ),
                1
            ),
            (route_backend(balancer("myapp-v1", 80)), 0),
        ])
    );
}

#[test]
fn unsupported_route_filters_drop_the_route() {
    let rewrite = GATEWAY_ROUTE.replace(
        "type: ResponseHeaderModifier\n          responseHeaderModifier: {add: [{name: x-served-by, value: strait}]}",
        "type: URLRewrite\n          urlRewrite: {hostname: new.example.com}",
    )
    .replace(
        "        - type: RequestRedirect\n          requestRedirect: {scheme: https, hostname: new.example.com, path: {type: ReplaceFullPath, replaceFullPath: /new}, port: 8443}\n",
        "",
    );
    let ev = eval(&[SERVICES, &rewrite], 80);
    assert_eq!(
        ev.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "httproute.gateway.networking.k8s.io production/edge: a URLRewrite filter is not supported; the route is ignored"
        ]
    );
    let names: Vec<String> = http1_routes(ev.policy.as_ref().unwrap())
        .iter()
        .map(route_name)
        .collect();
    assert_eq!(names, ["default:http"]);
}

#[test]
fn backends_in_other_namespaces_are_followed() {
    let route = ROUTING.replace(
        "        - name: myapp-v2\n          port: 80\n          weight: 10",
        "        - name: myapp-v2\n          namespace: staging\n          port: 80\n          weight: 10",
    );
    let ev = eval(&[SERVICES, &route], 80);
    assert_eq!(
        ev.namespaces,
        BTreeSet::from(["production".to_string(), "staging".to_string()])
    );
    let p = ev.policy.unwrap();
    let Some(pb::http_route::distribution::Kind::RandomAvailable(r)) =
        &http1_routes(&p)[0].rules[2].backends.as_ref().unwrap().kind
    else {
        panic!()
    };
    let b = r.backends[1].backend.as_ref().unwrap();
    assert!(
        matches!(&b.filters[..], [f] if matches!(&f.kind, Some(pb::http_route::filter::Kind::FailureInjector(i)) if i.message == "Service not found myapp-v2")),
        "no such Service in staging: {b:?}"
    );
}

#[test]
fn an_unknown_service_has_no_policy() {
    let ev = outbound_policy(
        &snapshot(&[SERVICES]),
        &("production".into(), "nope".into()),
        80,
        &Settings::default(),
    );
    assert_eq!(ev.policy, None);
    assert_eq!(ev.namespaces, BTreeSet::from(["production".to_string()]));
}

#[test]
fn settings_reach_every_route() {
    let settings = Settings {
        cluster_domain: "east.example".into(),
        allow_l5d_request_headers: true,
        ..Settings::default()
    };
    let p = outbound_policy(&snapshot(&[SERVICES, ROUTING]), &myapp(), 80, &settings)
        .policy
        .unwrap();
    let rules = &http1_routes(&p)[0].rules;
    assert!(rules.iter().all(|r| r.allow_l5d_request_headers));
    let Some(pb::http_route::distribution::Kind::RandomAvailable(r)) =
        &rules[0].backends.as_ref().unwrap().kind
    else {
        panic!()
    };
    let Some(pb::backend::Kind::Balancer(b)) = &r.backends[0]
        .backend
        .as_ref()
        .unwrap()
        .backend
        .as_ref()
        .unwrap()
        .kind
    else {
        panic!()
    };
    assert_eq!(
        b.discovery.as_ref().unwrap().kind,
        Some(pb::backend::endpoint_discovery::Kind::Dst(
            pb::backend::endpoint_discovery::DestinationGet {
                path: "myapp-v2.production.svc.east.example:80".into(),
            }
        ))
    );
}
