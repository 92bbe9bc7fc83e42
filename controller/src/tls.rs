//! TLS for the control plane's gRPC ports, the way stock Linkerd proxies expect it.
//!
//! A proxy speaks plaintext to a controller on loopback and TLS everywhere else, expecting
//! the server to present `linkerd-destination.linkerd.serviceaccount.identity.linkerd.<td>`
//! (destination and policy) or `linkerd-identity.linkerd…` (identity), the names the
//! injector puts in `LINKERD2_PROXY_*_SVC_NAME`. (Strait's proxies in explicit capture,
//! each pod on its own 127.x address, use TLS on loopback too when given the names.) Each port accepts
//! both: the first byte of a connection tells a TLS ClientHello (0x16) from HTTP/2's
//! preface. Client certificates are optional (a proxy asking for its first certificate has
//! none) but verified when presented. Server certificates come from the cluster's issuer
//! and are renewed before they expire, without dropping connections.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use strait_identity::{CertStore, ClientAuth, IdentityName, Issuer, TrustAnchors};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Lifetime of the control plane's own serving certificates.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The identity of the destination (and policy) service.
pub fn destination_identity(trust_domain: &str) -> Result<IdentityName, String> {
    IdentityName::new("linkerd-destination", "linkerd", trust_domain).map_err(|e| e.to_string())
}

/// The identity of the identity service.
pub fn identity_identity(trust_domain: &str) -> Result<IdentityName, String> {
    IdentityName::new("linkerd-identity", "linkerd", trust_domain).map_err(|e| e.to_string())
}

/// A serving identity whose certificate the issuer keeps fresh.
pub struct Serving {
    /// The certificate store the TLS config reads.
    pub certs: CertStore,
    /// The TLS configuration (HTTP/2 ALPN, optional client certificates).
    pub config: Arc<ServerConfig>,
}

/// Issues `identity` a serving certificate and builds its TLS config.
pub fn serving(
    issuer: &Issuer,
    anchors: &TrustAnchors,
    identity: &IdentityName,
    now: SystemTime,
) -> Result<Serving, String> {
    let (chain, key) = crate::api::issue(issuer, identity, SERVING_LIFETIME, now)?;
    let certs = CertStore::with_cert(chain, key).map_err(|e| e.to_string())?;
    let mut config = Arc::unwrap_or_clone(strait_identity::server_config(
        &certs,
        anchors,
        ClientAuth::Optional,
    ));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Serving {
        certs,
        config: Arc::new(config),
    })
}

/// Renews the serving certificates at half their lifetime, forever.
pub async fn renew(issuer: Issuer, identities: Vec<(IdentityName, CertStore)>) {
    loop {
        tokio::time::sleep(SERVING_LIFETIME / 2).await;
        for (id, store) in &identities {
            match crate::api::issue(&issuer, id, SERVING_LIFETIME, SystemTime::now()) {
                Ok((chain, key)) => {
                    if let Err(e) = store.set(chain, key) {
                        tracing::error!(%id, error = %e, "cannot install the renewed serving certificate");
                    }
                }
                Err(e) => tracing::error!(%id, error = %e, "cannot renew the serving certificate"),
            }
        }
    }
}

/// One accepted connection, in plaintext or TLS.
pub enum Conn {
    /// Plaintext (HTTP/2 prior knowledge).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(s) => s.connect_info(),
            Conn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How long a connection may take to send its first byte or finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn classify(tcp: TcpStream, acceptor: Option<TlsAcceptor>) -> std::io::Result<Conn> {
    let Some(acceptor) = acceptor else {
        return Ok(Conn::Plain(tcp));
    };
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no data"))??;
    if n == 1 && first[0] == 0x16 {
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
        Ok(Conn::Tls(Box::new(tls)))
    } else {
        Ok(Conn::Plain(tcp))
    }
}

/// The connections of `listener`, plaintext or (when `tls` is given) TLS, as tonic's
/// incoming stream. Connections that fail to start are logged and dropped; accepting goes
/// on concurrently so one slow client cannot hold up others.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
) -> impl Stream<Item = std::io::Result<Conn>> + Send + 'static {
    let acceptor = tls.map(TlsAcceptor::from);
    tokio_stream::wrappers::TcpListenerStream::new(listener)
        .filter_map(|r| futures::future::ready(r.ok()))
        .map(move |tcp| classify(tcp, acceptor.clone()))
        .buffer_unordered(64)
        .filter_map(|r| {
            futures::future::ready(match r {
                Ok(c) => Some(Ok(c)),
                Err(e) => {
                    tracing::debug!(error = %e, "connection dropped before gRPC");
                    None
                }
            })
        })
}
