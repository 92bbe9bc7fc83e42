//! The registry of kinds the mesh understands, and [`Object`], one value of any of them.
//!
//! A kind is identified by group and kind ([`KindId`]), not by version: every served
//! version of a kind is read into the same Rust type (the storage version's), exactly as the
//! API server stores one object however it was written. The table in [`kinds!`] is the one
//! place that says which `apiVersion`s each kind accepts.

use std::fmt;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::mesh;

/// What the registry knows about one kind.
#[derive(Debug)]
pub struct KindInfo {
    /// The kind's identity.
    pub id: KindId,
    /// API group; empty for the core group.
    pub group: &'static str,
    /// `kind` as written in manifests.
    pub kind: &'static str,
    /// Lowercase plural, as in REST paths and `strait get <plural>`.
    pub plural: &'static str,
    /// Every served version, oldest first.
    pub versions: &'static [&'static str],
    /// The version objects are stored and served as.
    pub storage: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names accepted by `strait get` (`svc`, `srv`, `sp`, …).
    pub short: &'static [&'static str],
}

impl KindInfo {
    /// `group/version` (or just `version` for the core group) of the storage version.
    pub fn api_version(&self) -> String {
        self.api_version_of(self.storage)
    }

    /// `group/version` for a given version.
    pub fn api_version_of(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// kubectl's way of naming the kind: `service`, `httproute.policy.linkerd.io`.
    pub fn qualified_lowercase(&self) -> String {
        let kind = self.kind.to_ascii_lowercase();
        if self.group.is_empty() || matches!(self.group, "apps" | "batch") {
            kind
        } else {
            format!("{kind}.{}", self.group)
        }
    }

    /// Whether `name` (as typed on a command line) names this kind: its kind, plural,
    /// short names, case-insensitively, optionally qualified by group (`httproutes.policy.linkerd.io`).
    pub fn matches_name(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let (base, group) = match name.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (name, None),
        };
        if group.as_deref().is_some_and(|g| g != self.group) {
            return false;
        }
        base == self.kind.to_ascii_lowercase() || base == self.plural || self.short.iter().any(|s| *s == base)
    }
}

/// Implemented by every Rust type in the registry.
pub trait Kind: Clone + Serialize + DeserializeOwned + Send + Sync + fmt::Debug + 'static {
    /// The kind's identity.
    const ID: KindId;
    /// Wraps `self` as an [`Object`].
    fn into_object(self) -> Object;
    /// Unwraps an [`Object`] of this kind.
    fn from_object(obj: Object) -> Option<Self>;
    /// Borrows an [`Object`] of this kind.
    fn from_object_ref(obj: &Object) -> Option<&Self>;
    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// The registry entry.
    fn info() -> &'static KindInfo {
        Self::ID.info()
    }
}

macro_rules! kinds {
    ($( $variant:ident => $ty:ty {
        group: $group:literal, kind: $kind:literal, plural: $plural:literal,
        versions: [$($v:literal),+], storage: $storage:literal,
        namespaced: $ns:literal, short: [$($s:literal),*] $(,)?
    } )*) => {
        /// A kind, independent of version.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum KindId { $( #[allow(missing_docs)] $variant, )* }

        /// Every kind the mesh understands, in the order they are applied (namespaces first).
        pub static KINDS: &[KindInfo] = &[ $(
            KindInfo {
                id: KindId::$variant, group: $group, kind: $kind, plural: $plural,
                versions: &[$($v),+], storage: $storage, namespaced: $ns, short: &[$($s),*],
            },
        )* ];

        /// One object of any kind the mesh understands.
        #[derive(Clone, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum Object { $( #[allow(missing_docs)] $variant($ty), )* }

        impl Object {
            /// The object's kind.
            pub fn kind_id(&self) -> KindId {
                match self { $( Object::$variant(_) => KindId::$variant, )* }
            }

            /// The object's metadata.
            pub fn meta(&self) -> &ObjectMeta {
                match self { $( Object::$variant(o) => &o.metadata, )* }
            }

            /// The object's metadata, mutably.
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $( Object::$variant(o) => &mut o.metadata, )* }
            }

            /// Deserializes a value whose `apiVersion` is the kind's storage version.
            pub fn from_value(id: KindId, value: Value) -> Result<Object, serde_path_to_error::Error<serde_json::Error>> {
                match id { $( KindId::$variant => serde_path_to_error::deserialize(value).map(Object::$variant), )* }
            }

            /// Deserializes JSON text written by [`Object::to_json`].
            pub fn from_json(id: KindId, json: &[u8]) -> Result<Object, serde_json::Error> {
                match id { $( KindId::$variant => serde_json::from_slice(json).map(Object::$variant), )* }
            }

            /// The object as compact JSON text, with `apiVersion` and `kind` of the storage
            /// version.
            pub fn to_json(&self) -> Vec<u8> {
                serde_json::to_vec(&self.to_value()).unwrap_or_default()
            }

            /// The object as JSON, with `apiVersion` and `kind` of the storage version.
            pub fn to_value(&self) -> Value {
                let mut v = match self {
                    $( Object::$variant(o) => serde_json::to_value(o).unwrap_or(Value::Null), )*
                };
                if let Value::Object(m) = &mut v {
                    let info = self.kind_id().info();
                    m.insert("apiVersion".into(), Value::String(info.api_version()));
                    m.insert("kind".into(), Value::String(info.kind.into()));
                }
                v
            }
        }

        $(
            impl Kind for $ty {
                const ID: KindId = KindId::$variant;
                fn into_object(self) -> Object { Object::$variant(self) }
                fn from_object(obj: Object) -> Option<Self> {
                    match obj { Object::$variant(o) => Some(o), #[allow(unreachable_patterns)] _ => None }
                }
                fn from_object_ref(obj: &Object) -> Option<&Self> {
                    match obj { Object::$variant(o) => Some(o), #[allow(unreachable_patterns)] _ => None }
                }
                fn metadata(&self) -> &ObjectMeta { &self.metadata }
            }
        )*
    };
}

