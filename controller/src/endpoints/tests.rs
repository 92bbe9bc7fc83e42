use std::time::Duration;

use strait_api::store::local::LocalStore;

use super::*;
use crate::test_support::objects;

fn typed<K: Kind>(yaml: &str) -> Vec<K> {
    objects(yaml).into_iter().filter_map(K::from_object).collect()
}

fn pod(name: &str, ip: &str, ready: bool, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: production\n  labels: {labels}\nspec:\n  containers: [{{name: app, image: x, ports: [{{name: http, containerPort: 8080}}]}}]\nstatus:\n  phase: Running\n  podIP: {ip}\n  conditions: [{{type: Ready, status: \"{}\"}}]\n---\n",
        if ready { "True" } else { "False" }
    )
}

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: myapp, namespace: production}\nspec:\n  selector: {app: myapp}\n  ports: [{name: web, port: 80, targetPort: http}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: external, namespace: production}\nspec:\n  ports: [{port: 443}]\n";

#[test]
fn slices_follow_selected_pods() {
    let svcs: Vec<Service> = typed(SERVICES);
    let pods: Vec<Pod> = typed(&format!(
        "{}{}{}",
        pod("a", "198.18.0.5", true, "{app: myapp}"),
        pod("b", "198.18.0.6", false, "{app: myapp}"),
        pod("c", "198.18.0.7", true, "{app: other}")
    ));
    let svcs: Vec<ServiceSummary> = svcs.iter().map(ServiceSummary::of).collect();
    let pods: Vec<PodInfo> = pods.iter().filter_map(PodInfo::from_pod).collect();
    let none = BTreeMap::new();
    assert_eq!(
        plan("production", Some(&svcs[1]), &pods, &none),
        Plan::default(),
        "the selector-less service gets no managed slice"
    );
    let p = plan("production", Some(&svcs[0]), &pods, &none);
    assert_eq!(p.apply.len(), 1);
    let s = &p.apply[0];
    assert_eq!(s.metadata.name.as_deref(), Some("myapp-0"));
    assert_eq!(s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL], "myapp");
    let ports = s.ports.as_ref().unwrap();
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("web"), Some(8080)),
        "named target port resolved"
    );
    let eps = s.endpoints.as_ref().unwrap();
    let got: Vec<(String, bool)> = eps
        .iter()
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.conditions.as_ref().unwrap().ready.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("198.18.0.5".to_string(), true),
            ("198.18.0.6".to_string(), false)
        ]
    );

    // Applying the plan's result again plans nothing; a stale slice is deleted.
    let mut stale = s.clone();
    stale.metadata.name = Some("myapp-7".into());
    let have: BTreeMap<String, u64> = [s, &stale]
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), digest(s)))
        .collect();
    let p2 = plan("production", Some(&svcs[0]), &pods, &have);
    assert!(p2.apply.is_empty());
    assert_eq!(p2.delete, ["myapp-7"]);

    // A Service that is gone keeps no slices.
    let p3 = plan("production", None, &pods, &have);
    assert!(p3.apply.is_empty());
    assert_eq!(p3.delete, ["myapp-0", "myapp-7"]);
}

/// As Kubernetes does, a Service with `publishNotReadyAddresses` has every endpoint
/// ready (DNS and discovery list them), each still serving only when its pod is ready.
#[test]
fn a_service_publishing_not_ready_addresses_has_every_endpoint_ready() {
    let svc: Vec<Service> = typed(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: production}\nspec:\n  clusterIP: None\n  publishNotReadyAddresses: true\n  selector: {app: db}\n  ports: [{port: 5432}]\n",
    );
    let pods: Vec<Pod> = typed(&format!(
        "{}{}",
        pod("db-0", "198.18.0.5", true, "{app: db}"),
        pod("db-1", "198.18.0.6", false, "{app: db}")
    ));
    let pods: Vec<PodInfo> = pods.iter().filter_map(PodInfo::from_pod).collect();
    let p = plan(
        "production",
        Some(&ServiceSummary::of(&svc[0])),
        &pods,
        &BTreeMap::new(),
    );
    let got: Vec<(String, bool, bool)> = p.apply[0]
        .endpoints
        .iter()
        .flatten()
        .map(|e| {
            let c = e.conditions.as_ref().unwrap();
            (e.addresses[0].clone(), c.ready.unwrap(), c.serving.unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("198.18.0.5".to_string(), true, true),
            ("198.18.0.6".to_string(), true, false)
        ]
    );
}

