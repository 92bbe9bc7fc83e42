//! Test support: a real controller (in process, local store, port 0), pods made of an
//! application and a real `strait_proxy::run` in explicit mode on their own 127.x
//! address, and small HTTP helpers. Every wait is bounded.
//!
//! Proxies bind fixed ports (4140, 4143, 4191) on their pod's address, and nextest runs the
//! test files at the same time, so each file keeps to its own addresses: `pair` 127.41,
//! `discovery` 127.42, `policy` 127.43 (and 127.44.11), `identity` 127.44.1–4, `robustness`
//! 127.45; the workspace's `cross_cluster` test uses 127.46 and `bench gateway` 127.47.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_api::store::local::LocalStore;
use strait_api::{KindId, ObjectKey, Store};
use strait_controller::run::{Bound, LocalIdentity};
use strait_controller::testing::{ScratchCluster, cidrs, scratch_identity, token_file};
use strait_proxy::config::env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The service every test talks to.
pub const MYAPP: &str = "myapp.production.svc.cluster.local";
/// The identity of the `web` client pod the pair tests run.
pub const CLIENT_ID: &str = "web.production.serviceaccount.identity.linkerd.cluster.local";

/// A running control plane.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub store: LocalStore,
    pub id: LocalIdentity,
    pub bound: Bound,
    scratch: ScratchCluster,
}

impl Cluster {
    /// Starts a controller issuing certificates of `lifetime`, on 127.0.0.1.
    pub async fn start(lifetime: Duration) -> Self {
        Self::start_on(IpAddr::from([127, 0, 0, 1]), lifetime).await
    }

    /// Starts a controller listening on `ip`.
    pub async fn start_on(ip: IpAddr, lifetime: Duration) -> Self {
        let (dir, id) = scratch_identity();
        let scratch = ScratchCluster::start(&id, ip, |cfg| {
            cfg.issuance_lifetime = lifetime;
            // Loopback pods are the cluster's pods (ServerAuthorizations without networks).
            cfg.inbound.cluster_networks = cidrs(&["10.0.0.0/8", "127.0.0.0/8"]);
        })
        .await;
        Self {
            dir,
            store: scratch.store.clone(),
            id,
            bound: scratch.bound,
            scratch,
        }
    }

    /// Stops the controller (proxies keep running).
    pub async fn stop(&mut self) {
        self.scratch.stop().await;
    }

    pub async fn apply(&self, yaml: &str) {
        self.scratch.apply(yaml).await;
    }

    pub async fn delete_pod(&self, name: &str) {
        self.store
            .delete(&ObjectKey::new(KindId::Pod, "production", name))
            .await
            .unwrap();
    }

    /// The `myapp` Service: http 80→8080, grpc 81→8081, tcp 9000→9000.
    pub async fn myapp_service(&self) {
        self.apply(
            "apiVersion: v1\nkind: Service\nmetadata: {name: myapp, namespace: production}\nspec:\n  selector: {app: myapp}\n  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 81, targetPort: 8081}, {name: tcp, port: 9000, targetPort: 9000}]\n",
        )
        .await;
    }

    /// Registers a pod at `ip` (meshed: the injector's label).
    pub async fn pod(&self, name: &str, app: &str, sa: &str, ip: IpAddr, meshed: bool) {
        let mesh = if meshed {
            ", linkerd.io/control-plane-ns: linkerd"
        } else {
            ""
        };
        self.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: production\n  labels: {{app: {app}, linkerd.io/proxy-deployment: {app}{mesh}}}\nspec:\n  serviceAccountName: {sa}\n  containers: [{{name: app, image: x}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
        ))
        .await;
    }

    /// The environment of a proxy for pod `name` (service account `sa`) at `ip`.
    pub fn proxy_env(&self, name: &str, sa: &str, ip: IpAddr) -> HashMap<&'static str, String> {
        let token = token_file(self.dir.path(), &self.id, sa, name);
        HashMap::from([
            (env::CAPTURE, "explicit".to_string()),
            (env::DESTINATION_SVC_ADDR, self.bound.destination.to_string()),
            (env::IDENTITY_SVC_ADDR, self.bound.identity.to_string()),
            (env::IDENTITY_TRUST_ANCHORS, self.id.anchors.to_pem()),
            (
                env::IDENTITY_LOCAL_NAME,
                format!("{sa}.production.serviceaccount.identity.linkerd.cluster.local"),
            ),
            (env::IDENTITY_TOKEN_FILE, token.display().to_string()),
            (env::INBOUND_LISTEN_ADDR, format!("{ip}:4143")),
            (env::OUTBOUND_LISTEN_ADDR, format!("{ip}:4140")),
            (env::ADMIN_LISTEN_ADDR, format!("{ip}:4191")),
            (env::LOG, "warn,linkerd=info".to_string()),
        ])
    }
}

/// A running proxy.
pub struct Proxy {
    pub bound: strait_proxy::Bound,
    stop: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy with `vars`; does not wait for readiness.
    pub async fn start(vars: HashMap<&'static str, String>) -> Self {
        let cfg = strait_proxy::Config::from_source(|k| vars.get(k).cloned(), SystemTime::now()).unwrap();
        let (btx, brx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            strait_proxy::run(
                cfg,
                move |b| {
                    let _ = btx.send(b);
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
            .unwrap();
        });
        let bound = brx.await.unwrap();
        Self {
            bound,
            stop: Some(stop),
            handle,
        }
    }

    /// Starts a proxy and waits (≤ 10 s) until `/ready` says 200.
    pub async fn ready(vars: HashMap<&'static str, String>) -> Self {
        let p = Self::start(vars).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if get_status(p.bound.admin, "/ready").await == 200 {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "proxy not ready within 10s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts draining; the task ends when drained.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub async fn metrics(&self) -> String {
        http_get(self.bound.admin, "/metrics").await.1
    }
}

/// Status of a plain GET.
pub async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    match TcpStream::connect(addr).await {
        Ok(_) => http_get(addr, path).await.0,
        Err(_) => 0,
    }
}

/// A GET over a fresh HTTP/1.1 connection: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path).await
}

