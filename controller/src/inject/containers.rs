//! The containers and volumes injection adds, built from a pod's resolved [`Settings`]:
//! Linkerd's `linkerd-init` (here `strait init`) and `linkerd-proxy` (here `strait proxy`),
//! with the environment, ports, probes and security contexts of Linkerd's proxy partials, so
//! a stock linkerd2-proxy given the same image slot would find what it expects.

use k8s_openapi::api::core::v1::{Container, Volume};
use serde_json::{Value, json};

use super::config::{InjectConfig, Settings};

/// The proxy container's name.
pub const PROXY_CONTAINER: &str = "linkerd-proxy";
/// The init container's name.
pub const INIT_CONTAINER: &str = "linkerd-init";
/// In-memory volume where the proxy keeps its key, CSR and certificate.
pub const END_ENTITY_VOLUME: &str = "linkerd-identity-end-entity";
/// Projected service-account token the proxy proves its identity with.
pub const TOKEN_VOLUME: &str = "linkerd-identity-token";
/// Scratch `/run` for the init container's iptables lock (the root filesystem is read-only).
pub const XTABLES_VOLUME: &str = "linkerd-proxy-init-xtables-lock";
/// Every container name injection adds.
pub const CONTAINERS: &[&str] = &[PROXY_CONTAINER, INIT_CONTAINER];
/// Every volume name injection adds.
pub const VOLUMES: &[&str] = &[XTABLES_VOLUME, TOKEN_VOLUME, END_ENTITY_VOLUME];

const END_ENTITY_DIR: &str = "/var/run/linkerd/identity/end-entity";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// The audience Linkerd's identity controller requires of proxy tokens.
const TOKEN_AUDIENCE: &str = "identity.l5d.io";
/// Linkerd's log filter suffix that keeps request headers out of proxy logs at any level.
const NO_HEADER_LOGS: &str = ",[{headers}]=off,[{request}]=off";
/// proxy-init's unprivileged user (nobody).
const INIT_UID: i64 = 65534;

fn plain(name: &str, value: impl Into<String>) -> Value {
    json!({ "name": name, "value": value.into() })
}

