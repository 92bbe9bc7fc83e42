//! Cluster DNS of local mode: `<svc>.<ns>.svc.<cluster-domain>` → the Service's cluster
//! IPs (A and AAAA), mirrors included, from a [`Store`]; NXDOMAIN for other names in the
//! cluster domain; REFUSED for names outside it (this server is authoritative for the
//! cluster domain only). In Kubernetes mode mirrors are real Services and the cluster's
//! own DNS serves them.
//!
//! [`DnsIndex`] holds the answers (fed by [`run_index`] from a Service watch); the
//! hickory [`ClusterDns`] handler only reads it.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::core::v1::Service;
use strait_api::{Store, StoreError, WatchEvent};

/// TTL of answers: short, so a new mirror or a changed IP is seen quickly.
pub const TTL: u32 = 5;

/// What a name resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name exists: its addresses of the asked type (maybe none).
    Found(Vec<IpAddr>),
    /// A name in the cluster domain that does not exist.
    NxDomain,
    /// Not in the cluster domain.
    Refused,
}

/// Cluster IPs by Service `(namespace, name)`.
type Addresses = BTreeMap<(String, String), Vec<IpAddr>>;

/// The Services' addresses, by `(namespace, name)`.
#[derive(Clone, Default)]
pub struct DnsIndex {
    inner: Arc<RwLock<Addresses>>,
}

fn addresses(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn key(svc: &Service) -> (String, String) {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

impl DnsIndex {
    /// Applies one watch event.
    pub fn on_service(&self, ev: WatchEvent<Service>) {
        let mut map = self.inner.write().expect("dns index lock");
        match ev {
            WatchEvent::Restarted(all) => {
                *map = all.iter().map(|s| (key(s), addresses(s))).collect();
            }
            WatchEvent::Applied(s) => {
                map.insert(key(&s), addresses(&s));
            }
            WatchEvent::Deleted(s) => {
                map.remove(&key(&s));
            }
        }
    }

    /// Answers `name` (any case, with or without the final dot) for `qtype` under `domain`.
    pub fn answer(&self, domain: &str, name: &str, qtype: RecordType) -> Answer {
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
        let map = self.inner.read().expect("dns index lock");
        match labels.as_slice() {
            // The zone itself, `svc.<domain>` and `<ns>.svc.<domain>` exist (no records).
            [""] | ["svc"] => Answer::Found(Vec::new()),
            [ns, "svc"] if map.keys().any(|(n, _)| n == ns) => Answer::Found(Vec::new()),
            [svc, ns, "svc"] => match map.get(&(ns.to_string(), svc.to_string())) {
                Some(ips) => Answer::Found(
                    ips.iter()
                        .copied()
                        .filter(|ip| match qtype {
                            RecordType::A => ip.is_ipv4(),
                            RecordType::AAAA => ip.is_ipv6(),
                            _ => false,
                        })
                        .collect(),
                ),
                None => Answer::NxDomain,
            },
            _ => Answer::NxDomain,
        }
    }
}

/// Keeps `index` in step with the Services of `store` until the watch fails; returns the
/// error (the caller restarts it).
pub async fn run_index<S: Store>(store: S, index: DnsIndex) -> StoreError {
    let mut watch = store.watch::<Service>();
    loop {
        match watch.next().await {
            Some(Ok(ev)) => index.on_service(ev),
            Some(Err(e)) => return e,
            None => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                watch = store.watch::<Service>();
            }
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
        let Ok(info) = request.request_info() else {
            let rsp = MessageResponseBuilder::from_message_request(request)
                .error_msg(&request.metadata, ResponseCode::FormErr);
            return response_handle
                .send_response(rsp)
                .await
                .unwrap_or_else(|_| failed(meta, ResponseCode::ServFail));
        };
        let name = info.query.name().to_string();
        let qtype = info.query.query_type();
        let answer = self.index.answer(&self.domain, &name, qtype);
        let records: Vec<Record> = match &answer {
            Answer::Found(ips) => ips
                .iter()
                .map(|ip| {
                    let rdata = match ip {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    Record::from_rdata(info.query.name().into(), TTL, rdata)
                })
                .collect(),
            _ => Vec::new(),
        };
        meta.authoritative = !matches!(answer, Answer::Refused);
        meta.recursion_available = false;
        meta.response_code = match answer {
            Answer::Found(_) => ResponseCode::NoError,
            Answer::NxDomain => ResponseCode::NXDomain,
            Answer::Refused => ResponseCode::Refused,
        };
        let rsp =
            MessageResponseBuilder::from_message_request(request).build(meta, records.iter(), [], [], []);
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
