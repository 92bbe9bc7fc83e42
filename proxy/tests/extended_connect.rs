//! HTTP/2 extended CONNECT (RFC 8441, WebSocket over HTTP/2) through a client proxy and a
//! server proxy in explicit mode, with mTLS between them, against the real controller.
//!
//! - An application that enables the protocol: the CONNECT with `:protocol` crosses on
//!   the proxies' HTTP/2 connection, the 200 comes back, and bytes flow both ways on the
//!   stream; plain requests keep sharing the connection.
//! - An application that does not (its SETTINGS lack `SETTINGS_ENABLE_CONNECT_PROTOCOL`):
//!   a prompt 502 with `l5d-proxy-error` saying so, never a hang.
//! - Under a retry policy that retries 5xx, an extended CONNECT is sent once.

mod support;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An HTTP/2 (prior knowledge) application that enables extended CONNECT: a CONNECT
/// with `:protocol: echo` is answered 200, then the stream greets and echoes; `/fail`
/// gets a 500, anything else `plain <path>`.
async fn echo_over_h2_app(addr: SocketAddr) {
    let l = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    let protocol = req
                        .extensions()
                        .get::<hyper::ext::Protocol>()
                        .map(|p| p.as_str().to_string());
                    if req.method() == Method::CONNECT && protocol.as_deref() == Some("echo") {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(up) = on.await {
                                let mut io = TokioIo::new(up);
                                let _ = io.write_all(b"hello over h2\n").await;
                                let (mut r, mut w) = tokio::io::split(io);
                                let _ = tokio::io::copy(&mut r, &mut w).await;
                            }
                        });
                        return Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()));
                    }
                    let body = format!("plain {} {:?}", req.uri().path(), protocol);
                    let mut rsp = Response::new(Full::new(Bytes::from(body)));
                    if req.uri().path() == "/fail" {
                        *rsp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    Ok(rsp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .enable_connect_protocol()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

struct Pair {
    cluster: Cluster,
    client: Proxy,
    server: Proxy,
}

/// web (client, 127.49.N.2) → myapp (server, 127.49.N.3): port 80 → 8080 is an
/// application without extended CONNECT, port 81 → 8081 one with it.
async fn pair(n: u8) -> Pair {
    pair_with(n, false).await
}

/// [`pair`], the client following the policy controller when `policy`.
async fn pair_with(n: u8, policy: bool) -> Pair {
    let (c_ip, s_ip) = (ip(&format!("127.49.{n}.2")), ip(&format!("127.49.{n}.3")));
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    cluster.pod("web-1", "web", "web", c_ip, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s_ip, true).await;
    http_app((s_ip, 8080).into(), "myapp-1").await;
    echo_over_h2_app((s_ip, 8081).into()).await;
    let server = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s_ip)).await;
    let mut vars = cluster.proxy_env("web-1", "web", c_ip);
    if policy {
        vars.insert(
            strait_proxy::config::env::POLICY_SVC_ADDR,
            cluster.bound.policy.to_string(),
        );
        vars.insert(
            strait_proxy::config::env::POLICY_WORKLOAD,
            "{\"ns\":\"production\",\"pod\":\"web-1\"}".to_string(),
        );
    }
    let client = Proxy::ready(vars).await;
    Pair {
        cluster,
        client,
        server,
    }
}

fn extended_connect(authority: &str, protocol: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{authority}/chat"))
        .body(Full::default())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    req
}

