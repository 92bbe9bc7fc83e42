//! PEM decoding/encoding and private-key normalisation.
//!
//! Operators hand us keys in whatever encoding their tool wrote: `step` and
//! `openssl ec` write SEC1 ("EC PRIVATE KEY"), `openssl rsa -traditional`
//! writes PKCS#1 ("RSA PRIVATE KEY"), `openssl genpkey` and Linkerd write
//! PKCS#8. rcgen on the ring backend only loads PKCS#8, so SEC1 and PKCS#1 keys
//! are re-wrapped into PKCS#8 here (a pure re-encoding, no crypto).

use rustls_pki_types::pem::{self, PemObject, SectionKind};

/// A private key as found in a PEM file, before normalisation.
pub(crate) struct PemKey {
    pub(crate) kind: KeyEncoding,
    pub(crate) der: Vec<u8>,
}

/// The container format of a PEM private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyEncoding {
    Pkcs8,
    Sec1,
    Pkcs1,
}

impl KeyEncoding {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            KeyEncoding::Pkcs8 => "PKCS#8",
            KeyEncoding::Sec1 => "SEC1",
            KeyEncoding::Pkcs1 => "PKCS#1",
        }
    }
}

/// All recognised PEM sections of `bytes`, in order. Unknown section types
/// (e.g. "EC PARAMETERS", which `openssl ecparam -genkey` emits) are skipped.
pub(crate) fn sections(bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, pem::Error> {
    <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(bytes).collect()
}

/// The DER of every "CERTIFICATE" section.
pub(crate) fn certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, pem::Error> {
    Ok(sections(bytes)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| der)
        .collect())
}

/// The first private key section, whatever its encoding.
pub(crate) fn first_key(bytes: &[u8]) -> Result<Option<PemKey>, pem::Error> {
    Ok(sections(bytes)?.into_iter().find_map(|(kind, der)| {
        let kind = match kind {
            SectionKind::PrivateKey => KeyEncoding::Pkcs8,
            SectionKind::EcPrivateKey => KeyEncoding::Sec1,
            SectionKind::RsaPrivateKey => KeyEncoding::Pkcs1,
            _ => return None,
        };
        Some(PemKey { kind, der })
    }))
}

/// Whether the file holds a password-protected key, which we cannot use; the
/// PEM parser silently skips those sections, so look for the label directly
/// to give a useful error.
pub(crate) fn has_encrypted_key(bytes: &[u8]) -> bool {
    const LABEL: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    bytes.windows(LABEL.len()).any(|w| w == LABEL)
}

// AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
const ALG_EC_P256: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07,
];
// AlgorithmIdentifier { rsaEncryption, NULL }
const ALG_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// Re-encodes a key as PKCS#8 (RFC 5958 OneAsymmetricKey v1). SEC1 keys are
/// assumed to be P-256: for any other curve the inner `[0]` parameters will not
/// match and the key is then rejected when loaded, as unsupported.
pub(crate) fn to_pkcs8(key: &PemKey) -> Vec<u8> {
    let alg = match key.kind {
        KeyEncoding::Pkcs8 => return key.der.clone(),
        KeyEncoding::Sec1 => ALG_EC_P256,
        KeyEncoding::Pkcs1 => ALG_RSA,
    };
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend_from_slice(alg);
    body.extend(der_tlv(0x04, &key.der));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes DER as a PEM block with 64-column base64 lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 section 10.
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn encode_round_trips_through_the_parser() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(certificates(pem.as_bytes()).expect("parses"), vec![der]);
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der_tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = vec![0u8; 300];
        let tlv = der_tlv(0x04, &long);
        assert_eq!(&tlv[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(tlv.len(), 304);
    }
}
