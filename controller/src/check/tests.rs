use std::time::{Duration, SystemTime};

use strait_api::Kind;
use strait_api::store::local::LocalStore;
use strait_identity::{TrustDomain, generate};

use super::*;

fn statuses(checks: &[Check]) -> Vec<(String, Status)> {
    checks.iter().map(|c| (c.description.clone(), c.status)).collect()
}

#[test]
fn healthy_identity_passes_and_a_near_expiry_issuer_warns() {
    let now = SystemTime::now();
    let (anchors, issuer) = generate(&TrustDomain::default(), now).unwrap();
    let checks = identity(
        anchors.to_pem().as_bytes(),
        "ca.crt",
        issuer.cert_pem().as_bytes(),
        issuer.key_pem().as_bytes(),
        "issuer.crt",
        now,
    );
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
    assert_eq!(checks.len(), 4);

    // Generated 340 days ago: the one-year issuer has 25 days left.
    let then = now - Duration::from_secs(340 * 24 * 3600);
    let (anchors, issuer) = generate(&TrustDomain::default(), then).unwrap();
    let checks = identity(
        anchors.to_pem().as_bytes(),
        "ca.crt",
        issuer.cert_pem().as_bytes(),
        issuer.key_pem().as_bytes(),
        "issuer.crt",
        now,
    );
    let warn = checks
        .iter()
        .find(|c| c.status == Status::Warn)
        .expect("a warning");
    assert_eq!(
        warn.description,
        "issuer certificate is valid for at least 60 days"
    );
    let hint = warn.hint.as_deref().unwrap();
    assert!(
        hint.contains("expires in 2") && hint.contains("strait upgrade"),
        "{hint}"
    );
}

#[test]
fn an_issuer_from_other_anchors_fails_with_what_to_do() {
    let now = SystemTime::now();
    let (anchors, _) = generate(&TrustDomain::default(), now).unwrap();
    let (_, stranger) = generate(&TrustDomain::default(), now).unwrap();
    let checks = identity(
        anchors.to_pem().as_bytes(),
        "ca.crt",
        stranger.cert_pem().as_bytes(),
        stranger.key_pem().as_bytes(),
        "issuer.crt",
        now,
    );
    let fail = checks
        .iter()
        .find(|c| c.status == Status::Fail)
        .expect("a failure");
    let hint = fail.hint.as_deref().unwrap();
    assert!(
        hint.contains("not signed by any trust anchor") && hint.contains("strait upgrade"),
        "{hint}"
    );
    let checks = identity(b"not pem", "ca.crt", b"", b"", "issuer.crt", now);
    assert_eq!(
        statuses(&checks).len(),
        1,
        "nothing else is checked without anchors"
    );
    assert_eq!(checks[0].status, Status::Fail);
    assert!(checks[0].hint.as_deref().unwrap().contains("ca.crt"));
}

#[tokio::test]
async fn an_installed_control_plane_is_checked_through_the_store() {
    let now = SystemTime::now();
    let store = LocalStore::in_memory();
    let checks = installed(&store, "0.1.0", now).await;
    assert_eq!(checks[0].status, Status::Fail);
    assert!(checks[0].hint.as_deref().unwrap().contains("strait install"));

    let rendered = crate::install::install(&Default::default(), now).unwrap();
    let mut objects = rendered.objects;
    objects.extend(crate::install::crds());
    store.apply(objects).await.unwrap();
    let checks = installed(&store, "0.1.0", now).await;
    let got = statuses(&checks);
    assert!(
        got.contains(&("control plane CRDs are installed".into(), Status::Ok)),
        "{got:#?}"
    );
    let pods = checks
        .iter()
        .find(|c| c.description == "control plane pods are ready")
        .unwrap();
    assert_eq!(pods.status, Status::Fail, "no replica reports ready yet");
    assert!(pods.hint.as_deref().unwrap().contains("0 of"), "{:?}", pods.hint);
    assert!(
        got.iter()
            .filter(|(d, _)| d.contains("issuer") || d.contains("trust anchors"))
            .all(|(_, s)| *s == Status::Ok),
        "{got:#?}"
    );

    // The Deployment's status reports its replicas ready.
    let mut d: Deployment = store
        .get(crate::install::NAMESPACE, crate::install::manifests::CONTROLLER)
        .await
        .unwrap()
        .unwrap();
    let want = d.spec.replicas.unwrap_or(1);
    d.status =
        Some(serde_json::from_value(serde_json::json!({"readyReplicas": want, "replicas": want})).unwrap());
    store.apply(vec![d.into_object()]).await.unwrap();
    let checks = installed(&store, "0.1.0", now).await;
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{:#?}", checks);
    assert!(
        Report(&checks)
            .to_string()
            .ends_with("Status check results are √")
    );
}

#[test]
fn proxies_ready_and_current() {
    let pod = |name: &str, ready: bool, version: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "production",
                         "labels": {"linkerd.io/control-plane-ns": "linkerd"},
                         "annotations": {"linkerd.io/proxy-version": version}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    };
    let checks = proxies(
        &[
            pod("a", true, "0.1.0"),
            pod("b", false, "0.1.0"),
            pod("c", true, "0.0.9"),
        ],
        "0.1.0",
    );
    assert_eq!(checks[0].status, Status::Fail);
    assert!(checks[0].hint.as_deref().unwrap().contains("production/b"));
    assert_eq!(checks[1].status, Status::Warn);
    assert!(
        checks[1]
            .hint
            .as_deref()
            .unwrap()
            .contains("production/c (0.0.9)")
    );
    let report = Report(&checks).to_string();
    assert!(
        report.contains("linkerd-data-plane\n------------------\n×"),
        "{report}"
    );
    assert!(report.ends_with("Status check results are ×"));
}
