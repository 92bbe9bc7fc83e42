//! The pure translation from store objects to the proxy's `OutboundPolicy` for one
//! `service:port`: which protocol to expect, which routes apply in which order, and where
//! each route's requests go.
//!
//! [`outbound_policy`] reads a [`Snapshot`] (the Services, HTTPRoutes, GRPCRoutes and
//! TrafficSplits the index holds) and returns an [`Evaluation`]: the policy (`None` when the
//! Service does not exist), what it had to ignore ([`Warning`]s), and which namespaces it
//! read, so a stream knows what to follow. Nothing here does I/O or reads the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use linkerd2_proxy_api::{
    grpc_route as grpc_pb, http_route as http_pb, http_types, meta, opaque_route as opaque_pb, outbound as pb,
};
use strait_api::mesh::gateway_api::{self, GrpcRoute, GrpcRouteFilter, GrpcRouteMatch, GrpcRouteRule};
use strait_api::mesh::policy;
use strait_api::mesh::route::{
    BackendRef, HttpHeader, HttpHeaderMatch, HttpHeaderModifier, HttpRequestRedirectFilter, HttpRouteMatch,
    HttpRouteRule, HttpRouteTimeouts, ParentReference,
};
use strait_api::mesh::split::TrafficSplit;

use super::annotations::{
    self, AnnotationError, ConsecutiveFailures, GrpcCondition, Retry, StatusRange, Timeouts,
};
use crate::discovery::model::NsName;

/// How long the proxy waits for the first bytes to tell HTTP from opaque traffic (Linkerd's
/// 10 s).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Peak-EWMA's latency estimate before any response was seen (Linkerd's 30 ms).
pub const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Peak-EWMA's decay window (Linkerd's 10 s).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Requests a backend queues while it has no endpoint ready (Linkerd's 100).
pub const QUEUE_CAPACITY: u32 = 100;
/// How long a backend may stay unready before its queued requests fail (Linkerd's 3 s).
pub const QUEUE_FAILFAST: Duration = Duration::from_secs(3);
/// Largest request body a retry may replay (Linkerd's 64 KiB).
pub const RETRY_MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// Retry backoff bounds and jitter (Linkerd's 25 ms, 250 ms, 1.0).
pub const RETRY_BACKOFF: (Duration, Duration, f32) =
    (Duration::from_millis(25), Duration::from_millis(250), 1.0);
/// Scale of TrafficSplit weights: Linkerd sends their milli-values, so `90` becomes 90 000
/// and `"900m"` becomes 900 (the same numbers the destination API's `dst_overrides` carry).
pub const SPLIT_WEIGHT_SCALE: f64 = 1000.0;
/// The status a proxy answers for a backend that cannot be used.
pub const INVALID_BACKEND_HTTP_STATUS: u32 = 500;
/// The gRPC status (UNAVAILABLE) a proxy answers for a backend that cannot be used.
pub const INVALID_BACKEND_GRPC_CODE: u32 = 14;
/// The ports Linkerd treats as opaque when a Service has no `config.linkerd.io/opaque-ports`
/// (SMTP, MySQL, Galera, PostgreSQL, Redis, Elasticsearch, Memcached).
pub const DEFAULT_OPAQUE_PORTS: &[(u16, u16)] = &[
    (25, 25),
    (587, 587),
    (3306, 3306),
    (4444, 4444),
    (5432, 5432),
    (6379, 6379),
    (9300, 9300),
    (11211, 11211),
];

/// The group Linkerd's own HTTPRoute belongs to.
pub const POLICY_GROUP: &str = "policy.linkerd.io";
/// The Gateway API's group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The store objects outbound policy depends on, by `(namespace, name)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Services.
    pub services: BTreeMap<NsName, Service>,
    /// `policy.linkerd.io` HTTPRoutes (every served version).
    pub policy_http_routes: BTreeMap<NsName, policy::HttpRoute>,
    /// `gateway.networking.k8s.io` HTTPRoutes.
    pub gateway_http_routes: BTreeMap<NsName, gateway_api::HttpRoute>,
    /// `gateway.networking.k8s.io` GRPCRoutes.
    pub grpc_routes: BTreeMap<NsName, GrpcRoute>,
    /// SMI TrafficSplits.
    pub splits: BTreeMap<NsName, TrafficSplit>,
}

/// Cluster-wide choices the translation needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The cluster's DNS domain, for backend authorities (`cluster.local`).
    pub cluster_domain: String,
    /// Whether proxies may honour `l5d-retry-*` / `l5d-timeout` request headers on every
    /// route (Linkerd's policy controller `--allow-l5d-request-headers`, off by default).
    pub allow_l5d_request_headers: bool,
    /// Ports that are opaque on a Service without `config.linkerd.io/opaque-ports`.
    pub default_opaque_ports: Vec<(u16, u16)>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            allow_l5d_request_headers: false,
            default_opaque_ports: DEFAULT_OPAQUE_PORTS.to_vec(),
        }
    }
}

/// Something in the store that the translation had to leave out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    /// An annotation that does not read; it is ignored.
    #[error("{object}: {source}; the annotation is ignored")]
    Annotation {
        /// The annotated object (`service production/myapp`).
        object: String,
        /// What is wrong with it.
        #[source]
        source: AnnotationError,
    },
    /// A route that uses something the proxy cannot do; the whole route is ignored, as
    /// Linkerd ignores it.
    #[error("{route}: {what} is not supported; the route is ignored")]
    RouteIgnored {
        /// The route (`grpcroute.gateway.networking.k8s.io production/greeter`).
        route: String,
        /// What it uses.
        what: String,
    },
    /// A filter the proxy has no field for on this kind of route; only the filter is left out.
    #[error("{route}: {what} is not supported; the filter is ignored")]
    FilterIgnored {
        /// The route.
        route: String,
        /// The filter.
        what: String,
    },
}

