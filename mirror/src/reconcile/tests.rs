//! The mirror's decisions, table-driven, without I/O.

use serde_json::json;
use strait_api::mesh::link::Link;

use super::*;

pub(crate) fn link() -> LinkConfig {
    let l: Link = serde_json::from_value(json!({
        "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link",
        "metadata": {"name": "east", "namespace": "linkerd-multicluster"},
        "spec": {
            "targetClusterName": "east",
            "clusterCredentialsSecret": "cluster-credentials-east",
            "gatewayAddress": "127.0.0.2",
            "gatewayPort": "4143",
            "gatewayIdentity": "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
            "excludedLabels": ["internal.example.com/*"],
            "excludedAnnotations": ["secret.example.com/token"],
        },
    }))
    .unwrap();
    LinkConfig::from_link(&l).unwrap()
}

pub(crate) fn remote(ns: &str, name: &str, exported: Option<&str>, rv: &str) -> Service {
    let mut labels = serde_json::Map::new();
    labels.insert("app".into(), json!(name));
    labels.insert("internal.example.com/team".into(), json!("a"));
    if let Some(e) = exported {
        labels.insert("mirror.linkerd.io/exported".into(), json!(e));
    }
    // A cluster IP of its own (a store, like Kubernetes, gives one to one Service).
    let h = format!("{ns}/{name}")
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let ip = format!("10.1.{}.{}", (h >> 8) % 256, h % 254 + 1);
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "labels": labels,
            "annotations": {"owner": "team-a", "secret.example.com/token": "x",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"selector": {"app": name}, "clusterIP": ip,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "grpc", "port": 9090, "protocol": "TCP"}]},
    }))
    .unwrap()
}

fn view(namespaces: &[&str]) -> LocalView {
    LocalView {
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn gw(ready: bool) -> Gateway {
    Gateway {
        addresses: vec!["127.0.0.2".parse().unwrap()],
        port: 4143,
        ready,
        entry: None,
    }
}

fn keys(objs: &[Object]) -> Vec<String> {
    objs.iter().map(|o| o.key().to_string()).collect()
}

/// Applies a plan to a view, as the store would.
fn run(view: &mut LocalView, plan: &Plan) {
    for o in &plan.apply {
        fold(view, o.clone(), false);
    }
    for k in &plan.delete {
        match k.kind {
            KindId::Service => view.services.remove(&(k.namespace.clone(), k.name.clone())),
            _ => view
                .slices
                .remove(&(k.namespace.clone(), k.name.clone()))
                .map(|_| Service::default()),
        };
    }
}

#[test]
fn an_exported_service_gets_a_mirror_and_gateway_endpoints() {
    let l = link();
    let svcs = [remote("production", "myapp", Some("true"), "7")];
    let p = plan(
        &l,
        &svcs,
        &BTreeMap::new(),
        &view(&["production"]),
        &gw(true),
        None,
    );
    assert_eq!(
        keys(&p.apply),
        vec![
            "service/production/myapp-east",
            "endpointslice.discovery.k8s.io/production/myapp-east-gateway"
        ]
    );
    let Object::Service(m) = &p.apply[0] else { panic!() };
    let labels = m.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["mirror.linkerd.io/mirrored-service"], "true");
    assert_eq!(labels["mirror.linkerd.io/cluster-name"], "east");
    assert_eq!(labels["app"], "myapp");
    assert!(
        !labels.contains_key("mirror.linkerd.io/exported"),
        "the export label is not copied"
    );
    assert!(
        !labels.contains_key("internal.example.com/team"),
        "excluded label"
    );
    let ann = m.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["mirror.linkerd.io/remote-resource-version"], "7");
    assert_eq!(
        ann["mirror.linkerd.io/remote-svc-fq-name"],
        "myapp.production.svc.cluster.local"
    );
    assert_eq!(
        ann["mirror.linkerd.io/remote-gateway-identity"],
        "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(ann["owner"], "team-a");
    assert!(
        !ann.contains_key("secret.example.com/token"),
        "excluded annotation"
    );
    assert!(!ann.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    let spec = m.spec.as_ref().unwrap();
    assert_eq!(spec.selector, None, "a mirror selects no pods");
    assert_eq!(spec.cluster_ip, None, "Kubernetes allocates the cluster IP");
    let ports: Vec<_> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.port, p.target_port.clone()))
        .collect();
    assert_eq!(
        ports,
        vec![("http".into(), 80, None), ("grpc".into(), 9090, None)]
    );
    let Object::EndpointSlice(s) = &p.apply[1] else {
        panic!()
    };
    let sl = s.metadata.labels.as_ref().unwrap();
    assert_eq!(sl["kubernetes.io/service-name"], "myapp-east");
    assert_eq!(
        sl["endpointslice.kubernetes.io/managed-by"],
        "linkerd-service-mirror"
    );
    let eps = s.endpoints.clone().unwrap_or_default();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].addresses, vec!["127.0.0.2"]);
    assert_eq!(eps[0].conditions.as_ref().unwrap().ready, Some(true));
    let sports: Vec<_> = s
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.port.unwrap()))
        .collect();
    assert_eq!(sports, vec![("http".into(), 4143), ("grpc".into(), 4143)]);
    assert_eq!(
        p.mirrors,
        vec![(
            ("production".into(), "myapp".into()),
            "myapp-east".into(),
            Mode::Gateway
        )]
    );
}

