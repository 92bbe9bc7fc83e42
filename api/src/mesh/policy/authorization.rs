//! Who may talk to a Server: the older `ServerAuthorization`, and the newer
//! `AuthorizationPolicy` with the authentications it refers to (`MeshTLSAuthentication`,
//! `NetworkAuthentication`).
//!
//! Besides the CRD schemas, validation applies the rules of Linkerd's admission webhook
//! (allowed reference kinds, conflicting client settings, exceptions outside their network).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mesh::formats::{self, check, check_opt};
use crate::mesh::selector::validate_label_selector;
use crate::names;
use crate::validate::{FieldPath, Problems, Validate};

/// The API group of Linkerd's policy kinds.
const POLICY_GROUP: &str = "policy.linkerd.io";
/// The Gateway API group.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

// === ServerAuthorization ===

/// The desired state of a `ServerAuthorization`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.linkerd.io",
    version = "v1beta1",
    kind = "ServerAuthorization",
    namespaced,
    derive = "PartialEq",
    shortname = "saz",
    shortname = "serverauthz",
    shortname = "srvauthz",
    doc = "Authorizes clients to communicate with Linkerd-proxied servers.",
    printcolumn(
        name = "Server",
        type_ = "string",
        description = "The server that this grants access to",
        json_path = ".spec.server.name"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerAuthorizationSpec {
    /// The Servers (in the same namespace) this authorization applies to.
    pub server: ServerSelector,
    /// The clients it authorizes.
    pub client: Client,
}

/// Names one Server, or selects Servers by label; exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSelector {
    /// A Server's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A label query over Servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The clients a ServerAuthorization admits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    /// Client networks; an empty list admits no one (deny-all), unset means the default
    /// (all networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Network>>,
    /// Admits clients without a mesh identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unauthenticated: Option<bool>,
    /// Admits meshed clients by identity.
    #[serde(rename = "meshTLS", default, skip_serializing_if = "Option::is_none")]
    pub mesh_tls: Option<MeshTls>,
}

/// Meshed clients a ServerAuthorization admits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshTls {
    /// Admits TLS clients without an identity (the identity controller's own clients).
    #[serde(
        rename = "unauthenticatedTLS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unauthenticated_tls: Option<bool>,
    /// Proxy identities; `*.` prefixes match a domain, `*` any identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Vec<String>>,
    /// ServiceAccounts whose identities are admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<Vec<ServiceAccountRef>>,
}

/// A ServiceAccount, in the authorization's namespace unless one is given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    /// The ServiceAccount's name.
    pub name: String,
    /// Its namespace; the authorization's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A client network and the ranges cut out of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// The network (`10.0.0.0/8`) or a single address.
    pub cidr: String,
    /// Networks or addresses inside `cidr` that are not included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
}

impl Validate for ServerAuthorizationSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        let server = path.key("server");
        match (&self.server.name, &self.server.selector) {
            (None, None) => problems.missing(&server.key("name"), "a Server name or a selector"),
            (Some(_), Some(_)) => problems.push(
                &server.key("selector"),
                "either a name or a selector, not both",
                Some("both".into()),
            ),
            _ => {}
        }
        check_opt(
            &server.key("name"),
            problems,
            self.server.name.as_deref(),
            names::dns1123_label,
        );
        if let Some(sel) = &self.server.selector {
            validate_label_selector(sel, &server.key("selector"), problems);
        }
        self.client.validate(&path.key("client"), problems);
    }
}

impl Validate for Client {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        if let Some(networks) = &self.networks {
            validate_networks(networks, &path.key("networks"), problems);
        }
        if let Some(mtls) = &self.mesh_tls {
            // Linkerd's admission webhook: a client is either meshed or unauthenticated.
            if self.unauthenticated == Some(true) {
                problems.push(
                    &path.key("unauthenticated"),
                    "unauthenticated unset or false when meshTLS is set",
                    Some("true".into()),
                );
            }
            mtls.validate(&path.key("meshTLS"), problems);
        }
    }
}

