//! The controller's admin server: `/live` and `/ready` for probes (Linkerd: port 9990).

use std::future::Future;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves until `shutdown` resolves. `/ready` is 200 once `ready` says so (every index
/// holds the store's state: the gRPC listeners are bound before this starts), 503 until.
pub async fn serve(
    listener: TcpListener,
    ready: impl Fn() -> bool + Clone + Send + 'static,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let ready = ready();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/live" => (StatusCode::OK, "ok\n"),
                        "/ready" if ready => (StatusCode::OK, "ok\n"),
                        "/ready" => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: loading the cluster's state\n",
                        ),
                        _ => (StatusCode::NOT_FOUND, "not found: try /live or /ready\n"),
                    };
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .expect("static response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
