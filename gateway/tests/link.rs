//! Two gateways linked over real QUIC on 127.0.0.1, certificates from a
//! generated issuer, TCP backends behind the ingress.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use strait_gateway::proto::header::{Reply, Request, encode_request};
use strait_gateway::relay::read_reply;
use strait_gateway::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ECHO: &str = "echo.default.svc.cluster.local";
const DIGEST: &str = "digest.default.svc.cluster.local";

/// east serves `echo` and `digest`; west links to east and has egress routes
/// for both plus one for a service east does not know.
struct Pair {
    west: TestGateway,
    east: TestGateway,
    _backends: Vec<tokio::task::JoinHandle<()>>,
}

async fn pair() -> Pair {
    let pki = Pki::new();
    let (echo, echo_task) = echo_server().await;
    let (digest, digest_task) = digest_server().await;
    let mut table = StaticResolver::new();
    table.insert(
        Authority::new(ECHO).unwrap(),
        7,
        Endpoint {
            addr: echo,
            identity: None,
        },
    );
    table.insert(
        Authority::new(DIGEST).unwrap(),
        9,
        Endpoint {
            addr: digest,
            identity: None,
        },
    );
    let east = TestGateway::start(
        config(vec![gateway_identity()]),
        pki.creds(&gateway_identity(), SessionState::new().unwrap()),
        Arc::new(table),
    )
    .await;
    let west = west_for(&pki, &east, SessionState::new().unwrap()).await;
    Pair {
        west,
        east,
        _backends: vec![echo_task, digest_task],
    }
}

async fn west_for(pki: &Pki, east: &TestGateway, sessions: SessionState) -> TestGateway {
    let mut c = config(vec![gateway_identity()]);
    c.links.push(link_to("east", east));
    for (authority, port) in [(ECHO, 7), (DIGEST, 9), ("nope.default.svc.cluster.local", 80)] {
        c.egress.push(EgressRoute {
            listen: any_port(),
            link: "east".into(),
            target: target(authority, port),
        });
    }
    TestGateway::start(
        c,
        pki.creds(&gateway_identity(), sessions),
        Arc::new(StaticResolver::new()),
    )
    .await
}

