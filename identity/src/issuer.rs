//! The identity issuer: the intermediate CA that signs workload certificates,
//! plus generation of a fresh anchor and issuer like `linkerd install` does.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::anchors::TrustAnchors;
use crate::load::{self, LoadError};
use crate::name::{IdentityName, TrustDomain};
use crate::pem;
use crate::tls::provider;
use crate::x509::{self, Validity, rfc3339};

/// Lifetime of issued leaf certificates unless the caller asks otherwise
/// (Linkerd's identity controller default).
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Lifetime of a generated issuer certificate (as `linkerd install`).
pub const GENERATED_ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Lifetime of a generated trust anchor.
pub const GENERATED_ANCHOR_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Certificates are back-dated by this much so that a peer whose clock is
/// slightly behind ours does not reject a certificate as not yet valid.
const CLOCK_SKEW_SECS: i64 = 10;

/// Default display names for [`Issuer::load`], after the file names that
/// Linkerd's docs use.
const DEFAULT_CERT_NAME: &str = "issuer.crt";
const DEFAULT_KEY_NAME: &str = "issuer.key";

/// Why a leaf certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The bytes are not a DER PKCS#10 certificate signing request.
    #[error("malformed CSR: {reason}")]
    MalformedCsr { reason: String },

    /// The CSR's self-signature does not verify with the key it contains.
    #[error("CSR signature does not verify: {source}")]
    CsrSignature {
        #[source]
        source: X509Error,
    },

    /// The CSR's key is not ECDSA P-256, the only key type Linkerd proxies use.
    #[error("CSR key is {found}; expected an ECDSA P-256 key")]
    UnsupportedCsrKey { found: String },

    /// The CSR requests no DNS name.
    #[error("CSR has no DNS SAN; expected exactly one: {expected}")]
    CsrMissingName { expected: IdentityName },

    /// The CSR requests several DNS names.
    #[error("CSR requests DNS SANs {found:?}; expected exactly one: {expected}")]
    CsrMultipleNames {
        expected: IdentityName,
        found: Vec<String>,
    },

    /// The CSR is for another identity than the authenticated requester's.
    #[error("CSR requests identity {requested}, but the requester's identity is {expected}")]
    IdentityMismatch {
        expected: IdentityName,
        requested: String,
    },

    /// The CSR's subject CN is neither empty nor the identity.
    #[error("CSR subject common name {common_name:?} must be empty or equal to {expected}")]
    CommonNameMismatch {
        expected: IdentityName,
        common_name: String,
    },

    /// The CSR requests a SAN other than the DNS identity.
    #[error("CSR for {expected} requests a {kind} SAN ({value}); only the DNS identity is allowed")]
    UnexpectedSan {
        expected: IdentityName,
        kind: &'static str,
        value: String,
    },

    /// A zero lifetime was requested.
    #[error("leaf certificate lifetime must be at least one second")]
    ZeroLifetime,

    /// The issuer certificate has expired since it was loaded.
    #[error("issuer certificate {file} expired on {}", rfc3339(.not_after))]
    IssuerExpired { file: String, not_after: SystemTime },

    /// `now` is before the issuer certificate's validity.
    #[error("issuer certificate {file} is not valid until {}", rfc3339(.not_before))]
    IssuerNotYetValid { file: String, not_before: SystemTime },

    /// `now` cannot be represented in a certificate.
    #[error("time {} cannot be encoded in a certificate", rfc3339(.0))]
    TimeOutOfRange(SystemTime),

    /// The system random number generator failed (serial numbers).
    #[error("could not generate a random serial number")]
    Random,

    /// Signing failed.
    #[error("could not sign the certificate for {identity}: {source}")]
    Sign {
        identity: IdentityName,
        #[source]
        source: rcgen::Error,
    },
}

