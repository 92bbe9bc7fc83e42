//! The proxy's identity against the real controller: readiness waits for the first
//! certificate, renewal under load keeps connections, an outage keeps the old
//! certificate, and shutdown drains in-flight requests.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use strait_proxy::config::env;
use support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The leaf certificate a proxy's inbound presents now.
async fn served_cert(cluster: &Cluster, inbound: SocketAddr, sa: &str) -> Vec<u8> {
    let cfg = strait_identity::client_config(&strait_identity::CertStore::new(), &cluster.id.anchors);
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let name: strait_identity::IdentityName =
        format!("{sa}.production.serviceaccount.identity.linkerd.cluster.local")
            .parse()
            .unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name.server_name(), tcp)
        .await
        .expect("the proxy proves its identity");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn not_ready_until_certified() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    let p = ip("127.44.1.2");
    // A token for another service account: the controller refuses to certify.
    let mut vars = cluster.proxy_env("web-1", "web", p);
    let wrong = cluster.dir.path().join("wrong.token");
    std::fs::write(&wrong, cluster.id.tokens.mint("production", "other", "web-1")).unwrap();
    vars.insert(env::IDENTITY_TOKEN_FILE, wrong.display().to_string());
    let proxy = Proxy::start(vars).await;
    for _ in 0..5 {
        assert_eq!(get_status(proxy.bound.admin, "/ready").await, 503);
        assert_eq!(get_status(proxy.bound.admin, "/live").await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The right token is picked up on the next attempt (the file is re-read).
    std::fs::write(&wrong, cluster.id.tokens.mint("production", "web", "web-1")).unwrap();
    let ready = eventually(Duration::from_secs(15), async || {
        get_status(proxy.bound.admin, "/ready").await == 200
    })
    .await;
    assert!(ready, "ready once a certificate is issued");
    // The admin port also speaks HTTP/2 (prior knowledge), and closes on anything else.
    let mut h2 = h2_client(proxy.bound.admin).await;
    let rsp = h2
        .send_request(
            http::Request::get("http://admin/ready")
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let mut junk = tokio::net::TcpStream::connect(proxy.bound.admin).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    junk.write_all(b"\x00\x01garbage that is not HTTP\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed without an answer: {read:?} {rest:?}"
    );
}

#[tokio::test]
async fn renewal_under_load_keeps_every_request_and_connection() {
    // 6 s certificates: renewed after 3.5–4.2 s (70% of what is left when issued, Linkerd's
    // schedule), so the 9 s of load see one or two renewals, and a renewal that comes late
    // on a busy machine still has about 2 s before the old certificate expires.
    let cluster = Cluster::start(Duration::from_secs(6)).await;
    cluster.myapp_service().await;
    let (c, s) = (ip("127.44.2.2"), ip("127.44.2.3"));
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s, true).await;
    http_app((s, 8080).into(), "myapp-1").await;
    let server = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s)).await;
    let client = Proxy::ready(cluster.proxy_env("web-1", "web", c)).await;
    let first = served_cert(&cluster, server.bound.inbound, "myapp").await;

    let mut h = h1_client(client.bound.outbound).await;
    let started = tokio::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(9) {
        let (status, headers, body) = h1_get(&mut h, &format!("{MYAPP}:80"), "/load").await;
        assert_eq!(status, 200, "request {n}: {headers:?} {body}");
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(n > 100, "{n} requests");
    let later = served_cert(&cluster, server.bound.inbound, "myapp").await;
    assert_ne!(first, later, "the server proxy serves a renewed certificate");
    // New connections after renewal verify too (the client proxy's renewed cert included).
    let mut fresh = h1_client(client.bound.outbound).await;
    assert_eq!(h1_get(&mut fresh, &format!("{MYAPP}:80"), "/").await.0, 200);
    let m = client.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tcp_open_total",
            &[("peer", "dst"), ("target_addr", "127.44.2.3:8080")]
        ),
        Some(1.0),
        "the HTTP/2 connection between the proxies survived renewal: {m}"
    );
    assert_eq!(
        metric(&m, "request_total", &[("target_addr", "127.44.2.3:8080")]),
        Some(f64::from(n + 1))
    );
}

#[tokio::test]
async fn a_controller_outage_keeps_the_certificate_and_the_endpoints() {
    let mut cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    let (c, s) = (ip("127.44.3.2"), ip("127.44.3.3"));
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s, true).await;
    http_app((s, 8080).into(), "myapp-1").await;
    let server = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s)).await;
    let client = Proxy::ready(cluster.proxy_env("web-1", "web", c)).await;
    let mut h = h1_client(client.bound.outbound).await;
    assert_eq!(h1_get(&mut h, &format!("{MYAPP}:80"), "/").await.0, 200);

    cluster.stop().await;
    assert_eq!(get_status(client.bound.admin, "/ready").await, 200);
    // New connections, new mTLS handshakes between the proxies: still fine.
    for _ in 0..3 {
        let mut fresh = h1_client(client.bound.outbound).await;
        let (status, _, body) = h1_get(&mut fresh, &format!("{MYAPP}:80"), "/").await;
        assert_eq!(status, 200, "{body}");
    }
    let _ = served_cert(&cluster, server.bound.inbound, "myapp").await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    let (c, s) = (ip("127.44.4.2"), ip("127.44.4.3"));
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s, true).await;
    let app = http_app((s, 8080).into(), "myapp-1").await;
    let mut sv = cluster.proxy_env("myapp-1", "myapp", s);
    sv.insert(env::SHUTDOWN_GRACE_PERIOD, "10s".into());
    let mut server = Proxy::ready(sv).await;
    let client = Proxy::ready(cluster.proxy_env("web-1", "web", c)).await;
    let mut h = h1_client(client.bound.outbound).await;
    let slow = tokio::spawn(async move { h1_get(&mut h, &format!("{MYAPP}:80"), "/slow").await });
    // Shut down once the application holds the request (it answers `/slow` after 1.5 s).
    assert!(
        eventually(Duration::from_secs(10), async || app
            .requests
            .load(Ordering::Relaxed)
            == 1)
        .await,
        "the slow request reached the application"
    );
    server.shutdown();
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completes: {body}");
    tokio::time::timeout(Duration::from_secs(10), &mut server.handle)
        .await
        .expect("the proxy exits once drained")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(server.bound.inbound)
            .await
            .is_err(),
        "no longer accepting"
    );
}

/// `POST /shutdown` on the admin server, with `LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED`,
/// ends the proxy as SIGTERM would (what `linkerd-await --shutdown` does for a Job); a
/// proxy without it keeps running.
#[tokio::test]
async fn the_shutdown_endpoint_ends_the_proxy_when_enabled() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    let post = async |admin| http_request(admin, "POST", "/shutdown").await;
    let disabled = Proxy::ready(cluster.proxy_env("web-1", "web", ip("127.44.1.7"))).await;
    let (status, body) = post(disabled.bound.admin).await;
    assert_eq!(
        (status, body.as_str()),
        (404, "shutdown endpoint is not enabled\n")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!disabled.handle.is_finished(), "a refused shutdown ends nothing");

    let mut vars = cluster.proxy_env("web-2", "web", ip("127.44.1.8"));
    vars.insert(env::SHUTDOWN_ENDPOINT_ENABLED, "true".into());
    let enabled = Proxy::ready(vars).await;
    let (status, body) = post(enabled.bound.admin).await;
    assert_eq!((status, body.as_str()), (200, "shutdown\n"));
    tokio::time::timeout(Duration::from_secs(10), enabled.handle)
        .await
        .expect("the proxy ends after POST /shutdown")
        .unwrap();
}
