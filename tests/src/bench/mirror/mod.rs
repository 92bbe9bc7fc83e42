//! The service-mirror benchmark (the multicluster issue's targets): how fast exporting and
//! unexporting a Service in one cluster shows in a linked cluster, against the same change
//! made to a local Service, measured in the same run.
//!
//! Everything is a real process on loopback, started as `strait up` starts a linked pair
//! ([`Clusters`]): east and west each run `strait controller` on their own state
//! directory (one mesh trust anchor, as linked clusters share) and `strait gateway`
//! (east's with Linkerd's TCP entry and serving its catalog, west's linked to east over
//! QUIC with a proxy entry, through which west's mirror reads east);
//! `strait multicluster link` run against east is piped into `strait apply` in west, and
//! `strait mirror` runs for west. East has a meshed pod (`strait proxy` in front of a
//! backend in this process); west has a meshed client pod whose `strait proxy` is where
//! "routable" is checked. Only public commands and APIs drive it, so it measures whatever
//! path the mirror uses to read east.
//!
//! - **export** ([`export_round`]): a west `Destination/Get` stream for
//!   `<svc>-east.production.svc.cluster.local:80` is open (answering "no such service");
//!   a Service `<svc>` selecting the meshed pod is applied in east already labelled
//!   `mirror.linkerd.io/exported=true`; the delay until the stream hands out east's
//!   gateway is *resolvable*, and until a request through west's proxy to that name
//!   answers 200 (first tried once resolvable) is *routable*. Baseline: a new Service in
//!   west (selecting west's pod) reaching its own west stream.
//! - **unexport**: the label is removed in east (the Service stays); the delay until the
//!   mirror's stream says no endpoints. Baseline: the local Service deleted in west.
//! - **bulk**: [`Settings::bulk`] labelled Services in one apply to east; the delay until
//!   every one of as many open west streams hands out the gateway (and the same for
//!   their unexport in one apply). Baseline: as many Services in one apply to west.

pub mod report;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use hyper::Method;
use serde_json::{Value, json};
use strait_controller::api::client::ApiClient;
use strait_controller::run::LocalIdentity;
use strait_identity::{IdentityName, TrustDomain};

pub use super::proxy::Error;
use super::proxy::ProcessSpec;
use super::proxy::process::{Running, http_ok, listening};
use super::stats::Summary;
use super::watches::{Seen, Watches};

/// The namespace of every Service of the benchmark.
pub const NAMESPACE: &str = "production";

/// The issue's targets.
pub mod targets {
    use std::time::Duration;
    /// A newly exported Service is resolvable and routable in the linked cluster (p99).
    pub const EXPORT_P99: Duration = Duration::from_secs(1);
    /// Every one of [`super::Settings::bulk`] Services exported at once is mirrored.
    pub const BULK: Duration = Duration::from_secs(5);
    /// Unexporting removes the mirror (p99).
    pub const UNEXPORT_P99: Duration = Duration::from_secs(1);
}

/// How much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Export and unexport samples (and as many of each baseline).
    pub samples: usize,
    /// Services exported in one apply.
    pub bulk: usize,
    /// The bound on any one wait (a missed change is a failure, not a hang).
    pub bound: Duration,
}

impl Settings {
    /// The issue's benchmark.
    pub fn issue() -> Self {
        Self {
            samples: 100,
            bulk: 1000,
            bound: Duration::from_secs(60),
        }
    }
}

/// One sample of the export and unexport rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Label → west's stream hands out east's gateway.
    pub resolvable: Duration,
    /// Label → a request through west's proxy answers 200.
    pub routable: Duration,
    /// The same Service applied in west → its west stream has the pod.
    pub local: Duration,
    /// Label removed → the mirror's stream says no endpoints.
    pub unexport: Duration,
    /// The local Service deleted → its stream says no endpoints.
    pub local_delete: Duration,
}

/// One bulk change: per-Service delays and the API's acknowledgement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bulk {
    /// Change applied → each stream saw it.
    pub delays: Vec<Duration>,
    /// How long the one apply took to be acknowledged.
    pub apply: Duration,
}

