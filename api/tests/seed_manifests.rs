//! Every seed manifest (`examples/linkerd-seed/`, a copy of the design's reference
//! manifests) loads and means in Strait what it means in Linkerd.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use strait_api::kinds::{KindId, Object};
use strait_api::loader::{LoadOptions, Loaded, load, read_sources};

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/linkerd-seed")
}

fn load_seed() -> Vec<Loaded> {
    let sources = read_sources(&[seed_dir().display().to_string()], false, &mut std::io::empty()).unwrap();
    assert_eq!(sources.len(), 12, "all twelve seed files are read");
    load(&sources, &LoadOptions::default()).unwrap_or_else(|e| panic!("the seed must load:\n{e}"))
}

fn find<'a>(all: &'a [Loaded], kind: KindId, name: &str) -> &'a Loaded {
    all.iter()
        .rev() // the last definition is the one that counts, as with kubectl
        .find(|l| l.object.kind_id() == kind && l.object.meta().name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{kind:?} {name} not loaded"))
}

fn value(all: &[Loaded], kind: KindId, name: &str) -> Value {
    find(all, kind, name).object.to_value()
}

#[test]
fn the_seed_copy_matches_the_reference() {
    // The design's reference manifests sit beside the checkout; the copy must not drift.
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/manifests");
    if !reference.is_dir() {
        eprintln!(
            "note: {} is not present; only the in-repo copy is checked",
            reference.display()
        );
        return;
    }
    for entry in std::fs::read_dir(&reference).unwrap() {
        let path = entry.unwrap().path();
        let copy = seed_dir().join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::fs::read_to_string(&copy).unwrap_or_default(),
            "{} differs from the reference",
            copy.display()
        );
    }
}

#[test]
fn every_seed_object_loads_in_order() {
    let all = load_seed();
    let keys: Vec<String> = all.iter().map(|l| l.object.key().to_string()).collect();
    assert_eq!(keys.len(), 19, "{keys:#?}");
    assert_eq!(keys[0], "namespace/production");
    // Objects written without a namespace would land in `default`; the seed names `production` throughout,
    // except the tracing ConfigMap which lives in `linkerd`.
    for l in &all {
        let ns = l.object.meta().namespace.as_deref();
        if l.object.kind_id() != KindId::Namespace {
            assert!(
                matches!(ns, Some("production") | Some("linkerd")),
                "{}",
                l.object.key()
            );
        }
    }
}

#[test]
fn injection_annotations_keep_their_values() {
    let all = load_seed();
    let ns = value(&all, KindId::Namespace, "production");
    assert_eq!(ns["metadata"]["annotations"]["linkerd.io/inject"], "enabled");
    let d = value(&all, KindId::Deployment, "myapp");
    let ann = &d["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["config.linkerd.io/skip-inbound-ports"], "8080,8443");
    assert_eq!(ann["config.linkerd.io/skip-outbound-ports"], "3306,5432");
    assert_eq!(ann["config.linkerd.io/proxy-log-level"], "info,linkerd=debug");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        strait_api::names::port_ranges(ann["config.linkerd.io/skip-inbound-ports"].as_str().unwrap()),
        Ok(vec![(8080, 8080), (8443, 8443)])
    );
}

#[test]
fn services_and_the_export_label() {
    let all = load_seed();
    let v2 = value(&all, KindId::Service, "myapp-v2");
    assert_eq!(v2["spec"]["selector"], json!({"app": "myapp", "version": "v2"}));
    assert_eq!(v2["spec"]["ports"][0], json!({"port": 80, "targetPort": 8080}));
    let exported = find(&all, KindId::Service, "myapp");
    assert!(exported.origin.file.ends_with("11-service-export.yaml"));
    assert!(
        exported
            .replaces
            .as_ref()
            .is_some_and(|o| o.file.ends_with("03-services.yaml"))
    );
    assert_eq!(
        exported.object.to_value()["metadata"]["labels"]["mirror.linkerd.io/exported"],
        "true"
    );
}

