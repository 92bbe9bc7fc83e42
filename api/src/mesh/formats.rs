//! Format checks that the mesh kinds share and `crate::names` does not cover: CIDRs,
//! proxy identities, HTTP tokens, route hostnames, regular expressions, Kubernetes
//! quantities and API group/kind references.
//!
//! Like `crate::names`, every check returns `Err(expected)` phrased to complete
//! "expected …", so callers push it onto [`Problems`] unchanged. The `check_*` helpers do the
//! pushing themselves for the common "field holds a string of format X" case.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::names;
use crate::validate::{FieldPath, Problems};

/// An IP network: an address and a prefix length that fits its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The address as written (host bits may be set, as Go's `net.ParseCIDR` allows).
    pub addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// The first address of the network as a 128-bit number and the mask, in a common
    /// (IPv4-mapped) space so containment checks need no per-family code.
    fn bits(&self) -> (u128, u128) {
        let (value, total) = match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (u128::from(a), 128u32),
        };
        let host_bits = total - u32::from(self.prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            u128::MAX << host_bits
        };
        let family_mask = if total == 128 {
            u128::MAX
        } else {
            (1u128 << total) - 1
        };
        (value & mask & family_mask, mask & family_mask)
    }

    /// Whether every address of `other` is inside `self` (same family only).
    pub fn contains(&self, other: &Cidr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() || other.prefix < self.prefix {
            return false;
        }
        let (net, mask) = self.bits();
        let (other_net, _) = other.bits();
        other_net & mask == net
    }
}

const CIDR_EXPECTED: &str = "a CIDR such as \"10.0.0.0/8\" or \"fd00::/8\" (an IPv4 or IPv6 address, optionally followed by /prefix-length up to 32 or 128)";

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a bare address, which means a single host (`/32`,
/// `/128`), as Linkerd's policy controller reads `networks[].cidr`.
pub fn cidr(s: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = if addr.contains(':') {
        addr.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        addr.parse::<Ipv4Addr>().map(IpAddr::V4)
    }
    .map_err(|_| CIDR_EXPECTED.to_string())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        // Digits only: `u8::from_str` would also take a leading `+`.
        Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u8>().map_err(|_| CIDR_EXPECTED.to_string())?
        }
        Some(_) => return Err(CIDR_EXPECTED.into()),
    };
    if prefix > max {
        return Err(CIDR_EXPECTED.into());
    }
    Ok(Cidr { addr, prefix })
}

/// A proxy identity as `MeshTLSAuthentication` and `ServerAuthorization` accept it: `*`
/// (every authenticated client), a DNS name, or a DNS name whose first label is `*`
/// (every identity in that domain).
pub fn identity(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "a proxy identity: a DNS name such as \"web.emojivoto.serviceaccount.identity.linkerd.cluster.local\", the same with \"*\" as first label, or \"*\"";
    if s == "*" {
        return Ok(());
    }
    let mut labels = s.split('.');
    let first = labels.next().unwrap_or_default();
    let first_ok = first == "*" || names::dns1123_label(first).is_ok();
    let rest_ok = labels.all(|l| names::dns1123_label(l).is_ok());
    if first_ok && rest_ok && s.len() <= 253 {
        Ok(())
    } else {
        Err(EXPECTED.into())
    }
}

/// An HTTP header name: 1-256 RFC 7230 token characters.
pub fn header_name(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 256 && s.bytes().all(is_tchar) {
        Ok(())
    } else {
        Err("an HTTP header name (1-256 characters: letters, digits and !#$%&'*+-.^_`|~)".into())
    }
}

