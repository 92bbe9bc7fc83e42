//! The Gateway-API-shaped pieces that Linkerd's `policy.linkerd.io` HTTPRoute and the
//! Gateway API's HTTPRoute and GRPCRoute have in common: parent and backend references,
//! request matches, header modifiers, redirects and timeouts, with their validation.
//!
//! The kinds differ mostly in which filters they allow, so rules and backend references are
//! generic over the filter type ([`RouteFilter`]); everything else is shared as is.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::formats::{self, check, check_one_of, check_opt, check_port};
use crate::names;
use crate::validate::{FieldPath, Problems, Validate};

/// Path match types.
pub const PATH_MATCH_TYPES: &[&str] = &["Exact", "PathPrefix", "RegularExpression"];
/// Header and query parameter match types.
pub const VALUE_MATCH_TYPES: &[&str] = &["Exact", "RegularExpression"];
/// Redirect path modifier types.
pub const PATH_MODIFIER_TYPES: &[&str] = &["ReplaceFullPath", "ReplacePrefixMatch"];
/// Redirect status codes the Gateway API's standard channel (and Linkerd) accept.
pub const REDIRECT_STATUS_CODES: &[i32] = &[301, 302];
/// Largest backend weight the Gateway API accepts.
pub const MAX_WEIGHT: i32 = 1_000_000;

/// A filter of some route kind: each kind validates its own set of filter types; rules need
/// to know a filter's type to reject repeated or conflicting filters.
pub trait RouteFilter: Validate {
    /// The filter's `type` as written.
    fn filter_type(&self) -> &str;
    /// Whether the filter rewrites the matched path prefix (`ReplacePrefixMatch`), which is
    /// only meaningful with exactly one `PathPrefix` match.
    fn replaces_prefix_match(&self) -> bool;
}

/// A reference to the resource a route attaches to (a Server, a Service, a Gateway).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// API group of the parent; empty or `core` for the core group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the parent (`Service`, `Server`, `Gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace of the parent; the route's own namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// A section (listener) of the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A port of the parent (for a Service parent: the Service port the route applies to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl Validate for ParentReference {
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
        check_opt(
            &path.key("namespace"),
            problems,
            self.namespace.as_deref(),
            names::dns1123_label,
        );
        check(&path.key("name"), problems, &self.name, names::dns1123_subdomain);
        check_opt(
            &path.key("sectionName"),
            problems,
            self.section_name.as_deref(),
            names::dns1123_subdomain,
        );
        if let Some(port) = self.port {
            check_port(&path.key("port"), problems, port.into());
        }
        // Linkerd's admission webhook: an EgressNetwork parent only makes sense per port.
        if self.kind.as_deref() == Some("EgressNetwork") && self.port.is_none() {
            problems.missing(&path.key("port"), "a port when the parent is an EgressNetwork");
        }
    }
}

/// Request conditions of one HTTP rule; all present conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Path condition; `PathPrefix /` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HttpHeaderMatch>>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<Vec<HttpHeaderMatch>>,
    /// Request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl Validate for HttpRouteMatch {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        self.path.validate(&path.key("path"), problems);
        if let Some(headers) = &self.headers {
            validate_value_matches(headers, &path.key("headers"), problems, formats::header_name);
        }
        if let Some(params) = &self.query_params {
            validate_value_matches(
                params,
                &path.key("queryParams"),
                problems,
                formats::query_param_name,
            );
        }
        check_opt(
            &path.key("method"),
            problems,
            self.method.as_deref(),
            formats::http_method,
        );
    }
}

/// A path condition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The path or pattern; `/` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl HttpPathMatch {
    /// The match type with the API server's default applied.
    pub fn match_type(&self) -> &str {
        self.type_.as_deref().unwrap_or("PathPrefix")
    }

    /// The value with the API server's default applied.
    pub fn match_value(&self) -> &str {
        self.value.as_deref().unwrap_or("/")
    }
}

