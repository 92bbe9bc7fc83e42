//! The proxy side of issuance: a fresh key and the CSR sent to the identity
//! controller.

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls_pki_types::{CertificateSigningRequestDer, PrivatePkcs8KeyDer};

use crate::name::IdentityName;

/// Why a key or CSR could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Key generation failed.
    #[error("could not generate an ECDSA P-256 key: {0}")]
    KeyGeneration(#[source] rcgen::Error),
    /// Building or signing the request failed.
    #[error("could not build a CSR for {identity}: {source}")]
    Request {
        identity: IdentityName,
        #[source]
        source: rcgen::Error,
    },
}

/// Generates an ECDSA P-256 key and a DER CSR for `identity`, in the shape
/// Linkerd's identity controller expects: subject CN and a single DNS SAN,
/// both the identity. The key (PKCS#8 DER) never leaves the proxy; the CSR
/// goes into `CertifyRequest.certificate_signing_request`, and the same CSR
/// can be reused for every renewal.
pub fn generate_key_and_csr(
    identity: &IdentityName,
) -> Result<(PrivatePkcs8KeyDer<'static>, CertificateSigningRequestDer<'static>), CsrError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CsrError::KeyGeneration)?;
    let request_err = |source| CsrError::Request {
        identity: identity.clone(),
        source,
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::DnsName(
        Ia5String::try_from(identity.as_str()).map_err(request_err)?,
    )];
    let csr = params.serialize_request(&key).map_err(request_err)?;
    Ok((key.into(), csr.into()))
}
