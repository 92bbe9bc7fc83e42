//! `ServiceProfile` (linkerd.io): per-route metrics, retries, timeouts and response
//! classification for one service, plus its retry budget and traffic overrides.
//!
//! Request and response conditions nest (`all`, `any`, `not`); Linkerd's CRD leaves the
//! nested conditions schemaless, and so does ours, since structural schemas cannot recurse.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::formats::{self, check, check_opt};
use super::weight::Weight;
use crate::names;
use crate::validate::{FieldPath, Problems, Validate};

/// The desired state of a `ServiceProfile`; the object's name is the service's FQDN.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "linkerd.io",
    version = "v1alpha2",
    kind = "ServiceProfile",
    namespaced,
    derive = "PartialEq",
    shortname = "sp",
    doc = "Routes, retries, timeouts and response classes of one service."
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProfileSpec {
    /// The service's routes; the first whose condition matches a request wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteSpec>>,
    /// How many retries may be added on top of regular traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Ports whose traffic is opaque TCP (numbers, or strings of ports and ranges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opaque_ports: Option<Vec<IntOrString>>,
    /// Authorities to send the service's traffic to instead, by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_overrides: Option<Vec<WeightedDst>>,
}

/// One route of a service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Display name (`GET /api/users`), used as the route label of metrics.
    pub name: String,
    /// Which requests belong to the route.
    pub condition: RequestMatch,
    /// How responses are classified; the first matching class wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_classes: Option<Vec<ResponseClass>>,
    /// Whether failed requests may be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_retryable: Option<bool>,
    /// Deadline of each request (`"10s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A request condition: every field set must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// All of these hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_condition_list")]
    pub all: Option<Vec<RequestMatch>>,
    /// At least one of these holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_condition_list")]
    pub any: Option<Vec<RequestMatch>>,
    /// This does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_condition")]
    pub not: Option<Box<RequestMatch>>,
    /// The path matches this regular expression (anchored at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A response classification.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseClass {
    /// Which responses are in the class.
    pub condition: ResponseMatch,
    /// Whether they count as failures (for success rate and retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_failure: Option<bool>,
}

/// A response condition: every field set must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseMatch {
    /// All of these hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_condition_list")]
    pub all: Option<Vec<ResponseMatch>>,
    /// At least one of these holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_condition_list")]
    pub any: Option<Vec<ResponseMatch>>,
    /// This does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_condition")]
    pub not: Option<Box<ResponseMatch>>,
    /// The status code is in this range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRange>,
}

/// An inclusive range of HTTP status codes; an unset bound is open.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusRange {
    /// Lowest status included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Highest status included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// Limits retries to a share of regular traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries allowed per original request (0.2 = 20% extra load).
    pub retry_ratio: f64,
    /// Retries always allowed per second, whatever the ratio.
    pub min_retries_per_second: i64,
    /// How long requests count towards the ratio (`"10s"`).
    pub ttl: String,
}

/// An authority receiving a share of the service's traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightedDst {
    /// `host[:port]` (`web-v2.prod.svc.cluster.local:80`).
    pub authority: String,
    /// Relative weight: an integer or a quantity (`"500m"`).
    pub weight: Weight,
}

/// Schema of a nested condition: kept open, because a structural schema cannot refer to
/// itself.
fn opaque_condition(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn opaque_condition_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

impl Validate for ServiceProfileSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        self.routes.validate(&path.key("routes"), problems);
        self.retry_budget.validate(&path.key("retryBudget"), problems);
        for (i, port) in self.opaque_ports.iter().flatten().enumerate() {
            let p = path.key("opaquePorts").index(i);
            match port {
                IntOrString::Int(n) => formats::check_port(&p, problems, (*n).into()),
                IntOrString::String(s) => {
                    if let Err(expected) = names::port_ranges(s) {
                        problems.push(&p, expected, Some(format!("{s:?}")));
                    }
                }
            }
        }
        for (i, dst) in self.dst_overrides.iter().flatten().enumerate() {
            let p = path.key("dstOverrides").index(i);
            check(&p.key("authority"), problems, &dst.authority, authority);
            dst.weight.validate_at(&p.key("weight"), problems);
        }
    }
}