impl Validate for HttpPathMatch {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        let ty = self.match_type();
        check_one_of(&path.key("type"), problems, ty, PATH_MATCH_TYPES);
        let vpath = path.key("value");
        let value = self.match_value();
        if value.len() > 1024 {
            problems.push(
                &vpath,
                "at most 1024 characters",
                Some(format!("{} characters", value.len())),
            );
        }
        match ty {
            "RegularExpression" => check(&vpath, problems, value, formats::regex),
            "Exact" | "PathPrefix" => check(&vpath, problems, value, literal_path),
            _ => {}
        }
    }
}

/// A literal request path as the Gateway API's CEL rules accept it.
fn literal_path(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "an absolute path starting with \"/\", without \"//\", \"/./\", \"/../\", \"%2f\" or \"#\", not ending in \"/.\" or \"/..\"";
    let bad = !s.starts_with('/')
        || ["//", "/./", "/../", "%2f", "%2F", "#"]
            .iter()
            .any(|bad| s.contains(bad))
        || s.ends_with("/.")
        || s.ends_with("/..");
    if bad { Err(EXPECTED.into()) } else { Ok(()) }
}

/// A header or query parameter condition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Header or parameter name.
    pub name: String,
    /// Expected value or pattern.
    pub value: String,
}

impl HttpHeaderMatch {
    /// The match type with the API server's default applied.
    pub fn match_type(&self) -> &str {
        self.type_.as_deref().unwrap_or("Exact")
    }
}

/// Validates header or query parameter conditions; the API server keys these lists by name,
/// so a repeated name is rejected.
pub fn validate_value_matches(
    matches: &[HttpHeaderMatch],
    path: &FieldPath,
    problems: &mut Problems,
    name_check: fn(&str) -> Result<(), String>,
) {
    let mut seen = BTreeSet::new();
    for (i, m) in matches.iter().enumerate() {
        let p = path.index(i);
        let ty = m.match_type();
        check_one_of(&p.key("type"), problems, ty, VALUE_MATCH_TYPES);
        check(&p.key("name"), problems, &m.name, name_check);
        if !seen.insert(m.name.as_str()) {
            problems.push(
                &p.key("name"),
                "a name not already matched in this list",
                Some(format!("{:?}", m.name)),
            );
        }
        if ty == "RegularExpression" {
            check(&p.key("value"), problems, &m.value, formats::regex);
        } else {
            check(&p.key("value"), problems, &m.value, formats::header_value);
        }
    }
}

/// Header edits of a `RequestHeaderModifier` or `ResponseHeaderModifier` filter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderModifier {
    /// Headers to overwrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<HttpHeader>>,
    /// Headers to append to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<HttpHeader>>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
}

/// A header name and value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

impl Validate for HttpHeaderModifier {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        for (field, headers) in [("set", &self.set), ("add", &self.add)] {
            let mut seen = BTreeSet::new();
            for (i, h) in headers.iter().flatten().enumerate() {
                let p = path.key(field).index(i);
                check(&p.key("name"), problems, &h.name, formats::header_name);
                check(&p.key("value"), problems, &h.value, formats::header_value);
                if !seen.insert(h.name.as_str()) {
                    problems.push(
                        &p.key("name"),
                        format!("a header not already in {field}"),
                        Some(format!("{:?}", h.name)),
                    );
                }
            }
        }
        for (i, name) in self.remove.iter().flatten().enumerate() {
            check(&path.key("remove").index(i), problems, name, formats::header_name);
        }
    }
}

/// A `RequestRedirect` filter: answer with a redirect instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestRedirectFilter {
    /// `http` or `https`; the request's scheme when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host of the redirect; the request's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How to rewrite the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
    /// Port of the redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// 301 or 302 (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
}

impl Validate for HttpRequestRedirectFilter {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        if let Some(scheme) = &self.scheme {
            check_one_of(&path.key("scheme"), problems, scheme, &["http", "https"]);
        }
        check_opt(
            &path.key("hostname"),
            problems,
            self.hostname.as_deref(),
            formats::precise_hostname,
        );
        self.path.validate(&path.key("path"), problems);
        if let Some(port) = self.port {
            check_port(&path.key("port"), problems, port.into());
        }
        if let Some(code) = self.status_code
            && !REDIRECT_STATUS_CODES.contains(&code)
        {
            problems.push(
                &path.key("statusCode"),
                "a redirect status code, 301 or 302",
                Some(code.to_string()),
            );
        }
    }
}

