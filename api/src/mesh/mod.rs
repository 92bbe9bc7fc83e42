//! The mesh's custom resource kinds — Linkerd policy, ServiceProfiles, multicluster Links,
//! SMI TrafficSplits and the Gateway API routes — as typed Rust values with their semantic
//! validation and their CustomResourceDefinitions.
//!
//! Every served version of a kind reads into one Rust type (the storage version's): the
//! versions differ only by fields added over time, so one schema, a superset, serves them
//! all. Serde stays permissive (formats are plain strings and numbers) so that a manifest
//! always loads into a value the loader can point into; [`crate::validate::Validate`] then
//! reports everything Linkerd or the API server would reject, with exact field paths.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, Resource};

pub mod formats;
pub mod gateway_api;
pub mod link;
pub mod policy;
pub mod profile;
pub mod route;
pub mod selector;
pub mod split;
pub mod weight;

#[cfg(test)]
mod tests;

/// The API versions under which a kind is served. The storage version is the one the
/// `kube` derive was given, so it is what [`Resource::version`] returns.
pub trait ServedVersions: CustomResourceExt + Resource<DynamicType = ()> {
    /// Every served version, oldest first; includes the storage version.
    const SERVED: &'static [&'static str];

    /// Served versions that Linkerd marks deprecated (the API server warns on their use).
    const DEPRECATED: &'static [&'static str] = &[];

    /// The version objects are stored as.
    fn storage_version() -> String {
        Self::version(&()).into_owned()
    }

    /// Whether `version` (`v1beta1`, without the group) is served.
    fn serves(version: &str) -> bool {
        Self::SERVED.contains(&version)
    }

    /// The kind's CRD with one entry per served version, all with the same schema, and
    /// `storage: true` only on the storage version.
    fn versioned_crd() -> CustomResourceDefinition {
        let mut crd = Self::crd();
        let storage = Self::storage_version();
        let template = crd
            .spec
            .versions
            .pop()
            .expect("the kube derive emits one version");
        crd.spec.versions = Self::SERVED
            .iter()
            .map(|v| {
                let mut version = template.clone();
                version.name = (*v).to_string();
                version.served = true;
                version.storage = *v == storage;
                if Self::DEPRECATED.contains(v) {
                    version.deprecated = Some(true);
                    version.deprecation_warning = Some(format!(
                        "{group}/{v} {kind} is deprecated; use {group}/{storage} {kind}",
                        group = Self::group(&()),
                        kind = Self::kind(&()),
                    ));
                }
                version
            })
            .collect();
        crd
    }
}

impl ServedVersions for policy::Server {
    const SERVED: &'static [&'static str] = &["v1alpha1", "v1beta1", "v1beta2", "v1beta3"];
    const DEPRECATED: &'static [&'static str] = &["v1alpha1", "v1beta1"];
}

impl ServedVersions for policy::ServerAuthorization {
    const SERVED: &'static [&'static str] = &["v1alpha1", "v1beta1"];
    const DEPRECATED: &'static [&'static str] = &["v1alpha1"];
}

impl ServedVersions for policy::AuthorizationPolicy {
    const SERVED: &'static [&'static str] = &["v1alpha1"];
}

impl ServedVersions for policy::MeshTLSAuthentication {
    const SERVED: &'static [&'static str] = &["v1alpha1"];
}

impl ServedVersions for policy::NetworkAuthentication {
    const SERVED: &'static [&'static str] = &["v1alpha1"];
}

impl ServedVersions for policy::HttpRoute {
    const SERVED: &'static [&'static str] = &["v1alpha1", "v1beta1", "v1beta2", "v1beta3"];
}

impl ServedVersions for gateway_api::HttpRoute {
    const SERVED: &'static [&'static str] = &["v1beta1", "v1"];
}

impl ServedVersions for gateway_api::GrpcRoute {
    const SERVED: &'static [&'static str] = &["v1alpha2", "v1"];
}

impl ServedVersions for profile::ServiceProfile {
    const SERVED: &'static [&'static str] = &["v1alpha1", "v1alpha2"];
}

impl ServedVersions for link::Link {
    const SERVED: &'static [&'static str] = &["v1alpha1", "v1alpha2", "v1alpha3"];
}

impl ServedVersions for split::TrafficSplit {
    const SERVED: &'static [&'static str] = &["v1alpha1", "v1alpha2"];
}

/// The CRDs of every kind in this module, each with all its served versions.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        policy::Server::versioned_crd(),
        policy::ServerAuthorization::versioned_crd(),
        policy::AuthorizationPolicy::versioned_crd(),
        policy::MeshTLSAuthentication::versioned_crd(),
        policy::NetworkAuthentication::versioned_crd(),
        policy::HttpRoute::versioned_crd(),
        gateway_api::HttpRoute::versioned_crd(),
        gateway_api::GrpcRoute::versioned_crd(),
        profile::ServiceProfile::versioned_crd(),
        link::Link::versioned_crd(),
        split::TrafficSplit::versioned_crd(),
    ]
}
