//! Tests across all mesh kinds: the CRDs are structural and list every served version,
//! every kind survives a JSON round trip key for key (the loader's unknown-field check relies
//! on it), and the seed manifests load, validate cleanly and keep their meaning.

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::validate::{FieldPath, Problems, Validate};

// === CRDs ===

/// Walks a schema node and pushes every violation of Kubernetes' structural schema rules
/// that a generated schema could plausibly contain.
fn structural_violations(node: &Value, at: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{at}: schema is not an object"));
        return;
    };
    for banned in ["$ref", "$schema", "$defs", "definitions", "$id"] {
        if obj.contains_key(banned) {
            out.push(format!("{at}: has {banned}"));
        }
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let ty = obj.get("type").and_then(Value::as_str);
    match (ty, int_or_string) {
        (Some(_), true) => out.push(format!("{at}: x-kubernetes-int-or-string with a type")),
        (None, false) if !preserve => out.push(format!("{at}: no type")),
        _ => {}
    }
    if obj.get("default") == Some(&Value::Null) {
        out.push(format!("{at}: null default"));
    }
    if ty == Some("array") && !obj.get("items").is_some_and(Value::is_object) {
        out.push(format!("{at}: array without items"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{at}: both properties and additionalProperties"));
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            structural_violations(v, &format!("{at}.{k}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(items, &format!("{at}[]"), out);
    }
    if let Some(ap @ Value::Object(_)) = obj.get("additionalProperties") {
        structural_violations(ap, &format!("{at}{{*}}"), out);
    }
    // Value validations may not declare types or structure of their own, nor mention
    // properties the node itself does not declare.
    let own_props: BTreeSet<&String> = obj
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    for key in ["anyOf", "oneOf", "allOf", "not"] {
        let Some(sub) = obj.get(key) else { continue };
        let subs: Vec<&Value> = match sub {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for s in subs {
            let Some(s) = s.as_object() else { continue };
            for forbidden in [
                "type",
                "description",
                "default",
                "additionalProperties",
                "nullable",
                "items",
            ] {
                // `anyOf: [{type: integer}, {type: string}]` is only allowed with int-or-string.
                if s.contains_key(forbidden) && !(forbidden == "type" && int_or_string) {
                    out.push(format!("{at}.{key}: sets {forbidden}"));
                }
            }
            for p in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|p| p.keys())
            {
                if !own_props.contains(p) {
                    out.push(format!("{at}.{key}: mentions undeclared property {p}"));
                }
            }
        }
    }
}

fn crd_violations(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut out = Vec::new();
    for v in &crd.spec.versions {
        let schema = v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
        let Some(schema) = schema else {
            out.push(format!("{}: no schema", v.name));
            continue;
        };
        let value = serde_json::to_value(schema).unwrap();
        if value.get("type").and_then(Value::as_str) != Some("object") {
            out.push(format!("{}: root is not an object", v.name));
        }
        if let Some(meta) = value
            .pointer("/properties/metadata/properties")
            .and_then(Value::as_object)
            && meta.keys().any(|k| k != "name" && k != "generateName")
        {
            out.push(format!("{}: metadata restricts more than name", v.name));
        }
        structural_violations(&value, &format!("{}/{}", crd.spec.names.plural, v.name), &mut out);
    }
    out
}

#[test]
fn crds_are_structural() {
    let crds = crds();
    assert_eq!(crds.len(), 11);
    for crd in &crds {
        let violations = crd_violations(crd);
        assert!(
            violations.is_empty(),
            "{}: {violations:#?}",
            crd.metadata.name.as_deref().unwrap_or_default()
        );
    }
}

#[test]
fn structural_check_catches_violations() {
    let mut out = Vec::new();
    let bad = json!({
        "type": "object",
        "properties": {
            "a": {"$ref": "#/definitions/A"},
            "b": {"description": "no type"},
            "c": {"type": "array"},
            "d": {"type": "string", "x-kubernetes-int-or-string": true},
            "e": {"type": "object", "anyOf": [{"type": "object", "properties": {"zz": {"type": "string"}}}]},
            "f": {"type": "string", "default": null},
        },
    });
    structural_violations(&bad, "x", &mut out);
    for expected in [
        "x.a: has $ref",
        "x.b: no type",
        "x.c: array without items",
        "x.d: x-kubernetes-int-or-string with a type",
        "x.e.anyOf: sets type",
        "x.e.anyOf: mentions undeclared property zz",
        "x.f: null default",
    ] {
        assert!(
            out.iter().any(|o| o.starts_with(expected)),
            "{expected} not in {out:#?}"
        );
    }
    let good = json!({"type": "object", "properties": {"p": {"x-kubernetes-int-or-string": true}, "q": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
    let mut out = Vec::new();
    structural_violations(&good, "x", &mut out);
    assert!(out.is_empty(), "{out:?}");
}

fn check_versions<K: ServedVersions>(storage: &str, short: &[&str]) {
    let crd = K::versioned_crd();
    let names: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, K::SERVED, "{}", crd.spec.names.kind);
    let stored: Vec<&str> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(stored, vec![storage], "{}", crd.spec.names.kind);
    assert_eq!(K::storage_version(), storage);
    assert!(K::serves(storage));
    assert!(!K::serves("v9"));
    assert!(
        crd.spec
            .versions
            .iter()
            .all(|v| v.served && v.schema == crd.spec.versions[0].schema)
    );
    assert_eq!(
        crd.spec.names.short_names.clone().unwrap_or_default(),
        short,
        "{}",
        crd.spec.names.kind
    );
    assert_eq!(crd.spec.scope, "Namespaced");
}

#[test]
fn crds_serve_every_version() {
    check_versions::<policy::Server>("v1beta3", &["srv"]);
    check_versions::<policy::ServerAuthorization>("v1beta1", &["saz", "serverauthz", "srvauthz"]);
    check_versions::<policy::AuthorizationPolicy>("v1alpha1", &["authzpolicy"]);
    check_versions::<policy::MeshTLSAuthentication>("v1alpha1", &["meshtlsauthn"]);
    check_versions::<policy::NetworkAuthentication>("v1alpha1", &["netauthn", "networkauthn"]);
    check_versions::<policy::HttpRoute>("v1beta3", &[]);
    check_versions::<gateway_api::HttpRoute>("v1", &[]);
    check_versions::<gateway_api::GrpcRoute>("v1", &[]);
    check_versions::<profile::ServiceProfile>("v1alpha2", &["sp"]);
    check_versions::<link::Link>("v1alpha3", &[]);
    check_versions::<split::TrafficSplit>("v1alpha2", &["ts"]);

    let names: Vec<String> = crds()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "servers.policy.linkerd.io",
            "serverauthorizations.policy.linkerd.io",
            "authorizationpolicies.policy.linkerd.io",
            "meshtlsauthentications.policy.linkerd.io",
            "networkauthentications.policy.linkerd.io",
            "httproutes.policy.linkerd.io",
            "httproutes.gateway.networking.k8s.io",
            "grpcroutes.gateway.networking.k8s.io",
            "serviceprofiles.linkerd.io",
            "links.multicluster.linkerd.io",
            "trafficsplits.split.smi-spec.io",
        ]
    );

    let server = policy::Server::versioned_crd();
    let v1alpha1 = &server.spec.versions[0];
    assert_eq!(v1alpha1.deprecated, Some(true));
    assert!(
        v1alpha1
            .deprecation_warning
            .as_deref()
            .unwrap_or_default()
            .contains("use policy.linkerd.io/v1beta3 Server")
    );
    let columns: Vec<&str> = server.spec.versions[3]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.json_path.as_str())
        .collect();
    assert_eq!(
        columns,
        [".spec.port", ".spec.proxyProtocol", ".spec.accessPolicy"]
    );
    let saz = policy::ServerAuthorization::versioned_crd();
    assert_eq!(
        saz.spec.versions[1].additional_printer_columns.as_ref().unwrap()[0].json_path,
        ".spec.server.name"
    );
    let ts = split::TrafficSplit::versioned_crd();
    assert_eq!(
        ts.spec.versions[0].additional_printer_columns.as_ref().unwrap()[0].json_path,
        ".spec.service"
    );
    // Routes and Links carry a status subresource, which controllers write.
    for crd in [
        policy::HttpRoute::versioned_crd(),
        gateway_api::GrpcRoute::versioned_crd(),
        link::Link::versioned_crd(),
    ] {
        assert!(
            crd.spec
                .versions
                .iter()
                .all(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some()))
        );
    }
}

// === Round trips ===

/// Every key path of a JSON value (`spec.rules[0].matches`), arrays by index.
fn key_paths(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                key_paths(child, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                key_paths(child, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Reads `input` as `K`, writes it back, and checks what the loader checks — every key read
/// is written back — and, more strictly, that `spec` and `status` come back unchanged.
fn round_trip<K: Serialize + DeserializeOwned>(input: Value) -> K {
    let typed: K = serde_json::from_value(input.clone()).unwrap_or_else(|e| panic!("{e}: {input}"));
    let output = serde_json::to_value(&typed).unwrap();
    let (mut read, mut written) = (BTreeSet::new(), BTreeSet::new());
    key_paths(&input, "", &mut read);
    key_paths(&output, "", &mut written);
    let lost: Vec<&String> = read.difference(&written).collect();
    assert!(lost.is_empty(), "keys lost in the round trip: {lost:?}");
    assert_eq!(output["spec"], input["spec"]);
    assert_eq!(output["status"], input["status"]);
    typed
}

fn object(api_version: &str, kind: &str, spec: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "namespace": "ns"}, "spec": spec})
}

fn selector() -> Value {
    json!({"matchLabels": {}, "matchExpressions": [{"key": "app", "operator": "In", "values": []}, {"key": "tier", "operator": "Exists"}]})
}

fn header_modifier() -> Value {
    json!({"set": [{"name": "a", "value": "1"}], "add": [], "remove": ["b"]})
}

fn policy_route_rule() -> Value {
    json!({
        "matches": [{"path": {"type": "Exact", "value": "/"}, "headers": [], "queryParams": [{"type": "Exact", "name": "q", "value": "v"}], "method": "GET"}],
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": header_modifier()},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {}},
            {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "hostname": "a.example.com", "path": {"type": "ReplaceFullPath", "replaceFullPath": "/x"}, "port": 443, "statusCode": 301}},
        ],
        "backendRefs": [{"group": "", "kind": "Service", "name": "web", "namespace": "ns", "port": 80, "weight": 0, "filters": []}],
        "timeouts": {"request": "10s", "backendRequest": "0s"},
    })
}

