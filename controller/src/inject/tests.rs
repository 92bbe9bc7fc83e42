//! The injector against the seed, every workload kind, edge-case templates, and the webhook
//! (pure and over real HTTPS).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde_json::{Value, json};
use strait_api::kinds::{self, Kind, Object};
use strait_api::loader::{LoadOptions, load_str};
use strait_api::{labels, yaml};

use super::patch::tests::apply as apply_patch;
use super::webhook::{self, ReviewError};
use super::*;
use crate::install::values::Values;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn anchors_pem() -> String {
    std::fs::read_to_string(repo().join("identity/tests/fixtures/ca.crt")).unwrap()
}

fn config() -> InjectConfig {
    InjectConfig::new(Values::default(), anchors_pem())
}

fn seed(file: &str) -> Vec<Object> {
    let path = repo().join("examples/linkerd-seed").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    load_str(file, &text, &LoadOptions::default())
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect()
}

fn obj(v: Value) -> Object {
    let info = kinds::lookup(v["apiVersion"].as_str().unwrap(), v["kind"].as_str().unwrap()).unwrap();
    Object::from_value(info.id, v).unwrap()
}

fn pod_spec(o: &Object) -> &PodSpec {
    workload::template(o).unwrap().1.unwrap()
}

fn template_meta(o: &Object) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    workload::template(o).unwrap().0.unwrap()
}