impl Bulk {
    /// When the last stream saw it.
    pub fn all(&self) -> Duration {
        self.delays.iter().max().copied().unwrap_or_default()
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Default)]
pub struct Results {
    /// The export/unexport rounds, in order.
    pub samples: Vec<Sample>,
    /// `bulk` Services exported in one apply to east.
    pub bulk_export: Bulk,
    /// The same Services unexported in one apply.
    pub bulk_unexport: Bulk,
    /// Baseline: as many Services applied to west at once.
    pub bulk_local: Bulk,
    /// Baseline: those deleted in west (the API deletes one object per request: the
    /// requests back to back, timed from the first).
    pub bulk_local_delete: Bulk,
    /// The mirror's CPU time over the whole run and its resident memory at the end.
    pub mirror_cpu: Duration,
    /// KiB.
    pub mirror_rss_kib: u64,
    /// Requests through west's proxy that did not answer 200 once the name resolved.
    pub route_retries: u64,
}

impl Results {
    /// A summary of one field of the samples.
    pub fn summary(&self, f: impl Fn(&Sample) -> Duration) -> Summary {
        Summary::of(&self.samples.iter().map(f).collect::<Vec<_>>())
    }
}

/// What a run needs.
pub struct Context<'a> {
    /// The `strait` binary.
    pub strait: &'a Path,
    /// The sidecar binary (`strait-proxy`), if built; `strait proxy` otherwise.
    pub sidecar: Option<PathBuf>,
    /// Scratch directory (state directories, logs).
    pub dir: PathBuf,
    /// The runtime the clients and the backend run on.
    pub rt: &'a tokio::runtime::Runtime,
}

/// The addresses of one cluster, on loopback: 127.48.`n`.x.
#[derive(Clone, Copy, Debug)]
struct Addresses {
    n: u8,
}

impl Addresses {
    fn ip(self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 48, self.n, host))
    }
    /// The controller's services and API.
    fn controller(self) -> IpAddr {
        self.ip(2)
    }
    fn destination(self) -> SocketAddr {
        SocketAddr::new(self.controller(), 8086)
    }
    /// The gateway (QUIC and Linkerd's entry on 4143, probe on 4191, proxy entry 4150).
    fn gateway(self) -> IpAddr {
        self.ip(1)
    }
    /// The meshed pod.
    fn pod(self) -> IpAddr {
        self.ip(10)
    }
}

const EAST: Addresses = Addresses { n: 2 };
const WEST: Addresses = Addresses { n: 1 };
const GATEWAY_IDENTITY: &str =
    "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";
/// The port of east's Services and of their pods' backend.
const APP_PORT: u16 = 8080;

