//! `Link` (multicluster.linkerd.io): how this cluster reaches a target cluster — its API
//! credentials, its multicluster gateway, how to probe that gateway, and which of its
//! Services to mirror — plus the service mirror's per-Service status.
//!
//! Linkerd writes every scalar as a string (`gatewayPort: "4143"`); so does this type, and
//! validation checks the numbers and durations inside.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::formats::{self, check};
use super::selector::validate_label_selector;
use crate::names;
use crate::validate::{FieldPath, Problems, Validate};

/// The desired state of a `Link`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "multicluster.linkerd.io",
    version = "v1alpha3",
    kind = "Link",
    namespaced,
    derive = "PartialEq",
    status = "LinkStatus",
    doc = "A link from this cluster to a target cluster whose Services are mirrored here."
)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    /// Name of the target cluster (suffix of mirrored Service names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster_name: Option<String>,
    /// Cluster domain of the target cluster (`cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster_domain: Option<String>,
    /// Namespace of Linkerd's control plane in the target cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster_linkerd_namespace: Option<String>,
    /// Secret holding the kubeconfig for the target cluster's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_credentials_secret: Option<String>,
    /// The target gateway's addresses (comma-separated hosts or IPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_address: Option<String>,
    /// The target gateway's port, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_port: Option<String>,
    /// The target gateway's proxy identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_identity: Option<String>,
    /// How to probe the gateway's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_spec: Option<ProbeSpec>,
    /// Target Services to mirror through the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Target Services to mirror in remote-discovery (flat network) mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_discovery_selector: Option<LabelSelector>,
    /// Target Services that join federated Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_service_selector: Option<LabelSelector>,
    /// Annotations not copied onto mirror Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_annotations: Option<Vec<String>>,
    /// Labels not copied onto mirror Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_labels: Option<Vec<String>>,
}

/// The gateway health probe; every value is a string, as in Linkerd's CRD.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// HTTP path of the health endpoint (`/ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port of the health endpoint (`"4191"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Time between probes (`"3s"`; older Links write plain seconds, `"3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Deadline of one probe (`"30s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Consecutive failures before the gateway counts as down (`"3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<String>,
}

/// What the service mirror reports about the Services of a Link.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// One entry per mirrored Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_services: Option<Vec<ServiceStatus>>,
    /// One entry per target Service joined to a federated Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_services: Option<Vec<ServiceStatus>>,
}

/// The state of one target Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Conditions (`Mirrored`, `Federated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<LinkCondition>>,
    /// The controller that wrote the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_name: Option<String>,
    /// The Service in the target cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ref: Option<ObjectRef>,
}

/// A condition of a mirrored or federated Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkCondition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// RFC 3339 time of the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    /// RFC 3339 time of the last status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// A CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The local mirror or federated Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ref: Option<ObjectRef>,
}

/// A loose object reference, every part optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// API group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl LinkSpec {
    /// The gateway port as a number, if it is a valid one.
    pub fn gateway_port_number(&self) -> Option<u16> {
        self.gateway_port.as_deref().and_then(parse_port)
    }

    /// The gateway addresses, split at commas.
    pub fn gateway_addresses(&self) -> Vec<&str> {
        self.gateway_address
            .as_deref()
            .map(|a| a.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

fn port_string(s: &str) -> Result<(), String> {
    parse_port(s)
        .map(|_| ())
        .ok_or_else(|| "a port number 1-65535, written as a string (\"4143\")".into())
}

fn gateway_addresses(s: &str) -> Result<(), String> {
    let ok = !s.trim().is_empty()
        && s.split(',')
            .map(str::trim)
            .all(|a| a.parse::<std::net::IpAddr>().is_ok() || names::dns1123_subdomain(a).is_ok());
    if ok {
        Ok(())
    } else {
        Err("comma-separated gateway addresses: IP addresses or DNS names".into())
    }
}

/// A probe period: a duration, or (older Links) a number of seconds.
fn period(s: &str) -> Result<(), String> {
    if s.parse::<u32>().is_ok() || names::duration(s).is_ok() {
        Ok(())
    } else {
        Err("a period such as \"3s\" (or a number of seconds, \"3\")".into())
    }
}

fn positive_count(s: &str) -> Result<(), String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err("a positive integer, written as a string (\"3\")".into()),
    }
}

