//! The mirror's admin server: `/ready`, `/gateways` (every link's report as JSON, read by
//! `strait multicluster gateways` and `check`) and `/metrics` (Linkerd's `gateway_*` names,
//! labelled `target_cluster_name`).

use std::convert::Infallible;
use std::fmt::Write;
use std::future::Future;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::controller::{LinkReport, Reports};

/// Prometheus text for the reports.
pub fn metrics(reports: &[LinkReport]) -> String {
    let mut out = String::new();
    type Family = (&'static str, &'static str, &'static str, fn(&LinkReport) -> f64);
    let families: [Family; 5] = [
        (
            "gateway_alive",
            "gauge",
            "Whether the target cluster's gateway answers its probe.",
            |r| f64::from(u8::from(r.gateway.alive)),
        ),
        ("gateway_probes", "counter", "Probes sent to the gateway.", |r| {
            r.gateway.probes as f64
        }),
        (
            "gateway_probe_failures",
            "counter",
            "Probes of the gateway that failed.",
            |r| r.gateway.failures as f64,
        ),
        (
            "gateway_latency",
            "gauge",
            "Median probe latency of the gateway, milliseconds.",
            |r| r.gateway.latency_quantile(0.5).unwrap_or(f64::NAN),
        ),
        (
            "service_mirror_mirrored_services",
            "gauge",
            "Mirror Services of the link.",
            |r| r.mirrors.len() as f64,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in reports {
            let _ = writeln!(
                out,
                "{name}{{target_cluster_name=\"{}\"}} {}",
                r.cluster,
                value(r)
            );
        }
    }
    out
}

fn respond(reports: &Reports, path: &str) -> Response<Full<Bytes>> {
    let snapshot: Vec<LinkReport> = reports.read().expect("reports lock").values().cloned().collect();
    let (status, ctype, body) = match path {
        "/ready" | "/live" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/gateways" => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&snapshot).expect("reports serialize"),
        ),
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", metrics(&snapshot)),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /gateways, /metrics or /ready\n".into(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, reports: Reports, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            a = listener.accept() => match a { Ok((t, _)) => t, Err(_) => continue },
            () = &mut shutdown => return,
        };
        let reports = reports.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let rsp = respond(&reports, req.uri().path());
                async move { Ok::<_, Infallible>(rsp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
