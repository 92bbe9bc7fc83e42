//! Retries (pure parts): which responses are retryable, Linkerd's per-request policy
//! headers (`l5d-retry-*`, `l5d-timeout`, `l5d-response-timeout`), and the retry budget
//! of ServiceProfiles, which caps retries to a share of recent requests so that retries
//! can never multiply an outage.
//!
//! Budget invariant: over the last `ttl`, retries withdrawn ≤ `min_retries_per_second` ×
//! `ttl` + `retry_ratio` × requests deposited. Time is an input (`now`).

use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use http::HeaderMap;

use super::outbound::{Retry, RetryOn, Timeouts};

/// Whether a response (status and, for gRPC, `grpc-status` in headers or trailers) is one
/// `on` retries.
pub fn retryable(on: &RetryOn, status: u16, grpc_status: Option<u32>) -> bool {
    match on {
        RetryOn::Statuses(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)),
        RetryOn::GrpcCodes(codes) => grpc_status.is_some_and(|c| codes.contains(&c)),
    }
}

/// The `grpc-status` of a response's headers (trailers-only responses) or trailers.
pub fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Per-request policy headers, read and removed from a request.
pub const L5D_HEADERS: [&str; 6] = [
    "l5d-retry-http",
    "l5d-retry-grpc",
    "l5d-retry-limit",
    "l5d-retry-timeout",
    "l5d-timeout",
    "l5d-response-timeout",
];

/// Reads `l5d-retry-http`'s value: `5xx`, `gateway-error`, codes and ranges (`500,502-504`).
pub fn parse_statuses(v: &str) -> Option<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let r = match part {
            "5xx" => (500, 599),
            "gateway-error" => (502, 504),
            p => match p.split_once('-') {
                Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let s: u16 = p.parse().ok()?;
                    (s, s)
                }
            },
        };
        if r.0 < 100 || r.1 > 999 || r.0 > r.1 {
            return None;
        }
        out.push(r);
    }
    (!out.is_empty()).then_some(out)
}

/// Reads `l5d-retry-grpc`'s value: comma-separated code names.
pub fn parse_grpc_codes(v: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(match part.to_ascii_lowercase().as_str() {
            "cancelled" => 1,
            "deadline-exceeded" => 4,
            "resource-exhausted" => 8,
            "internal" => 13,
            "unavailable" => 14,
            _ => return None,
        });
    }
    (!out.is_empty()).then_some(out)
}

/// Applies (and strips) the per-request policy headers when `allowed`; values that do not
/// read are ignored, as Linkerd ignores them. Only strips when not allowed.
pub fn apply_l5d_headers(
    headers: &mut HeaderMap,
    allowed: bool,
    grpc: bool,
    retry: &mut Option<Retry>,
    timeouts: &mut Timeouts,
) {
    if !L5D_HEADERS.iter().any(|h| headers.contains_key(*h)) {
        return;
    }
    let take = |h: &mut HeaderMap, name: &str| {
        h.remove(name)
            .and_then(|v| v.to_str().ok().map(|s| s.trim().to_string()))
    };
    let http = take(headers, "l5d-retry-http");
    let grpc_v = take(headers, "l5d-retry-grpc");
    let limit = take(headers, "l5d-retry-limit");
    let rtimeout = take(headers, "l5d-retry-timeout");
    let timeout = take(headers, "l5d-timeout");
    let rsp_timeout = take(headers, "l5d-response-timeout");
    if !allowed {
        return;
    }
    let dur = |v: Option<String>| v.and_then(|v| crate::config::parse_duration(&v).ok());
    let on = if grpc {
        grpc_v
            .as_deref()
            .and_then(parse_grpc_codes)
            .map(RetryOn::GrpcCodes)
    } else {
        http.as_deref().and_then(parse_statuses).map(RetryOn::Statuses)
    };
    let limit = limit.and_then(|l| l.parse::<u32>().ok());
    let rtimeout = dur(rtimeout);
    if on.is_some() || limit.is_some() || rtimeout.is_some() {
        let r = retry.get_or_insert_with(|| Retry {
            max_retries: 1,
            max_request_bytes: 64 * 1024,
            on: if grpc {
                RetryOn::GrpcCodes(Vec::new())
            } else {
                RetryOn::Statuses(Vec::new())
            },
            timeout: None,
            backoff: (Duration::from_millis(25), Duration::from_millis(250)),
        });
        if let Some(on) = on {
            r.on = on;
        }
        if let Some(l) = limit {
            r.max_retries = l;
        }
        if let Some(t) = rtimeout {
            r.timeout = Some(t).filter(|t| !t.is_zero());
        }
    }
    if let Some(t) = dur(timeout) {
        timeouts.request = Some(t).filter(|t| !t.is_zero());
    }
    if let Some(t) = dur(rsp_timeout) {
        timeouts.response = Some(t).filter(|t| !t.is_zero());
    }
}

/// The backoff before retry number `n` (1-based): exponential from `min`, capped at `max`,
/// with full jitter drawn from `r` (a uniform u64).
pub fn backoff((min, max): (Duration, Duration), n: u32, r: u64) -> Duration {
    let base = min.saturating_mul(1u32 << (n.saturating_sub(1)).min(16)).min(max);
    let span = base.as_nanos() as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(span / 2 + r % (span / 2 + 1))
}