fn field(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

/// `LINKERD2_PROXY_*` and the downward-API variables they reference, in Linkerd's order
/// (a `$(VAR)` reference only sees variables defined before it).
fn env(config: &InjectConfig, s: &Settings, app_ports: &[i32]) -> Vec<Value> {
    let v = &config.values;
    let td = &v.identity_trust_domain;
    let mut env = vec![
        field("_pod_name", "metadata.name"),
        field("_pod_ns", "metadata.namespace"),
        field("_pod_nodeName", "spec.nodeName"),
    ];
    if let Some(cores) = s.cores {
        env.push(plain("LINKERD2_PROXY_CORES", cores.to_string()));
    }
    if !s.require_identity_ports.is_empty() {
        env.push(plain(
            "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY",
            s.require_identity_ports.clone(),
        ));
    }
    env.extend([
        plain(
            "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED",
            v.proxy.enable_shutdown_endpoint.to_string(),
        ),
        plain("LINKERD2_PROXY_LOG", format!("{}{NO_HEADER_LOGS}", s.log_level)),
        plain("LINKERD2_PROXY_LOG_FORMAT", s.log_format.clone()),
        plain(
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
            config.service_addr("linkerd-dst-headless", 8086),
        ),
        plain(
            "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS",
            v.cluster_networks.as_str(),
        ),
        plain(
            "LINKERD2_PROXY_POLICY_SVC_ADDR",
            config.service_addr("linkerd-policy", 8090),
        ),
        plain(
            "LINKERD2_PROXY_POLICY_WORKLOAD",
            r#"{"ns":"$(_pod_ns)", "pod":"$(_pod_name)"}"#,
        ),
        plain(
            "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
            s.default_inbound_policy.clone(),
        ),
        plain(
            "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS",
            v.cluster_networks.as_str(),
        ),
    ]);
    if let Some(t) = &s.inbound_connect_timeout {
        env.push(plain("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", t.clone()));
    }
    if let Some(t) = &s.outbound_connect_timeout {
        env.push(plain("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", t.clone()));
    }
    let p = &s.ports;
    env.extend([
        plain(
            "LINKERD2_PROXY_CONTROL_LISTEN_ADDR",
            format!("0.0.0.0:{}", p.control),
        ),
        plain("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", format!("0.0.0.0:{}", p.admin)),
        plain(
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR",
            format!("127.0.0.1:{}", p.outbound),
        ),
        plain(
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
            format!("0.0.0.0:{}", p.inbound),
        ),
        field("LINKERD2_PROXY_INBOUND_IPS", "status.podIPs"),
    ]);
    if !app_ports.is_empty() {
        let ports: Vec<String> = app_ports.iter().map(i32::to_string).collect();
        env.push(plain("LINKERD2_PROXY_INBOUND_PORTS", ports.join(",")));
    }
    if s.ingress {
        env.push(plain("LINKERD2_PROXY_INGRESS_MODE", "true"));
    }
    env.extend([
        plain(
            "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES",
            format!("svc.{}.", v.cluster_domain),
        ),
        plain("LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE", "10000ms"),
        plain("LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE", "10000ms"),
    ]);
    if !s.opaque_ports.is_empty() {
        env.push(plain(
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            s.opaque_ports.clone(),
        ));
    }
    env.extend([
        plain(
            "LINKERD2_PROXY_DESTINATION_CONTEXT",
            r#"{"ns":"$(_pod_ns)", "nodeName":"$(_pod_nodeName)", "pod":"$(_pod_name)"}"#,
        ),
        field("_pod_sa", "spec.serviceAccountName"),
        plain("_l5d_ns", config.namespace.clone()),
        plain("_l5d_trustdomain", td.clone()),
    ]);
    env.extend([
        plain("LINKERD2_PROXY_IDENTITY_DIR", END_ENTITY_DIR),
        plain(
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            config.trust_anchors_pem.trim(),
        ),
        plain(
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
            format!("{TOKEN_DIR}/{TOKEN_VOLUME}"),
        ),
        plain(
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
            config.service_addr("linkerd-identity-headless", 8080),
        ),
        plain(
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            format!(
                "$(_pod_sa).$(_pod_ns).serviceaccount.identity.{}.{td}",
                config.namespace
            ),
        ),
        plain(
            "LINKERD2_PROXY_IDENTITY_SVC_NAME",
            config.control_plane_identity("linkerd-identity"),
        ),
        plain(
            "LINKERD2_PROXY_DESTINATION_SVC_NAME",
            config.control_plane_identity("linkerd-destination"),
        ),
        plain(
            "LINKERD2_PROXY_POLICY_SVC_NAME",
            config.control_plane_identity("linkerd-destination"),
        ),
    ]);
    if !s.tap {
        env.push(plain("LINKERD2_PROXY_TAP_DISABLED", "true"));
    }
    if let Some(addr) = &s.trace_collector {
        env.push(plain("LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR", addr.clone()));
    }
    if let Some(g) = &s.shutdown_grace_period {
        env.push(plain("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", g.clone()));
    }
    env
}

fn resources(s: &Settings) -> Option<Value> {
    let mut r = serde_json::Map::new();
    if !s.requests.is_empty() {
        r.insert("requests".into(), json!(s.requests));
    }
    if !s.limits.is_empty() {
        r.insert("limits".into(), json!(s.limits));
    }
    (!r.is_empty()).then_some(Value::Object(r))
}

fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: Value) -> T {
    let t: T =
        serde_json::from_value(v.clone()).expect("the injector builds well-formed containers and volumes");
    // A misspelt field would be dropped silently by typing; debug builds (tests) catch it.
    debug_assert_eq!(
        serde_json::to_value(&t).ok(),
        Some(v),
        "a field was lost in typing"
    );
    t
}

