//! Linkerd's golden metrics, rendered in Prometheus text.
//!
//! Invariants: a label set is rendered into its string once, when the connection, target
//! or endpoint it describes is first seen, and its counters live in an `Arc` that the
//! data path holds; the request path only does relaxed atomic adds (and a read lock on
//! the short per-label-set status list). A response is counted at the end of its body
//! (see [`Classified`]). A label set nothing on the data path holds any
//! more (its connection, target or endpoint is gone) and that has not changed for the
//! retention period (`LINKERD2_PROXY_METRICS_RETAIN_IDLE`, Linkerd's 10 minutes) is
//! dropped at the next scrape, as Linkerd drops idle series: a proxy that outlives many
//! rollouts does not keep a series for every pod it ever talked to.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// Linkerd's `response_latency_ms` bucket bounds.
pub const LATENCY_BUCKETS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 10_000,
    20_000, 30_000, 40_000, 50_000,
];

/// `s` as a Prometheus label name: every character but ASCII letters, digits and `_`
/// becomes `_` (a label key from discovery such as `app.kubernetes.io/name` would
/// otherwise make the whole exposition unreadable to Prometheus).
pub fn label_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Renders `name="value"` pairs (values escaped) joined by commas.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// The gRPC status codes (OK to UNAUTHENTICATED).
const GRPC_CODES: usize = 17;

/// Per status code: response counts by classification and the latency histogram.
#[derive(Debug)]
struct StatusStats {
    status: u16,
    success: AtomicU64,
    failure: AtomicU64,
    /// gRPC responses by `grpc-status` (0–16; any other code counts as 2, UNKNOWN):
    /// successes then failures. Allocated on the first gRPC response.
    grpc: std::sync::OnceLock<Box<[AtomicU64; 2 * GRPC_CODES]>>,
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
}

/// HTTP counters for one label set.
#[derive(Debug)]
pub struct HttpStats {
    labels: String,
    requests: AtomicU64,
    statuses: RwLock<Vec<Arc<StatusStats>>>,
}

impl HttpStats {
    /// A request arrived.
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// A response with `status` after `latency` (time to response headers); `success` is
    /// Linkerd's classification (5xx and gRPC errors fail).
    pub fn response(&self, status: u16, success: bool, latency: Duration) {
        self.response_grpc(status, None, success, latency);
    }

    /// An answer the proxy made itself (an error, a refusal): a failure, with the gRPC
    /// status it carries when it answers a gRPC call (a trailers-only answer).
    pub fn answered<B>(&self, rsp: &http::Response<B>, grpc_call: bool, latency: Duration) {
        let code = if grpc_call {
            crate::policy::retry::grpc_status(rsp.headers())
        } else {
            None
        };
        self.response_grpc(rsp.status().as_u16(), code, false, latency);
    }

    /// A response as [`HttpStats::response`], of a gRPC call that ended with `grpc` (its
    /// `grpc-status`, Linkerd's `grpc_status` label).
    pub fn response_grpc(&self, status: u16, grpc: Option<u32>, success: bool, latency: Duration) {
        let s = self.status(status);
        match grpc {
            None if success => {
                s.success.fetch_add(1, Relaxed);
            }
            None => {
                s.failure.fetch_add(1, Relaxed);
            }
            Some(code) => {
                // A code outside gRPC's is UNKNOWN, as gRPC libraries read it: the series
                // stay bounded whatever a peer sends.
                let code = usize::try_from(code)
                    .ok()
                    .filter(|c| *c < GRPC_CODES)
                    .unwrap_or(2);
                let counts = s
                    .grpc
                    .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
                let at = if success { code } else { GRPC_CODES + code };
                counts[at].fetch_add(1, Relaxed);
            }
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Whole milliseconds, truncated, as Linkerd buckets them (1.5 ms counts in `le="1"`).
        let ms = us / 1000;
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        s.buckets[i].fetch_add(1, Relaxed);
        s.sum_us.fetch_add(us, Relaxed);
    }

    fn status(&self, status: u16) -> Arc<StatusStats> {
        if let Some(s) = self
            .statuses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|s| s.status == status)
        {
            return s.clone();
        }
        let mut w = self.statuses.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = w.iter().find(|s| s.status == status) {
            return s.clone();
        }
        let s = Arc::new(StatusStats {
            status,
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            grpc: std::sync::OnceLock::new(),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
        });
        w.push(s.clone());
        s
    }
}

/// How a response is classified, once its end (and a gRPC call's trailers) is known.
#[derive(Clone, Debug, Default)]
pub enum Classifier {
    /// Linkerd's default: a 5xx status, or a gRPC status that says the server failed
    /// ([`grpc_is_failure`]), fails.
    #[default]
    Default,
    /// A ServiceProfile route's response classes decide.
    Route(Arc<crate::policy::profile::ProfileRoute>),
}

