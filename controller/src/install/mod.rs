//! `strait install`, `upgrade` and `uninstall`: the control plane as Kubernetes manifests.
//!
//! Rendering is pure: [`render`] turns [`Values`], the identity material and the webhook's
//! serving certificate into typed objects, the same every time for the same inputs. What
//! varies is where the inputs come from: [`install`] starts from defaults and generates (or
//! loads) certificates; [`upgrade`] starts from what [`read_installed`] finds in a cluster's
//! store and keeps its certificates unless new files are given.

pub mod manifests;
pub mod values;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use strait_api::Store;
use strait_api::kinds::Object;
use strait_identity::{GenerateError, Issuer, LoadError, NameError, TrustAnchors, TrustDomain};

pub use manifests::NAMESPACE;
pub use values::{Values, ValuesError};

use crate::inject::InjectConfig;

/// Lifetime of the webhook's self-signed serving certificate (as Linkerd's chart).
const WEBHOOK_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Why manifests could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A bad `--set`.
    #[error(transparent)]
    Values(#[from] ValuesError),
    /// A trust domain that is not a DNS name.
    #[error("--identity-trust-domain {given:?}: {source}")]
    TrustDomain {
        /// As given.
        given: String,
        /// What is wrong with it.
        #[source]
        source: NameError,
    },
    /// Some but not all of the three identity files.
    #[error(
        "{given} given without {missing}: give all three of --identity-trust-anchors-file, \
         --identity-issuer-certificate-file and --identity-issuer-key-file, or none to generate new ones"
    )]
    IncompleteIdentityFiles {
        /// The flags given.
        given: String,
        /// The flags missing.
        missing: String,
    },
    /// The trust anchors file failed a check.
    #[error("--identity-trust-anchors-file: {0}")]
    Anchors(#[source] LoadError),
    /// The issuer certificate or key failed a check.
    #[error("--identity-issuer-certificate-file/--identity-issuer-key-file: {0}")]
    Issuer(#[source] LoadError),
    /// Generating the anchors and issuer failed.
    #[error("generating the identity trust anchor and issuer: {0}")]
    Generate(#[from] GenerateError),
    /// Generating the webhook's certificate failed.
    #[error("generating the proxy injector's serving certificate: {0}")]
    WebhookCert(#[source] rcgen::Error),
    /// `upgrade` found no installed control plane.
    #[error("{what} not found: is the control plane installed? Run `strait install` first")]
    NotInstalled {
        /// The missing object and key.
        what: String,
    },
    /// `upgrade` found an installed object it cannot read.
    #[error("the installed {what} cannot be read: {detail}")]
    BadInstalled {
        /// The object and key.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The installed identity material no longer passes its checks.
    #[error(
        "the installed identity material is not usable ({0}); give new certificates with the --identity-* flags"
    )]
    InstalledIdentity(#[source] LoadError),
    /// `upgrade` was asked to change the trust domain.
    #[error(
        "--identity-trust-domain {given:?}: the control plane was installed with trust domain {installed:?}, \
         and changing it would change every workload's identity; uninstall and install again instead"
    )]
    TrustDomainChange {
        /// The installed trust domain.
        installed: String,
        /// As given.
        given: String,
    },
    /// Reading the installed objects failed.
    #[error("reading the installed control plane: {0}")]
    Store(#[from] strait_api::StoreError),
}

/// The three identity files of `--identity-*-file`.
#[derive(Clone, Debug)]
pub struct IdentityFiles {
    /// PEM trust anchors.
    pub trust_anchors: PathBuf,
    /// PEM issuer certificate.
    pub issuer_certificate: PathBuf,
    /// PEM issuer key.
    pub issuer_key: PathBuf,
}

impl IdentityFiles {
    /// All three flags or none; anything in between is an error naming what is missing.
    pub fn from_flags(
        trust_anchors: Option<PathBuf>,
        issuer_certificate: Option<PathBuf>,
        issuer_key: Option<PathBuf>,
    ) -> Result<Option<Self>, InstallError> {
        match (trust_anchors, issuer_certificate, issuer_key) {
            (None, None, None) => Ok(None),
            (Some(trust_anchors), Some(issuer_certificate), Some(issuer_key)) => Ok(Some(Self {
                trust_anchors,
                issuer_certificate,
                issuer_key,
            })),
            (a, c, k) => {
                let flags = [
                    ("--identity-trust-anchors-file", a.is_some()),
                    ("--identity-issuer-certificate-file", c.is_some()),
                    ("--identity-issuer-key-file", k.is_some()),
                ];
                let list = |present: bool| {
                    flags
                        .iter()
                        .filter(|(_, p)| *p == present)
                        .map(|(f, _)| *f)
                        .collect::<Vec<_>>()
                        .join(" and ")
                };
                Err(InstallError::IncompleteIdentityFiles {
                    given: list(true),
                    missing: list(false),
                })
            }
        }
    }

    /// Loads and validates the files (anchors valid CAs, issuer signed by them, key matches).
    pub fn load(&self, now: SystemTime) -> Result<Identity, InstallError> {
        let anchors = TrustAnchors::load(&self.trust_anchors, now).map_err(InstallError::Anchors)?;
        let issuer = Issuer::load_files(&self.issuer_certificate, &self.issuer_key, &anchors, now)
            .map_err(InstallError::Issuer)?;
        Ok(Identity { anchors, issuer })
    }
}

/// The mesh's trust anchors and the issuer the controller signs proxy certificates with.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The trust anchors.
    pub anchors: TrustAnchors,
    /// The issuer.
    pub issuer: Issuer,
}

/// The injector webhook's serving certificate and key (PEM), also its caBundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTls {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
}

