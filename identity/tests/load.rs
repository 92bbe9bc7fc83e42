//! Loading and validating trust anchors and issuers from PEM, including every
//! validation failure (each its own `LoadError` variant, with a message that
//! names the file and the failed check).

mod common;

use common::{fixture, fixture_now, fixture_path, id};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd};
use strait_identity::pki_types::CertificateDer;
use strait_identity::pki_types::pem::PemObject;
use strait_identity::{DEFAULT_LEAF_LIFETIME, Issuer, LoadError, TrustAnchors};

fn anchors() -> TrustAnchors {
    TrustAnchors::load(fixture_path("ca.crt"), fixture_now()).expect("ca.crt")
}

fn load_issuer(cert: &str, key: &str, anchors: &TrustAnchors) -> Result<Issuer, LoadError> {
    Issuer::load_named(&fixture(cert), cert, &fixture(key), key, anchors, fixture_now())
}

fn assert_mentions(err: &LoadError, needles: &[&str]) {
    let msg = err.to_string();
    for needle in needles {
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }
}

// ---------------------------------------------------------------- successes

#[test]
fn loads_ecdsa_anchor_and_issuer_pkcs8() {
    let anchors = anchors();
    assert_eq!(anchors.certs().len(), 1);
    assert_eq!(anchors.subjects(), ["CN=root.linkerd.cluster.local"]);
    assert!(anchors.source().ends_with("ca.crt"));
    let issuer = load_issuer("issuer.crt", "issuer.key", &anchors).expect("valid issuer");
    assert_eq!(issuer.subject(), "CN=identity.linkerd.cluster.local");
    assert!(issuer.not_before() < fixture_now() && fixture_now() < issuer.not_after());
}

