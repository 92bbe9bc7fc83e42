//! The install values: every knob of the control plane and of injected proxies, typed and
//! checked once (from defaults, `--ha`, `--set key=value`, or the installed `linkerd-config`).
//!
//! Keys and defaults follow Linkerd's Helm values where Linkerd has them, so `--set` lines
//! from Linkerd's docs keep working (`controllerReplicas`, `proxy.logLevel`,
//! `proxyInit.runAsRoot`, `identity.issuer.issuanceLifetime`, …). The values are stored as
//! YAML under `values` in the `linkerd-config` ConfigMap, which is how `upgrade` reads back
//! what an install chose.

use serde::{Deserialize, Serialize};
use strait_api::labels::config::DEFAULT_INBOUND_POLICIES;
use strait_api::names;

/// The version of Strait that renders manifests; image versions default to it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a `--set` (or a stored value) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValuesError {
    /// `--set` without `=`.
    #[error("--set {given:?}: expected KEY=VALUE, e.g. --set controllerReplicas=3")]
    Malformed {
        /// As given.
        given: String,
    },
    /// A key no value answers to.
    #[error("--set {key}: unknown key; expected one of: {}", known_keys().join(", "))]
    UnknownKey {
        /// As given.
        key: String,
    },
    /// A known key with a value of the wrong form.
    #[error("--set {key}={value}: expected {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// As given.
        value: String,
        /// What the key takes.
        expected: String,
    },
}

/// Declares a string that is checked when it is created, deserialized or set.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps a value.
            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s).map(|()| Self(s))
            }

            /// The value as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// A Kubernetes resource quantity (`100m`, `128Mi`).
    Quantity,
    |s| names::quantity(s).map(drop)
);
checked_string!(
    /// A log filter in the proxy's syntax (`warn,linkerd=info`).
    LogFilter,
    strait_api::core::log_filter
);
checked_string!(
    /// A duration in Go's syntax (`24h0m0s`, `20s`).
    GoDuration,
    |s| names::duration(s).map(drop)
);
checked_string!(
    /// Comma-separated ports and ranges (`25,443,8000-8100`), possibly empty.
    PortList,
    |s| if s.trim().is_empty() { Ok(()) } else { names::port_ranges(s).map(drop) }
);
checked_string!(
    /// Comma-separated CIDRs (`10.0.0.0/8,fd00::/8`), possibly empty.
    Cidrs,
    check_cidrs
);
checked_string!(
    /// A container image name without tag (`localhost/strait`).
    ImageName,
    |s| {
        if s.is_empty() || s.contains(char::is_whitespace) || s.contains('@') {
            Err("an image name without tag, e.g. \"localhost/strait\"".into())
        } else {
            Ok(())
        }
    }
);
checked_string!(
    /// An image tag (`0.1.0`).
    ImageTag,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !s.starts_with(['.', '-']);
        if ok {
            Ok(())
        } else {
            Err("an image tag of letters, digits, '_', '.' and '-', e.g. \"0.1.0\"".into())
        }
    }
);
checked_string!(
    /// A DNS domain (`cluster.local`).
    DnsDomain,
    names::dns1123_subdomain
);
checked_string!(
    /// One of Linkerd's default inbound policies.
    InboundPolicy,
    |s| {
        if DEFAULT_INBOUND_POLICIES.contains(&s) {
            Ok(())
        } else {
            Err(format!("one of {}", DEFAULT_INBOUND_POLICIES.join(", ")))
        }
    }
);

fn check_cidrs(s: &str) -> Result<(), String> {
    // The controller's own parser (`--cluster-networks`), a prefix length required.
    let bad = s
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .any(|c| !c.contains('/') || strait_api::mesh::formats::cidr(c).is_err());
    if bad {
        Err("a comma-separated list of CIDRs, e.g. \"10.0.0.0/8,fd00::/8\"".into())
    } else {
        Ok(())
    }
}

/// Proxy log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// As written in values and annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        }
    }
}

/// What the API server does when the injector webhook cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// Create the pod without a proxy.
    Ignore,
    /// Refuse to create the pod.
    Fail,
}

impl FailurePolicy {
    /// As written in a MutatingWebhookConfiguration.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        }
    }
}

