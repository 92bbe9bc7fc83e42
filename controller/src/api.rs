//! The public API of a local cluster: what `strait apply|get|delete` and the pod runner
//! use while the controller owns the cluster's state directory.
//!
//! HTTPS with mutual TLS: the server presents the controller's identity and admits only
//! clients presenting the cluster's admin identity (a certificate the controller issues
//! into `<state-dir>/identity/admin.{crt,key}`). Requests and answers are JSON; every
//! object goes through the same loader and validation as files do, and a batch is applied
//! whole or not at all.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/v1/version` | server version |
//! | POST | `/v1/apply?namespace=NS` | manifests (YAML or JSON) → per-object outcome |
//! | POST | `/v1/status?namespace=NS` | objects whose `status` only is written onto the stored ones (a controller's report, written whole or not at all; the spec stays as stored) |
//! | GET | `/v1/objects/KIND?namespace=NS&name=N` | objects of a kind (all namespaces without `namespace`) |
//! | DELETE | `/v1/objects/KIND/NS/NAME` | one object (`_` as NS for cluster-scoped kinds) |
//! | POST | `/v1/pods` | register a pod → its identity token |
//! | DELETE | `/v1/pods/NS/NAME` | unregister a pod |
//! | GET | `/v1/proxies` | meshed pods and their identities |

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strait_api::loader::{LoadOptions, load_str};
use strait_api::store::local::LocalStore;
use strait_api::{Kind, KindId, Object, ObjectKey, Store, kinds};
use strait_identity::{CertStore, IdentityName, Issuer, TrustAnchors, generate_key_and_csr};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::identity::LocalTokens;

/// The largest request body accepted (a big manifest directory fits easily).
pub const MAX_BODY: usize = 16 << 20;

/// The service account of the controller's own identity.
pub const CONTROLLER_SA: &str = "linkerd-controller";
/// The service account of the cluster administrator's identity (the CLI).
pub const ADMIN_SA: &str = "strait-admin";
/// The namespace of control-plane identities.
pub const CONTROL_PLANE_NS: &str = "linkerd";
/// Service accounts whose names start with this, in [`MULTICLUSTER_NS`], may read the
/// cluster (list objects) but not change it: the credentials `strait multicluster link`
/// hands to a linking cluster's service mirror (Linkerd's `linkerd-service-mirror-remote-access-*`).
pub const REMOTE_ACCESS_SA_PREFIX: &str = "linkerd-service-mirror-remote-access-";
/// The namespace of multicluster identities.
pub const MULTICLUSTER_NS: &str = "linkerd-multicluster";

/// Whether `id` is a linking cluster's read-only remote-access identity in `trust_domain`.
pub fn is_remote_access(id: &IdentityName, trust_domain: &str) -> bool {
    let id = id.to_string();
    let suffix = format!(".{MULTICLUSTER_NS}.serviceaccount.identity.linkerd.{trust_domain}");
    id.strip_suffix(&suffix)
        .and_then(|sa| sa.strip_prefix(REMOTE_ACCESS_SA_PREFIX))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('.'))
}

/// The service account of the cluster's multicluster gateway (in [`MULTICLUSTER_NS`]).
pub const GATEWAY_SA: &str = "linkerd-gateway";

/// Whether `id` is the cluster's gateway in `trust_domain`: it may read Services and
/// Pods, which it serves to linked clusters' mirrors (`strait gateway --serve-exports`),
/// and Links, which it dials (`strait gateway --watch-links`).
pub fn is_gateway(id: &IdentityName, trust_domain: &str) -> bool {
    id.to_string() == format!("{GATEWAY_SA}.{MULTICLUSTER_NS}.serviceaccount.identity.linkerd.{trust_domain}")
}

/// Where the API listens, written to `<state-dir>/api.json` for the CLI.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiEndpoint {
    /// `host:port`.
    pub address: String,
    /// The identity the server presents.
    pub server_identity: String,
}

/// Files of a local cluster's state directory that let the CLI reach its running API.
pub mod files {
    use std::path::{Path, PathBuf};

