//! Linkerd's golden metrics, rendered in Prometheus text.
//!
//! Invariants: a label set is rendered into its string once, when the connection, target
//! or endpoint it describes is first seen, and its counters live in an `Arc` that the
//! data path holds; the request path only does relaxed atomic adds (and a read lock on
//! the short per-label-set status list). Registries only grow: Linkerd's proxies keep
//! series for their lifetime too.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// Linkerd's `response_latency_ms` bucket bounds.
pub const LATENCY_BUCKETS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 10_000,
    20_000, 30_000, 40_000, 50_000,
];

/// Renders `name="value"` pairs (values escaped) joined by commas.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// Per status code: response counts by classification and the latency histogram.
#[derive(Debug)]
struct StatusStats {
    status: u16,
    success: AtomicU64,
    failure: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
}

/// HTTP counters for one label set.
#[derive(Debug)]
pub struct HttpStats {
    labels: String,
    requests: AtomicU64,
    statuses: RwLock<Vec<Arc<StatusStats>>>,
}

impl HttpStats {
    /// A request arrived.
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// A response with `status` after `latency` (time to response headers); `success` is
    /// Linkerd's classification (5xx and gRPC errors fail).
    pub fn response(&self, status: u16, success: bool, latency: Duration) {
        let s = self.status(status);
        if success {
            s.success.fetch_add(1, Relaxed);
        } else {
            s.failure.fetch_add(1, Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let ms = us.div_ceil(1000);
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        s.buckets[i].fetch_add(1, Relaxed);
        s.sum_us.fetch_add(us, Relaxed);
    }

    fn status(&self, status: u16) -> Arc<StatusStats> {
        if let Some(s) = self
            .statuses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|s| s.status == status)
        {
            return s.clone();
        }
        let mut w = self.statuses.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = w.iter().find(|s| s.status == status) {
            return s.clone();
        }
        let s = Arc::new(StatusStats {
            status,
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
        });
        w.push(s.clone());
        s
    }
}

/// TCP counters for one label set.
#[derive(Debug)]
pub struct TcpStats {
    labels: String,
    open_total: AtomicU64,
    /// Clean closes (`errno=""`).
    close_total: AtomicU64,
    /// Closes after an I/O error, by errno.
    close_errors: Mutex<Vec<(i32, u64)>>,
    open: AtomicI64,
    read: AtomicU64,
    write: AtomicU64,
}

/// An open connection; closing is counted when it drops, under the errno of the first
/// I/O error it saw (Linkerd's `errno` label), if any.
#[derive(Debug)]
pub struct OpenConn {
    stats: Arc<TcpStats>,
    errno: Option<i32>,
}

impl OpenConn {
    /// Notes `e` as the reason the connection closes (the first OS error wins).
    pub fn failed(&mut self, e: &std::io::Error) {
        if self.errno.is_none() {
            self.errno = e.raw_os_error();
        }
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        match self.errno {
            None => {
                self.stats.close_total.fetch_add(1, Relaxed);
            }
            Some(e) => {
                let mut errors = self
                    .stats
                    .close_errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match errors.iter_mut().find(|(x, _)| *x == e) {
                    Some((_, n)) => *n += 1,
                    None => errors.push((e, 1)),
                }
            }
        }
        self.stats.open.fetch_sub(1, Relaxed);
    }
}

/// The symbolic name of an errno, as Linkerd labels `tcp_close_total` (`ECONNRESET`, …).
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc_errno::EPIPE => "EPIPE",
        libc_errno::ENETUNREACH => "ENETUNREACH",
        libc_errno::ECONNABORTED => "ECONNABORTED",
        libc_errno::ECONNRESET => "ECONNRESET",
        libc_errno::ETIMEDOUT => "ETIMEDOUT",
        libc_errno::ECONNREFUSED => "ECONNREFUSED",
        libc_errno::EHOSTUNREACH => "EHOSTUNREACH",
        libc_errno::EHOSTDOWN => "EHOSTDOWN",
        libc_errno::ENOTCONN => "ENOTCONN",
        libc_errno::EBADF => "EBADF",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// The Linux errno values named in metrics.
mod libc_errno {
    pub const EBADF: i32 = 9;
    pub const EPIPE: i32 = 32;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNABORTED: i32 = 103;
    pub const ECONNRESET: i32 = 104;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
}

impl TcpStats {
    /// Counts a connection opening until the returned guard drops.
    pub fn open(self: &Arc<Self>) -> OpenConn {
        self.open_total.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
        OpenConn {
            stats: self.clone(),
            errno: None,
        }
    }

