//! Outbound policies (`io.linkerd.proxy.outbound.OutboundPolicies`): for each `IP:port` or
//! `service authority` a proxy connects to, the protocol to expect and the routes, backends,
//! retries, timeouts and circuit breaking to apply. `Get` answers once; `Watch` answers and
//! then follows the store, sending a new policy whenever it changes.
//!
//! Layout: [`annotations`] reads Linkerd's retry/timeout/failure-accrual annotations,
//! [`translate`] is the pure translation of store objects into the proxy's policy,
//! [`index`] holds the objects (fed by store watches, with per-namespace generations), and
//! this module serves them.
//!
//! Supported, as Linkerd's policy controller does it:
//! - targets: a Service's ClusterIP (`TrafficSpec.addr`, looked up in the discovery index)
//!   or `<svc>.<ns>.svc.<cluster-domain>:<port>`; anything else (a pod IP, an unknown
//!   address, a name that is not a service, a Service that does not exist) is `NotFound`,
//!   which tells the proxy to forward to the original destination;
//! - protocol: `Opaque` when the port is in `config.linkerd.io/opaque-ports` (or in
//!   the cluster's default opaque ports when the annotation is absent), `Grpc` when GRPCRoutes
//!   attach, otherwise `Detect` (10 s) with HTTP/1 and HTTP/2 routes and an opaque fallback;
//! - routes: `policy.linkerd.io` HTTPRoutes (every version), Gateway API HTTPRoutes and
//!   GRPCRoutes whose `parentRefs` name the Service (kind `Service`, group `core` or empty,
//!   same namespace, any port or this one), ordered oldest first then by name; their
//!   matches, hostnames, `RequestHeaderModifier` / `ResponseHeaderModifier` /
//!   `RequestRedirect` filters, weighted `backendRefs` (balancers discovered by
//!   `name.ns.svc.domain:port`), `timeouts.request` (route timeout) and
//!   `timeouts.backendRequest` (response and per-try timeout); with no route, the default route to the
//!   Service, or to the backends of its TrafficSplit with their milli-weights;
//! - annotations: `retry.linkerd.io/{http,grpc,limit,timeout}` and
//!   `timeout.linkerd.io/{request,response,idle}` on the route (its rules) or the Service
//!   (routes that set none), and `balancer.linkerd.io/failure-accrual*` on the Service;
//! - a backend Service that does not exist, or an unsupported backend, becomes a backend
//!   that fails requests (500 / gRPC UNAVAILABLE) rather than a dropped route.
//!
//! Not supported (differences from Linkerd): routes in a client's namespace that attach to
//! a Service elsewhere (consumer routes; `source_workload` is ignored), route `status`
//! (Linkerd only serves routes its status controller accepted; here every route that
//! attaches applies), `sectionName`, Service `appProtocol` (HTTP/1-only, HTTP/2-only),
//! EgressNetworks and the egress fallback, TLS and TCP routes, `RequestMirror`,
//! `URLRewrite` and `ExtensionRef` filters (their route is ignored, as in Linkerd),
//! regular-expression gRPC method matches (route ignored), response header edits on gRPC
//! routes (filter ignored), the `PenaltyPeakEwma` balancer and unified failure accrual, and
//! Linkerd's "undefined port" answer for a port the Service does not declare (the policy
//! is served as for any port, and discovery finds no endpoints on it).
//! `timeouts.backendRequest` bounds each request to a backend and restarts with every retry
//! (GEP-1742, Linkerd's HTTPRoute timeout docs): it becomes the rule's response timeout and
//! the per-try timeout of a retry that sets none (current Linkerd drops it; 2.14 put it in
//! the backend's deprecated request timeout, which proxies ignore). `l5d-retry-*` /
//! `l5d-timeout` / `l5d-response-timeout` headers set by a rule's own RequestHeaderModifier
//! (the seed's 06) become that rule's retry and timeouts, overriding annotations as the
//! headers would, without turning on `allow_l5d_request_headers` for clients.
//!
//! Deliberate differences: TrafficSplits (which Linkerd serves only through the destination
//! API's profiles) weight the default HTTP route and the opaque route; Gateway API
//! HTTPRoutes' `timeouts` are read like Linkerd HTTPRoutes' (Linkerd reads only the
//! latter's); a Linkerd HTTPRoute's `ResponseHeaderModifier` edits responses (Linkerd sends
//! it as a request edit); [`Settings::allow_l5d_request_headers`] applies to the default
//! route too; and a zero timeout annotation means "no timeout", as in the Gateway API.