#[test]
fn selection_modes_and_skips() {
    let l = link();
    // (remote Service, local namespaces, objects applied, skip reason)
    type Case<'a> = (Service, &'a [&'a str], Vec<&'a str>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            remote("production", "a", None, "1"),
            &["production"],
            vec![],
            None,
        ),
        (
            remote("production", "a", Some("false"), "1"),
            &["production"],
            vec![],
            None,
        ),
        (
            remote("production", "a", Some("remote-discovery"), "1"),
            &["production"],
            vec![
                "service/production/a-east",
                "endpointslice.discovery.k8s.io/production/a-east-gateway",
            ],
            None,
        ),
        (
            remote("missing", "a", Some("true"), "1"),
            &["production"],
            vec![],
            Some("NamespaceNotFound"),
        ),
        (
            remote("production", &"x".repeat(60), Some("true"), "1"),
            &["production"],
            vec![],
            Some("NameTooLong"),
        ),
    ];
    for (svc, namespaces, want, skip) in cases {
        let p = plan(&l, [&svc], &BTreeMap::new(), &view(namespaces), &gw(true), None);
        assert_eq!(keys(&p.apply), want, "{:?}", svc.metadata);
        assert_eq!(
            p.skipped.first().map(|s| s.reason.reason()),
            skip,
            "{:?}",
            svc.metadata
        );
    }
    // Remote discovery: Linkerd's annotations on the Service; Strait reaches the remote
    // endpoints through the gateway path, so its slice is the gateway, marked with the
    // cluster, with the entry and the remote workload identity when both are known.
    let svc = remote("production", "a", Some("remote-discovery"), "1");
    let identities = BTreeMap::from([(
        ("production".to_string(), "a".to_string()),
        RemoteWorkload {
            identity: "a.production.serviceaccount.identity.linkerd.cluster.local".to_string(),
            endpoints: vec!["10.42.0.7".parse().unwrap(), "10.42.0.8".parse().unwrap()],
        },
    )]);
    let entry = Gateway {
        entry: Some(Entry {
            addr: "127.0.0.1:4150".parse().unwrap(),
            link: None,
        }),
        ..gw(true)
    };
    let p = plan(&l, [&svc], &identities, &view(&["production"]), &entry, None);
    let ann = p.apply[0].meta().annotations.clone().unwrap();
    assert_eq!(ann["multicluster.linkerd.io/remote-discovery"], "east");
    assert_eq!(ann["multicluster.linkerd.io/remote-service"], "a");
    assert!(!ann.contains_key("mirror.linkerd.io/remote-gateway-identity"));
    let slice = p.apply[1].meta();
    assert_eq!(
        slice.labels.as_ref().unwrap()["mirror.strait.io/gateway-cluster"],
        "east"
    );
    let sann = slice.annotations.as_ref().unwrap();
    assert_eq!(sann["mirror.strait.io/gateway-entry"], "127.0.0.1:4150");
    assert_eq!(
        sann["mirror.strait.io/remote-identity"],
        "a.production.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(sann["mirror.strait.io/remote-endpoints"], "10.42.0.7,10.42.0.8");
    assert_eq!(
        sann["mirror.linkerd.io/remote-svc-fq-name"],
        "a.production.svc.cluster.local"
    );
    // A mirror in the target cluster is never mirrored back.
    let mut m = remote("production", "b-west", Some("true"), "1");
    m.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("mirror.linkerd.io/mirrored-service".into(), "true".into());
    assert!(
        plan(
            &l,
            [&m],
            &BTreeMap::new(),
            &view(&["production"]),
            &gw(true),
            None
        )
        .apply
        .is_empty()
    );
}