impl Classifier {
    /// Whether a response with `status` (and gRPC status `grpc`) succeeded.
    pub fn is_success(&self, status: u16, grpc: Option<u32>) -> bool {
        match self {
            Classifier::Default => status < 500 && !grpc.is_some_and(grpc_is_failure),
            Classifier::Route(r) => !r.is_failure(status, grpc),
        }
    }
}

/// Whether a gRPC status is a failure, as linkerd2-proxy classifies it: UNKNOWN (2),
/// DEADLINE_EXCEEDED (4), INTERNAL (13), UNAVAILABLE (14) and DATA_LOSS (15). The others
/// (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, …) are the caller's mistakes, like
/// an HTTP 4xx, and do not lower the server's success rate.
pub fn grpc_is_failure(code: u32) -> bool {
    matches!(code, 2 | 4 | 13 | 14 | 15)
}

/// A response whose counting waits for the end of its body: a gRPC call's status comes
/// in its trailers, and a body that fails midway fails the response, as Linkerd
/// classifies at the end of the stream. A body dropped before its end (the client went
/// away) counts as its headers said.
#[derive(Debug)]
pub struct Pending {
    stats: Arc<HttpStats>,
    status: u16,
    /// Whether the request was a gRPC call.
    grpc_call: bool,
    grpc: Option<u32>,
    latency: Duration,
    classifier: Classifier,
    failed: bool,
    /// More series counting the same response (a ServiceProfile route's).
    also: Vec<Arc<HttpStats>>,
}

impl Pending {
    /// Counts, at the end of its body, a response whose headers said `status` and
    /// `grpc` (`grpc-status`, in a trailers-only answer) after `latency`.
    pub fn new(
        stats: Arc<HttpStats>,
        (status, grpc): (u16, Option<u32>),
        grpc_call: bool,
        latency: Duration,
        classifier: Classifier,
    ) -> Self {
        Self {
            stats,
            status,
            grpc_call,
            grpc,
            latency,
            classifier,
            failed: false,
            also: Vec::new(),
        }
    }

    /// The status and `grpc-status` of a response's headers, for [`Pending::new`].
    pub fn head<B>(rsp: &http::Response<B>) -> (u16, Option<u32>) {
        (
            rsp.status().as_u16(),
            crate::policy::retry::grpc_status(rsp.headers()),
        )
    }

    fn record(self) {
        let ok = !self.failed && self.classifier.is_success(self.status, self.grpc);
        let grpc = if self.grpc_call { self.grpc } else { None };
        self.stats.response_grpc(self.status, grpc, ok, self.latency);
        for s in &self.also {
            s.response_grpc(self.status, grpc, ok, self.latency);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its response at its end (see [`Pending`]).
    pub struct Classified<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
        // The gRPC trailers given in place of a failed body's error went out: the
        // stream has ended.
        rescued: bool,
    }

    impl<B> PinnedDrop for Classified<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(p) = this.project().pending.take() {
                p.record();
            }
        }
    }
}

impl<B> Classified<B> {
    /// `inner`, counted by `pending` at its end; `None` counts nothing.
    pub fn new(inner: B, pending: Option<Pending>) -> Self {
        Self {
            inner,
            pending,
            rescued: false,
        }
    }

    /// Counts the response on `stats` too, as it counts it on its own series.
    pub fn count_also(&mut self, stats: Arc<HttpStats>) {
        if let Some(p) = &mut self.pending {
            p.also.push(stats);
        }
    }

    /// `rsp`, counted on `stats` at the end of its body with Linkerd's default classes
    /// (a gRPC status may come in trailers); `latency` is the time to its headers.
    pub fn response(
        rsp: http::Response<B>,
        stats: Arc<HttpStats>,
        grpc_call: bool,
        latency: Duration,
    ) -> http::Response<Self> {
        let pending = Pending::new(
            stats,
            Pending::head(&rsp),
            grpc_call,
            latency,
            Classifier::Default,
        );
        rsp.map(|b| Self::new(b, Some(pending)))
    }
}

impl<B> hyper::body::Body for Classified<B>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.rescued {
            return std::task::Poll::Ready(None);
        }
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        // A gRPC call whose answer fails midway ends with UNAVAILABLE in its trailers, as
        // linkerd2-proxy rescues it: its client sees a gRPC status it can act on (retry),
        // not a reset stream read as INTERNAL or CANCELLED.
        if let (Some(Err(e)), Some(p)) = (&frame, this.pending.as_mut())
            && p.grpc_call
        {
            let mut pending = this.pending.take().expect("matched above");
            pending.failed = true;
            pending.grpc = Some(GRPC_UNAVAILABLE);
            pending.record();
            *this.rescued = true;
            tracing::info!(error = %e, "the gRPC answer failed midway; ending it with UNAVAILABLE");
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::trailers(rescue_trailers(e)))));
        }
        let ended = match &frame {
            Some(Ok(f)) => match (f.trailers_ref(), this.pending.as_mut()) {
                // Trailers end the stream: counted now (nothing after them is rescued).
                (Some(t), Some(p)) => {
                    if let Some(code) = crate::policy::retry::grpc_status(t) {
                        p.grpc = Some(code);
                    }
                    true
                }
                _ => false,
            },
            Some(Err(_)) => {
                if let Some(p) = this.pending.as_mut() {
                    p.failed = true;
                }
                true
            }
            None => true,
        };
        if ended && let Some(p) = this.pending.take() {
            p.record();
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.rescued || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

const GRPC_UNAVAILABLE: u32 = 14;

/// The trailers ending a gRPC answer whose body failed with `e`.
fn rescue_trailers(e: &dyn std::fmt::Display) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    let msg = format!("the response stream failed: {e}");
    if http::HeaderValue::from_str(&msg).is_ok() {
        crate::client::put_grpc_status(&mut t, GRPC_UNAVAILABLE, &msg);
    } else {
        crate::client::put_grpc_status(&mut t, GRPC_UNAVAILABLE, "the response stream failed");
    }
    t
}

