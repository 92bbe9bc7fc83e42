//! The inbound [`Authorize`] fed by `InboundServerPolicies/WatchPort`: each port's policy
//! is followed live, so a change applies to the next connection or request. Decisions
//! are counted (`inbound_{http,tcp}_authz_{allow,deny}_total`, Linkerd's names) and each
//! denial is logged once per client, port and deciding policy (with the client identity).

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;

use super::client::{Known, PolicyClient};
use super::inbound::{Client, Defaults, HttpDecision, ServerPolicy, decide, decide_http};
use crate::inbound::{Authorize, Denied, InboundConn, RequestDenied};
use crate::metrics::{Registry, labels};

/// How long a first connection to a port waits for its policy.
pub const POLICY_WAIT: Duration = Duration::from_secs(3);

/// Most distinct denials remembered for logging once.
const LOGGED_MAX: usize = 4096;

/// Authorization from the policy controller, with a default for ports it has no policy for.
pub struct PolicyAuthorizer {
    client: PolicyClient,
    defaults: Defaults,
    metrics: Arc<Registry>,
    logged: Mutex<HashSet<String>>,
}

impl PolicyAuthorizer {
    /// Authorizes with `client`'s policies; `defaults` apply where there is none.
    pub fn new(client: PolicyClient, defaults: Defaults, metrics: Arc<Registry>) -> Self {
        Self {
            client,
            defaults,
            metrics,
            logged: Mutex::new(HashSet::new()),
        }
    }

    fn policy(&self, port: u16) -> Arc<ServerPolicy> {
        match self.client.inbound(port).current() {
            Known::Some(p) => p,
            // Unanswered after the wait, or no policy: the default.
            Known::Pending | Known::None => self.defaults.for_port(port).clone(),
        }
    }

    fn log_once(&self, conn: &InboundConn, client: &str, server: &str, route: Option<&str>) {
        let key = format!(
            "{client}|{}|{}|{server}|{}",
            conn.peer.ip(),
            conn.target.port(),
            route.unwrap_or("")
        );
        let first = {
            let mut l = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
            if l.len() >= LOGGED_MAX {
                l.clear();
            }
            l.insert(key)
        };
        if first {
            tracing::info!(
                client.id = %client,
                client.addr = %conn.peer,
                target = %conn.target,
                server = %server,
                route = route.unwrap_or("-"),
                "unauthorized: no authorization admits this client (logged once per client and policy)"
            );
        }
    }

    fn count(&self, name: &'static str, help: &'static str, pairs: &[(&str, &str)]) {
        self.metrics
            .counter(name, help, labels(pairs))
            .fetch_add(1, Relaxed);
    }
}

/// The last allowing decision of a connection and its counter (see [`AllowMemo`]).
struct Allowed {
    /// Held so that the pointers compared stay this policy's.
    policy: Arc<ServerPolicy>,
    route: Arc<str>,
    authz: Arc<str>,
    counter: Arc<std::sync::atomic::AtomicU64>,
}

impl Allowed {
    fn is(&self, policy: &Arc<ServerPolicy>, route: &Arc<str>, authz: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.policy, policy)
            && Arc::ptr_eq(&self.route, route)
            && Arc::ptr_eq(&self.authz, authz)
    }
}

/// A connection's memo of its last allowing decision's counter, so that a request is
/// counted without building its label set. A policy update is a new [`ServerPolicy`],
/// so the memo misses and the counter is looked up again.
#[derive(Default)]
pub struct AllowMemo(Mutex<Option<Allowed>>);

/// A memo is a cache: a copy starts empty, and it is not part of a connection's identity.
impl Clone for AllowMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for AllowMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AllowMemo")
    }
}

impl PartialEq for AllowMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for AllowMemo {}

fn client_name(conn: &InboundConn) -> String {
    match &conn.client_id {
        Some(id) => id.to_string(),
        None if conn.tls => "tls-without-identity".into(),
        None => "unauthenticated".into(),
    }
}

fn split(name: &str) -> (&str, &str) {
    name.split_once(' ').unwrap_or(("", name))
}

