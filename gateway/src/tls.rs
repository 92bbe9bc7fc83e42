//! TLS for the QUIC link: mutual TLS 1.3 between gateway identities, with
//! session resumption configured so a gateway that lost its link can re-link
//! without a full handshake.
//!
//! Clients keep the server's session tickets ([`SessionState`]) and offer them when a
//! link reconnects; `strait gateway` issues stateless tickets keyed from its private
//! key ([`crate::tickets`]), so a restarted gateway resumes the sessions it issued
//! before. A link counts its resumed connections (`gateway_link_resumed_connections_total`), a
//! server the sessions it resumed (`gateway_inbound_resumed_sessions_total`).
//!
//! The client side reuses the identity crate's verifier (the server must hold
//! exactly the identity the link names, under the mesh anchors). The server
//! side verifies the client chain against the same anchors and then demands
//! that the client's identity is one of the accepted gateway identities — in
//! the handshake, so a wrong peer never gets a connection at all.
//!
//! Resumption and identity: a resumed session skips certificate verification,
//! so it carries the chain verified when the session was first made. The accepting
//! gateway therefore verifies the linking gateway's chain again after every handshake,
//! under its anchors and clock of the moment ([`verify_linking_peer`]); the linking side
//! offers a session only to the same server name (= expected identity) and trusts a
//! resumed server for as long as its tickets are accepted. With an in-memory cache
//! ([`SessionState::new`]) the server resumes only its own sessions (stateful
//! resumption: rustls accepts 0-RTT only for single-use stateful sessions, which is
//! also what defeats replay of the handshake); the identity crate's mesh configs disable
//! resumption altogether because proxies' certificates rotate daily and their
//! handshakes are cheap to repeat, whereas a gateway link is one connection
//! whose re-establishment time is what failover waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use strait_identity::rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use strait_identity::rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use strait_identity::rustls::crypto::CryptoProvider;
use strait_identity::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use strait_identity::rustls::server::{ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier};
use strait_identity::rustls::{self, CertificateError, DistinguishedName, OtherError, SignatureScheme};
use strait_identity::{
    CertStore, IdentityName, TrustAnchors, certificate_identity, client_config, pki_types,
};

use crate::tickets::Tickets;

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

/// Resumption state: the client's session cache (tickets of linked gateways) and how
/// this gateway, as a server, resumes sessions.
///
/// - [`SessionState::new`]: an in-memory server cache. Re-links to this process resume
///   (and may use 0-RTT); a restarted process does not.
/// - [`SessionState::with_ticket_secret`]: stateless tickets under keys derived from a
///   secret the gateway keeps across restarts ([`crate::tickets`]): a restarted gateway
///   resumes its predecessor's sessions. What `strait gateway` uses, with its key.
///
/// Keep one per process (or hand the same one to a restarted gateway in tests).
#[derive(Clone)]
pub struct SessionState {
    sessions: Arc<dyn ClientSessionStore>,
    server: ServerSessions,
    /// Sessions this gateway resumed for linking gateways (`gateway_inbound_resumed_total`).
    pub accepted: Arc<AtomicU64>,
}

#[derive(Clone)]
enum ServerSessions {
    Cache(Arc<dyn StoresServerSessions>),
    Tickets(Arc<Tickets>),
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

/// How many tickets a server sends per handshake: each failed re-link attempt to a
/// gateway that is down uses one up, so several keep a restart within a few backoff
/// rounds resumable (rustls keeps up to 8 per server).
const TICKETS_PER_HANDSHAKE: usize = 4;

impl SessionState {
    /// Fresh, empty in-memory caches.
    pub fn new() -> Self {
        let accepted = Arc::new(AtomicU64::new(0));
        SessionState {
            sessions: Arc::new(ClientSessionMemoryCache::new(256)),
            server: ServerSessions::Cache(Arc::new(CountingCache {
                inner: ServerSessionMemoryCache::new(1024),
                accepted: accepted.clone(),
            })),
            accepted,
        }
    }

