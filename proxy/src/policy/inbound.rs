//! Inbound authorization: a port's `Server` policy, typed, and the pure decision of
//! whether a client may use it (connection level for opaque traffic, route level for
//! HTTP). A denied HTTP request is answered 403, a denied connection is closed.

use std::net::IpAddr;
use std::sync::Arc;

use linkerd2_proxy_api::{inbound as pb, meta, net};

use super::PolicyError;
use super::matching::{self, HostMatch, RequestMatch};

/// An IP network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    fn from_pb(object: &str, field: &str, n: Option<&net::IpNetwork>) -> Result<Self, PolicyError> {
        let n = n.ok_or_else(|| PolicyError::new(object, field, "missing; expected a network"))?;
        let addr = n.ip.and_then(|ip| IpAddr::try_from(ip).ok()).ok_or_else(|| {
            PolicyError::new(
                object,
                format!("{field}.ip"),
                "missing or unreadable; expected an IP address",
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = u8::try_from(n.prefix_len)
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| {
                PolicyError::new(
                    object,
                    format!("{field}.prefix_len"),
                    format!("{} is not a prefix length; expected 0-{max}", n.prefix_len),
                )
            })?;
        Ok(Self { addr, prefix })
    }
}

/// Who an authorization admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    /// Anyone, TLS or not.
    Unauthenticated,
    /// Any meshed (mTLS-authenticated) client.
    AnyMeshed,
    /// Meshed clients with one of these identities or identity suffixes.
    Meshed {
        /// Exact identities.
        identities: Vec<String>,
        /// Suffixes (`production.serviceaccount.identity.linkerd.cluster.local`); empty
        /// means any identity.
        suffixes: Vec<String>,
    },
}

/// One authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authz {
    /// The object that grants it (`serverauthorization production/myapp-auth`).
    pub name: Arc<str>,
    /// Client networks (with exceptions).
    pub networks: Vec<(IpNet, Vec<IpNet>)>,
    /// Who.
    pub authn: Authn,
}

/// An inbound HTTP route with its own authorizations.
#[derive(Clone, Debug)]
pub struct InboundRoute {
    /// Its name.
    pub name: Arc<str>,
    /// Hosts.
    pub hosts: Vec<HostMatch>,
    /// Rules' matches.
    pub rules: Vec<Vec<RequestMatch>>,
    /// Authorizations (empty: the server's apply).
    pub authorizations: Vec<Authz>,
}

/// The protocol a server port expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundProtocol {
    /// Detect HTTP.
    Detect,
    /// HTTP/1, HTTP/2 or gRPC (no detection needed).
    Http,
    /// Opaque or TLS: forwarded as bytes.
    Opaque,
}

/// A port's policy.
#[derive(Clone, Debug)]
pub struct ServerPolicy {
    /// The server that decides (`server production/myapp-server`, `default all-unauthenticated`).
    pub name: Arc<str>,
    /// Protocol.
    pub protocol: InboundProtocol,
    /// Connection-level authorizations.
    pub authorizations: Vec<Authz>,
    /// HTTP routes (empty: every request is under the server's authorizations).
    pub routes: Vec<InboundRoute>,
}

/// A client as authorization sees it.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    /// Its address.
    pub ip: IpAddr,
    /// Its authenticated identity.
    pub identity: Option<&'a str>,
}

fn meta_name(m: Option<&meta::Metadata>, labels: &std::collections::HashMap<String, String>) -> String {
    match m.and_then(|m| m.kind.as_ref()) {
        Some(meta::metadata::Kind::Resource(r)) => {
            format!("{} {}/{}", r.kind.to_ascii_lowercase(), r.namespace, r.name)
        }
        Some(meta::metadata::Kind::Default(d)) => format!("default {d}"),
        None => match (labels.get("kind"), labels.get("name")) {
            (Some(k), Some(n)) => format!("{k} {n}"),
            _ => "unnamed".into(),
        },
    }
}

