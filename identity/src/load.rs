//! Errors for loading trust anchors and the issuer, plus the shared file and
//! key loading steps.
//!
//! Every message names the file (or other source) it is about, which check
//! failed, and what was found, because these errors are read by an operator
//! staring at `linkerd install`-style secrets, not by code.

use std::path::Path;
use std::time::SystemTime;

use rcgen::KeyPair;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::error::X509Error;

use crate::pem::{self, KeyEncoding};
use crate::x509::rfc3339;

/// Why trust anchors or an issuer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The file is not syntactically valid PEM.
    #[error("{file} is not valid PEM: {source}")]
    Pem {
        file: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },

    /// The file holds no "CERTIFICATE" PEM block.
    #[error("no PEM certificate found in {file}")]
    NoCertificate { file: String },

    /// A "CERTIFICATE" block does not hold a parsable X.509 certificate.
    #[error("certificate #{index} in {file} is not a valid X.509 certificate: {source}")]
    BadCertificate {
        file: String,
        /// 1-based position of the certificate in the file.
        index: usize,
        #[source]
        source: X509Error,
    },

    /// A trust anchor lacks basicConstraints CA:TRUE.
    #[error("trust anchor {subject} in {file} is not a CA certificate ({found})")]
    AnchorNotCa {
        file: String,
        subject: String,
        found: &'static str,
    },

    /// A trust anchor's notAfter is before `now`.
    #[error("trust anchor {subject} in {file} expired on {}", rfc3339(.not_after))]
    AnchorExpired {
        file: String,
        subject: String,
        not_after: SystemTime,
    },

    /// A trust anchor's notBefore is after `now`.
    #[error("trust anchor {subject} in {file} is not valid until {}", rfc3339(.not_before))]
    AnchorNotYetValid {
        file: String,
        subject: String,
        not_before: SystemTime,
    },

    /// rustls/webpki cannot use the certificate as a trust anchor.
    #[error("trust anchor {subject} in {file} cannot be used to verify TLS peers: {source}")]
    AnchorUnusable {
        file: String,
        subject: String,
        #[source]
        source: rustls::Error,
    },

    /// rustls refused to build verifiers from the anchors.
    #[error("trust anchors in {file} cannot be used to verify TLS peers: {source}")]
    Verifier {
        file: String,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },

    /// No anchor's key verifies the issuer certificate's signature.
    #[error(
        "issuer certificate {file} is not signed by any trust anchor in {anchors_file} \
         (issuer DN: {issuer_dn}, anchors: {})",
        .anchors.join("; ")
    )]
    NotSignedByAnchor {
        file: String,
        anchors_file: String,
        /// The issuer certificate's *issuer* field: who claims to have signed it.
        issuer_dn: String,
        /// Subjects of the anchors that were tried.
        anchors: Vec<String>,
    },

    /// The issuer certificate lacks basicConstraints CA:TRUE.
    #[error("issuer certificate {file} is not a CA certificate ({found})")]
    IssuerNotCa { file: String, found: &'static str },

    /// The issuer certificate's keyUsage does not allow signing certificates.
    #[error(
        "issuer certificate {file} may not sign certificates: keyUsage must include \
         keyCertSign (found {found})"
    )]
    IssuerCannotSign { file: String, found: String },

    /// The issuer certificate's notAfter is before `now`.
    #[error("issuer certificate {file} expired on {}", rfc3339(.not_after))]
    IssuerExpired { file: String, not_after: SystemTime },

    /// The issuer certificate's notBefore is after `now`.
    #[error("issuer certificate {file} is not valid until {}", rfc3339(.not_before))]
    IssuerNotYetValid { file: String, not_before: SystemTime },

    /// The key file holds no private key PEM block.
    #[error("no PEM private key found in {file}")]
    NoKey { file: String },

    /// The key is of an unsupported type or encoding.
    #[error(
        "unsupported key in {file}: expected ECDSA P-256 or RSA in PKCS#8, SEC1 or PKCS#1 PEM \
         (found {found})"
    )]
    UnsupportedKey { file: String, found: String },

    /// The private key is not the one certified by the certificate.
    #[error("{key_file} does not match {cert_file} (the private key is not the certificate's key)")]
    KeyMismatch { key_file: String, cert_file: String },

    /// The issuer certificate could not be turned into a signer.
    #[error("issuer certificate {file} cannot be used to sign certificates: {source}")]
    IssuerUnusable {
        file: String,
        #[source]
        source: rcgen::Error,
    },

    /// Certificates signed by the issuer would not name it byte-for-byte
    /// (unusual string types or multi-valued RDNs in its subject), so
    /// verifiers could not chain them.
    #[error(
        "issuer certificate {file} has a subject name ({subject}) that cannot be reproduced \
         exactly in issued certificates"
    )]
    IssuerSubjectUnsupported { file: String, subject: String },
}

/// Display form of a source (file path or descriptive name).
pub(crate) fn source_name(source: &Path) -> String {
    source.display().to_string()
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: source_name(path),
        source,
    })
}

/// Loads the first private key in `pem_bytes` as a signing key, accepting
/// ECDSA P-256 and RSA in PKCS#8, SEC1 or PKCS#1.
pub(crate) fn load_key(pem_bytes: &[u8], file: &str) -> Result<KeyPair, LoadError> {
    let unsupported = |found: String| LoadError::UnsupportedKey {
        file: file.to_owned(),
        found,
    };
    let key = pem::first_key(pem_bytes).map_err(|source| LoadError::Pem {
        file: file.to_owned(),
        source,
    })?;
    let Some(key) = key else {
        if pem::has_encrypted_key(pem_bytes) {
            return Err(unsupported(
                "a password-protected key; write it unencrypted, e.g. with \
                 `--no-password --insecure`"
                    .to_owned(),
            ));
        }
        return Err(LoadError::NoKey {
            file: file.to_owned(),
        });
    };
    let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pem::to_pkcs8(&key)));
    let pair = KeyPair::try_from(&pkcs8).map_err(|_| {
        unsupported(match key.kind {
            KeyEncoding::Sec1 => "a SEC1 key that is not a complete ECDSA P-256 key".to_owned(),
            KeyEncoding::Pkcs1 => "a PKCS#1 key that is not a usable RSA key".to_owned(),
            KeyEncoding::Pkcs8 => {
                "a PKCS#8 key that is neither ECDSA P-256 nor RSA (2048-8192 bits)".to_owned()
            }
        })
    })?;
    let alg = pair.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 || alg == &rcgen::PKCS_RSA_SHA256 {
        return Ok(pair);
    }
    let kind = if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ECDSA P-384"
    } else if alg == &rcgen::PKCS_ED25519 {
        "Ed25519"
    } else {
        "another algorithm"
    };
    Err(unsupported(format!("a {} {kind} key", key.kind.describe())))
}
