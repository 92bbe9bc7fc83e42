//! Traffic policy end to end: real proxies (explicit mode, policy controller configured)
//! against the real controller, with the seed's examples 04–10 applied to its store.
//! Every test runs on its own 127.43.N.0/24 addresses, bounded in time and requests.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_proxy::config::env;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn seed(name: &str) -> String {
    let path = format!("{}/../examples/linkerd-seed/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A proxy environment with the policy controller configured.
fn policy_env(c: &Cluster, pod: &str, sa: &str, ip: IpAddr) -> HashMap<&'static str, String> {
    let mut vars = c.proxy_env(pod, sa, ip);
    vars.insert(env::POLICY_SVC_ADDR, c.bound.policy.to_string());
    vars.insert(
        env::POLICY_WORKLOAD,
        format!("{{\"ns\":\"production\",\"pod\":\"{pod}\"}}"),
    );
    vars
}

/// What a test application does.
#[derive(Default)]
struct Behaviour {
    requests: AtomicU64,
    /// Fail every other request with 500 (the first fails).
    alternate: AtomicBool,
    /// Fail every request with 500.
    fail: AtomicBool,
}

/// An application answering `pod=<name> path=<p>`; `/slow` waits 1.5 s, `/status/<n>`
/// answers `n`, and the behaviour's switches make it fail.
async fn app(addr: SocketAddr, name: &'static str) -> Arc<Behaviour> {
    let l = TcpListener::bind(addr).await.unwrap();
    let b = Arc::new(Behaviour::default());
    let st = b.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { return };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = st.requests.fetch_add(1, Ordering::SeqCst);
                    let fail =
                        st.fail.load(Ordering::SeqCst) || (st.alternate.load(Ordering::SeqCst) && n % 2 == 0);
                    async move {
                        let path = req.uri().path().to_string();
                        let grpc = req
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                        // The body's length and byte sum, so tests see what arrived.
                        let body = {
                            use http_body_util::BodyExt;
                            req.into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default()
                        };
                        let seen = if body.is_empty() {
                            String::new()
                        } else {
                            format!(" body={}:{}", body.len(), checksum(&body))
                        };
                        if path.ends_with("/slow") {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                        }
                        let status = match path.strip_prefix("/status/") {
                            Some(s) => StatusCode::from_u16(s.parse().unwrap_or(200)).unwrap(),
                            // gRPC fails in its own way: 200 with `grpc-status: 14`.
                            None if fail && !grpc => StatusCode::INTERNAL_SERVER_ERROR,
                            None => StatusCode::OK,
                        };
                        let mut rsp =
                            Response::new(Full::new(Bytes::from(format!("pod={name} path={path}{seen}"))));
                        *rsp.status_mut() = status;
                        if grpc {
                            let code = if fail { "14" } else { "0" };
                            rsp.headers_mut()
                                .insert("grpc-status", http::HeaderValue::from_static(code));
                        }
                        rsp.headers_mut()
                            .insert("x-internal", http::HeaderValue::from_static("app-secret"));
                        rsp.headers_mut()
                            .insert("cache-control", http::HeaderValue::from_static("max-age=60"));
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    b
}

/// A byte sum, to check a body arrived whole.
fn checksum(b: &[u8]) -> u64 {
    b.iter().map(|x| u64::from(*x)).sum()
}

const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: myapp, namespace: production}
spec:
  selector: {app: myapp}
  ports: [{port: 80, targetPort: 8080}]
";

async fn versioned_pod(c: &Cluster, name: &str, version: &str, ip: IpAddr) {
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: production\n  labels: {{app: myapp, version: {version}, linkerd.io/proxy-deployment: myapp-{version}, linkerd.io/control-plane-ns: linkerd}}\nspec:\n  serviceAccountName: myapp\n  containers: [{{name: app, image: x}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
    ))
    .await;
}

/// A cluster with the seed's 03 services, a v1 and a v2 pod of myapp with their proxies,
/// and a client pod `web` whose proxy follows policy.
struct Canary {
    c: Cluster,
    v1: Arc<Behaviour>,
    v2: Arc<Behaviour>,
    client: Proxy,
    _servers: Vec<Proxy>,
}

async fn canary(n: u8) -> Canary {
    let c = Cluster::start(Duration::from_secs(3600)).await;
    c.apply(&seed("03-services.yaml")).await;
    let (v1_ip, v2_ip, web_ip) = (
        ip(&format!("127.43.{n}.2")),
        ip(&format!("127.43.{n}.3")),
        ip(&format!("127.43.{n}.9")),
    );
    versioned_pod(&c, "myapp-v1-1", "v1", v1_ip).await;
    versioned_pod(&c, "myapp-v2-1", "v2", v2_ip).await;
    c.pod("web-1", "web", "web", web_ip, true).await;
    let v1 = app((v1_ip, 8080).into(), "v1").await;
    let v2 = app((v2_ip, 8080).into(), "v2").await;
    let s1 = Proxy::ready(policy_env(&c, "myapp-v1-1", "myapp", v1_ip)).await;
    let s2 = Proxy::ready(policy_env(&c, "myapp-v2-1", "myapp", v2_ip)).await;
    let client = Proxy::ready(policy_env(&c, "web-1", "web", web_ip)).await;
    Canary {
        c,
        v1,
        v2,
        client,
        _servers: vec![s1, s2],
    }
}

/// Whether, within 10 s, `n` probes in a row succeed: a policy change has reached the
/// client proxy.
async fn settles(n: usize, mut probe: impl AsyncFnMut() -> bool) -> bool {
    eventually(Duration::from_secs(10), async || {
        let mut all = true;
        for _ in 0..n {
            all &= probe().await;
        }
        all
    })
    .await
}

