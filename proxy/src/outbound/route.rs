//! The outbound request path under policy: route selection, filters, weighted backends,
//! timeouts, retries (with ServiceProfile budgets) and failure accrual.
//!
//! Decide first, then do I/O: [`plan`] turns the target's policy (an `OutboundPolicies`
//! answer or a ServiceProfile with routes) and a request's head into a [`Plan`] — which
//! backends, which deadlines, whether and how to retry, how to classify — without
//! touching the network; [`Outbound::execute`] carries it out.
//!
//! Which policy: a ServiceProfile with routes wins (as in Linkerd, whose annotations and
//! routes do not apply where a profile exists); otherwise the `OutboundPolicies` answer;
//! otherwise the plain path of [`Outbound::http`] (discovery and TrafficSplit only).

use crate::metrics::{Classified, Classifier, HttpStats, Pending, RouteSeries, count_also};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};

use super::{Concrete, DISCOVERY_WAIT, EpValue, Logical, Outbound, Replay};
use crate::balance::{self, Pick};
use crate::client::{PROXY_ERROR, ProxyError, ReqBody, RspBody, Wire, grpc_response, is_grpc_call};
use crate::policy::client::Known;
use crate::policy::outbound::{
    Accrual, Filter, HeaderEdit, OutboundPolicy, PathRewrite, Protocol, Redirect, Retry, RetryOn, Timeouts,
};
use crate::policy::profile::ProfileRoute;
use crate::policy::retry::{self, Budget};

/// Where one attempt may go.
#[derive(Clone)]
pub(super) struct Target {
    /// The balancer (`None`: the backend fails requests).
    concrete: Option<Arc<Concrete>>,
    weight: u32,
    filters: Vec<Filter>,
}

/// How a retry decides that a response failed.
#[derive(Clone)]
enum FailureOn {
    Policy(RetryOn),
    Profile,
}

/// The retry part of a plan.
#[derive(Clone)]
struct RetryPlan {
    max_retries: u32,
    max_request_bytes: u32,
    on: FailureOn,
    per_try: Option<Duration>,
    backoff: (Duration, Duration),
    budget: Option<Arc<Budget>>,
}

/// What to do with one request, decided before any I/O.
pub(super) enum Plan {
    /// Answer at once (a failure filter, a redirect, no backend).
    Respond(Box<Response<RspBody>>),
    /// Forward.
    Forward(Box<Forward>),
}

pub(super) struct Forward {
    /// The ServiceProfile route series, when the target's profile has routes.
    route_series: Option<Arc<RouteSeries>>,
    targets: Vec<Target>,
    timeouts: Timeouts,
    retry: Option<RetryPlan>,
    classify: Option<Arc<ProfileRoute>>,
    response_edits: Vec<HeaderEdit>,
    accrual: Option<Accrual>,
    grpc: bool,
}

/// The safety cap on a ServiceProfile retry (Linkerd bounds those by the budget only).
const PROFILE_MAX_RETRIES: u32 = 10;

fn text_response(status: StatusCode, msg: &str) -> Response<RspBody> {
    let mut rsp = Response::new(Either::Right(Full::new(Bytes::from(format!("{msg}\n")))));
    *rsp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(msg) {
        rsp.headers_mut().insert(PROXY_ERROR, v);
    }
    rsp
}

fn redirect_response(
    r: &Redirect,
    uri: &Uri,
    headers: &HeaderMap,
    matched_prefix: Option<&str>,
) -> Response<RspBody> {
    let host = r
        .host
        .clone()
        .or_else(|| crate::policy::matching::request_host(uri, headers))
        .unwrap_or_default();
    let scheme = r.scheme.clone().unwrap_or_else(|| "http".into());
    let path = uri.path();
    let new_path = match &r.path {
        None => path.to_string(),
        Some(PathRewrite::Full(p)) => p.clone(),
        Some(PathRewrite::Prefix(p)) => {
            match matched_prefix.and_then(|m| path.strip_prefix(m.trim_end_matches('/'))) {
                Some(rest) => format!("{}{rest}", p.trim_end_matches('/')),
                None => path.to_string(),
            }
        }
    };
    let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let location = format!("{scheme}://{host}{port}{new_path}{query}");
    let mut rsp = Response::new(Either::Right(Full::default()));
    *rsp.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        rsp.headers_mut().insert(http::header::LOCATION, v);
    }
    rsp
}

