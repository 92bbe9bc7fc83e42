//! Leaf issuance from proxy CSRs, and generation of a fresh anchor + issuer.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{fixture, fixture_ca, fixture_now, id};
use rcgen::string::Ia5String;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use strait_identity::pki_types::{CertificateDer, ServerName, UnixTime};
use strait_identity::rustls;
use strait_identity::rustls::client::danger::ServerCertVerifier;
use strait_identity::{
    DEFAULT_LEAF_LIFETIME, GENERATED_ANCHOR_LIFETIME, GENERATED_ISSUER_LIFETIME, IdentityName, IssueError,
    Issuer, TrustAnchors, TrustDomain, generate, generate_key_and_csr,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

fn unix(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs()).expect("fits")
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).expect("valid certificate").1
}

/// A DER CSR signed by `key`, shaped by `f` (starts with no subject and no SAN).
fn csr_with(key: &KeyPair, f: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    f(&mut params);
    params.serialize_request(key).expect("csr").der().to_vec()
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key")
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(Ia5String::try_from(name).expect("ia5"))
}

/// Full webpki verification of a chain against the anchors, as both a server
/// certificate for `identity` and a client certificate, at `now`.
fn webpki_verify(
    anchors: &TrustAnchors,
    chain: &[CertificateDer<'static>],
    identity: &IdentityName,
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).expect("after 1970"));
    let server =
        rustls::client::WebPkiServerVerifier::builder_with_provider(anchors.root_store(), provider.clone())
            .build()
            .expect("server verifier");
    let name = ServerName::try_from(identity.as_str().to_owned()).expect("dns name");
    server.verify_server_cert(&chain[0], &chain[1..], &name, &[], now)?;
    let client = rustls::server::WebPkiClientVerifier::builder_with_provider(anchors.root_store(), provider)
        .build()
        .expect("client verifier");
    client.verify_client_cert(&chain[0], &chain[1..], now)?;
    Ok(())
}

#[test]
fn issues_a_leaf_for_the_requested_identity() {
    let now = fixture_now();
    let (anchors, issuer) = fixture_ca(now);
    let identity = id("web", "emojivoto");
    let (_key, csr) = generate_key_and_csr(&identity).expect("csr");

    let issued = issuer
        .issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, now)
        .expect("issued");
    assert_eq!(issued.identity, identity);
    assert_eq!(issued.chain.len(), 2);
    assert_eq!(issued.chain[0], issued.leaf);
    assert_eq!(&issued.chain[1], issuer.cert_der());
    assert_eq!(issued.intermediates(), &issued.chain[1..]);

    let leaf = parse(&issued.leaf);
    // Subject and SAN are exactly the identity.
    let cns: Vec<_> = leaf
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().expect("utf8"))
        .collect();
    assert_eq!(cns, [identity.as_str()]);
    let san = leaf
        .subject_alternative_name()
        .expect("san ok")
        .expect("san present");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::DNSName(identity.as_str())]
    );
    // Not a CA; the usages Linkerd gives workload certificates.
    let bc = leaf.basic_constraints().expect("bc ok").expect("bc present");
    assert!(!bc.value.ca);
    let ku = leaf.key_usage().expect("ku ok").expect("ku present").value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = leaf
        .extended_key_usage()
        .expect("eku ok")
        .expect("eku present")
        .value;
    assert!(eku.server_auth && eku.client_auth);

    // Chained to the issuer: name and signature.
    let issuer_cert = parse(issuer.cert_der());
    assert_eq!(leaf.issuer().as_raw(), issuer_cert.subject().as_raw());
    leaf.verify_signature(Some(issuer_cert.public_key()))
        .expect("signed by the issuer");
    // And webpki accepts the chain against the anchors.
    webpki_verify(&anchors, &issued.chain, &identity, now).expect("webpki verifies");
}

