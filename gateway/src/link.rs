//! The async driver of one link: runs the sans-IO [`proto::link::Link`] over a
//! quinn endpoint, and hands out streams on the current connection.
//!
//! One task per link owns the state machine and the connection; everyone else
//! holds a cheap [`LinkHandle`] that reads the current connection from a watch
//! channel. Streams never outlive the decision to open them: a stream opened on
//! a connection that then dies fails, and the next one waits for the link to
//! come back (bounded by the caller's timeout).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::{Connection, ConnectionError, VarInt};
use strait_identity::IdentityName;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::LinkMetrics;
use crate::proto::header::{self, RefusalReason, Reply, Request, Target};
use crate::proto::link::{Action, ConnStats, Event, Link, LinkConfig, Phase};
use crate::relay;

/// Application close code: the link was abandoned (probes failed, timeout).
pub const CLOSE_ABANDONED: VarInt = VarInt::from_u32(2);
/// Application close code: graceful shutdown.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
/// Application close code: the accepting gateway refused the linking one after the
/// handshake (a resumed session whose chain or identity it no longer accepts).
pub const CLOSE_REFUSED: VarInt = VarInt::from_u32(1);

/// A link to a remote cluster's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// The remote cluster's name (`target_cluster_name`).
    pub name: String,
    /// The remote gateway's QUIC address.
    pub addr: SocketAddr,
    /// The identity the remote gateway must present.
    pub identity: IdentityName,
}

/// Why a stream could not be opened on a link.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The link did not come up in time.
    #[error(
        "link to {name} is down (gateway {addr}, identity {identity}): is the remote gateway running and reachable on UDP?"
    )]
    Down {
        /// The remote cluster.
        name: String,
        /// Its gateway address.
        addr: SocketAddr,
        /// The identity expected of it.
        identity: IdentityName,
    },
    /// The connection failed while opening or writing the header.
    #[error("link to {name} failed while opening a stream: {source}")]
    Stream {
        /// The remote cluster.
        name: String,
        /// What failed.
        source: std::io::Error,
    },
}

struct Shared {
    spec: LinkSpec,
    conn: watch::Receiver<Option<Connection>>,
    metrics: Arc<LinkMetrics>,
}

/// A cheap handle on a running link.
#[derive(Clone)]
pub struct LinkHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("spec", &self.shared.spec)
            .finish()
    }
}

impl LinkHandle {
    /// The link's spec.
    pub fn spec(&self) -> &LinkSpec {
        &self.shared.spec
    }

    /// The link's metrics.
    pub fn metrics(&self) -> &Arc<LinkMetrics> {
        &self.shared.metrics
    }

    /// The current connection, if the link is established.
    pub fn connection(&self) -> Option<Connection> {
        self.shared.conn.borrow().clone()
    }

    /// Waits up to `timeout` for the link to be established.
    pub async fn established(&self, timeout: Duration) -> Result<Connection, OpenError> {
        let mut rx = self.shared.conn.clone();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(conn)) => Ok(conn.clone().expect("waited for Some")),
            _ => Err(self.down()),
        }
    }

    /// Opens a stream to `target` (waiting up to `timeout` for the link) and
    /// writes its header. Payload may follow at once; the reply arrives first
    /// on the receive side.
    pub async fn open(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), OpenError> {
        self.open_request(&Request::Open(target.clone()), timeout).await
    }

    /// Opens a stream that starts with `request` (an open or a catalog watch).
    pub async fn open_request(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), OpenError> {
        let started = Instant::now();
        let conn = self.established(timeout).await?;
        let stream_err = |e: std::io::Error| OpenError::Stream {
            name: self.shared.spec.name.clone(),
            source: e,
        };
        // The peer's stream limit can hold a new stream back: wait no longer than asked.
        let left = timeout.saturating_sub(started.elapsed());
        let (mut send, recv) = match tokio::time::timeout(left, conn.open_bi()).await {
            Ok(opened) => opened.map_err(|e| stream_err(std::io::Error::other(e)))?,
            Err(_) => {
                return Err(stream_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the remote gateway allowed no new stream within {timeout:?} (its stream limit)"),
                )));
            }
        };
        let mut frame = Vec::with_capacity(128);
        header::encode_request(request, &mut frame);
        send.write_all(&frame)
            .await
            .map_err(|e| stream_err(std::io::Error::other(e)))?;
        self.shared.metrics.streams_total.fetch_add(1, Ordering::Relaxed);
        Ok((send, recv))
    }

    fn down(&self) -> OpenError {
        let spec = &self.shared.spec;
        OpenError::Down {
            name: spec.name.clone(),
            addr: spec.addr,
            identity: spec.identity.clone(),
        }
    }
}

