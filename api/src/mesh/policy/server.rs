//! `Server` (policy.linkerd.io): a port on a set of pods (or external workloads) that
//! inbound policy applies to, and how the proxy should detect its protocol.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::labels;
use crate::mesh::formats;
use crate::mesh::selector::validate_label_selector;
use crate::names;
use crate::validate::{FieldPath, Problems, Validate};

/// The `proxyProtocol` values Linkerd understands.
pub const PROXY_PROTOCOLS: &[&str] = &["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"];

/// The desired state of a `Server`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.linkerd.io",
    version = "v1beta3",
    kind = "Server",
    namespaced,
    derive = "PartialEq",
    shortname = "srv",
    doc = "A port on a set of workloads that inbound policy applies to.",
    // JSON form: the list form repeats `type_ = "string"`, which clippy flags as duplicated.
    printcolumn = r#"{"name": "Port", "type": "string", "description": "The port the server is listening on", "jsonPath": ".spec.port"}"#,
    printcolumn = r#"{"name": "Protocol", "type": "string", "description": "The protocol of the server", "jsonPath": ".spec.proxyProtocol"}"#,
    printcolumn = r#"{"name": "Access Policy", "type": "string", "description": "The default access policy applied when the traffic doesn't match any of the policy rules", "jsonPath": ".spec.accessPolicy"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Selects pods in the Server's namespace; `{}` selects them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Selects ExternalWorkloads in the Server's namespace (instead of pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_workload_selector: Option<LabelSelector>,
    /// The port: a number, a container port name, or (Strait extension) a range.
    pub port: ServerPort,
    /// How the proxy detects the protocol of inbound connections; `unknown` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// The policy for traffic no authorization matches (v1beta3); `deny` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<String>,
}

/// The protocols a Server can declare (see [`PROXY_PROTOCOLS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// Detect the protocol from the first bytes (the default).
    Unknown,
    /// HTTP/1.x, no detection.
    Http1,
    /// HTTP/2 (prior knowledge), no detection.
    Http2,
    /// gRPC (HTTP/2), no detection.
    Grpc,
    /// Opaque TCP: no detection, no HTTP features.
    Opaque,
    /// TLS not terminated by the proxy.
    Tls,
}

impl ProxyProtocol {
    /// Parses a `proxyProtocol` value as written.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unknown" => Self::Unknown,
            "HTTP/1" => Self::Http1,
            "HTTP/2" => Self::Http2,
            "gRPC" => Self::Grpc,
            "opaque" => Self::Opaque,
            "TLS" => Self::Tls,
            _ => return None,
        })
    }
}

impl ServerSpec {
    /// The declared protocol with Linkerd's default (`unknown`) applied; `None` if the value
    /// is not one Linkerd knows (validation reports it).
    pub fn proxy_protocol(&self) -> Option<ProxyProtocol> {
        ProxyProtocol::parse(self.proxy_protocol.as_deref().unwrap_or("unknown"))
    }

    /// The access policy with the CRD's default (`deny`) applied.
    pub fn access_policy(&self) -> &str {
        self.access_policy.as_deref().unwrap_or("deny")
    }
}

impl Validate for ServerSpec {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        match (&self.pod_selector, &self.external_workload_selector) {
            (None, None) => problems.missing(
                &path.key("podSelector"),
                "a podSelector or an externalWorkloadSelector",
            ),
            (Some(_), Some(_)) => problems.push(
                &path.key("externalWorkloadSelector"),
                "either a podSelector or an externalWorkloadSelector, not both",
                Some("both".into()),
            ),
            _ => {}
        }
        if let Some(sel) = &self.pod_selector {
            validate_label_selector(sel, &path.key("podSelector"), problems);
        }
        if let Some(sel) = &self.external_workload_selector {
            validate_label_selector(sel, &path.key("externalWorkloadSelector"), problems);
        }
        self.port.validate(&path.key("port"), problems);
        if let Some(proto) = &self.proxy_protocol {
            formats::check_one_of(&path.key("proxyProtocol"), problems, proto, PROXY_PROTOCOLS);
        }
        if let Some(policy) = &self.access_policy {
            formats::check_one_of(
                &path.key("accessPolicy"),
                problems,
                policy,
                labels::config::DEFAULT_INBOUND_POLICIES,
            );
        }
    }
}

/// `Server.spec.port`: what the user wrote, kept in its form (an integer stays an integer).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerPort {
    /// A port number (validation requires 1-65535).
    Number(u16),
    /// A container port name (`http`), resolved against each selected pod.
    Name(String),
    /// An inclusive range written `"low-high"`, a Strait extension: one Server for a whole
    /// range, as in a deny-by-default `"1-65535"`.
    Range(u16, u16),
}

impl ServerPort {
    /// Whether a numeric port falls under this Server port (never for a name, which only a
    /// pod spec can resolve).
    pub fn contains(&self, port: u16) -> bool {
        match self {
            ServerPort::Number(n) => *n == port,
            ServerPort::Range(lo, hi) => (*lo..=*hi).contains(&port),
            ServerPort::Name(_) => false,
        }
    }

    /// The name, for a named port.
    pub fn name(&self) -> Option<&str> {
        match self {
            ServerPort::Name(n) => Some(n),
            _ => None,
        }
    }

    /// Reads the string form: `"low-high"` with two decimal numbers is a range, anything
    /// else a name (a quoted `"8080"` is a name too, as for Linkerd; validation flags it).
    fn from_str_form(s: &str) -> Self {
        let range = s.split_once('-').and_then(|(lo, hi)| {
            let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
            if digits(lo) && digits(hi) {
                Some((lo.parse().ok()?, hi.parse().ok()?))
            } else {
                None
            }
        });
        match range {
            Some((lo, hi)) => ServerPort::Range(lo, hi),
            None => ServerPort::Name(s.to_string()),
        }
    }
}

