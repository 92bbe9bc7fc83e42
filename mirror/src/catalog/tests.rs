//! The catalog codec, the pod projection, and a [`GatewayStore`] reading a real store
//! through a loopback stand-in for the gateways (the real gateways are in the
//! end-to-end tests).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use serde_json::json;
use strait_api::store::local::LocalStore;
use strait_api::{Kind, Store, StoreError, WatchEvent};
use strait_proxy::stream_header::{self as header, Progress, RefusalReason, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const BOUND: Duration = Duration::from_secs(10);

fn service(ns: &str, name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"mirror.linkerd.io/exported": "true"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": name}},
    }))
    .unwrap()
}

fn pod(ns: &str, name: &str, meshed: bool) -> Pod {
    let mut labels = json!({"app": "web"});
    let mut annotations = json!({"secret-ish": "do not leak"});
    if meshed {
        labels["linkerd.io/control-plane-ns"] = json!("linkerd");
        annotations["linkerd.io/proxy-version"] = json!("v1");
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "app:1",
                 "env": [{"name": "TOKEN", "value": "hunter2"}]}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7", "hostIP": "10.1.0.3",
                   "conditions": [{"type": "Ready", "status": "True", "reason": "ready-secret-8",
                                   "lastTransitionTime": "2026-11-26T12:00:00Z"},
                                  {"type": "PodScheduled", "status": "True", "message": "node-secret-9"}]},
    }))
    .unwrap()
}

#[test]
fn frames_round_trip_whatever_the_cut() {
    let frames = vec![
        Frame::Restarted(vec![service("a", "x"), service("b", "y")]),
        Frame::Applied(service("a", "z")),
        Frame::Deleted(service("a", "x")),
        Frame::Error("store unavailable".into()),
    ];
    let mut bytes = Vec::new();
    for f in &frames {
        encode(f, &mut bytes);
    }
    for cut in [1, 3, 4, 5, 17, 100, bytes.len()] {
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(cut) {
            d.push(chunk);
            while let Some(f) = d.next_frame::<Service>().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames, "cut every {cut} bytes");
        assert_eq!(d.pending(), 0);
    }
}

#[test]
fn oversized_and_foreign_frames_are_errors() {
    let mut d = FrameDecoder::default();
    d.push(&((MAX_FRAME as u32) + 1).to_be_bytes());
    assert_eq!(
        d.next_frame::<Service>(),
        Err(FrameError::TooLong { len: MAX_FRAME + 1 })
    );

    let mut d = FrameDecoder::default();
    let body = br#"{"applied": 7}"#;
    d.push(&(body.len() as u32).to_be_bytes());
    d.push(body);
    let err = d.next_frame::<Service>().unwrap_err();
    assert!(
        matches!(&err, FrameError::Decode { kind: "Service", .. }),
        "{err:?}"
    );

    let mut d = FrameDecoder::default();
    let body = br#"{"resized": []}"#;
    d.push(&(body.len() as u32).to_be_bytes());
    d.push(body);
    assert!(d.next_frame::<Service>().is_err());
}

#[test]
fn only_meshed_pods_leave_the_cluster_and_only_what_names_their_identity_and_endpoint() {
    assert_eq!(project_pod(&pod("a", "plain", false)), None);
    let p = project_pod(&pod("a", "meshed", true)).expect("meshed pods are in the catalog");
    let text = serde_json::to_string(&p).unwrap();
    for secret in [
        "hunter2",
        "10.1.0.3",
        "app:1",
        "do not leak",
        "node-secret-9",
        "PodScheduled",
    ] {
        assert!(!text.contains(secret), "{secret:?} leaked: {text}");
    }
    // Its address and readiness: a linked cluster's proxies balance over its endpoints.
    let status = p.status.as_ref().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
    let conditions = status.conditions.as_ref().unwrap();
    assert_eq!(conditions.len(), 1);
    assert_eq!(
        (conditions[0].type_.as_str(), conditions[0].status.as_str()),
        ("Ready", "True")
    );
    assert_eq!(p.metadata.name.as_deref(), Some("meshed"));
    assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "web");
    assert_eq!(
        p.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("web")
    );
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    // A pod annotated with a proxy version is meshed even without the label.
    let mut annotated = pod("a", "annotated", false);
    annotated
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("linkerd.io/proxy-version".into(), "v1".into());
    let p = project_pod(&annotated).expect("annotated pods are meshed");
    assert_eq!(
        p.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
        ["linkerd.io/proxy-version"]
    );
}