fn route_status() -> Value {
    json!({"parents": [{"parentRef": {"name": "web", "kind": "Service", "group": "core", "port": 80}, "controllerName": "linkerd.io/policy-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 3}]}]})
}

#[test]
fn every_kind_round_trips() {
    let mut server = object(
        "policy.linkerd.io/v1beta3",
        "Server",
        json!({
            "podSelector": selector(), "externalWorkloadSelector": {}, "port": "1-65535", "proxyProtocol": "opaque", "accessPolicy": "deny",
        }),
    );
    round_trip::<policy::Server>(server.clone());
    server["spec"]["port"] = json!(8080);
    round_trip::<policy::Server>(server.clone());
    server["spec"]["port"] = json!("http");
    round_trip::<policy::Server>(server);

    round_trip::<policy::ServerAuthorization>(object(
        "policy.linkerd.io/v1beta1",
        "ServerAuthorization",
        json!({
            "server": {"name": "web", "selector": {"matchLabels": {"app": "api"}}},
            "client": {"networks": [], "unauthenticated": false, "meshTLS": {"unauthenticatedTLS": false, "identities": [], "serviceAccounts": [{"name": "a", "namespace": "b"}]}},
        }),
    ));
    round_trip::<policy::ServerAuthorization>(object(
        "policy.linkerd.io/v1beta1",
        "ServerAuthorization",
        json!({
            "server": {"name": "web"}, "client": {"networks": [{"cidr": "10.0.0.0/8", "except": []}]},
        }),
    ));
    round_trip::<policy::AuthorizationPolicy>(object(
        "policy.linkerd.io/v1alpha1",
        "AuthorizationPolicy",
        json!({
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "web", "namespace": "ns"},
            "requiredAuthenticationRefs": [],
        }),
    ));
    round_trip::<policy::MeshTLSAuthentication>(object(
        "policy.linkerd.io/v1alpha1",
        "MeshTLSAuthentication",
        json!({
            "identities": ["*"], "identityRefs": [{"group": "", "kind": "ServiceAccount", "name": "a", "namespace": "b"}],
        }),
    ));
    round_trip::<policy::NetworkAuthentication>(object(
        "policy.linkerd.io/v1alpha1",
        "NetworkAuthentication",
        json!({
            "networks": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}],
        }),
    ));

    let mut route = object(
        "policy.linkerd.io/v1beta3",
        "HTTPRoute",
        json!({
            "parentRefs": [{"group": "core", "kind": "Service", "namespace": "ns", "name": "web", "sectionName": "http", "port": 80}],
            "hostnames": [],
            "rules": [policy_route_rule(), {}],
        }),
    );
    route["status"] = route_status();
    round_trip::<policy::HttpRoute>(route);

    let mut gw_rule = policy_route_rule();
    gw_rule["filters"] = json!([
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "m", "namespace": "ns", "port": 80}, "percent": 5, "fraction": {"numerator": 1, "denominator": 2}}},
        {"type": "URLRewrite", "urlRewrite": {"hostname": "b.example.com", "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/y"}}},
        {"type": "ExtensionRef", "extensionRef": {"group": "", "kind": "ConfigMap", "name": "c"}},
    ]);
    let mut gw_route = object(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        json!({"parentRefs": [], "hostnames": ["*.example.com"], "rules": [gw_rule]}),
    );
    gw_route["status"] = json!({"parents": []});
    round_trip::<gateway_api::HttpRoute>(gw_route);

    round_trip::<gateway_api::GrpcRoute>(object(
        "gateway.networking.k8s.io/v1",
        "GRPCRoute",
        json!({
            "parentRefs": [{"name": "greeter", "kind": "Service", "port": 50051}],
            "hostnames": [],
            "rules": [{
                "matches": [{"method": {"type": "Exact", "service": "helloworld.Greeter", "method": "SayHello"}, "headers": [{"type": "Exact", "name": "x", "value": "y"}]}],
                "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": header_modifier()}, {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m", "port": 1}}}],
                "backendRefs": [{"name": "greeter", "port": 50051, "weight": 1, "filters": [{"type": "ExtensionRef", "extensionRef": {"group": "g.io", "kind": "K", "name": "n"}}]}],
            }, {}],
        }),
    ));

    round_trip::<profile::ServiceProfile>(object(
        "linkerd.io/v1alpha2",
        "ServiceProfile",
        json!({
            "routes": [{
                "name": "GET /", "isRetryable": true, "timeout": "1s",
                "condition": {"method": "GET", "pathRegex": "/", "all": [{"method": "GET"}], "any": [], "not": {"pathRegex": "/x", "not": {"method": "PUT"}}},
                "responseClasses": [{"isFailure": false, "condition": {"status": {"min": 500, "max": 599}, "all": [], "any": [{"status": {}}], "not": {"status": {"min": 200}}}}],
            }],
            "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"},
            "opaquePorts": [3306, "5432"],
            "dstOverrides": [{"authority": "a:80", "weight": "500m"}, {"authority": "b:80", "weight": 1}],
        }),
    ));

    let mut link = object(
        "multicluster.linkerd.io/v1alpha3",
        "Link",
        json!({
            "targetClusterName": "east", "targetClusterDomain": "cluster.local", "targetClusterLinkerdNamespace": "linkerd",
            "clusterCredentialsSecret": "cluster-credentials-east", "gatewayAddress": "1.2.3.4", "gatewayPort": "4143",
            "gatewayIdentity": "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
            "probeSpec": {"path": "/ready", "port": "4191", "period": "3s", "timeout": "30s", "failureThreshold": "3"},
            "selector": selector(), "remoteDiscoverySelector": {}, "federatedServiceSelector": {"matchLabels": {"mirror.linkerd.io/federated": "member"}},
            "excludedAnnotations": [], "excludedLabels": ["a"],
        }),
    );
    link["status"] = json!({
        "mirrorServices": [{"controllerName": "linkerd.io/service-mirror", "remoteRef": {"group": "", "kind": "Service", "name": "web", "namespace": "ns"},
            "conditions": [{"type": "Mirrored", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2024-01-01T00:00:00Z", "reason": "Mirrored", "message": "", "localRef": {"kind": "Service", "name": "web-east"}}]}],
        "federatedServices": [],
    });
    // `lastProbeTime: null` is what Linkerd writes for an unset time; it reads as unset.
    let typed: link::Link = serde_json::from_value(link.clone()).unwrap();
    link["status"]["mirrorServices"][0]["conditions"][0]
        .as_object_mut()
        .unwrap()
        .remove("lastProbeTime");
    assert_eq!(serde_json::to_value(&typed).unwrap()["status"], link["status"]);
    round_trip::<link::Link>(link);

    let mut ts = object(
        "split.smi-spec.io/v1alpha2",
        "TrafficSplit",
        json!({
            "service": "web", "backends": [{"service": "web-v1", "weight": 90}, {"service": "web-v2", "weight": "100m"}],
            "matches": [{"apiGroup": "specs.smi-spec.io", "kind": "HTTPRouteGroup", "name": "r"}],
        }),
    );
    round_trip::<split::TrafficSplit>(ts.clone());
    ts["apiVersion"] = json!("split.smi-spec.io/v1alpha1");
    ts["spec"]["backends"] = json!([]);
    round_trip::<split::TrafficSplit>(ts);
}

// === Seed manifests ===

fn validate_spec<S: Validate>(spec: &S) -> Problems {
    let mut problems = Problems::default();
    spec.validate(&FieldPath::root().key("spec"), &mut problems);
    problems
}

/// Loads a seed document (as JSON) into `K`, checks the round trip, and asserts the spec
/// validates without problems.
macro_rules! seed {
    ($kind:ty, $doc:expr) => {{
        let doc: Value = $doc;
        let typed: $kind = round_trip::<$kind>(doc.clone());
        let problems = validate_spec(&typed.spec);
        assert!(problems.is_empty(), "{}: {problems:?}", doc["metadata"]["name"]);
        typed
    }};
}

#[test]
fn seed_04_trafficsplit_canary() {
    let ts = seed!(
        split::TrafficSplit,
        json!({
            "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": "myapp-canary", "namespace": "production"},
            "spec": {"service": "myapp", "backends": [{"service": "myapp-v1", "weight": 90}, {"service": "myapp-v2", "weight": 10}]},
        })
    );
    assert_eq!(ts.spec.backends[0].weight, weight::Weight::Int(90));
    assert_eq!(ts.spec.shares(), vec![("myapp-v1", 0.9), ("myapp-v2", 0.1)]);
}

#[test]
fn seed_05_httproute_routing() {
    let route = seed!(
        policy::HttpRoute,
        json!({
            "apiVersion": "policy.linkerd.io/v1beta1", "kind": "HTTPRoute",
            "metadata": {"name": "myapp-routes", "namespace": "production"},
            "spec": {
                "parentRefs": [{"name": "myapp", "kind": "Service", "group": "core", "port": 80}],
                "rules": [
                    {"matches": [{"headers": [{"name": "x-canary", "value": "true"}]}], "backendRefs": [{"name": "myapp-v2", "port": 80}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/api/v2"}}], "backendRefs": [{"name": "myapp-v2", "port": 80}]},
                    {"backendRefs": [{"name": "myapp-v1", "port": 80, "weight": 90}, {"name": "myapp-v2", "port": 80, "weight": 10}]},
                ],
            },
        })
    );
    let rules = route.spec.rules.as_deref().unwrap();
    let header = &rules[0].matches.as_deref().unwrap()[0]
        .headers
        .as_deref()
        .unwrap()[0];
    assert_eq!(header.match_type(), "Exact");
    assert!(rules[2].matches.is_none(), "the default rule matches everything");
    let weights: Vec<i32> = rules[2]
        .backend_refs
        .iter()
        .flatten()
        .map(|b| b.weight_or_default())
        .collect();
    assert_eq!(weights, [90, 10]);
    assert_eq!(
        rules[0].backend_refs.as_deref().unwrap()[0].weight_or_default(),
        1
    );
    assert!(rules[0].backend_refs.as_deref().unwrap()[0].is_service());
}

#[test]
fn seed_06_httproute_retries() {
    let route = seed!(
        policy::HttpRoute,
        json!({
            "apiVersion": "policy.linkerd.io/v1alpha1", "kind": "HTTPRoute",
            "metadata": {"name": "myapp-retries", "namespace": "production"},
            "spec": {
                "parentRefs": [{"name": "myapp", "kind": "Service"}],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [
                        {"name": "l5d-retry-http", "value": "5xx"}, {"name": "l5d-retry-limit", "value": "3"},
                    ]}}],
                    "backendRefs": [{"name": "myapp", "port": 80}],
                }],
            },
        })
    );
    let filter = &route.spec.rules.as_deref().unwrap()[0]
        .filters
        .as_deref()
        .unwrap()[0];
    let set = filter
        .request_header_modifier
        .as_ref()
        .unwrap()
        .set
        .as_deref()
        .unwrap();
    assert_eq!(
        (set[1].name.as_str(), set[1].value.as_str()),
        ("l5d-retry-limit", "3")
    );
}

