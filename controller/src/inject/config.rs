//! What the injector injects: the cluster-wide [`InjectConfig`] (from the install values)
//! and, per pod, the [`Settings`] it resolves from `config.linkerd.io/*` annotations.
//!
//! An annotation on the pod template wins over the same annotation on the namespace, which
//! wins over the install values, as in Linkerd. A value that does not parse is ignored with
//! a warning (Linkerd's injector does the same) rather than failing the pod's creation.

use std::collections::BTreeMap;

use strait_api::labels::config as ann;
use strait_api::names;

use crate::install::values::{ProxyPorts, Quantity, Values};

/// The control plane namespace every proxy talks to.
pub const CONTROL_PLANE_NAMESPACE: &str = "linkerd";

/// Cluster-wide injection settings: the install values plus the trust anchors proxies get.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// Defaults of every proxy (`proxy.*`, `proxyInit.*`, `proxyResources.*`, …).
    pub values: Values,
    /// The control plane's namespace (`linkerd`).
    pub namespace: String,
    /// PEM of the trust anchors, as given to proxies in `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`.
    pub trust_anchors_pem: String,
}

impl InjectConfig {
    /// The configuration of a control plane installed with `values` in `linkerd`.
    pub fn new(values: Values, trust_anchors_pem: impl Into<String>) -> Self {
        Self {
            values,
            namespace: CONTROL_PLANE_NAMESPACE.into(),
            trust_anchors_pem: trust_anchors_pem.into(),
        }
    }

    /// Hex SHA-256 of the trust anchors PEM (`linkerd.io/trust-root-sha256`).
    pub fn trust_root_sha256(&self) -> String {
        sha256_hex(self.trust_anchors_pem.as_bytes())
    }

    /// `<svc>.<ns>.svc.<cluster-domain>.:<port>`: a control-plane address, fully qualified
    /// (the trailing dot spares every proxy a walk through the search domains).
    pub fn service_addr(&self, service: &str, port: u16) -> String {
        format!(
            "{service}.{}.svc.{}.:{port}",
            self.namespace, self.values.cluster_domain
        )
    }

    /// The mesh identity of a control-plane service account (`<sa>.linkerd.serviceaccount…`).
    pub fn control_plane_identity(&self, service_account: &str) -> String {
        format!(
            "{service_account}.{ns}.serviceaccount.identity.{ns}.{td}",
            ns = self.namespace,
            td = self.values.identity_trust_domain
        )
    }
}

/// SHA-256 from the one crypto provider we build (ring, through rustls): no second hash crate.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use tokio_rustls::rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let suite = TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite");
    let digest = suite.common.hash_provider.hash(data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where an annotation's value came from, for warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Pod,
    Namespace,
}

/// The annotations that configure one pod: its own, then its namespace's.
pub(crate) struct Annotations<'a> {
    pod: &'a BTreeMap<String, String>,
    namespace: Option<&'a BTreeMap<String, String>>,
    warnings: Vec<String>,
}

impl<'a> Annotations<'a> {
    pub(crate) fn new(
        pod: &'a BTreeMap<String, String>,
        namespace: Option<&'a BTreeMap<String, String>>,
    ) -> Self {
        Self {
            pod,
            namespace,
            warnings: Vec::new(),
        }
    }

    fn get(&self, key: &str) -> Option<(&'a str, Source)> {
        if let Some(v) = self.pod.get(key) {
            return Some((v.as_str(), Source::Pod));
        }
        self.namespace
            .and_then(|ns| ns.get(key))
            .map(|v| (v.as_str(), Source::Namespace))
    }

    /// The annotation's value parsed, or `None` (with a warning when it does not parse).
    fn parse<T>(&mut self, key: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let (value, source) = self.get(key)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(expected) => {
                let on = match source {
                    Source::Pod => "the pod",
                    Source::Namespace => "the namespace",
                };
                self.warnings.push(format!(
                    "annotation {key} on {on}: expected {expected}, found {value:?}; using the default"
                ));
                None
            }
        }
    }

    /// A warning about annotation `key` (from where its value came).
    fn warn(&mut self, key: &str, problem: &str) {
        let on = match self.get(key).map(|(_, s)| s) {
            Some(Source::Namespace) => "the namespace",
            _ => "the pod",
        };
        self.warnings.push(format!("annotation {key} on {on}: {problem}"));
    }

    pub(crate) fn into_warnings(self) -> Vec<String> {
        self.warnings
    }
}