impl Authorize for PolicyAuthorizer {
    fn ready(&self, port: u16) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let w = self.client.inbound(port);
        Box::pin(async move {
            let _ = w.ready(POLICY_WAIT).await;
        })
    }

    fn authorize(&self, conn: &InboundConn) -> Result<(), Denied> {
        let p = self.policy(conn.target.port());
        let id = conn.client_id.as_ref().map(|i| i.to_string());
        let client = Client {
            ip: conn.peer.ip(),
            identity: id.as_deref(),
        };
        let target = conn.target.to_string();
        let (srv_kind, srv_name) = split(&p.name);
        match decide(&p.authorizations, client) {
            Some(a) => {
                let (authz_kind, authz_name) = split(&a.name);
                self.count(
                    "inbound_tcp_authz_allow_total",
                    "Connections authorized by an inbound policy.",
                    &[
                        ("target_addr", &target),
                        ("srv_kind", srv_kind),
                        ("srv_name", srv_name),
                        ("authz_kind", authz_kind),
                        ("authz_name", authz_name),
                    ],
                );
                Ok(())
            }
            None => {
                self.count(
                    "inbound_tcp_authz_deny_total",
                    "Connections refused by an inbound policy.",
                    &[
                        ("target_addr", &target),
                        ("srv_kind", srv_kind),
                        ("srv_name", srv_name),
                    ],
                );
                let c = client_name(conn);
                self.log_once(conn, &c, &p.name, None);
                Err(Denied {
                    client: c,
                    target: conn.target,
                    reason: format!("{} authorizes no such client", p.name),
                })
            }
        }
    }

    fn authorize_request(&self, conn: &InboundConn, req: &Request<Incoming>) -> Result<(), RequestDenied> {
        let p = self.policy(conn.target.port());
        let client = Client {
            ip: conn.peer.ip(),
            identity: conn.client_id.as_ref().map(|i| i.as_str()),
        };
        let target = || conn.target.to_string();
        let (srv_kind, srv_name) = split(&p.name);
        match decide_http(&p, client, req.method(), req.uri(), req.headers()) {
            HttpDecision::Allow { route, authz } => {
                // A connection's requests mostly take one route and authorization: their
                // counter is found once, not by its labels on every request.
                let mut memo = conn.memo.0.lock().unwrap_or_else(PoisonError::into_inner);
                match memo.as_ref() {
                    Some(m) if m.is(&p, &route, &authz) => m.counter.fetch_add(1, Relaxed),
                    _ => {
                        let (authz_kind, authz_name) = split(&authz);
                        let counter = self.metrics.counter(
                            "inbound_http_authz_allow_total",
                            "HTTP requests authorized by an inbound policy.",
                            labels(&[
                                ("target_addr", &target()),
                                ("srv_kind", srv_kind),
                                ("srv_name", srv_name),
                                ("route_name", split(&route).1),
                                ("authz_kind", authz_kind),
                                ("authz_name", authz_name),
                            ]),
                        );
                        let n = counter.fetch_add(1, Relaxed);
                        *memo = Some(Allowed {
                            policy: p.clone(),
                            route,
                            authz,
                            counter,
                        });
                        n
                    }
                };
                Ok(())
            }
            HttpDecision::Deny { route } => {
                self.count(
                    "inbound_http_authz_deny_total",
                    "HTTP requests refused by an inbound policy.",
                    &[
                        ("target_addr", &target()),
                        ("srv_kind", srv_kind),
                        ("srv_name", srv_name),
                        ("route_name", split(&route).1),
                    ],
                );
                let c = client_name(conn);
                self.log_once(conn, &c, &p.name, Some(&route));
                Err(RequestDenied {
                    status: http::StatusCode::FORBIDDEN,
                    denied: Denied {
                        client: c,
                        target: conn.target,
                        reason: format!("{} ({route}) authorizes no such client", p.name),
                    },
                })
            }
            HttpDecision::NoRoute => Err(RequestDenied {
                status: http::StatusCode::NOT_FOUND,
                denied: Denied {
                    client: client_name(conn),
                    target: conn.target,
                    reason: format!("no route of {} matches the request", p.name),
                },
            }),
        }
    }
}

/// Authorization by fixed policies (the default inbound policy without a controller, and
/// its authenticated form on the ports that require identity).
pub struct StaticAuthorizer {
    defaults: Defaults,
    metrics: Arc<Registry>,
}

impl StaticAuthorizer {
    /// Authorizes each port with its policy of `defaults`.
    pub fn new(defaults: Defaults, metrics: Arc<Registry>) -> Self {
        Self { defaults, metrics }
    }
}

impl StaticAuthorizer {
    /// The policy's decision on `conn`, counted as a `kind` (`tcp` or `http`) denial.
    fn decide(&self, conn: &InboundConn, kind: &str) -> Result<(), Denied> {
        let id = conn.client_id.as_ref().map(|i| i.to_string());
        let client = Client {
            ip: conn.peer.ip(),
            identity: id.as_deref(),
        };
        let policy = self.defaults.for_port(conn.target.port());
        if decide(&policy.authorizations, client).is_some() {
            return Ok(());
        }
        let (srv_kind, srv_name) = split(&policy.name);
        let (name, help) = if kind == "http" {
            (
                "inbound_http_authz_deny_total",
                "HTTP requests refused by an inbound policy.",
            )
        } else {
            (
                "inbound_tcp_authz_deny_total",
                "Connections refused by an inbound policy.",
            )
        };
        self.metrics
            .counter(
                name,
                help,
                labels(&[
                    ("target_addr", &conn.target.to_string()),
                    ("srv_kind", srv_kind),
                    ("srv_name", srv_name),
                ]),
            )
            .fetch_add(1, Relaxed);
        Err(Denied {
            client: client_name(conn),
            target: conn.target,
            reason: format!("{} authorizes no such client", policy.name),
        })
    }
}

impl Authorize for StaticAuthorizer {
    fn authorize(&self, conn: &InboundConn) -> Result<(), Denied> {
        self.decide(conn, "tcp")
    }

    fn authorize_request(&self, conn: &InboundConn, _req: &Request<Incoming>) -> Result<(), RequestDenied> {
        self.decide(conn, "http").map_err(|denied| RequestDenied {
            status: http::StatusCode::FORBIDDEN,
            denied,
        })
    }
}