/// The outcome of translating one `service:port`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// The policy; `None` when the Service does not exist.
    pub policy: Option<pb::OutboundPolicy>,
    /// What was left out.
    pub warnings: Vec<Warning>,
    /// The namespaces whose objects the policy depends on (the Service's, and those of
    /// backends in other namespaces).
    pub namespaces: BTreeSet<String>,
}

/// The outbound policy of `service:port`.
pub fn outbound_policy(snap: &Snapshot, service: &NsName, port: u16, settings: &Settings) -> Evaluation {
    let mut cx = Cx {
        snap,
        settings,
        warnings: Vec::new(),
        namespaces: BTreeSet::from([service.0.clone()]),
    };
    let policy = snap
        .services
        .get(service)
        .map(|svc| cx.policy(svc, service, port));
    Evaluation {
        policy,
        warnings: cx.warnings,
        namespaces: cx.namespaces,
    }
}

/// What a Service says about its routes, from its annotations.
#[derive(Clone, Debug, Default)]
struct ServiceDefaults {
    http_retry: Option<Retry<StatusRange>>,
    grpc_retry: Option<Retry<GrpcCondition>>,
    timeouts: Timeouts,
}

/// A backend reference, resolved: a balancer to send to, or why requests must fail.
enum Resolved {
    Usable(pb::Backend),
    Failed { backend: pb::Backend, message: String },
}

/// An HTTP filter of any route kind, by what it does.
pub(crate) enum FilterRef<'a> {
    RequestHeaders(&'a HttpHeaderModifier),
    ResponseHeaders(&'a HttpHeaderModifier),
    Redirect(&'a HttpRequestRedirectFilter),
    Unsupported(String),
}

/// The filters of every route kind, seen the same way.
pub(crate) trait AsFilter {
    fn as_filter(&self) -> FilterRef<'_>;
}

fn filter_ref<'a>(
    ty: &str,
    request: Option<&'a HttpHeaderModifier>,
    response: Option<&'a HttpHeaderModifier>,
    redirect: Option<&'a HttpRequestRedirectFilter>,
) -> FilterRef<'a> {
    match (ty, request, response, redirect) {
        ("RequestHeaderModifier", Some(m), _, _) => FilterRef::RequestHeaders(m),
        ("ResponseHeaderModifier", _, Some(m), _) => FilterRef::ResponseHeaders(m),
        ("RequestRedirect", _, _, Some(r)) => FilterRef::Redirect(r),
        (ty, ..) => FilterRef::Unsupported(format!("a {ty} filter")),
    }
}

impl AsFilter for policy::HttpRouteFilter {
    fn as_filter(&self) -> FilterRef<'_> {
        filter_ref(
            &self.type_,
            self.request_header_modifier.as_ref(),
            self.response_header_modifier.as_ref(),
            self.request_redirect.as_ref(),
        )
    }
}

impl AsFilter for gateway_api::HttpRouteFilter {
    fn as_filter(&self) -> FilterRef<'_> {
        filter_ref(
            &self.type_,
            self.request_header_modifier.as_ref(),
            self.response_header_modifier.as_ref(),
            self.request_redirect.as_ref(),
        )
    }
}

impl AsFilter for GrpcRouteFilter {
    fn as_filter(&self) -> FilterRef<'_> {
        filter_ref(
            &self.type_,
            self.request_header_modifier.as_ref(),
            self.response_header_modifier.as_ref(),
            None,
        )
    }
}

/// An HTTPRoute of either group.
#[derive(Clone, Copy)]
enum AnyHttpRoute<'a> {
    Policy(&'a policy::HttpRoute),
    Gateway(&'a gateway_api::HttpRoute),
}

impl AnyHttpRoute<'_> {
    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Policy(r) => &r.metadata,
            Self::Gateway(r) => &r.metadata,
        }
    }

    fn group(&self) -> &'static str {
        match self {
            Self::Policy(_) => POLICY_GROUP,
            Self::Gateway(_) => GATEWAY_GROUP,
        }
    }
}

/// Gateway API precedence among routes of one parent: the oldest first, then by name
/// (group and kind only break ties between kinds); routes without a creation time last.
fn precedence<'a>(meta: &'a ObjectMeta, group: &'a str) -> (bool, Option<&'a Time>, &'a str, &'a str) {
    (
        meta.creation_timestamp.is_none(),
        meta.creation_timestamp.as_ref(),
        meta.name.as_deref().unwrap_or_default(),
        group,
    )
}

/// Whether a route in `route_ns` attaches to `service:port` through one of its parents: a
/// Service parent (kind `Service`, group `core` or empty) of that name, in the route's own
/// namespace, on that port or on every port.
pub fn attaches(parents: Option<&[ParentReference]>, route_ns: &str, service: &NsName, port: u16) -> bool {
    route_ns == service.0
        && parents.unwrap_or_default().iter().any(|p| {
            p.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("Service"))
                && p.group
                    .as_deref()
                    .is_none_or(|g| g.is_empty() || g.eq_ignore_ascii_case("core"))
                && p.name == service.1
                && p.namespace.as_deref().is_none_or(|ns| ns == service.0)
                && p.port.is_none_or(|p| p == i32::from(port))
        })
}

fn object_name(kind: &str, meta: &ObjectMeta) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    d.try_into().ok()
}

fn metadata_default(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.to_string())),
    }
}

/// The metadata naming a Service port.
pub fn service_metadata(namespace: &str, name: &str, port: u16) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".into(),
            kind: "Service".into(),
            name: name.into(),
            namespace: namespace.into(),
            section: String::new(),
            port: u32::from(port),
        })),
    }
}

fn route_metadata(group: &str, kind: &str, m: &ObjectMeta) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: group.into(),
            kind: kind.into(),
            name: m.name.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            ..Default::default()
        })),
    }
}

fn queue() -> pb::Queue {
    pb::Queue {
        capacity: QUEUE_CAPACITY,
        failfast_timeout: proto_duration(QUEUE_FAILFAST),
    }
}

