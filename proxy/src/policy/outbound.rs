//! The outbound policy of one target, typed: routes with their rules (matches, filters,
//! weighted backends, timeouts, retry), and failure accrual. Converted from
//! `OutboundPolicies` answers once per change; a message that does not read is refused
//! with the object and field named.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use linkerd2_proxy_api::{http_route as hpb, meta, outbound as pb};

use super::matching::{HostMatch, RequestMatch};
use super::{PolicyError, duration};

/// Which protocol a target speaks, as policy says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Detect HTTP, else opaque.
    Detect,
    /// Opaque TCP only.
    Opaque,
    /// gRPC routes.
    Grpc,
    /// HTTP/1 or HTTP/2 only.
    Http,
}

/// A header edit (`RequestHeaderModifier` / `ResponseHeaderModifier`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdit {
    /// Appended values.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Replaced values.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Removed headers.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdit {
    /// Applies the edit to `h`.
    pub fn apply(&self, h: &mut http::HeaderMap) {
        for (k, v) in &self.set {
            h.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            h.append(k.clone(), v.clone());
        }
        for k in &self.remove {
            h.remove(k);
        }
    }
}

/// A redirect answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// New scheme, if any.
    pub scheme: Option<String>,
    /// New host, if any.
    pub host: Option<String>,
    /// New full path, or a replacement for the matched prefix.
    pub path: Option<PathRewrite>,
    /// New port.
    pub port: Option<u16>,
    /// 301 or 302 (…).
    pub status: StatusCode,
}

/// How a redirect rewrites the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched prefix.
    Prefix(String),
}

/// A route or backend filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Answer with this status (HTTP) or gRPC code instead of forwarding.
    Fail {
        /// The HTTP status.
        status: StatusCode,
        /// The gRPC code, for gRPC routes.
        grpc_code: Option<u32>,
        /// Why.
        message: String,
    },
    /// Edit the request headers.
    RequestHeaders(HeaderEdit),
    /// Edit the response headers.
    ResponseHeaders(HeaderEdit),
    /// Redirect.
    Redirect(Redirect),
}

/// One backend of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The `name:port` discovery path of its balancer; `None` for a backend that only fails.
    pub authority: Option<String>,
    /// Relative weight.
    pub weight: u32,
    /// Its filters.
    pub filters: Vec<Filter>,
}

/// What a retry retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryOn {
    /// HTTP statuses in these inclusive ranges.
    Statuses(Vec<(u16, u16)>),
    /// These gRPC codes.
    GrpcCodes(Vec<u32>),
}

/// A rule's retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Largest request body that is buffered for replay.
    pub max_request_bytes: u32,
    /// Which responses are retried (errors always are).
    pub on: RetryOn,
    /// Per-attempt deadline; its expiry is retryable.
    pub timeout: Option<Duration>,
    /// Backoff between attempts.
    pub backoff: (Duration, Duration),
}

/// A rule's deadlines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request, retries included (504 after).
    pub request: Option<Duration>,
    /// Each attempt's response (504 after; not retried).
    pub response: Option<Duration>,
}

/// A rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Matches (empty: everything).
    pub matches: Vec<RequestMatch>,
    /// Filters, in order.
    pub filters: Vec<Filter>,
    /// Weighted backends (empty: requests fail with 500).
    pub backends: Vec<Backend>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Retry policy.
    pub retry: Option<Retry>,
    /// Whether `l5d-retry-*` / `l5d-timeout` request headers may override.
    pub allow_l5d_request_headers: bool,
}

/// A route.
#[derive(Clone, Debug)]
pub struct Route {
    /// `kind namespace/name` or `default <name>` (logs).
    pub name: Arc<str>,
    /// Hosts (empty: any).
    pub hosts: Vec<HostMatch>,
    /// Rules.
    pub rules: Vec<Rule>,
}

/// Consecutive-failure accrual.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accrual {
    /// Failures in a row that eject an endpoint.
    pub max_failures: u32,
    /// First penalty.
    pub min_penalty: Duration,
    /// Largest penalty.
    pub max_penalty: Duration,
    /// Jitter ratio.
    pub jitter: f32,
}

/// A target's outbound policy.
#[derive(Clone, Debug)]
pub struct OutboundPolicy {
    /// Protocol.
    pub protocol: Protocol,
    /// HTTP (or gRPC) routes in precedence order.
    pub routes: Vec<Route>,
    /// Opaque traffic's weighted backends.
    pub opaque: Vec<Backend>,
    /// Failure accrual, if any.
    pub accrual: Option<Accrual>,
}

