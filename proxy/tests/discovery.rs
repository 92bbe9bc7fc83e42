//! Discovery through the real controller: live endpoint updates, unmeshed and unknown
//! destinations, and errors with Linkerd's meaning.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn endpoints_follow_pods_as_they_come_and_go() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    let (c, s1, s2) = (ip("127.42.1.2"), ip("127.42.1.3"), ip("127.42.1.4"));
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s1, true).await;
    http_app((s1, 8080).into(), "myapp-1").await;
    http_app((s2, 8080).into(), "myapp-2").await;
    let _p1 = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s1)).await;
    let _p2 = Proxy::ready(cluster.proxy_env("myapp-2", "myapp", s2)).await;
    let client = Proxy::ready(cluster.proxy_env("web-1", "web", c)).await;
    let mut h = h1_client(client.bound.outbound).await;
    let auth = format!("{MYAPP}:80");

    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let (status, _, body) = h1_get(&mut h, &auth, "/").await;
        assert_eq!(status, 200, "{body}");
        seen.insert(body.split(' ').next().unwrap().to_string());
    }
    assert_eq!(seen, BTreeSet::from(["pod=myapp-1".to_string()]));

    // A second pod appears: the balancer uses it without any new connection from the app
    // (as soon as the first pod looks slower than a fresh endpoint's 30 ms estimate).
    cluster.pod("myapp-2", "myapp", "myapp", s2, true).await;
    let both = eventually(Duration::from_secs(10), async || {
        let (_, _, body) = h1_get(&mut h, &auth, "/busy").await;
        body.starts_with("pod=myapp-2")
    })
    .await;
    assert!(both, "myapp-2 never received traffic");

    // The first pod goes away: every request lands on the second.
    cluster.delete_pod("myapp-1").await;
    let gone = eventually(Duration::from_secs(10), async || {
        for _ in 0..10 {
            let (status, _, body) = h1_get(&mut h, &auth, "/").await;
            if status != 200 || !body.starts_with("pod=myapp-2") {
                return false;
            }
        }
        true
    })
    .await;
    assert!(gone, "myapp-1 kept receiving traffic after its removal");
}

#[tokio::test]
async fn a_service_reached_by_its_cluster_ip_counts_under_its_name() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster
        .apply(
            "apiVersion: v1\nkind: Service\nmetadata: {name: myapp, namespace: production}\nspec:\n  clusterIP: 127.42.7.100\n  selector: {app: myapp}\n  ports: [{port: 80, targetPort: 8080}]\n",
        )
        .await;
    let (c, s1) = (ip("127.42.7.2"), ip("127.42.7.3"));
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s1, true).await;
    http_app((s1, 8080).into(), "myapp-1").await;
    let _server = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s1)).await;
    let client = Proxy::ready(cluster.proxy_env("web-1", "web", c)).await;
    let mut h = h1_client(client.bound.outbound).await;
    for _ in 0..3 {
        let (status, _, body) = h1_get(&mut h, "127.42.7.100:80", "/").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("pod=myapp-1"), "{body}");
    }
    // Linkerd labels a request with its logical target's name, whatever address the
    // application used: dashboards and `linkerd viz` group by it.
    let m = client.metrics().await;
    assert_eq!(
        metric(
            &m,
            "request_total",
            &[
                ("direction", "outbound"),
                ("authority", &format!("{MYAPP}:80")),
                ("target_addr", "127.42.7.3:8080"),
                ("dst_service", "myapp"),
            ]
        ),
        Some(3.0),
        "{m}"
    );
    assert!(!m.contains("authority=\"127.42.7.100:80\""), "{m}");
}

#[tokio::test]
async fn unmeshed_services_get_plaintext_and_unknown_targets_their_original_address() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    let (c, plain, outside) = (ip("127.42.2.2"), ip("127.42.2.5"), ip("127.42.2.9"));
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster
        .apply("apiVersion: v1\nkind: Service\nmetadata: {name: plain, namespace: production}\nspec:\n  selector: {app: plain}\n  ports: [{port: 80, targetPort: 8080}]\n")
        .await;
    cluster.pod("plain-1", "plain", "default", plain, false).await;
    let plain_app = http_app((plain, 8080).into(), "plain-1").await;
    http_app((outside, 8080).into(), "outside").await;
    let client = Proxy::ready(cluster.proxy_env("web-1", "web", c)).await;
    let mut h = h1_client(client.bound.outbound).await;

    let auth = "plain.production.svc.cluster.local:80";
    let (status, _, body) = h1_get(&mut h, auth, "/p").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("pod=plain-1 version=HTTP/1.1 path=/p"), "{body}");
    assert_eq!(plain_app.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    let m = client.metrics().await;
    assert_eq!(
        metric(
            &m,
            "request_total",
            &[
                ("authority", auth),
                ("tls", "no_identity"),
                ("target_addr", "127.42.2.5:8080")
            ]
        ),
        Some(1.0),
        "{m}"
    );

    // An address the control plane does not know: straight to it.
    let (status, _, body) = h1_get(&mut h, "127.42.2.9:8080", "/o").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("pod=outside"), "{body}");
}

