//! A client pod and a server pod, each with a real proxy in explicit mode, against the
//! real controller: HTTP/1, HTTP/2, gRPC and opaque TCP with mTLS between the proxies.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use strait_proxy::config::env;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVER_ID: &str = "myapp.production.serviceaccount.identity.linkerd.cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Pair {
    _cluster: Cluster,
    client: Proxy,
    server: Proxy,
}

/// web (client, 127.41.N.2) → myapp (server, 127.41.N.3), both meshed.
async fn pair(n: u8) -> Pair {
    let (c_ip, s_ip) = (ip(&format!("127.41.{n}.2")), ip(&format!("127.41.{n}.3")));
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    cluster.pod("web-1", "web", "web", c_ip, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s_ip, true).await;
    http_app((s_ip, 8080).into(), "myapp-1").await;
    echo_app((s_ip, 9000).into()).await;
    let server = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s_ip)).await;
    let client = Proxy::ready(cluster.proxy_env("web-1", "web", c_ip)).await;
    Pair {
        _cluster: cluster,
        client,
        server,
    }
}

#[tokio::test]
async fn http1_travels_as_http2_with_mtls_and_comes_out_as_http1() {
    let p = pair(1).await;
    let mut c = h1_client(p.client.bound.outbound).await;
    for i in 0..5 {
        // A forged caller identity is replaced by the one mTLS proved.
        let forged = [(
            "l5d-client-id",
            "admin.kube-system.serviceaccount.identity.linkerd.cluster.local",
        )];
        let (status, headers, body) =
            h1_get_with(&mut c, &format!("{MYAPP}:80"), &format!("/hello/{i}"), &forged).await;
        assert_eq!(status, 200, "{headers:?} {body}");
        assert_eq!(
            body,
            format!("pod=myapp-1 version=HTTP/1.1 path=/hello/{i} host={MYAPP}:80 orig=false")
        );
        assert_eq!(
            headers.get("app-saw-client-id").map(|v| v.to_str().unwrap()),
            Some(CLIENT_ID),
            "{headers:?}"
        );
    }

    // Both sides saw mTLS with the other's identity.
    let server = p.server.metrics().await;
    assert_eq!(inbound_mtls_requests(&server), Some(5.0), "{server}");
    let inbound = [
        ("direction", "inbound"),
        ("client_id", CLIENT_ID),
        ("status_code", "200"),
    ];
    assert_eq!(
        metric(&server, "response_latency_ms_count", &inbound),
        Some(5.0),
        "{server}"
    );
    let le_inf: Vec<(&str, &str)> = inbound.iter().copied().chain([("le", "+Inf")]).collect();
    assert_eq!(metric(&server, "response_latency_ms_bucket", &le_inf), Some(5.0));
    let le_50s: Vec<(&str, &str)> = inbound.iter().copied().chain([("le", "50000")]).collect();
    assert_eq!(metric(&server, "response_latency_ms_bucket", &le_50s), Some(5.0));
    let src = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("client_id", CLIENT_ID),
        ("tls", "true"),
    ];
    assert_eq!(
        metric(&server, "tcp_open_connections", &src),
        Some(1.0),
        "the client proxy's one HTTP/2 connection stays open: {server}"
    );
    assert_eq!(metric(&server, "tcp_open_total", &src), Some(1.0));
    assert_eq!(metric(&server, "tcp_close_total", &src), Some(0.0));
    assert!(metric(&server, "tcp_read_bytes_total", &src).unwrap() > 0.0);
    assert!(metric(&server, "tcp_write_bytes_total", &src).unwrap() > 5.0 * 60.0);
    let client = p.client.metrics().await;
    assert_eq!(
        metric(
            &client,
            "response_total",
            &[
                ("direction", "outbound"),
                ("authority", &format!("{MYAPP}:80")),
                ("tls", "true"),
                ("server_id", SERVER_ID),
                ("dst_pod", "myapp-1"),
                ("dst_deployment", "myapp"),
                ("dst_namespace", "production"),
                ("dst_service", "myapp"),
                ("status_code", "200"),
                ("classification", "success"),
            ]
        ),
        Some(5.0),
        "{client}"
    );
    // One HTTP/2 connection between the proxies carried every request.
    assert_eq!(
        metric(
            &client,
            "tcp_open_total",
            &[("peer", "dst"), ("server_id", SERVER_ID)]
        ),
        Some(1.0),
        "{client}"
    );
    // Nothing listens on the server pod's 8081: its proxy answers 502 and tells the
    // client's proxy to close the application's connection (`l5d-proxy-connection`),
    // which that proxy does (`connection: close`) without passing its own header on.
    let (status, headers, body) = h1_get(&mut c, &format!("{MYAPP}:81"), "/").await;
    assert_eq!(status, 502, "{headers:?} {body}");
    assert!(headers.contains_key("l5d-proxy-error"), "{headers:?}");
    assert_eq!(headers["connection"], "close", "{headers:?}");
    assert!(!headers.contains_key("l5d-proxy-connection"), "{headers:?}");
    assert!(eventually(Duration::from_secs(5), async || c.is_closed()).await);
    // The server's proxy closed the proxies' connection for that port too; once the
    // application is up, the next request goes out on a new one.
    http_app("127.41.1.3:8081".parse().unwrap(), "myapp-1").await;
    let (status, headers, body) = h1_get(&mut c, &format!("{MYAPP}:81"), "/up").await;
    assert_eq!(status, 200, "{headers:?} {body}");
    // The proxies' connection for the working port (one per endpoint and port) stays.
    let (status, _, body) = h1_get(&mut c, &format!("{MYAPP}:80"), "/again").await;
    assert_eq!(status, 200, "{body}");
    let client = p.client.metrics().await;
    assert_eq!(
        metric(
            &client,
            "tcp_open_total",
            &[
                ("peer", "dst"),
                ("server_id", SERVER_ID),
                ("target_addr", "127.41.1.3:8080")
            ]
        ),
        Some(1.0),
        "{client}"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_stays_http2() {
    let p = pair(2).await;
    let mut c = h2_client(p.client.bound.outbound).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let req = Request::get(format!("http://{MYAPP}:80/h2/{i}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let f = c.send_request(req);
        tasks.push(tokio::spawn(async move {
            let rsp = tokio::time::timeout(Duration::from_secs(10), f)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(rsp.status(), 200);
            String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let body = t.await.unwrap();
        assert_eq!(
            body,
            format!("pod=myapp-1 version=HTTP/2.0 path=/h2/{i} host={MYAPP}:80 orig=false")
        );
    }
    let _ = c.ready().await;
}

mod grpc_app {
    use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse, identity_server::Identity};
    use tonic::{Request, Response, Status};

    /// A gRPC application: echoes the identity it is asked for.
    pub struct Echo;

    #[tonic::async_trait]
    impl Identity for Echo {
        async fn certify(&self, req: Request<CertifyRequest>) -> Result<Response<CertifyResponse>, Status> {
            let r = req.into_inner();
            if r.identity == "missing" {
                return Err(Status::not_found("no such thing"));
            }
            if r.identity == "fail" {
                return Err(Status::unavailable("backend down"));
            }
            Ok(Response::new(CertifyResponse {
                leaf_certificate: r.identity.into_bytes(),
                ..Default::default()
            }))
        }
    }
}

#[tokio::test]
async fn grpc_through_the_pair() {
    use linkerd2_proxy_api::identity::{
        CertifyRequest, identity_client::IdentityClient, identity_server::IdentityServer,
    };
    let p = pair(3).await;
    let app = tokio::net::TcpListener::bind("127.41.3.3:8081").await.unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(grpc_app::Echo))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(app)),
    );
    let proxy = p.client.bound.outbound;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{MYAPP}:81"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| async move {
            tokio::net::TcpStream::connect(proxy)
                .await
                .map(hyper_util::rt::TokioIo::new)
        }))
        .await
        .unwrap();
    let mut client = IdentityClient::new(channel);
    for i in 0..3 {
        let rsp = client
            .certify(CertifyRequest {
                identity: format!("call-{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rsp.leaf_certificate, format!("call-{i}").into_bytes());
    }
    for (identity, code, message) in [
        ("missing", tonic::Code::NotFound, "no such thing"),
        ("fail", tonic::Code::Unavailable, "backend down"),
    ] {
        let err = client
            .certify(CertifyRequest {
                identity: identity.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "gRPC status crosses both proxies: {err}");
        assert_eq!(err.message(), message);
    }
    let m = p.server.metrics().await;
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[("direction", "inbound"), ("classification", "failure")]
        ),
        Some(1.0),
        "a trailers-only UNAVAILABLE is a failure: {m}"
    );
    // Classified at the end of the stream, as Linkerd's: the successes' `grpc-status: 0`
    // came in trailers; each carries its gRPC status, on both proxies. NOT_FOUND is the
    // caller's mistake, a success for the server, as Linkerd classifies it.
    let c = p.client.metrics().await;
    for (m, direction) in [(&m, "inbound"), (&c, "outbound")] {
        for (status, class, n) in [
            ("0", "success", 3.0),
            ("5", "success", 1.0),
            ("14", "failure", 1.0),
        ] {
            assert_eq!(
                metric(
                    m,
                    "response_total",
                    &[
                        ("direction", direction),
                        ("classification", class),
                        ("grpc_status", status)
                    ]
                ),
                Some(n),
                "{direction} grpc_status={status}: {m}"
            );
        }
    }
}

/// A gRPC answer whose body the application breaks off: one message, then, a moment
/// later (once the proxies have passed the message on), an error that resets the stream.
struct BrokenAnswer {
    sent: bool,
    later: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl BrokenAnswer {
    fn new() -> Self {
        Self {
            sent: false,
            later: Box::pin(tokio::time::sleep(Duration::from_millis(200))),
        }
    }
}

impl hyper::body::Body for BrokenAnswer {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if !self.sent {
            self.sent = true;
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(&[
                0, 0, 0, 0, 1, 7,
            ])))));
        }
        std::task::ready!(self.later.as_mut().poll(cx));
        std::task::Poll::Ready(Some(Err(std::io::Error::other("the application gave up"))))
    }
}

