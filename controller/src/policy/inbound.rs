//! Inbound server policies (`io.linkerd.proxy.inbound.InboundServerPolicies`): for each
//! port of a pod, the protocol to expect and who may connect.
//!
//! A `Server` selecting the pod and port decides the protocol and gathers the
//! authorizations that name it: `ServerAuthorization`s (by server name or by a selector
//! on the Server's labels) and `AuthorizationPolicy`s targeting it or its namespace, with
//! their `MeshTLSAuthentication` / `NetworkAuthentication` / ServiceAccount requirements.
//! Without a Server, the default inbound policy applies (pod annotation, then namespace
//! annotation, then the cluster default). Every answer carries a detect timeout, a `name`
//! label, and only authorizations with at least one network — what the stock proxy needs.
//! Kubelet probe paths stay authorized, as in Linkerd. `policy.linkerd.io` HTTPRoutes whose
//! parent is a Server become that server's routes, each authorized by the Server's
//! authorizations and by AuthorizationPolicies that target the route.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use linkerd2_proxy_api::http_route as hr;
use linkerd2_proxy_api::inbound as pb;
use linkerd2_proxy_api::meta::{Metadata, Resource, metadata};
use linkerd2_proxy_api::net::IpNetwork;
use strait_api::core::selector_matches;
use strait_api::labels;
use strait_api::mesh::formats::{Cidr, cidr};
use strait_api::mesh::policy::{
    AuthorizationPolicy, HttpRoute, MeshTLSAuthentication, NetworkAuthentication, ProxyProtocol, Server,
    ServerAuthorization, ServerPort,
};
use strait_api::{Store, WatchEvent};
use tonic::{Request, Response, Status};

use crate::streams::{BoxStream, Generations, follow};

/// Linkerd's protocol detection timeout.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster's default inbound policy (`config.linkerd.io/default-inbound-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Anyone, meshed or not, from anywhere.
    AllUnauthenticated,
    /// Meshed clients from anywhere.
    AllAuthenticated,
    /// Meshed clients from the cluster's networks.
    ClusterAuthenticated,
    /// Anyone from the cluster's networks.
    ClusterUnauthenticated,
    /// No one.
    Deny,
    /// Like all-unauthenticated; Linkerd logs what a deny would have refused.
    Audit,
}

impl DefaultPolicy {
    /// Parses the annotation's value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all-unauthenticated" => Self::AllUnauthenticated,
            "all-authenticated" => Self::AllAuthenticated,
            "cluster-authenticated" => Self::ClusterAuthenticated,
            "cluster-unauthenticated" => Self::ClusterUnauthenticated,
            "deny" => Self::Deny,
            "audit" => Self::Audit,
            _ => return None,
        })
    }

    /// The policy of a port that requires identity
    /// (`config.linkerd.io/proxy-require-identity-inbound-ports`) under this default:
    /// meshed clients only, from the same networks; `deny` and `audit` stay as they are,
    /// as in Linkerd's policy controller.
    pub fn authenticated(self) -> Self {
        match self {
            Self::AllUnauthenticated => Self::AllAuthenticated,
            Self::ClusterUnauthenticated => Self::ClusterAuthenticated,
            other => other,
        }
    }

    /// The annotation's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::ClusterAuthenticated => "cluster-authenticated",
            Self::ClusterUnauthenticated => "cluster-unauthenticated",
            Self::Deny => "deny",
            Self::Audit => "audit",
        }
    }
}

/// Cluster-wide settings of inbound policy.
#[derive(Clone, Debug)]
pub struct InboundConfig {
    /// Networks pods live in (`cluster-*` policies; ServerAuthorizations without networks).
    pub cluster_networks: Vec<Cidr>,
    /// The default policy where neither pod nor namespace sets one.
    pub default_policy: DefaultPolicy,
    /// The mesh trust domain, for ServiceAccount identities.
    pub trust_domain: String,
    /// Ports opaque on a pod without `config.linkerd.io/opaque-ports` and without a Server.
    pub default_opaque_ports: Vec<(u16, u16)>,
}

impl Default for InboundConfig {
    fn default() -> Self {
        let nets = [
            "10.0.0.0/8",
            "100.64.0.0/10",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fd00::/8",
        ];
        Self {
            cluster_networks: nets
                .iter()
                .map(|n| cidr(n).expect("valid default network"))
                .collect(),
            default_policy: DefaultPolicy::AllUnauthenticated,
            trust_domain: "cluster.local".into(),
            default_opaque_ports: crate::policy::outbound::translate::DEFAULT_OPAQUE_PORTS.to_vec(),
        }
    }
}

