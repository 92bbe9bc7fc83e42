use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;

use super::*;
use crate::topology::Topology;

fn topology() -> Topology {
    Topology::parse(
        "t.yaml",
        "apiVersion: strait.io/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  images:\n    myapp:latest: strait demo server\n  clusters: [{name: west}]\n",
        Path::new("."),
    )
    .unwrap()
}

fn deployment(name: &str, replicas: i32, image: &str, pod_inject: Option<&str>) -> Deployment {
    let mut d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "production"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "version": "v2"}, "annotations": {}},
                "spec": {"serviceAccountName": name, "containers": [{
                    "name": name, "image": image, "args": ["--failure-rate", "10%"],
                    "env": [{"name": "GREETING", "value": "hi"}],
                    "ports": [{"name": "http", "containerPort": 8080}]}]}}}
    }))
    .unwrap();
    if let Some(v) = pod_inject {
        d.spec.template.metadata.as_mut().unwrap().annotations =
            Some([("linkerd.io/inject".to_string(), v.to_string())].into());
    }
    d
}

fn namespace(inject: Option<&str>) -> Namespace {
    let mut ann = serde_json::Map::new();
    if let Some(v) = inject {
        ann.insert("linkerd.io/inject".into(), v.into());
    }
    ann.insert("config.linkerd.io/skip-outbound-ports".into(), "3306".into());
    serde_json::from_value(serde_json::json!({"metadata": {"name": "production", "annotations": ann}}))
        .unwrap()
}

#[test]
fn replicas_become_pods_with_the_mapped_command() {
    let t = topology();
    let (pods, problems) = pods(
        &t,
        &t.clusters[0],
        &[deployment("myapp", 2, "myapp:latest", None)],
        &[namespace(Some("enabled"))],
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(pods.len(), 2);
    let p = &pods[0];
    assert!(
        p.name.starts_with("myapp-") && p.name.ends_with("-0"),
        "{}",
        p.name
    );
    assert_eq!(
        p.command,
        vec!["strait", "demo", "server", "--failure-rate", "10%"]
    );
    assert_eq!(p.env, vec![("GREETING".to_string(), "hi".to_string())]);
    assert_eq!(p.ports, vec![(Some("http".to_string()), 8080)]);
    assert_eq!(p.service_account, "myapp");
    assert!(p.injected, "the namespace enables injection");
    // The namespace's config annotations reach the pod, as the injector applies them.
    assert_eq!(p.skip_outbound(), "3306");
    assert_eq!(pods[1].hash, p.hash);
}

#[test]
fn the_pod_annotation_overrides_the_namespace() {
    let t = topology();
    let (on, _) = pods(
        &t,
        &t.clusters[0],
        &[deployment("a", 1, "myapp:latest", Some("enabled"))],
        &[namespace(None)],
    );
    assert!(on[0].injected);
    let (off, _) = pods(
        &t,
        &t.clusters[0],
        &[deployment("a", 1, "myapp:latest", Some("disabled"))],
        &[namespace(Some("enabled"))],
    );
    assert!(!off[0].injected);
    let (none, _) = pods(
        &t,
        &t.clusters[0],
        &[deployment("a", 1, "myapp:latest", None)],
        &[],
    );
    assert!(!none[0].injected);
}

#[test]
fn annotating_the_namespace_renames_its_pods_so_they_are_recreated() {
    let t = topology();
    let d = [deployment("myapp", 1, "myapp:latest", None)];
    let (before, _) = pods(&t, &t.clusters[0], &d, &[namespace(None)]);
    let (after, _) = pods(&t, &t.clusters[0], &d, &[namespace(Some("enabled"))]);
    assert_ne!(before[0].name, after[0].name);
    assert!(!before[0].injected && after[0].injected);
    // The same input gives the same names: restarting `up` keeps them.
    let (again, _) = pods(&t, &t.clusters[0], &d, &[namespace(Some("enabled"))]);
    assert_eq!(after, again);
}

#[test]
fn an_unmapped_image_is_a_problem_that_says_where_to_map_it() {
    let t = topology();
    let (pods, problems) = pods(
        &t,
        &t.clusters[0],
        &[deployment("db", 1, "postgres:16", None)],
        &[],
    );
    assert!(pods.is_empty());
    assert_eq!(problems.len(), 1);
    let msg = problems[0].to_string();
    assert!(
        msg.starts_with("deployment/production/db: container \"db\": image \"postgres:16\" has no command"),
        "{msg}"
    );
    assert!(msg.contains("spec.images"), "{msg}");
}

#[test]
fn zero_replicas_run_nothing() {
    let t = topology();
    let (pods, problems) = pods(
        &t,
        &t.clusters[0],
        &[deployment("myapp", 0, "myapp:latest", None)],
        &[],
    );
    assert!(pods.is_empty() && problems.is_empty());
}
