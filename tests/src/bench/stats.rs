//! Latency summaries: nearest-rank percentiles over every sample (no histogram buckets,
//! no interpolation), so a reported p99 is a delay that was actually observed.

use std::time::Duration;

/// Count, p50, p99 and max of a set of delays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (any order); all zero when empty.
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Self {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

/// The nearest-rank `p`th percentile of `sorted` (ascending): the smallest sample with at
/// least `p`% of the samples at or below it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with two decimals, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Mebibytes with one decimal, from kibibytes.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(d).collect();
        let s = Summary::of(&samples);
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, d(50), d(99), d(100)));
        // With fewer than 100 samples the p99 is the maximum.
        let s = Summary::of(&[d(3), d(1), d(2)]);
        assert_eq!((s.p50, s.p99, s.max), (d(2), d(3), d(3)));
        assert_eq!(Summary::of(&[]), Summary::default());
        assert_eq!(percentile(&[d(7)], 0.0), d(7));
    }

    #[test]
    fn units() {
        assert_eq!(ms(Duration::from_micros(1500)), "1.50 ms");
        assert_eq!(mib(1536), "1.5 MiB");
    }
}
