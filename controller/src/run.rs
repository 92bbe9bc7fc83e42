//! The controller process: parse → build → spawn → drain. [`run`] takes its store, token
//! validator and a shutdown future as arguments, binds every listener before serving, and
//! reports the bound addresses, so it runs the same on port 0 in tests as on Linkerd's
//! ports in a cluster.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::tls::incoming;
use serde::Serialize;
use strait_api::Store;
use strait_identity::{Issuer, TrustAnchors, TrustDomain};
use tokio::net::TcpListener;

use crate::discovery::destination::DestinationService;
use crate::discovery::index::{self, ClusterInfo, Index};
use crate::identity::{IdentityService, LocalTokens, TokenValidator};
use crate::policy::inbound::{self, InboundConfig, InboundIndex, InboundPolicyService};
use crate::policy::outbound::{self, OutboundPolicyService, RouteIndex};

/// Where the controller listens and how it names the cluster.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Destination gRPC (Linkerd: 8086).
    pub destination_addr: SocketAddr,
    /// Identity gRPC (Linkerd: 8080).
    pub identity_addr: SocketAddr,
    /// Policy gRPC (Linkerd: 8090).
    pub policy_addr: SocketAddr,
    /// Admin HTTP: `/ready`, `/live` (Linkerd: 9990).
    pub admin_addr: SocketAddr,
    /// Trust and cluster domains.
    pub cluster: ClusterInfo,
    /// Inbound policy defaults.
    pub inbound: InboundConfig,
    /// Lifetime of issued leaf certificates.
    pub issuance_lifetime: Duration,
    /// Run the endpoint controller (local mode; Kubernetes has its own).
    pub local_endpoints: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Self {
            destination_addr: any(8086),
            identity_addr: any(8080),
            policy_addr: any(8090),
            admin_addr: any(9990),
            cluster: ClusterInfo::default(),
            inbound: InboundConfig::default(),
            issuance_lifetime: strait_identity::DEFAULT_LEAF_LIFETIME,
            local_endpoints: false,
        }
    }
}

impl ControllerConfig {
    /// A local-mode controller (with its endpoint controller) listening on `ip`, every
    /// port picked by the kernel: tests and benchmarks.
    pub fn ephemeral(ip: IpAddr) -> Self {
        let any = SocketAddr::new(ip, 0);
        Self {
            destination_addr: any,
            identity_addr: any,
            policy_addr: any,
            admin_addr: any,
            local_endpoints: true,
            ..Default::default()
        }
    }
}

/// The addresses actually bound (they differ from the config for port 0).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Bound {
    /// Destination gRPC.
    pub destination: SocketAddr,
    /// Identity gRPC.
    pub identity: SocketAddr,
    /// Policy gRPC.
    pub policy: SocketAddr,
    /// Admin HTTP.
    pub admin: SocketAddr,
}

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}; is another process using the port?")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A gRPC server failed.
    #[error("{what} server failed: {source}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// Identity material could not be loaded or created.
    #[error("{0}")]
    Identity(String),
    /// An in-process controller ([`InProcess`]) ended before it was listening.
    #[error("the controller stopped before it was listening")]
    Stopped,
}

/// How long shutdown waits for in-flight unary requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { what, addr, source })
}

/// A control plane on a task of the current runtime (tests, benchmarks): [`run`] over a
/// store with a [`LocalIdentity`]'s PKI and tokens. Stopped by [`InProcess::stop`], or
/// aborted when dropped.
pub struct InProcess {
    /// Where it listens.
    pub bound: Bound,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), RunError>>>,
}