/// A path rewrite of a redirect or URL rewrite.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The new path, for `ReplaceFullPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// The replacement of the matched prefix, for `ReplacePrefixMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

impl Validate for HttpPathModifier {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        check_one_of(&path.key("type"), problems, &self.type_, PATH_MODIFIER_TYPES);
        for (field, value, ty) in [
            ("replaceFullPath", &self.replace_full_path, "ReplaceFullPath"),
            (
                "replacePrefixMatch",
                &self.replace_prefix_match,
                "ReplacePrefixMatch",
            ),
        ] {
            let p = path.key(field);
            match value {
                None if self.type_ == ty => problems.missing(&p, format!("{field} when type is {ty}")),
                Some(_) if self.type_ != ty => problems.push(
                    &p,
                    format!("no {field} unless type is {ty}"),
                    Some(format!("type {:?}", self.type_)),
                ),
                Some(v) if v.len() > 1024 => problems.push(
                    &p,
                    "at most 1024 characters",
                    Some(format!("{} characters", v.len())),
                ),
                _ => {}
            }
        }
    }
}

/// Per-rule timeouts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// Deadline for the whole request, retries included (`"10s"`; `"0s"` disables it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Deadline for each attempt to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

impl Validate for HttpRouteTimeouts {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        let parse = |field: &str, v: &Option<String>, problems: &mut Problems| {
            let v = v.as_deref()?;
            names::duration(v)
                .map_err(|expected| problems.push(&path.key(field), expected, Some(format!("{v:?}"))))
                .ok()
        };
        let request = parse("request", &self.request, problems);
        let backend = parse("backendRequest", &self.backend_request, problems);
        // Both Linkerd and the Gateway API refuse an attempt deadline longer than the
        // request's (a zero request timeout means "none").
        if let (Some(req), Some(backend)) = (request, backend)
            && !req.is_zero()
            && backend > req
        {
            problems.push(
                &path.key("backendRequest"),
                format!(
                    "a timeout no longer than request ({})",
                    self.request.as_deref().unwrap_or_default()
                ),
                self.backend_request.as_ref().map(|v| format!("{v:?}")),
            );
        }
    }
}

/// A backend a rule forwards to, with its own filters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// serde would otherwise require `F: Default` because of the `default` fields.
#[serde(bound(deserialize = "F: Deserialize<'de>"))]
pub struct BackendRef<F> {
    /// API group of the backend; the core group when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the backend; `Service` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the backend.
    pub name: String,
    /// Namespace of the backend; the route's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the backend (required for a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Relative weight among the rule's backends; 1 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Filters applied only to requests sent to this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<F>>,
}

impl<F> BackendRef<F> {
    /// Whether the backend is a core Service (Linkerd requires a port then).
    pub fn is_service(&self) -> bool {
        matches!(self.group.as_deref(), None | Some(""))
            && matches!(self.kind.as_deref(), None | Some("Service"))
    }

    /// The weight with the default applied.
    pub fn weight_or_default(&self) -> i32 {
        self.weight.unwrap_or(1)
    }
}

impl<F: RouteFilter> Validate for BackendRef<F> {
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
        if self.is_service() {
            check(&path.key("name"), problems, &self.name, |s| {
                names::dns1123_label(s).map_err(|e| format!("a Service name: {e}"))
            });
        } else {
            check(&path.key("name"), problems, &self.name, names::dns1123_subdomain);
        }
        check_opt(
            &path.key("namespace"),
            problems,
            self.namespace.as_deref(),
            names::dns1123_label,
        );
        match self.port {
            Some(port) => check_port(&path.key("port"), problems, port.into()),
            None if self.is_service() => {
                problems.missing(&path.key("port"), "a port when the backend is a Service")
            }
            None => {}
        }
        if let Some(w) = self.weight
            && !(0..=MAX_WEIGHT).contains(&w)
        {
            problems.push(
                &path.key("weight"),
                format!("a weight 0-{MAX_WEIGHT}"),
                Some(w.to_string()),
            );
        }
        if let Some(filters) = &self.filters {
            validate_filters(filters, &path.key("filters"), problems);
        }
    }
}

