//! The Gateway API's `HTTPRoute` and `GRPCRoute` (gateway.networking.k8s.io), which Linkerd
//! reads for mesh (GAMMA) routing when they attach to Services.
//!
//! The HTTPRoute shares its rules with Linkerd's own HTTPRoute ([`crate::mesh::route`]) and
//! differs in the filters it accepts: the Gateway API also has mirrors, URL rewrites and
//! extension references.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::formats::{self, check, check_opt, check_port};
use super::route::{
    BackendRef, HttpHeaderMatch, HttpHeaderModifier, HttpPathModifier, HttpRequestRedirectFilter,
    HttpRouteRule, ParentReference, RouteFilter, RouteStatus, VALUE_MATCH_TYPES, check_filter_config,
    validate_filters, validate_route_common, validate_value_matches,
};
use crate::names;
use crate::validate::{FieldPath, Problems, Validate};

// === HTTPRoute ===

/// The desired state of a Gateway API HTTPRoute.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    root = "HttpRoute",
    namespaced,
    derive = "PartialEq",
    status = "RouteStatus",
    category = "gateway-api",
    doc = "Routes HTTP requests by path, header, query parameter or method.",
    printcolumn(name = "Hostnames", type_ = "string", json_path = ".spec.hostnames"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Gateways or Services the route attaches to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_refs: Option<Vec<ParentReference>>,
    /// Host header values the route applies to; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// Matching rules, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<HttpRouteRule<HttpRouteFilter>>>,
}

/// The filter types a Gateway API HTTPRoute accepts.
pub const HTTP_FILTER_TYPES: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
];

/// A filter of a Gateway API HTTPRoute: its `type` names which one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// One of [`HTTP_FILTER_TYPES`].
    #[serde(rename = "type")]
    pub type_: String,
    /// Request header edits, for `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HttpHeaderModifier>,
    /// Response header edits, for `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HttpHeaderModifier>,
    /// Where to copy requests, for `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirrorFilter>,
    /// The redirect, for `RequestRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<HttpRequestRedirectFilter>,
    /// Host and path rewrites, for `URLRewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<HttpUrlRewriteFilter>,
    /// An implementation-specific filter object, for `ExtensionRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
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
                ("RequestMirror", "requestMirror", self.request_mirror.is_some()),
                (
                    "RequestRedirect",
                    "requestRedirect",
                    self.request_redirect.is_some(),
                ),
                ("URLRewrite", "urlRewrite", self.url_rewrite.is_some()),
                ("ExtensionRef", "extensionRef", self.extension_ref.is_some()),
            ],
        );
        self.request_header_modifier
            .validate(&path.key("requestHeaderModifier"), problems);
        self.response_header_modifier
            .validate(&path.key("responseHeaderModifier"), problems);
        self.request_mirror.validate(&path.key("requestMirror"), problems);
        self.request_redirect
            .validate(&path.key("requestRedirect"), problems);
        self.url_rewrite.validate(&path.key("urlRewrite"), problems);
        self.extension_ref.validate(&path.key("extensionRef"), problems);
    }
}

impl RouteFilter for HttpRouteFilter {
    fn filter_type(&self) -> &str {
        &self.type_
    }

    fn replaces_prefix_match(&self) -> bool {
        let redirect = self.request_redirect.as_ref().and_then(|r| r.path.as_ref());
        let rewrite = self.url_rewrite.as_ref().and_then(|r| r.path.as_ref());
        [redirect, rewrite]
            .into_iter()
            .flatten()
            .any(|p| p.type_ == "ReplacePrefixMatch")
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

/// A `RequestMirror` filter: a copy of each request (or a fraction of them) goes to a
/// backend, whose answers are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirrorFilter {
    /// The backend receiving the copies.
    pub backend_ref: BackendObjectReference,
    /// Percentage of requests mirrored (0-100); all when neither this nor `fraction` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// Fraction of requests mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// `numerator / denominator` (the denominator defaults to 100).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fraction {
    /// The numerator.
    pub numerator: i32,
    /// The denominator; 100 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<i32>,
}

impl Validate for RequestMirrorFilter {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        self.backend_ref.validate(&path.key("backendRef"), problems);
        if let Some(p) = self.percent
            && !(0..=100).contains(&p)
        {
            problems.push(&path.key("percent"), "a percentage 0-100", Some(p.to_string()));
        }
        if let Some(f) = &self.fraction {
            let fp = path.key("fraction");
            if self.percent.is_some() {
                problems.push(&fp, "either percent or fraction, not both", Some("both".into()));
            }
            let denominator = f.denominator.unwrap_or(100);
            if denominator < 1 {
                problems.push(
                    &fp.key("denominator"),
                    "a denominator of at least 1",
                    Some(denominator.to_string()),
                );
            }
            if f.numerator < 0 || f.numerator > denominator.max(1) {
                problems.push(
                    &fp.key("numerator"),
                    format!("a numerator 0-{} (at most the denominator)", denominator.max(1)),
                    Some(f.numerator.to_string()),
                );
            }
        }
    }
}

