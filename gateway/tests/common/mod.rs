//! Test support: a generated mesh PKI, gateways on 127.0.0.1 port 0, and TCP
//! backends. Everything is bound to loopback and torn down by `Drop`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use strait_gateway::proto::link::LinkConfig;
use strait_gateway::*;
use strait_identity::{
    CertStore, DEFAULT_LEAF_LIFETIME, IdentityName, Issuer, TrustAnchors, TrustDomain, generate,
    generate_key_and_csr, pki_types,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const LOCALHOST: &str = "127.0.0.1:0";

pub fn any_port() -> SocketAddr {
    LOCALHOST.parse().unwrap()
}

/// One mesh PKI (trust domain `cluster.local`).
pub struct Pki {
    pub anchors: TrustAnchors,
    pub issuer: Issuer,
}

impl Pki {
    pub fn new() -> Self {
        let (anchors, issuer) = generate(&TrustDomain::default(), SystemTime::now()).unwrap();
        Pki { anchors, issuer }
    }

    pub fn store(&self, identity: &IdentityName) -> CertStore {
        self.store_lasting(identity, DEFAULT_LEAF_LIFETIME)
    }

    /// A certificate for `identity` valid for `lifetime` from now.
    pub fn store_lasting(&self, identity: &IdentityName, lifetime: Duration) -> CertStore {
        let (key, csr) = generate_key_and_csr(identity).unwrap();
        let issued = self
            .issuer
            .issue(csr.as_ref(), identity, lifetime, SystemTime::now())
            .unwrap();
        CertStore::with_cert(issued.chain, pki_types::PrivateKeyDer::Pkcs8(key)).unwrap()
    }

    /// A certificate for `identity` issued as if at `at` (a clock off by that much).
    pub fn store_issued_at(&self, identity: &IdentityName, at: SystemTime) -> CertStore {
        let (key, csr) = generate_key_and_csr(identity).unwrap();
        let issued = self
            .issuer
            .issue(csr.as_ref(), identity, DEFAULT_LEAF_LIFETIME, at)
            .unwrap();
        CertStore::with_cert(issued.chain, pki_types::PrivateKeyDer::Pkcs8(key)).unwrap()
    }

    pub fn creds(&self, identity: &IdentityName, sessions: SessionState) -> Credentials {
        Credentials {
            store: self.store(identity),
            anchors: self.anchors.clone(),
            sessions,
        }
    }
}

pub fn gateway_identity() -> IdentityName {
    default_gateway_identity(&TrustDomain::default()).unwrap()
}

pub fn identity(sa: &str) -> IdentityName {
    IdentityName::new(sa, "linkerd-multicluster", "cluster.local").unwrap()
}

/// Fast timing so tests see failures and reconnects quickly.
pub fn fast_link() -> LinkConfig {
    LinkConfig {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(500),
        probe_failures_to_dead: 3,
        drain_timeout: Duration::from_secs(2),
    }
}

pub fn config(accept: Vec<IdentityName>) -> GatewayConfig {
    config_on(any_port(), accept)
}

pub fn config_on(addr: SocketAddr, accept: Vec<IdentityName>) -> GatewayConfig {
    let mut c = GatewayConfig::new(addr, accept);
    c.link = fast_link();
    c.tuning.idle_timeout = Duration::from_secs(3);
    c.tuning.keep_alive = Duration::from_millis(300);
    c
}

/// A started gateway; dropping it shuts it down.
pub struct TestGateway {
    pub quic_addr: SocketAddr,
    pub egress: Vec<SocketAddr>,
    pub proxy_entries: Vec<SocketAddr>,
    pub linkerd_entry: Option<SocketAddr>,
    pub endpoint: quinn::Endpoint,
    pub links: Vec<LinkHandle>,
    pub registry: Links,
    pub metrics: Arc<metrics::Metrics>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(config: GatewayConfig, creds: Credentials, resolver: Arc<dyn Resolve>) -> Self {
        Self::start_with_catalog(config, creds, resolver, None).await
    }

    /// [`TestGateway::start`], serving `catalog` to linked gateways' watches.
    pub async fn start_with_catalog(
        config: GatewayConfig,
        creds: Credentials,
        resolver: Arc<dyn Resolve>,
        catalog: Option<Arc<dyn Catalog>>,
    ) -> Self {
        // A restarted gateway may find its old socket still closing: retry, bounded.
        let mut tries = 0;
        let gw = loop {
            match Gateway::bind(config.clone(), creds.clone(), resolver.clone()).await {
                Ok(gw) => match &catalog {
                    Some(c) => break gw.with_catalog(c.clone()),
                    None => break gw,
                },
                Err(GatewayError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse && tries < 100 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("gateway did not bind: {e}"),
            }
        };
        let quic_addr = gw.quic_addr();
        let egress = gw.egress_addrs();
        let proxy_entries = gw.proxy_entry_addrs();
        let linkerd_entry = gw.linkerd_entry_addr();
        let endpoint = gw.endpoint();
        let (stop, stopped) = oneshot::channel();
        let running = gw
            .start(async move {
                let _ = stopped.await;
            })
            .unwrap();
        let done = tokio::spawn(running.done);
        TestGateway {
            quic_addr,
            egress,
            proxy_entries,
            linkerd_entry,
            endpoint,
            links: running.links,
            registry: running.registry,
            metrics: running.metrics,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub fn link(&self) -> &LinkHandle {
        &self.links[0]
    }

    /// Shuts down and waits (bounded) for the drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(10), done)
                .await
                .expect("gateway drained in time")
                .unwrap();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.abort();
        }
    }
}

pub fn target(authority: &str, port: u16) -> Target {
    Target {
        authority: Authority::new(authority).unwrap(),
        port,
        protocol: Protocol::Opaque,
        identity: None,
        endpoint: None,
    }
}

pub fn link_to(name: &str, east: &TestGateway) -> LinkSpec {
    LinkSpec {
        name: name.into(),
        addr: east.quic_addr,
        identity: gateway_identity(),
    }
}

/// An echo server: copies every connection's bytes back, honours half-close.
pub async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(LOCALHOST).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A digest server: reads to EOF, answers `len:u64 | fnv:u64`, then streams
/// `len` bytes of `pattern(seed = fnv)` and closes.
pub async fn digest_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(LOCALHOST).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut hasher = Fnv::new();
                let mut buf = vec![0; 64 * 1024];
                loop {
                    let n = tcp.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                let (len, digest) = (hasher.len, hasher.finish());
                tcp.write_all(&len.to_be_bytes()).await.unwrap();
                tcp.write_all(&digest.to_be_bytes()).await.unwrap();
                let mut rng = digest | 1;
                let mut left = len;
                while left > 0 {
                    let chunk = pattern(&mut rng, left.min(64 * 1024) as usize);
                    tcp.write_all(&chunk).await.unwrap();
                    left -= chunk.len() as u64;
                }
                tcp.shutdown().await.unwrap();
            });
        }
    });
    (addr, task)
}

