//! A `Link` read into what the mirror needs, with every missing or bad field named.
//!
//! The `Link` kind (`multicluster.linkerd.io/v1alpha3`) keeps Linkerd's string-typed
//! fields; this is the one place they become numbers, durations and selectors.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use strait_api::labels::mirror as ml;
use strait_api::mesh::link::Link;

use crate::probe::ProbeConfig;
use crate::selector::label_equals;

/// Linkerd's default gateway identity's service account and namespace.
pub const DEFAULT_GATEWAY_SA: &str = "linkerd-gateway";
/// Linkerd's default probe path.
pub const DEFAULT_PROBE_PATH: &str = "/ready";
/// Linkerd's default probe port.
pub const DEFAULT_PROBE_PORT: u16 = 4191;
/// Linkerd's default probe period.
pub const DEFAULT_PROBE_PERIOD: Duration = Duration::from_secs(3);
/// Linkerd's default probe timeout.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Linkerd's default failure threshold.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

/// Why a Link cannot be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("link {namespace}/{name}: spec.{field}: expected {expected}{found}")]
pub struct LinkError {
    /// The Link's namespace.
    pub namespace: String,
    /// The Link's name.
    pub name: String,
    /// The field at fault (under `spec`).
    pub field: &'static str,
    /// What it should hold.
    pub expected: String,
    /// `, found …` when a value was there.
    pub found: String,
}

/// What the mirror needs from one Link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// The Link's namespace.
    pub namespace: String,
    /// The Link's name.
    pub name: String,
    /// The target cluster's name: the suffix of mirrors (`<svc>-<cluster>`).
    pub target_cluster: String,
    /// The target cluster's DNS domain (`cluster.local`).
    pub target_domain: String,
    /// The Secret (in the Link's namespace) holding the target's API credentials.
    pub credentials_secret: String,
    /// The gateway's addresses: IPs or DNS names.
    pub gateway_addresses: Vec<String>,
    /// The gateway's port (4143).
    pub gateway_port: u16,
    /// The gateway's identity.
    pub gateway_identity: String,
    /// How to probe the gateway.
    pub probe: ProbeConfig,
    /// Services mirrored through the gateway.
    pub selector: LabelSelector,
    /// Services mirrored in remote-discovery mode.
    pub remote_discovery_selector: LabelSelector,
    /// Services that join federated services.
    pub federated_selector: LabelSelector,
    /// Label keys (globs) not copied onto mirrors.
    pub excluded_labels: Vec<String>,
    /// Annotation keys (globs) not copied onto mirrors.
    pub excluded_annotations: Vec<String>,
}