/// Sends `n` GETs of `path` and counts the answering pods (`v1`, `v2`) by body.
async fn split(client: &Proxy, path: &str, n: usize) -> (usize, usize) {
    let mut c = h1_client(client.bound.outbound).await;
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..n {
        let (status, _, body) = h1_get_with(&mut c, &format!("{MYAPP}:80"), path, &[]).await;
        assert_eq!(status, 200, "{body}");
        if body.starts_with("pod=v1") {
            v1 += 1;
        } else if body.starts_with("pod=v2") {
            v2 += 1;
        }
    }
    (v1, v2)
}

fn assert_share(v2: usize, n: usize, want: f64) {
    let share = v2 as f64 / n as f64;
    assert!(
        (share - want).abs() <= 0.03,
        "v2 got {v2} of {n} ({share:.3}); expected {want} ± 0.03"
    );
}

/// Seed 04: the SMI TrafficSplit sends 90/10 within ±3% over 2000 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_04_trafficsplit_canary_splits_90_10() {
    let t = canary(1).await;
    t.c.apply(&seed("04-trafficsplit-canary.yaml")).await;
    // The split reaches the client's policy and profile watches. Before it does, the
    // `myapp` Service balances over both pods, so only a series of the split's own
    // backend Service (under the apex's name, as Linkerd labels it) shows it is in use.
    assert!(
        eventually(Duration::from_secs(10), async || {
            split(&t.client, "/", 20).await;
            let m = t.client.metrics().await;
            metric(
                &m,
                "request_total",
                &[
                    ("authority", "myapp.production.svc.cluster.local:80"),
                    ("dst_service", "myapp-v1"),
                ],
            )
            .is_some()
        })
        .await,
        "the split's backends carry requests"
    );
    let (v1, v2) = split(&t.client, "/", 2000).await;
    assert_eq!(v1 + v2, 2000);
    assert_share(v2, 2000, 0.10);
}

/// Seed 05: header and path rules go to v2, the default rule splits 90/10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_05_httproute_header_path_and_weighted_default() {
    let t = canary(2).await;
    t.c.apply(&seed("05-httproute-routing.yaml")).await;
    let mut c = h1_client(t.client.bound.outbound).await;
    // The route reaches the client: canary requests all land on v2.
    assert!(
        settles(10, async || h1_get_with(
            &mut c,
            &format!("{MYAPP}:80"),
            "/",
            &[("x-canary", "true")]
        )
        .await
        .2
        .starts_with("pod=v2"))
        .await,
        "x-canary: true goes to v2"
    );
    for i in 0..50 {
        let (s, _, body) =
            h1_get_with(&mut c, &format!("{MYAPP}:80"), &format!("/api/v2/items/{i}"), &[]).await;
        assert_eq!((s, body.starts_with("pod=v2")), (200, true), "{body}");
        let (_, _, body) = h1_get_with(&mut c, &format!("{MYAPP}:80"), "/x", &[("x-canary", "true")]).await;
        assert!(body.starts_with("pod=v2"), "{body}");
    }
    let before = t.v1.requests.load(Ordering::SeqCst);
    let (v1, v2) = split(&t.client, "/api/v1/other", 2000).await;
    assert_eq!(v1 + v2, 2000);
    assert_share(v2, 2000, 0.10);
    assert_eq!(
        t.v1.requests.load(Ordering::SeqCst) - before,
        v1 as u64,
        "one attempt per request"
    );
}

/// Seed 06: the RequestHeaderModifier's `l5d-retry-http: 5xx` / `l5d-retry-limit: 3`
/// serve a backend failing every other request at 100% success; without the route, half
/// fail. Requests outside `/api` are not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_06_retries_serve_a_half_failing_backend() {
    let t = canary(3).await;
    t.v1.alternate.store(true, Ordering::SeqCst);
    t.v2.alternate.store(true, Ordering::SeqCst);
    let mut c = h1_client(t.client.bound.outbound).await;
    let mut ok = 0;
    for _ in 0..100 {
        ok += usize::from(h1_get_with(&mut c, &format!("{MYAPP}:80"), "/api/x", &[]).await.0 == 200);
    }
    assert!(
        (30..=70).contains(&ok),
        "without retries about half fail: {ok}/100 succeeded"
    );
    t.c.apply(&seed("06-httproute-retries.yaml")).await;
    assert!(
        settles(10, async || h1_get_with(
            &mut c,
            &format!("{MYAPP}:80"),
            "/api/x",
            &[]
        )
        .await
        .0 == 200)
        .await
    );
    let sent_before = t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst);
    let mut ok = 0;
    for i in 0..500 {
        ok += usize::from(
            h1_get_with(&mut c, &format!("{MYAPP}:80"), &format!("/api/{i}"), &[])
                .await
                .0
                == 200,
        );
    }
    let attempts = t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst) - sent_before;
    assert!(ok >= 495, "≥ 99% success with retries: {ok}/500");
    assert!(
        (600..=1100).contains(&attempts),
        "retries happened, bounded by the limit: {attempts} attempts"
    );
    // Outside the route's /api prefix: no retry.
    let mut failed = 0;
    for _ in 0..40 {
        failed += usize::from(h1_get_with(&mut c, &format!("{MYAPP}:80"), "/other", &[]).await.0 == 500);
    }
    assert!(
        failed >= 10,
        "requests outside /api are not retried: {failed}/40 failed"
    );
}

