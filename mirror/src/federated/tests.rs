//! Federated services, table-driven, without I/O.

use std::net::SocketAddr;

use serde_json::json;
use strait_api::mesh::link::Link;

use super::*;
use crate::reconcile::fold;

fn link(cluster: &str) -> LinkConfig {
    let l: Link = serde_json::from_value(json!({
        "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link",
        "metadata": {"name": cluster, "namespace": "linkerd-multicluster"},
        "spec": {
            "targetClusterName": cluster,
            "clusterCredentialsSecret": format!("cluster-credentials-{cluster}"),
            "gatewayAddress": "198.18.16.2",
            "gatewayPort": "4143",
            "gatewayIdentity": "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
        },
    }))
    .unwrap();
    LinkConfig::from_link(&l).unwrap()
}

fn svc(ns: &str, name: &str, member: bool, ports: &[(&str, i32)]) -> Service {
    let mut labels = serde_json::Map::new();
    labels.insert("app".into(), json!(name));
    if member {
        labels.insert("mirror.linkerd.io/federated".into(), json!("member"));
    }
    let ports: Vec<_> = ports.iter().map(|(n, p)| json!({"name": n, "port": p})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": "1"},
        "spec": {"selector": {"app": name}, "clusterIP": "10.96.0.9", "ports": ports},
    }))
    .unwrap()
}

pub(crate) fn members(cluster: &str, services: &[Service], ready: bool) -> LinkMembers {
    let link = link(cluster);
    let entry: SocketAddr = "127.0.0.1:4150".parse().unwrap();
    LinkMembers {
        services: link_members(&link, services),
        workloads: services
            .iter()
            .map(|s| {
                (
                    reconcile::ns_name(&s.metadata),
                    reconcile::RemoteWorkload {
                        identity: format!("myapp.production.serviceaccount.identity.linkerd.{cluster}"),
                        endpoints: vec![],
                    },
                )
            })
            .collect(),
        gateway: Gateway {
            addresses: vec!["198.18.16.2".parse().unwrap()],
            port: 4143,
            ready,
            // East's members through the gateway's entry of every link, naming it.
            entry: Some(reconcile::Entry {
                addr: entry,
                link: (cluster == "east").then(|| cluster.to_string()),
            }),
        },
        link,
    }
}

fn local(services: &[Service]) -> LocalView {
    let mut v = LocalView {
        namespaces: ["production".to_string()].into(),
        ..Default::default()
    };
    for s in services {
        fold(&mut v, s.clone().into_object(), false);
    }
    v
}

fn apply(view: &mut LocalView, plan: &Plan) {
    for o in &plan.apply {
        fold(view, o.clone(), false);
    }
    for k in &plan.delete {
        let key = (k.namespace.clone(), k.name.clone());
        match k.kind {
            KindId::Service => {
                view.services.remove(&key);
            }
            _ => {
                view.slices.remove(&key);
            }
        }
    }
}

fn fed(view: &LocalView) -> &Service {
    &view.services[&("production".to_string(), "myapp-federated".to_string())]
}

fn annotation<'a>(s: &'a Service, k: &str) -> Option<&'a str> {
    s.metadata.annotations.as_ref()?.get(k).map(String::as_str)
}

