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
    pods: BTreeMap<NsName, PodInfo>,
}

impl World {
    fn view(&self) -> View<'_> {
        View {
            services: &self.services,
            slices: &self.slices,
            pods: &self.pods,
            trust_domain: "cluster.local",
        }
    }
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
        services: [(id("myapp"), s)].into(),
        slices: [(id("myapp"), [("myapp-abc".to_string(), sl)].into())].into(),
        pods: [
            (id("myapp-1"), pod("myapp-1", "198.18.0.5", meshed, json!({}))),
            (id("myapp-2"), pod("myapp-2", "198.18.0.6", meshed, json!({}))),
        ]
        .into(),
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
    let eps = endpoints(resolve(&w.view(), &id("myapp"), 80));
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
    let e = &endpoints(resolve(&w.view(), &id("myapp"), 80))[0];
    assert_eq!(e.identity, None);
    assert!(!e.h2);
}

#[test]
fn opaque_ports_tunnel_to_the_proxy_inbound_port() {
    let w = world(json!({"config.linkerd.io/opaque-ports": "80"}), true);
    let e = &endpoints(resolve(&w.view(), &id("myapp"), 80))[0];
    assert_eq!(e.opaque_transport_port, Some(4143));
}

#[test]
fn unknown_services_and_ports() {
    let w = world(json!({}), true);
    assert_eq!(resolve(&w.view(), &id("nope"), 80), Resolution::NotFound);
    assert!(endpoints(resolve(&w.view(), &id("myapp"), 81)).is_empty());
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
        services: [(id("web"), s)].into(),
        slices: [(id("web"), [("web-abc".to_string(), sl)].into())].into(),
        pods: [(id("myapp-1"), pod("myapp-1", "198.18.0.5", true, json!({})))].into(),
    };
    assert_eq!(endpoints(resolve(&w.view(), &id("web"), 80))[0].addr.port(), 8080);
    assert_eq!(
        endpoints(resolve(&w.view(), &id("web"), 9990))[0].addr.port(),
        9990
    );
}