kinds! {
    CustomResourceDefinition => CustomResourceDefinition {
        group: "apiextensions.k8s.io", kind: "CustomResourceDefinition", plural: "customresourcedefinitions",
        versions: ["v1"], storage: "v1", namespaced: false, short: ["crd", "crds"],
    }
    Namespace => Namespace {
        group: "", kind: "Namespace", plural: "namespaces",
        versions: ["v1"], storage: "v1", namespaced: false, short: ["ns"],
    }
    ClusterRole => ClusterRole {
        group: "rbac.authorization.k8s.io", kind: "ClusterRole", plural: "clusterroles",
        versions: ["v1"], storage: "v1", namespaced: false, short: [],
    }
    ClusterRoleBinding => ClusterRoleBinding {
        group: "rbac.authorization.k8s.io", kind: "ClusterRoleBinding", plural: "clusterrolebindings",
        versions: ["v1"], storage: "v1", namespaced: false, short: [],
    }
    MutatingWebhookConfiguration => MutatingWebhookConfiguration {
        group: "admissionregistration.k8s.io", kind: "MutatingWebhookConfiguration", plural: "mutatingwebhookconfigurations",
        versions: ["v1"], storage: "v1", namespaced: false, short: [],
    }
    ValidatingWebhookConfiguration => ValidatingWebhookConfiguration {
        group: "admissionregistration.k8s.io", kind: "ValidatingWebhookConfiguration", plural: "validatingwebhookconfigurations",
        versions: ["v1"], storage: "v1", namespaced: false, short: [],
    }
    ServiceAccount => ServiceAccount {
        group: "", kind: "ServiceAccount", plural: "serviceaccounts",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["sa"],
    }
    Secret => Secret {
        group: "", kind: "Secret", plural: "secrets",
        versions: ["v1"], storage: "v1", namespaced: true, short: [],
    }
    ConfigMap => ConfigMap {
        group: "", kind: "ConfigMap", plural: "configmaps",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["cm"],
    }
    Role => Role {
        group: "rbac.authorization.k8s.io", kind: "Role", plural: "roles",
        versions: ["v1"], storage: "v1", namespaced: true, short: [],
    }
    RoleBinding => RoleBinding {
        group: "rbac.authorization.k8s.io", kind: "RoleBinding", plural: "rolebindings",
        versions: ["v1"], storage: "v1", namespaced: true, short: [],
    }
    PodDisruptionBudget => PodDisruptionBudget {
        group: "policy", kind: "PodDisruptionBudget", plural: "poddisruptionbudgets",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["pdb"],
    }
    Service => Service {
        group: "", kind: "Service", plural: "services",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["svc"],
    }
    Endpoints => Endpoints {
        group: "", kind: "Endpoints", plural: "endpoints",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["ep"],
    }
    EndpointSlice => EndpointSlice {
        group: "discovery.k8s.io", kind: "EndpointSlice", plural: "endpointslices",
        versions: ["v1"], storage: "v1", namespaced: true, short: [],
    }
    Pod => Pod {
        group: "", kind: "Pod", plural: "pods",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["po"],
    }
    Deployment => Deployment {
        group: "apps", kind: "Deployment", plural: "deployments",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["deploy"],
    }
    StatefulSet => StatefulSet {
        group: "apps", kind: "StatefulSet", plural: "statefulsets",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["sts"],
    }
    DaemonSet => DaemonSet {
        group: "apps", kind: "DaemonSet", plural: "daemonsets",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["ds"],
    }
    ReplicaSet => ReplicaSet {
        group: "apps", kind: "ReplicaSet", plural: "replicasets",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["rs"],
    }
    Job => Job {
        group: "batch", kind: "Job", plural: "jobs",
        versions: ["v1"], storage: "v1", namespaced: true, short: [],
    }
    CronJob => CronJob {
        group: "batch", kind: "CronJob", plural: "cronjobs",
        versions: ["v1"], storage: "v1", namespaced: true, short: ["cj"],
    }
    Server => mesh::policy::Server {
        group: "policy.linkerd.io", kind: "Server", plural: "servers",
        versions: ["v1alpha1", "v1beta1", "v1beta2", "v1beta3"], storage: "v1beta3",
        namespaced: true, short: ["srv"],
    }
    ServerAuthorization => mesh::policy::ServerAuthorization {
        group: "policy.linkerd.io", kind: "ServerAuthorization", plural: "serverauthorizations",
        versions: ["v1alpha1", "v1beta1"], storage: "v1beta1", namespaced: true, short: ["saz", "serverauthz", "srvauthz"],
    }
    AuthorizationPolicy => mesh::policy::AuthorizationPolicy {
        group: "policy.linkerd.io", kind: "AuthorizationPolicy", plural: "authorizationpolicies",
        versions: ["v1alpha1"], storage: "v1alpha1", namespaced: true, short: ["authzpolicy"],
    }
    MeshTlsAuthentication => mesh::policy::MeshTLSAuthentication {
        group: "policy.linkerd.io", kind: "MeshTLSAuthentication", plural: "meshtlsauthentications",
        versions: ["v1alpha1"], storage: "v1alpha1", namespaced: true, short: ["meshtlsauthn"],
    }
    NetworkAuthentication => mesh::policy::NetworkAuthentication {
        group: "policy.linkerd.io", kind: "NetworkAuthentication", plural: "networkauthentications",
        versions: ["v1alpha1"], storage: "v1alpha1", namespaced: true, short: ["netauthn", "networkauthn"],
    }
    PolicyHttpRoute => mesh::policy::HttpRoute {
        group: "policy.linkerd.io", kind: "HTTPRoute", plural: "httproutes",
        versions: ["v1alpha1", "v1beta1", "v1beta2", "v1beta3"], storage: "v1beta3", namespaced: true, short: [],
    }
    GatewayHttpRoute => mesh::gateway_api::HttpRoute {
        group: "gateway.networking.k8s.io", kind: "HTTPRoute", plural: "httproutes",
        versions: ["v1beta1", "v1"], storage: "v1", namespaced: true, short: [],
    }
    GrpcRoute => mesh::gateway_api::GrpcRoute {
        group: "gateway.networking.k8s.io", kind: "GRPCRoute", plural: "grpcroutes",
        versions: ["v1alpha2", "v1"], storage: "v1", namespaced: true, short: [],
    }
    ServiceProfile => mesh::profile::ServiceProfile {
        group: "linkerd.io", kind: "ServiceProfile", plural: "serviceprofiles",
        versions: ["v1alpha1", "v1alpha2"], storage: "v1alpha2", namespaced: true, short: ["sp"],
    }
    TrafficSplit => mesh::split::TrafficSplit {
        group: "split.smi-spec.io", kind: "TrafficSplit", plural: "trafficsplits",
        versions: ["v1alpha1", "v1alpha2"], storage: "v1alpha2", namespaced: true, short: ["ts"],
    }
    Link => mesh::link::Link {
        group: "multicluster.linkerd.io", kind: "Link", plural: "links",
        versions: ["v1alpha1", "v1alpha2", "v1alpha3"], storage: "v1alpha3", namespaced: true, short: [],
    }
}

