//! Cluster DNS of local mode, after the Kubernetes DNS specification, from a [`Store`]
//! (mirrors included):
//!
//! - `<svc>.<ns>.svc.<domain>`: A and AAAA of the Service's cluster IPs; for a headless
//!   Service, of its ready endpoints' addresses. SRV: one record per port, whose target is
//!   the Service (or, headless, each ready endpoint's own name).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV of the named port.
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: a headless Service's endpoint, by the hostname
//!   its EndpointSlice gives it, or by its address with dashes (`10-0-0-5`).
//! - `<a-b-c-d>.<ns>.pod.<domain>`: A (or AAAA) of a pod of that namespace with that IP
//!   (only pods that exist: CoreDNS's `pods verified`).
//!
//! - An ExternalName Service's name: a CNAME to its `externalName`, for every type.
//! - The zone apex: its SOA.
//!
//! Other names in the cluster domain get NXDOMAIN; names outside it, classes other than
//! IN and opcodes other than QUERY are REFUSED or NOTIMP (this server is authoritative
//! for the cluster domain only). Negative answers carry the zone's SOA, so resolvers cache
//! them (RFC 2308), and a query with EDNS gets EDNS back (its payload size then bounds
//! UDP answers; past it they are truncated and the client asks again over TCP). In
//! Kubernetes mode mirrors are real Services and the cluster's own DNS serves them.
//!
//! [`DnsIndex`] holds the answers (fed by [`run_index`] from Service, EndpointSlice, Pod
//! and Namespace watches); the hickory [`ClusterDns`] handler only reads it.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_api::{Kind, Store, StoreError, WatchEvent};

/// TTL of answers: short, so a new mirror or a changed IP is seen quickly.
pub const TTL: u32 = 5;

/// What a name resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name exists: its records of the asked type (maybe none).
    Found(Vec<Rec>),
    /// A name in the cluster domain that does not exist.
    NxDomain,
    /// Not in the cluster domain.
    Refused,
}

/// One record of an answer, owned by the name asked.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Rec {
    /// An A or AAAA record.
    Addr(IpAddr),
    /// A CNAME record (an ExternalName Service), its fully qualified target with the
    /// final dot.
    Cname(String),
    /// The zone's SOA record (asked at the apex).
    Soa,
    /// An SRV record (priority 0).
    Srv {
        /// Relative weight among the records of the answer.
        weight: u16,
        /// The port.
        port: u16,
        /// The fully qualified target, with the final dot.
        target: String,
    },
}

/// A port of a Service or an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    /// The port's name (maybe empty).
    name: String,
    /// `tcp`, `udp` or `sctp`.
    protocol: String,
    number: u16,
}

#[derive(Debug, Default)]
struct Svc {
    ips: Vec<IpAddr>,
    headless: bool,
    ports: Vec<Port>,
    /// An ExternalName Service's target (lowercase, without the final dot).
    external_name: Option<String>,
}

/// An endpoint of a Service, from its EndpointSlices.
#[derive(Debug, Clone)]
struct Ep {
    ip: IpAddr,
    hostname: Option<String>,
    ready: bool,
}

#[derive(Debug, Default)]
struct Slice {
    /// `(namespace, Service)` it belongs to.
    service: (String, String),
    endpoints: Vec<Ep>,
    ports: Vec<Port>,
}

#[derive(Debug, Default)]
struct State {
    services: BTreeMap<(String, String), Svc>,
    /// By `(namespace, slice name)`.
    slices: BTreeMap<(String, String), Slice>,
    /// Pod IPs by `(namespace, pod name)`.
    pods: BTreeMap<(String, String), Vec<IpAddr>>,
    /// Namespaces, keyed `("", name)`.
    namespaces: BTreeMap<(String, String), ()>,
    /// Counts the changes applied: the SOA's serial.
    serial: u32,
}

/// The cluster's names: Services, their endpoints and pods.
#[derive(Clone, Default)]
pub struct DnsIndex {
    inner: Arc<RwLock<State>>,
}

fn ports<'a>(it: impl Iterator<Item = (Option<&'a String>, Option<&'a String>, Option<i32>)>) -> Vec<Port> {
    it.filter_map(|(name, protocol, number)| {
        Some(Port {
            name: name.cloned().unwrap_or_default().to_ascii_lowercase(),
            protocol: protocol.map_or("tcp".into(), |p| p.to_ascii_lowercase()),
            number: u16::try_from(number?).ok()?,
        })
    })
    .collect()
}