    /// `api.json`: where the API listens (present while the controller runs).
    pub fn endpoint(state_dir: &Path) -> PathBuf {
        state_dir.join("api.json")
    }

    /// Why `api.json` could not be read.
    #[derive(Debug, thiserror::Error)]
    pub enum EndpointFileError {
        /// It is not there (no controller runs) or cannot be read.
        #[error("cannot read {path}: {source}")]
        Unreadable {
            /// The file.
            path: String,
            /// Why.
            source: std::io::Error,
        },
        /// It is not the JSON a controller writes.
        #[error("{path} is damaged: {detail}")]
        Damaged {
            /// The file.
            path: String,
            /// What is wrong.
            detail: String,
        },
    }

    /// Where the running controller of `state_dir` serves its API.
    pub fn read_endpoint(state_dir: &Path) -> Result<super::ApiEndpoint, EndpointFileError> {
        let file = endpoint(state_dir);
        let path = file.display().to_string();
        let text = std::fs::read(&file).map_err(|source| EndpointFileError::Unreadable {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| EndpointFileError::Damaged {
            path,
            detail: e.to_string(),
        })
    }
    /// The trust anchors.
    pub fn anchors(state_dir: &Path) -> PathBuf {
        state_dir.join("identity").join("ca.crt")
    }
    /// The admin's certificate chain (PEM).
    pub fn admin_cert(state_dir: &Path) -> PathBuf {
        state_dir.join("identity").join("admin.crt")
    }
    /// The admin's private key (PEM, PKCS#8).
    pub fn admin_key(state_dir: &Path) -> PathBuf {
        state_dir.join("identity").join("admin.key")
    }
}

/// A pod the runner registers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodRegistration {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Labels (the Deployment's template labels, plus the injector's).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Its service account.
    #[serde(default = "default_sa")]
    pub service_account: String,
    /// Its address.
    pub ip: String,
    /// Named container ports.
    #[serde(default)]
    pub ports: Vec<NamedPort>,
    /// Whether it is ready for traffic.
    #[serde(default)]
    pub ready: bool,
}

fn default_sa() -> String {
    "default".into()
}

/// A container port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedPort {
    /// Port name (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number.
    pub port: u16,
}

impl PodRegistration {
    /// The Pod object the registration stands for.
    pub fn to_pod(&self) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(self.labels.clone()),
                annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some(self.service_account.clone()),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("local".into()),
                    ports: Some(
                        self.ports
                            .iter()
                            .map(|p| ContainerPort {
                                name: p.name.clone(),
                                container_port: i32::from(p.port),
                                ..Default::default()
                            })
                            .collect(),
                    )
                    .filter(|v: &Vec<_>| !v.is_empty()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(self.ip.clone()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if self.ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }
}

/// Issues a certificate for a control-plane identity from the cluster's issuer.
pub fn issue(
    issuer: &Issuer,
    identity: &IdentityName,
    lifetime: Duration,
    now: SystemTime,
) -> Result<
    (
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ),
    String,
> {
    let (key, csr) = generate_key_and_csr(identity).map_err(|e| e.to_string())?;
    let issued = issuer
        .issue(&csr, identity, lifetime, now)
        .map_err(|e| e.to_string())?;
    Ok((issued.chain, key.into()))
}

/// What the API needs.
pub struct Api {
    /// The cluster state.
    pub store: LocalStore,
    /// Mints pod tokens.
    pub tokens: LocalTokens,
    /// The only identity admitted.
    pub admin: IdentityName,
    /// The mesh trust domain (for proxy identities in `/v1/proxies`).
    pub trust_domain: String,
}

/// Serves the API over mTLS until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    server_cert: CertStore,
    anchors: &TrustAnchors,
    api: Api,
    shutdown: impl Future<Output = ()>,
) {
    let mut config = Arc::unwrap_or_clone(strait_identity::server_config(
        &server_cert,
        anchors,
        strait_identity::ClientAuth::Required,
    ));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let api = Arc::new(api);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Answers are small records: never hold one back for the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let (acceptor, api) = (acceptor.clone(), api.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "API TLS handshake refused");
                    return;
                }
            };
            let client = strait_identity::peer_identity(tls.get_ref().1);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let api = api.clone();
                let client = client.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&api, client.as_ref(), req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&body).expect("JSON values serialize"),
        )))
        .expect("valid response")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": message.into() }))
}