#[test]
fn seed_07_httproute_timeouts() {
    let route = seed!(
        policy::HttpRoute,
        json!({
            "apiVersion": "policy.linkerd.io/v1alpha1", "kind": "HTTPRoute",
            "metadata": {"name": "myapp-timeouts", "namespace": "production"},
            "spec": {
                "parentRefs": [{"name": "myapp", "kind": "Service"}],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "timeouts": {"request": "10s", "backendRequest": "8s"},
                    "backendRefs": [{"name": "myapp", "port": 80}],
                }],
            },
        })
    );
    let timeouts = route.spec.rules.as_deref().unwrap()[0].timeouts.as_ref().unwrap();
    assert_eq!(
        crate::names::duration(timeouts.request.as_deref().unwrap()),
        Ok(std::time::Duration::from_secs(10))
    );
    assert_eq!(
        crate::names::duration(timeouts.backend_request.as_deref().unwrap()),
        Ok(std::time::Duration::from_secs(8))
    );
}

#[test]
fn seed_08_serviceprofile() {
    let sp = seed!(
        profile::ServiceProfile,
        json!({
            "apiVersion": "linkerd.io/v1alpha2", "kind": "ServiceProfile",
            "metadata": {"name": "myapp.production.svc.cluster.local", "namespace": "production"},
            "spec": {
                "routes": [{
                    "name": "GET /api/users",
                    "condition": {"method": "GET", "pathRegex": "/api/users"},
                    "responseClasses": [{"condition": {"status": {"min": 500, "max": 599}}, "isFailure": true}],
                }],
                "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"},
            },
        })
    );
    let class = &sp.spec.routes.as_deref().unwrap()[0]
        .response_classes
        .as_deref()
        .unwrap()[0];
    let status = class.condition.status.as_ref().unwrap();
    assert_eq!(
        (status.min, status.max, class.is_failure),
        (Some(500), Some(599), Some(true))
    );
    assert_eq!(sp.spec.retry_budget.as_ref().unwrap().retry_ratio, 0.2);
}