impl KindId {
    /// The registry entry of this kind.
    pub fn info(self) -> &'static KindInfo {
        // `kinds!` declares the enum and the table in the same order.
        &KINDS[self as usize]
    }
}

impl fmt::Display for KindId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.info().qualified_lowercase())
    }
}

/// Finds the kind written as `apiVersion` + `kind` in a manifest.
pub fn lookup(api_version: &str, kind: &str) -> Result<&'static KindInfo, LookupError> {
    let (group, version) = match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let same_kind: Vec<&KindInfo> = KINDS.iter().filter(|k| k.kind == kind).collect();
    if same_kind.is_empty() {
        return Err(LookupError::UnknownKind {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        });
    }
    let Some(info) = same_kind.iter().find(|k| k.group == group) else {
        let groups = same_kind.iter().map(|k| k.api_version()).collect::<Vec<_>>();
        return Err(LookupError::UnknownVersion {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
            expected: groups,
        });
    };
    if !info.versions.contains(&version) {
        return Err(LookupError::UnknownVersion {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
            expected: info.versions.iter().map(|v| info.api_version_of(v)).collect(),
        });
    }
    Ok(info)
}

/// Finds the kind a user named on the command line (`svc`, `httproutes.policy.linkerd.io`).
pub fn lookup_name(name: &str) -> Result<&'static KindInfo, LookupError> {
    let found: Vec<&KindInfo> = KINDS.iter().filter(|k| k.matches_name(name)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(LookupError::UnknownKind {
            kind: name.to_string(),
            api_version: String::new(),
        }),
        many => Err(LookupError::Ambiguous {
            name: name.to_string(),
            candidates: many.iter().map(|k| format!("{}.{}", k.plural, k.group)).collect(),
        }),
    }
}

