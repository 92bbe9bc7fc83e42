//! Load balancing: power of two choices over peak-EWMA latency, weighted by in-flight
//! requests (the balancer Linkerd's proxies use).
//!
//! The endpoint list is rebuilt by a task that follows discovery and swapped in whole;
//! the request path takes a read lock for an `Arc` clone, draws two random indexes and
//! compares two loads computed from atomics.
//!
//! # Failover tiers
//! Endpoints come in tiers ([`crate::discovery::Endpoint::tier`]): a federated Service's
//! local endpoints are tier 0, its remote members (through the gateways) tier 1. Each
//! pick balances over the lowest tier that has a usable endpoint, so remote clusters
//! take traffic only while no local endpoint can. An endpoint is unusable while it is
//! *down*: the data path marks it so when connecting to it fails (refused, or a gateway
//! entry refusing because its link is down — the gateway's live link state) and the
//! request moves on to another endpoint before anything is sent
//! ([`Balanced::mark_down`]). A down endpoint comes back by itself after its hold
//! ([`DOWN_HOLD`]), when the next pick tries it, or at once when it connects again. When
//! every endpoint is down the pick ignores the marks rather than fail outright.
//!
//! # Gateway paths
//! The pods of one linked cluster reached through one gateway proxy entry
//! ([`crate::discovery::Endpoint::via`]) share that path: a path that fails as a whole
//! takes them all down ([`mark_down_via`]), and within a tier that mixes paths the pick
//! is two choices between paths, then between the chosen path's pods
//! (see `choose`), so a cluster competes as one, as its gateway does in
//! Linkerd's gateway mode.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::discovery::{Endpoint, Resolution, Watch};
use crate::stream_header::LinkName;

/// How fast old latency observations fade.
pub const DECAY: Duration = Duration::from_secs(10);
/// The cost assumed for an endpoint before its first response (Linkerd: 30 ms).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How long an endpoint that failed to connect stays out of picks.
pub const DOWN_HOLD: Duration = Duration::from_secs(1);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // A second in the past, so that "long ago" has room below any reading.
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    })
}

/// The next peak-EWMA cost (ns) after observing `rtt` at `elapsed` since the last
/// observation: a higher sample replaces the cost at once (the peak), a lower one is
/// blended in with weight decaying over [`DECAY`].
pub fn next_cost(cost_ns: f64, elapsed: Duration, rtt: Duration) -> f64 {
    let rtt = rtt.as_nanos() as f64;
    if rtt > cost_ns {
        return rtt;
    }
    let w = decay(elapsed);
    cost_ns * w + rtt * (1.0 - w)
}

/// The weight left to an observation `elapsed` old.
pub fn decay(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

/// Latency and load of one endpoint.
#[derive(Debug)]
pub struct PeakEwma {
    cost_ns: AtomicU64,
    stamp_ns: AtomicU64,
    pending: AtomicUsize,
    /// The last sign of progress: a response, or the moment it became busy.
    progress_ns: AtomicU64,
}

/// How long an endpoint with requests in flight and no answer takes to be *stalled* (see
/// [`PeakEwma::stalled`]).
pub const STALL_AFTER: Duration = Duration::from_millis(50);
/// A stalled endpoint is passed over when it has been silent this many times as long as
/// the freshest endpoint of its tier.
const STALL_RATIO: u64 = 3;

fn now_ns() -> u64 {
    Instant::now().duration_since(epoch()).as_nanos() as u64
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            cost_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp_ns: AtomicU64::new(now_ns()),
            pending: AtomicUsize::new(0),
            progress_ns: AtomicU64::new(0),
        }
    }
}

/// An in-flight request on an endpoint; finish it with [`InFlight::observe`].
pub struct InFlight<'a> {
    ewma: &'a PeakEwma,
    start: Instant,
}

