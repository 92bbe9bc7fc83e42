use serde_json::json;

use super::*;

fn svc(v: serde_json::Value) -> ServiceInfo {
    ServiceInfo::from_service(&serde_json::from_value(v).unwrap()).unwrap()
}

fn pod(name: &str, ip: &str, meshed: bool, extra_ann: serde_json::Value) -> PodInfo {
    let mut labels = json!({"app": "myapp", "pod-template-hash": "5d9f"});
    if meshed {
        labels["linkerd.io/control-plane-ns"] = json!("linkerd");
    }
    PodInfo::from_pod(
        &serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "production", "labels": labels, "annotations": extra_ann,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "myapp-5d9f",
                                              "uid": "u", "controller": true}]},
            "spec": {"serviceAccountName": "myapp",
                     "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": ip}
        }))
        .unwrap(),
    )
    .unwrap()
}

fn slice(svc: &str, port_name: Option<&str>, port: i32, eps: &[(&str, bool, &str)]) -> SliceInfo {
    let mut p = json!({"port": port});
    if let Some(n) = port_name {
        p["name"] = json!(n);
    }
    SliceInfo::from_slice(
        &serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-abc"), "namespace": "production",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [p],
            "endpoints": eps.iter().map(|(ip, ready, pod)| json!({
                "addresses": [ip], "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": "production"}})).collect::<Vec<_>>()
        }))
        .unwrap(),
    )
    .unwrap()
}

struct World {
    services: BTreeMap<NsName, ServiceInfo>,
    slices: BTreeMap<NsName, BTreeMap<String, SliceInfo>>,
    pods: PodMap,
    default_opaque_ports: Vec<(u16, u16)>,
}

impl World {
    fn view(&self) -> View<'_> {
        View {
            services: &self.services,
            slices: &self.slices,
            pods: &self.pods,
            trust_domain: "cluster.local",
            default_opaque_ports: &self.default_opaque_ports,
        }
    }
}

fn linkerd_defaults() -> Vec<(u16, u16)> {
    crate::policy::outbound::translate::DEFAULT_OPAQUE_PORTS.to_vec()
}

fn id(name: &str) -> NsName {
    ("production".into(), name.into())
}

fn world(service_ann: serde_json::Value, meshed: bool) -> World {
    let s = svc(json!({
        "metadata": {"name": "myapp", "namespace": "production", "annotations": service_ann},
        "spec": {"clusterIP": "198.18.1.10", "ports": [{"port": 80, "targetPort": 8080}]}
    }));
    let sl = slice(
        "myapp",
        None,
        8080,
        &[("198.18.0.5", true, "myapp-1"), ("198.18.0.6", false, "myapp-2")],
    );
    World {
        default_opaque_ports: linkerd_defaults(),
        services: [(id("myapp"), s)].into(),
        slices: [(id("myapp"), [("myapp-abc".to_string(), sl)].into())].into(),
        pods: [
            pod("myapp-1", "198.18.0.5", meshed, json!({})),
            pod("myapp-2", "198.18.0.6", meshed, json!({})),
        ]
        .into_iter()
        .map(Arc::new)
        .collect(),
    }
}

fn endpoints(r: Resolution) -> Vec<Endpoint> {
    match r {
        Resolution::Endpoints(e) => e.values().cloned().collect(),
        Resolution::NotFound => panic!("not found"),
    }
}

#[test]
fn ready_endpoints_of_a_meshed_service_carry_identity_and_labels() {
    let w = world(json!({}), true);
    let eps = endpoints(resolve(&w.view(), &id("myapp"), 80, Caller::Linkerd));
    assert_eq!(eps.len(), 1, "the not-ready endpoint is left out");
    let e = &eps[0];
    assert_eq!(e.addr, "198.18.0.5:8080".parse().unwrap());
    assert_eq!(
        e.identity.as_deref(),
        Some("myapp.production.serviceaccount.identity.linkerd.cluster.local")
    );
    assert!(e.h2);
    assert_eq!(e.opaque_transport_port, None);
    assert_eq!(e.labels["pod"], "myapp-1");
    assert_eq!(
        e.labels["deployment"], "myapp",
        "the ReplicaSet's hash suffix is stripped"
    );
    assert_eq!(e.labels["serviceaccount"], "myapp");
    assert_eq!(e.labels["service"], "myapp");
}

