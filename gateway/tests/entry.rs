//! The proxy entry over a real QUIC link on 127.0.0.1: a local "proxy" opens a stream
//! with a `strt` request on TCP, gets the remote ingress's reply, then its bytes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use strait_gateway::proto::header::{Reply, Request, encode_entry_request, encode_request};
use strait_gateway::relay::read_reply;
use strait_gateway::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ECHO: &str = "echo.default.svc.cluster.local";

/// Opens a stream at `entry` for `authority:port` and returns the reply and the
/// connection.
async fn open(entry: SocketAddr, authority: &str, port: u16) -> (Reply, TcpStream) {
    open_on(entry, None, authority, port).await
}

/// [`open`], naming `link` (`strt` version 3) when given.
async fn open_on(entry: SocketAddr, link: Option<&str>, authority: &str, port: u16) -> (Reply, TcpStream) {
    let mut tcp = TcpStream::connect(entry).await.unwrap();
    let mut frame = Vec::new();
    let link = link.map(|l| LinkName::new(l).unwrap());
    encode_entry_request(link.as_ref(), &Request::Open(target(authority, port)), &mut frame);
    tcp.write_all(&frame).await.unwrap();
    let (reply, rest) = read_reply(&mut tcp).await.unwrap();
    assert!(
        rest.is_empty(),
        "nothing follows the reply before the proxy speaks"
    );
    (reply, tcp)
}

/// East with an echo server for ECHO:7 (app port 7007), west with a proxy entry for its
/// link to east, and a stream to ECHO opened at that entry and accepted.
async fn echo_through_entry() -> (TestGateway, TestGateway, TcpStream, tokio::task::JoinHandle<()>) {
    let (table, echo_task) = echo_table(7007).await;
    let (east, west) = entry_pair(Arc::new(table), None).await;
    let (reply, tcp) = open(west.proxy_entries[0], ECHO, 7).await;
    assert_eq!(reply, Reply::Accepted { app_port: Some(7007) });
    (east, west, tcp, echo_task)
}

