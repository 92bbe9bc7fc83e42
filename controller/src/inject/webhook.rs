//! The admission webhook's core: an `admission.k8s.io/v1` AdmissionReview in, the review
//! with its response out.
//!
//! A pod being created whose template or namespace enables injection is answered with a
//! base64 JSON Patch (`patchType: JSONPatch`) that adds the proxy; everything else is
//! allowed unchanged. A review that is not one is refused ([`ReviewError`], HTTP 400). A
//! pod that cannot be decoded is allowed unchanged with a warning, as Linkerd's injector
//! (installed with `failurePolicy: Ignore`) lets pods through rather than block them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace as NamespaceObject;
use serde::Deserialize;
use serde_json::{Value, json};
use strait_api::Store;
use strait_api::kinds::{KindId, Object};

use super::{InjectConfig, Mode, Namespace, Outcome, inject, patch};

/// The only AdmissionReview version served (the webhook configuration asks for it).
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Why a request body is not an AdmissionReview the webhook can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("malformed AdmissionReview: {0}")]
    Malformed(String),
    /// An AdmissionReview of another version or kind.
    #[error("expected an {API_VERSION} AdmissionReview, found apiVersion {api_version:?} kind {kind:?}")]
    WrongType {
        /// As sent.
        api_version: String,
        /// As sent.
        kind: String,
    },
    /// A review without a request to answer.
    #[error("malformed AdmissionReview: no request (with a uid) to answer")]
    NoRequest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<AdmissionRequest>,
}

/// The fields of an AdmissionRequest the injector reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// The kind of the object.
    pub kind: GroupVersionKind,
    /// The namespace the object is created in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    #[serde(default)]
    pub operation: Option<String>,
    /// The object as sent to the API server.
    #[serde(default)]
    pub object: Option<Value>,
}

/// group/version/kind of an admitted object.
#[derive(Clone, Debug, Deserialize)]
pub struct GroupVersionKind {
    /// Empty for the core group.
    #[serde(default)]
    pub group: String,
    /// The version.
    #[serde(default)]
    pub version: String,
    /// The kind.
    pub kind: String,
}

/// Reads a request body as an AdmissionReview.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(ReviewError::Malformed(format!(
            "expected a JSON object, found {}",
            match value {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    }
    let review: Review = serde_json::from_value(value).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(ReviewError::WrongType {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    review
        .request
        .filter(|r| !r.uid.is_empty())
        .ok_or(ReviewError::NoRequest)
}

/// The injector's answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Admission {
    /// The JSON Patch, when the pod is injected.
    pub patch: Option<Vec<patch::Operation>>,
    /// Shown to whoever created the pod (kubectl prints them).
    pub warnings: Vec<String>,
}

/// Decides one request: the pure core of the webhook.
pub fn admit(
    request: &AdmissionRequest,
    namespace_annotations: Option<&BTreeMap<String, String>>,
    config: &InjectConfig,
) -> Admission {
    let allow = |warnings: Vec<String>| Admission {
        patch: None,
        warnings,
    };
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let is_service = request.kind.group.is_empty() && request.kind.kind == "Service";
    if !(is_pod || is_service) || request.operation.as_deref().is_some_and(|op| op != "CREATE") {
        return allow(Vec::new());
    }
    if is_service {
        return admit_service(request, namespace_annotations);
    }
    let Some(raw) = &request.object else {
        return allow(vec![
            "strait proxy injector: the request has no pod; admitted without a proxy".into(),
        ]);
    };
    let mut value = raw.clone();
    if let Value::Object(m) = &mut value {
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Pod".into());
    }
    let pod = match Object::from_value(KindId::Pod, value) {
        Ok(p) => p,
        Err(e) => {
            return allow(vec![format!(
                "strait proxy injector: cannot decode the pod ({}: {}); admitted without a proxy",
                e.path(),
                e.inner()
            )]);
        }
    };
    let namespace = Namespace {
        name: request.namespace.as_deref(),
        annotations: namespace_annotations,
    };
    let injection = inject(&pod, namespace, Mode::Admission(config));
    let mut warnings: Vec<String> = injection
        .warnings
        .iter()
        .map(|w| format!("strait proxy injector: {w}"))
        .collect();
    match injection.outcome {
        Outcome::Injected { .. } => Admission {
            patch: Some(patch::diff(&pod.to_value(), &injection.object.to_value())),
            warnings,
        },
        Outcome::Skipped(skip) => {
            tracing::debug!(uid = %request.uid, reason = %skip, "pod not injected");
            allow(Vec::new())
        }
        // Admission never annotates; keep the warnings all the same.
        Outcome::Annotated => allow(std::mem::take(&mut warnings)),
    }
}