/// A backend that fails requests: no balancer, only metadata.
fn failing_backend(metadata: meta::Metadata) -> pb::Backend {
    pb::Backend {
        metadata: Some(metadata),
        queue: Some(queue()),
        kind: None,
    }
}

pub(crate) fn host_match(host: &str) -> http_pb::HostMatch {
    use http_pb::host_match::{Match, Suffix};
    let m = match host.strip_prefix("*.") {
        Some(suffix) => Match::Suffix(Suffix {
            reverse_labels: suffix.split('.').rev().map(String::from).collect(),
        }),
        None => Match::Exact(host.to_string()),
    };
    http_pb::HostMatch { r#match: Some(m) }
}

fn header_match(m: &HttpHeaderMatch) -> http_pb::HeaderMatch {
    use http_pb::header_match::Value;
    let value = match m.match_type() {
        "RegularExpression" => Value::Regex(m.value.clone()),
        _ => Value::Exact(m.value.clone().into_bytes()),
    };
    http_pb::HeaderMatch {
        name: m.name.clone(),
        value: Some(value),
    }
}

/// The match the API server defaults a rule to: every path.
pub(crate) fn match_everything() -> http_pb::HttpRouteMatch {
    http_pb::HttpRouteMatch {
        path: Some(http_pb::PathMatch {
            kind: Some(http_pb::path_match::Kind::Prefix("/".into())),
        }),
        ..Default::default()
    }
}

pub(crate) fn http_match(m: &HttpRouteMatch) -> http_pb::HttpRouteMatch {
    use http_pb::path_match::Kind;
    use http_pb::query_param_match::Value;
    // The API server defaults a missing path to `PathPrefix /`.
    let path = m.path.clone().unwrap_or_default();
    let value = path.match_value().to_string();
    let kind = match path.match_type() {
        "Exact" => Kind::Exact(value),
        "RegularExpression" => Kind::Regex(value),
        _ => Kind::Prefix(value),
    };
    http_pb::HttpRouteMatch {
        path: Some(http_pb::PathMatch { kind: Some(kind) }),
        headers: m.headers.iter().flatten().map(header_match).collect(),
        query_params: m
            .query_params
            .iter()
            .flatten()
            .map(|q| http_pb::QueryParamMatch {
                name: q.name.clone(),
                value: Some(match q.match_type() {
                    "RegularExpression" => Value::Regex(q.value.clone()),
                    _ => Value::Exact(q.value.clone()),
                }),
            })
            .collect(),
        method: m
            .method
            .as_deref()
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .map(http_types::HttpMethod::from),
    }
}

fn grpc_match(m: &GrpcRouteMatch) -> Result<grpc_pb::GrpcRouteMatch, String> {
    let rpc = match &m.method {
        None => None,
        Some(mm) if mm.type_.as_deref() == Some("RegularExpression") => {
            return Err("a RegularExpression method match".into());
        }
        Some(mm) => Some(grpc_pb::GrpcRpcMatch {
            service: mm.service.clone().unwrap_or_default(),
            method: mm.method.clone().unwrap_or_default(),
        }),
    };
    Ok(grpc_pb::GrpcRouteMatch {
        rpc,
        headers: m.headers.iter().flatten().map(header_match).collect(),
    })
}

fn headers(list: Option<&Vec<HttpHeader>>) -> Option<http_types::Headers> {
    Some(http_types::Headers {
        headers: list
            .into_iter()
            .flatten()
            .map(|h| http_types::headers::Header {
                name: h.name.clone(),
                value: h.value.clone().into_bytes(),
            })
            .collect(),
    })
}

pub(crate) fn request_headers(m: &HttpHeaderModifier) -> http_pb::RequestHeaderModifier {
    http_pb::RequestHeaderModifier {
        add: headers(m.add.as_ref()),
        set: headers(m.set.as_ref()),
        remove: m.remove.clone().unwrap_or_default(),
    }
}

fn response_headers(m: &HttpHeaderModifier) -> http_pb::ResponseHeaderModifier {
    http_pb::ResponseHeaderModifier {
        add: headers(m.add.as_ref()),
        set: headers(m.set.as_ref()),
        remove: m.remove.clone().unwrap_or_default(),
    }
}

pub(crate) fn redirect(r: &HttpRequestRedirectFilter) -> http_pb::RequestRedirect {
    use http_pb::path_modifier::Replace;
    http_pb::RequestRedirect {
        scheme: r.scheme.as_deref().map(http_types::Scheme::from),
        host: r.hostname.clone().unwrap_or_default(),
        path: r.path.as_ref().map(|p| http_pb::PathModifier {
            replace: Some(match p.type_.as_str() {
                "ReplacePrefixMatch" => Replace::Prefix(p.replace_prefix_match.clone().unwrap_or_default()),
                _ => Replace::Full(p.replace_full_path.clone().unwrap_or_default()),
            }),
        }),
        port: r.port.and_then(|p| u32::try_from(p).ok()).unwrap_or_default(),
        // The Gateway API defaults the status to 302.
        status: r.status_code.and_then(|s| u32::try_from(s).ok()).unwrap_or(302),
    }
}

fn http_filter(f: FilterRef<'_>) -> Result<pb::http_route::Filter, String> {
    use pb::http_route::filter::Kind;
    let kind = match f {
        FilterRef::RequestHeaders(m) => Kind::RequestHeaderModifier(request_headers(m)),
        FilterRef::ResponseHeaders(m) => Kind::ResponseHeaderModifier(response_headers(m)),
        FilterRef::Redirect(r) => Kind::Redirect(redirect(r)),
        FilterRef::Unsupported(what) => return Err(what),
    };
    Ok(pb::http_route::Filter { kind: Some(kind) })
}

fn http_failure(message: String) -> pb::http_route::Filter {
    pb::http_route::Filter {
        kind: Some(pb::http_route::filter::Kind::FailureInjector(
            http_pb::HttpFailureInjector {
                status: INVALID_BACKEND_HTTP_STATUS,
                message,
                ratio: None,
            },
        )),
    }
}

fn grpc_failure(message: String) -> pb::grpc_route::Filter {
    pb::grpc_route::Filter {
        kind: Some(pb::grpc_route::filter::Kind::FailureInjector(
            grpc_pb::GrpcFailureInjector {
                code: INVALID_BACKEND_GRPC_CODE,
                message,
                ratio: None,
            },
        )),
    }
}

fn timeouts_proto(t: &Timeouts) -> http_pb::Timeouts {
    http_pb::Timeouts {
        response: t.response.and_then(proto_duration),
        request: t.request.and_then(proto_duration),
        idle: t.idle.and_then(proto_duration),
    }
}

fn backoff(min: Duration, max: Duration, jitter: f32) -> pb::ExponentialBackoff {
    pb::ExponentialBackoff {
        min_backoff: proto_duration(min),
        max_backoff: proto_duration(max),
        jitter_ratio: jitter,
        respect_retry_after_hint: false,
    }
}

fn retry_backoff() -> pb::ExponentialBackoff {
    let (min, max, jitter) = RETRY_BACKOFF;
    backoff(min, max, jitter)
}

fn http_retry(r: &Retry<StatusRange>) -> pb::http_route::Retry {
    use pb::http_route::retry::{Conditions, conditions};
    pb::http_route::Retry {
        max_retries: r.limit,
        max_request_bytes: RETRY_MAX_REQUEST_BYTES,
        conditions: Some(Conditions {
            status_ranges: r
                .conditions
                .iter()
                .map(|c| conditions::StatusRange {
                    start: c.start,
                    end: c.end,
                })
                .collect(),
        }),
        timeout: r.timeout.and_then(proto_duration),
        backoff: Some(retry_backoff()),
    }
}

fn grpc_retry(r: &Retry<GrpcCondition>) -> pb::grpc_route::Retry {
    let mut conditions = pb::grpc_route::retry::Conditions::default();
    for c in &r.conditions {
        match c {
            GrpcCondition::Cancelled => conditions.cancelled = true,
            GrpcCondition::DeadlineExceeded => conditions.deadine_exceeded = true,
            GrpcCondition::Internal => conditions.internal = true,
            GrpcCondition::ResourceExhausted => conditions.resource_exhausted = true,
            GrpcCondition::Unavailable => conditions.unavailable = true,
        }
    }
    pb::grpc_route::Retry {
        max_retries: r.limit,
        max_request_bytes: RETRY_MAX_REQUEST_BYTES,
        conditions: Some(conditions),
        timeout: r.timeout.and_then(proto_duration),
        backoff: Some(retry_backoff()),
    }
}

fn failure_accrual(c: &ConsecutiveFailures) -> pb::FailureAccrual {
    pb::FailureAccrual {
        kind: Some(pb::failure_accrual::Kind::ConsecutiveFailures(
            pb::failure_accrual::ConsecutiveFailures {
                max_failures: c.max_failures,
                backoff: Some(backoff(c.min_penalty, c.max_penalty, c.jitter)),
            },
        )),
        ejection: None,
    }
}

/// A Gateway API deadline as written in a rule (`"10s"`); `"0s"` means none.
fn rule_deadline(v: Option<&String>) -> Option<Duration> {
    v.and_then(|v| strait_api::names::duration(v).ok())
        .filter(|d| !d.is_zero())
}

fn weight(w: i32) -> u32 {
    u32::try_from(w).unwrap_or(0)
}

/// A TrafficSplit weight as Linkerd sends it: its milli-value.
fn split_weight(w: f64) -> u32 {
    (w * SPLIT_WEIGHT_SCALE).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Reads one kind of retry policy from annotations.
type RetryReader<C> = fn(&BTreeMap<String, String>) -> Result<Option<Retry<C>>, AnnotationError>;

/// The parent Service port being translated, with what its annotations say.
struct Parent<'a> {
    id: &'a NsName,
    port: u16,
    backend: pb::Backend,
    defaults: ServiceDefaults,
}

struct Cx<'a> {
    snap: &'a Snapshot,
    settings: &'a Settings,
    warnings: Vec<Warning>,
    namespaces: BTreeSet<String>,
}