/// Seed 07 and `timeout.linkerd.io/request`: an expired request gets 504 with
/// `l5d-proxy-error`, long before the backend answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_07_route_timeouts_and_timeout_annotation_answer_504() {
    let t = canary(4).await;
    // `timeout.linkerd.io/request` on the Service: its default route gets the deadline.
    let mut c = h1_client(t.client.bound.outbound).await;
    assert_eq!(
        h1_get_with(&mut c, &format!("{MYAPP}:80"), "/slow", &[]).await.0,
        200
    );
    t.c.apply(&seed("03-services.yaml").replacen(
        "  name: myapp\n  namespace: production\n",
        "  name: myapp\n  namespace: production\n  annotations:\n    timeout.linkerd.io/request: 250ms\n",
        1,
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(10), async || {
            let start = Instant::now();
            h1_get_with(&mut c, &format!("{MYAPP}:80"), "/slow", &[]).await.0 == 504
                && start.elapsed() < Duration::from_millis(1200)
        })
        .await,
        "the annotation's deadline applies"
    );
    t.c.apply(&seed("03-services.yaml")).await;
    // The seed's own route (10 s / 8 s): /api requests work, slow ones too.
    t.c.apply(&seed("07-httproute-timeouts.yaml")).await;
    assert!(
        eventually(Duration::from_secs(10), async || h1_get_with(
            &mut c,
            &format!("{MYAPP}:80"),
            "/api/slow",
            &[]
        )
        .await
        .0 == 200)
        .await
    );
    // The same route with test-sized deadlines.
    t.c.apply(
        &seed("07-httproute-timeouts.yaml")
            .replace("request: 10s", "request: 300ms")
            .replace("backendRequest: 8s", "backendRequest: 200ms"),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), async || {
            h1_get_with(&mut c, &format!("{MYAPP}:80"), "/api/slow", &[])
                .await
                .0
                == 504
        })
        .await
    );
    let start = Instant::now();
    let (status, headers, _) = h1_get_with(&mut c, &format!("{MYAPP}:80"), "/api/slow", &[]).await;
    assert_eq!(status, 504);
    assert!(headers.contains_key("l5d-proxy-error"), "{headers:?}");
    assert!(
        start.elapsed() < Duration::from_millis(1200),
        "{:?}",
        start.elapsed()
    );
    // Each expired request is counted once, and answered once, on the series of the
    // endpoint it waited for: the client's totals agree, and no 504 lands elsewhere.
    let m = t.client.metrics().await;
    let out = [("direction", "outbound")];
    let requests = metric_sum(&m, "request_total", &out);
    assert!(requests > 0.0, "{m}");
    assert_eq!(requests, metric_sum(&m, "response_total", &out), "{m}");
    let timeouts = [("direction", "outbound"), ("status_code", "504")];
    assert_eq!(
        metric_sum(&m, "response_total", &timeouts),
        metric_sum(
            &m,
            "response_total",
            &[("status_code", "504"), ("dst_service", "myapp")]
        ),
        "{m}"
    );
}

/// Seed 08: the profile's route classifies responses; with `isRetryable`, an outage is
/// retried only within the budget (10/s × 10 s + 20% of requests), never multiplied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_08_serviceprofile_budget_caps_retries_and_classes_classify() {
    let t = canary(5).await;
    let profile = seed("08-serviceprofile.yaml")
        .replace("          isFailure: true\n", "          isFailure: true\n    - name: GET /api/missing\n      condition:\n        method: GET\n        pathRegex: /status/404\n      responseClasses:\n        - condition:\n            status:\n              min: 404\n              max: 404\n          isFailure: true\n    - name: GET /slow\n      condition:\n        method: GET\n        pathRegex: /x/slow\n      timeout: 200ms\n")
        .replace("        pathRegex: /api/users\n", "        pathRegex: /api/users\n      isRetryable: true\n");
    t.c.apply(&profile).await;
    let mut c = h1_client(t.client.bound.outbound).await;
    // The profile's 404 class makes 404s failures.
    assert!(
        eventually(Duration::from_secs(10), async || {
            h1_get_with(&mut c, &format!("{MYAPP}:80"), "/status/404", &[]).await;
            let m = t.client.metrics().await;
            metric(
                &m,
                "response_total",
                &[
                    ("direction", "outbound"),
                    ("status_code", "404"),
                    ("classification", "failure"),
                ],
            )
            .is_some()
        })
        .await,
        "404 classified as failure"
    );
    // A total outage of /api/users: retries stay within the budget.
    t.v1.fail.store(true, Ordering::SeqCst);
    t.v2.fail.store(true, Ordering::SeqCst);
    let before = t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst);
    for _ in 0..200 {
        assert_eq!(
            h1_get_with(&mut c, &format!("{MYAPP}:80"), "/api/users", &[])
                .await
                .0,
            500
        );
    }
    let attempts = t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst) - before;
    // Budget: 10/s × 10 s reserve + 0.2 × 200 = 140 retries at most.
    assert!(
        (300..=340).contains(&attempts),
        "200 requests and at most 140 retries: {attempts} attempts"
    );
    // The route's series, as `linkerd viz routes` reads them: each request once with its
    // final answer, each attempt in `route_actual_*`, and the retries the budget refused.
    let m = t.client.metrics().await;
    let dst = format!("{MYAPP}:80");
    let users = [
        ("direction", "outbound"),
        ("dst", dst.as_str()),
        ("rt_route", "GET /api/users"),
    ];
    assert_eq!(metric(&m, "route_request_total", &users), Some(200.0), "{m}");
    let failed = [
        &users[..],
        &[("status_code", "500"), ("classification", "failure")],
    ]
    .concat();
    assert_eq!(metric(&m, "route_response_total", &failed), Some(200.0), "{m}");
    assert_eq!(
        metric(&m, "route_actual_request_total", &users),
        Some(attempts as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, "route_actual_response_total", &failed),
        Some(attempts as f64),
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "route_response_latency_ms_count", &users),
        200.0,
        "{m}"
    );
    let refused = metric(
        &m,
        "route_retryable_total",
        &[&users[..], &[("skipped", "no_budget")]].concat(),
    );
    assert!(
        refused.is_some_and(|n| n > 100.0 && n <= 200.0),
        "most requests end on an empty budget: {refused:?}"
    );
    assert!(
        metric(
            &m,
            "route_response_total",
            &[
                ("rt_route", "GET /api/missing"),
                ("status_code", "404"),
                ("classification", "failure")
            ]
        )
        .is_some(),
        "the 404 route counts its class: {m}"
    );
    // The server proxies count the same route inbound, for the target the client's proxy
    // named in `l5d-dst-canonical`: every attempt arrived there.
    let mut inbound = 0.0;
    for s in &t._servers {
        let m = s.metrics().await;
        let users = [
            ("direction", "inbound"),
            ("dst", dst.as_str()),
            ("rt_route", "GET /api/users"),
            ("classification", "failure"),
        ];
        inbound += metric_sum(&m, "route_response_total", &users);
    }
    assert_eq!(inbound, attempts as f64, "inbound route series on the servers");
    // With their profile loaded, the route's classes classify the servers' own series
    // too: five more 404s of `GET /api/missing`, five more inbound failures.
    let inbound_404_failures = async || {
        let mut n = 0.0;
        for s in &t._servers {
            let want = [
                ("direction", "inbound"),
                ("status_code", "404"),
                ("classification", "failure"),
            ];
            n += metric_sum(&s.metrics().await, "response_total", &want);
        }
        n
    };
    let before = inbound_404_failures().await;
    for _ in 0..5 {
        h1_get_with(&mut c, &format!("{MYAPP}:80"), "/status/404", &[]).await;
    }
    assert_eq!(inbound_404_failures().await - before, 5.0);
    // A route's timeout answers 504 on the route, and on the attempt it cut short.
    let (status, _, _) = h1_get_with(&mut c, &format!("{MYAPP}:80"), "/x/slow", &[]).await;
    assert_eq!(status, 504);
    let m = t.client.metrics().await;
    let slow = [("direction", "outbound"), ("rt_route", "GET /slow")];
    for family in ["route_request_total", "route_actual_request_total"] {
        assert_eq!(metric(&m, family, &slow), Some(1.0), "{family}: {m}");
    }
    let timed_out = [
        &slow[..],
        &[("status_code", "504"), ("classification", "failure")],
    ]
    .concat();
    for family in ["route_response_total", "route_actual_response_total"] {
        assert_eq!(metric(&m, family, &timed_out), Some(1.0), "{family}: {m}");
    }
    // Not retryable (POST is not the route): one attempt each.
    let before = t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst);
    for _ in 0..20 {
        let send = c.ready().await;
        let req = Request::post("/api/users")
            .header("host", format!("{MYAPP}:80"))
            .body(Full::default())
            .unwrap();
        let rsp = send.send_request(req).await.unwrap();
        let _ = http_body_util::BodyExt::collect(rsp.into_body()).await;
    }
    let attempts = t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst) - before;
    assert_eq!(attempts, 20);
    // No route matches them: the profile's default route, a series without `rt_route`.
    let m = t.client.metrics().await;
    let default = format!("route_request_total{{direction=\"outbound\",dst=\"{MYAPP}:80\"}} 20\n");
    assert!(m.contains(&default), "{default} in {m}");
}