    /// Stateless tickets keyed from `secret` (the gateway's private key): tickets this
    /// gateway issued still resume after it restarts with the same secret.
    pub fn with_ticket_secret(secret: &[u8]) -> Self {
        let accepted = Arc::new(AtomicU64::new(0));
        SessionState {
            sessions: Arc::new(ClientSessionMemoryCache::new(256)),
            server: ServerSessions::Tickets(Arc::new(Tickets::new(secret, accepted.clone()))),
            accepted,
        }
    }
}

/// The in-memory server cache, counting sessions it hands back for resumption.
#[derive(Debug)]
struct CountingCache {
    inner: Arc<dyn StoresServerSessions>,
    accepted: Arc<AtomicU64>,
}

impl StoresServerSessions for CountingCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.inner.get(key);
        if v.is_some() {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        v
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.inner.take(key);
        if v.is_some() {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        v
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// The mesh server verifier, counting the certificates it verifies: a handshake that
/// completes without a verification resumed a session.
#[derive(Debug)]
struct CountingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    verified: Arc<AtomicU64>,
}

impl ServerCertVerifier for CountingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &pki_types::CertificateDer<'_>,
        intermediates: &[pki_types::CertificateDer<'_>],
        server_name: &pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verified.fetch_add(1, Ordering::Relaxed);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    strait_identity::delegate_signature_checks!(inner);

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
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
/// identity of each link). `verified` counts the server certificates verified: a
/// handshake that adds none resumed a session.
pub fn quic_client_config(
    creds: &Credentials,
    verified: Arc<AtomicU64>,
) -> Result<QuicClientConfig, TlsError> {
    let mut config = Arc::unwrap_or_clone(client_config(&creds.store, &creds.anchors));
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(CountingVerifier {
            inner: creds.anchors.server_verifier(),
            verified,
        }));
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
    let verifier = PeerVerifier::new(&creds.anchors, accepted)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Verifier(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(creds.store.clone()));
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    match &creds.sessions.server {
        ServerSessions::Cache(cache) => {
            config.session_storage = cache.clone();
            // QUIC allows only 0 or u32::MAX here; 0-RTT needs stateful sessions.
            config.max_early_data_size = u32::MAX;
        }
        ServerSessions::Tickets(tickets) => {
            config.ticketer = tickets.clone();
            config.max_early_data_size = 0;
        }
    }
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

/// Verifies a linking gateway again after its handshake, with `verifier` (the one the
/// handshake uses): its certificate chain under the anchors at this moment, and its
/// identity among the accepted ones. A resumed session skips verification in the
/// handshake and carries the chain verified when the session was first made (stateless
/// tickets outlive the process that issued them), so this is what stops a peer whose
/// certificate expired, or whose anchors this gateway no longer trusts, from linking on
/// an old session.
pub fn verify_linking_peer(
    conn: &quinn::Connection,
    verifier: &PeerVerifier,
) -> Result<IdentityName, String> {
    let certs = conn
        .peer_identity()
        .and_then(|p| p.downcast::<Vec<pki_types::CertificateDer<'static>>>().ok())
        .ok_or("it presented no certificate")?;
    let (end, intermediates) = certs.split_first().ok_or("it presented no certificate")?;
    verifier
        .verify_client_cert(end, intermediates, pki_types::UnixTime::now())
        .map_err(|e| format!("its certificate is not accepted here now: {e}"))?;
    certificate_identity(end).ok_or_else(|| "its certificate carries no mesh identity".into())
}

/// Verifies again, now, the certificate a linked gateway presented when the session a
/// connection resumed was first made: a resumed handshake proves the server holds the
/// session's secret, not that its certificate is still valid (it may have expired, or
/// the session may predate a change of identity), so the linking side checks that chain
/// against its anchors and the link's identity as a full handshake would.
pub fn verify_resumed_server(
    conn: &quinn::Connection,
    verifier: &dyn ServerCertVerifier,
    identity: &IdentityName,
) -> Result<(), rustls::Error> {
    let certs = conn
        .peer_identity()
        .and_then(|p| p.downcast::<Vec<pki_types::CertificateDer<'static>>>().ok())
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    let (end, intermediates) = certs
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    verifier
        .verify_server_cert(
            end,
            intermediates,
            &identity.server_name(),
            &[],
            pki_types::UnixTime::now(),
        )
        .map(|_| ())
}

impl SessionState {
    /// Forgets every session ticket of `identity`'s server: the next link attempt makes a
    /// full handshake.
    pub(crate) fn forget_server(&self, identity: &IdentityName) {
        let name = identity.server_name();
        while self.sessions.take_tls13_ticket(&name).is_some() {}
        self.sessions.remove_tls12_session(&name);
    }
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

/// Verifies linking gateways: a chain under the mesh anchors, and an identity among the
/// accepted ones.
#[derive(Debug)]
pub struct PeerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    accepted: Vec<IdentityName>,
}

impl PeerVerifier {
    /// A verifier of gateways whose identity is in `accepted`, under `anchors`.
    pub fn new(anchors: &TrustAnchors, accepted: Vec<IdentityName>) -> Result<Arc<Self>, TlsError> {
        let inner = WebPkiClientVerifier::builder_with_provider(anchors.root_store(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(Arc::new(PeerVerifier { inner, accepted }))
    }
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

    strait_identity::delegate_signature_checks!(inner);

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