/// Why a kind could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No kind of that name at all.
    #[error("unknown kind {kind:?}{}; expected one of: {}", if api_version.is_empty() { String::new() } else { format!(" (apiVersion {api_version:?})") }, known_kinds())]
    UnknownKind {
        /// As written.
        kind: String,
        /// As written.
        api_version: String,
    },
    /// The kind exists, but not in that group or version.
    #[error("apiVersion {api_version:?} is not served for kind {kind}; expected one of: {}", expected.join(", "))]
    UnknownVersion {
        /// As written.
        kind: String,
        /// As written.
        api_version: String,
        /// The apiVersions that are served for that kind.
        expected: Vec<String>,
    },
    /// A short name that matches kinds of several groups.
    #[error("{name:?} names several kinds; qualify it with its group: {}", candidates.join(", "))]
    Ambiguous {
        /// As written.
        name: String,
        /// Qualified names to choose from.
        candidates: Vec<String>,
    },
}

fn known_kinds() -> String {
    let mut kinds: Vec<&str> = KINDS.iter().map(|k| k.kind).collect();
    kinds.dedup();
    kinds.join(", ")
}

/// Identifies one object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ObjectKey {
    /// The kind.
    pub kind: KindId,
    /// The namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a namespaced or cluster-scoped object.
    pub fn new(kind: KindId, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = if kind.info().namespaced {
            namespace.into()
        } else {
            String::new()
        };
        Self {
            kind,
            namespace,
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Object {
    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey::new(
            self.kind_id(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_order_matches_ids() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(k.id as usize, i);
        }
    }

    #[test]
    fn lookup_by_api_version_and_kind() {
        assert_eq!(lookup("v1", "Service").unwrap().id, KindId::Service);
        assert_eq!(
            lookup("policy.linkerd.io/v1beta1", "HTTPRoute").unwrap().id,
            KindId::PolicyHttpRoute
        );
        assert_eq!(
            lookup("gateway.networking.k8s.io/v1", "HTTPRoute").unwrap().id,
            KindId::GatewayHttpRoute
        );
        assert!(matches!(
            lookup("policy.linkerd.io/v9", "HTTPRoute"),
            Err(LookupError::UnknownVersion { .. })
        ));
        assert!(matches!(
            lookup("v1", "Gizmo"),
            Err(LookupError::UnknownKind { .. })
        ));
        let err = lookup("apps/v1beta1", "Deployment").unwrap_err().to_string();
        assert!(err.contains("expected one of: apps/v1"), "{err}");
    }

    #[test]
    fn lookup_by_command_line_name() {
        assert_eq!(lookup_name("svc").unwrap().id, KindId::Service);
        assert_eq!(lookup_name("Services").unwrap().id, KindId::Service);
        assert_eq!(lookup_name("srv").unwrap().id, KindId::Server);
        assert_eq!(
            lookup_name("httproutes.policy.linkerd.io").unwrap().id,
            KindId::PolicyHttpRoute
        );
        assert!(matches!(
            lookup_name("httproute"),
            Err(LookupError::Ambiguous { .. })
        ));
    }

    #[test]
    fn registry_agrees_with_the_types() {
        fn check<K: Kind + kube::Resource<DynamicType = ()>>() {
            let info = K::info();
            assert_eq!(K::group(&()), info.group, "{}", info.kind);
            assert_eq!(K::version(&()), info.storage, "{}", info.kind);
            assert_eq!(K::kind(&()), info.kind);
            assert_eq!(K::plural(&()), info.plural, "{}", info.kind);
            assert!(info.versions.contains(&info.storage));
        }
        check::<Service>();
        check::<Deployment>();
        check::<EndpointSlice>();
        check::<mesh::policy::Server>();
        check::<mesh::policy::ServerAuthorization>();
        check::<mesh::policy::AuthorizationPolicy>();
        check::<mesh::policy::MeshTLSAuthentication>();
        check::<mesh::policy::NetworkAuthentication>();
        check::<mesh::policy::HttpRoute>();
        check::<mesh::gateway_api::HttpRoute>();
        check::<mesh::gateway_api::GrpcRoute>();
        check::<mesh::profile::ServiceProfile>();
        check::<mesh::split::TrafficSplit>();
        check::<mesh::link::Link>();
    }
}
