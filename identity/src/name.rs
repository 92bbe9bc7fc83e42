//! Linkerd identity names and trust domains.
//!
//! A workload's mesh identity is the DNS-like name
//! `<serviceaccount>.<namespace>.serviceaccount.identity.linkerd.<trust-domain>`.
//! It is what the identity controller writes into a leaf certificate's DNS SAN,
//! what a client puts in SNI / expects from a server, and what authorization
//! policy matches on, so it is parsed once into [`IdentityName`] and carried
//! around validated.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::ServerName;

/// The fixed middle of every workload identity. The `linkerd` label is the
/// control-plane namespace; Strait, like a default Linkerd install, always
/// runs its control plane in `linkerd`.
const MARKER: &str = ".serviceaccount.identity.linkerd.";

/// Trust domain used when none is configured (`linkerd install` default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// DNS names (and so identities) are limited to 253 characters; rustls and
/// webpki refuse longer names, so we refuse them up front.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Which part of an identity name an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The Kubernetes service account (first label).
    ServiceAccount,
    /// The Kubernetes namespace (second label).
    Namespace,
    /// The trust domain (everything after `.identity.linkerd.`).
    TrustDomain,
}

impl Part {
    fn expected(self) -> &'static str {
        match self {
            // Service account names are DNS-1123 subdomains in Kubernetes, but
            // Linkerd (proxy, policy controller) splits identities on dots and
            // takes the first two labels, so a dotted name would be ambiguous.
            Part::ServiceAccount | Part::Namespace => {
                "a DNS-1123 label (1-63 characters of lowercase a-z, 0-9 and '-', \
                 starting and ending with a letter or digit)"
            }
            Part::TrustDomain => {
                "a DNS-1123 subdomain (dot-separated DNS-1123 labels of lowercase \
                 a-z, 0-9 and '-', at most 253 characters), e.g. cluster.local"
            }
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::ServiceAccount => "service account",
            Part::Namespace => "namespace",
            Part::TrustDomain => "trust domain",
        })
    }
}

/// What exactly is wrong with a label or subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelProblem {
    /// The part is empty.
    Empty,
    /// A dot-separated label inside a subdomain is empty (`a..b`, trailing dot).
    EmptyLabel,
    /// A label is longer than 63 characters.
    LabelTooLong { label: String, len: usize },
    /// The part is longer than 253 characters.
    TooLong { len: usize },
    /// A character outside `[a-z0-9-]` (or `.` where labels are expected).
    InvalidChar { ch: char, offset: usize },
    /// A label starts or ends with `-`.
    HyphenAtEdge { label: String },
}

impl fmt::Display for LabelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelProblem::Empty => f.write_str("it is empty"),
            LabelProblem::EmptyLabel => {
                f.write_str("it contains an empty label (leading, trailing or doubled '.')")
            }
            LabelProblem::LabelTooLong { label, len } => {
                write!(f, "label {label:?} is {len} characters long (max 63)")
            }
            LabelProblem::TooLong { len } => write!(f, "it is {len} characters long (max 253)"),
            LabelProblem::InvalidChar { ch, offset } if ch.is_ascii_uppercase() => write!(
                f,
                "it contains uppercase {ch:?} at offset {offset} (names are lowercase)"
            ),
            LabelProblem::InvalidChar { ch, offset } => {
                write!(f, "it contains {ch:?} at offset {offset}")
            }
            LabelProblem::HyphenAtEdge { label } => {
                write!(f, "label {label:?} starts or ends with '-'")
            }
        }
    }
}

/// Why a string is not a valid identity name or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The `.serviceaccount.identity.linkerd.` structure is missing.
    #[error(
        "invalid identity {name:?}: expected \
         <serviceaccount>.<namespace>.serviceaccount.identity.linkerd.<trust-domain>"
    )]
    Malformed { name: String },
    /// Only one label precedes `.serviceaccount.identity.linkerd.`.
    #[error(
        "invalid identity {name:?}: expected <serviceaccount>.<namespace> before \
         \".serviceaccount.identity.linkerd.\", found only {found:?}"
    )]
    MissingNamespace { name: String, found: String },
    /// One part violates the DNS-1123 rules.
    #[error(
        "invalid {part} {value:?} in {name:?}: {problem}; expected {}",
        part.expected()
    )]
    InvalidPart {
        name: String,
        part: Part,
        value: String,
        problem: LabelProblem,
    },
    /// The whole name exceeds the DNS limit.
    #[error("invalid identity {name:?}: it is {len} characters long; DNS names are limited to 253")]
    TooLong { name: String, len: usize },
}