/// The ServiceProfile route series of a request (see [`Family`]), as linkerd2-proxy's:
/// labelled with its direction, the target's logical name (`dst`) and the route's metric
/// labels as `rt_*` (`rt_route`: its name).
pub struct RouteSeries {
    /// The request and its final answer.
    pub route: Arc<HttpStats>,
    /// Each attempt and its answer (outbound retries).
    pub actual: Arc<HttpStats>,
    /// The labels of `route_retryable_total{skipped="no_budget"}`, made on first use.
    no_budget_labels: String,
    no_budget: std::sync::OnceLock<Arc<AtomicU64>>,
}

impl RouteSeries {
    /// The series of `route` (`None`: the profile's default, for requests no route
    /// matches) of the target named `dst`, in `direction` (`inbound` or `outbound`).
    pub fn new(
        metrics: &Registry,
        direction: &str,
        dst: &str,
        route: Option<&crate::policy::profile::ProfileRoute>,
    ) -> Self {
        let rt: Vec<(String, &str)> = route
            .map(|r| {
                r.labels
                    .iter()
                    .map(|(k, v)| (format!("rt_{}", label_name(k)), v.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let mut pairs: Vec<(&str, &str)> = vec![("direction", direction), ("dst", dst)];
        pairs.extend(rt.iter().map(|(k, v)| (k.as_str(), *v)));
        let route_labels = labels(&pairs);
        pairs.push(("skipped", "no_budget"));
        Self {
            route: metrics.family(Family::Route, route_labels.clone()),
            actual: metrics.family(Family::RouteActual, route_labels),
            no_budget_labels: labels(&pairs),
            no_budget: std::sync::OnceLock::new(),
        }
    }

    /// A retry the budget did not allow.
    pub fn skipped_no_budget(&self, metrics: &Registry) {
        self.no_budget
            .get_or_init(|| {
                metrics.counter(
                    "route_retryable_total",
                    "Retryable requests of a ServiceProfile route that were not retried, by reason.",
                    self.no_budget_labels.clone(),
                )
            })
            .fetch_add(1, Relaxed);
    }
}

/// The route series of one target (one `dst`) by route: made once per route, and again
/// only when the profile changes the route's labels.
#[derive(Default)]
pub struct RouteSeriesCache(HashMap<String, (RouteLabels, Arc<RouteSeries>)>);

/// A ServiceProfile route's metric labels.
type RouteLabels = Vec<(String, String)>;

impl RouteSeriesCache {
    /// The series of `route` (`None`: the default route) of the target named `dst`.
    pub fn get(
        &mut self,
        metrics: &Registry,
        direction: &str,
        dst: &str,
        route: Option<&crate::policy::profile::ProfileRoute>,
    ) -> Arc<RouteSeries> {
        let key = route.map_or("", |r| r.name.as_str());
        let labels = route.map(|r| r.labels.as_slice()).unwrap_or_default();
        if let Some((l, s)) = self.0.get(key)
            && l.as_slice() == labels
        {
            return s.clone();
        }
        let series = Arc::new(RouteSeries::new(metrics, direction, dst, route));
        self.0.insert(key.to_string(), (labels.to_vec(), series.clone()));
        series
    }
}

/// Counts the answer `rsp` on `stats` too: at the end of its body, as its own series
/// counts it, or at once when the proxy made it (a failure).
pub fn count_also(
    rsp: &mut http::Response<crate::client::RspBody>,
    stats: &Arc<HttpStats>,
    grpc: bool,
    start: std::time::Instant,
) {
    match rsp.body_mut() {
        http_body_util::Either::Left(c) => c.count_also(stats.clone()),
        http_body_util::Either::Right(_) => stats.answered(rsp, grpc, start.elapsed()),
    }
}

/// TCP counters for one label set.
#[derive(Debug)]
pub struct TcpStats {
    labels: String,
    open_total: AtomicU64,
    /// Clean closes (`errno=""`).
    close_total: AtomicU64,
    /// Closes after an I/O error, by errno.
    close_errors: Mutex<Vec<(i32, u64)>>,
    open: AtomicI64,
    read: AtomicU64,
    write: AtomicU64,
}

/// An open connection; closing is counted when it drops, under the errno of the first
/// I/O error it saw (Linkerd's `errno` label), if any.
#[derive(Debug)]
pub struct OpenConn {
    stats: Arc<TcpStats>,
    errno: Option<i32>,
}

impl OpenConn {
    /// Notes `e` as the reason the connection closes (the first OS error wins).
    pub fn failed(&mut self, e: &std::io::Error) {
        if self.errno.is_none() {
            self.errno = e.raw_os_error();
        }
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        match self.errno {
            None => {
                self.stats.close_total.fetch_add(1, Relaxed);
            }
            Some(e) => {
                let mut errors = self
                    .stats
                    .close_errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match errors.iter_mut().find(|(x, _)| *x == e) {
                    Some((_, n)) => *n += 1,
                    None => errors.push((e, 1)),
                }
            }
        }
        self.stats.open.fetch_sub(1, Relaxed);
    }
}

/// The symbolic name of an errno, as Linkerd labels `tcp_close_total` (`ECONNRESET`, …).
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc_errno::EPIPE => "EPIPE",
        libc_errno::ENETUNREACH => "ENETUNREACH",
        libc_errno::ECONNABORTED => "ECONNABORTED",
        libc_errno::ECONNRESET => "ECONNRESET",
        libc_errno::ETIMEDOUT => "ETIMEDOUT",
        libc_errno::ECONNREFUSED => "ECONNREFUSED",
        libc_errno::EHOSTUNREACH => "EHOSTUNREACH",
        libc_errno::EHOSTDOWN => "EHOSTDOWN",
        libc_errno::ENOTCONN => "ENOTCONN",
        libc_errno::EBADF => "EBADF",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// The Linux errno values named in metrics.
mod libc_errno {
    pub const EBADF: i32 = 9;
    pub const EPIPE: i32 = 32;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNABORTED: i32 = 103;
    pub const ECONNRESET: i32 = 104;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
}

impl TcpStats {
    /// Counts a connection opening until the returned guard drops.
    pub fn open(self: &Arc<Self>) -> OpenConn {
        self.open_total.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
        OpenConn {
            stats: self.clone(),
            errno: None,
        }
    }

    /// Bytes read from the peer.
    pub fn add_read(&self, n: usize) {
        self.read.fetch_add(n as u64, Relaxed);
    }

    /// Bytes written to the peer.
    pub fn add_write(&self, n: usize) {
        self.write.fetch_add(n as u64, Relaxed);
    }
}

/// A named counter family (`inbound_http_authz_deny_total`, …): its help text and series.
type CounterFamily = (&'static str, HashMap<String, Arc<AtomicU64>>);

/// Linkerd's default retention of idle series.
pub const DEFAULT_RETAIN_IDLE: Duration = Duration::from_secs(600);

/// When each label set nothing holds was last seen changing: (its counters, then).
type Seen = HashMap<String, (u64, std::time::Instant)>;

/// The families of HTTP series: each has Linkerd's `request_total`, `response_total` and
/// `response_latency_ms`, under its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// The golden series (per endpoint, or per target for what the proxy answers).
    Http,
    /// ServiceProfile route series (`route_*`, labelled `dst` and `rt_*`): one request and
    /// its final response, whatever the retries, as `linkerd viz routes` reads them.
    Route,
    /// ServiceProfile route series per attempt (`route_actual_*`): retries included.
    RouteActual,
}

impl Family {
    const ALL: [Family; 3] = [Family::Http, Family::Route, Family::RouteActual];

    fn prefix(self) -> &'static str {
        match self {
            Self::Http => "",
            Self::Route => "route_",
            Self::RouteActual => "route_actual_",
        }
    }
}

/// All series of one proxy.
#[derive(Debug)]
pub struct Registry {
    retain_idle: Duration,
    seen_http: [Mutex<Seen>; 3],
    seen_tcp: Mutex<Seen>,
    /// By [`Family`].
    http: [RwLock<HashMap<String, Arc<HttpStats>>>; 3],
    tcp: RwLock<HashMap<String, Arc<TcpStats>>>,
    counters: RwLock<std::collections::BTreeMap<&'static str, CounterFamily>>,
    /// The current certificate's expiry, in seconds since the epoch (0: none yet).
    cert_expiry: AtomicU64,
    /// Certificates installed.
    cert_refreshes: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_retain_idle(DEFAULT_RETAIN_IDLE)
    }
}

/// Drops from `map` the label sets nothing else holds whose counters (`count`) have not
/// changed for `idle`; `seen` remembers when each last changed.
fn evict_idle<T>(
    map: &RwLock<HashMap<String, Arc<T>>>,
    seen: &Mutex<Seen>,
    idle: Duration,
    count: impl Fn(&T) -> u64,
) {
    let now = std::time::Instant::now();
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
    map.retain(|labels, stats| {
        if Arc::strong_count(stats) > 1 {
            // Held by a connection, target or endpoint: in use, whatever its counters.
            seen.remove(labels);
            return true;
        }
        let c = count(stats);
        match seen.get(labels) {
            Some((last, since)) if *last == c => {
                if now.duration_since(*since) < idle {
                    return true;
                }
                seen.remove(labels);
                false
            }
            _ => {
                seen.insert(labels.clone(), (c, now));
                true
            }
        }
    });
    seen.retain(|labels, _| map.contains_key(labels));
}

fn get_or_insert<T>(
    map: &RwLock<HashMap<String, Arc<T>>>,
    key: String,
    make: impl FnOnce(String) -> T,
) -> Arc<T> {
    if let Some(v) = map.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return v.clone();
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.clone())
        .or_insert_with(|| Arc::new(make(key)))
        .clone()
}

impl Registry {
    /// A registry that drops a label set nothing holds once it has not changed for `idle`.
    pub fn with_retain_idle(idle: Duration) -> Self {
        Self {
            retain_idle: idle,
            seen_http: Default::default(),
            seen_tcp: Mutex::default(),
            http: Default::default(),
            tcp: RwLock::default(),
            counters: RwLock::default(),
            cert_expiry: AtomicU64::new(0),
            cert_refreshes: AtomicU64::new(0),
        }
    }

