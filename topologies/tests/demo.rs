//! The demo workloads over real loopback sockets: each protocol, latency and failure
//! injection, the explicit proxy form, probes and graceful shutdown.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use strait_topologies::demo::Identity;
use strait_topologies::demo::client::{self, ClientConfig, Protocol, Report, Stop, Target};
use strait_topologies::demo::proto::{HELLO_PATH, HelloReply, HelloRequest};
use strait_topologies::demo::server::{Server, ServerConfig, ServerStats};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn identity() -> Identity {
    Identity {
        name: "myapp".into(),
        version: "v2".into(),
        cluster: "east".into(),
        pod: "myapp-v2-7f9c-0".into(),
        namespace: "production".into(),
    }
}

/// A running demo server on 127.0.0.1:0.
struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<ServerStats>>,
    server: Arc<Server>,
}

impl Running {
    async fn start(config: ServerConfig) -> Self {
        let server = Server::new(config).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop,
            task,
            server,
        }
    }

    async fn shutdown(self) -> ServerStats {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the server stops within its drain bound")
            .unwrap()
            .unwrap()
    }
}

fn plain(identity: Identity) -> ServerConfig {
    ServerConfig {
        identity,
        ..ServerConfig::default()
    }
}

fn requests(addr: impl ToString, protocol: Protocol, n: u64) -> ClientConfig {
    ClientConfig {
        target: Target::parse("URL", &format!("http://{}/hello", addr.to_string())).unwrap(),
        protocol,
        rps: 500.0,
        stop: Stop::Requests(n),
        concurrency: 4,
        proxy: None,
        timeout: Duration::from_secs(5),
        timeline: false,
    }
}

async fn run(config: ClientConfig) -> Report {
    tokio::time::timeout(Duration::from_secs(30), client::run(config, None))
        .await
        .expect("the client finishes")
        .expect("valid client config")
}

#[tokio::test]
async fn each_protocol_is_answered_on_one_port_with_the_servers_identity() {
    let srv = Running::start(plain(identity())).await;
    for protocol in [Protocol::Http1, Protocol::Http2, Protocol::Grpc] {
        let rep = run(requests(srv.addr, protocol, 40)).await;
        assert_eq!(
            (rep.requests, rep.succeeded, rep.failed),
            (40, 40, 0),
            "{protocol:?}: {rep:?}"
        );
        assert_eq!(rep.success_rate, 1.0);
        assert_eq!(rep.servers.len(), 1, "{rep:?}");
        assert_eq!(
            (&rep.servers[0].server, rep.servers[0].requests),
            (&identity(), 40)
        );
        assert!(rep.latency_ms.p50 > 0.0 && rep.latency_ms.p50 <= rep.latency_ms.p99);
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    }
    assert_eq!(
        srv.shutdown().await,
        ServerStats {
            requests: 120,
            failures: 0
        }
    );
}