async fn respond(
    api: &Api,
    client: Option<&IdentityName>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let reader = client.is_some_and(|c| is_remote_access(c, &api.trust_domain));
    let gateway = client.is_some_and(|c| is_gateway(c, &api.trust_domain));
    if gateway {
        let path = req.uri().path();
        if req.method() != Method::GET
            || !matches!(
                path,
                "/v1/objects/services" | "/v1/objects/pods" | "/v1/objects/links" | "/v1/version"
            )
        {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may only read services, pods and links (GET /v1/objects/services, /v1/objects/pods, /v1/objects/links): it is the cluster's gateway",
                    client.map(ToString::to_string).unwrap_or_default()
                ),
            );
        }
    } else if reader {
        let path = req.uri().path();
        if req.method() != Method::GET || !(path.starts_with("/v1/objects/") || path == "/v1/version") {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may only read objects (GET /v1/objects/…): it is a linked cluster's read-only mirror identity",
                    client.map(ToString::to_string).unwrap_or_default()
                ),
            );
        }
    } else if client != Some(&api.admin) {
        let who = client.map_or("an unidentified client".to_string(), ToString::to_string);
        return error(
            StatusCode::FORBIDDEN,
            format!("{who} is not the cluster admin ({})", api.admin),
        );
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request bodies are limited to {MAX_BODY} bytes"),
            );
        }
    };
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
    handle(api, &parts.method, &path, &query, &body).await
}

/// Routes one request (after authentication).
pub async fn handle(
    api: &Api,
    method: &Method,
    path: &[&str],
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::GET, ["v1", "version"]) => {
            reply(StatusCode::OK, json!({ "version": env!("CARGO_PKG_VERSION") }))
        }
        (&Method::POST, ["v1", "apply"]) => apply(api, query, body).await,
        (&Method::POST, ["v1", "status"]) => status(api, query, body).await,
        (&Method::GET, ["v1", "objects", kind]) => list(api, kind, query),
        (&Method::DELETE, ["v1", "objects", kind, ns, name]) => delete(api, kind, ns, name).await,
        (&Method::POST, ["v1", "pods"]) => register(api, body).await,
        (&Method::DELETE, ["v1", "pods", ns, name]) => delete(api, "pods", ns, name).await,
        (&Method::GET, ["v1", "proxies"]) => proxies(api),
        _ => error(
            StatusCode::NOT_FOUND,
            format!(
                "no {method} /{}; see the API table in the controller docs",
                path.join("/")
            ),
        ),
    }
}

/// The objects of a request's manifests, or the answer refusing them.
#[allow(clippy::result_large_err)]
fn manifests(query: &BTreeMap<String, String>, body: &[u8]) -> Result<Vec<Object>, Response<Full<Bytes>>> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(error(StatusCode::BAD_REQUEST, "the manifests are not UTF-8 text"));
    };
    let opts = LoadOptions {
        default_namespace: query
            .get("namespace")
            .cloned()
            .unwrap_or_else(|| "default".into()),
        recursive: false,
    };
    match load_str("<request>", text, &opts) {
        Ok(l) => Ok(l.into_iter().map(|l| l.object).collect()),
        Err(e) => Err(reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": "invalid manifests; nothing was applied", "problems": e.0.iter().map(ToString::to_string).collect::<Vec<_>>() }),
        )),
    }
}

async fn status(api: &Api, query: &BTreeMap<String, String>, body: &[u8]) -> Response<Full<Bytes>> {
    let objects = match manifests(query, body) {
        Ok(o) => o,
        Err(rsp) => return rsp,
    };
    // One batch: a report of several objects is written whole or not at all.
    match api.store.apply_statuses(objects).await {
        Ok(()) => reply(StatusCode::OK, json!({ "results": [] })),
        Err(e) => reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": format!("{e}; no status was written"), "problems": [e.to_string()] }),
        ),
    }
}