#[test]
fn unmeshed_endpoints_have_no_identity() {
    let w = world(json!({}), false);
    let e = &endpoints(resolve(&w.view(), &id("myapp"), 80, Caller::Linkerd))[0];
    assert_eq!(e.identity, None);
    assert!(!e.h2);
}

#[test]
fn opaque_ports_tunnel_to_the_proxy_inbound_port() {
    let w = world(json!({"config.linkerd.io/opaque-ports": "80"}), true);
    let e = &endpoints(resolve(&w.view(), &id("myapp"), 80, Caller::Linkerd))[0];
    assert_eq!(e.opaque_transport_port, Some(4143));
}

/// The cluster's default opaque ports (`--default-opaque-ports`) apply to a Service and
/// pods that mark none, and only to them.
#[test]
fn the_cluster_s_default_opaque_ports_apply_where_nothing_marks_ports() {
    let mut w = world(json!({}), true);
    let e = &endpoints(resolve(&w.view(), &id("myapp"), 80, Caller::Linkerd))[0];
    assert_eq!(
        e.opaque_transport_port, None,
        "80 is not among Linkerd's defaults"
    );
    w.default_opaque_ports = vec![(80, 80)];
    let e = &endpoints(resolve(&w.view(), &id("myapp"), 80, Caller::Linkerd))[0];
    assert_eq!(
        e.opaque_transport_port,
        Some(4143),
        "the Service port is a default"
    );
    w.default_opaque_ports = vec![(8000, 8100)];
    let e = &endpoints(resolve(&w.view(), &id("myapp"), 80, Caller::Linkerd))[0];
    assert_eq!(e.opaque_transport_port, Some(4143), "the pod's port is a default");

    // A Service's own list replaces the defaults; so does a pod's.
    let mut w = world(json!({"config.linkerd.io/opaque-ports": "443"}), true);
    w.default_opaque_ports = vec![(80, 80), (8080, 8080)];
    w.pods = w
        .pods
        .iter()
        .map(|p| {
            Arc::new(pod(
                &p.name,
                &p.ip.unwrap().to_string(),
                true,
                json!({"config.linkerd.io/opaque-ports": "9090"}),
            ))
        })
        .collect();
    let e = &endpoints(resolve(&w.view(), &id("myapp"), 80, Caller::Linkerd))[0];
    assert_eq!(e.opaque_transport_port, None);
}

#[test]
fn unknown_services_and_ports() {
    let w = world(json!({}), true);
    assert_eq!(
        resolve(&w.view(), &id("nope"), 80, Caller::Linkerd),
        Resolution::NotFound
    );
    assert!(endpoints(resolve(&w.view(), &id("myapp"), 81, Caller::Linkerd)).is_empty());
}

#[test]
fn named_ports_map_through_the_slice_port_name() {
    let s = svc(json!({
        "metadata": {"name": "web", "namespace": "production"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "admin", "port": 9990}]}
    }));
    let mut sl = slice("web", Some("http"), 8080, &[("198.18.0.5", true, "myapp-1")]);
    sl.ports.insert(Some("admin".into()), 9990);
    let w = World {
        default_opaque_ports: linkerd_defaults(),
        services: [(id("web"), s)].into(),
        slices: [(id("web"), [("web-abc".to_string(), sl)].into())].into(),
        pods: [Arc::new(pod("myapp-1", "198.18.0.5", true, json!({})))]
            .into_iter()
            .collect(),
    };
    assert_eq!(
        endpoints(resolve(&w.view(), &id("web"), 80, Caller::Linkerd))[0]
            .addr
            .port(),
        8080
    );
    assert_eq!(
        endpoints(resolve(&w.view(), &id("web"), 9990, Caller::Linkerd))[0]
            .addr
            .port(),
        9990
    );
}