impl Outbound {
    /// The policy requests to `l` follow, if any (waiting briefly for the first answers).
    pub(super) async fn policy_of(self: &Arc<Self>, l: &Arc<Logical>) -> Option<PolicyOf> {
        if !*l.split_ready.borrow() {
            let mut rx = l.split_ready.clone();
            let _ = tokio::time::timeout(DISCOVERY_WAIT, rx.wait_for(|r| *r)).await;
        }
        let profile = l
            .profile
            .borrow()
            .as_ref()
            .filter(|p| !p.policy.routes.is_empty())
            .map(|p| p.policy.clone());
        if let Some(p) = profile {
            return Some(PolicyOf::Profile(p));
        }
        let w = l.policy.as_ref()?;
        match w.ready(DISCOVERY_WAIT).await {
            Known::Some(p) if p.protocol != Protocol::Opaque => Some(PolicyOf::Outbound(p)),
            _ => None,
        }
    }

    /// The series of `route` of `l` (made once per route: their labels are strings).
    fn route_series(&self, l: &Logical, route: Option<&ProfileRoute>) -> Arc<RouteSeries> {
        l.route_series.lock().unwrap_or_else(PoisonError::into_inner).get(
            &self.metrics,
            "outbound",
            l.name(),
            route,
        )
    }

    fn budget(l: &Logical, cfg: retry::BudgetConfig) -> Arc<Budget> {
        let mut b = l.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*b {
            Some(x) if x.config() == cfg => x.clone(),
            _ => {
                let x = Arc::new(Budget::new(cfg, Instant::now()));
                *b = Some(x.clone());
                x
            }
        }
    }

    /// Decides what to do with a request (pure but for looking up balancers).
    pub(super) async fn plan(
        self: &Arc<Self>,
        l: &Arc<Logical>,
        policy: &PolicyOf,
        req: &mut Request<Incoming>,
    ) -> Plan {
        match policy {
            PolicyOf::Profile(p) => {
                let route = p.route(req.method(), req.uri().path()).cloned().map(Arc::new);
                let route_series = Some(self.route_series(l, route.as_deref()));
                let split = self.split(l);
                let targets = split
                    .iter()
                    .map(|(c, w)| Target {
                        concrete: Some(c.clone()),
                        weight: *w,
                        filters: Vec::new(),
                    })
                    .collect();
                let retry = route.as_ref().filter(|r| r.retryable).map(|_| RetryPlan {
                    max_retries: PROFILE_MAX_RETRIES,
                    max_request_bytes: 64 * 1024,
                    on: FailureOn::Profile,
                    per_try: None,
                    backoff: (Duration::ZERO, Duration::ZERO),
                    budget: Some(Self::budget(l, p.budget)),
                });
                Plan::Forward(Box::new(Forward {
                    route_series,
                    targets,
                    timeouts: Timeouts {
                        request: route.as_ref().and_then(|r| r.timeout),
                        response: None,
                    },
                    retry,
                    classify: route,
                    response_edits: Vec::new(),
                    accrual: None,
                    grpc: is_grpc_call(req),
                }))
            }
            PolicyOf::Outbound(p) => self.plan_outbound(l, p, req),
        }
    }