#[test]
fn rsa_issuer_issues_verifiable_leaves() {
    let now = fixture_now();
    let anchors = TrustAnchors::from_pem(&fixture("rsa-ca.crt"), "rsa-ca.crt", now).expect("ca");
    let issuer = Issuer::load(
        &fixture("rsa-issuer.crt"),
        &fixture("rsa-issuer-pkcs1.key"),
        &anchors,
        now,
    )
    .expect("issuer");
    let identity = id("web", "emojivoto");
    let (_, csr) = generate_key_and_csr(&identity).expect("csr");
    let issued = issuer
        .issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, now)
        .expect("issued");
    webpki_verify(&anchors, &issued.chain, &identity, now).expect("webpki verifies");
}

#[test]
fn leaf_lifetime_is_honoured() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    let identity = id("web", "emojivoto");
    let (_, csr) = generate_key_and_csr(&identity).expect("csr");
    for lifetime in [Duration::from_secs(3600), DEFAULT_LEAF_LIFETIME] {
        let issued = issuer.issue(&csr, &identity, lifetime, now).expect("issued");
        let leaf = parse(&issued.leaf);
        let expected_end = unix(now) + i64::try_from(lifetime.as_secs()).expect("fits");
        assert_eq!(leaf.validity().not_after.timestamp(), expected_end);
        assert_eq!(unix(issued.valid_until), expected_end);
        // Back-dated a little for clock skew, never in the future.
        let start = leaf.validity().not_before.timestamp();
        assert!(start <= unix(now) && start >= unix(now) - 60, "{start}");
    }
}

#[test]
fn leaf_never_outlives_the_issuer() {
    let t0 = fixture_now();
    let (_, issuer) = generate(&TrustDomain::default(), t0).expect("generate");
    let identity = id("web", "emojivoto");
    let (_, csr) = generate_key_and_csr(&identity).expect("csr");
    // Ask for 30 days, 20 days before the issuer expires.
    let now = issuer.not_after() - Duration::from_secs(20 * 86_400);
    let issued = issuer
        .issue(&csr, &identity, Duration::from_secs(30 * 86_400), now)
        .expect("issued");
    assert_eq!(issued.valid_until, issuer.not_after());
}

#[test]
fn each_issuance_gets_a_fresh_serial() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    let identity = id("web", "emojivoto");
    let (_, csr) = generate_key_and_csr(&identity).expect("csr");
    let a = issuer
        .issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, now)
        .expect("a");
    let b = issuer
        .issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, now)
        .expect("b");
    assert_ne!(parse(&a.leaf).raw_serial(), parse(&b.leaf).raw_serial());
}

#[test]
fn csr_for_another_identity_is_refused() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    let requester = id("web", "emojivoto");
    let (_, csr) = generate_key_and_csr(&id("admin", "kube-system")).expect("csr");
    let err = issuer
        .issue(&csr, &requester, DEFAULT_LEAF_LIFETIME, now)
        .expect_err("other identity");
    assert!(matches!(err, IssueError::IdentityMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("admin.kube-system.serviceaccount.identity.linkerd.cluster.local"),
        "{msg}"
    );
    assert!(
        msg.contains("web.emojivoto.serviceaccount.identity.linkerd.cluster.local"),
        "{msg}"
    );
}

#[test]
fn garbage_is_a_malformed_csr() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    for garbage in [&b""[..], b"not a csr", &[0x30, 0x82, 0xff, 0xff, 0x00]] {
        let err = issuer
            .issue(garbage, &id("web", "ns"), DEFAULT_LEAF_LIFETIME, now)
            .expect_err("garbage");
        assert!(matches!(err, IssueError::MalformedCsr { .. }), "{err:?}");
        assert!(err.to_string().starts_with("malformed CSR"), "{err}");
    }
    // Trailing data after a valid CSR is malformed too.
    let (_, csr) = generate_key_and_csr(&id("web", "ns")).expect("csr");
    let mut trailing = csr.to_vec();
    trailing.push(0);
    let err = issuer
        .issue(&trailing, &id("web", "ns"), DEFAULT_LEAF_LIFETIME, now)
        .expect_err("trailing");
    assert!(matches!(err, IssueError::MalformedCsr { .. }), "{err:?}");
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    let identity = id("web", "ns");
    let (_, csr) = generate_key_and_csr(&identity).expect("csr");
    let mut tampered = csr.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01; // inside the signature's s value
    let err = issuer
        .issue(&tampered, &identity, DEFAULT_LEAF_LIFETIME, now)
        .expect_err("bad signature");
    assert!(matches!(err, IssueError::CsrSignature { .. }), "{err:?}");
    assert!(err.to_string().contains("signature does not verify"), "{err}");
}

