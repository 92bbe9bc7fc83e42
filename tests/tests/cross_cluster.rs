//! The cross-cluster path end to end, every component real and in process on loopback
//! sockets: two controllers with their stores (one mesh PKI, as linked Linkerd clusters
//! share trust anchors), two gateways linked over QUIC, west's service mirror, a client
//! proxy in west and a server proxy in east (explicit capture, each pod on its own 127.x
//! address), and the demo server behind east's proxy.
//!
//! ```text
//! client ─▶ west proxy ─strt─▶ west gateway (proxy entry) ══QUIC══▶ east gateway
//!             └──────────── mTLS, web ⇄ myapp, end to end ──────────────┘  │ Destination
//!                                                                 east proxy (4143) ─▶ demo server
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use strait_api::Store;
use strait_api::store::local::LocalStore;
use strait_controller::run::LocalIdentity;
use strait_controller::testing::{ScratchCluster, apply, scratch_identity, token_file};
use strait_gateway::{
    Credentials, DestinationResolver, Gateway, GatewayConfig, LinkSpec, ProxyEntry, SessionState,
    StaticResolver, default_gateway_identity,
};
use strait_identity::{
    CertStore, DEFAULT_LEAF_LIFETIME, IdentityName, TrustDomain, generate_key_and_csr, pki_types,
};
use strait_proxy::config::env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const WEB_ID: &str = "web.production.serviceaccount.identity.linkerd.cluster.local";
const MYAPP_ID: &str = "myapp.production.serviceaccount.identity.linkerd.cluster.local";
const MIRROR: &str = "myapp-east.production.svc.cluster.local:80";
const GHOST: &str = "ghost-east.production.svc.cluster.local:80";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Stops what it holds when dropped: every task of the topology.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>, Vec<oneshot::Sender<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A scratch directory, the mesh's PKI in it (one for every cluster, as linked Linkerd
/// clusters share trust anchors), and the task list of a scenario.
fn mesh() -> (tempfile::TempDir, LocalIdentity, Tasks) {
    let (dir, id) = scratch_identity();
    (dir, id, Tasks::default())
}

/// A control plane on 127.0.0.1 port 0 over an in-memory store.
type Cluster = ScratchCluster;

async fn cluster(id: &LocalIdentity) -> Cluster {
    ScratchCluster::start(id, IpAddr::from([127, 0, 0, 1]), |_| {}).await
}

