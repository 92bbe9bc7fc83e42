//! The two scenarios of the issue, each bounded in count and in time.
//!
//! **Latency** ("changes reach every open watch within 100 ms p99 with 1000 open
//! watches"): load a cluster, open the watches, wait until every stream holds its
//! service's endpoints, then apply rounds of changes one at a time. Each round replaces one
//! endpoint (a new Pod and the updated EndpointSlice, one batch) of one service, of every
//! service of a namespace, or of every service; the clock starts just before the batch is
//! sent, and each stream of a changed service delivers when it reads the `Add` of the new
//! address. The next round starts when every delivery arrived or the round's deadline
//! passed (what did not arrive is counted missed).
//!
//! **Memory** ("5000 services × 10 endpoints with 2000 open watches stays under 200 MiB"):
//! measure the controller idle with an empty store, load the cluster, open the watches,
//! wait until every one holds its 10 endpoints, and measure again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::BenchError;
use super::fixture::Fixture;
use super::stats::Summary;
use super::target::{ControlPlane, Memory};
use super::watches::{Seen, Watches};

/// Services per batch when loading (a batch is well under the API's 16 MiB body limit).
const LOAD_BATCH_SERVICES: usize = 100;

/// What the latency scenario does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyConfig {
    /// Namespaces the services spread over.
    pub namespaces: usize,
    /// Services.
    pub services: usize,
    /// Endpoints per service.
    pub endpoints: usize,
    /// Open `Get` streams, spread round-robin over the services.
    pub watches: usize,
    /// Streams per HTTP/2 connection.
    pub per_connection: usize,
    /// Rounds of changes.
    pub rounds: usize,
    /// How long one round may wait for its deliveries.
    pub round_timeout: Duration,
    /// How long the streams may take to answer with the loaded endpoints.
    pub settle_timeout: Duration,
}

impl LatencyConfig {
    /// The issue's size: 1000 watches over 100 services in 4 namespaces, 200 rounds.
    pub fn issue() -> Self {
        Self {
            namespaces: 4,
            services: 100,
            endpoints: 10,
            watches: 1000,
            per_connection: 10,
            rounds: 200,
            round_timeout: Duration::from_secs(5),
            settle_timeout: Duration::from_secs(120),
        }
    }
}

/// Which services a round changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// One service.
    Service,
    /// Every service of one namespace.
    Namespace,
    /// Every service.
    All,
}

impl Scope {
    /// Its name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Service => "one service",
            Self::Namespace => "one namespace",
            Self::All => "every service",
        }
    }
}

/// Round `r`'s scope and services: every 50th round changes every service, every 10th
/// round a whole namespace (in turn), the others one service (spread by a stride).
pub fn round_plan(r: usize, fixture: &Fixture) -> (Scope, Vec<usize>) {
    if r % 50 == 49 {
        (Scope::All, (0..fixture.services()).collect())
    } else if r % 10 == 9 {
        let n = (r / 10) % fixture.namespaces();
        (Scope::Namespace, fixture.services_in(n).collect())
    } else {
        (Scope::Service, vec![(r * 37) % fixture.services()])
    }
}

/// What the latency scenario measured.
#[derive(Clone, Debug)]
pub struct LatencyResult {
    /// Its configuration.
    pub config: LatencyConfig,
    /// Time to load the cluster.
    pub load: Duration,
    /// Time from opening the streams to every stream holding its endpoints.
    pub first_answers: Duration,
    /// Delays per scope, with the number of rounds of that scope.
    pub by_scope: Vec<(Scope, usize, Summary)>,
    /// Every delivery's delay.
    pub all: Summary,
    /// How long each apply took to be acknowledged.
    pub apply_ack: Summary,
    /// Deliveries the rounds called for.
    pub expected: usize,
    /// Deliveries that did not arrive within their round's deadline.
    pub missed: usize,
    /// Deliveries whose new address came without a TLS identity: the controller knew the
    /// slice before the new Pod (they were applied in one batch), so for a moment the
    /// proxy would see a meshed endpoint as unmeshed.
    pub without_identity: usize,
    /// Updates that re-sent addresses the stream already had (new metadata, such as the
    /// identity arriving after a delivery without one).
    pub resent: usize,
    /// Any other update: on a stream the round did not change, or one that does not fit.
    pub unexpected: usize,
    /// Streams whose endpoints differ from the fixture's at the end.
    pub diverged: usize,
    /// The controller's memory at the end (child process only).
    pub memory: Option<Memory>,
}