/// The resolved configuration of one pod's proxy and init container.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings {
    pub image: String,
    pub version: String,
    pub pull_policy: String,
    pub uid: i64,
    pub gid: Option<i64>,
    pub ports: ProxyPorts,
    pub log_level: String,
    pub log_format: String,
    pub default_inbound_policy: String,
    /// Ports whose inbound traffic is not protocol-detected: opaque ports and
    /// `inbound-ports-disable-protocol-detection`.
    pub opaque_ports: String,
    pub require_identity_ports: String,
    pub skip_inbound_ports: String,
    pub skip_outbound_ports: String,
    pub skip_subnets: String,
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
    /// Worker threads: the CPU limit rounded up, as Linkerd sets `LINKERD2_PROXY_CORES`.
    pub cores: Option<u64>,
    pub await_proxy: bool,
    pub ingress: bool,
    pub tap: bool,
    pub close_wait_secs: Option<u64>,
    pub inbound_connect_timeout: Option<String>,
    pub outbound_connect_timeout: Option<String>,
    pub shutdown_grace_period: Option<String>,
    pub trace_collector: Option<String>,
    pub run_as_root: bool,
}

fn flag(v: &str) -> Result<bool, String> {
    match v {
        "enabled" | "true" => Ok(true),
        "disabled" | "false" => Ok(false),
        _ => Err("enabled or disabled".into()),
    }
}

fn port(v: &str) -> Result<u16, String> {
    v.parse::<i64>()
        .map_err(|_| "a port number 1-65535".to_string())
        .and_then(names::port_number)
}

fn port_list(v: &str) -> Result<String, String> {
    names::port_ranges(v).map(|_| normalize_list(v))
}