/// Circuit breaking: consecutive failures eject an endpoint, it is probed back after the
/// penalty, and with every endpoint ejected requests fail fast with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_accrual_ejects_and_recovers() {
    let t = canary(6).await;
    t.c.apply(&SERVICES.replace(
        "metadata: {name: myapp, namespace: production}",
        "metadata:\n  name: myapp\n  namespace: production\n  annotations:\n    balancer.linkerd.io/failure-accrual: consecutive\n    balancer.linkerd.io/failure-accrual-consecutive-max-failures: \"3\"\n    balancer.linkerd.io/failure-accrual-consecutive-min-penalty: 1s\n    balancer.linkerd.io/failure-accrual-consecutive-max-penalty: 2s\n    balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio: \"0\"",
    ))
    .await;
    t.v1.fail.store(true, Ordering::SeqCst);
    let mut c = h1_client(t.client.bound.outbound).await;
    // Wait for the policy to reach the proxy: then v1, failing, is ejected after 3
    // failures and 20 requests in a row succeed on v2.
    let settled = eventually(Duration::from_secs(10), async || {
        for _ in 0..20 {
            if h1_get_with(&mut c, &format!("{MYAPP}:80"), "/", &[]).await.0 != 200 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(settled, "the failing endpoint is ejected once the policy applies");
    let v1_before = t.v1.requests.load(Ordering::SeqCst);
    let mut ok = 0;
    for _ in 0..100 {
        ok += usize::from(h1_get_with(&mut c, &format!("{MYAPP}:80"), "/", &[]).await.0 == 200);
    }
    let v1_hits = t.v1.requests.load(Ordering::SeqCst) - v1_before;
    assert!(
        v1_hits <= 6,
        "the failing endpoint is ejected after 3 failures (and probed): {v1_hits} requests"
    );
    assert!(ok >= 94, "{ok}/100");
    // Every endpoint failing: both are ejected, then requests fail fast with 503.
    t.v2.fail.store(true, Ordering::SeqCst);
    let mut fast_503 = false;
    for _ in 0..20 {
        let attempts_before = t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst);
        let start = Instant::now();
        let (s, h, _) = h1_get_with(&mut c, &format!("{MYAPP}:80"), "/", &[]).await;
        let attempts =
            t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst) - attempts_before;
        // Failing fast: a 503 from the proxy itself, without trying an endpoint, and
        // without waiting for any timeout (the bound only rules out waiting; it is loose
        // so a loaded machine's scheduling does not matter).
        if s == 503
            && h.contains_key("l5d-proxy-error")
            && attempts == 0
            && start.elapsed() < Duration::from_secs(1)
        {
            fast_503 = true;
            break;
        }
    }
    assert!(fast_503, "all endpoints ejected: 503 at once, no endpoint tried");
    // Recovery: the endpoints are healthy again; after the penalty a probe succeeds.
    t.v1.fail.store(false, Ordering::SeqCst);
    t.v2.fail.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(6), async || h1_get_with(
            &mut c,
            &format!("{MYAPP}:80"),
            "/",
            &[]
        )
        .await
        .0 == 200)
        .await,
        "probed back"
    );
    // v1 is back in rotation, not just probed: once v2 fails again (and is ejected), v1
    // alone serves every request. (Which of two healthy endpoints P2C prefers depends on
    // their latency estimates, so the test does not ask v1 to win against a healthy v2.)
    t.v2.fail.store(true, Ordering::SeqCst);
    let v1_before = t.v1.requests.load(Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(8), async || {
            for _ in 0..20 {
                if h1_get_with(&mut c, &format!("{MYAPP}:80"), "/", &[]).await.0 != 200 {
                    return false;
                }
            }
            true
        })
        .await,
        "v1 takes traffic again"
    );
    assert!(t.v1.requests.load(Ordering::SeqCst) - v1_before >= 20);
}

