//! A scratch control plane for the tests of other crates (feature `testing`): the proxy's,
//! the CLI's and the cross-cluster tests start real controllers this way.
//!
//! [`scratch_identity`] makes a new trust root, issuer and token key in a temporary
//! directory; [`ScratchCluster::start`] runs the controller in this process over an
//! in-memory store, its listeners on one IP with ports the kernel picks, with the
//! `production` namespace applied. Several clusters may share one identity (one mesh).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strait_api::Store;
use strait_api::loader::{LoadOptions, load_str};
use strait_api::store::local::LocalStore;
use strait_identity::TrustDomain;

use crate::run::{Bound, ControllerConfig, InProcess, LocalIdentity};

/// A new mesh identity in the default trust domain, in a temporary directory (kept as
/// long as the returned directory lives; pod tokens can be written beside it).
pub fn scratch_identity() -> (tempfile::TempDir, LocalIdentity) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let id = LocalIdentity::load_or_create(
        &dir.path().join("identity"),
        &TrustDomain::default(),
        SystemTime::now(),
    )
    .expect("a new identity");
    (dir, id)
}

/// Writes a pod token for `production/<pod>` (service account `sa`) into `dir`; returns
/// the file, for `LINKERD2_PROXY_IDENTITY_TOKEN_FILE`.
pub fn token_file(dir: &Path, id: &LocalIdentity, sa: &str, pod: &str) -> PathBuf {
    let file = dir.join(format!("{pod}.token"));
    std::fs::write(&file, id.tokens.mint("production", sa, pod)).expect("the token is written");
    file
}

/// The CIDRs `nets` (e.g. `127.0.0.0/8`), for `InboundConfig::cluster_networks`.
pub fn cidrs(nets: &[&str]) -> Vec<strait_api::mesh::formats::Cidr> {
    nets.iter()
        .map(|n| strait_api::mesh::formats::cidr(n).expect("a CIDR"))
        .collect()
}

/// Applies a YAML text, which must load, to `store`.
pub async fn apply(store: &LocalStore, yaml: &str) {
    let objects = load_str("test.yaml", yaml, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|l| l.object)
        .collect();
    store.apply(objects).await.expect("the objects apply");
}

/// A running control plane over an in-memory store.
pub struct ScratchCluster {
    /// Its store.
    pub store: LocalStore,
    /// Where it listens.
    pub bound: Bound,
    controller: InProcess,
}

impl ScratchCluster {
    /// Starts a controller of `id` on `ip` with endpoints of local pods
    /// (`local_endpoints`), after `configure` had its say on the config, and applies the
    /// `production` namespace.
    pub async fn start(
        id: &LocalIdentity,
        ip: IpAddr,
        configure: impl FnOnce(&mut ControllerConfig),
    ) -> Self {
        let mut cfg = ControllerConfig::ephemeral(ip);
        configure(&mut cfg);
        let store = LocalStore::in_memory();
        let controller = InProcess::start(cfg, store.clone(), id)
            .await
            .expect("the controller starts");
        let c = ScratchCluster {
            store,
            bound: controller.bound,
            controller,
        };
        c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: production}\n")
            .await;
        c
    }

    /// Applies a YAML text, which must load.
    pub async fn apply(&self, yaml: &str) {
        apply(&self.store, yaml).await;
    }

    /// Stops the controller (bounded: 15 s).
    pub async fn stop(&mut self) {
        let stopped = tokio::time::timeout(Duration::from_secs(15), self.controller.stop()).await;
        stopped
            .expect("the controller stops within 15s")
            .expect("the controller stops cleanly");
    }
}