/// Runs the latency scenario against `cp`.
pub async fn latency(cp: &ControlPlane, config: LatencyConfig) -> Result<LatencyResult, BenchError> {
    let mut fixture = Fixture::new(config.namespaces, config.services, config.endpoints);
    let started = Instant::now();
    load(cp, &fixture).await?;
    let load_time = started.elapsed();

    let service_of: Vec<usize> = (0..config.watches).map(|i| i % config.services).collect();
    let mut streams_of: Vec<Vec<usize>> = vec![Vec::new(); config.services];
    for (i, s) in service_of.iter().enumerate() {
        streams_of[*s].push(i);
    }
    let opened = Instant::now();
    let mut watches = Watches::open(
        cp.destination(),
        service_of.iter().map(|s| fixture.authority(*s)).collect(),
        config.per_connection,
    )
    .await?;
    let mut views = vec![BTreeSet::new(); watches.len()];
    let want: Vec<BTreeSet<IpAddr>> = service_of.iter().map(|s| addresses(&fixture, *s)).collect();
    settle(&mut watches, &want, &mut views, config.settle_timeout).await?;
    let first_answers = opened.elapsed();

    let mut delays: HashMap<Scope, Vec<Duration>> = HashMap::new();
    let mut rounds_of: HashMap<Scope, usize> = HashMap::new();
    let mut acks = Vec::with_capacity(config.rounds);
    let (mut expected, mut missed, mut without_identity) = (0, 0, 0);
    let (mut resent, mut unexpected) = (0, 0);
    for r in 0..config.rounds {
        let (scope, services) = round_plan(r, &fixture);
        *rounds_of.entry(scope).or_default() += 1;
        let mut batch = Vec::new();
        // Stream → the address whose `Add` is its delivery.
        let mut awaited: HashMap<usize, IpAddr> = HashMap::new();
        for s in services {
            let (objects, replaced) = fixture.replace_endpoint(s, r);
            batch.extend(objects);
            for stream in &streams_of[s] {
                awaited.insert(*stream, IpAddr::V4(replaced.new));
            }
        }
        expected += awaited.len();

        let t0 = Instant::now();
        cp.apply(batch).await?;
        acks.push(t0.elapsed());
        let deadline = tokio::time::Instant::from_std(t0 + config.round_timeout);
        while !awaited.is_empty() {
            let Some(seen) = watches.next(deadline).await else {
                break;
            };
            let (stream, at, change) = match seen {
                Seen::Update { stream, at, change } => (stream, at, change),
                Seen::Ended { stream, detail } => {
                    return Err(BenchError::StreamEnded {
                        stream,
                        path: watches.path(stream).to_string(),
                        detail,
                    });
                }
            };
            let known = !change.added.is_empty()
                && change.removed.is_empty()
                && change.added.iter().all(|a| views[stream].contains(a));
            change.apply_to(&mut views[stream]);
            match awaited.get(&stream) {
                Some(ip) if change.added.contains(ip) => {
                    delays
                        .entry(scope)
                        .or_default()
                        .push(at.saturating_duration_since(t0));
                    without_identity += usize::from(change.unidentified.contains(ip));
                    awaited.remove(&stream);
                }
                // The old address's `Remove` precedes the `Add` of the new one.
                Some(_) if change.added.is_empty() && !change.removed.is_empty() => {}
                _ if known => resent += 1,
                _ => unexpected += 1,
            }
        }
        missed += awaited.len();
    }
    // Whatever is still queued was sent before we stop looking.
    let now = tokio::time::Instant::now();
    while let Some(seen) = watches.next(now).await {
        if let Seen::Update { stream, change, .. } = seen {
            let known = change.removed.is_empty() && change.added.iter().all(|a| views[stream].contains(a));
            change.apply_to(&mut views[stream]);
            if known {
                resent += 1;
            } else {
                unexpected += 1;
            }
        }
    }
    let diverged = views
        .iter()
        .zip(&service_of)
        .filter(|(v, s)| **v != addresses(&fixture, **s))
        .count();

    let mut by_scope: Vec<(Scope, usize, Summary)> = delays
        .iter()
        .map(|(scope, d)| (*scope, rounds_of[scope], Summary::of(d)))
        .collect();
    by_scope.sort_by_key(|(s, _, _)| *s);
    let every: Vec<Duration> = delays.into_values().flatten().collect();
    let memory = cp.memory()?;
    drop(watches);
    Ok(LatencyResult {
        config,
        load: load_time,
        first_answers,
        by_scope,
        all: Summary::of(&every),
        apply_ack: Summary::of(&acks),
        expected,
        missed,
        without_identity,
        resent,
        unexpected,
        diverged,
        memory,
    })
}

/// What the memory scenario does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Namespaces the services spread over.
    pub namespaces: usize,
    /// Services.
    pub services: usize,
    /// Endpoints (pods) per service.
    pub endpoints: usize,
    /// Open `Get` streams, each on a different service when there are enough.
    pub watches: usize,
    /// Streams per HTTP/2 connection.
    pub per_connection: usize,
    /// How long the streams may take to answer.
    pub settle_timeout: Duration,
}

impl MemoryConfig {
    /// The issue's size: 5000 services × 10 endpoints in 50 namespaces, 2000 watches.
    pub fn issue() -> Self {
        Self {
            namespaces: 50,
            services: 5000,
            endpoints: 10,
            watches: 2000,
            per_connection: 10,
            settle_timeout: Duration::from_secs(300),
        }
    }
}

