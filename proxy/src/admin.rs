//! The admin server (4191): `/ready` (503 until the first certificate), `/live`, and
//! `/metrics` in Prometheus text.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::metrics::Registry;
use crate::server::Drain;

/// Answers one admin request.
pub fn respond(path: &str, ready: bool, metrics: &Registry) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/ready" if ready => (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n")),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from_static(b"not ready: waiting for an identity certificate\n"),
        ),
        "/live" => (StatusCode::OK, "text/plain", Bytes::from_static(b"live\n")),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(metrics.render()),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    };
    let mut rsp = Response::new(Full::new(body));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    rsp
}

/// Serves one admin connection.
pub async fn handle(tcp: TcpStream, ready: watch::Receiver<bool>, metrics: Arc<Registry>, drain: Drain) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let rsp = respond(req.uri().path(), *ready.borrow(), &metrics);
        async move { Ok::<_, Infallible>(rsp) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => { let _ = r; }
        _ = drain.signaled() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_identity() {
        let m = Registry::default();
        assert_eq!(respond("/ready", false, &m).status(), 503);
        assert_eq!(respond("/ready", true, &m).status(), 200);
        assert_eq!(respond("/live", false, &m).status(), 200);
        assert_eq!(respond("/metrics", false, &m).status(), 200);
        assert_eq!(respond("/nope", true, &m).status(), 404);
    }
}