fn service_entry(svc: &Service) -> Svc {
    let Some(spec) = svc.spec.as_ref() else {
        return Svc::default();
    };
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let external_name = spec
        .external_name
        .as_deref()
        .filter(|_| spec.type_.as_deref() == Some("ExternalName"))
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| !n.is_empty());
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    let ports = ports(
        spec.ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_ref(), p.protocol.as_ref(), Some(p.port))),
    );
    Svc {
        ips,
        headless,
        ports,
        external_name,
    }
}

fn slice_entry(slice: &EndpointSlice) -> Option<Slice> {
    let ns = slice.metadata.namespace.clone().unwrap_or_default();
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?
        .clone();
    let endpoints = slice
        .endpoints
        .iter()
        .flatten()
        .flat_map(|e| {
            // Kubernetes: an unknown readiness means ready.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let hostname = e.hostname.as_ref().map(|h| h.to_ascii_lowercase());
            e.addresses.iter().filter_map(move |a| {
                Some(Ep {
                    ip: a.parse().ok()?,
                    hostname: hostname.clone(),
                    ready,
                })
            })
        })
        .collect();
    let ports = ports(
        slice
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_ref(), p.protocol.as_ref(), p.port)),
    );
    Some(Slice {
        service: (ns, service.to_ascii_lowercase()),
        endpoints,
        ports,
    })
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn key<K: Kind>(o: &K) -> (String, String) {
    let m = o.metadata();
    (
        m.namespace.clone().unwrap_or_default().to_ascii_lowercase(),
        m.name.clone().unwrap_or_default().to_ascii_lowercase(),
    )
}

/// Applies one watch event of kind `K` to `map`, each object made an entry by `entry`.
fn apply<K: Kind, V>(
    map: &mut BTreeMap<(String, String), V>,
    ev: WatchEvent<K>,
    entry: impl Fn(&K) -> Option<V>,
) {
    match ev {
        WatchEvent::Restarted(all) => {
            *map = all.iter().filter_map(|o| Some((key(o), entry(o)?))).collect();
        }
        WatchEvent::Applied(o) => match entry(&o) {
            Some(v) => {
                map.insert(key(&o), v);
            }
            None => {
                map.remove(&key(&o));
            }
        },
        WatchEvent::Deleted(o) => {
            map.remove(&key(&o));
        }
    }
}

/// The name of an endpoint under its headless Service: its hostname, or its address
/// with dashes.
fn endpoint_label(ep: &Ep) -> String {
    ep.hostname
        .clone()
        .unwrap_or_else(|| ep.ip.to_string().replace(['.', ':'], "-"))
}

/// `a-b-c-d` (or an IPv6 address with dashes for colons) as an address.
fn dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(v4.into());
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::from)
}

fn addr_of(qtype: RecordType, ip: IpAddr) -> Option<Rec> {
    match (qtype, ip) {
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)) => Some(Rec::Addr(ip)),
        _ => None,
    }
}

/// SRV records with weights shared out as CoreDNS does (100 split evenly), each
/// (port, target) once (one port number over two protocols is one record).
fn srv(mut targets: Vec<(u16, String)>) -> Vec<Rec> {
    let mut seen = std::collections::BTreeSet::new();
    targets.retain(|t| seen.insert(t.clone()));
    let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(1).max(1);
    targets
        .into_iter()
        .map(|(port, target)| Rec::Srv { weight, port, target })
        .collect()
}

/// The entries of namespace `ns` (maps are keyed by namespace first: a range, not a scan
/// of every namespace).
fn in_ns<'m, 'n, V>(
    map: &'m BTreeMap<(String, String), V>,
    ns: &'n str,
) -> impl Iterator<Item = (&'m (String, String), &'m V)> + use<'m, 'n, V> {
    map.range((ns.to_string(), String::new())..)
        .take_while(move |((n, _), _)| n == ns)
}

impl State {
    fn ready_endpoints(&self, ns: &str, svc: &str) -> Vec<(&Ep, &[Port])> {
        let mut out: Vec<(&Ep, &[Port])> = Vec::new();
        for (_, slice) in in_ns(&self.slices, ns) {
            if slice.service.1 == svc {
                for ep in slice.endpoints.iter().filter(|e| e.ready) {
                    out.push((ep, &slice.ports));
                }
            }
        }
        out
    }