/// Everything a link driver needs.
pub(crate) struct Driver {
    pub spec: LinkSpec,
    pub endpoint: quinn::Endpoint,
    pub client: quinn::ClientConfig,
    /// Server certificates `client` verified (see [`crate::tls::quic_client_config`]).
    pub verified: Arc<AtomicU64>,
    /// Verifies a resumed session's server certificate again (the mesh anchors).
    pub recheck: Arc<dyn strait_identity::rustls::client::danger::ServerCertVerifier>,
    /// The session tickets `client` offers, forgotten when a resumed session fails.
    pub sessions: crate::tls::SessionState,
    pub config: LinkConfig,
    pub metrics: Arc<LinkMetrics>,
    pub seed: u64,
}

/// How often connection statistics are sampled.
const STATS_INTERVAL: Duration = Duration::from_millis(250);

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// quinn refused to start the attempt (bad address, endpoint closed).
    #[error("could not start connecting: {0}")]
    Start(#[from] quinn::ConnectError),
    /// The handshake failed (unreachable, TLS refused, timeout).
    #[error(transparent)]
    Handshake(#[from] ConnectionError),
    /// The connection came up but the first probe was not answered.
    #[error("the remote gateway did not answer the first probe: {0}")]
    FirstProbe(relay::RelayError),
    /// The handshake resumed a session whose server certificate is not valid now; its
    /// tickets are forgotten, so the next attempt makes a full handshake.
    #[error("the resumed session's server certificate is not valid now: {0}")]
    StaleSession(strait_identity::rustls::Error),
}

/// What kind of failure kept a link down, decided by error type (never by text), each
/// with what an operator should check. Counted in `gateway_link_errors_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkFailure {
    /// The remote gateway's certificate chains to the anchors but is not the identity
    /// the link expects.
    WrongIdentity,
    /// The remote gateway's certificate does not chain to this gateway's trust anchors.
    UntrustedPeer,
    /// The remote gateway refused this gateway's certificate (its anchors or accepted
    /// identities do not include this gateway).
    RefusedByPeer,
    /// The remote gateway's certificate is outside its validity period (expired, or not
    /// yet valid), in a full handshake or a resumed session.
    ExpiredCertificate,
    /// Nothing answered in time.
    Unreachable,
    /// Anything else (see the log).
    Other,
}

impl LinkFailure {
    /// Every kind, in metric order.
    pub const ALL: [LinkFailure; 6] = [
        LinkFailure::WrongIdentity,
        LinkFailure::UntrustedPeer,
        LinkFailure::RefusedByPeer,
        LinkFailure::ExpiredCertificate,
        LinkFailure::Unreachable,
        LinkFailure::Other,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkFailure::WrongIdentity => "wrong-identity",
            LinkFailure::UntrustedPeer => "untrusted-peer",
            LinkFailure::RefusedByPeer => "refused-by-peer",
            LinkFailure::ExpiredCertificate => "expired-certificate",
            LinkFailure::Unreachable => "unreachable",
            LinkFailure::Other => "other",
        }
    }

    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            LinkFailure::WrongIdentity => {
                "the remote gateway holds another identity than the link expects: check the Link's gatewayIdentity (--link NAME=ADDR@IDENTITY) against the remote gateway's certificate, and that the address is that cluster's gateway"
            }
            LinkFailure::UntrustedPeer => {
                "the remote gateway's certificate does not chain to this cluster's trust anchors: link clusters that share anchors, or add the target's anchors (printed by `strait multicluster link`) to this gateway's --identity-trust-anchors-file"
            }
            LinkFailure::RefusedByPeer => {
                "the remote gateway refused this gateway's certificate: it must trust this cluster's anchors and accept this gateway's identity (--accept-identity)"
            }
            LinkFailure::ExpiredCertificate => {
                "the remote gateway's certificate has expired or is not yet valid: check that the remote gateway renews its certificate (its log names the identity issuer it uses) and that both machines' clocks agree"
            }
            LinkFailure::Unreachable => {
                "no answer from the remote gateway: is it running, is the Link's gatewayAddress right, and does the network pass UDP (else use Linkerd's entry on 4143/tcp)?"
            }
            LinkFailure::Other => "see the gateway's log for the error",
        }
    }
}