/// A backend named without weight or filters (a mirror target).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    /// API group; the core group when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Service` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the backend.
    pub name: String,
    /// Namespace; the route's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port (required for a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl Validate for BackendObjectReference {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        check_opt(
            &path.key("group"),
            problems,
            self.group.as_deref(),
            formats::api_group,
        );
        check_opt(
            &path.key("kind"),
            problems,
            self.kind.as_deref(),
            formats::api_kind,
        );
        check(&path.key("name"), problems, &self.name, names::dns1123_subdomain);
        check_opt(
            &path.key("namespace"),
            problems,
            self.namespace.as_deref(),
            names::dns1123_label,
        );
        let service = matches!(self.group.as_deref(), None | Some(""))
            && matches!(self.kind.as_deref(), None | Some("Service"));
        match self.port {
            Some(port) => check_port(&path.key("port"), problems, port.into()),
            None if service => problems.missing(&path.key("port"), "a port when the backend is a Service"),
            None => {}
        }
    }
}

/// A `URLRewrite` filter: rewrite the Host header and/or the path before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpUrlRewriteFilter {
    /// The new Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The path rewrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
}

impl Validate for HttpUrlRewriteFilter {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        check_opt(
            &path.key("hostname"),
            problems,
            self.hostname.as_deref(),
            formats::precise_hostname,
        );
        self.path.validate(&path.key("path"), problems);
    }
}

/// A reference to an object in the route's namespace (an `ExtensionRef` filter).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// API group (may be empty for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

impl Validate for LocalObjectReference {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        check(&path.key("group"), problems, &self.group, formats::api_group);
        check(&path.key("kind"), problems, &self.kind, formats::api_kind);
        check(&path.key("name"), problems, &self.name, names::dns1123_subdomain);
    }
}

// === GRPCRoute ===

/// The desired state of a Gateway API GRPCRoute.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    root = "GrpcRoute",
    namespaced,
    derive = "PartialEq",
    status = "RouteStatus",
    category = "gateway-api",
    doc = "Routes gRPC requests by service, method and header.",
    printcolumn(name = "Hostnames", type_ = "string", json_path = ".spec.hostnames"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    /// The Gateways or Services the route attaches to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_refs: Option<Vec<ParentReference>>,
    /// Host header (`:authority`) values the route applies to; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// Matching rules, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<GrpcRouteRule>>,
}

/// One gRPC routing rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    /// Request conditions; any one matching selects the rule. Every request when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<GrpcRouteMatch>>,
    /// Filters applied to every request of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<GrpcRouteFilter>>,
    /// Where requests go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef<GrpcRouteFilter>>>,
}

impl Validate for GrpcRouteRule {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        self.matches.validate(&path.key("matches"), problems);
        if let Some(filters) = &self.filters {
            validate_filters(filters, &path.key("filters"), problems);
        }
        self.backend_refs.validate(&path.key("backendRefs"), problems);
    }
}

/// Conditions on a gRPC request; all present conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    /// Service and method condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// Header (metadata) conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HttpHeaderMatch>>,
}

/// A gRPC service and/or method condition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Fully qualified service name (`helloworld.Greeter`); any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method name (`SayHello`); any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl Validate for GrpcRouteMatch {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        self.method.validate(&path.key("method"), problems);
        if let Some(headers) = &self.headers {
            validate_value_matches(headers, &path.key("headers"), problems, formats::header_name);
        }
    }
}