    fn plan_outbound(
        self: &Arc<Self>,
        l: &Arc<Logical>,
        p: &OutboundPolicy,
        req: &mut Request<Incoming>,
    ) -> Plan {
        let grpc = p.protocol == Protocol::Grpc || is_grpc_call(req);
        let routes = p.routes.iter().map(|r| (r.hosts.as_slice(), r.rules.as_slice()));
        let selected = crate::policy::matching::select(
            routes,
            |r: &crate::policy::outbound::Rule| r.matches.as_slice(),
            req.method(),
            req.uri(),
            req.headers(),
        );
        let Some((ri, ui)) = selected else {
            // No rule matches: the default route, to the target itself.
            return Plan::Forward(Box::new(Forward {
                route_series: None,
                targets: vec![Target {
                    concrete: Some(self.concrete(l.name(), &l.authority)),
                    weight: 1,
                    filters: Vec::new(),
                }],
                timeouts: Timeouts::default(),
                retry: None,
                classify: None,
                response_edits: Vec::new(),
                accrual: p.accrual,
                grpc,
            }));
        };
        let rule = &p.routes[ri].rules[ui];
        let mut response_edits = Vec::new();
        for f in &rule.filters {
            match f {
                Filter::Fail {
                    status,
                    grpc_code,
                    message,
                } => {
                    return Plan::Respond(Box::new(match grpc_code {
                        Some(c) if grpc => grpc_response(*c, message),
                        _ => text_response(*status, message),
                    }));
                }
                Filter::Redirect(r) => {
                    let prefix = rule.matches.iter().find_map(|m| match &m.path {
                        Some(crate::policy::matching::PathMatch::Prefix(p)) => Some(p.as_str()),
                        _ => None,
                    });
                    return Plan::Respond(Box::new(redirect_response(r, req.uri(), req.headers(), prefix)));
                }
                Filter::RequestHeaders(e) => e.apply(req.headers_mut()),
                Filter::ResponseHeaders(e) => response_edits.push(e.clone()),
            }
        }
        let mut timeouts = rule.timeouts;
        let mut retry_policy: Option<Retry> = rule.retry.clone();
        retry::apply_l5d_headers(
            req.headers_mut(),
            rule.allow_l5d_request_headers,
            grpc,
            &mut retry_policy,
            &mut timeouts,
        );
        let targets: Vec<Target> = rule
            .backends
            .iter()
            .map(|b| Target {
                concrete: b.authority.as_deref().map(|a| self.concrete(l.name(), a)),
                weight: b.weight,
                filters: b.filters.clone(),
            })
            .collect();
        if targets.is_empty() || targets.iter().all(|t| t.weight == 0) {
            let msg = format!("route {} has no backend", p.routes[ri].name);
            return Plan::Respond(Box::new(if grpc {
                grpc_response(14, &msg)
            } else {
                text_response(StatusCode::INTERNAL_SERVER_ERROR, &msg)
            }));
        }
        let retry = retry_policy.filter(|r| r.max_retries > 0).map(|r| RetryPlan {
            max_retries: r.max_retries,
            max_request_bytes: r.max_request_bytes,
            on: FailureOn::Policy(r.on),
            per_try: r.timeout,
            backoff: r.backoff,
            budget: None,
        });
        Plan::Forward(Box::new(Forward {
            route_series: None,
            targets,
            timeouts,
            retry,
            classify: None,
            response_edits,
            accrual: p.accrual,
            grpc,
        }))
    }