/// Why [`generate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Key generation failed.
    #[error("could not generate an ECDSA P-256 key: {0}")]
    KeyGeneration(#[source] rcgen::Error),
    /// Building or signing a certificate failed.
    #[error("could not create the {what} certificate: {source}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// `now` cannot be represented in a certificate.
    #[error("time {} cannot be encoded in a certificate", rfc3339(.0))]
    TimeOutOfRange(SystemTime),
    /// The system random number generator failed (serial numbers).
    #[error("could not generate a random serial number")]
    Random,
    /// The generated material did not pass the same validation as loaded
    /// material (a bug, reported rather than hidden).
    #[error("generated credentials failed validation: {0}")]
    Invalid(#[from] LoadError),
}

/// A leaf certificate issued for a workload.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The identity the certificate was issued for.
    pub identity: IdentityName,
    /// The leaf certificate (DER), what Linkerd's `CertifyResponse` calls
    /// `leaf_certificate`.
    pub leaf: CertificateDer<'static>,
    /// The chain to present in TLS: leaf, then the issuer certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's notAfter.
    pub valid_until: SystemTime,
}

impl IssuedCert {
    /// The intermediates to send along with the leaf (the chain minus the
    /// leaf), Linkerd's `intermediate_certificates`.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        self.chain.get(1..).unwrap_or_default()
    }
}

/// A validated issuer: a CA certificate signed by a trust anchor, and its key.
///
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<Inner>,
}

struct Inner {
    cert: CertificateDer<'static>,
    file: String,
    subject: String,
    signer: rcgen::Issuer<'static, KeyPair>,
    not_before: SystemTime,
    not_after: SystemTime,
    /// notAfter of the anchor that signed the issuer: leaves never outlive it.
    anchor_not_after: SystemTime,
    /// Whether the issuer has a subjectKeyIdentifier to reference from leaves.
    has_ski: bool,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("file", &self.inner.file)
            .field("subject", &self.inner.subject)
            .field("not_after", &rfc3339(&self.inner.not_after))
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Loads and validates an issuer from PEM bytes, naming them `issuer.crt`
    /// and `issuer.key` in errors. See [`Issuer::load_named`].
    pub fn load(
        cert_pem: &[u8],
        key_pem: &[u8],
        anchors: &TrustAnchors,
        now: SystemTime,
    ) -> Result<Self, LoadError> {
        Self::load_named(
            cert_pem,
            DEFAULT_CERT_NAME,
            key_pem,
            DEFAULT_KEY_NAME,
            anchors,
            now,
        )
    }

