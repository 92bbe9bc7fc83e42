//! The webhook over HTTPS: hyper 1 on a rustls TLS listener, answering AdmissionReviews
//! POSTed to `/` (what the webhook configuration names) or `/inject`.
//!
//! The caller owns the listener, the TLS configuration and the shutdown signal, so the
//! server runs the same on 0.0.0.0:8443 in a cluster and on 127.0.0.1:0 in a test. On
//! shutdown it stops accepting, lets requests in flight finish, and returns.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use super::webhook::{NamespaceSource, Webhook};

/// Largest request body read: a pod with everything in it is far smaller.
const MAX_BODY: usize = 8 << 20;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors), not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `webhook` on `listener` with `tls` until `shutdown` completes.
pub async fn serve<N: NamespaceSource>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    webhook: Arc<Webhook<N>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(connection(stream, acceptor.clone(), webhook.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

async fn connection<N: NamespaceSource>(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    webhook: Arc<Webhook<N>>,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "webhook: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("webhook: TLS handshake timed out");
            return;
        }
    };
    let service = service_fn(move |req| {
        let webhook = webhook.clone();
        async move { Ok::<_, Infallible>(route(&webhook, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "webhook: connection ended with an error");
            }
        }
        // The guard `wait_for` returns must not live across the await below.
        () = async { drop(stop.wait_for(|stopped| *stopped).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

async fn route<N: NamespaceSource>(webhook: &Webhook<N>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/" | "/inject") {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such path {path:?}; POST AdmissionReviews to / or /inject"),
        );
    }
    if req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed; POST an AdmissionReview", req.method()),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
            );
        }
    };
    match webhook.review(&body).await {
        Ok(review) => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&review).expect("reviews serialize"),
        ),
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
