//! `io.linkerd.proxy.identity.Identity/Certify`: proxies trade a token and a CSR for a
//! leaf certificate of their workload identity.
//!
//! Who may ask for which identity is decided by a [`TokenValidator`]: in Kubernetes mode
//! the API server's TokenReview of the pod's ServiceAccount token ([`TokenReviewValidator`]);
//! in local mode a token the controller itself minted when the pod was registered
//! ([`LocalTokens`]), bound to the pod's namespace and service account. Refusals use the
//! gRPC status a proxy acts on: `Unauthenticated` for a bad token, `PermissionDenied` for a
//! token of another identity, `InvalidArgument` for a malformed identity or CSR.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use linkerd2_proxy_api::identity as api;
use strait_api::store::local::Clock;
use strait_identity::{IdentityName, IssueError, Issuer};
use tonic::{Request, Response, Status};

/// Why a token does not entitle its bearer to an identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this controller can read, or its signature does not verify.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// A valid token, but for another workload.
    #[error("the token belongs to service account {actual}, not {requested}")]
    WrongIdentity {
        /// `namespace/serviceaccount` the token proves.
        actual: String,
        /// `namespace/serviceaccount` the request asked for.
        requested: String,
    },
    /// The validator could not reach its authority (the API server).
    #[error("cannot validate the token: {0}")]
    Unavailable(String),
}

/// Decides whether a token entitles its bearer to an identity.
#[tonic::async_trait]
pub trait TokenValidator: Send + Sync + 'static {
    /// Ok if the bearer of `token` may be `identity`.
    async fn validate(&self, token: &[u8], identity: &IdentityName) -> Result<(), TokenError>;
}

/// The Identity service.
pub struct IdentityService<V> {
    issuer: Arc<RwLock<Issuer>>,
    validator: V,
    lifetime: Duration,
    clock: Clock,
}

impl<V: TokenValidator> IdentityService<V> {
    /// A service issuing certificates of `lifetime` (Linkerd's default is 24 h).
    pub fn new(issuer: Arc<RwLock<Issuer>>, validator: V, lifetime: Duration, clock: Clock) -> Self {
        Self {
            issuer,
            validator,
            lifetime,
            clock,
        }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> api::identity_server::IdentityServer<Self> {
        api::identity_server::IdentityServer::new(self)
    }

    async fn certify(&self, req: api::CertifyRequest) -> Result<api::CertifyResponse, Status> {
        let identity: IdentityName = req.identity.parse().map_err(|e| {
            Status::invalid_argument(format!("identity {:?} is not a mesh identity: {e}", req.identity))
        })?;
        self.validator
            .validate(&req.token, &identity)
            .await
            .map_err(|e| match e {
                TokenError::Invalid(_) => Status::unauthenticated(e.to_string()),
                TokenError::WrongIdentity { .. } => Status::permission_denied(e.to_string()),
                TokenError::Unavailable(_) => Status::unavailable(e.to_string()),
            })?;
        let now = (self.clock)();
        let issuer = self.issuer.read().unwrap_or_else(|e| e.into_inner()).clone();
        let issued = issuer
            .issue(&req.certificate_signing_request, &identity, self.lifetime, now)
            .map_err(|e| match e {
                IssueError::IssuerExpired { .. } | IssueError::IssuerNotYetValid { .. } => {
                    Status::failed_precondition(format!("{e}; rotate the identity issuer"))
                }
                IssueError::Random | IssueError::Sign { .. } | IssueError::TimeOutOfRange(_) => {
                    Status::internal(e.to_string())
                }
                _ => Status::invalid_argument(e.to_string()),
            })?;
        tracing::info!(%identity, valid_until = ?issued.valid_until, "issued certificate");
        Ok(api::CertifyResponse {
            leaf_certificate: issued.leaf.to_vec(),
            intermediate_certificates: issued.intermediates().iter().map(|c| c.to_vec()).collect(),
            valid_until: Some(timestamp(issued.valid_until)),
        })
    }
}

#[tonic::async_trait]
impl<V: TokenValidator> api::identity_server::Identity for IdentityService<V> {
    async fn certify(
        &self,
        request: Request<api::CertifyRequest>,
    ) -> Result<Response<api::CertifyResponse>, Status> {
        self.certify(request.into_inner()).await.map(Response::new)
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Local mode's tokens: `strait.v1.<hex payload>.<hex HMAC-SHA256>`, where the payload is
/// `namespace/serviceaccount/pod`. Minted when the pod runner registers a pod; checked
/// without any stored state, so tokens survive a controller restart as long as the secret
/// (kept in the cluster's state directory) does.
#[derive(Clone)]
pub struct LocalTokens {
    key: ring::hmac::Key,
}

const LOCAL_TOKEN_PREFIX: &str = "strait.v1.";

impl LocalTokens {
    /// Tokens signed with `secret` (32 random bytes, from [`LocalTokens::generate_secret`]).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// A fresh random secret.
    pub fn generate_secret() -> Result<[u8; 32], TokenError> {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| TokenError::Unavailable("the system random number generator failed".into()))?;
        Ok(secret)
    }

    /// The token of a pod running as `namespace`/`service_account`.
    pub fn mint(&self, namespace: &str, service_account: &str, pod: &str) -> String {
        let payload = format!("{namespace}/{service_account}/{pod}");
        let tag = ring::hmac::sign(&self.key, payload.as_bytes());
        format!(
            "{LOCAL_TOKEN_PREFIX}{}.{}",
            hex(payload.as_bytes()),
            hex(tag.as_ref())
        )
    }

    /// The `(namespace, service account, pod)` a token proves.
    pub fn verify(&self, token: &[u8]) -> Result<(String, String, String), TokenError> {
        let invalid = |why: &str| TokenError::Invalid(why.to_string());
        let token = std::str::from_utf8(token)
            .map_err(|_| invalid("not UTF-8"))?
            .trim();
        let rest = token
            .strip_prefix(LOCAL_TOKEN_PREFIX)
            .ok_or_else(|| invalid("not a strait local-mode token"))?;
        let (payload, tag) = rest.split_once('.').ok_or_else(|| invalid("malformed"))?;
        let payload = unhex(payload).ok_or_else(|| invalid("malformed payload"))?;
        let tag = unhex(tag).ok_or_else(|| invalid("malformed signature"))?;
        ring::hmac::verify(&self.key, &payload, &tag)
            .map_err(|_| invalid("the signature does not verify"))?;
        let payload = String::from_utf8(payload).map_err(|_| invalid("malformed payload"))?;
        let mut parts = payload.splitn(3, '/').map(str::to_string);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(ns), Some(sa), Some(pod)) => Ok((ns, sa, pod)),
            _ => Err(invalid("malformed payload")),
        }
    }
}