impl std::fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a failed connection attempt (pure): TLS alerts this side raised say what
/// was wrong with the peer's certificate; a TLS alert in the peer's close says the peer
/// refused this side's.
pub fn classify(failure: &ConnectFailure) -> LinkFailure {
    use quinn::TransportErrorCode;
    use strait_identity::rustls::AlertDescription;
    let crypto = |alert: AlertDescription| TransportErrorCode::crypto(u8::from(alert));
    match failure {
        ConnectFailure::Handshake(ConnectionError::TransportError(e)) => {
            if e.code == crypto(AlertDescription::BadCertificate) {
                LinkFailure::WrongIdentity
            } else if e.code == crypto(AlertDescription::CertificateExpired) {
                // rustls raises it for a certificate past its end or before its start.
                LinkFailure::ExpiredCertificate
            } else if e.code == crypto(AlertDescription::UnknownCA)
                // Anchors of the same trust domain share their subject: a chain under other
                // anchors then finds an issuer by name whose signature does not verify.
                || e.code == crypto(AlertDescription::DecryptError)
            {
                LinkFailure::UntrustedPeer
            } else {
                LinkFailure::Other
            }
        }
        ConnectFailure::Handshake(ConnectionError::ConnectionClosed(close))
            if (0x100..0x200).contains(&u64::from(close.error_code)) =>
        {
            LinkFailure::RefusedByPeer
        }
        ConnectFailure::Handshake(ConnectionError::ApplicationClosed(close))
            if close.error_code == CLOSE_REFUSED =>
        {
            LinkFailure::RefusedByPeer
        }
        ConnectFailure::Handshake(ConnectionError::TimedOut) => LinkFailure::Unreachable,
        ConnectFailure::StaleSession(strait_identity::rustls::Error::InvalidCertificate(e)) => {
            use strait_identity::rustls::CertificateError as C;
            match e {
                C::NotValidForName | C::NotValidForNameContext { .. } => LinkFailure::WrongIdentity,
                C::UnknownIssuer | C::BadSignature | C::UnsupportedSignatureAlgorithmContext { .. } => {
                    LinkFailure::UntrustedPeer
                }
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                    LinkFailure::ExpiredCertificate
                }
                _ => LinkFailure::Other,
            }
        }
        _ => LinkFailure::Other,
    }
}

type Connecting = std::pin::Pin<Box<dyn Future<Output = Result<(Connection, bool), ConnectFailure>> + Send>>;

impl Driver {
    /// Starts the driver; it runs until `shutdown` turns true and the link has
    /// drained.
    pub(crate) fn spawn(self, shutdown: watch::Receiver<bool>) -> (LinkHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(None);
        let handle = LinkHandle {
            shared: Arc::new(Shared {
                spec: self.spec.clone(),
                conn: rx,
                metrics: self.metrics.clone(),
            }),
        };
        let task = tokio::spawn(self.run(tx, shutdown));
        (handle, task)
    }