#[test]
fn seed_09_server_authorization() {
    let server = seed!(
        policy::Server,
        json!({
            "apiVersion": "policy.linkerd.io/v1beta1", "kind": "Server",
            "metadata": {"name": "myapp-server", "namespace": "production"},
            "spec": {"podSelector": {"matchLabels": {"app": "myapp"}}, "port": 8080, "proxyProtocol": "HTTP/2"},
        })
    );
    assert_eq!(server.spec.port, policy::ServerPort::Number(8080));
    assert_eq!(server.spec.proxy_protocol(), Some(policy::ProxyProtocol::Http2));

    let saz = seed!(
        policy::ServerAuthorization,
        json!({
            "apiVersion": "policy.linkerd.io/v1beta1", "kind": "ServerAuthorization",
            "metadata": {"name": "myapp-auth", "namespace": "production"},
            "spec": {"server": {"name": "myapp-server"}, "client": {"meshTLS": {"serviceAccounts": [{"name": "frontend", "namespace": "production"}]}}},
        })
    );
    assert_eq!(saz.spec.server.name.as_deref(), Some("myapp-server"));
    let saz = seed!(
        policy::ServerAuthorization,
        json!({
            "apiVersion": "policy.linkerd.io/v1beta1", "kind": "ServerAuthorization",
            "metadata": {"name": "myapp-auth-ingress", "namespace": "production"},
            "spec": {"server": {"name": "myapp-server"}, "client": {"unauthenticated": true}},
        })
    );
    assert_eq!(saz.spec.client.unauthenticated, Some(true));
    let saz = seed!(
        policy::ServerAuthorization,
        json!({
            "apiVersion": "policy.linkerd.io/v1beta1", "kind": "ServerAuthorization",
            "metadata": {"name": "myapp-auth-namespace", "namespace": "production"},
            "spec": {"server": {"name": "myapp-server"}, "client": {"meshTLS": {"identities": ["*.production.serviceaccount.identity.linkerd.cluster.local"]}}},
        })
    );
    assert_eq!(saz.spec.client.mesh_tls.unwrap().identities.unwrap().len(), 1);
}