/// The policy objects of one namespace.
#[derive(Clone, Debug, Default)]
pub struct NamespacePolicy {
    /// The namespace's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Servers by name.
    pub servers: BTreeMap<String, Server>,
    /// ServerAuthorizations by name.
    pub server_authorizations: BTreeMap<String, ServerAuthorization>,
    /// AuthorizationPolicies by name.
    pub authorization_policies: BTreeMap<String, AuthorizationPolicy>,
    /// MeshTLSAuthentications by name.
    pub mesh_tls: BTreeMap<String, MeshTLSAuthentication>,
    /// NetworkAuthentications by name.
    pub networks: BTreeMap<String, NetworkAuthentication>,
    /// `policy.linkerd.io` HTTPRoutes by name (those whose parent is a Server apply here).
    pub http_routes: BTreeMap<String, HttpRoute>,
}

/// What inbound policy reads of a Pod: its labels, annotations, named ports and probes.
pub use crate::pods::PodInfo as PodFacts;

/// The policy of `pod`'s `port`, given its namespace's policy objects.
pub fn server_policy(cfg: &InboundConfig, pod: &PodFacts, port: u16, ns: &NamespacePolicy) -> pb::Server {
    let probes = probe_paths(pod, port);
    match select_server(pod, port, ns) {
        Some((name, server)) => {
            let mut authorizations = server_authorizations(cfg, name, server, ns);
            let access = server
                .spec
                .access_policy
                .as_deref()
                .and_then(DefaultPolicy::parse);
            if let Some(policy) = access.filter(|p| *p != DefaultPolicy::Deny) {
                authorizations.extend(default_authorizations(cfg, policy));
            }
            let routes = server_routes(cfg, name, server, &authorizations, ns);
            let protocol = protocol(
                server.spec.proxy_protocol().unwrap_or(ProxyProtocol::Unknown),
                &probes,
                routes,
            );
            pb::Server {
                protocol: Some(protocol),
                server_ips: Vec::new(),
                authorizations,
                labels: labels_of("policy.linkerd.io", "server", name),
            }
        }
        None => {
            let mut policy = default_policy_of(cfg, pod, ns);
            if requires_identity(pod, port, ns) {
                policy = policy.authenticated();
            }
            let opaque = pod.is_opaque(port, &cfg.default_opaque_ports);
            let proto = if opaque {
                ProxyProtocol::Opaque
            } else {
                ProxyProtocol::Unknown
            };
            pb::Server {
                protocol: Some(protocol(proto, &probes, Vec::new())),
                server_ips: Vec::new(),
                authorizations: default_authorizations(cfg, policy),
                labels: labels_of("", "default", policy.as_str()),
            }
        }
    }
}

fn labels_of(group: &str, kind: &str, name: &str) -> HashMap<String, String> {
    [("group", group), ("kind", kind), ("name", name)]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// Whether `port` is among the pod's ports that require identity (its annotation, else
/// its namespace's).
fn requires_identity(pod: &PodFacts, port: u16, ns: &NamespacePolicy) -> bool {
    let from_ns;
    let ports = match &pod.require_identity_ports {
        Some(p) => &**p,
        None => {
            // An unreadable value (the apply-time check keeps them out of local stores)
            // requires nothing, as a missing one.
            from_ns = ns
                .annotations
                .get(labels::config::PROXY_REQUIRE_IDENTITY_INBOUND_PORTS)
                .and_then(|v| strait_api::names::port_ranges(v).ok())
                .unwrap_or_default();
            &from_ns[..]
        }
    };
    ports.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port))
}

fn default_policy_of(cfg: &InboundConfig, pod: &PodFacts, ns: &NamespacePolicy) -> DefaultPolicy {
    let key = labels::config::DEFAULT_INBOUND_POLICY;
    pod.default_policy
        .as_deref()
        .or_else(|| ns.annotations.get(key).map(String::as_str))
        .and_then(DefaultPolicy::parse)
        .unwrap_or(cfg.default_policy)
}