#[tokio::test]
async fn the_controller_keeps_slices_in_step_with_the_store() {
    let store = LocalStore::in_memory();
    store
        .apply(objects(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: production}\n",
        ))
        .await
        .unwrap();
    store.apply(objects(SERVICES)).await.unwrap();
    store
        .apply(objects(&pod("a", "198.18.0.5", true, "{app: myapp}")))
        .await
        .unwrap();
    tokio::spawn(run(store.clone()));
    let addresses = |store: LocalStore| async move {
        let s: Option<EndpointSlice> = store.get("production", "myapp-0").await.unwrap();
        s.map(|s| {
            s.endpoints
                .unwrap_or_default()
                .iter()
                .map(|e| e.addresses[0].clone())
                .collect::<Vec<_>>()
        })
    };
    let wait_for = |want: Vec<&'static str>| {
        let store = store.clone();
        async move {
            for _ in 0..250 {
                if addresses(store.clone())
                    .await
                    .as_deref()
                    .map(|v| v.iter().map(String::as_str).collect::<Vec<_>>())
                    == Some(want.clone())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("slice never became {want:?}: {:?}", addresses(store).await);
        }
    };
    wait_for(vec!["198.18.0.5"]).await;
    store
        .apply(objects(&pod("b", "198.18.0.6", true, "{app: myapp}")))
        .await
        .unwrap();
    wait_for(vec!["198.18.0.5", "198.18.0.6"]).await;
    store
        .delete(&ObjectKey::new(KindId::Pod, "production", "a"))
        .await
        .unwrap();
    wait_for(vec!["198.18.0.6"]).await;
    // Someone deletes our slice: it comes back.
    store
        .delete(&ObjectKey::new(KindId::EndpointSlice, "production", "myapp-0"))
        .await
        .unwrap();
    wait_for(vec!["198.18.0.6"]).await;
    // Relabelled out of the selector, a pod leaves the service.
    store
        .apply(objects(&pod("b", "198.18.0.6", true, "{app: other}")))
        .await
        .unwrap();
    wait_for(vec![]).await;
    // The service's selector moves to the pod: it is back.
    store
        .apply(objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: myapp, namespace: production}\nspec:\n  selector: {app: other}\n  ports: [{name: web, port: 80, targetPort: http}]\n",
        ))
        .await
        .unwrap();
    wait_for(vec!["198.18.0.6"]).await;
    // Without the service, its slices go.
    store
        .delete(&ObjectKey::new(KindId::Service, "production", "myapp"))
        .await
        .unwrap();
    for _ in 0..250 {
        if addresses(store.clone()).await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the slice of a deleted service stayed");
}

#[test]
fn a_namespace_is_its_own_range_of_keys() {
    let key = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    let map: BTreeMap<(String, String), u32> = [
        (key("a", "x"), 1),
        (key("a", ""), 0),
        (key("a-b", "x"), 2),
        (key("ab", "x"), 3),
        (key("b", "a"), 4),
        (key("", "x"), 5),
    ]
    .into();
    let of = |ns| in_namespace_keyed(&map, ns).map(|(_, v)| *v).collect::<Vec<_>>();
    assert_eq!(of("a"), vec![0, 1], "neither a-b nor ab belongs to a");
    assert_eq!(of("ab"), vec![3]);
    assert_eq!(of(""), vec![5]);
    assert_eq!(of("c"), Vec::<u32>::new());
}
