//! The load generators: a fixed-rate one for latency, and `wrk` for saturation (as many
//! requests as 16 connections can carry). Each run is a child process; its output is
//! parsed here (pure functions, tested on captured output).
//!
//! The fixed-rate generator is [`Generator::Oha`] by default: `oha -q RPS
//! --latency-correction` sends one request every 1/RPS s across its connections and times
//! each from when it was due, so a request that waited behind a slow one counts the
//! wait. `h2load --rps` ([`Generator::H2load`], kept for comparison) paces each
//! connection on a 10 ms timer: at 1000 RPS over 4 connections, about ten requests leave
//! together every 10 ms, and every path's latency includes queueing behind that burst in
//! single-threaded proxies. `../shared/TOOLING.md` measured the same on this machine
//! class.

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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Saturation {
    /// Requests completed.
    pub requests: u64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
    /// `Requests/sec`.
    pub rps: f64,
    /// CPU per completed request of each measured proxy (client side, server side), µs.
    pub proxy_cpu_us: Vec<f64>,
    /// Share of the machine's CPU time busy during the run (every process), from `/proc/stat`.
    pub machine_busy: Option<f64>,
}

/// The fixed-rate load generator (`bench --fixed-rate-generator oha|h2load`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Generator {
    /// `oha -q RPS --latency-correction` (crates.io): evenly paced requests.
    #[default]
    Oha,
    /// `h2load --rps` (Debian's nghttp2-client): per-connection bursts on a 10 ms timer.
    H2load,
}

impl Generator {
    /// The tool's name.
    pub fn name(self) -> &'static str {
        match self {
            Generator::Oha => "oha",
            Generator::H2load => "h2load",
        }
    }

    /// How the report describes a run: `oha -q 1000 -c 4 --latency-correction`.
    pub fn describe(self, rps: u32, connections: u32) -> String {
        match self {
            Generator::Oha => format!(
                "`oha -q {rps} -c {connections} --latency-correction`, every request timed from when it was due"
            ),
            Generator::H2load => format!(
                "`h2load --rps {} -c {connections}`, per-connection bursts on a 10 ms timer, every request logged",
                (rps / connections.max(1)).max(1)
            ),
        }
    }
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

/// A fixed-rate run with `generator` against `http://addr<path>`; `log` is h2load's
/// per-request log (a fresh file; oha keeps its own figures).
pub fn fixed_rate(
    tools: &super::tools::Tools,
    generator: Generator,
    addr: SocketAddr,
    path: &str,
    load: FixedRateLoad,
    log: &Path,
) -> Result<FixedRate, Error> {
    match (generator, &tools.oha) {
        (Generator::Oha, Some(program)) => oha(program, addr, path, load),
        (Generator::Oha, None) => Err(Error::Tool("oha was not set up for this run".into())),
        (Generator::H2load, _) => h2load(&tools.h2load, addr, path, load, log),
    }
}

/// `oha` at a fixed rate against `http://addr<path>` (HTTP/1.1, `Host` set): `load.rps`
/// requests per second in total, each timed from when it was due
/// (`--latency-correction`); requests still running at the end are waited for, not
/// counted as errors. Its JSON summary parsed.
pub fn oha(oha: &Path, addr: SocketAddr, path: &str, load: FixedRateLoad) -> Result<FixedRate, Error> {
    let text = run(
        Command::new(oha)
            .args([
                "--no-tui",
                "--output-format",
                "json",
                "--latency-correction",
                "-w",
            ])
            .args(["-q", &load.rps.to_string()])
            .args(["-c", &load.connections.to_string()])
            .args(["-z", &format!("{}s", load.duration.as_secs().max(1))])
            .args(["--host", AUTHORITY])
            .arg(format!("http://{addr}{path}")),
        "oha",
    )?;
    parse_oha_json(&text)
}

