//! Protocol detection over the first bytes of a connection (sans-IO), and the async
//! reader that feeds it with a timeout.
//!
//! Decisions: the HTTP/2 connection preface means HTTP/2 (gRPC included); a first line
//! ending in ` HTTP/1.0` or ` HTTP/1.1` means HTTP/1; a TLS ClientHello record is TLS;
//! anything else, or nothing before the timeout (server-first protocols), is opaque TCP.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// A TLS ClientHello.
    Tls,
    /// Anything else.
    Opaque,
}

/// The result of looking at the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// Decided.
    Is(Protocol),
    /// Undecided: read more.
    NeedMore,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/1 request lines longer than this are treated as opaque (Linkerd reads ~1 KiB).
pub const MAX_FIRST_LINE: usize = 8 * 1024;

/// Detects the protocol of `buf`, the first bytes of a stream. `tls` says whether a TLS
/// ClientHello is a possible answer (inbound) or just opaque bytes (outbound).
pub fn detect(buf: &[u8], tls: bool) -> Detection {
    if buf.is_empty() {
        return Detection::NeedMore;
    }
    if tls && buf[0] == 0x16 {
        // TLS record: handshake, version 3.x.
        return match buf.get(1) {
            None => Detection::NeedMore,
            Some(3) => Detection::Is(Protocol::Tls),
            Some(_) => Detection::Is(Protocol::Opaque),
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Detection::Is(Protocol::Http2)
        } else {
            Detection::NeedMore
        };
    }
    // HTTP/1: a method token (uppercase letters), then the line ends with HTTP/1.x.
    if !buf[0].is_ascii_uppercase() {
        return Detection::Is(Protocol::Opaque);
    }
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = &buf[..end];
            if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
                Detection::Is(Protocol::Http1)
            } else {
                Detection::Is(Protocol::Opaque)
            }
        }
        None if buf.len() >= MAX_FIRST_LINE => Detection::Is(Protocol::Opaque),
        None => Detection::NeedMore,
    }
}

/// Reads from `io` until the protocol is known, for at most `timeout`; the bytes read
/// are left in `buf` to be replayed. A timeout or end of stream decides opaque.
pub async fn read_and_detect<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    tls: bool,
    timeout: Duration,
) -> std::io::Result<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Detection::Is(p) = detect(buf, tls) {
            return Ok(p);
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_) => return Ok(Protocol::Opaque),
            Ok(Ok(0)) => return Ok(Protocol::Opaque),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Detection::*;
        use Protocol::*;
        let cases: &[(&[u8], bool, Detection)] = &[
            (b"", false, NeedMore),
            (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", false, Is(Http1)),
            (b"POST /x HTTP/1.0\r\n", false, Is(Http1)),
            (b"CONNECT a:5 HTTP/1.1\r\n", false, Is(Http1)),
            (b"GET / HTTP/1.1", false, NeedMore),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, Is(Http2)),
            (b"PRI * HTTP/2.0\r\n", false, NeedMore),
            (b"\x16\x03\x01\x02\x00", true, Is(Tls)),
            (b"\x16\x03\x01\x02\x00", false, Is(Opaque)),
            (b"\x16", true, NeedMore),
            (b"\x16\x07", true, Is(Opaque)),
            (b"SSH-2.0-OpenSSH\r\n", false, Is(Opaque)),
            (b"hello", false, Is(Opaque)),
            (b"\x00\x01binary", false, Is(Opaque)),
            (b"GET / HTTP/3.0\r\n", false, Is(Opaque)),
        ];
        for (bytes, tls, want) in cases {
            assert_eq!(detect(bytes, *tls), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
        let long = vec![b'G'; MAX_FIRST_LINE];
        assert_eq!(detect(&long, false), Is(Opaque));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_opaque_after_the_timeout() {
        let (mut a, _b) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let p = read_and_detect(&mut a, &mut buf, true, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(p, Protocol::Opaque);
    }
}
