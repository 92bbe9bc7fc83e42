//! Accept loops with connection limits, and graceful drain.
//!
//! Every connection task holds a [`Drain`] clone, which also holds the connection's slot
//! under the listener's limit; shutdown flips the signal (HTTP connections then finish
//! in-flight requests and close, opaque streams keep going), and waits until every clone
//! is dropped or the grace period ends. A connection that outlives its HTTP server (an
//! upgrade, a `CONNECT` tunnel) keeps a clone: it still counts under the limit and is
//! still waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

/// A connection's view of shutdown, and its slot under the listener's connection limit.
#[derive(Clone)]
pub struct Drain {
    signal: watch::Receiver<bool>,
    _tracker: mpsc::Sender<()>,
    _slot: Option<Arc<OwnedSemaphorePermit>>,
}

impl Drain {
    /// Resolves when shutdown starts.
    pub async fn signaled(&self) {
        let mut rx = self.signal.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether shutdown started.
    pub fn is_signaled(&self) -> bool {
        *self.signal.borrow()
    }
}

/// The shutdown side of [`Drain`].
pub struct DrainControl {
    signal: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

/// A new drain pair.
pub fn drain() -> (DrainControl, Drain) {
    let (tx, rx) = watch::channel(false);
    let (ttx, trx) = mpsc::channel(1);
    (
        DrainControl {
            signal: tx,
            done: trx,
        },
        Drain {
            signal: rx,
            _tracker: ttx,
            _slot: None,
        },
    )
}

impl DrainControl {
    /// Signals shutdown and waits up to `grace` for every connection to finish; `true`
    /// if all did.
    pub async fn drain(mut self, grace: Duration) -> bool {
        self.signal.send_replace(true);
        tokio::time::timeout(grace, async {
            // recv() is None once every Drain clone (and so every sender) is gone.
            while self.done.recv().await.is_some() {}
        })
        .await
        .is_ok()
    }
}

/// Accepts connections on `listener` until drain starts, at most `max` at once (the
/// excess are closed immediately, so a flood costs an accept and a close each).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max: usize,
    drain: Drain,
    what: &'static str,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Drain) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.signaled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(listener = what, %peer, max, "connection limit reached; closing");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Drain {
            _slot: Some(Arc::new(permit)),
            ..drain.clone()
        };
        tokio::spawn(handle(tcp, peer, conn));
    }
}

/// Serves one HTTP connection with `svc` (HTTP/2 when `h2`, its writes through a
/// [`crate::cork`]; else HTTP/1 with upgrades) until it ends, or until `drain` is
/// signalled and its in-flight requests are done.
pub async fn serve_http<I, S, F>(io: I, h2: bool, svc: S, limits: &crate::config::Limits, drain: &Drain)
where
    I: crate::client::Io,
    S: Fn(http::Request<hyper::body::Incoming>) -> F + Send + 'static,
    F: Future<Output = Result<http::Response<crate::client::RspBody>, std::convert::Infallible>>
        + Send
        + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    // A request that may turn the connection (or its stream) into a tunnel carries the
    // connection's drain into the task that joins the tunnel (see [`tunnel_guard`]).
    let guard = drain.clone();
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        if req.method() == http::Method::CONNECT || req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(guard.clone());
        }
        svc(req)
    });
    if h2 {
        // Answers ready together leave in one write (see `crate::cork`).
        let (io, cork) = crate::cork::cork(io);
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // RFC 8441: WebSocket (and more) over HTTP/2 streams.
            .enable_connect_protocol()
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut task = cork.task(conn.as_mut());
        tokio::select! {
            r = &mut task => { let _ = r; }
            _ = drain.signaled() => {
                task.inner_mut().as_mut().graceful_shutdown();
                let _ = task.await;
            }
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => { let _ = r; }
            _ = drain.signaled() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
        }
    }
}

/// The drain of the connection a request arrived on, for a task that carries the
/// request's tunnel (upgrade or `CONNECT`) after its HTTP exchange: holding it keeps the
/// tunnel under the connection limit and in the shutdown's wait.
pub fn tunnel_guard<B>(req: &http::Request<B>) -> Option<Drain> {
    req.extensions().get::<Drain>().cloned()
}