impl Cx<'_> {
    fn annotation<T: Default>(&mut self, object: &str, r: Result<T, AnnotationError>) -> T {
        r.unwrap_or_else(|source| {
            self.warnings.push(Warning::Annotation {
                object: object.to_string(),
                source,
            });
            T::default()
        })
    }

    fn policy(&mut self, svc: &Service, id: &NsName, port: u16) -> pb::OutboundPolicy {
        use pb::proxy_protocol::Kind;
        let object = object_name("service", &svc.metadata);
        let empty = BTreeMap::new();
        let a = svc.metadata.annotations.as_ref().unwrap_or(&empty);
        let opaque_ports = match a.get(strait_api::labels::config::OPAQUE_PORTS) {
            None => self.settings.default_opaque_ports.clone(),
            Some(v) => {
                let parsed = strait_api::names::port_ranges(v).map_err(|expected| AnnotationError::Invalid {
                    annotation: strait_api::labels::config::OPAQUE_PORTS,
                    value: v.clone(),
                    expected,
                });
                self.annotation(&object, parsed)
            }
        };
        let opaque = opaque_ports.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port));
        let accrual = self
            .annotation(&object, annotations::failure_accrual(a))
            .as_ref()
            .map(failure_accrual);
        let defaults = ServiceDefaults {
            http_retry: self.annotation(&object, annotations::http_retry(a)),
            grpc_retry: self.annotation(&object, annotations::grpc_retry(a)),
            timeouts: self.annotation(&object, annotations::timeouts(a)),
        };
        let parent = Parent {
            id,
            port,
            backend: self.balancer(&id.0, &id.1, port),
            defaults,
        };
        let split = self.split(&parent);

        let kind = if opaque {
            Kind::Opaque(pb::proxy_protocol::Opaque {
                routes: vec![opaque_route(&parent, split.as_deref())],
            })
        } else {
            let grpc = self.grpc_routes(&parent);
            if grpc.is_empty() {
                let mut routes = self.http_routes(&parent);
                if routes.is_empty() {
                    routes.push(self.default_http_route(&parent, split.as_deref()));
                }
                Kind::Detect(pb::proxy_protocol::Detect {
                    timeout: proto_duration(DETECT_TIMEOUT),
                    opaque: Some(pb::proxy_protocol::Opaque {
                        routes: vec![opaque_route(&parent, split.as_deref())],
                    }),
                    http1: Some(pb::proxy_protocol::Http1 {
                        routes: routes.clone(),
                        failure_accrual: accrual,
                    }),
                    http2: Some(pb::proxy_protocol::Http2 {
                        routes,
                        failure_accrual: accrual,
                    }),
                })
            } else {
                Kind::Grpc(pb::proxy_protocol::Grpc {
                    routes: grpc,
                    failure_accrual: accrual,
                })
            }
        };
        pb::OutboundPolicy {
            protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
            metadata: Some(service_metadata(&id.0, &id.1, port)),
        }
    }

    /// A load balancer over a Service port's endpoints, discovered by `name:port` through
    /// the destination API.
    fn balancer(&self, namespace: &str, name: &str, port: u16) -> pb::Backend {
        use pb::backend::{BalanceP2c, EndpointDiscovery, Kind, balance_p2c, endpoint_discovery};
        let path = format!("{name}.{namespace}.svc.{}:{port}", self.settings.cluster_domain);
        pb::Backend {
            metadata: Some(service_metadata(namespace, name, port)),
            queue: Some(queue()),
            kind: Some(Kind::Balancer(BalanceP2c {
                discovery: Some(EndpointDiscovery {
                    kind: Some(endpoint_discovery::Kind::Dst(
                        endpoint_discovery::DestinationGet { path },
                    )),
                }),
                load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                    default_rtt: proto_duration(EWMA_DEFAULT_RTT),
                    decay: proto_duration(EWMA_DECAY),
                })),
            })),
        }
    }

    /// A Service backend by name, if that Service exists.
    fn service_backend(&mut self, namespace: &str, name: &str, port: u16) -> Resolved {
        self.namespaces.insert(namespace.to_string());
        if self
            .snap
            .services
            .contains_key(&(namespace.to_string(), name.to_string()))
        {
            Resolved::Usable(self.balancer(namespace, name, port))
        } else {
            Resolved::Failed {
                backend: failing_backend(service_metadata(namespace, name, port)),
                message: format!("Service not found {name}"),
            }
        }
    }

    fn backend_ref<F>(&mut self, route_ns: &str, b: &BackendRef<F>) -> Resolved {
        if !b.is_service() {
            return Resolved::Failed {
                backend: failing_backend(metadata_default("invalid")),
                message: format!(
                    "unsupported backend type {} {}",
                    b.group.as_deref().filter(|g| !g.is_empty()).unwrap_or("core"),
                    b.kind.as_deref().unwrap_or("<empty>")
                ),
            };
        }
        let Some(port) = b.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) else {
            return Resolved::Failed {
                backend: failing_backend(metadata_default("invalid")),
                message: format!("missing port for backend Service {}", b.name),
            };
        };
        let ns = b.namespace.as_deref().unwrap_or(route_ns);
        self.service_backend(ns, &b.name, port)
    }

    /// The backends of the Service's TrafficSplit (the first by name whose apex is the
    /// Service), each with its milli-weight.
    fn split(&mut self, parent: &Parent<'_>) -> Option<Vec<(u32, Resolved)>> {
        let (ns, name) = parent.id;
        let split = self
            .snap
            .splits
            .iter()
            .find(|((split_ns, _), ts)| split_ns == ns && ts.spec.service == *name)
            .map(|(_, ts)| ts)?;
        Some(
            split
                .spec
                .backends
                .iter()
                .map(|b| {
                    let weight = split_weight(b.weight_value());
                    (weight, self.service_backend(ns, &b.service, parent.port))
                })
                .collect(),
        )
    }

    #[allow(deprecated)] // `request_timeout` is deprecated; Linkerd still sets it for older proxies.
    fn default_http_route(&self, parent: &Parent<'_>, split: Option<&[(u32, Resolved)]>) -> pb::HttpRoute {
        use pb::http_route::{
            Distribution, WeightedRouteBackend,
            distribution::{Kind, RandomAvailable},
        };
        let backends = match split {
            None => first_available_http(parent.backend.clone(), None),
            Some(split) => Distribution {
                kind: Some(Kind::RandomAvailable(RandomAvailable {
                    backends: split
                        .iter()
                        .map(|(weight, r)| WeightedRouteBackend {
                            weight: *weight,
                            backend: Some(http_route_backend(r, Vec::new(), None)),
                        })
                        .collect(),
                })),
            },
        };
        let timeouts = &parent.defaults.timeouts;
        pb::HttpRoute {
            metadata: Some(metadata_default("http")),
            hosts: Vec::new(),
            rules: vec![pb::http_route::Rule {
                matches: vec![match_everything()],
                filters: Vec::new(),
                backends: Some(backends),
                request_timeout: timeouts.request.and_then(proto_duration),
                timeouts: Some(timeouts_proto(timeouts)),
                retry: parent.defaults.http_retry.as_ref().map(http_retry),
                allow_l5d_request_headers: self.settings.allow_l5d_request_headers,
            }],
        }
    }

    /// The HTTPRoutes of both groups attached to the parent, in precedence order.
    fn http_routes(&mut self, parent: &Parent<'_>) -> Vec<pb::HttpRoute> {
        let snap = self.snap;
        let mut attached: Vec<AnyHttpRoute<'_>> = snap
            .policy_http_routes
            .values()
            .filter(|r| {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                attaches(r.spec.parent_refs.as_deref(), ns, parent.id, parent.port)
            })
            .map(AnyHttpRoute::Policy)
            .chain(
                snap.gateway_http_routes
                    .values()
                    .filter(|r| {
                        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                        attaches(r.spec.parent_refs.as_deref(), ns, parent.id, parent.port)
                    })
                    .map(AnyHttpRoute::Gateway),
            )
            .collect();
        attached.sort_by(|a, b| precedence(a.meta(), a.group()).cmp(&precedence(b.meta(), b.group())));
        attached
            .into_iter()
            .filter_map(|r| match r {
                AnyHttpRoute::Policy(r) => self.http_route(
                    parent,
                    &r.metadata,
                    POLICY_GROUP,
                    r.spec.hostnames.as_deref(),
                    r.spec.rules.as_deref(),
                ),
                AnyHttpRoute::Gateway(r) => self.http_route(
                    parent,
                    &r.metadata,
                    GATEWAY_GROUP,
                    r.spec.hostnames.as_deref(),
                    r.spec.rules.as_deref(),
                ),
            })
            .collect()
    }

    /// The retry and timeouts a route's annotations set for all its rules.
    fn route_annotations<C>(
        &mut self,
        object: &str,
        meta: &ObjectMeta,
        read_retry: RetryReader<C>,
    ) -> (Option<Retry<C>>, Timeouts) {
        let empty = BTreeMap::new();
        let a = meta.annotations.as_ref().unwrap_or(&empty);
        (
            self.annotation(object, read_retry(a)),
            self.annotation(object, annotations::timeouts(a)),
        )
    }

    #[allow(deprecated)] // `request_timeout` is deprecated; Linkerd still sets it for older proxies.
    fn http_route<F: AsFilter>(
        &mut self,
        parent: &Parent<'_>,
        meta: &ObjectMeta,
        group: &str,
        hostnames: Option<&[String]>,
        rules: Option<&[HttpRouteRule<F>]>,
    ) -> Option<pb::HttpRoute> {
        use pb::http_route::{
            Distribution, WeightedRouteBackend,
            distribution::{Kind, RandomAvailable},
        };
        let object = object_name(&format!("httproute.{group}"), meta);
        let route_ns = meta.namespace.clone().unwrap_or_default();
        let (route_retry, route_timeouts) = self.route_annotations(&object, meta, annotations::http_retry);
        let mut out = Vec::new();
        for rule in rules.unwrap_or_default() {
            let filters = match rule
                .filters
                .iter()
                .flatten()
                .map(|f| http_filter(f.as_filter()))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(filters) => filters,
                Err(what) => {
                    self.warnings.push(Warning::RouteIgnored { route: object, what });
                    return None;
                }
            };
            let rule_timeouts = rule.timeouts.clone().unwrap_or_default();
            let backend_timeout = rule_deadline(rule_timeouts.backend_request.as_ref());
            let refs = rule.backend_refs.as_deref().unwrap_or_default();
            let backends = if refs.is_empty() {
                first_available_http(parent.backend.clone(), None)
            } else {
                let backends = refs
                    .iter()
                    .map(|b| WeightedRouteBackend {
                        weight: weight(b.weight_or_default()),
                        backend: Some(self.http_backend(&route_ns, b, None)),
                    })
                    .collect();
                Distribution {
                    kind: Some(Kind::RandomAvailable(RandomAvailable { backends })),
                }
            };
            let mut timeouts =
                rule_timeouts_or_defaults(&route_timeouts, &rule_timeouts, &parent.defaults.timeouts);
            let mut retry = route_retry
                .as_ref()
                .or(parent.defaults.http_retry.as_ref())
                .cloned();
            // `l5d-retry-*` / `l5d-timeout` headers that the rule's own RequestHeaderModifier
            // sets are the route owner's configuration, not a client's: they become the
            // rule's policy, so they apply without `allow_l5d_request_headers` (which
            // would also let clients choose).
            let (header_retry, header_timeouts) =
                self.header_policy(&object, rule.filters.iter().flatten().map(|f| f.as_filter()));
            if let Some(h) = header_retry {
                retry = Some(match retry {
                    Some(base) => merge_retry(base, h),
                    None => h.retry,
                });
            }
            timeouts.request = header_timeouts.request.or(timeouts.request);
            timeouts.response = header_timeouts.response.or(timeouts.response);
            // `timeouts.backendRequest` bounds each request to a backend and restarts
            // with every retry (GEP-1742; Linkerd's HTTPRoute timeout docs): the response
            // timeout, and each retry's own timeout when the retry sets none. (The
            // backend's `request_timeout` it used to fill is ignored by proxies.)
            if let Some(t) = backend_timeout {
                timeouts.response = timeouts.response.or(Some(t));
                if let Some(r) = retry.as_mut() {
                    r.timeout = r.timeout.or(Some(t));
                }
            }
            let retry = retry.as_ref();
            let matches = match rule.matches.as_deref() {
                Some(ms) if !ms.is_empty() => ms.iter().map(http_match).collect(),
                // The API server defaults a rule without matches to one matching every path.
                _ => vec![match_everything()],
            };
            out.push(pb::http_route::Rule {
                matches,
                filters,
                backends: Some(backends),
                request_timeout: timeouts.request.and_then(proto_duration),
                timeouts: Some(timeouts_proto(&timeouts)),
                retry: retry.map(http_retry),
                allow_l5d_request_headers: self.settings.allow_l5d_request_headers,
            });
        }
        Some(pb::HttpRoute {
            metadata: Some(route_metadata(group, "HTTPRoute", meta)),
            hosts: hostnames
                .unwrap_or_default()
                .iter()
                .map(|h| host_match(h))
                .collect(),
            rules: out,
        })
    }

    fn http_backend<F: AsFilter>(
        &mut self,
        route_ns: &str,
        b: &BackendRef<F>,
        timeout: Option<Duration>,
    ) -> pb::http_route::RouteBackend {
        let filters = b
            .filters
            .iter()
            .flatten()
            .map(|f| http_filter(f.as_filter()))
            .collect::<Result<Vec<_>, _>>();
        let resolved = match (self.backend_ref(route_ns, b), filters) {
            (Resolved::Usable(backend), Ok(filters)) => {
                return http_route_backend(&Resolved::Usable(backend), filters, timeout);
            }
            (Resolved::Usable(_), Err(what)) => Resolved::Failed {
                backend: failing_backend(metadata_default("invalid")),
                message: format!("unsupported backend filter: {what}"),
            },
            (failed, _) => failed,
        };
        http_route_backend(&resolved, Vec::new(), timeout)
    }

    /// The GRPCRoutes attached to the parent, in precedence order.
    fn grpc_routes(&mut self, parent: &Parent<'_>) -> Vec<pb::GrpcRoute> {
        let snap = self.snap;
        let mut attached: Vec<&GrpcRoute> = snap
            .grpc_routes
            .values()
            .filter(|r| {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                attaches(r.spec.parent_refs.as_deref(), ns, parent.id, parent.port)
            })
            .collect();
        attached.sort_by(|a, b| {
            precedence(&a.metadata, GATEWAY_GROUP).cmp(&precedence(&b.metadata, GATEWAY_GROUP))
        });
        attached
            .into_iter()
            .filter_map(|r| self.grpc_route(parent, r))
            .collect()
    }

    #[allow(deprecated)] // `request_timeout` is deprecated; Linkerd still sets it for older proxies.
    fn grpc_route(&mut self, parent: &Parent<'_>, route: &GrpcRoute) -> Option<pb::GrpcRoute> {
        use pb::grpc_route::{
            Distribution, RouteBackend, WeightedRouteBackend,
            distribution::{FirstAvailable, Kind, RandomAvailable},
        };
        let meta = &route.metadata;
        let object = object_name("grpcroute.gateway.networking.k8s.io", meta);
        let route_ns = meta.namespace.clone().unwrap_or_default();
        let (route_retry, route_timeouts) = self.route_annotations(&object, meta, annotations::grpc_retry);
        let mut out = Vec::new();
        for rule in route.spec.rules.iter().flatten() {
            let GrpcRouteRule {
                matches,
                filters,
                backend_refs,
            } = rule;
            let matches = match matches
                .iter()
                .flatten()
                .map(grpc_match)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(m) => m,
                Err(what) => {
                    self.warnings.push(Warning::RouteIgnored { route: object, what });
                    return None;
                }
            };
            let mut rule_filters = Vec::new();
            for f in filters.iter().flatten() {
                match self.grpc_filter(&object, f.as_filter()) {
                    Ok(Some(f)) => rule_filters.push(f),
                    Ok(None) => {}
                    Err(what) => {
                        self.warnings.push(Warning::RouteIgnored { route: object, what });
                        return None;
                    }
                }
            }
            let refs = backend_refs.as_deref().unwrap_or_default();
            let backends = if refs.is_empty() {
                Kind::FirstAvailable(FirstAvailable {
                    backends: vec![RouteBackend {
                        backend: Some(parent.backend.clone()),
                        filters: Vec::new(),
                        request_timeout: None,
                    }],
                })
            } else {
                let mut backends = Vec::new();
                for b in refs {
                    let mut filters = Vec::new();
                    let mut unsupported = None;
                    for f in b.filters.iter().flatten() {
                        match self.grpc_filter(&object, f.as_filter()) {
                            Ok(f) => filters.extend(f),
                            Err(what) => unsupported = Some(what),
                        }
                    }
                    let resolved = match (self.backend_ref(&route_ns, b), unsupported) {
                        (Resolved::Usable(_), Some(what)) => Resolved::Failed {
                            backend: failing_backend(metadata_default("invalid")),
                            message: format!("unsupported backend filter: {what}"),
                        },
                        (r, _) => r,
                    };
                    let backend = match resolved {
                        Resolved::Usable(backend) => RouteBackend {
                            backend: Some(backend),
                            filters,
                            request_timeout: None,
                        },
                        Resolved::Failed { backend, message } => RouteBackend {
                            backend: Some(backend),
                            filters: vec![grpc_failure(message)],
                            request_timeout: None,
                        },
                    };
                    backends.push(WeightedRouteBackend {
                        weight: weight(b.weight_or_default()),
                        backend: Some(backend),
                    });
                }
                Kind::RandomAvailable(RandomAvailable { backends })
            };
            let timeouts = rule_timeouts_or_defaults(
                &route_timeouts,
                &HttpRouteTimeouts::default(),
                &parent.defaults.timeouts,
            );
            let retry = route_retry.as_ref().or(parent.defaults.grpc_retry.as_ref());
            out.push(pb::grpc_route::Rule {
                matches,
                filters: rule_filters,
                backends: Some(Distribution { kind: Some(backends) }),
                request_timeout: timeouts.request.and_then(proto_duration),
                timeouts: Some(timeouts_proto(&timeouts)),
                retry: retry.map(grpc_retry),
                allow_l5d_request_headers: self.settings.allow_l5d_request_headers,
            });
        }
        Some(pb::GrpcRoute {
            metadata: Some(route_metadata(GATEWAY_GROUP, "GRPCRoute", meta)),
            hosts: route
                .spec
                .hostnames
                .iter()
                .flatten()
                .map(|h| host_match(h))
                .collect(),
            rules: out,
        })
    }

    /// A gRPC route filter: `Ok(None)` for a filter the proxy's gRPC routes cannot express
    /// but that can be left out (a response header edit), `Err` for one that changes where
    /// requests go.
    fn grpc_filter(
        &mut self,
        route: &str,
        f: FilterRef<'_>,
    ) -> Result<Option<pb::grpc_route::Filter>, String> {
        use pb::grpc_route::filter::Kind;
        match f {
            FilterRef::RequestHeaders(m) => Ok(Some(pb::grpc_route::Filter {
                kind: Some(Kind::RequestHeaderModifier(request_headers(m))),
            })),
            FilterRef::ResponseHeaders(_) => {
                self.warnings.push(Warning::FilterIgnored {
                    route: route.to_string(),
                    what: "a ResponseHeaderModifier filter on a gRPC route".into(),
                });
                Ok(None)
            }
            FilterRef::Redirect(_) => Err("a RequestRedirect filter".into()),
            FilterRef::Unsupported(what) => Err(what),
        }
    }
}

