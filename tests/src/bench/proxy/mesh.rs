//! The benchmark's in-process side: a real controller (local store, identity, destination
//! and policy services on 127.0.0.1 port 0) and the backends, on a tokio runtime of their
//! own, so the rest of the harness can stay plain threads and child processes. Neither is
//! measured; both answer only a handful of requests per path (the controller) or do the
//! same work for every path (the backend).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use strait_api::loader::{LoadOptions, load_str};
use strait_api::store::local::LocalStore;
use strait_api::{KindId, ObjectKey, Store};
use strait_controller::run::{Bound, ControllerConfig, InProcess, LocalIdentity};
use strait_identity::TrustDomain;

use super::Error;

/// The namespace of every pod and route of the benchmark.
pub const NAMESPACE: &str = "production";

/// The header the benchmark's routes set; the backend counts requests carrying it.
pub const ROUTE_HEADER: &str = "x-bench-route";

/// The control plane and the runtime the backends run on.
pub struct Mesh {
    rt: tokio::runtime::Runtime,
    store: LocalStore,
    /// Identity material (anchors, issuer, pod tokens).
    pub id: LocalIdentity,
    /// Where the controller's services listen.
    pub bound: Bound,
    controller: InProcess,
    _dir: tempfile::TempDir,
}

impl Mesh {
    /// Starts the controller with the `production` namespace and the `myapp` Service
    /// (port 80 → 8080).
    pub fn start() -> Result<Self, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-mesh")
            .build()
            .map_err(Error::io("starting a tokio runtime"))?;
        let dir = tempfile::tempdir().map_err(Error::io("a temporary directory"))?;
        let mesh_err = |e: &dyn std::fmt::Display| Error::Mesh(e.to_string());
        let id = LocalIdentity::load_or_create(
            &dir.path().join("identity"),
            &TrustDomain::default(),
            SystemTime::now(),
        )
        .map_err(|e| mesh_err(&e))?;
        let store = LocalStore::in_memory();
        let mut cfg = ControllerConfig::ephemeral(IpAddr::from([127, 0, 0, 1]));
        // Loopback pods are the cluster's pods, as in the proxy's own tests.
        cfg.inbound.cluster_networks = ["10.0.0.0/8", "127.0.0.0/8"]
            .iter()
            .map(|n| strait_api::mesh::formats::cidr(n).expect("a network"))
            .collect();
        let controller = rt
            .block_on(async {
                let start = InProcess::start(cfg, store.clone(), &id);
                tokio::time::timeout(Duration::from_secs(30), start).await
            })
            .map_err(|_| Error::Mesh("the controller did not listen within 30 s".into()))?
            .map_err(|e| mesh_err(&e))?;
        let bound = controller.bound;
        let mesh = Self {
            rt,
            store,
            id,
            bound,
            controller,
            _dir: dir,
        };
        mesh.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: myapp, namespace: {NAMESPACE}}}\nspec:\n  selector: {{app: myapp}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
        ))?;
        Ok(mesh)
    }

    /// Applies cluster objects (YAML, `---`-separated) to the store.
    pub fn apply(&self, yaml: &str) -> Result<(), Error> {
        if yaml.trim().is_empty() {
            return Ok(());
        }
        let objs = load_str("bench.yaml", yaml, &LoadOptions::default())
            .map_err(|e| Error::Mesh(e.to_string()))?
            .into_iter()
            .map(|l| l.object)
            .collect();
        self.rt
            .block_on(self.store.apply(objs))
            .map(drop)
            .map_err(|e| Error::Mesh(e.to_string()))
    }

    /// Deletes `policy.linkerd.io` HTTPRoutes by name.
    pub fn delete_routes(&self, names: &[String]) -> Result<(), Error> {
        for name in names {
            let key = ObjectKey::new(KindId::PolicyHttpRoute, NAMESPACE, name);
            self.rt
                .block_on(self.store.delete(&key))
                .map_err(|e| Error::Mesh(e.to_string()))?;
        }
        Ok(())
    }

    /// Runs `f` on the mesh's runtime (for clients of its services).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The token file contents of pod `pod` (service account `sa`).
    pub fn token(&self, sa: &str, pod: &str) -> String {
        self.id.tokens.mint(NAMESPACE, sa, pod)
    }

    /// Starts a backend on `addr` answering every request with 200 and a 1 KiB body.
    pub fn backend(&self, addr: SocketAddr) -> Result<Backend, Error> {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(Error::io(format!("binding the backend on {addr}")))?;
        let counts = Arc::new(Counts::default());
        let accept = self.rt.spawn(serve(listener, counts.clone()));
        Ok(Backend { counts, accept })
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let stop = self.controller.stop();
        match self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), stop).await })
        {
            Ok(Err(e)) => eprintln!("controller stopped: {e}"),
            Ok(Ok(())) => {}
            Err(_) => eprintln!("the controller did not stop within 10 s"),
        }
    }
}

/// What a backend answered.
#[derive(Debug, Default)]
pub struct Counts {
    requests: AtomicU64,
    routed: AtomicU64,
}

/// A running backend; stops accepting when dropped.
pub struct Backend {
    counts: Arc<Counts>,
    accept: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Requests answered so far that carried [`ROUTE_HEADER`] (a route's filter set it).
    pub fn routed(&self) -> u64 {
        self.counts.routed.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(listener: tokio::net::TcpListener, counts: Arc<Counts>) {
    use http_body_util::Full;
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let (body, counts) = (body.clone(), counts.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                counts.requests.fetch_add(1, Ordering::Relaxed);
                if req.headers().contains_key(ROUTE_HEADER) {
                    counts.routed.fetch_add(1, Ordering::Relaxed);
                }
                let b = body.clone();
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(b))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}
