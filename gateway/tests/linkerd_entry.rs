//! Linkerd's gateway entry on 4143/tcp over real sockets on 127.0.0.1: a client that
//! speaks as a stock linkerd2-proxy does to a remote gateway (mTLS with its own mesh
//! identity, ALPN `transport.l5d.io/v1`, the transport header naming the service) is
//! relayed to the endpoint the resolver picks; meshed endpoints are dialed with the
//! gateway's own identity; clients that are not meshed under the anchors, or do not speak
//! the protocol, are refused and counted.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use strait_gateway::*;
use strait_identity::{
    CertStore, ClientAuth, IdentityName, TrustAnchors, client_config, peer_identity, server_config,
};
use strait_proxy::transport_header::{ALPN, Decoded, TransportHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const ECHO: &str = "echo.production.svc.cluster.local";
const MYAPP: &str = "myapp.production.svc.cluster.local";

fn workload(sa: &str) -> IdentityName {
    IdentityName::new(sa, "production", "cluster.local").unwrap()
}

/// Connects to the entry as a stock proxy does; `None` ALPN offers none.
async fn dial(
    entry: SocketAddr,
    store: &CertStore,
    anchors: &TrustAnchors,
    alpn: Option<&[u8]>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = Arc::unwrap_or_clone(client_config(store, anchors));
    config.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
    let tcp = TcpStream::connect(entry).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(gateway_identity().server_name(), tcp)
        .await
}

/// A table with [`ECHO`]:80 at the unmeshed `echo`.
fn plain_echo(echo: SocketAddr) -> StaticResolver {
    let mut table = StaticResolver::new();
    let plain = Endpoint {
        addr: echo,
        identity: None,
        app_port: None,
    };
    table.insert(Authority::new(ECHO).unwrap(), 80, plain);
    table
}

fn header(name: &str, port: u16) -> Vec<u8> {
    TransportHeader {
        port,
        name: Some(name.to_owned()),
        protocol: None,
    }
    .encode()
    .to_vec()
}

/// Writes `data` after `prefix`, half-closes, reads everything back.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    prefix: &[u8],
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(prefix).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await?;
    Ok(back)
}

/// A meshed endpoint's proxy inbound, as far as the gateway can tell: mTLS as `me`,
/// requires a client certificate, reads the transport header, then answers
/// `client=<identity> port=<header port> ` followed by the echoed bytes.
async fn meshed_endpoint(pki: &Pki, me: &IdentityName) -> (SocketAddr, JoinHandle<()>) {
    let mut config = Arc::unwrap_or_clone(server_config(&pki.store(me), &pki.anchors, ClientAuth::Required));
    config.alpn_protocols = vec![ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(LOCALHOST).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = peer_identity(tls.get_ref().1)
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                let mut buf = Vec::new();
                let (port, rest) = loop {
                    let mut chunk = [0u8; 256];
                    let n = tls.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the gateway sent a transport header");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Decoded::Header(h, used) = TransportHeader::decode(&buf) {
                        break (h.port, buf.split_off(used));
                    }
                };
                let mut rest = rest;
                tls.read_to_end(&mut rest).await.unwrap();
                let mut out = format!("client={client} port={port} ").into_bytes();
                out.extend_from_slice(&rest);
                tls.write_all(&out).await.unwrap();
                tls.shutdown().await.unwrap();
            });
        }
    });
    (addr, task)
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} within 2s");
}