impl Validate for MeshTls {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        let ids = self.identities.as_deref().unwrap_or_default();
        let sas = self.service_accounts.as_deref().unwrap_or_default();
        if self.unauthenticated_tls == Some(true) && !(ids.is_empty() && sas.is_empty()) {
            problems.push(
                &path.key("unauthenticatedTLS"),
                "unauthenticatedTLS unset or false when identities or serviceAccounts are given",
                Some("true".into()),
            );
        }
        for (i, id) in ids.iter().enumerate() {
            check(&path.key("identities").index(i), problems, id, formats::identity);
        }
        for (i, sa) in sas.iter().enumerate() {
            let p = path.key("serviceAccounts").index(i);
            check(&p.key("name"), problems, &sa.name, |s| {
                names::dns1123_label(s).map_err(|e| format!("a ServiceAccount name: {e}"))
            });
            check_opt(
                &p.key("namespace"),
                problems,
                sa.namespace.as_deref(),
                names::dns1123_label,
            );
        }
    }
}

/// Validates client networks: each CIDR parses, and each exception lies inside its network
/// without covering all of it (Linkerd's admission rules).
pub fn validate_networks(networks: &[Network], path: &FieldPath, problems: &mut Problems) {
    for (i, net) in networks.iter().enumerate() {
        let p = path.index(i);
        let cidr = match formats::cidr(&net.cidr) {
            Ok(c) => Some(c),
            Err(expected) => {
                problems.push(&p.key("cidr"), expected, Some(format!("{:?}", net.cidr)));
                None
            }
        };
        for (j, except) in net.except.iter().flatten().enumerate() {
            let ep = p.key("except").index(j);
            let ex = match formats::cidr(except) {
                Ok(ex) => ex,
                Err(expected) => {
                    problems.push(&ep, expected, Some(format!("{except:?}")));
                    continue;
                }
            };
            let Some(cidr) = cidr else { continue };
            if ex.contains(&cidr) {
                problems.push(
                    &ep,
                    format!("an exception smaller than the network {}", net.cidr),
                    Some(format!("{except:?}")),
                );
            } else if !cidr.contains(&ex) {
                problems.push(
                    &ep,
                    format!("an exception inside the network {}", net.cidr),
                    Some(format!("{except:?}")),
                );
            }
        }
    }
}

// === AuthorizationPolicy ===

/// The desired state of an `AuthorizationPolicy`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.linkerd.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    namespaced,
    derive = "PartialEq",
    shortname = "authzpolicy",
    doc = "Authorizes clients to communicate with Linkerd-proxied server resources."
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// What the policy protects: a Server, an HTTPRoute, a GRPCRoute or the Namespace.
    pub target_ref: TargetRef,
    /// Authentications a client must all satisfy; empty admits everyone.
    pub required_authentication_refs: Vec<TargetRef>,
}

/// A reference to an object by group, kind and name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API group; the core group when unset or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the referent.
    pub kind: String,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent; the policy's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl TargetRef {
    /// Whether this refers to `kind` in `group` (`""` for core, which also matches `core`);
    /// kinds compare case-insensitively, as Linkerd does.
    pub fn targets(&self, group: &str, kind: &str) -> bool {
        let own = self.group.as_deref().unwrap_or_default();
        let same_group = if group.is_empty() {
            formats::is_core_group(Some(own))
        } else {
            own.eq_ignore_ascii_case(group)
        };
        same_group && self.kind.eq_ignore_ascii_case(kind)
    }

    fn validate_fields(&self, path: &FieldPath, problems: &mut Problems) {
        check_opt(
            &path.key("group"),
            problems,
            self.group.as_deref(),
            formats::api_group,
        );
        check(&path.key("kind"), problems, &self.kind, formats::api_kind);
        check(&path.key("name"), problems, &self.name, names::dns1123_subdomain);
        check_opt(
            &path.key("namespace"),
            problems,
            self.namespace.as_deref(),
            names::dns1123_label,
        );
    }
}

/// What an AuthorizationPolicy may target (group, kind).
const POLICY_TARGETS: &[(&str, &str)] = &[
    (POLICY_GROUP, "Server"),
    (POLICY_GROUP, "HTTPRoute"),
    (GATEWAY_GROUP, "HTTPRoute"),
    (GATEWAY_GROUP, "GRPCRoute"),
    ("", "Namespace"),
];

