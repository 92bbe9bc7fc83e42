//! Install, upgrade and uninstall: the manifests load back through the loader, carry the
//! identity material they were given, and upgrade keeps what an install chose.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;
use strait_api::Store;
use strait_api::kinds::{Kind, KindId, Object};
use strait_api::loader::{LoadOptions, load_str};
use strait_api::store::local::LocalStore;
use strait_api::{labels, yaml};
use strait_identity::{Issuer, TrustAnchors};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../identity/tests/fixtures")
        .join(name)
}

fn files(anchors: &str, cert: &str, key: &str) -> IdentityFiles {
    IdentityFiles {
        trust_anchors: fixture(anchors),
        issuer_certificate: fixture(cert),
        issuer_key: fixture(key),
    }
}

fn find<'a, K: Kind>(objects: &'a [Object], name: &str) -> &'a K {
    objects
        .iter()
        .filter_map(K::from_object_ref)
        .find(|o| {
            let v = serde_json::to_value(o).unwrap();
            v["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no {} {name}", K::info().kind))
}

fn yaml_of(objects: &[Object]) -> String {
    yaml::to_yaml(&objects.iter().map(Object::to_value).collect::<Vec<_>>())
}

fn secret_text(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[test]
fn install_prints_a_control_plane_the_loader_accepts() {
    let now = SystemTime::now();
    let rendered = install(&Options::default(), now).unwrap();
    let objects = &rendered.objects;
    let text = yaml_of(objects);
    let loaded = load_str("install.yaml", &text, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.len(), objects.len());

    let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(
        keys,
        [
            "namespace/linkerd",
            "clusterrole.rbac.authorization.k8s.io/linkerd-linkerd-controller",
            "clusterrolebinding.rbac.authorization.k8s.io/linkerd-linkerd-controller",
            "serviceaccount/linkerd/linkerd-controller",
            "secret/linkerd/linkerd-identity-issuer",
            "configmap/linkerd/linkerd-identity-trust-roots",
            "secret/linkerd/linkerd-proxy-injector-k8s-tls",
            "configmap/linkerd/linkerd-config",
            "service/linkerd/linkerd-dst",
            "service/linkerd/linkerd-dst-headless",
            "service/linkerd/linkerd-policy",
            "service/linkerd/linkerd-identity",
            "service/linkerd/linkerd-identity-headless",
            "service/linkerd/linkerd-proxy-injector",
            "deployment/linkerd/linkerd-controller",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/linkerd-proxy-injector-webhook-config",
        ]
    );

    let ns: &Namespace = find(objects, "linkerd");
    let l = ns.metadata.labels.clone().unwrap();
    assert_eq!(l[labels::IS_CONTROL_PLANE], "true");
    assert_eq!(l[labels::ADMISSION_WEBHOOKS], "disabled");
    assert_eq!(
        ns.metadata.annotations.clone().unwrap()[labels::INJECT],
        "disabled"
    );

    // The identity material is consistent: the issuer in the Secret chains to the anchors in
    // the ConfigMap, and the key is the certificate's.
    let roots: &ConfigMap = find(objects, "linkerd-identity-trust-roots");
    let pem = &roots.data.as_ref().unwrap()["ca-bundle.crt"];
    let anchors = TrustAnchors::from_pem(pem.as_bytes(), "ca-bundle.crt", now).unwrap();
    assert_eq!(anchors.subjects(), ["CN=root.linkerd.cluster.local"]);
    let issuer: &Secret = find(objects, "linkerd-identity-issuer");
    let loaded_issuer = Issuer::load(
        secret_text(issuer, "crt.pem").as_bytes(),
        secret_text(issuer, "key.pem").as_bytes(),
        &anchors,
        now,
    )
    .unwrap();
    assert_eq!(loaded_issuer.subject(), "CN=identity.linkerd.cluster.local");
    assert!(issuer.metadata.annotations.clone().unwrap()[labels::IDENTITY_ISSUER_EXPIRY].ends_with('Z'));

    // The webhook trusts the certificate its Secret holds.
    let tls: &Secret = find(objects, "linkerd-proxy-injector-k8s-tls");
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let hook: &MutatingWebhookConfiguration = find(objects, "linkerd-proxy-injector-webhook-config");
    let w = serde_json::to_value(&hook.webhooks.as_ref().unwrap()[0]).unwrap();
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(
        w["clientConfig"]["service"],
        json!({ "name": "linkerd-proxy-injector", "namespace": "linkerd", "path": "/", "port": 443 })
    );
    let ca_bundle: k8s_openapi::ByteString =
        serde_json::from_value(w["clientConfig"]["caBundle"].clone()).unwrap();
    assert_eq!(
        String::from_utf8(ca_bundle.0).unwrap(),
        secret_text(tls, "tls.crt")
    );
    assert_eq!(
        w["namespaceSelector"]["matchExpressions"][0],
        json!({ "key": "config.linkerd.io/admission-webhooks", "operator": "NotIn", "values": ["disabled"] })
    );
    assert_eq!(
        w["objectSelector"]["matchExpressions"][0]["operator"],
        "DoesNotExist"
    );
    assert_eq!(w["rules"][0]["resources"], json!(["pods", "services"]));

    // The controller runs `strait controller` with every port.
    let d: &Deployment = find(objects, "linkerd-controller");
    assert_eq!(d.spec.replicas, Some(1));
    let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(args[..4], ["--log", "info", "controller", "--kubernetes"]);
    // Every file the command line names is one of the mounts (cli's tests run it for real).
    for (flag, path) in [
        ("--values-file", "/var/run/linkerd/config/values"),
        (
            "--identity-trust-anchors-file",
            "/var/run/linkerd/identity/trust-roots/ca-bundle.crt",
        ),
        (
            "--identity-issuer-certificate-file",
            "/var/run/linkerd/identity/issuer/crt.pem",
        ),
        (
            "--identity-issuer-key-file",
            "/var/run/linkerd/identity/issuer/key.pem",
        ),
        ("--webhook-cert-file", "/var/run/linkerd/tls/tls.crt"),
        ("--webhook-key-file", "/var/run/linkerd/tls/tls.key"),
    ] {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} missing"));
        assert_eq!(args[i + 1], path);
    }
    let ports: Vec<(String, i32)> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc-dst".to_string(), 8086),
            ("grpc-identity".into(), 8080),
            ("grpc-policy".into(), 8090),
            ("proxy-injector".into(), 8443),
            ("admin-http".into(), 9990),
        ]
    );
    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    assert_eq!(c.resources, None);
    // Every Service reaches it, on Linkerd's ports.
    for (name, port, headless) in [
        ("linkerd-dst", 8086, false),
        ("linkerd-dst-headless", 8086, true),
        ("linkerd-policy", 8090, true),
        ("linkerd-identity", 8080, false),
        ("linkerd-identity-headless", 8080, true),
        ("linkerd-proxy-injector", 443, false),
    ] {
        let s: &Service = find(objects, name);
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.ports.as_ref().unwrap()[0].port, port, "{name}");
        assert_eq!(spec.cluster_ip.as_deref() == Some("None"), headless, "{name}");
        assert_eq!(
            spec.selector.clone().unwrap()[labels::CONTROL_PLANE_COMPONENT_LABEL],
            "controller"
        );
    }

    // linkerd-config holds the values, which read back equal.
    let config: &ConfigMap = find(objects, "linkerd-config");
    let back = Values::from_yaml(&config.data.as_ref().unwrap()["values"]).unwrap();
    assert_eq!(back, rendered.values);
}