#[test]
fn objects_it_does_not_own_are_left_alone() {
    let l = link();
    let mut v = view(&["production"]);
    // A user's own Service happens to be called myapp-east.
    let mut theirs = remote("production", "myapp-east", None, "3");
    theirs.metadata.labels = None;
    v.services
        .insert(("production".into(), "myapp-east".into()), theirs);
    // Another link's mirror (cluster north) is not ours either.
    let mut north = mirror_service(
        &l,
        &remote("production", "other", Some("true"), "1"),
        Mode::Gateway,
        None,
        None,
    );
    north.metadata.name = Some("other-north".into());
    north
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("mirror.linkerd.io/cluster-name".into(), "north".into());
    v.services
        .insert(("production".into(), "other-north".into()), north);
    let svcs = [remote("production", "myapp", Some("true"), "1")];
    let p = plan(&l, &svcs, &BTreeMap::new(), &v, &gw(true), None);
    assert!(
        p.apply.is_empty() && p.delete.is_empty(),
        "{:?} {:?}",
        keys(&p.apply),
        p.delete
    );
    assert_eq!(
        p.skipped[0].reason,
        SkipReason::NameTaken(ObjectKey::new(KindId::Service, "production", "myapp-east"))
    );
    assert!(
        p.skipped[0]
            .reason
            .message(&p.skipped[0].remote, "myapp-east")
            .contains("rename or delete it")
    );
}

#[test]
fn plans_reach_a_fixed_point_and_follow_changes() {
    let l = link();
    let mut v = view(&["production"]);
    let mut svcs = vec![
        remote("production", "myapp", Some("true"), "1"),
        remote("production", "web", Some("true"), "1"),
    ];
    let p = plan(&l, &svcs, &BTreeMap::new(), &v, &gw(false), None);
    assert_eq!(p.apply.len(), 4);
    run(&mut v, &p);
    assert!(
        plan(&l, &svcs, &BTreeMap::new(), &v, &gw(false), None).is_empty(),
        "a fixed point"
    );
    // The gateway comes up: only the slices change.
    let p = plan(&l, &svcs, &BTreeMap::new(), &v, &gw(true), None);
    assert_eq!(
        keys(&p.apply),
        vec![
            "endpointslice.discovery.k8s.io/production/myapp-east-gateway",
            "endpointslice.discovery.k8s.io/production/web-east-gateway"
        ]
    );
    run(&mut v, &p);
    // A remote change (new resourceVersion) updates the mirror only.
    svcs[0] = remote("production", "myapp", Some("true"), "2");
    let p = plan(&l, &svcs, &BTreeMap::new(), &v, &gw(true), None);
    assert_eq!(keys(&p.apply), vec!["service/production/myapp-east"]);
    run(&mut v, &p);
    // Unexport: the mirror and its slice go, slice first.
    svcs[1]
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("mirror.linkerd.io/exported");
    let p = plan(&l, &svcs, &BTreeMap::new(), &v, &gw(true), None);
    assert!(p.apply.is_empty());
    assert_eq!(
        p.delete.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            "endpointslice.discovery.k8s.io/production/web-east-gateway",
            "service/production/web-east"
        ]
    );
    run(&mut v, &p);
    assert!(plan(&l, &svcs, &BTreeMap::new(), &v, &gw(true), None).is_empty());
    // The remote Service is deleted.
    let p = plan(&l, [], &BTreeMap::new(), &v, &gw(true), None);
    assert_eq!(p.delete.len(), 2);
}

