//! Bad input never crashes the proxy: malformed HTTP, oversized headers, slow and
//! half-open clients, TLS garbage, bad transport headers, connection floods. After each,
//! the proxy still carries a normal request.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_proxy::config::env;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Everything the server sends until it closes (bounded at 5 s).
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the proxy must close the connection within 5s");
    out
}

async fn still_serves(client: SocketAddr) {
    let mut h = h1_client(client).await;
    let (status, _, body) = h1_get(&mut h, &format!("{MYAPP}:80"), "/alive").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("pod=myapp-1"), "{body}");
}

#[tokio::test]
async fn bad_input_is_refused_and_the_proxy_keeps_serving() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    let (c, s) = (ip("127.45.1.2"), ip("127.45.1.3"));
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s, true).await;
    http_app((s, 8080).into(), "myapp-1").await;
    let mut sv = cluster.proxy_env("myapp-1", "myapp", s);
    sv.insert(env::INBOUND_DETECT_TIMEOUT, "300ms".into());
    let server = Proxy::ready(sv).await;
    let mut cv = cluster.proxy_env("web-1", "web", c);
    cv.insert(env::HEADER_READ_TIMEOUT, "300ms".into());
    cv.insert(env::MAX_CONNECTIONS, "16".into());
    let client = Proxy::ready(cv).await;
    let (out, inb) = (client.bound.outbound, server.bound.inbound);

    // Malformed HTTP/1: a header line without a colon.
    let mut t = TcpStream::connect(out).await.unwrap();
    t.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nthis is not a header\r\n\r\n")
        .await
        .unwrap();
    let rsp = String::from_utf8_lossy(&until_closed(&mut t).await).to_string();
    assert!(rsp.starts_with("HTTP/1.1 400"), "{rsp}");
    still_serves(out).await;

    // Oversized headers: 100 KiB of them.
    let mut t = TcpStream::connect(out).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nhost: {MYAPP}\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = t.write_all(big.as_bytes()).await;
    let rsp = String::from_utf8_lossy(&until_closed(&mut t).await).to_string();
    assert!(rsp.starts_with("HTTP/1.1 431"), "{rsp}");
    still_serves(out).await;

    // A slow client (slowloris): half a request head, then nothing.
    let mut t = TcpStream::connect(out).await.unwrap();
    t.write_all(b"GET / HTTP/1.1\r\nhost: slow\r\n").await.unwrap();
    let started = Instant::now();
    let _ = until_closed(&mut t).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the header read timeout closed it"
    );
    still_serves(out).await;

    // A half-open client: a partial request, then its write side closes.
    let mut t = TcpStream::connect(out).await.unwrap();
    t.write_all(b"GET / HT").await.unwrap();
    t.shutdown().await.unwrap();
    let _ = until_closed(&mut t).await;
    still_serves(out).await;

    // Non-HTTP bytes on explicit-mode outbound have no target: closed.
    let mut t = TcpStream::connect(out).await.unwrap();
    t.write_all(b"\x00\x01\x02 binary junk\r\n").await.unwrap();
    assert!(until_closed(&mut t).await.is_empty());

    // TLS garbage on inbound: a TLS record header followed by nonsense.
    let mut t = TcpStream::connect(inb).await.unwrap();
    t.write_all(b"\x16\x03\x01\x00\x30garbage garbage garbage garbage garbage!!")
        .await
        .unwrap();
    let _ = until_closed(&mut t).await;
    // Silence on inbound: the detection timeout ends it.
    let mut t = TcpStream::connect(inb).await.unwrap();
    let started = Instant::now();
    let _ = until_closed(&mut t).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    // Plaintext to inbound in explicit mode names no target: closed.
    let mut t = TcpStream::connect(inb).await.unwrap();
    t.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(until_closed(&mut t).await.is_empty());
    // A bad transport header inside valid TLS.
    {
        let mut cfg = Arc::unwrap_or_clone(strait_identity::client_config(
            &strait_identity::CertStore::new(),
            &cluster.id.anchors,
        ));
        cfg.alpn_protocols = vec![b"transport.l5d.io/v1".to_vec()];
        let tcp = TcpStream::connect(inb).await.unwrap();
        let name: strait_identity::IdentityName =
            "myapp.production.serviceaccount.identity.linkerd.cluster.local"
                .parse()
                .unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name.server_name(), tcp)
            .await
            .expect("the server proxy proves its identity");
        let mut bad = b"transport.l5d.io/v1\r\n\r\n".to_vec();
        bad.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        tls.write_all(&bad).await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "closed within 5s");
        assert!(buf.is_empty());
    }
    still_serves(out).await;

    // A request naming the proxy's own outbound port would loop: refused at once (the
    // address is the client pod's, so it resolves to the pod, and the pod's inbound
    // refuses a target that is one of its own listeners). An unknown address with a
    // closed port is unreachable.
    let mut h = h1_client(out).await;
    let (status, headers, _) = h1_get(&mut h, &out.to_string(), "/loop").await;
    assert_eq!(status, 502, "{headers:?}");
    assert!(headers.contains_key("l5d-proxy-error"), "{headers:?}");
    let unknown = format!("127.45.1.9:{}", out.port());
    let (status, _, _) = h1_get(&mut h, &unknown, "/unknown-closed-port").await;
    assert_eq!(status, 502);
    drop(h);

    // A connection flood beyond the limit (16): the excess is closed at once.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(out).await.unwrap());
    }
    let mut refused = 0;
    for _ in 0..20 {
        let mut t = TcpStream::connect(out).await.unwrap();
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(2), t.read(&mut b)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 20, "connections over the limit are closed");
    drop(held);
    let recovered = eventually(Duration::from_secs(5), async || {
        let Ok(t) = TcpStream::connect(out).await else {
            return false;
        };
        drop(t);
        true
    })
    .await;
    assert!(recovered);
    // Wait for the held connections' tasks to end (they were idle in detection).
    let ok = eventually(Duration::from_secs(5), async || {
        let mut h = h1_client(out).await;
        let req = http::Request::get("/alive")
            .header("host", format!("{MYAPP}:80"))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        matches!(h.ready().await.send_request(req).await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(ok, "the proxy serves again once the flood is gone");
    assert!(!client.handle.is_finished() && !server.handle.is_finished());
}
