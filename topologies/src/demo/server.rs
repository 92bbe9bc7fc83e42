//! `strait demo server`: answers every request with who it is.
//!
//! One port speaks HTTP/1.1 and HTTP/2 with prior knowledge (told apart by the connection
//! preface) and gRPC (HTTP/2 with `content-type: application/grpc`, the
//! [`proto`](super::proto) service). Any HTTP path gets the JSON [`Answer`]; `/ready`
//! and `/live` are probes, never delayed or failed. Latency is added before answering;
//! failures (HTTP 500, gRPC UNAVAILABLE) come at an exact rate ([`FailureInjector`]).
//! Answers are rendered once at start-up, so serving costs little and a benchmark backend
//! stays out of the way.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::proto::{HELLO_PATH, HelloReply, HelloRequest};
use super::{Answer, BadValue, FailureInjector, Identity, grpc};

/// Requests bodies the server reads at most (they are discarded).
const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// How long in-flight requests may take to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a demo server answers and how.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// Who it says it is.
    pub identity: Identity,
    /// Added before every answer.
    pub latency: Duration,
    /// Fraction (0..=1) of requests answered with a failure.
    pub failure_rate: f64,
    /// Exact size of every HTTP body (and, as near as protobuf allows, every gRPC
    /// message); `None` for the bare answer.
    pub response_size: Option<usize>,
}

/// Counts of what a server answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests answered (probes excluded).
    pub requests: u64,
    /// Of them, injected failures.
    pub failures: u64,
}

/// The protocols a request can arrive with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    Grpc,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Http1, Protocol::Http2, Protocol::Grpc];

    fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
            Protocol::Grpc => "gRPC",
        }
    }
}

/// A configured server, ready to serve on any number of listeners.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    injector: FailureInjector,
    /// JSON bodies per protocol (HTTP/1.1, HTTP/2), ok and failed.
    bodies: [[Bytes; 2]; 2],
    grpc_reply: Bytes,
    ready: AtomicBool,
    requests: AtomicU64,
    failures: AtomicU64,
}

type Body = BoxBody<Bytes, Infallible>;

