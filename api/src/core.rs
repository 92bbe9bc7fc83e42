//! Semantic validation of every object: metadata for all kinds, and the rules of the core
//! Kubernetes kinds the mesh reads (the API server's checks that matter to a mesh, and the
//! values of Linkerd's annotations wherever they may appear).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus, PodTemplateSpec, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::kinds::{KindId, Object};
use crate::labels::{self, config};
use crate::mesh::selector::validate_label_selector;
use crate::names;
use crate::validate::{FieldPath, Problems, Validate};

/// Every problem of `obj`: metadata, then the kind's own rules.
pub fn validate_object(obj: &Object) -> Problems {
    let mut p = Problems::default();
    let root = FieldPath::root();
    validate_meta(obj.kind_id(), obj.meta(), &root.key("metadata"), &mut p);
    let spec = root.key("spec");
    match obj {
        Object::Namespace(_)
        | Object::ServiceAccount(_)
        | Object::CustomResourceDefinition(_)
        | Object::ClusterRole(_)
        | Object::ClusterRoleBinding(_)
        | Object::Role(_)
        | Object::RoleBinding(_)
        | Object::MutatingWebhookConfiguration(_)
        | Object::ValidatingWebhookConfiguration(_)
        | Object::PodDisruptionBudget(_) => {}
        Object::Secret(o) => {
            map_keys(o.data.iter().flat_map(|m| m.keys()), &root.key("data"), &mut p);
            map_keys(
                o.string_data.iter().flat_map(|m| m.keys()),
                &root.key("stringData"),
                &mut p,
            );
        }
        Object::ConfigMap(o) => {
            map_keys(o.data.iter().flat_map(|m| m.keys()), &root.key("data"), &mut p);
        }
        Object::Service(o) => o.spec.iter().for_each(|s| service_spec(s, &spec, &mut p)),
        Object::Endpoints(o) => {
            for (i, subset) in o.subsets.iter().flatten().enumerate() {
                let sp = root.key("subsets").index(i);
                for (j, a) in subset.addresses.iter().flatten().enumerate() {
                    ip(&a.ip, &sp.key("addresses").index(j).key("ip"), &mut p);
                }
                for (j, a) in subset.not_ready_addresses.iter().flatten().enumerate() {
                    ip(&a.ip, &sp.key("notReadyAddresses").index(j).key("ip"), &mut p);
                }
                for (j, port) in subset.ports.iter().flatten().enumerate() {
                    port_num(port.port, &sp.key("ports").index(j).key("port"), &mut p);
                }
            }
        }
        Object::EndpointSlice(o) => {
            if !matches!(o.address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
                p.push(
                    &root.key("addressType"),
                    "one of IPv4, IPv6, FQDN",
                    Some(o.address_type.clone()),
                );
            }
            for (i, e) in o.endpoints.iter().flatten().enumerate() {
                for (j, a) in e.addresses.iter().enumerate() {
                    let path = root.key("endpoints").index(i).key("addresses").index(j);
                    if o.address_type != "FQDN" {
                        ip(a, &path, &mut p);
                    }
                }
            }
            for (i, port) in o.ports.iter().flatten().enumerate() {
                if let Some(n) = port.port {
                    port_num(n, &root.key("ports").index(i).key("port"), &mut p);
                }
            }
        }
        Object::Pod(o) => {
            pod_annotations(
                o.metadata.annotations.as_ref(),
                &root.key("metadata").key("annotations"),
                &mut p,
            );
            o.spec.iter().for_each(|s| pod_spec(s, &spec, &mut p));
        }
        Object::Deployment(o) => {
            let s = &o.spec;
            workload(Some(&s.selector), &s.template, &spec, &mut p);
            if s.replicas.is_some_and(|r| r < 0) {
                p.push(
                    &spec.key("replicas"),
                    "a non-negative number of replicas",
                    s.replicas.map(|r| r.to_string()),
                );
            }
        }
        Object::StatefulSet(o) => workload(Some(&o.spec.selector), &o.spec.template, &spec, &mut p),
        Object::DaemonSet(o) => workload(Some(&o.spec.selector), &o.spec.template, &spec, &mut p),
        Object::ReplicaSet(o) => {
            if let Some(t) = &o.spec.template {
                workload(Some(&o.spec.selector), t, &spec, &mut p);
            }
        }
        Object::Job(o) => {
            if let Some(s) = &o.spec {
                workload(s.selector.as_ref(), &s.template, &spec, &mut p);
            }
        }
        Object::CronJob(o) => {
            let jt = spec.key("jobTemplate").key("spec");
            if let Some(js) = &o.spec.job_template.spec {
                workload(js.selector.as_ref(), &js.template, &jt, &mut p);
            }
        }
        Object::Server(o) => o.spec.validate(&spec, &mut p),
        Object::ServerAuthorization(o) => o.spec.validate(&spec, &mut p),
        Object::AuthorizationPolicy(o) => o.spec.validate(&spec, &mut p),
        Object::MeshTlsAuthentication(o) => o.spec.validate(&spec, &mut p),
        Object::NetworkAuthentication(o) => o.spec.validate(&spec, &mut p),
        Object::PolicyHttpRoute(o) => o.spec.validate(&spec, &mut p),
        Object::GatewayHttpRoute(o) => o.spec.validate(&spec, &mut p),
        Object::GrpcRoute(o) => o.spec.validate(&spec, &mut p),
        Object::ServiceProfile(o) => {
            o.spec.validate(&spec, &mut p);
            service_profile_name(
                o.metadata.name.as_deref(),
                &root.key("metadata").key("name"),
                &mut p,
            );
        }
        Object::TrafficSplit(o) => o.spec.validate(&spec, &mut p),
        Object::Link(o) => o.spec.validate(&spec, &mut p),
    }
    if let Object::Namespace(ns) = obj {
        pod_annotations(
            ns.metadata.annotations.as_ref(),
            &root.key("metadata").key("annotations"),
            &mut p,
        );
    }
    p
}