/// The `api` pod of seed 10 with clients `frontend` and `web`.
struct Authz {
    c: Cluster,
    frontend: Proxy,
    web: Proxy,
    server: Proxy,
}

const API: &str = "api.production.svc.cluster.local";

async fn authz_cluster(n: u8) -> Authz {
    let c = Cluster::start(Duration::from_secs(3600)).await;
    let (api_ip, fe_ip, web_ip) = (
        ip(&format!("127.43.{n}.2")),
        ip(&format!("127.43.{n}.3")),
        ip(&format!("127.43.{n}.4")),
    );
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: production}\nspec:\n  selector: {app: api}\n  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp, port: 9000, targetPort: 9000}]\n")
        .await;
    c.pod("api-1", "api", "api", api_ip, true).await;
    c.pod("frontend-1", "frontend", "frontend", fe_ip, true).await;
    c.pod("web-1", "web", "web", web_ip, true).await;
    app((api_ip, 8080).into(), "api-1").await;
    echo_app((api_ip, 9000).into()).await;
    let server = Proxy::ready(policy_env(&c, "api-1", "api", api_ip)).await;
    let frontend = Proxy::ready(policy_env(&c, "frontend-1", "frontend", fe_ip)).await;
    let web = Proxy::ready(policy_env(&c, "web-1", "web", web_ip)).await;
    Authz {
        c,
        frontend,
        web,
        server,
    }
}

/// A `CONNECT` tunnel through `proxy` to `authority`: whether 8 bytes echo back.
/// Whether an opaque connection through `proxy` to `authority` echoes. A first connection
/// to a new port may wait for the outbound policy and then the server's port policy (up
/// to 3 s each when the controller is slow), so each step allows 10 s; a refused
/// connection is closed at once and does not wait.
async fn tcp_echoes(proxy: SocketAddr, authority: &str) -> bool {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    if tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .is_err()
    {
        return false;
    }
    // Skip the rest of the response head.
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(1)) => buf.push(b[0]),
            _ => return false,
        }
    }
    if s.write_all(b"ping1234").await.is_err() {
        return false;
    }
    let mut got = [0u8; 8];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got)).await,
        Ok(Ok(_))
    ) && &got == b"ping1234"
}

/// The seed's 10 with its Server labelled `app: api`: the seed's `allow-frontend-to-api`
/// selects *Servers* labelled `app: api` (Linkerd's `server.selector`), and the seed's
/// `all-pods` Server has no labels, so as written it allows no one.
fn deny_by_default() -> String {
    seed("10-deny-by-default.yaml").replace(
        "  name: all-pods\n  namespace: production\n",
        "  name: all-pods\n  namespace: production\n  labels:\n    app: api\n",
    )
}

/// Seed 10: deny by default; only `frontend` may call the api pod. Denied HTTP gets 403,
/// denied TCP is closed, both counted; a policy change applies to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_10_deny_by_default_allows_only_frontend_and_follows_changes() {
    let t = authz_cluster(7).await;
    t.c.apply(&deny_by_default()).await;
    let mut fe = h1_client(t.frontend.bound.outbound).await;
    let mut web = h1_client(t.web.bound.outbound).await;
    // While the manifest's objects arrive one by one, the Server may briefly stand without
    // its authorization and deny frontend too: wait for both answers of the final policy.
    assert!(
        eventually(Duration::from_secs(10), async || {
            h1_get_with(&mut web, &format!("{API}:80"), "/", &[]).await.0 == 403
                && h1_get_with(&mut fe, &format!("{API}:80"), "/", &[]).await.0 == 200
        })
        .await,
        "web is denied and frontend allowed"
    );
    for _ in 0..5 {
        let (s, h, body) = h1_get_with(&mut fe, &format!("{API}:80"), "/", &[]).await;
        assert_eq!(s, 200, "frontend is allowed: {h:?} {body}");
        let (s, h, _) = h1_get_with(&mut web, &format!("{API}:80"), "/", &[]).await;
        assert_eq!(s, 403);
        let e = h.get("l5d-proxy-error").unwrap().to_str().unwrap().to_string();
        assert!(e.contains("web.production.serviceaccount"), "{e}");
    }
    assert!(
        tcp_echoes(t.frontend.bound.outbound, &format!("{API}:9000")).await,
        "frontend's TCP is allowed"
    );
    assert!(
        !tcp_echoes(t.web.bound.outbound, &format!("{API}:9000")).await,
        "web's TCP is closed"
    );
    let m = t.server.metrics().await;
    assert!(
        metric(&m, "inbound_http_authz_deny_total", &[("srv_name", "all-pods")]).unwrap_or(0.0) >= 5.0,
        "{m}"
    );
    assert!(
        eventually(Duration::from_secs(5), async || {
            let m = t.server.metrics().await;
            metric(&m, "inbound_tcp_authz_deny_total", &[("srv_name", "all-pods")]).unwrap_or(0.0) >= 1.0
        })
        .await,
        "the refused connection is counted"
    );
    assert!(
        metric(
            &m,
            "inbound_http_authz_allow_total",
            &[("authz_name", "production/allow-frontend-to-api")]
        )
        .unwrap_or(0.0)
            >= 5.0,
        "{m}"
    );
    // Live change: web instead of frontend.
    t.c.apply(&deny_by_default().replace("        - name: frontend", "        - name: web"))
        .await;
    assert!(
        eventually(Duration::from_secs(10), async || h1_get_with(
            &mut web,
            &format!("{API}:80"),
            "/",
            &[]
        )
        .await
        .0 == 200)
        .await,
        "web is allowed after the change"
    );
    assert_eq!(
        h1_get_with(&mut fe, &format!("{API}:80"), "/", &[]).await.0,
        403,
        "frontend is denied on the next request"
    );
}