impl InFlight<'_> {
    /// Records the response time.
    pub fn observe(self) {
        let now = Instant::now();
        let now_ns = now.duration_since(epoch()).as_nanos() as u64;
        let last = self.ewma.stamp_ns.swap(now_ns, Relaxed);
        self.ewma.progress_ns.store(now_ns, Relaxed);
        let elapsed = Duration::from_nanos(now_ns.saturating_sub(last));
        let cost = f64::from_bits(self.ewma.cost_ns.load(Relaxed));
        let next = next_cost(cost, elapsed, now - self.start);
        // Races between concurrent observations lose one sample at worst.
        self.ewma.cost_ns.store(next.to_bits(), Relaxed);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.ewma.pending.fetch_sub(1, Relaxed);
    }
}

impl PeakEwma {
    /// Starts a request.
    pub fn start(&self) -> InFlight<'_> {
        if self.pending.fetch_add(1, Relaxed) == 0 {
            self.progress_ns.store(now_ns(), Relaxed);
        }
        InFlight {
            ewma: self,
            start: Instant::now(),
        }
    }

    /// Whether requests are in flight and nothing answered for [`STALL_AFTER`]: a peer
    /// that died without closing (a killed gateway on the path) looks like this long
    /// before anything times out. A fixed time, not a multiple of the latency: the peak
    /// EWMA keeps a latency spike for seconds, which would hold a dead path open as long.
    /// Endpoints whose answers take longer look stalled too; the balancer only prefers
    /// others of the same tier then, much as P2C prefers the less loaded.
    pub fn stalled(&self, now_ns: u64) -> bool {
        self.silence_ns(now_ns) > STALL_AFTER.as_nanos() as u64
    }

    /// How long it has had requests in flight without an answer (0 when idle).
    fn silence_ns(&self, now_ns: u64) -> u64 {
        if self.pending.load(Relaxed) == 0 {
            return 0;
        }
        now_ns.saturating_sub(self.progress_ns.load(Relaxed))
    }

    /// The load: cost × (in-flight + 1), the cost decaying toward zero while the endpoint
    /// is not observed, so an idle endpoint becomes attractive again (as in tower's
    /// peak-EWMA, which Linkerd's proxies use).
    pub fn load(&self) -> f64 {
        let idle = Duration::from_nanos(now_ns().saturating_sub(self.stamp_ns.load(Relaxed)));
        let cost = f64::from_bits(self.cost_ns.load(Relaxed)) * decay(idle);
        cost * (self.pending.load(Relaxed) + 1) as f64
    }
}

/// A fast thread-local xorshift; balancing needs spread, not secrecy.
pub fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = epoch().elapsed().as_nanos() as u64;
            let here = &t as *const u64 as u64;
            (t ^ here.rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// Picks the index among `loads` by power of two choices with draws `r1`, `r2`.
pub fn p2c(loads: &[f64], r1: u64, r2: u64) -> Option<usize> {
    p2c_by(loads.len(), r1, r2, |i| loads[i])
}

/// Power of two choices among `n` items whose load is `load(i)`: two distinct indexes
/// from the draws, the less loaded wins.
pub fn p2c_by(n: usize, r1: u64, r2: u64, load: impl Fn(usize) -> f64) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        n => {
            let i = (r1 % n as u64) as usize;
            let mut j = (r2 % (n as u64 - 1)) as usize;
            if j >= i {
                j += 1;
            }
            Some(if load(j) < load(i) { j } else { i })
        }
    }
}

/// Picks an index by weight with draw `r`.
pub fn weighted(weights: &[u32], r: u64) -> Option<usize> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut x = r % total;
    for (i, w) in weights.iter().enumerate() {
        if x < u64::from(*w) {
            return Some(i);
        }
        x -= u64::from(*w);
    }
    None
}

/// An endpoint in a balancer, with whatever the data path attaches to it.
pub struct Balanced<T> {
    /// Discovery's description.
    pub endpoint: Endpoint,
    /// Latency and load.
    pub ewma: PeakEwma,
    /// Clients, metrics…
    pub value: T,
    /// Its failover tier (lower first).
    tier: u8,
    /// Until when (ns since the balancer epoch) it is down; 0 when up.
    down_until: AtomicU64,
}