/// Name, namespace, labels and annotations, as the API server checks them.
pub fn validate_meta(kind: KindId, meta: &ObjectMeta, path: &FieldPath, p: &mut Problems) {
    match meta.name.as_deref() {
        None | Some("") => p.missing(&path.key("name"), "a name"),
        Some(name) => {
            // Namespaces and Services are DNS labels (they become DNS names); most others subdomains.
            let check = match kind {
                KindId::Namespace | KindId::Service => names::dns1123_label(name),
                _ => names::dns1123_subdomain(name),
            };
            if let Err(e) = check {
                p.push(&path.key("name"), e, Some(format!("{name:?}")));
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref()
        && let Err(e) = names::dns1123_label(ns)
    {
        p.push(&path.key("namespace"), e, Some(format!("{ns:?}")));
    }
    labels_map(meta.labels.as_ref(), &path.key("labels"), p);
    if let Some(ann) = &meta.annotations {
        for k in ann.keys() {
            if let Err(e) = names::qualified_name(k) {
                p.push(
                    &path.key("annotations").key(k.clone()),
                    format!("an annotation key that is {e}"),
                    Some(format!("{k:?}")),
                );
            }
        }
    }
    if let Some(labels) = &meta.labels
        && let Some(v) = labels.get(labels::mirror::EXPORTED)
        && !matches!(v.as_str(), "true" | "remote-discovery" | "false")
    {
        p.push(
            &path.key("labels").key(labels::mirror::EXPORTED),
            "\"true\" (export) or \"remote-discovery\"",
            Some(format!("{v:?}")),
        );
    }
}

/// Label keys and values.
pub fn labels_map(labels: Option<&BTreeMap<String, String>>, path: &FieldPath, p: &mut Problems) {
    for (k, v) in labels.into_iter().flatten() {
        if let Err(e) = names::qualified_name(k) {
            p.push(
                &path.key(k.clone()),
                format!("a label key that is {e}"),
                Some(format!("{k:?}")),
            );
        }
        if let Err(e) = names::label_value(v) {
            p.push(&path.key(k.clone()), e, Some(format!("{v:?}")));
        }
    }
}

fn map_keys<'a>(keys: impl Iterator<Item = &'a String>, path: &FieldPath, p: &mut Problems) {
    for k in keys {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            p.push(
                &path.key(k.clone()),
                "a key of letters, digits, '-', '_' or '.'",
                Some(format!("{k:?}")),
            );
        }
    }
}

fn ip(s: &str, path: &FieldPath, p: &mut Problems) {
    if s.parse::<std::net::IpAddr>().is_err() {
        p.push(path, "an IPv4 or IPv6 address", Some(format!("{s:?}")));
    }
}

fn port_num(n: i32, path: &FieldPath, p: &mut Problems) {
    if let Err(e) = names::port_number(i64::from(n)) {
        p.push(path, e, Some(n.to_string()));
    }
}

fn int_or_name(v: &IntOrString, path: &FieldPath, p: &mut Problems) {
    match v {
        IntOrString::Int(n) => port_num(*n, path, p),
        IntOrString::String(s) => {
            if let Err(e) = names::port_name(s) {
                p.push(
                    path,
                    format!("a port number 1-65535 or {e}"),
                    Some(format!("{s:?}")),
                );
            }
        }
    }
}

fn service_spec(s: &ServiceSpec, path: &FieldPath, p: &mut Problems) {
    let ports = s.ports.as_deref().unwrap_or_default();
    let is_external = s.type_.as_deref() == Some("ExternalName");
    if ports.is_empty() && !is_external && s.cluster_ip.as_deref() != Some("None") {
        p.missing(&path.key("ports"), "at least one port");
    }
    if let Some(t) = &s.type_
        && !matches!(
            t.as_str(),
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        )
    {
        p.push(
            &path.key("type"),
            "one of ClusterIP, NodePort, LoadBalancer, ExternalName",
            Some(format!("{t:?}")),
        );
    }
    let mut seen = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = path.key("ports").index(i);
        port_num(port.port, &pp.key("port"), p);
        if let Some(t) = &port.target_port {
            int_or_name(t, &pp.key("targetPort"), p);
        }
        if let Some(proto) = &port.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            p.push(
                &pp.key("protocol"),
                "one of TCP, UDP, SCTP",
                Some(format!("{proto:?}")),
            );
        }
        if ports.len() > 1 && port.name.is_none() {
            p.missing(
                &pp.key("name"),
                "a port name (required when a Service has several ports)",
            );
        }
        let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        if let Some(first) = seen.insert((port.port, proto), i) {
            p.push(
                &pp.key("port"),
                format!("a port not already declared by ports[{first}]"),
                Some(port.port.to_string()),
            );
        }
    }
    labels_map(s.selector.as_ref(), &path.key("selector"), p);
}