/// A gateway-mode mirror `myapp-east` of east's `myapp` (remote gateway 198.18.16.2:4143,
/// ready or not), with the mirror's annotations and `strait` ones on top.
fn gateway_mirror(strait: serde_json::Value, ready: bool) -> World {
    let mut ann = json!({
        "mirror.linkerd.io/remote-gateway-identity":
            "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
        "mirror.linkerd.io/remote-svc-fq-name": "myapp.production.svc.cluster.local",
        "mirror.strait.io/remote-identity": "myapp.production.serviceaccount.identity.linkerd.cluster.local",
    });
    for (k, v) in strait.as_object().into_iter().flatten() {
        ann[k] = v.clone();
    }
    let s = svc(json!({
        "metadata": {"name": "myapp-east", "namespace": "production", "annotations": ann},
        "spec": {"clusterIP": "198.18.1.11", "ports": [{"name": "http", "port": 80}]}
    }));
    let sl = SliceInfo::from_slice(
        &serde_json::from_value(json!({
            "metadata": {"name": "myapp-east-gateway", "namespace": "production",
                         "labels": {"kubernetes.io/service-name": "myapp-east"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 4143}],
            "endpoints": [{"addresses": ["198.18.16.2"], "conditions": {"ready": ready}}]
        }))
        .unwrap(),
    )
    .unwrap();
    World {
        default_opaque_ports: linkerd_defaults(),
        services: [(id("myapp-east"), s)].into(),
        slices: [(id("myapp-east"), [("myapp-east-gateway".to_string(), sl)].into())].into(),
        pods: PodMap::default(),
    }
}

/// An endpoint of `myapp-east` for a Strait proxy: through the entry (`strt`, HTTP/2),
/// east's workload identity end to end, the remote Service as the authority.
fn assert_behind_the_entry(e: &Endpoint) {
    assert_eq!(
        e.identity.as_deref(),
        Some("myapp.production.serviceaccount.identity.linkerd.cluster.local")
    );
    assert_eq!(
        e.authority_override.as_deref(),
        Some("myapp.production.svc.cluster.local:80")
    );
    assert_eq!(e.labels[GATEWAY_ENTRY_LABEL], GATEWAY_ENTRY_V1);
    assert!(e.h2 && e.opaque_transport_port.is_none());
}

#[test]
fn a_mirror_with_a_gateway_entry_resolves_to_the_entry_with_the_remote_workload_identity() {
    let mirror = |entry: Option<&str>, ready: bool| {
        let strait = match entry {
            Some(e) => json!({"mirror.strait.io/gateway-entry": e}),
            None => json!({}),
        };
        gateway_mirror(strait, ready)
    };
    let w = mirror(Some("127.0.0.1:4180"), true);
    let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait));
    assert_eq!(eps.len(), 1);
    let e = &eps[0];
    assert_eq!(e.addr.to_string(), "127.0.0.1:4180");
    assert_behind_the_entry(e);
    // The gateway's probe still decides: no ready gateway, no entry endpoint.
    let w = mirror(Some("127.0.0.1:4180"), false);
    assert!(endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait)).is_empty());
    // A stock proxy is never handed the entry; without an entry (or with a bad one) no
    // caller is: Linkerd's remote-gateway endpoint, opaque to the gateway port.
    let cases = [
        (Some("127.0.0.1:4180"), Caller::Linkerd),
        (None, Caller::Linkerd),
        (None, Caller::Strait),
        (Some("not-an-address"), Caller::Strait),
    ];
    for (entry, caller) in cases {
        let w = mirror(entry, true);
        let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, caller));
        let e = &eps[0];
        assert_eq!(e.addr.to_string(), "198.18.16.2:4143", "{entry:?} {caller:?}");
        assert_eq!(
            e.identity.as_deref(),
            Some("linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local")
        );
        assert_eq!(
            e.authority_override.as_deref(),
            Some("myapp.production.svc.cluster.local:80")
        );
        assert_eq!((e.h2, e.opaque_transport_port), (false, Some(4143)));
        assert!(!e.labels.contains_key(GATEWAY_ENTRY_LABEL));
    }
}