/// A Service takes its namespace's `config.linkerd.io/opaque-ports` when it has none, as
/// Linkerd's injector gives it (discovery reads the Service's).
fn admit_service(
    request: &AdmissionRequest,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> Admission {
    let Some(before) = &request.object else {
        return Admission {
            patch: None,
            warnings: Vec::new(),
        };
    };
    let own: BTreeMap<String, String> = before
        .pointer("/metadata/annotations")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    let Some(ports) = super::namespace_opaque_ports(&own, namespace_annotations) else {
        return Admission {
            patch: None,
            warnings: Vec::new(),
        };
    };
    let mut after = before.clone();
    if let Some(meta) = after.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(strait_api::labels::config::OPAQUE_PORTS.into(), json!(ports));
        }
    }
    Admission {
        patch: Some(patch::diff(before, &after)),
        warnings: Vec::new(),
    }
}

/// The AdmissionReview answering `uid` with `admission`.
pub fn response(uid: &str, admission: &Admission) -> Value {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(ops) = &admission.patch {
        let bytes = serde_json::to_vec(ops).expect("patches serialize");
        // ByteString serializes as base64, which is what `patch` must be.
        response["patch"] = serde_json::to_value(k8s_openapi::ByteString(bytes)).expect("bytes serialize");
        response["patchType"] = json!("JSONPatch");
    }
    if !admission.warnings.is_empty() {
        response["warnings"] = json!(admission.warnings);
    }
    json!({ "apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response })
}

/// Why a [`NamespaceSource`] could not answer (boxed: sources are composed from stores).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where the webhook learns a namespace's annotations.
pub trait NamespaceSource: Send + Sync + 'static {
    /// The namespace's annotations; `Ok(None)` when it does not exist.
    fn annotations(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, SourceError>> + Send;
}

/// Namespaces read from a [`Store`] (the cluster, or a local store).
#[derive(Clone)]
pub struct StoreNamespaces<S>(pub S);

impl<S: Store> NamespaceSource for StoreNamespaces<S> {
    async fn annotations(&self, namespace: &str) -> Result<Option<BTreeMap<String, String>>, SourceError> {
        let ns: Option<NamespaceObject> = self.0.get("", namespace).await?;
        Ok(ns.map(|n| n.metadata.annotations.unwrap_or_default()))
    }
}

/// A fixed set of namespaces (tests, and local mode without a store).
#[derive(Clone, Debug, Default)]
pub struct StaticNamespaces(pub BTreeMap<String, BTreeMap<String, String>>);

impl NamespaceSource for StaticNamespaces {
    async fn annotations(&self, namespace: &str) -> Result<Option<BTreeMap<String, String>>, SourceError> {
        Ok(self.0.get(namespace).cloned())
    }
}

/// The webhook: configuration plus where namespaces come from.
pub struct Webhook<N> {
    config: Arc<InjectConfig>,
    namespaces: N,
}

impl<N: NamespaceSource> Webhook<N> {
    /// A webhook injecting with `config`.
    pub fn new(config: Arc<InjectConfig>, namespaces: N) -> Self {
        Self { config, namespaces }
    }

    /// Answers one request body.
    pub async fn review(&self, body: &[u8]) -> Result<Value, ReviewError> {
        let request = parse_review(body)?;
        let mut lookup_warning = None;
        let annotations = match request.namespace.as_deref() {
            Some(ns) if !ns.is_empty() && matches!(request.kind.kind.as_str(), "Pod" | "Service") => {
                match self.namespaces.annotations(ns).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(namespace = ns, error = %e, "cannot read the namespace");
                        lookup_warning = Some(format!(
                            "strait proxy injector: cannot read namespace {ns} ({e}); its annotations were not considered"
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        let mut admission = admit(&request, annotations.as_ref(), &self.config);
        admission.warnings.extend(lookup_warning);
        Ok(response(&request.uid, &admission))
    }
}