impl Server {
    /// Checks the configuration and renders the answers.
    pub fn new(config: ServerConfig) -> Result<Arc<Self>, BadValue> {
        if !(0.0..=1.0).contains(&config.failure_rate) {
            return Err(BadValue::new(
                "--failure-rate",
                "a fraction from 0 to 1",
                config.failure_rate.to_string(),
            ));
        }
        let body = |p: Protocol, failed: bool| json_body(&config, p, failed);
        let bodies = [
            [body(Protocol::Http1, false)?, body(Protocol::Http1, true)?],
            [body(Protocol::Http2, false)?, body(Protocol::Http2, true)?],
        ];
        let grpc_reply = grpc::encode(&grpc_reply(&config));
        Ok(Arc::new(Self {
            injector: FailureInjector::new(config.failure_rate),
            config,
            bodies,
            grpc_reply,
            ready: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    /// What it has answered so far.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Serves connections from `listener` until `shutdown` completes, then stops
    /// accepting, answers `/ready` with 503, and lets in-flight requests finish (bounded by
    /// [`DRAIN_TIMEOUT`]).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<ServerStats> {
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    // Out of descriptors or an aborted handshake: keep serving the others.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        self.ready.store(false, Ordering::Relaxed);
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        Ok(self.stats())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let is_grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        if is_grpc {
            return self.handle_grpc(req).await;
        }
        let protocol = if req.version() == Version::HTTP_2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        };
        if req.method() == Method::GET {
            match req.uri().path() {
                "/live" => return text(StatusCode::OK, "live\n"),
                "/ready" if self.ready.load(Ordering::Relaxed) => return text(StatusCode::OK, "ready\n"),
                "/ready" => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                _ => {}
            }
        }
        // Read (and drop) the request body so the connection can be reused.
        if Limited::new(req.into_body(), MAX_REQUEST_BODY)
            .collect()
            .await
            .is_err()
        {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or broken\n",
            );
        }
        let failed = self.answer_one().await;
        let body = self.bodies[(protocol == Protocol::Http2) as usize][failed as usize].clone();
        let status = if failed {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        let mut rsp = Response::new(Full::new(body).boxed());
        *rsp.status_mut() = status;
        rsp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        rsp
    }

    async fn handle_grpc(&self, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() != HELLO_PATH {
            let msg = format!(
                "unknown method {}; this server has {HELLO_PATH}",
                req.uri().path()
            );
            return grpc_status(grpc::UNIMPLEMENTED, &msg);
        }
        let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return grpc_status(grpc::INVALID_ARGUMENT, &format!("request body: {e}")),
        };
        if let Err(e) = grpc::decode::<HelloRequest>(&body) {
            return grpc_status(grpc::INVALID_ARGUMENT, &e.to_string());
        }
        if self.answer_one().await {
            return grpc_status(grpc::UNAVAILABLE, "injected failure");
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(grpc::OK));
        let frames = [
            Ok(Frame::data(self.grpc_reply.clone())),
            Ok(Frame::trailers(trailers)),
        ];
        let mut rsp = Response::new(StreamBody::new(futures::stream::iter(frames)).boxed());
        rsp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        rsp
    }

    /// Counts a request, waits the added latency, and says whether it fails.
    async fn answer_one(&self) -> bool {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let failed = self.injector.next_fails();
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        failed
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    rsp
}

/// A trailers-only gRPC response carrying `status`.
fn grpc_status(status: u32, message: &str) -> Response<Body> {
    let mut rsp = Response::new(Full::new(Bytes::new()).boxed());
    let h = rsp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(status));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    rsp
}

/// gRPC's `grpc-message` encoding: printable ASCII except `%` as is, the rest as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON answer for a protocol, padded to the response size.
fn json_body(config: &ServerConfig, protocol: Protocol, failed: bool) -> Result<Bytes, BadValue> {
    let mut answer = Answer {
        server: config.identity.clone(),
        protocol: protocol.name().into(),
        status: if failed { "injected failure" } else { "ok" }.into(),
        padding: String::new(),
    };
    let render = |a: &Answer| serde_json::to_vec(a).expect("answers serialize");
    let Some(size) = config.response_size else {
        return Ok(render(&answer).into());
    };
    // With one byte of padding the field is present; every further byte adds one.
    answer.padding = "x".into();
    let smallest = render(&answer).len();
    if size < smallest {
        // Name the largest minimum over all answers, so one retry with it works.
        let largest = Protocol::ALL
            .iter()
            .filter(|p| **p != Protocol::Grpc)
            .map(|p| {
                let mut a = answer.clone();
                a.protocol = p.name().into();
                a.status = "injected failure".into();
                render(&a).len()
            })
            .max()
            .unwrap_or(smallest);
        return Err(BadValue::new(
            "--response-size",
            format!("at least {largest} bytes (the JSON answer with this identity)"),
            size.to_string(),
        ));
    }
    answer.padding = "x".repeat(size - smallest + 1);
    let body = render(&answer);
    debug_assert_eq!(body.len(), size);
    Ok(body.into())
}

fn grpc_reply(config: &ServerConfig) -> HelloReply {
    let id = &config.identity;
    let mut reply = HelloReply {
        name: id.name.clone(),
        version: id.version.clone(),
        cluster: id.cluster.clone(),
        pod: id.pod.clone(),
        namespace: id.namespace.clone(),
        protocol: Protocol::Grpc.name().into(),
        padding: Vec::new(),
    };
    if let Some(size) = config.response_size {
        use prost::Message;
        // Grow the padding until the message reaches the size (the length prefix of the
        // field grows with it, so the exact size is not always reachable).
        let base = reply.encoded_len();
        reply.padding = vec![b'x'; size.saturating_sub(base + 3)];
        while reply.encoded_len() < size {
            reply.padding.push(b'x');
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(size: Option<usize>) -> ServerConfig {
        ServerConfig {
            identity: Identity {
                name: "myapp".into(),
                version: "v1".into(),
                cluster: "east".into(),
                pod: "myapp-v1-0".into(),
                namespace: "production".into(),
            },
            response_size: size,
            ..ServerConfig::default()
        }
    }

    #[test]
    fn bodies_have_the_exact_size_and_say_who_answered() {
        for p in [Protocol::Http1, Protocol::Http2] {
            for failed in [false, true] {
                let body = json_body(&config(Some(1024)), p, failed).unwrap();
                assert_eq!(body.len(), 1024);
                let a: Answer = serde_json::from_slice(&body).unwrap();
                assert_eq!(a.server, config(None).identity);
                assert_eq!(a.protocol, p.name());
            }
        }
        let bare = json_body(&config(None), Protocol::Http1, false).unwrap();
        let a: Answer = serde_json::from_slice(&bare).unwrap();
        assert_eq!((a.status.as_str(), a.padding.as_str()), ("ok", ""));
        use prost::Message;
        assert_eq!(grpc_reply(&config(Some(1024))).encoded_len(), 1024);
    }

    #[test]
    fn a_response_size_below_the_answer_is_refused_with_the_minimum() {
        let e = Server::new(config(Some(20))).unwrap_err();
        assert_eq!(e.flag, "--response-size");
        assert!(e.expected.starts_with("at least "), "{e}");
        let min: usize = e.expected["at least ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(Server::new(config(Some(min))).is_ok());
        assert!(Server::new(config(Some(min - 1))).is_err());
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% café"), "50%25 caf%C3%A9");
    }
}