/// Kubernetes image pull policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// As written in a container.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A request and a limit, each optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestLimit {
    /// The request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Quantity>,
    /// The limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Quantity>,
}

/// CPU and memory requests and limits of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Resources {
    /// CPU, in cores.
    pub cpu: RequestLimit,
    /// Memory, in bytes.
    pub memory: RequestLimit,
}

/// An image name and an optional pinned version (this Strait's version otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Name without tag.
    pub name: ImageName,
    /// Tag; `None` follows the version of Strait that renders the manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ImageTag>,
}

impl Image {
    /// The tag in effect.
    pub fn tag(&self) -> &str {
        self.version.as_ref().map_or(VERSION, ImageTag::as_str)
    }

    /// `name:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag())
    }
}

/// The proxy's ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyPorts {
    /// Admin server: `/metrics`, `/ready`, `/live`.
    pub admin: u16,
    /// Tap (control) server.
    pub control: u16,
    /// Inbound listener: traffic redirected to the pod.
    pub inbound: u16,
    /// Outbound listener: traffic the pod sends.
    pub outbound: u16,
}

impl Default for ProxyPorts {
    fn default() -> Self {
        Self {
            admin: 4191,
            control: 4190,
            inbound: 4143,
            outbound: 4140,
        }
    }
}

/// `proxy.*`: defaults of every injected proxy (annotations override them per workload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyValues {
    /// The image holding `strait` (the proxy and its init container).
    pub image: Image,
    /// Log filter.
    pub log_level: LogFilter,
    /// Log format.
    pub log_format: LogFormat,
    /// UID the proxy runs as; iptables lets its own traffic through.
    pub uid: i64,
    /// GID the proxy runs as, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<i64>,
    /// The proxy's ports.
    pub ports: ProxyPorts,
    /// Policy for inbound connections no Server describes.
    pub default_inbound_policy: InboundPolicy,
    /// Ports whose traffic skips protocol detection (server-speaks-first protocols).
    pub opaque_ports: PortList,
    /// The proxies' `LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY` (Linkerd's value): ports
    /// that admit meshed clients only while the policy controller has not answered for
    /// them. The controller itself reads the pod's or namespace's
    /// `config.linkerd.io/proxy-require-identity-inbound-ports`, as Linkerd's does.
    pub require_identity_on_inbound_ports: PortList,
    /// Start the proxy before the application containers.
    pub r#await: bool,
    /// Let `POST /shutdown` on the proxy's admin port (from inside the pod) shut it down,
    /// for Jobs that end their proxy with `linkerd-await --shutdown`.
    pub enable_shutdown_endpoint: bool,
}

impl Default for ProxyValues {
    fn default() -> Self {
        Self {
            image: Image {
                // A local name: nothing is pulled from a public registry by accident; load
                // the image into the nodes or set proxy.image.name.
                name: ImageName("localhost/strait".into()),
                version: None,
            },
            log_level: LogFilter("warn,linkerd=info,hickory=error".into()),
            log_format: LogFormat::Plain,
            uid: 2102,
            gid: None,
            ports: ProxyPorts::default(),
            default_inbound_policy: InboundPolicy("all-unauthenticated".into()),
            opaque_ports: PortList("25,587,3306,4444,5432,6379,9300,11211".into()),
            require_identity_on_inbound_ports: PortList(String::new()),
            r#await: true,
            enable_shutdown_endpoint: false,
        }
    }
}

/// `proxyInit.*`: the init container that redirects the pod's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyInitValues {
    /// Run as root (needed where the runtime does not grant NET_ADMIN to non-root users).
    pub run_as_root: bool,
    /// Inbound ports never redirected (besides the proxy's own admin and control ports).
    pub ignore_inbound_ports: PortList,
    /// Outbound ports never redirected.
    pub ignore_outbound_ports: PortList,
    /// Outbound destinations never redirected.
    pub skip_subnets: Cidrs,
}

impl Default for ProxyInitValues {
    fn default() -> Self {
        Self {
            run_as_root: false,
            // Galera's replication ports, as in Linkerd: they break behind a proxy.
            ignore_inbound_ports: PortList("4567,4568".into()),
            ignore_outbound_ports: PortList("4567,4568".into()),
            skip_subnets: Cidrs(String::new()),
        }
    }
}

