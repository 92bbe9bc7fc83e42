//! Label selector matching (Kubernetes semantics) and the glob patterns of a Link's
//! `excludedLabels` / `excludedAnnotations`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` match `selector`. An empty selector matches everything; an unknown
/// operator (refused by validation before it gets here) matches nothing.
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expr
}

/// A selector matching exactly one label value.
pub fn label_equals(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
        match_expressions: None,
    }
}

/// Whether `key` matches a pattern where `*` stands for any run of characters.
pub fn glob(pattern: &str, key: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == key;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !key.starts_with(first) || key.len() < first.len() + last.len() || !key.ends_with(last) {
        return false;
    }
    let mut rest = &key[first.len()..key.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
            }]),
        }
    }

    #[test]
    fn selectors_match_as_kubernetes_does() {
        let l = labels(&[("mirror.linkerd.io/exported", "true"), ("app", "web")]);
        let cases = [
            (label_equals("mirror.linkerd.io/exported", "true"), true),
            (
                label_equals("mirror.linkerd.io/exported", "remote-discovery"),
                false,
            ),
            (LabelSelector::default(), true),
            (expr("app", "In", &["web", "api"]), true),
            (expr("app", "In", &["api"]), false),
            (expr("app", "NotIn", &["api"]), true),
            (expr("app", "NotIn", &["web"]), false),
            (expr("tier", "NotIn", &["web"]), true),
            (expr("app", "Exists", &[]), true),
            (expr("tier", "Exists", &[]), false),
            (expr("tier", "DoesNotExist", &[]), true),
            (expr("app", "DoesNotExist", &[]), false),
            (expr("app", "Maybe", &[]), false),
        ];
        for (sel, want) in cases {
            assert_eq!(matches(&sel, Some(&l)), want, "{sel:?}");
        }
        assert!(!matches(&label_equals("a", "b"), None));
    }

    #[test]
    fn globs() {
        assert!(glob("example.com/*", "example.com/owner"));
        assert!(!glob("example.com/*", "other.com/owner"));
        assert!(glob("*.example.com/*", "a.example.com/x"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(glob("*", "anything"));
        assert!(!glob("ab*ba", "aba"));
    }
}
