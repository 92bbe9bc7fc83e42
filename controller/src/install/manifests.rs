//! The control plane's Kubernetes objects, rendered from typed values and identity
//! material. Shapes follow Linkerd's `linkerd-control-plane` chart (names, labels, ports,
//! Services, Secret and ConfigMap keys) with one difference: one `linkerd-controller`
//! Deployment runs `strait controller`, which serves destination, identity, policy and the
//! injector webhook, so every Service selects it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use strait_api::kinds::{KindId, Object};
use strait_api::labels::{self, config as ann};

use super::values::{Resources, VERSION, Values};
use super::{Identity, WebhookTls};

/// The control plane's namespace.
pub const NAMESPACE: &str = crate::inject::CONTROL_PLANE_NAMESPACE;
/// The controller's Deployment, ServiceAccount and RBAC name.
pub const CONTROLLER: &str = "linkerd-controller";
/// The ConfigMap holding the install values (key `values`).
pub const CONFIG_MAP: &str = "linkerd-config";
/// The ConfigMap holding the trust anchors (key `ca-bundle.crt`).
pub const TRUST_ROOTS: &str = "linkerd-identity-trust-roots";
/// The Secret holding the issuer (keys `crt.pem`, `key.pem`).
pub const ISSUER_SECRET: &str = "linkerd-identity-issuer";
/// The Secret holding the webhook's serving certificate (`tls.crt`, `tls.key`).
pub const WEBHOOK_SECRET: &str = "linkerd-proxy-injector-k8s-tls";
/// The injector's Service.
pub const WEBHOOK_SERVICE: &str = "linkerd-proxy-injector";
/// The MutatingWebhookConfiguration.
pub const WEBHOOK_CONFIG: &str = "linkerd-proxy-injector-webhook-config";

/// The controller's ports.
const DESTINATION_PORT: u16 = 8086;
const IDENTITY_PORT: u16 = 8080;
const POLICY_PORT: u16 = 8090;
const WEBHOOK_PORT: u16 = 8443;
const ADMIN_PORT: u16 = 9990;

/// The component label of the controller's pods, which every Service selects.
const COMPONENT: &str = "controller";

/// Where the controller finds its configuration (mounted volumes).
pub const CONFIG_DIR: &str = "/var/run/linkerd/config";
/// Where the controller finds the trust anchors.
pub const TRUST_ROOTS_DIR: &str = "/var/run/linkerd/identity/trust-roots";
/// Where the controller finds the issuer certificate and key.
pub const ISSUER_DIR: &str = "/var/run/linkerd/identity/issuer";
/// Where the controller finds the webhook's serving certificate.
pub const WEBHOOK_TLS_DIR: &str = "/var/run/linkerd/tls";

fn created_by() -> String {
    format!("strait/cli {VERSION}")
}

fn meta(name: &str, namespaced: bool, component: &str) -> Value {
    let mut m = json!({
        "name": name,
        "labels": {
            labels::CONTROL_PLANE_COMPONENT_LABEL: component,
            labels::CONTROL_PLANE_NS_LABEL: NAMESPACE,
        },
        "annotations": { labels::INJECTED_BY: created_by() },
    });
    if namespaced {
        m["namespace"] = json!(NAMESPACE);
    }
    m
}

fn b64(bytes: &[u8]) -> Value {
    // ByteString serializes as base64, as Secret data must be.
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).expect("bytes serialize")
}