    /// The HTTP counters for `labels` (from [`labels`]).
    pub fn http(&self, labels: String) -> Arc<HttpStats> {
        self.family(Family::Http, labels)
    }

    /// The HTTP counters of `family` for `labels`.
    pub fn family(&self, family: Family, labels: String) -> Arc<HttpStats> {
        get_or_insert(&self.http[family as usize], labels, |labels| HttpStats {
            labels,
            requests: AtomicU64::new(0),
            statuses: RwLock::new(Vec::new()),
        })
    }

    /// The TCP counters for `labels`.
    pub fn tcp(&self, labels: String) -> Arc<TcpStats> {
        get_or_insert(&self.tcp, labels, |labels| TcpStats {
            labels,
            open_total: AtomicU64::new(0),
            close_total: AtomicU64::new(0),
            close_errors: Mutex::default(),
            open: AtomicI64::new(0),
            read: AtomicU64::new(0),
            write: AtomicU64::new(0),
        })
    }

    /// The counter `name{labels}` (created at zero); `help` describes the family.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: String) -> Arc<AtomicU64> {
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .and_then(|(_, f)| f.get(&labels))
        {
            return c.clone();
        }
        let mut w = self.counters.write().unwrap_or_else(PoisonError::into_inner);
        w.entry(name)
            .or_insert_with(|| (help, HashMap::new()))
            .1
            .entry(labels)
            .or_default()
            .clone()
    }