/// `identity.issuer.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IssuerValues {
    /// Lifetime of the certificates issued to proxies.
    pub issuance_lifetime: GoDuration,
    /// How far issued certificates are back-dated for clock skew.
    pub clock_skew_allowance: GoDuration,
}

impl Default for IssuerValues {
    fn default() -> Self {
        Self {
            issuance_lifetime: GoDuration("24h0m0s".into()),
            clock_skew_allowance: GoDuration("20s".into()),
        }
    }
}

/// `identity.*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IdentityValues {
    /// The issuer's settings.
    pub issuer: IssuerValues,
}

/// Every value of an install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Values {
    /// The cluster's DNS domain.
    pub cluster_domain: DnsDomain,
    /// The mesh's trust domain (the suffix of every identity).
    pub identity_trust_domain: String,
    /// The cluster's pod and service networks (destination lookups and policy).
    pub cluster_networks: Cidrs,
    /// Pull policy of every image.
    pub image_pull_policy: PullPolicy,
    /// The controller's image name (the same `strait` binary as the proxy).
    pub controller_image: ImageName,
    /// The controller image's tag, when pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_image_version: Option<ImageTag>,
    /// Controller replicas.
    pub controller_replicas: u32,
    /// The controller's log filter.
    pub controller_log_level: LogFilter,
    /// UID the controller runs as.
    pub controller_uid: i64,
    /// The controller container's resources.
    pub controller_resources: Resources,
    /// Default resources of injected proxies.
    pub proxy_resources: Resources,
    /// Spread controller replicas across nodes and zones.
    pub enable_pod_anti_affinity: bool,
    /// Keep a controller replica up through voluntary disruptions.
    pub enable_pod_disruption_budget: bool,
    /// What the API server does when the injector cannot be reached.
    pub webhook_failure_policy: FailurePolicy,
    /// Proxy defaults.
    pub proxy: ProxyValues,
    /// Init container settings.
    pub proxy_init: ProxyInitValues,
    /// Identity settings.
    pub identity: IdentityValues,
}

impl Default for Values {
    fn default() -> Self {
        Self {
            cluster_domain: DnsDomain("cluster.local".into()),
            identity_trust_domain: strait_identity::DEFAULT_TRUST_DOMAIN.into(),
            cluster_networks: Cidrs("10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8".into()),
            image_pull_policy: PullPolicy::IfNotPresent,
            controller_image: ImageName("localhost/strait".into()),
            controller_image_version: None,
            controller_replicas: 1,
            controller_log_level: LogFilter("info".into()),
            controller_uid: 2103,
            controller_resources: Resources::default(),
            proxy_resources: Resources::default(),
            enable_pod_anti_affinity: false,
            enable_pod_disruption_budget: false,
            webhook_failure_policy: FailurePolicy::Ignore,
            proxy: ProxyValues::default(),
            proxy_init: ProxyInitValues::default(),
            identity: IdentityValues::default(),
        }
    }
}

impl Values {
    /// Linkerd's high-availability values (`--ha`): three spread replicas, a disruption
    /// budget, requests and limits, and a webhook that must answer.
    pub fn apply_ha(&mut self) {
        let q = |s: &str| Some(Quantity(s.into()));
        self.controller_replicas = 3;
        self.controller_resources.cpu.request = q("100m");
        self.controller_resources.memory.request = q("50Mi");
        self.controller_resources.memory.limit = q("250Mi");
        self.proxy_resources.cpu.request = q("100m");
        self.proxy_resources.memory.request = q("20Mi");
        self.proxy_resources.memory.limit = q("250Mi");
        self.enable_pod_anti_affinity = true;
        self.enable_pod_disruption_budget = true;
        self.webhook_failure_policy = FailurePolicy::Fail;
    }