    async fn run(self, conn_tx: watch::Sender<Option<Connection>>, mut shutdown: watch::Receiver<bool>) {
        let Driver {
            spec,
            endpoint,
            client,
            verified,
            recheck,
            sessions,
            config,
            metrics,
            seed,
        } = self;
        let probe_timeout = config.probe_timeout;
        let mut link = Link::new(config, seed);
        let mut conn: Option<Connection> = None;
        let mut connecting: Option<Connecting> = None;
        let mut established_once = false;
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<(u64, Probed)>();
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutting_down = *shutdown.borrow();

        link.start(Instant::now().into_std());
        if shutting_down {
            link.handle_shutdown(Instant::now().into_std());
        }
        loop {
            while let Some(action) = link.poll_action() {
                match action {
                    Action::Connect { attempt } => {
                        tracing::debug!(link = %spec.name, attempt, addr = %spec.addr, "connecting");
                        let trust = Recheck {
                            verifier: recheck.clone(),
                            sessions: sessions.clone(),
                        };
                        connecting = Some(connect(&endpoint, &client, &spec, verified.clone(), trust));
                    }
                    Action::Probe { id } => {
                        if let Some(c) = conn.clone() {
                            let tx = probe_tx.clone();
                            tokio::spawn(async move {
                                let probed = match tokio::time::timeout(probe_timeout * 2, probe(&c)).await {
                                    Ok(Ok(())) => Probed::Answered,
                                    Ok(Err(relay::RelayError::Refused {
                                        reason: RefusalReason::ShuttingDown,
                                        ..
                                    })) => Probed::PeerDraining,
                                    _ => Probed::Failed,
                                };
                                let _ = tx.send((id, probed));
                            });
                        }
                    }
                    Action::Abort { reason } => {
                        tracing::warn!(link = %spec.name, ?reason, "abandoning the link's connection");
                        connecting = None;
                        if let Some(c) = conn.take() {
                            c.close(CLOSE_ABANDONED, b"link abandoned");
                        }
                        conn_tx.send_replace(None);
                    }
                    Action::Close => {
                        if let Some(c) = conn.take() {
                            c.close(CLOSE_SHUTDOWN, b"gateway shutting down");
                        }
                        conn_tx.send_replace(None);
                    }
                    Action::Retire => {
                        // New streams wait for the next connection; the streams open on
                        // this one keep it (quinn closes it when the last one is gone,
                        // if the draining peer has not closed it first).
                        tracing::info!(link = %spec.name, "the remote gateway is shutting down; retiring its connection and linking again");
                        conn = None;
                        conn_tx.send_replace(None);
                    }
                }
            }
            while let Some(event) = link.poll_event() {
                match event {
                    Event::Alive(alive) => {
                        tracing::info!(link = %spec.name, alive, "link liveness changed");
                        metrics.alive.store(u64::from(alive), Ordering::Relaxed);
                    }
                    Event::Probe { latency, .. } => metrics.probe(latency),
                    Event::Stats { rtt, lost_packets } => {
                        metrics.rtt_us.store(rtt.as_micros() as u64, Ordering::Relaxed);
                        metrics.lost_packets.fetch_add(lost_packets, Ordering::Relaxed);
                    }
                    Event::Reconnecting { attempt, delay } => {
                        tracing::info!(link = %spec.name, attempt, ?delay, "link reconnecting");
                    }
                    Event::Phase(phase) => tracing::debug!(link = %spec.name, ?phase, "link phase"),
                }
            }
            if link.phase() == Phase::Closed {
                break;
            }
            let deadline = link.poll_timeout().map(Instant::from_std);
            tokio::select! {
                _ = sleep_until(deadline) => link.handle_timeout(Instant::now().into_std()),
                result = poll_opt(&mut connecting) => {
                    connecting = None;
                    let now = Instant::now().into_std();
                    match result {
                        Ok((c, resumed)) => {
                            tracing::info!(link = %spec.name, resumed, remote = %c.remote_address(), "link established");
                            if established_once {
                                metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                            }
                            if resumed {
                                metrics.resumed.fetch_add(1, Ordering::Relaxed);
                            }
                            established_once = true;
                            metrics.linked();
                            conn = Some(c.clone());
                            conn_tx.send_replace(Some(c));
                            link.handle_connected(now);
                        }
                        Err(e) => {
                            let kind = classify(&e);
                            let message = format!(
                                "link to {} ({}, identity {}) refused: {kind}: {e}; {}",
                                spec.name, spec.addr, spec.identity, kind.hint()
                            );
                            tracing::warn!(link = %spec.name, addr = %spec.addr, identity = %spec.identity, reason = %kind, error = %e, hint = kind.hint(), "could not link to the remote gateway");
                            metrics.failed(kind, message);
                            link.handle_connect_failed(now);
                        }
                    }
                }
                reason = closed(&conn) => {
                    tracing::warn!(link = %spec.name, %reason, "link connection lost");
                    conn = None;
                    conn_tx.send_replace(None);
                    link.handle_connection_lost(Instant::now().into_std());
                }
                Some((id, probed)) = probe_rx.recv() => {
                    let now = Instant::now().into_std();
                    match probed {
                        Probed::Answered => link.handle_probe_answered(now, id),
                        Probed::PeerDraining => link.handle_peer_draining(now, id),
                        Probed::Failed => link.handle_probe_failed(now, id),
                    }
                }
                _ = stats_tick.tick() => {
                    if let Some(c) = &conn {
                        let path = c.stats().path;
                        metrics.path_mtu.store(u64::from(path.current_mtu), Ordering::Relaxed);
                        link.handle_stats(ConnStats { rtt: path.rtt, lost_packets: path.lost_packets });
                    }
                    if link.phase() == Phase::Draining && metrics.streams_open.load(Ordering::Relaxed) == 0 {
                        link.handle_streams_idle();
                    }
                }
                changed = shutdown.changed(), if !shutting_down => {
                    if changed.is_err() || *shutdown.borrow() {
                        shutting_down = true;
                        link.handle_shutdown(Instant::now().into_std());
                    }
                }
            }
        }
        metrics.alive.store(0, Ordering::Relaxed);
    }
}