/// One HTTP routing rule: conditions, filters, backends and timeouts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// serde would otherwise require `F: Default` because of the `default` fields.
#[serde(bound(deserialize = "F: Deserialize<'de>"))]
pub struct HttpRouteRule<F> {
    /// Request conditions; any one matching selects the rule. `PathPrefix /` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<HttpRouteMatch>>,
    /// Filters applied to every request of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<F>>,
    /// Where requests go; the parent itself when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef<F>>>,
    /// Request and per-attempt deadlines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
}

impl<F: RouteFilter> Validate for HttpRouteRule<F> {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        self.matches.validate(&path.key("matches"), problems);
        if let Some(filters) = &self.filters {
            validate_filters(filters, &path.key("filters"), problems);
            // Gateway API CEL rule: rewriting "the matched prefix" needs exactly one prefix
            // match to know what was matched.
            let matches = self.matches.as_deref().unwrap_or_default();
            let one_prefix = matches.len() == 1
                && matches[0]
                    .path
                    .as_ref()
                    .is_some_and(|p| p.match_type() == "PathPrefix");
            for (i, f) in filters.iter().enumerate() {
                if f.replaces_prefix_match() && !one_prefix {
                    problems.push(
                        &path.key("filters").index(i),
                        "a ReplacePrefixMatch path modifier only in a rule with exactly one match, of type PathPrefix",
                        Some(format!("{} matches", matches.len())),
                    );
                }
            }
        }
        self.backend_refs.validate(&path.key("backendRefs"), problems);
        self.timeouts.validate(&path.key("timeouts"), problems);
    }
}

/// What controllers report about a route, per parent (Linkerd's policy controller writes it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// One entry per parent and controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<Vec<RouteParentStatus>>,
}

/// A controller's view of a route's attachment to one parent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// The parent this entry is about.
    pub parent_ref: ParentReference,
    /// The controller that wrote the entry (`linkerd.io/policy-controller`).
    pub controller_name: String,
    /// `Accepted`, `ResolvedRefs`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// A status condition (`metav1.Condition`), with times kept as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type (`Accepted`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time of the last status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The object generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Validates each filter and the list rules of the Gateway API: a filter type other than
/// `RequestMirror` and `ExtensionRef` appears at most once, and a redirect excludes a rewrite.
pub fn validate_filters<F: RouteFilter>(filters: &[F], path: &FieldPath, problems: &mut Problems) {
    let mut seen = BTreeSet::new();
    for (i, f) in filters.iter().enumerate() {
        let p = path.index(i);
        f.validate(&p, problems);
        let ty = f.filter_type();
        let repeatable = matches!(ty, "RequestMirror" | "ExtensionRef");
        if !repeatable && !seen.insert(ty) {
            problems.push(
                &p.key("type"),
                format!("at most one {ty} filter per list"),
                Some(format!("{ty:?} again")),
            );
        }
        let conflict = match ty {
            "RequestRedirect" => Some("URLRewrite"),
            "URLRewrite" => Some("RequestRedirect"),
            _ => None,
        };
        if let Some(other) = conflict
            && filters[..i].iter().any(|f| f.filter_type() == other)
        {
            problems.push(
                &p.key("type"),
                format!("either a {other} or a {ty} filter, not both"),
                Some(format!("{ty:?}")),
            );
        }
    }
}