fn pem_chain(chain: &[strait_identity::pki_types::CertificateDer<'_>]) -> String {
    chain
        .iter()
        .map(|c| strait_identity::encode_pem("CERTIFICATE", c.as_ref()))
        .collect()
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(Error::io(format!("cannot write {}", path.display())))
}

/// The two linked clusters, every process running; stopped on drop.
pub struct Clusters {
    east_api: ApiClient,
    west_api: ApiClient,
    /// The mirror (for its CPU and memory).
    mirror: Running,
    // Everything else, stopped in reverse order of starting.
    others: Vec<Running>,
    west_proxy_outbound: SocketAddr,
    _backend: tokio::task::JoinHandle<()>,
}

impl Clusters {
    /// Starts both clusters and links west to east; returns once a Service exported in
    /// east is routable from west's proxy.
    pub fn start(ctx: &Context<'_>, bound: Duration) -> Result<Self, Error> {
        let err = |e: &dyn std::fmt::Display| Error::Pki(e.to_string());
        let td = TrustDomain::default();
        let now = SystemTime::now();
        let (anchors, issuer) = strait_identity::generate(&td, now).map_err(|e| err(&e))?;
        let gw_id: IdentityName = GATEWAY_IDENTITY.parse().map_err(|e| err(&e))?;
        let mut others = Vec::new();
        let mut apis = Vec::new();
        let logs = ctx.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(Error::io("cannot create the log directory"))?;
        for (name, a) in [("east", EAST), ("west", WEST)] {
            // The controller loads the issuer a state directory holds (`strait up` writes
            // the same files), so both clusters share one trust anchor.
            let state = ctx.dir.join(name);
            let id = state.join("identity");
            std::fs::create_dir_all(&id).map_err(Error::io(format!("cannot create {}", id.display())))?;
            write(&id.join("ca.crt"), &anchors.to_pem())?;
            write(&id.join("issuer.crt"), &issuer.cert_pem())?;
            strait_controller::run::write_private(&id.join("issuer.key"), issuer.key_pem().as_bytes())
                .map_err(Error::io("cannot write the issuer key"))?;
            let (chain, key) =
                strait_controller::api::issue(&issuer, &gw_id, Duration::from_secs(24 * 3600), now)
                    .map_err(|e| err(&e))?;
            let gw = ctx.dir.join(format!("{name}-gateway"));
            std::fs::create_dir_all(&gw).map_err(Error::io("cannot create the gateway directory"))?;
            write(&gw.join("tls.crt"), &pem_chain(&chain))?;
            write(
                &gw.join("tls.key"),
                &strait_identity::encode_pem("PRIVATE KEY", key.secret_der()),
            )?;
            let c = a.controller();
            let mut controller = Running::start(
                &ProcessSpec {
                    name: format!("{name}-controller"),
                    program: ctx.strait.to_path_buf(),
                    args: strings(&[
                        "--state-dir",
                        &state.display().to_string(),
                        "--log",
                        "warn",
                        "controller",
                        "--destination-addr",
                        &a.destination().to_string(),
                        "--identity-addr",
                        &format!("{c}:8080"),
                        "--policy-addr",
                        &format!("{c}:8090"),
                        "--admin-addr",
                        &format!("{c}:9990"),
                        "--api-addr",
                        &format!("{c}:8089"),
                        "--cluster-networks",
                        "127.0.0.0/8",
                    ]),
                    env: Vec::new(),
                },
                &logs,
            )?;
            let endpoint = strait_controller::api::files::endpoint(&state);
            controller.wait_until("its API and Destination service", bound, || {
                endpoint.exists() && listening(a.destination())
            })?;
            let api = ApiClient::from_state_dir(&state).map_err(Error::Mesh)?;
            others.push(controller);
            apis.push(api);
        }
        let (east_api, west_api) = (apis.remove(0), apis.remove(0));
        let east_state = ctx.dir.join("east");
        let west_state = ctx.dir.join("west");

        // The meshed pods: east's selected by every benchmark Service, west's the client.
        ctx.rt.block_on(apply(
            &east_api,
            vec![namespace(), pod("myapp-1", "myapp", EAST.pod())],
        ))?;
        ctx.rt.block_on(apply(
            &west_api,
            vec![namespace(), pod("web-1", "web", WEST.pod())],
        ))?;

        // Gateways: east's ingress resolves through east's Destination and delivers to
        // proxies on 4143 (explicit capture); west's links to east and opens a proxy entry.
        let proxy_entry = SocketAddr::new(WEST.gateway(), 4150);
        for (name, a, state) in [("east", EAST, &east_state), ("west", WEST, &west_state)] {
            let gw = ctx.dir.join(format!("{name}-gateway"));
            let mut args = strings(&[
                "--state-dir",
                &state.display().to_string(),
                "--log",
                "warn",
                "gateway",
                "--quic-addr",
                &format!("{}:4143", a.gateway()),
                "--admin-addr",
                &format!("{}:4191", a.gateway()),
                "--identity-trust-anchors-file",
                &state.join("identity/ca.crt").display().to_string(),
                "--identity-cert-file",
                &gw.join("tls.crt").display().to_string(),
                "--identity-key-file",
                &gw.join("tls.key").display().to_string(),
                "--destination-addr",
                &a.destination().to_string(),
                "--endpoint-inbound-port",
                "4143",
                "--linkerd-entry",
                // West's mirror reads east's Services through the link (as `strait up`).
                "--serve-exports",
            ]);
            if name == "west" {
                args.extend(strings(&[
                    "--link",
                    &format!("east={}:4143@{GATEWAY_IDENTITY}", EAST.gateway()),
                    "--proxy-entry",
                    &format!("east={proxy_entry}"),
                ]));
            }
            let mut g = Running::start(
                &ProcessSpec {
                    name: format!("{name}-gateway"),
                    program: ctx.strait.to_path_buf(),
                    args,
                    env: Vec::new(),
                },
                &logs,
            )?;
            let probe = SocketAddr::new(a.gateway(), 4191);
            g.wait_until("its probe", bound, || http_ok(probe, "/ready"))?;
            others.push(g);
        }

        // West's mirror, pointing Strait proxies at the proxy entry.
        let mirror_admin = SocketAddr::new(WEST.ip(3), 9996);
        let mut mirror = Running::start(
            &ProcessSpec {
                name: "west-mirror".into(),
                program: ctx.strait.to_path_buf(),
                args: strings(&[
                    "--state-dir",
                    &west_state.display().to_string(),
                    "--log",
                    "warn",
                    "mirror",
                    "--admin-addr",
                    &mirror_admin.to_string(),
                    "--service-cidr",
                    "10.248.0.0/16",
                    "--gateway-entry",
                    &format!("east={proxy_entry}"),
                ]),
                env: Vec::new(),
            },
            &logs,
        )?;
        mirror.wait_until("its admin server", bound, || http_ok(mirror_admin, "/ready"))?;

        // The link, as an operator makes it.
        link(ctx.strait, &east_state, &west_state)?;

        // The proxies of both pods.
        for (name, sa, a, state) in [
            ("myapp-1", "myapp", EAST, &east_state),
            ("web-1", "web", WEST, &west_state),
        ] {
            let id = LocalIdentity::load_or_create(&state.join("identity"), &TrustDomain::default(), now)
                .map_err(|e| Error::Mesh(e.to_string()))?;
            let token = ctx.dir.join(format!("{name}.token"));
            write(&token, &id.tokens.mint(NAMESPACE, sa, name))?;
            let ip = a.pod();
            let c = a.controller();
            let env = [
                ("STRAIT_PROXY_CAPTURE", "explicit".to_string()),
                ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", a.destination().to_string()),
                ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", format!("{c}:8080")),
                ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", anchors.to_pem()),
                (
                    "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
                    format!("{sa}.{NAMESPACE}.serviceaccount.identity.linkerd.cluster.local"),
                ),
                ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", token.display().to_string()),
                ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", format!("{ip}:4143")),
                ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", format!("{ip}:4140")),
                ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", format!("{ip}:4191")),
                ("LINKERD2_PROXY_LOG", "warn".to_string()),
            ];
            let (program, args) = match &ctx.sidecar {
                Some(s) => (s.clone(), Vec::new()),
                None => (ctx.strait.to_path_buf(), vec!["proxy".to_string()]),
            };
            let mut p = Running::start(
                &ProcessSpec {
                    name: format!("{name}-proxy"),
                    program,
                    args,
                    env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                },
                &logs,
            )?;
            let admin = SocketAddr::new(ip, 4191);
            p.wait_until("ready", bound, || http_ok(admin, "/ready"))?;
            others.push(p);
        }
        let listener = ctx
            .rt
            .block_on(tokio::net::TcpListener::bind((EAST.pod(), APP_PORT)))
            .map_err(Error::io(format!(
                "cannot bind the backend on {}:{APP_PORT}",
                EAST.pod()
            )))?;
        let backend = ctx.rt.spawn(serve(listener));
        let this = Self {
            east_api,
            west_api,
            mirror,
            others,
            west_proxy_outbound: SocketAddr::new(WEST.pod(), 4140),
            _backend: backend,
        };
        // Warm: the link, the gateway probe and both proxies' certificates are up when
        // the first exported Service is routable.
        ctx.rt.block_on(async {
            apply(&this.east_api, vec![service("warm", true)]).await?;
            let deadline = Instant::now() + bound;
            while Instant::now() < deadline {
                if get(this.west_proxy_outbound, &mirror_authority("warm")).await == 200 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(Error::Process(format!(
                "warm-up: warm-east.{NAMESPACE} was not routable from west within {bound:?}; see the logs in {}",
                logs.display()
            )))
        })?;
        Ok(this)
    }

    /// Fails if a process exited.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        self.mirror.check_alive()?;
        self.others.iter_mut().try_for_each(Running::check_alive)
    }

    /// The mirror's CPU time so far and resident memory now.
    pub fn mirror_usage(&self) -> (Duration, u64) {
        let pid = self.mirror.pid();
        (
            super::proxy::process::cpu_time(pid).unwrap_or_default(),
            super::proxy::process::rss_kib(pid).unwrap_or_default(),
        )
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        while let Some(p) = self.others.pop() {
            drop(p);
        }
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// `strait --state-dir EAST multicluster link --cluster-name east … | strait --state-dir WEST apply -f -`.
fn link(strait: &Path, east: &Path, west: &Path) -> Result<(), Error> {
    let out = Command::new(strait)
        .arg("--state-dir")
        .arg(east)
        .args(["multicluster", "link", "--cluster-name", "east"])
        .args(["--gateway-addresses", &EAST.gateway().to_string()])
        .output()
        .map_err(Error::io("cannot run `strait multicluster link`"))?;
    if !out.status.success() {
        return Err(Error::Process(format!(
            "`strait multicluster link` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut apply = Command::new(strait)
        .arg("--state-dir")
        .arg(west)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("cannot run `strait apply`"))?;
    {
        use std::io::Write;
        let mut stdin = apply.stdin.take().expect("stdin is piped");
        stdin
            .write_all(&out.stdout)
            .map_err(Error::io("cannot hand the link to `strait apply`"))?;
    }
    let done = apply
        .wait_with_output()
        .map_err(Error::io("cannot wait for `strait apply`"))?;
    if !done.status.success() {
        return Err(Error::Process(format!(
            "`strait apply` of the link failed: {}",
            String::from_utf8_lossy(&done.stderr).trim()
        )));
    }
    Ok(())
}

fn namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
}

fn pod(name: &str, app: &str, ip: IpAddr) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE,
            "labels": {"app": app, "linkerd.io/control-plane-ns": "linkerd"}},
        "spec": {"serviceAccountName": app, "containers": [{"name": "app", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip.to_string()}})
}

/// An east Service selecting east's meshed pod, exported or not.
fn service(name: &str, exported: bool) -> Value {
    let labels = if exported {
        json!({"mirror.linkerd.io/exported": "true"})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"selector": {"app": "myapp"}, "ports": [{"name": "http", "port": 80, "targetPort": APP_PORT}]}})
}

/// A west Service selecting west's pod (the baseline's change).
fn local_service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": APP_PORT}]}})
}