    /// Reads and validates an issuer from a certificate and a key file.
    pub fn load_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
        anchors: &TrustAnchors,
        now: SystemTime,
    ) -> Result<Self, LoadError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let cert_pem = load::read(cert_path)?;
        let key_pem = load::read(key_path)?;
        Self::load_named(&cert_pem, cert_path, &key_pem, key_path, anchors, now)
    }

    /// Loads and validates an issuer. The first certificate of `cert_pem` is
    /// the issuer (any further certificates are ignored); the first key of
    /// `key_pem` is its key. The sources only name the inputs in errors.
    ///
    /// Checks, each with its own [`LoadError`] variant: the certificate is a
    /// CA (basicConstraints CA:TRUE) allowed to sign certificates (keyUsage
    /// keyCertSign), valid at `now`, signed directly by one of `anchors`; the
    /// key is ECDSA P-256 or RSA and is the certificate's key.
    pub fn load_named(
        cert_pem: &[u8],
        cert_source: impl AsRef<Path>,
        key_pem: &[u8],
        key_source: impl AsRef<Path>,
        anchors: &TrustAnchors,
        now: SystemTime,
    ) -> Result<Self, LoadError> {
        let file = load::source_name(cert_source.as_ref());
        let key_file = load::source_name(key_source.as_ref());

        let der = pem::certificates(cert_pem)
            .map_err(|source| LoadError::Pem {
                file: file.clone(),
                source,
            })?
            .into_iter()
            .next()
            .map(CertificateDer::from)
            .ok_or_else(|| LoadError::NoCertificate { file: file.clone() })?;
        let cert = x509::parse(&der).map_err(|source| LoadError::BadCertificate {
            file: file.clone(),
            index: 1,
            source,
        })?;
        let key = load::load_key(key_pem, &key_file)?;

        if let Err(found) = x509::check_ca(&cert) {
            return Err(LoadError::IssuerNotCa { file, found });
        }
        if let Err(found) = x509::check_key_cert_sign(&cert) {
            return Err(LoadError::IssuerCannotSign { file, found });
        }
        match x509::validity_at(&cert, now) {
            Validity::Valid => {}
            Validity::Expired(not_after) => {
                return Err(LoadError::IssuerExpired { file, not_after });
            }
            Validity::NotYetValid(not_before) => {
                return Err(LoadError::IssuerNotYetValid { file, not_before });
            }
        }
        let anchor_not_after = anchors
            .signer_of(&cert)
            .and_then(|i| anchors.not_after(i))
            .ok_or_else(|| LoadError::NotSignedByAnchor {
                file: file.clone(),
                anchors_file: anchors.source().to_owned(),
                issuer_dn: cert.issuer().to_string(),
                anchors: anchors.subjects().to_vec(),
            })?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(LoadError::KeyMismatch {
                key_file,
                cert_file: file,
            });
        }

        let subject = cert.subject().to_string();
        let not_before = x509::not_before(&cert);
        let not_after = x509::not_after(&cert);
        let has_ski = cert
            .iter_extensions()
            .any(|e| matches!(e.parsed_extension(), ParsedExtension::SubjectKeyIdentifier(_)));
        let subject_raw = cert.subject().as_raw().to_vec();
        drop(cert);

        let signer =
            rcgen::Issuer::from_ca_cert_der(&der, key).map_err(|source| LoadError::IssuerUnusable {
                file: file.clone(),
                source,
            })?;
        probe_issuer_name(&signer, &subject_raw).map_err(|probe| match probe {
            Probe::Sign(source) => LoadError::IssuerUnusable {
                file: file.clone(),
                source,
            },
            Probe::NameDiffers => LoadError::IssuerSubjectUnsupported {
                file: file.clone(),
                subject: subject.clone(),
            },
        })?;

        Ok(Issuer {
            inner: Arc::new(Inner {
                cert: der,
                file,
                subject,
                signer,
                not_before,
                not_after,
                anchor_not_after,
                has_ski,
            }),
        })
    }

    /// The issuer certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.inner.cert
    }

    /// The issuer certificate as PEM (`issuer.crt` / `crt.pem`).
    pub fn cert_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.inner.cert)
    }

    /// The issuer private key as PKCS#8 PEM (`issuer.key` / `key.pem`).
    /// SEC1 and PKCS#1 keys are exported re-encoded as PKCS#8.
    pub fn key_pem(&self) -> String {
        self.inner.signer.key().serialize_pem()
    }

    /// The issuer's subject DN, e.g. `CN=identity.linkerd.cluster.local`.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// Start of the issuer certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        self.inner.not_before
    }

    /// End of the issuer certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after
    }

    /// Issues a leaf certificate for `expected` from a DER PKCS#10 CSR, as
    /// Linkerd's identity controller does for a proxy whose service-account
    /// token proved it is `expected`.
    ///
    /// The CSR must be well-formed, self-signed, carry an ECDSA P-256 key and
    /// request exactly the DNS SAN `expected` (subject CN empty or the same;
    /// no other SANs). Any extensions the CSR requests are ignored: the leaf
    /// always gets CN and DNS SAN = `expected`, CA:FALSE, digitalSignature and
    /// keyEncipherment, serverAuth and clientAuth.
    ///
    /// The leaf is valid from `now` (back-dated 10s for clock skew) for
    /// `lifetime` (e.g. [`DEFAULT_LEAF_LIFETIME`]), but never beyond the issuer
    /// or its anchor; [`IssuedCert::valid_until`] says when it ends.
    pub fn issue(
        &self,
        csr_der: &[u8],
        expected: &IdentityName,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, IssueError> {
        let inner = &*self.inner;
        if lifetime.as_secs() == 0 {
            return Err(IssueError::ZeroLifetime);
        }
        let now_s = x509::unix(now);
        if now_s > x509::unix(inner.not_after) {
            return Err(IssueError::IssuerExpired {
                file: inner.file.clone(),
                not_after: inner.not_after,
            });
        }
        if now_s < x509::unix(inner.not_before) {
            return Err(IssueError::IssuerNotYetValid {
                file: inner.file.clone(),
                not_before: inner.not_before,
            });
        }

        let spki_der = check_csr(csr_der, expected)?;

        let lifetime_s = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let not_before = now_s.saturating_sub(CLOCK_SKEW_SECS);
        let not_after = now_s
            .saturating_add(lifetime_s)
            .min(x509::unix(inner.not_after))
            .min(x509::unix(inner.anchor_not_after));

        let sign_err = |source| IssueError::Sign {
            identity: expected.clone(),
            source,
        };
        let mut params = CertificateParams::default();
        set_validity(&mut params, not_before, not_after).map_err(|()| IssueError::TimeOutOfRange(now))?;
        params.serial_number = Some(random_serial().ok_or(IssueError::Random)?);
        params.distinguished_name = common_name(expected.as_str());
        params.subject_alt_names = vec![SanType::DnsName(
            Ia5String::try_from(expected.as_str()).map_err(sign_err)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = inner.has_ski;

        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki_der).map_err(sign_err)?;
        let leaf = params.signed_by(&public_key, &inner.signer).map_err(sign_err)?;
        let leaf: CertificateDer<'static> = leaf.into();
        Ok(IssuedCert {
            identity: expected.clone(),
            chain: vec![leaf.clone(), inner.cert.clone()],
            leaf,
            valid_until: x509::from_unix(not_after),
        })
    }
}

/// Validates a CSR for `expected` and returns its SubjectPublicKeyInfo DER.
fn check_csr(csr_der: &[u8], expected: &IdentityName) -> Result<Vec<u8>, IssueError> {
    let csr = match X509CertificationRequest::from_der(csr_der) {
        Ok((rest, _)) if !rest.is_empty() => {
            return Err(IssueError::MalformedCsr {
                reason: format!("{} trailing bytes after the request", rest.len()),
            });
        }
        Ok((_, csr)) => csr,
        Err(e) => {
            return Err(IssueError::MalformedCsr {
                reason: e.to_string(),
            });
        }
    };
    csr.verify_signature()
        .map_err(|source| IssueError::CsrSignature { source })?;

    let info = &csr.certification_request_info;
    let alg = &info.subject_pki.algorithm;
    if alg.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        let found = if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
            "RSA".to_owned()
        } else {
            format!("of algorithm {}", alg.algorithm)
        };
        return Err(IssueError::UnsupportedCsrKey { found });
    }
    match alg.parameters.as_ref().map(|p| p.as_oid()) {
        Some(Ok(curve)) if curve == OID_EC_P256 => {}
        Some(Ok(curve)) => {
            return Err(IssueError::UnsupportedCsrKey {
                found: format!("ECDSA on curve {curve}"),
            });
        }
        _ => {
            return Err(IssueError::UnsupportedCsrKey {
                found: "ECDSA without a named curve".to_owned(),
            });
        }
    }

    let mut dns = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            let kind = match name {
                GeneralName::DNSName(d) => {
                    dns.push((*d).to_owned());
                    continue;
                }
                GeneralName::IPAddress(_) => "IP address",
                GeneralName::RFC822Name(_) => "email",
                GeneralName::URI(_) => "URI",
                _ => "non-DNS",
            };
            return Err(IssueError::UnexpectedSan {
                expected: expected.clone(),
                kind,
                value: name.to_string(),
            });
        }
    }
    match dns.as_slice() {
        [] => {
            return Err(IssueError::CsrMissingName {
                expected: expected.clone(),
            });
        }
        [one] if one == expected.as_str() => {}
        [one] => {
            return Err(IssueError::IdentityMismatch {
                expected: expected.clone(),
                requested: one.clone(),
            });
        }
        _ => {
            return Err(IssueError::CsrMultipleNames {
                expected: expected.clone(),
                found: dns,
            });
        }
    }
    for cn in info.subject.iter_common_name() {
        match cn.as_str() {
            Ok(s) if s == expected.as_str() => {}
            Ok(s) => {
                return Err(IssueError::CommonNameMismatch {
                    expected: expected.clone(),
                    common_name: s.to_owned(),
                });
            }
            Err(_) => {
                return Err(IssueError::CommonNameMismatch {
                    expected: expected.clone(),
                    common_name: "<not a string>".to_owned(),
                });
            }
        }
    }
    Ok(info.subject_pki.raw.to_vec())
}