pub mod annotations;
pub mod index;
pub mod translate;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use linkerd2_proxy_api::outbound::{self as pb, traffic_spec::Target};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

pub use index::{RouteIndex, run};
pub use translate::{Evaluation, Settings, Snapshot, Warning, outbound_policy};

use crate::discovery::destination::{Target as Authority, parse_authority};
use crate::discovery::index::{Index, IpTarget};
use crate::discovery::model::NsName;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The OutboundPolicies service.
#[derive(Clone)]
pub struct OutboundPolicyService {
    discovery: Arc<Index>,
    routes: Arc<RouteIndex>,
    settings: Arc<Settings>,
}

impl OutboundPolicyService {
    /// Waits until both indexes hold the store's state (a cluster IP or a Service would be
    /// unknown before).
    async fn synced(&self) {
        self.discovery.synced.wait().await;
        self.routes.synced.wait().await;
    }

    /// A service resolving addresses with `discovery` and answering from `routes`, with
    /// Linkerd's default settings and the discovery index's cluster domain and default
    /// opaque ports.
    pub fn new(discovery: Arc<Index>, routes: Arc<RouteIndex>) -> Self {
        let settings = Settings {
            cluster_domain: discovery.names().cluster_domain.clone(),
            default_opaque_ports: discovery.names().default_opaque_ports.clone(),
            ..Settings::default()
        };
        Self {
            discovery,
            routes,
            settings: Arc::new(settings),
        }
    }

    /// The same service with other settings.
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::outbound_policies_server::OutboundPoliciesServer<Self> {
        pb::outbound_policies_server::OutboundPoliciesServer::new(self)
    }

    /// The Service port a request is about.
    fn target(&self, spec: &pb::TrafficSpec) -> Result<(NsName, u16), Status> {
        let not_found =
            |what: String| Status::not_found(format!("{what}: no outbound policy; forward to it"));
        match spec.target.as_ref() {
            None => Err(Status::invalid_argument("the traffic spec has no target")),
            Some(Target::Addr(addr)) => {
                let ip = addr
                    .ip
                    .ok_or_else(|| Status::invalid_argument("the target address has no IP"))?;
                let ip = IpAddr::try_from(ip)
                    .map_err(|e| Status::invalid_argument(format!("the target IP does not read: {e}")))?;
                let port = u16::try_from(addr.port)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| Status::invalid_argument(format!("port {} is not 1-65535", addr.port)))?;
                match self.discovery.lookup_ip(ip) {
                    Some(IpTarget::Service(id)) => Ok((id, port)),
                    Some(IpTarget::Pod(_)) => Err(not_found(format!("{ip}:{port} is a pod, not a Service"))),
                    None => Err(not_found(format!("{ip}:{port} is not a Service's ClusterIP"))),
                }
            }
            Some(Target::Authority(authority)) => {
                match parse_authority(authority, &self.settings.cluster_domain) {
                    Ok(Authority::Service { id, port }) if port != 0 => Ok((id, port)),
                    Ok(Authority::Ip(addr)) => match self.discovery.lookup_ip(addr.ip()) {
                        Some(IpTarget::Service(id)) if addr.port() != 0 => Ok((id, addr.port())),
                        _ => Err(not_found(format!("{addr} is not a Service's ClusterIP"))),
                    },
                    Ok(_) => Err(not_found(format!("{authority:?} has no port"))),
                    Err(e) => Err(not_found(e)),
                }
            }
        }
    }

    fn evaluate(&self, id: &NsName, port: u16) -> Evaluation {
        self.routes
            .read(|snap| outbound_policy(snap, id, port, &self.settings))
    }
}

fn log_warnings(id: &NsName, port: u16, warnings: &[Warning]) {
    for w in warnings {
        tracing::warn!(service = %format!("{}/{}:{port}", id.0, id.1), "{w}");
    }
}

/// The state of one `Watch` stream.
struct Follow {
    routes: Arc<RouteIndex>,
    settings: Arc<Settings>,
    id: NsName,
    port: u16,
    /// One receiver per namespace the last evaluation read.
    generations: BTreeMap<String, watch::Receiver<u64>>,
    /// What the proxy has last been sent.
    last: pb::OutboundPolicy,
    /// The first answer, not yet sent.
    first: Option<pb::OutboundPolicy>,
}