/// Retry settings read from `l5d-retry-*` headers a filter sets, and which of them were set.
struct HeaderRetry {
    retry: Retry<StatusRange>,
    conditions: bool,
    limit: bool,
    timeout: bool,
}

/// `base` with what the headers set replacing its fields.
fn merge_retry(mut base: Retry<StatusRange>, h: HeaderRetry) -> Retry<StatusRange> {
    if h.conditions {
        base.conditions = h.retry.conditions;
    }
    if h.limit {
        base.limit = h.retry.limit;
    }
    if h.timeout {
        base.timeout = h.retry.timeout;
    }
    base
}

impl Cx<'_> {
    /// The retry and timeouts that `l5d-*` policy headers set by a rule's
    /// RequestHeaderModifier filters ask for (`set` and `add`; the last one wins).
    fn header_policy<'f>(
        &mut self,
        object: &str,
        filters: impl Iterator<Item = FilterRef<'f>>,
    ) -> (Option<HeaderRetry>, Timeouts) {
        use strait_api::labels::route as ann;
        let mut a: BTreeMap<String, String> = BTreeMap::new();
        for f in filters {
            let FilterRef::RequestHeaders(m) = f else { continue };
            for h in m.set.iter().flatten().chain(m.add.iter().flatten()) {
                let key = match h.name.to_ascii_lowercase().as_str() {
                    "l5d-retry-http" => ann::RETRY_HTTP,
                    "l5d-retry-limit" => ann::RETRY_LIMIT,
                    "l5d-retry-timeout" => ann::RETRY_TIMEOUT,
                    "l5d-timeout" => ann::TIMEOUT_REQUEST,
                    "l5d-response-timeout" => ann::TIMEOUT_RESPONSE,
                    _ => continue,
                };
                a.insert(key.to_string(), h.value.clone());
            }
        }
        if a.is_empty() {
            return (None, Timeouts::default());
        }
        let object = format!("{object} (l5d-* headers set by a RequestHeaderModifier)");
        let retry = self
            .annotation(&object, annotations::http_retry(&a))
            .map(|retry| HeaderRetry {
                retry,
                conditions: a.contains_key(ann::RETRY_HTTP),
                limit: a.contains_key(ann::RETRY_LIMIT),
                timeout: a.contains_key(ann::RETRY_TIMEOUT),
            });
        let timeouts = self.annotation(&object, annotations::timeouts(&a));
        (retry, timeouts)
    }
}