fn container<'a>(o: &'a Object, name: &str) -> &'a Container {
    let s = pod_spec(o);
    s.containers
        .iter()
        .chain(s.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// `NAME=value`, or `NAME<-fieldPath` for downward-API variables.
fn env_lines(c: &Container) -> Vec<String> {
    c.env
        .iter()
        .flatten()
        .map(|e| match &e.value_from {
            Some(f) => format!("{}<-{}", e.name, f.field_ref.as_ref().unwrap().field_path),
            None => format!("{}={}", e.name, e.value.clone().unwrap_or_default()),
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn seed_deployment() -> Object {
    seed("02-deployment-injection.yaml").remove(0)
}

fn seed_namespace_annotations() -> BTreeMap<String, String> {
    seed("01-namespace-injection.yaml")[0]
        .meta()
        .annotations
        .clone()
        .unwrap()
}

#[test]
fn the_seed_deployment_gets_linkerds_proxy() {
    let cfg = config();
    let ns = seed_namespace_annotations();
    let input = seed_deployment();
    let out = inject(
        &input,
        Namespace {
            name: None,
            annotations: Some(&ns),
        },
        Mode::Manual(&cfg),
    );
    assert_eq!(out.outcome, Outcome::Injected { ingress: false });
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let o = &out.object;

    let names: Vec<&str> = pod_spec(o).containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["linkerd-proxy", "myapp"], "the proxy starts first");
    let init: Vec<&str> = pod_spec(o)
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["linkerd-init"]);

    let init = container(o, "linkerd-init");
    assert_eq!(
        init.image.as_deref(),
        Some(format!("localhost/strait:{}", crate::install::values::VERSION).as_str())
    );
    assert_eq!(
        init.args.clone().unwrap(),
        [
            "init",
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--inbound-ports-to-ignore",
            "4190,4191,8080,8443",
            "--outbound-ports-to-ignore",
            "3306,5432",
        ]
    );
    let sc = serde_json::to_value(init.security_context.as_ref().unwrap()).unwrap();
    assert_eq!(sc["capabilities"], json!({ "add": ["NET_ADMIN", "NET_RAW"] }));
    assert_eq!(sc["runAsNonRoot"], json!(true));
    assert_eq!(sc["runAsUser"], json!(65534));
    assert_eq!(sc["privileged"], json!(false));

    let proxy = container(o, "linkerd-proxy");
    assert_eq!(proxy.args.clone().unwrap(), ["proxy"]);
    let pem = anchors_pem();
    let networks = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";
    let want = [
        "_pod_name<-metadata.name".to_string(),
        "_pod_ns<-metadata.namespace".into(),
        "_pod_nodeName<-spec.nodeName".into(),
        "LINKERD2_PROXY_CORES=1".into(),
        "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED=false".into(),
        "LINKERD2_PROXY_LOG=info,linkerd=debug,[{headers}]=off,[{request}]=off".into(),
        "LINKERD2_PROXY_LOG_FORMAT=plain".into(),
        "LINKERD2_PROXY_DESTINATION_SVC_ADDR=linkerd-dst-headless.linkerd.svc.cluster.local.:8086".into(),
        format!("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS={networks}"),
        "LINKERD2_PROXY_POLICY_SVC_ADDR=linkerd-policy.linkerd.svc.cluster.local.:8090".into(),
        r#"LINKERD2_PROXY_POLICY_WORKLOAD={"ns":"$(_pod_ns)", "pod":"$(_pod_name)"}"#.into(),
        "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY=all-unauthenticated".into(),
        format!("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS={networks}"),
        "LINKERD2_PROXY_CONTROL_LISTEN_ADDR=0.0.0.0:4190".into(),
        "LINKERD2_PROXY_ADMIN_LISTEN_ADDR=0.0.0.0:4191".into(),
        "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:4140".into(),
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR=0.0.0.0:4143".into(),
        "LINKERD2_PROXY_INBOUND_IPS<-status.podIPs".into(),
        "LINKERD2_PROXY_INBOUND_PORTS=8080".into(),
        "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES=svc.cluster.local.".into(),
        "LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE=10000ms".into(),
        "LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE=10000ms".into(),
        "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=25,587,3306,4444,5432,6379,9300,11211".into(),
        r#"LINKERD2_PROXY_DESTINATION_CONTEXT={"ns":"$(_pod_ns)", "nodeName":"$(_pod_nodeName)", "pod":"$(_pod_name)"}"#
            .into(),
        "_pod_sa<-spec.serviceAccountName".into(),
        "_l5d_ns=linkerd".into(),
        "_l5d_trustdomain=cluster.local".into(),
        "LINKERD2_PROXY_IDENTITY_DIR=/var/run/linkerd/identity/end-entity".into(),
        format!("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS={}", pem.trim()),
        "LINKERD2_PROXY_IDENTITY_TOKEN_FILE=/var/run/secrets/tokens/linkerd-identity-token".into(),
        "LINKERD2_PROXY_IDENTITY_SVC_ADDR=linkerd-identity-headless.linkerd.svc.cluster.local.:8080".into(),
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME=$(_pod_sa).$(_pod_ns).serviceaccount.identity.linkerd.cluster.local".into(),
        "LINKERD2_PROXY_IDENTITY_SVC_NAME=linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local".into(),
        "LINKERD2_PROXY_DESTINATION_SVC_NAME=linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local"
            .into(),
        "LINKERD2_PROXY_POLICY_SVC_NAME=linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local".into(),
    ];
    assert_eq!(env_lines(proxy), want);

    let p = serde_json::to_value(proxy).unwrap();
    assert_eq!(
        p["ports"],
        json!([{ "containerPort": 4143, "name": "linkerd-proxy" }, { "containerPort": 4191, "name": "linkerd-admin" }])
    );
    assert_eq!(
        p["readinessProbe"]["httpGet"],
        json!({ "path": "/ready", "port": 4191 })
    );
    assert_eq!(
        p["livenessProbe"]["httpGet"],
        json!({ "path": "/live", "port": 4191 })
    );
    let resources = json!({
        "requests": { "cpu": "100m", "memory": "128Mi" },
        "limits": { "cpu": "1000m", "memory": "256Mi" },
    });
    assert_eq!(p["resources"], resources);
    assert_eq!(serde_json::to_value(&init.resources).unwrap(), resources);
    assert_eq!(p["securityContext"]["runAsUser"], json!(2102));
    assert_eq!(p["securityContext"]["readOnlyRootFilesystem"], json!(true));
    assert_eq!(
        p["volumeMounts"],
        json!([
            { "mountPath": "/var/run/linkerd/identity/end-entity", "name": "linkerd-identity-end-entity" },
            { "mountPath": "/var/run/secrets/tokens", "name": "linkerd-identity-token" },
        ])
    );
    let volumes = serde_json::to_value(&pod_spec(o).volumes).unwrap();
    assert_eq!(
        volumes[0],
        json!({ "name": "linkerd-proxy-init-xtables-lock", "emptyDir": {} })
    );
    assert_eq!(
        volumes[1]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        json!("identity.l5d.io")
    );
    assert_eq!(
        volumes[2],
        json!({ "name": "linkerd-identity-end-entity", "emptyDir": { "medium": "Memory" } })
    );

    // Labels on the pods, annotations on the pods, as Linkerd sets them.
    let meta = template_meta(o);
    assert_eq!(
        meta.labels.clone().unwrap(),
        map(&[
            ("app", "myapp"),
            (labels::CONTROL_PLANE_NS_LABEL, "linkerd"),
            (labels::PROXY_DEPLOYMENT_LABEL, "myapp"),
            (labels::WORKLOAD_NS_LABEL, "production"),
        ])
    );
    let a = meta.annotations.clone().unwrap();
    assert_eq!(
        a[labels::INJECTED_BY],
        format!("strait/cli {}", crate::install::values::VERSION)
    );
    assert_eq!(a[labels::PROXY_VERSION], crate::install::values::VERSION);
    assert_eq!(a[labels::TRUST_ROOT_SHA256], cfg.trust_root_sha256());
    assert_eq!(
        a[labels::INJECT],
        "enabled",
        "the template's own annotations stay"
    );
    assert!(a.contains_key(RECORD));
    // Everything outside the pod template is untouched.
    let d = Deployment::from_object_ref(o).unwrap();
    assert_eq!(d.spec.replicas, Some(2));
    assert_eq!(d.metadata, input.meta().clone());

    // The injected Deployment is still a valid manifest.
    let text = yaml::to_yaml(&[o.to_value()]);
    load_str("injected.yaml", &text, &LoadOptions::default()).unwrap();
}

#[test]
fn seed_namespace_enables_the_webhook_for_its_pods() {
    let cfg = config();
    let ns = seed_namespace_annotations();
    // A pod of the namespace without an annotation of its own, as the ReplicaSet creates it.
    let pod = obj(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "myapp-7d4b9c-",
            "labels": { "app": "myapp", "pod-template-hash": "7d4b9c" },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "myapp-7d4b9c",
                "uid": "u", "controller": true,
            }],
        },
        "spec": { "containers": [{ "name": "myapp", "image": "myapp:latest" }] },
    }));
    let at = |annotations| Namespace {
        name: Some("production"),
        annotations,
    };
    let out = inject(&pod, at(Some(&ns)), Mode::Admission(&cfg));
    assert_eq!(out.outcome, Outcome::Injected { ingress: false });
    let labels = out.object.meta().labels.clone().unwrap();
    assert_eq!(labels[labels::PROXY_DEPLOYMENT_LABEL], "myapp");
    assert_eq!(labels[labels::WORKLOAD_NS_LABEL], "production");
    assert_eq!(
        out.object.meta().annotations.clone().unwrap()[labels::INJECTED_BY],
        format!("strait/proxy-injector {}", crate::install::values::VERSION)
    );
    // Without the namespace's annotation the webhook leaves the pod alone.
    let out = inject(&pod, at(None), Mode::Admission(&cfg));
    assert_eq!(out.outcome, Outcome::Skipped(Skip::NotEnabled));
}