#[test]
fn rbac_reads_what_the_controller_watches_and_writes_what_it_must() {
    let objects = install(&Options::default(), SystemTime::now()).unwrap().objects;
    let role = objects
        .iter()
        .find_map(|o| match o {
            Object::ClusterRole(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let rules = serde_json::to_value(&role.rules).unwrap();
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.as_array().unwrap().iter().any(|r| {
            r["apiGroups"].as_array().unwrap().contains(&json!(group))
                && r["resources"].as_array().unwrap().contains(&json!(resource))
                && r["verbs"].as_array().unwrap().contains(&json!(verb))
        })
    };
    for (group, resource, verb) in [
        ("", "pods", "watch"),
        ("", "services", "list"),
        ("policy.linkerd.io", "servers", "watch"),
        ("policy.linkerd.io", "httproutes", "watch"),
        ("gateway.networking.k8s.io", "grpcroutes", "watch"),
        ("linkerd.io", "serviceprofiles", "watch"),
        ("multicluster.linkerd.io", "links", "watch"),
        ("multicluster.linkerd.io", "links/status", "patch"),
        ("discovery.k8s.io", "endpointslices", "create"),
        ("", "events", "create"),
        ("authentication.k8s.io", "tokenreviews", "create"),
    ] {
        assert!(allows(group, resource, verb), "{verb} {group}/{resource}");
    }
    assert!(!allows("", "secrets", "list"), "no cluster-wide secret access");
}

#[test]
fn given_certificates_are_checked_and_used() {
    let now = SystemTime::now();
    let options = Options {
        identity_files: Some(files("ca.crt", "issuer.crt", "issuer.key")),
        ..Options::default()
    };
    let objects = install(&options, now).unwrap().objects;
    let issuer: &Secret = find(&objects, "linkerd-identity-issuer");
    let given = Issuer::load_files(
        fixture("issuer.crt"),
        fixture("issuer.key"),
        &TrustAnchors::load(fixture("ca.crt"), now).unwrap(),
        now,
    )
    .unwrap();
    assert_eq!(secret_text(issuer, "crt.pem"), given.cert_pem());
    let roots: &ConfigMap = find(&objects, "linkerd-identity-trust-roots");
    assert_eq!(
        roots.data.as_ref().unwrap()["ca-bundle.crt"],
        TrustAnchors::load(fixture("ca.crt"), now).unwrap().to_pem()
    );

    let cases = [
        (
            files("ca.crt", "issuer.crt", "mismatched.key"),
            "mismatched.key does not match",
        ),
        (
            files("other-ca.crt", "issuer.crt", "issuer.key"),
            "is not signed by any trust anchor in",
        ),
        (
            files("ca.crt", "not-ca.crt", "not-ca.key"),
            "not-ca.crt is not a CA certificate",
        ),
        (
            files("not-ca.crt", "issuer.crt", "issuer.key"),
            "--identity-trust-anchors-file: trust anchor CN=identity.linkerd.cluster.local in",
        ),
        (files("missing.crt", "issuer.crt", "issuer.key"), "could not read"),
    ];
    for (f, want) in cases {
        let err = install(
            &Options {
                identity_files: Some(f.clone()),
                ..Options::default()
            },
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(want), "{f:?}: {err}");
    }
    let err = IdentityFiles::from_flags(Some(fixture("ca.crt")), None, Some(fixture("issuer.key")))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "--identity-trust-anchors-file and --identity-issuer-key-file given without --identity-issuer-certificate-file"
        ),
        "{err}"
    );
}