#[test]
fn loads_ecdsa_issuer_with_sec1_key() {
    let issuer = load_issuer("issuer.crt", "issuer-sec1.key", &anchors()).expect("SEC1 key accepted");
    // Exported as PKCS#8 regardless of the input encoding.
    assert!(issuer.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn loads_rsa_issuer_pkcs8_and_pkcs1() {
    let anchors = TrustAnchors::load(fixture_path("rsa-ca.crt"), fixture_now()).expect("rsa-ca");
    for key in ["rsa-issuer.key", "rsa-issuer-pkcs1.key"] {
        let issuer = load_issuer("rsa-issuer.crt", key, &anchors).unwrap_or_else(|e| panic!("{key}: {e}"));
        // And it can sign (RSA PKCS#1 v1.5 SHA-256 over an ECDSA leaf).
        let (_, csr) = strait_identity::generate_key_and_csr(&id("web", "ns")).expect("csr");
        issuer
            .issue(&csr, &id("web", "ns"), DEFAULT_LEAF_LIFETIME, fixture_now())
            .expect("RSA issuer issues");
    }
}

#[test]
fn issuer_validates_against_any_anchor_in_a_bundle() {
    let bundle =
        TrustAnchors::load(fixture_path("anchors-bundle.crt"), fixture_now()).expect("bundle of two roots");
    assert_eq!(bundle.certs().len(), 2);
    // ca.crt is the *second* anchor in the bundle.
    load_issuer("issuer.crt", "issuer.key", &bundle).expect("signed by the second anchor");
    load_issuer("foreign-issuer.crt", "foreign-issuer.key", &bundle).expect("signed by the first anchor");
}

#[test]
fn anchors_pem_round_trips() {
    let bundle = TrustAnchors::load(fixture_path("anchors-bundle.crt"), fixture_now()).expect("bundle");
    let again = TrustAnchors::from_pem(bundle.to_pem().as_bytes(), "re-encoded", fixture_now())
        .expect("re-encoded bundle loads");
    assert_eq!(again.certs(), bundle.certs());
}

#[test]
fn issuer_pem_round_trips() {
    let anchors = anchors();
    let issuer = load_issuer("issuer.crt", "issuer-sec1.key", &anchors).expect("issuer");
    let again = Issuer::load(
        issuer.cert_pem().as_bytes(),
        issuer.key_pem().as_bytes(),
        &anchors,
        fixture_now(),
    )
    .expect("exported issuer loads");
    assert_eq!(again.cert_der(), issuer.cert_der());
}

// ------------------------------------------------------ file-level failures

#[test]
fn unreadable_file() {
    let err =
        TrustAnchors::load(fixture_path("does-not-exist.crt"), fixture_now()).expect_err("missing file");
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
    assert_mentions(&err, &["could not read", "does-not-exist.crt"]);

    let err = Issuer::load_files(
        fixture_path("issuer.crt"),
        fixture_path("missing.key"),
        &anchors(),
        fixture_now(),
    )
    .expect_err("missing key file");
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
    assert_mentions(&err, &["missing.key"]);
}

#[test]
fn invalid_pem() {
    let bad = b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
    let err = TrustAnchors::from_pem(bad, "ca.crt", fixture_now()).expect_err("bad base64");
    assert!(matches!(err, LoadError::Pem { .. }), "{err:?}");
    assert_mentions(&err, &["ca.crt", "not valid PEM"]);

    let unterminated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
    let err = Issuer::load(unterminated, &fixture("issuer.key"), &anchors(), fixture_now())
        .expect_err("unterminated");
    assert!(matches!(err, LoadError::Pem { .. }), "{err:?}");
    assert_mentions(&err, &["issuer.crt", "not valid PEM"]);
}

#[test]
fn no_certificate_in_anchor_file() {
    for input in [&b""[..], &fixture("ca.key"), b"just some text"] {
        let err = TrustAnchors::from_pem(input, "ca.crt", fixture_now()).expect_err("no cert");
        assert!(matches!(err, LoadError::NoCertificate { .. }), "{err:?}");
        assert_eq!(err.to_string(), "no PEM certificate found in ca.crt");
    }
}

#[test]
fn no_certificate_in_issuer_file() {
    let err = Issuer::load(
        &fixture("issuer.key"),
        &fixture("issuer.key"),
        &anchors(),
        fixture_now(),
    )
    .expect_err("key given as cert");
    assert!(matches!(err, LoadError::NoCertificate { .. }), "{err:?}");
    assert_eq!(err.to_string(), "no PEM certificate found in issuer.crt");
}

#[test]
fn certificate_block_that_is_not_x509() {
    let pem = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    let err = TrustAnchors::from_pem(pem.as_bytes(), "ca.crt", fixture_now()).expect_err("garbage DER");
    assert!(
        matches!(err, LoadError::BadCertificate { index: 1, .. }),
        "{err:?}"
    );
    assert_mentions(
        &err,
        &["certificate #1 in ca.crt", "not a valid X.509 certificate"],
    );

    let err = Issuer::load(pem.as_bytes(), &fixture("issuer.key"), &anchors(), fixture_now())
        .expect_err("garbage DER");
    assert!(matches!(err, LoadError::BadCertificate { .. }), "{err:?}");
    assert_mentions(&err, &["issuer.crt", "not a valid X.509 certificate"]);
}

// ---------------------------------------------------------- anchor checks

#[test]
fn anchor_must_be_a_ca() {
    let err = TrustAnchors::from_pem(&fixture("not-ca.crt"), "not-ca.crt", fixture_now())
        .expect_err("leaf as anchor");
    assert!(matches!(err, LoadError::AnchorNotCa { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "trust anchor CN=identity.linkerd.cluster.local in not-ca.crt is not a CA certificate \
         (basicConstraints CA:false)"
    );
}

/// A self-signed CA certificate with the given validity, as PEM.
fn self_signed_ca(cn: &str, params_fn: impl FnOnce(&mut CertificateParams)) -> (String, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params_fn(&mut params);
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key)
}

#[test]
fn anchor_expired() {
    let (pem, _) = self_signed_ca("old-root", |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2025, 1, 1);
    });
    let err = TrustAnchors::from_pem(pem.as_bytes(), "ca.crt", fixture_now()).expect_err("expired anchor");
    assert!(matches!(err, LoadError::AnchorExpired { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "trust anchor CN=old-root in ca.crt expired on 2025-01-01T00:00:00Z"
    );
}

#[test]
fn anchor_not_yet_valid() {
    let (pem, _) = self_signed_ca("future-root", |p| {
        p.not_before = date_time_ymd(2200, 1, 1);
        p.not_after = date_time_ymd(2300, 1, 1);
    });
    let err = TrustAnchors::from_pem(pem.as_bytes(), "ca.crt", fixture_now()).expect_err("future anchor");
    assert!(matches!(err, LoadError::AnchorNotYetValid { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "trust anchor CN=future-root in ca.crt is not valid until 2200-01-01T00:00:00Z"
    );
}

#[test]
fn anchor_in_a_bundle_is_checked_too() {
    let (expired, _) = self_signed_ca("old-root", |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2025, 1, 1);
    });
    let mut bundle = fixture("ca.crt");
    bundle.extend_from_slice(expired.as_bytes());
    let err = TrustAnchors::from_pem(&bundle, "bundle.crt", fixture_now()).expect_err("one expired anchor");
    assert!(matches!(err, LoadError::AnchorExpired { .. }), "{err:?}");
    assert_mentions(&err, &["CN=old-root", "bundle.crt"]);
}

#[test]
fn anchor_rustls_cannot_use() {
    // Make the outer signatureAlgorithm (ecdsa-with-SHA256) disagree with the
    // TBS one (-> SHA384). x509-parser accepts the certificate, but webpki
    // refuses it as a trust anchor.
    let mut der = CertificateDer::from_pem_slice(&fixture("ca.crt"))
        .expect("ca.crt")
        .to_vec();
    let alg = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    let at = der
        .windows(alg.len())
        .rposition(|w| w == alg)
        .expect("outer signature algorithm");
    der[at + alg.len() - 1] = 0x03;
    let err = TrustAnchors::from_der(vec![der.into()], "ca.crt", fixture_now()).expect_err("webpki refuses");
    assert!(matches!(err, LoadError::AnchorUnusable { .. }), "{err:?}");
    assert_mentions(
        &err,
        &["CN=root.linkerd.cluster.local", "ca.crt", "cannot be used"],
    );
}

// ---------------------------------------------------------- issuer checks

#[test]
fn issuer_not_signed_by_any_anchor() {
    let err =
        load_issuer("foreign-issuer.crt", "foreign-issuer.key", &anchors()).expect_err("foreign issuer");
    assert!(matches!(err, LoadError::NotSignedByAnchor { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("issuer certificate foreign-issuer.crt is not signed by any trust anchor in "),
        "{msg}"
    );
    assert_mentions(
        &err,
        &[
            "ca.crt",
            "issuer DN: CN=root.linkerd.cluster.local",
            "anchors: CN=root.linkerd.cluster.local",
        ],
    );
}

#[test]
fn issuer_must_be_a_ca() {
    let err = load_issuer("not-ca.crt", "not-ca.key", &anchors()).expect_err("leaf as issuer");
    assert!(matches!(err, LoadError::IssuerNotCa { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "issuer certificate not-ca.crt is not a CA certificate (basicConstraints CA:false)"
    );
}

#[test]
fn issuer_must_allow_key_cert_sign() {
    let err = load_issuer("no-certsign.crt", "no-certsign.key", &anchors()).expect_err("no keyCertSign");
    assert!(matches!(err, LoadError::IssuerCannotSign { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "issuer certificate no-certsign.crt may not sign certificates: keyUsage must include \
         keyCertSign (found keyUsage digitalSignature)"
    );
}

/// An intermediate CA signed by the fixture root (ca.crt/ca.key), with the
/// validity chosen by `params_fn`.
fn rcgen_issuer(params_fn: impl FnOnce(&mut CertificateParams)) -> (String, String) {
    let root_key =
        KeyPair::from_pem(std::str::from_utf8(&fixture("ca.key")).expect("utf8")).expect("ca.key is PKCS#8");
    let root_der = CertificateDer::from_pem_slice(&fixture("ca.crt")).expect("ca.crt");
    let root = rcgen::Issuer::from_ca_cert_der(&root_der, root_key).expect("root issuer");

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "identity.linkerd.cluster.local");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params_fn(&mut params);
    let cert = params.signed_by(&key, &root).expect("signed");
    (cert.pem(), key.serialize_pem())
}

#[test]
fn issuer_expired() {
    let (cert, key) = rcgen_issuer(|p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2025, 1, 1);
    });
    let err =
        Issuer::load(cert.as_bytes(), key.as_bytes(), &anchors(), fixture_now()).expect_err("expired issuer");
    assert!(matches!(err, LoadError::IssuerExpired { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "issuer certificate issuer.crt expired on 2025-01-01T00:00:00Z"
    );
}

#[test]
fn issuer_not_yet_valid() {
    let (cert, key) = rcgen_issuer(|p| {
        p.not_before = date_time_ymd(2120, 6, 1);
        p.not_after = date_time_ymd(2121, 1, 1);
    });
    let err =
        Issuer::load(cert.as_bytes(), key.as_bytes(), &anchors(), fixture_now()).expect_err("future issuer");
    assert!(matches!(err, LoadError::IssuerNotYetValid { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "issuer certificate issuer.crt is not valid until 2120-06-01T00:00:00Z"
    );
}

#[test]
fn issuer_made_with_rcgen_loads_when_valid() {
    let (cert, key) = rcgen_issuer(|p| {
        p.not_before = date_time_ymd(2000, 1, 1);
        p.not_after = date_time_ymd(2200, 1, 1);
    });
    Issuer::load(cert.as_bytes(), key.as_bytes(), &anchors(), fixture_now()).expect("valid rcgen issuer");
}

// ------------------------------------------------------------- key checks

#[test]
fn key_does_not_match_certificate() {
    let err = load_issuer("issuer.crt", "mismatched.key", &anchors()).expect_err("mismatch");
    assert!(matches!(err, LoadError::KeyMismatch { .. }), "{err:?}");
    assert_mentions(&err, &["mismatched.key does not match issuer.crt"]);

    // An RSA key for an ECDSA certificate is a mismatch too.
    let err = load_issuer("issuer.crt", "rsa-issuer.key", &anchors()).expect_err("mismatch");
    assert!(matches!(err, LoadError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn no_key_in_key_file() {
    let err = load_issuer("issuer.crt", "ca.crt", &anchors()).expect_err("cert as key");
    assert!(matches!(err, LoadError::NoKey { .. }), "{err:?}");
    assert_eq!(err.to_string(), "no PEM private key found in ca.crt");
}

#[test]
fn unsupported_key_type() {
    let err = load_issuer("issuer.crt", "p384.key", &anchors()).expect_err("P-384");
    assert!(matches!(err, LoadError::UnsupportedKey { .. }), "{err:?}");
    assert_mentions(
        &err,
        &[
            "unsupported key in p384.key: expected ECDSA P-256 or RSA in PKCS#8, SEC1 or PKCS#1 PEM",
            "ECDSA P-384",
        ],
    );
}

#[test]
fn undecodable_key() {
    let pem = "-----BEGIN EC PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END EC PRIVATE KEY-----\n";
    let err = Issuer::load(&fixture("issuer.crt"), pem.as_bytes(), &anchors(), fixture_now())
        .expect_err("garbage key");
    assert!(matches!(err, LoadError::UnsupportedKey { .. }), "{err:?}");
    assert_mentions(&err, &["unsupported key in issuer.key", "SEC1"]);
}

#[test]
fn encrypted_key() {
    let pem = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAECAwQFBgcICQ==\n\
               -----END ENCRYPTED PRIVATE KEY-----\n";
    let err = Issuer::load(&fixture("issuer.crt"), pem.as_bytes(), &anchors(), fixture_now())
        .expect_err("encrypted key");
    assert!(matches!(err, LoadError::UnsupportedKey { .. }), "{err:?}");
    assert_mentions(&err, &["issuer.key", "password-protected"]);
}

// ------------------------------------------------ signer construction checks

#[test]
fn issuer_with_multi_valued_rdn_is_unusable() {
    let err = load_issuer("multi-rdn-issuer.crt", "multi-rdn-issuer.key", &anchors())
        .expect_err("multi-valued RDN");
    assert!(matches!(err, LoadError::IssuerUnusable { .. }), "{err:?}");
    assert_mentions(&err, &["multi-rdn-issuer.crt", "cannot be used to sign"]);
}

#[test]
fn issuer_whose_subject_cannot_be_reproduced() {
    let err = load_issuer("dup-ou-issuer.crt", "dup-ou-issuer.key", &anchors()).expect_err("repeated OU");
    assert!(
        matches!(err, LoadError::IssuerSubjectUnsupported { .. }),
        "{err:?}"
    );
    assert_mentions(&err, &["dup-ou-issuer.crt", "OU=a", "cannot be reproduced"]);
}
