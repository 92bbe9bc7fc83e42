//! The admin server (4191), as linkerd2-proxy's, over plaintext HTTP/1 or HTTP/2, or
//! mTLS naming the proxy (meshed scrapers):
//!
//! - `GET /ready`: 503 until the first certificate, then 200;
//! - `GET /live`: 200;
//! - `GET /metrics`: every series in Prometheus text;
//! - `GET /proxy-log-level`: the log level in effect; `PUT` with a new level (Linkerd's
//!   syntax, `warn,linkerd=debug`) in the body changes it (from localhost only);
//! - `POST /shutdown`: a graceful shutdown, when `LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED`
//!   allows it (from localhost only; `linkerd-await --shutdown` ends a Job's proxy so).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::metrics::Registry;
use crate::server::Drain;

/// The largest `/proxy-log-level` body read.
const MAX_LEVEL_BYTES: usize = 4096;

/// What the admin server answers from.
#[derive(Clone)]
pub struct Admin {
    /// Whether the proxy has its first certificate.
    pub ready: watch::Receiver<bool>,
    /// The proxy's series.
    pub metrics: Arc<Registry>,
    /// With the shutdown endpoint enabled: sending `true` starts the graceful shutdown.
    pub shutdown: Option<watch::Sender<bool>>,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    rsp
}

fn localhost_only() -> Response<Full<Bytes>> {
    text(
        StatusCode::FORBIDDEN,
        "Requests are only permitted from localhost.\n",
    )
}

impl Admin {
    /// Whether `client` may use the endpoints that change the proxy: a loopback address,
    /// so a process of the pod (its own network namespace, under transparent capture).
    /// Explicit capture, where pods share the host's loopback, isolates nothing: there any
    /// process of the machine counts, as it can reach every pod's application anyway.
    pub fn is_local(&self, client: IpAddr) -> bool {
        client.to_canonical().is_loopback()
    }

