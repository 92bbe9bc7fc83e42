//! Linkerd's own `HTTPRoute` (policy.linkerd.io): the Gateway API shape, attached to
//! Servers (inbound) or Services (outbound), with the three filters Linkerd implements.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mesh::route::{
    HttpHeaderModifier, HttpRequestRedirectFilter, HttpRouteRule, ParentReference, RouteFilter, RouteStatus,
    check_filter_config, validate_route_common,
};
use crate::validate::{FieldPath, Problems, Validate};

/// The desired state of a `policy.linkerd.io` HTTPRoute.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.linkerd.io",
    version = "v1beta3",
    kind = "HTTPRoute",
    root = "HttpRoute",
    namespaced,
    derive = "PartialEq",
    status = "RouteStatus",
    doc = "Routes HTTP requests to a Server or Service by path, header, query parameter or method.",
    printcolumn(name = "Hostnames", type_ = "string", json_path = ".spec.hostnames"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Servers or Services the route attaches to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_refs: Option<Vec<ParentReference>>,
    /// Host header values the route applies to; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// Matching rules, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<HttpRouteRule<HttpRouteFilter>>>,
}

/// The filter types a `policy.linkerd.io` HTTPRoute accepts.
pub const FILTER_TYPES: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
];

/// A filter of a `policy.linkerd.io` HTTPRoute: its `type` names which one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// One of [`FILTER_TYPES`].
    #[serde(rename = "type")]
    pub type_: String,
    /// Request header edits, for `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HttpHeaderModifier>,
    /// Response header edits, for `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HttpHeaderModifier>,
    /// The redirect, for `RequestRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<HttpRequestRedirectFilter>,
}

impl Validate for HttpRouteFilter {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        check_filter_config(
            path,
            problems,
            &self.type_,
            &[
                (
                    "RequestHeaderModifier",
                    "requestHeaderModifier",
                    self.request_header_modifier.is_some(),
                ),
                (
                    "ResponseHeaderModifier",
                    "responseHeaderModifier",
                    self.response_header_modifier.is_some(),
                ),
                (
                    "RequestRedirect",
                    "requestRedirect",
                    self.request_redirect.is_some(),
                ),
            ],
        );
        self.request_header_modifier
            .validate(&path.key("requestHeaderModifier"), problems);
        self.response_header_modifier
            .validate(&path.key("responseHeaderModifier"), problems);
        self.request_redirect
            .validate(&path.key("requestRedirect"), problems);
    }
}

impl RouteFilter for HttpRouteFilter {
    fn filter_type(&self) -> &str {
        &self.type_
    }

    fn replaces_prefix_match(&self) -> bool {
        self.request_redirect
            .as_ref()
            .and_then(|r| r.path.as_ref())
            .is_some_and(|p| p.type_ == "ReplacePrefixMatch")
    }
}

impl Validate for HttpRouteSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        validate_route_common(
            self.parent_refs.as_deref(),
            self.hostnames.as_deref(),
            path,
            problems,
        );
        self.rules.validate(&path.key("rules"), problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(v: serde_json::Value) -> Vec<(String, String)> {
        let spec: HttpRouteSpec = serde_json::from_value(v).unwrap();
        let mut problems = Problems::default();
        spec.validate(&FieldPath::root().key("spec"), &mut problems);
        problems
            .0
            .iter()
            .map(|p| (p.path.to_string(), p.expected.clone()))
            .collect()
    }

    fn with_rule(rule: serde_json::Value) -> serde_json::Value {
        json!({"parentRefs": [{"name": "web", "kind": "Service", "group": "core", "port": 80}], "rules": [rule]})
    }

    #[test]
    fn valid_routes() {
        let v = json!({
            "parentRefs": [{"name": "web", "kind": "Server", "group": "policy.linkerd.io"}],
            "hostnames": ["web.example.com", "*.example.com"],
            "rules": [
                {"matches": [{"path": {"value": "/api"}}],
                 "filters": [
                    {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "l5d-retry-http", "value": "5xx"}], "remove": ["x-debug"]}},
                    {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-served-by", "value": "strait"}]}},
                 ]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
                 "filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}, "statusCode": 301}}]},
                {"timeouts": {"request": "10s", "backendRequest": "8s"}, "backendRefs": [{"name": "web", "port": 80}]},
            ],
        });
        assert_eq!(problems(v), vec![]);
    }

    #[test]
    fn invalid_routes() {
        let cases = [
            (
                with_rule(json!({"filters": [{"type": "URLRewrite"}]})),
                "spec.rules[0].filters[0].type",
                "one of \"RequestHeaderModifier\"",
            ),
            (
                with_rule(json!({"filters": [{"type": "RequestHeaderModifier"}]})),
                "spec.rules[0].filters[0].requestHeaderModifier",
                "requestHeaderModifier when type is RequestHeaderModifier",
            ),
            (
                with_rule(
                    json!({"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {}, "requestRedirect": {}}]}),
                ),
                "spec.rules[0].filters[0].requestRedirect",
                "no requestRedirect unless type is RequestRedirect",
            ),
            (
                with_rule(
                    json!({"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 308}}]}),
                ),
                "spec.rules[0].filters[0].requestRedirect.statusCode",
                "301 or 302",
            ),
            (
                with_rule(
                    json!({"filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]}),
                ),
                "spec.rules[0].filters[0]",
                "exactly one match, of type PathPrefix",
            ),
            (
                with_rule(
                    json!({"backendRefs": [{"name": "web", "port": 80, "filters": [{"type": "RequestMirror"}]}]}),
                ),
                "spec.rules[0].backendRefs[0].filters[0].type",
                "one of",
            ),
            (
                json!({"parentRefs": [{"name": "web", "port": 65536}]}),
                "spec.parentRefs[0].port",
                "a port number 1-65535",
            ),
            (
                json!({"hostnames": ["Example.com"]}),
                "spec.hostnames[0]",
                "a hostname",
            ),
            (
                with_rule(json!({"matches": [{"path": {"type": "Exact", "value": "api"}}]})),
                "spec.rules[0].matches[0].path.value",
                "starting with \"/\"",
            ),
            (
                with_rule(json!({"timeouts": {"request": "1s", "backendRequest": "2s"}})),
                "spec.rules[0].timeouts.backendRequest",
                "no longer than request",
            ),
        ];
        for (v, path, expected) in cases {
            let found = problems(v.clone());
            assert_eq!(found.len(), 1, "{v}: {found:?}");
            assert_eq!(found[0].0, path, "{v}");
            assert!(found[0].1.contains(expected), "{v}: {}", found[0].1);
        }
    }
}