    /// The records of Service `svc` in `ns` for `qtype`, SRV limited to the ports `port`
    /// accepts.
    fn service_records(
        &self,
        svc: &Svc,
        (ns, name): (&str, &str),
        domain: &str,
        qtype: RecordType,
        port: impl Fn(&Port) -> bool,
    ) -> Vec<Rec> {
        let fqdn = format!("{name}.{ns}.svc.{domain}.");
        match (qtype, svc.headless) {
            (RecordType::SRV, false) => srv(svc
                .ports
                .iter()
                .filter(|p| port(p))
                .map(|p| (p.number, fqdn.clone()))
                .collect()),
            (RecordType::SRV, true) => {
                let mut targets: Vec<(u16, String)> = self
                    .ready_endpoints(ns, name)
                    .into_iter()
                    .flat_map(|(ep, ports)| {
                        let target = format!("{}.{fqdn}", endpoint_label(ep));
                        ports
                            .iter()
                            .filter(|p| port(p))
                            .map(move |p| (p.number, target.clone()))
                    })
                    .collect();
                targets.sort();
                srv(targets)
            }
            (_, false) => svc.ips.iter().filter_map(|ip| addr_of(qtype, *ip)).collect(),
            (_, true) => {
                let mut ips: Vec<IpAddr> = self.ready_endpoints(ns, name).iter().map(|(e, _)| e.ip).collect();
                ips.sort();
                ips.dedup();
                ips.into_iter().filter_map(|ip| addr_of(qtype, ip)).collect()
            }
        }
    }

    fn knows_namespace(&self, ns: &str) -> bool {
        self.namespaces.contains_key(&(String::new(), ns.to_string()))
            || in_ns(&self.services, ns).next().is_some()
            || in_ns(&self.pods, ns).next().is_some()
    }
}

impl DnsIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        let mut state = self.inner.write().expect("dns index lock");
        state.serial = state.serial.wrapping_add(1);
        state
    }

    /// Applies one Service watch event.
    pub fn on_service(&self, ev: WatchEvent<Service>) {
        apply(&mut self.write().services, ev, |s| Some(service_entry(s)));
    }

    /// Applies one EndpointSlice watch event (slices without a Service are not kept).
    pub fn on_slice(&self, ev: WatchEvent<EndpointSlice>) {
        apply(&mut self.write().slices, ev, slice_entry);
    }

    /// Applies one Pod watch event.
    pub fn on_pod(&self, ev: WatchEvent<Pod>) {
        apply(&mut self.write().pods, ev, |p| Some(pod_ips(p)));
    }

    /// Applies one Namespace watch event (a namespace without Services or pods exists).
    pub fn on_namespace(&self, ev: WatchEvent<Namespace>) {
        apply(&mut self.write().namespaces, ev, |_| Some(()));
    }

    /// The SOA serial: it changes with every change the index applies.
    pub fn serial(&self) -> u32 {
        self.inner.read().expect("dns index lock").serial
    }

    /// Answers `name` (any case, with or without the final dot) for `qtype` under `domain`.
    ///
    /// An ExternalName alias whose target is in the cluster domain is followed (at most
    /// eight links), its target's records after the CNAME, as CoreDNS answers: a stub
    /// resolver does not chase a CNAME, and this server answers nothing outside the zone.
    pub fn answer(&self, domain: &str, name: &str, qtype: RecordType) -> Answer {
        let mut answer = self.answer_one(domain, name, qtype);
        let zone = format!(".{}.", domain.trim_end_matches('.').to_ascii_lowercase());
        for _ in 0..8 {
            let Answer::Found(recs) = &mut answer else { break };
            let Some(Rec::Cname(target)) = recs.last() else {
                break;
            };
            if !target.ends_with(&zone) || qtype == RecordType::CNAME {
                break;
            }
            // Each step takes the index's lock anew (never held across steps).
            let Answer::Found(next) = self.answer_one(domain, &target.clone(), qtype) else {
                break;
            };
            recs.extend(next);
        }
        answer
    }

    fn answer_one(&self, domain: &str, name: &str, qtype: RecordType) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let Some(local) = name.strip_suffix(&domain).and_then(|n| {
            if n.is_empty() {
                Some(n)
            } else {
                n.strip_suffix('.')
            }
        }) else {
            return Answer::Refused;
        };
        let labels: Vec<&str> = local.split('.').collect();
        let state = self.inner.read().expect("dns index lock");
        let service = |ns: &str, svc: &str| state.services.get(&(ns.to_string(), svc.to_string()));
        match labels.as_slice() {
            // The zone itself, `svc.<domain>`, `pod.<domain>`, and a namespace under either
            // exist (no records).
            [""] if qtype == RecordType::SOA => Answer::Found(vec![Rec::Soa]),
            [""] | ["svc"] | ["pod"] => Answer::Found(Vec::new()),
            [ns, "svc" | "pod"] if state.knows_namespace(ns) => Answer::Found(Vec::new()),
            [svc, ns, "svc"] => match service(ns, svc) {
                // An alias, whatever the type asked (the resolver follows it).
                Some(Svc {
                    external_name: Some(target),
                    ..
                }) => Answer::Found(vec![Rec::Cname(format!("{target}."))]),
                Some(s) => Answer::Found(state.service_records(s, (ns, svc), &domain, qtype, |_| true)),
                None => Answer::NxDomain,
            },
            // Only named ports have SRV names (`_<name>._<protocol>`).
            [port, proto, svc, ns, "svc"]
                if port.len() > 1 && port.starts_with('_') && proto.starts_with('_') =>
            {
                let (port, proto) = (&port[1..], &proto[1..]);
                let matches = |p: &Port| p.name == port && p.protocol == proto;
                match service(ns, svc) {
                    Some(s) if s.ports.iter().any(matches) => {
                        let records = state.service_records(s, (ns, svc), &domain, qtype, matches);
                        Answer::Found(if qtype == RecordType::SRV {
                            records
                        } else {
                            Vec::new()
                        })
                    }
                    _ => Answer::NxDomain,
                }
            }
            [host, svc, ns, "svc"] => match service(ns, svc) {
                Some(s) if s.headless => {
                    let eps = state.ready_endpoints(ns, svc);
                    let mine: Vec<IpAddr> = eps
                        .iter()
                        .filter(|(e, _)| endpoint_label(e) == *host)
                        .map(|(e, _)| e.ip)
                        .collect();
                    if mine.is_empty() {
                        Answer::NxDomain
                    } else {
                        Answer::Found(mine.into_iter().filter_map(|ip| addr_of(qtype, ip)).collect())
                    }
                }
                _ => Answer::NxDomain,
            },
            [dashed, ns, "pod"] => match dashed_ip(dashed) {
                Some(ip) if in_ns(&state.pods, ns).any(|(_, ips)| ips.contains(&ip)) => {
                    Answer::Found(addr_of(qtype, ip).into_iter().collect())
                }
                _ => Answer::NxDomain,
            },
            _ => Answer::NxDomain,
        }
    }
}