#[tokio::test]
async fn extended_connect_crosses_the_pair_and_carries_bytes_both_ways() {
    let p = pair(1).await;
    let mut c = h2_client(p.client.bound.outbound).await;
    for round in 0..2 {
        c.ready().await.unwrap();
        let mut rsp = tokio::time::timeout(
            Duration::from_secs(10),
            c.send_request(extended_connect(&format!("{MYAPP}:81"), "echo")),
        )
        .await
        .expect("a response within 10s")
        .unwrap();
        assert_eq!(rsp.status(), 200, "round {round}: {rsp:?}");
        let up = tokio::time::timeout(Duration::from_secs(10), hyper::upgrade::on(&mut rsp))
            .await
            .expect("the stream within 10s")
            .expect("a 200 to an extended CONNECT hands over the stream");
        let mut s = TokioIo::new(up);
        let mut greeting = [0u8; 14];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut greeting))
            .await
            .expect("the greeting within 10s")
            .unwrap();
        assert_eq!(&greeting, b"hello over h2\n");
        echo_messages(&mut s, round).await;
    }
    // Plain requests share the client's HTTP/2 connection with the streams.
    c.ready().await.unwrap();
    let req = Request::get(format!("http://{MYAPP}:81/after"))
        .body(Full::default())
        .unwrap();
    let rsp = c.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"plain /after None");
    // The CONNECTs crossed mTLS with the client's identity.
    let server = p.server.metrics().await;
    assert!(inbound_mtls_requests(&server).unwrap_or(0.0) >= 3.0, "{server}");
}

#[tokio::test]
async fn an_application_without_extended_connect_gets_a_clear_502() {
    let p = pair(2).await;
    let mut c = h2_client(p.client.bound.outbound).await;
    c.ready().await.unwrap();
    let started = tokio::time::Instant::now();
    let rsp = tokio::time::timeout(
        Duration::from_secs(10),
        c.send_request(extended_connect(&format!("{MYAPP}:80"), "echo")),
    )
    .await
    .expect("an answer within 10s, not a hang")
    .unwrap();
    assert_eq!(rsp.status(), 502, "{rsp:?}");
    let why = rsp.headers()["l5d-proxy-error"].to_str().unwrap().to_string();
    assert!(
        why.contains("does not accept extended CONNECT") && why.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
        "{why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "decided from the application's SETTINGS, not a timeout: {:?}",
        started.elapsed()
    );
    // A new connection would not change the answer: the same one still carries
    // ordinary requests.
    c.ready().await.unwrap();
    let req = Request::get(format!("http://{MYAPP}:80/ok"))
        .body(Full::default())
        .unwrap();
    let rsp = c.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
}

/// The server proxy's inbound request count for `myapp:<port>`.
async fn inbound_requests(p: &Pair, port: u16) -> f64 {
    let authority = format!("{MYAPP}:{port}");
    let m = p.server.metrics().await;
    metric(
        &m,
        "request_total",
        &[("direction", "inbound"), ("authority", authority.as_str())],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_connect_is_never_retried() {
    let p = pair_with(3, true).await;
    // Retry every 5xx twice (Linkerd's annotations on the Service).
    p.cluster
        .apply(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: myapp\n  namespace: production\n  annotations:\n    retry.linkerd.io/http: 5xx\n    retry.linkerd.io/limit: \"2\"\nspec:\n  selector: {app: myapp}\n  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 81, targetPort: 8081}, {name: tcp, port: 9000, targetPort: 9000}]\n",
        )
        .await;
    let mut c = h2_client(p.client.bound.outbound).await;
    // A plain request answered 500 is tried three times once the policy arrived.
    let retried = eventually(Duration::from_secs(10), async || {
        let before = inbound_requests(&p, 81).await;
        c.ready().await.unwrap();
        let req = Request::get(format!("http://{MYAPP}:81/fail"))
            .body(Full::default())
            .unwrap();
        let rsp = c.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), 500);
        inbound_requests(&p, 81).await - before == 3.0
    })
    .await;
    assert!(retried, "the retry policy never reached the client proxy");

    // The extended CONNECT's 502 is not retried: the server proxy saw it once.
    let before = inbound_requests(&p, 80).await;
    c.ready().await.unwrap();
    let rsp = c
        .send_request(extended_connect(&format!("{MYAPP}:80"), "echo"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 502, "{rsp:?}");
    assert_eq!(inbound_requests(&p, 80).await - before, 1.0);
}
