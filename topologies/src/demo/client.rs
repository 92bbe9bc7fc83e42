//! `strait demo client`: requests at a fixed rate over a fixed number of connections,
//! and a [`Report`] of what came back.
//!
//! Worker `k` of `n` owns one connection and sends requests `k, k + n, k + 2n, …`, request
//! `i` scheduled at `start + i / rps`: the rate holds without a shared queue, and when a
//! worker falls behind it sends at once. Latency is measured from the *scheduled* time, so
//! a slow answer that delays the next request counts against that request too (no
//! coordinated omission). A failed connection is dropped and re-made on the next request.
//!
//! Through an explicit proxy (`--proxy`), HTTP/1 requests use the absolute form
//! (`GET http://authority/path`), as loopback-mode pods talk to their sidecar; HTTP/2 and
//! gRPC requests always carry `:authority`, so they only change where they connect.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::proto::{HELLO_PATH, HelloReply, HelloRequest};
use super::{Answer, BadValue, Identity, grpc};

/// Largest answer body the client reads.
const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// The protocol requests are sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection.
    Http1,
    /// HTTP/2 with prior knowledge (cleartext, no upgrade).
    Http2,
    /// gRPC `strait.demo.Demo/Hello` over HTTP/2.
    Grpc,
}

/// Where requests go: `http://host:port/path` or `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, the `Host` / `:authority` of every request.
    pub authority: String,
    /// The request path (with query), `/` by default; gRPC uses its method's path.
    pub path: String,
}

impl Target {
    /// Parses `text` given as `flag`.
    pub fn parse(flag: &str, text: &str) -> Result<Self, BadValue> {
        let bad = |why: &str| {
            BadValue::new(
                flag,
                format!(
                    "a URL like http://myapp.production.svc.cluster.local:8080/path or host:port ({why})"
                ),
                text,
            )
        };
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported: TLS is the mesh's job"));
        }
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.host().is_empty() {
            return Err(bad("no host"));
        }
        let port = auth.port_u16().unwrap_or(80);
        let authority = format!("{}:{port}", auth.host());
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Self { authority, path })
    }
}

/// When the client stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests.
    Requests(u64),
    /// When the next request would be scheduled this long after the start.
    Duration(Duration),
}

/// A client run.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where to.
    pub target: Target,
    /// How.
    pub protocol: Protocol,
    /// Requests per second, over all connections.
    pub rps: f64,
    /// When to stop.
    pub stop: Stop,
    /// Connections, each with one request in flight at a time.
    pub concurrency: usize,
    /// An explicit HTTP proxy (`host:port`) to connect to instead of the target.
    pub proxy: Option<String>,
    /// Bound on each request, connecting included.
    pub timeout: Duration,
    /// Whether the report lists every request ([`Report::timeline`]).
    pub timeline: bool,
}

impl ClientConfig {
    /// Checks the numbers; the message names the flag.
    pub fn validate(&self) -> Result<(), BadValue> {
        if !(self.rps.is_finite() && self.rps > 0.0 && self.rps <= 1e7) {
            return Err(BadValue::new(
                "--rps",
                "requests per second above 0 (at most 10000000)",
                self.rps.to_string(),
            ));
        }
        if !(1..=10_000).contains(&self.concurrency) {
            return Err(BadValue::new(
                "--concurrency",
                "a number of connections from 1 to 10000",
                self.concurrency.to_string(),
            ));
        }
        match self.stop {
            Stop::Requests(0) => return Err(BadValue::new("--requests", "at least 1", "0")),
            Stop::Duration(d) if d.is_zero() => {
                return Err(BadValue::new("--duration", "a duration above 0", "0"));
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err(BadValue::new("--timeout", "a duration above 0", "0"));
        }
        Ok(())
    }
}

/// Latency percentiles over every answered or failed request, milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// One server that answered, and how often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCount {
    /// Who.
    #[serde(flatten)]
    pub server: Identity,
    /// Answers that named it: every HTTP answer, successful or not, and successful gRPC
    /// answers (a gRPC failure is trailers-only, a status without a body).
    pub requests: u64,
}