fn metadata_name(m: Option<&meta::Metadata>) -> String {
    match m.and_then(|m| m.kind.as_ref()) {
        Some(meta::metadata::Kind::Default(d)) => format!("default {d}"),
        Some(meta::metadata::Kind::Resource(r)) => {
            format!(
                "{}.{} {}/{}",
                r.kind.to_ascii_lowercase(),
                r.group,
                r.namespace,
                r.name
            )
        }
        None => "unnamed".into(),
    }
}

fn headers(
    object: &str,
    field: &str,
    h: Option<&linkerd2_proxy_api::http_types::Headers>,
) -> Result<Vec<(HeaderName, HeaderValue)>, PolicyError> {
    let mut out = Vec::new();
    for (i, x) in h
        .map(|h| h.headers.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let name = HeaderName::from_bytes(x.name.to_ascii_lowercase().as_bytes()).map_err(|_| {
            PolicyError::new(
                object,
                format!("{field}[{i}].name"),
                format!("{:?} is not a header name", x.name),
            )
        })?;
        let value = HeaderValue::from_bytes(&x.value).map_err(|_| {
            PolicyError::new(
                object,
                format!("{field}[{i}].value"),
                "not a valid header value; expected visible ASCII",
            )
        })?;
        out.push((name, value));
    }
    Ok(out)
}

