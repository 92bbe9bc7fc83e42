//! Issue #7's benchmark: what traffic policy costs the client-side proxy. One `strait
//! proxy` pair following outbound policy carries the same fixed-rate load in alternating
//! phases — no routes on `myapp` (the default route), then ten HTTPRoutes with retries —
//! and the client proxy's CPU-seconds per answered request of the two are compared. The
//! phases alternate for `rounds` rounds so that load from elsewhere on the machine falls
//! on both alike; each phase starts only once the proxy demonstrably follows the new
//! policy, and the backend checks that every request of a routes phase took the tenth
//! route (its filter sets [`ROUTE_HEADER`]) and none of a no-routes phase did.

use std::time::{Duration, Instant};

use super::load::FixedRate;
use super::mesh::{Backend, NAMESPACE, ROUTE_HEADER};
use super::process;
use super::run::{self, Context, Usage};
use super::{Error, strait};

/// The path every request of the scenario asks for (only the tenth route matches it).
pub const TRAFFIC_PATH: &str = "/bench/items/42";

/// The target: CPU per request with routes ≤ 1.10 × without.
pub const TARGET_RATIO: f64 = 1.10;

/// How long and how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySettings {
    /// Rounds of (no routes, ten routes).
    pub rounds: u32,
    /// Warm-up of each phase (after the policy changed), not measured.
    pub warmup: Duration,
    /// Measured duration of each phase.
    pub duration: Duration,
}

impl PolicySettings {
    /// Three rounds of two 20 s phases, each after 5 s of warm-up.
    pub fn issue() -> Self {
        Self {
            rounds: 3,
            warmup: Duration::from_secs(5),
            duration: Duration::from_secs(20),
        }
    }
}

/// One route: its name and the `matches` of its one rule (YAML flow style).
struct RouteSpec {
    name: &'static str,
    matches: &'static str,
}

/// Nine routes a service of this kind plausibly has, none matching [`TRAFFIC_PATH`] with
/// a plain GET, then the tenth, which does.
const ROUTES: [RouteSpec; 10] = [
    RouteSpec {
        name: "myapp-canary",
        matches: "[{headers: [{name: x-canary, value: \"true\"}]}]",
    },
    RouteSpec {
        name: "myapp-api-v2",
        matches: "[{path: {type: PathPrefix, value: /api/v2}}]",
    },
    RouteSpec {
        name: "myapp-users-write",
        matches: "[{path: {type: PathPrefix, value: /api/v1/users}, method: POST}, {path: {type: PathPrefix, value: /api/v1/users}, method: PUT}]",
    },
    RouteSpec {
        name: "myapp-health",
        matches: "[{path: {type: Exact, value: /healthz}}, {path: {type: Exact, value: /readyz}}]",
    },
    RouteSpec {
        name: "myapp-orders",
        matches: "[{path: {type: RegularExpression, value: \"/orders/[0-9]+(/items)?\"}}]",
    },
    RouteSpec {
        name: "myapp-tenant-blue",
        matches: "[{queryParams: [{name: tenant, value: blue}]}]",
    },
    RouteSpec {
        name: "myapp-team",
        matches: "[{headers: [{name: x-team, type: RegularExpression, value: \"team-[a-f]+\"}]}]",
    },
    RouteSpec {
        name: "myapp-static",
        matches: "[{path: {type: PathPrefix, value: /static}, method: GET}]",
    },
    RouteSpec {
        name: "myapp-admin",
        matches: "[{path: {type: PathPrefix, value: /admin}, headers: [{name: x-admin, value: \"yes\"}]}]",
    },
    RouteSpec {
        name: "myapp-bench",
        matches: "[{path: {type: PathPrefix, value: /bench}, method: GET}]",
    },
];

/// The ten routes' names.
pub fn route_names() -> Vec<String> {
    ROUTES.iter().map(|r| r.name.to_string()).collect()
}