#[tokio::test]
async fn a_grpc_answer_broken_off_midway_ends_with_unavailable() {
    let p = pair(7).await;
    // The application on the gRPC port: HTTP/2, every answer broken off after a message.
    let listener = tokio::net::TcpListener::bind((ip("127.41.7.3"), 8081))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                    let rsp = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(BrokenAnswer::new())
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(rsp)
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let mut c = h2_client(p.client.bound.outbound).await;
    c.ready().await.unwrap();
    let req = Request::post(format!("http://{MYAPP}:81/pkg.Service/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(10), c.send_request(req))
        .await
        .expect("an answer within 10s")
        .unwrap();
    assert_eq!(rsp.status(), 200);
    // The message that came through, then the status in the trailers: not a reset.
    let body = tokio::time::timeout(Duration::from_secs(10), rsp.into_body().collect())
        .await
        .expect("the end of the answer within 10s")
        .expect("the stream ends cleanly, with trailers");
    let trailers = body.trailers().cloned().expect("trailers");
    assert_eq!(&body.to_bytes()[..], &[0, 0, 0, 0, 1, 7]);
    assert_eq!(trailers["grpc-status"], "14", "{trailers:?}");
    assert!(
        trailers["grpc-message"].to_str().unwrap().contains("failed"),
        "{trailers:?}"
    );
    // Counted as the failure it was, with its status.
    let m = p.server.metrics().await;
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[
                ("direction", "inbound"),
                ("classification", "failure"),
                ("grpc_status", "14")
            ]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn opaque_tcp_through_connect_and_the_transport_header() {
    let p = pair(4).await;
    let mut s = tokio::net::TcpStream::connect(p.client.bound.outbound)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {MYAPP}:9000 HTTP/1.1\r\nhost: {MYAPP}:9000\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
        payload
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    let sent = writer.await.unwrap();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed == sent, "the echo came back intact");
    let m = p.server.metrics().await;
    assert!(
        metric(
            &m,
            "tcp_read_bytes_total",
            &[
                ("direction", "inbound"),
                ("target_addr", "127.41.4.3:9000"),
                ("client_id", CLIENT_ID)
            ]
        )
        .unwrap_or(0.0)
            >= 100_000.0,
        "{m}"
    );
    // A client that resets its connection: the close is counted under its errno.
    let mut s = tokio::net::TcpStream::connect(p.client.bound.outbound)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {MYAPP}:9000 HTTP/1.1\r\nhost: {MYAPP}:9000\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut [0u8; 64]))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0);
    s.set_zero_linger().unwrap();
    drop(s);
    let reset = [
        ("direction", "outbound"),
        ("peer", "src"),
        ("errno", "ECONNRESET"),
    ];
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric(&p.client.metrics().await, "tcp_close_total", &reset).unwrap_or(0.0) >= 1.0
        })
        .await,
        "{}",
        p.client.metrics().await
    );
    let clean = [("direction", "outbound"), ("peer", "src"), ("errno", "")];
    assert!(metric(&p.client.metrics().await, "tcp_close_total", &clean).unwrap_or(0.0) >= 1.0);
}