/// What the memory scenario measured.
#[derive(Clone, Debug)]
pub struct MemoryResult {
    /// Its configuration.
    pub config: MemoryConfig,
    /// The controller idle, empty store, before anything was loaded.
    pub idle: Option<Memory>,
    /// After the load, before any stream.
    pub loaded: Option<Memory>,
    /// With every stream open and answered (`hwm_kib`: the peak of the whole run).
    pub watching: Option<Memory>,
    /// Time to load the cluster through the controller.
    pub load: Duration,
    /// Time from opening the streams to every stream holding its endpoints.
    pub first_answers: Duration,
    /// Streams that answered with all their endpoints.
    pub answered: usize,
}

/// Runs the memory scenario against a fresh controller `cp`.
pub async fn memory(cp: &ControlPlane, config: MemoryConfig) -> Result<MemoryResult, BenchError> {
    let fixture = Fixture::new(config.namespaces, config.services, config.endpoints);
    let idle = cp.memory()?;
    let started = Instant::now();
    load(cp, &fixture).await?;
    let load_time = started.elapsed();
    // The index follows the store asynchronously: one stream on the last service loaded
    // answering in full shows it has caught up before the "loaded" figure is taken.
    let last = config.services - 1;
    {
        let mut probe = Watches::open(cp.destination(), vec![fixture.authority(last)], 1).await?;
        let mut view = vec![BTreeSet::new()];
        settle(
            &mut probe,
            &[addresses(&fixture, last)],
            &mut view,
            config.settle_timeout,
        )
        .await?;
    }
    let loaded = cp.memory()?;

    let service_of: Vec<usize> = (0..config.watches)
        .map(|i| i * config.services / config.watches.max(1) % config.services)
        .collect();
    let opened = Instant::now();
    let mut watches = Watches::open(
        cp.destination(),
        service_of.iter().map(|s| fixture.authority(*s)).collect(),
        config.per_connection,
    )
    .await?;
    let want: Vec<BTreeSet<IpAddr>> = service_of.iter().map(|s| addresses(&fixture, *s)).collect();
    let mut views = vec![BTreeSet::new(); watches.len()];
    settle(&mut watches, &want, &mut views, config.settle_timeout).await?;
    let first_answers = opened.elapsed();
    let answered = views.iter().zip(&want).filter(|(v, w)| v == w).count();
    let watching = cp.memory()?;
    drop(watches);
    Ok(MemoryResult {
        config,
        idle,
        loaded,
        watching,
        load: load_time,
        first_answers,
        answered,
    })
}

/// Applies the fixture: namespaces, then services with their pods and slices in batches.
async fn load(cp: &ControlPlane, fixture: &Fixture) -> Result<(), BenchError> {
    cp.apply(fixture.namespace_objects()).await?;
    let mut s = 0;
    while s < fixture.services() {
        let end = (s + LOAD_BATCH_SERVICES).min(fixture.services());
        cp.apply(fixture.service_objects(s..end)).await?;
        s = end;
    }
    Ok(())
}

fn addresses(fixture: &Fixture, s: usize) -> BTreeSet<IpAddr> {
    fixture.endpoints(s).iter().map(|e| IpAddr::V4(e.ip)).collect()
}

/// Reads updates until every stream's view equals `want`, or fails at the deadline.
async fn settle(
    watches: &mut Watches,
    want: &[BTreeSet<IpAddr>],
    views: &mut [BTreeSet<IpAddr>],
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: HashSet<usize> = (0..views.len()).filter(|i| views[*i] != want[*i]).collect();
    while !pending.is_empty() {
        let Some(seen) = watches.next(deadline).await else {
            return Err(BenchError::Timeout {
                what: format!(
                    "{} of {} streams to answer with their endpoints",
                    pending.len(),
                    views.len()
                ),
                after: timeout,
            });
        };
        match seen {
            Seen::Update { stream, change, .. } => {
                change.apply_to(&mut views[stream]);
                if views[stream] == want[stream] {
                    pending.remove(&stream);
                } else {
                    pending.insert(stream);
                }
            }
            Seen::Ended { stream, detail } => {
                return Err(BenchError::StreamEnded {
                    stream,
                    path: watches.path(stream).to_string(),
                    detail,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_mix_one_service_a_namespace_and_everything() {
        let f = Fixture::new(4, 100, 10);
        let plans: Vec<(Scope, Vec<usize>)> = (0..200).map(|r| round_plan(r, &f)).collect();
        let count = |scope| plans.iter().filter(|(s, _)| *s == scope).count();
        assert_eq!(
            (count(Scope::Service), count(Scope::Namespace), count(Scope::All)),
            (180, 16, 4)
        );
        assert_eq!(plans[9], (Scope::Namespace, f.services_in(0).collect()));
        assert_eq!(plans[19].1.len(), 25);
        assert_eq!(plans[49].1.len(), 100);
        let singles: BTreeSet<usize> = plans
            .iter()
            .filter(|(s, _)| *s == Scope::Service)
            .map(|(_, v)| v[0])
            .collect();
        assert!(
            singles.len() >= 90,
            "single-service rounds spread: {}",
            singles.len()
        );
    }
}