/// A rule's timeouts: the route's annotations, the rule's `timeouts.request` where the
/// annotations set no request timeout, and the Service's annotations when neither sets any.
fn rule_timeouts_or_defaults(route: &Timeouts, rule: &HttpRouteTimeouts, service: &Timeouts) -> Timeouts {
    let mut t = route.clone();
    if t.request.is_none() {
        t.request = rule_deadline(rule.request.as_ref());
    }
    if t.is_empty() { service.clone() } else { t }
}

#[allow(deprecated)] // `request_timeout` is deprecated; Linkerd still sets it for older proxies.
fn http_route_backend(
    r: &Resolved,
    filters: Vec<pb::http_route::Filter>,
    timeout: Option<Duration>,
) -> pb::http_route::RouteBackend {
    match r {
        Resolved::Usable(backend) => pb::http_route::RouteBackend {
            backend: Some(backend.clone()),
            filters,
            request_timeout: timeout.and_then(proto_duration),
        },
        Resolved::Failed { backend, message } => pb::http_route::RouteBackend {
            backend: Some(backend.clone()),
            filters: vec![http_failure(message.clone())],
            request_timeout: None,
        },
    }
}

fn first_available_http(backend: pb::Backend, timeout: Option<Duration>) -> pb::http_route::Distribution {
    use pb::http_route::{
        Distribution,
        distribution::{FirstAvailable, Kind},
    };
    Distribution {
        kind: Some(Kind::FirstAvailable(FirstAvailable {
            backends: vec![http_route_backend(
                &Resolved::Usable(backend),
                Vec::new(),
                timeout,
            )],
        })),
    }
}