async fn apply(api: &Api, query: &BTreeMap<String, String>, body: &[u8]) -> Response<Full<Bytes>> {
    let mut objects = match manifests(query, body) {
        Ok(o) => o,
        Err(rsp) => return rsp,
    };
    objects.sort_by_key(|o| o.kind_id());
    if let Err(e) = crate::inject::admit_local_services(&api.store, &mut objects).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the Services' namespaces: {e}; nothing was applied"),
        );
    }
    match api.store.apply_reporting(objects).await {
        Ok(done) => {
            let results: Vec<Value> = done
                .iter()
                .map(|(o, outcome)| json!({ "object": o.key().to_string(), "outcome": outcome.to_string() }))
                .collect();
            reply(StatusCode::OK, json!({ "results": results }))
        }
        Err(e) => reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": format!("{e}; nothing was applied"), "problems": [e.to_string()] }),
        ),
    }
}

fn list(api: &Api, kind: &str, query: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
    let info = match kinds::lookup_name(kind) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let ns = query
        .get("namespace")
        .map(String::as_str)
        .filter(|_| info.namespaced);
    let items = match (query.get("name"), ns, info.namespaced) {
        // One object by its key: a lookup, not a scan of the kind (callers such as the
        // mirror read objects back one by one, so a scan here made their rounds O(n²)).
        (Some(name), Some(ns), true) => api
            .store
            .get_object(&ObjectKey::new(info.id, ns, name))
            .into_iter()
            .collect(),
        (Some(name), _, false) => api
            .store
            .get_object(&ObjectKey::new(info.id, "", name))
            .into_iter()
            .collect(),
        (name, ns, _) => {
            let mut items = api.store.list_objects(info.id, ns);
            if let Some(name) = name {
                items.retain(|o| o.meta().name.as_deref() == Some(name));
            }
            items
        }
    };
    reply(
        StatusCode::OK,
        json!({ "items": items.iter().map(|o| o.to_value()).collect::<Vec<_>>() }),
    )
}

async fn delete(api: &Api, kind: &str, ns: &str, name: &str) -> Response<Full<Bytes>> {
    let info = match kinds::lookup_name(kind) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let ns = if ns == "_" { "" } else { ns };
    let key = ObjectKey::new(info.id, ns, name);
    match api.store.delete(&key).await {
        Ok(Some(_)) => reply(StatusCode::OK, json!({ "deleted": key.to_string() })),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("{key} not found")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn register(api: &Api, body: &[u8]) -> Response<Full<Bytes>> {
    let reg: PodRegistration = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a pod registration: {e}")),
    };
    if reg.ip.parse::<std::net::IpAddr>().is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("ip {:?}: expected an IPv4 or IPv6 address", reg.ip),
        );
    }
    match api.store.apply(vec![reg.to_pod().into_object()]).await {
        Ok(_) => {
            let token = api.tokens.mint(&reg.namespace, &reg.service_account, &reg.name);
            reply(StatusCode::OK, json!({ "token": token }))
        }
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

fn proxies(api: &Api) -> Response<Full<Bytes>> {
    let pods: Vec<Value> = api
        .store
        .list_objects(KindId::Pod, None)
        .iter()
        .filter_map(|o| Pod::from_object_ref(o))
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(strait_api::labels::CONTROL_PLANE_NS_LABEL))
        })
        .map(|p| {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let sa = p
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(default_sa);
            json!({
                "namespace": ns,
                "name": p.metadata.name,
                "ip": p.status.as_ref().and_then(|s| s.pod_ip.clone()),
                "identity": format!("{sa}.{ns}.serviceaccount.identity.linkerd.{}", api.trust_domain),
            })
        })
        .collect();
    reply(StatusCode::OK, json!({ "proxies": pods }))
}

#[cfg(test)]
mod tests;

pub mod store;

