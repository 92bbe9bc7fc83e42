//! Cluster DNS over real UDP on 127.0.0.1, asked by hickory's resolver.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
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
            Answer::Found(vec![Rec::Addr(ip("10.96.0.10"))]),
        ),
        (
            "MyApp-East.Production.svc.cluster.local",
            RecordType::A,
            Answer::Found(vec![Rec::Addr(ip("10.96.0.10"))]),
        ),
        (
            "myapp-east.production.svc.cluster.local.",
            RecordType::AAAA,
            Answer::Found(vec![]),
        ),
        (
            "v6.production.svc.cluster.local.",
            RecordType::AAAA,
            Answer::Found(vec![Rec::Addr(ip("fd00::10"))]),
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

fn named_ports_service(ns: &str, name: &str, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": ip, "ports": [
            {"name": "http", "port": 80},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ]},
    }))
    .unwrap()
}

/// A slice of `svc` with (address, hostname, ready) endpoints on port `http` 8080.
fn slice(ns: &str, name: &str, svc: &str, endpoints: &[(&str, Option<&str>, Option<bool>)]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(ip, host, ready)| json!({
            "addresses": [ip],
            "hostname": host,
            "conditions": {"ready": ready},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn pod(ns: &str, name: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }))
    .unwrap()
}

fn srv(weight: u16, port: u16, target: &str) -> Rec {
    Rec::Srv {
        weight,
        port,
        target: target.into(),
    }
}