/// An HTTP/1.1 upgrade (as WebSocket does) through the pair: the request crosses on an
/// HTTP/1.1 connection of its own inside mTLS, the 101 comes back, and then bytes flow
/// both ways between the client and the application; plain requests keep working.
#[tokio::test]
async fn http_upgrades_cross_the_pair_and_carry_bytes_both_ways() {
    let p = pair(5).await;
    for round in 0..2 {
        let mut s = upgraded(p.client.bound.outbound).await;
        echo_messages(&mut s, round).await;
    }
    // The upgrade crossed mTLS with the client's identity.
    let server = p.server.metrics().await;
    assert!(inbound_mtls_requests(&server).unwrap_or(0.0) >= 2.0, "{server}");
    let mut c = h1_client(p.client.bound.outbound).await;
    let (status, _, body) = h1_get(&mut c, &format!("{MYAPP}:80"), "/after").await;
    assert_eq!(status, 200, "{body}");
}

/// Opens a connection to the client proxy at `out` and upgrades it to the application's
/// echo protocol, through the pair (the 101 names the protocol), reading its greeting.
async fn upgraded(out: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(out).await.unwrap();
    s.write_all(
        format!("GET /ws HTTP/1.1\r\nhost: {MYAPP}:80\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("the response head within 10s")
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    let mut greeting = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut greeting))
        .await
        .expect("the greeting within 10s")
        .unwrap();
    assert_eq!(&greeting, b"hello from myapp-1\n");
    s
}