#[test]
fn local_mode_allocates_stable_cluster_ips_in_the_range() {
    let l = link();
    let range = ServiceRange::parse("10.96.0.0/24").unwrap();
    let mut v = view(&["production"]);
    let svcs = [
        remote("production", "myapp", Some("true"), "1"),
        remote("production", "web", Some("true"), "1"),
    ];
    let p = plan(&l, &svcs, &BTreeMap::new(), &v, &gw(true), Some(&range));
    let ips: Vec<Ipv4Addr> = p
        .apply
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) => s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok(),
            _ => None,
        })
        .collect();
    assert_eq!(ips.len(), 2);
    assert_ne!(ips[0], ips[1]);
    for ip in &ips {
        assert_eq!(ip.octets()[..3], [10, 96, 0]);
        assert!(ip.octets()[3] != 0 && ip.octets()[3] != 255);
    }
    run(&mut v, &p);
    // Replanning keeps the addresses.
    assert!(plan(&l, &svcs, &BTreeMap::new(), &v, &gw(true), Some(&range)).is_empty());
    // A full range is reported, not overflowed.
    let tiny = ServiceRange::parse("10.97.0.0/30").unwrap();
    let three: Vec<Service> = ["a", "b", "c"]
        .iter()
        .map(|n| remote("production", n, Some("true"), "1"))
        .collect();
    let p = plan(
        &l,
        &three,
        &BTreeMap::new(),
        &view(&["production"]),
        &gw(true),
        Some(&tiny),
    );
    assert_eq!(p.mirrors.len(), 2);
    assert_eq!(p.skipped[0].reason, SkipReason::NoClusterIp);
    for bad in ["10.0.0.0", "10.0.0.0/31", "10.0.0.0/4", "x/16"] {
        assert!(
            ServiceRange::parse(bad).unwrap_err().contains("an IPv4 range"),
            "{bad}"
        );
    }
}

fn pod(name: &str, sa: &str, app: &str, meshed: bool, phase: &str) -> Pod {
    let mut labels = json!({"app": app});
    if meshed {
        labels["linkerd.io/control-plane-ns"] = json!("linkerd");
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "production", "labels": labels},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "x"}]},
        "status": {"phase": phase},
    }))
    .unwrap()
}

#[test]
fn the_remote_identity_comes_from_the_selected_meshed_pods_service_account() {
    let l = link();
    let svc = remote("production", "myapp", Some("true"), "1");
    let id = |sa: &str| format!("{sa}.production.serviceaccount.identity.linkerd.cluster.local");
    let cases: Vec<(Vec<Pod>, Option<String>)> = vec![
        (
            vec![pod("a", "myapp", "myapp", true, "Running")],
            Some(id("myapp")),
        ),
        // Unmeshed, finished and unselected pods do not count.
        (
            vec![
                pod("a", "web", "myapp", false, "Running"),
                pod("b", "web", "myapp", true, "Failed"),
                pod("c", "web", "other", true, "Running"),
            ],
            None,
        ),
        // The service account with the most pods wins; ties go to the first name.
        (
            vec![
                pod("a", "zeta", "myapp", true, "Running"),
                pod("b", "zeta", "myapp", true, "Running"),
                pod("c", "alpha", "myapp", true, "Running"),
            ],
            Some(id("zeta")),
        ),
        (
            vec![
                pod("a", "zeta", "myapp", true, "Running"),
                pod("c", "alpha", "myapp", true, "Running"),
            ],
            Some(id("alpha")),
        ),
    ];
    for (pods, want) in cases {
        let got = remote_workload(&l, &svc, &pods).map(|w| w.identity);
        assert_eq!(got, want, "{pods:?}");
    }
    // No selector, no identity.
    let mut bare = svc.clone();
    bare.spec.as_mut().unwrap().selector = None;
    assert_eq!(
        remote_workload(&l, &bare, &[pod("a", "myapp", "myapp", true, "Running")]),
        None
    );
}

