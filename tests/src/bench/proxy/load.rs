//! The load generators: `h2load` (Debian's nghttp2-client) for fixed-rate latency, with
//! a per-request log so every percentile is a delay that was observed, and `wrk` for
//! saturation (as many requests as 16 connections can carry). h2load paces `--rps` on a
//! 10 ms timer, so requests leave in small bursts; every path of a run carries the same
//! artefact, and the report compares paths, not absolutes. Each run is a child
//! process; its output is parsed here (pure functions, tested on captured output).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{AUTHORITY, Error};
use crate::bench::stats::percentile;

/// A fixed-rate run's figures (from h2load's per-request log).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FixedRate {
    /// Requests answered with 200.
    pub ok: u64,
    /// Requests that failed or got another status.
    pub errors: u64,
    /// Achieved rate (answered requests over the run's span).
    pub rps: f64,
    /// Latency percentiles (nearest rank) of the answered requests.
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

/// `h2load` at a fixed rate against `http://addr<path>` (HTTP/1.1, `:authority` set),
/// `--rps` per connection, with a per-request log in `log`; the log parsed.
pub fn h2load(
    h2load: &Path,
    addr: SocketAddr,
    path: &str,
    load: FixedRateLoad,
    log: &Path,
) -> Result<FixedRate, Error> {
    let per_connection = (load.rps / load.connections.max(1)).max(1);
    run(
        Command::new(h2load)
            .args(["--h1", "-t", "1", "-c", &load.connections.to_string()])
            .args(["--rps", &per_connection.to_string()])
            .args(["-D", &load.duration.as_secs().max(1).to_string()])
            .arg(format!("--log-file={}", log.display()))
            .args(["-H", &format!(":authority: {AUTHORITY}")])
            .arg(format!("http://{addr}{path}")),
        "h2load",
    )?;
    let text = std::fs::read_to_string(log).map_err(Error::io(format!("cannot read {}", log.display())))?;
    parse_h2load_log(&text)
}

fn parse_log_row(line: &str) -> Option<(u64, i32, u64)> {
    let mut c = line.split('\t').map(str::trim);
    Some((
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
    ))
}

/// Reads h2load's `--log-file`: one row per request, `start_us \t status \t duration_us`
/// (status -1 for a request that got no answer).
pub fn parse_h2load_log(text: &str) -> Result<FixedRate, Error> {
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row = parse_log_row(line);
        rows.push(row.ok_or_else(|| Error::Output {
            tool: "h2load",
            detail: format!("a log row that does not parse: {line:?}"),
        })?);
    }
    if rows.is_empty() {
        return Err(Error::Output {
            tool: "h2load",
            detail: "an empty request log".into(),
        });
    }
    let mut latencies: Vec<Duration> = rows
        .iter()
        .filter(|r| r.1 == 200)
        .map(|r| Duration::from_micros(r.2))
        .collect();
    latencies.sort_unstable();
    let first = rows.iter().map(|r| r.0).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.0 + r.2).max().unwrap_or(0);
    let span = Duration::from_micros(last.saturating_sub(first)).as_secs_f64();
    let ok = latencies.len() as u64;
    Ok(FixedRate {
        ok,
        errors: rows.len() as u64 - ok,
        rps: if span > 0.0 { ok as f64 / span } else { 0.0 },
        p50: percentile(&latencies, 50.0),
        p90: percentile(&latencies, 90.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

/// `wrk -t1 -c<connections> -d<duration>` against `http://addr/`.
pub fn wrk(wrk: &Path, addr: SocketAddr, connections: u32, duration: Duration) -> Result<Saturation, Error> {
    let text = run(
        Command::new(wrk).args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs()),
            "-H",
            &format!("Host: {AUTHORITY}"),
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
    fn h2load_logs() {
        let log =
            "1000000\t200\t500\n1000500\t200\t900\n1001000\t-1\t10\n1002000\t502\t300\n1999000\t200\t1000\n";
        let r = parse_h2load_log(log).unwrap();
        assert_eq!((r.ok, r.errors), (3, 2));
        assert_eq!(r.p50, Duration::from_micros(900));
        assert_eq!(r.max, Duration::from_micros(1000));
        assert!((r.rps - 3.0).abs() < 1e-9, "{}", r.rps);
        assert!(parse_h2load_log("").is_err());
        assert!(parse_h2load_log("x\ty\n").is_err());
    }
}
