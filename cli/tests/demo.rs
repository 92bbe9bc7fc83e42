//! `strait demo server` and `strait demo client` as processes: they find each other over
//! loopback, the client's JSON report is what tests and topologies assert on, its exit
//! status follows --min-success, bad flags name themselves, and SIGTERM stops the server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn strait() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strait"));
    for v in [
        "STRAIT_STATE_DIR",
        "STRAIT_CLUSTER",
        "STRAIT_LOG",
        "POD_NAME",
        "POD_NAMESPACE",
    ] {
        c.env_remove(v);
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `strait demo server` child, terminated on drop.
struct DemoServer {
    child: Child,
    addr: String,
    announced: serde_json::Value,
}

impl DemoServer {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = strait()
            .args(["demo", "server", "--addr", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strait runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let announced: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
        let addr = announced["demo-server"].as_str().unwrap().to_string();
        Self {
            child,
            addr,
            announced,
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status, err);
            }
            assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(args: &[&str]) -> Output {
    strait()
        .args(["demo", "client", "--progress", "0"])
        .args(args)
        .output()
        .expect("strait runs")
}

#[test]
fn client_and_server_report_who_answered_and_how_well() {
    let srv = DemoServer::start(
        &[
            "--name",
            "myapp",
            "--version",
            "v2",
            "--cluster-name",
            "east",
            "--failure-rate",
            "25%",
        ],
        &[("POD_NAME", "myapp-v2-0"), ("POD_NAMESPACE", "production")],
    );
    assert_eq!(srv.announced["server"]["pod"], "myapp-v2-0");
    let url = format!("http://{}/", srv.addr);
    for protocol in ["http1", "http2", "grpc"] {
        let out = client(&[
            &url,
            "--protocol",
            protocol,
            "--requests",
            "20",
            "--rps",
            "400",
            "--concurrency",
            "2",
            "-o",
            "json",
        ]);
        assert!(out.status.success(), "{protocol}: {}", text(&out.stderr));
        let rep: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        assert_eq!(rep["requests"], 20, "{rep}");
        assert_eq!(rep["succeeded"], 15, "{rep}");
        assert_eq!(rep["servers"][0]["cluster"], "east");
        assert_eq!(rep["servers"][0]["namespace"], "production");
        assert_eq!(rep["servers"][0]["version"], "v2");
        // gRPC failures are trailers-only: they carry a status, not who sent it.
        let identified = if protocol == "grpc" { 15 } else { 20 };
        assert_eq!(rep["servers"][0]["requests"], identified, "{rep}");
        assert!(rep["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
    // Below --min-success: the report still prints, and the exit status says so.
    let out = client(&[&url, "--requests", "8", "--rps", "400", "--min-success", "0.9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("success rate 75.00%"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("success rate 75.00% is below --min-success 90.00%"),
        "{}",
        text(&out.stderr)
    );
    let (status, err) = srv.terminate();
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains("answered 68 requests (17 injected failures)"),
        "{err}"
    );
}

#[test]
fn the_client_prints_progress_while_it_runs() {
    let srv = DemoServer::start(&[], &[]);
    let started = std::time::Instant::now();
    let out = strait()
        .args([
            "demo",
            "client",
            &srv.addr,
            "--rps",
            "40",
            "--duration",
            "1.2s",
            "--progress",
            "500ms",
        ])
        .output()
        .unwrap();
    let ran = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    // A line every 500 ms while it runs: at 0.5 s and 1 s, and one more for each 500 ms a
    // busy machine keeps the last requests (or the process) going past 1.5 s.
    let lines = err.lines().filter(|l| l.contains("% success")).count();
    let most = (ran.as_millis() / 500) as usize;
    assert!(
        (2..=most).contains(&lines),
        "{lines} progress lines in {ran:?}: {err}"
    );
    assert!(text(&out.stdout).contains("48 requests"), "{}", text(&out.stdout));
}

#[test]
fn bad_flags_name_the_flag_and_what_was_expected() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["demo", "server", "--latency", "10"],
            "'--latency <DURATION>': expected a duration",
        ),
        (
            &["demo", "server", "--failure-rate", "2"],
            "'--failure-rate <FRACTION>': expected a fraction",
        ),
        (
            &["demo", "server", "--response-size", "10", "--addr", "127.0.0.1:0"],
            "--response-size: expected at least",
        ),
        (
            &["demo", "client", "127.0.0.1:1", "--rps", "0"],
            "--rps: expected requests per second above 0",
        ),
        (
            &["demo", "client", "127.0.0.1:1", "--proxy", "nowhere"],
            "'--proxy <HOST:PORT>': expected host:port",
        ),
        (&["demo", "client", "https://x:1"], "URL: expected a URL"),
        (
            &["demo", "client", "x:1", "--requests", "1", "--duration", "1s"],
            "cannot be used with",
        ),
    ];
    for (args, expected) in cases {
        let out = strait().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
}

#[test]
fn init_dry_run_prints_the_exact_restore_input_and_bad_flags_name_themselves() {
    let out = strait()
        .args([
            "init",
            "--dry-run",
            "--inbound-ports-to-ignore",
            "25,8000-8999",
            "--proxy-uid",
            "1234",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("-restore --noflush <<'EOF'\n*nat\n"), "{plan}");
    assert!(
        plan.contains("-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191,25,8000:8999 "),
        "{plan}"
    );
    assert!(
        plan.contains("-A PROXY_INIT_OUTPUT -m owner --uid-owner 1234 "),
        "{plan}"
    );
    assert!(plan.contains("-j REDIRECT --to-ports 4140\n"), "{plan}");
    assert!(plan.ends_with("COMMIT\nEOF\n"), "{plan}");
    for (args, expected) in [
        (
            &["init", "--inbound-ports-to-ignore", "70000"][..],
            "'--inbound-ports-to-ignore <PORTS>': expected comma-separated ports",
        ),
        (
            &["init", "--subnets-to-ignore", "10.0.0.0/40"],
            "'--subnets-to-ignore <CIDRS>': expected comma-separated IPv4 networks",
        ),
        (&["init", "--proxy-uid", "root"], "'--proxy-uid <PROXY_UID>'"),
        (
            &["init", "--netns", "/nonexistent/ns"],
            "--netns /nonexistent/ns: no such network namespace file",
        ),
    ] {
        let out = strait().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