/// `host[:port]` where host is a DNS name or an IP address.
fn authority(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "an authority \"host[:port]\" such as \"web.prod.svc.cluster.local:80\"";
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    // A bracketed IPv6 address may carry a port; a bare one cannot.
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| EXPECTED.to_string())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| EXPECTED.to_string())?),
        };
        (h, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host_ok = host.parse::<std::net::IpAddr>().is_ok() || names::dns1123_subdomain(host).is_ok();
    let port_ok = port.is_none_or(|p| {
        p.parse::<i64>()
            .ok()
            .is_some_and(|n| names::port_number(n).is_ok())
    });
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(EXPECTED.into())
    }
}

impl Validate for RouteSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        formats::check_non_empty(&path.key("name"), problems, &self.name, "a route name");
        self.condition.validate(&path.key("condition"), problems);
        self.response_classes
            .validate(&path.key("responseClasses"), problems);
        if let Some(t) = &self.timeout
            && let Err(expected) = names::duration(t)
        {
            problems.push(&path.key("timeout"), expected, Some(format!("{t:?}")));
        }
    }
}

impl Validate for RequestMatch {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        // Linkerd's validator: an empty condition matches nothing useful and is rejected.
        if self.all.is_none()
            && self.any.is_none()
            && self.not.is_none()
            && self.path_regex.is_none()
            && self.method.is_none()
        {
            problems.missing(
                path,
                "a request condition: at least one of method, pathRegex, all, any or not",
            );
        }
        self.all.validate(&path.key("all"), problems);
        self.any.validate(&path.key("any"), problems);
        if let Some(not) = &self.not {
            not.validate(&path.key("not"), problems);
        }
        check_opt(
            &path.key("pathRegex"),
            problems,
            self.path_regex.as_deref(),
            formats::regex,
        );
        check_opt(&path.key("method"), problems, self.method.as_deref(), |m| {
            // Any token is a method; the well-known ones are uppercase.
            formats::header_name(m).map_err(|_| "an HTTP method such as \"GET\"".to_string())
        });
    }
}

impl Validate for ResponseClass {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        self.condition.validate(&path.key("condition"), problems);
    }
}

impl Validate for ResponseMatch {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        if self.all.is_none() && self.any.is_none() && self.not.is_none() && self.status.is_none() {
            problems.missing(
                path,
                "a response condition: at least one of status, all, any or not",
            );
        }
        self.all.validate(&path.key("all"), problems);
        self.any.validate(&path.key("any"), problems);
        if let Some(not) = &self.not {
            not.validate(&path.key("not"), problems);
        }
        self.status.validate(&path.key("status"), problems);
    }
}

impl Validate for StatusRange {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        for (field, v) in [("min", self.min), ("max", self.max)] {
            if let Some(v) = v
                && !(100..=599).contains(&v)
            {
                problems.push(&path.key(field), "an HTTP status 100-599", Some(v.to_string()));
            }
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            problems.push(
                &path.key("max"),
                format!("a maximum no smaller than min ({min})"),
                Some(max.to_string()),
            );
        }
    }
}