/// The Server that selects this pod and port; the oldest wins a conflict, as in Linkerd.
fn select_server<'a>(pod: &PodFacts, port: u16, ns: &'a NamespacePolicy) -> Option<(&'a str, &'a Server)> {
    let pod_labels = &pod.labels;
    let named = |n: &str| pod.named_port(n);
    ns.servers
        .iter()
        .filter(|(_, s)| {
            s.spec
                .pod_selector
                .as_ref()
                .is_some_and(|sel| selector_matches(sel, pod_labels))
        })
        .filter(|(_, s)| match &s.spec.port {
            ServerPort::Name(n) => named(n) == Some(port),
            p => p.contains(port),
        })
        .min_by_key(|(name, s)| (s.metadata.creation_timestamp.clone(), (*name).clone()))
        .map(|(n, s)| (n.as_str(), s))
}

/// The proxy protocol with its HTTP routes: the Server's own HTTPRoutes when it has any
/// (then nothing else matches, as in Linkerd), otherwise the default and probe routes.
fn protocol(p: ProxyProtocol, probes: &[String], attached: Vec<pb::HttpRoute>) -> pb::ProxyProtocol {
    use pb::proxy_protocol::{Detect, Grpc, Http1, Http2, Kind, Opaque, Tls};
    let routes = if attached.is_empty() {
        default_http_routes(probes)
    } else {
        attached
    };
    let kind = match p {
        ProxyProtocol::Unknown => Kind::Detect(Detect {
            timeout: DETECT_TIMEOUT.try_into().ok(),
            http_routes: routes,
            http_local_rate_limit: None,
        }),
        ProxyProtocol::Http1 => Kind::Http1(Http1 {
            routes,
            local_rate_limit: None,
        }),
        ProxyProtocol::Http2 => Kind::Http2(Http2 {
            routes,
            local_rate_limit: None,
        }),
        ProxyProtocol::Grpc => Kind::Grpc(Grpc {
            routes: vec![default_grpc_route()],
        }),
        ProxyProtocol::Opaque => Kind::Opaque(Opaque {}),
        ProxyProtocol::Tls => Kind::Tls(Tls {}),
    };
    pb::ProxyProtocol { kind: Some(kind) }
}

/// The default route (everything, under the server's authorizations) and, when the pod
/// has HTTP probes on this port, a probe route the kubelet may always use.
fn default_http_routes(probes: &[String]) -> Vec<pb::HttpRoute> {
    let prefix = |p: &str| hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(hr::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    };
    let mut routes = vec![pb::HttpRoute {
        metadata: Some(Metadata {
            kind: Some(metadata::Kind::Default("default".into())),
        }),
        hosts: Vec::new(),
        authorizations: Vec::new(),
        rules: vec![pb::http_route::Rule {
            matches: vec![prefix("/")],
            filters: Vec::new(),
        }],
    }];
    if !probes.is_empty() {
        let matches = probes
            .iter()
            .map(|p| hr::HttpRouteMatch {
                path: Some(hr::PathMatch {
                    kind: Some(hr::path_match::Kind::Exact(p.clone())),
                }),
                method: Some(http::Method::GET.into()),
                ..Default::default()
            })
            .collect();
        routes.push(pb::HttpRoute {
            metadata: Some(Metadata {
                kind: Some(metadata::Kind::Default("probe".into())),
            }),
            hosts: Vec::new(),
            authorizations: vec![authz(
                all_networks(),
                unauthenticated(),
                labels_of("", "default", "probe"),
                Metadata {
                    kind: Some(metadata::Kind::Default("probe".into())),
                },
            )],
            rules: vec![pb::http_route::Rule {
                matches,
                filters: Vec::new(),
            }],
        });
    }
    routes
}

fn default_grpc_route() -> pb::GrpcRoute {
    pb::GrpcRoute {
        metadata: Some(Metadata {
            kind: Some(metadata::Kind::Default("default".into())),
        }),
        hosts: Vec::new(),
        authorizations: Vec::new(),
        rules: vec![pb::grpc_route::Rule {
            matches: vec![Default::default()],
            filters: Vec::new(),
        }],
    }
}