impl LinkConfig {
    /// Reads a Link. Every required field must be present and well formed; defaults are
    /// Linkerd's.
    pub fn from_link(link: &Link) -> Result<Self, LinkError> {
        let namespace = link.metadata.namespace.clone().unwrap_or_default();
        let name = link.metadata.name.clone().unwrap_or_default();
        let err = |field: &'static str, expected: &str, found: Option<&str>| LinkError {
            namespace: namespace.clone(),
            name: name.clone(),
            field,
            expected: expected.to_string(),
            found: found.map(|f| format!(", found {f:?}")).unwrap_or_default(),
        };
        let spec = &link.spec;
        let required = |field: &'static str, v: &Option<String>, what: &str| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| err(field, &format!("{what} (the field is required; re-run `strait multicluster link` against the target cluster)"), None))
        };
        let target_cluster = required(
            "targetClusterName",
            &spec.target_cluster_name,
            "the target cluster's name",
        )?;
        strait_api::names::dns1123_label(&target_cluster)
            .map_err(|e| err("targetClusterName", &e, Some(&target_cluster)))?;
        let credentials_secret = required(
            "clusterCredentialsSecret",
            &spec.cluster_credentials_secret,
            "the name of the Secret with the target cluster's credentials",
        )?;
        let gateway_address = required("gatewayAddress", &spec.gateway_address, "the gateway's addresses")?;
        let gateway_addresses: Vec<String> = gateway_address
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let port_text = required("gatewayPort", &spec.gateway_port, "the gateway's port")?;
        let gateway_port = spec.gateway_port_number().ok_or_else(|| {
            err(
                "gatewayPort",
                "a port number 1-65535 (\"4143\")",
                Some(&port_text),
            )
        })?;
        let gateway_identity = required(
            "gatewayIdentity",
            &spec.gateway_identity,
            "the gateway's identity",
        )?;
        let probe_spec = spec.probe_spec.clone().unwrap_or_default();
        let probe = ProbeConfig {
            path: probe_spec.path.unwrap_or_else(|| DEFAULT_PROBE_PATH.into()),
            port: match probe_spec.port.as_deref() {
                None => DEFAULT_PROBE_PORT,
                Some(p) => p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err("probeSpec.port", "a port number 1-65535 (\"4191\")", Some(p)))?,
            },
            period: match probe_spec.period.as_deref() {
                None => DEFAULT_PROBE_PERIOD,
                Some(p) => p
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .or_else(|_| strait_api::names::duration(p))
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| err("probeSpec.period", "a period such as \"3s\"", Some(p)))?,
            },
            timeout: match probe_spec.timeout.as_deref() {
                None => DEFAULT_PROBE_TIMEOUT,
                Some(t) => strait_api::names::duration(t)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| err("probeSpec.timeout", "a duration such as \"30s\"", Some(t)))?,
            },
            failure_threshold: match probe_spec.failure_threshold.as_deref() {
                None => DEFAULT_FAILURE_THRESHOLD,
                Some(f) => f.trim().parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    err(
                        "probeSpec.failureThreshold",
                        "a positive integer (\"3\")",
                        Some(f),
                    )
                })?,
            },
        };
        Ok(Self {
            target_domain: spec
                .target_cluster_domain
                .clone()
                .unwrap_or_else(|| "cluster.local".into()),
            credentials_secret,
            gateway_addresses,
            gateway_port,
            gateway_identity,
            probe,
            selector: spec
                .selector
                .clone()
                .unwrap_or_else(|| label_equals(ml::EXPORTED, ml::EXPORTED_TRUE)),
            remote_discovery_selector: spec
                .remote_discovery_selector
                .clone()
                .unwrap_or_else(|| label_equals(ml::EXPORTED, ml::EXPORTED_REMOTE_DISCOVERY)),
            federated_selector: spec
                .federated_service_selector
                .clone()
                .unwrap_or_else(|| label_equals(ml::FEDERATED, ml::FEDERATED_MEMBER)),
            excluded_labels: spec.excluded_labels.clone().unwrap_or_default(),
            excluded_annotations: spec.excluded_annotations.clone().unwrap_or_default(),
            target_cluster,
            namespace,
            name,
        })
    }

    /// The name of the local mirror of remote Service `name`.
    pub fn mirror_name(&self, name: &str) -> String {
        format!("{name}-{}", self.target_cluster)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn link(spec: serde_json::Value) -> Link {
        serde_json::from_value(json!({
            "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link",
            "metadata": {"name": "east", "namespace": "linkerd-multicluster"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn full() -> serde_json::Value {
        json!({
            "targetClusterName": "east",
            "clusterCredentialsSecret": "cluster-credentials-east",
            "gatewayAddress": "127.0.0.2, gw.east.example",
            "gatewayPort": "4143",
            "gatewayIdentity": "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
        })
    }

    #[test]
    fn defaults_are_linkerds() {
        let c = LinkConfig::from_link(&link(full())).unwrap();
        assert_eq!(c.target_cluster, "east");
        assert_eq!(c.target_domain, "cluster.local");
        assert_eq!(c.gateway_addresses, vec!["127.0.0.2", "gw.east.example"]);
        assert_eq!(c.gateway_port, 4143);
        assert_eq!(c.probe.path, "/ready");
        assert_eq!(c.probe.port, 4191);
        assert_eq!(c.probe.period, Duration::from_secs(3));
        assert_eq!(c.probe.failure_threshold, 3);
        assert_eq!(c.selector, label_equals("mirror.linkerd.io/exported", "true"));
        assert_eq!(
            c.remote_discovery_selector,
            label_equals("mirror.linkerd.io/exported", "remote-discovery")
        );
        assert_eq!(c.mirror_name("myapp"), "myapp-east");
        let mut old = full();
        old["probeSpec"] = json!({"period": "5", "timeout": "2s", "port": "4192", "path": "/health", "failureThreshold": "1"});
        let c = LinkConfig::from_link(&link(old)).unwrap();
        assert_eq!(c.probe.period, Duration::from_secs(5));
        assert_eq!(c.probe.timeout, Duration::from_secs(2));
        assert_eq!(
            (c.probe.port, c.probe.path.as_str(), c.probe.failure_threshold),
            (4192, "/health", 1)
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("targetClusterName", json!(null), "required"),
            ("targetClusterName", json!("East_1"), "found \"East_1\""),
            ("clusterCredentialsSecret", json!(null), "required"),
            ("gatewayAddress", json!(""), "required"),
            ("gatewayPort", json!(null), "required"),
            ("gatewayPort", json!("70000"), "found \"70000\""),
            ("gatewayIdentity", json!(null), "required"),
        ];
        for (field, value, detail) in cases {
            let mut spec = full();
            if value.is_null() {
                spec.as_object_mut().unwrap().remove(field);
            } else {
                spec[field] = value;
            }
            let e = LinkConfig::from_link(&link(spec)).unwrap_err();
            assert_eq!(e.field, field);
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("link linkerd-multicluster/east: spec.{field}: expected")),
                "{text}"
            );
            assert!(text.contains(detail), "{text}");
        }
        let mut spec = full();
        spec["probeSpec"] = json!({"period": "soon"});
        let e = LinkConfig::from_link(&link(spec)).unwrap_err();
        assert_eq!(e.field, "probeSpec.period");
        assert!(e.to_string().contains("found \"soon\""), "{e}");
    }
}
