//! `strait gateway --watch-links`: the gateway's links follow the cluster's `Link`
//! objects.
//!
//! Every Link names a link: its `targetClusterName` is the link's name (what proxies and
//! mirrors name at the gateway's proxy entry), its `gatewayAddresses` and `gatewayPort`
//! where the remote gateway's QUIC endpoint listens (4143/udp beside Linkerd's 4143/tcp),
//! its `gatewayIdentity` what the remote gateway must prove. On every change of the Links,
//! and every [`RESOLVE_PERIOD`] (gateway addresses may be DNS names whose answers change),
//! the whole set is read again and handed to [`Links::set_watched`], which starts, restarts
//! and stops links to match.
//!
//! Nothing already working is lost to bad input: a Link that does not read (a missing or
//! malformed field, an address that does not resolve) keeps the link it had, if any, and
//! is logged with the Link, the field and what to do. A Link that is deleted stops its
//! link. Two Links of one target cluster: the first by `namespace/name` wins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use strait_api::Store;
use strait_api::mesh::link::Link;
use strait_api::store::WatchEvent;
use strait_gateway::{Changes, LinkSpec, Links};
use strait_identity::IdentityName;
use strait_mirror::controller::link_key;

/// How often the Links are read again when nothing changes (re-resolving DNS names).
pub const RESOLVE_PERIOD: Duration = Duration::from_secs(10);

/// A Link read into what the gateway dials, before its addresses are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The link's name: the target cluster.
    pub name: String,
    /// The gateway's addresses (IPs or DNS names), in the Link's order.
    pub hosts: Vec<String>,
    /// The gateway's port.
    pub port: u16,
    /// The identity the remote gateway must present.
    pub identity: IdentityName,
}

/// Reads a Link (pure). The error names the Link, the field and what was expected.
pub fn wanted(link: &Link) -> Result<Wanted, String> {
    let cfg = strait_mirror::LinkConfig::from_link(link).map_err(|e| e.to_string())?;
    let identity = cfg.gateway_identity.parse::<IdentityName>().map_err(|e| {
        format!(
            "link {}/{}: spec.gatewayIdentity: expected a mesh identity such as linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local, found {:?} ({e})",
            cfg.namespace, cfg.name, cfg.gateway_identity
        )
    })?;
    Ok(Wanted {
        name: cfg.target_cluster,
        hosts: cfg.gateway_addresses,
        port: cfg.gateway_port,
        identity,
    })
}