fn mirror_authority(name: &str) -> String {
    format!("{name}-east.{NAMESPACE}.svc.cluster.local:80")
}

fn local_authority(name: &str) -> String {
    format!("{name}.{NAMESPACE}.svc.cluster.local:80")
}

/// Applies objects through a cluster's public API, as `strait apply` does.
async fn apply(api: &ApiClient, items: Vec<Value>) -> Result<(), Error> {
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items}))
        .expect("JSON values serialize");
    api.request(Method::POST, "/v1/apply", body)
        .await
        .map(drop)
        .map_err(|e| Error::Mesh(format!("apply through {}: {e}", api.address())))
}

/// Deletes a Service through a cluster's public API, as `strait delete` does.
async fn delete_service(api: &ApiClient, name: &str) -> Result<(), Error> {
    api.request(
        Method::DELETE,
        &format!("/v1/objects/services/{NAMESPACE}/{name}"),
        Vec::new(),
    )
    .await
    .map(drop)
    .map_err(|e| {
        Error::Mesh(format!(
            "delete service {NAMESPACE}/{name} through {}: {e}",
            api.address()
        ))
    })
}

/// A GET of `/` naming `authority` through a proxy's outbound port (a fresh HTTP/1.1
/// connection); the status, or 0 when there was none.
async fn get(outbound: SocketAddr, authority: &str) -> u16 {
    use http_body_util::{BodyExt, Empty};
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(outbound).await.ok()?;
        let (mut c, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/")
            .header("host", authority)
            .body(Empty::<bytes::Bytes>::new())
            .ok()?;
        let rsp = c.send_request(req).await.ok()?;
        let status = rsp.status().as_u16();
        let _ = rsp.into_body().collect().await;
        Some(status)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The backend behind east's proxy: 200 and a short body to every request.
async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"east\n"),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// What a stream should come to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// An `Add` with this address among others.
    Has(IpAddr),
    /// No endpoints left.
    Empty,
}

