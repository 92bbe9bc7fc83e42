//! Linkerd's `policy.linkerd.io` kinds: Servers, the authorizations that admit clients to
//! them, and Linkerd's own HTTPRoute.

mod authorization;
mod http_route;
mod server;

pub use authorization::{
    AuthorizationPolicy, AuthorizationPolicySpec, Client, IdentityRef, MeshTLSAuthentication,
    MeshTLSAuthenticationSpec, MeshTls, Network, NetworkAuthentication, NetworkAuthenticationSpec,
    ServerAuthorization, ServerAuthorizationSpec, ServerSelector, ServiceAccountRef, TargetRef,
    validate_networks,
};
pub use http_route::{FILTER_TYPES, HttpRoute, HttpRouteFilter, HttpRouteSpec};
pub use server::{PROXY_PROTOCOLS, ProxyProtocol, Server, ServerPort, ServerSpec};
