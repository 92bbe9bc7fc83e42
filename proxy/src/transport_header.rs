//! Linkerd's opaque-transport header, `transport.l5d.io/v1` (sans-IO).
//!
//! A client proxy that must reach a *proxy* rather than the application port (opaque
//! ports in transparent mode; every meshed connection in explicit mode; multicluster
//! gateways) negotiates ALPN `transport.l5d.io/v1` and writes, first thing inside TLS:
//! the preface `transport.l5d.io/v1\r\n\r\n`, a big-endian `u32` length, and a protobuf
//! `transport.l5d.io.Header { int32 port = 1; string name = 2; SessionProtocol
//! session_protocol = 3; }`. The server proxy forwards the rest of the stream to `port`
//! on its application (or, with a `name`, a gateway forwards to that service); with a
//! session protocol it skips detection.

use bytes::{BufMut, BytesMut};
use prost::Message;

/// The ALPN protocol id announcing a header.
pub const ALPN: &[u8] = b"transport.l5d.io/v1";
const PREFACE: &[u8] = b"transport.l5d.io/v1\r\n\r\n";
/// Largest header accepted; real ones are a few dozen bytes.
pub const MAX_LEN: usize = 16 * 1024;

/// The protocol of the stream after the header, when the client knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionProtocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    Http2,
}

/// A decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    /// The target port on the server side.
    pub port: u16,
    /// The logical target (service authority), for gateways.
    pub name: Option<String>,
    /// The session protocol, if known (no detection needed).
    pub protocol: Option<SessionProtocol>,
}

/// The result of looking at the first bytes of a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not enough bytes to decide yet.
    NeedMore,
    /// A header, and how many bytes it took.
    Header(TransportHeader, usize),
    /// The bytes claim to be a header but are not a valid one.
    Invalid(String),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Proto {
    #[prost(int32, tag = "1")]
    port: i32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, optional, tag = "3")]
    session_protocol: Option<ProtoSession>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoSession {
    #[prost(oneof = "ProtoKind", tags = "1, 2")]
    kind: Option<ProtoKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ProtoKind {
    #[prost(message, tag = "1")]
    Http1(Empty),
    #[prost(message, tag = "2")]
    Http2(Empty),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

impl TransportHeader {
    /// The header's bytes, preface included.
    pub fn encode(&self) -> BytesMut {
        let proto = Proto {
            port: i32::from(self.port),
            name: self.name.clone().unwrap_or_default(),
            session_protocol: self.protocol.map(|p| ProtoSession {
                kind: Some(match p {
                    SessionProtocol::Http1 => ProtoKind::Http1(Empty {}),
                    SessionProtocol::Http2 => ProtoKind::Http2(Empty {}),
                }),
            }),
        };
        let len = proto.encoded_len();
        let mut buf = BytesMut::with_capacity(PREFACE.len() + 4 + len);
        buf.put_slice(PREFACE);
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        proto
            .encode(&mut buf)
            .expect("the buffer was sized for the message");
        buf
    }

    /// Decodes a header at the start of `buf`.
    pub fn decode(buf: &[u8]) -> Decoded {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Decoded::Invalid("the stream does not start with the transport.l5d.io/v1 preface".into());
        }
        if buf.len() < PREFACE.len() + 4 {
            return Decoded::NeedMore;
        }
        let len_bytes: [u8; 4] = buf[PREFACE.len()..PREFACE.len() + 4].try_into().expect("4 bytes");
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_LEN {
            return Decoded::Invalid(format!("header of {len} bytes is over the {MAX_LEN}-byte limit"));
        }
        let start = PREFACE.len() + 4;
        if buf.len() < start + len {
            return Decoded::NeedMore;
        }
        let proto = match Proto::decode(&buf[start..start + len]) {
            Ok(p) => p,
            Err(e) => return Decoded::Invalid(format!("the header does not decode: {e}")),
        };
        let Some(port) = u16::try_from(proto.port).ok().filter(|p| *p != 0) else {
            return Decoded::Invalid(format!("port {} is not 1-65535", proto.port));
        };
        let protocol = proto.session_protocol.and_then(|s| s.kind).map(|k| match k {
            ProtoKind::Http1(_) => SessionProtocol::Http1,
            ProtoKind::Http2(_) => SessionProtocol::Http2,
        });
        let name = Some(proto.name).filter(|n| !n.is_empty());
        Decoded::Header(TransportHeader { port, name, protocol }, start + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_any_split() {
        let h = TransportHeader {
            port: 8080,
            name: Some("myapp.production.svc.cluster.local:80".into()),
            protocol: Some(SessionProtocol::Http2),
        };
        let mut bytes = h.encode().to_vec();
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        let total = bytes.len() - 14;
        for cut in 0..total {
            assert_eq!(
                TransportHeader::decode(&bytes[..cut]),
                Decoded::NeedMore,
                "cut {cut}"
            );
        }
        assert_eq!(TransportHeader::decode(&bytes), Decoded::Header(h, total));
    }

    #[test]
    fn refuses_bad_headers() {
        let bad_port = TransportHeader {
            port: 1,
            name: None,
            protocol: None,
        };
        let mut b = bad_port.encode();
        // port field = 0 → rewrite the varint.
        let at = b.len() - 1;
        b[at] = 0;
        assert!(matches!(TransportHeader::decode(&b), Decoded::Invalid(m) if m.contains("port 0")));
        assert!(matches!(
            TransportHeader::decode(b"GET / HTTP/1.1\r\n"),
            Decoded::Invalid(_)
        ));
        let mut huge = PREFACE.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(TransportHeader::decode(&huge), Decoded::Invalid(m) if m.contains("limit")));
        let mut garbage = PREFACE.to_vec();
        garbage.extend_from_slice(&3u32.to_be_bytes());
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(TransportHeader::decode(&garbage), Decoded::Invalid(_)));
    }
}