async fn meshed_pod(store: &LocalStore, name: &str, app: &str, sa: &str, ip: IpAddr) {
    apply(
        store,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: production\n  labels: {{app: {app}, linkerd.io/control-plane-ns: linkerd}}\nspec:\n  serviceAccountName: {sa}\n  containers: [{{name: app, image: x}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
        ),
    )
    .await;
}

/// A proxy for pod `name` at `ip` in explicit mode; waits (bounded) for `/ready`.
async fn proxy(
    c: &Cluster,
    id: &LocalIdentity,
    dir: &std::path::Path,
    name: &str,
    sa: &str,
    ip: IpAddr,
    tasks: &mut Tasks,
) -> strait_proxy::Bound {
    let token = token_file(dir, id, sa, name);
    let vars: HashMap<&str, String> = HashMap::from([
        (env::CAPTURE, "explicit".to_string()),
        (env::DESTINATION_SVC_ADDR, c.bound.destination.to_string()),
        (env::IDENTITY_SVC_ADDR, c.bound.identity.to_string()),
        (env::IDENTITY_TRUST_ANCHORS, id.anchors.to_pem()),
        (
            env::IDENTITY_LOCAL_NAME,
            format!("{sa}.production.serviceaccount.identity.linkerd.cluster.local"),
        ),
        (env::IDENTITY_TOKEN_FILE, token.display().to_string()),
        (env::INBOUND_LISTEN_ADDR, format!("{ip}:4143")),
        (env::OUTBOUND_LISTEN_ADDR, format!("{ip}:4140")),
        (env::ADMIN_LISTEN_ADDR, format!("{ip}:4191")),
        (env::LOG, "warn".to_string()),
    ]);
    let cfg = strait_proxy::Config::from_source(|k| vars.get(k).cloned(), SystemTime::now()).unwrap();
    let (btx, brx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    tasks.0.push(tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        strait_proxy::run(
            cfg,
            move |b| {
                let _ = btx.send(b);
            },
            shutdown,
        )
        .await
        .unwrap();
    }));
    tasks.1.push(stop);
    let bound = brx.await.unwrap();
    for _ in 0..400 {
        if http_get(bound.admin, "/ready").await.0 == 200 {
            return bound;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("proxy {name} not ready within 10s");
}

/// East: myapp, exported, meshed, behind its proxy (explicit capture); the demo server
/// is the app.
async fn east_with_myapp(
    id: &LocalIdentity,
    dir: &std::path::Path,
    myapp_ip: IpAddr,
    tasks: &mut Tasks,
) -> (Cluster, strait_proxy::Bound) {
    let east = cluster(id).await;
    apply(
        &east.store,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: myapp\n  namespace: production\n  labels: {mirror.linkerd.io/exported: \"true\"}\nspec:\n  selector: {app: myapp}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    )
    .await;
    let east_proxy = myapp_pod(&east, id, dir, "myapp-1", myapp_ip, Duration::ZERO, tasks).await;
    (east, east_proxy)
}

/// One more pod of east's myapp at `ip`: the pod, the demo server answering after
/// `latency` (naming the pod), and its proxy.
async fn myapp_pod(
    east: &Cluster,
    id: &LocalIdentity,
    dir: &std::path::Path,
    name: &str,
    ip: IpAddr,
    latency: Duration,
    tasks: &mut Tasks,
) -> strait_proxy::Bound {
    meshed_pod(&east.store, name, "myapp", "myapp", ip).await;
    let demo = strait_topologies::demo::server::Server::new(strait_topologies::demo::server::ServerConfig {
        identity: strait_topologies::demo::Identity {
            name: "myapp".into(),
            version: "v1".into(),
            cluster: "east".into(),
            pod: name.into(),
            namespace: "production".into(),
        },
        latency,
        ..Default::default()
    })
    .unwrap();
    let app = TcpListener::bind((ip, 8080)).await.unwrap();
    tasks.0.push(tokio::spawn(async move {
        let _ = demo.serve(app, std::future::pending()).await;
    }));
    proxy(east, id, dir, name, "myapp", ip, tasks).await
}

/// Gateway credentials issued by the mesh's issuer.
fn gateway_creds(id: &LocalIdentity) -> Credentials {
    let me = default_gateway_identity(&TrustDomain::default()).unwrap();
    let (key, csr) = generate_key_and_csr(&me).unwrap();
    let issued = id
        .issuer
        .issue(csr.as_ref(), &me, DEFAULT_LEAF_LIFETIME, SystemTime::now())
        .unwrap();
    Credentials {
        store: CertStore::with_cert(issued.chain, pki_types::PrivateKeyDer::Pkcs8(key)).unwrap(),
        anchors: id.anchors.clone(),
        sessions: SessionState::new(),
    }
}

/// Binds and starts a gateway; returns its QUIC, proxy-entry and Linkerd-entry addresses
/// and its metrics.
async fn gateway(
    config: GatewayConfig,
    creds: Credentials,
    resolver: Arc<dyn strait_gateway::Resolve>,
    tasks: &mut Tasks,
) -> (
    SocketAddr,
    Vec<SocketAddr>,
    Option<SocketAddr>,
    Arc<strait_gateway::metrics::Metrics>,
) {
    let gw = Gateway::bind(config, creds, resolver).await.unwrap();
    let addrs = (
        gw.quic_addr(),
        gw.proxy_entry_addrs(),
        gw.linkerd_entry_addr(),
        gw.metrics(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let running = gw
        .start(async {
            let _ = stopped.await;
        })
        .unwrap();
    tasks.0.push(tokio::spawn(running.done));
    tasks.1.push(stop);
    addrs
}

/// West's mirror of east: a Link to east's gateway at `gateway` (identity `gw_id`), run
/// with `opts` (a proxy entry or none) against east's and west's stores.
fn mirror_east(
    gateway: SocketAddr,
    gw_id: &IdentityName,
    opts: strait_mirror::MirrorOptions,
    east: &Cluster,
    west: &Cluster,
    tasks: &mut Tasks,
) {
    let link: strait_api::mesh::link::Link = serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link",
        "metadata": {"name": "east", "namespace": "linkerd-multicluster"},
        "spec": {
            "targetClusterName": "east",
            "clusterCredentialsSecret": "cluster-credentials-east",
            "gatewayAddress": gateway.ip().to_string(),
            "gatewayPort": gateway.port().to_string(),
            "gatewayIdentity": gw_id.as_str(),
        },
    }))
    .unwrap();
    let (health_tx, health) = watch::channel(strait_mirror::GatewayHealth {
        alive: true,
        ..Default::default()
    });
    let (report, _report_rx) = watch::channel(Default::default());
    let (remote, local) = (east.store.clone(), west.store.clone());
    let cfg = strait_mirror::LinkConfig::from_link(&link).unwrap();
    tasks.0.push(tokio::spawn(async move {
        let _keep = (health_tx, _report_rx);
        strait_mirror::run_link(cfg, opts, remote, local, health, report, std::future::pending()).await;
    }));
}

/// East's gateway (its ingress resolving through east's Destination, delivering to
/// proxies on 4143: explicit capture, nothing redirects at the pod); west, with its
/// gateway linked to east and a proxy entry for the link; and west's mirror of east,
/// pointing Strait proxies at the entry.
async fn west_linked_to(east: &Cluster, id: &LocalIdentity, tasks: &mut Tasks) -> Linked {
    // East's gateway: the ingress resolves through east's Destination and delivers to
    // proxies on 4143 (explicit capture: nothing redirects at the pod).
    let gw_id: IdentityName = default_gateway_identity(&TrustDomain::default()).unwrap();
    let resolver = DestinationResolver::new(&east.bound.destination.to_string(), Some(4143)).unwrap();
    let (east_quic, _, _, east_metrics) = gateway(
        GatewayConfig::new("127.0.0.1:0".parse().unwrap(), vec![gw_id.clone()]),
        gateway_creds(id),
        Arc::new(resolver),
        tasks,
    )
    .await;

    // West: its gateway links to east and opens a proxy entry for the link.
    let west = cluster(id).await;
    let mut cfg = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), vec![gw_id.clone()]);
    cfg.links.push(LinkSpec {
        name: "east".into(),
        addr: east_quic,
        identity: gw_id.clone(),
    });
    cfg.proxy_entries.push(ProxyEntry {
        listen: "127.0.0.1:0".parse().unwrap(),
        link: Some("east".into()),
    });
    let (_, entries, _, _) = gateway(cfg, gateway_creds(id), Arc::new(StaticResolver::new()), tasks).await;
    let entry = entries[0];

    // West's mirror of east, pointing Strait proxies at the entry.
    let opts = strait_mirror::MirrorOptions {
        gateway_entries: [("east".to_string(), entry)].into(),
        ..Default::default()
    };
    mirror_east(
        SocketAddr::new(east_quic.ip(), 4143),
        &gw_id,
        opts,
        east,
        &west,
        tasks,
    );
    Linked {
        west,
        entry,
        gw_id,
        east_gateway: east_metrics,
    }
}

/// West, linked to east by [`west_linked_to`].
struct Linked {
    west: Cluster,
    /// West's proxy entry for the link.
    entry: SocketAddr,
    /// Both gateways' identity.
    gw_id: IdentityName,
    /// East's gateway's metrics.
    east_gateway: Arc<strait_gateway::metrics::Metrics>,
}

/// A GET over a fresh HTTP/1.1 connection: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("an answer within 10s")
        .unwrap();
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// GET `/` of `authority` through the proxy's outbound port: (status, headers, body).
async fn get_via(outbound: SocketAddr, authority: &str) -> (u16, http::HeaderMap, String) {
    let io = TokioIo::new(TcpStream::connect(outbound).await.unwrap());
    let (mut c, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/hello")
        .header("host", authority)
        .body(Full::<Bytes>::default())
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(15), c.send_request(req))
        .await
        .expect("a response within 15s")
        .unwrap();
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The value of `name{…}` whose labels include every `want` pair.
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{')?;
            (n == name).then_some((labels, value))
        })
        .find(|(labels, _)| want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
        .and_then(|(_, v)| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_west_client_reaches_east_through_both_gateways_with_its_own_identity() {
    tokio::time::timeout(Duration::from_secs(90), scenario())
        .await
        .expect("the cross-cluster scenario finished within 90s");
}

async fn scenario() {
    let (dir, id, mut tasks) = mesh();
    let (web_ip, myapp_ip) = (ip("127.46.1.2"), ip("127.46.2.3"));

    // East: myapp, exported, meshed, behind its proxy; the demo server is the app.
    let (east, east_proxy) = east_with_myapp(&id, dir.path(), myapp_ip, &mut tasks).await;

    // East's gateway; west, its gateway linked to east with a proxy entry, and its
    // mirror of east pointing Strait proxies at the entry.
    let Linked {
        west, entry, gw_id, ..
    } = west_linked_to(&east, &id, &mut tasks).await;

    // A mirror of a service east does not have, as a stale or hand-made mirror would be.
    apply(
        &west.store,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: ghost-east\n  namespace: production\n  annotations:\n    mirror.linkerd.io/remote-gateway-identity: {gw}\n    mirror.linkerd.io/remote-svc-fq-name: ghost.production.svc.cluster.local\n    mirror.strait.io/gateway-entry: \"{entry}\"\n    mirror.strait.io/remote-identity: {MYAPP_ID}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ghost-east-gateway\n  namespace: production\n  labels: {{kubernetes.io/service-name: ghost-east}}\naddressType: IPv4\nports: [{{name: http, port: 4143}}]\nendpoints:\n  - addresses: [127.0.0.1]\n    conditions: {{ready: true}}\n",
            gw = gw_id.as_str()
        ),
    )
    .await;

    meshed_pod(&west.store, "web-1", "web", "web", web_ip).await;
    let west_proxy = proxy(&west, &id, dir.path(), "web-1", "web", web_ip, &mut tasks).await;

    // The mirror appears with the entry and east's workload identity; then requests flow.
    let mut last = (0, http::HeaderMap::new(), String::new());
    for _ in 0..200 {
        last = get_via(west_proxy.outbound, MIRROR).await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, headers, body) = last;
    assert_eq!(status, 200, "{headers:?} {body}");
    assert!(
        body.contains("\"cluster\":\"east\"") && body.contains("\"pod\":\"myapp-1\""),
        "{body}"
    );
    for _ in 0..4 {
        let (status, _, body) = get_via(west_proxy.outbound, MIRROR).await;
        assert_eq!(status, 200, "{body}");
    }
    let mirror: Option<k8s_openapi::api::core::v1::Service> =
        west.store.get("production", "myapp-east").await.unwrap();
    let annotations = mirror.unwrap().metadata.annotations.unwrap();
    assert_eq!(annotations["mirror.strait.io/gateway-entry"], entry.to_string());
    assert_eq!(annotations["mirror.strait.io/remote-identity"], MYAPP_ID);
    assert_eq!(
        annotations["mirror.strait.io/remote-endpoints"],
        myapp_ip.to_string()
    );

    // East's proxy authenticated the west client itself: the gateways only relayed.
    let (_, east_metrics) = http_get(east_proxy.admin, "/metrics").await;
    let inbound = [("direction", "inbound"), ("tls", "true"), ("client_id", WEB_ID)];
    let served = metric(&east_metrics, "request_total", &inbound);
    assert!(served.is_some_and(|n| n >= 5.0), "{east_metrics}");
    // West's proxy verified east's workload identity, not a gateway's; its endpoint is
    // east's pod (on the service port), reached through the entry: nothing listens at
    // that address on port 80.
    let (_, west_metrics) = http_get(west_proxy.admin, "/metrics").await;
    let pod_addr = SocketAddr::new(myapp_ip, 80).to_string();
    let outbound = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", MYAPP_ID),
        ("target_addr", pod_addr.as_str()),
    ];
    assert!(
        metric(&west_metrics, "request_total", &outbound).is_some_and(|n| n >= 5.0),
        "{west_metrics}"
    );

    // Opaque TCP too (explicit mode's CONNECT): the tunnel reaches east's app port.
    let mut tcp = TcpStream::connect(west_proxy.outbound).await.unwrap();
    let connect = format!("CONNECT {MIRROR} HTTP/1.1\r\nhost: {MIRROR}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n\r\n") {
        rest.push(tcp.read_u8().await.unwrap());
    }
    tcp.write_all(b"GET /tunnel HTTP/1.1\r\nhost: myapp\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
        .await
        .expect("the tunnelled answer within 10s")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"cluster\":\"east\""),
        "{answer}"
    );

    // A service east does not know: east's gateway refuses, west's proxy answers 503
    // with Linkerd's l5d-proxy-error naming the refusal.
    // (Retried, bounded: west's Destination may publish the Service before its slice.)
    let mut last = (0, http::HeaderMap::new(), String::new());
    for _ in 0..100 {
        last = get_via(west_proxy.outbound, GHOST).await;
        if last
            .1
            .get("l5d-proxy-error")
            .is_some_and(|e| e.to_str().unwrap_or("").contains("refused"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, headers, body) = last;
    assert_eq!(status, 503, "{headers:?} {body}");
    let error = headers["l5d-proxy-error"].to_str().unwrap();
    assert!(
        error.contains("unknown-target") && error.contains("ghost.production.svc.cluster.local:80"),
        "{error}"
    );

    for stop in tasks.1.drain(..) {
        let _ = stop.send(());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_west_client_balances_requests_over_easts_pods_through_the_gateways() {
    tokio::time::timeout(Duration::from_secs(90), balancing_scenario())
        .await
        .expect("the balancing scenario finished within 90s");
}

/// Two east pods behind one pair of gateways: the west proxy holds one endpoint per
/// east pod (each dialed at the entry, its `strt` open naming the pod) and balances its
/// requests over both, as it does over local pods. Each pod answers after 40 ms, more
/// than the cost the balancer assumes of an endpoint it has not heard from yet, so
/// requests do not stick to the first pod that answers.
async fn balancing_scenario() {
    let (dir, id, mut tasks) = mesh();
    let (web_ip, pod_ips) = (ip("127.46.5.2"), [ip("127.46.5.3"), ip("127.46.5.4")]);
    let east = cluster(&id).await;
    apply(
        &east.store,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: myapp\n  namespace: production\n  labels: {mirror.linkerd.io/exported: \"true\"}\nspec:\n  selector: {app: myapp}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    )
    .await;
    let latency = Duration::from_millis(40);
    let mut east_proxies = Vec::new();
    for (n, pod_ip) in pod_ips.iter().enumerate() {
        let name = format!("myapp-{}", n + 1);
        east_proxies.push(myapp_pod(&east, &id, dir.path(), &name, *pod_ip, latency, &mut tasks).await);
    }
    let Linked {
        west,
        east_gateway,
        entry,
        ..
    } = west_linked_to(&east, &id, &mut tasks).await;
    meshed_pod(&west.store, "web-1", "web", "web", web_ip).await;
    let west_proxy = proxy(&west, &id, dir.path(), "web-1", "web", web_ip, &mut tasks).await;
    let pod_of = |body: &str| {
        ["myapp-1", "myapp-2"]
            .into_iter()
            .find(|p| body.contains(&format!("\"pod\":\"{p}\"")))
            .unwrap_or_else(|| panic!("an east pod answers: {body}"))
            .to_string()
    };

    // The mirror lists both pods (it may list one first, while east's pods come up).
    let want = format!("{},{}", pod_ips[0], pod_ips[1]);
    let mut listed = None;
    for _ in 0..200 {
        let mirror: Option<k8s_openapi::api::core::v1::Service> =
            west.store.get("production", "myapp-east").await.unwrap();
        listed = mirror
            .and_then(|m| m.metadata.annotations)
            .and_then(|a| a.get("mirror.strait.io/remote-endpoints").cloned());
        if listed.as_deref() == Some(want.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed.as_deref(), Some(want.as_str()));

    // East's gateway would deliver a stream that names no endpoint round robin, starting
    // with myapp-1. So that only naming can put each stream on its pod: when the first
    // request lands on myapp-1, one stream naming no endpoint takes the round robin's
    // next turn (myapp-2) before the west proxy opens its second connection.
    let (status, headers, body) = get_via(west_proxy.outbound, MIRROR).await;
    assert_eq!(status, 200, "{headers:?} {body}");
    let first = pod_of(&body);
    if first == "myapp-1" {
        let mut open = Vec::new();
        strait_gateway::proto::header::encode_request(
            &strait_gateway::proto::header::Request::Open(strait_gateway::Target {
                authority: strait_gateway::Authority::new("myapp.production.svc.cluster.local").unwrap(),
                port: 80,
                protocol: strait_gateway::Protocol::Opaque,
                identity: Some(MYAPP_ID.parse().unwrap()),
                endpoint: None,
            }),
            &mut open,
        );
        let mut s = TcpStream::connect(entry).await.unwrap();
        s.write_all(&open).await.unwrap();
        let mut reply = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut reply))
            .await
            .expect("the entry's reply within 10s")
            .unwrap();
        assert_eq!(&reply[..4], b"strt");
    }

    // Rounds of 4 concurrent requests, each on its own client connection; the west
    // proxy keeps one connection per east pod and picks per request.
    let mut served: HashMap<String, usize> = HashMap::from([(first, 1)]);
    for _ in 0..6 {
        let round = (0..4).map(|_| get_via(west_proxy.outbound, MIRROR));
        for (status, headers, body) in futures::future::join_all(round).await {
            assert_eq!(status, 200, "{headers:?} {body}");
            *served.entry(pod_of(&body)).or_default() += 1;
        }
    }
    assert_eq!(served.values().sum::<usize>(), 25);
    assert!(
        served.len() == 2 && served.values().all(|n| *n >= 2),
        "both east pods take requests: {served:?}"
    );

    // The west proxy counted each pod as its own endpoint, and each east proxy served
    // (authenticating the west client) exactly the requests sent to its pod: east's
    // gateway delivered each stream to the pod its `strt` open named.
    let (_, west_metrics) = http_get(west_proxy.admin, "/metrics").await;
    for (pod_ip, east_proxy) in pod_ips.iter().zip(&east_proxies) {
        let target = SocketAddr::new(*pod_ip, 80).to_string();
        let outbound = [
            ("direction", "outbound"),
            ("server_id", MYAPP_ID),
            ("target_addr", target.as_str()),
        ];
        let sent = metric(&west_metrics, "request_total", &outbound);
        assert!(sent.is_some_and(|n| n >= 2.0), "{target}: {west_metrics}");
        let (_, east_metrics) = http_get(east_proxy.admin, "/metrics").await;
        let inbound = [("direction", "inbound"), ("tls", "true"), ("client_id", WEB_ID)];
        let served = metric(&east_metrics, "request_total", &inbound);
        assert_eq!(served, sent, "{target}: {east_metrics}");
    }
    let gateway_metrics = east_gateway.render();
    let named = |result: &str| {
        metric(
            &gateway_metrics,
            "gateway_inbound_named_endpoint_streams_total",
            &[("result", result)],
        )
    };
    assert!(named("delivered").is_some_and(|n| n >= 2.0), "{gateway_metrics}");
    assert_eq!(named("elsewhere"), Some(0.0), "{gateway_metrics}");

    for stop in tasks.1.drain(..) {
        let _ = stop.send(());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_control_plane_serves_strait_and_stock_proxies_each_the_gateway_path_it_speaks() {
    tokio::time::timeout(Duration::from_secs(90), stock_scenario())
        .await
        .expect("the stock-proxy scenario finished within 90s");
}

/// The first update of `Destination/Get` for `path` with `token` that has endpoints
/// (retried, bounded: the mirror appears asynchronously).
async fn first_endpoints(
    destination: SocketAddr,
    path: &str,
    token: &str,
) -> Vec<linkerd2_proxy_api::destination::WeightedAddr> {
    use linkerd2_proxy_api::destination::{self as pb, update::Update as U};
    let mut client = pb::destination_client::DestinationClient::connect(format!("http://{destination}"))
        .await
        .unwrap();
    for _ in 0..200 {
        let req = pb::GetDestination {
            scheme: "k8s".into(),
            path: path.into(),
            context_token: token.into(),
        };
        if let Ok(rsp) = client.get(req).await {
            let mut stream = rsp.into_inner();
            let first = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
            if let Ok(Ok(Some(pb::Update {
                update: Some(U::Add(set)),
            }))) = first
                && !set.addrs.is_empty()
            {
                return set.addrs;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no endpoints for {path} ({token}) within 10s");
}

async fn stock_scenario() {
    use linkerd2_proxy_api::destination::{protocol_hint, tls_identity};
    let (dir, id, mut tasks) = mesh();
    let myapp_ip = ip("127.46.3.4");
    let (east, east_proxy) = east_with_myapp(&id, dir.path(), myapp_ip, &mut tasks).await;

    // East's gateway also takes Linkerd's entry on 4143/tcp, beside its QUIC socket.
    let gw_id: IdentityName = default_gateway_identity(&TrustDomain::default()).unwrap();
    let resolver = DestinationResolver::new(&east.bound.destination.to_string(), Some(4143)).unwrap();
    let mut cfg = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), vec![gw_id.clone()]);
    cfg.linkerd_entry = Some(strait_gateway::LinkerdEntry::BesideQuic);
    let (east_quic, _, tcp_entry, _) = gateway(cfg, gateway_creds(&id), Arc::new(resolver), &mut tasks).await;
    let tcp_entry = tcp_entry.expect("the TCP entry is bound");
    assert_eq!(tcp_entry, east_quic);

    // West mirrors east; its Link names east's gateway port, its mirror a proxy entry.
    let west = cluster(&id).await;
    let strait_entry: SocketAddr = "127.0.0.1:4180".parse().unwrap();
    let opts = strait_mirror::MirrorOptions {
        gateway_entries: [("east".to_string(), strait_entry)].into(),
        ..Default::default()
    };
    mirror_east(east_quic, &gw_id, opts, &east, &west, &mut tasks);

    // A Strait proxy (marked context token) is handed east's pod behind the proxy
    // entry, with east's workload identity ...
    let strait_token = strait_proxy::discovery::context_token("production", "web");
    let eps = first_endpoints(west.bound.destination, MIRROR, &strait_token).await;
    assert_eq!(eps.len(), 1);
    let e = &eps[0];
    let addr = e.addr.unwrap();
    let pod = SocketAddr::new(IpAddr::try_from(addr.ip.unwrap()).unwrap(), addr.port as u16);
    assert_eq!(pod, SocketAddr::new(myapp_ip, 80));
    assert_eq!(e.metric_labels["strait_gateway_entry"], "strt-v1");
    assert_eq!(e.metric_labels["strait_gateway_via"], strait_entry.to_string());
    let Some(tls_identity::Strategy::DnsLikeIdentity(name)) = e.tls_identity.clone().unwrap().strategy else {
        panic!("a DNS-like identity expected")
    };
    assert_eq!(name.name, MYAPP_ID);

    // ... a stock proxy (Linkerd's token, no marker) never is: it gets Linkerd's
    // remote-gateway endpoint, opaque to the gateway port.
    let stock_token = r#"{"ns":"production", "nodeName":"node-1", "pod":"web-2"}"#;
    let eps = first_endpoints(west.bound.destination, MIRROR, stock_token).await;
    assert_eq!(eps.len(), 1);
    let e = &eps[0];
    assert!(!e.metric_labels.contains_key("strait_gateway_entry"), "{e:?}");
    let tcp = e.addr.unwrap();
    let gateway_addr = SocketAddr::new(
        IpAddr::try_from(tcp.ip.unwrap()).unwrap(),
        u16::try_from(tcp.port).unwrap(),
    );
    assert_eq!(gateway_addr, tcp_entry);
    let Some(tls_identity::Strategy::DnsLikeIdentity(name)) = e.tls_identity.clone().unwrap().strategy else {
        panic!("a DNS-like identity expected")
    };
    assert_eq!(name.name, gw_id.as_str());
    let authority = e.authority_override.clone().unwrap().authority_override;
    assert_eq!(authority, "myapp.production.svc.cluster.local:80");
    let hint = e.protocol_hint.unwrap();
    assert!(
        matches!(hint.protocol, Some(protocol_hint::Protocol::Opaque(_))),
        "{hint:?}"
    );
    assert_eq!(hint.opaque_transport.unwrap().inbound_port, tcp.port);

    // Following that endpoint as linkerd2-proxy does: mTLS to the gateway identity with
    // the client's own certificate, ALPN transport.l5d.io/v1, the transport header naming
    // the service (name and port from the authority override), then the request.
    let web_id: IdentityName = WEB_ID.parse().unwrap();
    let (key, csr) = generate_key_and_csr(&web_id).unwrap();
    let issued = id
        .issuer
        .issue(csr.as_ref(), &web_id, DEFAULT_LEAF_LIFETIME, SystemTime::now())
        .unwrap();
    let web = CertStore::with_cert(issued.chain, pki_types::PrivateKeyDer::Pkcs8(key)).unwrap();
    let mut tls = Arc::unwrap_or_clone(strait_identity::client_config(&web, &id.anchors));
    tls.alpn_protocols = vec![strait_proxy::transport_header::ALPN.to_vec()];
    let server: IdentityName = name.name.parse().unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap();
    let header = strait_proxy::transport_header::TransportHeader {
        port: port.parse().unwrap(),
        name: Some(host.to_string()),
        protocol: None,
    };
    let tcp = TcpStream::connect(gateway_addr).await.unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(server.server_name(), tcp)
        .await
        .unwrap();
    s.write_all(&header.encode()).await.unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nhost: myapp\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("an answer within 10s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"cluster\":\"east\""),
        "{answer}"
    );

    // Linkerd's gateway semantics: east's proxy saw the gateway's identity, not web's
    // (only the Strait path carries the client's own identity end to end).
    let (_, east_metrics) = http_get(east_proxy.admin, "/metrics").await;
    let by_gateway = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", gw_id.as_str()),
    ];
    let seen = metric(&east_metrics, "tcp_open_total", &by_gateway)
        .or_else(|| metric(&east_metrics, "request_total", &by_gateway));
    assert!(seen.is_some_and(|n| n >= 1.0), "{east_metrics}");

    for stop in tasks.1.drain(..) {
        let _ = stop.send(());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_strait_proxy_given_linkerds_gateway_endpoint_names_the_service_to_the_tcp_entry() {
    tokio::time::timeout(Duration::from_secs(90), linkerd_endpoint_scenario())
        .await
        .expect("the scenario finished within 90s");
}

/// A mirror without a Strait proxy entry (as a Linkerd-style link makes): every client,
/// Strait proxies included, is handed Linkerd's gateway endpoint. A Strait proxy follows it
/// as linkerd2-proxy does: mTLS to the gateway with the transport header naming the
/// remote service (from the endpoint's `authority_override`), through the 4143/tcp entry.
async fn linkerd_endpoint_scenario() {
    let (dir, id, mut tasks) = mesh();
    let (myapp_ip, web_ip) = (ip("127.46.4.4"), ip("127.46.4.5"));
    let (east, _east_proxy) = east_with_myapp(&id, dir.path(), myapp_ip, &mut tasks).await;
    let gw_id: IdentityName = default_gateway_identity(&TrustDomain::default()).unwrap();
    let resolver = DestinationResolver::new(&east.bound.destination.to_string(), Some(4143)).unwrap();
    let mut cfg = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), vec![gw_id.clone()]);
    cfg.linkerd_entry = Some(strait_gateway::LinkerdEntry::BesideQuic);
    let (east_gw, _, tcp_entry, _) = gateway(cfg, gateway_creds(&id), Arc::new(resolver), &mut tasks).await;
    assert_eq!(tcp_entry, Some(east_gw));

    let west = cluster(&id).await;
    mirror_east(east_gw, &gw_id, Default::default(), &east, &west, &mut tasks);
    // Even a Strait proxy's (marked) request gets Linkerd's gateway endpoint.
    let token = strait_proxy::discovery::context_token("production", "web");
    let eps = first_endpoints(west.bound.destination, MIRROR, &token).await;
    assert!(
        !eps[0].metric_labels.contains_key("strait_gateway_entry"),
        "{eps:?}"
    );

    meshed_pod(&west.store, "web-1", "web", "web", web_ip).await;
    let web = proxy(&west, &id, dir.path(), "web-1", "web", web_ip, &mut tasks).await;
    let (status, _, body) = get_via(web.outbound, MIRROR).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"cluster\":\"east\""), "{body}");

    for stop in tasks.1.drain(..) {
        let _ = stop.send(());
    }
}
