//! How the ingress role finds a local endpoint for a stream's target.
//!
//! The trait is deliberately small: one target in, one endpoint (or a typed
//! reason) out. [`StaticResolver`] serves tests and `strait gateway --target`;
//! a Destination-API-backed resolver (from the proxy crate) plugs in later.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use strait_identity::IdentityName;

use crate::proto::header::{Authority, RefusalReason, Target};

/// A local endpoint to deliver a stream to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The endpoint's mesh identity, when known; checked against the identity
    /// the client expects.
    pub identity: Option<IdentityName>,
}

/// Why a target has no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such service here.
    #[error("no service {0} in this cluster")]
    UnknownTarget(String),
    /// The service exists but has no ready endpoint.
    #[error("service {0} has no ready endpoints")]
    NoEndpoints(String),
}

impl ResolveError {
    /// The refusal sent back over the link.
    pub fn refusal(&self) -> RefusalReason {
        match self {
            ResolveError::UnknownTarget(_) => RefusalReason::UnknownTarget,
            ResolveError::NoEndpoints(_) => RefusalReason::NoEndpoints,
        }
    }
}

/// A boxed resolution, so resolvers can be held as `Arc<dyn Resolve>`.
pub type Resolution<'a> = Pin<Box<dyn Future<Output = Result<Endpoint, ResolveError>> + Send + 'a>>;

/// Picks a local endpoint for a target.
pub trait Resolve: Send + Sync + 'static {
    /// One endpoint for `target` (balancing is the resolver's business).
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a>;
}

/// A fixed table of `authority:port` → endpoint.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    table: HashMap<(Authority, u16), Endpoint>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the endpoint for `authority:port`.
    pub fn insert(&mut self, authority: Authority, port: u16, endpoint: Endpoint) -> &mut Self {
        self.table.insert((authority, port), endpoint);
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a> {
        let found = self
            .table
            .get(&(target.authority.clone(), target.port))
            .cloned()
            .ok_or_else(|| ResolveError::UnknownTarget(target.to_string()));
        Box::pin(std::future::ready(found))
    }
}