#[tokio::test]
async fn a_proxy_entry_relays_after_the_remote_acceptance_and_passes_refusals_back() {
    bounded(async {
        let (east, west, mut tcp, _echo_task) = echo_through_entry().await;
        let entry = west.proxy_entries[0];
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

        // A request may name this entry's link, and no other.
        let (reply, _) = open_on(entry, Some("east"), ECHO, 7).await;
        assert_eq!(reply, Reply::Accepted { app_port: Some(7007) });
        let (reply, _) = open_on(entry, Some("south"), ECHO, 7).await;
        let Reply::Refused { reason, message } = reply else {
            panic!("refusal expected")
        };
        assert_eq!(reason, RefusalReason::LinkDown);
        assert!(message.contains("only the link to east, not south"), "{message}");

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
        link: Some("east".into()),
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

/// A relay through the proxy entry that is still open when its gateway's drain ends is
/// cut, and the proxy learns it as a reset, never as an orderly end that would pass for
/// a complete exchange; shutdown ends soon after the drain period.
#[tokio::test]
async fn a_relay_open_at_the_end_of_the_drain_is_reset() {
    bounded(async {
        let (east, west, mut tcp, _echo_task) = echo_through_entry().await;
        tcp.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tcp.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");

        let started = std::time::Instant::now();
        west.shutdown().await;
        let took = started.elapsed();
        let drain = fast_link().drain_timeout;
        assert!(
            took < drain + std::time::Duration::from_secs(3),
            "shutdown took {took:?}"
        );
        let mut rest = Vec::new();
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
        assert!(
            matches!(&end, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{end:?}"
        );
        east.shutdown().await;
    })
    .await;
}

/// A resolver sending ECHO:7 to a new echo server, the endpoint's app port `app_port`.
async fn echo_table(app_port: u16) -> (StaticResolver, tokio::task::JoinHandle<()>) {
    let (echo, task) = echo_server().await;
    let mut table = StaticResolver::new();
    table.insert(
        Authority::new(ECHO).unwrap(),
        7,
        Endpoint {
            addr: echo,
            identity: None,
            app_port: Some(app_port),
        },
    );
    (table, task)
}

/// A gateway of one cluster whose resolver sends ECHO to an echo server, answering with
/// `app_port` so a test can tell the clusters apart.
async fn echo_cluster(pki: &Pki, app_port: u16) -> (TestGateway, tokio::task::JoinHandle<()>) {
    let (table, task) = echo_table(app_port).await;
    let gw = TestGateway::start(
        config(vec![gateway_identity()]),
        pki.creds(&gateway_identity(), SessionState::new()),
        Arc::new(table),
    )
    .await;
    (gw, task)
}

/// West, with `links` configured and one proxy entry for every link (returned).
async fn west_with_one_entry(pki: &Pki, links: Vec<LinkSpec>) -> (TestGateway, SocketAddr) {
    let mut c = config(vec![gateway_identity()]);
    c.links = links;
    c.proxy_entries.push(ProxyEntry {
        listen: any_port(),
        link: None,
    });
    let west = TestGateway::start(
        c,
        pki.creds(&gateway_identity(), SessionState::new()),
        Arc::new(StaticResolver::new()),
    )
    .await;
    let entry = west.proxy_entries[0];
    (west, entry)
}

fn refusal(reply: Reply) -> (RefusalReason, String) {
    match reply {
        Reply::Refused { reason, message } => (reason, message),
        accepted => panic!("refusal expected, got {accepted:?}"),
    }
}

#[tokio::test]
async fn one_entry_serves_every_link_by_name_and_links_come_and_go_at_runtime() {
    bounded(async {
        let pki = Pki::new();
        let (east, _e) = echo_cluster(&pki, 7001).await;
        let (south, _s) = echo_cluster(&pki, 7002).await;
        // West starts with no link and one entry for all of them; a Link watcher adds
        // them later.
        let (west, entry) = west_with_one_entry(&pki, Vec::new()).await;

        let (reason, message) = refusal(open_on(entry, Some("east"), ECHO, 7).await.0);
        assert_eq!(reason, RefusalReason::LinkDown);
        assert!(message.contains("no link to east (links: none)"), "{message}");

        let changes = west
            .registry
            .set_watched(vec![link_to("east", &east), link_to("south", &south)])
            .unwrap();
        assert_eq!(changes.added, ["east", "south"]);
        for (link, port) in [("east", 7001), ("south", 7002)] {
            let (reply, mut tcp) = open_on(entry, Some(link), ECHO, 7).await;
            assert_eq!(reply, Reply::Accepted { app_port: Some(port) }, "{link}");
            tcp.write_all(link.as_bytes()).await.unwrap();
            tcp.shutdown().await.unwrap();
            let mut back = Vec::new();
            tcp.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, link.as_bytes());
        }
        // Two links: a request must say which (a proxy of the version before does not).
        let (reason, message) = refusal(open(entry, ECHO, 7).await.0);
        assert_eq!(reason, RefusalReason::Malformed);
        assert!(
            message.contains("(east, south)") && message.contains("names none"),
            "{message}"
        );
        // The same set again changes nothing.
        let same = west
            .registry
            .set_watched(vec![link_to("south", &south), link_to("east", &east)])
            .unwrap();
        assert_eq!(same, Changes::default());

        // East's Link is deleted: its link stops, its metrics go, and the entry says so.
        let changes = west.registry.set_watched(vec![link_to("south", &south)]).unwrap();
        assert_eq!(changes.removed, ["east"]);
        let (reason, message) = refusal(open_on(entry, Some("east"), ECHO, 7).await.0);
        assert_eq!(reason, RefusalReason::LinkDown);
        assert!(message.contains("no link to east (links: south)"), "{message}");
        let links = west.metrics.links_json();
        assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
        assert_eq!(links[0]["cluster"], "south");
        // One link left: a request that names none takes it.
        assert_eq!(
            open(entry, ECHO, 7).await.0,
            Reply::Accepted { app_port: Some(7002) }
        );

        // South's Link now points at another gateway: the link is replaced.
        let moved = LinkSpec {
            name: "south".into(),
            ..link_to("south", &east)
        };
        let changes = west.registry.set_watched(vec![moved]).unwrap();
        assert_eq!(changes.replaced, ["south"]);
        let (reply, _) = open_on(entry, Some("south"), ECHO, 7).await;
        assert_eq!(reply, Reply::Accepted { app_port: Some(7001) });
        west.shutdown().await;
        east.shutdown().await;
        south.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_configured_link_is_never_changed_by_watched_links() {
    bounded(async {
        let pki = Pki::new();
        let (east, _e) = echo_cluster(&pki, 7001).await;
        let (south, _s) = echo_cluster(&pki, 7002).await;
        let (west, entry) = west_with_one_entry(&pki, vec![link_to("east", &east)]).await;
        // A Link named east pointing elsewhere is left out; removing every watched link
        // leaves the configured one.
        let changes = west.registry.set_watched(vec![link_to("east", &south)]).unwrap();
        assert_eq!(changes.shadowed, ["east"]);
        assert!(changes.added.is_empty());
        assert_eq!(
            open_on(entry, Some("east"), ECHO, 7).await.0,
            Reply::Accepted { app_port: Some(7001) }
        );
        west.registry.set_watched(Vec::new()).unwrap();
        assert_eq!(west.registry.names(), ["east"]);
        assert_eq!(
            open_on(entry, Some("east"), ECHO, 7).await.0,
            Reply::Accepted { app_port: Some(7001) }
        );
        west.shutdown().await;
    })
    .await;
}
