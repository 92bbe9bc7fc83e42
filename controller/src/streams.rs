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

/// Whether an index has loaded the store's first state of every kind it watches:
/// until then an answer would call an existing Service unknown (Linkerd's controller
/// serves only once its caches have synced). Watches start with
/// [`strait_api::WatchEvent::Restarted`]; a kind is in once its first one is, or once its
/// watch has failed (a CRD not installed, a list RBAC refuses: the kind stays empty, as it
/// would without the wait).
pub struct Synced {
    kinds: u32,
    seen: std::sync::atomic::AtomicU32,
    tx: watch::Sender<bool>,
}

/// Whether a watch event marks its kind in for [`Synced`]: a complete state, or a failure.
pub fn completes<K, E>(ev: &Result<strait_api::WatchEvent<K>, E>) -> bool {
    matches!(ev, Ok(strait_api::WatchEvent::Restarted(_)) | Err(_))
}

/// How long an answer waits for the indexes before it goes ahead anyway.
pub const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Synced {
    /// For an index watching `kinds` kinds (numbered from 0).
    pub fn new(kinds: u32) -> Self {
        Self {
            kinds,
            seen: std::sync::atomic::AtomicU32::new(0),
            tx: watch::Sender::new(false),
        }
    }

    /// Kind number `kind` has delivered its complete state (or failed: see [`completes`]).
    pub fn restarted(&self, kind: u32) {
        let all = (1u32 << self.kinds) - 1;
        let seen = self.seen.fetch_or(1 << kind, std::sync::atomic::Ordering::AcqRel) | (1 << kind);
        if seen & all == all && !*self.tx.borrow() {
            self.tx.send_replace(true);
        }
    }

    /// Whether every kind has.
    pub fn is_synced(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until every kind has, at most [`SYNC_WAIT`] (then logs the kinds missing and
    /// goes ahead: a late answer corrects itself as the index fills).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        if tokio::time::timeout(SYNC_WAIT, rx.wait_for(|s| *s))
            .await
            .is_err()
        {
            let seen = self.seen.load(std::sync::atomic::Ordering::Acquire);
            let missing: Vec<u32> = (0..self.kinds).filter(|k| seen & (1 << k) == 0).collect();
            tracing::warn!(?missing, "answering before every watched kind is loaded");
        }
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
    use strait_api::WatchEvent;

    #[tokio::test]
    async fn synced_once_every_kind_has_restarted_or_failed() {
        let s = std::sync::Arc::new(Synced::new(3));
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait().await })
        };
        let note = |kind: u32, ev: &Result<WatchEvent<()>, &str>| {
            if super::completes(ev) {
                s.restarted(kind);
            }
        };
        note(0, &Ok(WatchEvent::Restarted(vec![])));
        note(1, &Ok(WatchEvent::Applied(())));
        note(0, &Ok(WatchEvent::Restarted(vec![])));
        assert!(!s.is_synced(), "kinds 1 and 2 have not delivered their state");
        // A watch that fails (its CRD is not installed) counts as an empty kind.
        note(2, &Err("the server could not find the requested resource"));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        note(1, &Ok(WatchEvent::Restarted(vec![])));
        assert!(s.is_synced());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is released")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_kind_that_never_loads_holds_answers_for_a_while_only() {
        let s = Synced::new(2);
        s.restarted(0);
        let started = tokio::time::Instant::now();
        s.wait().await;
        assert_eq!(started.elapsed(), super::SYNC_WAIT);
        assert!(!s.is_synced());
    }
}
