//! SMI `TrafficSplit` (split.smi-spec.io): traffic to an apex Service shared among backend
//! Services by weight — Linkerd's (and the failover operator's) canary mechanism.
//!
//! `v1alpha1` writes weights as quantities (`"900m"`), `v1alpha2` as integers; both are read
//! into [`Weight`], which writes back what it read. Only the ratio of weights matters.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::formats::{self, check};
use super::weight::Weight;
use crate::names;
use crate::validate::{FieldPath, Problems, Validate};

/// The desired state of a `TrafficSplit`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha2",
    kind = "TrafficSplit",
    namespaced,
    derive = "PartialEq",
    shortname = "ts",
    doc = "Splits traffic to an apex Service among backend Services by weight.",
    printcolumn(
        name = "Service",
        type_ = "string",
        description = "The apex service of this split.",
        json_path = ".spec.service"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    /// The apex Service clients address.
    pub service: String,
    /// The Services that receive the traffic, with their weights.
    pub backends: Vec<TrafficSplitBackend>,
    /// (v1alpha2) Route groups the split is limited to; all traffic when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<TypedLocalObjectReference>>,
}

/// One backend of a split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitBackend {
    /// The backend Service (same namespace).
    pub service: String,
    /// Relative weight: an integer, or a quantity such as `"900m"`.
    pub weight: Weight,
}

/// A reference to an object in the same namespace (an `HTTPRouteGroup`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypedLocalObjectReference {
    /// API group of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind of the referent.
    pub kind: String,
    /// Name of the referent.
    pub name: String,
}

impl TrafficSplitBackend {
    /// The weight as a number (`"900m"` is 0.9, `90` is 90); 0 for a weight that does not
    /// parse or is negative, which validation rejects anyway.
    pub fn weight_value(&self) -> f64 {
        self.weight.value().filter(|w| *w >= 0.0).unwrap_or(0.0)
    }
}

impl TrafficSplitSpec {
    /// Each backend with its share of the traffic (shares sum to 1); all shares are 0 when
    /// every weight is 0.
    pub fn shares(&self) -> Vec<(&str, f64)> {
        let total: f64 = self.backends.iter().map(TrafficSplitBackend::weight_value).sum();
        self.backends
            .iter()
            .map(|b| {
                let share = if total > 0.0 {
                    b.weight_value() / total
                } else {
                    0.0
                };
                (b.service.as_str(), share)
            })
            .collect()
    }
}

impl Validate for TrafficSplitSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        check(&path.key("service"), problems, &self.service, service_name);
        if self.backends.is_empty() {
            problems.push(
                &path.key("backends"),
                "at least one backend",
                Some("an empty list".into()),
            );
        }
        for (i, b) in self.backends.iter().enumerate() {
            let p = path.key("backends").index(i);
            check(&p.key("service"), problems, &b.service, service_name);
            b.weight.validate_at(&p.key("weight"), problems);
        }
        for (i, m) in self.matches.iter().flatten().enumerate() {
            let p = path.key("matches").index(i);
            formats::check_opt(
                &p.key("apiGroup"),
                problems,
                m.api_group.as_deref(),
                formats::api_group,
            );
            check(&p.key("kind"), problems, &m.kind, formats::api_kind);
            check(&p.key("name"), problems, &m.name, names::dns1123_subdomain);
        }
    }
}

fn service_name(s: &str) -> Result<(), String> {
    names::dns1123_label(s).map_err(|e| format!("a Service name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> TrafficSplitSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn weights_keep_their_meaning() {
        let v2 = spec(
            json!({"service": "web", "backends": [{"service": "web-v1", "weight": 90}, {"service": "web-v2", "weight": 10}]}),
        );
        assert_eq!(v2.shares(), vec![("web-v1", 0.9), ("web-v2", 0.1)]);
        let v1 = spec(
            json!({"service": "web", "backends": [{"service": "web-v1", "weight": "900m"}, {"service": "web-v2", "weight": "100m"}]}),
        );
        let shares = v1.shares();
        assert!(
            (shares[0].1 - 0.9).abs() < 1e-9 && (shares[1].1 - 0.1).abs() < 1e-9,
            "{shares:?}"
        );
        assert_eq!(v1.backends[0].weight_value(), 0.9);
        let zero = spec(json!({"service": "web", "backends": [{"service": "web-v1", "weight": 0}]}));
        assert_eq!(zero.shares(), vec![("web-v1", 0.0)]);
    }

    #[test]
    fn validation() {
        let valid = [
            json!({"service": "web", "backends": [{"service": "web-v1", "weight": 90}, {"service": "web-v2", "weight": 10}]}),
            json!({"service": "web", "backends": [{"service": "web-v1", "weight": "1"}, {"service": "web-v2", "weight": "0"}]}),
            json!({"service": "web", "backends": [{"service": "web-v1", "weight": 1}], "matches": [{"kind": "HTTPRouteGroup", "name": "api", "apiGroup": "specs.smi-spec.io"}]}),
        ];
        for v in valid {
            let mut problems = Problems::default();
            spec(v.clone()).validate(&FieldPath::root().key("spec"), &mut problems);
            assert!(problems.is_empty(), "{v}: {problems:?}");
        }
        let invalid = [
            (
                json!({"service": "web", "backends": []}),
                "spec.backends",
                "at least one backend",
            ),
            (
                json!({"service": "Web", "backends": [{"service": "a", "weight": 1}]}),
                "spec.service",
                "a Service name",
            ),
            (
                json!({"service": "web", "backends": [{"service": "web_v1", "weight": 1}]}),
                "spec.backends[0].service",
                "a Service name",
            ),
            (
                json!({"service": "web", "backends": [{"service": "a", "weight": -5}]}),
                "spec.backends[0].weight",
                "a non-negative weight",
            ),
            (
                json!({"service": "web", "backends": [{"service": "a", "weight": "ninety"}]}),
                "spec.backends[0].weight",
                "a Kubernetes quantity",
            ),
            (
                json!({"service": "web", "backends": [{"service": "a", "weight": 1}], "matches": [{"kind": "", "name": "x"}]}),
                "spec.matches[0].kind",
                "a kind",
            ),
        ];
        for (v, path, expected) in invalid {
            let mut problems = Problems::default();
            spec(v.clone()).validate(&FieldPath::root().key("spec"), &mut problems);
            assert_eq!(problems.0.len(), 1, "{v}: {problems:?}");
            assert_eq!(problems.0[0].path.to_string(), path, "{v}");
            assert!(
                problems.0[0].expected.contains(expected),
                "{v}: {}",
                problems.0[0].expected
            );
        }
    }
}