fn template(annotations: Value) -> Value {
    json!({
        "metadata": { "labels": { "app": "w" }, "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "app:1", "ports": [{ "containerPort": 8080 }] }] },
    })
}

/// One object of every workload kind, enabled for injection.
fn every_kind(annotations: Value) -> Vec<Object> {
    let t = template(annotations);
    let mut job_t = t.clone();
    job_t["spec"]["restartPolicy"] = json!("Never");
    let meta = json!({ "name": "w", "namespace": "shop" });
    let selector = json!({ "matchLabels": { "app": "w" } });
    let mut pod =
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": meta.clone(), "spec": t["spec"].clone() });
    pod["metadata"]["labels"] = t["metadata"]["labels"].clone();
    pod["metadata"]["annotations"] = t["metadata"]["annotations"].clone();
    vec![
        obj(
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": { "selector": selector, "template": t } }),
        ),
        obj(
            json!({ "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
            "spec": { "selector": selector, "serviceName": "w", "template": t } }),
        ),
        obj(
            json!({ "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
            "spec": { "selector": selector, "template": t } }),
        ),
        obj(
            json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
            "spec": { "selector": selector, "template": t } }),
        ),
        obj(json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": { "template": job_t } })),
        obj(
            json!({ "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": { "schedule": "*/5 * * * *", "jobTemplate": { "spec": { "template": job_t } } } }),
        ),
        obj(pod),
    ]
}

fn round_trips(x: &Object, mode: Mode<'_>) -> Object {
    let once = inject(x, Namespace::default(), mode);
    let twice = inject(&once.object, Namespace::default(), mode);
    assert_eq!(
        twice.object.to_value(),
        once.object.to_value(),
        "injecting twice changes nothing"
    );
    assert!(
        matches!(twice.outcome, Outcome::Skipped(_)),
        "{:?}",
        twice.outcome
    );
    let back = uninject(&once.object);
    assert_eq!(
        back.object.to_value(),
        x.to_value(),
        "uninject(inject(x)) == x for {}",
        x.key()
    );
    once.object
}