impl Validate for RetryBudget {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        if !(self.retry_ratio >= 0.0 && self.retry_ratio.is_finite()) {
            problems.push(
                &path.key("retryRatio"),
                "a non-negative ratio such as 0.2",
                Some(self.retry_ratio.to_string()),
            );
        }
        if !(0..=i64::from(u32::MAX)).contains(&self.min_retries_per_second) {
            problems.push(
                &path.key("minRetriesPerSecond"),
                "a non-negative number of retries per second",
                Some(self.min_retries_per_second.to_string()),
            );
        }
        if let Err(expected) = names::duration(&self.ttl) {
            problems.push(&path.key("ttl"), expected, Some(format!("{:?}", self.ttl)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: &serde_json::Value) -> Vec<(String, String)> {
        let spec: ServiceProfileSpec = serde_json::from_value(v.clone()).unwrap();
        let mut problems = Problems::default();
        spec.validate(&FieldPath::root().key("spec"), &mut problems);
        problems
            .0
            .iter()
            .map(|p| (p.path.to_string(), p.expected.clone()))
            .collect()
    }

    fn route(r: serde_json::Value) -> serde_json::Value {
        json!({"routes": [r]})
    }

    #[test]
    fn valid_profiles() {
        let v = json!({
            "routes": [
                {"name": "GET /api/users", "condition": {"method": "GET", "pathRegex": "/api/users"},
                 "responseClasses": [{"condition": {"status": {"min": 500, "max": 599}}, "isFailure": true}],
                 "isRetryable": true, "timeout": "300ms"},
                {"name": "not get", "condition": {"not": {"method": "GET"}, "all": [{"pathRegex": "/a/.*"}], "any": [{"method": "PUT"}, {"method": "POST"}]},
                 "responseClasses": [{"condition": {"any": [{"status": {"min": 500}}, {"not": {"status": {"max": 399}}}]}}]},
            ],
            "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"},
            "opaquePorts": [3306, "5432", "8000-8100"],
            "dstOverrides": [{"authority": "web-v2.prod.svc.cluster.local:80", "weight": "500m"}, {"authority": "10.0.0.1", "weight": 1}],
        });
        assert_eq!(run(&v), vec![]);
    }

    #[test]
    fn invalid_profiles() {
        let cases = [
            (
                route(json!({"name": "", "condition": {"method": "GET"}})),
                "spec.routes[0].name",
                "a route name",
            ),
            (
                route(json!({"name": "r", "condition": {}})),
                "spec.routes[0].condition",
                "a request condition",
            ),
            (
                route(json!({"name": "r", "condition": {"pathRegex": "/api/(users"}})),
                "spec.routes[0].condition.pathRegex",
                "a valid regular expression",
            ),
            (
                route(json!({"name": "r", "condition": {"method": "GE T"}})),
                "spec.routes[0].condition.method",
                "an HTTP method",
            ),
            (
                route(json!({"name": "r", "condition": {"all": [{"pathRegex": "("}]}})),
                "spec.routes[0].condition.all[0].pathRegex",
                "a valid regular expression",
            ),
            (
                route(json!({"name": "r", "condition": {"not": {}}})),
                "spec.routes[0].condition.not",
                "a request condition",
            ),
            (
                route(json!({"name": "r", "condition": {"method": "GET"}, "timeout": "soon"})),
                "spec.routes[0].timeout",
                "a duration",
            ),
            (
                route(
                    json!({"name": "r", "condition": {"method": "GET"}, "responseClasses": [{"condition": {"status": {"min": 500, "max": 400}}}]}),
                ),
                "spec.routes[0].responseClasses[0].condition.status.max",
                "no smaller than min (500)",
            ),
            (
                route(
                    json!({"name": "r", "condition": {"method": "GET"}, "responseClasses": [{"condition": {"status": {"min": 99}}}]}),
                ),
                "spec.routes[0].responseClasses[0].condition.status.min",
                "an HTTP status 100-599",
            ),
            (
                route(
                    json!({"name": "r", "condition": {"method": "GET"}, "responseClasses": [{"condition": {"any": [{"status": {"max": 600}}]}}]}),
                ),
                "spec.routes[0].responseClasses[0].condition.any[0].status.max",
                "an HTTP status 100-599",
            ),
            (
                route(
                    json!({"name": "r", "condition": {"method": "GET"}, "responseClasses": [{"condition": {}}]}),
                ),
                "spec.routes[0].responseClasses[0].condition",
                "a response condition",
            ),
            (
                json!({"retryBudget": {"retryRatio": -0.1, "minRetriesPerSecond": 10, "ttl": "10s"}}),
                "spec.retryBudget.retryRatio",
                "a non-negative ratio",
            ),
            (
                json!({"retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": -1, "ttl": "10s"}}),
                "spec.retryBudget.minRetriesPerSecond",
                "non-negative",
            ),
            (
                json!({"retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 1, "ttl": "10"}}),
                "spec.retryBudget.ttl",
                "a duration",
            ),
            (
                json!({"opaquePorts": [0]}),
                "spec.opaquePorts[0]",
                "a port number 1-65535",
            ),
            (
                json!({"opaquePorts": ["mysql"]}),
                "spec.opaquePorts[0]",
                "a comma-separated list of ports",
            ),
            (
                json!({"dstOverrides": [{"authority": "web:http", "weight": 1}]}),
                "spec.dstOverrides[0].authority",
                "an authority",
            ),
            (
                json!({"dstOverrides": [{"authority": "web", "weight": -1}]}),
                "spec.dstOverrides[0].weight",
                "a non-negative weight",
            ),
        ];
        for (v, path, expected) in cases {
            let found = run(&v);
            assert_eq!(found.len(), 1, "{v}: {found:?}");
            assert_eq!(found[0].0, path, "{v}");
            assert!(found[0].1.contains(expected), "{v}: {}", found[0].1);
        }
    }

    #[test]
    fn authorities() {
        for ok in [
            "web",
            "web.prod.svc.cluster.local:8080",
            "10.0.0.1:80",
            "[fd00::1]:80",
            "fd00::1",
        ] {
            assert!(authority(ok).is_ok(), "{ok}");
        }
        for bad in ["", "web:", "web:0", "[fd00::1", "Web:80"] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