/// A client of the API, as the cluster admin.
pub mod client {
    use std::sync::Arc;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper::{Method, Request, StatusCode};
    use hyper_util::rt::TokioIo;
    use serde_json::Value;
    use strait_identity::{CertStore, IdentityName, TrustAnchors};
    use tokio_rustls::TlsConnector;

    use super::ApiEndpoint;

    /// Why a request failed.
    #[derive(Debug, thiserror::Error)]
    pub enum ClientError {
        /// No connection or no TLS session.
        #[error("cannot reach the cluster API at {address}: {detail}; is the controller running?")]
        Connect {
            /// Where.
            address: String,
            /// What happened.
            detail: String,
        },
        /// The server answered with an error.
        #[error("{message}")]
        Status {
            /// The HTTP status.
            status: StatusCode,
            /// The server's message.
            message: String,
            /// The full answer.
            body: Value,
        },
        /// The answer was not JSON.
        #[error("the cluster API answered something unreadable: {0}")]
        Decode(String),
    }

    /// Talks to one cluster's API.
    #[derive(Clone)]
    pub struct ApiClient {
        endpoint: ApiEndpoint,
        connector: TlsConnector,
        server: IdentityName,
    }

    impl ApiClient {
        /// A client presenting `admin` and requiring the server to present the endpoint's
        /// identity under `anchors`.
        pub fn new(
            endpoint: ApiEndpoint,
            anchors: &TrustAnchors,
            admin: &CertStore,
        ) -> Result<Self, ClientError> {
            let server: IdentityName =
                endpoint
                    .server_identity
                    .parse()
                    .map_err(|e| ClientError::Connect {
                        address: endpoint.address.clone(),
                        detail: format!("bad server identity {:?}: {e}", endpoint.server_identity),
                    })?;
            let mut config = Arc::unwrap_or_clone(strait_identity::client_config(admin, anchors));
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Self {
                endpoint,
                connector: TlsConnector::from(Arc::new(config)),
                server,
            })
        }

        /// The admin client of the local cluster whose controller runs on `state_dir`
        /// (its `api.json`, trust anchors and admin certificate).
        pub fn from_state_dir(state_dir: &std::path::Path) -> Result<Self, String> {
            use strait_identity::pki_types::pem::PemObject;
            use strait_identity::pki_types::{CertificateDer, PrivateKeyDer};

            use super::files;
            let read = |p: std::path::PathBuf| {
                std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let endpoint = files::read_endpoint(state_dir).map_err(|e| e.to_string())?;
            let anchors = TrustAnchors::load(files::anchors(state_dir), std::time::SystemTime::now())
                .map_err(|e| e.to_string())?;
            let chain = CertificateDer::pem_slice_iter(&read(files::admin_cert(state_dir))?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("admin certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&read(files::admin_key(state_dir))?)
                .map_err(|e| format!("admin key: {e}"))?;
            let admin = CertStore::with_cert(chain, key).map_err(|e| e.to_string())?;
            Self::new(endpoint, &anchors, &admin).map_err(|e| e.to_string())
        }

        /// Where the API is.
        pub fn address(&self) -> &str {
            &self.endpoint.address
        }

        /// One request; the JSON answer of a 2xx, or the server's error.
        pub async fn request(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Value, ClientError> {
            let address = self.endpoint.address.clone();
            let connect_err = |detail: String| ClientError::Connect {
                address: address.clone(),
                detail,
            };
            let tcp = tokio::net::TcpStream::connect(&address)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            // Small request records must not wait for the server's delayed ACK (Nagle).
            tcp.set_nodelay(true).map_err(|e| connect_err(e.to_string()))?;
            let tls = self
                .connector
                .connect(self.server.server_name(), tcp)
                .await
                .map_err(|e| connect_err(format!("TLS: {e}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "strait-api")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("valid request");
            let rsp = sender
                .send_request(req)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            let status = rsp.status();
            let bytes = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| connect_err(e.to_string()))?
                .to_bytes();
            let body: Value =
                serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
            if status.is_success() {
                Ok(body)
            } else {
                let message = body
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("request failed")
                    .to_string();
                Err(ClientError::Status {
                    status,
                    message,
                    body,
                })
            }
        }
    }
}
