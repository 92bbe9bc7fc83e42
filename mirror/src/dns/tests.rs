//! Cluster DNS over real UDP on 127.0.0.1, asked by hickory's resolver.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use k8s_openapi::api::core::v1::{Namespace, Service};
use serde_json::json;
use strait_api::store::local::LocalStore;
use strait_api::{Kind, KindId, ObjectKey, Store};

use super::*;

fn service(ns: &str, name: &str, ip: Option<&str>) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
    }))
    .unwrap()
}

#[test]
fn answers_by_name_type_and_domain() {
    let index = DnsIndex::default();
    index.on_service(WatchEvent::Restarted(vec![
        service("production", "myapp-east", Some("10.96.0.10")),
        service("production", "v6", Some("fd00::10")),
        service("production", "headless", Some("None")),
    ]));
    let d = "cluster.local";
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let cases = [
        (
            "myapp-east.production.svc.cluster.local.",
            RecordType::A,
            Answer::Found(vec![ip("10.96.0.10")]),
        ),
        (
            "MyApp-East.Production.svc.cluster.local",
            RecordType::A,
            Answer::Found(vec![ip("10.96.0.10")]),
        ),
        (
            "myapp-east.production.svc.cluster.local.",
            RecordType::AAAA,
            Answer::Found(vec![]),
        ),
        (
            "v6.production.svc.cluster.local.",
            RecordType::AAAA,
            Answer::Found(vec![ip("fd00::10")]),
        ),
        (
            "headless.production.svc.cluster.local.",
            RecordType::A,
            Answer::Found(vec![]),
        ),
        (
            "production.svc.cluster.local.",
            RecordType::A,
            Answer::Found(vec![]),
        ),
        (
            "nope.production.svc.cluster.local.",
            RecordType::A,
            Answer::NxDomain,
        ),
        (
            "myapp-east.staging.svc.cluster.local.",
            RecordType::A,
            Answer::NxDomain,
        ),
        ("a.b.c.d.cluster.local.", RecordType::A, Answer::NxDomain),
        ("example.com.", RecordType::A, Answer::Refused),
        ("notcluster.local.", RecordType::A, Answer::Refused),
    ];
    for (name, t, want) in cases {
        assert_eq!(index.answer(d, name, t), want, "{name} {t}");
    }
    index.on_service(WatchEvent::Deleted(service("production", "myapp-east", None)));
    assert_eq!(
        index.answer(d, "myapp-east.production.svc.cluster.local", RecordType::A),
        Answer::NxDomain
    );
}

#[tokio::test]
async fn serves_mirrors_over_udp_from_a_store() {
    let store = LocalStore::in_memory();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "production"}})).unwrap();
    store
        .apply(vec![
            ns.into_object(),
            service("production", "myapp-east", Some("10.96.0.10")).into_object(),
        ])
        .await
        .unwrap();
    let index = DnsIndex::default();
    let feeder = tokio::spawn(run_index(store.clone(), index.clone()));
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(udp, tcp, "cluster.local", index, async {
        let _ = stopped.await;
    }));

    let mut ns_config = NameServerConfig::udp("127.0.0.1".parse().unwrap());
    for c in &mut ns_config.connections {
        c.port = port;
    }
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(2);
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns_config]),
        TokioRuntimeProvider::default(),
    );
    *builder.options_mut() = opts;
    let resolver = builder.build().unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        match resolver
            .lookup_ip("myapp-east.production.svc.cluster.local.")
            .await
        {
            Ok(l) => break l.iter().collect::<Vec<_>>(),
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "no answer: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(found, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    let e = resolver
        .lookup_ip("nope.production.svc.cluster.local.")
        .await
        .unwrap_err();
    assert!(e.is_nx_domain(), "{e}");
    // A new mirror is served as soon as the store has it; a deleted one is gone.
    store
        .apply(vec![
            service("production", "web-east", Some("10.96.0.11")).into_object(),
        ])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(l) = resolver.lookup_ip("web-east.production.svc.cluster.local.").await {
            assert_eq!(
                l.iter().collect::<Vec<_>>(),
                vec!["10.96.0.11".parse::<IpAddr>().unwrap()]
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "web-east never resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store
        .delete(&ObjectKey::new(KindId::Service, "production", "web-east"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match resolver.lookup_ip("web-east.production.svc.cluster.local.").await {
            Err(e) if e.is_nx_domain() => break,
            _ => {
                assert!(tokio::time::Instant::now() < deadline, "web-east still resolves");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    stop.send(()).unwrap();
    server.await.unwrap();
    feeder.abort();
}
