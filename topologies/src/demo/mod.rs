//! The demo workloads: a server that answers HTTP/1.1, HTTP/2 and gRPC on one port with
//! who it is (cluster, pod, version, name), with injected latency and failures; and a
//! client that sends requests at a fixed rate and reports success rate, latency and which
//! servers answered.
//!
//! Both speak the same small contract: a JSON [`Answer`] over HTTP, the [`proto`] messages
//! over gRPC. Tests and topologies assert on the client's [`client::Report`].

pub mod client;
pub mod grpc;
pub mod proto;
pub mod server;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who a demo server is, as it tells every client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// The workload's name (a Deployment's, e.g. `myapp`).
    pub name: String,
    /// Its version (the `version` label, e.g. `v1`).
    pub version: String,
    /// The cluster it runs in.
    pub cluster: String,
    /// Its pod.
    pub pod: String,
    /// Its namespace.
    pub namespace: String,
}

impl Identity {
    /// `cluster/namespace/pod (name version)`, the key reports group answers by.
    pub fn label(&self) -> String {
        format!(
            "{}/{}/{} ({} {})",
            self.cluster, self.namespace, self.pod, self.name, self.version
        )
    }
}

/// The JSON body of an HTTP answer. `padding` makes the body exactly the configured
/// response size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Who answered.
    #[serde(flatten)]
    pub server: Identity,
    /// The protocol the request arrived with: `HTTP/1.1`, `HTTP/2` or `gRPC`.
    pub protocol: String,
    /// `ok`, or `injected failure`.
    pub status: String,
    /// Filler up to the response size; empty without one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub padding: String,
}

/// A bad command-line or configuration value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: expected {expected}, found {found:?}")]
pub struct BadValue {
    /// The flag, e.g. `--latency`.
    pub flag: String,
    /// What was expected.
    pub expected: String,
    /// What was given.
    pub found: String,
}

impl BadValue {
    pub(crate) fn new(flag: &str, expected: impl Into<String>, found: impl Into<String>) -> Self {
        Self {
            flag: flag.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// Parses a duration like `250ms`, `1.5s`, `100us`, `2m` or `0` (Go/Kubernetes style units:
/// `us`, `ms`, `s`, `m`, `h`).
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, BadValue> {
    let bad = || BadValue::new(flag, "a duration such as 250ms, 1.5s, 100us or 2m", text);
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a fraction in 0..=1, also written as a percentage (`0.1` or `10%`).
pub fn parse_fraction(flag: &str, text: &str) -> Result<f64, BadValue> {
    let bad = || BadValue::new(flag, "a fraction from 0 to 1, or a percentage such as 10%", text);
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => t.parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&value) {
        return Err(bad());
    }
    Ok(value)
}

/// Parses a size like `1024`, `1KiB`, `4k` or `1MiB` (binary units).
pub fn parse_size(flag: &str, text: &str) -> Result<usize, BadValue> {
    let bad = || BadValue::new(flag, "a size in bytes such as 1024, 1KiB or 1MiB", text);
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" | "Ki" => 1024,
        "m" | "M" | "MiB" | "Mi" => 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .filter(|n| *n <= 64 * 1024 * 1024)
        .ok_or_else(bad)
}

/// Decides which requests fail so that exactly `rate` of them do, spread evenly: request
/// `n` (counting from 0) fails when `floor((n + 1) · rate)` steps past `floor(n · rate)`.
/// Deterministic, so tests can assert exact counts; with concurrent requests the order in
/// which they take numbers varies, the ratio over any run of requests does not.
#[derive(Debug)]
pub struct FailureInjector {
    rate: f64,
    next: std::sync::atomic::AtomicU64,
}

impl FailureInjector {
    /// Fails `rate` (0..=1) of requests.
    pub fn new(rate: f64) -> Self {
        Self {
            rate: rate.clamp(0.0, 1.0),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether the next request fails.
    pub fn next_fails(&self) -> bool {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::fails(self.rate, n)
    }

    /// Whether request `n` fails at `rate`.
    pub fn fails(rate: f64, n: u64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("--latency", "250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("--latency", "1.5s"), Ok(ms(1500)));
        assert_eq!(
            parse_duration("--latency", "100us"),
            Ok(Duration::from_micros(100))
        );
        assert_eq!(parse_duration("--latency", "2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("--latency", "0"), Ok(Duration::ZERO));
        let e = parse_duration("--latency", "10").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--latency: expected a duration such as 250ms, 1.5s, 100us or 2m, found \"10\""
        );
        assert!(parse_duration("--duration", "fast").is_err());
        assert!(parse_duration("--duration", "5d").is_err());
        assert!(parse_duration("--duration", "-1s").is_err());
    }

    #[test]
    fn fractions_and_sizes() {
        assert_eq!(parse_fraction("--failure-rate", "0.25"), Ok(0.25));
        assert_eq!(parse_fraction("--failure-rate", "10%"), Ok(0.1));
        let e = parse_fraction("--failure-rate", "1.5").unwrap_err();
        assert_eq!(e.flag, "--failure-rate");
        assert!(e.to_string().contains("a fraction from 0 to 1"), "{e}");
        assert!(parse_fraction("--min-success", "abc").is_err());
        assert_eq!(parse_size("--response-size", "1KiB"), Ok(1024));
        assert_eq!(parse_size("--response-size", "1024"), Ok(1024));
        assert_eq!(parse_size("--response-size", "2MiB"), Ok(2 * 1024 * 1024));
        assert!(parse_size("--response-size", "1GiB").is_err());
        assert!(parse_size("--response-size", "lots").is_err());
    }

    #[test]
    fn failures_are_exactly_the_rate_and_evenly_spread() {
        let count = |rate, n| (0..n).filter(|i| FailureInjector::fails(rate, *i)).count();
        assert_eq!(count(0.25, 100), 25);
        assert_eq!(count(0.1, 1000), 100);
        assert_eq!(count(0.0, 1000), 0);
        assert_eq!(count(1.0, 1000), 1000);
        // Evenly spread: every window of 4 requests at 25% has exactly one failure.
        for start in (0..100).step_by(4) {
            assert_eq!(
                (start..start + 4)
                    .filter(|i| FailureInjector::fails(0.25, *i))
                    .count(),
                1
            );
        }
        let inj = FailureInjector::new(0.5);
        let fails: Vec<bool> = (0..4).map(|_| inj.next_fails()).collect();
        assert_eq!(fails, [false, true, false, true]);
    }
}
