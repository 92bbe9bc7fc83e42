//! Log filters in Linkerd's syntax (`config.linkerd.io/proxy-log-level`, e.g.
//! `warn,linkerd=info,linkerd_proxy_http=debug`).
//!
//! Linkerd's directives name `linkerd*` targets; ours live in `strait_proxy`. Every
//! directive whose target starts with `linkerd` is kept and also applied to
//! `strait_proxy`, so an operator's familiar level setting means the same here.

use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_subscriber::EnvFilter;

/// The process's log filter, changeable while it runs (the admin server's
/// `/proxy-log-level`): installed once, by the process that sets up logging.
struct Level {
    current: Mutex<String>,
    reload: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
}

static LEVEL: OnceLock<Level> = OnceLock::new();

/// Makes `spec` (already in effect) the current level, `reload` the way to change it.
/// Only the first call counts: logging is set up once per process.
pub fn install(spec: &str, reload: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static) {
    let _ = LEVEL.set(Level {
        current: Mutex::new(spec.to_string()),
        reload: Box::new(reload),
    });
}

/// The level in effect, if this process installed a changeable one.
pub fn current() -> Option<String> {
    LEVEL
        .get()
        .map(|l| l.current.lock().unwrap_or_else(PoisonError::into_inner).clone())
}

/// Why a new level was not applied.
#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    /// This process has no changeable level (the proxy runs inside another program).
    NotInstalled,
    /// The level does not read (the message says what was expected).
    Invalid(String),
}

/// Applies `spec` (Linkerd's syntax) as the new level.
pub fn set(spec: &str) -> Result<(), SetError> {
    let level = LEVEL.get().ok_or(SetError::NotInstalled)?;
    let spec = spec.trim();
    let f = filter(spec).map_err(SetError::Invalid)?;
    let mut current = level.current.lock().unwrap_or_else(PoisonError::into_inner);
    (level.reload)(f).map_err(SetError::Invalid)?;
    *current = spec.to_string();
    Ok(())
}

/// The filter for a Linkerd log-level string, or why it does not read.
pub fn filter(spec: &str) -> Result<EnvFilter, String> {
    let mut directives = Vec::new();
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        directives.push(d.to_string());
        if let Some(rest) = d.strip_prefix("linkerd") {
            // `linkerd=debug`, `linkerd2_proxy=debug`, `linkerd_app=trace` → strait_proxy.
            if let Some((_, level)) = rest.split_once('=') {
                directives.push(format!("strait_proxy={level}"));
            }
        }
    }
    EnvFilter::try_new(directives.join(","))
        .map_err(|e| format!("{spec:?} is not a log level; expected e.g. warn,linkerd=info ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linkerd_targets_apply_to_the_proxy() {
        let f = filter("info,linkerd=debug").unwrap().to_string();
        assert!(f.contains("strait_proxy=debug"), "{f}");
        assert!(f.contains("linkerd=debug"), "{f}");
        assert!(filter("info,linkerd=loud").is_err());
    }
}