async fn ns(store: &impl Store, name: &str) {
    let n: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    store.apply(vec![n.into_object()]).await.unwrap();
}

async fn next<K: Kind>(
    w: &mut BoxStream<'static, Result<WatchEvent<K>, StoreError>>,
) -> Option<Result<WatchEvent<K>, StoreError>> {
    tokio::time::timeout(BOUND, w.next())
        .await
        .expect("a watch event in time")
}

fn names<K: Kind>(all: &[K]) -> Vec<String> {
    let mut v: Vec<String> = all
        .iter()
        .map(|o| o.metadata().name.clone().unwrap_or_default())
        .collect();
    v.sort();
    v
}

/// Stands in for the two gateways: answers each watch request with `refusal`, or
/// accepts it and streams `store`'s catalog. Returns the address and a counter of the
/// requests seen.
async fn entry(store: LocalStore, refusal: Option<(RefusalReason, &'static str)>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = l.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let request = loop {
                    let mut b = [0u8; 64];
                    let n = tcp.read(&mut b).await.unwrap();
                    assert!(n > 0, "the store closed before its request");
                    buf.extend_from_slice(&b[..n]);
                    if let Progress::Complete(d) = header::decode_request(&buf).unwrap() {
                        break d.frame;
                    }
                };
                let Request::Watch(resource) = request else {
                    panic!("a watch request expected, got {request:?}")
                };
                let mut frame = Vec::new();
                if let Some((reason, message)) = refusal {
                    let reply = Reply::Refused {
                        reason,
                        message: message.into(),
                    };
                    header::encode_reply(&reply, header::VERSION, &mut frame);
                    tcp.write_all(&frame).await.unwrap();
                    return;
                }
                header::encode_reply(&Reply::Accepted { app_port: None }, header::VERSION, &mut frame);
                tcp.write_all(&frame).await.unwrap();
                let mut frames = serve(&store, resource);
                while let Some(b) = frames.recv().await {
                    if tcp.write_all(&b).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_gateway_store_follows_the_targets_services_and_meshed_pods() {
    let east = LocalStore::in_memory();
    ns(&east, "web").await;
    east.apply(vec![service("web", "a").into_object()]).await.unwrap();
    let gw = GatewayStore::new(entry(east.clone(), None).await, "east");

    let mut services = gw.watch::<Service>();
    let Some(Ok(WatchEvent::Restarted(all))) = next(&mut services).await else {
        panic!("a full list first")
    };
    assert_eq!(names(&all), ["a"]);
    east.apply(vec![service("web", "b").into_object()]).await.unwrap();
    let Some(Ok(WatchEvent::Applied(s))) = next(&mut services).await else {
        panic!("the new service")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("b"));
    east.delete(&service("web", "a").into_object().key())
        .await
        .unwrap();
    let Some(Ok(WatchEvent::Deleted(s))) = next(&mut services).await else {
        panic!("the deleted service")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("a"));

    // Pods: only meshed ones, and a pod that stops being meshed is deleted.
    east.apply(vec![
        pod("web", "p1", true).into_object(),
        pod("web", "p2", false).into_object(),
    ])
    .await
    .unwrap();
    let mut pods = gw.watch::<Pod>();
    let Some(Ok(WatchEvent::Restarted(all))) = next(&mut pods).await else {
        panic!("a full list first")
    };
    assert_eq!(names(&all), ["p1"]);
    let status = all[0].status.as_ref().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"), "its endpoint address");
    assert!(
        all[0].spec.as_ref().unwrap().containers.is_empty(),
        "no containers"
    );
    east.apply(vec![pod("web", "p1", false).into_object()])
        .await
        .unwrap();
    let Some(Ok(WatchEvent::Deleted(p))) = next(&mut pods).await else {
        panic!("an unmeshed pod leaves the catalog")
    };
    assert_eq!(p.metadata.name.as_deref(), Some("p1"));
    east.apply(vec![pod("web", "p2", true).into_object()])
        .await
        .unwrap();
    let Some(Ok(WatchEvent::Applied(p))) = next(&mut pods).await else {
        panic!("a newly meshed pod joins the catalog")
    };
    assert_eq!(p.metadata.name.as_deref(), Some("p2"));

    // Reads through the watch work; writes and other kinds are refused, by name.
    assert_eq!(names(&gw.list::<Service>(Some("web")).await.unwrap()), ["b"]);
    assert!(gw.get::<Service>("web", "b").await.unwrap().is_some());
    let err = gw
        .apply(vec![service("web", "c").into_object()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    let mut secrets = gw.watch::<Secret>();
    let Some(Err(e)) = next(&mut secrets).await else {
        panic!("secrets are not served")
    };
    assert!(e.to_string().contains("only Services and Pods"), "{e}");
    assert!(next(&mut secrets).await.is_none());
}

#[tokio::test]
async fn refusals_and_missing_gateways_are_errors_that_say_what_to_do() {
    let east = LocalStore::in_memory();
    let refused = GatewayStore::new(
        entry(east.clone(), Some((RefusalReason::NotServed, "no catalog here"))).await,
        "east",
    );
    let mut w = refused.watch::<Service>();
    let Some(Err(e)) = next(&mut w).await else {
        panic!("a refusal is an error")
    };
    let text = e.to_string();
    assert!(
        text.contains("not-served") && text.contains("no catalog here"),
        "{text}"
    );
    assert!(text.contains("--serve-exports"), "{text}");
    assert!(text.contains("cluster east"), "{text}");
    assert!(next(&mut w).await.is_none(), "the watch ends after its error");

    // Nothing listening: the error names the flag of the gateway that should be there.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = l.local_addr().unwrap();
    drop(l);
    let mut w = GatewayStore::new(gone, "east").watch::<Service>();
    let Some(Err(e)) = next(&mut w).await else {
        panic!("no gateway is an error")
    };
    assert!(e.to_string().contains("--proxy-entry east="), "{e}");
}

#[tokio::test]
async fn the_mirror_runs_on_a_gateway_store() {
    use crate::controller::{LinkReport, MirrorOptions, run_link};
    use crate::probe::GatewayHealth;

    let east = LocalStore::in_memory();
    ns(&east, "web").await;
    east.apply(vec![
        service("web", "a").into_object(),
        pod("web", "a-1", true).into_object(),
    ])
    .await
    .unwrap();
    let west = LocalStore::in_memory();
    ns(&west, "web").await;
    let addr = entry(east.clone(), None).await;
    let gw = GatewayStore::new(addr, "east");
    let opts = MirrorOptions {
        gateway_entries: [("east".to_string(), addr)].into(),
        retry: Duration::from_millis(20),
        ..Default::default()
    };
    let (_health, health_rx) = tokio::sync::watch::channel(GatewayHealth {
        alive: true,
        ..Default::default()
    });
    let (report_tx, _report) = tokio::sync::watch::channel(LinkReport::default());
    let task = tokio::spawn(run_link(
        crate::reconcile::tests::link(),
        opts,
        gw,
        west.clone(),
        health_rx,
        report_tx,
        std::future::pending(),
    ));
    let deadline = tokio::time::Instant::now() + BOUND;
    let mirror = loop {
        if let Some(s) = west.get::<Service>("web", "a-east").await.unwrap() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "a-east never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let annotations = mirror.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("mirror.linkerd.io/remote-svc-fq-name")
            .map(String::as_str),
        Some("a.web.svc.cluster.local")
    );
    // Unexport through the link: the mirror goes.
    let mut unexported = service("web", "a");
    unexported.metadata.labels = None;
    east.apply(vec![unexported.into_object()]).await.unwrap();
    while west.get::<Service>("web", "a-east").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "a-east never went away");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
}