#[test]
fn every_workload_kind_is_injected_and_uninjected() {
    let cfg = config();
    let labels_by_kind = [
        labels::PROXY_DEPLOYMENT_LABEL,
        labels::PROXY_STATEFULSET_LABEL,
        labels::PROXY_DAEMONSET_LABEL,
        labels::PROXY_REPLICASET_LABEL,
        labels::PROXY_JOB_LABEL,
        labels::PROXY_CRONJOB_LABEL,
    ];
    let objects = every_kind(json!({ labels::INJECT: "enabled" }));
    for (i, x) in objects.iter().enumerate() {
        for mode in [Mode::Manual(&cfg), Mode::Admission(&cfg)] {
            let out = inject(x, Namespace::default(), mode);
            assert_eq!(out.outcome, Outcome::Injected { ingress: false }, "{}", x.key());
            let names: Vec<&str> = pod_spec(&out.object)
                .containers
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(names, ["linkerd-proxy", "app"], "{}", x.key());
            let l = template_meta(&out.object).labels.clone().unwrap();
            assert_eq!(l[labels::WORKLOAD_NS_LABEL], "shop");
            match labels_by_kind.get(i) {
                Some(label) => assert_eq!(l[*label], "w", "{}", x.key()),
                // A bare pod has no owner to name.
                None => assert!(!l.keys().any(|k| k.starts_with("linkerd.io/proxy-")), "{l:?}"),
            }
            let injected = round_trips(x, mode);
            let text = yaml::to_yaml(&[injected.to_value()]);
            load_str("injected.yaml", &text, &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", x.key()));
        }
    }
    // `inject` without --manual only annotates, every kind alike.
    for x in every_kind(json!({})) {
        let out = inject(&x, Namespace::default(), Mode::Annotate);
        assert_eq!(out.outcome, Outcome::Annotated, "{}", x.key());
        assert_eq!(
            template_meta(&out.object).annotations.clone().unwrap()[labels::INJECT],
            "enabled"
        );
        assert_eq!(pod_spec(&out.object).containers.len(), 1);
        round_trips(&x, Mode::Annotate);
    }
}

#[test]
fn edge_case_templates_round_trip_exactly() {
    let cfg = config();
    let deployment = |template: Value| {
        obj(
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "d" },
            "spec": { "selector": { "matchLabels": { "app": "d" } }, "template": template } }),
        )
    };
    let containers = json!([{ "name": "app", "image": "app" }]);
    let fixtures = [
        // No template metadata at all.
        deployment(json!({ "spec": { "containers": containers } })),
        // Explicitly empty collections stay explicitly empty.
        deployment(json!({
            "metadata": { "labels": {}, "annotations": {} },
            "spec": { "containers": containers, "initContainers": [], "volumes": [] },
        })),
        // The application's own init containers and volumes keep their places.
        deployment(json!({
            "metadata": { "labels": { "app": "d" } },
            "spec": {
                "containers": containers,
                "initContainers": [{ "name": "migrate", "image": "app" }],
                "volumes": [{ "name": "data", "emptyDir": {} }],
            },
        })),
        // Keys injection sets, already there with other values.
        deployment(json!({
            "metadata": {
                "labels": { labels::CONTROL_PLANE_NS_LABEL: "elsewhere", labels::PROXY_DEPLOYMENT_LABEL: "old" },
                "annotations": { labels::PROXY_VERSION: "old", labels::INJECTED_BY: "me", RECORD: "{}" },
            },
            "spec": { "containers": containers },
        })),
    ];
    for x in &fixtures {
        for mode in [Mode::Manual(&cfg), Mode::Annotate] {
            round_trips(x, mode);
        }
    }
    // created-by names whoever made the workload; injection keeps it.
    let out = inject(&fixtures[3], Namespace::default(), Mode::Manual(&cfg));
    assert_eq!(
        template_meta(&out.object).annotations.clone().unwrap()[labels::INJECTED_BY],
        "me"
    );
    // Annotate, then inject the pods the webhook would see: undo peels one layer at a time.
    let annotated = inject(&fixtures[0], Namespace::default(), Mode::Annotate).object;
    let injected = inject(&annotated, Namespace::default(), Mode::Admission(&cfg));
    assert_eq!(injected.outcome, Outcome::Injected { ingress: false });
    let once = uninject(&injected.object);
    assert_eq!(once.object.to_value(), annotated.to_value());
    assert_eq!(uninject(&once.object).object.to_value(), fixtures[0].to_value());
}