impl Validate for LinkSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        type Check = fn(&str) -> Result<(), String>;
        // (field, value, required, format check)
        let fields: [(&str, &Option<String>, bool, Check); 7] = [
            (
                "targetClusterName",
                &self.target_cluster_name,
                true,
                names::dns1123_label,
            ),
            (
                "targetClusterDomain",
                &self.target_cluster_domain,
                false,
                names::dns1123_subdomain,
            ),
            (
                "targetClusterLinkerdNamespace",
                &self.target_cluster_linkerd_namespace,
                false,
                names::dns1123_label,
            ),
            (
                "clusterCredentialsSecret",
                &self.cluster_credentials_secret,
                true,
                names::dns1123_subdomain,
            ),
            ("gatewayAddress", &self.gateway_address, true, gateway_addresses),
            ("gatewayPort", &self.gateway_port, true, port_string),
            ("gatewayIdentity", &self.gateway_identity, true, |s| {
                names::dns1123_subdomain(s).map_err(|_| "the gateway's proxy identity, a DNS name such as \"linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local\"".to_string())
            }),
        ];
        for (field, value, required, format) in fields {
            match value {
                None if required => {
                    problems.missing(&path.key(field), format!("{field} (required for a Link)"))
                }
                None => {}
                Some(v) => check(&path.key(field), problems, v, format),
            }
        }
        if let Some(probe) = &self.probe_spec {
            let p = path.key("probeSpec");
            formats::check_opt(&p.key("path"), problems, probe.path.as_deref(), |s| {
                if s.starts_with('/') {
                    Ok(())
                } else {
                    Err("an HTTP path starting with \"/\"".into())
                }
            });
            formats::check_opt(&p.key("port"), problems, probe.port.as_deref(), port_string);
            formats::check_opt(&p.key("period"), problems, probe.period.as_deref(), period);
            formats::check_opt(&p.key("timeout"), problems, probe.timeout.as_deref(), |s| {
                names::duration(s).map(|_| ())
            });
            formats::check_opt(
                &p.key("failureThreshold"),
                problems,
                probe.failure_threshold.as_deref(),
                positive_count,
            );
        }
        for (field, sel) in [
            ("selector", &self.selector),
            ("remoteDiscoverySelector", &self.remote_discovery_selector),
            ("federatedServiceSelector", &self.federated_service_selector),
        ] {
            if let Some(sel) = sel {
                validate_label_selector(sel, &path.key(field), problems);
            }
        }
        for (field, keys) in [
            ("excludedAnnotations", &self.excluded_annotations),
            ("excludedLabels", &self.excluded_labels),
        ] {
            for (i, k) in keys.iter().flatten().enumerate() {
                // Entries may be globs (`*.example.com/*`), so only emptiness is an error.
                formats::check_non_empty(&path.key(field).index(i), problems, k, "a key or key pattern");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn valid() -> Value {
        json!({
            "targetClusterName": "east",
            "targetClusterDomain": "cluster.local",
            "targetClusterLinkerdNamespace": "linkerd",
            "clusterCredentialsSecret": "cluster-credentials-east",
            "gatewayAddress": "203.0.113.10,gw.east.example.com",
            "gatewayPort": "4143",
            "gatewayIdentity": "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
            "probeSpec": {"path": "/ready", "port": "4191", "period": "3s", "timeout": "30s", "failureThreshold": "3"},
            "selector": {"matchLabels": {"mirror.linkerd.io/exported": "true"}},
            "remoteDiscoverySelector": {"matchLabels": {"mirror.linkerd.io/exported": "remote-discovery"}},
            "federatedServiceSelector": {"matchLabels": {"mirror.linkerd.io/federated": "member"}},
            "excludedAnnotations": ["example.com/*"],
            "excludedLabels": [],
        })
    }

    fn with(field: &str, v: Value) -> Value {
        let mut spec = valid();
        if v.is_null() {
            spec.as_object_mut().unwrap().remove(field);
        } else {
            spec[field] = v;
        }
        spec
    }

    fn run(v: &Value) -> Vec<(String, String)> {
        let spec: LinkSpec = serde_json::from_value(v.clone()).unwrap();
        let mut problems = Problems::default();
        spec.validate(&FieldPath::root().key("spec"), &mut problems);
        problems
            .0
            .iter()
            .map(|p| (p.path.to_string(), p.expected.clone()))
            .collect()
    }

    #[test]
    fn valid_link() {
        assert_eq!(run(&valid()), vec![]);
        let spec: LinkSpec = serde_json::from_value(valid()).unwrap();
        assert_eq!(spec.gateway_port_number(), Some(4143));
        assert_eq!(
            spec.gateway_addresses(),
            vec!["203.0.113.10", "gw.east.example.com"]
        );
        // Older Links write the probe period in seconds.
        let mut old = valid();
        old["probeSpec"]["period"] = json!("3");
        assert_eq!(run(&old), vec![]);
    }

    #[test]
    fn invalid_links() {
        let cases = [
            (
                with("targetClusterName", Value::Null),
                "spec.targetClusterName",
                "targetClusterName (required",
            ),
            (
                with("gatewayAddress", Value::Null),
                "spec.gatewayAddress",
                "required",
            ),
            (with("gatewayPort", Value::Null), "spec.gatewayPort", "required"),
            (
                with("gatewayIdentity", Value::Null),
                "spec.gatewayIdentity",
                "required",
            ),
            (
                with("clusterCredentialsSecret", Value::Null),
                "spec.clusterCredentialsSecret",
                "required",
            ),
            (
                with("targetClusterName", json!("East")),
                "spec.targetClusterName",
                "a DNS-1123 label",
            ),
            (
                with("gatewayPort", json!("70000")),
                "spec.gatewayPort",
                "a port number 1-65535",
            ),
            (
                with("gatewayPort", json!("http")),
                "spec.gatewayPort",
                "a port number 1-65535",
            ),
            (
                with("gatewayAddress", json!("1.2.3.4,,x")),
                "spec.gatewayAddress",
                "gateway addresses",
            ),
            (
                with("gatewayIdentity", json!("*")),
                "spec.gatewayIdentity",
                "proxy identity",
            ),
            (
                with("probeSpec", json!({"path": "ready"})),
                "spec.probeSpec.path",
                "starting with \"/\"",
            ),
            (
                with("probeSpec", json!({"port": "0"})),
                "spec.probeSpec.port",
                "a port number",
            ),
            (
                with("probeSpec", json!({"period": "often"})),
                "spec.probeSpec.period",
                "a period",
            ),
            (
                with("probeSpec", json!({"timeout": "30"})),
                "spec.probeSpec.timeout",
                "a duration",
            ),
            (
                with("probeSpec", json!({"failureThreshold": "0"})),
                "spec.probeSpec.failureThreshold",
                "a positive integer",
            ),
            (
                with(
                    "selector",
                    json!({"matchExpressions": [{"key": "a", "operator": "Maybe"}]}),
                ),
                "spec.selector.matchExpressions[0].operator",
                "one of",
            ),
            (
                with("excludedLabels", json!([""])),
                "spec.excludedLabels[0]",
                "a key or key pattern",
            ),
        ];
        for (v, path, expected) in cases {
            let found = run(&v);
            assert_eq!(found.len(), 1, "{v}: {found:?}");
            assert_eq!(found[0].0, path, "{v}");
            assert!(found[0].1.contains(expected), "{v}: {}", found[0].1);
        }
    }
}