    /// Bytes read from the peer.
    pub fn add_read(&self, n: usize) {
        self.read.fetch_add(n as u64, Relaxed);
    }

    /// Bytes written to the peer.
    pub fn add_write(&self, n: usize) {
        self.write.fetch_add(n as u64, Relaxed);
    }
}

/// A named counter family (`inbound_http_authz_deny_total`, …): its help text and series.
type Family = (&'static str, HashMap<String, Arc<AtomicU64>>);

/// All series of one proxy.
#[derive(Debug, Default)]
pub struct Registry {
    http: RwLock<HashMap<String, Arc<HttpStats>>>,
    tcp: RwLock<HashMap<String, Arc<TcpStats>>>,
    counters: RwLock<std::collections::BTreeMap<&'static str, Family>>,
}

fn get_or_insert<T>(
    map: &RwLock<HashMap<String, Arc<T>>>,
    key: String,
    make: impl FnOnce(String) -> T,
) -> Arc<T> {
    if let Some(v) = map.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return v.clone();
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.clone())
        .or_insert_with(|| Arc::new(make(key)))
        .clone()
}

impl Registry {
    /// The HTTP counters for `labels` (from [`labels`]).
    pub fn http(&self, labels: String) -> Arc<HttpStats> {
        get_or_insert(&self.http, labels, |labels| HttpStats {
            labels,
            requests: AtomicU64::new(0),
            statuses: RwLock::new(Vec::new()),
        })
    }

    /// The TCP counters for `labels`.
    pub fn tcp(&self, labels: String) -> Arc<TcpStats> {
        get_or_insert(&self.tcp, labels, |labels| TcpStats {
            labels,
            open_total: AtomicU64::new(0),
            close_total: AtomicU64::new(0),
            close_errors: Mutex::default(),
            open: AtomicI64::new(0),
            read: AtomicU64::new(0),
            write: AtomicU64::new(0),
        })
    }

    /// The counter `name{labels}` (created at zero); `help` describes the family.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: String) -> Arc<AtomicU64> {
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .and_then(|(_, f)| f.get(&labels))
        {
            return c.clone();
        }
        let mut w = self.counters.write().unwrap_or_else(PoisonError::into_inner);
        w.entry(name)
            .or_insert_with(|| (help, HashMap::new()))
            .1
            .entry(labels)
            .or_default()
            .clone()
    }

    /// Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut http: Vec<Arc<HttpStats>> = self
            .http
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        http.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut tcp: Vec<Arc<TcpStats>> = self
            .tcp
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        tcp.sort_by(|a, b| a.labels.cmp(&b.labels));

