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

/// What the first bytes of a TLS connection say about its server name (sans-IO).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientHello {
    /// A ClientHello naming this server (SNI `host_name`), lowercased.
    Sni(String),
    /// A ClientHello without a server name (clients dialling an IP address send none).
    NoSni,
    /// Not a ClientHello this parser can read.
    NotHello,
    /// The ClientHello has not fully arrived: read more.
    Incomplete,
}

/// The largest ClientHello read before deciding (Linkerd's proxy reads at most 64 KiB).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Reads the server name of the TLS ClientHello at the start of `buf`, reassembling a
/// handshake message split over several records.
pub fn client_hello(buf: &[u8]) -> ClientHello {
    parse_hello(buf).unwrap_or(ClientHello::Incomplete)
}

/// Most records a ClientHello may be split over (a real one takes one or two).
const MAX_HELLO_RECORDS: usize = 16;

/// [`client_hello`], or `Err(n)` when undecided until `buf` holds at least `n` bytes (the
/// end of the record being read), so a reader parses again only at record ends.
fn parse_hello(buf: &[u8]) -> Result<ClientHello, usize> {
    // Reassemble the handshake message from consecutive handshake records.
    let mut msg = Vec::new();
    let mut at = 0;
    for _ in 0..MAX_HELLO_RECORDS {
        let rest = &buf[at..];
        if rest.len() < 5 {
            return Err(at + 5);
        }
        if rest[0] != 0x16 || rest[1] != 3 {
            return Ok(ClientHello::NotHello);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        // Not a ClientHello is known from its first byte, before the record is complete.
        if msg.is_empty() && len > 0 && rest.get(5).is_some_and(|t| *t != 1) {
            return Ok(ClientHello::NotHello);
        }
        if len == 0 || at + 5 + len > MAX_CLIENT_HELLO {
            return Ok(ClientHello::NotHello);
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Err(at + 5 + len);
        };
        msg.extend_from_slice(fragment);
        at += 5 + len;
        if msg.len() < 4 {
            continue;
        }
        if msg[0] != 1 {
            return Ok(ClientHello::NotHello);
        }
        let hlen = usize::from(msg[1]) << 16 | usize::from(msg[2]) << 8 | usize::from(msg[3]);
        if hlen > MAX_CLIENT_HELLO {
            return Ok(ClientHello::NotHello);
        }
        if msg.len() >= 4 + hlen {
            return Ok(match server_name(&msg[4..4 + hlen]) {
                Some(Some(name)) => ClientHello::Sni(name),
                Some(None) => ClientHello::NoSni,
                None => ClientHello::NotHello,
            });
        }
    }
    Ok(ClientHello::NotHello)
}

/// A byte reader that fails (`None`) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    /// A vector with a `u8`/`u16` length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The SNI `host_name` of a ClientHello body: `None` when it does not parse,
/// `Some(None)` when it names no server.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None);
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// Reads from `io` (after the bytes already in `buf`) until the ClientHello's server
/// name is known, for at most `timeout`; the bytes stay in `buf`.
pub async fn read_client_hello<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    timeout: Duration,
) -> std::io::Result<ClientHello> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Parse again only once the record being read has fully arrived.
        let need = match parse_hello(buf) {
            Ok(decided) => return Ok(decided),
            Err(need) => need,
        };
        while buf.len() < need {
            buf.reserve(need - buf.len());
            match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
                Err(_) | Ok(Ok(0)) => return Ok(ClientHello::NotHello),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
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

    /// A ClientHello made by rustls for `name` (an IP address sends no SNI).
    fn rustls_hello(name: &str) -> Vec<u8> {
        use strait_identity::rustls;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn client_hello_server_names() {
        let hello = rustls_hello("db.Example.org");
        assert_eq!(client_hello(&hello), ClientHello::Sni("db.example.org".into()));
        for cut in [0, 1, 4, 5, 6, hello.len() / 2, hello.len() - 1] {
            assert_eq!(
                client_hello(&hello[..cut]),
                ClientHello::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(client_hello(&rustls_hello("198.18.0.9")), ClientHello::NoSni);

        // The same handshake message split over three records.
        let msg = &hello[5..];
        let mut split = Vec::new();
        for part in [&msg[..3], &msg[3..40], &msg[40..]] {
            split.extend_from_slice(&[0x16, 3, 1]);
            split.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(client_hello(&split), ClientHello::Sni("db.example.org".into()));

        // Garbage: not a handshake, not a ClientHello, truncated inside, empty records.
        assert_eq!(
            client_hello(b"\x16\x03\x01\x00\x30garbage garbage garbage garbage garbage!!"),
            ClientHello::NotHello
        );
        assert_eq!(client_hello(b"\x17\x03\x03\x00\x01x"), ClientHello::NotHello);
        assert_eq!(client_hello(b"\x16\x03\x01\x00\x00"), ClientHello::NotHello);
        let mut bad = hello.clone();
        bad[5] = 2; // a ServerHello
        assert_eq!(client_hello(&bad), ClientHello::NotHello);
        let mut short = hello.clone();
        // The handshake message claims one byte less than its extensions need.
        let hlen = u32::from_be_bytes([0, short[6], short[7], short[8]]) - 1;
        short[6..9].copy_from_slice(&hlen.to_be_bytes()[1..]);
        assert_eq!(client_hello(&short), ClientHello::NotHello);
        // A hello split over more records than any client uses is not read further.
        let mut dribbled = Vec::new();
        for b in &hello[5..] {
            dribbled.extend_from_slice(&[0x16, 3, 1, 0, 1, *b]);
        }
        assert_eq!(client_hello(&dribbled), ClientHello::NotHello);
        // Every prefix and every one-byte corruption decides without panicking.
        for i in 0..hello.len() {
            let _ = client_hello(&hello[..i]);
            let mut c = hello.clone();
            c[i] ^= 0xa5;
            let _ = client_hello(&c);
        }
    }
}