    /// Answers one request from `client`; `body` is the request body (read only for
    /// `PUT /proxy-log-level`).
    pub fn respond(&self, method: &Method, path: &str, client: IpAddr, body: &[u8]) -> Response<Full<Bytes>> {
        let local = self.is_local(client);
        match path {
            "/ready" if *self.ready.borrow() => text(StatusCode::OK, "ready\n"),
            "/ready" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: waiting for an identity certificate\n",
            ),
            "/live" => text(StatusCode::OK, "live\n"),
            "/metrics" => {
                let mut rsp = text(StatusCode::OK, self.metrics.render());
                rsp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                rsp
            }
            "/proxy-log-level" if !local => localhost_only(),
            "/proxy-log-level" => match *method {
                Method::GET => match crate::log::current() {
                    Some(level) => text(StatusCode::OK, format!("{level}\n")),
                    None => text(
                        StatusCode::NOT_FOUND,
                        "this proxy's log level cannot be changed\n",
                    ),
                },
                Method::PUT => {
                    let Ok(spec) = std::str::from_utf8(body) else {
                        return text(StatusCode::BAD_REQUEST, "the log level must be UTF-8 text\n");
                    };
                    match crate::log::set(spec) {
                        Ok(()) => {
                            tracing::info!(level = spec.trim(), "log level changed on the admin server");
                            text(StatusCode::NO_CONTENT, Bytes::new())
                        }
                        Err(crate::log::SetError::Invalid(e)) => {
                            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
                        }
                        Err(crate::log::SetError::NotInstalled) => text(
                            StatusCode::NOT_FOUND,
                            "this proxy's log level cannot be changed\n",
                        ),
                    }
                }
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT\n"),
            },
            "/shutdown" if *method != Method::POST => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
            "/shutdown" if !local => localhost_only(),
            "/shutdown" => match &self.shutdown {
                None => text(StatusCode::NOT_FOUND, "shutdown endpoint is not enabled\n"),
                Some(tx) => {
                    tracing::info!("shutdown requested on the admin server");
                    tx.send_replace(true);
                    text(StatusCode::OK, "shutdown\n")
                }
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// What an admin connection is served with: the mesh's TLS, for meshed scrapers.
#[derive(Clone)]
pub struct AdminTls {
    /// The mesh server config (client certificates optional).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The proxy's identity: only TLS naming it is terminated.
    pub local_identity: strait_identity::IdentityName,
}

/// How long an admin client may take to show what it speaks (and finish its TLS handshake).
const DETECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one admin connection, as linkerd2-proxy's admin server: plaintext HTTP/1 (a
/// kubelet probe, an unmeshed scraper) or HTTP/2, or either inside mTLS naming this
/// proxy's identity (a meshed Prometheus scraping through its own proxy, which sends
/// HTTP/2 over mTLS to a meshed pod's port). Anything else is closed.
pub async fn handle(
    mut tcp: TcpStream,
    admin: Admin,
    tls: AdminTls,
    limits: crate::config::Limits,
    drain: Drain,
) {
    use crate::detect::{self, ClientHello, Protocol};
    let client = tcp.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let mut buf = bytes::BytesMut::new();
    let first = match detect::read_and_detect(&mut tcp, &mut buf, true, DETECT_TIMEOUT).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(%client, error = %e, "admin connection failed during detection");
            return;
        }
    };
    match first {
        Protocol::Http1 | Protocol::Http2 => {
            let io = crate::io::PrefixedIo::new(buf, tcp);
            serve(io, first == Protocol::Http2, admin, client, &limits, &drain).await;
        }
        Protocol::Opaque => tracing::debug!(%client, "admin connection speaks neither HTTP nor TLS; closing"),
        Protocol::Tls => {
            match detect::read_client_hello(&mut tcp, &mut buf, DETECT_TIMEOUT).await {
                Ok(ClientHello::Sni(name)) if name.eq_ignore_ascii_case(tls.local_identity.as_str()) => {}
                Ok(hello) => {
                    tracing::debug!(%client, ?hello, "admin connection's TLS names another server; closing");
                    return;
                }
                Err(e) => {
                    tracing::debug!(%client, error = %e, "admin connection failed during TLS detection");
                    return;
                }
            }
            let accepted = tokio::time::timeout(
                DETECT_TIMEOUT,
                tls.acceptor.accept(crate::io::PrefixedIo::new(buf, tcp)),
            )
            .await;
            let mut tls_io = match accepted {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "admin TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%client, "admin TLS handshake timed out");
                    return;
                }
            };
            let mut buf = bytes::BytesMut::new();
            match detect::read_and_detect(&mut tls_io, &mut buf, false, DETECT_TIMEOUT).await {
                Ok(p @ (Protocol::Http1 | Protocol::Http2)) => {
                    let io = crate::io::PrefixedIo::new(buf, tls_io);
                    serve(io, p == Protocol::Http2, admin, client, &limits, &drain).await;
                }
                Ok(_) => tracing::debug!(%client, "admin connection speaks no HTTP inside TLS; closing"),
                Err(e) => tracing::debug!(%client, error = %e, "admin connection failed during detection"),
            }
        }
    }
}