impl Validate for AuthorizationPolicySpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        let tp = path.key("targetRef");
        self.target_ref.validate_fields(&tp, problems);
        if !POLICY_TARGETS.iter().any(|(g, k)| self.target_ref.targets(g, k)) {
            problems.push(
                &tp.key("kind"),
                "a Server or HTTPRoute (policy.linkerd.io), an HTTPRoute or GRPCRoute (gateway.networking.k8s.io), or a Namespace (core)",
                Some(describe_ref(&self.target_ref)),
            );
        }

        // Linkerd's admission webhook: at most one identity source (a MeshTLSAuthentication
        // or a ServiceAccount) and at most one NetworkAuthentication.
        let (mut identity, mut network) = (None::<&str>, false);
        for (i, r) in self.required_authentication_refs.iter().enumerate() {
            let p = path.key("requiredAuthenticationRefs").index(i);
            r.validate_fields(&p, problems);
            if r.targets(POLICY_GROUP, "MeshTLSAuthentication") || r.targets("", "ServiceAccount") {
                if let Some(first) = identity {
                    problems.push(
                        &p.key("kind"),
                        format!(
                            "at most one MeshTLSAuthentication or ServiceAccount (already have a {first})"
                        ),
                        Some(describe_ref(r)),
                    );
                }
                identity = Some(if r.targets("", "ServiceAccount") {
                    "ServiceAccount"
                } else {
                    "MeshTLSAuthentication"
                });
            } else if r.targets(POLICY_GROUP, "NetworkAuthentication") {
                if network {
                    problems.push(
                        &p.key("kind"),
                        "at most one NetworkAuthentication",
                        Some(describe_ref(r)),
                    );
                }
                network = true;
            } else {
                problems.push(
                    &p.key("kind"),
                    "a MeshTLSAuthentication or NetworkAuthentication (policy.linkerd.io) or a ServiceAccount (core)",
                    Some(describe_ref(r)),
                );
            }
        }
    }
}

fn describe_ref(r: &TargetRef) -> String {
    match r.group.as_deref() {
        None | Some("") => format!("{:?} (core group)", r.kind),
        Some(g) => format!("{:?} in group {g:?}", r.kind),
    }
}

// === MeshTLSAuthentication ===

/// The desired state of a `MeshTLSAuthentication`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.linkerd.io",
    version = "v1alpha1",
    kind = "MeshTLSAuthentication",
    namespaced,
    derive = "PartialEq",
    shortname = "meshtlsauthn",
    doc = "A set of authenticated client identities, referenced by AuthorizationPolicies."
)]
#[serde(rename_all = "camelCase")]
pub struct MeshTLSAuthenticationSpec {
    /// Proxy identities; `*.` prefixes match a domain, `*` any identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Vec<String>>,
    /// ServiceAccounts or Namespaces whose identities are included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_refs: Option<Vec<IdentityRef>>,
}

/// A ServiceAccount or Namespace whose workloads' identities are included; without a name,
/// every object of the kind (in the namespace).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityRef {
    /// API group; the core group when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `ServiceAccount` or `Namespace`.
    pub kind: String,
    /// Name of the referent; all of them when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of a ServiceAccount; the authentication's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Validate for MeshTLSAuthenticationSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        // The CRD's oneOf: exactly one of the two lists.
        match (&self.identities, &self.identity_refs) {
            (None, None) => problems.missing(&path.key("identities"), "identities or identityRefs"),
            (Some(_), Some(_)) => problems.push(
                &path.key("identityRefs"),
                "either identities or identityRefs, not both",
                Some("both".into()),
            ),
            _ => {}
        }
        for (i, id) in self.identities.iter().flatten().enumerate() {
            check(&path.key("identities").index(i), problems, id, formats::identity);
        }
        for (i, r) in self.identity_refs.iter().flatten().enumerate() {
            let p = path.key("identityRefs").index(i);
            check_opt(&p.key("group"), problems, r.group.as_deref(), formats::api_group);
            let core = formats::is_core_group(r.group.as_deref());
            match r.kind.as_str() {
                "ServiceAccount" if core => {
                    check_opt(&p.key("name"), problems, r.name.as_deref(), names::dns1123_label);
                    check_opt(
                        &p.key("namespace"),
                        problems,
                        r.namespace.as_deref(),
                        names::dns1123_label,
                    );
                }
                "Namespace" if core => {
                    check_opt(&p.key("name"), problems, r.name.as_deref(), names::dns1123_label);
                    if let Some(ns) = &r.namespace {
                        problems.push(
                            &p.key("namespace"),
                            "no namespace for a Namespace reference (Namespaces are cluster-scoped)",
                            Some(format!("{ns:?}")),
                        );
                    }
                }
                other => problems.push(
                    &p.key("kind"),
                    "a ServiceAccount or a Namespace (core group)",
                    Some(format!("{other:?}")),
                ),
            }
        }
    }
}