/// The HTTPRoutes whose parent is this Server, as inbound routes. Each route carries the
/// Server's authorizations plus the AuthorizationPolicies that target the route itself.
fn server_routes(
    cfg: &InboundConfig,
    server_name: &str,
    server: &Server,
    server_authz: &[pb::Authz],
    ns: &NamespacePolicy,
) -> Vec<pb::HttpRoute> {
    use crate::policy::outbound::translate::{
        AsFilter, FilterRef, host_match, http_match, match_everything, redirect, request_headers,
    };
    let namespace = server.metadata.namespace.clone().unwrap_or_default();
    let mut attached: Vec<(&String, &HttpRoute)> = ns
        .http_routes
        .iter()
        .filter(|(_, r)| {
            r.spec.parent_refs.iter().flatten().any(|p| {
                p.kind
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("Server"))
                    && p.group.as_deref().is_none_or(|g| g == "policy.linkerd.io")
                    && p.name == server_name
                    && p.namespace.as_deref().is_none_or(|n| n == namespace)
            })
        })
        .collect();
    // Gateway API precedence: oldest first, then by name.
    attached.sort_by_key(|(name, r)| (r.metadata.creation_timestamp.clone(), (*name).clone()));
    attached
        .into_iter()
        .map(|(name, route)| {
            let mut authorizations = server_authz.to_vec();
            for (ap_name, ap) in &ns.authorization_policies {
                let t = &ap.spec.target_ref;
                if t.targets("policy.linkerd.io", "HTTPRoute") && t.name == *name {
                    authorizations.extend(policy_authz(cfg, ap_name, ap, &namespace, ns));
                }
            }
            let rules = route
                .spec
                .rules
                .iter()
                .flatten()
                .map(|rule| {
                    let matches = match rule.matches.as_deref() {
                        Some(m) if !m.is_empty() => m.iter().map(http_match).collect(),
                        _ => vec![match_everything()],
                    };
                    let filters = rule
                        .filters
                        .iter()
                        .flatten()
                        .filter_map(|f| {
                            use pb::http_route::filter::Kind;
                            let kind = match f.as_filter() {
                                FilterRef::RequestHeaders(m) => {
                                    Kind::RequestHeaderModifier(request_headers(m))
                                }
                                FilterRef::Redirect(r) => Kind::Redirect(redirect(r)),
                                // Inbound routes have no response filters in the proxy API.
                                FilterRef::ResponseHeaders(_) | FilterRef::Unsupported(_) => return None,
                            };
                            Some(pb::http_route::Filter { kind: Some(kind) })
                        })
                        .collect();
                    pb::http_route::Rule { matches, filters }
                })
                .collect();
            pb::HttpRoute {
                metadata: Some(Metadata {
                    kind: Some(metadata::Kind::Resource(Resource {
                        group: "policy.linkerd.io".into(),
                        kind: "HTTPRoute".into(),
                        name: name.clone(),
                        namespace: namespace.clone(),
                        ..Default::default()
                    })),
                }),
                hosts: route
                    .spec
                    .hostnames
                    .iter()
                    .flatten()
                    .map(|h| host_match(h))
                    .collect(),
                authorizations,
                rules,
            }
        })
        .collect()
}

/// HTTP GET probe paths of the pod's containers on `port`.
fn probe_paths(pod: &PodFacts, port: u16) -> Vec<String> {
    let mut paths: Vec<String> = pod
        .probes
        .iter()
        .filter(|(p, _)| *p == port)
        .map(|(_, path)| path.to_string())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

fn net(c: &Cidr) -> IpNetwork {
    IpNetwork {
        ip: Some(c.addr.into()),
        prefix_len: u32::from(c.prefix),
    }
}

fn all_networks() -> Vec<pb::Network> {
    ["0.0.0.0/0", "::/0"]
        .iter()
        .map(|n| pb::Network {
            net: Some(net(&cidr(n).expect("valid"))),
            except: Vec::new(),
        })
        .collect()
}

fn cluster_networks(cfg: &InboundConfig) -> Vec<pb::Network> {
    cfg.cluster_networks
        .iter()
        .map(|c| pb::Network {
            net: Some(net(c)),
            except: Vec::new(),
        })
        .collect()
}

fn unauthenticated() -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::Unauthenticated(
            pb::authn::PermitUnauthenticated {},
        )),
    }
}

fn any_mesh_client() -> pb::Authn {
    use pb::authn::permit_mesh_tls::Clients;
    pb::Authn {
        permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
            clients: Some(Clients::Unauthenticated(pb::authn::PermitUnauthenticated {})),
        })),
    }
}