/// Serves HTTP (HTTP/2 when `h2`) on an admin connection from `client`.
async fn serve<I: crate::client::Io>(
    io: I,
    h2: bool,
    admin: Admin,
    client: IpAddr,
    limits: &crate::config::Limits,
    drain: &Drain,
) {
    let svc = move |req: Request<Incoming>| {
        let admin = admin.clone();
        async move {
            let (parts, body) = req.into_parts();
            // A body is read only from a client allowed to send one.
            let body = if parts.method == Method::PUT
                && parts.uri.path() == "/proxy-log-level"
                && admin.is_local(client)
            {
                match Limited::new(body, MAX_LEVEL_BYTES).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        let rsp = text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("a log level of at most {MAX_LEVEL_BYTES} bytes\n"),
                        );
                        return Ok::<_, Infallible>(rsp.map(Either::Right));
                    }
                }
            } else {
                Bytes::new()
            };
            Ok(admin
                .respond(&parts.method, parts.uri.path(), client, &body)
                .map(Either::Right))
        }
    };
    crate::server::serve_http(io, h2, crate::server::Client::Peer, svc, limits, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(ready: bool, shutdown: bool) -> (Admin, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        let admin = Admin {
            ready: watch::channel(ready).1,
            metrics: Arc::default(),
            shutdown: shutdown.then_some(tx),
        };
        (admin, rx)
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 9));

    #[test]
    fn readiness_waits_for_identity() {
        let get = |a: &Admin, path| a.respond(&Method::GET, path, REMOTE, b"").status();
        let (not_ready, _) = admin(false, false);
        let (ready, _) = admin(true, false);
        assert_eq!(get(&not_ready, "/ready"), 503);
        assert_eq!(get(&ready, "/ready"), 200);
        assert_eq!(get(&not_ready, "/live"), 200);
        assert_eq!(get(&not_ready, "/metrics"), 200);
        assert_eq!(get(&ready, "/nope"), 404);
        let metrics = ready.respond(&Method::GET, "/metrics", REMOTE, b"");
        assert_eq!(metrics.headers()["content-type"], "text/plain; version=0.0.4");
    }

    /// `/shutdown`: POST only, from localhost only, and only when enabled, as Linkerd's.
    #[test]
    fn shutdown_is_posted_from_localhost_when_enabled() {
        let (disabled, rx) = admin(true, false);
        assert_eq!(
            disabled.respond(&Method::POST, "/shutdown", LOCAL, b"").status(),
            404
        );
        assert!(!*rx.borrow());
        let (enabled, rx) = admin(true, true);
        assert_eq!(
            enabled.respond(&Method::GET, "/shutdown", LOCAL, b"").status(),
            405
        );
        assert_eq!(
            enabled.respond(&Method::POST, "/shutdown", REMOTE, b"").status(),
            403
        );
        assert!(!*rx.borrow(), "refused requests start nothing");
        let v4_mapped = IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(
            enabled
                .respond(&Method::POST, "/shutdown", v4_mapped, b"")
                .status(),
            200
        );
        assert!(*rx.borrow(), "the shutdown started");
    }

    /// The log level is read and changed from localhost only; a level that does not read
    /// is refused with what was expected and changes nothing.
    #[test]
    fn the_log_level_is_read_and_changed_from_localhost() {
        let (a, _) = admin(true, false);
        let applied = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = applied.clone();
        crate::log::install("warn,linkerd=info", move |f| {
            seen.lock().unwrap().push(f.to_string());
            Ok(())
        });
        let body = |r: Response<Full<Bytes>>| {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(r.into_body().collect()).unwrap().to_bytes()
        };
        assert_eq!(
            a.respond(&Method::GET, "/proxy-log-level", REMOTE, b"").status(),
            403
        );
        assert_eq!(
            a.respond(&Method::PUT, "/proxy-log-level", REMOTE, b"debug")
                .status(),
            403
        );
        let got = a.respond(&Method::GET, "/proxy-log-level", LOCAL, b"");
        assert_eq!(got.status(), 200);
        assert_eq!(body(got), "warn,linkerd=info\n");
        let bad = a.respond(&Method::PUT, "/proxy-log-level", LOCAL, b"info,linkerd=loud");
        assert_eq!(bad.status(), 400);
        assert!(String::from_utf8_lossy(&body(bad)).contains("expected e.g. warn,linkerd=info"));
        assert_eq!(
            a.respond(&Method::PUT, "/proxy-log-level", LOCAL, b"info,linkerd=debug\n")
                .status(),
            204
        );
        assert_eq!(
            body(a.respond(&Method::GET, "/proxy-log-level", LOCAL, b"")),
            "info,linkerd=debug\n"
        );
        let applied = applied.lock().unwrap();
        assert_eq!(applied.len(), 1, "only the valid level was applied: {applied:?}");
        assert!(applied[0].contains("strait_proxy=debug"), "{applied:?}");
        assert_eq!(
            a.respond(&Method::POST, "/proxy-log-level", LOCAL, b"").status(),
            405
        );
    }
}