impl WebhookTls {
    /// A self-signed certificate for `linkerd-proxy-injector.<ns>.svc`, valid a year, which
    /// the webhook configuration trusts as its own CA (as Linkerd's chart generates it).
    pub fn generate(now: SystemTime) -> Result<Self, InstallError> {
        let host = format!("{}.{NAMESPACE}.svc", manifests::WEBHOOK_SERVICE);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(InstallError::WebhookCert)?;
        let mut params = CertificateParams::new(vec![host.clone()]).map_err(InstallError::WebhookCert)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        // Back-dated a little for API servers whose clock is behind ours.
        params.not_before = epoch + since.saturating_sub(Duration::from_secs(10));
        params.not_after = epoch + since + WEBHOOK_CERT_LIFETIME;
        let cert = params.self_signed(&key).map_err(InstallError::WebhookCert)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What `install` and `upgrade` were asked for on the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--ha`.
    pub ha: bool,
    /// Each `--set KEY=VALUE`, in order.
    pub set: Vec<String>,
    /// `--identity-trust-domain`, when given.
    pub trust_domain: Option<String>,
    /// The `--identity-*-file` flags, when given.
    pub identity_files: Option<IdentityFiles>,
}

impl Options {
    /// `base` with `--ha`, then every `--set`, applied.
    fn values(&self, mut base: Values) -> Result<Values, InstallError> {
        if self.ha {
            base.apply_ha();
        }
        for s in &self.set {
            base.set(s)?;
        }
        Ok(base)
    }
}

fn trust_domain(given: &str) -> Result<TrustDomain, InstallError> {
    TrustDomain::new(given).map_err(|source| InstallError::TrustDomain {
        given: given.to_string(),
        source,
    })
}

/// Types rendered objects (everything but the CRDs), in the order to apply them.
pub fn render(values: &Values, identity: &Identity, webhook: &WebhookTls) -> Vec<Object> {
    manifests::values(values, identity, webhook)
        .into_iter()
        .map(|(k, v)| manifests::object(k, v))
        .collect()
}

/// The CRDs, for `install --crds`.
pub fn crds() -> Vec<Object> {
    strait_api::mesh::crds()
        .into_iter()
        .map(Object::CustomResourceDefinition)
        .collect()
}

/// What a fresh install renders, and the values it chose.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The objects, in the order to apply them.
    pub objects: Vec<Object>,
    /// The values they were rendered with.
    pub values: Values,
}

/// `strait install` (without `--crds`).
pub fn install(options: &Options, now: SystemTime) -> Result<Rendered, InstallError> {
    let mut values = options.values(Values::default())?;
    if let Some(td) = &options.trust_domain {
        values.identity_trust_domain = trust_domain(td)?.to_string();
    }
    let identity = match &options.identity_files {
        Some(files) => files.load(now)?,
        None => {
            let (anchors, issuer) =
                strait_identity::generate(&trust_domain(&values.identity_trust_domain)?, now)?;
            Identity { anchors, issuer }
        }
    };
    let webhook = WebhookTls::generate(now)?;
    Ok(Rendered {
        objects: render(&values, &identity, &webhook),
        values,
    })
}

/// An installed control plane, as read from its ConfigMaps and Secrets.
#[derive(Clone, Debug)]
pub struct Installed {
    /// The values of the install (or last upgrade).
    pub values: Values,
    /// The trust anchors PEM.
    pub trust_anchors_pem: String,
    /// The issuer certificate and key PEM.
    pub issuer: (Vec<u8>, Vec<u8>),
    /// The webhook's certificate, when its Secret is intact.
    pub webhook: Option<WebhookTls>,
}

impl Installed {
    /// The injection configuration of this control plane.
    pub fn inject_config(&self) -> InjectConfig {
        InjectConfig::new(self.values.clone(), self.trust_anchors_pem.clone())
    }
}

fn config_entry(cm: Option<ConfigMap>, name: &str, key: &str) -> Result<String, InstallError> {
    let what = format!("configmap {NAMESPACE}/{name} key {key}");
    cm.and_then(|c| c.data)
        .and_then(|mut d| d.remove(key))
        .ok_or(InstallError::NotInstalled { what })
}

fn secret_entry(secret: &Option<Secret>, name: &str, key: &str) -> Result<Vec<u8>, InstallError> {
    let what = format!("secret {NAMESPACE}/{name} key {key}");
    secret
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .ok_or(InstallError::NotInstalled { what })
}

/// Reads the installed values and identity material through any [`Store`].
pub async fn read_installed<S: Store>(store: &S) -> Result<Installed, InstallError> {
    let config: Option<ConfigMap> = store.get(NAMESPACE, manifests::CONFIG_MAP).await?;
    let text = config_entry(config, manifests::CONFIG_MAP, "values")?;
    let values = Values::from_yaml(&text).map_err(|detail| InstallError::BadInstalled {
        what: format!("configmap {NAMESPACE}/{} key values", manifests::CONFIG_MAP),
        detail,
    })?;
    let roots: Option<ConfigMap> = store.get(NAMESPACE, manifests::TRUST_ROOTS).await?;
    let trust_anchors_pem = config_entry(roots, manifests::TRUST_ROOTS, "ca-bundle.crt")?;
    let issuer: Option<Secret> = store.get(NAMESPACE, manifests::ISSUER_SECRET).await?;
    let issuer = (
        secret_entry(&issuer, manifests::ISSUER_SECRET, "crt.pem")?,
        secret_entry(&issuer, manifests::ISSUER_SECRET, "key.pem")?,
    );
    let tls: Option<Secret> = store.get(NAMESPACE, manifests::WEBHOOK_SECRET).await?;
    let webhook = match (
        secret_entry(&tls, manifests::WEBHOOK_SECRET, "tls.crt"),
        secret_entry(&tls, manifests::WEBHOOK_SECRET, "tls.key"),
    ) {
        (Ok(c), Ok(k)) => match (String::from_utf8(c), String::from_utf8(k)) {
            (Ok(cert_pem), Ok(key_pem)) => Some(WebhookTls { cert_pem, key_pem }),
            _ => None,
        },
        // A missing serving certificate is regenerated, not an error.
        _ => None,
    };
    Ok(Installed {
        values,
        trust_anchors_pem,
        issuer,
        webhook,
    })
}

/// `strait upgrade`: the installed control plane re-rendered with `options` applied,
/// keeping its certificates unless new identity files are given.
pub fn upgrade(installed: &Installed, options: &Options, now: SystemTime) -> Result<Rendered, InstallError> {
    let mut values = options.values(installed.values.clone())?;
    if let Some(td) = &options.trust_domain {
        let td = trust_domain(td)?.to_string();
        if td != values.identity_trust_domain {
            return Err(InstallError::TrustDomainChange {
                installed: values.identity_trust_domain.clone(),
                given: td,
            });
        }
    }
    values.identity_trust_domain = installed.values.identity_trust_domain.clone();
    let identity = match &options.identity_files {
        Some(files) => files.load(now)?,
        None => {
            let roots = format!("configmap {NAMESPACE}/{} ca-bundle.crt", manifests::TRUST_ROOTS);
            let anchors = TrustAnchors::from_pem(installed.trust_anchors_pem.as_bytes(), roots, now)
                .map_err(InstallError::InstalledIdentity)?;
            let secret = format!("secret {NAMESPACE}/{}", manifests::ISSUER_SECRET);
            let issuer = Issuer::load_named(
                &installed.issuer.0,
                format!("{secret} crt.pem"),
                &installed.issuer.1,
                format!("{secret} key.pem"),
                &anchors,
                now,
            )
            .map_err(InstallError::InstalledIdentity)?;
            Identity { anchors, issuer }
        }
    };
    let webhook = match &installed.webhook {
        Some(w) => w.clone(),
        None => WebhookTls::generate(now)?,
    };
    Ok(Rendered {
        objects: render(&values, &identity, &webhook),
        values,
    })
}

/// `strait uninstall`: every object an install creates (an HA install, CRDs included), as
/// `apiVersion`/`kind`/`metadata` skeletons, in the order to delete them: the webhook first
/// so pods keep being created meanwhile, the CRDs last.
pub fn uninstall(now: SystemTime) -> Result<Vec<serde_json::Value>, InstallError> {
    let options = Options {
        ha: true,
        ..Options::default()
    };
    let mut objects = install(&options, now)?.objects;
    objects.splice(0..0, crds());
    Ok(objects
        .iter()
        .rev()
        .map(|o| {
            let info = o.kind_id().info();
            let mut meta = serde_json::json!({ "name": o.meta().name });
            if let Some(ns) = &o.meta().namespace {
                meta["namespace"] = serde_json::json!(ns);
            }
            serde_json::json!({ "apiVersion": info.api_version(), "kind": info.kind, "metadata": meta })
        })
        .collect())
}