/// Mesh clients whose identity is one of `ids` (`name`, `*.suffix`, or `*`).
fn mesh_identities(ids: &[String]) -> pb::Authn {
    use pb::authn::permit_mesh_tls::{Clients, PermitClientIdentities};
    let mut identities = Vec::new();
    let mut suffixes = Vec::new();
    for id in ids {
        if id == "*" {
            suffixes.push(pb::IdentitySuffix { parts: Vec::new() });
        } else if let Some(rest) = id.strip_prefix("*.") {
            suffixes.push(pb::IdentitySuffix {
                parts: rest.split('.').map(str::to_string).collect(),
            });
        } else {
            identities.push(pb::Identity { name: id.clone() });
        }
    }
    pb::Authn {
        permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
            clients: Some(Clients::Identities(PermitClientIdentities {
                identities,
                suffixes,
            })),
        })),
    }
}

fn authz(
    networks: Vec<pb::Network>,
    authn: pb::Authn,
    labels: HashMap<String, String>,
    metadata: Metadata,
) -> pb::Authz {
    pb::Authz {
        networks,
        authentication: Some(authn),
        labels,
        metadata: Some(metadata),
    }
}

fn default_authorizations(cfg: &InboundConfig, policy: DefaultPolicy) -> Vec<pb::Authz> {
    let meta = Metadata {
        kind: Some(metadata::Kind::Default(policy.as_str().into())),
    };
    let labels = labels_of("", "default", policy.as_str());
    let (networks, authn) = match policy {
        DefaultPolicy::Deny => return Vec::new(),
        DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => (all_networks(), unauthenticated()),
        DefaultPolicy::AllAuthenticated => (all_networks(), any_mesh_client()),
        DefaultPolicy::ClusterAuthenticated => (cluster_networks(cfg), any_mesh_client()),
        DefaultPolicy::ClusterUnauthenticated => (cluster_networks(cfg), unauthenticated()),
    };
    vec![authz(networks, authn, labels, meta)]
}

fn resource(kind: &str, name: &str, namespace: &str) -> Metadata {
    Metadata {
        kind: Some(metadata::Kind::Resource(Resource {
            group: "policy.linkerd.io".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        })),
    }
}

fn networks_of(nets: &[strait_api::mesh::policy::Network]) -> Vec<pb::Network> {
    nets.iter()
        .filter_map(|n| {
            let c = cidr(&n.cidr).ok()?;
            let except = n
                .except
                .iter()
                .flatten()
                .filter_map(|e| cidr(e).ok())
                .map(|e| net(&e))
                .collect();
            Some(pb::Network {
                net: Some(net(&c)),
                except,
            })
        })
        .collect()
}

fn sa_identity(cfg: &InboundConfig, sa: &str, ns: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.linkerd.{}", cfg.trust_domain)
}

/// Authorizations that name the Server.
fn server_authorizations(
    cfg: &InboundConfig,
    server_name: &str,
    server: &Server,
    ns: &NamespacePolicy,
) -> Vec<pb::Authz> {
    let namespace = server.metadata.namespace.clone().unwrap_or_default();
    let server_labels = server.metadata.labels.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (name, saz) in &ns.server_authorizations {
        let sel = &saz.spec.server;
        let names_it = sel.name.as_deref() == Some(server_name)
            || sel
                .selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, &server_labels));
        if !names_it {
            continue;
        }
        let client = &saz.spec.client;
        let networks = match &client.networks {
            Some(nets) => networks_of(nets),
            None => cluster_networks(cfg),
        };
        if networks.is_empty() {
            // `networks: []` authorizes no one (the seed's deny-all).
            continue;
        }
        let authn = if client.unauthenticated == Some(true) {
            unauthenticated()
        } else if let Some(tls) = &client.mesh_tls {
            if tls.unauthenticated_tls == Some(true) {
                any_mesh_client()
            } else {
                let mut ids: Vec<String> = tls.identities.clone().unwrap_or_default();
                ids.extend(
                    tls.service_accounts
                        .iter()
                        .flatten()
                        .map(|sa| sa_identity(cfg, &sa.name, sa.namespace.as_deref().unwrap_or(&namespace))),
                );
                mesh_identities(&ids)
            }
        } else {
            continue;
        };
        out.push(authz(
            networks,
            authn,
            labels_of("policy.linkerd.io", "serverauthorization", name),
            resource("serverauthorization", name, &namespace),
        ));
    }
    for (name, ap) in &ns.authorization_policies {
        let t = &ap.spec.target_ref;
        let targets_server = t.targets("policy.linkerd.io", "Server") && t.name == server_name;
        let targets_namespace = t.targets("", "Namespace") && t.name == namespace;
        if !(targets_server || targets_namespace) {
            continue;
        }
        if let Some(a) = policy_authz(cfg, name, ap, &namespace, ns) {
            out.push(a);
        }
    }
    out
}