#[test]
fn traffic_split_routes_and_profiles() {
    let all = load_seed();
    let ts = value(&all, KindId::TrafficSplit, "myapp-canary");
    assert_eq!(ts["spec"]["service"], "myapp");
    assert_eq!(
        ts["spec"]["backends"],
        json!([{"service": "myapp-v1", "weight": 90}, {"service": "myapp-v2", "weight": 10}])
    );

    let routes = value(&all, KindId::PolicyHttpRoute, "myapp-routes");
    let rules = routes["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0]["matches"][0]["headers"][0]["name"], "x-canary");
    assert_eq!(
        rules[1]["matches"][0]["path"],
        json!({"type": "PathPrefix", "value": "/api/v2"})
    );
    assert_eq!(rules[2]["backendRefs"][0]["weight"], 90);
    assert_eq!(
        find(&all, KindId::PolicyHttpRoute, "myapp-routes").api_version,
        "policy.linkerd.io/v1beta1"
    );

    let retries = value(&all, KindId::PolicyHttpRoute, "myapp-retries");
    let set = &retries["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"]["set"];
    assert_eq!(
        set,
        &json!([{"name": "l5d-retry-http", "value": "5xx"}, {"name": "l5d-retry-limit", "value": "3"}])
    );

    let timeouts = value(&all, KindId::PolicyHttpRoute, "myapp-timeouts");
    let t = &timeouts["spec"]["rules"][0]["timeouts"];
    assert_eq!(
        strait_api::names::duration(t["request"].as_str().unwrap()),
        Ok(std::time::Duration::from_secs(10))
    );
    assert_eq!(
        strait_api::names::duration(t["backendRequest"].as_str().unwrap()),
        Ok(std::time::Duration::from_secs(8))
    );

    let sp = value(&all, KindId::ServiceProfile, "myapp.production.svc.cluster.local");
    assert_eq!(
        sp["spec"]["routes"][0]["condition"],
        json!({"method": "GET", "pathRegex": "/api/users"})
    );
    assert_eq!(sp["spec"]["routes"][0]["responseClasses"][0]["isFailure"], true);
    assert_eq!(
        sp["spec"]["retryBudget"],
        json!({"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"})
    );
}

#[test]
fn authorization_policies() {
    let all = load_seed();
    let srv = value(&all, KindId::Server, "myapp-server");
    assert_eq!(srv["spec"]["port"], 8080);
    assert_eq!(srv["spec"]["proxyProtocol"], "HTTP/2");
    let all_pods = value(&all, KindId::Server, "all-pods");
    assert_eq!(
        all_pods["spec"]["port"], "1-65535",
        "the range extension round-trips as written"
    );
    assert_eq!(all_pods["spec"]["podSelector"], json!({"matchLabels": {}}));
    let deny = value(&all, KindId::ServerAuthorization, "deny-all");
    assert_eq!(
        deny["spec"]["client"],
        json!({"networks": []}),
        "deny-all keeps its empty network list"
    );
    let ns_wide = value(&all, KindId::ServerAuthorization, "myapp-auth-namespace");
    assert_eq!(
        ns_wide["spec"]["client"]["meshTLS"]["identities"][0],
        "*.production.serviceaccount.identity.linkerd.cluster.local"
    );
    let frontend = value(&all, KindId::ServerAuthorization, "allow-frontend-to-api");
    assert_eq!(
        frontend["spec"]["server"],
        json!({"selector": {"matchLabels": {"app": "api"}}})
    );
}

#[test]
fn tracing_overrides_config_map() {
    let all = load_seed();
    let cm = find(&all, KindId::ConfigMap, "linkerd-config-overrides");
    let Object::ConfigMap(cm) = &cm.object else {
        panic!("not a ConfigMap")
    };
    let global = &cm.data.as_ref().unwrap()["global"];
    let docs = strait_api::yaml::parse(global).unwrap();
    assert_eq!(
        docs[0].value["tracing"]["collector"]["endpoint"],
        "jaeger.linkerd-jaeger:55678"
    );
    assert_eq!(docs[0].value["tracing"]["sampling"]["rate"], 1.0);
}

#[test]
fn the_same_object_in_two_files_is_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n";
    std::fs::write(dir.path().join("a.yaml"), ns).unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        format!("{ns}  labels:\n    team: mesh\n"),
    )
    .unwrap();
    let sources = read_sources(&[dir.path().display().to_string()], false, &mut std::io::empty()).unwrap();
    let loaded = load(&sources, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.len(), 2);
    assert!(loaded[0].replaces.is_none());
    assert_eq!(loaded[1].replaces.as_ref().unwrap().file, sources[0].name);
}