/// Seed 09: the Server and its three authorizations admit frontend, any production
/// identity and unauthenticated clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_09_server_authorizations_admit_their_clients() {
    let t = authz_cluster(8).await;
    t.c.apply(&seed("09-server-authorization.yaml").replace("app: myapp", "app: api"))
        .await;
    let mut fe = h1_client(t.frontend.bound.outbound).await;
    let mut web = h1_client(t.web.bound.outbound).await;
    // While the manifest's objects arrive one by one, the Server may briefly stand with
    // only some of its authorizations: wait until every client is admitted, then count
    // denials from there on.
    assert!(
        eventually(Duration::from_secs(10), async || {
            let m = t.server.metrics().await;
            let fe_ok = h1_get_with(&mut fe, &format!("{API}:80"), "/", &[]).await.0 == 200;
            let web_ok = h1_get_with(&mut web, &format!("{API}:80"), "/", &[]).await.0 == 200;
            fe_ok
                && web_ok
                && metric(
                    &m,
                    "inbound_http_authz_allow_total",
                    &[("srv_name", "myapp-server")],
                )
                .is_some()
        })
        .await,
        "frontend and web are admitted"
    );
    let denied = |m: &str| metric(m, "inbound_http_authz_deny_total", &[]).unwrap_or(0.0);
    let allowed = |m: &str| -> f64 {
        m.lines()
            .filter(|l| {
                l.starts_with("inbound_http_authz_allow_total{") && l.contains("srv_name=\"myapp-server\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let m0 = t.server.metrics().await;
    let (before, allowed_before) = (denied(&m0), allowed(&m0));
    for _ in 0..5 {
        assert_eq!(h1_get_with(&mut fe, &format!("{API}:80"), "/", &[]).await.0, 200);
        assert_eq!(h1_get_with(&mut web, &format!("{API}:80"), "/", &[]).await.0, 200);
    }
    let m = t.server.metrics().await;
    // Every request counted once, also those a connection's memo counts.
    assert_eq!(allowed(&m) - allowed_before, 10.0, "{m}");
    assert!(
        metric(
            &m,
            "inbound_http_authz_allow_total",
            &[("authz_name", "production/myapp-auth")]
        )
        .is_some(),
        "frontend by its service account: {m}"
    );
    assert_eq!(denied(&m), before, "{m}");
}

/// HTTPRoute (Gateway API v1) matches and filters beyond the seed: method and query
/// parameter matches, a `RequestRedirect` answered by the client proxy itself, and a
/// `ResponseHeaderModifier` editing the application's response; a route whose rules do
/// not match falls to the default rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_method_query_redirect_and_response_headers() {
    let t = canary(9).await;
    t.c.apply(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: myapp-matches, namespace: production}
spec:
  parentRefs: [{name: myapp, kind: Service, group: core, port: 80}]
  rules:
  - matches: [{method: POST, path: {type: PathPrefix, value: /items}}]
    backendRefs: [{name: myapp-v2, port: 80}]
  - matches: [{queryParams: [{type: Exact, name: version, value: v2}]}]
    backendRefs: [{name: myapp-v2, port: 80}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: new.example.com
        port: 8443
        path: {type: ReplaceFullPath, replaceFullPath: /new}
        statusCode: 301
  - matches: [{path: {type: PathPrefix, value: /tagged}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: x-served-by, value: strait}]
        set: [{name: cache-control, value: no-store}]
        remove: [x-internal]
    backendRefs: [{name: myapp-v1, port: 80}]
  - backendRefs: [{name: myapp-v1, port: 80}]
",
    )
    .await;
    let authority = format!("{MYAPP}:80");
    let mut c = h1_client(t.client.bound.outbound).await;
    // The route has reached the client once the redirect is answered.
    assert!(
        eventually(Duration::from_secs(10), async || {
            h1_get_with(&mut c, &authority, "/old", &[]).await.0 == 301
        })
        .await,
        "the RequestRedirect rule answers 301"
    );
    let before = (
        t.v1.requests.load(Ordering::SeqCst),
        t.v2.requests.load(Ordering::SeqCst),
    );
    let (status, headers, _) = h1_get_with(&mut c, &authority, "/old", &[]).await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://new.example.com:8443/new");
    assert_eq!(
        (
            t.v1.requests.load(Ordering::SeqCst),
            t.v2.requests.load(Ordering::SeqCst)
        ),
        before,
        "a redirect is answered by the proxy, not forwarded"
    );

    // Method match: POST /items goes to v2, GET /items to the default (v1).
    let post = |path: &'static str| {
        let authority = authority.clone();
        async move {
            let mut c = h1_client(t.client.bound.outbound).await;
            let send = c.ready().await;
            let req = Request::post(path)
                .header("host", &authority)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            let rsp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
                .await
                .expect("a response within 10s")
                .unwrap();
            use http_body_util::BodyExt;
            String::from_utf8_lossy(&rsp.into_body().collect().await.unwrap().to_bytes()).into_owned()
        }
    };
    for _ in 0..10 {
        let body = post("/items/1").await;
        assert!(body.starts_with("pod=v2"), "POST /items: {body}");
        let (_, _, body) = h1_get_with(&mut c, &authority, "/items/1", &[]).await;
        assert!(body.starts_with("pod=v1"), "GET /items: {body}");
    }
    let body = post("/other").await;
    assert!(body.starts_with("pod=v1"), "POST outside /items: {body}");

    // Query parameter match: exact name and value.
    for _ in 0..10 {
        let (_, _, body) = h1_get_with(&mut c, &authority, "/q?a=1&version=v2", &[]).await;
        assert!(body.starts_with("pod=v2"), "version=v2: {body}");
        let (_, _, body) = h1_get_with(&mut c, &authority, "/q?version=v20", &[]).await;
        assert!(body.starts_with("pod=v1"), "version=v20: {body}");
    }

    // Response header edits: add, set (replacing the app's value), remove.
    let (status, headers, body) = h1_get_with(&mut c, &authority, "/tagged/x", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("pod=v1"), "{body}");
    assert_eq!(headers["x-served-by"], "strait");
    assert_eq!(
        headers.get_all("cache-control").iter().collect::<Vec<_>>(),
        ["no-store"]
    );
    assert!(headers.get("x-internal").is_none(), "{headers:?}");
    // Other rules leave the application's headers alone.
    let (_, headers, _) = h1_get_with(&mut c, &authority, "/plain", &[]).await;
    assert_eq!(headers["x-internal"], "app-secret");
    assert!(headers.get("x-served-by").is_none());
}

/// A gRPC call through the client proxy: `(status, body)`.
async fn grpc_call(
    c: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    method: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use http_body_util::BodyExt;
    c.ready().await.unwrap();
    let mut req = Request::post(format!("http://{MYAPP}:80{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = tokio::time::timeout(
        Duration::from_secs(10),
        c.send_request(req.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))).unwrap()),
    )
    .await
    .expect("a response within 10s")
    .unwrap();
    let status = rsp.status().as_u16();
    let grpc_status = rsp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .unwrap_or_default();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        format!("{} grpc-status={grpc_status}", String::from_utf8_lossy(&body)),
    )
}

