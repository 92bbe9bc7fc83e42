//! Circuit breaking by consecutive-failure accrual, per endpoint (pure; `now` is an input).
//!
//! State machine: *available* → after `max_failures` failures in a row → *ejected* for a
//! penalty (exponential from `min_penalty`, capped at `max_penalty`, jittered) → when the
//! penalty ends, *probing*: the endpoint takes requests again; a success closes the
//! breaker (penalties reset), a failure ejects it again with the next, longer penalty.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::outbound::Accrual;

#[derive(Debug, Default)]
struct State {
    failures: u32,
    ejected_until: Option<Instant>,
    probing: bool,
    penalties: u32,
}

/// One endpoint's breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Breaker {
    /// Whether the endpoint may take a request at `now`.
    pub fn available(&self, now: Instant) -> bool {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.ejected_until.is_none_or(|t| now >= t)
    }

    /// Records a response; returns the penalty when this ejects the endpoint. `r` is a
    /// uniform draw for jitter.
    pub fn record(&self, success: bool, now: Instant, cfg: &Accrual, r: u64) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = s.ejected_until
            && now >= t
        {
            s.ejected_until = None;
            s.probing = true;
        }
        if success {
            *s = State::default();
            return None;
        }
        if s.ejected_until.is_some() {
            // A response to a request sent before the ejection.
            return None;
        }
        s.failures += 1;
        if !s.probing && s.failures < cfg.max_failures {
            return None;
        }
        let base = cfg
            .min_penalty
            .saturating_mul(1u32 << s.penalties.min(16))
            .min(cfg.max_penalty);
        let jitter = base.mul_f64(f64::from(cfg.jitter) * (r % 1000) as f64 / 1000.0);
        let penalty = (base + jitter).min(cfg.max_penalty.max(base));
        s.penalties += 1;
        s.failures = 0;
        s.probing = false;
        s.ejected_until = Some(now + penalty);
        Some(penalty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_and_probes_back_with_backoff() {
        let cfg = Accrual {
            max_failures: 3,
            min_penalty: Duration::from_secs(1),
            max_penalty: Duration::from_secs(4),
            jitter: 0.0,
        };
        let b = Breaker::default();
        let t = Instant::now();
        assert_eq!(b.record(false, t, &cfg, 0), None);
        assert_eq!(b.record(true, t, &cfg, 0), None, "a success resets the count");
        assert_eq!(b.record(false, t, &cfg, 0), None);
        assert_eq!(b.record(false, t, &cfg, 0), None);
        assert_eq!(b.record(false, t, &cfg, 0), Some(Duration::from_secs(1)));
        assert!(!b.available(t));
        assert!(b.available(t + Duration::from_secs(1)));
        // The probe fails: ejected again at once, for twice as long.
        let t2 = t + Duration::from_secs(1);
        assert_eq!(b.record(false, t2, &cfg, 0), Some(Duration::from_secs(2)));
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!(b.record(false, t3, &cfg, 0), Some(Duration::from_secs(4)));
        let t4 = t3 + Duration::from_secs(4);
        assert_eq!(
            b.record(false, t4, &cfg, 0),
            Some(Duration::from_secs(4)),
            "capped"
        );
        // A successful probe closes the breaker.
        let t5 = t4 + Duration::from_secs(4);
        assert!(b.available(t5));
        assert_eq!(b.record(true, t5, &cfg, 0), None);
        assert_eq!(b.record(false, t5, &cfg, 0), None, "counting starts over");
    }
}