    /// Carries out a plan: attempts (with retries) under the request deadline.
    pub(super) async fn execute(
        self: &Arc<Self>,
        l: &Arc<Logical>,
        f: Forward,
        req: Request<Incoming>,
        app: Wire,
    ) -> Response<RspBody> {
        let start = Instant::now();
        if let Some(r) = &f.route_series {
            r.route.request();
        }
        let version = req.version();
        let in_flight = InFlight::default();
        let work = self.attempts(l, &f, req, app, start, &in_flight);
        let mut rsp = match f.timeouts.request {
            Some(t) => match tokio::time::timeout(t, work).await {
                Ok(r) => r,
                Err(_) => {
                    let e = ProxyError::Timeout(t);
                    tracing::info!(authority = %l.authority, error = %e, "request deadline passed");
                    let rsp = e.response_for(f.grpc);
                    // The answer belongs to the series that counted the request: the
                    // endpoint of the attempt in flight, else (discovery or a backoff
                    // held it) the target's own.
                    let taken = in_flight
                        .endpoint
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take();
                    if let Some(r) = &f.route_series
                        && in_flight.actual.swap(false, std::sync::atomic::Ordering::Relaxed)
                    {
                        r.actual.answered(&rsp, f.grpc, start.elapsed());
                    }
                    let stats = taken.unwrap_or_else(|| {
                        l.stats().request();
                        l.stats().clone()
                    });
                    stats.answered(&rsp, f.grpc, start.elapsed());
                    rsp
                }
            },
            None => work.await,
        };
        if let Some(r) = &f.route_series {
            count_also(&mut rsp, &r.route, f.grpc, start);
        }
        for e in &f.response_edits {
            e.apply(rsp.headers_mut());
        }
        *rsp.version_mut() = version;
        rsp
    }