/// The `linkerd-proxy` container.
pub(crate) fn proxy(config: &InjectConfig, s: &Settings, app_ports: &[i32]) -> Container {
    let admin = s.ports.admin;
    let mut security = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": s.uid,
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    if let Some(gid) = s.gid {
        security["runAsGroup"] = json!(gid);
    }
    let mounts = vec![
        json!({ "mountPath": END_ENTITY_DIR, "name": END_ENTITY_VOLUME }),
        json!({ "mountPath": TOKEN_DIR, "name": TOKEN_VOLUME }),
    ];
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": format!("{}:{}", s.image, s.version),
        "imagePullPolicy": s.pull_policy,
        "args": ["proxy"],
        "env": env(config, s, app_ports),
        "ports": [
            { "containerPort": s.ports.inbound, "name": "linkerd-proxy" },
            { "containerPort": admin, "name": "linkerd-admin" },
        ],
        "livenessProbe": {
            "httpGet": { "path": "/live", "port": admin },
            "initialDelaySeconds": 10,
            "timeoutSeconds": 1,
        },
        "readinessProbe": {
            "httpGet": { "path": "/ready", "port": admin },
            "initialDelaySeconds": 2,
            "timeoutSeconds": 1,
        },
        "securityContext": security,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if !mounts.is_empty() {
        c["volumeMounts"] = Value::Array(mounts);
    }
    if let Some(r) = resources(s) {
        c["resources"] = r;
    }
    typed(c)
}

/// The arguments of `strait init`: linkerd-init's flags, so the redirection is the same.
pub(crate) fn init_args(s: &Settings) -> Vec<String> {
    let p = &s.ports;
    let mut args: Vec<String> = vec![
        "init".into(),
        "--incoming-proxy-port".into(),
        p.inbound.to_string(),
        "--outgoing-proxy-port".into(),
        p.outbound.to_string(),
        "--proxy-uid".into(),
        s.uid.to_string(),
    ];
    if let Some(gid) = s.gid {
        args.extend(["--proxy-gid".into(), gid.to_string()]);
    }
    // The proxy's own admin and control ports are never redirected to itself.
    let mut inbound = format!("{},{}", p.control, p.admin);
    if !s.skip_inbound_ports.is_empty() {
        inbound.push(',');
        inbound.push_str(&s.skip_inbound_ports);
    }
    args.extend(["--inbound-ports-to-ignore".into(), inbound]);
    if !s.skip_outbound_ports.is_empty() {
        args.extend(["--outbound-ports-to-ignore".into(), s.skip_outbound_ports.clone()]);
    }
    if !s.skip_subnets.is_empty() {
        args.extend(["--subnets-to-ignore".into(), s.skip_subnets.clone()]);
    }
    if let Some(secs) = s.close_wait_secs {
        args.extend(["--timeout-close-wait-secs".into(), secs.to_string()]);
    }
    args
}

/// The `linkerd-init` container.
pub(crate) fn init(s: &Settings) -> Container {
    // Setting the conntrack timeout writes a sysctl: that needs a privileged container.
    let privileged = s.close_wait_secs.is_some();
    let user = if s.run_as_root { 0 } else { INIT_UID };
    let mut c = json!({
        "name": INIT_CONTAINER,
        "image": format!("{}:{}", s.image, s.version),
        "imagePullPolicy": s.pull_policy,
        "args": init_args(s),
        "securityContext": {
            "allowPrivilegeEscalation": privileged,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"] },
            "privileged": privileged,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": !s.run_as_root,
            "runAsUser": user,
            "runAsGroup": user,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{ "mountPath": "/run", "name": XTABLES_VOLUME }],
    });
    if let Some(r) = resources(s) {
        c["resources"] = r;
    }
    typed(c)
}

/// The volumes the two containers mount.
pub(crate) fn volumes() -> Vec<Volume> {
    [
        json!({ "name": XTABLES_VOLUME, "emptyDir": {} }),
        json!({
            "name": TOKEN_VOLUME,
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": TOKEN_AUDIENCE,
                "expirationSeconds": 86400,
                "path": TOKEN_VOLUME,
            }}]},
        }),
        json!({ "name": END_ENTITY_VOLUME, "emptyDir": { "medium": "Memory" } }),
    ]
    .into_iter()
    .map(typed)
    .collect()
}