/// An AuthorizationPolicy as one authorization; `None` when a required authentication
/// does not exist (the policy then authorizes nothing, as in Linkerd).
fn policy_authz(
    cfg: &InboundConfig,
    name: &str,
    ap: &AuthorizationPolicy,
    namespace: &str,
    ns: &NamespacePolicy,
) -> Option<pb::Authz> {
    let mut networks: Option<Vec<pb::Network>> = None;
    let mut identities: Option<Vec<String>> = None;
    for r in &ap.spec.required_authentication_refs {
        let ref_ns = r.namespace.as_deref().unwrap_or(namespace);
        if r.targets("policy.linkerd.io", "NetworkAuthentication") {
            // Only same-namespace references are indexed; others cannot be satisfied here.
            let n = (ref_ns == namespace)
                .then(|| ns.networks.get(&r.name))
                .flatten()?;
            networks
                .get_or_insert_with(Vec::new)
                .extend(networks_of(&n.spec.networks));
        } else if r.targets("policy.linkerd.io", "MeshTLSAuthentication") {
            let m = (ref_ns == namespace)
                .then(|| ns.mesh_tls.get(&r.name))
                .flatten()?;
            let ids = identities.get_or_insert_with(Vec::new);
            ids.extend(m.spec.identities.clone().unwrap_or_default());
            for ir in m.spec.identity_refs.iter().flatten() {
                let ir_ns = ir.namespace.as_deref().unwrap_or(namespace);
                match (ir.kind.as_str(), ir.name.as_deref()) {
                    ("ServiceAccount", Some(sa)) => ids.push(sa_identity(cfg, sa, ir_ns)),
                    ("Namespace", Some(n)) => ids.push(format!(
                        "*.{n}.serviceaccount.identity.linkerd.{}",
                        cfg.trust_domain
                    )),
                    (_, None) | (_, Some("*")) => ids.push("*".into()),
                    _ => {}
                }
            }
        } else if r.targets("", "ServiceAccount") {
            identities
                .get_or_insert_with(Vec::new)
                .push(sa_identity(cfg, &r.name, ref_ns));
        } else {
            return None;
        }
    }
    let networks = networks.unwrap_or_else(all_networks);
    if networks.is_empty() {
        return None;
    }
    let authn = match identities {
        Some(ids) => mesh_identities(&ids),
        None => unauthenticated(),
    };
    Some(authz(
        networks,
        authn,
        labels_of("policy.linkerd.io", "authorizationpolicy", name),
        resource("authorizationpolicy", name, namespace),
    ))
}

#[derive(Default)]
struct State {
    pods: crate::pods::PodMap,
    namespaces: BTreeMap<String, NamespacePolicy>,
}

/// The inbound policy index: pods and policy objects by namespace, fed by store watches.
pub struct InboundIndex {
    config: InboundConfig,
    state: RwLock<State>,
    generations: Generations,
    /// Whether the store's first state of every watched kind is in (see [`run`]).
    pub synced: crate::streams::Synced,
}

impl InboundIndex {
    /// An empty index.
    pub fn new(config: InboundConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: RwLock::default(),
            generations: Generations::default(),
            synced: crate::streams::Synced::new(8),
        })
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        self.generations.close();
    }

    /// The policy of a pod's port, or `None` if the pod is unknown.
    pub fn policy(&self, namespace: &str, pod: &str, port: u16) -> Option<pb::Server> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let p = s.pods.get(namespace, pod)?;
        let empty = NamespacePolicy::default();
        let ns = s.namespaces.get(namespace).unwrap_or(&empty);
        Some(server_policy(&self.config, p, port, ns))
    }

    fn update(&self, namespace: Option<String>, f: impl FnOnce(&mut State)) {
        {
            let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
            f(&mut s);
        }
        match namespace {
            Some(ns) => self.generations.bump([ns]),
            None => {
                let touched: Vec<String> = {
                    let s = self.state.read().unwrap_or_else(|e| e.into_inner());
                    s.namespaces
                        .keys()
                        .cloned()
                        .chain(s.pods.namespaces().map(String::from))
                        .collect()
                };
                self.generations.bump(touched);
            }
        }
    }
}