/// A request without a body over a fresh HTTP/1.1 connection: (status, body).
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("admin answers within 10s")
        .unwrap();
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An HTTP/1 client connection to `proxy` (keep-alive).
pub async fn h1_client(proxy: SocketAddr) -> H1 {
    H1 {
        addr: proxy,
        send: h1_connect(proxy).await,
    }
}

async fn h1_connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    s
}

/// An HTTP/1 client of one address that connects again when its connection closes, as
/// HTTP clients do after `connection: close` (the proxy's answer to an error).
pub struct H1 {
    addr: SocketAddr,
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    /// Whether the current connection has closed.
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// The connection, ready for a request: a new one if the last one closed.
    pub async fn ready(&mut self) -> &mut hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        if self.send.ready().await.is_err() {
            self.send = h1_connect(self.addr).await;
            self.send.ready().await.unwrap();
        }
        &mut self.send
    }
}

/// An HTTP/2 prior-knowledge client connection to `proxy`.
pub async fn h2_client(proxy: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(TcpStream::connect(proxy).await.unwrap());
    let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    s
}

/// GET `path` of `authority` through an HTTP/1 connection: (status, headers, body).
pub async fn h1_get(c: &mut H1, authority: &str, path: &str) -> (u16, http::HeaderMap, String) {
    h1_get_with(c, authority, path, &[]).await
}

/// [`h1_get`] with extra request headers.
pub async fn h1_get_with(
    c: &mut H1,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let c = c.ready().await;
    let mut req = Request::get(path).header("host", authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = tokio::time::timeout(
        Duration::from_secs(10),
        c.send_request(req.body(Full::default()).unwrap()),
    )
    .await
    .expect("a response within 10s")
    .unwrap();
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// What test applications count.
#[derive(Default)]
pub struct AppStats {
    pub requests: AtomicU64,
}

/// An HTTP application (HTTP/1 and HTTP/2) on `addr` answering
/// `pod=<name> version=<v> path=<p>`; `/slow` waits 1.5 s first, `/busy` 60 ms.
pub async fn http_app(addr: SocketAddr, name: &'static str) -> Arc<AppStats> {
    let l = TcpListener::bind(addr).await.unwrap();
    let stats = Arc::new(AppStats::default());
    let st = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { return };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    st.requests.fetch_add(1, Ordering::Relaxed);
                    async move {
                        // `Upgrade: echo` switches protocols, then echoes what it reads
                        // after a greeting naming this pod.
                        if req.headers().get("upgrade").is_some_and(|u| u == "echo") {
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(up) = on.await {
                                    let mut io = TokioIo::new(up);
                                    let _ = io.write_all(format!("hello from {name}\n").as_bytes()).await;
                                    let (mut r, mut w) = tokio::io::split(io);
                                    let _ = tokio::io::copy(&mut r, &mut w).await;
                                }
                            });
                            let rsp = Response::builder()
                                .status(101)
                                .header("connection", "upgrade")
                                .header("upgrade", "echo")
                                .body(Full::default())
                                .unwrap();
                            return Ok::<_, Infallible>(rsp);
                        }
                        match req.uri().path() {
                            "/slow" => tokio::time::sleep(Duration::from_millis(1500)).await,
                            "/busy" => tokio::time::sleep(Duration::from_millis(60)).await,
                            _ => {}
                        }
                        let host = req
                            .headers()
                            .get("host")
                            .map(|h| h.to_str().unwrap_or("").to_string())
                            .or_else(|| req.uri().authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        let body = format!(
                            "pod={name} version={:?} path={} host={host} orig={}",
                            req.version(),
                            req.uri().path(),
                            req.headers().contains_key("l5d-orig-proto")
                        );
                        let mut rsp = Response::new(Full::new(Bytes::from(body)));
                        // Who the proxy said called (`l5d-client-id`), for identity tests.
                        if let Some(id) = req.headers().get("l5d-client-id") {
                            rsp.headers_mut().insert("app-saw-client-id", id.clone());
                        }
                        // An ingress proxy's routing header, which it must not pass on.
                        if let Some(v) = req.headers().get("l5d-dst-override") {
                            rsp.headers_mut().insert("app-saw-dst-override", v.clone());
                        }
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    stats
}

/// A TCP echo application on `addr`.
pub async fn echo_app(addr: SocketAddr) {
    let l = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

/// The sum of every `name` series carrying the labels in `want`.
pub fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{')?;
            (n == name && want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The value of the series `name{labels…}` whose label set contains every `want` pair.
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{')?;
            (n == name).then_some((labels, value))
        })
        .find(|(labels, _)| want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
        .and_then(|(_, v)| v.parse().ok())
}

/// Sends 20 messages over `s` (an echo upgraded or tunnelled through the pair), each
/// echoed back intact within 10 s.
pub async fn echo_messages<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, round: usize) {
    for i in 0..20 {
        let msg = format!("message {i} of round {round}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
            .await
            .expect("the echo within 10s")
            .unwrap();
        assert_eq!(got, msg.as_bytes());
    }
}

/// Requests a server proxy's `metrics` count as arrived over mTLS from [`CLIENT_ID`].
pub fn inbound_mtls_requests(metrics: &str) -> Option<f64> {
    metric(
        metrics,
        "request_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", CLIENT_ID),
        ],
    )
}

/// Retries `f` until it returns true, for at most `within`.
pub async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