#[test]
fn an_entry_of_every_link_gives_strait_proxies_the_link_to_name() {
    let strait = json!({
        "mirror.strait.io/gateway-entry": "127.0.0.1:4180",
        "mirror.strait.io/gateway-link": "east",
        "mirror.strait.io/remote-endpoints": "10.42.0.7",
    });
    let w = gateway_mirror(strait, true);
    let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait));
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].labels[GATEWAY_LINK_LABEL], "east");
    assert_eq!(eps[0].labels[GATEWAY_VIA_LABEL], "127.0.0.1:4180");
    // An entry of one link (no annotation) names none, as before.
    let w = gateway_mirror(json!({"mirror.strait.io/gateway-entry": "127.0.0.1:4180"}), true);
    let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait));
    assert!(!eps[0].labels.contains_key(GATEWAY_LINK_LABEL));
    // A proxy of the version before (it names no link) keeps an entry of one link, with
    // one endpoint per remote pod.
    let w = gateway_mirror(
        json!({"mirror.strait.io/gateway-entry": "127.0.0.1:4180", "mirror.strait.io/remote-endpoints": "10.42.0.7"}),
        true,
    );
    let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::StraitV2));
    assert_eq!(eps[0].labels[GATEWAY_VIA_LABEL], "127.0.0.1:4180");
    // At an entry of every link it would name none: it and a stock proxy get Linkerd's
    // remote gateway, which works for every link.
    let w = gateway_mirror(
        json!({"mirror.strait.io/gateway-entry": "127.0.0.1:4180", "mirror.strait.io/gateway-link": "east"}),
        true,
    );
    for caller in [Caller::Linkerd, Caller::StraitV2] {
        let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, caller));
        assert_eq!(eps[0].addr.to_string(), "198.18.16.2:4143", "{caller:?}");
        assert!(!eps[0].labels.contains_key(GATEWAY_LINK_LABEL));
    }
}

#[test]
fn a_mirror_listing_remote_endpoints_gives_strait_proxies_one_endpoint_each_via_the_entry() {
    let world = |endpoints: &str, ready: bool| {
        let strait = json!({
            "mirror.strait.io/gateway-entry": "127.0.0.1:4180",
            "mirror.strait.io/remote-endpoints": endpoints,
        });
        gateway_mirror(strait, ready)
    };
    // A bad entry in the list is skipped; the others stand.
    let w = world("10.42.0.7,bogus, 10.42.0.8", true);
    let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait));
    let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["10.42.0.7:80", "10.42.0.8:80"]);
    for e in &eps {
        assert_eq!(e.labels[GATEWAY_VIA_LABEL], "127.0.0.1:4180");
        assert_behind_the_entry(e);
    }
    // The gateway's probe still decides readiness for all of them.
    let w = world("10.42.0.7,10.42.0.8", false);
    assert!(endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait)).is_empty());
    // A stock proxy still gets Linkerd's remote gateway; an empty list, the entry itself.
    let w = world("10.42.0.7", true);
    let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Linkerd));
    assert_eq!(eps[0].addr.to_string(), "198.18.16.2:4143");
    let w = world("", true);
    let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait));
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].addr.to_string(), "127.0.0.1:4180");
    assert!(!eps[0].labels.contains_key(GATEWAY_VIA_LABEL));
    // A first-version Strait proxy (before per-pod remote endpoints) gets the entry
    // itself even when pods are listed: it would dial a remote pod's address.
    let w = world("10.42.0.7,10.42.0.8", true);
    let eps = endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::StraitV1));
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].addr.to_string(), "127.0.0.1:4180");
    assert_behind_the_entry(&eps[0]);
    assert!(!eps[0].labels.contains_key(GATEWAY_VIA_LABEL));
}