impl InProcess {
    /// Starts it and waits until every listener is open; a failure to start (a port in
    /// use) is returned, a panic of the controller resumed.
    pub async fn start<S: Store>(
        cfg: ControllerConfig,
        store: S,
        id: &LocalIdentity,
    ) -> Result<Self, RunError> {
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            cfg,
            store,
            id.anchors.clone(),
            id.issuer.clone(),
            id.tokens.clone(),
            move |b| {
                let _ = bound_tx.send(b);
            },
            async {
                let _ = stopped.await;
            },
        ));
        match bound_rx.await {
            Ok(bound) => Ok(Self {
                bound,
                stop: Some(stop),
                task: Some(task),
            }),
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(RunError::Stopped),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(RunError::Stopped),
            },
        }
    }

    /// Stops it: its servers drain (bounded by the drain timeout), then it returns what
    /// it ended with (`Ok` when it was already stopped).
    pub async fn stop(&mut self) -> Result<(), RunError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Runs the control plane until `shutdown` resolves; `on_bound` hears the bound addresses
/// once every listener is open.
pub async fn run<S, V>(
    cfg: ControllerConfig,
    store: S,
    anchors: TrustAnchors,
    issuer: Issuer,
    validator: V,
    on_bound: impl FnOnce(Bound) + Send,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError>
where
    S: Store,
    V: TokenValidator,
{
    let dst_l = bind("destination", cfg.destination_addr).await?;
    let id_l = bind("identity", cfg.identity_addr).await?;
    let pol_l = bind("policy", cfg.policy_addr).await?;
    let admin_l = bind("admin", cfg.admin_addr).await?;
    let local = |l: &TcpListener, addr| l.local_addr().unwrap_or(addr);
    let bound = Bound {
        destination: local(&dst_l, cfg.destination_addr),
        identity: local(&id_l, cfg.identity_addr),
        policy: local(&pol_l, cfg.policy_addr),
        admin: local(&admin_l, cfg.admin_addr),
    };

    let td = &cfg.cluster.trust_domain;
    let now = SystemTime::now();
    let (dst_id, id_id) = (
        crate::tls::destination_identity(td).map_err(RunError::Identity)?,
        crate::tls::identity_identity(td).map_err(RunError::Identity)?,
    );
    let dst_tls = crate::tls::serving(&issuer, &anchors, &dst_id, now).map_err(RunError::Identity)?;
    let id_tls = crate::tls::serving(&issuer, &anchors, &id_id, now).map_err(RunError::Identity)?;

    let discovery = Index::new(cfg.cluster.clone());
    let inbound_index = InboundIndex::new(InboundConfig {
        trust_domain: cfg.cluster.trust_domain.clone(),
        default_opaque_ports: cfg.cluster.default_opaque_ports.clone(),
        ..cfg.inbound.clone()
    });
    let routes = RouteIndex::new();
    let closers = (discovery.clone(), inbound_index.clone(), routes.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::tls::renew(
        issuer.clone(),
        vec![(dst_id, dst_tls.certs.clone()), (id_id, id_tls.certs.clone())],
    ));
    {
        let (ix, st) = (discovery.clone(), store.clone());
        tasks.spawn(async move {
            let e = index::run(ix, st).await;
            tracing::error!(error = %e, "discovery index stopped");
        });
    }
    tasks.spawn(inbound::run(inbound_index.clone(), store.clone()));
    {
        let (ix, st) = (routes.clone(), store.clone());
        tasks.spawn(async move {
            let e = outbound::run(ix, st).await;
            tracing::error!(error = %e, "route index stopped");
        });
    }
    if cfg.local_endpoints {
        tasks.spawn(crate::endpoints::run(store.clone()));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let identity = IdentityService::new(
        Arc::new(RwLock::new(issuer)),
        validator,
        cfg.issuance_lifetime,
        Arc::new(SystemTime::now),
    );
    let servers = [
        (
            "destination",
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(DestinationService::new(discovery.clone()).into_server())
                    .serve_with_incoming_shutdown(incoming(dst_l, Some(dst_tls.config.clone())), stopped()),
            ),
        ),
        (
            "identity",
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(identity.into_server())
                    .serve_with_incoming_shutdown(incoming(id_l, Some(id_tls.config.clone())), stopped()),
            ),
        ),
        (
            "policy",
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(InboundPolicyService::new(inbound_index).into_server())
                    .add_service(OutboundPolicyService::new(discovery, routes).into_server())
                    .serve_with_incoming_shutdown(incoming(pol_l, Some(dst_tls.config.clone())), stopped()),
            ),
        ),
    ];
    let ready = {
        let (d, i, r) = (closers.0.clone(), closers.1.clone(), closers.2.clone());
        move || d.synced.is_synced() && i.synced.is_synced() && r.synced.is_synced()
    };
    tasks.spawn(crate::admin::serve(admin_l, ready, stopped()));
    // Announced once the indexes hold the store's state (at once from a local store; a
    // kind a cluster cannot list holds it for `SYNC_WAIT` at most), so that whoever waits
    // for the announcement finds the controller ready.
    futures::join!(
        closers.0.synced.wait(),
        closers.1.synced.wait(),
        closers.2.synced.wait()
    );
    tracing::info!(?bound, "control plane serving");
    on_bound(bound);

    shutdown.await;
    tracing::info!("shutting down: ending streams and draining requests");
    // Streams never finish by themselves: end them so graceful shutdown can complete;
    // proxies reconnect to another replica.
    closers.0.close();
    closers.1.close();
    closers.2.close();
    let _ = stop_tx.send(true);
    for (what, mut handle) in servers {
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(source))) => return Err(RunError::Serve { what, source }),
            Ok(Err(e)) => tracing::error!(what, error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!(
                    what,
                    "requests still in flight after {DRAIN_TIMEOUT:?}; closing them"
                );
                handle.abort();
            }
        }
    }
    tasks.abort_all();
    Ok(())
}