/// The route for traffic that is not HTTP: to the Service, or split like its TrafficSplit.
fn opaque_route(parent: &Parent<'_>, split: Option<&[(u32, Resolved)]>) -> pb::OpaqueRoute {
    use pb::opaque_route::{
        Distribution, Filter, RouteBackend, Rule, WeightedRouteBackend,
        distribution::{FirstAvailable, Kind, RandomAvailable},
        filter,
    };
    let route_backend = |r: &Resolved| match r {
        Resolved::Usable(backend) => RouteBackend {
            backend: Some(backend.clone()),
            filters: Vec::new(),
        },
        Resolved::Failed { backend, message } => RouteBackend {
            backend: Some(backend.clone()),
            filters: vec![Filter {
                kind: Some(filter::Kind::Invalid(opaque_pb::Invalid {
                    message: message.clone(),
                })),
            }],
        },
    };
    let kind = match split {
        None => Kind::FirstAvailable(FirstAvailable {
            backends: vec![route_backend(&Resolved::Usable(parent.backend.clone()))],
        }),
        Some(split) => Kind::RandomAvailable(RandomAvailable {
            backends: split
                .iter()
                .map(|(weight, r)| WeightedRouteBackend {
                    weight: *weight,
                    backend: Some(route_backend(r)),
                })
                .collect(),
        }),
    };
    pb::OpaqueRoute {
        metadata: Some(metadata_default("opaq")),
        rules: vec![Rule {
            backends: Some(Distribution { kind: Some(kind) }),
            filters: Vec::new(),
        }],
    }
}

#[cfg(test)]
mod tests;