#[test]
fn local_and_remote_members_make_one_federated_service_with_linkerds_annotations() {
    let mut view = local(&[svc("production", "myapp", true, &[("http", 80)])]);
    let links = [
        members(
            "east",
            &[svc("production", "myapp", true, &[("http", 80), ("grpc", 9090)])],
            true,
        ),
        members(
            "central",
            &[svc("production", "myapp", true, &[("http", 80)])],
            false,
        ),
    ];
    let plan = plan(&links, &view, Some(&ServiceRange::parse("10.96.0.0/16").unwrap()));
    let keys: Vec<String> = plan.apply.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(keys[0], "service/production/myapp-federated", "Services first");
    apply(&mut view, &plan);
    let f = fed(&view);
    assert_eq!(
        annotation(f, "multicluster.linkerd.io/local-discovery"),
        Some("myapp")
    );
    assert_eq!(
        annotation(f, "multicluster.linkerd.io/remote-discovery"),
        Some("myapp@central,myapp@east")
    );
    let ports: Vec<(Option<String>, i32)> = f
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(
        ports,
        [(Some("http".into()), 80), (Some("grpc".into()), 9090)],
        "ports unioned"
    );
    assert!(f.spec.as_ref().unwrap().cluster_ip.is_some());
    assert!(
        f.spec.as_ref().unwrap().selector.is_none(),
        "no selector: members are annotations"
    );
    // One slice per remote member, at its gateway, carrying the entry and identity.
    let east = &view.slices[&("production".to_string(), "myapp-federated-east".to_string())];
    let labels = east.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["kubernetes.io/service-name"], "myapp-federated");
    assert_eq!(labels["mirror.strait.io/gateway-cluster"], "east");
    assert!(
        !labels.contains_key("mirror.linkerd.io/cluster-name"),
        "no link owns it"
    );
    let ann = east.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        ann["mirror.linkerd.io/remote-svc-fq-name"],
        "myapp.production.svc.cluster.local"
    );
    assert_eq!(ann["mirror.strait.io/gateway-entry"], "127.0.0.1:4150");
    assert_eq!(ann["mirror.strait.io/gateway-link"], "east");
    assert_eq!(
        ann["mirror.strait.io/remote-identity"],
        "myapp.production.serviceaccount.identity.linkerd.east"
    );
    let eps = east.endpoints.as_ref().unwrap();
    assert_eq!(eps[0].addresses, ["198.18.16.2"]);
    assert_eq!(eps[0].conditions.as_ref().unwrap().ready, Some(true));
    assert_eq!(east.ports.as_ref().unwrap().len(), 2, "both ports east has");
    let central = &view.slices[&("production".to_string(), "myapp-federated-central".to_string())];
    let central_ann = central.metadata.annotations.as_ref().unwrap();
    assert!(
        !central_ann.contains_key("mirror.strait.io/gateway-link"),
        "an entry of one link names none"
    );
    assert_eq!(
        central.endpoints.as_ref().unwrap()[0]
            .conditions
            .as_ref()
            .unwrap()
            .ready,
        Some(false),
        "a gateway that is not ready makes its member not ready"
    );
    assert_eq!(
        central.ports.as_ref().unwrap().len(),
        1,
        "only the port central has"
    );
    // A fixed point.
    let again = super::plan(&links, &view, Some(&ServiceRange::parse("10.96.0.0/16").unwrap()));
    assert!(again.is_empty(), "{:?} {:?}", again.apply, again.delete);
}

#[test]
fn members_leave_when_their_label_or_link_goes() {
    let range = ServiceRange::parse("10.96.0.0/16").unwrap();
    let mut view = local(&[svc("production", "myapp", true, &[("http", 80)])]);
    let east = members("east", &[svc("production", "myapp", true, &[("http", 80)])], true);
    let central = members(
        "central",
        &[svc("production", "myapp", true, &[("http", 80)])],
        true,
    );
    let p = plan(&[east.clone(), central.clone()], &view, Some(&range));
    apply(&mut view, &p);
    let ip = fed(&view).spec.as_ref().unwrap().cluster_ip.clone();
    // Central's link goes: its slice goes, the annotation follows, the address stays.
    let p = plan(std::slice::from_ref(&east), &view, Some(&range));
    assert_eq!(
        p.delete.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["endpointslice.discovery.k8s.io/production/myapp-federated-central"]
    );
    apply(&mut view, &p);
    assert_eq!(
        annotation(fed(&view), "multicluster.linkerd.io/remote-discovery"),
        Some("myapp@east")
    );
    assert_eq!(fed(&view).spec.as_ref().unwrap().cluster_ip, ip);
    // East's Service loses the label.
    let unlabelled = members(
        "east",
        &[svc("production", "myapp", false, &[("http", 80)])],
        true,
    );
    let p = plan(std::slice::from_ref(&unlabelled), &view, Some(&range));
    apply(&mut view, &p);
    assert!(!view.slices.keys().any(|(_, n)| n.starts_with("myapp-federated")));
    assert_eq!(
        annotation(fed(&view), "multicluster.linkerd.io/remote-discovery"),
        None
    );
    assert_eq!(
        annotation(fed(&view), "multicluster.linkerd.io/local-discovery"),
        Some("myapp")
    );
    // The local Service loses it too: nothing is left.
    fold(
        &mut view,
        svc("production", "myapp", false, &[("http", 80)]).into_object(),
        false,
    );
    let p = plan(&[unlabelled], &view, Some(&range));
    assert_eq!(
        p.delete.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["service/production/myapp-federated"]
    );
}

