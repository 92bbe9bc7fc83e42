//! Following the policy streams: `OutboundPolicies/Watch` per target authority and
//! `InboundServerPolicies/WatchPort` per inbound port, each converted once per change.
//!
//! Invariants: outbound watches are cached by weak reference (a watch lives as long as a
//! target uses it, like discovery's); inbound watches live for the proxy's lifetime
//! (ports are few). A stream that ends or fails is re-opened with backoff (100 ms …
//! 10 s) keeping the last good policy; `NotFound`, `Unimplemented` and `InvalidArgument`
//! mean "no policy" (the proxy behaves as without a policy controller) and are asked
//! again later. A message that does not read is logged with the object and field, and
//! the previous policy stays (an inbound port with no previous policy denies).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use linkerd2_proxy_api::inbound::{self as ipb, inbound_server_policies_client::InboundServerPoliciesClient};
use linkerd2_proxy_api::outbound::{self as opb, outbound_policies_client::OutboundPoliciesClient};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::inbound::ServerPolicy;
use super::outbound::OutboundPolicy;

/// What is known about a policy.
#[derive(Debug)]
pub enum Known<T> {
    /// No answer yet.
    Pending,
    /// The control plane has no policy for it.
    None,
    /// The policy.
    Some(Arc<T>),
}

impl<T> Clone for Known<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Pending => Self::Pending,
            Self::None => Self::None,
            Self::Some(p) => Self::Some(p.clone()),
        }
    }
}

/// A followed policy; the stream stops when the last `Arc` drops.
pub struct PolicyWatch<T> {
    rx: watch::Receiver<Known<T>>,
    task: tokio::task::AbortHandle,
}

impl<T> Drop for PolicyWatch<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T> PolicyWatch<T> {
    /// The current value.
    pub fn current(&self) -> Known<T> {
        self.rx.borrow().clone()
    }

    /// The value once answered, waiting at most `wait` (then whatever is known).
    pub async fn ready(&self, wait: Duration) -> Known<T> {
        if !matches!(*self.rx.borrow(), Known::Pending) {
            return self.current();
        }
        let mut rx = self.rx.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|k| !matches!(k, Known::Pending))).await;
        self.current()
    }
}

/// The policy controller's client; cheap to clone.
#[derive(Clone)]
pub struct PolicyClient {
    inner: Arc<Inner>,
}

struct Inner {
    outbound: OutboundPoliciesClient<Channel>,
    inbound: InboundServerPoliciesClient<Channel>,
    workload: String,
    out_cache: Mutex<HashMap<String, Weak<PolicyWatch<OutboundPolicy>>>>,
    in_cache: Mutex<HashMap<u16, Arc<PolicyWatch<ServerPolicy>>>>,
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1u32 << failures.min(7))
        .min(Duration::from_secs(10))
}

fn final_no(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::NotFound | tonic::Code::Unimplemented | tonic::Code::InvalidArgument
    )
}