fn workload(
    selector: Option<&LabelSelector>,
    template: &PodTemplateSpec,
    path: &FieldPath,
    p: &mut Problems,
) {
    let tpath = path.key("template");
    let tmeta = template.metadata.clone().unwrap_or_default();
    labels_map(tmeta.labels.as_ref(), &tpath.key("metadata").key("labels"), p);
    pod_annotations(
        tmeta.annotations.as_ref(),
        &tpath.key("metadata").key("annotations"),
        p,
    );
    if let Some(sel) = selector {
        let empty = sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && sel.match_expressions.as_ref().is_none_or(Vec::is_empty);
        if empty {
            // apps/v1 requires a selector, and an empty one would adopt every pod.
            p.missing(
                &path.key("selector"),
                "a non-empty selector (matchLabels or matchExpressions)",
            );
            return pod_template_spec(template, &tpath, p);
        }
        validate_label_selector(sel, &path.key("selector"), p);
        let labels = tmeta.labels.unwrap_or_default();
        if !selector_matches(sel, &labels) {
            p.push(
                &path.key("selector"),
                "a selector that matches spec.template.metadata.labels",
                Some(format!("template labels {labels:?}")),
            );
        }
    }
    pod_template_spec(template, &tpath, p);
}

fn pod_template_spec(template: &PodTemplateSpec, tpath: &FieldPath, p: &mut Problems) {
    match &template.spec {
        Some(s) => pod_spec(s, &tpath.key("spec"), p),
        None => p.missing(&tpath.key("spec"), "a pod spec"),
    }
}