/// Validates the parts every route spec has: parent references and hostnames.
pub fn validate_route_common(
    parent_refs: Option<&[ParentReference]>,
    hostnames: Option<&[String]>,
    path: &FieldPath,
    problems: &mut Problems,
) {
    for (i, parent) in parent_refs.unwrap_or_default().iter().enumerate() {
        parent.validate(&path.key("parentRefs").index(i), problems);
    }
    for (i, host) in hostnames.unwrap_or_default().iter().enumerate() {
        check(
            &path.key("hostnames").index(i),
            problems,
            host,
            formats::route_hostname,
        );
    }
}

/// Checks a filter's `type` against the filter kinds a route accepts, and that exactly the
/// matching configuration field is set. `configs` lists `(type, field, field is set)`.
pub fn check_filter_config(
    path: &FieldPath,
    problems: &mut Problems,
    ty: &str,
    configs: &[(&str, &str, bool)],
) {
    let allowed: Vec<&str> = configs.iter().map(|(t, _, _)| *t).collect();
    if !allowed.contains(&ty) {
        problems.push(
            &path.key("type"),
            formats::one_of(&allowed),
            Some(format!("{ty:?}")),
        );
    }
    for (t, field, present) in configs {
        if *t == ty && !present {
            problems.missing(&path.key(*field), format!("{field} when type is {t}"));
        } else if *t != ty && *present {
            problems.push(
                &path.key(*field),
                format!("no {field} unless type is {t}"),
                Some(format!("type {ty:?}")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A filter that accepts every type, so the shared pieces can be tested on their own.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct AnyFilter {
        #[serde(rename = "type")]
        pub type_: String,
        #[serde(default)]
        pub prefix: bool,
    }

    impl Validate for AnyFilter {
        fn validate(&self, _: &FieldPath, _: &mut Problems) {}
    }

    impl RouteFilter for AnyFilter {
        fn filter_type(&self) -> &str {
            &self.type_
        }
        fn replaces_prefix_match(&self) -> bool {
            self.prefix
        }
    }

    fn rule_problems(v: serde_json::Value) -> Vec<(String, String)> {
        let rule: HttpRouteRule<AnyFilter> = serde_json::from_value(v).unwrap();
        let mut problems = Problems::default();
        rule.validate(&FieldPath::parse("spec.rules[0]"), &mut problems);
        problems
            .0
            .iter()
            .map(|p| (p.path.to_string(), p.expected.clone()))
            .collect()
    }

    #[test]
    fn valid_rule() {
        let rule = json!({
            "matches": [
                {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET",
                 "headers": [{"name": "x-canary", "value": "true"}, {"type": "RegularExpression", "name": "x-user", "value": "^a.*"}],
                 "queryParams": [{"name": "q", "value": "1"}]},
            ],
            "filters": [{"type": "RequestHeaderModifier"}, {"type": "RequestMirror"}, {"type": "RequestMirror"}],
            "backendRefs": [{"name": "web", "port": 80, "weight": 0}, {"name": "ext", "kind": "EgressNetwork", "group": "policy.linkerd.io"}],
            "timeouts": {"request": "10s", "backendRequest": "8s"},
        });
        assert_eq!(rule_problems(rule), vec![]);
        // A zero request timeout disables the comparison.
        assert_eq!(
            rule_problems(json!({"timeouts": {"request": "0s", "backendRequest": "8s"}})),
            vec![]
        );
    }

    #[test]
    fn invalid_rules() {
        let cases = [
            (
                json!({"matches": [{"path": {"value": "api"}}]}),
                "spec.rules[0].matches[0].path.value",
                "starting with \"/\"",
            ),
            (
                json!({"matches": [{"path": {"type": "Prefix", "value": "/"}}]}),
                "spec.rules[0].matches[0].path.type",
                "one of \"Exact\"",
            ),
            (
                json!({"matches": [{"path": {"type": "RegularExpression", "value": "/a(b"}}]}),
                "spec.rules[0].matches[0].path.value",
                "a valid regular expression",
            ),
            (
                json!({"matches": [{"path": {"value": "/a//b"}}]}),
                "spec.rules[0].matches[0].path.value",
                "without \"//\"",
            ),
            (
                json!({"matches": [{"headers": [{"name": "x canary", "value": "1"}]}]}),
                "spec.rules[0].matches[0].headers[0].name",
                "an HTTP header name",
            ),
            (
                json!({"matches": [{"headers": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}]}),
                "spec.rules[0].matches[0].headers[1].name",
                "not already matched",
            ),
            (
                json!({"matches": [{"headers": [{"type": "RegularExpression", "name": "a", "value": "("}]}]}),
                "spec.rules[0].matches[0].headers[0].value",
                "a valid regular expression",
            ),
            (
                json!({"matches": [{"headers": [{"type": "Prefix", "name": "a", "value": "b"}]}]}),
                "spec.rules[0].matches[0].headers[0].type",
                "one of",
            ),
            (
                json!({"matches": [{"queryParams": [{"name": "", "value": "b"}]}]}),
                "spec.rules[0].matches[0].queryParams[0].name",
                "a query parameter name",
            ),
            (
                json!({"matches": [{"method": "FETCH"}]}),
                "spec.rules[0].matches[0].method",
                "an HTTP method",
            ),
            (
                json!({"backendRefs": [{"name": "web"}]}),
                "spec.rules[0].backendRefs[0].port",
                "a port when the backend is a Service",
            ),
            (
                json!({"backendRefs": [{"name": "web", "port": 0}]}),
                "spec.rules[0].backendRefs[0].port",
                "a port number 1-65535",
            ),
            (
                json!({"backendRefs": [{"name": "", "port": 80}]}),
                "spec.rules[0].backendRefs[0].name",
                "a Service name",
            ),
            (
                json!({"backendRefs": [{"name": "Web", "port": 80}]}),
                "spec.rules[0].backendRefs[0].name",
                "a Service name",
            ),
            (
                json!({"backendRefs": [{"name": "web", "port": 80, "weight": -1}]}),
                "spec.rules[0].backendRefs[0].weight",
                "a weight 0-1000000",
            ),
            (
                json!({"backendRefs": [{"name": "web", "port": 80, "namespace": "Prod"}]}),
                "spec.rules[0].backendRefs[0].namespace",
                "a DNS-1123 label",
            ),
            (
                json!({"timeouts": {"request": "10"}}),
                "spec.rules[0].timeouts.request",
                "a duration",
            ),
            (
                json!({"timeouts": {"request": "5s", "backendRequest": "8s"}}),
                "spec.rules[0].timeouts.backendRequest",
                "no longer than request (5s)",
            ),
            (
                json!({"filters": [{"type": "RequestHeaderModifier"}, {"type": "RequestHeaderModifier"}]}),
                "spec.rules[0].filters[1].type",
                "at most one RequestHeaderModifier",
            ),
            (
                json!({"filters": [{"type": "URLRewrite"}, {"type": "RequestRedirect"}]}),
                "spec.rules[0].filters[1].type",
                "either a URLRewrite or a RequestRedirect",
            ),
            (
                json!({"filters": [{"type": "RequestRedirect", "prefix": true}]}),
                "spec.rules[0].filters[0]",
                "exactly one match, of type PathPrefix",
            ),
        ];
        for (input, path, expected) in cases {
            let found = rule_problems(input.clone());
            assert_eq!(found.len(), 1, "{input}: {found:?}");
            assert_eq!(found[0].0, path, "{input}");
            assert!(found[0].1.contains(expected), "{input}: {}", found[0].1);
        }
    }

    #[test]
    fn prefix_rewrite_with_one_prefix_match_is_fine() {
        let rule = json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
            "filters": [{"type": "RequestRedirect", "prefix": true}],
        });
        assert_eq!(rule_problems(rule), vec![]);
    }

    #[test]
    fn modifiers_redirects_and_parents() {
        type Check = Box<dyn Fn(&mut Problems)>;
        let cases: Vec<(Check, &str, &str)> = vec![
            (
                Box::new(|p| {
                    let m: HttpHeaderModifier = serde_json::from_value(
                        json!({"set": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}),
                    )
                    .unwrap();
                    m.validate(&FieldPath::parse("f"), p)
                }),
                "f.set[1].name",
                "a header not already in set",
            ),
            (
                Box::new(|p| {
                    let m: HttpHeaderModifier =
                        serde_json::from_value(json!({"remove": ["ok", "not ok"]})).unwrap();
                    m.validate(&FieldPath::parse("f"), p)
                }),
                "f.remove[1]",
                "an HTTP header name",
            ),
            (
                Box::new(|p| {
                    let r: HttpRequestRedirectFilter =
                        serde_json::from_value(json!({"statusCode": 307})).unwrap();
                    r.validate(&FieldPath::parse("r"), p)
                }),
                "r.statusCode",
                "301 or 302",
            ),
            (
                Box::new(|p| {
                    let r: HttpRequestRedirectFilter =
                        serde_json::from_value(json!({"scheme": "ftp"})).unwrap();
                    r.validate(&FieldPath::parse("r"), p)
                }),
                "r.scheme",
                "one of \"http\", \"https\"",
            ),
            (
                Box::new(|p| {
                    let r: HttpRequestRedirectFilter =
                        serde_json::from_value(json!({"hostname": "*.example.com"})).unwrap();
                    r.validate(&FieldPath::parse("r"), p)
                }),
                "r.hostname",
                "no wildcard",
            ),
            (
                Box::new(|p| {
                    let r: HttpRequestRedirectFilter =
                        serde_json::from_value(json!({"port": 70000})).unwrap();
                    r.validate(&FieldPath::parse("r"), p)
                }),
                "r.port",
                "a port number",
            ),
            (
                Box::new(|p| {
                    let r: HttpRequestRedirectFilter =
                        serde_json::from_value(json!({"path": {"type": "ReplaceFullPath"}})).unwrap();
                    r.validate(&FieldPath::parse("r"), p)
                }),
                "r.path.replaceFullPath",
                "replaceFullPath when type is ReplaceFullPath",
            ),
            (
                Box::new(|p| {
                    let r: HttpRequestRedirectFilter =
                        serde_json::from_value(json!({"path": {"type": "ReplaceFullPath", "replaceFullPath": "/a", "replacePrefixMatch": "/b"}})).unwrap();
                    r.validate(&FieldPath::parse("r"), p)
                }),
                "r.path.replacePrefixMatch",
                "no replacePrefixMatch unless type is ReplacePrefixMatch",
            ),
            (
                Box::new(|p| {
                    let r: ParentReference =
                        serde_json::from_value(json!({"name": "web", "port": 0})).unwrap();
                    r.validate(&FieldPath::parse("spec.parentRefs[0]"), p)
                }),
                "spec.parentRefs[0].port",
                "a port number",
            ),
            (
                Box::new(|p| {
                    let r: ParentReference =
                        serde_json::from_value(json!({"name": "web", "kind": "Ser vice"})).unwrap();
                    r.validate(&FieldPath::parse("spec.parentRefs[0]"), p)
                }),
                "spec.parentRefs[0].kind",
                "a kind",
            ),
            (
                Box::new(|p| {
                    let r: ParentReference = serde_json::from_value(
                        json!({"name": "out", "kind": "EgressNetwork", "group": "policy.linkerd.io"}),
                    )
                    .unwrap();
                    r.validate(&FieldPath::parse("spec.parentRefs[0]"), p)
                }),
                "spec.parentRefs[0].port",
                "EgressNetwork",
            ),
            (
                Box::new(|p| {
                    validate_route_common(None, Some(&["*".to_string()]), &FieldPath::parse("spec"), p)
                }),
                "spec.hostnames[0]",
                "a hostname",
            ),
        ];
        for (run, path, expected) in cases {
            let mut problems = Problems::default();
            run(&mut problems);
            assert_eq!(problems.0.len(), 1, "{path}: {problems:?}");
            assert_eq!(problems.0[0].path.to_string(), path);
            assert!(
                problems.0[0].expected.contains(expected),
                "{path}: {}",
                problems.0[0].expected
            );
        }
    }
}