/// What a run (or the run so far) saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The protocol used.
    pub protocol: Protocol,
    /// The target authority.
    pub authority: String,
    /// Requests completed (succeeded + failed).
    pub requests: u64,
    /// 2xx answers, gRPC status OK.
    pub succeeded: u64,
    /// Everything else: error statuses, timeouts, connection failures.
    pub failed: u64,
    /// `succeeded / requests`; 0 without requests.
    pub success_rate: f64,
    /// Seconds since the start.
    pub elapsed_seconds: f64,
    /// `requests / elapsed_seconds`.
    pub achieved_rps: f64,
    /// Latency from each request's scheduled time to its complete answer.
    pub latency_ms: Latency,
    /// Who answered, most answers first.
    pub servers: Vec<ServerCount>,
    /// Failures by kind (`HTTP 500`, `gRPC 14 UNAVAILABLE`, `connect: …`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// When the run started, milliseconds since the Unix epoch (to line the timeline up
    /// with events outside the client).
    #[serde(default)]
    pub started_unix_ms: u64,
    /// Every request, in completion order (with `--timeline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<Sample>>,
}

/// One request of a timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was scheduled, milliseconds after the start.
    pub at_ms: f64,
    /// From its scheduled time to its complete answer, milliseconds.
    pub latency_ms: f64,
    /// Whether it succeeded.
    pub ok: bool,
    /// The cluster of the server that answered, if any did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl Report {
    /// A human-readable summary, several lines.
    pub fn text(&self) -> String {
        let l = &self.latency_ms;
        let mut out = format!(
            "{} requests to {} ({:?}) in {:.1} s ({:.1}/s): {} succeeded, {} failed, success rate {:.2}%\n\
             latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
            self.requests,
            self.authority,
            self.protocol,
            self.elapsed_seconds,
            self.achieved_rps,
            self.succeeded,
            self.failed,
            self.success_rate * 100.0,
            l.p50,
            l.p90,
            l.p99,
            l.max
        );
        for s in &self.servers {
            out.push_str(&format!("  answered by {}: {}\n", s.server.label(), s.requests));
        }
        for (e, n) in &self.errors {
            out.push_str(&format!("  failed with {e}: {n}\n"));
        }
        out
    }

    /// One progress line.
    pub fn progress_line(&self) -> String {
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("{}={}", s.server.label(), s.requests))
            .collect();
        format!(
            "[{:>6.1}s] {} requests, {:.2}% success, p50 {:.3} ms, p99 {:.3} ms; {}",
            self.elapsed_seconds,
            self.requests,
            self.success_rate * 100.0,
            self.latency_ms.p50,
            self.latency_ms.p99,
            if servers.is_empty() {
                "no answers yet".into()
            } else {
                servers.join(", ")
            }
        )
    }
}

/// The outcome of one request.
#[derive(Debug)]
struct Outcome {
    ok: bool,
    server: Option<Identity>,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Recorder {
    latencies: Vec<Duration>,
    succeeded: u64,
    failed: u64,
    servers: HashMap<Identity, u64>,
    errors: BTreeMap<String, u64>,
    started_unix_ms: u64,
    timeline: Option<Vec<Sample>>,
}

impl Recorder {
    fn record_at(&mut self, at: Duration, latency: Duration, o: &Outcome) {
        if let Some(t) = self.timeline.as_mut() {
            t.push(Sample {
                at_ms: at.as_secs_f64() * 1000.0,
                latency_ms: latency.as_secs_f64() * 1000.0,
                ok: o.ok,
                cluster: o.server.as_ref().map(|s| s.cluster.clone()),
            });
        }
    }