/// What re-verifies a resumed session's server, and forgets its tickets when it fails.
struct Recheck {
    verifier: Arc<dyn strait_identity::rustls::client::danger::ServerCertVerifier>,
    sessions: crate::tls::SessionState,
}

fn connect(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    spec: &LinkSpec,
    verified: Arc<AtomicU64>,
    trust: Recheck,
) -> Connecting {
    let identity = spec.identity.clone();
    let attempt = endpoint.connect_with(client.clone(), spec.addr, spec.identity.as_str());
    // One attempt at a time per link: a handshake that verified no certificate resumed.
    let before = verified.load(Ordering::Relaxed);
    Box::pin(async move {
        let connecting = attempt?;
        // With a session ticket, 0-RTT keys exist at once; the link still waits
        // for the handshake to finish before carrying streams, because relayed
        // payload sent as 0-RTT data could be replayed by an attacker.
        let conn = match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                accepted.await;
                if let Some(e) = conn.close_reason() {
                    return Err(e.into());
                }
                conn
            }
            Err(connecting) => connecting.await?,
        };
        let resumed = verified.load(Ordering::Relaxed) == before;
        if resumed
            && let Err(e) = crate::tls::verify_resumed_server(&conn, trust.verifier.as_ref(), &identity)
        {
            trust.sessions.forget_server(&identity);
            conn.close(CLOSE_ABANDONED, b"resumed session no longer valid");
            return Err(ConnectFailure::StaleSession(e));
        }
        // A TLS 1.3 client finishes its handshake before the server has
        // verified the client's certificate: only an answered probe proves the
        // peer accepted this gateway. A refused client sees the server's close
        // (e.g. "bad certificate") here instead of a link that flaps.
        if let Err(e) = probe(&conn).await {
            return Err(match conn.close_reason() {
                Some(closed) => closed.into(),
                None => ConnectFailure::FirstProbe(e),
            });
        }
        Ok((conn, resumed))
    })
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probed {
    Answered,
    /// Refused: the remote gateway is shutting down.
    PeerDraining,
    Failed,
}

/// One probe: a header-only stream the remote answers at once.
async fn probe(conn: &Connection) -> Result<(), relay::RelayError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(16);
    header::encode_request(&Request::Probe, &mut frame);
    send.write_all(&frame).await.map_err(std::io::Error::other)?;
    let _ = send.finish();
    match relay::read_reply(&mut recv).await? {
        (Reply::Accepted { .. }, _) => Ok(()),
        (Reply::Refused { reason, message }, _) => Err(relay::RelayError::Refused { reason, message }),
    }
}

/// Sleeps until `deadline`, or for ever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn poll_opt(connecting: &mut Option<Connecting>) -> Result<(Connection, bool), ConnectFailure> {
    match connecting {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn closed(conn: &Option<Connection>) -> ConnectionError {
    match conn {
        Some(c) => c.closed().await,
        None => std::future::pending().await,
    }
}