#[test]
fn callers_mark_themselves_in_the_context_token() {
    let cases = [
        (
            r#"{"ns":"production","nodeName":"","pod":"web-1","strait":"v3"}"#,
            Caller::Strait,
        ),
        (
            r#"{"ns":"production","nodeName":"","pod":"web-1","strait":"v2"}"#,
            Caller::StraitV2,
        ),
        (
            r#"{"ns":"production","nodeName":"","pod":"web-1","strait":"v1"}"#,
            Caller::StraitV1,
        ),
        (
            r#"{"ns":"production","nodeName":"","pod":"web-1"}"#,
            Caller::Linkerd,
        ),
        (r#"{"ns":"production","strait":"v4"}"#, Caller::Linkerd),
        (r#"{"strait":1}"#, Caller::Linkerd),
        ("", Caller::Linkerd),
        ("not json", Caller::Linkerd),
    ];
    for (token, want) in cases {
        assert_eq!(Caller::from_context_token(token), want, "{token}");
    }
}

/// A federated Service as the mirror writes it: local member `myapp` (two pods, one not
/// ready), remote members in east (entry known) and central (no entry; not ready when
/// `central_ready` is false), and west's own pods.
fn federated_world(central_ready: bool, local: bool) -> World {
    let mut ann = json!({"multicluster.linkerd.io/remote-discovery": "myapp@central,myapp@east"});
    if local {
        ann["multicluster.linkerd.io/local-discovery"] = json!("myapp");
    }
    let fed = svc(json!({
        "metadata": {"name": "myapp-federated", "namespace": "production", "annotations": ann},
        "spec": {"clusterIP": "198.18.1.12", "ports": [{"port": 80}, {"name": "admin", "port": 9990}]}
    }));
    let member = svc(json!({
        "metadata": {"name": "myapp", "namespace": "production"},
        "spec": {"clusterIP": "198.18.1.10", "ports": [{"port": 80, "targetPort": 8080}]}
    }));
    let remote = |cluster: &str, gw: &str, entry: Option<&str>, ready: bool, ports: serde_json::Value| {
        let mut ann = json!({
            "mirror.linkerd.io/remote-gateway-identity":
                format!("linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.{cluster}"),
            "mirror.linkerd.io/remote-svc-fq-name": "myapp.production.svc.cluster.local",
        });
        if let Some(e) = entry {
            ann["mirror.strait.io/gateway-entry"] = json!(e);
            ann["mirror.strait.io/remote-identity"] = json!(format!(
                "myapp.production.serviceaccount.identity.linkerd.{cluster}"
            ));
        }
        SliceInfo::from_slice(
            &serde_json::from_value(json!({
                "metadata": {"name": format!("myapp-federated-{cluster}"), "namespace": "production",
                             "labels": {"kubernetes.io/service-name": "myapp-federated",
                                        "mirror.strait.io/gateway-cluster": cluster},
                             "annotations": ann},
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": [{"addresses": [gw], "conditions": {"ready": ready}}]
            }))
            .unwrap(),
        )
        .unwrap()
    };
    let east = remote(
        "east",
        "198.18.16.2",
        Some("127.0.0.1:4180"),
        true,
        json!([{"name": "", "port": 4143}, {"name": "admin", "port": 4143}]),
    );
    let central = remote(
        "central",
        "198.18.32.2",
        None,
        central_ready,
        json!([{"name": "", "port": 4143}]),
    );
    let local_slice = slice(
        "myapp",
        None,
        8080,
        &[("198.18.0.5", true, "myapp-1"), ("198.18.0.6", false, "myapp-2")],
    );
    World {
        default_opaque_ports: linkerd_defaults(),
        services: [(id("myapp-federated"), fed), (id("myapp"), member)].into(),
        slices: [
            (
                id("myapp-federated"),
                [
                    ("myapp-federated-east".to_string(), east),
                    ("myapp-federated-central".to_string(), central),
                ]
                .into(),
            ),
            (id("myapp"), [("myapp-abc".to_string(), local_slice)].into()),
        ]
        .into(),
        pods: [Arc::new(pod("myapp-1", "198.18.0.5", true, json!({})))]
            .into_iter()
            .collect(),
    }
}

#[test]
fn a_federated_service_answers_local_endpoints_and_remote_members_through_the_gateway_path() {
    let w = federated_world(true, true);
    let eps = endpoints(resolve(&w.view(), &id("myapp-federated"), 80, Caller::Strait));
    let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:4180", "198.18.0.5:8080", "198.18.32.2:4143"]);
    let by = |a: &str| eps.iter().find(|e| e.addr.to_string() == a).unwrap();
    // Local: the member's own endpoint, direct, with its pod identity, tier 0.
    let local = by("198.18.0.5:8080");
    assert_eq!(
        local.identity.as_deref(),
        Some("myapp.production.serviceaccount.identity.linkerd.cluster.local")
    );
    assert!(!local.labels.contains_key(TIER_LABEL));
    // East: the entry, with the remote workload identity, lower tier.
    let east = by("127.0.0.1:4180");
    assert_eq!(
        east.identity.as_deref(),
        Some("myapp.production.serviceaccount.identity.linkerd.east")
    );
    assert_eq!(east.labels[GATEWAY_ENTRY_LABEL], GATEWAY_ENTRY_V1);
    assert_eq!(east.labels[TIER_LABEL], TIER_REMOTE);
    assert_eq!(east.labels["target_cluster_name"], "east");
    assert_eq!(
        east.authority_override.as_deref(),
        Some("myapp.production.svc.cluster.local:80")
    );
    // Central has no entry: Linkerd's gateway endpoint, even for a Strait proxy.
    let central = by("198.18.32.2:4143");
    assert_eq!(
        central.identity.as_deref(),
        Some("linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.central")
    );
    assert_eq!((central.h2, central.opaque_transport_port), (false, Some(4143)));
    assert_eq!(central.labels[TIER_LABEL], TIER_REMOTE);
    // A stock proxy gets the remote gateways for every remote member.
    let eps = endpoints(resolve(&w.view(), &id("myapp-federated"), 80, Caller::Linkerd));
    let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["198.18.0.5:8080", "198.18.16.2:4143", "198.18.32.2:4143"]);
}

#[test]
fn a_federated_members_remote_endpoints_join_local_ones_and_never_displace_them() {
    let mut w = federated_world(true, true);
    w.slices
        .get_mut(&id("myapp-federated"))
        .and_then(|s| s.get_mut("myapp-federated-east"))
        .and_then(|s| s.remote.as_mut())
        .unwrap()
        .endpoints = vec!["198.18.0.5".parse().unwrap(), "10.42.0.7".parse().unwrap()];
    let eps = endpoints(resolve(&w.view(), &id("myapp-federated"), 80, Caller::Strait));
    let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(
        addrs,
        [
            "10.42.0.7:80",
            "198.18.0.5:80",
            "198.18.0.5:8080",
            "198.18.32.2:4143"
        ]
    );
    // A first-version Strait proxy gets east's entry instead.
    let v1 = endpoints(resolve(&w.view(), &id("myapp-federated"), 80, Caller::StraitV1));
    let v1: Vec<String> = v1.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(v1, ["127.0.0.1:4180", "198.18.0.5:8080", "198.18.32.2:4143"]);
    for remote in [&eps[0], &eps[1]] {
        assert_eq!(remote.labels[GATEWAY_VIA_LABEL], "127.0.0.1:4180");
        assert_eq!(remote.labels[TIER_LABEL], TIER_REMOTE);
    }
    // West's pod listening on 80 too: east's endpoint at the same address (clusters
    // whose pod ranges overlap) is left out, and the local pod keeps its place.
    w.slices
        .get_mut(&id("myapp"))
        .and_then(|s| s.get_mut("myapp-abc"))
        .unwrap()
        .ports = [(None, 80)].into();
    let eps = endpoints(resolve(&w.view(), &id("myapp-federated"), 80, Caller::Strait));
    let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["10.42.0.7:80", "198.18.0.5:80", "198.18.32.2:4143"]);
    assert!(!eps[1].labels.contains_key(TIER_LABEL), "{:?}", eps[1].labels);
    assert!(!eps[1].labels.contains_key(GATEWAY_VIA_LABEL));
}