impl Follow {
    /// Waits for a change in a followed namespace; `false` if the index went away.
    async fn changed(&mut self) -> bool {
        if self.generations.is_empty() {
            // Never the case (the Service's own namespace is always followed); `select_all`
            // would panic on nothing to wait for.
            return std::future::pending().await;
        }
        let waits = self.generations.values_mut().map(|rx| Box::pin(rx.changed()));
        let (result, _, _) = futures::future::select_all(waits).await;
        result.is_ok()
    }

    /// Follows exactly the namespaces `namespaces`; returns whether any is new (and so may
    /// have changed between the evaluation and the subscription).
    fn follow(&mut self, namespaces: &std::collections::BTreeSet<String>) -> bool {
        self.generations.retain(|ns, _| namespaces.contains(ns));
        let mut added = false;
        for ns in namespaces {
            if !self.generations.contains_key(ns) {
                self.generations.insert(ns.clone(), self.routes.subscribe(ns));
                added = true;
            }
        }
        added
    }

    fn into_stream(self) -> BoxStream<pb::OutboundPolicy> {
        Box::pin(futures::stream::unfold(self, |mut st| async move {
            if let Some(first) = st.first.take() {
                return Some((Ok(first), st));
            }
            let mut wait = true;
            loop {
                if wait && !st.changed().await {
                    return None;
                }
                let ev = st
                    .routes
                    .read(|snap| outbound_policy(snap, &st.id, st.port, &st.settings));
                // Subscribed after evaluating: look again before waiting.
                wait = !st.follow(&ev.namespaces);
                // A Service that is gone keeps its last policy: the proxy holds on to it,
                // and a Service that comes back sends its new one.
                if let Some(policy) = ev.policy
                    && policy != st.last
                {
                    log_warnings(&st.id, st.port, &ev.warnings);
                    st.last = policy.clone();
                    return Some((Ok(policy), st));
                }
            }
        }))
    }
}

#[tonic::async_trait]
impl pb::outbound_policies_server::OutboundPolicies for OutboundPolicyService {
    type WatchStream = BoxStream<pb::OutboundPolicy>;

    async fn get(&self, request: Request<pb::TrafficSpec>) -> Result<Response<pb::OutboundPolicy>, Status> {
        // A malformed request is refused at once; a lookup waits for the indexes.
        if let Err(e) = self.target(request.get_ref())
            && e.code() == tonic::Code::InvalidArgument
        {
            return Err(e);
        }
        self.synced().await;
        let (id, port) = self.target(request.get_ref())?;
        let ev = self.evaluate(&id, port);
        let policy = ev
            .policy
            .ok_or_else(|| Status::not_found(format!("Service {}/{} not found", id.0, id.1)))?;
        log_warnings(&id, port, &ev.warnings);
        Ok(Response::new(policy))
    }

    async fn watch(&self, request: Request<pb::TrafficSpec>) -> Result<Response<Self::WatchStream>, Status> {
        // A malformed request is refused at once; a lookup waits for the indexes.
        if let Err(e) = self.target(request.get_ref())
            && e.code() == tonic::Code::InvalidArgument
        {
            return Err(e);
        }
        self.synced().await;
        let (id, port) = self.target(request.get_ref())?;
        let mut follow = Follow {
            routes: self.routes.clone(),
            settings: self.settings.clone(),
            id,
            port,
            generations: BTreeMap::new(),
            last: pb::OutboundPolicy::default(),
            first: None,
        };
        // Subscribe before the first evaluation, so no change can fall in between.
        follow.follow(&[follow.id.0.clone()].into());
        let ev = loop {
            let ev = self.evaluate(&follow.id, port);
            if !follow.follow(&ev.namespaces) {
                break ev;
            }
        };
        let policy = ev
            .policy
            .ok_or_else(|| Status::not_found(format!("Service {}/{} not found", follow.id.0, follow.id.1)))?;
        log_warnings(&follow.id, port, &ev.warnings);
        follow.last = policy.clone();
        follow.first = Some(policy);
        Ok(Response::new(follow.into_stream()))
    }
}

#[cfg(test)]
mod tests;
