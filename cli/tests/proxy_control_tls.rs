//! The sidecar's TLS to the control plane, end to end: a real controller (in this process,
//! on 127.48.0.1) and real `strait-proxy` processes in explicit mode, each "pod" on its
//! own 127.48.1.x address, configured with Linkerd's `*_SVC_NAME` variables.
//!
//! - Right names: the proxy is certified over TLS, resolves a service over mTLS and
//!   reaches it through its peer; the logs show every control-plane connection was TLS.
//! - A wrong identity name: the proxy never becomes ready and its log says which
//!   variable names which identity, and what the controller presented instead.
//! - A wrong destination name: the proxy is ready (identity is right) but requests fail
//!   with 503 and `l5d-proxy-error`, and the log names the variable.
//!
//! Every wait is bounded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strait_controller::run::{Bound, LocalIdentity};
use strait_controller::testing::{ScratchCluster, cidrs, scratch_identity, token_file};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MYAPP: &str = "myapp.production.svc.cluster.local";
const DESTINATION_ID: &str = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";
const IDENTITY_ID: &str = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";

struct Controller {
    dir: tempfile::TempDir,
    id: LocalIdentity,
    bound: Bound,
    scratch: ScratchCluster,
}

impl Controller {
    async fn start(ip: IpAddr) -> Self {
        let (dir, id) = scratch_identity();
        let scratch = ScratchCluster::start(&id, ip, |cfg| {
            cfg.inbound.cluster_networks = cidrs(&["127.0.0.0/8"]);
        })
        .await;
        Self {
            dir,
            id,
            bound: scratch.bound,
            scratch,
        }
    }

    async fn apply(&self, yaml: &str) {
        self.scratch.apply(yaml).await;
    }

    /// The `myapp` Service (80 → 8080) and its one meshed pod at `ip`.
    async fn myapp(&self, ip: IpAddr) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: myapp, namespace: production}}\nspec:\n  selector: {{app: myapp}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: myapp-1\n  namespace: production\n  labels: {{app: myapp, linkerd.io/control-plane-ns: linkerd}}\nspec:\n  serviceAccountName: myapp\n  containers: [{{name: app, image: x}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
        ))
        .await;
    }

    /// Linkerd's proxy environment for pod `pod` (service account `sa`) at `ip`, with TLS
    /// to every control-plane service.
    fn proxy_env(&self, pod: &str, sa: &str, ip: IpAddr) -> HashMap<&'static str, String> {
        let token = token_file(self.dir.path(), &self.id, sa, pod);
        HashMap::from([
            ("STRAIT_PROXY_CAPTURE", "explicit".to_string()),
            (
                "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
                self.bound.destination.to_string(),
            ),
            ("LINKERD2_PROXY_DESTINATION_SVC_NAME", DESTINATION_ID.to_string()),
            ("LINKERD2_PROXY_POLICY_SVC_ADDR", self.bound.policy.to_string()),
            ("LINKERD2_PROXY_POLICY_SVC_NAME", DESTINATION_ID.to_string()),
            (
                "LINKERD2_PROXY_POLICY_WORKLOAD",
                format!("{{\"ns\":\"production\",\"pod\":\"{pod}\"}}"),
            ),
            (
                "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
                self.bound.identity.to_string(),
            ),
            ("LINKERD2_PROXY_IDENTITY_SVC_NAME", IDENTITY_ID.to_string()),
            ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", self.id.anchors.to_pem()),
            (
                "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
                format!("{sa}.production.serviceaccount.identity.linkerd.cluster.local"),
            ),
            ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", token.display().to_string()),
            ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", format!("{ip}:4143")),
            ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", format!("{ip}:4140")),
            ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", format!("{ip}:4191")),
            // Every control-plane connection is logged with whether it was TLS.
            (
                "LINKERD2_PROXY_LOG",
                "warn,strait_proxy::control=debug".to_string(),
            ),
        ])
    }
}

/// A `strait-proxy` process, killed when dropped; its log is a file.
struct Proxy {
    child: Child,
    log: PathBuf,
    ip: IpAddr,
}

impl Proxy {
    fn spawn(dir: &Path, pod: &str, ip: IpAddr, vars: HashMap<&'static str, String>) -> Self {
        let log = dir.join(format!("{pod}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_strait-proxy"))
            .env_clear()
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("strait-proxy starts");
        Self { child, log, ip }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn admin(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 4191)
    }

    /// Waits (≤ 20 s) for `/ready` to answer 200.
    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status(self.admin(), "/ready").await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "proxy not ready within 20s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (≤ 15 s) until the log contains every one of `parts` on one line.
    async fn logged(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?} within 15s; the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 exchange on a fresh connection: the whole response, or `None` when the
/// connection fails. Bounded by 15 s.
async fn http(addr: SocketAddr, head: &str) -> Option<String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(head.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .expect("an answer within 15s")
}

async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let rsp = http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"),
    )
    .await?;
    rsp.split(' ').nth(1)?.parse().ok()
}

/// A GET of `myapp` through the proxy whose outbound listens at `outbound`.
async fn get_myapp(outbound: SocketAddr) -> String {
    http(
        outbound,
        &format!("GET /hello HTTP/1.1\r\nhost: {MYAPP}:80\r\nconnection: close\r\n\r\n"),
    )
    .await
    .expect("the outbound proxy answers")
}