/// FNV-1a 64 with a length.
pub struct Fnv {
    state: u64,
    pub len: u64,
}

impl Fnv {
    pub fn new() -> Self {
        Fnv {
            state: 0xcbf2_9ce4_8422_2325,
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.state ^= u64::from(*b);
            self.state = self.state.wrapping_mul(0x0100_0000_01b3);
        }
        self.len += bytes.len() as u64;
    }

    pub fn finish(&self) -> u64 {
        self.state
    }
}

/// Deterministic pseudo-random bytes (xorshift64).
pub fn pattern(state: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `data` through `addr` to an echo server and checks it comes back.
pub async fn echo_round_trip(addr: SocketAddr, data: &[u8]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = tcp.split();
    let write = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut back = Vec::with_capacity(data.len());
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::join!(write, read);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
}

/// Bounds a test.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test finished within its bound")
}

/// East (resolving with `resolver`, serving `catalog`) and west, linked to east as
/// `east` with a proxy entry for that link (`west.proxy_entries[0]`).
pub async fn entry_pair(
    resolver: Arc<dyn Resolve>,
    catalog: Option<Arc<dyn Catalog>>,
) -> (TestGateway, TestGateway) {
    let pki = Pki::new();
    let east = TestGateway::start_with_catalog(
        config(vec![gateway_identity()]),
        pki.creds(&gateway_identity(), SessionState::new()),
        resolver,
        catalog,
    )
    .await;
    let mut c = config(vec![gateway_identity()]);
    c.links.push(link_to("east", &east));
    c.proxy_entries.push(ProxyEntry {
        listen: any_port(),
        link: Some("east".into()),
    });
    let west = TestGateway::start(
        c,
        pki.creds(&gateway_identity(), SessionState::new()),
        Arc::new(StaticResolver::new()),
    )
    .await;
    (east, west)
}
