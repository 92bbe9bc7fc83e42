//! TLS for the QUIC link: mutual TLS 1.3 between gateway identities, with
//! session resumption configured so a gateway that lost its link can re-link
//! without a full handshake.
//!
//! Status: clients store the server's session tickets and offer them, but the
//! tickets carry no early-data allowance yet, so no 0-RTT happens, and a
//! reconnect loop against a dead peer uses the (single-use) tickets up; the
//! gateway tests measure this (`resumed_connections` stays 0).
//!
//! The client side reuses the identity crate's verifier (the server must hold
//! exactly the identity the link names, under the mesh anchors). The server
//! side verifies the client chain against the same anchors and then demands
//! that the client's identity is one of the accepted gateway identities — in
//! the handshake, so a wrong peer never gets a connection at all.
//!
//! Resumption and identity: a resumed session skips certificate verification,
//! so it carries the identity verified when the session was first made. The
//! server keeps sessions in a bounded in-memory cache (stateful resumption:
//! rustls accepts 0-RTT only for single-use stateful sessions, which is also
//! what defeats replay of the handshake), and sessions are only offered to the same
//! server name (= expected identity), which bounds how long a rotated-away
//! certificate can be trusted; the identity crate's mesh configs disable
//! resumption altogether because proxies' certificates rotate daily and their
//! handshakes are cheap to repeat, whereas a gateway link is one connection
//! whose re-establishment time is what failover waits for.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use strait_identity::rustls::client::danger::HandshakeSignatureValid;
use strait_identity::rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use strait_identity::rustls::crypto::CryptoProvider;
use strait_identity::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use strait_identity::rustls::server::{ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier};
use strait_identity::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use strait_identity::{
    CertStore, IdentityName, TrustAnchors, certificate_identity, client_config, pki_types,
};

/// ALPN of the gateway link; a peer speaking anything else is refused.
pub const ALPN: &[u8] = b"strait-link/1";

/// Why TLS for the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The trust anchors could not back a client verifier.
    #[error("the trust anchors cannot verify gateway certificates: {0}")]
    Verifier(String),
    /// QUIC needs a TLS 1.3 AES-128-GCM suite in the provider.
    #[error("the TLS provider offers no QUIC initial cipher suite: {0}")]
    NoInitialSuite(String),
}

/// Resumption state that outlives one gateway instance: the client's session
/// cache and the server's session cache. Keep one per process (or hand the same
/// one to a restarted gateway) so re-links resume instead of handshaking.
#[derive(Clone)]
pub struct SessionState {
    sessions: Arc<dyn ClientSessionStore>,
    server_sessions: Arc<dyn StoresServerSessions>,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState").finish_non_exhaustive()
    }
}

impl Default for SessionState {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionState {
    /// Fresh, empty caches.
    pub fn new() -> Self {
        SessionState {
            sessions: Arc::new(ClientSessionMemoryCache::new(256)),
            server_sessions: ServerSessionMemoryCache::new(1024),
        }
    }
}

/// The gateway's identity material.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The gateway's own certificate and key (may be rotated at runtime).
    pub store: CertStore,
    /// The mesh trust anchors every peer must chain to.
    pub anchors: TrustAnchors,
    /// Resumption state.
    pub sessions: SessionState,
}

/// Client TLS for dialing linked gateways (the server name is the expected
/// identity of each link).
pub fn quic_client_config(creds: &Credentials) -> Result<QuicClientConfig, TlsError> {
    let mut config = Arc::unwrap_or_clone(client_config(&creds.store, &creds.anchors));
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = Resumption::store(creds.sessions.sessions.clone());
    config.enable_early_data = true;
    QuicClientConfig::try_from(config).map_err(|e| TlsError::NoInitialSuite(e.to_string()))
}

/// Server TLS for accepting links from gateways whose identity is in
/// `accepted`.
pub fn quic_server_config(
    creds: &Credentials,
    accepted: Vec<IdentityName>,
) -> Result<QuicServerConfig, TlsError> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(creds.anchors.root_store(), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(PeerVerifier { inner, accepted });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Verifier(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(creds.store.clone()));
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = creds.sessions.server_sessions.clone();
    config.send_tls13_tickets = 2;
    // QUIC allows only 0 or u32::MAX here; the link's first streams may ride 0-RTT.
    config.max_early_data_size = u32::MAX;
    QuicServerConfig::try_from(config).map_err(|e| TlsError::NoInitialSuite(e.to_string()))
}

/// The verified identity of a QUIC peer, from the certificates quinn reports.
pub fn quic_peer_identity(conn: &quinn::Connection) -> Option<IdentityName> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<pki_types::CertificateDer<'static>>>()
        .ok()?;
    certificate_identity(certs.first()?)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Refused in the handshake: a peer gateway chained to the anchors but with an
/// identity this gateway does not accept links from.
#[derive(Debug, thiserror::Error)]
#[error("gateway identity {presented} is not accepted here (accepted: {accepted})")]
pub struct UnacceptedPeer {
    /// What the peer presented (or "none").
    pub presented: String,
    /// What is accepted, comma-separated.
    pub accepted: String,
}

#[derive(Debug)]
struct PeerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    accepted: Vec<IdentityName>,
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &pki_types::CertificateDer<'_>,
        intermediates: &[pki_types::CertificateDer<'_>],
        now: pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let presented = certificate_identity(end_entity);
        if presented.as_ref().is_some_and(|p| self.accepted.contains(p)) {
            return Ok(verified);
        }
        let err = UnacceptedPeer {
            presented: presented.map_or_else(|| "none".to_owned(), |p| p.to_string()),
            accepted: self
                .accepted
                .iter()
                .map(IdentityName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(err)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