#[test]
fn csr_names_are_checked() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    let identity = id("web", "ns");
    let key = p256();
    let issue = |csr: Vec<u8>| issuer.issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, now);

    // Like Go's x509.CreateCertificateRequest with only DNSNames: no subject.
    issue(csr_with(&key, |p| {
        p.subject_alt_names = vec![dns(identity.as_str())]
    }))
    .expect("empty subject is fine");

    let err = issue(csr_with(&key, |p| {
        p.distinguished_name.push(DnType::CommonName, identity.as_str());
    }))
    .expect_err("no SAN");
    assert!(matches!(err, IssueError::CsrMissingName { .. }), "{err:?}");

    let err = issue(csr_with(&key, |p| {
        p.subject_alt_names = vec![dns(identity.as_str()), dns("other.example.com")];
    }))
    .expect_err("two SANs");
    assert!(matches!(err, IssueError::CsrMultipleNames { .. }), "{err:?}");
    assert!(err.to_string().contains("other.example.com"), "{err}");

    let err = issue(csr_with(&key, |p| {
        p.subject_alt_names = vec![
            dns(identity.as_str()),
            SanType::IpAddress("10.0.0.1".parse().expect("ip")),
        ];
    }))
    .expect_err("IP SAN");
    assert!(
        matches!(
            err,
            IssueError::UnexpectedSan {
                kind: "IP address",
                ..
            }
        ),
        "{err:?}"
    );

    let err = issue(csr_with(&key, |p| {
        p.distinguished_name.push(DnType::CommonName, "somebody-else");
        p.subject_alt_names = vec![dns(identity.as_str())];
    }))
    .expect_err("CN mismatch");
    assert!(matches!(err, IssueError::CommonNameMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("somebody-else"), "{err}");
}

#[test]
fn csr_requested_extensions_are_ignored() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    let identity = id("web", "ns");
    let csr = csr_with(&p256(), |p| {
        p.subject_alt_names = vec![dns(identity.as_str())];
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    let issued = issuer
        .issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, now)
        .expect("issued");
    let leaf = parse(&issued.leaf);
    assert!(!leaf.basic_constraints().expect("ok").expect("present").value.ca);
}

#[test]
fn csr_key_must_be_p256() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    let identity = id("web", "ns");

    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
    let err = issuer
        .issue(
            &csr_with(&p384, |p| p.subject_alt_names = vec![dns(identity.as_str())]),
            &identity,
            DEFAULT_LEAF_LIFETIME,
            now,
        )
        .expect_err("P-384");
    assert!(matches!(err, IssueError::UnsupportedCsrKey { .. }), "{err:?}");
    assert!(err.to_string().contains("1.3.132.0.34"), "{err}");

    let rsa =
        KeyPair::from_pem(std::str::from_utf8(&fixture("rsa-issuer.key")).expect("utf8")).expect("rsa key");
    let err = issuer
        .issue(
            &csr_with(&rsa, |p| p.subject_alt_names = vec![dns(identity.as_str())]),
            &identity,
            DEFAULT_LEAF_LIFETIME,
            now,
        )
        .expect_err("RSA");
    assert!(matches!(err, IssueError::UnsupportedCsrKey { .. }), "{err:?}");
    assert!(err.to_string().contains("RSA"), "{err}");
}

#[test]
fn zero_lifetime_is_refused() {
    let now = fixture_now();
    let (_, issuer) = fixture_ca(now);
    let identity = id("web", "ns");
    let (_, csr) = generate_key_and_csr(&identity).expect("csr");
    let err = issuer
        .issue(&csr, &identity, Duration::ZERO, now)
        .expect_err("zero");
    assert!(matches!(err, IssueError::ZeroLifetime), "{err:?}");
}