#[test]
fn srv_headless_services_endpoints_and_pods_follow_the_kubernetes_dns_specification() {
    let index = DnsIndex::default();
    let dual: Service = serde_json::from_value(json!({
        "metadata": {"name": "dual", "namespace": "production"},
        "spec": {"clusterIP": "10.96.0.53", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]},
    }))
    .unwrap();
    index.on_service(WatchEvent::Restarted(vec![
        named_ports_service("production", "myapp-east", "10.96.0.10"),
        named_ports_service("production", "db", "None"),
        dual,
        // One unnamed port.
        service("production", "plain", Some("10.96.0.80")),
    ]));
    index.on_slice(WatchEvent::Restarted(vec![
        slice(
            "production",
            "db-1",
            "db",
            &[
                ("10.1.0.5", Some("db-0"), Some(true)),
                ("10.1.0.6", None, None),
                ("10.1.0.7", Some("db-2"), Some(false)),
            ],
        ),
        // A mirror's slice is not what a ClusterIP Service's name answers.
        slice(
            "production",
            "myapp-east-1",
            "myapp-east",
            &[("10.9.9.9", None, Some(true))],
        ),
    ]));
    index.on_pod(WatchEvent::Restarted(vec![pod("production", "db-0", "10.1.0.5")]));
    let d = "cluster.local";
    let ip = |s: &str| Rec::Addr(s.parse::<IpAddr>().unwrap());
    let cases = [
        // A ClusterIP Service: its IP; SRV per port to the Service's own name.
        (
            "myapp-east.production.svc.cluster.local",
            RecordType::A,
            Answer::Found(vec![ip("10.96.0.10")]),
        ),
        (
            "myapp-east.production.svc.cluster.local",
            RecordType::SRV,
            Answer::Found(vec![
                srv(50, 80, "myapp-east.production.svc.cluster.local."),
                srv(50, 53, "myapp-east.production.svc.cluster.local."),
            ]),
        ),
        (
            "_http._tcp.myapp-east.production.svc.cluster.local",
            RecordType::SRV,
            Answer::Found(vec![srv(100, 80, "myapp-east.production.svc.cluster.local.")]),
        ),
        (
            "_dns._udp.myapp-east.production.svc.cluster.local",
            RecordType::SRV,
            Answer::Found(vec![srv(100, 53, "myapp-east.production.svc.cluster.local.")]),
        ),
        (
            "_http._tcp.myapp-east.production.svc.cluster.local",
            RecordType::A,
            Answer::Found(vec![]),
        ),
        // One port number over two protocols is one record.
        (
            "dual.production.svc.cluster.local",
            RecordType::SRV,
            Answer::Found(vec![srv(100, 53, "dual.production.svc.cluster.local.")]),
        ),
        // An unnamed port has no SRV name.
        (
            "_._tcp.plain.production.svc.cluster.local",
            RecordType::SRV,
            Answer::NxDomain,
        ),
        (
            "_http._udp.myapp-east.production.svc.cluster.local",
            RecordType::SRV,
            Answer::NxDomain,
        ),
        (
            "_grpc._tcp.myapp-east.production.svc.cluster.local",
            RecordType::SRV,
            Answer::NxDomain,
        ),
        // A headless Service: its ready endpoints (readiness unknown counts as ready).
        (
            "db.production.svc.cluster.local",
            RecordType::A,
            Answer::Found(vec![ip("10.1.0.5"), ip("10.1.0.6")]),
        ),
        (
            "_http._tcp.db.production.svc.cluster.local",
            RecordType::SRV,
            Answer::Found(vec![
                srv(50, 8080, "10-1-0-6.db.production.svc.cluster.local."),
                srv(50, 8080, "db-0.db.production.svc.cluster.local."),
            ]),
        ),
        (
            "db-0.db.production.svc.cluster.local",
            RecordType::A,
            Answer::Found(vec![ip("10.1.0.5")]),
        ),
        (
            "10-1-0-6.db.production.svc.cluster.local",
            RecordType::A,
            Answer::Found(vec![ip("10.1.0.6")]),
        ),
        (
            "DB-0.db.production.svc.cluster.local.",
            RecordType::AAAA,
            Answer::Found(vec![]),
        ),
        (
            "db-2.db.production.svc.cluster.local",
            RecordType::A,
            Answer::NxDomain,
        ),
        (
            "db-9.db.production.svc.cluster.local",
            RecordType::A,
            Answer::NxDomain,
        ),
        // Endpoint names exist only under headless Services.
        (
            "10-9-9-9.myapp-east.production.svc.cluster.local",
            RecordType::A,
            Answer::NxDomain,
        ),
        // Pods: only an IP some pod of the namespace has.
        (
            "10-1-0-5.production.pod.cluster.local",
            RecordType::A,
            Answer::Found(vec![ip("10.1.0.5")]),
        ),
        (
            "10-1-0-6.production.pod.cluster.local",
            RecordType::A,
            Answer::NxDomain,
        ),
        (
            "10-1-0-5.staging.pod.cluster.local",
            RecordType::A,
            Answer::NxDomain,
        ),
        (
            "not-an-ip.production.pod.cluster.local",
            RecordType::A,
            Answer::NxDomain,
        ),
        (
            "production.pod.cluster.local",
            RecordType::A,
            Answer::Found(vec![]),
        ),
        ("pod.cluster.local", RecordType::A, Answer::Found(vec![])),
    ];
    for (name, t, want) in cases {
        assert_eq!(index.answer(d, name, t), want, "{name} {t}");
    }
    // Endpoints follow their slices.
    index.on_slice(WatchEvent::Deleted(slice("production", "db-1", "db", &[])));
    assert_eq!(
        index.answer(d, "db.production.svc.cluster.local", RecordType::A),
        Answer::Found(vec![])
    );
    assert_eq!(
        index.answer(d, "db-0.db.production.svc.cluster.local", RecordType::A),
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
    // A headless Service: SRV over the wire names each ready endpoint, and each name
    // resolves to its endpoint.
    store
        .apply(vec![
            named_ports_service("production", "db", "None").into_object(),
            slice(
                "production",
                "db-1",
                "db",
                &[
                    ("10.1.0.5", Some("db-0"), Some(true)),
                    ("10.1.0.7", Some("db-2"), Some(false)),
                ],
            )
            .into_object(),
        ])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let targets = loop {
        if let Ok(l) = resolver
            .lookup("_http._tcp.db.production.svc.cluster.local.", RecordType::SRV)
            .await
        {
            break l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some((srv.port, srv.target.to_string())),
                    _ => None,
                })
                .collect::<Vec<_>>();
        }
        assert!(tokio::time::Instant::now() < deadline, "no SRV answer for db");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        targets,
        vec![(8080, "db-0.db.production.svc.cluster.local.".to_string())]
    );
    let l = resolver
        .lookup_ip("db-0.db.production.svc.cluster.local.")
        .await
        .unwrap();
    assert_eq!(
        l.iter().collect::<Vec<_>>(),
        vec!["10.1.0.5".parse::<IpAddr>().unwrap()]
    );
    stop.send(()).unwrap();
    server.await.unwrap();
    feeder.abort();
}

