//! Gateway probes: Linkerd's `GET <probe path>` on the target gateway's probe port every
//! probe period, feeding liveness and latency to the mirror (endpoint readiness), to
//! `strait multicluster gateways` and to the `gateway_*` metrics.
//!
//! [`ProbeTracker`] is the pure part (what a probe result does to the state); [`run`]
//! sends the requests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How to probe a gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// HTTP path (`/ready`).
    pub path: String,
    /// Probe port on the gateway (4191).
    pub port: u16,
    /// Time between probes.
    pub period: Duration,
    /// Deadline of one probe.
    pub timeout: Duration,
    /// Consecutive failures before the gateway counts as down.
    pub failure_threshold: u32,
}

/// Latency samples kept for the percentiles.
const WINDOW: usize = 128;

/// What the probes know about one gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayHealth {
    /// Whether the gateway counts as up. False until the first probe answers.
    pub alive: bool,
    /// Probes sent.
    pub probes: u64,
    /// Probes that failed.
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Why the last probe failed, while the gateway is failing.
    pub last_error: Option<String>,
    /// Latencies of recent successful probes, milliseconds, oldest first.
    pub latencies_ms: VecDeque<f64>,
}

impl GatewayHealth {
    /// The `q` quantile (0–1) of recent latencies, if any probe succeeded.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.latencies_ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
        Some(v[rank.min(v.len()) - 1])
    }
}

/// The pure probe state machine.
#[derive(Clone, Debug)]
pub struct ProbeTracker {
    threshold: u32,
    health: GatewayHealth,
}

impl ProbeTracker {
    /// A tracker that declares the gateway down after `threshold` consecutive failures.
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            health: GatewayHealth::default(),
        }
    }

    /// Records one probe's outcome; returns the new state.
    pub fn record(&mut self, outcome: Result<Duration, String>) -> &GatewayHealth {
        let h = &mut self.health;
        h.probes += 1;
        match outcome {
            Ok(latency) => {
                h.alive = true;
                h.consecutive_failures = 0;
                h.last_error = None;
                if h.latencies_ms.len() == WINDOW {
                    h.latencies_ms.pop_front();
                }
                h.latencies_ms.push_back(latency.as_secs_f64() * 1000.0);
            }
            Err(e) => {
                h.failures += 1;
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                h.last_error = Some(e);
                if h.consecutive_failures >= self.threshold {
                    h.alive = false;
                }
            }
        }
        &self.health
    }

    /// The current state.
    pub fn health(&self) -> &GatewayHealth {
        &self.health
    }
}

/// One probe: `GET path` on `addr`, which must answer 200 within `timeout`.
pub async fn probe_once(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Duration, String> {
    let start = tokio::time::Instant::now();
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to the gateway's probe port {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("probe {addr}: {e}"))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("probe path {path:?}: {e}"))?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("probe {addr}{path}: {e}"))?;
        if rsp.status() == hyper::StatusCode::OK {
            Ok(start.elapsed())
        } else {
            Err(format!("probe {addr}{path} answered {}", rsp.status()))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe {addr}{path} timed out after {timeout:?}")),
    }
}

/// Probes `addr` every period until `shutdown`, publishing each new state on `tx`.
/// `addr` is resolved again before each probe (gateway addresses may be DNS names).
pub async fn run<F, Fut>(
    cfg: ProbeConfig,
    addr: F,
    tx: watch::Sender<GatewayHealth>,
    shutdown: impl std::future::Future<Output = ()>,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<SocketAddr, String>>,
{
    let mut tracker = ProbeTracker::new(cfg.failure_threshold);
    let mut tick = tokio::time::interval(cfg.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => return,
        }
        let outcome = match addr().await {
            Ok(a) => probe_once(a, &cfg.path, cfg.timeout).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::debug!(error = %e, "gateway probe failed");
        }
        let h = tracker.record(outcome).clone();
        tx.send_replace(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_after_a_success_down_after_threshold_failures() {
        let mut t = ProbeTracker::new(3);
        assert!(!t.health().alive, "unknown until the first answer");
        assert!(t.record(Ok(Duration::from_millis(2))).alive);
        assert!(t.record(Err("refused".into())).alive);
        assert!(t.record(Err("refused".into())).alive);
        let h = t.record(Err("refused".into())).clone();
        assert!(!h.alive);
        assert_eq!((h.probes, h.failures, h.consecutive_failures), (4, 3, 3));
        assert_eq!(h.last_error.as_deref(), Some("refused"));
        let h = t.record(Ok(Duration::from_millis(4))).clone();
        assert!(h.alive);
        assert_eq!((h.consecutive_failures, h.last_error), (0, None));
    }

    #[test]
    fn quantiles_over_a_bounded_window() {
        let mut t = ProbeTracker::new(1);
        assert_eq!(t.health().latency_quantile(0.5), None);
        for ms in 1..=200u64 {
            t.record(Ok(Duration::from_millis(ms)));
        }
        let h = t.health();
        assert_eq!(h.latencies_ms.len(), WINDOW);
        // The window holds 73..=200 ms.
        assert_eq!(h.latency_quantile(0.0), Some(73.0));
        assert_eq!(h.latency_quantile(0.5), Some(136.0));
        assert_eq!(h.latency_quantile(0.99), Some(199.0));
        assert_eq!(h.latency_quantile(1.0), Some(200.0));
    }

    #[tokio::test]
    async fn probes_a_real_http_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 1024];
                let n = s.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /ready HTTP/1.1"));
                s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        let t = Duration::from_secs(5);
        assert!(probe_once(addr, "/ready", t).await.is_ok());
        let e = probe_once(addr, "/ready", t).await.unwrap_err();
        assert!(e.contains("503"), "{e}");
        server.await.unwrap();
        // Nothing listens any more.
        let e = probe_once(addr, "/ready", t).await.unwrap_err();
        assert!(e.contains("cannot connect to the gateway's probe port"), "{e}");
    }
}
