//! Small helpers over x509-parser: validity as `SystemTime`, CA checks, the
//! identity carried in a certificate's DNS SAN, and RFC 3339 time display for
//! error messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::name::IdentityName;

/// Parses one DER certificate, flattening nom's error wrapper.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => Ok(cert),
        Err(x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e)) => Err(e),
        Err(x509_parser::nom::Err::Incomplete(_)) => Err(X509Error::InvalidCertificate),
    }
}

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

pub(crate) fn not_before(cert: &X509Certificate<'_>) -> SystemTime {
    from_unix(cert.validity().not_before.timestamp())
}

pub(crate) fn not_after(cert: &X509Certificate<'_>) -> SystemTime {
    from_unix(cert.validity().not_after.timestamp())
}

/// Where `now` falls relative to a certificate's validity window.
pub(crate) enum Validity {
    Valid,
    NotYetValid(SystemTime),
    Expired(SystemTime),
}

pub(crate) fn validity_at(cert: &X509Certificate<'_>, now: SystemTime) -> Validity {
    let t = unix(now);
    let v = cert.validity();
    if t < v.not_before.timestamp() {
        Validity::NotYetValid(not_before(cert))
    } else if t > v.not_after.timestamp() {
        Validity::Expired(not_after(cert))
    } else {
        Validity::Valid
    }
}

/// `Ok` if basicConstraints says CA:TRUE; otherwise what was found instead.
pub(crate) fn check_ca(cert: &X509Certificate<'_>) -> Result<(), &'static str> {
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Ok(()),
        Ok(Some(_)) => Err("basicConstraints CA:false"),
        Ok(None) => Err("no basicConstraints extension"),
        Err(_) => Err("a malformed basicConstraints extension"),
    }
}

/// `Ok` if keyUsage allows keyCertSign; otherwise what was found instead.
pub(crate) fn check_key_cert_sign(cert: &X509Certificate<'_>) -> Result<(), String> {
    let ku = match cert.key_usage() {
        Ok(Some(ku)) => ku.value,
        Ok(None) => return Err("no keyUsage extension".to_owned()),
        Err(_) => return Err("a malformed keyUsage extension".to_owned()),
    };
    if ku.key_cert_sign() {
        return Ok(());
    }
    let names = [
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "nonRepudiation"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.crl_sign(), "cRLSign"),
        (ku.encipher_only(), "encipherOnly"),
        (ku.decipher_only(), "decipherOnly"),
    ];
    let set: Vec<&str> = names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
    Err(if set.is_empty() {
        "keyUsage with no usages".to_owned()
    } else {
        format!("keyUsage {}", set.join(", "))
    })
}

/// All DNS SANs of a certificate, in order.
pub(crate) fn dns_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The mesh identity a certificate carries: its first DNS SAN that is a valid
/// identity name. This mirrors linkerd2-proxy, which takes the first SAN that
/// parses as an identity; other SANs are ignored.
pub(crate) fn identity(cert: &X509Certificate<'_>) -> Option<IdentityName> {
    dns_sans(cert).into_iter().find_map(|d| d.parse().ok())
}

/// The mesh identity in a DER certificate, if it parses and carries one.
pub(crate) fn identity_of_der(der: &[u8]) -> Option<IdentityName> {
    parse(der).ok().as_ref().and_then(identity)
}

/// Formats a time as RFC 3339 UTC with second precision, e.g.
/// `2025-01-01T00:00:00Z` (the precision certificates carry).
pub(crate) fn rfc3339(t: &SystemTime) -> String {
    let secs = unix(*t);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's public-domain `civil_from_days` algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(&UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(&from_unix(1_735_689_600)), "2025-01-01T00:00:00Z");
        assert_eq!(rfc3339(&from_unix(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(&from_unix(4_102_444_799)), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(&from_unix(-1)), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn unix_round_trip() {
        for s in [-86_401, -1, 0, 1, 1_735_689_600] {
            assert_eq!(unix(from_unix(s)), s);
        }
    }
}