    /// Applies one `--set KEY=VALUE`.
    pub fn set(&mut self, assignment: &str) -> Result<(), ValuesError> {
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(ValuesError::Malformed {
                given: assignment.to_string(),
            });
        };
        let key = key.trim();
        let setting = SETTINGS
            .iter()
            .find(|s| s.key == key)
            .ok_or_else(|| ValuesError::UnknownKey { key: key.to_string() })?;
        (setting.set)(self, value).map_err(|expected| ValuesError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        })
    }

    /// The controller image reference, `name:tag`.
    pub fn controller_image_ref(&self) -> String {
        let tag = self
            .controller_image_version
            .as_ref()
            .map_or(VERSION, ImageTag::as_str);
        format!("{}:{tag}", self.controller_image)
    }

    /// The values as the YAML stored in `linkerd-config`.
    pub fn to_yaml(&self) -> String {
        let v = serde_json::to_value(self).expect("values serialize");
        strait_api::yaml::to_yaml(&[v])
    }

    /// Reads values stored by [`Values::to_yaml`]; keys it does not know are ignored and
    /// missing keys take their defaults, so values written by other versions still read.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let docs = strait_api::yaml::parse(text).map_err(|e| e.to_string())?;
        let value = docs.into_iter().next().map(|d| d.value).unwrap_or_default();
        let value = if value.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            value
        };
        values_from_json(value)
    }
}

/// Types stored values, naming the field that is wrong (`proxyResources.cpu.limit: expected …`).
fn values_from_json(value: serde_json::Value) -> Result<Values, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        // serde's own messages say what was expected; a checked value's message is the
        // expected form alone.
        let serde_own = [
            "invalid type",
            "invalid value",
            "unknown variant",
            "missing field",
        ]
        .iter()
        .any(|p| inner.starts_with(p));
        if serde_own {
            format!("{}: {inner}", e.path())
        } else {
            format!("{}: expected {inner}", e.path())
        }
    })
}

/// One settable key.
struct Setting {
    key: &'static str,
    set: fn(&mut Values, &str) -> Result<(), String>,
}

fn known_keys() -> Vec<&'static str> {
    SETTINGS.iter().map(|s| s.key).collect()
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("true or false".into()),
    }
}

fn opt_quantity(s: &str) -> Result<Option<Quantity>, String> {
    if s.is_empty() {
        Ok(None)
    } else {
        Quantity::new(s).map(Some)
    }
}

fn opt_tag(s: &str) -> Result<Option<ImageTag>, String> {
    if s.is_empty() {
        Ok(None)
    } else {
        ImageTag::new(s).map(Some)
    }
}

fn uid(s: &str) -> Result<i64, String> {
    s.parse::<u32>()
        .map(i64::from)
        .map_err(|_| "a numeric user id".into())
}

macro_rules! setting {
    ($key:literal, |$v:ident, $s:ident| $body:expr) => {
        Setting {
            key: $key,
            set: |$v: &mut Values, $s: &str| {
                $body;
                Ok(())
            },
        }
    };
}