/// Watches kind `K` of `store` for ever: a watch that ends is opened again after a pause.
fn follow<S: Store, K: Kind>(store: S) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
    futures::stream::unfold((store, None), |(store, current)| async move {
        let mut watch: BoxStream<'static, Result<WatchEvent<K>, StoreError>> =
            current.unwrap_or_else(|| store.watch::<K>());
        loop {
            match watch.next().await {
                Some(item) => return Some((item, (store, Some(watch)))),
                None => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    watch = store.watch::<K>();
                }
            }
        }
    })
    .boxed()
}

enum Change {
    Service(Box<WatchEvent<Service>>),
    Slice(Box<WatchEvent<EndpointSlice>>),
    Pod(Box<WatchEvent<Pod>>),
    Namespace(Box<WatchEvent<Namespace>>),
}

/// Keeps `index` in step with the Services, EndpointSlices, Pods and Namespaces of
/// `store` until a watch fails; returns the error (the caller restarts it).
pub async fn run_index<S: Store>(store: S, index: DnsIndex) -> StoreError {
    let mut changes = futures::stream::select_all([
        follow::<S, Service>(store.clone())
            .map(|e| e.map(|e| Change::Service(Box::new(e))))
            .boxed(),
        follow::<S, EndpointSlice>(store.clone())
            .map(|e| e.map(|e| Change::Slice(Box::new(e))))
            .boxed(),
        follow::<S, Pod>(store.clone())
            .map(|e| e.map(|e| Change::Pod(Box::new(e))))
            .boxed(),
        follow::<S, Namespace>(store)
            .map(|e| e.map(|e| Change::Namespace(Box::new(e))))
            .boxed(),
    ]);
    loop {
        match changes.next().await {
            Some(Ok(Change::Service(ev))) => index.on_service(*ev),
            Some(Ok(Change::Slice(ev))) => index.on_slice(*ev),
            Some(Ok(Change::Pod(ev))) => index.on_pod(*ev),
            Some(Ok(Change::Namespace(ev))) => index.on_namespace(*ev),
            Some(Err(e)) => return e,
            // Each watch is followed for ever; the select never ends.
            None => std::future::pending::<()>().await,
        }
    }
}

/// The hickory request handler.
#[derive(Clone)]
pub struct ClusterDns {
    domain: String,
    index: DnsIndex,
}

impl ClusterDns {
    /// A handler for `domain` (`cluster.local`) answering from `index`.
    pub fn new(domain: &str, index: DnsIndex) -> Self {
        Self {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            index,
        }
    }
}