/// Waits until each stream `i` of `streams` shows `expect`, starting from its current
/// view in `views`; the arrival of each, or an error naming the ones that never came.
async fn wait_all(
    watches: &mut Watches,
    views: &mut [BTreeSet<IpAddr>],
    streams: &[usize],
    expect: Expect,
    bound: Duration,
) -> Result<Vec<Instant>, Error> {
    let done = |v: &BTreeSet<IpAddr>| match expect {
        Expect::Has(ip) => v.contains(&ip),
        Expect::Empty => v.is_empty(),
    };
    let mut at: Vec<Option<Instant>> = streams.iter().map(|_| None).collect();
    let mut left = streams.len();
    let deadline = tokio::time::Instant::now() + bound;
    while left > 0 {
        match watches.next(deadline).await {
            None => {
                let missing: Vec<&str> = streams
                    .iter()
                    .zip(&at)
                    .filter(|(_, a)| a.is_none())
                    .map(|(s, _)| watches.path(*s))
                    .take(5)
                    .collect();
                return Err(Error::Accounting(format!(
                    "{left} Destination streams did not show {expect:?} within {bound:?}, e.g. {}",
                    missing.join(", ")
                )));
            }
            Some(Seen::Ended { stream, detail }) => {
                return Err(Error::Accounting(format!(
                    "the Destination stream for {} ended: {detail}",
                    watches.path(stream)
                )));
            }
            Some(Seen::Update {
                stream,
                at: when,
                change,
            }) => {
                change.apply_to(&mut views[stream]);
                if let Some(i) = streams.iter().position(|s| *s == stream)
                    && at[i].is_none()
                    && done(&views[stream])
                {
                    at[i] = Some(when);
                    left -= 1;
                }
            }
        }
    }
    Ok(at.into_iter().map(|a| a.expect("every stream arrived")).collect())
}