#[test]
fn the_remote_endpoints_are_the_ready_addresses_of_the_chosen_identity() {
    let l = link();
    let svc = remote("production", "myapp", Some("true"), "1");
    let at = |mut p: Pod, ip: &str, ready: Option<&str>| {
        let status = p.status.as_mut().unwrap();
        status.pod_ip = Some(ip.to_string());
        status.conditions =
            ready.map(|r| vec![serde_json::from_value(json!({"type": "Ready", "status": r})).unwrap()]);
        p
    };
    let pods = vec![
        at(pod("a", "myapp", "myapp", true, "Running"), "10.42.0.8", None),
        at(
            pod("b", "myapp", "myapp", true, "Running"),
            "10.42.0.7",
            Some("True"),
        ),
        // Not ready by its condition, or not running without one: left out.
        at(
            pod("c", "myapp", "myapp", true, "Running"),
            "10.42.0.9",
            Some("False"),
        ),
        at(pod("d", "myapp", "myapp", true, "Pending"), "10.42.0.10", None),
        // No address yet, one that is not an address, or another identity than the one
        // chosen: left out.
        pod("e", "myapp", "myapp", true, "Running"),
        at(pod("g", "myapp", "myapp", true, "Running"), "not-an-ip", None),
        at(pod("f", "other", "myapp", true, "Running"), "10.42.0.11", None),
    ];
    let w = remote_workload(&l, &svc, &pods).unwrap();
    assert_eq!(
        w.identity,
        "myapp.production.serviceaccount.identity.linkerd.cluster.local"
    );
    let want: Vec<std::net::IpAddr> = vec!["10.42.0.7".parse().unwrap(), "10.42.0.8".parse().unwrap()];
    assert_eq!(w.endpoints, want, "sorted, ready, of the chosen identity");
    // The list is bounded.
    let many: Vec<Pod> = (0..MAX_REMOTE_ENDPOINTS + 5)
        .map(|i| {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            at(
                pod(&format!("p{i}"), "myapp", "myapp", true, "Running"),
                &ip,
                None,
            )
        })
        .collect();
    let w = remote_workload(&l, &svc, &many).unwrap();
    assert_eq!(w.endpoints.len(), MAX_REMOTE_ENDPOINTS);
}

#[test]
fn mirrors_name_the_gateway_entry_and_remote_identity_when_both_are_known() {
    let l = link();
    let mut svc = remote("production", "myapp", Some("true"), "1");
    // A remote Service cannot smuggle in an entry of its own.
    svc.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("mirror.strait.io/gateway-entry".into(), "10.9.9.9:1".into());
    let mut ids = BTreeMap::from([(
        ("production".to_string(), "myapp".to_string()),
        RemoteWorkload {
            identity: "myapp.production.serviceaccount.identity.linkerd.cluster.local".to_string(),
            endpoints: vec![],
        },
    )]);
    let entry_gw = Gateway {
        entry: Some(Entry {
            addr: "127.0.0.1:4180".parse().unwrap(),
            link: None,
        }),
        ..gw(true)
    };
    let ann = |ids: &BTreeMap<NsName, RemoteWorkload>, g: &Gateway| {
        let p = plan(&l, [&svc], ids, &view(&["production"]), g, None);
        let mirror = p
            .apply
            .iter()
            .find_map(|o| match o {
                Object::Service(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap();
        mirror.metadata.annotations.unwrap()
    };
    let a = ann(&ids, &entry_gw);
    assert_eq!(a["mirror.strait.io/gateway-entry"], "127.0.0.1:4180");
    assert_eq!(
        a["mirror.strait.io/remote-identity"],
        "myapp.production.serviceaccount.identity.linkerd.cluster.local"
    );
    // No known endpoint, no list (the entry alone); with some, the list.
    assert!(!a.contains_key("mirror.strait.io/remote-endpoints"), "{a:?}");
    for w in ids.values_mut() {
        w.endpoints = vec!["10.42.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
    }
    let a = ann(&ids, &entry_gw);
    assert_eq!(a["mirror.strait.io/remote-endpoints"], "10.42.0.7,fd00::7");
    for (ids, g) in [(&BTreeMap::new(), &entry_gw), (&ids, &gw(true))] {
        let a = ann(ids, g);
        assert!(!a.keys().any(|k| k.starts_with("mirror.strait.io/")), "{a:?}");
    }
}