impl<T> Balanced<T> {
    /// An endpoint with its data-path value, up.
    pub fn new(endpoint: Endpoint, value: T) -> Self {
        Self {
            tier: endpoint.tier(),
            endpoint,
            ewma: PeakEwma::default(),
            value,
            down_until: AtomicU64::new(0),
        }
    }

    /// Its failover tier.
    pub fn tier(&self) -> u8 {
        self.tier
    }

    /// Takes it out of picks for [`DOWN_HOLD`] (connecting to it failed).
    pub fn mark_down(&self) {
        let until = now_ns() + DOWN_HOLD.as_nanos() as u64;
        self.down_until.store(until, Relaxed);
    }

    /// Puts it back (a connection to it succeeded).
    pub fn mark_up(&self) {
        if self.down_until.load(Relaxed) != 0 {
            self.down_until.store(0, Relaxed);
        }
    }

    /// Whether it is down at `now_ns`.
    fn down_at(&self, now_ns: u64) -> bool {
        self.down_until.load(Relaxed) > now_ns
    }

    /// Whether it is down now.
    pub fn is_down(&self) -> bool {
        self.down_at(now_ns())
    }
}

/// The index to send to among `list`: power of two choices among the endpoints of the
/// lowest tier that `usable` admits and that are not down; among every admitted one when
/// all of those are down. Within that tier a stalled endpoint ([`PeakEwma::stalled`]) that
/// has been silent much longer than the freshest one is passed over (stalling never
/// changes the tier: a slow answer is no reason to leave the cluster). `None` when
/// `usable` admits none.
pub fn choose<T>(list: &[Arc<Balanced<T>>], usable: impl Fn(&Balanced<T>) -> bool) -> Option<usize> {
    // The common case, one tier with nothing down, stalled or unusable: no allocation.
    let now = now_ns();
    let simple = list
        .iter()
        .all(|b| b.tier == 0 && !b.down_at(now) && !b.ewma.stalled(now) && usable(b));
    if simple {
        return p2c_by(list.len(), random(), random(), |i| list[i].ewma.load());
    }
    let admitted: Vec<usize> = (0..list.len()).filter(|i| usable(&list[*i])).collect();
    let up: Vec<usize> = admitted
        .iter()
        .copied()
        .filter(|i| !list[*i].down_at(now))
        .collect();
    let pool = if up.is_empty() { admitted } else { up };
    let tier = pool.iter().map(|i| list[*i].tier).min()?;
    let mut best: Vec<usize> = pool.into_iter().filter(|i| list[*i].tier == tier).collect();
    // Passed over: stalled, and silent for over STALL_RATIO times as long as the
    // freshest endpoint of the tier (so slow answers everywhere stall nothing).
    let silence = |i: usize| list[i].ewma.silence_ns(now);
    let freshest = best.iter().map(|i| silence(*i)).min().unwrap_or(0);
    best.retain(|i| !(list[*i].ewma.stalled(now) && silence(*i) > freshest.saturating_mul(STALL_RATIO)));
    let best = through_one_path(list, best);
    p2c_by(best.len(), random(), random(), |i| list[best[i]].ewma.load()).map(|i| best[i])
}

/// The candidates of one path, when `among` mixes endpoints behind gateway proxy entries
/// ([`Endpoint::via`]: the pods of one linked cluster) with other paths (other clusters'
/// entries, endpoints of their own): power of two choices between the paths, each
/// weighed by the mean load of its endpoints, then between the chosen path's endpoints.
/// A cluster thus competes as one, as its gateway does in Linkerd's gateway mode: when
/// its link dies, the requests stuck on it weigh on the whole path at once, where a flat
/// draw of two of its pods would send to it whatever their load until each stalls.
/// `among` unchanged when every path has one endpoint.
fn through_one_path<T>(list: &[Arc<Balanced<T>>], among: Vec<usize>) -> Vec<usize> {
    let path = |i: usize| {
        let e = &list[i].endpoint;
        e.via.map(|via| (via, e.link.as_ref())).ok_or(e.addr)
    };
    type Path<'a> = Result<(SocketAddr, Option<&'a LinkName>), SocketAddr>;
    let mut paths: Vec<(Path<'_>, Vec<usize>)> = Vec::new();
    for i in among.iter().copied() {
        match paths.iter_mut().find(|(p, _)| *p == path(i)) {
            Some((_, members)) => members.push(i),
            None => paths.push((path(i), vec![i])),
        }
    }
    if paths.len() == among.len() || paths.len() == 1 {
        return among;
    }
    let mean =
        |members: &[usize]| members.iter().map(|i| list[*i].ewma.load()).sum::<f64>() / members.len() as f64;
    match p2c_by(paths.len(), random(), random(), |p| mean(&paths[p].1)) {
        Some(p) => paths.swap_remove(p).1,
        None => among,
    }
}