/// With Linkerd's allow-list (`…_DESTINATION_PROFILE_SUFFIXES` / `…_NETWORKS`, as the
/// injector sets them), a target outside it goes straight to its address: it works with
/// the control plane down (without the list it waits for discovery, then fails with 503).
#[tokio::test]
async fn targets_outside_the_discovery_allow_list_never_wait_for_the_control_plane() {
    let mut cluster = Cluster::start(Duration::from_secs(3600)).await;
    let (c, outside) = (ip("127.42.9.2"), ip("127.42.9.9"));
    cluster.pod("web-1", "web", "web", c, true).await;
    let outside_app = http_app((outside, 8080).into(), "outside").await;
    let mut vars = cluster.proxy_env("web-1", "web", c);
    vars.insert(
        strait_proxy::config::env::DESTINATION_PROFILE_SUFFIXES,
        "svc.cluster.local.".into(),
    );
    vars.insert(
        strait_proxy::config::env::DESTINATION_PROFILE_NETWORKS,
        "10.0.0.0/8".into(),
    );
    let client = Proxy::ready(vars).await;
    cluster.stop().await;
    let mut h = h1_client(client.bound.outbound).await;
    let started = std::time::Instant::now();
    let (status, _, body) = h1_get(&mut h, "127.42.9.9:8080", "/o").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "not held for discovery: {:?}",
        started.elapsed()
    );
    assert_eq!(outside_app.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn errors_are_linkerd_statuses_with_l5d_proxy_error() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    cluster.myapp_service().await;
    let (c, s, ghost) = (ip("127.42.3.2"), ip("127.42.3.3"), ip("127.42.3.7"));
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster.pod("myapp-1", "myapp", "myapp", s, true).await;
    http_app((s, 8080).into(), "myapp-1").await;
    // A service without endpoints, and a meshed pod whose proxy is not running.
    cluster
        .apply("apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: production}\nspec:\n  selector: {app: nothing}\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ghost, namespace: production}\nspec:\n  selector: {app: ghost}\n  ports: [{port: 80, targetPort: 8080}]\n")
        .await;
    cluster.pod("ghost-1", "ghost", "ghost", ghost, true).await;
    let _server = Proxy::ready(cluster.proxy_env("myapp-1", "myapp", s)).await;
    let mut vars = cluster.proxy_env("web-1", "web", c);
    vars.insert(strait_proxy::config::env::REQUEST_TIMEOUT, "300ms".into());
    let client = Proxy::ready(vars).await;
    // Each error closes the application's connection, as Linkerd's proxy does (so the
    // application connects again, and may reach another replica): a fresh one each.
    let mut h = h1_client(client.bound.outbound).await;
    let (status, headers, body) = h1_get(&mut h, "empty.production.svc.cluster.local:80", "/").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["connection"], "close", "{headers:?}");
    assert!(
        !headers.contains_key("l5d-proxy-connection"),
        "the proxy's own signal stays between proxies: {headers:?}"
    );
    assert!(
        eventually(Duration::from_secs(5), async || h.is_closed()).await,
        "the connection closes after the error"
    );
    assert!(
        headers["l5d-proxy-error"]
            .to_str()
            .unwrap()
            .contains("no endpoints"),
        "{headers:?}"
    );

    let mut h = h1_client(client.bound.outbound).await;
    let (status, headers, body) = h1_get(&mut h, "ghost.production.svc.cluster.local:80", "/").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        headers["l5d-proxy-error"]
            .to_str()
            .unwrap()
            .contains("127.42.3.7:4143"),
        "the error names the endpoint's proxy: {headers:?}"
    );

    let mut h = h1_client(client.bound.outbound).await;
    let (status, headers, _) = h1_get(&mut h, &format!("{MYAPP}:80"), "/slow").await;
    assert_eq!(status, 504);
    // The request's own deadline: a new connection would not help, this one stays.
    assert!(!headers.contains_key("connection"), "{headers:?}");
    assert!(
        headers["l5d-proxy-error"].to_str().unwrap().contains("timed out"),
        "{headers:?}"
    );

    // A success leaves the connection open.
    let mut h = h1_client(client.bound.outbound).await;
    for _ in 0..2 {
        let (status, headers, body) = h1_get(&mut h, &format!("{MYAPP}:80"), "/ok").await;
        assert_eq!(status, 200, "{body}");
        assert!(!headers.contains_key("connection"), "{headers:?}");
    }

    // A gRPC call gets gRPC's answer (UNAVAILABLE, trailers-only), counted with its code.
    let mut h2 = h2_client(client.bound.outbound).await;
    let call = http::Request::post("http://empty.production.svc.cluster.local:80/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::default())
        .unwrap();
    let rsp = h2.send_request(call).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["grpc-status"], "14", "{:?}", rsp.headers());

    let m = client.metrics().await;
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[
                ("authority", "empty.production.svc.cluster.local:80"),
                ("status_code", "200"),
                ("grpc_status", "14"),
                ("classification", "failure")
            ]
        ),
        Some(1.0),
        "{m}"
    );
    for (authority, code) in [
        ("empty.production.svc.cluster.local:80", "503"),
        ("ghost.production.svc.cluster.local:80", "502"),
        (&format!("{MYAPP}:80") as &str, "504"),
    ] {
        assert_eq!(
            metric(
                &m,
                "response_total",
                &[
                    ("authority", authority),
                    ("status_code", code),
                    ("classification", "failure")
                ]
            ),
            Some(1.0),
            "{authority} {code}: {m}"
        );
    }
}

