//! The trust bundle: the root certificates every mesh certificate must chain to.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;

use crate::load::{self, LoadError};
use crate::pem;
use crate::tls::Verifiers;
use crate::x509::{self, Validity};

/// A validated set of trust anchors (one or more root CA certificates).
///
/// Several anchors in one PEM file are supported so anchors can be rotated:
/// ship old+new, re-issue, then drop the old one. Construction checks that every
/// anchor is a CA certificate valid at the given time, and pre-builds the rustls
/// verifiers, so TLS configurations can be built from it infallibly.
///
/// Cloning is cheap-ish (certificates are copied, verifiers are shared).
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    source: String,
    certs: Vec<CertificateDer<'static>>,
    subjects: Vec<String>,
    not_after: Vec<SystemTime>,
    roots: Arc<RootCertStore>,
    pub(crate) verifiers: Verifiers,
}

impl TrustAnchors {
    /// The verifier of mesh servers under these anchors (chain, then the exact expected
    /// identity), for TLS configurations built outside this crate, e.g. to observe
    /// which handshakes verified a certificate and which resumed a session.
    pub fn server_verifier(&self) -> Arc<dyn rustls::client::danger::ServerCertVerifier> {
        self.verifiers.server.clone()
    }

    /// Parses and validates every certificate in `pem_bytes`. `source` names
    /// where the bytes came from (a path, or e.g. a ConfigMap key) and is only
    /// used in error messages.
    pub fn from_pem(pem_bytes: &[u8], source: impl AsRef<Path>, now: SystemTime) -> Result<Self, LoadError> {
        let file = load::source_name(source.as_ref());
        let ders = pem::certificates(pem_bytes).map_err(|source| LoadError::Pem {
            file: file.clone(),
            source,
        })?;
        Self::validate(ders.into_iter().map(CertificateDer::from).collect(), file, now)
    }

    /// Reads and validates the trust anchors in the PEM file at `path`.
    pub fn load(path: impl AsRef<Path>, now: SystemTime) -> Result<Self, LoadError> {
        let path = path.as_ref();
        Self::from_pem(&load::read(path)?, path, now)
    }

    /// Validates DER certificates as trust anchors; `source` names them in
    /// errors.
    pub fn from_der(
        certs: Vec<CertificateDer<'static>>,
        source: impl AsRef<Path>,
        now: SystemTime,
    ) -> Result<Self, LoadError> {
        Self::validate(certs, load::source_name(source.as_ref()), now)
    }

    fn validate(
        certs: Vec<CertificateDer<'static>>,
        file: String,
        now: SystemTime,
    ) -> Result<Self, LoadError> {
        if certs.is_empty() {
            return Err(LoadError::NoCertificate { file });
        }
        let mut roots = RootCertStore::empty();
        let mut subjects = Vec::with_capacity(certs.len());
        let mut not_after = Vec::with_capacity(certs.len());
        for (i, der) in certs.iter().enumerate() {
            let cert = x509::parse(der).map_err(|source| LoadError::BadCertificate {
                file: file.clone(),
                index: i + 1,
                source,
            })?;
            let subject = cert.subject().to_string();
            if let Err(found) = x509::check_ca(&cert) {
                return Err(LoadError::AnchorNotCa { file, subject, found });
            }
            match x509::validity_at(&cert, now) {
                Validity::Valid => {}
                Validity::Expired(not_after) => {
                    return Err(LoadError::AnchorExpired {
                        file,
                        subject,
                        not_after,
                    });
                }
                Validity::NotYetValid(not_before) => {
                    return Err(LoadError::AnchorNotYetValid {
                        file,
                        subject,
                        not_before,
                    });
                }
            }
            roots
                .add(der.clone())
                .map_err(|source| LoadError::AnchorUnusable {
                    file: file.clone(),
                    subject: subject.clone(),
                    source,
                })?;
            not_after.push(x509::not_after(&cert));
            subjects.push(subject);
        }
        let roots = Arc::new(roots);
        let verifiers = Verifiers::new(roots.clone()).map_err(|source| LoadError::Verifier {
            file: file.clone(),
            source,
        })?;
        Ok(TrustAnchors {
            source: file,
            certs,
            subjects,
            not_after,
            roots,
            verifiers,
        })
    }

    /// The anchors' DER certificates, in file order.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// When each anchor expires, in the order of [`TrustAnchors::certs`].
    pub fn expirations(&self) -> &[SystemTime] {
        &self.not_after
    }

    /// The anchors' subject DNs (e.g. `CN=root.linkerd.cluster.local`).
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// Where the anchors were loaded from, as used in error messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The anchors as a rustls root store.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// The anchors as a PEM bundle (e.g. for the `linkerd-identity-trust-roots`
    /// ConfigMap or the proxy's `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`).
    pub fn to_pem(&self) -> String {
        self.certs.iter().map(|c| pem::encode("CERTIFICATE", c)).collect()
    }

    /// Index of the anchor that signed `cert`: same subject as `cert`'s issuer
    /// field (webpki chains by exact name) and a key that verifies its
    /// signature.
    pub(crate) fn signer_of(&self, cert: &X509Certificate<'_>) -> Option<usize> {
        self.certs.iter().position(|der| {
            x509::parse(der).is_ok_and(|anchor| {
                anchor.subject().as_raw() == cert.issuer().as_raw()
                    && cert.verify_signature(Some(anchor.public_key())).is_ok()
            })
        })
    }

    pub(crate) fn not_after(&self, index: usize) -> Option<SystemTime> {
        self.not_after.get(index).copied()
    }
}