fn edit(
    object: &str,
    field: &str,
    add: Option<&linkerd2_proxy_api::http_types::Headers>,
    set: Option<&linkerd2_proxy_api::http_types::Headers>,
    remove: &[String],
) -> Result<HeaderEdit, PolicyError> {
    Ok(HeaderEdit {
        add: headers(object, &format!("{field}.add"), add)?,
        set: headers(object, &format!("{field}.set"), set)?,
        remove: remove
            .iter()
            .enumerate()
            .map(|(i, r)| {
                HeaderName::from_bytes(r.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    PolicyError::new(
                        object,
                        format!("{field}.remove[{i}]"),
                        format!("{r:?} is not a header name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    })
}

fn status(object: &str, field: &str, s: u32) -> Result<StatusCode, PolicyError> {
    u16::try_from(s)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            PolicyError::new(
                object,
                field,
                format!("{s} is not an HTTP status; expected 100-999"),
            )
        })
}

fn redirect(object: &str, field: &str, r: &hpb::RequestRedirect) -> Result<Filter, PolicyError> {
    let scheme = r
        .scheme
        .clone()
        .and_then(|s| http::uri::Scheme::try_from(s).ok())
        .map(|s| s.to_string());
    let path = match r.path.as_ref().and_then(|p| p.replace.as_ref()) {
        None => None,
        Some(hpb::path_modifier::Replace::Full(p)) => Some(PathRewrite::Full(p.clone())),
        Some(hpb::path_modifier::Replace::Prefix(p)) => Some(PathRewrite::Prefix(p.clone())),
    };
    let port = match r.port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| {
            PolicyError::new(
                object,
                format!("{field}.port"),
                format!("{p} is not a port; expected 1-65535"),
            )
        })?),
    };
    let st = status(
        object,
        &format!("{field}.status"),
        if r.status == 0 { 302 } else { r.status },
    )?;
    if !st.is_redirection() {
        return Err(PolicyError::new(
            object,
            format!("{field}.status"),
            format!("{st} is not a redirect; expected 3xx"),
        ));
    }
    Ok(Filter::Redirect(Redirect {
        scheme,
        host: Some(r.host.clone()).filter(|h| !h.is_empty()),
        path,
        port,
        status: st,
    }))
}

fn http_filter(object: &str, field: &str, f: &pb::http_route::Filter) -> Result<Filter, PolicyError> {
    use pb::http_route::filter::Kind;
    match &f.kind {
        Some(Kind::FailureInjector(x)) => Ok(Filter::Fail {
            status: status(object, &format!("{field}.failure_injector.status"), x.status)?,
            grpc_code: None,
            message: x.message.clone(),
        }),
        Some(Kind::RequestHeaderModifier(m)) => Ok(Filter::RequestHeaders(edit(
            object,
            &format!("{field}.request_header_modifier"),
            m.add.as_ref(),
            m.set.as_ref(),
            &m.remove,
        )?)),
        Some(Kind::ResponseHeaderModifier(m)) => Ok(Filter::ResponseHeaders(edit(
            object,
            &format!("{field}.response_header_modifier"),
            m.add.as_ref(),
            m.set.as_ref(),
            &m.remove,
        )?)),
        Some(Kind::Redirect(r)) => redirect(object, &format!("{field}.redirect"), r),
        None => Err(PolicyError::new(
            object,
            field,
            "empty filter; expected a filter kind",
        )),
    }
}

fn grpc_filter(object: &str, field: &str, f: &pb::grpc_route::Filter) -> Result<Filter, PolicyError> {
    use pb::grpc_route::filter::Kind;
    match &f.kind {
        Some(Kind::FailureInjector(x)) => Ok(Filter::Fail {
            status: StatusCode::OK,
            grpc_code: Some(x.code),
            message: x.message.clone(),
        }),
        Some(Kind::RequestHeaderModifier(m)) => Ok(Filter::RequestHeaders(edit(
            object,
            &format!("{field}.request_header_modifier"),
            m.add.as_ref(),
            m.set.as_ref(),
            &m.remove,
        )?)),
        None => Err(PolicyError::new(
            object,
            field,
            "empty filter; expected a filter kind",
        )),
    }
}

/// The discovery path of a backend, or `None` for one without a balancer.
fn backend_authority(
    object: &str,
    field: &str,
    b: Option<&pb::Backend>,
) -> Result<Option<String>, PolicyError> {
    use pb::backend::{Kind, endpoint_discovery};
    let Some(b) = b else {
        return Err(PolicyError::new(object, field, "no backend; expected one"));
    };
    match &b.kind {
        None => Ok(None),
        Some(Kind::Balancer(p)) => match p.discovery.as_ref().and_then(|d| d.kind.as_ref()) {
            Some(endpoint_discovery::Kind::Dst(d)) if !d.path.is_empty() => Ok(Some(d.path.clone())),
            _ => Err(PolicyError::new(
                object,
                format!("{field}.balancer.discovery"),
                "no destination path; expected name:port",
            )),
        },
        Some(Kind::Forward(a)) => {
            let addr = a.addr.as_ref().and_then(|t| {
                let ip = std::net::IpAddr::try_from(t.ip?).ok()?;
                Some(std::net::SocketAddr::new(ip, u16::try_from(t.port).ok()?))
            });
            addr.map(|a| Some(a.to_string())).ok_or_else(|| {
                PolicyError::new(
                    object,
                    format!("{field}.forward.addr"),
                    "no usable address; expected IP:port",
                )
            })
        }
    }
}

fn durations(
    object: &str,
    field: &str,
    b: Option<&pb::ExponentialBackoff>,
) -> Result<(Duration, Duration), PolicyError> {
    let min = duration(
        object,
        &format!("{field}.min_backoff"),
        b.and_then(|b| b.min_backoff.as_ref()),
    )?
    .unwrap_or(Duration::from_millis(25));
    let max = duration(
        object,
        &format!("{field}.max_backoff"),
        b.and_then(|b| b.max_backoff.as_ref()),
    )?
    .unwrap_or(Duration::from_millis(250));
    if max < min {
        return Err(PolicyError::new(
            object,
            field,
            format!("max_backoff {max:?} is below min_backoff {min:?}"),
        ));
    }
    Ok((min, max))
}

fn http_retry(object: &str, field: &str, r: &pb::http_route::Retry) -> Result<Retry, PolicyError> {
    let mut ranges = Vec::new();
    for (i, s) in r
        .conditions
        .iter()
        .flat_map(|c| c.status_ranges.iter())
        .enumerate()
    {
        let f = format!("{field}.conditions.status_ranges[{i}]");
        let (lo, hi) = (
            u16::try_from(s.start).unwrap_or(0),
            u16::try_from(s.end).unwrap_or(0),
        );
        if !(100..=999).contains(&lo) || !(100..=999).contains(&hi) || lo > hi {
            return Err(PolicyError::new(
                object,
                f,
                format!(
                    "{}-{} is not a status range; expected 100 <= start <= end <= 999",
                    s.start, s.end
                ),
            ));
        }
        ranges.push((lo, hi));
    }
    Ok(Retry {
        max_retries: r.max_retries,
        max_request_bytes: r.max_request_bytes,
        on: RetryOn::Statuses(ranges),
        timeout: duration(object, &format!("{field}.timeout"), r.timeout.as_ref())?.filter(|d| !d.is_zero()),
        backoff: durations(object, &format!("{field}.backoff"), r.backoff.as_ref())?,
    })
}

fn grpc_retry(object: &str, field: &str, r: &pb::grpc_route::Retry) -> Result<Retry, PolicyError> {
    let mut codes = Vec::new();
    if let Some(c) = &r.conditions {
        for (on, code) in [
            (c.cancelled, 1),
            (c.deadine_exceeded, 4),
            (c.resource_exhausted, 8),
            (c.internal, 13),
            (c.unavailable, 14),
        ] {
            if on {
                codes.push(code);
            }
        }
    }
    Ok(Retry {
        max_retries: r.max_retries,
        max_request_bytes: r.max_request_bytes,
        on: RetryOn::GrpcCodes(codes),
        timeout: duration(object, &format!("{field}.timeout"), r.timeout.as_ref())?.filter(|d| !d.is_zero()),
        backoff: durations(object, &format!("{field}.backoff"), r.backoff.as_ref())?,
    })
}

fn timeouts(
    object: &str,
    field: &str,
    t: Option<&hpb::Timeouts>,
    deprecated: Option<&prost_types::Duration>,
) -> Result<Timeouts, PolicyError> {
    let request = duration(
        object,
        &format!("{field}.timeouts.request"),
        t.and_then(|t| t.request.as_ref()),
    )?
    .or(duration(object, &format!("{field}.request_timeout"), deprecated)?)
    .filter(|d| !d.is_zero());
    let response = duration(
        object,
        &format!("{field}.timeouts.response"),
        t.and_then(|t| t.response.as_ref()),
    )?
    .filter(|d| !d.is_zero());
    Ok(Timeouts { request, response })
}

fn hosts(object: &str, field: &str, h: &[hpb::HostMatch]) -> Result<Vec<HostMatch>, PolicyError> {
    h.iter()
        .enumerate()
        .map(|(i, h)| HostMatch::from_pb(object, &format!("{field}.hosts[{i}]"), h))
        .collect()
}

#[allow(deprecated)] // `request_timeout` is read from servers that still only set it.
fn http_route(target: &str, r: &pb::HttpRoute) -> Result<Route, PolicyError> {
    use pb::http_route::distribution::Kind;
    let name = metadata_name(r.metadata.as_ref());
    let object = format!("outbound policy for {target}: route {name}");
    let object = object.as_str();
    let mut rules = Vec::new();
    for (i, rule) in r.rules.iter().enumerate() {
        let field = format!("rules[{i}]");
        let matches = rule
            .matches
            .iter()
            .enumerate()
            .map(|(j, m)| RequestMatch::http(object, &format!("{field}.matches[{j}]"), m))
            .collect::<Result<_, _>>()?;
        let filters = rule
            .filters
            .iter()
            .enumerate()
            .map(|(j, f)| http_filter(object, &format!("{field}.filters[{j}]"), f))
            .collect::<Result<_, _>>()?;
        let backend = |j: usize,
                       weight: u32,
                       rb: Option<&pb::http_route::RouteBackend>|
         -> Result<Backend, PolicyError> {
            let f = format!("{field}.backends[{j}]");
            let rb = rb.ok_or_else(|| PolicyError::new(object, &f, "no backend; expected one"))?;
            Ok(Backend {
                authority: backend_authority(object, &format!("{f}.backend"), rb.backend.as_ref())?,
                weight,
                filters: rb
                    .filters
                    .iter()
                    .enumerate()
                    .map(|(k, x)| http_filter(object, &format!("{f}.filters[{k}]"), x))
                    .collect::<Result<_, _>>()?,
            })
        };
        let backends = match rule.backends.as_ref().and_then(|d| d.kind.as_ref()) {
            None | Some(Kind::Empty(_)) => Vec::new(),
            Some(Kind::FirstAvailable(f)) => f
                .backends
                .iter()
                .take(1)
                .enumerate()
                .map(|(j, b)| backend(j, 1, Some(b)))
                .collect::<Result<_, _>>()?,
            Some(Kind::RandomAvailable(r)) => r
                .backends
                .iter()
                .enumerate()
                .map(|(j, b)| backend(j, b.weight, b.backend.as_ref()))
                .collect::<Result<_, _>>()?,
        };
        rules.push(Rule {
            matches,
            filters,
            backends,
            timeouts: timeouts(
                object,
                &field,
                rule.timeouts.as_ref(),
                rule.request_timeout.as_ref(),
            )?,
            retry: rule
                .retry
                .as_ref()
                .map(|r| http_retry(object, &format!("{field}.retry"), r))
                .transpose()?,
            allow_l5d_request_headers: rule.allow_l5d_request_headers,
        });
    }
    Ok(Route {
        name: name.into(),
        hosts: hosts(object, "", &r.hosts)?,
        rules,
    })
}

#[allow(deprecated)]
fn grpc_route(target: &str, r: &pb::GrpcRoute) -> Result<Route, PolicyError> {
    use pb::grpc_route::distribution::Kind;
    let name = metadata_name(r.metadata.as_ref());
    let object = format!("outbound policy for {target}: route {name}");
    let object = object.as_str();
    let mut rules = Vec::new();
    for (i, rule) in r.rules.iter().enumerate() {
        let field = format!("rules[{i}]");
        let matches = rule
            .matches
            .iter()
            .enumerate()
            .map(|(j, m)| RequestMatch::grpc(object, &format!("{field}.matches[{j}]"), m))
            .collect::<Result<_, _>>()?;
        let filters = rule
            .filters
            .iter()
            .enumerate()
            .map(|(j, f)| grpc_filter(object, &format!("{field}.filters[{j}]"), f))
            .collect::<Result<_, _>>()?;
        let backend = |j: usize,
                       weight: u32,
                       rb: Option<&pb::grpc_route::RouteBackend>|
         -> Result<Backend, PolicyError> {
            let f = format!("{field}.backends[{j}]");
            let rb = rb.ok_or_else(|| PolicyError::new(object, &f, "no backend; expected one"))?;
            Ok(Backend {
                authority: backend_authority(object, &format!("{f}.backend"), rb.backend.as_ref())?,
                weight,
                filters: rb
                    .filters
                    .iter()
                    .enumerate()
                    .map(|(k, x)| grpc_filter(object, &format!("{f}.filters[{k}]"), x))
                    .collect::<Result<_, _>>()?,
            })
        };
        let backends = match rule.backends.as_ref().and_then(|d| d.kind.as_ref()) {
            None | Some(Kind::Empty(_)) => Vec::new(),
            Some(Kind::FirstAvailable(f)) => f
                .backends
                .iter()
                .take(1)
                .enumerate()
                .map(|(j, b)| backend(j, 1, Some(b)))
                .collect::<Result<_, _>>()?,
            Some(Kind::RandomAvailable(r)) => r
                .backends
                .iter()
                .enumerate()
                .map(|(j, b)| backend(j, b.weight, b.backend.as_ref()))
                .collect::<Result<_, _>>()?,
        };
        rules.push(Rule {
            matches,
            filters,
            backends,
            timeouts: timeouts(
                object,
                &field,
                rule.timeouts.as_ref(),
                rule.request_timeout.as_ref(),
            )?,
            retry: rule
                .retry
                .as_ref()
                .map(|r| grpc_retry(object, &format!("{field}.retry"), r))
                .transpose()?,
            allow_l5d_request_headers: rule.allow_l5d_request_headers,
        });
    }
    Ok(Route {
        name: name.into(),
        hosts: hosts(object, "", &r.hosts)?,
        rules,
    })
}

fn accrual(
    object: &str,
    field: &str,
    a: Option<&pb::FailureAccrual>,
) -> Result<Option<Accrual>, PolicyError> {
    use pb::failure_accrual::Kind;
    match a.and_then(|a| a.kind.as_ref()) {
        None => Ok(None),
        Some(Kind::Unified(_)) => Err(PolicyError::new(
            object,
            field,
            "unified failure accrual is not supported; expected consecutive failures",
        )),
        Some(Kind::ConsecutiveFailures(c)) => {
            if c.max_failures == 0 {
                return Err(PolicyError::new(
                    object,
                    format!("{field}.max_failures"),
                    "0; expected at least 1",
                ));
            }
            let (min, max) = durations(object, &format!("{field}.backoff"), c.backoff.as_ref())?;
            Ok(Some(Accrual {
                max_failures: c.max_failures,
                min_penalty: min,
                max_penalty: max,
                jitter: c
                    .backoff
                    .as_ref()
                    .map(|b| b.jitter_ratio)
                    .unwrap_or(0.0)
                    .clamp(0.0, 1.0),
            }))
        }
    }
}

fn opaque(object: &str, o: Option<&pb::proxy_protocol::Opaque>) -> Result<Vec<Backend>, PolicyError> {
    use pb::opaque_route::distribution::Kind;
    let Some(rule) = o.and_then(|o| o.routes.first()).and_then(|r| r.rules.first()) else {
        return Ok(Vec::new());
    };
    let one = |j: usize, weight: u32, b: &pb::opaque_route::RouteBackend| -> Result<Backend, PolicyError> {
        let failing = b.filters.iter().any(|f| f.kind.is_some());
        Ok(Backend {
            authority: if failing {
                None
            } else {
                backend_authority(
                    object,
                    &format!("opaque.routes[0].rules[0].backends[{j}].backend"),
                    b.backend.as_ref(),
                )?
            },
            weight,
            filters: Vec::new(),
        })
    };
    match rule.backends.as_ref().and_then(|d| d.kind.as_ref()) {
        None | Some(Kind::Empty(_)) => Ok(Vec::new()),
        Some(Kind::FirstAvailable(f)) => f
            .backends
            .iter()
            .take(1)
            .enumerate()
            .map(|(j, b)| one(j, 1, b))
            .collect(),
        Some(Kind::RandomAvailable(r)) => r
            .backends
            .iter()
            .enumerate()
            .filter_map(|(j, b)| b.backend.as_ref().map(|x| one(j, b.weight, x)))
            .collect(),
    }
}

impl OutboundPolicy {
    /// Reads `OutboundPolicies`' answer about `target`.
    pub fn from_pb(target: &str, p: &pb::OutboundPolicy) -> Result<Self, PolicyError> {
        use pb::proxy_protocol::Kind;
        let object = format!("outbound policy for {target}");
        let kind = p.protocol.as_ref().and_then(|p| p.kind.as_ref()).ok_or_else(|| {
            PolicyError::new(
                &object,
                "protocol",
                "missing; expected detect, opaque, http1, http2 or grpc",
            )
        })?;
        let http = |routes: &[pb::HttpRoute]| -> Result<Vec<Route>, PolicyError> {
            routes.iter().map(|r| http_route(target, r)).collect()
        };
        Ok(match kind {
            Kind::Detect(d) => {
                let routes = d
                    .http2
                    .as_ref()
                    .map(|h| h.routes.as_slice())
                    .or(d.http1.as_ref().map(|h| h.routes.as_slice()))
                    .unwrap_or_default();
                let acc = d
                    .http2
                    .as_ref()
                    .and_then(|h| h.failure_accrual.as_ref())
                    .or(d.http1.as_ref().and_then(|h| h.failure_accrual.as_ref()));
                Self {
                    protocol: Protocol::Detect,
                    routes: http(routes)?,
                    opaque: opaque(&object, d.opaque.as_ref())?,
                    accrual: accrual(&object, "detect.http2.failure_accrual", acc)?,
                }
            }
            Kind::Opaque(o) => Self {
                protocol: Protocol::Opaque,
                routes: Vec::new(),
                opaque: opaque(&object, Some(o))?,
                accrual: None,
            },
            Kind::Http1(h) => Self {
                protocol: Protocol::Http,
                routes: http(&h.routes)?,
                opaque: Vec::new(),
                accrual: accrual(&object, "http1.failure_accrual", h.failure_accrual.as_ref())?,
            },
            Kind::Http2(h) => Self {
                protocol: Protocol::Http,
                routes: http(&h.routes)?,
                opaque: Vec::new(),
                accrual: accrual(&object, "http2.failure_accrual", h.failure_accrual.as_ref())?,
            },
            Kind::Grpc(g) => Self {
                protocol: Protocol::Grpc,
                routes: g
                    .routes
                    .iter()
                    .map(|r| grpc_route(target, r))
                    .collect::<Result<_, _>>()?,
                opaque: Vec::new(),
                accrual: accrual(&object, "grpc.failure_accrual", g.failure_accrual.as_ref())?,
            },
            Kind::Tls(_) => Self {
                protocol: Protocol::Opaque,
                routes: Vec::new(),
                opaque: Vec::new(),
                accrual: None,
            },
        })
    }
}