/// Reads `oha --output-format json`: `summary` (`total` run time, `slowest`),
/// `latencyPercentiles` (seconds), `statusCodeDistribution` and `errorDistribution`.
pub fn parse_oha_json(text: &str) -> Result<FixedRate, Error> {
    let bad = |detail: String| Error::Output { tool: "oha", detail };
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e}): {:?}", truncate(text))))?;
    let seconds = |section: &str, key: &str| -> Result<Duration, Error> {
        let x = v[section][key]
            .as_f64()
            .ok_or_else(|| bad(format!("no number at {section}.{key}")))?;
        Duration::try_from_secs_f64(x).map_err(|_| bad(format!("{section}.{key} = {x} is not a duration")))
    };
    let counts = |section: &str| -> Result<Vec<(String, u64)>, Error> {
        let Some(map) = v[section].as_object() else {
            return Err(bad(format!("no object at {section}")));
        };
        map.iter()
            .map(|(k, n)| {
                n.as_u64()
                    .map(|n| (k.clone(), n))
                    .ok_or_else(|| bad(format!("{section}.{k} is not a count")))
            })
            .collect()
    };
    let statuses = counts("statusCodeDistribution")?;
    let failures = counts("errorDistribution")?;
    let ok: u64 = statuses.iter().filter(|(s, _)| s == "200").map(|(_, n)| n).sum();
    let errors = statuses
        .iter()
        .filter(|(s, _)| s != "200")
        .map(|(_, n)| n)
        .sum::<u64>()
        + failures.iter().map(|(_, n)| n).sum::<u64>();
    if ok + errors == 0 {
        return Err(bad("no requests were sent".into()));
    }
    // Achieved rate as for h2load: answered requests over the run's span.
    let span = seconds("summary", "total")?.as_secs_f64();
    let mut r = FixedRate {
        ok,
        errors,
        rps: if span > 0.0 { ok as f64 / span } else { 0.0 },
        ..FixedRate::default()
    };
    // Without an answer oha has no latencies (nulls), as h2load's log has none.
    if ok > 0 {
        r.p50 = seconds("latencyPercentiles", "p50")?;
        r.p90 = seconds("latencyPercentiles", "p90")?;
        r.p99 = seconds("latencyPercentiles", "p99")?;
        r.max = seconds("summary", "slowest")?;
    }
    Ok(r)
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((i, _)) => &text[..i],
        None => text,
    }
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

    #[test]
    fn oha_summaries() {
        // Trimmed from `oha --output-format json` (1.16): a run with answers and failures.
        let json = r#"{"summary": {"successRate": 0.99, "total": 2.0, "slowest": 0.004097355,
            "fastest": 0.0002, "average": 0.0003, "requestsPerSec": 500.0},
            "latencyPercentiles": {"p10": 0.0002, "p50": 0.000293852, "p90": 0.000342512,
            "p99": 0.001097355, "p99.9": 0.004097355},
            "statusCodeDistribution": {"200": 990, "502": 4},
            "errorDistribution": {"Connection refused (os error 111)": 6}}"#;
        let r = parse_oha_json(json).unwrap();
        assert_eq!((r.ok, r.errors), (990, 10));
        assert!((r.rps - 495.0).abs() < 1e-9, "{}", r.rps);
        assert_eq!(r.p50, Duration::from_nanos(293_852));
        assert_eq!(r.p90, Duration::from_nanos(342_512));
        assert_eq!(r.p99, Duration::from_nanos(1_097_355));
        assert_eq!(r.max, Duration::from_nanos(4_097_355));

        // Every request failed: oha reports null latencies, which are not an error.
        let failed = r#"{"summary": {"total": 1.0, "slowest": null},
            "latencyPercentiles": {"p50": null, "p90": null, "p99": null},
            "statusCodeDistribution": {}, "errorDistribution": {"Connection refused (os error 111)": 20}}"#;
        let r = parse_oha_json(failed).unwrap();
        assert_eq!((r.ok, r.errors, r.p99), (0, 20, Duration::ZERO));

        // What is not a summary says what is missing.
        let e = parse_oha_json("Error: connection refused")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("oha output: not JSON"), "{e}");
        let e = parse_oha_json(
            r#"{"summary": {"total": 1.0}, "statusCodeDistribution": {"200": 1},
            "errorDistribution": {}, "latencyPercentiles": {"p50": 0.1}}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "oha output: no number at latencyPercentiles.p90");
        let e = parse_oha_json(
            r#"{"summary": {"total": 1.0}, "statusCodeDistribution": {},
            "errorDistribution": {}}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "oha output: no requests were sent");
        let e = parse_oha_json(
            r#"{"summary": {"total": 1.0}, "statusCodeDistribution": {"200": "x"},
            "errorDistribution": {}}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "oha output: statusCodeDistribution.200 is not a count");
    }
}
