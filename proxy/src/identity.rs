//! The proxy's own certificate: a key and CSR made at start, traded with the pod's token
//! for a leaf certificate at `Identity/Certify`, renewed at 70% of its lifetime.
//!
//! Invariants: the [`CertStore`] is only ever replaced by a newer certificate, never
//! emptied, so a controller outage never takes the proxy's identity away while the old
//! certificate is valid; established connections keep the certificate they handshook
//! with. Readiness flips to true on the first certificate and stays true.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use linkerd2_proxy_api::identity::{CertifyRequest, identity_client::IdentityClient};
use strait_identity::pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use strait_identity::{CertStore, IdentityName};
use tokio::sync::watch;
use tonic::transport::Channel;

/// Why one certification attempt failed (the daemon retries).
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The token file could not be read.
    #[error("cannot read the identity token {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The controller refused or could not be reached (a refused TLS handshake with the
    /// Identity service says why in the message).
    #[error("Identity/Certify failed ({}): {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    /// The answer was unusable.
    #[error("the issued certificate is unusable: {0}")]
    Certificate(String),
}

/// When to renew a certificate valid until `valid_until`, asked at `now`: after 70% of
/// its remaining lifetime (Linkerd's schedule), never sooner than 1 s.
pub fn refresh_in(now: SystemTime, valid_until: SystemTime) -> Duration {
    let left = valid_until.duration_since(now).unwrap_or_default();
    left.mul_f64(0.7).max(Duration::from_secs(1))
}

/// The retry delay after `failures` consecutive failures: 100 ms doubling to 10 s, but
/// never beyond the moment the current certificate would be renewed anyway.
pub fn retry_in(failures: u32, until_expiry: Option<Duration>) -> Duration {
    let d = Duration::from_millis(100)
        .saturating_mul(1u32 << failures.min(7))
        .min(Duration::from_secs(10));
    match until_expiry {
        Some(left) if left < d => left.max(Duration::from_millis(100)),
        _ => d,
    }
}

/// The proxy's identity client.
pub struct Identity {
    name: IdentityName,
    token_file: PathBuf,
    key: PrivatePkcs8KeyDer<'static>,
    csr: CertificateSigningRequestDer<'static>,
    client: IdentityClient<Channel>,
    store: CertStore,
}

impl Identity {
    /// Generates the key and CSR for `name`; certificates land in `store`.
    pub fn new(
        name: IdentityName,
        token_file: PathBuf,
        channel: Channel,
        store: CertStore,
    ) -> Result<Self, strait_identity::CsrError> {
        let (key, csr) = strait_identity::generate_key_and_csr(&name)?;
        Ok(Self {
            name,
            token_file,
            key,
            csr,
            client: IdentityClient::new(channel),
            store,
        })
    }