/// Checks a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 chars.
/// `base` is the offset of `label` inside the part, for error positions.
fn check_label(label: &str, base: usize) -> Result<(), LabelProblem> {
    if label.is_empty() {
        return Err(LabelProblem::Empty);
    }
    if let Some((offset, ch)) = label
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(LabelProblem::InvalidChar {
            ch,
            offset: base + offset,
        });
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(LabelProblem::LabelTooLong {
            label: label.to_owned(),
            len: label.len(),
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(LabelProblem::HyphenAtEdge {
            label: label.to_owned(),
        });
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain: dot-separated labels, at most 253 chars.
fn check_subdomain(value: &str) -> Result<(), LabelProblem> {
    if value.is_empty() {
        return Err(LabelProblem::Empty);
    }
    if value.len() > MAX_NAME_LEN {
        return Err(LabelProblem::TooLong { len: value.len() });
    }
    let mut offset = 0;
    for label in value.split('.') {
        if label.is_empty() {
            return Err(LabelProblem::EmptyLabel);
        }
        check_label(label, offset)?;
        offset += label.len() + 1;
    }
    Ok(())
}

fn check_part(name: &str, part: Part, value: &str) -> Result<(), NameError> {
    let checked = match part {
        Part::ServiceAccount | Part::Namespace => check_label(value, 0),
        Part::TrustDomain => check_subdomain(value),
    };
    checked.map_err(|problem| NameError::InvalidPart {
        name: name.to_owned(),
        part,
        value: value.to_owned(),
        problem,
    })
}

/// A validated trust domain such as `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates `trust_domain` as a DNS-1123 subdomain.
    pub fn new(trust_domain: impl AsRef<str>) -> Result<Self, NameError> {
        let td = trust_domain.as_ref();
        check_part(td, Part::TrustDomain, td)?;
        Ok(TrustDomain(td.to_owned()))
    }

    /// The trust domain as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Common name of the trust anchor `linkerd install` generates:
    /// `root.linkerd.<td>`.
    pub fn anchor_name(&self) -> String {
        format!("root.linkerd.{}", self.0)
    }

    /// Name of the identity issuer (the intermediate CA held by the identity
    /// controller): `identity.linkerd.<td>`.
    pub fn issuer_name(&self) -> String {
        format!("identity.linkerd.{}", self.0)
    }

    /// The identity of `serviceaccount` in `namespace` under this trust domain.
    pub fn identity(
        &self,
        service_account: impl AsRef<str>,
        namespace: impl AsRef<str>,
    ) -> Result<IdentityName, NameError> {
        IdentityName::new(service_account, namespace, &self.0)
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        TrustDomain(DEFAULT_TRUST_DOMAIN.to_owned())
    }
}

impl FromStr for TrustDomain {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        TrustDomain::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A workload's mesh identity:
/// `<serviceaccount>.<namespace>.serviceaccount.identity.linkerd.<trust-domain>`.
///
/// Equality, ordering and hashing are those of the full name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityName {
    /// The full name; the parts are byte ranges of it.
    name: String,
    sa_len: usize,
    ns_len: usize,
}

impl IdentityName {
    /// Builds and validates the identity of `service_account` in `namespace`.
    pub fn new(
        service_account: impl AsRef<str>,
        namespace: impl AsRef<str>,
        trust_domain: impl AsRef<str>,
    ) -> Result<Self, NameError> {
        let (sa, ns, td) = (
            service_account.as_ref(),
            namespace.as_ref(),
            trust_domain.as_ref(),
        );
        let name = format!("{sa}.{ns}{MARKER}{td}");
        Self::validate(name, sa.len(), ns.len())
    }

    fn validate(name: String, sa_len: usize, ns_len: usize) -> Result<Self, NameError> {
        let sa = &name[..sa_len];
        let ns = &name[sa_len + 1..sa_len + 1 + ns_len];
        let td = &name[sa_len + 1 + ns_len + MARKER.len()..];
        check_part(&name, Part::ServiceAccount, sa)?;
        check_part(&name, Part::Namespace, ns)?;
        check_part(&name, Part::TrustDomain, td)?;
        if name.len() > MAX_NAME_LEN {
            let len = name.len();
            return Err(NameError::TooLong { name, len });
        }
        Ok(IdentityName { name, sa_len, ns_len })
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.name[..self.sa_len]
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        let start = self.sa_len + 1;
        &self.name[start..start + self.ns_len]
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.name[self.sa_len + 1 + self.ns_len + MARKER.len()..]
    }

    /// The full identity name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name as a rustls [`ServerName`]: what a client connects with when it
    /// expects the server to hold this identity.
    pub fn server_name(&self) -> ServerName<'static> {
        // Every validated identity is a syntactically valid DNS name (lowercase
        // LDH labels, <= 63 each, <= 253 total), which is all rustls requires.
        match ServerName::try_from(self.name.clone()) {
            Ok(name) => name,
            Err(_) => unreachable!("validated identity {:?} is a DNS name", self.name),
        }
    }
}

impl FromStr for IdentityName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        let malformed = || NameError::Malformed { name: s.to_owned() };
        // The first occurrence wins: service account and namespace are single
        // labels, so the marker cannot legitimately appear earlier.
        let marker_at = s.find(MARKER).ok_or_else(malformed)?;
        let prefix = &s[..marker_at];
        if prefix.is_empty() {
            return Err(malformed());
        }
        let Some((sa, ns)) = prefix.rsplit_once('.') else {
            return Err(NameError::MissingNamespace {
                name: s.to_owned(),
                found: prefix.to_owned(),
            });
        };
        Self::validate(s.to_owned(), sa.len(), ns.len())
    }
}