/// One query over UDP (or TCP, with its length prefix), its answer decoded.
async fn ask(
    server: std::net::SocketAddr,
    query: &hickory_server::proto::op::Message,
    tcp: bool,
) -> hickory_server::proto::op::Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = query.to_vec().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        if tcp {
            let mut conn = tokio::net::TcpStream::connect(server).await.unwrap();
            conn.write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
                .await
                .unwrap();
            conn.write_all(&bytes).await.unwrap();
            let len = conn.read_u16().await.unwrap();
            let mut buf = vec![0; usize::from(len)];
            conn.read_exact(&mut buf).await.unwrap();
            buf
        } else {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.send_to(&bytes, server).await.unwrap();
            let mut buf = vec![0; 65535];
            let n = sock.recv(&mut buf).await.unwrap();
            buf.truncate(n);
            buf
        }
    })
    .await
    .expect("an answer within 5 s");
    hickory_server::proto::op::Message::from_vec(&answer).unwrap()
}

fn query(name: &str, qtype: RecordType) -> hickory_server::proto::op::Message {
    let mut m = hickory_server::proto::op::Message::query();
    m.metadata.id = 7;
    m.add_query(hickory_server::proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        qtype,
    ));
    m
}

fn with_edns(
    mut m: hickory_server::proto::op::Message,
    payload: u16,
    version: u8,
) -> hickory_server::proto::op::Message {
    let mut e = Edns::new();
    e.set_max_payload(payload).set_version(version);
    m.set_edns(e);
    m
}