/// Whether a proxy runs beside a pod: the injector's `linkerd.io/control-plane-ns` label,
/// or the proxy version annotation.
pub fn pod_is_meshed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .is_some_and(|l| l.contains_key(labels::CONTROL_PLANE_NS_LABEL))
        || meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(labels::PROXY_VERSION))
}

/// Whether a pod takes traffic: its `Ready` condition, or its phase `Running` when it
/// has no such condition (local mode's pods, hand-written fixtures).
pub fn pod_is_ready(status: Option<&PodStatus>) -> bool {
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) => c.status == "True",
        None => status.and_then(|s| s.phase.as_deref()) == Some("Running"),
    }
}

/// Whether a selector selects an object with `labels` (Kubernetes semantics; an empty
/// selector selects everything).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_labels && by_expr
}

fn pod_spec(s: &PodSpec, path: &FieldPath, p: &mut Problems) {
    if s.containers.is_empty() {
        p.missing(&path.key("containers"), "at least one container");
    }
    let mut names = BTreeMap::new();
    for (field, list) in [
        ("initContainers", s.init_containers.as_deref().unwrap_or_default()),
        ("containers", &s.containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            let cp = path.key(field).index(i);
            container(c, &cp, p);
            if let Some(first) = names.insert(c.name.clone(), cp.clone()) {
                p.push(
                    &cp.key("name"),
                    format!("a container name not already used by {first}"),
                    Some(format!("{:?}", c.name)),
                );
            }
        }
    }
}

fn container(c: &Container, path: &FieldPath, p: &mut Problems) {
    if let Err(e) = names::dns1123_label(&c.name) {
        p.push(&path.key("name"), e, Some(format!("{:?}", c.name)));
    }
    if c.image.as_deref().unwrap_or_default().is_empty() {
        p.missing(&path.key("image"), "a container image");
    }
    for (i, port) in c.ports.iter().flatten().enumerate() {
        port_num(
            port.container_port,
            &path.key("ports").index(i).key("containerPort"),
            p,
        );
        if let Some(name) = &port.name
            && let Err(e) = names::port_name(name)
        {
            p.push(
                &path.key("ports").index(i).key("name"),
                e,
                Some(format!("{name:?}")),
            );
        }
    }
}