/// The outcome of picking.
pub enum Pick<T> {
    /// Send here.
    Endpoint(Arc<Balanced<T>>),
    /// The service exists and has no endpoints.
    NoEndpoints,
    /// Discovery does not know the target.
    Unknown,
    /// Discovery has not answered in time.
    Pending,
}

/// A swappable endpoint list: readers clone the inner `Arc`, the rebuild task swaps it.
type Shared<T> = Arc<RwLock<Arc<Vec<Arc<Balanced<T>>>>>>;

/// Balances over one target's endpoints, following discovery.
pub struct Balancer<T> {
    endpoints: Shared<T>,
    resolution: Arc<Watch<Resolution>>,
    /// Told after each rebuild of `endpoints`.
    rebuilt: Arc<tokio::sync::Notify>,
    task: tokio::task::AbortHandle,
}

impl<T> Drop for Balancer<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Send + Sync + 'static> Balancer<T> {
    /// A balancer over `resolution`; `make` builds each new endpoint's value.
    pub fn new(
        resolution: Arc<Watch<Resolution>>,
        make: impl Fn(&Endpoint) -> T + Send + Sync + 'static,
    ) -> Self {
        let endpoints: Shared<T> = Arc::default();
        let rebuilt = Arc::new(tokio::sync::Notify::new());
        let mut rx = resolution.subscribe();
        let list = endpoints.clone();
        let told = rebuilt.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = match &*rx.borrow_and_update() {
                    Resolution::Endpoints(eps) => {
                        let old = list.read().unwrap_or_else(PoisonError::into_inner).clone();
                        let by_addr: std::collections::HashMap<SocketAddr, &Arc<Balanced<T>>> =
                            old.iter().map(|b| (b.endpoint.addr, b)).collect();
                        eps.values()
                            .map(|e| match by_addr.get(&e.addr) {
                                Some(b) if b.endpoint == *e => Arc::clone(b),
                                _ => Arc::new(Balanced::new(e.clone(), make(e))),
                            })
                            .collect()
                    }
                    _ => Vec::new(),
                };
                *list.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
                told.notify_waiters();
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .abort_handle();
        Self {
            endpoints,
            resolution,
            rebuilt,
            task,
        }
    }

    fn list(&self) -> Arc<Vec<Arc<Balanced<T>>>> {
        self.endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Picks an endpoint, waiting up to `wait` for discovery's first answer.
    pub async fn pick(&self, wait: Duration) -> Pick<T> {
        let mut rx = self.resolution.subscribe();
        let pending = match &*rx.borrow() {
            Resolution::Pending => true,
            Resolution::Unknown => return Pick::Unknown,
            Resolution::Endpoints(_) => false,
        };
        if pending {
            let unknown = match tokio::time::timeout(wait, rx.wait_for(|r| *r != Resolution::Pending)).await {
                Ok(Ok(r)) => *r == Resolution::Unknown,
                _ => return Pick::Pending,
            };
            if unknown {
                return Pick::Unknown;
            }
        }
        let mut list = self.list();
        // The rebuild task may not have caught up with the first answer yet: wait for it
        // (bounded) rather than answer "no endpoints" for a service that has some.
        let deadline = tokio::time::Instant::now() + wait;
        while list.is_empty() && matches!(&*rx.borrow(), Resolution::Endpoints(e) if !e.is_empty()) {
            let rebuilt = self.rebuilt.notified();
            tokio::pin!(rebuilt);
            rebuilt.as_mut().enable();
            list = self.list();
            if !list.is_empty() || tokio::time::timeout_at(deadline, rebuilt).await.is_err() {
                break;
            }
            list = self.list();
        }
        match choose(&list, |_| true) {
            Some(i) => Pick::Endpoint(list[i].clone()),
            None => Pick::NoEndpoints,
        }
    }
}