impl ClusterDns {
    /// The zone's SOA record, after CoreDNS's (`ns.dns.<zone>`, `hostmaster.<zone>`, the
    /// answers' TTL as the negative TTL).
    fn soa(&self) -> Option<Record> {
        let apex = Name::from_ascii(format!("{}.", self.domain)).ok()?;
        let soa = SOA::new(
            Name::from_ascii(format!("ns.dns.{}.", self.domain)).ok()?,
            Name::from_ascii(format!("hostmaster.{}.", self.domain)).ok()?,
            self.index.serial(),
            7200,
            1800,
            86400,
            TTL,
        );
        Some(Record::from_rdata(apex, TTL, RData::SOA(soa)))
    }
}

/// The labels of a query name, lowercase, joined by dots; a dot inside a label becomes
/// a character no cluster name has, so it cannot pass for two labels.
fn query_labels(name: &Name) -> String {
    name.iter()
        .map(|label| {
            String::from_utf8_lossy(label)
                .to_ascii_lowercase()
                .replace('.', "\u{1}")
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let failed = |mut meta: Metadata, code| {
            meta.response_code = code;
            ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            })
        };
        // A query with EDNS gets EDNS back (RFC 6891); its payload size bounds UDP answers.
        let edns = request.edns.as_ref().map(|asked| {
            let mut e = Edns::new();
            e.set_max_payload(asked.max_payload().max(512));
            e.set_version(0);
            e
        });
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(e) = &edns {
                b.edns(e);
            }
            b
        };
        let refusal = if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Some(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query {
            // No updates or notifies: this zone is made from the cluster's objects.
            Some(ResponseCode::NotImp)
        } else {
            None
        };
        let info = match (refusal, request.request_info()) {
            (None, Ok(info)) if info.query.query_class() == DNSClass::IN => info,
            (refusal, info) => {
                let code = refusal.unwrap_or(if info.is_ok() {
                    ResponseCode::Refused
                } else {
                    ResponseCode::FormErr
                });
                let rsp = builder().error_msg(&request.metadata, code);
                return response_handle
                    .send_response(rsp)
                    .await
                    .unwrap_or_else(|_| failed(meta, ResponseCode::ServFail));
            }
        };
        let name = query_labels(info.query.name());
        let qtype = info.query.query_type();
        let answer = self.index.answer(&self.domain, &name, qtype);
        // The records after a CNAME are its target's (a chain inside the zone).
        let mut owner: Name = info.query.name().into();
        let records: Vec<Record> = match &answer {
            Answer::Found(recs) => recs
                .iter()
                .filter_map(|rec| {
                    let rdata = match rec {
                        Rec::Addr(IpAddr::V4(v4)) => RData::A(A(*v4)),
                        Rec::Addr(IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                        Rec::Srv { weight, port, target } => {
                            RData::SRV(SRV::new(0, *weight, *port, Name::from_ascii(target).ok()?))
                        }
                        Rec::Cname(target) => {
                            let target = Name::from_ascii(target).ok()?;
                            let record =
                                Record::from_rdata(owner.clone(), TTL, RData::CNAME(CNAME(target.clone())));
                            owner = target;
                            return Some(record);
                        }
                        Rec::Soa => return self.soa(),
                    };
                    Some(Record::from_rdata(owner.clone(), TTL, rdata))
                })
                .collect(),
            _ => Vec::new(),
        };
        // NXDOMAIN and NODATA carry the SOA, whose minimum is their negative TTL.
        let negative = match &answer {
            Answer::NxDomain => true,
            Answer::Found(_) => records.is_empty(),
            Answer::Refused => false,
        };
        let soa: Vec<Record> = if negative {
            self.soa().into_iter().collect()
        } else {
            Vec::new()
        };
        meta.authoritative = !matches!(answer, Answer::Refused);
        meta.recursion_available = false;
        meta.response_code = match answer {
            Answer::Found(_) => ResponseCode::NoError,
            Answer::NxDomain => ResponseCode::NXDomain,
            Answer::Refused => ResponseCode::Refused,
        };
        let rsp = builder().build(meta, records.iter(), [], soa.iter(), []);
        response_handle
            .send_response(rsp)
            .await
            .unwrap_or_else(|_| failed(meta, ResponseCode::ServFail))
    }
}

/// Serves `domain` on a bound UDP socket and TCP listener until `shutdown`.
pub async fn serve(
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    domain: &str,
    index: DnsIndex,
    shutdown: impl Future<Output = ()>,
) {
    let mut server = hickory_server::Server::new(ClusterDns::new(domain, index));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    shutdown.await;
    let _ = server.shutdown_gracefully().await;
}

#[cfg(test)]
mod tests;