        out.push_str("# HELP request_total Total count of HTTP requests.\n# TYPE request_total counter\n");
        // Label sets created ahead of use (targets resolved but never requested) stay silent.
        http.retain(|h| h.requests.load(Relaxed) > 0);
        for h in &http {
            let _ = writeln!(out, "request_total{{{}}} {}", h.labels, h.requests.load(Relaxed));
        }
        let statuses = |h: &HttpStats| {
            let mut v = h.statuses.read().unwrap_or_else(PoisonError::into_inner).clone();
            v.sort_by_key(|s| s.status);
            v
        };
        out.push_str("# HELP response_total Total count of HTTP responses.\n# TYPE response_total counter\n");
        for h in &http {
            for s in statuses(h) {
                for (class, n) in [("success", &s.success), ("failure", &s.failure)] {
                    let n = n.load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "response_total{{{},status_code=\"{}\",classification=\"{class}\"}} {n}",
                            h.labels, s.status
                        );
                    }
                }
            }
        }
        out.push_str(
            "# HELP response_latency_ms Elapsed times between a request's headers being received and its response's headers being sent.\n# TYPE response_latency_ms histogram\n",
        );
        for h in &http {
            for s in statuses(h) {
                let mut cumulative = 0;
                for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
                    cumulative += s.buckets[i].load(Relaxed);
                    let _ = writeln!(
                        out,
                        "response_latency_ms_bucket{{{},status_code=\"{}\",le=\"{bound}\"}} {cumulative}",
                        h.labels, s.status
                    );
                }
                cumulative += s.buckets[LATENCY_BUCKETS_MS.len()].load(Relaxed);
                let _ = writeln!(
                    out,
                    "response_latency_ms_bucket{{{},status_code=\"{}\",le=\"+Inf\"}} {cumulative}",
                    h.labels, s.status
                );
                let _ = writeln!(
                    out,
                    "response_latency_ms_count{{{},status_code=\"{}\"}} {cumulative}",
                    h.labels, s.status
                );
                let _ = writeln!(
                    out,
                    "response_latency_ms_sum{{{},status_code=\"{}\"}} {}",
                    h.labels,
                    s.status,
                    s.sum_us.load(Relaxed) as f64 / 1000.0
                );
            }
        }
        type Pick = fn(&TcpStats) -> i64;
        let tcp_series: [(&str, &str, &str, Pick); 5] = [
            (
                "tcp_open_total",
                "counter",
                "Total count of opened connections.",
                |t| t.open_total.load(Relaxed) as i64,
            ),
            (
                "tcp_close_total",
                "counter",
                "Total count of closed connections.",
                |t| t.close_total.load(Relaxed) as i64,
            ),
            (
                "tcp_open_connections",
                "gauge",
                "Number of currently-open connections.",
                |t| t.open.load(Relaxed),
            ),
            (
                "tcp_read_bytes_total",
                "counter",
                "Total count of bytes read from peers.",
                |t| t.read.load(Relaxed) as i64,
            ),
            (
                "tcp_write_bytes_total",
                "counter",
                "Total count of bytes written to peers.",
                |t| t.write.load(Relaxed) as i64,
            ),
        ];
        for (name, kind, help, pick) in tcp_series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for t in &tcp {
                if name != "tcp_close_total" {
                    let _ = writeln!(out, "{name}{{{}}} {}", t.labels, pick(t));
                    continue;
                }
                let _ = writeln!(out, "{name}{{{},errno=\"\"}} {}", t.labels, pick(t));
                let errors = t.close_errors.lock().unwrap_or_else(PoisonError::into_inner);
                for (e, n) in errors.iter() {
                    let _ = writeln!(out, "{name}{{{},errno=\"{}\"}} {n}", t.labels, errno_name(*e));
                }
            }
        }
        for (name, (help, series)) in self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let mut series: Vec<_> = series.iter().collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{{{labels}}} {}", v.load(Relaxed));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_linkerd_names_labels_and_buckets() {
        let r = Registry::default();
        let h = r.http(labels(&[("direction", "inbound"), ("authority", "a\"b")]));
        h.request();
        h.request();
        h.response(200, true, Duration::from_micros(1500));
        h.response(503, false, Duration::from_millis(70_000));
        let t = r.tcp(labels(&[("direction", "inbound"), ("peer", "src")]));
        {
            let _c = t.open();
            t.add_read(10);
            t.add_write(7);
        }
        {
            let mut c = t.open();
            c.failed(&std::io::Error::from_raw_os_error(104));
            c.failed(&std::io::Error::from_raw_os_error(32));
        }
        let _still = t.open();
        let text = r.render();
        let l = r#"direction="inbound",authority="a\"b""#;
        for line in [
            format!("request_total{{{l}}} 2"),
            format!("response_total{{{l},status_code=\"200\",classification=\"success\"}} 1"),
            format!("response_total{{{l},status_code=\"503\",classification=\"failure\"}} 1"),
            format!("response_latency_ms_bucket{{{l},status_code=\"200\",le=\"1\"}} 0"),
            format!("response_latency_ms_bucket{{{l},status_code=\"200\",le=\"2\"}} 1"),
            format!("response_latency_ms_bucket{{{l},status_code=\"503\",le=\"50000\"}} 0"),
            format!("response_latency_ms_bucket{{{l},status_code=\"503\",le=\"+Inf\"}} 1"),
            format!("response_latency_ms_count{{{l},status_code=\"200\"}} 1"),
            format!("response_latency_ms_sum{{{l},status_code=\"200\"}} 1.5"),
            "tcp_open_total{direction=\"inbound\",peer=\"src\"} 3".to_string(),
            "tcp_close_total{direction=\"inbound\",peer=\"src\",errno=\"\"} 1".to_string(),
            "tcp_close_total{direction=\"inbound\",peer=\"src\",errno=\"ECONNRESET\"} 1".to_string(),
            "tcp_open_connections{direction=\"inbound\",peer=\"src\"} 1".to_string(),
            "tcp_read_bytes_total{direction=\"inbound\",peer=\"src\"} 10".to_string(),
            "tcp_write_bytes_total{direction=\"inbound\",peer=\"src\"} 7".to_string(),
            "# TYPE response_latency_ms histogram".to_string(),
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
        }
    }
}