/// Marks down every endpoint of `list` reached through the gateway proxy entry `via` on
/// `link` (remote endpoints of one linked cluster); returns how many.
pub fn mark_down_via<T>(list: &[Arc<Balanced<T>>], via: SocketAddr, link: Option<&LinkName>) -> usize {
    let mut marked = 0;
    for b in list
        .iter()
        .filter(|b| b.endpoint.via == Some(via) && b.endpoint.link.as_ref() == link)
    {
        b.mark_down();
        marked += 1;
    }
    marked
}

/// Every endpoint of a balancer is excluded (failure accrual ejected them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllExcluded;

impl<T: Send + Sync + 'static> Balancer<T> {
    /// Marks down every endpoint reached through the gateway proxy entry `via`, when the
    /// path through it failed as a whole (its link is down, the entry is gone): the other
    /// remote endpoints behind it would fail the same way, so picks move on to another
    /// cluster or tier at once instead of trying them one by one. Returns how many.
    pub fn mark_down_via(&self, via: SocketAddr, link: Option<&LinkName>) -> usize {
        mark_down_via(&self.list(), via, link)
    }

    /// Like [`Balancer::pick`], among the endpoints `usable` admits; `Err` when there are
    /// endpoints and `usable` admits none.
    pub async fn pick_where(
        &self,
        wait: Duration,
        usable: impl Fn(&Balanced<T>) -> bool,
    ) -> Result<Pick<T>, AllExcluded> {
        let picked = self.pick(wait).await;
        match picked {
            Pick::Endpoint(first) => {
                if usable(&first) {
                    return Ok(Pick::Endpoint(first));
                }
                let list = self.list();
                match choose(&list, usable) {
                    Some(i) => Ok(Pick::Endpoint(list[i].clone())),
                    None => Err(AllExcluded),
                }
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_win_at_once_and_decay_slowly() {
        let c = next_cost(1e6, Duration::from_millis(1), Duration::from_millis(5));
        assert_eq!(c, 5e6, "a slower sample is the new peak");
        let c2 = next_cost(c, Duration::from_secs(10), Duration::from_millis(1));
        assert!(c2 < c && c2 > 1e6, "{c2}");
        let c3 = next_cost(c, Duration::from_secs(100), Duration::from_millis(1));
        assert!((c3 - 1e6).abs() < 1e3, "long ago peaks are forgotten: {c3}");
    }

    #[test]
    fn p2c_prefers_the_lighter_of_two() {
        let loads = [5.0, 1.0, 9.0];
        assert_eq!(p2c(&loads, 0, 0), Some(1)); // i=0, j=1
        assert_eq!(p2c(&loads, 2, 0), Some(0)); // i=2, j=0
        assert_eq!(p2c(&loads, 2, 1), Some(1)); // i=2, j=1
        assert_eq!(p2c(&[], 1, 2), None);
        assert_eq!(p2c(&[3.0], 7, 9), Some(0));
        // Never picks the same index twice, so the heaviest endpoint is never chosen
        // when three or more exist... unless paired with itself, which cannot happen.
        for r1 in 0..30 {
            for r2 in 0..30 {
                assert_ne!(p2c(&loads, r1, r2), Some(2));
            }
        }
    }

    #[test]
    fn weighted_picks_follow_weights() {
        let w = [900, 100];
        let hits = (0..1000u64).filter(|r| weighted(&w, *r) == Some(0)).count();
        assert_eq!(hits, 900);
        assert_eq!(weighted(&[0, 0], 5), None);
    }

    #[test]
    fn load_grows_with_in_flight_requests() {
        let e = PeakEwma::default();
        let idle = e.load();
        let a = e.start();
        let busy = e.load();
        assert!(busy > idle * 1.99 && busy <= idle * 2.0, "{idle} {busy}");
        drop(a);
        assert!(e.load() <= idle);
    }

    fn balanced(port: u16, remote: bool) -> Arc<Balanced<()>> {
        let mut labels = std::collections::BTreeMap::new();
        if remote {
            labels.insert(
                crate::discovery::TIER_LABEL.to_string(),
                crate::discovery::TIER_REMOTE.to_string(),
            );
        }
        let endpoint = Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
            identity: None,
            h2: false,
            opaque_transport_port: None,
            labels,
            gateway: None,
            via: None,
            link: None,
            authority_override: None,
        };
        Arc::new(Balanced::new(endpoint, ()))
    }

    /// The endpoints (by port) that 200 picks reached. P2C between two equally loaded
    /// endpoints may favour one, so callers compare sets of possible picks.
    fn picks(list: &[Arc<Balanced<()>>], usable: impl Fn(&Balanced<()>) -> bool) -> Vec<u16> {
        let mut seen: Vec<u16> = (0..200)
            .filter_map(|_| choose(list, &usable))
            .map(|i| list[i].endpoint.addr.port())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    fn within(seen: &[u16], allowed: &[u16]) -> bool {
        !seen.is_empty() && seen.iter().all(|p| allowed.contains(p))
    }

    #[test]
    fn a_failed_gateway_path_takes_down_every_endpoint_behind_it() {
        let entry = |port: u16| SocketAddr::from(([127, 0, 0, 9], port));
        let link = |name: &str| Some(LinkName::new(name).unwrap());
        let behind = |port: u16, via: u16, on: Option<LinkName>| {
            let b = balanced(port, true);
            let mut endpoint = b.endpoint.clone();
            endpoint.via = Some(entry(via));
            endpoint.link = on;
            Arc::new(Balanced::new(endpoint, ()))
        };
        // One entry for every link: east's three pods and central's two are two paths;
        // a third cluster behind an entry of its own link; one local pod.
        let list = vec![
            balanced(1, false),
            behind(11, 4180, link("east")),
            behind(12, 4180, link("east")),
            behind(13, 4180, link("east")),
            behind(21, 4180, link("central")),
            behind(22, 4180, link("central")),
            behind(31, 4181, None),
        ];
        list[0].mark_down();
        assert_eq!(mark_down_via(&list, entry(4180), link("east").as_ref()), 3);
        assert!(
            within(&picks(&list, |_| true), &[21, 22, 31]),
            "central and north take over at once"
        );
        assert!(!list[4].is_down() && !list[5].is_down() && !list[6].is_down());
        assert_eq!(mark_down_via(&list, entry(4181), None), 1);
        assert!(within(&picks(&list, |_| true), &[21, 22]));
        assert_eq!(mark_down_via(&list, entry(4199), None), 0);
        assert_eq!(mark_down_via(&list, entry(4180), link("south").as_ref()), 0);
        // Paths: east, central and north are three, however many pods each has.
        let all: Vec<usize> = (1..list.len()).collect();
        for b in &list {
            b.mark_up();
        }
        let stamp = now_ns();
        for b in &list {
            b.ewma.stamp_ns.store(stamp, Relaxed);
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let chosen = through_one_path(&list, all.clone());
            let ports: std::collections::BTreeSet<u16> = chosen
                .iter()
                .map(|i| list[*i].endpoint.addr.port() / 10)
                .collect();
            assert_eq!(ports.len(), 1, "one path's pods: {chosen:?}");
            seen.extend(ports);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_linked_clusters_pods_compete_as_one_path() {
        let behind = |port: u16, via: u16| {
            let b = balanced(port, true);
            let mut endpoint = b.endpoint.clone();
            endpoint.via = Some(SocketAddr::from(([127, 0, 0, 9], via)));
            Arc::new(Balanced::new(endpoint, ()))
        };
        // East's three pods behind one entry, central's one pod behind another.
        let list = vec![
            behind(11, 4180),
            behind(12, 4180),
            behind(13, 4180),
            behind(21, 4181),
        ];
        // Idle and alike (one cost, one age): every endpoint takes picks.
        let stamp = now_ns();
        for b in &list {
            b.ewma.stamp_ns.store(stamp, Relaxed);
        }
        assert_eq!(picks(&list, |_| true), [11, 12, 13, 21]);
        // Requests pile up on east (its link just died: nothing answers yet, nothing is
        // stalled yet): central, the lighter path, takes every pick, though a flat draw
        // of two east pods would still send to east.
        let _stuck: Vec<_> = (0..3)
            .flat_map(|i| [list[i].ewma.start(), list[i].ewma.start()])
            .collect();
        assert_eq!(picks(&list, |_| true), [21]);
        // Endpoints of their own (a local pod, a Linkerd gateway) are each their own path.
        let flat = vec![balanced(1, true), balanced(2, true)];
        assert_eq!(through_one_path(&flat, vec![0, 1]), [0, 1]);
    }

    #[test]
    fn the_lowest_tier_with_a_usable_endpoint_takes_every_pick() {
        let list = vec![
            balanced(1, false),
            balanced(2, false),
            balanced(11, true),
            balanced(12, true),
        ];
        assert!(within(&picks(&list, |_| true), &[1, 2]), "local endpoints first");
        // One local endpoint fails to connect: the other local one takes it all.
        list[0].mark_down();
        assert!(list[0].is_down());
        assert_eq!(picks(&list, |_| true), [2]);
        // Every local endpoint is down: the remote tier, balanced.
        list[1].mark_down();
        assert!(within(&picks(&list, |_| true), &[11, 12]));
        // A remote member's entry refuses (its link is down): the other remote one.
        list[2].mark_down();
        assert_eq!(picks(&list, |_| true), [12]);
        // A local endpoint connects again: back to local at once.
        list[1].mark_up();
        assert_eq!(picks(&list, |_| true), [2]);
        // Excluded endpoints (failure accrual) count as unusable, like down ones.
        assert_eq!(picks(&list, |b| b.endpoint.addr.port() != 2), [12]);
        // Everything down: the marks are ignored rather than fail the request.
        list[1].mark_down();
        list[3].mark_down();
        assert!(
            within(&picks(&list, |_| true), &[1, 2]),
            "the lowest tier of all admitted"
        );
        assert_eq!(choose(&list, |_| false), None);
    }

    #[test]
    fn a_stalled_endpoint_is_passed_over_within_its_tier_only() {
        let list = vec![balanced(1, false), balanced(11, true), balanced(12, true)];
        let now = now_ns();
        // Requests in flight and no answer for longer than STALL_AFTER: stalled.
        let stuck = list[1].ewma.start();
        list[1]
            .ewma
            .progress_ns
            .store(now.saturating_sub(2 * STALL_AFTER.as_nanos() as u64), Relaxed);
        assert!(list[1].ewma.stalled(now_ns()));
        assert!(!list[2].ewma.stalled(now_ns()), "idle is not stalled");
        // It does not move traffic off the local tier...
        assert!(within(&picks(&list, |_| true), &[1]));
        // ...but within the remote tier the other member takes every request.
        list[0].mark_down();
        assert!(within(&picks(&list, |_| true), &[12]));
        // An answer is progress: no longer stalled.
        stuck.observe();
        assert!(!list[1].ewma.stalled(now_ns()));
        // A fresh request on an idle endpoint is not stalled at once.
        let _fresh = list[2].ewma.start();
        assert!(!list[2].ewma.stalled(now_ns()));
        // When every endpoint of the tier is stalled, they are balanced as before.
        let _s1 = list[1].ewma.start();
        list[1].ewma.progress_ns.store(0, Relaxed);
        list[2].ewma.progress_ns.store(0, Relaxed);
        assert!(within(&picks(&list, |_| true), &[11, 12]));
        // Both stalled, one silent far longer (a dead path beside a slow one): the
        // fresher one takes the picks.
        let recent = now_ns().saturating_sub(2 * STALL_AFTER.as_nanos() as u64);
        list[2].ewma.progress_ns.store(recent, Relaxed);
        assert!(list[2].ewma.stalled(now_ns()));
        assert!(within(&picks(&list, |_| true), &[12]));
    }
}