/// The first of `hosts` (in the Link's order) that is an IP or resolves, on `port`.
async fn resolve(hosts: &[String], port: u16) -> Result<SocketAddr, String> {
    let mut errors = Vec::new();
    for host in hosts {
        match strait_mirror::controller::resolve(std::slice::from_ref(host), port).await {
            Ok(ips) => match ips.first() {
                Some(ip) => return Ok(SocketAddr::new(*ip, port)),
                None => errors.push(format!("{host}: no address")),
            },
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// The links the Links ask for. `last` holds each Link's last good spec (by
/// `namespace/name`): a Link that no longer reads or resolves keeps it.
async fn specs(links: &BTreeMap<String, Link>, last: &mut BTreeMap<String, LinkSpec>) -> Vec<LinkSpec> {
    last.retain(|key, _| links.contains_key(key));
    let mut out: BTreeMap<String, (String, LinkSpec)> = BTreeMap::new();
    for (key, link) in links {
        let read = match wanted(link) {
            Ok(w) => match resolve(&w.hosts, w.port).await {
                Ok(addr) => Ok(LinkSpec {
                    name: w.name,
                    addr,
                    identity: w.identity,
                }),
                Err(e) => Err(format!(
                    "link {key}: spec.gatewayAddress: no address resolves ({e}); check the Link's gateway addresses"
                )),
            },
            Err(e) => Err(e),
        };
        let spec = match read {
            Ok(spec) => {
                last.insert(key.clone(), spec.clone());
                spec
            }
            Err(e) => match last.get(key) {
                Some(kept) => {
                    tracing::warn!(link = %key, error = %e, "keeping the link as it was; fix the Link");
                    kept.clone()
                }
                None => {
                    tracing::warn!(link = %key, error = %e, "no link for this Link until it is fixed");
                    continue;
                }
            },
        };
        if let Some((first, _)) = out.get(&spec.name) {
            tracing::warn!(link = %key, other = %first, cluster = %spec.name, "two Links name one target cluster; the first is dialed");
            continue;
        }
        out.insert(spec.name.clone(), (key.clone(), spec));
    }
    out.into_values().map(|(_, s)| s).collect()
}

/// Where [`follow`] puts the links it reads: the gateway's [`Links`].
pub trait LinkSet: Send + Sync + 'static {
    /// Makes the watched links exactly `specs` (see [`Links::set_watched`]).
    fn set_watched(&self, specs: Vec<LinkSpec>) -> Result<Changes, String>;
}

impl LinkSet for Links {
    fn set_watched(&self, specs: Vec<LinkSpec>) -> Result<Changes, String> {
        Links::set_watched(self, specs).map_err(|e| e.to_string())
    }
}

/// Follows the Links of `store` into `links` until aborted.
pub async fn follow<S: Store>(store: S, links: impl LinkSet) {
    let mut all: BTreeMap<String, Link> = BTreeMap::new();
    let mut last = BTreeMap::new();
    let mut synced = false;
    let mut watch = store.watch::<Link>();
    let mut tick = tokio::time::interval(RESOLVE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = watch.next() => match ev {
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    watch = store.watch::<Link>();
                    continue;
                }
                Some(Ok(WatchEvent::Restarted(every))) => {
                    synced = true;
                    all = every.into_iter().map(|l| (link_key(&l), l)).collect();
                }
                Some(Ok(WatchEvent::Applied(l))) => {
                    all.insert(link_key(&l), l);
                }
                Some(Ok(WatchEvent::Deleted(l))) => {
                    all.remove(&link_key(&l));
                }
                Some(Err(e)) => {
                    // Links stay as they are until the watch is back.
                    tracing::warn!(error = %e, "watch of Links failed; links stay as they are");
                    continue;
                }
            },
            _ = tick.tick() => {}
        }
        if !synced {
            continue;
        }
        let specs = specs(&all, &mut last).await;
        match links.set_watched(specs) {
            Ok(c) => {
                for name in &c.added {
                    tracing::info!(link = %name, "link added from its Link");
                }
                for name in &c.replaced {
                    tracing::info!(link = %name, "link changed by its Link; reconnecting");
                }
                for name in &c.removed {
                    tracing::info!(link = %name, "Link deleted; link stopped");
                }
                for name in &c.shadowed {
                    tracing::warn!(link = %name, "a Link names a cluster --link already configures; the flag wins");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot set up the links' TLS; the links stay as they were"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, spec: serde_json::Value) -> Link {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.linkerd.io/v1alpha3",
            "kind": "Link",
            "metadata": {"name": name, "namespace": "linkerd-multicluster"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn good(cluster: &str, address: &str) -> serde_json::Value {
        serde_json::json!({
            "targetClusterName": cluster,
            "clusterCredentialsSecret": format!("cluster-credentials-{cluster}"),
            "gatewayAddress": address,
            "gatewayPort": "4143",
            "gatewayIdentity": "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
        })
    }

    #[test]
    fn a_link_reads_into_the_link_it_asks_for() {
        let w = wanted(&link("east", good("east", "198.18.2.1, gw.east.example"))).unwrap();
        assert_eq!(w.name, "east");
        assert_eq!(w.hosts, ["198.18.2.1", "gw.east.example"]);
        assert_eq!(w.port, 4143);
        assert_eq!(
            w.identity.as_str(),
            "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
        );
    }

    #[test]
    fn a_bad_link_names_the_link_and_field() {
        let mut no_port = good("east", "198.18.2.1");
        no_port["gatewayPort"] = "http".into();
        let mut bad_id = good("east", "198.18.2.1");
        bad_id["gatewayIdentity"] = "not an identity".into();
        let mut no_address = good("east", "198.18.2.1");
        no_address.as_object_mut().unwrap().remove("gatewayAddress");
        for (spec, expected) in [
            (no_port, "spec.gatewayPort: expected a port number"),
            (bad_id, "spec.gatewayIdentity: expected a mesh identity"),
            (
                no_address,
                "spec.gatewayAddress: expected the gateway's addresses",
            ),
        ] {
            let e = wanted(&link("east", spec)).unwrap_err();
            assert!(
                e.contains("linkerd-multicluster/east") && e.contains(expected),
                "{e}"
            );
        }
    }

    type Set = Vec<(String, String)>;

    /// Records every set of links it is given, in order.
    #[derive(Clone)]
    struct Recorder(tokio::sync::watch::Sender<Vec<Set>>);

    impl LinkSet for Recorder {
        fn set_watched(&self, specs: Vec<LinkSpec>) -> Result<Changes, String> {
            let set = specs
                .iter()
                .map(|s| (s.name.clone(), s.addr.to_string()))
                .collect();
            self.0.send_modify(|history| history.push(set));
            Ok(Changes::default())
        }
    }

    fn set(links: &[(&str, &str)]) -> Set {
        links
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// Waits (bounded) until the last set given is `want`; returns every set given.
    async fn until_last(rx: &mut tokio::sync::watch::Receiver<Vec<Set>>, want: &[(&str, &str)]) -> Vec<Set> {
        let want = set(want);
        let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|h| h.last() == Some(&want)))
            .await
            .map(|history| history.unwrap().clone());
        waited.unwrap_or_else(|_| panic!("the links never became {want:?}: {:?}", *rx.borrow()))
    }

    fn object(l: &Link) -> strait_api::Object {
        use strait_api::Kind;
        l.clone().into_object()
    }

    #[tokio::test]
    async fn the_links_follow_links_applied_changed_and_deleted_in_a_store() {
        use strait_api::store::local::LocalStore;
        let store = LocalStore::in_memory();
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "linkerd-multicluster"}}))
                .unwrap();
        store
            .apply(vec![strait_api::Kind::into_object(ns)])
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(Vec::new());
        let task = tokio::spawn(follow(store.clone(), Recorder(tx)));
        let mut expect = async |want: &[(&str, &str)]| until_last(&mut rx, want).await;
        let east = link("east", good("east", "198.18.2.1"));
        store.apply(vec![object(&east)]).await.unwrap();
        expect(&[("east", "198.18.2.1:4143")]).await;
        store
            .apply(vec![object(&link("south", good("south", "198.18.3.1")))])
            .await
            .unwrap();
        expect(&[("east", "198.18.2.1:4143"), ("south", "198.18.3.1:4143")]).await;
        // East's gateway moves: its link follows.
        store
            .apply(vec![object(&link("east", good("east", "198.18.2.9")))])
            .await
            .unwrap();
        expect(&[("east", "198.18.2.9:4143"), ("south", "198.18.3.1:4143")]).await;
        // South's Link is deleted: its link goes.
        store
            .delete(&object(&link("south", good("south", "198.18.3.1"))).key())
            .await
            .unwrap();
        expect(&[("east", "198.18.2.9:4143")]).await;
        task.abort();
    }

    /// The same against the Kubernetes API (kube's mock service): the list of Links, then
    /// a watch that adds one and deletes the other.
    #[tokio::test]
    async fn the_links_follow_links_in_kubernetes() {
        use http::{Request, Response, StatusCode};
        use kube::client::Body;
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let store = strait_api::store::kube::KubeStore::new(kube::Client::new(svc, "default"));
        let json = |v: &serde_json::Value| {
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(v).unwrap()))
                .unwrap()
        };
        let as_json = |l: Link| {
            let mut v = serde_json::to_value(l).unwrap();
            v["metadata"]["resourceVersion"] = "11".into();
            v
        };
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("the list of Links");
            assert!(
                req.uri().path().starts_with("/apis/multicluster.linkerd.io/")
                    && req.uri().path().ends_with("/links"),
                "{}",
                req.uri()
            );
            send.send_response(json(&serde_json::json!({
                "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "LinkList",
                "metadata": {"resourceVersion": "10"},
                "items": [as_json(link("east", good("east", "198.18.2.1")))],
            })));
            let (req, send) = handle.next_request().await.expect("the watch of Links");
            assert!(req.uri().query().unwrap_or_default().contains("watch=true"));
            let mut lines = Vec::new();
            for (ty, l) in [
                ("ADDED", link("south", good("south", "198.18.3.1"))),
                ("DELETED", link("east", good("east", "198.18.2.1"))),
            ] {
                lines.extend(
                    serde_json::to_vec(&serde_json::json!({"type": ty, "object": as_json(l)})).unwrap(),
                );
                lines.push(b'\n');
            }
            send.send_response(
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(lines))
                    .unwrap(),
            );
            handle
        });
        let (tx, mut rx) = tokio::sync::watch::channel(Vec::new());
        let task = tokio::spawn(follow(store, Recorder(tx)));
        let history = until_last(&mut rx, &[("south", "198.18.3.1:4143")]).await;
        let east = set(&[("east", "198.18.2.1:4143")]);
        let both = set(&[("east", "198.18.2.1:4143"), ("south", "198.18.3.1:4143")]);
        let first_east = history.iter().position(|h| *h == east).expect("east alone first");
        let then_both = history
            .iter()
            .position(|h| *h == both)
            .expect("then east and south");
        assert!(first_east < then_both, "{history:?}");
        task.abort();
        drop(server);
    }

    #[tokio::test]
    async fn a_link_that_stops_reading_keeps_its_last_good_spec_and_a_deleted_one_goes() {
        let mut links = BTreeMap::new();
        let mut last = BTreeMap::new();
        links.insert("ns/east".to_string(), link("east", good("east", "198.18.2.1")));
        links.insert("ns/south".to_string(), link("south", good("south", "198.18.3.1")));
        // A second Link of east: the first by key wins.
        links.insert(
            "ns/z-east".to_string(),
            link("z-east", good("east", "198.18.9.9")),
        );
        let got = specs(&links, &mut last).await;
        let addrs: Vec<(String, String)> = got.iter().map(|s| (s.name.clone(), s.addr.to_string())).collect();
        assert_eq!(
            addrs,
            [
                ("east".to_string(), "198.18.2.1:4143".to_string()),
                ("south".to_string(), "198.18.3.1:4143".to_string())
            ]
        );
        // East's Link is broken by an edit: its link stays as it was.
        let mut broken = good("east", "198.18.2.1");
        broken["gatewayPort"] = "0".into();
        links.insert("ns/east".to_string(), link("east", broken));
        links.remove("ns/z-east");
        // South's Link is deleted: its link goes.
        links.remove("ns/south");
        let got = specs(&links, &mut last).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].addr.to_string(), "198.18.2.1:4143");
        // A Link that never read gives no link.
        let mut never = good("north", "198.18.4.1");
        never["targetClusterName"] = "North".into();
        links.insert("ns/north".to_string(), link("north", never));
        assert_eq!(specs(&links, &mut last).await.len(), 1);
    }
}