#[test]
fn every_seed_object_round_trips() {
    let cfg = config();
    let dir = repo().join("examples/linkerd-seed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut workloads = 0;
    for f in files {
        for x in seed(f.file_name().unwrap().to_str().unwrap()) {
            for mode in [Mode::Manual(&cfg), Mode::Annotate] {
                let out = inject(&x, Namespace::default(), mode);
                if out.outcome == Outcome::Skipped(Skip::NotAWorkload) {
                    assert_eq!(out.object.to_value(), x.to_value());
                    assert_eq!(uninject(&x).outcome, UninjectOutcome::NotAWorkload);
                    continue;
                }
                workloads += 1;
                assert_eq!(
                    uninject(&out.object).object.to_value(),
                    x.to_value(),
                    "{}",
                    x.key()
                );
            }
        }
    }
    assert_eq!(workloads, 2, "the seed has one Deployment, seen in two modes");
}

#[test]
fn annotations_choose_and_configure() {
    let cfg = config();
    let with = |annotations: Value, spec_extra: Value| {
        let mut v = json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "p", "namespace": "shop", "annotations": annotations },
            "spec": { "containers": [{ "name": "app", "image": "app" }] } });
        for (k, x) in spec_extra.as_object().unwrap() {
            v["spec"][k] = x.clone();
        }
        obj(v)
    };
    let ns = Namespace::default();

    let ingress = inject(
        &with(json!({ labels::INJECT: "ingress" }), json!({})),
        ns,
        Mode::Admission(&cfg),
    );
    assert_eq!(ingress.outcome, Outcome::Injected { ingress: true });
    assert!(
        env_lines(container(&ingress.object, "linkerd-proxy"))
            .contains(&"LINKERD2_PROXY_INGRESS_MODE=true".into())
    );

    for mode in [Mode::Manual(&cfg), Mode::Admission(&cfg), Mode::Annotate] {
        let disabled = with(json!({ labels::INJECT: "disabled" }), json!({}));
        let out = inject(&disabled, ns, mode);
        assert_eq!(out.outcome, Outcome::Skipped(Skip::DisabledOnPod));
        assert_eq!(out.object.to_value(), disabled.to_value());

        let host = with(
            json!({ labels::INJECT: "enabled" }),
            json!({ "hostNetwork": true }),
        );
        let out = inject(&host, ns, mode);
        assert_eq!(out.outcome, Outcome::Skipped(Skip::HostNetwork));
        assert_eq!(out.object.to_value(), host.to_value());
    }
    // The pod template wins over its namespace.
    let ns_disabled = map(&[(labels::INJECT, "disabled")]);
    let out = inject(
        &with(json!({ labels::INJECT: "enabled" }), json!({})),
        Namespace {
            name: None,
            annotations: Some(&ns_disabled),
        },
        Mode::Admission(&cfg),
    );
    assert_eq!(out.outcome, Outcome::Injected { ingress: false });

    // config.linkerd.io/* annotations reach the containers.
    let configured = with(
        json!({
            labels::INJECT: "enabled",
            labels::config::PROXY_UID: "3000",
            labels::config::PROXY_LOG_FORMAT: "json",
            labels::config::OPAQUE_PORTS: "4000",
            labels::config::DEFAULT_INBOUND_POLICY: "deny",
            labels::config::SKIP_SUBNETS: "10.0.0.0/8",
            labels::config::PROXY_AWAIT: "disabled",
            labels::config::DISABLE_TAP: "true",
            labels::config::PROXY_VERSION: "9.9.9",
            labels::config::PROXY_EPHEMERAL_STORAGE_LIMIT: "1Gi",
            labels::config::PROXY_REQUIRE_IDENTITY_INBOUND_PORTS: "8080, 9000-9001",
        }),
        json!({}),
    );
    let out = inject(&configured, ns, Mode::Admission(&cfg));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let proxy = container(&out.object, "linkerd-proxy");
    let env = env_lines(proxy);
    for line in [
        "LINKERD2_PROXY_LOG_FORMAT=json",
        "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION=4000",
        "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY=deny",
        "LINKERD2_PROXY_TAP_DISABLED=true",
        "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY=8080,9000-9001",
    ] {
        assert!(env.contains(&line.to_string()), "{line} missing from {env:#?}");
    }
    assert_eq!(proxy.image.as_deref(), Some("localhost/strait:9.9.9"));
    assert_eq!(proxy.security_context.as_ref().unwrap().run_as_user, Some(3000));
    assert_eq!(
        serde_json::to_value(&proxy.resources).unwrap(),
        json!({ "limits": { "ephemeral-storage": "1Gi" } })
    );
    let names: Vec<&str> = pod_spec(&out.object)
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["app", "linkerd-proxy"],
        "without await the proxy goes last"
    );
    let args = container(&out.object, "linkerd-init").args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--proxy-uid", "3000"]), "{args:?}");
    assert!(
        args.windows(2)
            .any(|w| w == ["--subnets-to-ignore", "10.0.0.0/8"]),
        "{args:?}"
    );
    assert_eq!(
        template_meta(&out.object).annotations.clone().unwrap()[labels::PROXY_VERSION],
        "9.9.9"
    );

    // A bad value is ignored with a warning that says what was expected.
    let bad = with(
        json!({ labels::INJECT: "enabled", labels::config::PROXY_MEMORY_LIMIT: "lots" }),
        json!({}),
    );
    let out = inject(&bad, ns, Mode::Admission(&cfg));
    assert_eq!(out.outcome, Outcome::Injected { ingress: false });
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].contains("config.linkerd.io/proxy-memory-limit"),
        "{:?}",
        out.warnings
    );

    // Identity cannot be disabled (Linkerd 2.12 removed it, and its proxy, like ours,
    // refuses to start without): the annotation is refused with a warning and the proxy
    // keeps its identity, token volume and trust-root checksum.
    let anonymous = with(json!({ labels::config::DISABLE_IDENTITY: "true" }), json!({}));
    let out = inject(&anonymous, ns, Mode::Manual(&cfg));
    assert!(
        out.warnings.len() == 1
            && out.warnings[0].contains(
                "config.linkerd.io/disable-identity on the pod: identity can no longer be disabled"
            ),
        "{:?}",
        out.warnings
    );
    let env = env_lines(container(&out.object, "linkerd-proxy"));
    assert!(
        !env.iter()
            .any(|l| l.starts_with("LINKERD2_PROXY_IDENTITY_DISABLED"))
    );
    assert!(
        env.iter()
            .any(|l| l.starts_with("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"))
    );
    let volumes: Vec<String> = pod_spec(&out.object)
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(
        volumes,
        [
            "linkerd-proxy-init-xtables-lock",
            "linkerd-identity-token",
            "linkerd-identity-end-entity"
        ]
    );
    assert!(
        template_meta(&out.object)
            .annotations
            .clone()
            .unwrap()
            .contains_key(labels::TRUST_ROOT_SHA256)
    );
    assert_eq!(uninject(&out.object).object.to_value(), anonymous.to_value());

    // A conntrack timeout needs a privileged, root init container.
    let close_wait = with(json!({ labels::config::CLOSE_WAIT_TIMEOUT: "2m" }), json!({}));
    let out = inject(&close_wait, ns, Mode::Manual(&cfg));
    let init = container(&out.object, "linkerd-init");
    assert!(
        init.args
            .clone()
            .unwrap()
            .ends_with(&["--timeout-close-wait-secs".to_string(), "120".into()])
    );
    let sc = init.security_context.clone().unwrap();
    assert_eq!((sc.privileged, sc.run_as_user), (Some(true), Some(0)));

    // proxyInit.runAsRoot runs the init container as root.
    let mut values = Values::default();
    values.set("proxyInit.runAsRoot=true").unwrap();
    let root = InjectConfig::new(values, anchors_pem());
    let out = inject(&with(json!({}), json!({})), ns, Mode::Manual(&root));
    let sc = container(&out.object, "linkerd-init")
        .security_context
        .clone()
        .unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_non_root), (Some(0), Some(false)));
}