    fn record(&mut self, latency: Duration, o: Outcome) {
        self.latencies.push(latency);
        if o.ok {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        if let Some(s) = o.server {
            *self.servers.entry(s).or_default() += 1;
        }
        if let Some(e) = o.error {
            *self.errors.entry(e).or_default() += 1;
        }
    }

    fn report(&self, config: &ClientConfig, elapsed: Duration) -> Report {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let pct = |p: f64| percentile(&sorted, p).as_secs_f64() * 1000.0;
        let requests = self.succeeded + self.failed;
        let mut servers: Vec<ServerCount> = self
            .servers
            .iter()
            .map(|(s, n)| ServerCount {
                server: s.clone(),
                requests: *n,
            })
            .collect();
        servers.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.server.cmp(&b.server)));
        let secs = elapsed.as_secs_f64();
        Report {
            protocol: config.protocol,
            authority: config.target.authority.clone(),
            requests,
            succeeded: self.succeeded,
            failed: self.failed,
            success_rate: if requests == 0 {
                0.0
            } else {
                self.succeeded as f64 / requests as f64
            },
            elapsed_seconds: secs,
            achieved_rps: if secs > 0.0 { requests as f64 / secs } else { 0.0 },
            latency_ms: Latency {
                p50: pct(50.0),
                p90: pct(90.0),
                p99: pct(99.0),
                max: sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            },
            servers,
            errors: self.errors.clone(),
            started_unix_ms: self.started_unix_ms,
            timeline: self.timeline.clone(),
        }
    }
}

/// The nearest-rank `p`th percentile of ascending `sorted`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Called with the report so far while a run goes on.
pub type Progress = Box<dyn Fn(&Report) + Send>;

/// Runs the client to its end; `progress` (if any) is called with the report so far every
/// `interval` while it runs.
pub async fn run(config: ClientConfig, progress: Option<(Duration, Progress)>) -> Result<Report, BadValue> {
    config.validate()?;
    let config = Arc::new(config);
    let recorder = Arc::new(Mutex::new(Recorder {
        started_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        timeline: config.timeline.then(Vec::new),
        ..Recorder::default()
    }));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for k in 0..config.concurrency {
        let (config, recorder) = (config.clone(), recorder.clone());
        workers.spawn(worker(k, config, recorder, start));
    }
    let reporter = progress.map(|(interval, f)| {
        let (config, recorder) = (config.clone(), recorder.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + interval, interval);
            loop {
                tick.tick().await;
                let report = recorder
                    .lock()
                    .expect("recorder")
                    .report(&config, start.elapsed());
                f(&report);
            }
        })
    });
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    if let Some(r) = reporter {
        r.abort();
    }
    let report = recorder
        .lock()
        .expect("recorder")
        .report(&config, start.elapsed());
    Ok(report)
}

async fn worker(k: usize, config: Arc<ClientConfig>, recorder: Arc<Mutex<Recorder>>, start: Instant) {
    let mut conn: Option<Conn> = None;
    let interval = 1.0 / config.rps;
    let mut i = k as u64;
    loop {
        let offset = Duration::from_secs_f64(i as f64 * interval);
        match config.stop {
            Stop::Requests(n) if i >= n => break,
            Stop::Duration(d) if offset >= d => break,
            _ => {}
        }
        let at = start + offset;
        tokio::time::sleep_until(at).await;
        let outcome = match tokio::time::timeout(config.timeout, one(&config, &mut conn)).await {
            Ok(o) => o,
            Err(_) => {
                conn = None;
                Outcome {
                    ok: false,
                    server: None,
                    error: Some(format!("timeout after {:?}", config.timeout)),
                }
            }
        };
        let latency = at.elapsed();
        let mut r = recorder.lock().expect("recorder");
        r.record_at(offset, latency, &outcome);
        r.record(latency, outcome);
        drop(r);
        i += config.concurrency as u64;
    }
}

enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

async fn connect(config: &ClientConfig) -> Result<Conn, String> {
    let addr = config.proxy.as_deref().unwrap_or(&config.target.authority);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    match config.protocol {
        Protocol::Http1 => {
            let (send, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::H1(send))
        }
        Protocol::Http2 | Protocol::Grpc => {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::H2(send))
        }
    }
}