impl fmt::Display for ServerPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerPort::Number(n) => write!(f, "{n}"),
            ServerPort::Name(n) => f.write_str(n),
            ServerPort::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

const PORT_EXPECTED: &str = "a port number 1-65535, a port name (at most 15 lowercase letters, digits and '-', with at least one letter), or a range such as \"1-65535\"";

impl Validate for ServerPort {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        match self {
            ServerPort::Number(0) => problems.push(path, "a port number 1-65535", Some("0".into())),
            ServerPort::Number(_) => {}
            ServerPort::Name(n) => {
                if names::port_name(n).is_err() {
                    problems.push(path, PORT_EXPECTED, Some(format!("{n:?}")));
                }
            }
            ServerPort::Range(lo, hi) => {
                if *lo == 0 || lo > hi {
                    problems.push(
                        path,
                        "a port range \"low-high\" with 1 <= low <= high <= 65535",
                        Some(format!("\"{lo}-{hi}\"")),
                    );
                }
            }
        }
    }
}

impl Serialize for ServerPort {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerPort::Number(n) => ser.serialize_u16(*n),
            ServerPort::Name(n) => ser.serialize_str(n),
            ServerPort::Range(..) => ser.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ServerPort {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ServerPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(PORT_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ServerPort, E> {
                u16::try_from(v)
                    .map(ServerPort::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ServerPort, E> {
                u16::try_from(v)
                    .map(ServerPort::Number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ServerPort, E> {
                Ok(ServerPort::from_str_form(v))
            }
        }
        de.deserialize_any(V)
    }
}

impl JsonSchema for ServerPort {
    fn schema_name() -> Cow<'static, str> {
        "ServerPort".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A port number or name that must exist in a pod spec, or a range \"low-high\".",
            "x-kubernetes-int-or-string": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> ServerSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ports_keep_their_form() {
        for (v, port) in [
            (json!(8080), ServerPort::Number(8080)),
            (json!("http"), ServerPort::Name("http".into())),
            (json!("1-65535"), ServerPort::Range(1, 65535)),
            (json!("8080"), ServerPort::Name("8080".into())),
            (json!("0-99999"), ServerPort::Name("0-99999".into())),
        ] {
            let read: ServerPort = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(read, port);
            assert_eq!(serde_json::to_value(&read).unwrap(), v);
        }
        assert!(serde_json::from_value::<ServerPort>(json!(70000)).is_err());
        assert!(serde_json::from_value::<ServerPort>(json!(-1)).is_err());
        assert!(ServerPort::Range(1, 65535).contains(8080));
        assert!(ServerPort::Number(80).contains(80));
        assert!(!ServerPort::Name("http".into()).contains(80));
    }

    #[test]
    fn defaults() {
        let s = spec(json!({"podSelector": {}, "port": 80}));
        assert_eq!(s.proxy_protocol(), Some(ProxyProtocol::Unknown));
        assert_eq!(s.access_policy(), "deny");
        let s = spec(json!({"podSelector": {}, "port": 80, "proxyProtocol": "gRPC"}));
        assert_eq!(s.proxy_protocol(), Some(ProxyProtocol::Grpc));
    }

    #[test]
    fn validation() {
        let valid = [
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "port": 8080, "proxyProtocol": "HTTP/2"}),
            json!({"podSelector": {"matchLabels": {}}, "port": "1-65535"}),
            json!({"externalWorkloadSelector": {}, "port": "admin-http", "accessPolicy": "all-authenticated"}),
        ];
        for v in valid {
            let mut problems = Problems::default();
            spec(v.clone()).validate(&FieldPath::root().key("spec"), &mut problems);
            assert!(problems.is_empty(), "{v}: {problems:?}");
        }
        let invalid = [
            (
                json!({"port": 80}),
                "spec.podSelector",
                "a podSelector or an externalWorkloadSelector",
            ),
            (
                json!({"podSelector": {}, "externalWorkloadSelector": {}, "port": 80}),
                "spec.externalWorkloadSelector",
                "not both",
            ),
            (
                json!({"podSelector": {}, "port": 0}),
                "spec.port",
                "a port number 1-65535",
            ),
            (
                json!({"podSelector": {}, "port": "HTTP"}),
                "spec.port",
                "a port name",
            ),
            (
                json!({"podSelector": {}, "port": "8080"}),
                "spec.port",
                "a port number 1-65535, a port name",
            ),
            (
                json!({"podSelector": {}, "port": "100-10"}),
                "spec.port",
                "1 <= low <= high <= 65535",
            ),
            (
                json!({"podSelector": {}, "port": "0-10"}),
                "spec.port",
                "1 <= low",
            ),
            (
                json!({"podSelector": {}, "port": 80, "proxyProtocol": "HTTP/3"}),
                "spec.proxyProtocol",
                "one of \"unknown\", \"HTTP/1\"",
            ),
            (
                json!({"podSelector": {}, "port": 80, "accessPolicy": "allow"}),
                "spec.accessPolicy",
                "\"all-unauthenticated\"",
            ),
            (
                json!({"podSelector": {"matchLabels": {"app": "bad value"}}, "port": 80}),
                "spec.podSelector.matchLabels.app",
                "a label value",
            ),
        ];
        for (v, path, expected) in invalid {
            let mut problems = Problems::default();
            spec(v.clone()).validate(&FieldPath::root().key("spec"), &mut problems);
            assert_eq!(problems.0.len(), 1, "{v}: {problems:?}");
            assert_eq!(problems.0[0].path.to_string(), path, "{v}");
            assert!(
                problems.0[0].expected.contains(expected),
                "{v}: {}",
                problems.0[0].expected
            );
        }
    }
}
