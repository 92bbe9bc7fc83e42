//! The proxy's configuration, parsed once from Linkerd's environment variables (and the
//! `strait proxy` flags that override them) before any port is bound.
//!
//! The source is injectable ([`Config::from_source`] takes a lookup function), so tests
//! never touch the process environment. Every error names the variable and what was
//! expected, so an operator can fix the manifest without reading code.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use strait_identity::{IdentityName, TrustAnchors};

/// How connections reach the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capture {
    /// iptables REDIRECT in the pod's network namespace: the original destination of a
    /// connection comes from `SO_ORIGINAL_DST` (Linkerd's model; needs root to set up).
    Transparent,
    /// No redirection (loopback runs without root): each pod has its own 127.x address;
    /// the application addresses its proxy explicitly and names the target in the request
    /// (HTTP/1 absolute-form or `Host`, HTTP/2 `:authority`, `CONNECT host:port`).
    Explicit,
}

/// A set of ports given as Linkerd writes them: `25,443,587,3306-3307`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet(Vec<(u16, u16)>);

impl PortSet {
    /// Whether the set has no port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port))
    }

    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let port = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{p:?} is not a port number 1-65535"))
            };
            let range = match part.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => (port(part)?, port(part)?),
            };
            if range.0 > range.1 {
                return Err(format!("range {part:?} ends before it starts"));
            }
            out.push(range);
        }
        Ok(Self(out))
    }
}