#[test]
fn remote_members_alone_make_a_federated_service_and_nothing_foreign_is_touched() {
    let mut view = local(&[]);
    // Someone else's Service holds the name of another federated service.
    let mut theirs = svc("production", "other-federated", false, &[("http", 80)]);
    theirs.metadata.labels = None;
    fold(&mut view, theirs.into_object(), false);
    // A mirror of another cluster is never a member, even when labelled.
    let mut mirror = svc("production", "myapp-north", true, &[("http", 80)]);
    mirror
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("mirror.linkerd.io/mirrored-service".into(), "true".into());
    fold(&mut view, mirror.into_object(), false);
    let east = members(
        "east",
        &[
            svc("production", "myapp", true, &[("http", 80)]),
            svc("production", "other", true, &[("http", 80)]),
            svc("staging", "myapp", true, &[("http", 80)]),
        ],
        true,
    );
    let p = plan(&[east], &view, None);
    let applied: Vec<String> = p.apply.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(
        applied,
        [
            "service/production/myapp-federated",
            "endpointslice.discovery.k8s.io/production/myapp-federated-east"
        ]
    );
    assert!(p.delete.is_empty());
    let reasons: Vec<(&str, &str)> = p
        .skipped
        .iter()
        .map(|s| (s.remote.0.as_str(), s.reason.reason()))
        .collect();
    assert_eq!(
        reasons,
        [("production", "NameTaken"), ("staging", "NamespaceNotFound")]
    );
    apply(&mut view, &p);
    assert_eq!(
        annotation(fed(&view), "multicluster.linkerd.io/local-discovery"),
        None
    );
}