#[tokio::test]
async fn linked_gateways_relay_many_concurrent_streams_on_one_connection() {
    bounded(async {
        let p = pair().await;
        let conn = p.west.link().established(Duration::from_secs(5)).await.unwrap();
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..64u64 {
            let addr = p.west.egress[0];
            clients.spawn(async move {
                let mut seed = i + 1;
                let data = pattern(&mut seed, 16 * 1024 + i as usize * 97);
                echo_round_trip(addr, &data).await;
            });
        }
        while let Some(r) = clients.join_next().await {
            r.unwrap();
        }
        let link = p.west.link().metrics();
        assert_eq!(link.streams_total.load(Ordering::Relaxed), 64);
        assert_eq!(link.reconnects.load(Ordering::Relaxed), 0);
        // Every stream rode the one connection.
        assert_eq!(p.west.link().connection().unwrap().stable_id(), conn.stable_id());
        assert_eq!(p.east.metrics.inbound.streams_total.load(Ordering::Relaxed), 64);
        assert_eq!(p.east.metrics.inbound.connections_open.load(Ordering::Relaxed), 1);
        p.west.shutdown().await;
        p.east.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn large_transfers_keep_integrity_both_ways_with_half_close() {
    bounded(async {
        let p = pair().await;
        let mut tcp = TcpStream::connect(p.west.egress[1]).await.unwrap();
        let mut seed = 0x5eed;
        let mut sent = Fnv::new();
        for _ in 0..256 {
            let chunk = pattern(&mut seed, 128 * 1024);
            sent.update(&chunk);
            tcp.write_all(&chunk).await.unwrap();
        }
        // Half-close: the server only answers after our FIN crossed both gateways.
        tcp.shutdown().await.unwrap();
        let mut head = [0u8; 16];
        tcp.read_exact(&mut head).await.unwrap();
        let len = u64::from_be_bytes(head[..8].try_into().unwrap());
        let digest = u64::from_be_bytes(head[8..].try_into().unwrap());
        assert_eq!(len, 32 << 20);
        assert_eq!(digest, sent.finish(), "digest of 32 MiB upstream");
        // And 32 MiB back down, ending with the server's FIN.
        let mut expected_seed = digest | 1;
        let mut expected = Fnv::new();
        let mut got = Fnv::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.update(&buf[..n]);
        }
        let mut left = len;
        while left > 0 {
            let chunk = pattern(&mut expected_seed, left.min(64 * 1024) as usize);
            expected.update(&chunk);
            left -= chunk.len() as u64;
        }
        assert_eq!(got.len, len);
        assert_eq!(got.finish(), expected.finish(), "digest of 32 MiB downstream");
        let m = p.west.link().metrics();
        assert!(m.bytes.sent.load(Ordering::Relaxed) >= 32 << 20);
        assert!(m.bytes.received.load(Ordering::Relaxed) >= (32 << 20) + 16);
        p.west.shutdown().await;
        p.east.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_target_gets_a_typed_refusal_and_the_client_is_closed() {
    bounded(async {
        let p = pair().await;
        p.west.link().established(Duration::from_secs(5)).await.unwrap();
        // Through the egress: the client's connection is closed, no bytes come back.
        let mut tcp = TcpStream::connect(p.west.egress[2]).await.unwrap();
        let _ = tcp.write_all(b"hello?").await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("client closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let refusals = &p.west.link().metrics().refusals;
        assert_eq!(refusals.get(RefusalReason::UnknownTarget), 1);
        assert_eq!(
            p.east.metrics.inbound.refusals.get(RefusalReason::UnknownTarget),
            1
        );

        // On the wire: the reply names the reason.
        let nope = target("nope.default.svc.cluster.local", 80);
        let (_send, mut recv) = p.west.link().open(&nope, Duration::from_secs(1)).await.unwrap();
        match read_reply(&mut recv).await.unwrap().0 {
            Reply::Refused { reason, message } => {
                assert_eq!(reason, RefusalReason::UnknownTarget);
                assert!(message.contains("nope.default.svc.cluster.local:80"), "{message}");
            }
            Reply::Accepted => panic!("unknown target accepted"),
        }
        p.west.shutdown().await;
        p.east.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_and_unsupported_headers_are_refused_with_their_reason() {
    bounded(async {
        let p = pair().await;
        let conn = p.west.link().established(Duration::from_secs(5)).await.unwrap();
        let mut valid = Vec::new();
        encode_request(&Request::Probe, &mut valid);
        let mut future_version = valid.clone();
        future_version[4] = 9;
        for (bytes, expected) in [
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), RefusalReason::Malformed),
            (future_version, RefusalReason::UnsupportedVersion),
        ] {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            match read_reply(&mut recv).await.unwrap().0 {
                Reply::Refused { reason, .. } => assert_eq!(reason, expected),
                Reply::Accepted => panic!("accepted {bytes:?}"),
            }
        }
        p.west.shutdown().await;
        p.east.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn probes_measure_the_link_and_report_it_alive() {
    bounded(async {
        let p = pair().await;
        p.west.link().established(Duration::from_secs(5)).await.unwrap();
        let m = p.west.link().metrics().clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.probes().0 < 3 || m.rtt_us.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "probes answered: {:?}", m.probes());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(m.alive.load(Ordering::Relaxed), 1);
        let text = p.west.metrics.render();
        assert!(
            text.contains("gateway_alive{target_cluster_name=\"east\"} 1"),
            "{text}"
        );
        // Kill east: the link stops being alive and west keeps trying.
        p.east.shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.alive.load(Ordering::Relaxed) == 1 {
            assert!(Instant::now() < deadline, "link still alive after its peer died");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = p.west.link().connection();
        assert!(left.is_none(), "{:?}", left.map(|c| c.close_reason()));
        p.west.shutdown().await;
    })
    .await;
}