/// Every key `--set` accepts, each with how it parses.
static SETTINGS: &[Setting] = &[
    setting!("controllerReplicas", |v, s| {
        v.controller_replicas = s
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or("a whole number of replicas, at least 1")?
    }),
    setting!("controllerLogLevel", |v, s| v.controller_log_level =
        LogFilter::new(s)?),
    setting!("controllerImage", |v, s| v.controller_image = ImageName::new(s)?),
    setting!("controllerImageVersion", |v, s| v.controller_image_version =
        opt_tag(s)?),
    setting!("controllerUID", |v, s| v.controller_uid = uid(s)?),
    setting!("controllerResources.cpu.request", |v, s| {
        v.controller_resources.cpu.request = opt_quantity(s)?
    }),
    setting!("controllerResources.cpu.limit", |v, s| {
        v.controller_resources.cpu.limit = opt_quantity(s)?
    }),
    setting!("controllerResources.memory.request", |v, s| {
        v.controller_resources.memory.request = opt_quantity(s)?
    }),
    setting!("controllerResources.memory.limit", |v, s| {
        v.controller_resources.memory.limit = opt_quantity(s)?
    }),
    setting!("proxyResources.cpu.request", |v, s| v
        .proxy_resources
        .cpu
        .request =
        opt_quantity(s)?),
    setting!("proxyResources.cpu.limit", |v, s| v.proxy_resources.cpu.limit =
        opt_quantity(s)?),
    setting!("proxyResources.memory.request", |v, s| {
        v.proxy_resources.memory.request = opt_quantity(s)?
    }),
    setting!("proxyResources.memory.limit", |v, s| {
        v.proxy_resources.memory.limit = opt_quantity(s)?
    }),
    setting!("proxyInit.runAsRoot", |v, s| v.proxy_init.run_as_root =
        parse_bool(s)?),
    setting!("proxyInit.ignoreInboundPorts", |v, s| {
        v.proxy_init.ignore_inbound_ports = PortList::new(s)?
    }),
    setting!("proxyInit.ignoreOutboundPorts", |v, s| {
        v.proxy_init.ignore_outbound_ports = PortList::new(s)?
    }),
    setting!("proxyInit.skipSubnets", |v, s| v.proxy_init.skip_subnets =
        Cidrs::new(s)?),
    setting!("proxy.logLevel", |v, s| v.proxy.log_level = LogFilter::new(s)?),
    setting!("proxy.logFormat", |v, s| {
        v.proxy.log_format = match s {
            "plain" => LogFormat::Plain,
            "json" => LogFormat::Json,
            _ => return Err("plain or json".into()),
        }
    }),
    setting!("proxy.image.name", |v, s| v.proxy.image.name = ImageName::new(s)?),
    setting!("proxy.image.version", |v, s| v.proxy.image.version = opt_tag(s)?),
    setting!("proxy.uid", |v, s| v.proxy.uid = uid(s)?),
    setting!("proxy.defaultInboundPolicy", |v, s| {
        v.proxy.default_inbound_policy = InboundPolicy::new(s)?
    }),
    setting!("proxy.opaquePorts", |v, s| v.proxy.opaque_ports =
        PortList::new(s)?),
    setting!("proxy.requireIdentityOnInboundPorts", |v, s| v
        .proxy
        .require_identity_on_inbound_ports =
        PortList::new(s)?),
    setting!("proxy.await", |v, s| v.proxy.r#await = parse_bool(s)?),
    setting!("proxy.enableShutdownEndpoint", |v, s| v
        .proxy
        .enable_shutdown_endpoint =
        parse_bool(s)?),
    setting!("identity.issuer.issuanceLifetime", |v, s| {
        // The controller refuses shorter lifetimes (`--issuance-lifetime`).
        let lifetime = GoDuration::new(s)?;
        if names::duration(s)? < std::time::Duration::from_secs(60) {
            return Err("a duration of at least 1m, e.g. \"24h0m0s\"".into());
        }
        v.identity.issuer.issuance_lifetime = lifetime
    }),
    setting!("identity.issuer.clockSkewAllowance", |v, s| {
        v.identity.issuer.clock_skew_allowance = GoDuration::new(s)?
    }),
    setting!("clusterDomain", |v, s| v.cluster_domain = DnsDomain::new(s)?),
    setting!("clusterNetworks", |v, s| v.cluster_networks = Cidrs::new(s)?),
    setting!("imagePullPolicy", |v, s| {
        v.image_pull_policy = match s {
            "Always" => PullPolicy::Always,
            "IfNotPresent" => PullPolicy::IfNotPresent,
            "Never" => PullPolicy::Never,
            _ => return Err("Always, IfNotPresent or Never".into()),
        }
    }),
    setting!("webhookFailurePolicy", |v, s| {
        v.webhook_failure_policy = match s {
            "Ignore" => FailurePolicy::Ignore,
            "Fail" => FailurePolicy::Fail,
            _ => return Err("Ignore or Fail".into()),
        }
    }),
    setting!("enablePodAntiAffinity", |v, s| v.enable_pod_anti_affinity =
        parse_bool(s)?),
    setting!("enablePodDisruptionBudget", |v, s| v
        .enable_pod_disruption_budget =
        parse_bool(s)?),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_parses_each_kind_of_value() {
        let mut v = Values::default();
        for s in [
            "controllerReplicas=2",
            "controllerResources.cpu.request=100m",
            "controllerResources.memory.limit=256Mi",
            "proxyResources.cpu.limit=1",
            "proxyResources.memory.request=20Mi",
            "proxyInit.runAsRoot=true",
            "proxy.logLevel=info,linkerd=debug",
            "identity.issuer.issuanceLifetime=48h",
            "proxy.image.version=1.2.3",
        ] {
            v.set(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        assert_eq!(v.controller_replicas, 2);
        assert_eq!(
            v.controller_resources.cpu.request.as_ref().unwrap().as_str(),
            "100m"
        );
        assert_eq!(
            v.controller_resources.memory.limit.as_ref().unwrap().as_str(),
            "256Mi"
        );
        assert_eq!(v.proxy_resources.cpu.limit.as_ref().unwrap().as_str(), "1");
        assert!(v.proxy_init.run_as_root);
        assert_eq!(v.proxy.log_level.as_str(), "info,linkerd=debug");
        assert_eq!(v.identity.issuer.issuance_lifetime.as_str(), "48h");
        assert_eq!(v.proxy.image.tag(), "1.2.3");
        // An empty value clears an optional one.
        v.set("proxyResources.cpu.limit=").unwrap();
        assert_eq!(v.proxy_resources.cpu.limit, None);
    }

    #[test]
    fn bad_sets_name_the_key_and_what_it_takes() {
        let cases: &[(&str, &str)] = &[
            (
                "controllerReplicas=0",
                "--set controllerReplicas=0: expected a whole number of replicas, at least 1",
            ),
            ("controllerReplicas=three", "expected a whole number of replicas"),
            (
                "proxyResources.cpu.limit=lots",
                "--set proxyResources.cpu.limit=lots: expected a Kubernetes quantity",
            ),
            (
                "controllerResources.memory.request=10MB",
                "expected a Kubernetes quantity",
            ),
            (
                "proxyInit.runAsRoot=yes",
                "--set proxyInit.runAsRoot=yes: expected true or false",
            ),
            ("proxy.logLevel=loud", "expected a log filter"),
            ("identity.issuer.issuanceLifetime=1d", "expected a duration"),
            (
                "identity.issuer.issuanceLifetime=30s",
                "expected a duration of at least 1m",
            ),
            (
                "clusterNetworks=10.0.0.0/+8",
                "expected a comma-separated list of CIDRs",
            ),
            (
                "clusterNetworks=10.0.0.0",
                "expected a comma-separated list of CIDRs",
            ),
            ("proxy.image.version=a b", "expected an image tag"),
            ("webhookFailurePolicy=Maybe", "expected Ignore or Fail"),
            (
                "replicas=3",
                "--set replicas: unknown key; expected one of: controllerReplicas, ",
            ),
            ("controllerReplicas", "expected KEY=VALUE"),
        ];
        for (input, want) in cases {
            let err = Values::default().set(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
        let unknown = Values::default().set("nope=1").unwrap_err().to_string();
        for key in [
            "proxyResources.memory.limit",
            "identity.issuer.issuanceLifetime",
            "proxy.image.version",
        ] {
            assert!(unknown.contains(key), "{unknown}");
        }
    }

    #[test]
    fn values_round_trip_through_yaml() {
        let mut v = Values::default();
        v.apply_ha();
        v.set("proxy.image.version=9.9.9").unwrap();
        let back = Values::from_yaml(&v.to_yaml()).unwrap();
        assert_eq!(back, v);
        // Older or newer values: unknown keys ignored, missing keys defaulted.
        let partial = Values::from_yaml("controllerReplicas: 2\nsomethingNew: 1\n").unwrap();
        assert_eq!(partial.controller_replicas, 2);
        assert_eq!(partial.proxy, ProxyValues::default());
        // Bad stored values are refused with what was expected.
        let err = Values::from_yaml("proxyResources:\n  cpu:\n    limit: lots\n").unwrap_err();
        assert!(err.contains("expected a Kubernetes quantity"), "{err}");
    }

    #[test]
    fn ha_sets_linkerds_ha_values() {
        let mut v = Values::default();
        v.apply_ha();
        assert_eq!(v.controller_replicas, 3);
        assert!(v.enable_pod_anti_affinity && v.enable_pod_disruption_budget);
        assert_eq!(v.webhook_failure_policy, FailurePolicy::Fail);
        assert_eq!(v.proxy_resources.memory.limit.as_ref().unwrap().as_str(), "250Mi");
    }
}