#[test]
fn ha_and_set_shape_the_controller_and_the_proxies() {
    let options = Options {
        ha: true,
        set: vec![
            "controllerResources.cpu.limit=1".into(),
            "proxyResources.cpu.limit=2".into(),
            "proxy.logLevel=debug".into(),
        ],
        ..Options::default()
    };
    let rendered = install(&options, SystemTime::now()).unwrap();
    let objects = &rendered.objects;
    load_str("ha.yaml", &yaml_of(objects), &LoadOptions::default()).unwrap();
    let d: &Deployment = find(objects, "linkerd-controller");
    assert_eq!(d.spec.replicas, Some(3));
    let pod = d.spec.template.spec.as_ref().unwrap();
    assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
    assert_eq!(
        serde_json::to_value(&pod.containers[0].resources).unwrap(),
        json!({ "requests": { "cpu": "100m", "memory": "50Mi" }, "limits": { "cpu": "1", "memory": "250Mi" } })
    );
    let pdb: &PodDisruptionBudget = find(objects, "linkerd-controller");
    assert_eq!(serde_json::to_value(&pdb.spec).unwrap()["maxUnavailable"], 1);
    let hook: &MutatingWebhookConfiguration = find(objects, "linkerd-proxy-injector-webhook-config");
    assert_eq!(
        hook.webhooks.as_ref().unwrap()[0].failure_policy.as_deref(),
        Some("Fail")
    );

    // The proxy values reach injected pods.
    let config: &ConfigMap = find(objects, "linkerd-config");
    let values = Values::from_yaml(&config.data.as_ref().unwrap()["values"]).unwrap();
    let cfg = crate::inject::InjectConfig::new(values, "PEM");
    let pod = strait_api::loader::load_str(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: app, image: app}]}\n",
        &LoadOptions::default(),
    )
    .unwrap()
    .remove(0)
    .object;
    let out = crate::inject::inject(&pod, Default::default(), crate::inject::Mode::Manual(&cfg));
    let proxy = serde_json::to_value(
        &k8s_openapi::api::core::v1::Pod::from_object(out.object)
            .unwrap()
            .spec,
    )
    .unwrap();
    assert_eq!(
        proxy["containers"][0]["resources"],
        json!({ "requests": { "cpu": "100m", "memory": "20Mi" }, "limits": { "cpu": "2", "memory": "250Mi" } })
    );
    let env = proxy["containers"][0]["env"].as_array().unwrap();
    assert!(env.contains(
        &json!({ "name": "LINKERD2_PROXY_LOG", "value": "debug,[{headers}]=off,[{request}]=off" })
    ));
    assert!(env.contains(&json!({ "name": "LINKERD2_PROXY_CORES", "value": "2" })));

    let err = install(
        &Options {
            set: vec!["controllerReplicas=many".into()],
            ..Options::default()
        },
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, InstallError::Values(ValuesError::BadValue { .. })),
        "{err}"
    );
}

