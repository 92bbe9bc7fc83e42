//! The proxy entry: where local Strait proxies hand the gateway their cross-cluster
//! connections (`strait gateway --proxy-entry ADDR`: one TCP listener for every link, each
//! request naming its link; or `--proxy-entry LINK=ADDR`, a listener for one link, as
//! before `strt` version 3).
//!
//! The exchange, on one TCP connection:
//!
//! 1. the proxy writes one `strt` open request ([`crate::proto::header`]): the link (the
//!    remote cluster's name), the remote service's authority and port, the protocol, and
//!    the identity it expects of the remote workload (or the mirror writes a watch request
//!    for the remote catalog, [`crate::catalog`], which travels the same way);
//! 2. the gateway opens one stream on that link with that target and passes
//!    the remote gateway's reply back unchanged: an acceptance names the application
//!    port of the endpoint the remote ingress chose; a refusal ends the connection;
//! 3. after an acceptance the proxy starts its own mTLS session (ClientHello first),
//!    which the gateways relay to the remote workload's proxy without reading it.
//!
//! Failures on this side are refusals too, in the same frame, so a proxy always learns
//! why: a bad or missing request (`malformed`, `unsupported-version`; a probe is
//! `malformed` here, probes are for links; so is a request that names no link at an
//! entry of several links), a link that is down, not configured here or fails while the
//! stream opens (`link-down`). The link a request names is not forwarded: the remote
//! gateway gets the request in the lowest version that carries it. The hop is plaintext
//! TCP inside the cluster: the header names only a service and an identity, and
//! everything after it is the proxy's TLS.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::link::LinkHandle;
use crate::links::Links;
use crate::proto::header::{self, EntryRequest, LINK_VERSION, LinkName, RefusalReason, Reply, Request};
use crate::relay::{self, Downstream, RelayError};

/// A TCP listener where local proxies open streams on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEntry {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The one link its streams go over; `None` for every link, each request naming
    /// its own.
    pub link: Option<String>,
}

/// How an entry finds the link of a request.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// Always this link (a request may name it, and no other).
    Link(LinkHandle),
    /// The link the request names; without a name, the only link if there is one.
    Named(Links),
}

impl Route {
    fn pick(&self, named: Option<&LinkName>) -> Result<LinkHandle, (RefusalReason, String)> {
        match (self, named) {
            (Route::Link(link), None) => Ok(link.clone()),
            (Route::Link(link), Some(n)) if n.as_str() == link.spec().name => Ok(link.clone()),
            (Route::Link(link), Some(n)) => Err((
                RefusalReason::LinkDown,
                format!(
                    "this proxy entry serves only the link to {}, not {n}: point the mirror at the gateway's entry for every link (`strait gateway --proxy-entry ADDR`)",
                    link.spec().name
                ),
            )),
            (Route::Named(links), Some(n)) => links.get(n.as_str()).ok_or_else(|| {
                (
                    RefusalReason::LinkDown,
                    format!(
                        "this gateway has no link to {n} (links: {}): apply a Link whose targetClusterName is {n}, or check the gateway's log for why it was not started",
                        listed(&links.handles(), "none")
                    ),
                )
            }),
            (Route::Named(links), None) => match links.handles().as_slice() {
                [only] => Ok(only.clone()),
                all => Err((
                    RefusalReason::Malformed,
                    format!(
                        "this entry serves every link of the gateway ({}) and the request names none: upgrade the proxy or mirror (strt version {LINK_VERSION} names the link)",
                        listed(all, "none yet")
                    ),
                )),
            },
        }
    }
}

/// The links' names, comma-separated, or `empty`.
fn listed(links: &[LinkHandle], empty: &str) -> String {
    if links.is_empty() {
        return empty.to_string();
    }
    let names: Vec<&str> = links.iter().map(|l| l.spec().name.as_str()).collect();
    names.join(", ")
}

/// How long a proxy has to send its request once connected.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the remote gateway has to answer an opened stream (its ingress
/// resolves and connects first).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(
    listener: TcpListener,
    route: Route,
    open_timeout: Duration,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let (cut, cut_rx) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(conn(tcp, peer, route.clone(), open_timeout, cut_rx.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "proxy entry accept failed"),
            },
            Some(_) = conns.join_next() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    crate::gateway::drain_connections(conns, grace, cut, "proxy entry").await;
}

