//! Format checks shared by every kind: Kubernetes names, label syntax, ports, durations.
//!
//! Each check returns `Err(expected)` phrased to complete "expected …", so callers push it
//! onto [`crate::validate::Problems`] unchanged.

use std::time::Duration;

/// A DNS-1123 label: at most 63 lowercase alphanumerics or `-`, starting and ending
/// alphanumeric (Namespace and Service names).
pub fn dns1123_label(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "a DNS-1123 label (at most 63 characters: lowercase letters, digits and '-', starting and ending with a letter or digit)";
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok { Ok(()) } else { Err(EXPECTED.into()) }
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters (most object names).
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "a DNS-1123 subdomain (at most 253 characters: lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)";
    if s.is_empty() || s.len() > 253 {
        return Err(EXPECTED.into());
    }
    if s.split('.').all(|part| dns1123_label(part).is_ok()) {
        Ok(())
    } else {
        Err(EXPECTED.into())
    }
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn qualified_name(s: &str) -> Result<(), String> {
    const EXPECTED: &str = "a qualified name ([prefix/]name: name at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit; prefix a DNS subdomain)";
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && dns1123_subdomain(p).is_err()
    {
        return Err(EXPECTED.into());
    }
    if name.is_empty() || name.len() > 63 || !name_chars(name) {
        return Err(EXPECTED.into());
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_`, `.`, starting
/// and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || (s.len() <= 63 && name_chars(s)) {
        Ok(())
    } else {
        Err("a label value (empty, or at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit)".into())
    }
}

fn name_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A TCP/UDP port number, 1-65535.
pub fn port_number(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| "a port number 1-65535".to_string())
}

/// An IANA service name as used for named ports: at most 15 lowercase alphanumerics or `-`,
/// at least one letter, no leading, trailing or double `-`.
pub fn port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err("a port name (at most 15 lowercase letters, digits and '-', with at least one letter)".into())
    }
}

/// A comma-separated list of ports and inclusive ranges (`25,443,8000-8100`), as used by
/// `config.linkerd.io/skip-*-ports` and `opaque-ports`. Returns the ranges in order.
pub fn port_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    const EXPECTED: &str = "a comma-separated list of ports or ranges 1-65535 (e.g. \"25,443,8000-8100\")";
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let range = match part.split_once('-') {
            Some((a, b)) => (parse_port(a.trim()), parse_port(b.trim())),
            None => (parse_port(part), parse_port(part)),
        };
        match range {
            (Some(a), Some(b)) if a <= b => out.push((a, b)),
            _ => return Err(EXPECTED.into()),
        }
    }
    if out.is_empty() {
        return Err(EXPECTED.into());
    }
    Ok(out)
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A Go-style duration as Kubernetes and Linkerd write them: a sequence of decimal numbers
/// with units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns` (`10s`, `1m30s`, `1.5s`, `250ms`).
pub fn duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "a duration such as \"10s\", \"250ms\" or \"1m30s\" (units h, m, s, ms, us, ns)";
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(EXPECTED.into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| EXPECTED.to_string())?;
        let value: f64 = rest[..num_len].parse().map_err(|_| EXPECTED.to_string())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(EXPECTED.into()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(EXPECTED.into());
    }
    Ok(Duration::from_secs_f64(total))
}

/// A non-negative Kubernetes resource quantity (`100m`, `0.5`, `128Mi`, `1G`, `1e3`), as
/// used by the `config.linkerd.io/proxy-*-request` and `-limit` annotations. Returns the value
/// in base units (cores or bytes).
pub fn quantity(s: &str) -> Result<f64, String> {
    const EXPECTED: &str = "a Kubernetes quantity such as \"100m\", \"0.5\", \"128Mi\" or \"1G\"";
    match crate::mesh::formats::quantity(s.trim()) {
        Ok(v) if v >= 0.0 => Ok(v),
        _ => Err(EXPECTED.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_label("myapp-v1").is_ok());
        assert!(dns1123_label("MyApp").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("myapp.production.svc.cluster.local").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(qualified_name("linkerd.io/inject").is_ok());
        assert!(qualified_name("app").is_ok());
        assert!(qualified_name("Linkerd.io/inject").is_err());
        assert!(qualified_name("a/b/c").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("-x").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(port_number(80), Ok(80));
        assert!(port_number(0).is_err());
        assert!(port_number(70000).is_err());
        assert_eq!(port_ranges("8080,8443"), Ok(vec![(8080, 8080), (8443, 8443)]));
        assert_eq!(port_ranges("1-65535"), Ok(vec![(1, 65535)]));
        assert!(port_ranges("10-5").is_err());
        assert!(port_ranges("http").is_err());
        assert!(port_ranges("").is_err());
        assert!(port_name("http").is_ok());
        assert!(port_name("8080").is_err());
        assert!(port_name("a--b").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert!(duration("10").is_err());
        assert!(duration("ten seconds").is_err());
        assert!(duration("5d").is_err());
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("100m"), Ok(0.1));
        assert_eq!(quantity("128Mi"), Ok(128.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("1"), Ok(1.0));
        assert_eq!(quantity("1e3"), Ok(1000.0));
        assert!(quantity("lots").is_err());
        assert!(quantity("-1").is_err());
        assert!(quantity("10MB").is_err());
    }
}