    async fn attempts(
        self: &Arc<Self>,
        l: &Arc<Logical>,
        f: &Forward,
        req: Request<Incoming>,
        app: Wire,
        start: Instant,
        in_flight: &InFlight,
    ) -> Response<RspBody> {
        // An HTTP/1.1 upgrade or an HTTP/2 extended CONNECT is never retried: the client's
        // connection (or stream) is handed over to the first attempt.
        let upgrade = crate::client::is_upgrade(&req) || crate::extended_connect::is_extended_connect(&req);
        let (mut parts, body) = req.into_parts();
        // The first attempt carries the request's extensions (an upgrade's handle and an
        // extended CONNECT's `:protocol` among them).
        let mut extensions = Some(std::mem::take(&mut parts.extensions));
        // Retries need the body again: the first attempt keeps a copy as it streams (up to
        // the bound); a body known to be larger is never retried.
        let retry = f
            .retry
            .clone()
            .filter(|_| !upgrade)
            .filter(|r| body.size_hint().lower().le(&u64::from(r.max_request_bytes)));
        if let Some(r) = &retry
            && let Some(b) = &r.budget
        {
            b.deposit(Instant::now());
        }
        let head = |b: ReqBody| {
            let mut r = Request::new(b);
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.version_mut() = parts.version;
            *r.headers_mut() = parts.headers.clone();
            r
        };
        let mut next = Some(match &retry {
            Some(r) => Either::Right(Replay::new(body, r.max_request_bytes as usize)),
            None => Either::Left(body),
        });
        let mut n = 0u32;
        loop {
            let Some(body) = next.take() else {
                unreachable!("an attempt is only made with a body")
            };
            let kept = match &body {
                Either::Right(b) => Some(b.replay_handle()),
                Either::Left(_) => None,
            };
            let mut req = head(body);
            if let Some(x) = extensions.take() {
                *req.extensions_mut() = x;
            }
            let per_try = match (&retry, f.timeouts.response) {
                (Some(r), resp) => match (r.per_try, resp) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                (None, resp) => resp,
            };
            if let Some(r) = &f.route_series {
                r.actual.request();
                in_flight.actual.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let (mut rsp, failed) = self.attempt(l, f, req, app, per_try, start, in_flight).await;
            if let Some(r) = &f.route_series {
                in_flight
                    .actual
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                count_also(&mut rsp, &r.actual, f.grpc, start);
            }
            let Some(r) = &retry else { return rsp };
            if !failed.retryable(&r.on) || n >= r.max_retries {
                return rsp;
            }
            // The whole body must have been read and kept to be sent again.
            let Some(again) = kept.as_ref().and_then(Replay::replay) else {
                tracing::debug!(authority = %l.authority, "not retried: the request body was not kept whole");
                return rsp;
            };
            next = Some(Either::Right(again));
            if let Some(b) = &r.budget
                && !b.withdraw(Instant::now())
            {
                tracing::debug!(authority = %l.authority, "retry budget exhausted");
                if let Some(s) = &f.route_series {
                    s.skipped_no_budget(&self.metrics);
                }
                return rsp;
            }
            n += 1;
            let wait = retry::backoff(r.backoff, n, balance::random());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            tracing::debug!(authority = %l.authority, attempt = n + 1, "retrying");
        }
    }

    fn pick_target(f: &Forward) -> &Target {
        if f.targets.len() == 1 {
            return &f.targets[0];
        }
        let weights: Vec<u32> = f.targets.iter().map(|t| t.weight).collect();
        let i = balance::weighted(&weights, balance::random()).unwrap_or(0);
        &f.targets[i]
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        self: &Arc<Self>,
        l: &Arc<Logical>,
        f: &Forward,
        mut req: Request<ReqBody>,
        app: Wire,
        per_try: Option<Duration>,
        start: Instant,
        in_flight: &InFlight,
    ) -> (Response<RspBody>, Outcome) {
        let t = Self::pick_target(f);
        for filter in &t.filters {
            match filter {
                Filter::Fail {
                    status,
                    grpc_code,
                    message,
                } => {
                    l.stats().request();
                    let rsp = match grpc_code {
                        Some(c) if f.grpc => grpc_response(*c, message),
                        _ => text_response(*status, message),
                    };
                    l.stats().answered(&rsp, f.grpc, start.elapsed());
                    let outcome = Outcome::Status {
                        status: status.as_u16(),
                        grpc: *grpc_code,
                        failure: true,
                    };
                    return (rsp, outcome);
                }
                Filter::RequestHeaders(e) => e.apply(req.headers_mut()),
                Filter::ResponseHeaders(_) | Filter::Redirect(_) => {}
            }
        }
        let Some(concrete) = &t.concrete else {
            l.stats().request();
            let rsp = text_response(StatusCode::INTERNAL_SERVER_ERROR, "the backend cannot be used");
            l.stats().response(500, false, start.elapsed());
            return (
                rsp,
                Outcome::Status {
                    status: 500,
                    grpc: None,
                    failure: true,
                },
            );
        };
        let now = Instant::now();
        let picked = concrete
            .balancer
            .pick_where(DISCOVERY_WAIT, |b| {
                f.accrual.is_none() || b.value.breaker.available(now)
            })
            .await;
        let (client, stats, ep) = match picked {
            Err(balance::AllExcluded) => {
                let e = ProxyError::NoEndpoints(format!(
                    "{} (every endpoint is ejected by failure accrual)",
                    l.authority
                ));
                return (self.error(l.stats(), start, f.grpc, e), Outcome::Error);
            }
            Ok(Pick::Endpoint(ep)) => {
                let usable =
                    |b: &balance::Balanced<EpValue>| f.accrual.is_none() || b.value.breaker.available(now);
                match self.connected(concrete, ep, app, usable).await {
                    Ok((client, ep)) => (client, ep.value.stats.clone(), Some(ep)),
                    Err(e) => return (self.error(l.stats(), start, f.grpc, e), Outcome::Error),
                }
            }
            Ok(Pick::Unknown) => {
                let client = match self.fallback_client(l, app).await {
                    Ok(c) => c,
                    Err(e) => return (self.error(l.stats(), start, f.grpc, e), Outcome::Error),
                };
                (client, l.stats().clone(), None)
            }
            Ok(Pick::NoEndpoints) => {
                return (
                    self.error(
                        l.stats(),
                        start,
                        f.grpc,
                        ProxyError::NoEndpoints(l.authority.clone()),
                    ),
                    Outcome::Error,
                );
            }
            Ok(Pick::Pending) => {
                return (
                    self.error(
                        l.stats(),
                        start,
                        f.grpc,
                        ProxyError::Discovery(l.authority.clone()),
                    ),
                    Outcome::Error,
                );
            }
        };
        stats.request();
        *in_flight.endpoint.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats.clone());
        if ep.as_ref().is_some_and(|e| e.endpoint.identity.is_some()) {
            l.set_canonical(req.headers_mut());
        }
        let load = ep.as_ref().map(|e| e.ewma.start());
        let sent = client.send_body(req);
        let result = match per_try {
            Some(t) => tokio::time::timeout(t, sent)
                .await
                .unwrap_or(Err(ProxyError::Timeout(t))),
            None => sent.await,
        };
        if let Some(x) = load {
            x.observe();
        }
        // Answered (or failed) here: the request's deadline no longer concerns this series.
        in_flight
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (rsp, outcome, ok) = match result {
            Ok(rsp) => {
                let grpc_status = retry::grpc_status(rsp.headers());
                let classifier = match &f.classify {
                    Some(route) => Classifier::Route(route.clone()),
                    None => Classifier::Default,
                };
                // The retry decision reads the headers; the metrics wait for the end of the
                // body (a gRPC status may come in trailers).
                let ok = classifier.is_success(rsp.status().as_u16(), grpc_status);
                let head = (rsp.status().as_u16(), grpc_status);
                let pending = Pending::new(stats, head, f.grpc, start.elapsed(), classifier);
                let outcome = Outcome::Status {
                    status: rsp.status().as_u16(),
                    grpc: grpc_status,
                    failure: !ok,
                };
                (
                    rsp.map(|b| Either::Left(Classified::new(b, Some(pending)))),
                    outcome,
                    ok,
                )
            }
            Err(e) => {
                tracing::info!(authority = %l.authority, error = %e, "request failed");
                let timed_out = matches!(e, ProxyError::Timeout(_));
                let rsp = e.response_for(f.grpc);
                stats.answered(&rsp, f.grpc, start.elapsed());
                (
                    rsp,
                    if timed_out {
                        Outcome::Timeout
                    } else {
                        Outcome::Error
                    },
                    false,
                )
            }
        };
        if let (Some(cfg), Some(ep)) = (&f.accrual, &ep)
            && let Some(penalty) = ep
                .value
                .breaker
                .record(ok, Instant::now(), cfg, balance::random())
        {
            tracing::info!(authority = %l.authority, endpoint = %ep.endpoint.addr, ?penalty, "failure accrual: endpoint ejected");
        }
        (rsp, outcome)
    }
}