async fn refuse(mut tcp: TcpStream, reason: RefusalReason, message: String) {
    let mut frame = Vec::with_capacity(64 + message.len());
    header::encode_reply(&Reply::Refused { reason, message }, header::VERSION, &mut frame);
    let _ = tcp.write_all(&frame).await;
    let _ = tcp.shutdown().await;
}

async fn conn(
    mut tcp: TcpStream,
    peer: SocketAddr,
    route: Route,
    open_timeout: Duration,
    cut: watch::Receiver<bool>,
) {
    let (request, pipelined) =
        match tokio::time::timeout(REQUEST_TIMEOUT, relay::read_entry_request(&mut tcp)).await {
            Ok(Ok((
                EntryRequest {
                    request: Request::Probe,
                    ..
                },
                _,
            ))) => {
                let message =
                    "a proxy entry takes open and watch requests; probes are for gateway links".to_string();
                return refuse(tcp, RefusalReason::Malformed, message).await;
            }
            Ok(Ok(r)) => r,
            Ok(Err(RelayError::Header(e))) => {
                tracing::info!(%peer, error = %e, "proxy entry: bad request");
                return refuse(tcp, e.refusal(), e.to_string()).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "proxy entry: connection ended before its request");
                return;
            }
            Err(_) => {
                let message = format!("no open request within {REQUEST_TIMEOUT:?}");
                return refuse(tcp, RefusalReason::Malformed, message).await;
            }
        };
    let EntryRequest { link, request } = request;
    let link = match route.pick(link.as_ref()) {
        Ok(link) => link,
        Err((reason, message)) => {
            tracing::info!(%peer, %reason, %message, "proxy entry: no link for the request");
            return refuse(tcp, reason, message).await;
        }
    };
    let metrics = link.metrics().clone();
    let name = link.spec().name.clone();
    let target = match &request {
        Request::Open(t) => t.to_string(),
        Request::Watch(resource) => format!("the {resource} catalog of {name}"),
        Request::Probe => "a probe".to_string(),
    };
    let (mut send, mut recv) = match link.open_request(&request, open_timeout).await {
        Ok(s) => s,
        Err(e) => {
            metrics.refusals.add(RefusalReason::LinkDown);
            tracing::info!(%peer, %target, error = %e, "proxy entry: no stream");
            return refuse(tcp, RefusalReason::LinkDown, e.to_string()).await;
        }
    };
    if !pipelined.is_empty() && send.write_all(&pipelined).await.is_err() {
        return refuse(tcp, RefusalReason::LinkDown, format!("link to {name} failed")).await;
    }
    let (reply, rest) = match tokio::time::timeout(REPLY_TIMEOUT, relay::read_reply(&mut recv)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = send.reset(relay::RELAY_ERROR);
            let message = format!("link to {name}: the stream to {target} failed before its reply: {e}");
            return refuse(tcp, RefusalReason::LinkDown, message).await;
        }
        Err(_) => {
            let _ = send.reset(relay::RELAY_ERROR);
            let message = format!("link to {name}: no reply for {target} within {REPLY_TIMEOUT:?}");
            return refuse(tcp, RefusalReason::LinkDown, message).await;
        }
    };
    if let Reply::Refused { reason, message } = reply {
        metrics.refusals.add(reason);
        tracing::info!(%peer, %target, link = %name, %reason, %message, "remote gateway refused the stream");
        let _ = recv.stop(relay::RELAY_ERROR);
        return refuse(tcp, reason, message).await;
    }
    let mut frame = Vec::with_capacity(16);
    header::encode_reply(&reply, header::VERSION, &mut frame);
    if tcp.write_all(&frame).await.is_err() {
        let _ = send.reset(relay::RELAY_ERROR);
        return;
    }
    metrics.streams_open.fetch_add(1, Ordering::Relaxed);
    let result = relay::relay(
        tcp,
        send,
        recv,
        Downstream::Ready(rest),
        metrics.bytes.clone(),
        crate::gateway::until_set(cut),
    )
    .await;
    metrics.streams_open.fetch_sub(1, Ordering::Relaxed);
    if let Err(e) = result {
        tracing::debug!(%peer, %target, error = %e, "proxy entry relay ended with an error");
    }
}