/// The ten HTTPRoutes on `myapp`: each rule retries 5xx up to 3 times through the
/// seed's `l5d-retry-*` header filter (seed 06); the tenth also marks its requests with
/// [`ROUTE_HEADER`] for the backend to count.
pub fn routes_yaml() -> String {
    ROUTES
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mark = if i == ROUTES.len() - 1 {
                format!(
                    "\n                - {{name: {ROUTE_HEADER}, value: \"{}\"}}",
                    r.name
                )
            } else {
                String::new()
            };
            format!(
                "apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  parentRefs: [{{name: myapp, kind: Service, group: core, port: 80}}]
  rules:
    - matches: {matches}
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set:
                - {{name: l5d-retry-http, value: 5xx}}
                - {{name: l5d-retry-limit, value: \"3\"}}{mark}
      backendRefs: [{{name: myapp, port: 80}}]
",
                name = r.name,
                matches = r.matches,
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One measured phase.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Whether the ten routes were configured.
    pub routes: bool,
    /// The fixed-rate run.
    pub fixed: FixedRate,
    /// The client-side proxy, then the server-side proxy.
    pub usage: Vec<Usage>,
    /// Requests the backend answered in the phase (warm-up included).
    pub answered: u64,
    /// Of those, requests that carried the tenth route's header.
    pub routed: u64,
}

/// The scenario's figures.
#[derive(Clone, Debug)]
pub struct PolicyResult {
    /// How it ran.
    pub settings: PolicySettings,
    /// The fixed rate and connections.
    pub load: run::Settings,
    /// How the pair was configured.
    pub notes: String,
    /// Every phase, in order.
    pub phases: Vec<Phase>,
}

/// Totals over the phases of one kind: (client CPU-seconds, server CPU-seconds, answered
/// requests).
fn totals(phases: &[Phase], routes: bool) -> (f64, f64, u64) {
    phases
        .iter()
        .filter(|p| p.routes == routes)
        .fold((0.0, 0.0, 0), |(c, s, n), p| {
            (
                c + p.usage.first().map_or(0.0, |u| u.cpu_seconds),
                s + p.usage.get(1).map_or(0.0, |u| u.cpu_seconds),
                n + p.fixed.ok,
            )
        })
}

impl PolicyResult {
    /// Client-side proxy CPU per answered request, µs: (no routes, ten routes).
    pub fn client_us_per_request(&self) -> (f64, f64) {
        let per = |(c, _, n): (f64, f64, u64)| if n == 0 { 0.0 } else { c / n as f64 * 1e6 };
        (per(totals(&self.phases, false)), per(totals(&self.phases, true)))
    }

    /// Server-side proxy CPU per answered request, µs: (no routes, ten routes).
    pub fn server_us_per_request(&self) -> (f64, f64) {
        let per = |(_, s, n): (f64, f64, u64)| if n == 0 { 0.0 } else { s / n as f64 * 1e6 };
        (per(totals(&self.phases, false)), per(totals(&self.phases, true)))
    }

    /// Ten routes over none, client side.
    pub fn ratio(&self) -> f64 {
        let (none, ten) = self.client_us_per_request();
        if none > 0.0 { ten / none } else { f64::INFINITY }
    }

    /// Whether the target is met (and every request of every phase was answered).
    pub fn pass(&self) -> bool {
        self.phases.iter().all(|p| p.fixed.errors == 0 && p.fixed.ok > 0) && self.ratio() <= TARGET_RATIO
    }
}

/// Sends single requests until the backend sees one take (`routed`) or not take the
/// tenth route; bounded.
fn await_policy(entry: std::net::SocketAddr, backend: &Backend, routed: bool) -> Result<(), Error> {
    let within = Duration::from_secs(20);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let (r0, n0) = (backend.routed(), backend.requests());
        if process::http_ok(entry, TRAFFIC_PATH)
            && backend.requests() > n0
            && (backend.routed() > r0) == routed
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Accounting(format!(
        "the client proxy did not {} the ten routes within {within:?}",
        if routed { "follow" } else { "drop" }
    )))
}

/// Runs the scenario on path `n`.
pub fn run(ctx: &Context<'_>, n: u8, settings: PolicySettings) -> Result<PolicyResult, Error> {
    let mut pair = run::start_pair(ctx, n, "policy", strait::pair, true)?;
    let entry = pair.layout.client_proxy;
    let names = route_names();
    let mut phases = Vec::new();
    for round in 1..=settings.rounds {
        for routes in [false, true] {
            if routes {
                ctx.mesh.apply(&routes_yaml())?;
            } else {
                ctx.mesh.delete_routes(&names)?;
            }
            await_policy(entry, &pair.backend, routes)?;
            let label = format!(
                "policy round {round}/{}, {}",
                settings.rounds,
                if routes { "ten routes" } else { "no routes" }
            );
            let (r0, n0) = (pair.backend.routed(), pair.backend.requests());
            let (fixed, usage, generator_ok) = run::fixed_rate(
                ctx,
                &label,
                entry,
                TRAFFIC_PATH,
                settings.warmup,
                settings.duration,
                &mut pair.proxies,
            )?;
            let (routed, answered) = (pair.backend.routed() - r0, pair.backend.requests() - n0);
            if answered < generator_ok {
                return Err(Error::Accounting(format!(
                    "{label}: the load generator counted {generator_ok} successes, the backend answered {answered}"
                )));
            }
            let expected = if routes { answered } else { 0 };
            if routed != expected {
                return Err(Error::Accounting(format!(
                    "{label}: {routed} of {answered} requests took the tenth route; expected {expected}"
                )));
            }
            phases.push(Phase {
                routes,
                fixed,
                usage,
                answered,
                routed,
            });
        }
    }
    ctx.mesh.delete_routes(&names)?;
    let notes = pair.notes.clone();
    for proxy in pair.proxies {
        proxy.stop(Duration::from_secs(5));
    }
    Ok(PolicyResult {
        settings,
        load: ctx.settings,
        notes,
        phases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_routes_load_and_only_the_last_sets_the_header() {
        let yaml = routes_yaml();
        let objs = strait_api::loader::load_str("routes.yaml", &yaml, &Default::default())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(objs.len(), 10);
        assert_eq!(yaml.matches(ROUTE_HEADER).count(), 1);
        assert_eq!(yaml.matches("l5d-retry-http").count(), 10);
        assert_eq!(route_names().last().map(String::as_str), Some("myapp-bench"));
    }

    fn phase(routes: bool, client_cpu: f64, ok: u64) -> Phase {
        let usage = |cpu: f64| Usage {
            name: "p".into(),
            cpu_seconds: cpu,
            cpu_per_sec: 0.0,
            rss_avg_kib: 0,
            rss_max_kib: 0,
        };
        Phase {
            routes,
            fixed: FixedRate {
                ok,
                ..Default::default()
            },
            usage: vec![usage(client_cpu), usage(1.0)],
            answered: ok,
            routed: if routes { ok } else { 0 },
        }
    }

    #[test]
    fn the_ratio_is_of_totals_over_phases() {
        let r = PolicyResult {
            settings: PolicySettings::issue(),
            load: run::Settings::issue(),
            notes: String::new(),
            phases: vec![
                phase(false, 1.0, 10_000),
                phase(true, 1.15, 10_000),
                phase(false, 1.0, 10_000),
                phase(true, 1.0, 10_000),
            ],
        };
        let (none, ten) = r.client_us_per_request();
        assert!(
            (none - 100.0).abs() < 1e-9 && (ten - 107.5).abs() < 1e-9,
            "{none} {ten}"
        );
        assert!((r.ratio() - 1.075).abs() < 1e-9);
        assert!(r.pass());
        let mut worse = r.clone();
        worse.phases[1].usage[0].cpu_seconds = 1.25;
        assert!(!worse.pass());
    }
}
