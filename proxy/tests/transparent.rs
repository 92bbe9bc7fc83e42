//! Transparent capture, as in a Kubernetes pod: two network namespaces ("pods") joined by
//! a veth in 198.18.200.0/24, iptables REDIRECT to the proxies, `SO_ORIGINAL_DST`.
//! Needs root (network namespaces and iptables); it fails, never skips, without it.
//!
//! - server pod 198.18.200.2: the controller, the applications (HTTP on 127.0.0.1:8080, a
//!   server-first protocol on 3306, a TLS-speaking echo on 8443), and its proxy;
//!   PREROUTING redirects arriving port-8080, 8443 and 3306 traffic to 4143 (3306 is
//!   opaque: the client proxy tunnels it to 4143 itself; an unmeshed client's connection
//!   is redirected, and the server proxy forwards it without detection).
//!   Port 8081 (the same application) requires identity
//!   (`LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY`).
//! - client pod 198.18.200.1 (proxy) and .11 (the application's source address): OUTPUT
//!   redirects the application's connections to 4140. Linkerd excludes the proxy by its
//!   UID; this test runs both in one process, so it tells them apart by source address.
//!   A second proxy in ingress mode (`LINKERD2_PROXY_INGRESS_MODE`) serves the source
//!   address .12 on 4150, as an ingress controller's would.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use strait_proxy::config::env;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVER_ID: &str = "myapp.production.serviceaccount.identity.linkerd.cluster.local";

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run command");
    assert!(st.success(), "{args:?} failed");
}

/// Two namespaces and their veth, removed on drop (also after a failed assertion).
struct Pods {
    client: String,
    server: String,
}

impl Pods {
    fn create() -> Self {
        let id = std::process::id();
        let (c, s) = (format!("spt{id}c"), format!("spt{id}s"));
        let p = Pods {
            client: c.clone(),
            server: s.clone(),
        };
        let (cv, sv) = (format!("{c}v"), format!("{s}v"));
        sh(&["ip", "netns", "add", &c]);
        sh(&["ip", "netns", "add", &s]);
        sh(&["ip", "link", "add", &cv, "type", "veth", "peer", "name", &sv]);
        sh(&["ip", "link", "set", &cv, "netns", &c]);
        sh(&["ip", "link", "set", &sv, "netns", &s]);
        sh(&["ip", "-n", &c, "addr", "add", "198.18.200.1/24", "dev", &cv]);
        sh(&["ip", "-n", &c, "addr", "add", "198.18.200.11/24", "dev", &cv]);
        sh(&["ip", "-n", &c, "addr", "add", "198.18.200.12/24", "dev", &cv]);
        sh(&["ip", "-n", &s, "addr", "add", "198.18.200.2/24", "dev", &sv]);
        for (ns, dev) in [(&c, &cv), (&s, &sv)] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sh(&[
            "ip",
            "netns",
            "exec",
            &s,
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            &sv,
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            "8080,8081,8443,3306",
            "-j",
            "REDIRECT",
            "--to-ports",
            "4143",
        ]);
        // The application's source addresses go to their proxy's outbound port.
        for (source, port) in [("198.18.200.11", "4140"), ("198.18.200.12", "4150")] {
            sh(&[
                "ip",
                "netns",
                "exec",
                &c,
                "iptables",
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-s",
                source,
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                port,
            ]);
        }
        p
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the peer.
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread inside network namespace `ns`, on its own runtime.
fn in_netns<R: Send + 'static>(
    ns: &str,
    f: impl AsyncFnOnce() -> R + Send + 'static,
) -> std::thread::JoinHandle<R> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        // SAFETY: setns only changes this thread's network namespace; the fd is valid.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// An application whose server speaks first (as MySQL and SMTP do): a greeting, then echo.
async fn server_first_app(addr: SocketAddr) {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = tcp.write_all(b"220 ready\r\n").await;
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

/// A GET of the server pod's application port from `source`, claiming the caller
/// identity `claimed` in `l5d-client-id`: the whole raw answer.
async fn get_from(source: &str, path: &str, claimed: &str) -> String {
    get(
        source,
        "198.18.200.2:8080",
        path,
        &format!("l5d-client-id: {claimed}\r\n"),
    )
    .await
}

/// A GET of `target` from `source` with the header lines `extra`: the whole raw answer.
async fn get(source: &str, target: &str, path: &str, extra: &str) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = sock.connect(target.parse().unwrap()).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: {MYAPP}\r\n{extra}connection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut rsp = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut rsp))
        .await
        .expect("an answer within 10s")
        .unwrap();
    rsp
}