fn authz(object: &str, field: &str, a: &pb::Authz) -> Result<Authz, PolicyError> {
    use pb::authn::permit_mesh_tls::Clients;
    let networks = a
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let f = format!("{field}.networks[{i}]");
            let net = IpNet::from_pb(object, &format!("{f}.net"), n.net.as_ref())?;
            let except = n
                .except
                .iter()
                .enumerate()
                .map(|(j, e)| IpNet::from_pb(object, &format!("{f}.except[{j}]"), Some(e)))
                .collect::<Result<_, _>>()?;
            Ok((net, except))
        })
        .collect::<Result<_, PolicyError>>()?;
    let authn = match a.authentication.as_ref().and_then(|x| x.permit.as_ref()) {
        Some(pb::authn::Permit::Unauthenticated(_)) => Authn::Unauthenticated,
        Some(pb::authn::Permit::MeshTls(m)) => match &m.clients {
            Some(Clients::Unauthenticated(_)) => Authn::AnyMeshed,
            Some(Clients::Identities(ids)) => Authn::Meshed {
                identities: ids.identities.iter().map(|i| i.name.clone()).collect(),
                suffixes: ids.suffixes.iter().map(|s| s.parts.join(".")).collect(),
            },
            None => {
                return Err(PolicyError::new(
                    object,
                    format!("{field}.authentication.meshTLS"),
                    "no clients; expected identities or any",
                ));
            }
        },
        None => {
            return Err(PolicyError::new(
                object,
                format!("{field}.authentication"),
                "missing; expected unauthenticated or meshTLS",
            ));
        }
    };
    Ok(Authz {
        name: meta_name(a.metadata.as_ref(), &a.labels).into(),
        networks,
        authn,
    })
}

fn authzs(object: &str, field: &str, v: &[pb::Authz]) -> Result<Vec<Authz>, PolicyError> {
    v.iter()
        .enumerate()
        .map(|(i, a)| authz(object, &format!("{field}[{i}]"), a))
        .collect()
}

fn route(object: &str, field: &str, r: &pb::HttpRoute) -> Result<InboundRoute, PolicyError> {
    let name = meta_name(r.metadata.as_ref(), &Default::default());
    Ok(InboundRoute {
        hosts: r
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostMatch::from_pb(object, &format!("{field}.hosts[{i}]"), h))
            .collect::<Result<_, _>>()?,
        rules: r
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                rule.matches
                    .iter()
                    .enumerate()
                    .map(|(j, m)| RequestMatch::http(object, &format!("{field}.rules[{i}].matches[{j}]"), m))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?,
        authorizations: authzs(object, &format!("{field}.authorizations"), &r.authorizations)?,
        name: name.into(),
    })
}