/// A query parameter name as the Gateway API restricts it (the same token characters).
pub fn query_param_name(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 256 && s.bytes().all(is_tchar) {
        Ok(())
    } else {
        Err("a query parameter name (1-256 characters: letters, digits and !#$%&'*+-.^_`|~)".into())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An HTTP header value: no control characters other than horizontal tab, at most 4096
/// characters (what the proxy's `HeaderValue` and the Gateway API schema accept).
pub fn header_value(s: &str) -> Result<(), String> {
    if s.len() <= 4096 && s.chars().all(|c| c == '\t' || !c.is_control()) {
        Ok(())
    } else {
        Err("an HTTP header value (at most 4096 characters, no control characters)".into())
    }
}

/// An HTTP method as the Gateway API's `HTTPMethod` enum allows.
pub fn http_method(s: &str) -> Result<(), String> {
    const METHODS: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    if METHODS.contains(&s) {
        Ok(())
    } else {
        Err(format!("an HTTP method, one of {}", METHODS.join(", ")))
    }
}

/// A route hostname: a DNS name, optionally with `*.` as its first label.
pub fn route_hostname(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "a hostname such as \"example.com\" or \"*.example.com\" (lowercase DNS labels; \"*\" only as a whole first label)";
    let rest = s.strip_prefix("*.").unwrap_or(s);
    if s.len() <= 253 && names::dns1123_subdomain(rest).is_ok() {
        Ok(())
    } else {
        Err(EXPECTED.into())
    }
}

/// A precise hostname (no wildcard), as in a redirect.
pub fn precise_hostname(s: &str) -> Result<(), String> {
    names::dns1123_subdomain(s)
        .map_err(|_| "a hostname such as \"example.com\" (lowercase DNS labels, no wildcard)".to_string())
}

/// A regular expression the proxy can compile (RE2-like syntax of the `regex` crate).
pub fn regex(s: &str) -> Result<(), String> {
    regex::Regex::new(s).map(|_| ()).map_err(|e| {
        // The crate's message spans several lines with a caret diagram; its last line says
        // what is wrong.
        let msg = e.to_string();
        let why = msg
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid")
            .trim();
        format!("a valid regular expression ({why})")
    })
}

/// An API group in a reference: empty (the core group) or a DNS subdomain. Linkerd also
/// reads `core` as the core group, and `core` is a valid subdomain.
pub fn api_group(s: &str) -> Result<(), String> {
    if s.is_empty() || names::dns1123_subdomain(s).is_ok() {
        Ok(())
    } else {
        Err("an API group: empty for the core group, or a DNS subdomain such as \"policy.linkerd.io\"".into())
    }
}

/// A kind in a reference: 1-63 letters, digits or `-`, starting with a letter.
pub fn api_kind(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("a kind such as \"Service\" (1-63 letters, digits or '-', starting with a letter)".into())
    }
}

/// Whether a reference's group names the core API group (`""` or Linkerd's `core`).
pub fn is_core_group(group: Option<&str>) -> bool {
    matches!(group, None | Some("") | Some("core"))
}

/// A Kubernetes quantity (`1`, `900m`, `1.5`, `2k`, `1Ki`, `1e3`), returned as a number.
pub fn quantity(s: &str) -> Result<f64, String> {
    const EXPECTED: &str = "a Kubernetes quantity such as \"1\", \"900m\", \"0.5\" or \"10k\"";
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let negative = s.starts_with('-');
    let num_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_len);
    // A number needs at least one digit and at most one decimal point.
    if !num.bytes().any(|b| b.is_ascii_digit()) || num.matches('.').count() > 1 {
        return Err(EXPECTED.into());
    }
    let value: f64 = num.parse().map_err(|_| EXPECTED.to_string())?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let digits = &exp[1..];
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(EXPECTED.into());
            }
            let e: i32 = digits.parse().map_err(|_| EXPECTED.to_string())?;
            10f64.powi(e)
        }
        _ => return Err(EXPECTED.into()),
    };
    let v = value * scale;
    if !v.is_finite() {
        return Err(EXPECTED.into());
    }
    Ok(if negative { -v } else { v })
}

/// Pushes `check(value)`'s expectation at `path`, showing the offending value.
pub fn check(
    path: &FieldPath,
    problems: &mut Problems,
    value: &str,
    check: impl FnOnce(&str) -> Result<(), String>,
) {
    if let Err(expected) = check(value) {
        problems.push(path, expected, Some(format!("{value:?}")));
    }
}

/// Like [`check`] for an optional field: absent is fine.
pub fn check_opt(
    path: &FieldPath,
    problems: &mut Problems,
    value: Option<&str>,
    f: impl FnOnce(&str) -> Result<(), String>,
) {
    if let Some(v) = value {
        check(path, problems, v, f);
    }
}

/// Checks that `value` is one of `allowed`.
pub fn check_one_of(path: &FieldPath, problems: &mut Problems, value: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        problems.push(path, one_of(allowed), Some(format!("{value:?}")));
    }
}

