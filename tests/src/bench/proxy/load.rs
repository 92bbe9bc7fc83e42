//! The load generators: `oha` for fixed-rate latency (`-q` with `--latency-correction`,
//! so a stalled answer delays the requests behind it and counts against them) and `wrk`
//! for saturation (as many requests as 16 connections can carry). Each run is a child
//! process; its output is parsed here (pure functions, tested on captured output).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::Error;

/// A fixed-rate run's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FixedRate {
    /// Requests answered with 200.
    pub ok: u64,
    /// Requests that failed or got another status.
    pub errors: u64,
    /// Achieved rate.
    pub rps: f64,
    /// Latency percentiles.
    pub p50: Duration,
    /// 90th.
    pub p90: Duration,
    /// 99th.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

/// A saturation run's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Saturation {
    /// Requests completed.
    pub requests: u64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
    /// `Requests/sec`.
    pub rps: f64,
}

/// Fixed-rate load settings.
#[derive(Clone, Copy, Debug)]
pub struct FixedRateLoad {
    /// Requests per second.
    pub rps: u32,
    /// Connections.
    pub connections: u32,
    /// Measured duration.
    pub duration: Duration,
}

fn run(cmd: &mut Command, tool: &'static str) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(|e| Error::Tool(format!("cannot run {tool}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Output {
            tool,
            detail: format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `oha` at a fixed rate against `http://addr/`; JSON output parsed.
pub fn oha(oha: &Path, addr: SocketAddr, load: FixedRateLoad) -> Result<FixedRate, Error> {
    let text = run(
        Command::new(oha).args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
            "-z",
            &format!("{}s", load.duration.as_secs()),
            "-c",
            &load.connections.to_string(),
            "-q",
            &load.rps.to_string(),
            &format!("http://{addr}/"),
        ]),
        "oha",
    )?;
    parse_oha(&text)
}

/// Reads oha's JSON report (seconds as floats).
pub fn parse_oha(json: &str) -> Result<FixedRate, Error> {
    let bad = |detail: String| Error::Output { tool: "oha", detail };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let secs = |x: &serde_json::Value, what: &str| {
        x.as_f64()
            .map(Duration::from_secs_f64)
            .ok_or_else(|| bad(format!("no {what}")))
    };
    let lp = &v["latencyPercentiles"];
    let statuses = v["statusCodeDistribution"]
        .as_object()
        .ok_or_else(|| bad("no statusCodeDistribution".into()))?;
    let count = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let ok = statuses.get("200").map_or(0, count);
    let other: u64 = statuses
        .iter()
        .filter(|(k, _)| *k != "200")
        .map(|(_, n)| count(n))
        .sum();
    // Requests still in flight when the duration ends are cut off by oha itself, not failed.
    let failed: u64 = v["errorDistribution"].as_object().map_or(0, |m| {
        m.iter()
            .filter(|(k, _)| !k.contains("aborted due to deadline"))
            .map(|(_, n)| count(n))
            .sum()
    });
    Ok(FixedRate {
        ok,
        errors: other + failed,
        rps: v["summary"]["requestsPerSec"]
            .as_f64()
            .ok_or_else(|| bad("no summary.requestsPerSec".into()))?,
        p50: secs(&lp["p50"], "latencyPercentiles.p50")?,
        p90: secs(&lp["p90"], "latencyPercentiles.p90")?,
        p99: secs(&lp["p99"], "latencyPercentiles.p99")?,
        max: secs(&v["summary"]["slowest"], "summary.slowest")?,
    })
}

/// `wrk -t1 -c<connections> -d<duration>` against `http://addr/`.
pub fn wrk(wrk: &Path, addr: SocketAddr, connections: u32, duration: Duration) -> Result<Saturation, Error> {
    let text = run(
        Command::new(wrk).args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs()),
            &format!("http://{addr}/"),
        ]),
        "wrk",
    )?;
    parse_wrk(&text)
}

/// Reads wrk's text report.
pub fn parse_wrk(text: &str) -> Result<Saturation, Error> {
    let bad = |detail: &str| Error::Output {
        tool: "wrk",
        detail: format!("{detail} in:\n{text}"),
    };
    let mut s = Saturation::default();
    let mut seen = (false, false);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            s.rps = rest.trim().parse().map_err(|_| bad("a bad Requests/sec"))?;
            seen.0 = true;
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            s.requests = n.trim().parse().map_err(|_| bad("a bad request count"))?;
            seen.1 = true;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            s.errors += rest
                .trim()
                .parse::<u64>()
                .map_err(|_| bad("a bad Non-2xx count"))?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let n = part.split_whitespace().last().and_then(|n| n.parse::<u64>().ok());
                s.errors += n.ok_or_else(|| bad("bad socket errors"))?;
            }
        }
    }
    if seen != (true, true) {
        return Err(bad("no request count or Requests/sec"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports() {
        let text = "Running 15s test @ http://127.0.0.1:4000/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   450.12us  100.00us   5.00ms   90.00%
    Req/Sec    35.10k     1.00k   37.00k    70.00%
  524288 requests in 15.00s, 560.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  34952.53
Transfer/sec:     37.33MB
";
        let s = parse_wrk(text).unwrap();
        assert_eq!((s.requests, s.errors), (524_288, 7));
        assert!((s.rps - 34952.53).abs() < 1e-6);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn oha_reports() {
        let json = r#"{"summary":{"successRate":1.0,"total":30.0,"slowest":0.0123,"fastest":0.0001,
            "average":0.0005,"requestsPerSec":999.8},
            "latencyPercentiles":{"p10":0.0002,"p50":0.0004,"p90":0.0006,"p99":0.0011,"p99.9":0.003},
            "statusCodeDistribution":{"200":29990,"502":4},"errorDistribution":{"aborted due to deadline":6,"connection closed":2}}"#;
        let r = parse_oha(json).unwrap();
        assert_eq!((r.ok, r.errors), (29_990, 6));
        assert_eq!(r.p50, Duration::from_secs_f64(0.0004));
        assert_eq!(r.p99, Duration::from_secs_f64(0.0011));
        assert_eq!(r.max, Duration::from_secs_f64(0.0123));
        assert!(parse_oha(r#"{"summary":{}}"#).is_err());
    }
}