#[test]
fn expired_issuer_does_not_issue() {
    let t0 = fixture_now();
    let (_, issuer) = generate(&TrustDomain::default(), t0).expect("generate");
    let identity = id("web", "ns");
    let (_, csr) = generate_key_and_csr(&identity).expect("csr");
    let later = issuer.not_after() + Duration::from_secs(1);
    let err = issuer
        .issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, later)
        .expect_err("expired");
    assert!(matches!(err, IssueError::IssuerExpired { .. }), "{err:?}");
    assert!(err.to_string().contains("expired on"), "{err}");

    let before = issuer.not_before() - Duration::from_secs(1);
    let err = issuer
        .issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, before)
        .expect_err("not yet valid");
    assert!(matches!(err, IssueError::IssuerNotYetValid { .. }), "{err:?}");
}

#[test]
fn proxy_csr_shape() {
    let identity = id("web", "emojivoto");
    let (key, csr) = generate_key_and_csr(&identity).expect("csr");
    // The key is a usable PKCS#8 ECDSA P-256 key.
    let pair = KeyPair::try_from(key.secret_pkcs8_der()).expect("pkcs8");
    assert_eq!(pair.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    // The CSR names the identity in CN and the single DNS SAN.
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr).expect("csr");
    req.verify_signature().expect("self-signed");
    let cn: Vec<_> = req
        .certification_request_info
        .subject
        .iter_common_name()
        .map(|c| c.as_str().expect("utf8").to_owned())
        .collect();
    assert_eq!(cn, [identity.as_str()]);
}

#[test]
fn generated_anchor_and_issuer_round_trip() {
    let td: TrustDomain = "example.org".parse().expect("td");
    let now = SystemTime::now();
    let (anchors, issuer) = generate(&td, now).expect("generate");

    // Names and lifetimes as `linkerd install`.
    let anchor = parse(&anchors.certs()[0]);
    assert_eq!(anchors.subjects(), ["CN=root.linkerd.example.org"]);
    assert_eq!(issuer.subject(), "CN=identity.linkerd.example.org");
    assert_eq!(
        anchor.validity().not_after.timestamp(),
        unix(now) + i64::try_from(GENERATED_ANCHOR_LIFETIME.as_secs()).expect("fits")
    );
    assert_eq!(
        unix(issuer.not_after()),
        unix(now) + i64::try_from(GENERATED_ISSUER_LIFETIME.as_secs()).expect("fits")
    );
    let issuer_cert = parse(issuer.cert_der());
    assert_eq!(
        issuer_cert
            .basic_constraints()
            .expect("ok")
            .expect("present")
            .value
            .path_len_constraint,
        Some(0)
    );
    assert_eq!(
        anchor
            .public_key()
            .algorithm
            .parameters
            .as_ref()
            .map(|p| p.as_oid().expect("oid")),
        Some(x509_parser::oid_registry::OID_EC_P256)
    );

    // Exported PEM loads back and validates, like `strait install` output fed
    // to the identity controller.
    let anchors_pem = anchors.to_pem();
    let (cert_pem, key_pem) = (issuer.cert_pem(), issuer.key_pem());
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, contents) in [
        ("ca.crt", &anchors_pem),
        ("issuer.crt", &cert_pem),
        ("issuer.key", &key_pem),
    ] {
        std::fs::write(dir.path().join(name), contents).expect("write");
    }
    let anchors2 = TrustAnchors::load(dir.path().join("ca.crt"), now).expect("anchors reload");
    let issuer2 = Issuer::load_files(
        dir.path().join("issuer.crt"),
        dir.path().join("issuer.key"),
        &anchors2,
        now,
    )
    .expect("issuer reload");
    assert_eq!(issuer2.cert_der(), issuer.cert_der());

    // And the reloaded issuer issues leaves that chain to the generated anchor.
    let identity = IdentityName::new("web", "ns", &td).expect("id");
    let (_, csr) = generate_key_and_csr(&identity).expect("csr");
    let issued = issuer2
        .issue(&csr, &identity, DEFAULT_LEAF_LIFETIME, now)
        .expect("issued");
    webpki_verify(&anchors2, &issued.chain, &identity, now).expect("chains");

    // Each generation is a new PKI.
    let (other, _) = generate(&td, now).expect("generate again");
    assert_ne!(other.certs(), anchors.certs());
}
