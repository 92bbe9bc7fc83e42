//! Catalog watches over a real QUIC link on 127.0.0.1: a "mirror" opens a watch at its
//! gateway's proxy entry; the remote gateway's ingress streams its catalog's frames back
//! until the mirror goes, and refuses when it serves no catalog or too many watches.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use strait_gateway::catalog::MAX_WATCHES;
use strait_gateway::proto::header::{Reply, Request, encode_request};
use strait_gateway::relay::read_reply;
use strait_gateway::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Sends `name:resource;` per watch, then holds the watch open; counts live watches.
struct Fixed {
    live: Arc<AtomicUsize>,
}

impl Catalog for Fixed {
    fn watch(&self, resource: Resource) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(4);
        let live = self.live.clone();
        tokio::spawn(async move {
            live.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(Bytes::from(format!("first:{resource};"))).await;
            let _ = tx.send(Bytes::from_static(b"second;")).await;
            tx.closed().await;
            live.fetch_sub(1, Ordering::SeqCst);
        });
        rx
    }
}

/// Opens a watch at `entry`: the reply, the bytes that came with it, the connection.
async fn watch_with_rest(entry: SocketAddr, resource: Resource) -> (Reply, Vec<u8>, TcpStream) {
    let mut tcp = TcpStream::connect(entry).await.unwrap();
    let mut frame = Vec::new();
    encode_request(&Request::Watch(resource), &mut frame);
    tcp.write_all(&frame).await.unwrap();
    let (reply, rest) = read_reply(&mut tcp).await.unwrap();
    (reply, rest.to_vec(), tcp)
}

async fn watch(entry: SocketAddr, resource: Resource) -> (Reply, TcpStream) {
    let (reply, _, tcp) = watch_with_rest(entry, resource).await;
    (reply, tcp)
}

async fn pair(catalog: Option<Arc<dyn Catalog>>) -> (TestGateway, TestGateway) {
    entry_pair(Arc::new(StaticResolver::new()), catalog).await
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_watch_streams_the_remote_catalog_until_the_watcher_goes() {
    bounded(async {
        let live = Arc::new(AtomicUsize::new(0));
        let (east, west) = pair(Some(Arc::new(Fixed { live: live.clone() }))).await;
        let entry = west.proxy_entries[0];

        let (reply, mut got, mut tcp) = watch_with_rest(entry, Resource::Pods).await;
        assert_eq!(reply, Reply::Accepted { app_port: None });
        let want = b"first:pods;second;";
        // The reply may have carried the start of the frames.
        let mut more = vec![0u8; want.len() - got.len()];
        tcp.read_exact(&mut more).await.unwrap();
        got.extend_from_slice(&more);
        assert_eq!(&got, want);
        assert_eq!(live.load(Ordering::SeqCst), 1);
        let watches = || east.metrics.inbound.catalog_watches.load(Ordering::Relaxed);
        eventually("the watch to be counted", || watches() == 1).await;
        assert!(
            east.metrics
                .render()
                .contains("gateway_inbound_catalog_watches 1"),
            "the gauge is exported"
        );

        // The watcher goes: the remote watch ends (its source sees the receiver dropped).
        drop(tcp);
        eventually("the remote watch to end", || live.load(Ordering::SeqCst) == 0).await;
        eventually("the gauge to drop", || watches() == 0).await;
        drop((east, west));
    })
    .await;
}

#[tokio::test]
async fn watches_are_refused_without_a_catalog_and_beyond_the_bound() {
    bounded(async {
        let (_east, west) = pair(None).await;
        let (reply, _) = watch(west.proxy_entries[0], Resource::Services).await;
        let Reply::Refused { reason, message } = reply else {
            panic!("a gateway without a catalog refuses watches")
        };
        assert_eq!(reason, RefusalReason::NotServed);
        assert!(message.contains("--serve-exports"), "{message}");

        let live = Arc::new(AtomicUsize::new(0));
        let (_east, west) = pair(Some(Arc::new(Fixed { live: live.clone() }))).await;
        let mut open = Vec::new();
        for _ in 0..MAX_WATCHES {
            let (reply, tcp) = watch(west.proxy_entries[0], Resource::Services).await;
            assert_eq!(reply, Reply::Accepted { app_port: None });
            open.push(tcp);
        }
        let (reply, _) = watch(west.proxy_entries[0], Resource::Services).await;
        assert!(
            matches!(
                reply,
                Reply::Refused {
                    reason: RefusalReason::Overloaded,
                    ..
                }
            ),
            "{reply:?}"
        );
        // A slot frees when a watcher goes.
        open.pop();
        eventually("a slot to free", || live.load(Ordering::SeqCst) < MAX_WATCHES).await;
        let mut accepted = false;
        for _ in 0..100 {
            let (reply, tcp) = watch(west.proxy_entries[0], Resource::Services).await;
            if reply == (Reply::Accepted { app_port: None }) {
                open.push(tcp);
                accepted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(accepted, "a freed slot is reused");
    })
    .await;
}