/// Opens one stream per authority against `destination` and waits for each one's first
/// answer (a Service that does not exist yet is answered "no endpoints").
async fn open(
    destination: SocketAddr,
    paths: Vec<String>,
    bound: Duration,
) -> Result<(Watches, Vec<BTreeSet<IpAddr>>), Error> {
    let n = paths.len();
    let mut w = Watches::open(destination, paths, 100)
        .await
        .map_err(|e| Error::Mesh(e.to_string()))?;
    let mut views = vec![BTreeSet::new(); n];
    let mut answered = vec![false; n];
    let mut left = n;
    let deadline = tokio::time::Instant::now() + bound;
    while left > 0 {
        match w.next(deadline).await {
            None => {
                return Err(Error::Accounting(format!(
                    "{left} of {n} Destination streams on {destination} did not answer within {bound:?}"
                )));
            }
            Some(Seen::Ended { stream, detail }) => {
                return Err(Error::Accounting(format!(
                    "the Destination stream for {} ended: {detail}",
                    w.path(stream)
                )));
            }
            Some(Seen::Update { stream, change, .. }) => {
                change.apply_to(&mut views[stream]);
                if !std::mem::replace(&mut answered[stream], true) {
                    left -= 1;
                }
            }
        }
    }
    Ok((w, views))
}

