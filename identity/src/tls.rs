//! rustls configurations that authenticate peers by *mesh identity*.
//!
//! Linkerd's mTLS does not verify hostnames: a client connects expecting the
//! server to hold a particular identity (it uses that identity as the TLS
//! server name), and a server learns who the client is from the client
//! certificate's DNS SAN. Both sides chain certificates to the trust anchors.
//!
//! Trust anchors are fixed per configuration: to rotate anchors, build new
//! configurations from new [`TrustAnchors`] and use them for new connections.
//! Certificates, on the other hand, are read from a [`CertStore`] at every
//! handshake, so they can be swapped without rebuilding anything.
//!
//! Only TLS 1.3 is offered (Linkerd's proxies speak nothing else) and session
//! resumption is disabled on both sides: a resumed session would skip
//! verification and report the identity of a certificate that may since have
//! been rotated away. ALPN is left to the caller; e.g.
//! `let mut c = Arc::unwrap_or_clone(client_config(..)); c.alpn_protocols =
//! vec![b"transport.l5d.io/v1".to_vec()];`.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, DistinguishedName, Error, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::anchors::TrustAnchors;
use crate::name::IdentityName;
use crate::store::CertStore;
use crate::x509;

/// TLS versions offered on every mesh connection.
static TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The one crypto provider used everywhere: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients must present a certificate chaining to the anchors (meshed
    /// traffic).
    Required,
    /// Clients may connect without a certificate (e.g. ingress, or gateways
    /// accepting unmeshed clients); a certificate that *is* presented must
    /// still verify. [`peer_identity`] is `None` for anonymous clients.
    Optional,
}

