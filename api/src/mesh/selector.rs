//! Validation of Kubernetes label selectors, as the API server applies it to every
//! `metav1.LabelSelector` field (Server `podSelector`, ServerAuthorization `server.selector`,
//! Link selectors, and the core kinds' selectors).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::names;
use crate::validate::{FieldPath, Problems};

/// The operators a `matchExpressions` entry may use.
pub const OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];

/// Pushes every problem of `selector` (at `path`) onto `problems`: keys must be qualified
/// names, values label values, operators one of [`OPERATORS`], with `values` non-empty for
/// `In`/`NotIn` and empty for `Exists`/`DoesNotExist`.
///
/// An empty selector (`{}` or `matchLabels: {}`) is valid and selects everything.
pub fn validate_label_selector(selector: &LabelSelector, path: &FieldPath, problems: &mut Problems) {
    if let Some(labels) = &selector.match_labels {
        let labels_path = path.key("matchLabels");
        for (key, value) in labels {
            let p = labels_path.key(key.as_str());
            if let Err(expected) = names::qualified_name(key) {
                problems.push(&p, format!("a label key: {expected}"), Some(format!("{key:?}")));
            }
            if let Err(expected) = names::label_value(value) {
                problems.push(&p, expected, Some(format!("{value:?}")));
            }
        }
    }
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let p = path.key("matchExpressions").index(i);
        if let Err(expected) = names::qualified_name(&req.key) {
            problems.push(
                &p.key("key"),
                format!("a label key: {expected}"),
                Some(format!("{:?}", req.key)),
            );
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    problems.missing(
                        &p.key("values"),
                        format!("at least one value when the operator is {}", req.operator),
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    problems.push(
                        &p.key("values"),
                        format!("no values when the operator is {}", req.operator),
                        Some(format!("{} values", values.len())),
                    );
                }
            }
            other => problems.push(
                &p.key("operator"),
                super::formats::one_of(OPERATORS),
                Some(format!("{other:?}")),
            ),
        }
        for (j, v) in values.iter().enumerate() {
            if let Err(expected) = names::label_value(v) {
                problems.push(&p.key("values").index(j), expected, Some(format!("{v:?}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(v: serde_json::Value) -> Vec<(String, String)> {
        let sel: LabelSelector = serde_json::from_value(v).unwrap();
        let mut problems = Problems::default();
        validate_label_selector(&sel, &FieldPath::parse("spec.podSelector"), &mut problems);
        problems
            .0
            .iter()
            .map(|p| (p.path.to_string(), p.expected.clone()))
            .collect()
    }

    #[test]
    fn valid_selectors() {
        for v in [
            json!({}),
            json!({"matchLabels": {}}),
            json!({"matchLabels": {"app": "web", "linkerd.io/control-plane-ns": "linkerd", "empty": ""}}),
            json!({"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["a", "b"]},
                {"key": "tier", "operator": "Exists"},
                {"key": "tier", "operator": "DoesNotExist", "values": []},
            ]}),
        ] {
            assert_eq!(problems_of(v.clone()), vec![], "{v}");
        }
    }

    #[test]
    fn invalid_selectors() {
        let cases = [
            (
                json!({"matchLabels": {"-app": "web"}}),
                "spec.podSelector.matchLabels.-app",
                "a label key",
            ),
            (
                json!({"matchLabels": {"app": "-web"}}),
                "spec.podSelector.matchLabels.app",
                "a label value",
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Is", "values": ["a"]}]}),
                "spec.podSelector.matchExpressions[0].operator",
                "one of \"In\"",
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
                "spec.podSelector.matchExpressions[0].values",
                "at least one value",
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}),
                "spec.podSelector.matchExpressions[0].values",
                "no values",
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["ok", "not ok"]}]}),
                "spec.podSelector.matchExpressions[0].values[1]",
                "a label value",
            ),
            (
                json!({"matchExpressions": [{"key": "a/b/c", "operator": "Exists"}]}),
                "spec.podSelector.matchExpressions[0].key",
                "a label key",
            ),
        ];
        for (input, path, expected) in cases {
            let found = problems_of(input.clone());
            assert_eq!(found.len(), 1, "{input}: {found:?}");
            assert_eq!(found[0].0, path, "{input}");
            assert!(found[0].1.contains(expected), "{input}: {}", found[0].1);
        }
    }
}