impl PolicyClient {
    /// A client over `channel`; `workload` is Linkerd's `{"ns":…,"pod":…}`.
    pub fn new(channel: Channel, workload: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                outbound: OutboundPoliciesClient::new(channel.clone()),
                inbound: InboundServerPoliciesClient::new(channel),
                workload,
                out_cache: Mutex::new(HashMap::new()),
                in_cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The outbound policy of `authority` (`name:port` or `IP:port`), followed live.
    pub fn outbound(&self, authority: &str) -> Arc<PolicyWatch<OutboundPolicy>> {
        let mut c = self
            .inner
            .out_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = c.get(authority).and_then(Weak::upgrade) {
            return w;
        }
        c.retain(|_, w| w.strong_count() > 0);
        let (tx, rx) = watch::channel(Known::Pending);
        let target = match authority.parse::<SocketAddr>() {
            Ok(a) => opb::traffic_spec::Target::Addr(a.into()),
            Err(_) => opb::traffic_spec::Target::Authority(authority.to_string()),
        };
        let spec = opb::TrafficSpec {
            source_workload: self.inner.workload.clone(),
            target: Some(target),
        };
        let task = tokio::spawn(follow_outbound(
            self.inner.outbound.clone(),
            spec,
            authority.to_string(),
            tx,
        ))
        .abort_handle();
        let w = Arc::new(PolicyWatch { rx, task });
        c.insert(authority.to_string(), Arc::downgrade(&w));
        w
    }

    /// The policy of inbound `port`, followed live.
    pub fn inbound(&self, port: u16) -> Arc<PolicyWatch<ServerPolicy>> {
        let mut c = self.inner.in_cache.lock().unwrap_or_else(PoisonError::into_inner);
        c.entry(port)
            .or_insert_with(|| {
                let (tx, rx) = watch::channel(Known::Pending);
                let spec = ipb::PortSpec {
                    workload: self.inner.workload.clone(),
                    port: u32::from(port),
                };
                let task =
                    tokio::spawn(follow_inbound(self.inner.inbound.clone(), spec, port, tx)).abort_handle();
                Arc::new(PolicyWatch { rx, task })
            })
            .clone()
    }
}

async fn follow_outbound(
    client: OutboundPoliciesClient<Channel>,
    spec: opb::TrafficSpec,
    authority: String,
    tx: watch::Sender<Known<OutboundPolicy>>,
) {
    let mut failures = 0;
    loop {
        match client.clone().watch(spec.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(p)) => {
                            failures = 0;
                            match OutboundPolicy::from_pb(&authority, &p) {
                                Ok(p) => {
                                    tx.send_replace(Known::Some(Arc::new(p)));
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "refusing an outbound policy; the previous one stays");
                                    if matches!(*tx.borrow(), Known::Pending) {
                                        tx.send_replace(Known::None);
                                    }
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(s) if final_no(s.code()) => {
                            tx.send_replace(Known::None);
                            break;
                        }
                        Err(s) => {
                            tracing::debug!(%authority, error = %s, "outbound policy stream failed");
                            break;
                        }
                    }
                }
            }
            Err(s) if final_no(s.code()) => {
                tracing::debug!(%authority, error = %s, "no outbound policy");
                tx.send_replace(Known::None);
                // Ask again later: the Service may appear.
                failures = failures.max(6);
            }
            Err(s) => tracing::info!(%authority, error = %s, "outbound policy unavailable; retrying"),
        }
        failures += 1;
        tokio::time::sleep(backoff(failures)).await;
    }
}

async fn follow_inbound(
    client: InboundServerPoliciesClient<Channel>,
    spec: ipb::PortSpec,
    port: u16,
    tx: watch::Sender<Known<ServerPolicy>>,
) {
    let mut failures = 0;
    loop {
        match client.clone().watch_port(spec.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(s)) => {
                            failures = 0;
                            match ServerPolicy::from_pb(port, &s) {
                                Ok(p) => {
                                    tracing::debug!(port, server = %p.name, "inbound policy");
                                    tx.send_replace(Known::Some(Arc::new(p)));
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "refusing an inbound policy; the previous one stays");
                                    if !matches!(*tx.borrow(), Known::Some(_)) {
                                        tx.send_replace(Known::Some(Arc::new(ServerPolicy::deny_all(
                                            "invalid inbound policy",
                                        ))));
                                    }
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(s) => {
                            tracing::debug!(port, error = %s, "inbound policy stream failed");
                            break;
                        }
                    }
                }
            }
            Err(s) if final_no(s.code()) => {
                tracing::info!(port, error = %s, "no inbound policy; the default policy applies");
                if !matches!(*tx.borrow(), Known::Some(_)) {
                    tx.send_replace(Known::None);
                }
            }
            Err(s) => tracing::info!(port, error = %s, "inbound policy unavailable; retrying"),
        }
        failures += 1;
        tokio::time::sleep(backoff(failures)).await;
    }
}