fn ns_of(meta: &ObjectMeta) -> Option<String> {
    meta.namespace.clone()
}

macro_rules! apply_policy_event {
    ($index:expr, $ev:expr, $field:ident) => {{
        match $ev {
            WatchEvent::Restarted(items) => $index.update(None, |s| {
                for ns in s.namespaces.values_mut() {
                    ns.$field.clear();
                }
                for item in items {
                    if let (Some(ns), Some(name)) = (ns_of(&item.metadata), item.metadata.name.clone()) {
                        s.namespaces.entry(ns).or_default().$field.insert(name, item);
                    }
                }
            }),
            WatchEvent::Applied(item) => {
                let ns = ns_of(&item.metadata);
                $index.update(ns.clone(), |s| {
                    if let (Some(ns), Some(name)) = (ns, item.metadata.name.clone()) {
                        s.namespaces.entry(ns).or_default().$field.insert(name, item);
                    }
                })
            }
            WatchEvent::Deleted(item) => {
                let ns = ns_of(&item.metadata);
                $index.update(ns.clone(), |s| {
                    if let (Some(ns), Some(name)) = (ns, item.metadata.name.as_ref()) {
                        s.namespaces.entry(ns).or_default().$field.remove(name);
                    }
                })
            }
        }
    }};
}

/// Feeds the index from `store` for as long as the watches run.
pub async fn run<S: Store>(index: Arc<InboundIndex>, store: S) {
    use crate::streams::completes;
    let mut pods = store.watch::<Pod>();
    let mut namespaces = store.watch::<Namespace>();
    let mut servers = store.watch::<Server>();
    let mut sazs = store.watch::<ServerAuthorization>();
    let mut aps = store.watch::<AuthorizationPolicy>();
    let mut mtls = store.watch::<MeshTLSAuthentication>();
    let mut nets = store.watch::<NetworkAuthentication>();
    let mut routes = store.watch::<HttpRoute>();
    loop {
        let (kind, restart, r) = tokio::select! {
            Some(ev) = pods.next() => (0, completes(&ev), ev.map(|ev| match ev {
                WatchEvent::Restarted(items) => index.update(None, |s| {
                    s.pods = items.iter().filter_map(crate::pods::shared).collect();
                }),
                WatchEvent::Applied(p) => {
                    if let Some(new) = crate::pods::shared(&p) {
                        // A pod's status changes often; what policy reads of it seldom does.
                        let unchanged = {
                            let s = index.state.read().unwrap_or_else(|e| e.into_inner());
                            s.pods.get(&new.namespace, &new.name).is_some_and(|old| same_policy_facts(old, &new))
                        };
                        if unchanged {
                            // Keep the newest record without telling streams: the older one
                            // is no other index's any more, and would otherwise be a copy.
                            let mut s = index.state.write().unwrap_or_else(|e| e.into_inner());
                            s.pods.insert(new);
                        } else {
                            index.update(Some(new.namespace.to_string()), |s| {
                                s.pods.insert(new);
                            });
                        }
                    }
                }
                WatchEvent::Deleted(p) => index.update(p.metadata.namespace.clone(), |s| {
                    if let (Some(ns), Some(n)) = (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()) {
                        s.pods.remove(ns, n);
                    }
                }),
            })),
            Some(ev) = namespaces.next() => (1, completes(&ev), ev.map(|ev| {
                let set = |s: &mut State, n: &Namespace| {
                    if let Some(name) = n.metadata.name.clone() {
                        s.namespaces.entry(name).or_default().annotations = n.metadata.annotations.clone().unwrap_or_default();
                    }
                };
                match ev {
                    WatchEvent::Restarted(items) => index.update(None, |s| items.iter().for_each(|n| set(s, n))),
                    WatchEvent::Applied(n) | WatchEvent::Deleted(n) => index.update(n.metadata.name.clone(), |s| set(s, &n)),
                }
            })),
            Some(ev) = servers.next() => (2, completes(&ev), ev.map(|ev| apply_policy_event!(index, ev, servers))),
            Some(ev) = sazs.next() => (3, completes(&ev), ev.map(|ev| apply_policy_event!(index, ev, server_authorizations))),
            Some(ev) = aps.next() => (4, completes(&ev), ev.map(|ev| apply_policy_event!(index, ev, authorization_policies))),
            Some(ev) = mtls.next() => (5, completes(&ev), ev.map(|ev| apply_policy_event!(index, ev, mesh_tls))),
            Some(ev) = nets.next() => (6, completes(&ev), ev.map(|ev| apply_policy_event!(index, ev, networks))),
            Some(ev) = routes.next() => (7, completes(&ev), ev.map(|ev| apply_policy_event!(index, ev, http_routes))),
            else => return,
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "inbound policy watch error");
        }
        if restart {
            index.synced.restarted(kind);
        }
    }
}

