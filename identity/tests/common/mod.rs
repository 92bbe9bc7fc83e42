//! Shared helpers for the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strait_identity::pki_types::{CertificateDer, PrivateKeyDer};
use strait_identity::{
    CertStore, DEFAULT_LEAF_LIFETIME, IdentityName, Issuer, TrustAnchors, TrustDomain, generate_key_and_csr,
};
use x509_parser::prelude::FromDer;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

/// A time inside every fixture's validity window, derived from the fixtures
/// themselves (a day after issuer.crt's notBefore) so load tests do not
/// depend on the machine clock or on when gen.sh was last run.
pub fn fixture_now() -> SystemTime {
    let pem = fixture("issuer.crt");
    let der = rustls_pki_types_der(&pem);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).expect("issuer.crt");
    let nb = cert.validity().not_before.timestamp();
    UNIX_EPOCH + Duration::from_secs(u64::try_from(nb).expect("after 1970") + 86_400)
}

fn rustls_pki_types_der(pem: &[u8]) -> Vec<u8> {
    use strait_identity::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem)
        .expect("PEM certificate")
        .to_vec()
}

pub fn id(sa: &str, ns: &str) -> IdentityName {
    IdentityName::new(sa, ns, "cluster.local").expect("valid identity")
}

/// Fixture anchors (ca.crt) and issuer (issuer.crt + issuer.key) at `now`.
pub fn fixture_ca(now: SystemTime) -> (TrustAnchors, Issuer) {
    let anchors = TrustAnchors::load(fixture_path("ca.crt"), now).expect("ca.crt loads");
    let issuer = Issuer::load_files(
        fixture_path("issuer.crt"),
        fixture_path("issuer.key"),
        &anchors,
        now,
    )
    .expect("issuer loads");
    (anchors, issuer)
}

/// A freshly generated anchor + issuer, valid at the real current time (TLS
/// handshakes check certificates against the real clock).
pub fn generated_ca() -> (TrustAnchors, Issuer) {
    strait_identity::generate(&TrustDomain::default(), SystemTime::now()).expect("generate")
}

/// Runs the proxy side of issuance for `identity` and returns a store with
/// the issued chain.
pub fn leaf_store(issuer: &Issuer, identity: &IdentityName) -> CertStore {
    let (chain, key) = leaf(issuer, identity);
    CertStore::with_cert(chain, key).expect("issued certificate is storable")
}

pub fn leaf(
    issuer: &Issuer,
    identity: &IdentityName,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let (key, csr) = generate_key_and_csr(identity).expect("csr");
    let issued = issuer
        .issue(&csr, identity, DEFAULT_LEAF_LIFETIME, SystemTime::now())
        .expect("issue");
    (issued.chain, PrivateKeyDer::Pkcs8(key))
}