fn resources(r: &Resources) -> Option<Value> {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (name, pair) in [("cpu", &r.cpu), ("memory", &r.memory)] {
        if let Some(q) = &pair.request {
            requests.insert(name, q.as_str());
        }
        if let Some(q) = &pair.limit {
            limits.insert(name, q.as_str());
        }
    }
    let mut v = serde_json::Map::new();
    if !requests.is_empty() {
        v.insert("requests".into(), json!(requests));
    }
    if !limits.is_empty() {
        v.insert("limits".into(), json!(limits));
    }
    (!v.is_empty()).then_some(Value::Object(v))
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// Every object of the control plane except the CRDs, in the order to apply them, as
/// (kind, JSON) pairs; [`super::render`] types them.
pub(crate) fn values(values: &Values, identity: &Identity, webhook: &WebhookTls) -> Vec<(KindId, Value)> {
    let anchors_pem = identity.anchors.to_pem();
    let values_yaml = values.to_yaml();
    let mut out = vec![
        (KindId::Namespace, namespace()),
        (KindId::ClusterRole, cluster_role()),
        (KindId::ClusterRoleBinding, cluster_role_binding()),
        (
            KindId::ServiceAccount,
            json!({ "metadata": meta(CONTROLLER, true, COMPONENT) }),
        ),
        (KindId::Secret, issuer_secret(identity)),
        (
            KindId::ConfigMap,
            json!({
                "metadata": meta(TRUST_ROOTS, true, "identity"),
                "data": { "ca-bundle.crt": anchors_pem },
            }),
        ),
        (
            KindId::Secret,
            json!({
                "metadata": meta(WEBHOOK_SECRET, true, "proxy-injector"),
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": b64(webhook.cert_pem.as_bytes()),
                    "tls.key": b64(webhook.key_pem.as_bytes()),
                },
            }),
        ),
        (
            KindId::ConfigMap,
            json!({
                "metadata": meta(CONFIG_MAP, true, COMPONENT),
                "data": { "values": values_yaml },
            }),
        ),
    ];
    for (name, port, headless) in [
        ("linkerd-dst", DESTINATION_PORT, false),
        ("linkerd-dst-headless", DESTINATION_PORT, true),
        ("linkerd-policy", POLICY_PORT, true),
        ("linkerd-identity", IDENTITY_PORT, false),
        ("linkerd-identity-headless", IDENTITY_PORT, true),
    ] {
        out.push((KindId::Service, grpc_service(name, port, headless)));
    }
    let mut injector = meta(WEBHOOK_SERVICE, true, "proxy-injector");
    injector["annotations"][ann::OPAQUE_PORTS] = json!("443");
    out.push((
        KindId::Service,
        json!({
            "metadata": injector,
            "spec": {
                "type": "ClusterIP",
                "selector": { labels::CONTROL_PLANE_COMPONENT_LABEL: COMPONENT },
                "ports": [{ "name": "proxy-injector", "port": 443, "targetPort": "proxy-injector" }],
            },
        }),
    ));
    // A checksum of what the controller reads from its volumes, so an upgrade that changes
    // it rolls the controller's pods.
    let checksum = crate::inject::config::sha256_hex(
        format!(
            "{values_yaml}{anchors_pem}{}{}",
            identity.issuer.cert_pem(),
            webhook.cert_pem
        )
        .as_bytes(),
    );
    out.push((KindId::Deployment, deployment(values, &checksum)));
    if values.enable_pod_disruption_budget {
        out.push((
            KindId::PodDisruptionBudget,
            json!({
                "metadata": meta(CONTROLLER, true, COMPONENT),
                "spec": {
                    "maxUnavailable": 1,
                    "selector": { "matchLabels": { labels::CONTROL_PLANE_COMPONENT_LABEL: COMPONENT } },
                },
            }),
        ));
    }
    out.push((
        KindId::MutatingWebhookConfiguration,
        webhook_config(values, webhook),
    ));
    out
}

