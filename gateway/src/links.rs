//! The gateway's links by name, changeable while it runs.
//!
//! Links come from two places: the configuration the gateway starts with
//! ([`crate::GatewayConfig::links`], `strait gateway --link`), and a watcher of the
//! cluster's `Link` objects that hands [`Links::set_watched`] the whole set it wants
//! each time something changes. A configured link is never changed by the watcher (a
//! watched link of the same name is left out, with a warning); a watched link whose
//! spec changes is replaced, one that disappears is stopped. A stopped link refuses new
//! streams at once and drains the ones it carries.
//!
//! Each link keeps its own driver task ([`crate::link`]) and metrics; a replaced link
//! gets fresh metrics, so the old driver, draining, never writes over the new one's.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use quinn::Endpoint;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::link::{Driver, LinkHandle, LinkSpec};
use crate::metrics::Metrics;
use crate::proto::link::LinkConfig;
use crate::tls::{self, Credentials, TlsError};

/// Where a link came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The gateway's configuration (`--link`): fixed for its lifetime.
    Configured,
    /// A `Link` object, through [`Links::set_watched`].
    Watched,
}

struct Running {
    handle: LinkHandle,
    origin: Origin,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct State {
    links: BTreeMap<String, Running>,
    /// Set by [`Links::shutdown`]: no link starts after it.
    closed: bool,
}

struct Inner {
    endpoint: Endpoint,
    creds: Credentials,
    transport: Arc<quinn::TransportConfig>,
    config: LinkConfig,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

/// A cheap handle on the gateway's links.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// What [`Links::set_watched`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Links started.
    pub added: Vec<String>,
    /// Links whose spec changed, restarted.
    pub replaced: Vec<String>,
    /// Links stopped.
    pub removed: Vec<String>,
    /// Watched specs left out because a configured link has their name.
    pub shadowed: Vec<String>,
}

impl Links {
    pub(crate) fn new(
        endpoint: Endpoint,
        creds: Credentials,
        transport: Arc<quinn::TransportConfig>,
        config: LinkConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Links {
            inner: Arc::new(Inner {
                endpoint,
                creds,
                transport,
                config,
                metrics,
                state: Mutex::new(State {
                    links: BTreeMap::new(),
                    closed: false,
                }),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The link named `name`, if the gateway has it.
    pub fn get(&self, name: &str) -> Option<LinkHandle> {
        self.state().links.get(name).map(|r| r.handle.clone())
    }

    /// The names of every link, sorted.
    pub fn names(&self) -> Vec<String> {
        self.state().links.keys().cloned().collect()
    }

    /// Every link, sorted by name.
    pub fn handles(&self) -> Vec<LinkHandle> {
        self.state().links.values().map(|r| r.handle.clone()).collect()
    }

    /// Starts a configured link (at gateway start).
    pub(crate) fn add_configured(&self, spec: LinkSpec) -> Result<LinkHandle, TlsError> {
        let mut state = self.state();
        let running = self.spawn(spec.clone(), Origin::Configured)?;
        let handle = running.handle.clone();
        state.links.insert(spec.name, running);
        Ok(handle)
    }

    /// Makes the watched links exactly `specs` (by name; the last of two specs with one
    /// name wins): starts the new ones, restarts those whose spec changed, stops those no
    /// longer wanted. Configured links are never touched. After shutdown, does nothing.
    pub fn set_watched(&self, specs: Vec<LinkSpec>) -> Result<Changes, TlsError> {
        let wanted: BTreeMap<String, LinkSpec> = specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut changes = Changes::default();
        let mut state = self.state();
        if state.closed {
            return Ok(changes);
        }
        let gone: Vec<String> = state
            .links
            .iter()
            .filter(|(name, r)| r.origin == Origin::Watched && !wanted.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(r) = state.links.remove(&name) {
                self.stop(&name, r);
                changes.removed.push(name);
            }
        }
        for (name, spec) in wanted {
            match state.links.get(&name) {
                Some(r) if r.origin == Origin::Configured => {
                    changes.shadowed.push(name);
                    continue;
                }
                Some(r) if r.handle.spec() == &spec => continue,
                Some(_) => {
                    let old = state.links.remove(&name).expect("present");
                    self.stop(&name, old);
                    changes.replaced.push(name.clone());
                }
                None => changes.added.push(name.clone()),
            }
            let running = self.spawn(spec, Origin::Watched)?;
            state.links.insert(name, running);
        }
        Ok(changes)
    }

    fn spawn(&self, spec: LinkSpec, origin: Origin) -> Result<Running, TlsError> {
        let inner = &self.inner;
        // A client config per link, so each link knows which of its handshakes resumed.
        let verified = Arc::new(AtomicU64::new(0));
        let mut client =
            quinn::ClientConfig::new(Arc::new(tls::quic_client_config(&inner.creds, verified.clone())?));
        client.transport_config(inner.transport.clone());
        let (stop, stop_rx) = watch::channel(false);
        let driver = Driver {
            metrics: inner.metrics.link(&spec.name),
            spec,
            endpoint: inner.endpoint.clone(),
            client,
            verified,
            recheck: inner.creds.anchors.server_verifier(),
            sessions: inner.creds.sessions.clone(),
            config: inner.config.clone(),
            seed: fastrand::u64(..),
        };
        let (handle, task) = driver.spawn(stop_rx);
        Ok(Running {
            handle,
            origin,
            stop,
            task,
        })
    }

    /// Stops a link that has left the map: new streams find no link by its name at once,
    /// its driver drains the streams it carries, and its metrics go.
    fn stop(&self, name: &str, running: Running) {
        let _ = running.stop.send(true);
        self.inner.metrics.remove_link(name);
        tracing::info!(link = %name, "link removed; draining its streams");
    }

    /// Stops every link and waits for their drivers (gateway shutdown).
    pub(crate) async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut state = self.state();
            state.closed = true;
            std::mem::take(&mut state.links)
                .into_values()
                .map(|r| {
                    let _ = r.stop.send(true);
                    r.task
                })
                .collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}