impl Validate for GrpcMethodMatch {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        let ty = self.type_.as_deref().unwrap_or("Exact");
        formats::check_one_of(&path.key("type"), problems, ty, VALUE_MATCH_TYPES);
        let service = self.service.as_deref().filter(|s| !s.is_empty());
        let method = self.method.as_deref().filter(|s| !s.is_empty());
        if service.is_none() && method.is_none() {
            problems.missing(&path.key("service"), "a service or a method (or both)");
        }
        if ty == "RegularExpression" {
            check_opt(&path.key("service"), problems, service, formats::regex);
            check_opt(&path.key("method"), problems, method, formats::regex);
        } else {
            check_opt(&path.key("service"), problems, service, grpc_service);
            check_opt(&path.key("method"), problems, method, grpc_method);
        }
    }
}

/// A fully qualified protobuf service name: dot-separated identifiers, optionally with a
/// leading dot (case-insensitive, as the Gateway API's pattern).
fn grpc_service(s: &str) -> Result<(), String> {
    let body = s.strip_prefix('.').unwrap_or(s);
    let ident = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty()
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    };
    if s.len() <= 1024 && body.split('.').all(ident) {
        Ok(())
    } else {
        Err("a gRPC service name such as \"helloworld.Greeter\" (dot-separated identifiers)".into())
    }
}

/// A protobuf method name: an identifier.
fn grpc_method(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 1024
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err("a gRPC method name such as \"SayHello\" (letters, digits and '_')".into())
    }
}

/// The filter types a GRPCRoute accepts.
pub const GRPC_FILTER_TYPES: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];

/// A filter of a GRPCRoute: its `type` names which one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteFilter {
    /// One of [`GRPC_FILTER_TYPES`].
    #[serde(rename = "type")]
    pub type_: String,
    /// Request header edits, for `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HttpHeaderModifier>,
    /// Response header edits, for `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HttpHeaderModifier>,
    /// Where to copy requests, for `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirrorFilter>,
    /// An implementation-specific filter object, for `ExtensionRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
}

impl Validate for GrpcRouteFilter {
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
                ("RequestMirror", "requestMirror", self.request_mirror.is_some()),
                ("ExtensionRef", "extensionRef", self.extension_ref.is_some()),
            ],
        );
        self.request_header_modifier
            .validate(&path.key("requestHeaderModifier"), problems);
        self.response_header_modifier
            .validate(&path.key("responseHeaderModifier"), problems);
        self.request_mirror.validate(&path.key("requestMirror"), problems);
        self.extension_ref.validate(&path.key("extensionRef"), problems);
    }
}

impl RouteFilter for GrpcRouteFilter {
    fn filter_type(&self) -> &str {
        &self.type_
    }

    fn replaces_prefix_match(&self) -> bool {
        false
    }
}

impl Validate for GrpcRouteSpec {
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

    fn run<T: Validate + serde::de::DeserializeOwned>(v: &serde_json::Value) -> Vec<(String, String)> {
        let spec: T = serde_json::from_value(v.clone()).unwrap();
        let mut problems = Problems::default();
        spec.validate(&FieldPath::root().key("spec"), &mut problems);
        problems
            .0
            .iter()
            .map(|p| (p.path.to_string(), p.expected.clone()))
            .collect()
    }

    fn table<T: Validate + serde::de::DeserializeOwned>(
        valid: &[serde_json::Value],
        invalid: &[(serde_json::Value, &str, &str)],
    ) {
        for v in valid {
            assert_eq!(run::<T>(v), vec![], "{v}");
        }
        for (v, path, expected) in invalid {
            let found = run::<T>(v);
            assert_eq!(found.len(), 1, "{v}: {found:?}");
            assert_eq!(found[0].0, *path, "{v}");
            assert!(found[0].1.contains(expected), "{v}: {}", found[0].1);
        }
    }

    fn http_rule(rule: serde_json::Value) -> serde_json::Value {
        json!({"parentRefs": [{"name": "web", "kind": "Service", "group": "", "port": 80}], "rules": [rule]})
    }