    /// A certificate valid until `valid_until` was installed (Linkerd's
    /// `identity_cert_expiration_timestamp_seconds` and `identity_cert_refresh_count`).
    pub fn certified(&self, valid_until: std::time::SystemTime) {
        let secs = valid_until
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.cert_expiry.store(secs, Relaxed);
        self.cert_refreshes.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        for (map, seen) in self.http.iter().zip(&self.seen_http) {
            evict_idle(map, seen, self.retain_idle, |h| {
                let responses: u64 = h
                    .statuses
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|s| {
                        let grpc: u64 = s
                            .grpc
                            .get()
                            .map_or(0, |c| c.iter().map(|n| n.load(Relaxed)).sum());
                        s.success.load(Relaxed) + s.failure.load(Relaxed) + grpc
                    })
                    .sum();
                h.requests.load(Relaxed) + responses
            });
        }
        evict_idle(&self.tcp, &self.seen_tcp, self.retain_idle, |t| {
            t.open_total.load(Relaxed) + t.read.load(Relaxed) + t.write.load(Relaxed)
        });
        let mut out = String::with_capacity(4096);
        process::render(&mut out);
        let expiry = self.cert_expiry.load(Relaxed);
        if expiry > 0 {
            let _ = writeln!(
                out,
                "# HELP identity_cert_expiration_timestamp_seconds Time when this proxy's current mTLS identity certificate will expire (in seconds since the UNIX epoch).\n# TYPE identity_cert_expiration_timestamp_seconds gauge\nidentity_cert_expiration_timestamp_seconds {expiry}"
            );
            let _ = writeln!(
                out,
                "# HELP identity_cert_refresh_count The total number of times this proxy's mTLS identity certificate has been refreshed by the Identity service.\n# TYPE identity_cert_refresh_count counter\nidentity_cert_refresh_count {}",
                self.cert_refreshes.load(Relaxed)
            );
        }
        for family in Family::ALL {
            let mut http: Vec<Arc<HttpStats>> = self.http[family as usize]
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .cloned()
                .collect();
            http.sort_by(|a, b| a.labels.cmp(&b.labels));
            render_http(&mut out, family, http);
        }
        let mut tcp: Vec<Arc<TcpStats>> = self
            .tcp
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        tcp.sort_by(|a, b| a.labels.cmp(&b.labels));