/// A ServiceProfile retry budget's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetConfig {
    /// Retries per request allowed on top of the reserve.
    pub retry_ratio: f32,
    /// Retries per second always allowed.
    pub min_retries_per_second: u32,
    /// The window.
    pub ttl: Duration,
}

impl Default for BudgetConfig {
    /// Linkerd's default budget: 20% more requests, 10 retries/s, over 10 s.
    fn default() -> Self {
        Self {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug)]
struct Window {
    start: Instant,
    /// (bucket index, deposits, withdrawals), ring of `BUCKETS`.
    ring: [(u64, u64, u64); BUCKETS],
}

/// A retry budget shared by every request of one target.
#[derive(Debug)]
pub struct Budget {
    cfg: BudgetConfig,
    width: Duration,
    window: Mutex<Window>,
}

impl Budget {
    /// A budget; `now` starts its clock.
    pub fn new(cfg: BudgetConfig, now: Instant) -> Self {
        let width = (cfg.ttl / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            cfg,
            width,
            window: Mutex::new(Window {
                start: now,
                ring: [(u64::MAX, 0, 0); BUCKETS],
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> BudgetConfig {
        self.cfg
    }

    fn bucket(&self, w: &mut Window, now: Instant) -> usize {
        let idx = (now.saturating_duration_since(w.start).as_nanos() / self.width.as_nanos()) as u64;
        let slot = (idx % BUCKETS as u64) as usize;
        if w.ring[slot].0 != idx {
            w.ring[slot] = (idx, 0, 0);
        }
        // Buckets older than the window no longer count.
        for b in &mut w.ring {
            if b.0 != u64::MAX && b.0 + (BUCKETS as u64) <= idx {
                *b = (u64::MAX, 0, 0);
            }
        }
        slot
    }

    /// Records a request.
    pub fn deposit(&self, now: Instant) {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let s = self.bucket(&mut w, now);
        w.ring[s].1 += 1;
    }

    /// Asks for one retry; `true` (and counted) if the budget allows it.
    pub fn withdraw(&self, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let s = self.bucket(&mut w, now);
        let (deposits, withdrawals) = w.ring.iter().fold((0u64, 0u64), |(d, r), b| (d + b.1, r + b.2));
        let reserve = f64::from(self.cfg.min_retries_per_second) * self.cfg.ttl.as_secs_f64();
        let allowed = reserve + f64::from(self.cfg.retry_ratio) * deposits as f64;
        if (withdrawals as f64) < allowed.floor() {
            w.ring[s].2 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_parse() {
        assert_eq!(parse_statuses("5xx"), Some(vec![(500, 599)]));
        assert_eq!(
            parse_statuses("gateway-error,429"),
            Some(vec![(502, 504), (429, 429)])
        );
        assert_eq!(parse_statuses("500-504"), Some(vec![(500, 504)]));
        assert_eq!(parse_statuses("504-500"), None);
        assert_eq!(parse_statuses("nope"), None);
        assert_eq!(parse_grpc_codes("unavailable,internal"), Some(vec![14, 13]));
        assert_eq!(parse_grpc_codes("ok"), None);
    }

    #[test]
    fn seed_headers_make_a_retry_policy_only_when_allowed() {
        let mut h = HeaderMap::new();
        h.insert("l5d-retry-http", "5xx".parse().unwrap());
        h.insert("l5d-retry-limit", "3".parse().unwrap());
        let (mut retry, mut t) = (None, Timeouts::default());
        apply_l5d_headers(&mut h.clone(), false, false, &mut retry, &mut t);
        assert!(retry.is_none());
        apply_l5d_headers(&mut h, true, false, &mut retry, &mut t);
        let r = retry.unwrap();
        assert_eq!((r.max_retries, r.on), (3, RetryOn::Statuses(vec![(500, 599)])));
        assert!(h.is_empty(), "the headers are consumed");
        let mut h = HeaderMap::new();
        h.insert("l5d-timeout", "150ms".parse().unwrap());
        let mut none = None;
        apply_l5d_headers(&mut h, true, false, &mut none, &mut t);
        assert_eq!(t.request, Some(Duration::from_millis(150)));
        assert!(none.is_none());
    }

    #[test]
    fn budget_caps_retries_to_reserve_plus_ratio() {
        let t0 = Instant::now();
        let b = Budget::new(
            BudgetConfig {
                retry_ratio: 0.2,
                min_retries_per_second: 1,
                ttl: Duration::from_secs(10),
            },
            t0,
        );
        for _ in 0..100 {
            b.deposit(t0);
        }
        // 10 reserve + 20 from ratio.
        let granted = (0..100).filter(|_| b.withdraw(t0)).count();
        assert_eq!(granted, 30);
        // After the window, old deposits and withdrawals are forgotten: only the reserve.
        let later = t0 + Duration::from_secs(11);
        let granted = (0..100).filter(|_| b.withdraw(later)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = (Duration::from_millis(25), Duration::from_millis(250));
        assert!(backoff(b, 1, 0) >= Duration::from_micros(12_500));
        assert!(backoff(b, 1, u64::MAX) <= Duration::from_millis(25));
        assert!(backoff(b, 10, u64::MAX) <= Duration::from_millis(250));
        assert!(backoff(b, 10, 0) >= Duration::from_millis(125));
    }
}