#[test]
fn rendering_is_deterministic() {
    let now = SystemTime::now();
    let identity = files("ca.crt", "issuer.crt", "issuer.key").load(now).unwrap();
    let webhook = WebhookTls::generate(now).unwrap();
    let a = yaml_of(&render(&Values::default(), &identity, &webhook));
    let b = yaml_of(&render(&Values::default(), &identity, &webhook));
    assert_eq!(a, b);
}

async fn installed_store(options: &Options) -> (LocalStore, Vec<Object>) {
    let objects = install(options, SystemTime::now()).unwrap().objects;
    let store = LocalStore::in_memory();
    let mut batch = crds();
    batch.extend(objects.clone());
    store.apply(batch).await.unwrap();
    (store, objects)
}

#[tokio::test]
async fn upgrade_keeps_the_installed_certificates_and_applies_overrides() {
    let (store, before) = installed_store(&Options {
        set: vec!["proxy.logLevel=info".into()],
        ..Options::default()
    })
    .await;
    let installed = read_installed(&store).await.unwrap();
    assert_eq!(installed.values.proxy.log_level.as_str(), "info");
    let options = Options {
        set: vec!["controllerReplicas=2".into()],
        ..Options::default()
    };
    let after = upgrade(&installed, &options, SystemTime::now()).unwrap();
    let d: &Deployment = find(&after.objects, "linkerd-controller");
    assert_eq!(d.spec.replicas, Some(2));
    for secret in ["linkerd-identity-issuer", "linkerd-proxy-injector-k8s-tls"] {
        let (b, a): (&Secret, &Secret) = (find(&before, secret), find(&after.objects, secret));
        assert_eq!(a.data, b.data, "{secret} is kept");
    }
    let (b, a): (&ConfigMap, &ConfigMap) = (
        find(&before, "linkerd-identity-trust-roots"),
        find(&after.objects, "linkerd-identity-trust-roots"),
    );
    assert_eq!(a.data, b.data);
    // Earlier values persist under the new ones.
    assert_eq!(after.values.proxy.log_level.as_str(), "info");
    assert_eq!(after.values.controller_replicas, 2);
    // The controller rolls: what it reads changed.
    let checksum = |objects: &[Object]| {
        let d: &Deployment = find(objects, "linkerd-controller");
        d.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap()["checksum/config"]
            .clone()
    };
    assert_ne!(checksum(&before), checksum(&after.objects));

    // Applying the upgrade and upgrading again with nothing new changes nothing.
    store.apply(after.objects.clone()).await.unwrap();
    let again = upgrade(
        &read_installed(&store).await.unwrap(),
        &Options::default(),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(yaml_of(&again.objects), yaml_of(&after.objects));

    // New files replace the certificates.
    let options = Options {
        identity_files: Some(files("ca.crt", "issuer.crt", "issuer.key")),
        ..Options::default()
    };
    let replaced = upgrade(&installed, &options, SystemTime::now()).unwrap();
    let (b, a): (&Secret, &Secret) = (
        find(&before, "linkerd-identity-issuer"),
        find(&replaced.objects, "linkerd-identity-issuer"),
    );
    assert_ne!(a.data, b.data);

    // The trust domain is fixed at install.
    let err = upgrade(
        &installed,
        &Options {
            trust_domain: Some("example.org".into()),
            ..Options::default()
        },
        SystemTime::now(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("installed with trust domain \"cluster.local\""),
        "{err}"
    );
    // …and giving the same one is fine.
    upgrade(
        &installed,
        &Options {
            trust_domain: Some("cluster.local".into()),
            ..Options::default()
        },
        SystemTime::now(),
    )
    .unwrap();
}

#[tokio::test]
async fn upgrade_without_an_install_says_what_is_missing() {
    let err = read_installed(&LocalStore::in_memory())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "configmap linkerd/linkerd-config key values not found: is the control plane installed? Run `strait install` first"
    );
    // A damaged install names the object and what is wrong with it.
    let (store, _) = installed_store(&Options::default()).await;
    let mut cm: ConfigMap = store.get(NAMESPACE, "linkerd-config").await.unwrap().unwrap();
    cm.data
        .as_mut()
        .unwrap()
        .insert("values".into(), "controllerReplicas: lots\n".into());
    store.apply(vec![Object::ConfigMap(cm)]).await.unwrap();
    let err = read_installed(&store).await.unwrap_err().to_string();
    assert!(
        err.starts_with("the installed configmap linkerd/linkerd-config key values cannot be read: controllerReplicas: invalid type"),
        "{err}"
    );
}

#[test]
fn uninstall_lists_everything_in_deletion_order() {
    let objects = uninstall(SystemTime::now()).unwrap();
    let names: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names[0],
        "MutatingWebhookConfiguration/linkerd-proxy-injector-webhook-config"
    );
    assert!(names.contains(&"PodDisruptionBudget/linkerd-controller".to_string()));
    assert!(names.contains(&"Secret/linkerd-identity-issuer".to_string()));
    let ns = names.iter().position(|n| n == "Namespace/linkerd").unwrap();
    let crd = names
        .iter()
        .position(|n| n.starts_with("CustomResourceDefinition/"))
        .unwrap();
    assert!(ns < crd, "CRDs go last: {names:?}");
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("CustomResourceDefinition/"))
            .count(),
        strait_api::mesh::crds().len()
    );
    for o in &objects {
        assert_eq!(o.as_object().unwrap().len(), 3, "skeletons only: {o}");
    }
    let kinds: std::collections::BTreeSet<KindId> = install(
        &Options {
            ha: true,
            ..Options::default()
        },
        SystemTime::now(),
    )
    .unwrap()
    .objects
    .iter()
    .map(Object::kind_id)
    .collect();
    assert!(kinds.contains(&KindId::PodDisruptionBudget));
}
