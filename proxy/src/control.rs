//! Connections to the control plane (Destination, Policy, Identity): gRPC channels over
//! plaintext, or over TLS that verifies the service's identity (`*_SVC_NAME`) under the
//! mesh's trust anchors, like Linkerd's proxy.
//!
//! - Identity: TLS without a client certificate (the proxy is asking for its first one).
//! - Destination and policy: mTLS with the proxy's own certificate, so a connection waits
//!   until the first certificate is issued. The certificate is read from the
//!   [`CertStore`] at every handshake: a renewed certificate is used by the next
//!   connection, established ones keep theirs.
//!
//! Invariant: a TLS channel never falls back to plaintext; a server that fails
//! verification is never spoken to, and why is logged (once per distinct failure) and
//! carried in the error every call on the channel returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use strait_identity::rustls::ClientConfig;
use strait_identity::{CertStore, IdentityName, TrustAnchors};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::env;

/// How long connecting to a controller (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A control-plane service, named as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `Destination` (`LINKERD2_PROXY_DESTINATION_SVC_*`).
    Destination,
    /// `InboundServerPolicies` / `OutboundPolicies` (`LINKERD2_PROXY_POLICY_SVC_*`).
    Policy,
    /// `Identity` (`LINKERD2_PROXY_IDENTITY_SVC_*`).
    Identity,
}

impl Service {
    /// The variable naming the identity the service must present.
    pub fn name_var(self) -> &'static str {
        match self {
            Self::Destination => env::DESTINATION_SVC_NAME,
            Self::Policy => env::POLICY_SVC_NAME,
            Self::Identity => env::IDENTITY_SVC_NAME,
        }
    }

    /// The variable giving the service's address.
    pub fn addr_var(self) -> &'static str {
        match self {
            Self::Destination => env::DESTINATION_SVC_ADDR,
            Self::Policy => env::POLICY_SVC_ADDR,
            Self::Identity => env::IDENTITY_SVC_ADDR,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Destination => "destination",
            Self::Policy => "policy",
            Self::Identity => "identity",
        })
    }
}

/// Why a control-plane connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The address is not a URI tonic accepts.
    #[error("{var}: {addr:?} is not a usable address: {reason}")]
    Address {
        var: &'static str,
        addr: String,
        reason: String,
    },
    /// TCP failed.
    #[error("cannot connect to the {service} service at {addr}: {source}")]
    Connect {
        service: Service,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The handshake failed: most often, the server is not who the name says.
    #[error(
        "TLS to the {service} service at {addr} failed: {reason}; it must present {identity} ({var}): is that the identity it serves?"
    )]
    Tls {
        service: Service,
        addr: String,
        identity: IdentityName,
        var: &'static str,
        reason: String,
    },
    /// Connecting took longer than [`CONNECT_TIMEOUT`].
    #[error("connecting to the {service} service at {addr} timed out after {CONNECT_TIMEOUT:?}")]
    Timeout { service: Service, addr: String },
}

/// Which certificate a control-plane client presents.
#[derive(Clone)]
pub enum ClientCert {
    /// None: the Identity service, before the proxy has a certificate.
    None,
    /// The proxy's own, from `store`; connections wait until `ready` turns true (the
    /// first certificate).
    Proxy {
        /// The proxy's certificate store.
        store: CertStore,
        /// True once the store holds a certificate.
        ready: watch::Receiver<bool>,
    },
}

/// A lazy gRPC channel to `service` at `addr` (`host:port`): TLS verifying `identity` when
/// given, else plaintext HTTP/2.
pub fn channel(
    service: Service,
    addr: &str,
    identity: Option<IdentityName>,
    anchors: &TrustAnchors,
    cert: ClientCert,
) -> Result<Channel, ControlError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| ControlError::Address {
        var: service.addr_var(),
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let Some(identity) = identity else {
        return Ok(endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy());
    };
    let (store, ready) = match cert {
        ClientCert::None => (CertStore::new(), None),
        ClientCert::Proxy { store, ready } => (store, Some(ready)),
    };
    let mut tls = Arc::unwrap_or_clone(strait_identity::client_config(&store, anchors));
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector {
        service,
        addr: addr.to_string(),
        identity,
        tls: Arc::new(tls),
        ready,
        last: Arc::default(),
    };
    // The connector applies its own timeout, after the wait for a certificate.
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// Dials a controller and completes TLS, verifying its identity.
#[derive(Clone)]
pub struct TlsConnector {
    service: Service,
    addr: String,
    identity: IdentityName,
    tls: Arc<ClientConfig>,
    ready: Option<watch::Receiver<bool>>,
    /// The last outcome logged, so a controller that keeps failing the same way is
    /// reported once, and the first success and recovery are reported too.
    last: Arc<Mutex<Last>>,
}

/// The last outcome of a [`TlsConnector`].
#[derive(Default)]
enum Last {
    #[default]
    Never,
    Connected,
    Failed(String),
}

impl TlsConnector {
    /// One connection: waits for a client certificate if one is needed, then TCP + TLS.
    pub async fn connect(&self) -> Result<TlsStream<TcpStream>, ControlError> {
        if let Some(ready) = &self.ready {
            let mut ready = ready.clone();
            // A closed channel means the proxy is shutting down; the dial below then fails
            // without a certificate, which is the right answer.
            let _ = ready.wait_for(|r| *r).await;
        }
        let result = tokio::time::timeout(CONNECT_TIMEOUT, self.dial())
            .await
            .unwrap_or_else(|_| {
                Err(ControlError::Timeout {
                    service: self.service,
                    addr: self.addr.clone(),
                })
            });
        self.report(&result);
        result
    }

    async fn dial(&self) -> Result<TlsStream<TcpStream>, ControlError> {
        let tcp = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|source| ControlError::Connect {
                service: self.service,
                addr: self.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.identity.server_name(), tcp)
            .await
            .map_err(|e| ControlError::Tls {
                service: self.service,
                addr: self.addr.clone(),
                identity: self.identity.clone(),
                var: self.service.name_var(),
                reason: e.to_string(),
            })
    }

    fn report(&self, result: &Result<TlsStream<TcpStream>, ControlError>) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(tls) => {
                let peer = tls.get_ref().0.peer_addr().ok();
                match std::mem::replace(&mut *last, Last::Connected) {
                    Last::Never => {
                        tracing::info!(service = %self.service, addr = %self.addr, identity = %self.identity, "control plane reached over TLS")
                    }
                    Last::Failed(_) => {
                        tracing::info!(service = %self.service, addr = %self.addr, identity = %self.identity, "control plane reachable over TLS again")
                    }
                    Last::Connected => {}
                }
                tracing::debug!(service = %self.service, ?peer, identity = %self.identity, "control-plane TLS established");
            }
            Err(e) => {
                let msg = e.to_string();
                if matches!(&*last, Last::Failed(m) if *m == msg) {
                    tracing::debug!(error = %msg, "control-plane connection failed again");
                } else {
                    tracing::warn!(error = %msg, "control-plane connection refused");
                    *last = Last::Failed(msg);
                }
            }
        }
    }
}

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = ControlError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ControlError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ControlError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests;