/// One export round and its baseline, then the unexport and the local delete.
pub async fn export_round(
    clusters: &Clusters,
    i: usize,
    bound: Duration,
    retries: &mut u64,
) -> Result<Sample, Error> {
    let name = format!("exp-{i}");
    let local = format!("loc-{i}");
    let (mut remote_w, mut remote_v) = open(WEST.destination(), vec![mirror_authority(&name)], bound).await?;
    let (mut local_w, mut local_v) = open(WEST.destination(), vec![local_authority(&local)], bound).await?;
    if !remote_v[0].is_empty() || !local_v[0].is_empty() {
        return Err(Error::Accounting(format!(
            "{name}-east or {local} has endpoints before the benchmark made it"
        )));
    }

    // Export: resolvable, then routable through west's proxy.
    let t0 = Instant::now();
    apply(&clusters.east_api, vec![service(&name, true)]).await?;
    let resolved = wait_all(
        &mut remote_w,
        &mut remote_v,
        &[0],
        Expect::Has(EAST.gateway()),
        bound,
    )
    .await?[0];
    let authority = mirror_authority(&name);
    let deadline = Instant::now() + bound;
    let routed = loop {
        if get(clusters.west_proxy_outbound, &authority).await == 200 {
            break Instant::now();
        }
        *retries += 1;
        if Instant::now() > deadline {
            return Err(Error::Accounting(format!(
                "{authority} resolved in west but no request through west's proxy succeeded within {bound:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    // Baseline: a new local Service reaching west's Destination.
    let t1 = Instant::now();
    apply(&clusters.west_api, vec![local_service(&local)]).await?;
    let local_seen = wait_all(&mut local_w, &mut local_v, &[0], Expect::Has(WEST.pod()), bound).await?[0];

    // Unexport: the label goes, the Service stays.
    let t2 = Instant::now();
    apply(&clusters.east_api, vec![service(&name, false)]).await?;
    let unexported = wait_all(&mut remote_w, &mut remote_v, &[0], Expect::Empty, bound).await?[0];

    // Baseline: the local Service deleted.
    let t3 = Instant::now();
    delete_service(&clusters.west_api, &local).await?;
    let deleted = wait_all(&mut local_w, &mut local_v, &[0], Expect::Empty, bound).await?[0];

    Ok(Sample {
        resolvable: resolved - t0,
        routable: routed - t0,
        local: local_seen - t1,
        unexport: unexported - t2,
        local_delete: deleted - t3,
    })
}

/// The bulk rounds: `n` Services exported in one apply, then unexported in one apply,
/// and the baseline of as many local Services applied (and deleted) in west.
pub async fn bulk(clusters: &Clusters, n: usize, bound: Duration) -> Result<(Bulk, Bulk, Bulk, Bulk), Error> {
    let names: Vec<String> = (0..n).map(|i| format!("bulk-{i}")).collect();
    let all: Vec<usize> = (0..n).collect();
    let since = |t0: Instant, at: Vec<Instant>| at.into_iter().map(|a| a - t0).collect::<Vec<_>>();

    let (mut w, mut v) = open(
        WEST.destination(),
        names.iter().map(|s| mirror_authority(s)).collect(),
        bound,
    )
    .await?;
    let t0 = Instant::now();
    apply(
        &clusters.east_api,
        names.iter().map(|s| service(s, true)).collect(),
    )
    .await?;
    let acked = t0.elapsed();
    let at = wait_all(&mut w, &mut v, &all, Expect::Has(EAST.gateway()), bound).await?;
    let export = Bulk {
        delays: since(t0, at),
        apply: acked,
    };

    let t0 = Instant::now();
    apply(
        &clusters.east_api,
        names.iter().map(|s| service(s, false)).collect(),
    )
    .await?;
    let acked = t0.elapsed();
    let at = wait_all(&mut w, &mut v, &all, Expect::Empty, bound).await?;
    let unexport = Bulk {
        delays: since(t0, at),
        apply: acked,
    };
    drop(w);

    let locals: Vec<String> = (0..n).map(|i| format!("bulk-loc-{i}")).collect();
    let (mut w, mut v) = open(
        WEST.destination(),
        locals.iter().map(|s| local_authority(s)).collect(),
        bound,
    )
    .await?;
    let t0 = Instant::now();
    apply(
        &clusters.west_api,
        locals.iter().map(|s| local_service(s)).collect(),
    )
    .await?;
    let acked = t0.elapsed();
    let at = wait_all(&mut w, &mut v, &all, Expect::Has(WEST.pod()), bound).await?;
    let local = Bulk {
        delays: since(t0, at),
        apply: acked,
    };
    // The API deletes one object per request: the baseline of a bulk removal is those
    // requests back to back, timed from the first.
    let t0 = Instant::now();
    for s in &locals {
        delete_service(&clusters.west_api, s).await?;
    }
    let acked = t0.elapsed();
    let at = wait_all(&mut w, &mut v, &all, Expect::Empty, bound).await?;
    let local_delete = Bulk {
        delays: since(t0, at),
        apply: acked,
    };
    Ok((export, unexport, local, local_delete))
}

/// Runs every measurement; every process is gone when it returns.
pub fn run(ctx: &Context<'_>, settings: &Settings) -> Result<Results, Error> {
    eprintln!(
        "mirror: starting east and west (controllers, gateways, west's mirror, proxies) and linking them"
    );
    let mut clusters = Clusters::start(ctx, settings.bound)?;
    let mut results = Results::default();
    for i in 0..settings.samples {
        if i % 10 == 0 {
            eprintln!("mirror: export/unexport round {}/{}", i + 1, settings.samples);
        }
        let s = ctx.rt.block_on(export_round(
            &clusters,
            i,
            settings.bound,
            &mut results.route_retries,
        ))?;
        results.samples.push(s);
        clusters.check_alive()?;
    }
    if settings.bulk > 0 {
        eprintln!("mirror: {} Services exported in one apply", settings.bulk);
        let (e, u, l, d) = ctx.rt.block_on(bulk(&clusters, settings.bulk, settings.bound))?;
        results.bulk_export = e;
        results.bulk_unexport = u;
        results.bulk_local = l;
        results.bulk_local_delete = d;
        clusters.check_alive()?;
    }
    let (cpu, rss) = clusters.mirror_usage();
    results.mirror_cpu = cpu;
    results.mirror_rss_kib = rss;
    Ok(results)
}