#[test]
fn federated_members_follow_readiness_ports_and_the_local_member() {
    // Central's gateway not ready: central leaves; east stays.
    let w = federated_world(false, true);
    let addrs: Vec<String> = endpoints(resolve(&w.view(), &id("myapp-federated"), 80, Caller::Linkerd))
        .iter()
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(addrs, ["198.18.0.5:8080", "198.18.16.2:4143"]);
    // Port 9990: only east has it (the local member has no such port).
    let addrs: Vec<String> = endpoints(resolve(&w.view(), &id("myapp-federated"), 9990, Caller::Linkerd))
        .iter()
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(addrs, ["198.18.16.2:4143"]);
    // No local member: remote only.
    let w = federated_world(true, false);
    let addrs: Vec<String> = endpoints(resolve(&w.view(), &id("myapp-federated"), 80, Caller::Strait))
        .iter()
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(addrs, ["127.0.0.1:4180", "198.18.32.2:4143"]);
}

#[test]
fn a_remote_discovery_mirror_resolves_through_the_gateway_path() {
    let s = svc(json!({
        "metadata": {"name": "myapp-east", "namespace": "production", "annotations": {
            "multicluster.linkerd.io/remote-discovery": "east",
            "multicluster.linkerd.io/remote-service": "myapp",
            "mirror.linkerd.io/remote-svc-fq-name": "myapp.production.svc.cluster.local"}},
        "spec": {"clusterIP": "198.18.1.13", "ports": [{"name": "http", "port": 80}]}
    }));
    let slice = |entry: bool, ready: bool| {
        let mut ann = json!({
            "mirror.linkerd.io/remote-gateway-identity":
                "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
            "mirror.linkerd.io/remote-svc-fq-name": "myapp.production.svc.cluster.local",
        });
        if entry {
            ann["mirror.strait.io/gateway-entry"] = json!("127.0.0.1:4180");
            ann["mirror.strait.io/remote-identity"] =
                json!("myapp.production.serviceaccount.identity.linkerd.cluster.local");
        }
        SliceInfo::from_slice(
            &serde_json::from_value(json!({
                "metadata": {"name": "myapp-east-gateway", "namespace": "production",
                             "labels": {"kubernetes.io/service-name": "myapp-east",
                                        "mirror.strait.io/gateway-cluster": "east"},
                             "annotations": ann},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 4143}],
                "endpoints": [{"addresses": ["198.18.16.2"], "conditions": {"ready": ready}}]
            }))
            .unwrap(),
        )
        .unwrap()
    };
    let world = |entry: bool, ready: bool| World {
        default_opaque_ports: linkerd_defaults(),
        services: [(id("myapp-east"), s.clone())].into(),
        slices: [(
            id("myapp-east"),
            [("myapp-east-gateway".to_string(), slice(entry, ready))].into(),
        )]
        .into(),
        pods: PodMap::default(),
    };
    let w = world(true, true);
    let e = &endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait))[0];
    assert_eq!(e.addr.to_string(), "127.0.0.1:4180");
    assert_eq!(
        e.identity.as_deref(),
        Some("myapp.production.serviceaccount.identity.linkerd.cluster.local"),
        "the remote workload, end to end"
    );
    assert_eq!(
        e.authority_override.as_deref(),
        Some("myapp.production.svc.cluster.local:80")
    );
    assert_eq!(e.labels[GATEWAY_ENTRY_LABEL], GATEWAY_ENTRY_V1);
    // A stock proxy, or no entry: the remote gateway, as for a gateway mirror.
    for (entry, caller) in [(true, Caller::Linkerd), (false, Caller::Strait)] {
        let w = world(entry, true);
        let e = &endpoints(resolve(&w.view(), &id("myapp-east"), 80, caller))[0];
        assert_eq!(e.addr.to_string(), "198.18.16.2:4143");
        assert_eq!(
            e.identity.as_deref(),
            Some("linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local")
        );
        assert_eq!((e.h2, e.opaque_transport_port), (false, Some(4143)));
    }
    // The gateway's probe decides readiness.
    let w = world(true, false);
    assert!(endpoints(resolve(&w.view(), &id("myapp-east"), 80, Caller::Strait)).is_empty());
}