impl ServerPolicy {
    /// Reads `InboundServerPolicies`' answer for `port`.
    pub fn from_pb(port: u16, s: &pb::Server) -> Result<Self, PolicyError> {
        use pb::proxy_protocol::Kind;
        let name = match (s.labels.get("kind"), s.labels.get("name")) {
            (Some(k), Some(n)) => format!("{k} {n}"),
            (None, Some(n)) => format!("server {n}"),
            _ => "unnamed server".into(),
        };
        let object = format!("inbound policy for port {port} ({name})");
        let object = object.as_str();
        let routes = |v: &[pb::HttpRoute]| -> Result<Vec<InboundRoute>, PolicyError> {
            v.iter()
                .enumerate()
                .map(|(i, r)| route(object, &format!("protocol.http_routes[{i}]"), r))
                .collect()
        };
        let (protocol, routes) = match s.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
            Some(Kind::Detect(d)) => (InboundProtocol::Detect, routes(&d.http_routes)?),
            Some(Kind::Http1(h)) => (InboundProtocol::Http, routes(&h.routes)?),
            Some(Kind::Http2(h)) => (InboundProtocol::Http, routes(&h.routes)?),
            // gRPC routes are authorized at the server level here.
            Some(Kind::Grpc(_)) => (InboundProtocol::Http, Vec::new()),
            Some(Kind::Opaque(_)) | Some(Kind::Tls(_)) => (InboundProtocol::Opaque, Vec::new()),
            None => {
                return Err(PolicyError::new(
                    object,
                    "protocol",
                    "missing; expected detect, http1, http2, grpc, opaque or tls",
                ));
            }
        };
        Ok(Self {
            name: name.into(),
            protocol,
            authorizations: authzs(object, "authorizations", &s.authorizations)?,
            routes,
        })
    }

    /// A policy that admits everyone (no policy service, or Linkerd's
    /// `all-unauthenticated` default).
    pub fn allow_all(name: &str) -> Self {
        Self {
            name: name.into(),
            protocol: InboundProtocol::Detect,
            authorizations: vec![Authz {
                name: name.into(),
                networks: vec![
                    (
                        IpNet {
                            addr: IpAddr::from([0, 0, 0, 0]),
                            prefix: 0,
                        },
                        Vec::new(),
                    ),
                    (
                        IpNet {
                            addr: IpAddr::from([0u16; 8]),
                            prefix: 0,
                        },
                        Vec::new(),
                    ),
                ],
                authn: Authn::Unauthenticated,
            }],
            routes: Vec::new(),
        }
    }

    /// A policy that admits meshed clients only (Linkerd's `all-authenticated`).
    pub fn meshed_only(name: &str) -> Self {
        let mut p = Self::allow_all(name);
        p.authorizations[0].authn = Authn::AnyMeshed;
        p
    }

    /// The policy Linkerd's proxy applies for `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY` where
    /// the controller has none: `all-*` admit every address, `cluster-*` only clients
    /// inside `cluster_networks`; `*-authenticated` only meshed clients; `deny` no one;
    /// `audit` (and `all-unauthenticated`) everyone.
    pub fn default_policy(kind: &str, cluster_networks: &[IpNet]) -> Self {
        let name = format!("default {kind}");
        let mut p = match kind {
            "deny" => return Self::deny_all(&name),
            "all-authenticated" | "cluster-authenticated" => Self::meshed_only(&name),
            _ => Self::allow_all(&name),
        };
        if kind.starts_with("cluster-") {
            p.authorizations[0].networks = cluster_networks.iter().map(|n| (*n, Vec::new())).collect();
        }
        p
    }

    /// The policy of a port that requires identity
    /// (`LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY`) under default `kind`: its
    /// authenticated form, as Linkerd's policy controller makes it (`all-unauthenticated`
    /// → `all-authenticated`, `cluster-unauthenticated` → `cluster-authenticated`; the
    /// others are kept).
    pub fn require_identity(kind: &str, cluster_networks: &[IpNet]) -> Self {
        let kind = match kind {
            "all-unauthenticated" => "all-authenticated",
            "cluster-unauthenticated" => "cluster-authenticated",
            other => other,
        };
        Self::default_policy(kind, cluster_networks)
    }

    /// A policy that admits no one.
    pub fn deny_all(name: &str) -> Self {
        Self {
            name: name.into(),
            protocol: InboundProtocol::Detect,
            authorizations: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// Parses `a.b.c.d/n` or `x::/n` (Linkerd's cluster-networks syntax); a bare address is
/// its own host network.
impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (ip, p) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| format!("{ip:?} is not an IP address"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{p:?} in {s:?} is not a prefix length; expected 0-{max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

fn admits(a: &Authz, c: Client<'_>) -> bool {
    let in_net = a
        .networks
        .iter()
        .any(|(n, except)| n.contains(c.ip) && !except.iter().any(|e| e.contains(c.ip)));
    if !in_net {
        return false;
    }
    match (&a.authn, c.identity) {
        (Authn::Unauthenticated, _) => true,
        (Authn::AnyMeshed, id) => id.is_some(),
        (Authn::Meshed { identities, suffixes }, Some(id)) => {
            identities.iter().any(|i| i == id)
                || suffixes.iter().any(|s| {
                    s.is_empty()
                        || (id.len() > s.len()
                            && id.ends_with(s.as_str())
                            && id.as_bytes()[id.len() - s.len() - 1] == b'.')
                })
        }
        (Authn::Meshed { .. }, None) => false,
    }
}

/// The first of `authorizations` that admits `client`.
pub fn decide<'a>(authorizations: &'a [Authz], client: Client<'_>) -> Option<&'a Authz> {
    authorizations.iter().find(|a| admits(a, client))
}

/// The outcome of authorizing an HTTP request.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpDecision {
    /// Allowed by this authorization (on this route).
    Allow { route: Arc<str>, authz: Arc<str> },
    /// No authorization admits the client on this route.
    Deny { route: Arc<str> },
    /// The server has routes and none matches (404).
    NoRoute,
}

/// Authorizes a request: the route it matches decides with its own authorizations, or the
/// server's when the route has none.
pub fn decide_http(
    p: &ServerPolicy,
    client: Client<'_>,
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> HttpDecision {
    let (route_name, list) = if p.routes.is_empty() {
        (p.name.clone(), p.authorizations.as_slice())
    } else {
        let routes = p.routes.iter().map(|r| (r.hosts.as_slice(), r.rules.as_slice()));
        match matching::select(routes, |r: &Vec<RequestMatch>| r.as_slice(), method, uri, headers) {
            None => return HttpDecision::NoRoute,
            Some((i, _)) => {
                let r = &p.routes[i];
                if r.authorizations.is_empty() {
                    (r.name.clone(), p.authorizations.as_slice())
                } else {
                    (r.name.clone(), r.authorizations.as_slice())
                }
            }
        }
    };
    match decide(list, client) {
        Some(a) => HttpDecision::Allow {
            route: route_name,
            authz: a.name.clone(),
        },
        None => HttpDecision::Deny { route: route_name },
    }
}

/// The policies a proxy applies where no controller answers for a port: the default
/// inbound policy, and on the ports that require identity its authenticated form.
#[derive(Clone, Debug)]
pub struct Defaults {
    default: Arc<ServerPolicy>,
    require_identity: (crate::config::PortSet, Arc<ServerPolicy>),
    kind: String,
}

impl Defaults {
    /// The defaults of default policy `kind` with `require_identity` ports.
    pub fn new(kind: &str, cluster_networks: &[IpNet], require_identity: crate::config::PortSet) -> Self {
        Self {
            default: Arc::new(ServerPolicy::default_policy(kind, cluster_networks)),
            require_identity: (
                require_identity,
                Arc::new(ServerPolicy::require_identity(kind, cluster_networks)),
            ),
            kind: kind.to_string(),
        }
    }

    /// The policy of `port`.
    pub fn for_port(&self, port: u16) -> &Arc<ServerPolicy> {
        let (ports, policy) = &self.require_identity;
        if ports.contains(port) {
            policy
        } else {
            &self.default
        }
    }

    /// Whether every port admits every client (nothing to check).
    pub fn admit_all(&self) -> bool {
        self.kind == "all-unauthenticated" && self.require_identity.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse::<IpNet>().unwrap()
    }

    fn a(name: &str, nets: &[&str], authn: Authn) -> Authz {
        Authz {
            name: name.into(),
            networks: nets.iter().map(|n| (net(n), Vec::new())).collect(),
            authn,
        }
    }

    const FRONTEND: &str = "frontend.production.serviceaccount.identity.linkerd.cluster.local";
    const WEB_OTHER: &str = "web.other.serviceaccount.identity.linkerd.cluster.local";

    /// The seed's 09: frontend by service account, unauthenticated, and a namespace suffix.
    #[test]
    fn seed_server_authorizations() {
        let mesh = a(
            "serverauthorization production/myapp-auth",
            &["0.0.0.0/0"],
            Authn::Meshed {
                identities: vec![FRONTEND.into()],
                suffixes: vec![],
            },
        );
        let ns = a(
            "serverauthorization production/myapp-auth-namespace",
            &["0.0.0.0/0"],
            Authn::Meshed {
                identities: vec![],
                suffixes: vec!["production.serviceaccount.identity.linkerd.cluster.local".into()],
            },
        );
        let ip = IpAddr::from([10, 0, 0, 1]);
        let c = |identity| Client { ip, identity };
        assert_eq!(
            decide(&[mesh.clone(), ns.clone()], c(Some(FRONTEND)))
                .unwrap()
                .name,
            mesh.name
        );
        assert_eq!(
            decide(
                &[mesh.clone(), ns.clone()],
                c(Some(
                    "api.production.serviceaccount.identity.linkerd.cluster.local"
                ))
            )
            .unwrap()
            .name,
            ns.name
        );
        assert!(decide(&[mesh.clone(), ns.clone()], c(Some(WEB_OTHER))).is_none());
        assert!(decide(&[mesh, ns], c(None)).is_none());
        let anyone = a("x", &["0.0.0.0/0", "::/0"], Authn::Unauthenticated);
        assert!(decide(&[anyone], c(None)).is_some());
    }

    /// `cluster-*` defaults admit only clients inside the cluster networks; `all-*` admit
    /// every address; `*-authenticated` only meshed clients; `deny` no one.
    /// A port that requires identity admits only meshed clients under every default
    /// that admits some, and keeps the default's networks; other ports keep the default.
    #[test]
    fn ports_that_require_identity_admit_meshed_clients_only() {
        let cluster = [net("198.18.0.0/20")];
        let inside = IpAddr::from([198, 18, 0, 9]);
        let outside = IpAddr::from([203, 0, 113, 7]);
        let ports = crate::config::PortSet::parse("8080,9000-9001").unwrap();
        for (kind, in_meshed, out_meshed) in [
            ("all-unauthenticated", true, true),
            ("all-authenticated", true, true),
            ("cluster-unauthenticated", true, false),
            ("cluster-authenticated", true, false),
            ("deny", false, false),
        ] {
            let d = Defaults::new(kind, &cluster, ports.clone());
            assert!(!d.admit_all(), "{kind}");
            let admits = |port, ip, identity| {
                decide(&d.for_port(port).authorizations, Client { ip, identity }).is_some()
            };
            for port in [8080, 9001] {
                assert!(!admits(port, inside, None), "{kind}: {port} refuses plaintext");
                assert_eq!(
                    admits(port, inside, Some(FRONTEND)),
                    in_meshed,
                    "{kind}: {port}, inside"
                );
                assert_eq!(
                    admits(port, outside, Some(FRONTEND)),
                    out_meshed,
                    "{kind}: {port}, outside"
                );
            }
            let open = kind.ends_with("-unauthenticated");
            assert_eq!(
                admits(8081, inside, None),
                open,
                "{kind}: other ports keep the default"
            );
        }
        // Audit stays audit (Linkerd's controller keeps it so), and logs what it would refuse.
        let audit = Defaults::new("audit", &cluster, ports);
        assert!(
            decide(
                &audit.for_port(8080).authorizations,
                Client {
                    ip: outside,
                    identity: None
                }
            )
            .is_some()
        );
        assert!(Defaults::new("all-unauthenticated", &cluster, Default::default()).admit_all());
    }

    #[test]
    fn default_policies_follow_the_cluster_networks() {
        let cluster = [net("198.18.0.0/20"), net("fd00::/8")];
        let inside = IpAddr::from([198, 18, 0, 9]);
        let outside = IpAddr::from([203, 0, 113, 7]);
        let admits = |kind: &str, ip, identity| {
            decide(
                &ServerPolicy::default_policy(kind, &cluster).authorizations,
                Client { ip, identity },
            )
            .is_some()
        };
        for (kind, in_plain, in_meshed, out_plain, out_meshed) in [
            ("all-unauthenticated", true, true, true, true),
            ("audit", true, true, true, true),
            ("all-authenticated", false, true, false, true),
            ("cluster-unauthenticated", true, true, false, false),
            ("cluster-authenticated", false, true, false, false),
            ("deny", false, false, false, false),
        ] {
            assert_eq!(admits(kind, inside, None), in_plain, "{kind}, inside, plaintext");
            assert_eq!(
                admits(kind, inside, Some(FRONTEND)),
                in_meshed,
                "{kind}, inside, meshed"
            );
            assert_eq!(
                admits(kind, outside, None),
                out_plain,
                "{kind}, outside, plaintext"
            );
            assert_eq!(
                admits(kind, outside, Some(FRONTEND)),
                out_meshed,
                "{kind}, outside, meshed"
            );
        }
        assert!(admits(
            "cluster-unauthenticated",
            "fd00::1".parse().unwrap(),
            None
        ));
        assert_eq!(
            ServerPolicy::default_policy("cluster-authenticated", &cluster)
                .name
                .as_ref(),
            "default cluster-authenticated"
        );
    }

    #[test]
    fn cidrs_parse_with_precise_errors() {
        assert!("10.0.0.0/8".parse::<IpNet>().is_ok());
        assert_eq!("10.0.0.1".parse::<IpNet>().unwrap(), net("10.0.0.1/32"));
        assert!("10.0.0.0/33".parse::<IpNet>().unwrap_err().contains("0-32"));
        assert!("::/129".parse::<IpNet>().unwrap_err().contains("0-128"));
        assert!(
            "pods/8"
                .parse::<IpNet>()
                .unwrap_err()
                .contains("not an IP address")
        );
    }

    #[test]
    fn networks_and_exceptions() {
        let mut x = a("net", &["10.0.0.0/8"], Authn::Unauthenticated);
        x.networks[0].1.push(net("10.1.0.0/16"));
        let c = |ip: [u8; 4]| Client {
            ip: IpAddr::from(ip),
            identity: None,
        };
        assert!(decide(std::slice::from_ref(&x), c([10, 2, 0, 1])).is_some());
        assert!(decide(std::slice::from_ref(&x), c([10, 1, 0, 1])).is_none());
        assert!(decide(std::slice::from_ref(&x), c([11, 0, 0, 1])).is_none());
        let any = a("mesh", &["0.0.0.0/0"], Authn::AnyMeshed);
        assert!(decide(std::slice::from_ref(&any), c([1, 1, 1, 1])).is_none());
        assert!(
            decide(
                &[any],
                Client {
                    ip: IpAddr::from([1, 1, 1, 1]),
                    identity: Some(FRONTEND)
                }
            )
            .is_some()
        );
    }

    #[test]
    fn routes_decide_with_their_own_authorizations() {
        let p = ServerPolicy {
            name: "server production/s".into(),
            protocol: InboundProtocol::Detect,
            authorizations: vec![a("server-wide", &["0.0.0.0/0"], Authn::AnyMeshed)],
            routes: vec![
                InboundRoute {
                    name: "httproute production/public".into(),
                    hosts: vec![],
                    rules: vec![vec![RequestMatch {
                        path: Some(matching::PathMatch::Prefix("/public".into())),
                        ..Default::default()
                    }]],
                    authorizations: vec![a("public", &["0.0.0.0/0"], Authn::Unauthenticated)],
                },
                InboundRoute {
                    name: "httproute production/rest".into(),
                    hosts: vec![],
                    rules: vec![vec![RequestMatch {
                        path: Some(matching::PathMatch::Prefix("/api".into())),
                        ..Default::default()
                    }]],
                    authorizations: vec![],
                },
            ],
        };
        let anon = Client {
            ip: IpAddr::from([10, 0, 0, 1]),
            identity: None,
        };
        let h = http::HeaderMap::new();
        let d = |path: &str| decide_http(&p, anon, &http::Method::GET, &path.parse().unwrap(), &h);
        assert!(matches!(d("/public/x"), HttpDecision::Allow { .. }));
        assert_eq!(
            d("/api/x"),
            HttpDecision::Deny {
                route: "httproute production/rest".into()
            }
        );
        assert_eq!(d("/other"), HttpDecision::NoRoute);
    }
}
