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
        // On a dual-stack listener (`[::]`, Linkerd's default with IPv6 on) an IPv4 client
        // arrives as `::ffff:a.b.c.d`: policy, metrics and logs see the IPv4 address.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let conn = Drain {
            _slot: Some(Arc::new(permit)),
            ..drain.clone()
        };
        tokio::spawn(handle(tcp, peer, conn));
    }
}

/// Who is on the other end of a served HTTP connection, for [`serve_http`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// The local application (the outbound side): a peer proxy's
    /// [`crate::client::PROXY_CONNECTION`] is acted on, not passed to it.
    App,
    /// Anyone reaching the inbound side: a peer proxy learns from the header that the
    /// connection closes.
    Peer,
}

/// Serves one HTTP connection with `svc` (HTTP/2 when `h2`, its writes through a
/// [`crate::cork`]; else HTTP/1 with upgrades) until it ends, or until `drain` is
/// signalled and its in-flight requests are done.
///
/// An answer marked `l5d-proxy-connection: close` (an error of this proxy's, or of a
/// peer's inbound side) closes the connection after it, as linkerd2-proxy does: an
/// HTTP/1 answer says `connection: close`, an HTTP/2 connection finishes its in-flight
/// streams and goes away. Its client connects again, and may reach another replica.
pub async fn serve_http<I, S, F>(
    io: I,
    h2: bool,
    client: Client,
    svc: S,
    limits: &crate::config::Limits,
    drain: &Drain,
) where
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
    let close = Arc::new(tokio::sync::Notify::new());
    let closer = close.clone();
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        if req.method() == http::Method::CONNECT || req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(guard.clone());
        }
        let answer = svc(req);
        let closer = closer.clone();
        async move {
            let mut rsp = answer.await?;
            // This proxy's own answers have a body of their own; others stream.
            let own = matches!(rsp.body(), http_body_util::Either::Right(_));
            if close_after(rsp.headers_mut(), own, h2, client) {
                closer.notify_one();
            }
            Ok::<_, std::convert::Infallible>(rsp)
        }
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
            _ = close.notified() => {
                task.inner_mut().as_mut().graceful_shutdown();
                let _ = task.await;
            }
        }
    } else {
        // An HTTP/1 answer that closes the connection says so itself (`close_after`).
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

/// Whether the connection closes after an answer with `headers` (it carries
/// `l5d-proxy-connection: close`); readies them for `client`: `connection: close` on
/// HTTP/1, and the proxies' own header kept for a peer proxy only. On the inbound side
/// only this proxy's `own` answers count: an application's header is removed, so that it
/// cannot make its callers' proxies close their connections.
pub fn close_after(headers: &mut http::HeaderMap, own: bool, h2: bool, client: Client) -> bool {
    if client == Client::Peer && !own {
        headers.remove(crate::client::PROXY_CONNECTION);
        return false;
    }
    let marked = headers
        .get(crate::client::PROXY_CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if client == Client::App {
        // Between proxies only, whatever its value.
        headers.remove(crate::client::PROXY_CONNECTION);
    }
    if !marked {
        return false;
    }
    if !h2 {
        headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    true
}

/// The drain of the connection a request arrived on, for a task that carries the
/// request's tunnel (upgrade or `CONNECT`) after its HTTP exchange: holding it keeps the
/// tunnel under the connection limit and in the shutdown's wait.
pub fn tunnel_guard<B>(req: &http::Request<B>) -> Option<Drain> {
    req.extensions().get::<Drain>().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{PROXY_CONNECTION, ProxyError};

    fn headers(e: &ProxyError) -> http::HeaderMap {
        e.response().headers().clone()
    }

    #[test]
    fn an_error_closes_the_connection_it_came_on() {
        // To the application: HTTP/1 says `connection: close`; the proxies' own header
        // is not passed on.
        let mut h = headers(&ProxyError::NoEndpoints("myapp".into()));
        assert!(close_after(&mut h, true, false, Client::App));
        assert_eq!(h[http::header::CONNECTION], "close");
        assert!(!h.contains_key(PROXY_CONNECTION));
        // To a peer proxy over HTTP/2: the header tells it; HTTP/2 has no `connection`.
        let mut h = headers(&ProxyError::Upstream {
            addr: ([127, 0, 0, 1], 8080).into(),
            reason: "reset".into(),
        });
        assert!(close_after(&mut h, true, true, Client::Peer));
        assert_eq!(h[PROXY_CONNECTION], "close");
        assert!(!h.contains_key(http::header::CONNECTION));
        // A peer proxy's answer reaching the application: acted on, not passed on.
        let mut h = headers(&ProxyError::NoEndpoints("myapp".into()));
        assert!(close_after(&mut h, false, true, Client::App));
        assert!(!h.contains_key(PROXY_CONNECTION));
        // Answers a new connection would not change leave it open: a request the proxy
        // could not read, the request's own deadline.
        for e in [
            ProxyError::BadRequest("no target".into()),
            ProxyError::Timeout(std::time::Duration::from_secs(1)),
        ] {
            let mut h = headers(&e);
            assert!(!close_after(&mut h, true, false, Client::App), "{e}");
            assert!(!h.contains_key(http::header::CONNECTION), "{e}");
        }
        // Another value of the proxies' header never reaches the application.
        let mut h = http::HeaderMap::new();
        h.insert(PROXY_CONNECTION, http::HeaderValue::from_static("keep"));
        assert!(!close_after(&mut h, false, false, Client::App));
        assert!(!h.contains_key(PROXY_CONNECTION));
    }

    #[test]
    fn an_application_cannot_make_its_callers_close() {
        // The application's own answer carrying the header, on the inbound side: the
        // header is removed and the connection stays.
        let mut h = http::HeaderMap::new();
        h.insert(PROXY_CONNECTION, http::HeaderValue::from_static("close"));
        assert!(!close_after(&mut h, false, true, Client::Peer));
        assert!(!h.contains_key(PROXY_CONNECTION));
        assert!(!h.contains_key(http::header::CONNECTION));
    }
}