/// GRPCRoute (Gateway API v1) on the Service: an exact service/method match and a header
/// match go to v2, everything else to the default rule (v1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcroute_routes_by_method_and_header() {
    let t = canary(10).await;
    t.c.apply(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: myapp-grpc, namespace: production}
spec:
  parentRefs: [{name: myapp, kind: Service, group: core, port: 80}]
  rules:
  - matches: [{method: {type: Exact, service: shop.Catalog, method: Get}}]
    backendRefs: [{name: myapp-v2, port: 80}]
  - matches: [{headers: [{name: x-tier, value: gold}]}]
    backendRefs: [{name: myapp-v2, port: 80}]
  - backendRefs: [{name: myapp-v1, port: 80}]
",
    )
    .await;
    let mut c = h2_client(t.client.bound.outbound).await;
    assert!(
        settles(5, async || grpc_call(&mut c, "/shop.Catalog/Get", &[])
            .await
            .1
            .starts_with("pod=v2"))
        .await,
        "shop.Catalog/Get goes to v2"
    );
    for _ in 0..20 {
        let (status, body) = grpc_call(&mut c, "/shop.Catalog/Get", &[]).await;
        assert_eq!((status, body.starts_with("pod=v2")), (200, true), "{body}");
        let (_, body) = grpc_call(&mut c, "/shop.Catalog/List", &[]).await;
        assert!(body.starts_with("pod=v1"), "another method: {body}");
        let (_, body) = grpc_call(&mut c, "/shop.Orders/Get", &[]).await;
        assert!(body.starts_with("pod=v1"), "another service: {body}");
        let (_, body) = grpc_call(&mut c, "/shop.Orders/Get", &[("x-tier", "gold")]).await;
        assert!(body.starts_with("pod=v2"), "x-tier: gold: {body}");
    }
}

/// The `cluster-*` default policies admit only clients inside the cluster networks: a
/// meshed client at a cluster address is admitted, the same client from outside them is
/// refused with 403 and counted; `all-authenticated` admits both. Clients leave from their
/// own pod address (explicit mode binds it), which is what the server checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_default_policies_admit_only_cluster_networks() {
    let c = Cluster::start(Duration::from_secs(3600)).await;
    let (inside_ip, outside_ip) = (ip("127.43.11.3"), ip("127.44.11.3"));
    c.pod("inside-1", "web", "web", inside_ip, true).await;
    c.pod("outside-1", "web", "web", outside_ip, true).await;
    let inside = Proxy::ready(c.proxy_env("inside-1", "web", inside_ip)).await;
    let outside = Proxy::ready(c.proxy_env("outside-1", "web", outside_ip)).await;
    let mut servers = Vec::new();
    for (i, (policy, want_outside)) in [
        ("cluster-authenticated", 403),
        ("cluster-unauthenticated", 403),
        ("all-authenticated", 200),
    ]
    .into_iter()
    .enumerate()
    {
        let (name, server_ip) = (format!("api{i}"), ip(&format!("127.43.11.{}", 10 + i)));
        c.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: production}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        ))
        .await;
        c.pod(&format!("{name}-1"), &name, "api", server_ip, true).await;
        app((server_ip, 8080).into(), "api").await;
        // No policy controller: the server applies its default policy, with the cluster
        // networks it is given (the inside client's /24 only).
        let mut vars = c.proxy_env(&format!("{name}-1"), "api", server_ip);
        vars.insert(env::INBOUND_DEFAULT_POLICY, policy.to_string());
        vars.insert(env::POLICY_CLUSTER_NETWORKS, "127.43.11.0/24".into());
        let server = Proxy::ready(vars).await;
        let authority = format!("{name}.production.svc.cluster.local:80");
        let mut h = h1_client(inside.bound.outbound).await;
        let (status, _, body) = h1_get_with(&mut h, &authority, "/", &[]).await;
        assert_eq!(
            status, 200,
            "{policy}: a client inside the cluster networks: {body}"
        );
        let mut h = h1_client(outside.bound.outbound).await;
        let (status, _, body) = h1_get_with(&mut h, &authority, "/", &[]).await;
        assert_eq!(status, want_outside, "{policy}: a client outside them: {body}");
        let m = server.metrics().await;
        let denied = metric(
            &m,
            "inbound_http_authz_deny_total",
            &[("srv_kind", "default"), ("srv_name", policy)],
        );
        assert_eq!(
            denied.unwrap_or(0.0),
            if want_outside == 403 { 1.0 } else { 0.0 },
            "{policy}: {m}"
        );
        servers.push(server);
    }
}