/// The first flight of a TLS client for `name`: a ClientHello naming it.
fn client_hello(name: &str) -> Vec<u8> {
    use strait_identity::rustls;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut c = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let mut out = Vec::new();
    c.write_tls(&mut out).unwrap();
    out
}

struct FromServer {
    destination: SocketAddr,
    identity: SocketAddr,
    anchors: String,
    token: String,
}

#[test]
fn iptables_redirect_and_original_destination_carry_meshed_http() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root for network namespaces and iptables"
    );
    let pods = Pods::create();
    let (to_client, from_server) = mpsc::channel::<FromServer>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let (metrics_tx, metrics_rx) = mpsc::channel::<String>();

    let server = in_netns(&pods.server, async move || {
        let s_ip: IpAddr = "198.18.200.2".parse().unwrap();
        let cluster = Cluster::start_on(s_ip, Duration::from_secs(3600)).await;
        cluster.myapp_service().await;
        cluster
            .pod("web-1", "web", "web", "198.18.200.1".parse().unwrap(), true)
            .await;
        cluster.pod("myapp-1", "myapp", "myapp", s_ip, true).await;
        http_app("127.0.0.1:8080".parse().unwrap(), "myapp-1").await;
        http_app("127.0.0.1:8081".parse().unwrap(), "myapp-1").await;
        server_first_app("127.0.0.1:3306".parse().unwrap()).await;
        echo_app("127.0.0.1:8443".parse().unwrap()).await;
        let mut vars = cluster.proxy_env("myapp-1", "myapp", s_ip);
        vars.insert(env::CAPTURE, "transparent".into());
        // Dual-stack, as Linkerd's injector sets it with IPv6 on: IPv4 clients arrive
        // IPv4-mapped, and their original destination is still found.
        vars.insert(env::INBOUND_LISTEN_ADDR, "[::]:4143".into());
        vars.insert(env::OUTBOUND_LISTEN_ADDR, "127.0.0.1:4140".into());
        // Reachable from other pods, as Linkerd's injector sets it (scrapers).
        vars.insert(env::ADMIN_LISTEN_ADDR, "0.0.0.0:4191".into());
        vars.insert(env::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION, "3306".into());
        vars.insert(env::INBOUND_PORTS_REQUIRE_IDENTITY, "8081".into());
        let proxy = Proxy::ready(vars).await;
        to_client
            .send(FromServer {
                destination: cluster.bound.destination,
                identity: cluster.bound.identity,
                anchors: cluster.id.anchors.to_pem(),
                token: cluster.id.tokens.mint("production", "web", "web-1"),
            })
            .unwrap();
        let _ = done_rx.await;
        metrics_tx.send(proxy.metrics().await).unwrap();
    });

    let info = from_server
        .recv_timeout(Duration::from_secs(30))
        .expect("the server pod starts");
    let client = in_netns(&pods.client, async move || {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, &info.token).unwrap();
        let vars = std::collections::HashMap::from([
            (env::CAPTURE, "transparent".to_string()),
            (env::DESTINATION_SVC_ADDR, info.destination.to_string()),
            (env::IDENTITY_SVC_ADDR, info.identity.to_string()),
            (env::IDENTITY_TRUST_ANCHORS, info.anchors.clone()),
            (env::IDENTITY_LOCAL_NAME, CLIENT_ID.to_string()),
            (env::IDENTITY_TOKEN_FILE, token.display().to_string()),
            (env::INBOUND_LISTEN_ADDR, "0.0.0.0:4143".to_string()),
        ]);
        let mut ingress_vars = vars.clone();
        ingress_vars.insert(env::INGRESS_MODE, "true".into());
        ingress_vars.insert(env::OUTBOUND_LISTEN_ADDR, "127.0.0.1:4150".into());
        ingress_vars.insert(env::INBOUND_LISTEN_ADDR, "0.0.0.0:4153".into());
        ingress_vars.insert(env::ADMIN_LISTEN_ADDR, "127.0.0.1:4192".into());
        let proxy = Proxy::ready(vars).await;
        let ingress = Proxy::ready(ingress_vars).await;
        // The application dials the server pod's application port directly; iptables
        // hands the connection to the local proxy.
        let mut bodies = Vec::new();
        for i in 0..3 {
            bodies.push(get_from("198.18.200.11", &format!("/t/{i}"), "forged.example").await);
        }
        // A server-first protocol on a default opaque port (MySQL's): discovery marks it
        // opaque, so the proxy skips detection and the greeting arrives at once, not
        // after the detection timeout (10 s).
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("198.18.200.11:0".parse().unwrap()).unwrap();
        let started = std::time::Instant::now();
        let mut tcp = sock.connect("198.18.200.2:3306".parse().unwrap()).await.unwrap();
        let mut greeting = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(15), tcp.read_exact(&mut greeting))
            .await
            .expect("the greeting within 15s")
            .unwrap();
        let greeted_in = started.elapsed();
        tcp.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut pong))
            .await
            .expect("the echo within 10s")
            .unwrap();
        assert_eq!(&pong, b"ping");
        drop(tcp);
        // An unmeshed client's own TLS to the server pod (from the proxy's address, which
        // is not redirected): its ClientHello names another server than the server
        // proxy, so the proxy passes it through to the application untouched.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("198.18.200.1:0".parse().unwrap()).unwrap();
        let mut tcp = sock.connect("198.18.200.2:8443".parse().unwrap()).await.unwrap();
        let hello = client_hello("db.example.org");
        tcp.write_all(&hello).await.unwrap();
        let mut echoed = vec![0u8; hello.len()];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut echoed))
            .await
            .expect("the application's echo within 10s")
            .unwrap();
        assert!(
            echoed == hello,
            "the ClientHello reached the application untouched"
        );
        drop(tcp);
        // An unmeshed HTTP client of the server pod (from the proxy's address, which is
        // not redirected) claiming an identity: the application sees none.
        let plain = get_from("198.18.200.1", "/plain", CLIENT_ID).await;
        assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
        assert!(
            !plain.to_ascii_lowercase().contains("app-saw-client-id"),
            "{plain}"
        );
        // An unmeshed client of the opaque port: the server proxy forwards it untouched.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("198.18.200.1:0".parse().unwrap()).unwrap();
        let mut tcp = sock.connect("198.18.200.2:3306".parse().unwrap()).await.unwrap();
        let mut greeting = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut greeting))
            .await
            .expect("the unmeshed client's greeting within 5s")
            .unwrap();
        assert_eq!(&greeting, b"220 ready\r\n");
        drop(tcp);
        // The port that requires identity: a meshed caller is served, an unmeshed one
        // refused (403) by the server proxy.
        let meshed = get("198.18.200.11", "198.18.200.2:8081", "/required", "").await;
        assert!(meshed.starts_with("HTTP/1.1 200"), "{meshed}");
        let unmeshed = get("198.18.200.1", "198.18.200.2:8081", "/required", "").await;
        assert!(unmeshed.starts_with("HTTP/1.1 403"), "{unmeshed}");
        // Ingress mode: a request naming its target in l5d-dst-override goes there (the
        // Service's endpoints, over mTLS), whatever address the ingress dialled; one
        // without the header goes to the address dialled (nothing listens on 9999). The
        // header names no port: Linkerd's default, 80 (the Service's, to target port 8080).
        let over = format!("l5d-dst-override: {MYAPP}\r\n");
        let routed = get("198.18.200.12", "198.18.200.2:9999", "/ingress", &over).await;
        assert!(
            routed.starts_with("HTTP/1.1 200")
                && routed.ends_with(&format!(
                    "pod=myapp-1 version=HTTP/1.1 path=/ingress host={MYAPP} orig=false"
                )),
            "{routed}"
        );
        assert!(
            !routed.to_ascii_lowercase().contains("app-saw-dst-override"),
            "the ingress proxy spends the header: {routed}"
        );
        let dialled = get("198.18.200.12", "198.18.200.2:9999", "/ingress", "").await;
        assert!(dialled.starts_with("HTTP/1.1 502"), "{dialled}");
        // The header is not a way around the proxy's refusal of loopback targets.
        let looped = get(
            "198.18.200.12",
            "198.18.200.2:8080",
            "/ingress",
            "l5d-dst-override: localhost:8080\r\n",
        )
        .await;
        assert!(
            looped.starts_with("HTTP/1.1 502") && looped.contains("not known to discovery"),
            "{looped}"
        );
        // Nor are addresses: the unspecified address (this host), a mapped loopback one.
        for named in ["0.0.0.0:4150", "[::ffff:127.0.0.1]:4150", "198.18.200.2:8080"] {
            let refused = get(
                "198.18.200.12",
                "198.18.200.2:8080",
                "/ingress",
                &format!("l5d-dst-override: {named}\r\n"),
            )
            .await;
            assert!(refused.starts_with("HTTP/1.1 400"), "{named}: {refused}");
        }
        // Without ingress mode the header is ignored: the request goes where it was sent.
        let ignored = get("198.18.200.11", "198.18.200.2:9999", "/ingress", &over).await;
        assert!(ignored.starts_with("HTTP/1.1 502"), "{ignored}");
        // A meshed scraper: the application asks the server pod's admin port for its
        // metrics; its proxy finds a meshed pod there and sends HTTP/2 over mTLS, which
        // the admin server terminates, as a meshed Prometheus scrapes Linkerd's proxies.
        let scraped = get("198.18.200.11", "198.18.200.2:4191", "/metrics", "").await;
        assert!(
            scraped.starts_with("HTTP/1.1 200") && scraped.contains("\nrequest_total{"),
            "{}",
            &scraped[..scraped.len().min(400)]
        );
        let ingress_metrics = ingress.metrics().await;
        (
            bodies,
            greeting,
            greeted_in,
            proxy.metrics().await,
            ingress_metrics,
        )
    })
    .join()
    .expect("client pod thread");
    let _ = done_tx.send(());
    let server_metrics = metrics_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    server.join().expect("server pod thread");

    let (bodies, greeting, greeted_in, client_metrics, ingress_metrics) = client;
    assert_eq!(
        metric(
            &ingress_metrics,
            "response_total",
            &[
                ("direction", "outbound"),
                ("authority", &format!("{MYAPP}:80")),
                ("target_addr", "198.18.200.2:8080"),
                ("server_id", SERVER_ID),
                ("status_code", "200"),
            ]
        ),
        Some(1.0),
        "the ingress proxy counted the overridden request under the Service, over mTLS: {ingress_metrics}"
    );
    assert_eq!(
        metric(
            &client_metrics,
            "response_total",
            &[
                ("direction", "outbound"),
                ("target_addr", "198.18.200.2:4191"),
                ("server_id", SERVER_ID),
                ("status_code", "200"),
            ]
        ),
        Some(1.0),
        "the scrape crossed mTLS to the server proxy's admin port: {client_metrics}"
    );
    assert_eq!(
        metric(
            &server_metrics,
            "inbound_http_authz_deny_total",
            &[
                ("target_addr", "127.0.0.1:8081"),
                ("srv_name", "all-authenticated")
            ]
        ),
        Some(1.0),
        "the unmeshed request to the port that requires identity was refused: {server_metrics}"
    );
    assert_eq!(&greeting, b"220 ready\r\n");
    assert!(
        greeted_in < Duration::from_secs(3),
        "the opaque port skipped detection: greeted after {greeted_in:?}"
    );
    for (i, rsp) in bodies.iter().enumerate() {
        assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
        assert!(
            rsp.ends_with(&format!(
                "pod=myapp-1 version=HTTP/1.1 path=/t/{i} host={MYAPP} orig=false"
            )),
            "{rsp}"
        );
        // The forged caller identity was replaced by the one mTLS proved.
        assert!(
            rsp.to_ascii_lowercase()
                .contains(&format!("app-saw-client-id: {CLIENT_ID}")),
            "{rsp}"
        );
    }
    assert_eq!(
        metric(
            &client_metrics,
            "request_total",
            &[
                ("direction", "outbound"),
                ("target_addr", "198.18.200.2:8080"),
                ("server_id", SERVER_ID)
            ]
        ),
        Some(3.0),
        "the client proxy carried every request over mTLS: {client_metrics}"
    );
    assert_eq!(
        metric(
            &server_metrics,
            "request_total",
            &[
                ("direction", "inbound"),
                ("target_addr", "127.0.0.1:8080"),
                ("client_id", CLIENT_ID)
            ]
        ),
        // The client's three, and the ingress proxy's one (the same identity).
        Some(4.0),
        "the server proxy authenticated the client and used the original port: {server_metrics}"
    );
    assert!(
        metric(
            &server_metrics,
            "tcp_read_bytes_total",
            &[
                ("direction", "inbound"),
                ("target_addr", "127.0.0.1:3306"),
                ("client_id", CLIENT_ID)
            ]
        )
        .unwrap_or(0.0)
            >= 4.0,
        "the opaque connection crossed mTLS with the client's identity: {server_metrics}"
    );
    assert_eq!(
        metric(
            &server_metrics,
            "tcp_open_total",
            &[
                ("direction", "inbound"),
                ("target_addr", "127.0.0.1:8443"),
                ("tls", "opaque"),
                ("sni", "db.example.org")
            ]
        ),
        Some(1.0),
        "the passed-through connection is labelled as Linkerd labels it: {server_metrics}"
    );
    assert_eq!(
        metric(
            &server_metrics,
            "tcp_open_total",
            &[
                ("direction", "inbound"),
                ("target_addr", "127.0.0.1:3306"),
                ("tls", "no_identity"),
                ("no_tls_reason", "no_tls_from_remote")
            ]
        ),
        Some(1.0),
        "the unmeshed connection to the opaque port is counted: {server_metrics}"
    );
    drop(pods);
}