fn normalize_list(v: &str) -> String {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// Appends `extra` to a comma-separated list, skipping entries already present.
fn union(list: &str, extra: &str) -> String {
    let mut items: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
    for e in extra.split(',').filter(|s| !s.is_empty()) {
        if !items.contains(&e) {
            items.push(e);
        }
    }
    items.join(",")
}

impl Settings {
    /// Resolves a pod's settings from its annotations (and its namespace's) over `config`.
    pub(crate) fn resolve(config: &InjectConfig, a: &mut Annotations<'_>, ingress: bool) -> Settings {
        let v = &config.values;
        let quantity = |q: &str| names::quantity(q).map(|_| q.to_string());
        let duration = |d: &str| names::duration(d).map(|_| d.to_string());

        let mut requests = BTreeMap::new();
        let mut limits = BTreeMap::new();
        let defaults: [(&str, &Option<Quantity>, &str, bool); 6] = [
            (
                "cpu",
                &v.proxy_resources.cpu.request,
                ann::PROXY_CPU_REQUEST,
                false,
            ),
            ("cpu", &v.proxy_resources.cpu.limit, ann::PROXY_CPU_LIMIT, true),
            (
                "memory",
                &v.proxy_resources.memory.request,
                ann::PROXY_MEMORY_REQUEST,
                false,
            ),
            (
                "memory",
                &v.proxy_resources.memory.limit,
                ann::PROXY_MEMORY_LIMIT,
                true,
            ),
            (
                "ephemeral-storage",
                &None,
                ann::PROXY_EPHEMERAL_STORAGE_REQUEST,
                false,
            ),
            (
                "ephemeral-storage",
                &None,
                ann::PROXY_EPHEMERAL_STORAGE_LIMIT,
                true,
            ),
        ];
        for (resource, default, key, is_limit) in defaults {
            let value = a
                .parse(key, quantity)
                .or_else(|| default.as_ref().map(|q| q.as_str().to_string()));
            if let Some(q) = value {
                let map = if is_limit { &mut limits } else { &mut requests };
                map.insert(resource.to_string(), q);
            }
        }
        let cores = limits
            .get("cpu")
            .and_then(|q| names::quantity(q).ok())
            .map(|c| (c.ceil() as u64).max(1));

        let opaque = a
            .parse(ann::OPAQUE_PORTS, port_list)
            .unwrap_or_else(|| normalize_list(v.proxy.opaque_ports.as_str()));
        let no_detect = a
            .parse(ann::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION, port_list)
            .unwrap_or_default();
        let close_wait_secs = a
            .parse(ann::CLOSE_WAIT_TIMEOUT, names::duration)
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));

        let version = a
            .parse(ann::PROXY_VERSION, |s| {
                crate::install::values::ImageTag::new(s).map(|t| t.to_string())
            })
            .unwrap_or_else(|| v.proxy.image.tag().to_string());
        let image = a
            .parse(ann::PROXY_IMAGE, |s| {
                crate::install::values::ImageName::new(s).map(|n| n.to_string())
            })
            .unwrap_or_else(|| v.proxy.image.name.to_string());
        let log_level = a
            .parse(ann::PROXY_LOG_LEVEL, |l| {
                strait_api::core::log_filter(l).map(|()| l.to_string())
            })
            .unwrap_or_else(|| v.proxy.log_level.to_string());
        let log_format = a
            .parse(ann::PROXY_LOG_FORMAT, |f| match f {
                "plain" | "json" => Ok(f.to_string()),
                _ => Err("plain or json".to_string()),
            })
            .unwrap_or_else(|| v.proxy.log_format.as_str().to_string());
        let default_inbound_policy = a
            .parse(ann::DEFAULT_INBOUND_POLICY, |p| {
                if ann::DEFAULT_INBOUND_POLICIES.contains(&p) {
                    Ok(p.to_string())
                } else {
                    Err(format!("one of {}", ann::DEFAULT_INBOUND_POLICIES.join(", ")))
                }
            })
            .unwrap_or_else(|| v.proxy.default_inbound_policy.to_string());
        let id = |s: &str| {
            s.parse::<u32>()
                .map(i64::from)
                .map_err(|_| "a numeric user or group id".to_string())
        };
        let ports = ProxyPorts {
            admin: a
                .parse(ann::PROXY_ADMIN_PORT, port)
                .unwrap_or(v.proxy.ports.admin),
            control: a
                .parse(ann::PROXY_CONTROL_PORT, port)
                .unwrap_or(v.proxy.ports.control),
            inbound: a
                .parse(ann::PROXY_INBOUND_PORT, port)
                .unwrap_or(v.proxy.ports.inbound),
            outbound: a
                .parse(ann::PROXY_OUTBOUND_PORT, port)
                .unwrap_or(v.proxy.ports.outbound),
        };
        // Linkerd 2.12 removed running a proxy without identity (its proxy refuses
        // `LINKERD2_PROXY_IDENTITY_DISABLED`, as ours does): the annotation is refused
        // with a warning, and the proxy keeps its identity.
        if a.parse(ann::DISABLE_IDENTITY, flag).unwrap_or(false) {
            a.warn(
                ann::DISABLE_IDENTITY,
                "identity can no longer be disabled (Linkerd 2.12 removed it; the proxy needs it for mTLS and policy); the proxy keeps its identity",
            );
        }
        Settings {
            image,
            version,
            pull_policy: v.image_pull_policy.as_str().to_string(),
            uid: a.parse(ann::PROXY_UID, id).unwrap_or(v.proxy.uid),
            gid: a.parse(ann::PROXY_GID, id).or(v.proxy.gid),
            ports,
            log_level,
            log_format,
            default_inbound_policy,
            opaque_ports: union(&opaque, &no_detect),
            require_identity_ports: a
                .parse(ann::PROXY_REQUIRE_IDENTITY_INBOUND_PORTS, port_list)
                .unwrap_or_else(|| normalize_list(v.proxy.require_identity_on_inbound_ports.as_str())),
            skip_inbound_ports: a
                .parse(ann::SKIP_INBOUND_PORTS, port_list)
                .unwrap_or_else(|| normalize_list(v.proxy_init.ignore_inbound_ports.as_str())),
            skip_outbound_ports: a
                .parse(ann::SKIP_OUTBOUND_PORTS, port_list)
                .unwrap_or_else(|| normalize_list(v.proxy_init.ignore_outbound_ports.as_str())),
            skip_subnets: a
                .parse(ann::SKIP_SUBNETS, |s| {
                    crate::install::values::Cidrs::new(s).map(|_| normalize_list(s))
                })
                .unwrap_or_else(|| normalize_list(v.proxy_init.skip_subnets.as_str())),
            requests,
            limits,
            cores,
            await_proxy: a.parse(ann::PROXY_AWAIT, flag).unwrap_or(v.proxy.r#await),
            ingress,
            tap: !a.parse(ann::DISABLE_TAP, flag).unwrap_or(false),
            // Changing a conntrack sysctl needs root, whatever proxyInit.runAsRoot says.
            run_as_root: v.proxy_init.run_as_root || close_wait_secs.is_some(),
            close_wait_secs,
            inbound_connect_timeout: a.parse(ann::PROXY_INBOUND_CONNECT_TIMEOUT, duration),
            outbound_connect_timeout: a.parse(ann::PROXY_OUTBOUND_CONNECT_TIMEOUT, duration),
            shutdown_grace_period: a.parse(ann::SHUTDOWN_GRACE_PERIOD, duration),
            trace_collector: a.parse(ann::TRACE_COLLECTOR, |s| {
                if s.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && port(p).is_ok())
                {
                    Ok(s.to_string())
                } else {
                    Err("a collector address host:port".to_string())
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config() -> InjectConfig {
        InjectConfig::new(Values::default(), "PEM")
    }

    #[test]
    fn pod_annotations_win_over_namespace_over_values() {
        let pod = map(&[(ann::PROXY_LOG_LEVEL, "debug")]);
        let ns = map(&[
            (ann::PROXY_LOG_LEVEL, "error"),
            (ann::DEFAULT_INBOUND_POLICY, "deny"),
        ]);
        let mut a = Annotations::new(&pod, Some(&ns));
        let s = Settings::resolve(&config(), &mut a, false);
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.default_inbound_policy, "deny");
        assert_eq!(s.log_format, "plain");
        assert!(a.into_warnings().is_empty());
    }

    #[test]
    fn resources_and_cores() {
        let pod = map(&[
            (ann::PROXY_CPU_LIMIT, "1500m"),
            (ann::PROXY_MEMORY_REQUEST, "64Mi"),
        ]);
        let mut values = Values::default();
        values.set("proxyResources.memory.limit=250Mi").unwrap();
        values.set("proxyResources.memory.request=20Mi").unwrap();
        let cfg = InjectConfig::new(values, "PEM");
        let mut a = Annotations::new(&pod, None);
        let s = Settings::resolve(&cfg, &mut a, false);
        assert_eq!(s.limits, map(&[("cpu", "1500m"), ("memory", "250Mi")]));
        assert_eq!(s.requests, map(&[("memory", "64Mi")]));
        assert_eq!(s.cores, Some(2));
    }

    #[test]
    fn bad_values_fall_back_with_a_warning() {
        let pod = map(&[
            (ann::PROXY_CPU_LIMIT, "lots"),
            (ann::SKIP_INBOUND_PORTS, "http"),
            (ann::PROXY_REQUIRE_IDENTITY_INBOUND_PORTS, "8080,admin"),
        ]);
        let mut a = Annotations::new(&pod, None);
        let s = Settings::resolve(&config(), &mut a, false);
        assert!(s.limits.is_empty());
        assert_eq!(s.skip_inbound_ports, "4567,4568");
        assert_eq!(s.require_identity_ports, "");
        let w = a.into_warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w.iter().any(|w| w.contains(
                "proxy-require-identity-inbound-ports on the pod: expected a comma-separated list of ports"
            )),
            "{w:?}"
        );
        assert!(
            w[0].contains("config.linkerd.io/proxy-cpu-limit on the pod: expected a Kubernetes quantity"),
            "{w:?}"
        );
        assert!(w[0].ends_with("found \"lots\"; using the default"), "{w:?}");
    }

    #[test]
    fn opaque_ports_merge_with_disabled_detection() {
        let pod = map(&[
            (ann::OPAQUE_PORTS, "3306, 5432"),
            (ann::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION, "5432,9000-9010"),
        ]);
        let mut a = Annotations::new(&pod, None);
        let s = Settings::resolve(&config(), &mut a, false);
        assert_eq!(s.opaque_ports, "3306,5432,9000-9010");
    }

    #[test]
    fn close_wait_needs_root() {
        let pod = map(&[(ann::CLOSE_WAIT_TIMEOUT, "1m30s")]);
        let mut a = Annotations::new(&pod, None);
        let s = Settings::resolve(&config(), &mut a, false);
        assert_eq!(s.close_wait_secs, Some(90));
        assert!(s.run_as_root);
    }

    #[test]
    fn sha256_matches_a_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
