//! The runtime behind `strait up` and `strait down`.
//!
//! `up` checks everything it can before starting anything (the topology, every manifest,
//! every image mapping), takes a slot ([`net`]), and then per cluster starts the control
//! plane, applies the manifests, starts the mirror (with the cluster DNS) and the gateway,
//! applies the links, and runs the Deployments' pods: each pod is a network namespace (or
//! a 127.x address), the init step, an injected proxy when injection is on, and the
//! image's command. Then it keeps reconciling: pods follow the Deployments and Namespaces
//! in the cluster's store (a newly annotated namespace gets its pods re-created with
//! proxies), Services get cluster IPs, and crashed processes are restarted ([`supervise`]).
//! On Ctrl-C or SIGTERM (`strait down`) it stops everything and removes what it created.

pub mod http;
pub mod net;
pub mod registry;
pub mod supervise;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hyper::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{Value, json};
use strait_api::Object;
use strait_controller::api::client::ApiClient;

use crate::plan::{self, PodPlan};
use crate::topology::{Cluster, Isolation, Topology};
use net::{Block, Names, Slot};
use registry::{ClusterRecord, PodRecord, RunRecord};
use supervise::{ProcSpec, Supervisor};

/// The proxy's user id in `netns` mode (Linkerd's default): iptables lets its own
/// traffic through.
pub const PROXY_UID: u32 = 2102;
/// How long `up` waits for a component to become ready.
const COMPONENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `up` waits for the first pods.
const PODS_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the runtime reconciles pods with the store.
const RECONCILE: Duration = Duration::from_millis(1000);

/// What `strait up` was asked for.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The topology file.
    pub topology: PathBuf,
    /// Overrides the topology's isolation.
    pub isolation: Option<Isolation>,
    /// Where runs are kept ([`registry::home`]).
    pub home: PathBuf,
    /// The `strait` binary that runs every component.
    pub strait: PathBuf,
}