fn namespace() -> Value {
    json!({
        "metadata": {
            "name": NAMESPACE,
            "annotations": { labels::INJECT: labels::INJECT_DISABLED },
            "labels": {
                labels::IS_CONTROL_PLANE: "true",
                labels::ADMISSION_WEBHOOKS: "disabled",
                labels::CONTROL_PLANE_NS_LABEL: NAMESPACE,
                // The controller runs unmeshed (it terminates mesh TLS itself) with no init
                // container, so the namespace can be restricted.
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    })
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> Value {
    json!({ "apiGroups": [group], "resources": resources, "verbs": verbs })
}

const READ: &[&str] = &["get", "list", "watch"];

fn cluster_role() -> Value {
    // What the controller watches, by group, named as the registry names it.
    let watched = [
        KindId::Namespace,
        KindId::Service,
        KindId::Endpoints,
        KindId::Pod,
        KindId::EndpointSlice,
        KindId::Deployment,
        KindId::ReplicaSet,
        KindId::StatefulSet,
        KindId::DaemonSet,
        KindId::Job,
        KindId::CronJob,
        KindId::Server,
        KindId::ServerAuthorization,
        KindId::AuthorizationPolicy,
        KindId::MeshTlsAuthentication,
        KindId::NetworkAuthentication,
        KindId::PolicyHttpRoute,
        KindId::GatewayHttpRoute,
        KindId::GrpcRoute,
        KindId::ServiceProfile,
        KindId::TrafficSplit,
        KindId::Link,
    ];
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in watched {
        let info = k.info();
        by_group.entry(info.group).or_default().push(info.plural);
    }
    let mut rules: Vec<Value> = by_group.iter().map(|(g, r)| rule(g, r, READ)).collect();
    rules.extend([
        rule("", &["nodes"], READ),
        rule("", &["events"], &["create", "patch"]),
        rule(
            "discovery.k8s.io",
            &["endpointslices"],
            &["create", "update", "patch", "delete"],
        ),
        rule("policy.linkerd.io", &["httproutes/status"], &["update", "patch"]),
        rule(
            "gateway.networking.k8s.io",
            &["httproutes/status", "grpcroutes/status"],
            &["update", "patch"],
        ),
        rule("multicluster.linkerd.io", &["links/status"], &["update", "patch"]),
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update", "patch"],
        ),
    ]);
    let name = format!("linkerd-{NAMESPACE}-controller");
    json!({ "metadata": meta(&name, false, COMPONENT), "rules": rules })
}

fn cluster_role_binding() -> Value {
    let name = format!("linkerd-{NAMESPACE}-controller");
    json!({
        "metadata": meta(&name, false, COMPONENT),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": CONTROLLER, "namespace": NAMESPACE }],
    })
}

fn issuer_secret(identity: &Identity) -> Value {
    let mut m = meta(ISSUER_SECRET, true, "identity");
    m["annotations"][labels::IDENTITY_ISSUER_EXPIRY] = json!(rfc3339(identity.issuer.not_after()));
    json!({
        "metadata": m,
        "data": {
            "crt.pem": b64(identity.issuer.cert_pem().as_bytes()),
            "key.pem": b64(identity.issuer.key_pem().as_bytes()),
        },
    })
}

fn grpc_service(name: &str, port: u16, headless: bool) -> Value {
    let mut m = meta(name, true, COMPONENT);
    // gRPC between proxies and the controller needs no protocol detection.
    m["annotations"][ann::OPAQUE_PORTS] = json!(port.to_string());
    let mut spec = json!({
        "selector": { labels::CONTROL_PLANE_COMPONENT_LABEL: COMPONENT },
        "ports": [{ "name": "grpc", "port": port, "targetPort": port }],
    });
    if headless {
        spec["clusterIP"] = json!("None");
    } else {
        spec["type"] = json!("ClusterIP");
    }
    json!({ "metadata": m, "spec": spec })
}

fn anti_affinity() -> Value {
    let term = |topology: &str| {
        json!({
            "labelSelector": { "matchExpressions": [{
                "key": labels::CONTROL_PLANE_COMPONENT_LABEL, "operator": "In", "values": [COMPONENT],
            }]},
            "topologyKey": topology,
        })
    };
    json!({ "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            { "podAffinityTerm": term("topology.kubernetes.io/zone"), "weight": 100 },
        ],
        "requiredDuringSchedulingIgnoredDuringExecution": [term("kubernetes.io/hostname")],
    }})
}