/// The `Mirrored` condition of each entry: (remote ns/name, status, reason, local name).
fn conditions(entries: &[strait_api::mesh::link::ServiceStatus]) -> Vec<(String, String, String, String)> {
    entries
        .iter()
        .map(|e| {
            let r = e.remote_ref.as_ref().unwrap();
            let c = &e.conditions.as_ref().unwrap()[0];
            assert_eq!(c.type_, "Mirrored");
            assert_eq!(e.controller_name.as_deref(), Some("linkerd.io/service-mirror"));
            assert_eq!(r.kind.as_deref(), Some("Service"));
            (
                format!(
                    "{}/{}",
                    r.namespace.as_deref().unwrap(),
                    r.name.as_deref().unwrap()
                ),
                c.status.clone(),
                c.reason.clone().unwrap(),
                c.local_ref.as_ref().unwrap().name.clone().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_remote_member_is_reported_joined_or_with_why_not() {
    let range = ServiceRange::parse("10.96.0.0/16").unwrap();
    let mut view = local(&[svc("production", "myapp", true, &[("http", 80)])]);
    let mut headless = svc("production", "cache", true, &[("redis", 6379)]);
    headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let east = members(
        "east",
        &[
            svc("production", "myapp", true, &[("http", 80)]),
            // No such namespace here.
            svc("staging", "myapp", true, &[("http", 80)]),
            headless,
        ],
        true,
    );
    // Central names port 8080 "http", which the local member's port 80 already is.
    let central = members(
        "central",
        &[svc("production", "myapp", true, &[("http", 8080)])],
        true,
    );
    let (p, outcomes) = plan_members(&[east, central], &view, Some(&range));
    apply(&mut view, &p);
    // The refused member is left out of the federated Service entirely.
    assert_eq!(
        annotation(fed(&view), "multicluster.linkerd.io/remote-discovery"),
        Some("myapp@east")
    );
    assert_eq!(fed(&view).spec.as_ref().unwrap().ports.as_ref().unwrap().len(), 1);
    assert!(
        !view
            .slices
            .contains_key(&("production".to_string(), "myapp-federated-central".to_string()))
    );

    let east_status = link_status("east", &outcomes, None, "2026-01-01T00:00:00Z");
    assert_eq!(
        conditions(&east_status),
        [
            (
                "production/cache".into(),
                "False".into(),
                "InvalidService".into(),
                "cache-federated".into()
            ),
            (
                "production/myapp".into(),
                "True".into(),
                "Mirrored".into(),
                "myapp-federated".into()
            ),
            (
                "staging/myapp".into(),
                "False".into(),
                "NamespaceNotFound".into(),
                "myapp-federated".into()
            ),
        ]
    );
    let message = |entries: &[strait_api::mesh::link::ServiceStatus], i: usize| {
        entries[i].conditions.as_ref().unwrap()[0]
            .message
            .clone()
            .unwrap()
    };
    assert!(
        message(&east_status, 0).contains("headless"),
        "{}",
        message(&east_status, 0)
    );
    assert!(
        message(&east_status, 2).contains("namespace staging does not exist in this cluster"),
        "{}",
        message(&east_status, 2)
    );
    let central_status = link_status("central", &outcomes, None, "2026-01-01T00:00:00Z");
    assert_eq!(
        conditions(&central_status),
        [(
            "production/myapp".into(),
            "False".into(),
            "PortConflict".into(),
            "myapp-federated".into()
        )]
    );
    let m = message(&central_status, 0);
    assert!(
        m.contains("cluster central") && m.contains("port name http is port 8080 here and port 80"),
        "{m}"
    );

    // A second round with nothing changed keeps every transition time; a member that
    // turns joinable changes only its own.
    let again = link_status(
        "east",
        &outcomes,
        Some(&strait_api::mesh::link::LinkStatus {
            mirror_services: None,
            federated_services: Some(east_status.clone()),
        }),
        "2026-01-01T00:05:00Z",
    );
    assert_eq!(again, east_status);
    let fixed = members(
        "central",
        &[svc("production", "myapp", true, &[("http", 80)])],
        true,
    );
    let (_, outcomes) = plan_members(std::slice::from_ref(&fixed), &view, Some(&range));
    let previous = strait_api::mesh::link::LinkStatus {
        mirror_services: None,
        federated_services: Some(central_status),
    };
    let now = link_status("central", &outcomes, Some(&previous), "2026-01-01T00:10:00Z");
    assert_eq!(conditions(&now)[0].1, "True");
    assert_eq!(
        now[0].conditions.as_ref().unwrap()[0]
            .last_transition_time
            .as_deref(),
        Some("2026-01-01T00:10:00Z")
    );
}

#[test]
fn a_port_on_one_number_with_two_protocols_conflicts() {
    let view = local(&[svc("production", "dns", true, &[("dns", 53)])]);
    let mut udp = svc("production", "dns", true, &[("dns", 53)]);
    udp.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
    let (p, outcomes) = plan_members(&[members("east", &[udp], true)], &view, None);
    assert_eq!(outcomes.len(), 1);
    let why = outcomes[0].skipped.as_ref().unwrap();
    assert_eq!(why.reason(), "PortConflict");
    assert!(
        why.message(&outcomes[0].remote, &outcomes[0].federated)
            .contains("port 53 is UDP here and TCP in another member"),
        "{why:?}"
    );
    // The local member alone still makes the federated Service.
    let keys: Vec<String> = p.apply.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(keys, ["service/production/dns-federated"]);
}

fn link_object(cluster: &str, status: Vec<strait_api::mesh::link::ServiceStatus>) -> Link {
    let mut l: Link = serde_json::from_value(json!({
        "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link",
        "metadata": {"name": cluster, "namespace": "linkerd-multicluster"},
        "spec": {"targetClusterName": cluster},
    }))
    .unwrap();
    l.status = Some(strait_api::mesh::link::LinkStatus {
        mirror_services: None,
        federated_services: Some(status),
    });
    l
}

#[test]
fn check_passes_on_what_the_plan_made_and_names_each_inconsistency() {
    let mut view = local(&[svc("production", "myapp", true, &[("http", 80)])]);
    let links = [
        members("east", &[svc("production", "myapp", true, &[("http", 80)])], true),
        members(
            "central",
            &[svc("production", "myapp", true, &[("http", 8080)])],
            true,
        ),
    ];
    let (p, outcomes) = plan_members(&links, &view, None);
    apply(&mut view, &p);
    let now = "2026-01-01T00:00:00Z";
    let east = link_object("east", link_status("east", &outcomes, None, now));
    let central = link_object("central", link_status("central", &outcomes, None, now));
    let services: Vec<Service> = view.services.values().cloned().collect();
    let slices: Vec<EndpointSlice> = view.slices.values().cloned().collect();
    let alive = BTreeMap::from([("east".to_string(), true), ("central".to_string(), true)]);

    // East's member joined and is served; central's was refused, with what to do.
    let found = check(&[east.clone(), central.clone()], &services, &slices, Some(&alive));
    let verdicts: Vec<(&str, bool)> = found.iter().map(|f| (f.what.as_str(), f.ok)).collect();
    assert_eq!(
        verdicts,
        [
            (
                "federated members of cluster east have joined their federated services",
                true
            ),
            (
                "federated members of cluster central have joined their federated services",
                false
            ),
            (
                "federated service production/myapp-federated reaches all its members",
                true
            ),
        ]
    );
    let hint = found[1].hint.as_deref().unwrap();
    assert!(
        hint.contains(
            "production/myapp of cluster central is not in production/myapp-federated (PortConflict)"
        ),
        "{hint}"
    );
    assert!(
        hint.contains("give every member of myapp the same port names"),
        "{hint}"
    );

    // Bad states, one at a time.
    let only_east = [east.clone()];
    // The federated Service is gone although the Link reports the member joined.
    let without: Vec<Service> = services
        .iter()
        .filter(|s| s.metadata.name.as_deref() != Some("myapp-federated"))
        .cloned()
        .collect();
    let f = check(&only_east, &without, &slices, None);
    assert!(
        !f[0].ok
            && f[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("that Service does not exist"),
        "{f:?}"
    );
    // Its gateway is down.
    let down = BTreeMap::from([("east".to_string(), false)]);
    let f = check(&only_east, &services, &slices, Some(&down));
    assert!(f[0].ok);
    assert!(
        !f[1].ok
            && f[1]
                .hint
                .as_deref()
                .unwrap()
                .contains("the gateway of cluster east is not alive"),
        "{f:?}"
    );
    // Its slice is missing.
    let f = check(&only_east, &services, &[], None);
    assert!(
        !f[1].ok
            && f[1]
                .hint
                .as_deref()
                .unwrap()
                .contains("no EndpointSlice production/myapp-federated-east"),
        "{f:?}"
    );
    // Its Link is gone: the federated Service lists a member of no linked cluster.
    let f = check(&[], &services, &slices, None);
    assert_eq!(f.len(), 1);
    assert!(
        !f[0].ok
            && f[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("no Link targets cluster east"),
        "{f:?}"
    );
    // The federated Service does not list the member the Link reports.
    let mut stale = services.clone();
    for s in &mut stale {
        if let Some(a) = s.metadata.annotations.as_mut() {
            a.remove("multicluster.linkerd.io/remote-discovery");
        }
    }
    let f = check(&only_east, &stale, &slices, None);
    assert!(
        !f[0].ok && f[0].hint.as_deref().unwrap().contains("does not list myapp@east"),
        "{f:?}"
    );
}