enum Probe {
    Sign(rcgen::Error),
    NameDiffers,
}

/// Signs a throwaway certificate and checks that its issuer field is
/// byte-identical to the issuer certificate's subject. rcgen re-encodes the
/// subject it read; verifiers chain by exact name comparison, so any
/// difference would make every issued certificate unverifiable. Better to
/// find out when loading than at the first handshake.
fn probe_issuer_name(signer: &rcgen::Issuer<'static, KeyPair>, subject_raw: &[u8]) -> Result<(), Probe> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name("probe");
    let cert = params.signed_by(signer.key(), signer).map_err(Probe::Sign)?;
    match x509::parse(cert.der()) {
        Ok(parsed) if parsed.issuer().as_raw() == subject_raw => Ok(()),
        _ => Err(Probe::NameDiffers),
    }
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) -> Result<(), ()> {
    params.not_before = ASN1Time::from_timestamp(not_before)
        .map_err(|_| ())?
        .to_datetime();
    params.not_after = ASN1Time::from_timestamp(not_after).map_err(|_| ())?.to_datetime();
    Ok(())
}

/// A random positive 128-bit serial number (RFC 5280 allows up to 20 octets;
/// the top bit is cleared so the DER INTEGER stays positive and 16 bytes).
fn random_serial() -> Option<SerialNumber> {
    let mut bytes = [0u8; 16];
    provider().secure_random.fill(&mut bytes).ok()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Some(SerialNumber::from_slice(&bytes))
}

