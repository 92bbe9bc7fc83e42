//! Log filters in Linkerd's syntax (`config.linkerd.io/proxy-log-level`, e.g.
//! `warn,linkerd=info,linkerd_proxy_http=debug`).
//!
//! Linkerd's directives name `linkerd*` targets; ours live in `strait_proxy`. Every
//! directive whose target starts with `linkerd` is kept and also applied to
//! `strait_proxy`, so an operator's familiar level setting means the same here.

use tracing_subscriber::EnvFilter;

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
