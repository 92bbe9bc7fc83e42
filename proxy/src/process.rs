//! The sidecar as a process: configuration from the environment, logs on stderr, the
//! runtime, one JSON line naming the bound addresses on stdout, and a graceful drain on
//! SIGTERM or SIGINT. Shared by `strait proxy` and the lean `strait-proxy` binary, which
//! holds only the proxy's code (the sidecar's resident memory is mostly its binary's
//! text, so a binary without the control plane, CLI and Kubernetes client is smaller).

use std::collections::HashMap;
use std::time::SystemTime;

/// The name of the lean sidecar binary, installed beside `strait`.
pub const LEAN_BINARY: &str = "strait-proxy";

/// Runs the proxy configured by `vars` until SIGTERM or SIGINT. A configuration error
/// names its variable, and the flag that set it when `flag_of` knows one.
pub fn run(
    vars: &HashMap<String, String>,
    flag_of: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<(), String> {
    let cfg = config(vars, flag_of)?;
    let filter = crate::log::filter(&cfg.log).map_err(|e| format!("{}: {e}", crate::config::env::LOG))?;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs written to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // The admin server's `/proxy-log-level` changes the filter while the proxy runs.
    if cfg.log_json {
        let subscriber = fmt.json().with_filter_reloading();
        let reload = subscriber.reload_handle();
        subscriber.init();
        crate::log::install(&cfg.log, move |f| reload.reload(f).map_err(|e| e.to_string()));
    } else {
        let subscriber = fmt.with_filter_reloading();
        let reload = subscriber.reload_handle();
        subscriber.init();
        crate::log::install(&cfg.log, move |f| reload.reload(f).map_err(|e| e.to_string()));
    }
    // One core (the default, as Linkerd's proxy): a single-threaded runtime, no work
    // stealing or cross-thread wake-ups on the request path.
    let mut builder = if cfg.cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cfg.cores);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(crate::run(
        cfg,
        |b| {
            // One JSON line on stdout for supervisors (`strait up`); the rest is logs.
            println!(
                "{{\"inbound\":\"{}\",\"outbound\":\"{}\",\"admin\":\"{}\"}}",
                b.inbound, b.outbound, b.admin
            );
        },
        shutdown_signal(),
    ))
    .map_err(|e| e.to_string())
}

/// The configuration `vars` describe, or the error naming the variable (and flag).
pub fn config(
    vars: &HashMap<String, String>,
    flag_of: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<crate::Config, String> {
    crate::Config::from_source(|k| vars.get(k).cloned(), SystemTime::now()).map_err(|e| {
        let flag = flag_of(e.var.as_str())
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        format!("{}{flag}: {}", e.var, e.problem)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