/// Generates a fresh trust anchor and issuer, as `linkerd install` does when
/// no certificates are supplied: ECDSA P-256 keys, anchor `root.linkerd.<td>`
/// valid 10 years (CA, pathlen 1), issuer `identity.linkerd.<td>` valid 1 year
/// (CA, pathlen 0), both with keyCertSign and cRLSign, back-dated 10s.
///
/// The anchor's private key is discarded: nothing needs it once the issuer is
/// signed, and an anchor key that never existed on disk cannot leak. Export
/// the results with [`TrustAnchors::to_pem`], [`Issuer::cert_pem`] and
/// [`Issuer::key_pem`]. The generated material is validated exactly like
/// loaded material before it is returned.
pub fn generate(
    trust_domain: &TrustDomain,
    now: SystemTime,
) -> Result<(TrustAnchors, Issuer), GenerateError> {
    let now_s = x509::unix(now);
    let start = now_s.saturating_sub(CLOCK_SKEW_SECS);
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);

    let ca = |cn: String, path_len: u8, lifetime: Duration, what: &'static str| {
        let mut params = CertificateParams::default();
        set_validity(&mut params, start, now_s.saturating_add(secs(lifetime)))
            .map_err(|()| GenerateError::TimeOutOfRange(now))?;
        params.serial_number = Some(random_serial().ok_or(GenerateError::Random)?);
        params.distinguished_name = common_name(&cn);
        params.subject_alt_names = vec![SanType::DnsName(
            Ia5String::try_from(cn).map_err(|source| GenerateError::Certificate { what, source })?,
        )];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok::<_, GenerateError>(params)
    };

    let anchor_key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(GenerateError::KeyGeneration)?;
    let anchor_params = ca(
        trust_domain.anchor_name(),
        1,
        GENERATED_ANCHOR_LIFETIME,
        "trust anchor",
    )?;
    let anchor = anchor_params
        .self_signed(&anchor_key)
        .map_err(|source| GenerateError::Certificate {
            what: "trust anchor",
            source,
        })?;

    let issuer_key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(GenerateError::KeyGeneration)?;
    let mut issuer_params = ca(trust_domain.issuer_name(), 0, GENERATED_ISSUER_LIFETIME, "issuer")?;
    issuer_params.use_authority_key_identifier_extension = true;
    let signing_anchor = rcgen::Issuer::from_params(&anchor_params, &anchor_key);
    let issuer_cert = issuer_params
        .signed_by(&issuer_key, &signing_anchor)
        .map_err(|source| GenerateError::Certificate {
            what: "issuer",
            source,
        })?;

    let anchors = TrustAnchors::from_der(vec![anchor.der().clone()], "generated trust anchor", now)?;
    let issuer = Issuer::load_named(
        issuer_cert.pem().as_bytes(),
        "generated issuer certificate",
        issuer_key.serialize_pem().as_bytes(),
        "generated issuer key",
        &anchors,
        now,
    )?;
    Ok((anchors, issuer))
}