// === NetworkAuthentication ===

/// The desired state of a `NetworkAuthentication`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.linkerd.io",
    version = "v1alpha1",
    kind = "NetworkAuthentication",
    namespaced,
    derive = "PartialEq",
    shortname = "netauthn",
    shortname = "networkauthn",
    doc = "A set of authenticated client networks, referenced by AuthorizationPolicies."
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAuthenticationSpec {
    /// The client networks.
    pub networks: Vec<Network>,
}

impl Validate for NetworkAuthenticationSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        if self.networks.is_empty() {
            problems.push(
                &path.key("networks"),
                "at least one network",
                Some("an empty list".into()),
            );
        }
        validate_networks(&self.networks, &path.key("networks"), problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run<T: Validate + serde::de::DeserializeOwned>(v: &serde_json::Value) -> Vec<(String, String)> {
        let spec: T = serde_json::from_value(v.clone()).unwrap();
        let mut problems = Problems::default();
        spec.validate(&FieldPath::root().key("spec"), &mut problems);
        problems
            .0
            .iter()
            .map(|p| (p.path.to_string(), p.expected.clone()))
            .collect()
    }

    fn table<T: Validate + serde::de::DeserializeOwned>(
        valid: &[serde_json::Value],
        invalid: &[(serde_json::Value, &str, &str)],
    ) {
        for v in valid {
            assert_eq!(run::<T>(v), vec![], "{v}");
        }
        for (v, path, expected) in invalid {
            let found = run::<T>(v);
            assert_eq!(found.len(), 1, "{v}: {found:?}");
            assert_eq!(found[0].0, *path, "{v}");
            assert!(found[0].1.contains(expected), "{v}: {}", found[0].1);
        }
    }

    #[test]
    fn server_authorization() {
        table::<ServerAuthorizationSpec>(
            &[
                json!({"server": {"name": "web"}, "client": {"meshTLS": {"serviceAccounts": [{"name": "frontend", "namespace": "prod"}]}}}),
                json!({"server": {"name": "web"}, "client": {"unauthenticated": true}}),
                json!({"server": {"name": "web"}, "client": {"networks": []}}),
                json!({"server": {"selector": {"matchLabels": {"app": "api"}}}, "client": {"meshTLS": {"identities": ["*.prod.serviceaccount.identity.linkerd.cluster.local", "*"]}}}),
                json!({"server": {"name": "web"}, "client": {"networks": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.3.4"]}, {"cidr": "::/0"}]}}),
                json!({"server": {"name": "identity"}, "client": {"meshTLS": {"unauthenticatedTLS": true}}}),
            ],
            &[
                (
                    json!({"server": {}, "client": {}}),
                    "spec.server.name",
                    "a Server name or a selector",
                ),
                (
                    json!({"server": {"name": "a", "selector": {}}, "client": {}}),
                    "spec.server.selector",
                    "not both",
                ),
                (
                    json!({"server": {"name": "Web"}, "client": {}}),
                    "spec.server.name",
                    "a DNS-1123 label",
                ),
                (
                    json!({"server": {"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}, "client": {}}),
                    "spec.server.selector.matchExpressions[0].values",
                    "at least one value",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"meshTLS": {"serviceAccounts": [{"name": "Front_end"}]}}}),
                    "spec.client.meshTLS.serviceAccounts[0].name",
                    "a ServiceAccount name",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"meshTLS": {"serviceAccounts": [{"name": "a", "namespace": "-x"}]}}}),
                    "spec.client.meshTLS.serviceAccounts[0].namespace",
                    "a DNS-1123 label",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"meshTLS": {"identities": ["a.*.b"]}}}),
                    "spec.client.meshTLS.identities[0]",
                    "a proxy identity",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"unauthenticated": true, "meshTLS": {}}}),
                    "spec.client.unauthenticated",
                    "unset or false when meshTLS is set",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"meshTLS": {"unauthenticatedTLS": true, "identities": ["*"]}}}),
                    "spec.client.meshTLS.unauthenticatedTLS",
                    "unset or false when identities",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"networks": [{"cidr": "10.0.0.0/33"}]}}),
                    "spec.client.networks[0].cidr",
                    "a CIDR",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"networks": [{"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}]}}),
                    "spec.client.networks[0].except[0]",
                    "inside the network 10.0.0.0/8",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"networks": [{"cidr": "10.0.0.0/8", "except": ["0.0.0.0/0"]}]}}),
                    "spec.client.networks[0].except[0]",
                    "smaller than the network",
                ),
                (
                    json!({"server": {"name": "web"}, "client": {"networks": [{"cidr": "10.0.0.0/8", "except": ["nope"]}]}}),
                    "spec.client.networks[0].except[0]",
                    "a CIDR",
                ),
            ],
        );
    }

    #[test]
    fn authorization_policy() {
        let mtls = json!({"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication", "name": "a"});
        let net = json!({"group": "policy.linkerd.io", "kind": "NetworkAuthentication", "name": "n"});
        let sa = json!({"kind": "ServiceAccount", "name": "sa"});
        let server = json!({"group": "policy.linkerd.io", "kind": "Server", "name": "web"});
        table::<AuthorizationPolicySpec>(
            &[
                json!({"targetRef": server, "requiredAuthenticationRefs": [mtls, net]}),
                json!({"targetRef": {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "name": "r"}, "requiredAuthenticationRefs": [sa]}),
                json!({"targetRef": {"kind": "Namespace", "name": "prod"}, "requiredAuthenticationRefs": []}),
                json!({"targetRef": {"group": "core", "kind": "Namespace", "name": "prod"}, "requiredAuthenticationRefs": []}),
            ],
            &[
                (
                    json!({"targetRef": {"group": "apps", "kind": "Deployment", "name": "web"}, "requiredAuthenticationRefs": []}),
                    "spec.targetRef.kind",
                    "a Server or HTTPRoute",
                ),
                (
                    json!({"targetRef": {"kind": "Server", "name": "web"}, "requiredAuthenticationRefs": []}),
                    "spec.targetRef.kind",
                    "a Server or HTTPRoute (policy.linkerd.io)",
                ),
                (
                    json!({"targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "Web"}, "requiredAuthenticationRefs": []}),
                    "spec.targetRef.name",
                    "a DNS-1123 subdomain",
                ),
                (
                    json!({"targetRef": server, "requiredAuthenticationRefs": [mtls, sa]}),
                    "spec.requiredAuthenticationRefs[1].kind",
                    "at most one MeshTLSAuthentication or ServiceAccount",
                ),
                (
                    json!({"targetRef": server, "requiredAuthenticationRefs": [net, net]}),
                    "spec.requiredAuthenticationRefs[1].kind",
                    "at most one NetworkAuthentication",
                ),
                (
                    json!({"targetRef": server, "requiredAuthenticationRefs": [{"kind": "Secret", "name": "s"}]}),
                    "spec.requiredAuthenticationRefs[0].kind",
                    "a MeshTLSAuthentication or NetworkAuthentication",
                ),
            ],
        );
    }

    #[test]
    fn mesh_tls_authentication() {
        table::<MeshTLSAuthenticationSpec>(
            &[
                json!({"identities": ["*.prod.serviceaccount.identity.linkerd.cluster.local"]}),
                json!({"identityRefs": [{"kind": "ServiceAccount", "name": "web"}, {"kind": "Namespace", "name": "prod"}, {"kind": "ServiceAccount"}]}),
            ],
            &[
                (json!({}), "spec.identities", "identities or identityRefs"),
                (
                    json!({"identities": [], "identityRefs": []}),
                    "spec.identityRefs",
                    "not both",
                ),
                (
                    json!({"identities": ["Bad"]}),
                    "spec.identities[0]",
                    "a proxy identity",
                ),
                (
                    json!({"identityRefs": [{"kind": "Pod", "name": "p"}]}),
                    "spec.identityRefs[0].kind",
                    "a ServiceAccount or a Namespace",
                ),
                (
                    json!({"identityRefs": [{"kind": "Namespace", "name": "p", "namespace": "q"}]}),
                    "spec.identityRefs[0].namespace",
                    "no namespace for a Namespace reference",
                ),
            ],
        );
    }

    #[test]
    fn network_authentication() {
        table::<NetworkAuthenticationSpec>(
            &[json!({"networks": [{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]})],
            &[
                (json!({"networks": []}), "spec.networks", "at least one network"),
                (
                    json!({"networks": [{"cidr": "10.0.0.0/8", "except": ["10.0.0.0/4"]}]}),
                    "spec.networks[0].except[0]",
                    "smaller than the network",
                ),
            ],
        );
    }
}
