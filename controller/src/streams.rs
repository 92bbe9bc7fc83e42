//! Live gRPC streams over an index: per-namespace generation counters that writers bump,
//! and [`follow`], which re-evaluates a query whenever its namespace changes.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use futures::Stream;
use tokio::sync::watch;
use tonic::Status;

/// A boxed stream of gRPC messages.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Whether an index has loaded the store's first complete state of every kind it watches:
/// until then an answer would call an existing Service unknown (Linkerd's controller
/// serves only once its caches have synced). Watches start with
/// [`strait_api::WatchEvent::Restarted`]; each kind marks its bit when its first one is in.
pub struct Synced {
    seen: std::sync::atomic::AtomicU32,
    tx: watch::Sender<bool>,
}

impl Default for Synced {
    fn default() -> Self {
        Self {
            seen: std::sync::atomic::AtomicU32::new(0),
            tx: watch::Sender::new(false),
        }
    }
}

impl Synced {
    /// Kind number `kind` (of `kinds`, numbered from 0) has delivered its complete state.
    pub fn restarted(&self, kind: u32, kinds: u32) {
        let all = (1u32 << kinds) - 1;
        let seen = self.seen.fetch_or(1 << kind, std::sync::atomic::Ordering::AcqRel) | (1 << kind);
        if seen & all == all && !*self.tx.borrow() {
            self.tx.send_replace(true);
        }
    }

    /// Whether every kind has.
    pub fn is_synced(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until every kind has.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// One generation counter per namespace; created on first subscription.
#[derive(Default)]
pub struct Generations {
    senders: RwLock<HashMap<String, watch::Sender<u64>>>,
}

impl Generations {
    /// A receiver that changes whenever something in `namespace` changes.
    pub fn subscribe(&self, namespace: &str) -> watch::Receiver<u64> {
        if let Some(tx) = self
            .senders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
        {
            return tx.subscribe();
        }
        let mut senders = self.senders.write().unwrap_or_else(|e| e.into_inner());
        senders
            .entry(namespace.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// The current generation of `namespace`, if anyone follows it.
    pub fn current(&self, namespace: &str) -> Option<u64> {
        self.senders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .map(|tx| *tx.borrow())
    }

    /// Ends every stream following these generations (at shutdown): their receivers see
    /// the senders gone. Later subscriptions get a fresh, open channel.
    pub fn close(&self) {
        self.senders.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Tells every subscriber of these namespaces to re-evaluate. Call after the state
    /// change is visible to readers.
    pub fn bump(&self, namespaces: impl IntoIterator<Item = String>) {
        let senders = self.senders.read().unwrap_or_else(|e| e.into_inner());
        for ns in namespaces {
            if let Some(tx) = senders.get(&ns) {
                tx.send_modify(|g| *g += 1);
            }
        }
    }
}

/// The key of streams that follow no namespace: nothing bumps it, so they stay open after
/// their first answer (as proxies expect of a control-plane stream) until shutdown.
pub const NO_NAMESPACE: &str = "";

/// A stream that evaluates `eval` now and again whenever `rx` changes, yielding the items
/// it returns, and ends when its generations are closed. `rx` must be subscribed before
/// the call so that no change can fall between subscribing and the first evaluation.
pub fn follow<I, T, F>(index: Arc<I>, rx: watch::Receiver<u64>, eval: F) -> BoxStream<T>
where
    I: Send + Sync + 'static,
    T: Send + 'static,
    F: FnMut(&I) -> Vec<T> + Send + 'static,
{
    struct Follow<I, T, F> {
        index: Arc<I>,
        rx: watch::Receiver<u64>,
        queue: VecDeque<T>,
        eval: F,
        first: bool,
    }
    let state = Follow {
        index,
        rx,
        queue: VecDeque::new(),
        eval,
        first: true,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.queue.pop_front() {
                return Some((Ok(item), st));
            }
            if st.first {
                st.first = false;
            } else {
                if st.rx.changed().await.is_err() {
                    return None;
                }
            }
            let items = (st.eval)(&st.index);
            st.queue.extend(items);
        }
    }))
}

/// Waits for the next item of `s`, then takes every item already waiting, up to `max`:
/// a burst of watch events (one store batch arrives on one watch per kind) becomes one
/// batch, handled before anyone is told. `None` once `s` has ended.
pub async fn next_batch<S: Stream + Unpin>(s: &mut S, max: usize) -> Option<Vec<S::Item>> {
    use futures::{FutureExt, StreamExt};
    let first = s.next().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match s.next().now_or_never() {
            Some(Some(item)) => batch.push(item),
            _ => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod batch_tests {
    use futures::StreamExt;

    #[tokio::test]
    async fn a_batch_is_what_is_waiting_up_to_the_bound() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut s = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert_eq!(super::next_batch(&mut s, 3).await, Some(vec![0, 1, 2]));
        assert_eq!(super::next_batch(&mut s, 3).await, Some(vec![3, 4]));
        let waiter = tokio::spawn(async move { super::next_batch(&mut s, 3).await });
        tokio::task::yield_now().await;
        tx.send(9).unwrap();
        drop(tx);
        assert_eq!(
            waiter.await.unwrap(),
            Some(vec![9]),
            "waits for the first, takes what is there"
        );
    }
}

#[cfg(test)]
mod synced_tests {
    use super::Synced;

    #[tokio::test]
    async fn synced_once_every_kind_has_restarted() {
        let s = std::sync::Arc::new(Synced::default());
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait().await })
        };
        s.restarted(0, 3);
        s.restarted(2, 3);
        s.restarted(0, 3);
        assert!(!s.is_synced(), "kind 1 has not delivered its state");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        s.restarted(1, 3);
        assert!(s.is_synced());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is released")
            .unwrap();
        // Later restarts (a watch re-listing) keep it synced.
        s.restarted(1, 3);
        assert!(s.is_synced());
    }
}