fn deployment(values: &Values, checksum: &str) -> Value {
    let mut m = meta(CONTROLLER, true, COMPONENT);
    m["labels"]["app.kubernetes.io/name"] = json!("controller");
    m["labels"]["app.kubernetes.io/part-of"] = json!("strait");
    m["labels"]["app.kubernetes.io/version"] = json!(VERSION);
    let port = |name: &str, p: u16| json!({ "containerPort": p, "name": name });
    let mount = |name: &str, path: &str| json!({ "name": name, "mountPath": path, "readOnly": true });
    let mut container = json!({
        "name": "controller",
        "image": values.controller_image_ref(),
        "imagePullPolicy": values.image_pull_policy.as_str(),
        "args": [
            "--log", values.controller_log_level.as_str(),
            "controller", "--kubernetes",
            "--trust-domain", values.identity_trust_domain.as_str(),
            "--cluster-domain", values.cluster_domain.as_str(),
            // The policy and destination settings Linkerd's chart passes its controllers.
            "--cluster-networks", values.cluster_networks.as_str(),
            "--default-inbound-policy", values.proxy.default_inbound_policy.as_str(),
            "--default-opaque-ports", values.proxy.opaque_ports.as_str(),
            "--issuance-lifetime", values.identity.issuer.issuance_lifetime.as_str(),
            "--values-file", format!("{CONFIG_DIR}/values"),
            "--identity-trust-anchors-file", format!("{TRUST_ROOTS_DIR}/ca-bundle.crt"),
            "--identity-issuer-certificate-file", format!("{ISSUER_DIR}/crt.pem"),
            "--identity-issuer-key-file", format!("{ISSUER_DIR}/key.pem"),
            "--webhook-cert-file", format!("{WEBHOOK_TLS_DIR}/tls.crt"),
            "--webhook-key-file", format!("{WEBHOOK_TLS_DIR}/tls.key"),
        ],
        "ports": [
            port("grpc-dst", DESTINATION_PORT),
            port("grpc-identity", IDENTITY_PORT),
            port("grpc-policy", POLICY_PORT),
            port("proxy-injector", WEBHOOK_PORT),
            port("admin-http", ADMIN_PORT),
        ],
        "livenessProbe": {
            "httpGet": { "path": "/live", "port": "admin-http" },
            "initialDelaySeconds": 10,
        },
        "readinessProbe": {
            "httpGet": { "path": "/ready", "port": "admin-http" },
            "failureThreshold": 7,
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": values.controller_uid,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": [
            mount("config", CONFIG_DIR),
            mount("trust-roots", TRUST_ROOTS_DIR),
            mount("identity-issuer", ISSUER_DIR),
            mount("tls", WEBHOOK_TLS_DIR),
        ],
    });
    if let Some(r) = resources(&values.controller_resources) {
        container["resources"] = r;
    }
    let mut pod_spec = json!({
        "serviceAccountName": CONTROLLER,
        "securityContext": { "seccompProfile": { "type": "RuntimeDefault" } },
        "containers": [container],
        "volumes": [
            { "name": "config", "configMap": { "name": CONFIG_MAP } },
            { "name": "trust-roots", "configMap": { "name": TRUST_ROOTS } },
            { "name": "identity-issuer", "secret": { "secretName": ISSUER_SECRET } },
            { "name": "tls", "secret": { "secretName": WEBHOOK_SECRET } },
        ],
    });
    if values.enable_pod_anti_affinity {
        pod_spec["affinity"] = anti_affinity();
    }
    let mut spec = json!({
        "replicas": values.controller_replicas,
        "revisionHistoryLimit": 10,
        "selector": { "matchLabels": { labels::CONTROL_PLANE_COMPONENT_LABEL: COMPONENT } },
        "template": {
            "metadata": {
                "labels": {
                    labels::CONTROL_PLANE_COMPONENT_LABEL: COMPONENT,
                    labels::CONTROL_PLANE_NS_LABEL: NAMESPACE,
                    labels::WORKLOAD_NS_LABEL: NAMESPACE,
                },
                "annotations": {
                    labels::INJECTED_BY: created_by(),
                    "checksum/config": checksum,
                },
            },
            "spec": pod_spec,
        },
    });
    if values.controller_replicas > 1 {
        // Replace one replica at a time, as Linkerd's HA values do.
        spec["strategy"] = json!({ "rollingUpdate": { "maxUnavailable": 1, "maxSurge": "25%" } });
    }
    json!({ "metadata": m, "spec": spec })
}

fn webhook_config(values: &Values, webhook: &WebhookTls) -> Value {
    let mut m = meta(WEBHOOK_CONFIG, false, "proxy-injector");
    if let Some(a) = m.as_object_mut() {
        // Cluster-scoped and named after the injector: no created-by needed to find it.
        a.remove("annotations");
    }
    json!({
        "metadata": m,
        "webhooks": [{
            "name": "linkerd-proxy-injector.linkerd.io",
            "namespaceSelector": { "matchExpressions": [
                { "key": labels::ADMISSION_WEBHOOKS, "operator": "NotIn", "values": ["disabled"] },
                { "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "cert-manager"] },
            ]},
            "objectSelector": { "matchExpressions": [
                { "key": labels::CONTROL_PLANE_COMPONENT_LABEL, "operator": "DoesNotExist" },
                { "key": "linkerd.io/cni-resource", "operator": "DoesNotExist" },
            ]},
            "clientConfig": {
                "service": { "name": WEBHOOK_SERVICE, "namespace": NAMESPACE, "path": "/", "port": 443 },
                "caBundle": b64(webhook.cert_pem.as_bytes()),
            },
            "failurePolicy": values.webhook_failure_policy.as_str(),
            "admissionReviewVersions": ["v1"],
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods", "services"],
                "scope": "Namespaced",
            }],
            "sideEffects": "None",
            "timeoutSeconds": 10,
        }],
    })
}

/// Types one rendered object.
pub(crate) fn object(kind: KindId, mut v: Value) -> Object {
    let info = kind.info();
    v["apiVersion"] = json!(info.api_version());
    v["kind"] = json!(info.kind);
    let o = Object::from_value(kind, v.clone())
        .unwrap_or_else(|e| panic!("install renders a valid {}: {e}", info.kind));
    // A misspelt field would be dropped silently by typing; debug builds (tests) catch it.
    debug_assert_eq!(o.to_value(), v, "a field of {} was lost in typing", info.kind);
    o
}