    #[test]
    fn http_route() {
        table::<HttpRouteSpec>(
            &[
                http_rule(json!({
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                    "filters": [
                        {"type": "URLRewrite", "urlRewrite": {"hostname": "web.example.com", "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}},
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}, "percent": 10}},
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow2", "port": 80}, "fraction": {"numerator": 1, "denominator": 3}}},
                        {"type": "ExtensionRef", "extensionRef": {"group": "example.com", "kind": "Thing", "name": "x"}},
                    ],
                    "backendRefs": [{"name": "web-v1", "port": 80, "weight": 90}, {"name": "web-v2", "port": 80, "weight": 10}],
                    "timeouts": {"request": "10s"},
                })),
                json!({"parentRefs": [{"name": "gw"}], "hostnames": ["*.example.com"]}),
            ],
            &[
                (
                    http_rule(json!({"filters": [{"type": "CORS"}]})),
                    "spec.rules[0].filters[0].type",
                    "one of \"RequestHeaderModifier\"",
                ),
                (
                    http_rule(
                        json!({"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]}),
                    ),
                    "spec.rules[0].filters[0]",
                    "exactly one match, of type PathPrefix",
                ),
                (
                    http_rule(
                        json!({"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow"}}}]}),
                    ),
                    "spec.rules[0].filters[0].requestMirror.backendRef.port",
                    "a port when the backend is a Service",
                ),
                (
                    http_rule(
                        json!({"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s", "port": 80}, "percent": 101}}]}),
                    ),
                    "spec.rules[0].filters[0].requestMirror.percent",
                    "a percentage 0-100",
                ),
                (
                    http_rule(
                        json!({"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s", "port": 80}, "fraction": {"numerator": 5, "denominator": 4}}}]}),
                    ),
                    "spec.rules[0].filters[0].requestMirror.fraction.numerator",
                    "at most the denominator",
                ),
                (
                    http_rule(
                        json!({"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s", "port": 80}, "fraction": {"numerator": 0, "denominator": 0}}}]}),
                    ),
                    "spec.rules[0].filters[0].requestMirror.fraction.denominator",
                    "at least 1",
                ),
                (
                    http_rule(
                        json!({"filters": [{"type": "ExtensionRef", "extensionRef": {"group": "x", "kind": "", "name": "y"}}]}),
                    ),
                    "spec.rules[0].filters[0].extensionRef.kind",
                    "a kind",
                ),
                (
                    http_rule(
                        json!({"filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "*.x"}}]}),
                    ),
                    "spec.rules[0].filters[0].urlRewrite.hostname",
                    "no wildcard",
                ),
                (
                    http_rule(json!({"backendRefs": [{"name": "web"}]})),
                    "spec.rules[0].backendRefs[0].port",
                    "a port when the backend is a Service",
                ),
            ],
        );
    }

    #[test]
    fn grpc_route() {
        table::<GrpcRouteSpec>(
            &[json!({
                "parentRefs": [{"name": "greeter", "kind": "Service", "group": "core", "port": 50051}],
                "rules": [
                    {"matches": [{"method": {"service": "helloworld.Greeter", "method": "SayHello"}, "headers": [{"name": "x-canary", "value": "1"}]}],
                     "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-a", "value": "b"}]}}],
                     "backendRefs": [{"name": "greeter-v2", "port": 50051}]},
                    {"matches": [{"method": {"type": "RegularExpression", "service": "helloworld\\..*"}}]},
                ],
            })],
            &[
                (
                    json!({"rules": [{"matches": [{"method": {}}]}]}),
                    "spec.rules[0].matches[0].method.service",
                    "a service or a method",
                ),
                (
                    json!({"rules": [{"matches": [{"method": {"service": "hello-world"}}]}]}),
                    "spec.rules[0].matches[0].method.service",
                    "a gRPC service name",
                ),
                (
                    json!({"rules": [{"matches": [{"method": {"method": "Say.Hello"}}]}]}),
                    "spec.rules[0].matches[0].method.method",
                    "a gRPC method name",
                ),
                (
                    json!({"rules": [{"matches": [{"method": {"type": "RegularExpression", "method": "("}}]}]}),
                    "spec.rules[0].matches[0].method.method",
                    "a valid regular expression",
                ),
                (
                    json!({"rules": [{"matches": [{"method": {"type": "Prefix", "method": "A"}}]}]}),
                    "spec.rules[0].matches[0].method.type",
                    "one of",
                ),
                (
                    json!({"rules": [{"filters": [{"type": "RequestRedirect"}]}]}),
                    "spec.rules[0].filters[0].type",
                    "one of \"RequestHeaderModifier\"",
                ),
                (
                    json!({"rules": [{"filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {}}, {"type": "ResponseHeaderModifier", "responseHeaderModifier": {}}]}]}),
                    "spec.rules[0].filters[1].type",
                    "at most one ResponseHeaderModifier",
                ),
                (
                    json!({"rules": [{"backendRefs": [{"name": "greeter", "port": 0}]}]}),
                    "spec.rules[0].backendRefs[0].port",
                    "a port number",
                ),
            ],
        );
    }
}