/// POSTs `chunks` as a body of unknown length (HTTP/1 chunked, or HTTP/2 without
/// `content-length`) on a new connection through `proxy`: (status, body).
async fn post_stream(
    proxy: SocketAddr,
    authority: &str,
    path: &str,
    chunks: Vec<Bytes>,
    h2: bool,
) -> (u16, String) {
    use http_body_util::{BodyExt, StreamBody};
    let frames = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(hyper::body::Frame::data(c))),
    );
    let body = StreamBody::new(frames);
    let io = TokioIo::new(TcpStream::connect(proxy).await.unwrap());
    let call = async {
        let rsp = if h2 {
            let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::post(format!("http://{authority}{path}"))
                .body(body)
                .unwrap();
            s.send_request(req).await.unwrap()
        } else {
            let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let req = Request::post(path).header("host", authority).body(body).unwrap();
            s.send_request(req).await.unwrap()
        };
        let status = rsp.status().as_u16();
        let b = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&b).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("a response within 10s")
}

/// Retries resend bodies of unknown length (HTTP/1 chunked, HTTP/2 streams as gRPC sends
/// them) whole, up to the 64 KiB bound; a larger body is sent once and never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_resend_streamed_bodies_whole_within_the_bound() {
    let t = canary(12).await;
    t.v1.alternate.store(true, Ordering::SeqCst);
    t.v2.alternate.store(true, Ordering::SeqCst);
    t.c.apply(&seed("06-httproute-retries.yaml")).await;
    let authority = format!("{MYAPP}:80");
    let mut c = h1_client(t.client.bound.outbound).await;
    assert!(
        settles(10, async || h1_get_with(&mut c, &authority, "/api/x", &[])
            .await
            .0
            == 200)
        .await,
        "the retry route reached the client"
    );
    let chunks: Vec<Bytes> = (0..3u8)
        .map(|i| Bytes::from(vec![b'a' + i; 4000 + usize::from(i)]))
        .collect();
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let want = format!(" body={}:{}", all.len(), checksum(&all));
    for h2 in [false, true] {
        let sent_before = t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst);
        let mut ok = 0;
        for i in 0..60 {
            let (status, body) = post_stream(
                t.client.bound.outbound,
                &authority,
                &format!("/api/upload/{i}"),
                chunks.clone(),
                h2,
            )
            .await;
            if status == 200 {
                assert!(body.ends_with(&want), "h2={h2}: the body arrived whole: {body}");
                ok += 1;
            }
        }
        let attempts =
            t.v1.requests.load(Ordering::SeqCst) + t.v2.requests.load(Ordering::SeqCst) - sent_before;
        assert!(
            ok >= 59,
            "h2={h2}: streamed bodies are retried: {ok}/60 succeeded"
        );
        assert!(attempts > 60, "h2={h2}: retries happened: {attempts} attempts");
    }
    // Over the bound: sent once, not retried, so about half fail.
    let big = vec![
        Bytes::from(vec![b'x'; 40 * 1024]),
        Bytes::from(vec![b'y'; 40 * 1024]),
    ];
    let mut failed = 0;
    for i in 0..40 {
        let (status, body) = post_stream(
            t.client.bound.outbound,
            &authority,
            &format!("/api/big/{i}"),
            big.clone(),
            i % 2 == 0,
        )
        .await;
        match status {
            200 => assert!(body.contains(" body=81920:"), "{body}"),
            500 => failed += 1,
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert!(
        failed >= 8,
        "bodies over 64 KiB are not retried: {failed}/40 failed"
    );
}

/// Linkerd's retry annotations: `retry.linkerd.io/http` and `/limit` on the Service serve
/// a backend failing every other request at ≥ 99%; `retry.linkerd.io/grpc` on a
/// GRPCRoute retries `UNAVAILABLE` answers the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_annotations_retry_http_and_grpc_failures() {
    let t = canary(13).await;
    t.v1.alternate.store(true, Ordering::SeqCst);
    t.v2.alternate.store(true, Ordering::SeqCst);
    t.c.apply(&SERVICES.replace(
        "metadata: {name: myapp, namespace: production}",
        "metadata:\n  name: myapp\n  namespace: production\n  annotations:\n    retry.linkerd.io/http: 5xx\n    retry.linkerd.io/limit: \"2\"",
    ))
    .await;
    let authority = format!("{MYAPP}:80");
    let mut c = h1_client(t.client.bound.outbound).await;
    assert!(
        settles(10, async || h1_get_with(&mut c, &authority, "/x", &[]).await.0
            == 200)
        .await,
        "the annotation's retries reached the client"
    );
    let mut ok = 0;
    for i in 0..200 {
        ok += usize::from(h1_get_with(&mut c, &authority, &format!("/a/{i}"), &[]).await.0 == 200);
    }
    assert!(ok >= 198, "HTTP retries from annotations: {ok}/200 succeeded");

    t.c.apply(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: myapp-grpc
  namespace: production
  annotations:
    retry.linkerd.io/grpc: unavailable
    retry.linkerd.io/limit: \"2\"
spec:
  parentRefs: [{name: myapp, kind: Service, group: core, port: 80}]
  rules:
  - backendRefs: [{name: myapp, port: 80}]
",
    )
    .await;
    let mut g = h2_client(t.client.bound.outbound).await;
    assert!(
        settles(10, async || grpc_call(&mut g, "/shop.Catalog/Get", &[])
            .await
            .1
            .ends_with("grpc-status=0"))
        .await,
        "the GRPCRoute's retries reached the client"
    );
    let mut ok = 0;
    for _ in 0..200 {
        ok += usize::from(
            grpc_call(&mut g, "/shop.Catalog/Get", &[])
                .await
                .1
                .ends_with("grpc-status=0"),
        );
    }
    assert!(ok >= 198, "gRPC retries from annotations: {ok}/200 answered OK");
}
