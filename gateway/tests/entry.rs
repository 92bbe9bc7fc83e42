//! The proxy entry over a real QUIC link on 127.0.0.1: a local "proxy" opens a stream
//! with a `strt` request on TCP, gets the remote ingress's reply, then its bytes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use strait_gateway::proto::header::{Reply, Request, encode_request};
use strait_gateway::relay::read_reply;
use strait_gateway::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ECHO: &str = "echo.default.svc.cluster.local";

/// Opens a stream at `entry` for `authority:port` and returns the reply and the
/// connection.
async fn open(entry: SocketAddr, authority: &str, port: u16) -> (Reply, TcpStream) {
    let mut tcp = TcpStream::connect(entry).await.unwrap();
    let mut frame = Vec::new();
    encode_request(&Request::Open(target(authority, port)), &mut frame);
    tcp.write_all(&frame).await.unwrap();
    let (reply, rest) = read_reply(&mut tcp).await.unwrap();
    assert!(
        rest.is_empty(),
        "nothing follows the reply before the proxy speaks"
    );
    (reply, tcp)
}

#[tokio::test]
async fn a_proxy_entry_relays_after_the_remote_acceptance_and_passes_refusals_back() {
    bounded(async {
        let (echo, _echo_task) = echo_server().await;
        let mut table = StaticResolver::new();
        table.insert(
            Authority::new(ECHO).unwrap(),
            7,
            Endpoint {
                addr: echo,
                identity: None,
                app_port: Some(7007),
            },
        );
        let (east, west) = entry_pair(Arc::new(table), None).await;
        let entry = west.proxy_entries[0];

        let (reply, mut tcp) = open(entry, ECHO, 7).await;
        assert_eq!(reply, Reply::Accepted { app_port: Some(7007) });
        tcp.write_all(b"hello through both gateways").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut back = Vec::new();
        tcp.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello through both gateways");

        let (reply, mut tcp) = open(entry, "nope.default.svc.cluster.local", 80).await;
        let Reply::Refused { reason, message } = reply else {
            panic!("refusal expected")
        };
        assert_eq!(reason, RefusalReason::UnknownTarget);
        assert!(message.contains("nope.default.svc.cluster.local:80"), "{message}");
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the entry closes after a refusal");

        // A probe is for links, and garbage is not a request: both are refused.
        let mut tcp = TcpStream::connect(entry).await.unwrap();
        let mut frame = Vec::new();
        encode_request(&Request::Probe, &mut frame);
        tcp.write_all(&frame).await.unwrap();
        let (reply, _) = read_reply(&mut tcp).await.unwrap();
        assert!(
            matches!(
                reply,
                Reply::Refused {
                    reason: RefusalReason::Malformed,
                    ..
                }
            ),
            "{reply:?}"
        );
        let mut tcp = TcpStream::connect(entry).await.unwrap();
        tcp.write_all(b"\x16\x03\x01 a ClientHello too early")
            .await
            .unwrap();
        let (reply, _) = read_reply(&mut tcp).await.unwrap();
        assert!(
            matches!(
                reply,
                Reply::Refused {
                    reason: RefusalReason::Malformed,
                    ..
                }
            ),
            "{reply:?}"
        );

        // With the remote gateway gone, the entry answers link-down.
        east.shutdown().await;
        let (reply, _) = open(entry, ECHO, 7).await;
        assert!(
            matches!(
                reply,
                Reply::Refused {
                    reason: RefusalReason::LinkDown,
                    ..
                }
            ),
            "{reply:?}"
        );
        drop(west);
    })
    .await;
}

#[tokio::test]
async fn a_proxy_entry_for_an_unknown_link_is_refused_at_bind() {
    let pki = Pki::new();
    let mut c = config(vec![gateway_identity()]);
    c.proxy_entries.push(ProxyEntry {
        listen: any_port(),
        link: "east".into(),
    });
    let err = Gateway::bind(
        c,
        pki.creds(&gateway_identity(), SessionState::new()),
        Arc::new(StaticResolver::new()),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("proxy entry") && err.to_string().contains("\"east\""),
        "{err}"
    );
}