/// Prints a progress line.
fn progress(msg: impl std::fmt::Display) {
    eprintln!("strait up: {msg}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() == 0 }
}

/// Everything checked before anything starts: the topology, its manifests, its pods.
pub struct Prepared {
    /// The topology.
    pub topology: Topology,
    /// The isolation to use on this machine.
    pub isolation: Isolation,
    /// Each cluster's objects, in topology order.
    pub objects: Vec<Vec<Object>>,
}

/// Loads and checks a topology and its manifests.
pub fn prepare(path: &Path, isolation: Option<Isolation>) -> Result<Prepared, String> {
    let topology = Topology::load(path).map_err(|e| e.to_string())?;
    let requested = isolation.unwrap_or(topology.isolation);
    let missing = missing_netns_tool();
    let isolation = match (requested, &missing) {
        // `auto` on a machine without the tools namespaces need: loopback, and say so.
        (Isolation::Auto, Some((tool, package))) if is_root() => {
            progress(format!(
                "`{tool}` is missing, so each pod gets a 127.x address instead of a network namespace (install Debian's {package} for namespaces)"
            ));
            Isolation::Loopback
        }
        (other, _) => other.resolve(is_root()),
    };
    if isolation == Isolation::Netns && !is_root() {
        return Err(format!(
            "{}: isolation netns needs root (network namespaces and iptables); run as root, or pass --isolation loopback",
            path.display()
        ));
    }
    if let (Isolation::Netns, Some((tool, package))) = (isolation, missing) {
        return Err(format!(
            "isolation netns needs `{tool}` (Debian package {package}): install it, or pass --isolation loopback"
        ));
    }
    if topology.sidecar[..] != ["strait", "proxy"] && isolation != Isolation::Netns {
        return Err(format!(
            "{}: spec.sidecar {:?} takes Linkerd's proxy environment, which captures traffic with iptables only: use isolation netns (as root)",
            path.display(),
            topology.sidecar.join(" ")
        ));
    }
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for c in &topology.clusters {
        let paths: Vec<String> = c.manifests.iter().map(|p| p.display().to_string()).collect();
        let opts = strait_api::loader::LoadOptions {
            recursive: true,
            ..Default::default()
        };
        let loaded = strait_api::loader::read_sources(&paths, true, &mut std::io::empty())
            .and_then(|s| strait_api::loader::load(&s, &opts));
        match loaded {
            Ok(l) => {
                let objs: Vec<Object> = l.into_iter().map(|l| l.object).collect();
                let (_, p) = plan::pods(&topology, c, &typed(&objs), &typed(&objs));
                problems.extend(p.into_iter().map(|p| format!("cluster {}: {p}", c.name)));
                objects.push(objs);
            }
            Err(e) => {
                problems.push(format!("cluster {}: {e}", c.name));
                objects.push(Vec::new());
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    Ok(Prepared {
        topology,
        isolation,
        objects,
    })
}

/// The first tool network namespaces need that is not on PATH, with its Debian package.
fn missing_netns_tool() -> Option<(&'static str, &'static str)> {
    [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("setpriv", "util-linux"),
    ]
    .into_iter()
    .find(|(tool, _)| {
        !std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    })
}

/// The objects of one kind among `objects`.
fn typed<K: strait_api::Kind>(objects: &[Object]) -> Vec<K> {
    objects.iter().filter_map(|o| K::from_object(o.clone())).collect()
}

/// One cluster as the runtime drives it.
struct ClusterRt {
    index: u32,
    spec: Cluster,
    block: Block,
    dir: PathBuf,
    state: PathBuf,
    record: ClusterRecord,
    client: Option<ApiClient>,
    pods: BTreeMap<String, RunningPod>,
    next_pod: u32,
    free_pods: Vec<u32>,
    service_ips: BTreeSet<Ipv4Addr>,
    /// Problems already reported, so each is said once.
    reported: BTreeSet<String>,
}

struct RunningPod {
    plan: PodPlan,
    n: u32,
    ip: Ipv4Addr,
    netns: Option<String>,
    ready: bool,
    started: Instant,
}

/// A run in progress.
pub struct Runtime {
    topology: Topology,
    isolation: Isolation,
    strait: PathBuf,
    dir: PathBuf,
    slot: Option<Slot>,
    names: Names,
    clusters: Vec<ClusterRt>,
    sup: Supervisor,
    record: RunRecord,
    anchors_pem: String,
    /// Where tokens live: readable by the proxy's user in `netns` mode.
    secrets: PathBuf,
}

/// Runs `strait up` until `shutdown` resolves; everything started is stopped and removed
/// before it returns.
pub async fn up(opts: UpOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<(), String> {
    let started = Instant::now();
    progress(format!("reading {}", opts.topology.display()));
    let prepared = prepare(&opts.topology, opts.isolation)?;
    let mut rt = Runtime::create(prepared, &opts)?;
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        r = rt.start(started) => match r {
            Ok(()) => {
                tokio::select! {
                    () = rt.reconcile_forever() => Ok(()),
                    () = &mut shutdown => Ok(()),
                }
            }
            Err(e) => Err(e),
        },
        () = &mut shutdown => Err("interrupted while starting".into()),
    };
    progress("stopping");
    rt.stop().await;
    progress("stopped; everything this run created is removed");
    outcome
}

impl Runtime {
    fn create(p: Prepared, opts: &UpOptions) -> Result<Runtime, String> {
        let Prepared {
            topology,
            isolation,
            objects,
        } = p;
        std::fs::create_dir_all(registry::runs_dir(&opts.home))
            .map_err(|e| format!("cannot create {}: {e}", registry::runs_dir(&opts.home).display()))?;
        // The slot decides the run's name; take it with a provisional owner.
        let provisional = registry::runs_dir(&opts.home).join(format!("{}-pending", topology.name));
        let (slot, previous) = Slot::take(&provisional)?;
        let id = format!("{}-{}", topology.name, slot.number);
        let dir = registry::runs_dir(&opts.home).join(&id);
        let names = Names::new(slot.number);
        if let Some(prev) = previous {
            cleanup_leftovers(&prev, &names, isolation);
        }
        if dir.exists() {
            cleanup_leftovers(&dir, &names, isolation);
            std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
        }
        // Record the real owner in the slot.
        let (slot, _) = {
            drop(slot);
            Slot::take(&dir)?
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let secrets = std::env::temp_dir().join(format!("strait-run-{}", slot.number));
        let _ = std::fs::remove_dir_all(&secrets);
        std::fs::create_dir_all(&secrets).map_err(|e| format!("cannot create {}: {e}", secrets.display()))?;
        set_mode(&secrets, 0o755);
        let root = is_root();
        let dns_port = if root { 53 } else { 1053 };
        let mut clusters = Vec::new();
        for (i, c) in topology.clusters.iter().enumerate() {
            let index = i as u32;
            let block = Block::new(isolation, slot.number, index);
            let cdir = registry::cluster_dir(&dir, &c.name);
            let state = cdir.join("state");
            let infra = block.infra();
            let record = ClusterRecord {
                name: c.name.clone(),
                state_dir: state.clone(),
                block: block.cidr(),
                trust_domain: c.trust_domain.clone(),
                cluster_domain: c.cluster_domain.clone(),
                destination: format!("{infra}:8086"),
                identity: format!("{infra}:8080"),
                policy: format!("{infra}:8090"),
                api: format!("{infra}:8085"),
                dns: format!("{infra}:{dns_port}"),
                gateway: format!("{infra}:4143"),
                gateway_admin: format!("{infra}:4191"),
                mirror_admin: format!("{infra}:9996"),
            };
            let mut service_ips = BTreeSet::new();
            for o in &objects[i] {
                if let Object::Service(s) = o
                    && let Some(ip) = s
                        .spec
                        .as_ref()
                        .and_then(|s| s.cluster_ip.as_deref())
                        .and_then(|i| i.parse().ok())
                {
                    service_ips.insert(ip);
                }
            }
            clusters.push(ClusterRt {
                index,
                spec: c.clone(),
                block,
                dir: cdir,
                state,
                record,
                client: None,
                pods: BTreeMap::new(),
                next_pod: 0,
                free_pods: Vec::new(),
                service_ips,
                reported: BTreeSet::new(),
            });
        }
        let record = RunRecord {
            id,
            topology: topology.name.clone(),
            file: std::fs::canonicalize(&opts.topology).unwrap_or_else(|_| opts.topology.clone()),
            isolation: isolation.as_str().into(),
            slot: slot.number,
            pid: std::process::id(),
            status: "starting".into(),
            clusters: clusters.iter().map(|c| c.record.clone()).collect(),
        };
        record.write(&dir)?;
        let mut rt = Runtime {
            topology,
            isolation,
            strait: opts.strait.clone(),
            sup: Supervisor::new(dir.join("pids")),
            dir,
            slot: Some(slot),
            names,
            clusters,
            record,
            anchors_pem: String::new(),
            secrets,
        };
        rt.write_identity()?;
        for (c, objs) in rt.clusters.iter_mut().zip(objects) {
            std::fs::write(
                c.dir.join("manifests.json"),
                serde_json::to_vec(&objs.iter().map(Object::to_value).collect::<Vec<_>>())
                    .expect("serializes"),
            )
            .map_err(|e| format!("cannot write {}: {e}", c.dir.display()))?;
        }
        Ok(rt)
    }

    /// One trust anchor for the whole topology (clusters must share it to talk), and
    /// its issuer in every cluster's state directory, where the controller loads it.
    fn write_identity(&mut self) -> Result<(), String> {
        let td = strait_identity::TrustDomain::new(&self.clusters[0].spec.trust_domain)
            .map_err(|e| e.to_string())?;
        let (anchors, issuer) = strait_identity::generate(&td, SystemTime::now())
            .map_err(|e| format!("cannot generate the trust anchor: {e}"))?;
        self.anchors_pem = anchors.to_pem();
        for c in &self.clusters {
            let id = c.state.join("identity");
            std::fs::create_dir_all(&id).map_err(|e| format!("cannot create {}: {e}", id.display()))?;
            std::fs::write(id.join("ca.crt"), &self.anchors_pem).map_err(|e| e.to_string())?;
            std::fs::write(id.join("issuer.crt"), issuer.cert_pem()).map_err(|e| e.to_string())?;
            strait_controller::run::write_private(&id.join("issuer.key"), issuer.key_pem().as_bytes())
                .map_err(|e| e.to_string())?;
            // The gateway's own certificate, as the linkerd-gateway service account.
            let gw = strait_identity::IdentityName::new(
                "linkerd-gateway",
                strait_controller::api::MULTICLUSTER_NS,
                &c.spec.trust_domain,
            )
            .map_err(|e| e.to_string())?;
            let (chain, key) = strait_controller::api::issue(
                &issuer,
                &gw,
                Duration::from_secs(365 * 24 * 3600),
                SystemTime::now(),
            )?;
            let gdir = c.dir.join("gateway");
            std::fs::create_dir_all(&gdir).map_err(|e| e.to_string())?;
            let pem: String = chain
                .iter()
                .map(|d| strait_identity::encode_pem("CERTIFICATE", d))
                .collect();
            std::fs::write(gdir.join("tls.crt"), pem).map_err(|e| e.to_string())?;
            strait_controller::run::write_private(
                &gdir.join("tls.key"),
                strait_identity::encode_pem("PRIVATE KEY", key.secret_der()).as_bytes(),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn strait_proc(&self, c: &ClusterRt, name: &str, args: Vec<String>) -> ProcSpec {
        ProcSpec {
            name: format!("{}/{name}", c.spec.name),
            program: self.strait.clone(),
            args,
            env: vec![("STRAIT_LOG".into(), "info".into())],
            netns: None,
            uid: None,
            log: c.dir.join("logs").join(format!("{name}.log")),
        }
    }

    /// Cluster `i`'s networks, for the controller and every proxy (`cluster-*` policies).
    /// In loopback mode a proxy's connections leave from 127.0.0.1 (the kernel's source
    /// for loopback destinations), not its pod address: it counts as the cluster's, or
    /// `cluster-*` policies and network-less authorizations refuse every meshed client.
    fn cluster_networks(&self, i: usize) -> String {
        let block = self.clusters[i].block.cidr();
        match self.isolation {
            Isolation::Netns => block,
            _ => format!("{block},127.0.0.1/32"),
        }
    }

    async fn start(&mut self, started: Instant) -> Result<(), String> {
        let n = self.clusters.len();
        progress(format!(
            "run {} in {} isolation: {n} cluster{}, state in {}",
            self.record.id,
            self.isolation.as_str(),
            if n == 1 { "" } else { "s" },
            self.dir.display()
        ));
        if self.isolation == Isolation::Netns {
            for c in &self.clusters {
                net::add_bridge(&self.names, c.index, &c.block)?;
            }
        }
        // Control planes.
        for i in 0..n {
            let c = &self.clusters[i];
            let r = &c.record;
            let networks = self.cluster_networks(i);
            let spec = self.strait_proc(
                c,
                "controller",
                [
                    "--state-dir",
                    &c.state.display().to_string(),
                    "controller",
                    "--destination-addr",
                    &r.destination,
                    "--identity-addr",
                    &r.identity,
                    "--policy-addr",
                    &r.policy,
                    "--admin-addr",
                    &format!("{}:9990", c.block.infra()),
                    "--api-addr",
                    &r.api,
                    "--trust-domain",
                    &c.spec.trust_domain,
                    "--cluster-domain",
                    &c.spec.cluster_domain,
                    "--cluster-networks",
                    &networks,
                ]
                .map(String::from)
                .to_vec(),
            );
            self.sup.start(spec)?;
        }
        for i in 0..n {
            let c = &self.clusters[i];
            let state = c.state.clone();
            let log = c.dir.join("logs/controller.log");
            let client = wait_until(
                &format!("cluster {}: control plane", c.spec.name),
                &log,
                || async {
                    if !strait_controller::api::files::endpoint(&state).exists() {
                        return None;
                    }
                    let client = ApiClient::from_state_dir(&state).ok()?;
                    client
                        .request(Method::GET, "/v1/version", Vec::new())
                        .await
                        .ok()?;
                    Some(client)
                },
            )
            .await?;
            self.clusters[i].client = Some(client);
            progress(format!(
                "cluster {}: control plane ready ({})",
                self.clusters[i].spec.name, self.clusters[i].record.destination
            ));
        }
        // Manifests.
        for i in 0..n {
            let objs: Vec<Value> = serde_json::from_slice(
                &std::fs::read(self.clusters[i].dir.join("manifests.json")).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let mut objs: Vec<Value> = objs;
            for o in &mut objs {
                self.clusters[i].assign_cluster_ip(o);
            }
            let count = objs.len();
            let c = &self.clusters[i];
            apply(c.client.as_ref().expect("started"), objs)
                .await
                .map_err(|e| format!("cluster {}: {e}", c.spec.name))?;
            progress(format!("cluster {}: {count} objects applied", c.spec.name));
        }
        // Mirrors (with the cluster DNS) and gateways.
        for i in 0..n {
            let c = &self.clusters[i];
            let r = &c.record;
            let mut args: Vec<String> = [
                "--state-dir",
                &c.state.display().to_string(),
                "mirror",
                "--admin-addr",
                &r.mirror_admin,
                "--service-cidr",
                &c.block.mirror_cidr(),
                "--dns-addr",
                &r.dns,
                "--cluster-domain",
                &c.spec.cluster_domain,
            ]
            .map(String::from)
            .to_vec();
            // Every link's mirrors send Strait proxies through the gateway's one proxy entry.
            args.extend(["--gateway-entry".into(), proxy_entry(c)]);
            let spec = self.strait_proc(c, "mirror", std::mem::take(&mut args));
            self.sup.start(spec)?;
            let gw = c.dir.join("gateway");
            let mut gargs: Vec<String> = vec![
                // Publishes the admin address for `multicluster gateways` / `check`.
                "--state-dir".into(),
                c.state.display().to_string(),
                "gateway".into(),
                "--quic-addr".into(),
                r.gateway.clone(),
                "--admin-addr".into(),
                r.gateway_admin.clone(),
                "--identity-trust-anchors-file".into(),
                c.state.join("identity/ca.crt").display().to_string(),
                "--identity-cert-file".into(),
                gw.join("tls.crt").display().to_string(),
                "--identity-key-file".into(),
                gw.join("tls.key").display().to_string(),
            ];
            // The ingress delivers streams to local endpoints found through Destination;
            // in loopback mode pods are not behind iptables, so it dials their proxies.
            gargs.extend(["--destination-addr".into(), r.destination.clone()]);
            // Over mutual TLS, verifying the controller's identity, as the sidecars do.
            gargs.extend([
                "--destination-svc-name".into(),
                strait_controller::tls::destination_identity(&c.spec.trust_domain)?.to_string(),
            ]);
            // Linked clusters' mirrors read this cluster's Services through the link,
            // not through its API.
            gargs.push("--serve-exports".into());
            // Stock Linkerd proxies (and UDP-less networks) reach this cluster through
            // Linkerd's mTLS entry on 4143/tcp, beside the QUIC link on 4143/udp.
            gargs.push("--linkerd-entry".into());
            if self.isolation != Isolation::Netns {
                gargs.extend(["--endpoint-inbound-port".into(), "4143".into()]);
            }
            // Links follow the cluster's Link objects (applied below, or later by hand with
            // `strait multicluster link`), and local proxies hand every link's connections
            // to one entry, naming the link.
            gargs.push("--watch-links".into());
            gargs.extend(["--proxy-entry".into(), proxy_entry(c)]);
            let spec = self.strait_proc(c, "gateway", gargs);
            self.sup.start(spec)?;
        }
        for i in 0..n {
            let c = &self.clusters[i];
            let (m, g) = (c.record.mirror_admin.clone(), c.record.gateway_admin.clone());
            wait_until(
                &format!("cluster {}: mirror and DNS", c.spec.name),
                &c.dir.join("logs/mirror.log"),
                || async {
                    http::get(&m, "/ready", Duration::from_secs(1))
                        .await
                        .ok()
                        .filter(|(s, _)| *s == 200)
                },
            )
            .await?;
            wait_until(
                &format!("cluster {}: gateway", c.spec.name),
                &c.dir.join("logs/gateway.log"),
                || async {
                    http::get(&g, "/ready", Duration::from_secs(1))
                        .await
                        .ok()
                        .filter(|(s, _)| *s == 200)
                },
            )
            .await?;
            progress(format!(
                "cluster {}: mirror, DNS ({}) and gateway ({}) ready",
                c.spec.name, c.record.dns, c.record.gateway
            ));
        }
        // Links.
        for l in self.topology.links.clone() {
            self.link(&l.from, &l.to).await?;
            progress(format!(
                "link {} -> {}: applied (mirrors of {}'s exported services appear in {})",
                l.from, l.to, l.to, l.from
            ));
        }
        // Pods.
        for i in 0..n {
            self.reconcile_cluster(i).await;
        }
        let deadline = Instant::now() + PODS_TIMEOUT;
        let mut last = String::new();
        loop {
            for i in 0..n {
                self.check_pods(i).await;
            }
            let (ready, total) = self.pod_counts();
            let line = format!("pods {ready}/{total} ready");
            if line != last {
                progress(&line);
                last = line;
            }
            if ready == total {
                break;
            }
            if Instant::now() > deadline {
                let waiting: Vec<String> = self
                    .clusters
                    .iter()
                    .flat_map(|c| {
                        c.pods
                            .values()
                            .filter(|p| !p.ready)
                            .map(|p| format!("{}/{}", c.spec.name, p.plan.key()))
                    })
                    .collect();
                progress(format!(
                    "still waiting for {} after {}s; they keep starting in the background (see `strait logs`)",
                    waiting.join(", "),
                    PODS_TIMEOUT.as_secs()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.summary(started).await;
        self.record.status = "ready".into();
        self.record.write(&self.dir)?;
        Ok(())
    }

    fn cluster(&self, name: &str) -> &ClusterRt {
        self.clusters
            .iter()
            .find(|c| c.spec.name == name)
            .expect("validated link")
    }

    /// `strait multicluster link` against `to`, applied to `from` (its gateway then dials
    /// `to`'s, its mirror follows `to`'s exported services through that link).
    async fn link(&self, from: &str, to: &str) -> Result<(), String> {
        let target = self.cluster(to);
        let out = tokio::process::Command::new(&self.strait)
            .args([
                "--state-dir",
                &target.state.display().to_string(),
                "multicluster",
                "link",
            ])
            .args(["--cluster-name", to])
            .args(["--gateway-addresses", &target.block.infra().to_string()])
            .args(["--gateway-port", "4143"])
            .args(["--identity-trust-domain", &target.spec.trust_domain])
            .args(["--cluster-domain", &target.spec.cluster_domain])
            .output()
            .await
            .map_err(|e| format!("cannot run `strait multicluster link`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "link {from} -> {to}: `strait multicluster link` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let loaded = strait_api::loader::load_str("<multicluster link>", &text, &Default::default())
            .map_err(|e| format!("link {from} -> {to}: {e}"))?;
        let objs = loaded
            .into_iter()
            .map(|l| {
                let mut v = l.object.to_value();
                // Gateways share this machine: probe them every second with a short timeout,
                // so a dead gateway is noticed (and failed over) in seconds, not Linkerd's
                // default 3s period with a 30s timeout meant for real networks.
                if v["kind"] == "Link" {
                    v["spec"]["probeSpec"]["period"] = json!("1s");
                    v["spec"]["probeSpec"]["timeout"] = json!("1s");
                    v["spec"]["probeSpec"]["failureThreshold"] = json!("2");
                }
                v
            })
            .collect();
        apply(self.cluster(from).client.as_ref().expect("started"), objs)
            .await
            .map_err(|e| format!("link {from} -> {to}: {e}"))
    }

    fn pod_counts(&self) -> (usize, usize) {
        let total = self.clusters.iter().map(|c| c.pods.len()).sum();
        let ready = self
            .clusters
            .iter()
            .map(|c| c.pods.values().filter(|p| p.ready).count())
            .sum();
        (ready, total)
    }

    async fn summary(&self, started: Instant) {
        let (ready, total) = self.pod_counts();
        let mut out = format!(
            "\n{} is up in {:.1}s: {} cluster{}, {ready}/{total} pods ready ({} isolation, run {})\n",
            self.topology.name,
            started.elapsed().as_secs_f64(),
            self.clusters.len(),
            if self.clusters.len() == 1 { "" } else { "s" },
            self.isolation.as_str(),
            self.record.id
        );
        for c in &self.clusters {
            let (r, t) = (c.pods.values().filter(|p| p.ready).count(), c.pods.len());
            out.push_str(&format!(
                "  {:<8} {}  control plane {}  dns {}  gateway {}  pods {r}/{t}\n",
                c.spec.name, c.record.block, c.record.destination, c.record.dns, c.record.gateway
            ));
        }
        for l in &self.topology.links {
            let from = self.cluster(&l.from);
            let state = match http::get(&from.record.mirror_admin, "/gateways", Duration::from_secs(1)).await
            {
                Ok((200, body)) => serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.as_array()?
                            .iter()
                            .find(|r| r["cluster"] == l.to.as_str() || r["link"] == l.to.as_str())
                            .map(|r| {
                                let alive = r["gateway"]["alive"].as_bool().unwrap_or(false);
                                let mirrors = r["mirrors"].as_array().map_or(0, Vec::len);
                                format!(
                                    "gateway {}, {mirrors} mirrored service{}",
                                    if alive { "alive" } else { "not alive yet" },
                                    if mirrors == 1 { "" } else { "s" }
                                )
                            })
                    })
                    .unwrap_or_else(|| "mirror starting".into()),
                _ => "mirror not answering yet".into(),
            };
            out.push_str(&format!("  link {} -> {}: {state}\n", l.from, l.to));
        }
        let first = &self.clusters[0].spec.name;
        let pod = self.clusters[0]
            .pods
            .values()
            .next()
            .map(|p| p.plan.name.clone())
            .unwrap_or_else(|| "POD".into());
        out.push_str(&format!(
            "\nTry, in another terminal:\n  strait --cluster {first} get pods -A\n  strait --cluster {first} multicluster gateways\n  strait logs --cluster {first} {pod}\n  strait exec {first}/{pod} -- strait demo client http://myapp.production.svc.cluster.local/ --requests 5\nStop with Ctrl-C here, or `strait down` from anywhere.\n"
        ));
        eprintln!("{out}");
    }

    async fn reconcile_forever(&mut self) {
        loop {
            tokio::time::sleep(RECONCILE).await;
            for i in 0..self.clusters.len() {
                self.reconcile_cluster(i).await;
                self.check_pods(i).await;
            }
        }
    }

    /// Brings cluster `i`'s pods and Service cluster IPs in line with its store.
    async fn reconcile_cluster(&mut self, i: usize) {
        let Some(client) = self.clusters[i].client.clone() else {
            return;
        };
        let (Ok(deploys), Ok(nss), Ok(svcs)) = (
            list(&client, "deployments").await,
            list(&client, "namespaces").await,
            list(&client, "services").await,
        ) else {
            return;
        };
        // Services without a cluster IP get one, as the API server would give.
        let mut patched = Vec::new();
        for mut s in svcs {
            if self.clusters[i].assign_cluster_ip(&mut s) {
                patched.push(s);
            }
        }
        if !patched.is_empty() {
            let _ = apply(&client, patched).await;
        }
        let deploys: Vec<Deployment> = deploys
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let nss: Vec<Namespace> = nss
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let (want, problems) = plan::pods(&self.topology, &self.clusters[i].spec, &deploys, &nss);
        for p in problems {
            let msg = format!("cluster {}: {p}", self.clusters[i].spec.name);
            if self.clusters[i].reported.insert(msg.clone()) {
                progress(msg);
            }
        }
        let want: BTreeMap<String, PodPlan> = want.into_iter().map(|p| (p.key(), p)).collect();
        let gone: Vec<String> = self.clusters[i]
            .pods
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.stop_pod(i, &key, &client).await;
        }
        for (key, p) in want {
            if !self.clusters[i].pods.contains_key(&key)
                && let Err(e) = self.start_pod(i, p, &client).await
            {
                let msg = format!("cluster {}: pod {key}: {e}", self.clusters[i].spec.name);
                if self.clusters[i].reported.insert(msg.clone()) {
                    progress(msg);
                }
            }
        }
        self.write_pods(i);
    }

    async fn start_pod(&mut self, i: usize, plan: PodPlan, client: &ApiClient) -> Result<(), String> {
        let c = &mut self.clusters[i];
        let n = c.free_pods.pop().unwrap_or_else(|| {
            c.next_pod += 1;
            c.next_pod - 1
        });
        if n >= net::MAX_PODS {
            return Err(format!(
                "cluster {} has no address left for another pod",
                c.spec.name
            ));
        }
        let ip = c.block.pod(n);
        let cluster = c.spec.clone();
        let netns = if self.isolation == Isolation::Netns {
            let search = vec![
                format!("{}.svc.{}", plan.namespace, cluster.cluster_domain),
                format!("svc.{}", cluster.cluster_domain),
                cluster.cluster_domain.clone(),
            ];
            match net::add_pod_netns(&self.names, c.index, n, ip, c.block.infra(), &search) {
                Ok(ns) => Some(ns),
                Err(e) => {
                    c.free_pods.push(n);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let key = plan.key();
        c.pods.insert(
            key.clone(),
            RunningPod {
                plan: plan.clone(),
                n,
                ip,
                netns: netns.clone(),
                ready: false,
                started: Instant::now(),
            },
        );
        // Register (not ready yet): the controller issues the proxy's token.
        let token = register(client, &plan, ip, false).await?;
        let logs = self.clusters[i]
            .dir
            .join("logs")
            .join(&plan.namespace)
            .join(&plan.name);
        let proc_prefix = format!("{}/{}/", cluster.name, key);
        if plan.injected {
            if let Some(ns) = &netns {
                let mut inbound_skip = vec!["4190".to_string(), "4191".into()];
                inbound_skip.extend(
                    plan.skip_inbound()
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
                let out = tokio::process::Command::new(&self.strait)
                    .args(["init", "--netns", &format!("/run/netns/{ns}")])
                    .args(["--proxy-uid", &PROXY_UID.to_string()])
                    .args(["--inbound-ports-to-ignore", &inbound_skip.join(",")])
                    .args(["--outbound-ports-to-ignore", plan.skip_outbound()])
                    .output()
                    .await
                    .map_err(|e| format!("cannot run `strait init`: {e}"))?;
                std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
                let mut init_log = out.stdout.clone();
                init_log.extend_from_slice(&out.stderr);
                let _ = std::fs::write(logs.join("linkerd-init.log"), init_log);
                if !out.status.success() {
                    return Err(format!(
                        "the init step failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            let secret_dir = self
                .secrets
                .join(&cluster.name)
                .join(&plan.namespace)
                .join(&plan.name);
            std::fs::create_dir_all(&secret_dir).map_err(|e| e.to_string())?;
            for d in [
                self.secrets.join(&cluster.name),
                self.secrets.join(&cluster.name).join(&plan.namespace),
                secret_dir.clone(),
            ] {
                set_mode(&d, 0o755);
            }
            let token_file = secret_dir.join("token");
            strait_controller::run::write_private(&token_file, token.as_bytes())
                .map_err(|e| e.to_string())?;
            let uid = netns.as_ref().map(|_| PROXY_UID);
            if let Some(u) = uid {
                chown(&token_file, u);
            }
            let r = &self.clusters[i].record;
            let identity = format!(
                "{}.{}.serviceaccount.identity.linkerd.{}",
                plan.service_account, plan.namespace, cluster.trust_domain
            );
            let (inbound, outbound, admin, capture) = match &netns {
                Some(_) => (
                    "0.0.0.0:4143".to_string(),
                    "127.0.0.1:4140".to_string(),
                    "0.0.0.0:4191".to_string(),
                    "transparent",
                ),
                None => (
                    format!("{ip}:4143"),
                    format!("{ip}:4140"),
                    format!("{ip}:4191"),
                    "explicit",
                ),
            };
            let destination_id =
                strait_controller::tls::destination_identity(&cluster.trust_domain)?.to_string();
            let identity_id = strait_controller::tls::identity_identity(&cluster.trust_domain)?.to_string();
            let mut env: Vec<(String, String)> = vec![
                (
                    "LINKERD2_PROXY_LOG".into(),
                    plan.config(strait_api::labels::config::PROXY_LOG_LEVEL)
                        .unwrap_or("warn,linkerd=info")
                        .into(),
                ),
                (
                    "LINKERD2_PROXY_DESTINATION_SVC_ADDR".into(),
                    r.destination.clone(),
                ),
                ("LINKERD2_PROXY_POLICY_SVC_ADDR".into(), r.policy.clone()),
                ("LINKERD2_PROXY_IDENTITY_SVC_ADDR".into(), r.identity.clone()),
                // TLS to the control plane, verifying the identities the controller
                // serves, as Linkerd's injector configures it.
                (
                    "LINKERD2_PROXY_DESTINATION_SVC_NAME".into(),
                    destination_id.clone(),
                ),
                ("LINKERD2_PROXY_POLICY_SVC_NAME".into(), destination_id),
                ("LINKERD2_PROXY_IDENTITY_SVC_NAME".into(), identity_id),
                (
                    "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS".into(),
                    self.anchors_pem.clone(),
                ),
                ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME".into(), identity),
                (
                    "LINKERD2_PROXY_IDENTITY_TOKEN_FILE".into(),
                    token_file.display().to_string(),
                ),
                ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR".into(), inbound),
                ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR".into(), outbound),
                ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR".into(), admin),
                (
                    "LINKERD2_PROXY_DESTINATION_CONTEXT".into(),
                    json!({"ns": plan.namespace, "nodeName": cluster.name, "pod": plan.name}).to_string(),
                ),
                ("STRAIT_PROXY_CAPTURE".into(), capture.into()),
            ];
            if netns.is_none() {
                env.push(("STRAIT_PROXY_APP_IP".into(), ip.to_string()));
            }
            // The rest of the environment Linkerd's injector gives its proxy, so another
            // sidecar that takes Linkerd's environment (a stock linkerd2-proxy) runs too;
            // and its identity directory, as Linkerd's proxy image prepares it.
            let id_dir = secret_dir.join("identity");
            write_identity_dir(&id_dir, &plan, &cluster.trust_domain, uid)?;
            let ports: Vec<String> = plan.ports.iter().map(|(_, p)| p.to_string()).collect();
            env.extend([
                (
                    "LINKERD2_PROXY_IDENTITY_DIR".to_string(),
                    id_dir.display().to_string(),
                ),
                (
                    "LINKERD2_PROXY_POLICY_WORKLOAD".into(),
                    json!({"ns": plan.namespace, "pod": plan.name}).to_string(),
                ),
                (
                    "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS".into(),
                    self.clusters[i].block.cidr(),
                ),
                (
                    "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS".into(),
                    self.cluster_networks(i),
                ),
                (
                    "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY".into(),
                    plan.config(strait_api::labels::config::DEFAULT_INBOUND_POLICY)
                        .unwrap_or("all-unauthenticated")
                        .into(),
                ),
                ("LINKERD2_PROXY_INBOUND_IPS".into(), ip.to_string()),
                ("LINKERD2_PROXY_INBOUND_PORTS".into(), ports.join(",")),
                (
                    "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES".into(),
                    format!("svc.{}.", cluster.cluster_domain),
                ),
                (
                    "LINKERD2_PROXY_CONTROL_LISTEN_ADDR".into(),
                    format!(
                        "{}:4190",
                        if netns.is_some() {
                            "0.0.0.0".to_string()
                        } else {
                            ip.to_string()
                        }
                    ),
                ),
                ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED".into(), "false".into()),
            ]);
            if let Some(ports) = plan.config(strait_api::labels::config::OPAQUE_PORTS) {
                env.push((
                    "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION".into(),
                    ports.into(),
                ));
            }
            let (program, args) = sidecar_command(&self.topology.sidecar, &self.strait);
            self.sup.start(ProcSpec {
                name: format!("{proc_prefix}linkerd-proxy"),
                program,
                args,
                env,
                netns: netns.clone(),
                uid,
                log: logs.join("linkerd-proxy.log"),
            })?;
        }
        // The workload.
        let (program, args) = sidecar_command(&plan.command, &self.strait);
        let bind = if netns.is_some() {
            "0.0.0.0".to_string()
        } else {
            ip.to_string()
        };
        let mut env: Vec<(String, String)> = vec![
            ("POD_NAME".into(), plan.name.clone()),
            ("POD_NAMESPACE".into(), plan.namespace.clone()),
            ("POD_IP".into(), ip.to_string()),
            ("HOSTNAME".into(), plan.name.clone()),
            ("STRAIT_DEMO_CLUSTER".into(), cluster.name.clone()),
            (
                "STRAIT_DEMO_NAME".into(),
                plan.labels
                    .get("app")
                    .cloned()
                    .unwrap_or_else(|| plan.deployment.clone()),
            ),
            (
                "STRAIT_DEMO_VERSION".into(),
                plan.labels.get("version").cloned().unwrap_or_else(|| "v1".into()),
            ),
        ];
        if let Some((_, port)) = plan.ports.first() {
            env.push(("STRAIT_DEMO_ADDR".into(), format!("{bind}:{port}")));
        }
        if plan.injected && netns.is_none() {
            env.push(("STRAIT_DEMO_PROXY".into(), format!("{ip}:4140")));
            env.push(("HTTP_PROXY".into(), format!("http://{ip}:4140")));
            env.push(("http_proxy".into(), format!("http://{ip}:4140")));
        }
        env.extend(plan.env.iter().cloned());
        let container = plan.deployment.clone();
        self.sup.start(ProcSpec {
            name: format!("{proc_prefix}{container}"),
            program,
            args,
            env,
            netns: netns.clone(),
            uid: None,
            log: logs.join(format!("{container}.log")),
        })?;
        Ok(())
    }

    async fn stop_pod(&mut self, i: usize, key: &str, client: &ApiClient) {
        let c = &mut self.clusters[i];
        let Some(p) = c.pods.remove(key) else { return };
        let cluster = c.spec.name.clone();
        self.sup.stop_prefix(&format!("{cluster}/{key}/")).await;
        let _ = client
            .request(
                Method::DELETE,
                &format!("/v1/pods/{}/{}", p.plan.namespace, p.plan.name),
                Vec::new(),
            )
            .await;
        if let Some(ns) = &p.netns {
            net::del_pod_netns(ns);
        }
        let _ = std::fs::remove_dir_all(
            self.secrets
                .join(&cluster)
                .join(&p.plan.namespace)
                .join(&p.plan.name),
        );
        self.clusters[i].free_pods.push(p.n);
        progress(format!("cluster {cluster}: pod {key} stopped"));
    }

    /// Marks pods ready once their proxy and application answer.
    async fn check_pods(&mut self, i: usize) {
        let Some(client) = self.clusters[i].client.clone() else {
            return;
        };
        let keys: Vec<String> = self.clusters[i]
            .pods
            .iter()
            .filter(|(_, p)| !p.ready)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let p = &self.clusters[i].pods[&key];
            let proxy_ok = !p.plan.injected
                || matches!(
                    http::get(&format!("{}:4191", p.ip), "/ready", Duration::from_millis(500)).await,
                    Ok((200, _))
                );
            let app_ok = match p.plan.ports.first() {
                Some((_, port)) => http::connects(&format!("{}:{port}", p.ip)).await,
                None => p.started.elapsed() > Duration::from_millis(500),
            };
            if proxy_ok && app_ok {
                let plan = p.plan.clone();
                let ip = p.ip;
                if register(&client, &plan, ip, true).await.is_ok() {
                    self.clusters[i].pods.get_mut(&key).expect("present").ready = true;
                }
            }
        }
        self.write_pods(i);
    }

    fn write_pods(&self, i: usize) {
        let c = &self.clusters[i];
        let records: Vec<PodRecord> = c
            .pods
            .values()
            .map(|p| {
                let prefix = format!("{}/{}/", c.spec.name, p.plan.key());
                let logs_dir = c.dir.join("logs").join(&p.plan.namespace).join(&p.plan.name);
                let mut logs = vec![(
                    p.plan.deployment.clone(),
                    logs_dir.join(format!("{}.log", p.plan.deployment)),
                )];
                if p.plan.injected {
                    logs.push(("linkerd-proxy".into(), logs_dir.join("linkerd-proxy.log")));
                }
                let restarts = self
                    .sup
                    .names()
                    .iter()
                    .filter(|n| n.starts_with(&prefix))
                    .filter_map(|n| self.sup.status(n))
                    .map(|s| s.restarts)
                    .sum();
                PodRecord {
                    namespace: p.plan.namespace.clone(),
                    name: p.plan.name.clone(),
                    ip: p.ip.to_string(),
                    netns: p.netns.clone(),
                    injected: p.plan.injected,
                    ready: p.ready,
                    logs,
                    restarts,
                }
            })
            .collect();
        let _ = registry::write_json(&c.dir.join("pods.json"), &records);
    }

    /// Stops every process and removes every namespace, bridge and file of the run.
    async fn stop(&mut self) {
        self.record.status = "stopping".into();
        let _ = self.record.write(&self.dir);
        // Pods first, then the components that serve them.
        for c in &self.clusters {
            for key in c.pods.keys() {
                self.sup.stop_prefix(&format!("{}/{key}/", c.spec.name)).await;
            }
        }
        self.sup.stop_all().await;
        if self.isolation == Isolation::Netns {
            net::clean_slot(&self.names);
        }
        let _ = std::fs::remove_dir_all(&self.secrets);
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(slot) = self.slot.take() {
            slot.release();
        }
    }
}

impl ClusterRt {
    /// Gives a Service JSON without a cluster IP one from the cluster's range; whether it did.
    fn assign_cluster_ip(&mut self, o: &mut Value) -> bool {
        if o["kind"] != "Service" {
            return false;
        }
        let spec = &o["spec"];
        if spec["clusterIP"].as_str().is_some_and(|s| !s.is_empty())
            || spec["type"] == "ExternalName"
            || o["metadata"]["labels"][strait_api::labels::mirror::MIRRORED_SERVICE].is_string()
        {
            return false;
        }
        let Some(ip) = (0..1024)
            .filter_map(|n| self.block.service_ip(n))
            .find(|ip| !self.service_ips.contains(ip))
        else {
            return false;
        };
        self.service_ips.insert(ip);
        if !o["spec"].is_object() {
            o["spec"] = json!({});
        }
        o["spec"]["clusterIP"] = json!(ip.to_string());
        o["spec"]["clusterIPs"] = json!([ip.to_string()]);
        true
    }
}

/// The identity directory Linkerd's proxy image prepares before its proxy starts: a fresh
/// ECDSA P-256 key (`key.p8`, PKCS#8 DER) and a CSR for the pod's identity (`csr.der`).
fn write_identity_dir(
    dir: &Path,
    plan: &PodPlan,
    trust_domain: &str,
    uid: Option<u32>,
) -> Result<(), String> {
    let name = strait_identity::IdentityName::new(&plan.service_account, &plan.namespace, trust_domain)
        .map_err(|e| format!("the pod's identity: {e}"))?;
    let (key, csr) = strait_identity::generate_key_and_csr(&name).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    set_mode(dir, 0o755);
    strait_controller::run::write_private(&dir.join("key.p8"), key.secret_pkcs8_der())
        .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("csr.der"), csr.as_ref()).map_err(|e| e.to_string())?;
    if let Some(u) = uid {
        chown(&dir.join("key.p8"), u);
        chown(&dir.join("csr.der"), u);
    }
    Ok(())
}

/// The program and arguments of a command line; `strait` means this binary.
fn sidecar_command(cmd: &[String], strait: &Path) -> (PathBuf, Vec<String>) {
    let program = match cmd[0].as_str() {
        "strait" => strait.to_path_buf(),
        other => PathBuf::from(other),
    };
    (program, cmd[1..].to_vec())
}

async fn list(client: &ApiClient, plural: &str) -> Result<Vec<Value>, String> {
    let body = client
        .request(Method::GET, &format!("/v1/objects/{plural}"), Vec::new())
        .await
        .map_err(|e| e.to_string())?;
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

async fn apply(client: &ApiClient, items: Vec<Value>) -> Result<(), String> {
    if items.is_empty() {
        return Ok(());
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    client
        .request(
            Method::POST,
            "/v1/apply",
            serde_json::to_vec(&list).expect("serializes"),
        )
        .await
        .map(|_| ())
        .map_err(|e| match e {
            strait_controller::api::client::ClientError::Status { body, message, .. } => {
                let problems: Vec<String> = body["problems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect();
                if problems.is_empty() {
                    message
                } else {
                    problems.join("\n")
                }
            }
            other => other.to_string(),
        })
}

/// Registers a pod with its controller; the proxy's token.
async fn register(client: &ApiClient, plan: &PodPlan, ip: Ipv4Addr, ready: bool) -> Result<String, String> {
    let mut labels = plan.labels.clone();
    labels.insert("pod-template-hash".into(), plan.hash.clone());
    let mut annotations = plan.annotations.clone();
    if plan.injected {
        labels.insert(
            strait_api::labels::CONTROL_PLANE_NS_LABEL.into(),
            "linkerd".into(),
        );
        labels.insert(
            strait_api::labels::PROXY_DEPLOYMENT_LABEL.into(),
            plan.deployment.clone(),
        );
        annotations.insert(strait_api::labels::INJECTED_BY.into(), "strait up".into());
    }
    let reg = strait_controller::api::PodRegistration {
        namespace: plan.namespace.clone(),
        name: plan.name.clone(),
        labels,
        annotations,
        service_account: plan.service_account.clone(),
        ip: ip.to_string(),
        ports: plan
            .ports
            .iter()
            .map(|(name, port)| strait_controller::api::NamedPort {
                name: name.clone(),
                port: *port,
            })
            .collect(),
        ready,
    };
    let out = client
        .request(
            Method::POST,
            "/v1/pods",
            serde_json::to_vec(&reg).expect("serializes"),
        )
        .await
        .map_err(|e| format!("cannot register the pod: {e}"))?;
    out["token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| "the controller registered the pod but returned no token".into())
}

/// Polls `check` every 50 ms until it yields, for at most [`COMPONENT_TIMEOUT`]; on
/// timeout the error names the log to read.
async fn wait_until<T, F, Fut>(what: &str, log: &Path, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + COMPONENT_TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not become ready within {}s; its log is {}:\n{}",
                COMPONENT_TIMEOUT.as_secs(),
                log.display(),
                tail(log, 15)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

fn chown(path: &Path, uid: u32) {
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(uid));
}

/// Stops what a run that did not stop cleanly left behind: its processes, and (as root)
/// its slot's namespaces and interfaces.
fn cleanup_leftovers(run_dir: &Path, names: &Names, isolation: Isolation) {
    let killed = supervise::kill_recorded(&run_dir.join("pids"));
    if killed > 0 {
        progress(format!(
            "stopped {killed} processes left by an earlier run in {}",
            run_dir.display()
        ));
    }
    if isolation == Isolation::Netns || is_root() {
        for r in net::clean_slot(names) {
            progress(format!("removed {r} left by an earlier run"));
        }
    }
}

/// What `strait down` did.
#[derive(Debug, Default)]
pub struct DownReport {
    /// Runs stopped by their own `up` (graceful).
    pub stopped: Vec<String>,
    /// Runs whose `up` was gone, cleaned up here.
    pub cleaned: Vec<String>,
}

/// Stops runs: those of `topology` (a name or file), or all. A run whose `strait up`
/// still runs is asked to stop (SIGTERM) and waited for; a run whose `up` died is cleaned
/// up here: its processes, namespaces, interfaces and files.
pub fn down(home: &Path, topology: Option<&str>) -> Result<DownReport, String> {
    let mut report = DownReport::default();
    let wanted = |r: &RunRecord| {
        topology.is_none_or(|t| {
            r.topology == t || r.id == t || std::fs::canonicalize(t).ok().is_some_and(|p| p == r.file)
        })
    };
    for (dir, run) in registry::runs(home).into_iter().filter(|(_, r)| wanted(r)) {
        if run.alive() && run.pid != std::process::id() {
            progress_down(format!("stopping run {} (strait up, pid {})", run.id, run.pid));
            // SAFETY: kill(2) with a pid from the run record.
            unsafe {
                libc::kill(run.pid as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while run.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if !run.alive() && !dir.exists() {
                report.stopped.push(run.id.clone());
                continue;
            }
            progress_down(format!(
                "run {} did not stop by itself; cleaning up after it",
                run.id
            ));
        }
        let iso = Isolation::parse(&run.isolation).unwrap_or(Isolation::Loopback);
        let names = Names::new(run.slot);
        cleanup_leftovers(&dir, &names, iso);
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("strait-run-{}", run.slot)));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", dir.display())),
        }
        report.cleaned.push(run.id.clone());
    }
    Ok(report)
}

fn progress_down(msg: impl std::fmt::Display) {
    eprintln!("strait down: {msg}");
}

/// The proxy entry of `c`'s gateway, for every link: its infrastructure address, port 4150.
fn proxy_entry(c: &ClusterRt) -> String {
    format!("{}:4150", c.block.infra())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_directory_is_what_linkerds_proxy_image_prepares() {
        let dir = tempfile::tempdir().unwrap();
        let plan = PodPlan {
            namespace: "production".into(),
            name: "myapp-1".into(),
            deployment: "myapp".into(),
            labels: Default::default(),
            annotations: Default::default(),
            service_account: "myapp".into(),
            command: vec!["strait".into()],
            env: Vec::new(),
            ports: Vec::new(),
            injected: true,
            hash: "0".into(),
        };
        let id = dir.path().join("identity");
        write_identity_dir(&id, &plan, "cluster.local", None).unwrap();
        let key = std::fs::read(id.join("key.p8")).unwrap();
        let csr = std::fs::read(id.join("csr.der")).unwrap();
        // PKCS#8 DER starts with a SEQUENCE; the key is readable by its owner only.
        assert_eq!(key[0], 0x30);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(id.join("key.p8")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The CSR is DER and asks for exactly the pod's identity: an issuer signs it.
        let td = strait_identity::TrustDomain::new("cluster.local").unwrap();
        let (_, issuer) = strait_identity::generate(&td, SystemTime::now()).unwrap();
        let name = strait_identity::IdentityName::new("myapp", "production", "cluster.local").unwrap();
        issuer
            .issue(&csr, &name, Duration::from_secs(3600), SystemTime::now())
            .expect("the CSR is valid for the pod's identity");
        let other = strait_identity::IdentityName::new("other", "production", "cluster.local").unwrap();
        assert!(
            issuer
                .issue(&csr, &other, Duration::from_secs(3600), SystemTime::now())
                .is_err()
        );
    }
}