/// Local mode's identity material in `<state-dir>/identity/`: trust anchors, issuer and
/// the token secret, created on first start (like `linkerd install` without certificate
/// flags) and reused afterwards.
pub struct LocalIdentity {
    /// The trust anchors (`ca.crt`).
    pub anchors: TrustAnchors,
    /// The issuer (`issuer.crt`, `issuer.key`).
    pub issuer: Issuer,
    /// Local-mode pod tokens (`token.key`).
    pub tokens: LocalTokens,
    /// The directory.
    pub dir: PathBuf,
}

impl LocalIdentity {
    /// Loads `dir`'s identity material, generating what is missing.
    pub fn load_or_create(dir: &Path, trust_domain: &TrustDomain, now: SystemTime) -> Result<Self, RunError> {
        let err = |what: &str, e: &dyn std::fmt::Display| RunError::Identity(format!("{what}: {e}"));
        std::fs::create_dir_all(dir).map_err(|e| err(&format!("cannot create {}", dir.display()), &e))?;
        let (ca, crt, key, tok) = (
            dir.join("ca.crt"),
            dir.join("issuer.crt"),
            dir.join("issuer.key"),
            dir.join("token.key"),
        );
        if !ca.exists() {
            let (anchors, issuer) = strait_identity::generate(trust_domain, now)
                .map_err(|e| err("cannot generate the trust anchor and issuer", &e))?;
            write_private(&key, issuer.key_pem().as_bytes())
                .map_err(|e| err("cannot write issuer.key", &e))?;
            std::fs::write(&crt, issuer.cert_pem()).map_err(|e| err("cannot write issuer.crt", &e))?;
            std::fs::write(&ca, anchors.to_pem()).map_err(|e| err("cannot write ca.crt", &e))?;
        }
        let anchors = TrustAnchors::load(&ca, now).map_err(|e| err("trust anchors", &e))?;
        let issuer = Issuer::load_files(&crt, &key, &anchors, now).map_err(|e| err("issuer", &e))?;
        if !tok.exists() {
            let secret = LocalTokens::generate_secret().map_err(|e| err("token secret", &e))?;
            write_private(&tok, &secret).map_err(|e| err("cannot write token.key", &e))?;
        }
        let secret = std::fs::read(&tok).map_err(|e| err("cannot read token.key", &e))?;
        Ok(Self {
            anchors,
            issuer,
            tokens: LocalTokens::new(&secret),
            dir: dir.to_path_buf(),
        })
    }
}

/// Writes a secret readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests;
