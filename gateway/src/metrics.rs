//! The gateway's metrics, rendered as Prometheus text on the admin port.
//!
//! Linkerd's gateway health metrics keep their names, types and label
//! (`target_cluster_name`, one series per link): `gateway_alive`,
//! `gateway_enabled`, `gateway_latency` (last probe, ms), the
//! `gateway_probe_latency_ms` histogram with Linkerd's buckets and
//! `gateway_probes{probe_successful}`. Linkerd's service mirror measures these
//! with HTTP probes of the remote `/ready`; here the probe is a header-only
//! stream over the link itself, so it measures the path traffic takes.
//! Link metrics (`gateway_link_*`) and inbound metrics (`gateway_inbound_*`)
//! are Strait's own.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::link::LinkFailure;
use crate::proto::header::RefusalReason;
use crate::relay::ByteCounters;

/// Linkerd's `gateway_probe_latency_ms` buckets.
pub const PROBE_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1000.0, 2000.0,
    3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// Counts per refusal reason.
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; RefusalReason::ALL.len()]);

impl Refusals {
    /// Counts one refusal.
    pub fn add(&self, reason: RefusalReason) {
        if let Some(i) = RefusalReason::ALL.iter().position(|r| *r == reason) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count for `reason`.
    pub fn get(&self, reason: RefusalReason) -> u64 {
        RefusalReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.0[i].load(Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
struct ProbeState {
    buckets: [u64; PROBE_BUCKETS_MS.len()],
    count: u64,
    sum_ms: f64,
    last_ms: Option<f64>,
    ok: u64,
    failed: u64,
}

/// The metrics of one link to a remote gateway.
#[derive(Debug, Default)]
pub struct LinkMetrics {
    /// 1 while the link is established and its probes answer.
    pub alive: AtomicU64,
    /// Streams currently open on the link (egress).
    pub streams_open: AtomicU64,
    /// Streams opened on the link since start.
    pub streams_total: AtomicU64,
    /// Streams the remote gateway refused, by reason.
    pub refusals: Refusals,
    /// Relayed payload bytes.
    pub bytes: Arc<ByteCounters>,
    /// Smoothed RTT of the current connection, in microseconds.
    pub rtt_us: AtomicU64,
    /// Packets lost, summed over the link's connections.
    pub lost_packets: AtomicU64,
    /// The current connection's path MTU (UDP payload bytes), as discovered.
    pub path_mtu: AtomicU64,
    /// Connections established after the first.
    pub reconnects: AtomicU64,
    /// Connections established by resuming a TLS session (no certificate exchanged).
    pub resumed: AtomicU64,
    failures: [AtomicU64; LinkFailure::ALL.len()],
    last_error: Mutex<Option<String>>,
    probes: Mutex<ProbeState>,
}

impl LinkMetrics {
    /// Records a failed connection attempt and why, with what to do.
    pub fn failed(&self, kind: LinkFailure, message: String) {
        if let Some(i) = LinkFailure::ALL.iter().position(|k| *k == kind) {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
    }

    /// Records an established connection: the last error is history.
    pub fn linked(&self) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Failed attempts of `kind` so far.
    pub fn failures(&self, kind: LinkFailure) -> u64 {
        LinkFailure::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.failures[i].load(Ordering::Relaxed))
    }

    /// Why the last attempt failed, with what to do (`None` once linked).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a finished probe.
    pub fn probe(&self, latency: Option<Duration>) {
        let mut p = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        match latency {
            Some(latency) => {
                let ms = latency.as_secs_f64() * 1000.0;
                p.ok += 1;
                p.count += 1;
                p.sum_ms += ms;
                p.last_ms = Some(ms);
                for (i, le) in PROBE_BUCKETS_MS.iter().enumerate() {
                    if ms <= *le {
                        p.buckets[i] += 1;
                    }
                }
            }
            None => p.failed += 1,
        }
    }

    /// Probes answered and failed so far.
    pub fn probes(&self) -> (u64, u64) {
        let p = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        (p.ok, p.failed)
    }
}

/// Metrics of streams arriving from remote gateways.
#[derive(Debug, Default)]
pub struct InboundMetrics {
    /// Connections from remote gateways currently open.
    pub connections_open: AtomicU64,
    /// Streams currently relayed.
    pub streams_open: AtomicU64,
    /// Streams accepted since start (probes excluded).
    pub streams_total: AtomicU64,
    /// Probes answered.
    pub probes: AtomicU64,
    /// Catalog watches being served to linked clusters' mirrors.
    pub catalog_watches: AtomicU64,
    /// Streams whose open named an endpoint, delivered to it.
    pub named_delivered: AtomicU64,
    /// Streams whose open named an endpoint that was gone or not eligible, delivered to
    /// another one (the opener's endpoint list lagged).
    pub named_elsewhere: AtomicU64,
    /// TLS sessions resumed for linking gateways (shared with [`crate::SessionState`]).
    pub resumed: Arc<AtomicU64>,
    /// Streams refused, by reason.
    pub refusals: Refusals,
    /// Relayed payload bytes (sent = towards the remote gateway).
    pub bytes: Arc<ByteCounters>,
}

/// Metrics of Linkerd's gateway entry on 4143/tcp ([`crate::linkerd_entry`]).
#[derive(Debug, Default)]
pub struct EntryMetrics {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// TLS handshakes that failed (no or untrusted client certificate, wrong ALPN peer).
    pub handshake_failures: AtomicU64,
    /// Connections relayed since start.
    pub streams_total: AtomicU64,
    /// Connections being relayed.
    pub streams_open: AtomicU64,
    /// Connections refused, by reason.
    pub refusals: Refusals,
    /// Relayed payload bytes (sent = towards the client).
    pub bytes: Arc<ByteCounters>,
}

/// All of a gateway's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    links: Mutex<BTreeMap<String, Arc<LinkMetrics>>>,
    /// Inbound (ingress) metrics.
    pub inbound: InboundMetrics,
    /// Linkerd's 4143/tcp entry.
    pub entry: Arc<EntryMetrics>,
}

impl Metrics {
    /// The metrics of the link to `cluster`, created on first use.
    pub fn link(&self, cluster: &str) -> Arc<LinkMetrics> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(cluster.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets the metrics of the link to `cluster` (the link was removed).
    pub fn remove_link(&self, cluster: &str) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(cluster);
    }

    /// Each link's state as JSON (the admin server's `/links`, read by `strait multicluster
    /// gateways` and `check`): `[{"cluster", "alive", "rttMs", "lastError", "errors": {reason: n}}]`.
    pub fn links_json(&self) -> serde_json::Value {
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links
            .iter()
            .map(|(name, m)| {
                let errors: serde_json::Map<String, serde_json::Value> = LinkFailure::ALL
                    .iter()
                    .map(|k| (k.as_str().to_owned(), m.failures(*k).into()))
                    .collect();
                serde_json::json!({
                    "cluster": name,
                    "alive": m.alive.load(Ordering::Relaxed) == 1,
                    "rttMs": m.rtt_us.load(Ordering::Relaxed) as f64 / 1000.0,
                    "lastError": m.last_error(),
                    "errors": errors,
                })
            })
            .collect()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let links: Vec<(String, Arc<LinkMetrics>)> = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = String::new();
        let l = |name: &str| format!("target_cluster_name=\"{}\"", escape(name));
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "gateway_enabled",
            "gauge",
            "1 if the gateway link is configured and enabled.",
        );
        for (name, _) in &links {
            let _ = writeln!(out, "gateway_enabled{{{}}} 1", l(name));
        }
        header(
            &mut out,
            "gateway_alive",
            "gauge",
            "1 if the gateway is alive and 0 if it is not.",
        );
        for (name, m) in &links {
            let _ = writeln!(out, "gateway_alive{{{}}} {}", l(name), load(&m.alive));
        }
        header(
            &mut out,
            "gateway_latency",
            "gauge",
            "Latency of the last probe to the gateway, in ms.",
        );
        for (name, m) in &links {
            let p = m.probes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(ms) = p.last_ms {
                let _ = writeln!(out, "gateway_latency{{{}}} {ms}", l(name));
            }
        }
        header(
            &mut out,
            "gateway_probe_latency_ms",
            "histogram",
            "A histogram of latencies to a gateway in a target cluster.",
        );
        for (name, m) in &links {
            let p = m.probes.lock().unwrap_or_else(PoisonError::into_inner);
            for (le, n) in PROBE_BUCKETS_MS.iter().zip(p.buckets) {
                let _ = writeln!(
                    out,
                    "gateway_probe_latency_ms_bucket{{{},le=\"{le}\"}} {n}",
                    l(name)
                );
            }
            let _ = writeln!(
                out,
                "gateway_probe_latency_ms_bucket{{{},le=\"+Inf\"}} {}",
                l(name),
                p.count
            );
            let _ = writeln!(out, "gateway_probe_latency_ms_sum{{{}}} {}", l(name), p.sum_ms);
            let _ = writeln!(out, "gateway_probe_latency_ms_count{{{}}} {}", l(name), p.count);
        }
        header(
            &mut out,
            "gateway_probes",
            "counter",
            "The number of probes performed to a gateway.",
        );
        for (name, m) in &links {
            let p = m.probes.lock().unwrap_or_else(PoisonError::into_inner);
            // Linkerd's counter is named without `_total`; keep it that way.
            let _ = writeln!(
                out,
                "gateway_probes{{{},probe_successful=\"true\"}} {}",
                l(name),
                p.ok
            );
            let _ = writeln!(
                out,
                "gateway_probes{{{},probe_successful=\"false\"}} {}",
                l(name),
                p.failed
            );
        }

        let gauges: [Series<String>; 3] = [
            ("gateway_link_streams_open", "Streams open on the link.", |m| {
                m.streams_open.load(Ordering::Relaxed).to_string()
            }),
            (
                "gateway_link_rtt_ms",
                "Smoothed RTT of the link's QUIC connection, in ms.",
                |m| (m.rtt_us.load(Ordering::Relaxed) as f64 / 1000.0).to_string(),
            ),
            (
                "gateway_link_path_mtu_bytes",
                "UDP payload size the link's QUIC connection currently sends (path MTU discovery).",
                |m| m.path_mtu.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (metric, help, value) in gauges {
            header(&mut out, metric, "gauge", help);
            for (name, m) in &links {
                let _ = writeln!(out, "{metric}{{{}}} {}", l(name), value(m));
            }
        }
        let counters: [Series<u64>; 4] = [
            ("gateway_link_streams", "Streams opened on the link.", |m| {
                m.streams_total.load(Ordering::Relaxed)
            }),
            (
                "gateway_link_lost_packets",
                "QUIC packets lost on the link.",
                |m| m.lost_packets.load(Ordering::Relaxed),
            ),
            (
                "gateway_link_reconnects",
                "Connections re-established after the first.",
                |m| m.reconnects.load(Ordering::Relaxed),
            ),
            (
                "gateway_link_resumed_connections",
                "Connections established by resuming a TLS session (no certificates exchanged).",
                |m| m.resumed.load(Ordering::Relaxed),
            ),
        ];
        for (metric, help, value) in counters {
            header(&mut out, metric, "counter", help);
            for (name, m) in &links {
                let _ = writeln!(out, "{metric}_total{{{}}} {}", l(name), value(m));
            }
        }
        header(
            &mut out,
            "gateway_link_errors",
            "counter",
            "Failed attempts to link to the remote gateway, by reason.",
        );
        for (name, m) in &links {
            for k in LinkFailure::ALL {
                let _ = writeln!(
                    out,
                    "gateway_link_errors_total{{{},reason=\"{k}\"}} {}",
                    l(name),
                    m.failures(k)
                );
            }
        }
        header(
            &mut out,
            "gateway_link_bytes",
            "counter",
            "Payload bytes relayed over the link.",
        );
        for (name, m) in &links {
            let _ = writeln!(
                out,
                "gateway_link_bytes_total{{{},direction=\"sent\"}} {}",
                l(name),
                load(&m.bytes.sent)
            );
            let _ = writeln!(
                out,
                "gateway_link_bytes_total{{{},direction=\"received\"}} {}",
                l(name),
                load(&m.bytes.received)
            );
        }
        header(
            &mut out,
            "gateway_link_refusals",
            "counter",
            "Streams the remote gateway refused.",
        );
        for (name, m) in &links {
            for r in RefusalReason::ALL {
                let _ = writeln!(
                    out,
                    "gateway_link_refusals_total{{{},reason=\"{r}\"}} {}",
                    l(name),
                    m.refusals.get(r)
                );
            }
        }

        let i = &self.inbound;
        header(
            &mut out,
            "gateway_inbound_connections_open",
            "gauge",
            "Links from remote gateways.",
        );
        let _ = writeln!(
            out,
            "gateway_inbound_connections_open {}",
            load(&i.connections_open)
        );
        header(
            &mut out,
            "gateway_inbound_streams_open",
            "gauge",
            "Inbound streams being relayed.",
        );
        let _ = writeln!(out, "gateway_inbound_streams_open {}", load(&i.streams_open));
        header(
            &mut out,
            "gateway_inbound_streams",
            "counter",
            "Inbound streams accepted.",
        );
        let _ = writeln!(out, "gateway_inbound_streams_total {}", load(&i.streams_total));
        header(&mut out, "gateway_inbound_probes", "counter", "Probes answered.");
        let _ = writeln!(out, "gateway_inbound_probes_total {}", load(&i.probes));
        header(
            &mut out,
            "gateway_inbound_named_endpoint_streams",
            "counter",
            "Inbound streams whose open named an endpoint: delivered to it, or elsewhere when it was gone.",
        );
        for (result, n) in [
            ("delivered", &i.named_delivered),
            ("elsewhere", &i.named_elsewhere),
        ] {
            let _ = writeln!(
                out,
                "gateway_inbound_named_endpoint_streams_total{{result=\"{result}\"}} {}",
                load(n)
            );
        }
        header(
            &mut out,
            "gateway_inbound_resumed_sessions",
            "counter",
            "TLS sessions resumed for linking gateways (no certificates exchanged).",
        );
        let _ = writeln!(out, "gateway_inbound_resumed_sessions_total {}", load(&i.resumed));
        header(
            &mut out,
            "gateway_inbound_catalog_watches",
            "gauge",
            "Catalog watches served to linked clusters' mirrors.",
        );
        let _ = writeln!(
            out,
            "gateway_inbound_catalog_watches {}",
            load(&i.catalog_watches)
        );
        header(
            &mut out,
            "gateway_inbound_refusals",
            "counter",
            "Inbound streams refused.",
        );
        for r in RefusalReason::ALL {
            let _ = writeln!(
                out,
                "gateway_inbound_refusals_total{{reason=\"{r}\"}} {}",
                i.refusals.get(r)
            );
        }
        header(
            &mut out,
            "gateway_inbound_bytes",
            "counter",
            "Payload bytes relayed for remote gateways.",
        );
        let _ = writeln!(
            out,
            "gateway_inbound_bytes_total{{direction=\"sent\"}} {}",
            load(&i.bytes.sent)
        );
        let _ = writeln!(
            out,
            "gateway_inbound_bytes_total{{direction=\"received\"}} {}",
            load(&i.bytes.received)
        );

        let e = &self.entry;
        let counters: [(&str, &str, u64); 3] = [
            (
                "gateway_entry_connections",
                "Connections accepted on Linkerd's TCP gateway entry.",
                load(&e.connections_total),
            ),
            (
                "gateway_entry_handshake_failures",
                "TLS handshakes refused on Linkerd's TCP gateway entry.",
                load(&e.handshake_failures),
            ),
            (
                "gateway_entry_streams",
                "Connections relayed from Linkerd's TCP gateway entry.",
                load(&e.streams_total),
            ),
        ];
        for (metric, help, value) in counters {
            header(&mut out, metric, "counter", help);
            let _ = writeln!(out, "{metric}_total {value}");
        }
        header(
            &mut out,
            "gateway_entry_streams_open",
            "gauge",
            "Connections being relayed from Linkerd's TCP gateway entry.",
        );
        let _ = writeln!(out, "gateway_entry_streams_open {}", load(&e.streams_open));
        header(
            &mut out,
            "gateway_entry_refusals",
            "counter",
            "Connections refused on Linkerd's TCP gateway entry.",
        );
        for r in RefusalReason::ALL {
            let _ = writeln!(
                out,
                "gateway_entry_refusals_total{{reason=\"{r}\"}} {}",
                e.refusals.get(r)
            );
        }
        header(
            &mut out,
            "gateway_entry_bytes",
            "counter",
            "Payload bytes relayed for Linkerd's TCP gateway entry.",
        );
        for (dir, c) in [("sent", &e.bytes.sent), ("received", &e.bytes.received)] {
            let _ = writeln!(
                out,
                "gateway_entry_bytes_total{{direction=\"{dir}\"}} {}",
                load(c)
            );
        }
        out
    }
}

/// A per-link series: name, help, and how to read its value.
type Series<T> = (&'static str, &'static str, fn(&LinkMetrics) -> T);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_linkerd_names_and_a_cumulative_histogram() {
        let metrics = Metrics::default();
        let east = metrics.link("east");
        east.alive.store(1, Ordering::Relaxed);
        east.probe(Some(Duration::from_micros(2500)));
        east.probe(Some(Duration::from_millis(40)));
        east.probe(None);
        metrics.inbound.refusals.add(RefusalReason::UnknownTarget);
        let text = metrics.render();
        for line in [
            "gateway_alive{target_cluster_name=\"east\"} 1",
            "gateway_enabled{target_cluster_name=\"east\"} 1",
            "gateway_latency{target_cluster_name=\"east\"} 40",
            "gateway_probe_latency_ms_bucket{target_cluster_name=\"east\",le=\"2\"} 0",
            "gateway_probe_latency_ms_bucket{target_cluster_name=\"east\",le=\"3\"} 1",
            "gateway_probe_latency_ms_bucket{target_cluster_name=\"east\",le=\"40\"} 2",
            "gateway_probe_latency_ms_bucket{target_cluster_name=\"east\",le=\"+Inf\"} 2",
            "gateway_probe_latency_ms_count{target_cluster_name=\"east\"} 2",
            "gateway_probes{target_cluster_name=\"east\",probe_successful=\"true\"} 2",
            "gateway_probes{target_cluster_name=\"east\",probe_successful=\"false\"} 1",
            "gateway_inbound_refusals_total{reason=\"unknown-target\"} 1",
            "# TYPE gateway_probe_latency_ms histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