/// Whether two records of one pod answer every policy question alike: a status change
/// (address, readiness) needs no stream to re-evaluate.
fn same_policy_facts(a: &PodFacts, b: &PodFacts) -> bool {
    std::ptr::eq(a, b)
        || (a.labels == b.labels
            && a.default_policy == b.default_policy
            && a.require_identity_ports == b.require_identity_ports
            && a.opaque_ports == b.opaque_ports
            && a.named_ports == b.named_ports
            && a.probes == b.probes)
}

/// Which pod a `PortSpec.workload` names: Linkerd's JSON form `{"ns":…,"pod":…}` or the
/// older `ns:pod`.
pub fn parse_workload(w: &str) -> Result<(String, String), String> {
    if w.trim_start().starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(w).map_err(|e| format!("workload {w:?} is not valid JSON: {e}"))?;
        let ns = v.get("ns").and_then(|x| x.as_str());
        let pod = v.get("pod").and_then(|x| x.as_str());
        return match (ns, pod) {
            (Some(ns), Some(pod)) => Ok((ns.to_string(), pod.to_string())),
            _ => Err(format!("workload {w:?} must name \"ns\" and \"pod\"")),
        };
    }
    match w.split_once(':') {
        Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() => Ok((ns.to_string(), pod.to_string())),
        _ => Err(format!(
            "workload {w:?} is not {{\"ns\":\"<namespace>\",\"pod\":\"<pod>\"}} or <namespace>:<pod>"
        )),
    }
}

/// The InboundServerPolicies service.
#[derive(Clone)]
pub struct InboundPolicyService {
    index: Arc<InboundIndex>,
}

impl InboundPolicyService {
    /// A service answering from `index`.
    pub fn new(index: Arc<InboundIndex>) -> Self {
        Self { index }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::inbound_server_policies_server::InboundServerPoliciesServer<Self> {
        pb::inbound_server_policies_server::InboundServerPoliciesServer::new(self)
    }

    fn target(spec: &pb::PortSpec) -> Result<(String, String, u16), Status> {
        let (ns, pod) = parse_workload(&spec.workload).map_err(Status::invalid_argument)?;
        let port = u16::try_from(spec.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Status::invalid_argument(format!("port {} is not 1-65535", spec.port)))?;
        Ok((ns, pod, port))
    }
}

#[tonic::async_trait]
impl pb::inbound_server_policies_server::InboundServerPolicies for InboundPolicyService {
    type WatchPortStream = BoxStream<pb::Server>;

    async fn get_port(&self, request: Request<pb::PortSpec>) -> Result<Response<pb::Server>, Status> {
        let (ns, pod, port) = Self::target(request.get_ref())?;
        // Not before the index holds the store's state: the pod would be unknown.
        self.index.synced.wait().await;
        self.index
            .policy(&ns, &pod, port)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("pod {ns}/{pod} is not known to the control plane")))
    }

    async fn watch_port(
        &self,
        request: Request<pb::PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        let (ns, pod, port) = Self::target(request.get_ref())?;
        self.index.synced.wait().await;
        let rx = self.index.generations.subscribe(&ns);
        if self.index.policy(&ns, &pod, port).is_none() {
            return Err(Status::not_found(format!(
                "pod {ns}/{pod} is not known to the control plane"
            )));
        }
        let mut last: Option<pb::Server> = None;
        let stream = follow(self.index.clone(), rx, move |ix: &InboundIndex| {
            let next = ix.policy(&ns, &pod, port);
            match next {
                Some(next) if last.as_ref() != Some(&next) => {
                    last = Some(next.clone());
                    vec![next]
                }
                _ => Vec::new(),
            }
        });
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests;