/// `proxy.enableShutdownEndpoint` reaches the proxy as Linkerd's variable.
#[test]
fn the_shutdown_endpoint_value_reaches_the_proxy() {
    let mut values = Values::default();
    values.set("proxy.enableShutdownEndpoint=true").unwrap();
    let cfg = InjectConfig::new(values, anchors_pem());
    let x = every_kind(json!({ labels::INJECT: "enabled" })).remove(0);
    let out = inject(&x, Namespace::default(), Mode::Manual(&cfg));
    let env = env_lines(container(&out.object, "linkerd-proxy"));
    assert!(
        env.contains(&"LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED=true".to_string()),
        "{env:?}"
    );
    assert!(
        Values::default()
            .set("proxy.enableShutdownEndpoint=maybe")
            .is_err()
    );
}

#[test]
fn uninject_without_a_record_strips_like_linkerd_and_refuses_bad_records() {
    let cfg = config();
    let x = every_kind(json!({ labels::INJECT: "enabled" })).remove(0);
    let injected = inject(&x, Namespace::default(), Mode::Manual(&cfg)).object;
    // As if injected by Linkerd: the same containers, no record.
    let mut foreign = injected.clone();
    workload::with_template(&mut foreign, |m, _| {
        m.as_mut().unwrap().annotations.as_mut().unwrap().remove(RECORD);
    });
    let out = uninject(&foreign);
    assert_eq!(out.outcome, UninjectOutcome::Stripped);
    let meta = template_meta(&out.object);
    assert_eq!(meta.labels.clone().unwrap(), map(&[("app", "w")]));
    assert_eq!(
        meta.annotations, None,
        "linkerd.io/inject: enabled goes too, as with Linkerd"
    );
    assert_eq!(pod_spec(&out.object).init_containers, None);
    assert_eq!(pod_spec(&out.object).containers.len(), 1);

    let mut damaged = injected.clone();
    workload::with_template(&mut damaged, |m, _| {
        m.as_mut()
            .unwrap()
            .annotations
            .as_mut()
            .unwrap()
            .insert(RECORD.into(), "not json".into());
    });
    let out = uninject(&damaged);
    assert!(
        matches!(out.outcome, UninjectOutcome::BadRecord(ref why) if why.contains(RECORD)),
        "{:?}",
        out.outcome
    );
    assert_eq!(out.object.to_value(), damaged.to_value());

    assert_eq!(uninject(&x).outcome, UninjectOutcome::NotInjected);
}

fn review(pod: Value, namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": "CREATE",
            "object": pod,
        },
    }))
    .unwrap()
}

fn enabled_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "web", "annotations": { labels::INJECT: "enabled" } },
        "spec": {
            "containers": [{ "name": "web", "image": "web", "ports": [{ "containerPort": 80 }] }],
            // A field from a newer Kubernetes than the typed model: the patch leaves it be.
            "someFutureField": { "x": 1 },
        },
    })
}

/// The patch of a review response, decoded.
fn patch_of(response: &Value) -> Option<Vec<patch::Operation>> {
    let r = &response["response"];
    let b64 = r.get("patch")?;
    assert_eq!(r["patchType"], "JSONPatch");
    let bytes: k8s_openapi::ByteString = serde_json::from_value(b64.clone()).unwrap();
    Some(serde_json::from_slice(&bytes.0).unwrap())
}

/// Applies a response's patch to the pod that was sent, as the API server does.
fn patched(pod: &Value, response: &Value) -> Pod {
    let ops = patch_of(response).expect("a patch");
    let mut doc = pod.clone();
    apply_patch(&mut doc, &ops).unwrap();
    assert_eq!(
        doc["spec"]["someFutureField"],
        json!({ "x": 1 }),
        "unknown fields survive"
    );
    serde_json::from_value(doc).unwrap()
}

fn expected_injection(pod: &Value, namespace: &str) -> Pod {
    let cfg = config();
    let x = obj(pod.clone());
    let out = inject(
        &x,
        Namespace {
            name: Some(namespace),
            annotations: None,
        },
        Mode::Admission(&cfg),
    );
    Pod::from_object(out.object).unwrap()
}

