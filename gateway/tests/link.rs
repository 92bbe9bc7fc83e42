//! Two gateways linked over real QUIC on 127.0.0.1, certificates from a
//! generated issuer, TCP backends behind the ingress.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use strait_gateway::proto::header::{Reply, Request, encode_request};
use strait_gateway::relay::read_reply;
use strait_gateway::*;
use strait_identity::IdentityName;
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

/// A resolver that knows `ECHO:7` at `echo`.
fn echo_table(echo: SocketAddr) -> StaticResolver {
    let mut table = StaticResolver::new();
    table.insert(
        Authority::new(ECHO).unwrap(),
        7,
        Endpoint {
            addr: echo,
            identity: None,
            app_port: None,
        },
    );
    table
}

async fn pair() -> Pair {
    let pki = Pki::new();
    let (echo, echo_task) = echo_server().await;
    let (digest, digest_task) = digest_server().await;
    let mut table = echo_table(echo);
    table.insert(
        Authority::new(DIGEST).unwrap(),
        9,
        Endpoint {
            addr: digest,
            identity: None,
            app_port: None,
        },
    );
    let east = TestGateway::start(
        config(vec![gateway_identity()]),
        pki.creds(&gateway_identity(), SessionState::new()),
        Arc::new(table),
    )
    .await;
    let west = west_for(&pki, &east, SessionState::new()).await;
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
        // Path MTU discovery took the link past Ethernet's 1452 bytes on loopback (it
        // used to stay at 1200: jumbo GSO batches were refused and looked like a black hole).
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.path_mtu.load(Ordering::Relaxed) <= 1452 {
            assert!(
                Instant::now() < deadline,
                "path MTU stayed at {} bytes",
                m.path_mtu.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(m.path_mtu.load(Ordering::Relaxed) <= u64::from(strait_gateway::MAX_UDP_PAYLOAD));
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
            Reply::Accepted { .. } => panic!("unknown target accepted"),
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
                Reply::Accepted { .. } => panic!("accepted {bytes:?}"),
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

#[tokio::test]
async fn a_peer_presenting_the_wrong_identity_is_refused_by_the_dialer() {
    bounded(async {
        let pki = Pki::new();
        // east holds a valid certificate, but for another identity than the link expects.
        let impostor = identity("impostor");
        let east = TestGateway::start(
            config(vec![gateway_identity()]),
            pki.creds(&impostor, SessionState::new()),
            Arc::new(StaticResolver::new()),
        )
        .await;
        let west = west_for(&pki, &east, SessionState::new()).await;
        let err = west.link().established(Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, OpenError::Down { .. }), "{err}");
        assert!(err.to_string().contains(gateway_identity().as_str()), "{err}");
        assert_eq!(east.metrics.inbound.connections_open.load(Ordering::Relaxed), 0);
        refused_with(
            &west,
            LinkFailure::WrongIdentity,
            "check the Link's gatewayIdentity",
        )
        .await;
        west.shutdown().await;
        east.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_dialer_presenting_an_unaccepted_identity_is_refused_by_the_listener() {
    bounded(async {
        let pki = Pki::new();
        // east accepts links only from `trusted-gateway`; west is linkerd-gateway.
        let east = TestGateway::start(
            config(vec![identity("trusted-gateway")]),
            pki.creds(&gateway_identity(), SessionState::new()),
            Arc::new(StaticResolver::new()),
        )
        .await;
        let west = west_for(&pki, &east, SessionState::new()).await;
        assert!(west.link().established(Duration::from_secs(2)).await.is_err());
        assert_eq!(west.link().metrics().alive.load(Ordering::Relaxed), 0);
        assert_eq!(east.metrics.inbound.connections_open.load(Ordering::Relaxed), 0);
        assert_eq!(east.metrics.inbound.streams_total.load(Ordering::Relaxed), 0);
        refused_with(&west, LinkFailure::RefusedByPeer, "--accept-identity").await;
        west.shutdown().await;
        east.shutdown().await;
    })
    .await;
}

/// A remote gateway whose certificate is outside its validity period (here, issued by a
/// clock an hour ahead: not yet valid) is refused in a full handshake, counted as an
/// expired certificate with what to check.
#[tokio::test]
async fn a_gateway_outside_its_certificate_s_validity_is_refused() {
    bounded(async {
        let pki = Pki::new();
        let ahead = std::time::SystemTime::now() + Duration::from_secs(3600);
        let east = TestGateway::start(
            config(vec![gateway_identity()]),
            Credentials {
                store: pki.store_issued_at(&gateway_identity(), ahead),
                anchors: pki.anchors.clone(),
                sessions: SessionState::new(),
            },
            Arc::new(StaticResolver::new()),
        )
        .await;
        let west = west_for(&pki, &east, SessionState::new()).await;
        assert!(west.link().established(Duration::from_secs(2)).await.is_err());
        assert_eq!(east.metrics.inbound.connections_open.load(Ordering::Relaxed), 0);
        refused_with(
            &west,
            LinkFailure::ExpiredCertificate,
            "both machines' clocks agree",
        )
        .await;
        west.shutdown().await;
        east.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_gateway_under_other_trust_anchors_is_refused() {
    bounded(async {
        let ours = Pki::new();
        let theirs = Pki::new();
        let east = TestGateway::start(
            config(vec![gateway_identity()]),
            theirs.creds(&gateway_identity(), SessionState::new()),
            Arc::new(StaticResolver::new()),
        )
        .await;
        let west = west_for(&ours, &east, SessionState::new()).await;
        assert!(west.link().established(Duration::from_secs(2)).await.is_err());
        assert_eq!(east.metrics.inbound.connections_open.load(Ordering::Relaxed), 0);
        refused_with(
            &west,
            LinkFailure::UntrustedPeer,
            "does not chain to this cluster's trust anchors",
        )
        .await;
        west.shutdown().await;
        east.shutdown().await;
    })
    .await;
}

/// Writes `ping {i}` on `tcp` (relayed to an echo server) and reads it back, within 5 s.
async fn ping(tcp: &mut TcpStream, i: usize) {
    let msg = format!("ping {i}");
    tcp.write_all(msg.as_bytes()).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut back))
        .await
        .unwrap_or_else(|_| panic!("ping {i} echoed within 5s"))
        .unwrap_or_else(|e| panic!("ping {i}: the relayed stream failed: {e}"));
    assert_eq!(back, msg.as_bytes());
}

/// East shutting down drains its link: west stops opening streams on it at once (east
/// refuses its probes as shutting down), the stream already relayed goes on well past
/// the time west's probes would have declared east dead and cut it, and east is done as
/// soon as that stream ends, not at the end of its drain period.
#[tokio::test]
async fn a_gateway_shutting_down_lets_the_streams_it_relays_finish() {
    bounded(async {
        let pki = Pki::new();
        let (echo, _echo_task) = echo_server().await;
        let mut c = config(vec![gateway_identity()]);
        c.link.drain_timeout = Duration::from_secs(6);
        let east = TestGateway::start(
            c,
            pki.creds(&gateway_identity(), SessionState::new()),
            Arc::new(echo_table(echo)),
        )
        .await;
        let west = west_for(&pki, &east, SessionState::new()).await;
        west.link().established(Duration::from_secs(5)).await.unwrap();
        let mut tcp = TcpStream::connect(west.egress[0]).await.unwrap();
        ping(&mut tcp, 0).await;
        let conn = west.link().connection().expect("linked");

        let shutting = Instant::now();
        let east_done = tokio::spawn(east.shutdown());
        while west.link().connection().is_some() {
            assert!(
                shutting.elapsed() < Duration::from_secs(1),
                "west retires the connection of a gateway that is shutting down"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(west.link().metrics().alive.load(Ordering::Relaxed), 0);
        // On the retired connection east refuses probes as shutting down, but still
        // relays an open (one sent before west learned of the drain).
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut frame = Vec::new();
        encode_request(&Request::Probe, &mut frame);
        send.write_all(&frame).await.unwrap();
        match read_reply(&mut recv).await.unwrap().0 {
            Reply::Refused { reason, .. } => assert_eq!(reason, RefusalReason::ShuttingDown),
            Reply::Accepted { .. } => panic!("a probe of a draining gateway was answered"),
        }
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut frame = Vec::new();
        encode_request(&Request::Open(target(ECHO, 7)), &mut frame);
        frame.extend_from_slice(b"late open");
        send.write_all(&frame).await.unwrap();
        send.finish().unwrap();
        let (reply, mut echoed) = read_reply(&mut recv).await.unwrap();
        assert!(matches!(reply, Reply::Accepted { .. }), "{reply:?}");
        AsyncReadExt::read_to_end(&mut recv, &mut echoed).await.unwrap();
        assert_eq!(echoed, b"late open");
        // Three failed probes of 500 ms would have cut the stream after about 1.5 s.
        let mut i = 1;
        while shutting.elapsed() < Duration::from_millis(2500) {
            ping(&mut tcp, i).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(tcp);
        tokio::time::timeout(Duration::from_secs(3), east_done)
            .await
            .expect("east is done once the stream ends, before its drain period is over")
            .unwrap();
        assert!(shutting.elapsed() < Duration::from_secs(6));
        west.shutdown().await;
    })
    .await;
}

/// East restarts as a new process (fresh session state) on the same address, with
/// `secret` as its ticket secret (the first east's is `b"east key"`) and `accept` as
/// its accepted identities. Returns (west, restarted east, first-link time, re-link time).
async fn restart_east(
    secret: &[u8],
    accept: Vec<IdentityName>,
    relinks: bool,
) -> (TestGateway, TestGateway, Duration, Duration) {
    restart_east_under(secret, accept, relinks, false).await
}

/// [`restart_east`]; with `new_anchors`, the restarted east trusts (and is issued under)
/// anchors of its own, which do not cover west's certificate.
async fn restart_east_under(
    secret: &[u8],
    accept: Vec<IdentityName>,
    relinks: bool,
    new_anchors: bool,
) -> (TestGateway, TestGateway, Duration, Duration) {
    let pki = Pki::new();
    let (echo, _echo_task) = echo_server().await;
    let table: Arc<dyn Resolve> = Arc::new(echo_table(echo));
    let east = TestGateway::start(
        config(vec![gateway_identity()]),
        pki.creds(&gateway_identity(), SessionState::with_ticket_secret(b"east key")),
        table.clone(),
    )
    .await;
    let east_addr = east.quic_addr;
    let west = west_for(&pki, &east, SessionState::new()).await;
    let t = Instant::now();
    west.link().established(Duration::from_secs(5)).await.unwrap();
    let full = t.elapsed();
    echo_round_trip(west.egress[0], b"before the restart").await;
    assert_eq!(
        west.link().metrics().resumed.load(Ordering::Relaxed),
        0,
        "the first link is a full handshake"
    );

    east.shutdown().await;
    let restarted = Instant::now();
    let successor_pki = if new_anchors { Pki::new() } else { pki };
    let east = TestGateway::start(
        config_on(east_addr, accept),
        successor_pki.creds(&gateway_identity(), SessionState::with_ticket_secret(secret)),
        table,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while relinks && west.link().metrics().reconnects.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "west did not re-link");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (west, east, full, restarted.elapsed())
}

#[tokio::test]
async fn a_restarted_gateway_resumes_its_links_without_a_full_handshake() {
    bounded(async {
        let (west, east, full, relinked) = restart_east(b"east key", vec![gateway_identity()], true).await;
        let m = west.link().metrics();
        assert_eq!(m.reconnects.load(Ordering::Relaxed), 1);
        // Every attempt offers one of east's tickets and spends it: the east that was going
        // away must not have refused any (it leaves them unanswered), or a few refusals
        // during its drain would use the tickets up.
        let failed: Vec<u64> = LinkFailure::ALL.iter().map(|k| m.failures(*k)).collect();
        assert_eq!(
            failed,
            [0; LinkFailure::ALL.len()],
            "no re-link attempt failed (last error: {:?})",
            m.last_error()
        );
        echo_round_trip(west.egress[0], b"after the restart").await;
        assert_eq!(
            m.resumed.load(Ordering::Relaxed),
            1,
            "the re-link resumed the session the previous east issued"
        );
        assert!(east.metrics.inbound.resumed.load(Ordering::Relaxed) >= 1);
        assert!(
            east.metrics
                .render()
                .lines()
                .any(|l| l.starts_with("gateway_inbound_resumed_sessions_total ") && !l.ends_with(" 0")),
            "east exports its resumptions"
        );
        eprintln!("first link {full:?}; re-linked {relinked:?} after the restart, resumed");
        west.shutdown().await;
        east.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_gateway_with_a_new_key_relinks_with_a_full_handshake() {
    bounded(async {
        let (west, east, _, _) = restart_east(b"a rotated key", vec![gateway_identity()], true).await;
        echo_round_trip(west.egress[0], b"after the restart").await;
        assert_eq!(west.link().metrics().resumed.load(Ordering::Relaxed), 0);
        assert_eq!(east.metrics.inbound.resumed.load(Ordering::Relaxed), 0);
        west.shutdown().await;
        east.shutdown().await;
    })
    .await;
}

/// East's certificate expires while it restarts (the successor holds a fresh one and
/// resumes the sessions its predecessor issued): west does not accept a session whose
/// certificate is no longer valid, forgets east's tickets and links again with a full
/// handshake, which verifies the certificate east holds now.
#[tokio::test]
async fn a_session_whose_server_certificate_expired_is_not_resumed() {
    bounded(async {
        let pki = Pki::new();
        let (echo, _echo_task) = echo_server().await;
        let table: Arc<dyn Resolve> = Arc::new(echo_table(echo));
        let short = Credentials {
            store: pki.store_lasting(&gateway_identity(), Duration::from_secs(2)),
            anchors: pki.anchors.clone(),
            sessions: SessionState::with_ticket_secret(b"east key"),
        };
        let issued = std::time::SystemTime::now();
        let east = TestGateway::start(config(vec![gateway_identity()]), short, table.clone()).await;
        let east_addr = east.quic_addr;
        let west = west_for(&pki, &east, SessionState::new()).await;
        west.link().established(Duration::from_secs(5)).await.unwrap();
        echo_round_trip(west.egress[0], b"before the certificate expired").await;
        east.shutdown().await;
        // Past the old certificate's end (and the verifier's leeway for clock skew, if any).
        let expired = issued + Duration::from_secs(3);
        if let Ok(left) = expired.duration_since(std::time::SystemTime::now()) {
            tokio::time::sleep(left).await;
        }
        let east = TestGateway::start(
            config_on(east_addr, vec![gateway_identity()]),
            pki.creds(&gateway_identity(), SessionState::with_ticket_secret(b"east key")),
            table,
        )
        .await;
        let m = west.link().metrics();
        let deadline = Instant::now() + Duration::from_secs(15);
        while m.reconnects.load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "west did not re-link: {:?}",
                m.last_error()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        echo_round_trip(west.egress[0], b"after the restart").await;
        assert_eq!(m.resumed.load(Ordering::Relaxed), 0, "no session was resumed");
        assert!(
            east.metrics.inbound.resumed.load(Ordering::Relaxed) >= 1,
            "east resumed west's session"
        );
        // The refusal of the resumed session is the one failed attempt, counted as an
        // expired certificate.
        for kind in LinkFailure::ALL {
            let want = u64::from(kind == LinkFailure::ExpiredCertificate);
            assert_eq!(m.failures(kind), want, "{kind}: {:?}", m.last_error());
        }
        west.shutdown().await;
        east.shutdown().await;
    })
    .await;
}

/// West offers its ticket and the restarted east resumes the session, then refuses the
/// link: west keeps trying, never established, and nothing is relayed.
async fn a_resumed_link_is_refused(west: TestGateway, east: TestGateway) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while east.metrics.inbound.resumed.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "west never offered its session");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(west.link().metrics().reconnects.load(Ordering::Relaxed), 0);
    // West reports why: refused by the peer, not some other failure.
    let m = west.link().metrics();
    assert!(
        m.failures(LinkFailure::RefusedByPeer) > 0,
        "refusals counted as {:?} (last error: {:?})",
        LinkFailure::ALL
            .iter()
            .map(|k| (k.as_str(), m.failures(*k)))
            .collect::<Vec<_>>(),
        m.last_error()
    );
    let tcp = TcpStream::connect(west.egress[0]).await;
    if let Ok(mut tcp) = tcp {
        let _ = tcp.write_all(b"must not arrive").await;
        let mut back = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut back)).await;
        assert!(back.is_empty(), "relayed through a refused link: {back:?}");
    }
    assert_eq!(east.metrics.inbound.connections_open.load(Ordering::Relaxed), 0);
    assert_eq!(east.metrics.inbound.streams_total.load(Ordering::Relaxed), 0);
    west.shutdown().await;
    east.shutdown().await;
}

#[tokio::test]
async fn a_resumed_session_of_an_identity_no_longer_accepted_is_refused() {
    bounded(async {
        let other = IdentityName::new("other-gateway", "linkerd-multicluster", "cluster.local").unwrap();
        let (west, east, _, _) = restart_east(b"east key", vec![other], false).await;
        a_resumed_link_is_refused(west, east).await;
    })
    .await;
}

#[tokio::test]
async fn a_resumed_session_whose_chain_the_gateways_anchors_no_longer_cover_is_refused() {
    bounded(async {
        // East comes back with the same ticket key under anchors that do not cover west.
        let (west, east, _, _) = restart_east_under(b"east key", vec![gateway_identity()], false, true).await;
        a_resumed_link_is_refused(west, east).await;
    })
    .await;
}

#[tokio::test]
async fn a_gateway_that_rebinds_its_socket_keeps_its_link() {
    bounded(async {
        let p = pair().await;
        let conn = p.west.link().established(Duration::from_secs(5)).await.unwrap();
        // A relayed connection in flight across the address change.
        let mut tcp = TcpStream::connect(p.west.egress[0]).await.unwrap();
        tcp.write_all(b"first half|").await.unwrap();
        let mut buf = [0u8; 11];
        tcp.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"first half|");

        let old = p.west.endpoint.local_addr().unwrap();
        p.west
            .endpoint
            .rebind(strait_gateway::gateway::link_socket("127.0.0.1:0".parse().unwrap()).unwrap())
            .unwrap();
        let new = p.west.endpoint.local_addr().unwrap();
        assert_ne!(old.port(), new.port());

        tcp.write_all(b"second half").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"second half");
        echo_round_trip(p.west.egress[0], b"a new stream after migration").await;

        // Same connection, now seen by east from the new address.
        let now = p.west.link().connection().unwrap();
        assert_eq!(now.stable_id(), conn.stable_id());
        assert_eq!(p.west.link().metrics().reconnects.load(Ordering::Relaxed), 0);
        assert_eq!(p.east.metrics.inbound.connections_open.load(Ordering::Relaxed), 1);
        p.west.shutdown().await;
        p.east.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_admin_port_answers_linkerds_probe_and_serves_metrics() {
    bounded(async {
        let p = pair().await;
        p.west.link().established(Duration::from_secs(5)).await.unwrap();
        let listener = tokio::net::TcpListener::bind(LOCALHOST).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(strait_gateway::admin::serve(
            listener,
            p.west.metrics.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let get = |path: &'static str| async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n");
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut resp = String::new();
            tcp.read_to_string(&mut resp).await.unwrap();
            resp
        };
        let ready = get("/ready").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let metrics = get("/metrics").await;
            assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
            if metrics.contains("gateway_alive{target_cluster_name=\"east\"} 1")
                && metrics.contains("gateway_probes{target_cluster_name=\"east\",probe_successful=\"true\"}")
                && metrics
                    .contains("gateway_probe_latency_ms_bucket{target_cluster_name=\"east\",le=\"+Inf\"}")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "metrics never showed a live link:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(());
        server.await.unwrap();
        p.west.shutdown().await;
        p.east.shutdown().await;
    })
    .await;
}

/// Waits (bounded) until `gw`'s link has failed for `kind`, then checks the metrics, the
/// last error and its advice.
async fn refused_with(gw: &TestGateway, kind: LinkFailure, advice: &str) {
    let m = gw.link().metrics();
    for _ in 0..200 {
        if m.failures(kind) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(m.failures(kind) > 0, "no {kind} failure: {:?}", m.last_error());
    assert_eq!(m.alive.load(Ordering::Relaxed), 0);
    for other in LinkFailure::ALL.into_iter().filter(|k| *k != kind) {
        assert_eq!(m.failures(other), 0, "{other} counted for a {kind} failure");
    }
    let last = m.last_error().expect("the last error is kept");
    assert!(last.contains(kind.as_str()) && last.contains(advice), "{last}");
    let text = gw.metrics.render();
    let line = format!("gateway_link_errors_total{{target_cluster_name=\"east\",reason=\"{kind}\"}} ");
    assert!(text.lines().any(|l| l.starts_with(&line)), "{text}");
    let json = gw.metrics.links_json();
    assert_eq!(json[0]["cluster"], "east");
    assert_eq!(json[0]["alive"], false);
    assert!(json[0]["lastError"].as_str().unwrap().contains(advice), "{json}");
}
