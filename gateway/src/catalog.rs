//! The catalog a gateway serves to the gateways linked to it: its cluster's Services
//! (and meshed pods' service accounts, addresses and readiness), for the linked
//! clusters' mirrors.
//!
//! A mirror does not need the target cluster's API server: it opens a `watch` stream
//! at its own gateway's proxy entry, which carries it over the link; the remote
//! gateway's ingress answers from its [`Catalog`]. The link is already mutually
//! authenticated (gateway identities under the mesh anchors), so only gateways this
//! one accepts can read the catalog, and nothing reaches the target's API from outside
//! its cluster.
//!
//! The gateway does not read the frames: a [`Catalog`] hands it encoded bytes (the
//! mirror's codec) and the gateway writes them to the stream in order, so this crate
//! knows nothing of Kubernetes objects.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::Metrics;
use crate::proto::header::{self, RefusalReason, Reply, Resource};
use crate::relay;

/// Most catalog watches served at once, over all links: each holds a watch of the
/// cluster's store, so a peer cannot open them without bound.
pub const MAX_WATCHES: usize = 32;

/// A source of encoded catalog frames.
pub trait Catalog: Send + Sync + 'static {
    /// Starts a watch of `resource`: every frame to send, in order. The watch ends when
    /// the receiver is dropped (the peer went away) or the channel closes (the source
    /// ended; the peer re-watches).
    fn watch(&self, resource: Resource) -> mpsc::Receiver<Bytes>;
}

/// The ingress side of catalog watches: bounded, counted.
#[derive(Clone)]
pub(crate) struct Server {
    catalog: Option<Arc<dyn Catalog>>,
    slots: Arc<Semaphore>,
}

impl Server {
    pub(crate) fn new(catalog: Option<Arc<dyn Catalog>>) -> Self {
        Server {
            catalog,
            slots: Arc::new(Semaphore::new(MAX_WATCHES)),
        }
    }

    /// Serves one `watch` stream until either side ends it.
    pub(crate) async fn serve(
        &self,
        resource: Resource,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        metrics: &Metrics,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let inbound = &metrics.inbound;
        let refusal = |reason: RefusalReason, message: String| {
            inbound.refusals.add(reason);
            let mut frame = Vec::with_capacity(64 + message.len());
            header::encode_reply(&Reply::Refused { reason, message }, header::VERSION, &mut frame);
            frame
        };
        let Some(catalog) = &self.catalog else {
            let message = "this gateway does not serve its cluster's catalog to linked gateways (start it with --serve-exports)".to_string();
            return finish(send, recv, refusal(RefusalReason::NotServed, message)).await;
        };
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            let message = format!("{MAX_WATCHES} catalog watches are already open");
            return finish(send, recv, refusal(RefusalReason::Overloaded, message)).await;
        };
        let mut frames = catalog.watch(resource);
        let mut frame = Vec::with_capacity(16);
        header::encode_reply(&Reply::Accepted { app_port: None }, header::VERSION, &mut frame);
        if send.write_all(&frame).await.is_err() {
            return;
        }
        inbound.catalog_watches.fetch_add(1, Ordering::Relaxed);
        let mut scratch = [0u8; 64];
        loop {
            tokio::select! {
                next = frames.recv() => match next {
                    Some(bytes) => {
                        inbound.bytes.sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        if send.write_chunk(bytes).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        let _ = send.finish();
                        break;
                    }
                },
                // The gateway is shutting down: end the watch (the watcher keeps what it
                // has and watches again, through its next link).
                _ = crate::gateway::until_set(stop.clone()) => {
                    let _ = send.reset(relay::RELAY_ERROR);
                    break;
                }
                // The watcher sends nothing after its request: any end of its side
                // (finish, reset, lost connection) ends the watch.
                read = recv.read(&mut scratch) => {
                    if !matches!(read, Ok(Some(_))) {
                        let _ = send.reset(relay::RELAY_ERROR);
                        break;
                    }
                }
            }
        }
        inbound.catalog_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn finish(mut send: quinn::SendStream, mut recv: quinn::RecvStream, frame: Vec<u8>) {
    let _ = send.write_all(&frame).await;
    let _ = send.finish();
    let _ = recv.stop(relay::RELAY_ERROR);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send.stopped()).await;
}