/// "one of \"a\", \"b\"" — the expectation for an enumerated string.
pub fn one_of(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    format!("one of {}", quoted.join(", "))
}

/// Checks a port number that must be 1-65535.
pub fn check_port(path: &FieldPath, problems: &mut Problems, port: i64) {
    if let Err(expected) = names::port_number(port) {
        problems.push(path, expected, Some(port.to_string()));
    }
}

/// Checks a required string field that serde read but that may still be empty.
pub fn check_non_empty(path: &FieldPath, problems: &mut Problems, value: &str, expected: &str) {
    if value.is_empty() {
        problems.push(path, expected, Some("an empty string".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = cidr("10.0.0.0/8").unwrap();
        assert_eq!(c.prefix, 8);
        assert_eq!(cidr("10.1.2.3").unwrap().prefix, 32);
        assert_eq!(cidr("fd00::/8").unwrap().prefix, 8);
        assert_eq!(cidr("::1").unwrap().prefix, 128);
        assert_eq!(cidr("0.0.0.0/0").unwrap().prefix, 0);
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "",
            "abc",
            "10.0.0.0/8/9",
            "::/-1",
        ] {
            assert!(cidr(bad).is_err(), "{bad}");
        }
        let net = cidr("10.0.0.0/8").unwrap();
        assert!(net.contains(&cidr("10.1.0.0/16").unwrap()));
        assert!(net.contains(&cidr("10.0.0.0/8").unwrap()));
        assert!(!net.contains(&cidr("11.0.0.0/16").unwrap()));
        assert!(!net.contains(&cidr("0.0.0.0/0").unwrap()));
        assert!(!net.contains(&cidr("fd00::/16").unwrap()));
        assert!(cidr("0.0.0.0/0").unwrap().contains(&net));
        assert!(cidr("::/0").unwrap().contains(&cidr("fd00::1").unwrap()));
    }

    #[test]
    fn identities() {
        for ok in [
            "*",
            "*.production.serviceaccount.identity.linkerd.cluster.local",
            "web.ns.serviceaccount.identity.linkerd.cluster.local",
            "a",
        ] {
            assert!(identity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web.ns", "a.*.b", "*x.b", "a..b", "**", "-a.b"] {
            assert!(identity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_tokens_and_hostnames() {
        assert!(header_name("x-canary").is_ok());
        assert!(header_name("X-Canary").is_ok());
        assert!(header_name("x canary").is_err());
        assert!(header_name("").is_err());
        assert!(header_value("5xx").is_ok());
        assert!(header_value("a\r\nb").is_err());
        assert!(http_method("GET").is_ok());
        assert!(http_method("get").is_err());
        assert!(route_hostname("*.example.com").is_ok());
        assert!(route_hostname("example.com").is_ok());
        assert!(route_hostname("*").is_err());
        assert!(route_hostname("a.*.com").is_err());
        assert!(precise_hostname("*.example.com").is_err());
    }

    #[test]
    fn regexes() {
        assert!(regex("/api/users/\\d+").is_ok());
        let err = regex("/api/(users").unwrap_err();
        assert!(err.starts_with("a valid regular expression ("), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn groups_and_kinds() {
        assert!(api_group("").is_ok());
        assert!(api_group("core").is_ok());
        assert!(api_group("policy.linkerd.io").is_ok());
        assert!(api_group("Policy").is_err());
        assert!(api_kind("Service").is_ok());
        assert!(api_kind("HTTPRoute").is_ok());
        assert!(api_kind("9x").is_err());
        assert!(api_kind("").is_err());
        assert!(is_core_group(Some("core")));
        assert!(!is_core_group(Some("apps")));
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("1"), Ok(1.0));
        assert_eq!(quantity("900m"), Ok(0.9));
        assert_eq!(quantity("0.5"), Ok(0.5));
        assert_eq!(quantity("2k"), Ok(2000.0));
        assert_eq!(quantity("1Ki"), Ok(1024.0));
        assert_eq!(quantity("1e3"), Ok(1000.0));
        assert_eq!(quantity("-1"), Ok(-1.0));
        assert_eq!(quantity("+.5"), Ok(0.5));
        for bad in ["", "m", "1.2.3", "1x", "1e", "ten", "1 m", "--1"] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }
}