#[tokio::test]
async fn a_stock_proxy_reaches_plain_and_meshed_endpoints_through_the_tcp_entry() {
    bounded(async {
        let pki = Pki::new();
        let (echo, _echo) = echo_server().await;
        let (inbound, _inbound) = meshed_endpoint(&pki, &workload("myapp")).await;
        let mut table = plain_echo(echo);
        let meshed = Endpoint {
            addr: inbound,
            identity: Some(workload("myapp")),
            app_port: Some(8080),
        };
        table.insert(Authority::new(MYAPP).unwrap(), 80, meshed);
        let mut c = config(vec![gateway_identity()]);
        c.linkerd_entry = Some(LinkerdEntry::BesideQuic);
        let gw = TestGateway::start(
            c,
            pki.creds(&gateway_identity(), SessionState::new()),
            Arc::new(table),
        )
        .await;
        let entry = gw.linkerd_entry.expect("the entry is bound");
        // 4143/tcp beside 4143/udp: one port number for both.
        assert_eq!(entry, gw.quic_addr);
        let web = pki.store(&workload("web"));

        let tls = dial(entry, &web, &pki.anchors, Some(ALPN)).await.unwrap();
        let back = exchange(tls, &header(ECHO, 80), b"hello from a stock proxy")
            .await
            .unwrap();
        assert_eq!(back, b"hello from a stock proxy");

        // Linkerd's gateway terminates the client's TLS: the endpoint sees the gateway.
        let tls = dial(entry, &web, &pki.anchors, Some(ALPN)).await.unwrap();
        let back = exchange(tls, &header(MYAPP, 80), b"payload").await.unwrap();
        let want = format!("client={} port=8080 payload", gateway_identity());
        assert_eq!(String::from_utf8_lossy(&back), want);

        let m = &gw.metrics.entry;
        let (sent, received) = (
            m.bytes.sent.load(Ordering::Relaxed),
            m.bytes.received.load(Ordering::Relaxed),
        );
        // Headers and payloads in, answers out.
        assert!(
            received >= 24 + 7 && sent >= 24 + want.len() as u64,
            "{sent} {received}"
        );

        // A connection still open already counts what it carried.
        let mut tls = dial(entry, &web, &pki.anchors, Some(ALPN)).await.unwrap();
        tls.write_all(&header(ECHO, 80)).await.unwrap();
        tls.write_all(b"still open").await.unwrap();
        let mut back = [0u8; 10];
        tls.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"still open");
        assert!(m.bytes.sent.load(Ordering::Relaxed) >= sent + 10);
        assert!(m.bytes.received.load(Ordering::Relaxed) >= received + 10);
        drop(tls);

        assert_eq!(m.streams_total.load(Ordering::Relaxed), 3);
        assert_eq!(m.connections_total.load(Ordering::Relaxed), 3);
        let text = gw.metrics.render();
        assert!(
            text.lines().any(|l| l == "gateway_entry_streams_total 3"),
            "{text}"
        );
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_tcp_entry_refuses_unmeshed_untrusted_and_confused_clients() {
    bounded(async {
        let pki = Pki::new();
        let other = Pki::new();
        let (echo, _echo) = echo_server().await;
        let table = plain_echo(echo);
        let mut c = config(vec![gateway_identity()]);
        c.linkerd_entry = Some(LinkerdEntry::At(any_port()));
        let gw = TestGateway::start(
            c,
            pki.creds(&gateway_identity(), SessionState::new()),
            Arc::new(table),
        )
        .await;
        let entry = gw.linkerd_entry.unwrap();
        let m = gw.metrics.entry.clone();

        // No client certificate: refused in the handshake (TLS 1.3 clients learn it on read).
        let anonymous = CertStore::new();
        if let Ok(tls) = dial(entry, &anonymous, &pki.anchors, Some(ALPN)).await {
            assert!(exchange(tls, &header(ECHO, 80), b"x").await.is_err_or_empty());
        }
        eventually("an anonymous client is refused", || {
            m.handshake_failures.load(Ordering::Relaxed) == 1
        })
        .await;

        // A certificate under other trust anchors: refused too.
        let stranger = other.store(&workload("web"));
        if let Ok(tls) = dial(entry, &stranger, &pki.anchors, Some(ALPN)).await {
            assert!(exchange(tls, &header(ECHO, 80), b"x").await.is_err_or_empty());
        }
        eventually("an untrusted client is refused", || {
            m.handshake_failures.load(Ordering::Relaxed) == 2
        })
        .await;

        // Meshed, but not speaking Linkerd's transport protocol.
        let web = pki.store(&workload("web"));
        let tls = dial(entry, &web, &pki.anchors, None).await.unwrap();
        assert!(
            exchange(tls, b"GET / HTTP/1.1\r\n\r\n", b"")
                .await
                .is_err_or_empty()
        );
        // A header without a name (a proxy's header, not a gateway's).
        let tls = dial(entry, &web, &pki.anchors, Some(ALPN)).await.unwrap();
        let nameless = TransportHeader {
            port: 80,
            name: None,
            protocol: None,
        };
        assert!(exchange(tls, &nameless.encode(), b"x").await.is_err_or_empty());
        eventually("confused clients are refused as malformed", || {
            m.refusals.get(RefusalReason::Malformed) == 4
        })
        .await;
        // A service this cluster does not have.
        let tls = dial(entry, &web, &pki.anchors, Some(ALPN)).await.unwrap();
        assert!(
            exchange(tls, &header("nope.production.svc.cluster.local", 80), b"x")
                .await
                .is_err_or_empty()
        );
        eventually("an unknown target is refused", || {
            m.refusals.get(RefusalReason::UnknownTarget) == 1
        })
        .await;
        assert_eq!(m.streams_total.load(Ordering::Relaxed), 0);
        let text = gw.metrics.render();
        for line in [
            "gateway_entry_handshake_failures_total 2",
            "gateway_entry_refusals_total{reason=\"unknown-target\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        gw.shutdown().await;
    })
    .await;
}

/// A refused connection: an error, or nothing but the close.
trait ErrOrEmpty {
    fn is_err_or_empty(&self) -> bool;
}

impl ErrOrEmpty for std::io::Result<Vec<u8>> {
    fn is_err_or_empty(&self) -> bool {
        self.as_ref().map_or(true, Vec::is_empty)
    }
}

#[tokio::test]
async fn a_pooled_connection_through_the_tcp_entry_does_not_hold_shutdown_past_the_drain() {
    bounded(async {
        let pki = Pki::new();
        let (echo, _echo) = echo_server().await;
        let table = plain_echo(echo);
        let mut c = config(vec![gateway_identity()]);
        c.linkerd_entry = Some(LinkerdEntry::BesideQuic);
        let grace = c.link.drain_timeout;
        let gw = TestGateway::start(
            c,
            pki.creds(&gateway_identity(), SessionState::new()),
            Arc::new(table),
        )
        .await;
        let entry = gw.linkerd_entry.expect("the entry is bound");
        let web = pki.store(&workload("web"));
        // A stock proxy's pooled connection: relaying, and never closed by the client.
        let mut tls = dial(entry, &web, &pki.anchors, Some(ALPN)).await.unwrap();
        tls.write_all(&header(ECHO, 80)).await.unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tls.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");

        let started = std::time::Instant::now();
        gw.shutdown().await;
        let took = started.elapsed();
        assert!(
            took >= grace && took < grace + Duration::from_secs(6),
            "shutdown took {took:?} with a {grace:?} drain"
        );
        // The gateway cut the connection, and says so with a reset: an orderly end would
        // pass for a complete exchange.
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
        assert!(
            matches!(&end, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{end:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_tcp_entry_beside_a_fixed_quic_port_taken_on_tcp_is_a_clear_bind_error() {
    bounded(async {
        let pki = Pki::new();
        let held = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = held.local_addr().unwrap();
        let mut c = config(vec![gateway_identity()]);
        c.quic_addr = port;
        c.linkerd_entry = Some(LinkerdEntry::BesideQuic);
        let err = Gateway::bind(
            c,
            pki.creds(&gateway_identity(), SessionState::new()),
            Arc::new(StaticResolver::new()),
        )
        .await
        .map(|_| ())
        .expect_err("the TCP port is held");
        // A fixed port is the operator's choice: no other port is tried.
        match err {
            GatewayError::Bind { what, addr, source } => {
                assert_eq!(what, "Linkerd's gateway entry (TCP)");
                assert_eq!(addr, port);
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            other => panic!("a bind error expected, got {other}"),
        }
    })
    .await;
}