/// Limits that keep a misbehaving peer from exhausting the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent connections per listener; further connections are closed at once.
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// How long a client may take to send its request head (slow-loris protection).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything the proxy needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// How connections are captured.
    pub capture: Capture,
    /// The log filter (Linkerd syntax, e.g. `warn,linkerd=info`).
    pub log: String,
    /// Log lines as text or as one JSON object each (`LINKERD2_PROXY_LOG_FORMAT`,
    /// Linkerd's `config.linkerd.io/proxy-log-format`).
    pub log_json: bool,
    /// `host:port` of the Destination service.
    pub destination_addr: String,
    /// The identity the Destination service must present over mTLS
    /// (`LINKERD2_PROXY_DESTINATION_SVC_NAME`); `None`: plaintext (see [`control_tls`]).
    pub destination_tls: Option<IdentityName>,
    /// `host:port` of the policy service, when configured: outbound routes, retries,
    /// timeouts and failure accrual (`OutboundPolicies`) and inbound authorization
    /// (`InboundServerPolicies`). Without it, outbound follows discovery only and inbound
    /// applies [`Config::inbound_default_policy`].
    pub policy_addr: Option<String>,
    /// The identity the policy service must present over mTLS
    /// (`LINKERD2_PROXY_POLICY_SVC_NAME`); `None`: plaintext.
    pub policy_tls: Option<IdentityName>,
    /// This pod as the policy controller knows it (`{"ns":…,"pod":…}`), from
    /// `LINKERD2_PROXY_POLICY_WORKLOAD`, else `LINKERD2_PROXY_DESTINATION_CONTEXT`.
    pub policy_workload: Option<String>,
    /// The inbound policy where the controller has none (or none is configured): Linkerd's
    /// `all-unauthenticated` (default), `all-authenticated`, `cluster-unauthenticated`,
    /// `cluster-authenticated` (clients inside [`Config::cluster_networks`] only), `audit`
    /// or `deny`.
    pub inbound_default_policy: String,
    /// The cluster's networks (`LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS`, comma-separated
    /// CIDRs; Linkerd's private ranges when unset), for the `cluster-*` default policies.
    pub cluster_networks: Vec<crate::policy::inbound::IpNet>,
    /// `host:port` of the Identity service.
    pub identity_addr: String,
    /// The identity the Identity service must present over TLS
    /// (`LINKERD2_PROXY_IDENTITY_SVC_NAME`; the proxy has no certificate to show yet);
    /// `None`: plaintext.
    pub identity_tls: Option<IdentityName>,
    /// The trust anchors.
    pub trust_anchors: TrustAnchors,
    /// This proxy's identity.
    pub local_identity: IdentityName,
    /// The file holding the token proving the identity.
    pub token_file: PathBuf,
    /// Inbound listener (Linkerd: 0.0.0.0:4143).
    pub inbound_addr: SocketAddr,
    /// Outbound listener (Linkerd: 127.0.0.1:4140).
    pub outbound_addr: SocketAddr,
    /// Admin listener (Linkerd: 127.0.0.1:4191).
    pub admin_addr: SocketAddr,
    /// Inbound ports whose traffic is forwarded without protocol detection.
    pub inbound_opaque_ports: PortSet,
    /// Where the application listens (its IP; the port is the connection's target port).
    pub app_ip: IpAddr,
    /// The inbound port of peer proxies (explicit mode), unless discovery names another.
    pub peer_inbound_port: u16,
    /// How long inbound protocol detection waits for the first bytes.
    pub detect_timeout: Duration,
    /// How long outbound protocol detection waits for the first bytes.
    pub outbound_detect_timeout: Duration,
    /// How long a connection attempt to an endpoint may take.
    pub connect_timeout: Duration,
    /// How long an outbound target may go unused before it is forgotten
    /// (`LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT`, 5 s).
    pub outbound_idle_timeout: Duration,
    /// How long an outbound request may wait for its response headers (504 after).
    pub request_timeout: Option<Duration>,
    /// How long shutdown waits for in-flight requests and connections.
    pub shutdown_grace: Duration,
    /// Limits against abusive peers.
    pub limits: Limits,
    /// Worker threads of the runtime (Linkerd: `LINKERD2_PROXY_CORES`, from the
    /// `config.linkerd.io/proxy-cpu-limit` annotation; one by default).
    pub cores: usize,
    /// Whether `POST /shutdown` on the admin server (from localhost) shuts the proxy
    /// down (`LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED`, off by default: Linkerd's
    /// `proxy.enableShutdownEndpoint`, for Jobs run under `linkerd-await --shutdown`).
    pub shutdown_endpoint: bool,
    /// How long a series nothing uses any more is kept (`LINKERD2_PROXY_METRICS_RETAIN_IDLE`,
    /// Linkerd's 10 minutes).
    pub metrics_retain_idle: Duration,
    /// Ingress mode (`LINKERD2_PROXY_INGRESS_MODE`, set by Linkerd's injector for
    /// `linkerd.io/inject: ingress`): outbound HTTP requests go where their
    /// `l5d-dst-override` header names, not to their connection's original destination.
    pub ingress: bool,
    /// Inbound ports that admit meshed clients only where no policy controller is
    /// configured (`LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY`, from Linkerd's
    /// `config.linkerd.io/proxy-require-identity-inbound-ports`). With a controller, its
    /// answer for the port decides, as in Linkerd (it reads the same annotation).
    pub require_identity_ports: PortSet,
    /// The targets discovery is asked about (`LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES`
    /// and `…_NETWORKS`, which Linkerd's injector sets to `svc.<cluster domain>.` and the
    /// cluster networks); unset, every target.
    pub discovery_allow: crate::discovery::Allow,
    /// TCP keepalive of accepted inbound connections
    /// (`LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE`, 10 s from Linkerd's injector); unset, none.
    pub inbound_accept_keepalive: Option<Duration>,
    /// TCP keepalive of outbound connections (`LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE`).
    pub outbound_connect_keepalive: Option<Duration>,
    /// How long connecting to the application may take
    /// (`LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT`; the outbound connect timeout when unset).
    pub inbound_connect_timeout: Duration,
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The environment variable (and flag, if any).
    pub var: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

/// Linkerd's variable names, and ours where Linkerd has none.
/// Linkerd's default cluster networks: the private ranges.
pub const DEFAULT_CLUSTER_NETWORKS: &str = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";