/// Client configuration for connecting to meshed servers.
///
/// Connect with the *expected server identity* as the server name
/// ([`IdentityName::server_name`]). The handshake succeeds only if the server's
/// certificate chains to `anchors` and its identity (first DNS SAN that is an
/// identity name) is exactly that identity. The client presents the current
/// certificate of `store`, if any.
///
/// The anchors are fixed for the lifetime of the returned configuration;
/// rebuild it to rotate anchors. Certificates in `store` can change at will.
pub fn client_config(store: &CertStore, anchors: &TrustAnchors) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)
        // Not input-dependent: ring always provides TLS 1.3 cipher suites.
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(anchors.verifiers.server.clone())
        .with_client_cert_resolver(Arc::new(store.clone()));
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// Server configuration for accepting meshed clients.
///
/// Serves the current certificate of `store` (handshakes fail while it is
/// empty). Client certificates must chain to `anchors` and carry a mesh
/// identity; whether one is required is decided by `auth`.
///
/// The anchors are fixed for the lifetime of the returned configuration;
/// rebuild it to rotate anchors. Certificates in `store` can change at will.
pub fn server_config(store: &CertStore, anchors: &TrustAnchors, auth: ClientAuth) -> Arc<ServerConfig> {
    let verifier: Arc<dyn ClientCertVerifier> = match auth {
        ClientAuth::Required => anchors.verifiers.client_required.clone(),
        ClientAuth::Optional => anchors.verifiers.client_optional.clone(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)
        // Not input-dependent: ring always provides TLS 1.3 cipher suites.
        .expect("the ring provider supports TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(store.clone()));
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// The authenticated identity of the peer of an established connection: the
/// identity in the verified leaf certificate's DNS SAN. `None` before the
/// handshake completes and for clients that presented no certificate.
///
/// Accepts any rustls connection (`&ServerConnection`, `&ClientConnection`
/// deref to [`CommonState`]), e.g. `peer_identity(tls_stream.get_ref().1)`.
pub fn peer_identity(conn: &CommonState) -> Option<IdentityName> {
    // rustls only records peer certificates once the verifier accepted them.
    let leaf = conn.peer_certificates()?.first()?;
    x509::identity_of_der(leaf)
}

/// The mesh identity a certificate carries (its first DNS SAN that is an
/// identity name), without verifying anything: for peers whose chain a
/// verifier already accepted, e.g. the certificates QUIC reports after a
/// handshake.
pub fn certificate_identity(der: &CertificateDer<'_>) -> Option<IdentityName> {
    x509::identity_of_der(der)
}

/// Returned (wrapped in a rustls certificate error) when a peer certificate
/// chains to the anchors but carries no mesh identity.
#[derive(Debug, thiserror::Error)]
#[error("peer certificate carries no mesh identity (DNS SANs: {presented:?})")]
pub struct NoMeshIdentity {
    /// The DNS SANs the certificate did carry.
    pub presented: Vec<String>,
}

fn dns_sans(der: &[u8]) -> Vec<String> {
    x509::parse(der)
        .map(|c| x509::dns_sans(&c).into_iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Puts ECDSA P-256/SHA-256 first: it is what Linkerd's proxies and our
/// issuer use, so peers should pick it.
fn preferred_schemes(mut schemes: Vec<SignatureScheme>) -> Vec<SignatureScheme> {
    if let Some(i) = schemes
        .iter()
        .position(|s| *s == SignatureScheme::ECDSA_NISTP256_SHA256)
    {
        let s = schemes.remove(i);
        schemes.insert(0, s);
    }
    schemes
}

/// The verifiers for one set of trust anchors, built once per
/// [`TrustAnchors`] so that configurations can be built infallibly.
#[derive(Clone, Debug)]
pub(crate) struct Verifiers {
    pub(crate) server: Arc<IdentityServerVerifier>,
    client_required: Arc<IdentityClientVerifier>,
    client_optional: Arc<IdentityClientVerifier>,
}

impl Verifiers {
    pub(crate) fn new(roots: Arc<RootCertStore>) -> Result<Self, VerifierBuilderError> {
        let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider()).build()?;
        let required = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build()?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .allow_unauthenticated()
            .build()?;
        let schemes = preferred_schemes(server.supported_verify_schemes());
        Ok(Verifiers {
            server: Arc::new(IdentityServerVerifier {
                inner: server,
                schemes: schemes.clone(),
            }),
            client_required: Arc::new(IdentityClientVerifier {
                inner: required,
                schemes: schemes.clone(),
            }),
            client_optional: Arc::new(IdentityClientVerifier {
                inner: optional,
                schemes,
            }),
        })
    }
}

/// Verifies a server: webpki chain (and name) validation, then an exact
/// comparison of the certificate's identity with the expected one. The exact
/// check matters because webpki's name matching would also accept wildcard
/// SANs, which a mesh identity never is.
#[derive(Debug)]
pub(crate) struct IdentityServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for IdentityServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let expected = match server_name {
            ServerName::DnsName(dns) => dns.as_ref().parse::<IdentityName>(),
            other => Err(crate::name::NameError::Malformed {
                name: other.to_str().into_owned(),
            }),
        }
        .map_err(|e| Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e)))))?;

        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;

        if x509::identity_of_der(end_entity).as_ref() != Some(&expected) {
            return Err(Error::InvalidCertificate(
                CertificateError::NotValidForNameContext {
                    expected: server_name.to_owned(),
                    presented: dns_sans(end_entity),
                },
            ));
        }
        Ok(verified)
    }

    delegate_signature_checks!(inner);

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Verifies a client: webpki chain validation (clientAuth usage), then
/// requires a mesh identity so that `peer_identity` is `Some` exactly when a
/// client certificate was accepted.
#[derive(Debug)]
struct IdentityClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    schemes: Vec<SignatureScheme>,
}

impl ClientCertVerifier for IdentityClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if x509::identity_of_der(end_entity).is_none() {
            let err = NoMeshIdentity {
                presented: dns_sans(end_entity),
            };
            return Err(Error::InvalidCertificate(CertificateError::Other(OtherError(
                Arc::new(err),
            ))));
        }
        Ok(verified)
    }

    delegate_signature_checks!(inner);

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p256_is_preferred() {
        let schemes = preferred_schemes(provider().signature_verification_algorithms.supported_schemes());
        assert_eq!(schemes[0], SignatureScheme::ECDSA_NISTP256_SHA256);
        assert_eq!(
            schemes.len(),
            provider()
                .signature_verification_algorithms
                .supported_schemes()
                .len()
        );
    }
}