#[tokio::test]
async fn http_answers_are_json_naming_the_protocol_and_padded_to_the_response_size() {
    let srv = Running::start(ServerConfig {
        response_size: Some(1024),
        ..plain(identity())
    })
    .await;
    let mut conn = std::net::TcpStream::connect(srv.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = tokio::task::spawn_blocking(move || {
        conn.write_all(b"GET /anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{text}"
        );
        text.split_once("\r\n\r\n").unwrap().1.to_string()
    })
    .await
    .unwrap();
    assert_eq!(body.len(), 1024);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["protocol"], "HTTP/1.1");
    assert_eq!(answer["cluster"], "east");
    assert_eq!(answer["pod"], "myapp-v2-7f9c-0");
    assert_eq!(answer["version"], "v2");
    assert_eq!(answer["name"], "myapp");
    assert_eq!(answer["status"], "ok");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_stock_grpc_client_calls_the_service() {
    use prost::Message;
    let srv = Running::start(ServerConfig {
        response_size: Some(1024),
        ..plain(identity())
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
    let reply = grpc
        .unary(
            tonic::Request::new(HelloRequest { message: "hi".into() }),
            http::uri::PathAndQuery::from_static(HELLO_PATH),
            codec,
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.identity(), identity());
    assert_eq!(reply.protocol, "gRPC");
    assert_eq!(reply.encoded_len(), 1024);

    // An unknown method is UNIMPLEMENTED, not a crash or an HTTP error.
    let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            tonic::Request::new(HelloRequest::default()),
            http::uri::PathAndQuery::from_static("/strait.demo.Demo/Nope"),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    srv.shutdown().await;
}

#[tokio::test]
async fn failures_are_injected_at_exactly_the_rate() {
    let srv = Running::start(ServerConfig {
        failure_rate: 0.25,
        ..plain(identity())
    })
    .await;
    let rep = run(requests(srv.addr, Protocol::Http1, 40)).await;
    assert_eq!((rep.succeeded, rep.failed), (30, 10), "{rep:?}");
    assert_eq!(rep.errors.get("HTTP 500"), Some(&10));
    assert_eq!(rep.success_rate, 0.75);
    // Failed answers still say who answered.
    assert_eq!(rep.servers[0].requests, 40);

    let rep = run(requests(srv.addr, Protocol::Grpc, 40)).await;
    assert_eq!((rep.succeeded, rep.failed), (30, 10), "{rep:?}");
    assert_eq!(rep.errors.get("gRPC 14 UNAVAILABLE"), Some(&10));
    assert_eq!(
        srv.shutdown().await,
        ServerStats {
            requests: 80,
            failures: 20
        }
    );
}

#[tokio::test]
async fn added_latency_shows_in_the_clients_percentiles() {
    let srv = Running::start(ServerConfig {
        latency: Duration::from_millis(60),
        ..plain(identity())
    })
    .await;
    for protocol in [Protocol::Http2, Protocol::Grpc] {
        let rep = run(ClientConfig {
            rps: 50.0,
            ..requests(srv.addr, protocol, 8)
        })
        .await;
        assert_eq!(rep.succeeded, 8, "{rep:?}");
        assert!(rep.latency_ms.p50 >= 60.0, "{protocol:?}: {:?}", rep.latency_ms);
        assert!(rep.latency_ms.max < 5000.0, "{protocol:?}: {:?}", rep.latency_ms);
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn http1_through_an_explicit_proxy_uses_the_absolute_form() {
    // A one-shot "proxy" that records the request head and answers like a demo server.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let seen = std::thread::spawn(move || {
        let (mut c, _) = proxy.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let body = serde_json::json!({"name": "n", "version": "v", "cluster": "c", "pod": "p",
            "namespace": "ns", "protocol": "HTTP/1.1", "status": "ok"})
        .to_string();
        write!(
            c,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8(head).unwrap()
    });
    let rep = run(ClientConfig {
        proxy: Some(proxy_addr.to_string()),
        concurrency: 1,
        ..requests("myapp.production.svc.cluster.local:8080", Protocol::Http1, 1)
    })
    .await;
    let head = seen.join().unwrap();
    assert!(
        head.starts_with("GET http://myapp.production.svc.cluster.local:8080/hello HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("host: myapp.production.svc.cluster.local:8080\r\n"),
        "{head}"
    );
    assert_eq!(rep.succeeded, 1, "{rep:?}");
    assert_eq!(rep.servers[0].server.pod, "p");
}

#[tokio::test]
async fn http2_and_grpc_through_an_explicit_proxy_connect_to_it() {
    // The demo server stands in for the proxy: the target name does not resolve, so an
    // answer proves the client connected to --proxy.
    let srv = Running::start(plain(identity())).await;
    for protocol in [Protocol::Http2, Protocol::Grpc] {
        let rep = run(ClientConfig {
            proxy: Some(srv.addr.to_string()),
            ..requests("nowhere.invalid:80", protocol, 4)
        })
        .await;
        assert_eq!(rep.succeeded, 4, "{protocol:?}: {rep:?}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_is_reported_as_connection_failures() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let rep = run(requests(addr, Protocol::Http1, 6)).await;
    assert_eq!((rep.succeeded, rep.failed), (0, 6), "{rep:?}");
    assert_eq!(rep.success_rate, 0.0);
    let (kind, n) = rep.errors.iter().next().unwrap();
    assert!(kind.starts_with(&format!("connect {addr}: ")), "{kind}");
    assert_eq!(*n, 6);
}

#[tokio::test]
async fn a_duration_run_sends_at_the_fixed_rate() {
    let srv = Running::start(plain(identity())).await;
    let rep = run(ClientConfig {
        rps: 100.0,
        stop: Stop::Duration(Duration::from_millis(500)),
        ..requests(srv.addr, Protocol::Http1, 1)
    })
    .await;
    // Requests are scheduled at 0, 10, …, 490 ms: exactly 50.
    assert_eq!(rep.requests, 50, "{rep:?}");
    assert_eq!(rep.succeeded, 50);
    srv.shutdown().await;
}

#[tokio::test]
async fn probes_answer_and_shutdown_lets_in_flight_requests_finish() {
    let srv = Running::start(ServerConfig {
        latency: Duration::from_millis(300),
        ..plain(identity())
    })
    .await;
    let probe = |path: &'static str, addr| {
        tokio::task::spawn_blocking(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut raw = String::new();
            c.read_to_string(&mut raw).unwrap();
            raw
        })
    };
    let ready = probe("/ready", srv.addr).await.unwrap();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let live = probe("/live", srv.addr).await.unwrap();
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    // Probes are never delayed, failed or counted.
    assert_eq!(srv.server.stats().requests, 0);

    let in_flight = tokio::spawn(run(requests(srv.addr, Protocol::Http1, 1)));
    while srv.server.stats().requests == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = srv.addr;
    let stats = srv.shutdown().await;
    assert_eq!(stats.requests, 1);
    let rep = in_flight.await.unwrap();
    assert_eq!(rep.succeeded, 1, "the in-flight request finished: {rep:?}");
    // And the listener is closed.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