pub mod env {
    pub const LOG: &str = "LINKERD2_PROXY_LOG";
    pub const LOG_FORMAT: &str = "LINKERD2_PROXY_LOG_FORMAT";
    pub const DESTINATION_SVC_ADDR: &str = "LINKERD2_PROXY_DESTINATION_SVC_ADDR";
    pub const POLICY_SVC_ADDR: &str = "LINKERD2_PROXY_POLICY_SVC_ADDR";
    pub const POLICY_WORKLOAD: &str = "LINKERD2_PROXY_POLICY_WORKLOAD";
    pub const DESTINATION_CONTEXT: &str = "LINKERD2_PROXY_DESTINATION_CONTEXT";
    pub const INBOUND_DEFAULT_POLICY: &str = "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY";
    pub const POLICY_CLUSTER_NETWORKS: &str = "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS";
    pub const IDENTITY_SVC_ADDR: &str = "LINKERD2_PROXY_IDENTITY_SVC_ADDR";
    pub const DESTINATION_SVC_NAME: &str = "LINKERD2_PROXY_DESTINATION_SVC_NAME";
    pub const POLICY_SVC_NAME: &str = "LINKERD2_PROXY_POLICY_SVC_NAME";
    pub const IDENTITY_SVC_NAME: &str = "LINKERD2_PROXY_IDENTITY_SVC_NAME";
    pub const IDENTITY_TRUST_ANCHORS: &str = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS";
    pub const IDENTITY_LOCAL_NAME: &str = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME";
    pub const IDENTITY_TOKEN_FILE: &str = "LINKERD2_PROXY_IDENTITY_TOKEN_FILE";
    pub const INBOUND_LISTEN_ADDR: &str = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR";
    pub const OUTBOUND_LISTEN_ADDR: &str = "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR";
    pub const ADMIN_LISTEN_ADDR: &str = "LINKERD2_PROXY_ADMIN_LISTEN_ADDR";
    pub const INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION: &str =
        "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION";
    pub const INBOUND_DETECT_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT";
    pub const OUTBOUND_DETECT_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT";
    pub const OUTBOUND_CONNECT_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT";
    pub const OUTBOUND_DISCOVERY_IDLE_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT";
    pub const SHUTDOWN_GRACE_PERIOD: &str = "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD";
    pub const CORES: &str = "LINKERD2_PROXY_CORES";
    pub const SHUTDOWN_ENDPOINT_ENABLED: &str = "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED";
    pub const METRICS_RETAIN_IDLE: &str = "LINKERD2_PROXY_METRICS_RETAIN_IDLE";
    pub const INGRESS_MODE: &str = "LINKERD2_PROXY_INGRESS_MODE";
    pub const IDENTITY_DISABLED: &str = "LINKERD2_PROXY_IDENTITY_DISABLED";
    pub const INBOUND_ACCEPT_KEEPALIVE: &str = "LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE";
    pub const OUTBOUND_CONNECT_KEEPALIVE: &str = "LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE";
    pub const INBOUND_CONNECT_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT";
    pub const DESTINATION_PROFILE_SUFFIXES: &str = "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES";
    pub const DESTINATION_PROFILE_NETWORKS: &str = "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS";
    pub const INBOUND_PORTS_REQUIRE_IDENTITY: &str = "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY";
    pub const CAPTURE: &str = "STRAIT_PROXY_CAPTURE";
    pub const APP_IP: &str = "STRAIT_PROXY_APP_IP";
    pub const PEER_INBOUND_PORT: &str = "STRAIT_PROXY_PEER_INBOUND_PORT";
    pub const REQUEST_TIMEOUT: &str = "STRAIT_PROXY_OUTBOUND_REQUEST_TIMEOUT";
    pub const MAX_CONNECTIONS: &str = "STRAIT_PROXY_MAX_CONNECTIONS";
    pub const MAX_HEADER_BYTES: &str = "STRAIT_PROXY_MAX_HEADER_BYTES";
    pub const HEADER_READ_TIMEOUT: &str = "STRAIT_PROXY_HEADER_READ_TIMEOUT";
}

/// Parses Linkerd's durations: `100ms`, `10s`, `1m`, `1h`, `365d` (a bare number is
/// seconds), the units linkerd2-proxy's environment parser takes; at most a century,
/// since a deadline is added to the clock.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const MAX_MS: u64 = 100 * 365 * 86_400_000;
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; expected e.g. 100ms, 10s, 1m"))?;
    let per_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{s:?} is not a duration: unit {unit:?}; expected ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(per_ms)
        .filter(|ms| *ms <= MAX_MS)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long a duration; at most 36500d"))
}

fn host_port(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} has no port; expected host:port"))?;
    if host.is_empty() {
        return Err(format!("{s:?} has no host; expected host:port"));
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?}: port {port:?} is not 1-65535; expected host:port"))?;
    Ok(s.to_string())
}