/// What resolvers rely on besides the records, over real UDP and TCP: opcodes and classes
/// this zone does not serve, negative answers with the SOA, ExternalName aliases, EDNS
/// echoed and bounding UDP answers (truncated past it, whole over TCP).
#[tokio::test]
async fn the_wire_answers_follow_the_dns_rfcs() {
    use hickory_server::proto::op::OpCode as Op;
    let store = LocalStore::in_memory();
    let ns =
        |name: &str| -> Namespace { serde_json::from_value(json!({"metadata": {"name": name}})).unwrap() };
    let external: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext", "namespace": "production"},
        "spec": {"type": "ExternalName", "externalName": "DB.Example.org."},
    }))
    .unwrap();
    let inside: Service = serde_json::from_value(json!({
        "metadata": {"name": "alias", "namespace": "production"},
        "spec": {"type": "ExternalName", "externalName": "xn--bcher-kva.production.svc.cluster.local"},
    }))
    .unwrap();
    let ips: Vec<String> = (1..=60).map(|i| format!("10.1.0.{i}")).collect();
    let eps: Vec<(&str, Option<&str>, Option<bool>)> =
        ips.iter().map(|ip| (ip.as_str(), None, Some(true))).collect();
    store
        .apply(vec![
            ns("production").into_object(),
            ns("empty").into_object(),
            external.into_object(),
            inside.into_object(),
            service("production", "xn--bcher-kva", Some("10.96.0.30")).into_object(),
            named_ports_service("production", "big", "None").into_object(),
            slice("production", "big-1", "big", &eps).into_object(),
        ])
        .await
        .unwrap();
    let index = DnsIndex::default();
    let feeder = tokio::spawn(run_index(store.clone(), index.clone()));
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(server_addr).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(udp, tcp, "cluster.local", index.clone(), async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while index.answer("cluster.local", "empty.svc.cluster.local", RecordType::A) == Answer::NxDomain
        || index.answer("cluster.local", "big.production.svc.cluster.local", RecordType::A)
            == Answer::Found(vec![])
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index never caught up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let soa_of = |m: &hickory_server::proto::op::Message| {
        m.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some((r.name.to_string(), soa.minimum)),
            _ => None,
        })
    };

    // Opcodes other than QUERY, and classes other than IN, are not served.
    let mut update = query("cluster.local.", RecordType::SOA);
    update.metadata.op_code = Op::Update;
    assert_eq!(
        ask(server_addr, &update, false).await.metadata.response_code,
        ResponseCode::NotImp
    );
    let mut chaos = query("myapp.production.svc.cluster.local.", RecordType::A);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        ask(server_addr, &chaos, false).await.metadata.response_code,
        ResponseCode::Refused
    );

    // Negative answers carry the zone's SOA, its minimum the answers' TTL.
    let nx = ask(
        server_addr,
        &query("nope.production.svc.cluster.local.", RecordType::A),
        false,
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert_eq!(soa_of(&nx), Some(("cluster.local.".to_string(), TTL)), "{nx:?}");
    // A namespace without Services or pods exists: NODATA, not NXDOMAIN.
    let nodata = ask(
        server_addr,
        &query("empty.svc.cluster.local.", RecordType::A),
        false,
    )
    .await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(soa_of(&nodata).is_some(), "{nodata:?}");
    let apex = ask(server_addr, &query("cluster.local.", RecordType::SOA), false).await;
    assert!(
        matches!(apex.answers.first().map(|r| &r.data), Some(RData::SOA(_))),
        "{apex:?}"
    );

    // A name is matched as its bytes: a punycode label is not read as Unicode.
    let puny = ask(
        server_addr,
        &query("xn--bcher-kva.production.svc.cluster.local.", RecordType::A),
        false,
    )
    .await;
    assert_eq!(puny.answers.len(), 1, "{puny:?}");

    // An ExternalName Service is an alias, whatever the type asked.
    for t in [RecordType::A, RecordType::AAAA] {
        let alias = ask(server_addr, &query("ext.production.svc.cluster.local.", t), false).await;
        let targets: Vec<String> = alias
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(c) => Some(c.0.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(targets, ["db.example.org."], "{alias:?}");
    }

    // An alias inside the zone is followed: the stub resolvers of pods do not chase it.
    let chased = ask(
        server_addr,
        &query("alias.production.svc.cluster.local.", RecordType::A),
        false,
    )
    .await;
    let answers: Vec<(String, String)> = chased
        .answers
        .iter()
        .map(|r| {
            // ASCII forms: Display would show the punycode label as Unicode.
            let data = match &r.data {
                RData::CNAME(c) => c.0.to_ascii(),
                other => other.to_string(),
            };
            (r.name.to_ascii(), data)
        })
        .collect();
    assert_eq!(
        answers,
        [
            (
                "alias.production.svc.cluster.local.".to_string(),
                "xn--bcher-kva.production.svc.cluster.local.".to_string()
            ),
            (
                "xn--bcher-kva.production.svc.cluster.local.".to_string(),
                "10.96.0.30".to_string()
            ),
        ],
        "{chased:?}"
    );

    // 60 addresses do not fit 512 bytes: without EDNS the UDP answer is truncated, with
    // EDNS (echoed) it is whole, and over TCP it is whole.
    let big = "big.production.svc.cluster.local.";
    let plain = ask(server_addr, &query(big, RecordType::A), false).await;
    assert!(plain.metadata.truncation, "{plain:?}");
    assert!(plain.answers.len() < 60);
    let edns = ask(server_addr, &with_edns(query(big, RecordType::A), 4096, 0), false).await;
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 60);
    assert_eq!(
        edns.edns.as_ref().map(|e| (e.version(), e.max_payload())),
        Some((0, 4096))
    );
    let over_tcp = ask(server_addr, &query(big, RecordType::A), true).await;
    assert_eq!(over_tcp.answers.len(), 60);
    // Only EDNS version 0 is spoken.
    let v1 = ask(server_addr, &with_edns(query(big, RecordType::A), 4096, 1), false).await;
    // (BADVERS shares its code, 16, with TSIG's BADSIG: compare the numbers.)
    assert_eq!(
        u16::from(v1.metadata.response_code),
        u16::from(ResponseCode::BADVERS),
        "{v1:?}"
    );

    stop.send(()).unwrap();
    server.await.unwrap();
    feeder.abort();
}
