//! Linkerd's gateway entry on 4143/tcp: where stock linkerd2-proxies (and Strait
//! proxies on networks that block UDP) reach this cluster's services from another
//! cluster, as they reach Linkerd's own gateway.
//!
//! The exchange, on one TCP connection:
//!
//! 1. mutual TLS 1.3: the gateway presents its own gateway identity; the client must
//!    present a mesh identity under the trust anchors and offer ALPN
//!    `transport.l5d.io/v1`;
//! 2. the client writes Linkerd's transport header ([`TransportHeader`]): `name` is the
//!    target service (`myapp.ns.svc.cluster.local`, a `:port` suffix is accepted too),
//!    `port` its service port;
//! 3. the gateway resolves the target through the same [`Resolve`] the QUIC ingress uses
//!    and opens its *own* connection to the chosen endpoint: meshed endpoints get mTLS
//!    with the gateway's identity (checked against the endpoint's) and a transport header
//!    naming the application port, unmeshed ones plain TCP; then it relays bytes.
//!
//! Identity, unlike the Strait path: here the gateway terminates the client's TLS, as
//! Linkerd's gateway does, so the server sees the *gateway's* identity, not the client's.
//! Only Strait proxies going through a proxy entry and the QUIC link keep their own mTLS
//! session end to end. Refusals have no frame in Linkerd's protocol: the connection is
//! closed, logged with its reason and counted in `gateway_entry_refusals_total`.
//!
//! The decisions ([`target_of`], [`upstream_plan`]) are pure; [`serve`] does the I/O.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use strait_identity::{CertStore, ClientAuth, TrustAnchors, peer_identity, server_config};
use strait_proxy::client::{ConnectPlan, Connector, Wire};
use strait_proxy::transport_header::{self, Decoded, SessionProtocol, TransportHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::metrics::EntryMetrics;
use crate::proto::header::{Authority, Protocol, RefusalReason, Target};
use crate::resolve::{Endpoint, Resolve};

/// How long a client has for its TLS handshake and transport header.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection to the entry was refused (closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The client's TLS handshake failed (no certificate, untrusted anchors, …).
    #[error(
        "TLS handshake failed: {0} (clients must present a mesh identity under this gateway's trust anchors)"
    )]
    Handshake(String),
    /// The client did not negotiate Linkerd's transport protocol.
    #[error(
        "the client negotiated ALPN {0:?}, not transport.l5d.io/v1 (is it a meshed proxy using the gateway endpoint's opaque-transport hint?)"
    )]
    Alpn(Option<String>),
    /// The transport header is missing or invalid.
    #[error("bad transport header: {0}")]
    Header(String),
    /// The header names no target: the client took the gateway for a proxy.
    #[error(
        "the transport header names no target service (name is empty); a gateway forwards to services by name"
    )]
    NoName,
    /// The header's `name` is not a service authority.
    #[error("the transport header's name {name:?} is not a service authority ({reason})")]
    BadName {
        /// What the client sent.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
}

impl EntryError {
    /// The refusal reason this counts as.
    pub fn refusal(&self) -> RefusalReason {
        RefusalReason::Malformed
    }
}