/// Whether the proxy at `out` closes a new connection at once (its connection limit).
async fn refused_at_once(out: std::net::SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(out).await else {
        return true;
    };
    let _ = s
        .write_all(format!("GET / HTTP/1.1\r\nhost: {MYAPP}:80\r\n\r\n").as_bytes())
        .await;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A connection that became a tunnel (an upgrade) after its HTTP exchange still holds
/// its place under the connection limit, and shutdown waits for it like any connection.
#[tokio::test]
async fn an_upgraded_connection_counts_under_the_limit_and_is_drained() {
    let (c_ip, s_ip) = (ip("127.41.7.2"), ip("127.41.7.3"));
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    cluster.pod("web-1", "web", "web", c_ip, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s_ip, true).await;
    http_app((s_ip, 8080).into(), "myapp-1").await;
    let _server = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s_ip)).await;
    let mut cv = cluster.proxy_env("web-1", "web", c_ip);
    cv.insert(env::MAX_CONNECTIONS, "2".into());
    cv.insert(env::SHUTDOWN_GRACE_PERIOD, "30s".into());
    let mut client = Proxy::ready(cv).await;
    let out = client.bound.outbound;

    let mut first = upgraded(out).await;
    let mut second = upgraded(out).await;
    echo_messages(&mut first, 0).await;
    assert!(
        refused_at_once(out).await,
        "two tunnels fill a limit of two connections"
    );
    drop(first);
    assert!(
        eventually(Duration::from_secs(10), async || {
            let Ok(mut s) = tokio::net::TcpStream::connect(out).await else {
                return false;
            };
            let req = format!("GET / HTTP/1.1\r\nhost: {MYAPP}:80\r\nconnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            let mut rsp = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rsp)).await;
            matches!(read, Ok(Ok(_))) && rsp.starts_with(b"HTTP/1.1 200")
        })
        .await,
        "a closed tunnel frees its place"
    );

    // Shutdown waits for the open tunnel, which keeps carrying bytes, and ends with it.
    client.shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!client.handle.is_finished(), "the proxy waits for the tunnel");
    echo_messages(&mut second, 1).await;
    drop(second);
    tokio::time::timeout(Duration::from_secs(10), &mut client.handle)
        .await
        .expect("the proxy exits once the tunnel closes")
        .unwrap();
}

/// A target unused for the idle timeout is forgotten: its discovery ends and its endpoint
/// connections close (seen from the server proxy); the next request discovers it again.
#[tokio::test]
async fn idle_targets_are_forgotten_and_found_again() {
    let (c_ip, s_ip) = (ip("127.41.6.2"), ip("127.41.6.3"));
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    cluster.pod("web-1", "web", "web", c_ip, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s_ip, true).await;
    http_app((s_ip, 8080).into(), "myapp-1").await;
    let server = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s_ip)).await;
    let mut vars = cluster.proxy_env("web-1", "web", c_ip);
    vars.insert(env::OUTBOUND_DISCOVERY_IDLE_TIMEOUT, "400ms".into());
    let client = Proxy::ready(vars).await;
    let open = async || {
        metric(
            &server.metrics().await,
            "tcp_open_connections",
            &[("direction", "inbound"), ("client_id", CLIENT_ID)],
        )
        .unwrap_or(0.0)
    };
    for round in 0..2 {
        {
            let mut c = h1_client(client.bound.outbound).await;
            let (status, _, body) = h1_get(&mut c, &format!("{MYAPP}:80"), "/x").await;
            assert_eq!(status, 200, "round {round}: {body}");
        }
        assert_eq!(
            open().await,
            1.0,
            "round {round}: one connection between the proxies"
        );
        assert!(
            eventually(Duration::from_secs(5), async || open().await == 0.0).await,
            "round {round}: the idle target's connection closes"
        );
    }
}