#[test]
fn seed_10_deny_by_default() {
    let server = seed!(
        policy::Server,
        json!({
            "apiVersion": "policy.linkerd.io/v1beta1", "kind": "Server",
            "metadata": {"name": "all-pods", "namespace": "production"},
            "spec": {"podSelector": {"matchLabels": {}}, "port": "1-65535"},
        })
    );
    assert_eq!(server.spec.port, policy::ServerPort::Range(1, 65535));
    assert!(
        server.spec.port.contains(1) && server.spec.port.contains(8080) && server.spec.port.contains(65535)
    );
    let selector = server.spec.pod_selector.as_ref().unwrap();
    assert!(
        selector.match_labels.as_ref().is_some_and(|l| l.is_empty()),
        "an empty selector selects every pod"
    );

    let deny = seed!(
        policy::ServerAuthorization,
        json!({
            "apiVersion": "policy.linkerd.io/v1beta1", "kind": "ServerAuthorization",
            "metadata": {"name": "deny-all", "namespace": "production"},
            "spec": {"server": {"name": "all-pods"}, "client": {"networks": []}},
        })
    );
    // An explicit empty list (no network admitted) is not the same as an unset one (default).
    assert_eq!(deny.spec.client.networks.as_deref(), Some(&[][..]));

    let allow = seed!(
        policy::ServerAuthorization,
        json!({
            "apiVersion": "policy.linkerd.io/v1beta1", "kind": "ServerAuthorization",
            "metadata": {"name": "allow-frontend-to-api", "namespace": "production"},
            "spec": {"server": {"selector": {"matchLabels": {"app": "api"}}}, "client": {"meshTLS": {"serviceAccounts": [{"name": "frontend"}]}}},
        })
    );
    assert!(allow.spec.server.name.is_none());
    assert_eq!(
        allow.spec.server.selector.unwrap().match_labels.unwrap()["app"],
        "api"
    );
}