/// The target a transport header names (pure). `name` may carry a `:port` suffix, which
/// then wins over `port` (Linkerd's proxies send the name alone).
pub fn target_of(header: &TransportHeader) -> Result<Target, EntryError> {
    let name = header.name.as_deref().ok_or(EntryError::NoName)?;
    let (host, port) = match name.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| EntryError::BadName {
                    name: name.to_owned(),
                    reason: format!("port {port} is not 1-65535"),
                })?;
            (host, port)
        }
        _ => (name, header.port),
    };
    let authority =
        Authority::new(host.trim_end_matches('.').to_ascii_lowercase()).map_err(|e| EntryError::BadName {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
    let protocol = match header.protocol {
        None => Protocol::Opaque,
        Some(SessionProtocol::Http1) => Protocol::Http1,
        Some(SessionProtocol::Http2) => Protocol::Http2,
    };
    Ok(Target {
        authority,
        port,
        protocol,
        identity: None,
        endpoint: None,
    })
}

/// How the gateway reaches the endpoint it picked (pure): a meshed endpoint is dialed
/// with mTLS to its identity and a transport header naming the application port (and the
/// client's session protocol, so the endpoint's proxy skips detection); an unmeshed one
/// in plain TCP.
pub fn upstream_plan(endpoint: &Endpoint, protocol: Option<SessionProtocol>) -> ConnectPlan {
    let header = endpoint.identity.as_ref().map(|_| TransportHeader {
        port: endpoint.app_port.unwrap_or(endpoint.addr.port()),
        name: None,
        protocol,
    });
    ConnectPlan {
        addr: endpoint.addr,
        tls: endpoint.identity.clone(),
        header,
        wire: match protocol {
            Some(SessionProtocol::Http1) => Wire::Http1,
            Some(SessionProtocol::Http2) => Wire::Http2,
            None => Wire::Opaque,
        },
        gateway: None,
    }
}

/// The TLS server side of the entry: the gateway's certificate, clients required to
/// present a mesh identity under `anchors`, ALPN `transport.l5d.io/v1`.
pub fn acceptor(store: &CertStore, anchors: &TrustAnchors) -> TlsAcceptor {
    let mut config = Arc::unwrap_or_clone(server_config(store, anchors, ClientAuth::Required));
    config.alpn_protocols = vec![transport_header::ALPN.to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Everything one entry connection needs.
#[derive(Clone)]
pub(crate) struct Entry {
    pub acceptor: TlsAcceptor,
    pub connector: Arc<Connector>,
    pub resolver: Arc<dyn Resolve>,
    pub metrics: Arc<EntryMetrics>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    entry: Entry,
    grace: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let (cut, cut_rx) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(conn(tcp, peer, entry.clone(), cut_rx.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "Linkerd gateway entry: accept failed"),
            },
            Some(_) = conns.join_next() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // A stock proxy keeps its connections to the gateway pooled: they would never end.
    crate::gateway::drain_connections(conns, grace, cut, "Linkerd gateway entry").await;
}

async fn read_header<R: AsyncRead + Unpin>(io: &mut R) -> Result<(TransportHeader, Vec<u8>), EntryError> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        match TransportHeader::decode(&buf) {
            Decoded::Header(h, used) => return Ok((h, buf.split_off(used))),
            Decoded::Invalid(reason) => return Err(EntryError::Header(reason)),
            Decoded::NeedMore => {}
        }
        if buf.len() > transport_header::MAX_LEN + 64 {
            return Err(EntryError::Header("the header does not end".into()));
        }
        match io.read(&mut chunk).await {
            Ok(0) => {
                return Err(EntryError::Header(
                    "the connection ended inside the header".into(),
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(EntryError::Header(format!("reading it failed: {e}"))),
        }
    }
}

async fn conn(tcp: TcpStream, peer: SocketAddr, entry: Entry, cut: watch::Receiver<bool>) {
    let m = &entry.metrics;
    m.connections_total.fetch_add(1, Ordering::Relaxed);
    let refuse = |e: &EntryError, client: Option<&str>| {
        m.refusals.add(e.refusal());
        tracing::info!(%peer, client, error = %e, "Linkerd gateway entry: connection refused");
    };
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut tls = entry
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| EntryError::Handshake(e.to_string()))?;
        let alpn = tls.get_ref().1.alpn_protocol();
        if alpn != Some(transport_header::ALPN) {
            return Err(EntryError::Alpn(
                alpn.map(|a| String::from_utf8_lossy(a).into_owned()),
            ));
        }
        let (header, rest) = read_header(&mut tls).await?;
        Ok((tls, header, rest))
    })
    .await;
    let (mut tls, header, rest) = match accepted {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            if matches!(e, EntryError::Handshake(_)) {
                m.handshake_failures.fetch_add(1, Ordering::Relaxed);
            }
            return refuse(&e, None);
        }
        Err(_) => {
            let e = EntryError::Header(format!(
                "no TLS handshake and header within {HANDSHAKE_TIMEOUT:?}"
            ));
            return refuse(&e, None);
        }
    };
    let client = peer_identity(tls.get_ref().1).map(|i| i.to_string());
    let client = client.as_deref();
    let target = match target_of(&header) {
        Ok(t) => t,
        Err(e) => return refuse(&e, client),
    };
    let endpoint = match entry.resolver.resolve(&target).await {
        Ok(e) => e,
        Err(e) => {
            m.refusals.add(e.refusal());
            tracing::info!(%peer, client, %target, error = %e, "Linkerd gateway entry: no endpoint");
            return;
        }
    };
    let plan = upstream_plan(&endpoint, header.protocol);
    // Bytes count as they move, so a long connection shows in the metrics while it runs
    // and one that fails still counts what it carried.
    let mut upstream = match entry.connector.connect(&plan).await {
        Ok(io) => crate::relay::CountedIo::new(io, m.bytes.clone()),
        Err(e) => {
            m.refusals.add(RefusalReason::ConnectFailed);
            tracing::info!(%peer, client, %target, endpoint = %endpoint.addr, error = %e, "Linkerd gateway entry: cannot reach the endpoint");
            return;
        }
    };
    tracing::debug!(%peer, client, %target, endpoint = %endpoint.addr, "Linkerd gateway entry: relaying");
    if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
        return;
    }
    m.streams_total.fetch_add(1, Ordering::Relaxed);
    m.streams_open.fetch_add(1, Ordering::Relaxed);
    let moved = tokio::select! {
        moved = tokio::io::copy_bidirectional(&mut tls, &mut upstream) => moved.map(|_| ()),
        () = crate::gateway::until_set(cut) => {
            // The drain period is over: the client learns it as a reset, not an end.
            let _ = tls.get_ref().0.set_zero_linger();
            Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "the drain period is over"))
        }
    };
    m.streams_open.fetch_sub(1, Ordering::Relaxed);
    if let Err(e) = moved {
        tracing::debug!(%peer, %target, error = %e, "Linkerd gateway entry: relay ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: Option<&str>, port: u16, protocol: Option<SessionProtocol>) -> TransportHeader {
        TransportHeader {
            port,
            name: name.map(str::to_owned),
            protocol,
        }
    }

    #[test]
    fn targets_come_from_the_name_and_port() {
        let cases = [
            (
                header(Some("myapp.production.svc.cluster.local"), 80, None),
                "myapp.production.svc.cluster.local:80",
                Protocol::Opaque,
            ),
            // A `:port` suffix wins (Strait's own convention in some tests).
            (
                header(
                    Some("myapp.production.svc.cluster.local:8080"),
                    80,
                    Some(SessionProtocol::Http2),
                ),
                "myapp.production.svc.cluster.local:8080",
                Protocol::Http2,
            ),
            // A fully qualified name with a trailing dot, in any case.
            (
                header(
                    Some("MyApp.production.svc.cluster.local."),
                    80,
                    Some(SessionProtocol::Http1),
                ),
                "myapp.production.svc.cluster.local:80",
                Protocol::Http1,
            ),
        ];
        for (h, want, protocol) in cases {
            let t = target_of(&h).unwrap();
            assert_eq!((t.to_string().as_str(), t.protocol), (want, protocol), "{h:?}");
            assert_eq!(t.identity, None);
        }
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        let cases = [
            (header(None, 80, None), "names no target"),
            (header(Some("myapp:0"), 80, None), "port 0 is not 1-65535"),
            (
                header(Some("my_app.production"), 80, None),
                "is not a service authority",
            ),
        ];
        for (h, want) in cases {
            let e = target_of(&h).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(e.refusal(), RefusalReason::Malformed);
        }
    }

    #[test]
    fn meshed_endpoints_get_mtls_and_a_header_naming_the_app_port() {
        let id: strait_identity::IdentityName =
            "myapp.production.serviceaccount.identity.linkerd.cluster.local"
                .parse()
                .unwrap();
        let meshed = Endpoint {
            addr: "10.0.0.1:4143".parse().unwrap(),
            identity: Some(id.clone()),
            app_port: Some(8080),
        };
        let p = upstream_plan(&meshed, Some(SessionProtocol::Http2));
        assert_eq!(p.addr, meshed.addr);
        assert_eq!(p.tls, Some(id));
        assert_eq!(
            p.header,
            Some(TransportHeader {
                port: 8080,
                name: None,
                protocol: Some(SessionProtocol::Http2)
            })
        );
        assert_eq!(p.gateway, None);
        // Without an app port (a static --target), the address's own port.
        let p = upstream_plan(
            &Endpoint {
                app_port: None,
                ..meshed
            },
            None,
        );
        assert_eq!(p.header.unwrap().port, 4143);
        let plain = Endpoint {
            addr: "10.0.0.2:8080".parse().unwrap(),
            identity: None,
            app_port: None,
        };
        let p = upstream_plan(&plain, Some(SessionProtocol::Http1));
        assert_eq!((p.tls, p.header), (None, None));
    }
}