impl TryFrom<&str> for IdentityName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, NameError> {
        s.parse()
    }
}

impl fmt::Display for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for IdentityName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local";

    #[test]
    fn parses_and_displays() {
        let id: IdentityName = ID.parse().expect("valid");
        assert_eq!(id.service_account(), "web");
        assert_eq!(id.namespace(), "emojivoto");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.to_string(), ID);
        assert_eq!(
            IdentityName::new("web", "emojivoto", "cluster.local").expect("valid"),
            id
        );
    }

    #[test]
    fn gateway_identity_is_an_identity() {
        let id = IdentityName::new("linkerd-gateway", "linkerd-multicluster", "example.org").expect("valid");
        assert_eq!(
            id.as_str(),
            "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.example.org"
        );
        let back: IdentityName = id.as_str().parse().expect("round trip");
        assert_eq!(back.namespace(), "linkerd-multicluster");
    }

    #[test]
    fn control_plane_names() {
        let td = TrustDomain::default();
        assert_eq!(td.as_str(), "cluster.local");
        assert_eq!(td.issuer_name(), "identity.linkerd.cluster.local");
        assert_eq!(td.anchor_name(), "root.linkerd.cluster.local");
        assert_eq!(
            td.identity("default", "linkerd").expect("valid").as_str(),
            "default.linkerd.serviceaccount.identity.linkerd.cluster.local"
        );
    }

    #[test]
    fn server_name_is_the_identity() {
        let id: IdentityName = ID.parse().expect("valid");
        assert_eq!(id.server_name().to_str(), ID);
    }

    #[test]
    fn missing_structure() {
        for bad in [
            "",
            "web.emojivoto.svc.cluster.local",
            "serviceaccount.identity.linkerd.cluster.local",
            "identity.linkerd.cluster.local",
        ] {
            let err = bad.parse::<IdentityName>().expect_err(bad);
            assert!(matches!(err, NameError::Malformed { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains("<serviceaccount>.<namespace>"));
        }
        let err = "web.serviceaccount.identity.linkerd.cluster.local"
            .parse::<IdentityName>()
            .expect_err("no namespace");
        assert!(matches!(err, NameError::MissingNamespace { .. }));
        assert!(err.to_string().contains("found only \"web\""), "{err}");
    }

    fn invalid_part(s: &str) -> (Part, LabelProblem, String) {
        match s.parse::<IdentityName>() {
            Err(e @ NameError::InvalidPart { .. }) => {
                let msg = e.to_string();
                let NameError::InvalidPart { part, problem, .. } = e else {
                    unreachable!()
                };
                (part, problem, msg)
            }
            other => panic!("{s}: expected InvalidPart, got {other:?}"),
        }
    }

    #[test]
    fn bad_service_account() {
        let (part, problem, msg) =
            invalid_part("Web.emojivoto.serviceaccount.identity.linkerd.cluster.local");
        assert_eq!(part, Part::ServiceAccount);
        assert_eq!(problem, LabelProblem::InvalidChar { ch: 'W', offset: 0 });
        assert!(msg.contains("invalid service account \"Web\""), "{msg}");
        assert!(msg.contains("uppercase"), "{msg}");
        assert!(msg.contains("DNS-1123 label"), "{msg}");

        // A dotted service account is ambiguous in Linkerd's naming scheme.
        let (part, problem, _) = invalid_part("a.b.emojivoto.serviceaccount.identity.linkerd.cluster.local");
        assert_eq!(part, Part::ServiceAccount);
        assert_eq!(problem, LabelProblem::InvalidChar { ch: '.', offset: 1 });

        let (part, problem, _) = invalid_part("-web.emojivoto.serviceaccount.identity.linkerd.cluster.local");
        assert_eq!(part, Part::ServiceAccount);
        assert!(matches!(problem, LabelProblem::HyphenAtEdge { .. }));
    }

    #[test]
    fn bad_namespace() {
        let (part, problem, msg) =
            invalid_part("web.emoji_voto.serviceaccount.identity.linkerd.cluster.local");
        assert_eq!(part, Part::Namespace);
        assert_eq!(problem, LabelProblem::InvalidChar { ch: '_', offset: 5 });
        assert!(msg.contains("invalid namespace \"emoji_voto\""), "{msg}");

        let long = "n".repeat(64);
        let (part, problem, _) = invalid_part(&format!(
            "web.{long}.serviceaccount.identity.linkerd.cluster.local"
        ));
        assert_eq!(part, Part::Namespace);
        assert!(matches!(problem, LabelProblem::LabelTooLong { len: 64, .. }));

        let err = IdentityName::new("web", "", "cluster.local").expect_err("empty ns");
        assert!(matches!(
            err,
            NameError::InvalidPart {
                part: Part::Namespace,
                problem: LabelProblem::Empty,
                ..
            }
        ));
    }

    #[test]
    fn bad_trust_domain() {
        let (part, problem, msg) =
            invalid_part("web.emojivoto.serviceaccount.identity.linkerd.cluster.local.");
        assert_eq!(part, Part::TrustDomain);
        assert_eq!(problem, LabelProblem::EmptyLabel);
        assert!(msg.contains("DNS-1123 subdomain"), "{msg}");

        let (part, problem, _) = invalid_part("web.emojivoto.serviceaccount.identity.linkerd.Cluster.local");
        assert_eq!(part, Part::TrustDomain);
        assert_eq!(problem, LabelProblem::InvalidChar { ch: 'C', offset: 0 });

        let err = TrustDomain::new("cluster..local").expect_err("empty label");
        assert!(matches!(
            err,
            NameError::InvalidPart {
                part: Part::TrustDomain,
                ..
            }
        ));
        let err = TrustDomain::new("").expect_err("empty");
        assert!(err.to_string().contains("it is empty"), "{err}");
        assert_eq!(
            "example.org".parse::<TrustDomain>().expect("ok").as_str(),
            "example.org"
        );
    }

    #[test]
    fn too_long() {
        let td = vec!["a".repeat(60); 4].join("."); // 243 chars, valid alone
        TrustDomain::new(&td).expect("valid trust domain");
        let err = IdentityName::new("web", "ns", &td).expect_err("too long");
        assert!(matches!(err, NameError::TooLong { .. }), "{err:?}");
        assert!(err.to_string().contains("253"));
    }
}