    /// One `Certify` call; installs the certificate and returns its expiry.
    pub async fn certify(&mut self) -> Result<SystemTime, CertifyError> {
        let token = tokio::fs::read(&self.token_file)
            .await
            .map_err(|source| CertifyError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let rsp = self
            .client
            .certify(CertifyRequest {
                identity: self.name.to_string(),
                token,
                // DER, as the stock proxy sends it.
                certificate_signing_request: self.csr.as_ref().to_vec(),
            })
            .await?
            .into_inner();
        let valid_until = rsp
            .valid_until
            .and_then(|t| SystemTime::try_from(t).ok())
            .ok_or_else(|| CertifyError::Certificate("no valid_until".into()))?;
        let mut chain = vec![CertificateDer::from(rsp.leaf_certificate)];
        chain.extend(
            rsp.intermediate_certificates
                .into_iter()
                .map(CertificateDer::from),
        );
        // Checked before the store takes it: a certificate for another name must never
        // replace the one being served.
        let issued = strait_identity::certificate_identity(&chain[0]);
        if issued.as_ref() != Some(&self.name) {
            return Err(CertifyError::Certificate(format!(
                "issued for {}, not {}",
                issued.as_ref().map_or("no mesh identity", |n| n.as_str()),
                self.name
            )));
        }
        self.store
            .set(chain, PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(|e| CertifyError::Certificate(e.to_string()))?;
        Ok(valid_until)
    }

    /// Certifies, then renews forever; `ready` turns true on the first certificate, and
    /// `metrics` hears of each one.
    pub async fn run(
        mut self,
        ready: watch::Sender<bool>,
        metrics: std::sync::Arc<crate::metrics::Registry>,
    ) {
        let mut failures = 0u32;
        let mut expiry: Option<SystemTime> = None;
        loop {
            let wait = match self.certify().await {
                Ok(valid_until) => {
                    failures = 0;
                    expiry = Some(valid_until);
                    metrics.certified(valid_until);
                    ready.send_replace(true);
                    let wait = refresh_in(SystemTime::now(), valid_until);
                    tracing::info!(identity = %self.name, ?valid_until, renew_in = ?wait, "certified");
                    wait
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let left = expiry.map(|t| t.duration_since(SystemTime::now()).unwrap_or_default());
                    let wait = retry_in(failures, left);
                    if expiry.is_some() {
                        tracing::warn!(error = %e, retry_in = ?wait, "identity not refreshed; keeping the current certificate");
                    } else {
                        tracing::warn!(error = %e, retry_in = ?wait, "no certificate yet: /ready stays 503 until one is issued");
                    }
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_seventy_percent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            refresh_in(now, now + Duration::from_secs(100)),
            Duration::from_secs(70)
        );
        assert_eq!(refresh_in(now, now + Duration::from_secs(86400)).as_secs(), 60480);
        // Expired or nearly: never spin.
        assert_eq!(
            refresh_in(now, now - Duration::from_secs(5)),
            Duration::from_secs(1)
        );
    }

    /// An identity service that issues for the name asked the first time, then for
    /// `other`.
    struct Misissuing {
        issuer: strait_identity::Issuer,
        other: IdentityName,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[tonic::async_trait]
    impl linkerd2_proxy_api::identity::identity_server::Identity for Misissuing {
        async fn certify(
            &self,
            req: tonic::Request<CertifyRequest>,
        ) -> Result<tonic::Response<linkerd2_proxy_api::identity::CertifyResponse>, tonic::Status> {
            let r = req.into_inner();
            let asked: IdentityName = r
                .identity
                .parse()
                .map_err(|_| tonic::Status::invalid_argument("name"))?;
            let name = match self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => asked,
                _ => self.other.clone(),
            };
            let cert = self
                .issuer
                .issue(
                    &r.certificate_signing_request,
                    &name,
                    Duration::from_secs(3600),
                    SystemTime::now(),
                )
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            Ok(tonic::Response::new(
                linkerd2_proxy_api::identity::CertifyResponse {
                    leaf_certificate: cert.leaf.to_vec(),
                    intermediate_certificates: cert.intermediates().iter().map(|c| c.to_vec()).collect(),
                    valid_until: Some(cert.valid_until.into()),
                },
            ))
        }
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_never_replaces_the_one_served() {
        let td = strait_identity::TrustDomain::new("cluster.local").unwrap();
        let (_anchors, issuer) = strait_identity::generate(&td, SystemTime::now()).unwrap();
        let me = IdentityName::new("web", "production", "cluster.local").unwrap();
        let other = IdentityName::new("admin", "kube-system", "cluster.local").unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    linkerd2_proxy_api::identity::identity_server::IdentityServer::new(Misissuing {
                        issuer,
                        other: other.clone(),
                        calls: Default::default(),
                    }),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let token = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token.path(), "token").unwrap();
        let store = CertStore::new();
        let mut identity = Identity::new(me.clone(), token.path().into(), channel, store.clone()).unwrap();
        identity.certify().await.unwrap();
        assert_eq!(store.identity(), Some(me.clone()));
        let e = identity.certify().await.unwrap_err();
        assert!(e.to_string().contains(other.as_str()), "{e}");
        assert_eq!(
            store.identity(),
            Some(me),
            "the first certificate is still served"
        );
    }

    #[test]
    fn retries_back_off_but_not_past_expiry() {
        assert_eq!(retry_in(1, None), Duration::from_millis(200));
        assert_eq!(retry_in(30, None), Duration::from_secs(10));
        assert_eq!(retry_in(30, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(retry_in(30, Some(Duration::ZERO)), Duration::from_millis(100));
    }
}
