//! A swappable holder for the local certificate and key.
//!
//! Proxies renew their leaf certificate long before it expires (Linkerd
//! certificates live 24h). Configurations hold a [`CertStore`] as their
//! certificate resolver, and rustls asks it at every handshake, so
//! [`CertStore::set`] makes new handshakes use the new certificate while
//! established connections, which already finished their handshake, are
//! untouched.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::name::IdentityName;
use crate::tls::provider;
use crate::x509;

/// Why a certificate could not be installed in a [`CertStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The chain holds no certificate.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// The leaf is not a parsable X.509 certificate.
    #[error("leaf certificate is not a valid X.509 certificate: {0}")]
    InvalidLeaf(#[source] x509_parser::error::X509Error),
    /// The key cannot be used for TLS by rustls/ring.
    #[error("private key is not usable for TLS: {0}")]
    UnusableKey(#[source] rustls::Error),
    /// The key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate")]
    KeyMismatch,
    /// The leaf certificate has no DNS SAN that is a mesh identity.
    #[error("leaf certificate carries no mesh identity (DNS SANs: {presented:?})")]
    NoIdentity { presented: Vec<String> },
}

struct Current {
    key: Arc<CertifiedKey>,
    identity: IdentityName,
}

/// A cheaply clonable, shared handle on the current certificate chain and key.
///
/// All clones see the same certificate. It starts empty (handshakes needing
/// a certificate fail until [`set`](Self::set) is called; as a client it then
/// simply presents none).
#[derive(Clone, Default)]
pub struct CertStore {
    current: Arc<RwLock<Option<Arc<Current>>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material; the identity is what matters when debugging.
        f.debug_struct("CertStore")
            .field("identity", &self.identity())
            .finish()
    }
}

impl CertStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `chain` (leaf first) and its `key`.
    pub fn with_cert(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, StoreError> {
        let store = Self::new();
        store.set(chain, key)?;
        Ok(store)
    }

    /// Replaces the certificate used for new handshakes. `chain` is leaf
    /// first, then intermediates (the issuer); `key` is the leaf's private key
    /// in PKCS#8, SEC1 or PKCS#1 DER. On error the previous certificate stays.
    pub fn set(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), StoreError> {
        let leaf = chain.first().ok_or(StoreError::EmptyChain)?;
        let identity = match x509::parse(leaf) {
            Ok(cert) => x509::identity(&cert).ok_or_else(|| StoreError::NoIdentity {
                presented: x509::dns_sans(&cert).into_iter().map(str::to_owned).collect(),
            })?,
            Err(e) => return Err(StoreError::InvalidLeaf(e)),
        };
        let signer = provider()
            .key_provider
            .load_private_key(key)
            .map_err(StoreError::UnusableKey)?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(StoreError::KeyMismatch);
            }
            Err(e) => return Err(StoreError::UnusableKey(e)),
        }
        let next = Arc::new(Current {
            key: Arc::new(certified),
            identity,
        });
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(next);
        Ok(())
    }

    /// Empties the store.
    pub fn clear(&self) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The current certificate and key, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.load().map(|c| c.key.clone())
    }

    /// The identity in the current leaf certificate, if any.
    pub fn identity(&self) -> Option<IdentityName> {
        self.load().map(|c| c.identity.clone())
    }

    fn load(&self) -> Option<Arc<Current>> {
        // A panic while holding the lock cannot leave the Option half-written,
        // so a poisoned lock is still safe to read.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // SNI is the identity the client expects; we have exactly one identity
        // and let the client's verifier decide whether it is the right one.
        self.current()
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.load().is_some()
    }
}