        type Pick = fn(&TcpStats) -> i64;
        let tcp_series: [(&str, &str, &str, Pick); 5] = [
            (
                "tcp_open_total",
                "counter",
                "Total count of opened connections.",
                |t| t.open_total.load(Relaxed) as i64,
            ),
            (
                "tcp_close_total",
                "counter",
                "Total count of closed connections.",
                |t| t.close_total.load(Relaxed) as i64,
            ),
            (
                "tcp_open_connections",
                "gauge",
                "Number of currently-open connections.",
                |t| t.open.load(Relaxed),
            ),
            (
                "tcp_read_bytes_total",
                "counter",
                "Total count of bytes read from peers.",
                |t| t.read.load(Relaxed) as i64,
            ),
            (
                "tcp_write_bytes_total",
                "counter",
                "Total count of bytes written to peers.",
                |t| t.write.load(Relaxed) as i64,
            ),
        ];
        for (name, kind, help, pick) in tcp_series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for t in &tcp {
                if name != "tcp_close_total" {
                    let _ = writeln!(out, "{name}{{{}}} {}", t.labels, pick(t));
                    continue;
                }
                let _ = writeln!(out, "{name}{{{},errno=\"\"}} {}", t.labels, pick(t));
                let errors = t.close_errors.lock().unwrap_or_else(PoisonError::into_inner);
                for (e, n) in errors.iter() {
                    let _ = writeln!(out, "{name}{{{},errno=\"{}\"}} {n}", t.labels, errno_name(*e));
                }
            }
        }
        for (name, (help, series)) in self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let mut series: Vec<_> = series.iter().collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{{{labels}}} {}", v.load(Relaxed));
            }
        }
        out
    }
}

/// Renders `http`, the series of `family`.
fn render_http(out: &mut String, family: Family, mut http: Vec<Arc<HttpStats>>) {
    let p = family.prefix();
    if family != Family::Http && http.iter().all(|h| h.requests.load(Relaxed) == 0) {
        // Route series exist only for targets with ServiceProfile routes.
        return;
    }
    let _ = writeln!(
        out,
        "# HELP {p}request_total Total count of HTTP requests.\n# TYPE {p}request_total counter"
    );
    // Label sets created ahead of use (targets resolved but never requested) stay silent.
    http.retain(|h| h.requests.load(Relaxed) > 0);
    for h in &http {
        let _ = writeln!(
            out,
            "{p}request_total{{{}}} {}",
            h.labels,
            h.requests.load(Relaxed)
        );
    }
    let statuses = |h: &HttpStats| {
        let mut v = h.statuses.read().unwrap_or_else(PoisonError::into_inner).clone();
        v.sort_by_key(|s| s.status);
        v
    };
    let _ = writeln!(
        out,
        "# HELP {p}response_total Total count of HTTP responses.\n# TYPE {p}response_total counter"
    );
    for h in &http {
        for s in statuses(h) {
            for (class, n) in [("success", &s.success), ("failure", &s.failure)] {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "{p}response_total{{{},status_code=\"{}\",classification=\"{class}\"}} {n}",
                        h.labels, s.status
                    );
                }
            }
            let codes = s
                .grpc
                .get()
                .map(|c| c.iter().map(|n| n.load(Relaxed)).collect::<Vec<u64>>());
            for code in 0..GRPC_CODES {
                let Some(codes) = &codes else { break };
                for (class, n) in [("success", codes[code]), ("failure", codes[GRPC_CODES + code])] {
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "{p}response_total{{{},status_code=\"{}\",classification=\"{class}\",grpc_status=\"{code}\"}} {n}",
                            h.labels, s.status
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP {p}response_latency_ms Elapsed times between a request's headers being received and its response's headers being sent.\n# TYPE {p}response_latency_ms histogram"
    );
    for h in &http {
        for s in statuses(h) {
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
                cumulative += s.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "{p}response_latency_ms_bucket{{{},status_code=\"{}\",le=\"{bound}\"}} {cumulative}",
                    h.labels, s.status
                );
            }
            cumulative += s.buckets[LATENCY_BUCKETS_MS.len()].load(Relaxed);
            let _ = writeln!(
                out,
                "{p}response_latency_ms_bucket{{{},status_code=\"{}\",le=\"+Inf\"}} {cumulative}",
                h.labels, s.status
            );
            let _ = writeln!(
                out,
                "{p}response_latency_ms_count{{{},status_code=\"{}\"}} {cumulative}",
                h.labels, s.status
            );
            let _ = writeln!(
                out,
                "{p}response_latency_ms_sum{{{},status_code=\"{}\"}} {}",
                h.labels,
                s.status,
                s.sum_us.load(Relaxed) as f64 / 1000.0
            );
        }
    }
}

/// The process's own series, as Prometheus client libraries (and linkerd2-proxy) export
/// them, from `/proc`: `process_start_time_seconds` is what `linkerd viz` finds meshed
/// pods by.
mod process {
    use std::fmt::Write as _;