fn request(config: &ClientConfig) -> Request<Full<Bytes>> {
    let authority = &config.target.authority;
    let (method, path, body) = match config.protocol {
        Protocol::Grpc => (
            Method::POST,
            HELLO_PATH,
            grpc::encode(&HelloRequest {
                message: "hello".into(),
            }),
        ),
        _ => (Method::GET, config.target.path.as_str(), Bytes::new()),
    };
    // HTTP/1 goes origin-form to a server and absolute-form to a proxy; HTTP/2 always
    // carries scheme and authority as pseudo-headers.
    let uri = if config.protocol == Protocol::Http1 && config.proxy.is_none() {
        path.to_string()
    } else {
        format!("http://{authority}{path}")
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))
        .expect("a valid request");
    let h = req.headers_mut();
    if config.protocol == Protocol::Http1 {
        h.insert(
            header::HOST,
            HeaderValue::from_str(authority).expect("authority is a header value"),
        );
    }
    if config.protocol == Protocol::Grpc {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    req
}

fn failure(error: String) -> Outcome {
    Outcome {
        ok: false,
        server: None,
        error: Some(error),
    }
}

/// Whether `conn` can take a request: false once the server has closed it (after an
/// answer saying `connection: close`, or an idle close), which costs no request.
async fn usable(conn: &mut Conn) -> bool {
    match conn {
        Conn::H1(s) => s.ready().await.is_ok(),
        Conn::H2(s) => s.ready().await.is_ok(),
    }
}

async fn one(config: &ClientConfig, conn: &mut Option<Conn>) -> Outcome {
    // A connection closed since the last answer is made again, as HTTP clients do.
    if let Some(c) = conn.as_mut()
        && !usable(c).await
    {
        *conn = None;
    }
    if conn.is_none() {
        match connect(config).await {
            Ok(c) => *conn = Some(c),
            Err(e) => return failure(e),
        }
    }
    let req = request(config);
    let sent = match conn.as_mut().expect("connected above") {
        Conn::H1(s) => match s.ready().await {
            Ok(()) => s.send_request(req).await,
            Err(e) => Err(e),
        },
        Conn::H2(s) => match s.ready().await {
            Ok(()) => s.send_request(req).await,
            Err(e) => Err(e),
        },
    };
    let rsp = match sent {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            return failure(format!("request: {e}"));
        }
    };
    let (parts, body) = rsp.into_parts();
    // An answer that closes its connection (a proxy's error, as Linkerd's does): the next
    // request connects again.
    if parts
        .headers
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    {
        *conn = None;
    }
    let collected = match Limited::new(body, MAX_RESPONSE_BODY).collect().await {
        Ok(c) => c,
        Err(e) => {
            *conn = None;
            return failure(format!("response body: {e}"));
        }
    };
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    if config.protocol == Protocol::Grpc {
        return grpc_outcome(&parts, trailers.as_ref(), &body);
    }
    let server = serde_json::from_slice::<Answer>(&body).ok().map(|a| a.server);
    if parts.status.is_success() {
        return Outcome {
            ok: true,
            server,
            error: None,
        };
    }
    let mut error = format!("HTTP {}", parts.status.as_u16());
    if let Some(e) = parts.headers.get("l5d-proxy-error").and_then(|v| v.to_str().ok()) {
        error.push_str(&format!(" (l5d-proxy-error: {e})"));
    }
    Outcome {
        ok: false,
        server,
        error: Some(error),
    }
}

fn grpc_outcome(parts: &http::response::Parts, trailers: Option<&http::HeaderMap>, body: &[u8]) -> Outcome {
    if !parts.status.is_success() {
        return failure(format!("HTTP {} (gRPC call)", parts.status.as_u16()));
    }
    // Trailers-only answers carry the status in the headers.
    let status = trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    match status {
        Some(grpc::OK) => match grpc::decode::<HelloReply>(body) {
            Ok(reply) => Outcome {
                ok: true,
                server: Some(reply.identity()),
                error: None,
            },
            Err(e) => failure(e.to_string()),
        },
        Some(code) => failure(format!("gRPC {code} {}", grpc_code_name(code))),
        None => failure("gRPC answer without grpc-status".into()),
    }
}