#[tokio::test]
async fn the_webhook_answers_reviews() {
    let cfg = std::sync::Arc::new(config());
    let namespaces =
        webhook::StaticNamespaces([("production".to_string(), map(&[(labels::INJECT, "enabled")]))].into());
    let hook = webhook::Webhook::new(cfg, namespaces);

    let pod = enabled_pod();
    let response = hook.review(&review(pod.clone(), "shop")).await.unwrap();
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(
        response["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(patched(&pod, &response), expected_injection(&pod, "shop"));

    // Enabled by the namespace only.
    let mut plain = enabled_pod();
    plain["metadata"]["annotations"] = json!({});
    let response = hook.review(&review(plain.clone(), "production")).await.unwrap();
    assert!(patch_of(&response).is_some());
    let response = hook.review(&review(plain, "elsewhere")).await.unwrap();
    assert_eq!(
        response["response"],
        json!({ "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true })
    );

    // An already-injected pod is allowed unchanged.
    let injected = serde_json::to_value(expected_injection(&pod, "shop")).unwrap();
    let response = hook.review(&review(injected, "shop")).await.unwrap();
    assert!(patch_of(&response).is_none());

    // A pod that cannot be decoded is let through, with a warning.
    let response = hook
        .review(&review(
            json!({ "metadata": { "name": "x" }, "spec": { "containers": "oops" } }),
            "shop",
        ))
        .await
        .unwrap();
    assert_eq!(response["response"]["allowed"], true);
    assert!(response["response"].get("patch").is_none());
    let warning = response["response"]["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("cannot decode the pod (spec.containers"),
        "{warning}"
    );

    // Other kinds are none of the injector's business.
    let mut svc = serde_json::from_slice::<Value>(&review(json!({}), "shop")).unwrap();
    svc["request"]["kind"] = json!({ "group": "", "version": "v1", "kind": "Service" });
    let response = hook.review(&serde_json::to_vec(&svc).unwrap()).await.unwrap();
    assert!(patch_of(&response).is_none());
}

#[tokio::test]
async fn malformed_reviews_are_refused() {
    let hook = webhook::Webhook::new(
        std::sync::Arc::new(config()),
        webhook::StaticNamespaces::default(),
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "malformed AdmissionReview: expected ident"),
        (b"[]".to_vec(), "malformed AdmissionReview: expected a JSON object, found an array"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"}}}"#.to_vec(),
            "expected an admission.k8s.io/v1 AdmissionReview, found apiVersion \"admission.k8s.io/v1beta1\"",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            "no request (with a uid) to answer",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","kind":{"kind":"Pod"}}}"#.to_vec(),
            "no request (with a uid) to answer",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_vec(),
            "malformed AdmissionReview: missing field `kind`",
        ),
    ];
    for (body, want) in cases {
        let err = hook.review(&body).await.unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
        assert!(matches!(
            err,
            ReviewError::Malformed(_) | ReviewError::WrongType { .. } | ReviewError::NoRequest
        ));
    }
}

mod over_tls {
    //! The webhook served for real: HTTPS on loopback, a rustls client, hyper on both ends.

    use std::sync::Arc;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio_rustls::{TlsConnector, rustls};

    use super::*;

    struct Server {
        addr: std::net::SocketAddr,
        client: Arc<ClientConfig>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start() -> Server {
        let cert =
            rcgen::generate_simple_self_signed(vec!["linkerd-proxy-injector.linkerd.svc".into()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let mut tls = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let namespaces = webhook::StaticNamespaces::default();
        let hook = Arc::new(webhook::Webhook::new(Arc::new(config()), namespaces));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, Arc::new(tls), hook, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            client: Arc::new(client),
            stop,
            task,
        }
    }

    async fn post(s: &Server, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        let name = ServerName::try_from("linkerd-proxy-injector.linkerd.svc").unwrap();
        let tls = TlsConnector::from(s.client.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "linkerd-proxy-injector.linkerd.svc")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        (
            status,
            resp.into_body().collect().await.unwrap().to_bytes().to_vec(),
        )
    }

    #[tokio::test]
    async fn reviews_over_https() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let s = start().await;
        let pod = enabled_pod();
        for path in ["/", "/inject"] {
            let (status, body) = post(&s, "POST", path, review(pod.clone(), "shop")).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let response: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(patched(&pod, &response), expected_injection(&pod, "shop"));
        }

        let (status, body) = post(&s, "POST", "/", b"{\"kind\": 1}".to_vec()).await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).starts_with("malformed AdmissionReview: "));
        let (status, body) = post(&s, "GET", "/", Vec::new()).await;
        assert_eq!(status, 405, "{}", String::from_utf8_lossy(&body));
        let (status, body) = post(&s, "POST", "/mutate", review(pod, "shop")).await;
        assert_eq!(status, 404);
        assert!(String::from_utf8_lossy(&body).contains("POST AdmissionReviews to / or /inject"));

        // Shutdown stops the server, which returns.
        s.stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.task)
            .await
            .expect("the server stops")
            .unwrap();
        assert!(
            TcpStream::connect(s.addr).await.is_err(),
            "the listener is closed"
        );
    }
}

struct Unreachable;

impl webhook::NamespaceSource for Unreachable {
    async fn annotations(&self, _: &str) -> Result<Option<BTreeMap<String, String>>, webhook::SourceError> {
        Err("the API server is unreachable".into())
    }
}

#[tokio::test]
async fn the_webhook_reads_namespaces_from_a_store_and_survives_losing_it() {
    use strait_api::Store;
    let store = strait_api::store::local::LocalStore::in_memory();
    store.apply(seed("01-namespace-injection.yaml")).await.unwrap();
    let hook = webhook::Webhook::new(std::sync::Arc::new(config()), webhook::StoreNamespaces(store));
    let mut plain = enabled_pod();
    plain["metadata"]["annotations"] = json!({});
    let response = hook.review(&review(plain.clone(), "production")).await.unwrap();
    assert!(patch_of(&response).is_some(), "production enables injection");
    let response = hook.review(&review(plain.clone(), "default")).await.unwrap();
    assert!(patch_of(&response).is_none(), "default does not");

    // Without its namespace the webhook still answers: the pod's own annotation decides.
    let hook = webhook::Webhook::new(std::sync::Arc::new(config()), Unreachable);
    let response = hook.review(&review(plain, "production")).await.unwrap();
    assert!(patch_of(&response).is_none());
    let warning = response["response"]["warnings"][0].as_str().unwrap();
    assert_eq!(
        warning,
        "strait proxy injector: cannot read namespace production (the API server is unreachable); its annotations were not considered"
    );
    let response = hook.review(&review(enabled_pod(), "production")).await.unwrap();
    assert!(patch_of(&response).is_some());
}

/// Injected proxies verify the control plane by the `*_SVC_NAME` identities: they must be
/// exactly the ones the controller's TLS listeners present (`crate::tls`), in any trust
/// domain, or every proxy would refuse its control plane.
#[test]
fn proxies_are_told_the_identities_the_controller_serves() {
    for td in [strait_identity::DEFAULT_TRUST_DOMAIN, "west.example.org"] {
        let values = Values {
            identity_trust_domain: td.into(),
            ..Values::default()
        };
        let c = InjectConfig::new(values, anchors_pem());
        let dst = crate::tls::destination_identity(td).unwrap().to_string();
        let id = crate::tls::identity_identity(td).unwrap().to_string();
        assert_eq!(c.control_plane_identity("linkerd-destination"), dst);
        assert_eq!(c.control_plane_identity("linkerd-identity"), id);
        // The names parse as the proxy parses them.
        assert!(dst.parse::<strait_identity::IdentityName>().is_ok());
    }
}

/// As Linkerd's injector does, a namespace's `config.linkerd.io/opaque-ports` goes onto
/// the pods injected there and the Services created there that have none of their own,
/// so discovery (which reads the pod and the Service) agrees with the proxy's inbound.
#[tokio::test]
async fn a_namespace_s_opaque_ports_go_onto_its_pods_and_services() {
    let cfg = std::sync::Arc::new(config());
    let namespaces = webhook::StaticNamespaces(
        [(
            "data".to_string(),
            map(&[
                (labels::INJECT, "enabled"),
                (labels::config::OPAQUE_PORTS, "3306,5432"),
            ]),
        )]
        .into(),
    );
    let hook = webhook::Webhook::new(cfg, namespaces);
    let pod = enabled_pod();
    let response = hook.review(&review(pod.clone(), "data")).await.unwrap();
    let injected = patched(&pod, &response);
    assert_eq!(
        injected.metadata.annotations.unwrap()[labels::config::OPAQUE_PORTS],
        "3306,5432"
    );
    // A pod with its own keeps it.
    let mut own = enabled_pod();
    own["metadata"]["annotations"][labels::config::OPAQUE_PORTS] = json!("9000");
    let injected = patched(&own, &hook.review(&review(own.clone(), "data")).await.unwrap());
    assert_eq!(
        injected.metadata.annotations.unwrap()[labels::config::OPAQUE_PORTS],
        "9000"
    );

    let service = |annotations: Value| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "mysql", "annotations": annotations },
            "spec": { "ports": [{ "port": 3306 }] },
        })
    };
    let review_service = |svc: Value, ns: &str| {
        let mut r = serde_json::from_slice::<Value>(&review(svc, ns)).unwrap();
        r["request"]["kind"] = json!({ "group": "", "version": "v1", "kind": "Service" });
        serde_json::to_vec(&r).unwrap()
    };
    let svc = service(json!({ "team": "db" }));
    let response = hook.review(&review_service(svc.clone(), "data")).await.unwrap();
    let mut doc = svc.clone();
    apply_patch(&mut doc, &patch_of(&response).expect("a patch")).unwrap();
    assert_eq!(
        doc["metadata"]["annotations"],
        json!({ "team": "db", labels::config::OPAQUE_PORTS: "3306,5432" })
    );
    // Without annotations at all, one is made.
    let mut bare = service(json!(null));
    bare["metadata"].as_object_mut().unwrap().remove("annotations");
    let response = hook.review(&review_service(bare.clone(), "data")).await.unwrap();
    let mut doc = bare.clone();
    apply_patch(&mut doc, &patch_of(&response).expect("a patch")).unwrap();
    assert_eq!(
        doc["metadata"]["annotations"][labels::config::OPAQUE_PORTS],
        "3306,5432"
    );
    // Its own annotation, or a namespace without one: unchanged.
    let own = service(json!({ labels::config::OPAQUE_PORTS: "3307" }));
    assert!(patch_of(&hook.review(&review_service(own, "data")).await.unwrap()).is_none());
    assert!(patch_of(&hook.review(&review_service(svc, "shop")).await.unwrap()).is_none());
}