/// The series of the attempt waiting for its answer, if one is: where a request whose
/// deadline passes is answered (it counted the request).
#[derive(Default)]
struct InFlight {
    /// The endpoint series of the attempt waiting for its answer.
    endpoint: Mutex<Option<Arc<HttpStats>>>,
    /// Whether an attempt counted on `route_actual_*` is waiting for its answer.
    actual: std::sync::atomic::AtomicBool,
}

/// What one attempt came to, for the retry decision.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// A response: its status, gRPC status, and whether it is classified a failure.
    Status {
        status: u16,
        grpc: Option<u32>,
        failure: bool,
    },
    /// No response: connecting or the exchange failed.
    Error,
    /// The attempt's deadline passed.
    Timeout,
}

impl Outcome {
    fn retryable(self, on: &FailureOn) -> bool {
        match (self, on) {
            (Self::Error | Self::Timeout, _) => true,
            (Self::Status { status, grpc, .. }, FailureOn::Policy(on)) => retry::retryable(on, status, grpc),
            // A profile route retries what its response classes call failures.
            (Self::Status { failure, .. }, FailureOn::Profile) => failure,
        }
    }
}

/// The policy a target's requests follow.
pub(super) enum PolicyOf {
    /// A ServiceProfile with routes.
    Profile(Arc<crate::policy::profile::ProfilePolicy>),
    /// An `OutboundPolicies` answer.
    Outbound(Arc<OutboundPolicy>),
}

#[allow(dead_code)]
fn _assert_send(o: Arc<Outbound>, l: Arc<Logical>, f: Forward, r: Request<Incoming>) {
    fn is_send<T: Send>(_: T) {}
    is_send(async move { o.execute(&l, f, r, Wire::Http1).await });
}