/// The values of Linkerd's annotations on a Namespace, Pod or pod template.
fn pod_annotations(ann: Option<&BTreeMap<String, String>>, path: &FieldPath, p: &mut Problems) {
    for (k, v) in ann.into_iter().flatten() {
        let at = path.key(k.clone());
        let found = Some(format!("{v:?}"));
        let problem: Option<String> = match k.as_str() {
            labels::INJECT => (!matches!(v.as_str(), "enabled" | "disabled" | "ingress"))
                .then(|| "one of enabled, disabled, ingress".into()),
            config::SKIP_INBOUND_PORTS
            | config::SKIP_OUTBOUND_PORTS
            | config::OPAQUE_PORTS
            | config::PROXY_REQUIRE_IDENTITY_INBOUND_PORTS
            | config::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION => names::port_ranges(v).err(),
            config::DEFAULT_INBOUND_POLICY => (!config::DEFAULT_INBOUND_POLICIES.contains(&v.as_str()))
                .then(|| format!("one of {}", config::DEFAULT_INBOUND_POLICIES.join(", "))),
            config::PROXY_CPU_REQUEST
            | config::PROXY_CPU_LIMIT
            | config::PROXY_MEMORY_REQUEST
            | config::PROXY_MEMORY_LIMIT
            | config::PROXY_EPHEMERAL_STORAGE_REQUEST
            | config::PROXY_EPHEMERAL_STORAGE_LIMIT => names::quantity(v).err(),
            config::PROXY_LOG_LEVEL => log_filter(v).err(),
            config::PROXY_LOG_FORMAT => {
                (!matches!(v.as_str(), "plain" | "json")).then(|| "plain or json".into())
            }
            config::PROXY_UID | config::PROXY_GID => v
                .parse::<u32>()
                .err()
                .map(|_| "a numeric user or group id".into()),
            config::PROXY_ADMIN_PORT
            | config::PROXY_CONTROL_PORT
            | config::PROXY_INBOUND_PORT
            | config::PROXY_OUTBOUND_PORT => v
                .parse::<i64>()
                .map_err(|_| "a port number 1-65535".to_string())
                .and_then(names::port_number)
                .err(),
            config::PROXY_OUTBOUND_CONNECT_TIMEOUT
            | config::PROXY_INBOUND_CONNECT_TIMEOUT
            | config::CLOSE_WAIT_TIMEOUT
            | config::SHUTDOWN_GRACE_PERIOD
            | labels::route::TIMEOUT_REQUEST
            | labels::route::TIMEOUT_RESPONSE
            | labels::route::RETRY_TIMEOUT => names::duration(v).err(),
            config::SKIP_SUBNETS => v
                .split(',')
                .map(str::trim)
                .find(|c| !c.is_empty() && !is_cidr(c))
                .map(|_| "a comma-separated list of CIDRs (e.g. \"10.0.0.0/8,fd00::/8\")".into()),
            config::PROXY_AWAIT | config::DISABLE_TAP | config::DISABLE_IDENTITY => {
                (!matches!(v.as_str(), "enabled" | "disabled" | "true" | "false"))
                    .then(|| "enabled or disabled".into())
            }
            _ => None,
        };
        if let Some(expected) = problem {
            p.push(&at, expected, found);
        }
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    match (addr.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

/// A proxy log filter in Linkerd's (tracing's env-filter) syntax: `level` or
/// `target=level`, comma-separated, e.g. `info,linkerd=debug`.
pub fn log_filter(s: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let ok = !s.trim().is_empty()
        && s.split(',').map(str::trim).all(|d| {
            let level = d.rsplit_once('=').map_or(d, |(target, level)| {
                if target.is_empty()
                    || !target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-:.[]{}\"".contains(c))
                {
                    "invalid"
                } else {
                    level
                }
            });
            LEVELS.contains(&level.to_ascii_lowercase().as_str())
        });
    if ok {
        Ok(())
    } else {
        Err("a log filter such as \"info\" or \"warn,linkerd=info\" (levels trace, debug, info, warn, error, off)".into())
    }
}

/// A ServiceProfile is named after the FQDN of the service it describes.
fn service_profile_name(name: Option<&str>, path: &FieldPath, p: &mut Problems) {
    if let Some(n) = name
        && !n.contains('.')
    {
        p.push(
                path,
                "the fully qualified name of the service it describes (<service>.<namespace>.svc.<cluster-domain>)",
                Some(format!("{n:?}")),
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters() {
        assert!(log_filter("info,linkerd=debug").is_ok());
        assert!(log_filter("warn").is_ok());
        assert!(log_filter("linkerd=loud").is_err());
        assert!(log_filter("").is_err());
    }

    #[test]
    fn selectors() {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "myapp".to_string());
        let sel: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"app": "myapp"}})).unwrap();
        assert!(selector_matches(&sel, &labels));
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({"matchLabels": {}})).unwrap();
        assert!(selector_matches(&sel, &labels));
        let sel: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["myapp"]}]}))
                .unwrap();
        assert!(!selector_matches(&sel, &labels));
    }
}