/// Whether `host:port` names this host's loopback (`127.0.0.0/8`, `::1`, `localhost`).
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost."),
    }
}

/// Whether a control-plane connection uses TLS, and to which identity (pure).
///
/// Linkerd's rule: `*_SVC_NAME` turns TLS on, except to a loopback address, which is the
/// controller in the proxy's own pod (plaintext). In explicit capture each pod has its own
/// 127.x address, so loopback is the pod network there and the name is honoured. Without
/// a name the connection is plaintext (Linkerd refuses to start off loopback; we keep
/// serving the configurations that predate TLS and warn at start).
pub fn control_tls(capture: Capture, addr: &str, name: Option<&IdentityName>) -> Option<IdentityName> {
    match capture {
        Capture::Transparent if is_loopback(addr) => None,
        _ => name.cloned(),
    }
}

impl Config {
    /// Parses the configuration from `get` (an environment: variable name → value); `now`
    /// checks the trust anchors' validity.
    pub fn from_source(
        get: impl Fn(&str) -> Option<String>,
        now: std::time::SystemTime,
    ) -> Result<Self, ConfigError> {
        let err = |var: &str, problem: String| ConfigError {
            var: var.to_string(),
            problem,
        };
        let value = |var: &str| get(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let required =
            |var: &str, what: &str| value(var).ok_or_else(|| err(var, format!("not set; expected {what}")));
        let addr = |var: &str, default: SocketAddr| match value(var) {
            None => Ok(default),
            Some(v) => v
                .parse::<SocketAddr>()
                .map_err(|_| err(var, format!("{v:?} is not an address; expected IP:port"))),
        };
        let duration = |var: &str, default: Duration| match value(var) {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|p| err(var, p)),
        };
        let optional_duration = |var: &str| match value(var) {
            None => Ok(None),
            Some(v) => parse_duration(&v).map(Some).map_err(|p| err(var, p)),
        };
        let number = |var: &str, default: usize| match value(var) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| err(var, format!("{v:?} is not a positive number"))),
        };

        let capture = match value(env::CAPTURE).as_deref() {
            None | Some("transparent") => Capture::Transparent,
            Some("explicit") => Capture::Explicit,
            Some(other) => {
                return Err(err(
                    env::CAPTURE,
                    format!("{other:?} is not a capture mode; expected transparent or explicit"),
                ));
            }
        };
        let log = value(env::LOG).unwrap_or_else(|| "warn,linkerd=info".into());
        crate::log::filter(&log).map_err(|e| err(env::LOG, e))?;
        let log_json = match value(env::LOG_FORMAT)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("plain") => false,
            Some("json") => true,
            Some(other) => {
                return Err(err(
                    env::LOG_FORMAT,
                    format!("{other:?} is not a log format; expected plain or json"),
                ));
            }
        };
        let destination_addr = host_port(&required(env::DESTINATION_SVC_ADDR, "host:port")?)
            .map_err(|p| err(env::DESTINATION_SVC_ADDR, p))?;
        let identity_addr = host_port(&required(env::IDENTITY_SVC_ADDR, "host:port")?)
            .map_err(|p| err(env::IDENTITY_SVC_ADDR, p))?;
        let policy_addr = match value(env::POLICY_SVC_ADDR) {
            Some(v) => Some(host_port(&v).map_err(|p| err(env::POLICY_SVC_ADDR, p))?),
            None => None,
        };
        let svc_name = |var: &str,
                        addr_var: &str,
                        example: &str|
         -> Result<Option<IdentityName>, ConfigError> {
            let Some(v) = value(var) else { return Ok(None) };
            let name = v.parse::<IdentityName>().map_err(|e| {
                err(
                    var,
                    format!("{e}; expected the identity the service at {addr_var} presents, e.g. {example}"),
                )
            })?;
            Ok(Some(name))
        };
        let destination_name = svc_name(
            env::DESTINATION_SVC_NAME,
            env::DESTINATION_SVC_ADDR,
            "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local",
        )?;
        let identity_name = svc_name(
            env::IDENTITY_SVC_NAME,
            env::IDENTITY_SVC_ADDR,
            "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local",
        )?;
        let policy_name = svc_name(
            env::POLICY_SVC_NAME,
            env::POLICY_SVC_ADDR,
            "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local",
        )?;
        if policy_addr.is_none() && policy_name.is_some() {
            return Err(err(
                env::POLICY_SVC_ADDR,
                format!(
                    "not set, but {} is; expected host:port of the policy service (set both or neither)",
                    env::POLICY_SVC_NAME
                ),
            ));
        }
        let policy_workload = value(env::POLICY_WORKLOAD).or_else(|| value(env::DESTINATION_CONTEXT));
        let inbound_default_policy =
            value(env::INBOUND_DEFAULT_POLICY).unwrap_or_else(|| "all-unauthenticated".into());
        if !matches!(
            inbound_default_policy.as_str(),
            "all-unauthenticated"
                | "all-authenticated"
                | "cluster-unauthenticated"
                | "cluster-authenticated"
                | "deny"
                | "audit"
        ) {
            return Err(err(
                env::INBOUND_DEFAULT_POLICY,
                format!(
                    "{inbound_default_policy:?} is not a default policy; expected all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, audit or deny"
                ),
            ));
        }
        let cluster_networks = value(env::POLICY_CLUSTER_NETWORKS)
            .unwrap_or_else(|| DEFAULT_CLUSTER_NETWORKS.into())
            .split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.parse())
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| {
                err(
                    env::POLICY_CLUSTER_NETWORKS,
                    format!("{e}; expected comma-separated CIDRs"),
                )
            })?;
        if value(env::IDENTITY_DISABLED).is_some() {
            // linkerd2-proxy refuses it too (since Linkerd 2.12).
            return Err(err(
                env::IDENTITY_DISABLED,
                "is no longer supported: identity must be enabled; remove it (and config.linkerd.io/disable-identity) and give the proxy its identity variables".into(),
            ));
        }
        let pem = required(env::IDENTITY_TRUST_ANCHORS, "PEM certificates")?;
        let trust_anchors = TrustAnchors::from_pem(pem.as_bytes(), env::IDENTITY_TRUST_ANCHORS, now)
            .map_err(|e| {
                err(
                    env::IDENTITY_TRUST_ANCHORS,
                    format!("{e}; expected the mesh's PEM trust anchors"),
                )
            })?;
        let name = required(env::IDENTITY_LOCAL_NAME, "the proxy's identity name")?;
        let local_identity = name.parse::<IdentityName>().map_err(|e| {
            err(
                env::IDENTITY_LOCAL_NAME,
                format!("{e}; expected <serviceaccount>.<namespace>.serviceaccount.identity.linkerd.<trust domain>"),
            )
        })?;
        let token_file = PathBuf::from(required(env::IDENTITY_TOKEN_FILE, "a file path")?);

        let inbound_addr = addr(env::INBOUND_LISTEN_ADDR, SocketAddr::from(([0, 0, 0, 0], 4143)))?;
        let outbound_addr = addr(
            env::OUTBOUND_LISTEN_ADDR,
            SocketAddr::from(([127, 0, 0, 1], 4140)),
        )?;
        let admin_addr = addr(env::ADMIN_LISTEN_ADDR, SocketAddr::from(([127, 0, 0, 1], 4191)))?;
        let ports = |var: &str| match value(var) {
            None => Ok(PortSet::default()),
            Some(v) => PortSet::parse(&v).map_err(|p| {
                err(
                    var,
                    format!("{p}; expected ports and ranges like 25,443,3306-3307"),
                )
            }),
        };
        let inbound_opaque_ports = ports(env::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION)?;
        let require_identity_ports = ports(env::INBOUND_PORTS_REQUIRE_IDENTITY)?;
        let default_app_ip = match capture {
            // Each pod's app listens on the pod's own 127.x address.
            Capture::Explicit => inbound_addr.ip(),
            Capture::Transparent => IpAddr::from([127, 0, 0, 1]),
        };
        let app_ip = match value(env::APP_IP) {
            None => default_app_ip,
            Some(v) => v
                .parse()
                .map_err(|_| err(env::APP_IP, format!("{v:?} is not an IP address")))?,
        };
        if app_ip.is_unspecified() {
            return Err(err(
                env::APP_IP,
                format!("{app_ip} is not an address to connect to; set the application's IP"),
            ));
        }
        let peer_inbound_port = match value(env::PEER_INBOUND_PORT) {
            None => 4143,
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err(env::PEER_INBOUND_PORT, format!("{v:?} is not a port 1-65535")))?,
        };
        let request_timeout = optional_duration(env::REQUEST_TIMEOUT)?;
        let flag = |var: &str| match value(var).map(|v| v.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(v) => Err(err(
                var,
                format!("{v:?} is not a boolean; expected true or false"),
            )),
        };
        let shutdown_endpoint = flag(env::SHUTDOWN_ENDPOINT_ENABLED)?;
        let ingress = flag(env::INGRESS_MODE)?;
        let inbound_accept_keepalive = optional_duration(env::INBOUND_ACCEPT_KEEPALIVE)?;
        let outbound_connect_keepalive = optional_duration(env::OUTBOUND_CONNECT_KEEPALIVE)?;
        let discovery_allow = crate::discovery::Allow::parse(
            get(env::DESTINATION_PROFILE_SUFFIXES).as_deref(),
            get(env::DESTINATION_PROFILE_NETWORKS).as_deref(),
        )
        .map_err(|e| {
            err(
                env::DESTINATION_PROFILE_NETWORKS,
                format!("{e}; expected comma-separated CIDRs"),
            )
        })?;
        let defaults = Limits::default();
        let limits = Limits {
            max_connections: number(env::MAX_CONNECTIONS, defaults.max_connections)?,
            max_header_bytes: number(env::MAX_HEADER_BYTES, defaults.max_header_bytes)?,
            header_read_timeout: duration(env::HEADER_READ_TIMEOUT, defaults.header_read_timeout)?,
        };
        if limits.max_header_bytes < 8192 {
            return Err(err(
                env::MAX_HEADER_BYTES,
                format!("{} is below the minimum of 8192 bytes", limits.max_header_bytes),
            ));
        }
        let connect_timeout = duration(env::OUTBOUND_CONNECT_TIMEOUT, Duration::from_secs(1))?;
        let ports: BTreeSet<SocketAddr> = [inbound_addr, outbound_addr, admin_addr]
            .into_iter()
            .filter(|a| a.port() != 0)
            .collect();
        if ports.len()
            < [inbound_addr, outbound_addr, admin_addr]
                .iter()
                .filter(|a| a.port() != 0)
                .count()
        {
            return Err(err(
                env::ADMIN_LISTEN_ADDR,
                "the inbound, outbound and admin listen addresses must differ".into(),
            ));
        }
        Ok(Self {
            capture,
            log,
            log_json,
            destination_tls: control_tls(capture, &destination_addr, destination_name.as_ref()),
            identity_tls: control_tls(capture, &identity_addr, identity_name.as_ref()),
            policy_tls: policy_addr
                .as_deref()
                .and_then(|a| control_tls(capture, a, policy_name.as_ref())),
            destination_addr,
            policy_addr,
            policy_workload,
            inbound_default_policy,
            cluster_networks,
            identity_addr,
            trust_anchors,
            local_identity,
            token_file,
            inbound_addr,
            outbound_addr,
            admin_addr,
            inbound_opaque_ports,
            app_ip,
            peer_inbound_port,
            detect_timeout: duration(env::INBOUND_DETECT_TIMEOUT, Duration::from_secs(10))?,
            outbound_detect_timeout: duration(env::OUTBOUND_DETECT_TIMEOUT, Duration::from_secs(10))?,
            connect_timeout,
            inbound_connect_timeout: duration(env::INBOUND_CONNECT_TIMEOUT, connect_timeout)?,
            outbound_idle_timeout: duration(env::OUTBOUND_DISCOVERY_IDLE_TIMEOUT, Duration::from_secs(5))?,
            request_timeout,
            shutdown_grace: duration(env::SHUTDOWN_GRACE_PERIOD, Duration::from_secs(120))?,
            limits,
            cores: number(env::CORES, 1)?,
            shutdown_endpoint,
            metrics_retain_idle: duration(env::METRICS_RETAIN_IDLE, crate::metrics::DEFAULT_RETAIN_IDLE)?,
            ingress,
            require_identity_ports,
            discovery_allow,
            inbound_accept_keepalive,
            outbound_connect_keepalive,
        })
    }
}

#[cfg(test)]
mod tests;