#[tokio::test]
async fn traffic_split_weights_decide_the_backend() {
    let cluster = Cluster::start(Duration::from_secs(3600)).await;
    let (c, v1, v2) = (ip("127.42.4.2"), ip("127.42.4.3"), ip("127.42.4.4"));
    cluster
        .apply(
            "apiVersion: v1\nkind: Service\nmetadata: {name: myapp, namespace: production}\nspec:\n  selector: {app: myapp}\n  ports: [{port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: myapp-v1, namespace: production}\nspec:\n  selector: {app: myapp-v1}\n  ports: [{port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: myapp-v2, namespace: production}\nspec:\n  selector: {app: myapp-v2}\n  ports: [{port: 80, targetPort: 8080}]\n---\n",
        )
        .await;
    cluster
        .apply(include_str!(
            "../../examples/linkerd-seed/04-trafficsplit-canary.yaml"
        ))
        .await;
    cluster.pod("web-1", "web", "web", c, true).await;
    cluster.pod("myapp-v1-1", "myapp-v1", "myapp", v1, true).await;
    cluster.pod("myapp-v2-1", "myapp-v2", "myapp", v2, true).await;
    http_app((v1, 8080).into(), "myapp-v1-1").await;
    http_app((v2, 8080).into(), "myapp-v2-1").await;
    let _s1 = Proxy::ready(cluster.proxy_env("myapp-v1-1", "myapp", v1)).await;
    let _s2 = Proxy::ready(cluster.proxy_env("myapp-v2-1", "myapp", v2)).await;
    let client = Proxy::ready(cluster.proxy_env("web-1", "web", c)).await;
    let mut h = h1_client(client.bound.outbound).await;
    let (mut one, mut two) = (0, 0);
    for _ in 0..300 {
        let (status, _, body) = h1_get(&mut h, &format!("{MYAPP}:80"), "/").await;
        assert_eq!(status, 200, "{body}");
        match body.split(' ').next().unwrap() {
            "pod=myapp-v1-1" => one += 1,
            "pod=myapp-v2-1" => two += 1,
            other => panic!("unexpected backend {other}"),
        }
    }
    // 90/10 over 300 requests: v2's count is binomial(300, 0.1), mean 30, sd ≈ 5.2.
    assert!((8..=60).contains(&two), "v1 {one}, v2 {two}");
    assert_eq!(one + two, 300);
    // As Linkerd labels them: every backend's series carries the apex's name (the
    // logical target), and `dst_service` tells the backends apart.
    let m = client.metrics().await;
    for (service, n) in [("myapp-v1", one), ("myapp-v2", two)] {
        assert_eq!(
            metric_sum(
                &m,
                "response_total",
                &[
                    ("direction", "outbound"),
                    ("authority", &format!("{MYAPP}:80")),
                    ("dst_service", service),
                    ("classification", "success"),
                ]
            ),
            f64::from(n),
            "{service}'s answers count under the apex: {m}"
        );
    }
    assert!(
        !m.contains("authority=\"myapp-v2.production.svc.cluster.local:80\""),
        "no series is named after a backend: {m}"
    );
}