fn grpc_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("(unknown code)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("URL", "http://myapp.production.svc.cluster.local:8080/a?b=1").unwrap();
        assert_eq!(t.authority, "myapp.production.svc.cluster.local:8080");
        assert_eq!(t.path, "/a?b=1");
        let t = Target::parse("URL", "127.0.0.1:9").unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("127.0.0.1:9", "/"));
        assert_eq!(Target::parse("URL", "http://web").unwrap().authority, "web:80");
        let e = Target::parse("URL", "https://x:1").unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
        assert!(Target::parse("URL", "http://").is_err());
        assert!(Target::parse("URL", "not a url").is_err());
    }

    #[test]
    fn bad_numbers_name_their_flag() {
        let good = ClientConfig {
            target: Target::parse("URL", "127.0.0.1:1").unwrap(),
            protocol: Protocol::Http1,
            rps: 10.0,
            stop: Stop::Requests(1),
            concurrency: 1,
            proxy: None,
            timeout: Duration::from_secs(1),
            timeline: false,
        };
        assert_eq!(good.validate(), Ok(()));
        let flag = |c: ClientConfig| c.validate().unwrap_err().flag;
        assert_eq!(
            flag(ClientConfig {
                rps: 0.0,
                ..good.clone()
            }),
            "--rps"
        );
        assert_eq!(
            flag(ClientConfig {
                rps: f64::NAN,
                ..good.clone()
            }),
            "--rps"
        );
        assert_eq!(
            flag(ClientConfig {
                concurrency: 0,
                ..good.clone()
            }),
            "--concurrency"
        );
        assert_eq!(
            flag(ClientConfig {
                stop: Stop::Requests(0),
                ..good.clone()
            }),
            "--requests"
        );
        let zero = Stop::Duration(Duration::ZERO);
        assert_eq!(
            flag(ClientConfig {
                stop: zero,
                ..good.clone()
            }),
            "--duration"
        );
        assert_eq!(
            flag(ClientConfig {
                timeout: Duration::ZERO,
                ..good
            }),
            "--timeout"
        );
    }

    #[test]
    fn reports_count_percentiles_and_servers() {
        let config = ClientConfig {
            target: Target::parse("URL", "a:1").unwrap(),
            protocol: Protocol::Http1,
            rps: 1.0,
            stop: Stop::Requests(1),
            concurrency: 1,
            proxy: None,
            timeout: Duration::from_secs(1),
            timeline: false,
        };
        let id = |pod: &str| Identity {
            pod: pod.into(),
            ..Identity::default()
        };
        let mut r = Recorder::default();
        for ms in 1..=100 {
            let server = Some(id(if ms % 4 == 0 { "b" } else { "a" }));
            let ok = ms % 10 != 0;
            let error = (!ok).then(|| "HTTP 500".to_string());
            r.record(Duration::from_millis(ms), Outcome { ok, server, error });
        }
        let rep = r.report(&config, Duration::from_secs(10));
        assert_eq!((rep.requests, rep.succeeded, rep.failed), (100, 90, 10));
        assert!((rep.success_rate - 0.9).abs() < 1e-9);
        assert_eq!(rep.latency_ms.p50, 50.0);
        assert_eq!(rep.latency_ms.p90, 90.0);
        assert_eq!(rep.latency_ms.p99, 99.0);
        assert_eq!(rep.latency_ms.max, 100.0);
        assert_eq!(rep.servers[0].server.pod, "a");
        assert_eq!((rep.servers[0].requests, rep.servers[1].requests), (75, 25));
        assert_eq!(rep.errors["HTTP 500"], 10);
        assert_eq!(rep.achieved_rps, 10.0);
        let json: Report = serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
        assert_eq!(json, rep);
    }
}