    /// The clock ticks and page size `/proc` counts in.
    fn sysconf(name: libc::c_int, default: u64) -> u64 {
        // SAFETY: sysconf reads a configuration value; it has no preconditions.
        let v = unsafe { libc::sysconf(name) };
        u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(default)
    }

    /// The fields of `/proc/self/stat` after the command name (field 3 onwards).
    fn stat_fields() -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        // Field 3 (the state) is a letter: counted as 0 to keep the positions.
        Some(rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
    }

    fn boot_time() -> Option<u64> {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
    }

    fn max_fds() -> Option<u64> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
    }

    pub(super) fn render(out: &mut String) {
        let Some(f) = stat_fields() else { return };
        let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
        let ticks = sysconf(libc::_SC_CLK_TCK, 100);
        let page = sysconf(libc::_SC_PAGESIZE, 4096);
        let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        if let Some(boot) = boot_time() {
            gauge(
                "process_start_time_seconds",
                "gauge",
                "Time that the process started (in seconds since the UNIX epoch)",
                (boot + field(22) / ticks).to_string(),
            );
        }
        gauge(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            ((field(14) + field(15)) as f64 / ticks as f64).to_string(),
        );
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                fds.count().to_string(),
            );
        }
        if let Some(max) = max_fds() {
            gauge(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max.to_string(),
            );
        }
        gauge(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            field(23).to_string(),
        );
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (field(24) * page).to_string(),
        );
        gauge(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            field(20).to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_linkerd_names_labels_and_buckets() {
        let r = Registry::default();
        let h = r.http(labels(&[("direction", "inbound"), ("authority", "a\"b")]));
        h.request();
        h.request();
        h.response(200, true, Duration::from_micros(1500));
        h.response(503, false, Duration::from_millis(70_000));
        let t = r.tcp(labels(&[("direction", "inbound"), ("peer", "src")]));
        {
            let _c = t.open();
            t.add_read(10);
            t.add_write(7);
        }
        {
            let mut c = t.open();
            c.failed(&std::io::Error::from_raw_os_error(104));
            c.failed(&std::io::Error::from_raw_os_error(32));
        }
        let _still = t.open();
        let text = r.render();
        let l = r#"direction="inbound",authority="a\"b""#;
        for line in [
            format!("request_total{{{l}}} 2"),
            format!("response_total{{{l},status_code=\"200\",classification=\"success\"}} 1"),
            format!("response_total{{{l},status_code=\"503\",classification=\"failure\"}} 1"),
            // 1.5 ms is 1 ms, truncated as Linkerd's histograms count.
            format!("response_latency_ms_bucket{{{l},status_code=\"200\",le=\"1\"}} 1"),
            format!("response_latency_ms_bucket{{{l},status_code=\"200\",le=\"2\"}} 1"),
            format!("response_latency_ms_bucket{{{l},status_code=\"503\",le=\"50000\"}} 0"),
            format!("response_latency_ms_bucket{{{l},status_code=\"503\",le=\"+Inf\"}} 1"),
            format!("response_latency_ms_count{{{l},status_code=\"200\"}} 1"),
            format!("response_latency_ms_sum{{{l},status_code=\"200\"}} 1.5"),
            "tcp_open_total{direction=\"inbound\",peer=\"src\"} 3".to_string(),
            "tcp_close_total{direction=\"inbound\",peer=\"src\",errno=\"\"} 1".to_string(),
            "tcp_close_total{direction=\"inbound\",peer=\"src\",errno=\"ECONNRESET\"} 1".to_string(),
            "tcp_open_connections{direction=\"inbound\",peer=\"src\"} 1".to_string(),
            "tcp_read_bytes_total{direction=\"inbound\",peer=\"src\"} 10".to_string(),
            "tcp_write_bytes_total{direction=\"inbound\",peer=\"src\"} 7".to_string(),
            "# TYPE response_latency_ms histogram".to_string(),
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
        }
    }

    /// A label set nothing holds is dropped once it has been idle for the retention
    /// period; one still held, or still changing, stays.
    #[test]
    fn idle_series_nothing_holds_are_dropped() {
        let r = Registry::with_retain_idle(Duration::from_millis(50));
        let held = r.http(labels(&[("authority", "held")]));
        held.request();
        let gone = r.http(labels(&[("authority", "gone")]));
        gone.request();
        drop(gone);
        let busy = r.http(labels(&[("authority", "busy")]));
        busy.request();
        drop(busy);
        let tcp = r.tcp(labels(&[("peer", "src")]));
        drop(tcp.open());
        drop(tcp);
        assert!(r.render().contains("authority=\"gone\""), "first seen: kept");
        std::thread::sleep(Duration::from_millis(80));
        // `busy` changes again (through a new handle on its label set) before the scrape.
        r.http(labels(&[("authority", "busy")])).request();
        let text = r.render();
        assert!(!text.contains("authority=\"gone\""), "{text}");
        assert!(!text.contains("peer=\"src\""), "{text}");
        assert!(text.contains("authority=\"held\""), "{text}");
        assert!(text.contains("request_total{authority=\"busy\"} 2"), "{text}");
        // A dropped label set starts over when it comes back.
        r.http(labels(&[("authority", "gone")])).request();
        assert!(r.render().contains("request_total{authority=\"gone\"} 1"));
    }

    /// A response counts at the end of its body: a gRPC status in trailers decides its
    /// class, a body that fails midway fails it, and one dropped early counts as its
    /// headers said.
    #[tokio::test]
    async fn responses_are_classified_at_the_end_of_their_body() {
        use http_body_util::{BodyExt, StreamBody};
        type Frames = Vec<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>;
        let r = Registry::default();
        let stats = r.http(labels(&[("authority", "a")]));
        for _ in 0..4 {
            stats.request();
        }
        let trailers = |code: &str| {
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", code.parse().unwrap());
            hyper::body::Frame::trailers(t)
        };
        let body = |frames: Frames| StreamBody::new(futures::stream::iter(frames));
        let data = || Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"x")));
        let headers = http::Response::new(());
        let pending = |grpc_call| {
            Some(Pending::new(
                stats.clone(),
                Pending::head(&headers),
                grpc_call,
                Duration::from_millis(3),
                Classifier::Default,
            ))
        };
        let lines = |r: &Registry| -> Vec<String> {
            r.render()
                .lines()
                .filter(|l| l.starts_with("response_total{"))
                .map(str::to_string)
                .collect()
        };

        let b = Classified::new(body(vec![data(), Ok(trailers("13"))]), pending(true));
        assert!(lines(&r).is_empty(), "nothing counts before the end");
        b.collect().await.unwrap();
        let b = Classified::new(body(vec![data(), Ok(trailers("0"))]), pending(true));
        b.collect().await.unwrap();
        let b = Classified::new(
            body(vec![data(), Err(std::io::Error::other("reset"))]),
            pending(false),
        );
        assert!(b.collect().await.is_err());
        let mut early = Classified::new(body(vec![data(), data()]), pending(false));
        let _ = early.frame().await;
        drop(early);
        let a = r#"authority="a",status_code="200""#;
        assert_eq!(
            lines(&r),
            [
                format!("response_total{{{a},classification=\"success\"}} 1"),
                format!("response_total{{{a},classification=\"failure\"}} 1"),
                format!("response_total{{{a},classification=\"success\",grpc_status=\"0\"}} 1"),
                format!("response_total{{{a},classification=\"failure\",grpc_status=\"13\"}} 1"),
            ]
        );
        assert!(
            r.render()
                .contains(&format!("response_latency_ms_count{{{a}}} 4"))
        );
    }

    /// Linkerd's classes: a gRPC status fails the call only when the server failed.
    #[test]
    fn grpc_statuses_fail_as_linkerd_classifies_them() {
        let failing: Vec<u32> = (0..=16).filter(|c| grpc_is_failure(*c)).collect();
        assert_eq!(failing, [2, 4, 13, 14, 15]);
        let d = Classifier::Default;
        assert!(d.is_success(200, Some(0)));
        assert!(d.is_success(200, Some(5)), "NOT_FOUND is the caller's");
        assert!(d.is_success(200, Some(3)), "INVALID_ARGUMENT is the caller's");
        assert!(!d.is_success(200, Some(14)));
        assert!(!d.is_success(200, Some(2)));
        assert!(!d.is_success(503, None));
        assert!(d.is_success(404, None));
    }

    #[test]
    fn label_names_are_made_valid() {
        assert_eq!(label_name("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(label_name("pod_template_hash"), "pod_template_hash");
    }

    /// The process series `linkerd viz` and dashboards read, with plausible values; the
    /// identity series once a certificate is installed.
    #[test]
    fn renders_the_process_and_identity_series() {
        let r = Registry::default();
        let value = |text: &str, name: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        };
        let text = r.render();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value(&text, "process_start_time_seconds").expect("start time");
        assert!(
            started > now - 86_400.0 * 365.0 && started <= now + 1.0,
            "{started} vs {now}"
        );
        assert!(value(&text, "process_cpu_seconds_total").unwrap() >= 0.0);
        assert!(
            value(&text, "process_open_fds").unwrap() >= 3.0,
            "stdin, stdout, stderr at least"
        );
        assert!(value(&text, "process_max_fds").unwrap() >= value(&text, "process_open_fds").unwrap());
        assert!(value(&text, "process_resident_memory_bytes").unwrap() > 1_000_000.0);
        assert!(
            value(&text, "process_virtual_memory_bytes").unwrap()
                >= value(&text, "process_resident_memory_bytes").unwrap()
        );
        assert!(value(&text, "process_threads").unwrap() >= 1.0);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert_eq!(value(&text, "identity_cert_expiration_timestamp_seconds"), None);

        let until = std::time::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        r.certified(until);
        r.certified(until);
        let text = r.render();
        assert_eq!(
            value(&text, "identity_cert_expiration_timestamp_seconds"),
            Some(1.9e9)
        );
        assert_eq!(value(&text, "identity_cert_refresh_count"), Some(2.0));
    }
}