#[tonic::async_trait]
impl TokenValidator for LocalTokens {
    async fn validate(&self, token: &[u8], identity: &IdentityName) -> Result<(), TokenError> {
        let (ns, sa, _pod) = self.verify(token)?;
        if ns == identity.namespace() && sa == identity.service_account() {
            Ok(())
        } else {
            Err(TokenError::WrongIdentity {
                actual: format!("{ns}/{sa}"),
                requested: format!("{}/{}", identity.namespace(), identity.service_account()),
            })
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Kubernetes mode: the API server's TokenReview decides, as Linkerd's identity controller
/// does. The token is the pod's projected ServiceAccount token for audience
/// [`TokenReviewValidator::AUDIENCE`].
#[derive(Clone)]
pub struct TokenReviewValidator {
    client: kube::Client,
}

impl TokenReviewValidator {
    /// The audience Linkerd's proxies request their tokens for.
    pub const AUDIENCE: &'static str = "identity.l5d.io";

    /// Validates through `client`'s API server.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[tonic::async_trait]
impl TokenValidator for TokenReviewValidator {
    async fn validate(&self, token: &[u8], identity: &IdentityName) -> Result<(), TokenError> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let token = std::str::from_utf8(token).map_err(|_| TokenError::Invalid("not UTF-8".into()))?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.trim().to_string(),
                audiences: Some(vec![Self::AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let reviewed = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| TokenError::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(TokenError::Invalid(why));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == Self::AUDIENCE)
        {
            return Err(TokenError::Invalid(format!(
                "the token is not for audience {}",
                Self::AUDIENCE
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let expected = format!(
            "system:serviceaccount:{}:{}",
            identity.namespace(),
            identity.service_account()
        );
        if username == expected {
            Ok(())
        } else {
            Err(TokenError::WrongIdentity {
                actual: username
                    .strip_prefix("system:serviceaccount:")
                    .unwrap_or(&username)
                    .replace(':', "/"),
                requested: format!("{}/{}", identity.namespace(), identity.service_account()),
            })
        }
    }
}

#[cfg(test)]
mod tests;