/// The application: answers every request with `hello from myapp`.
async fn app(addr: SocketAddr) {
    let l = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "hello from myapp";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
}

fn ip(last: [u8; 2]) -> IpAddr {
    IpAddr::from([127, 48, last[0], last[1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_certify_and_resolve_over_tls_to_the_control_plane() {
    let c = Controller::start(ip([0, 1])).await;
    let (server_ip, client_ip) = (ip([1, 2]), ip([1, 3]));
    app(SocketAddr::new(server_ip, 8080)).await;
    c.myapp(server_ip).await;
    // The server logs JSON (Linkerd's `config.linkerd.io/proxy-log-format: json`).
    let mut server_env = c.proxy_env("myapp-1", "myapp", server_ip);
    server_env.insert("LINKERD2_PROXY_LOG_FORMAT", "json".to_string());
    let server = Proxy::spawn(c.dir.path(), "myapp-1", server_ip, server_env);
    let client = Proxy::spawn(
        c.dir.path(),
        "web-1",
        client_ip,
        c.proxy_env("web-1", "web", client_ip),
    );
    server.ready().await;
    client.ready().await;
    server
        .logged(&["control-plane TLS established", "\"service\":\"identity\""])
        .await;
    let log = server.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"].is_object() && v["target"].is_string(),
            "{line}"
        );
    }

    let rsp = get_myapp(SocketAddr::new(client_ip, 4140)).await;
    assert!(
        rsp.starts_with("HTTP/1.1 200") && rsp.ends_with("hello from myapp"),
        "{rsp}\nclient log:\n{}\nserver log:\n{}",
        client.log(),
        server.log()
    );

    // Certified over TLS to the identity service's identity, and discovery and policy
    // over TLS to the destination identity: never a plaintext control-plane connection.
    for (service, identity) in [
        ("identity", IDENTITY_ID),
        ("destination", DESTINATION_ID),
        ("policy", DESTINATION_ID),
    ] {
        client
            .logged(&[
                "control-plane TLS established",
                &format!("service={service}"),
                &format!("identity={identity}"),
            ])
            .await;
    }
    for p in [&client, &server] {
        let log = p.log();
        assert!(!log.contains("plaintext"), "{log}");
        assert!(!log.contains("control-plane connection refused"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_identity_service_name_keeps_the_proxy_unready_and_says_why() {
    let c = Controller::start(ip([2, 1])).await;
    let pod_ip = ip([2, 2]);
    let mut vars = c.proxy_env("web-1", "web", pod_ip);
    // The controller's identity port presents linkerd-identity, not this.
    vars.insert("LINKERD2_PROXY_IDENTITY_SVC_NAME", DESTINATION_ID.to_string());
    // A certificate would be logged ("certified") at info.
    vars.insert(
        "LINKERD2_PROXY_LOG",
        "warn,strait_proxy::control=debug,strait_proxy::identity=info".to_string(),
    );
    let proxy = Proxy::spawn(c.dir.path(), "web-1", pod_ip, vars);

    let line = proxy
        .logged(&[
            "TLS to the identity service",
            &c.bound.identity.to_string(),
            &format!("it must present {DESTINATION_ID} (LINKERD2_PROXY_IDENTITY_SVC_NAME)"),
        ])
        .await;
    eprintln!("the proxy says: {line}");
    assert!(
        line.contains(IDENTITY_ID),
        "what the controller presented: {line}"
    );
    // Retries keep failing the same way: never ready, never certified.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            status(proxy.admin(), "/ready").await,
            Some(503),
            "{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy
        .logged(&["no certificate yet", "LINKERD2_PROXY_IDENTITY_SVC_NAME"])
        .await;
    let log = proxy.log();
    assert!(!log.contains(": certified "), "{log}");
    eprintln!("the whole log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_destination_name_fails_requests_with_linkerds_error() {
    let c = Controller::start(ip([3, 1])).await;
    let (server_ip, client_ip) = (ip([3, 2]), ip([3, 3]));
    app(SocketAddr::new(server_ip, 8080)).await;
    c.myapp(server_ip).await;
    let mut vars = c.proxy_env("web-1", "web", client_ip);
    // The destination port presents linkerd-destination, not this; and no policy, so
    // discovery alone decides.
    vars.insert("LINKERD2_PROXY_DESTINATION_SVC_NAME", IDENTITY_ID.to_string());
    vars.remove("LINKERD2_PROXY_POLICY_SVC_ADDR");
    vars.remove("LINKERD2_PROXY_POLICY_SVC_NAME");
    let client = Proxy::spawn(c.dir.path(), "web-1", client_ip, vars);
    client.ready().await;

    let rsp = get_myapp(SocketAddr::new(client_ip, 4140)).await;
    assert!(rsp.starts_with("HTTP/1.1 503"), "{rsp}");
    assert!(rsp.to_ascii_lowercase().contains("l5d-proxy-error:"), "{rsp}");
    assert!(!rsp.contains("hello from myapp"), "{rsp}");
    let line = client
        .logged(&[
            "TLS to the destination service",
            &c.bound.destination.to_string(),
            &format!("it must present {IDENTITY_ID} (LINKERD2_PROXY_DESTINATION_SVC_NAME)"),
        ])
        .await;
    eprintln!("the proxy says: {line}");
    assert!(
        line.contains(DESTINATION_ID),
        "what the controller presented: {line}"
    );
}
