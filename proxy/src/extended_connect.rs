//! HTTP/2 extended CONNECT (RFC 8441: WebSocket and other protocols over an HTTP/2
//! stream): recognising such requests, and knowing whether an HTTP/2 server accepts them.
//!
//! A client must not send `:protocol` before the server has enabled it with
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 §3), and hyper does not expose the
//! peer's settings to the request path. So every HTTP/2 client connection the proxy opens
//! reads the server's connection preface (its first frame, a SETTINGS frame, RFC 9113
//! §3.4) as it passes: [`parse_preface`] decides (pure), [`PrefaceIo`] feeds it and
//! publishes the answer. A server that enables the protocol only in a later SETTINGS
//! frame is treated as not supporting it.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;

/// `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 §3).
pub const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
/// The HTTP/2 SETTINGS frame type.
const SETTINGS: u8 = 0x4;
/// The largest SETTINGS payload read (the default maximum frame size).
const MAX_PREFACE_PAYLOAD: usize = 16_384;

/// Whether `req` is an extended CONNECT: `CONNECT` with a `:protocol`.
pub fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some()
}

/// What the bytes read so far say about the server's preface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preface {
    /// The first frame is not complete yet.
    NeedMore,
    /// The server's first SETTINGS frame: whether it enables extended CONNECT.
    Settings {
        /// `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`.
        connect_protocol: bool,
    },
    /// Not an HTTP/2 server preface (the first frame is not SETTINGS, or it is malformed).
    Invalid,
}

/// Reads the server preface at the start of `buf` (pure).
pub fn parse_preface(buf: &[u8]) -> Preface {
    if buf.len() < 9 {
        return Preface::NeedMore;
    }
    let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
    let (kind, flags, stream) = (
        buf[3],
        buf[4],
        u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
    );
    // The preface is a SETTINGS frame on stream 0, not an ACK, of whole 6-byte entries.
    if kind != SETTINGS || flags & 0x1 != 0 || stream != 0 || len % 6 != 0 || len > MAX_PREFACE_PAYLOAD {
        return Preface::Invalid;
    }
    let Some(payload) = buf.get(9..9 + len) else {
        return Preface::NeedMore;
    };
    // A later entry for the same setting wins (RFC 9113 §6.5.3: processed in order).
    let mut connect_protocol = false;
    for entry in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([entry[0], entry[1]]);
        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
        if id == SETTINGS_ENABLE_CONNECT_PROTOCOL {
            connect_protocol = value == 1;
        }
    }
    Preface::Settings { connect_protocol }
}

/// Whether a server accepts extended CONNECT: `None` until its preface was read.
pub type ConnectProtocol = watch::Receiver<Option<bool>>;

/// The I/O of an HTTP/2 client connection, publishing from the server's preface whether
/// it accepts extended CONNECT; after the preface it only passes bytes through.
pub struct PrefaceIo<I> {
    inner: I,
    /// The preface so far and where to publish it; `None` once decided.
    sniff: Option<(Vec<u8>, watch::Sender<Option<bool>>)>,
}

impl<I> PrefaceIo<I> {
    /// Wraps a fresh connection's I/O; the receiver hears the server's answer.
    pub fn new(inner: I) -> (Self, ConnectProtocol) {
        let (tx, rx) = watch::channel(None);
        (
            Self {
                inner,
                sniff: Some((Vec::new(), tx)),
            },
            rx,
        )
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for PrefaceIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some((seen, tx)) = self.sniff.as_mut() {
            seen.extend_from_slice(&buf.filled()[before..]);
            let decided = match parse_preface(seen) {
                Preface::NeedMore if buf.filled().len() > before => None,
                // End of stream (nothing read) or an error: the preface never came.
                Preface::NeedMore => Some(false),
                Preface::Settings { connect_protocol } => Some(connect_protocol),
                Preface::Invalid => Some(false),
            };
            if r.is_ready()
                && let Some(v) = decided
            {
                tx.send_replace(Some(v));
                self.sniff = None;
            }
        }
        r
    }
}

crate::io::write_through!(PrefaceIo);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(entries: &[(u16, u32)], flags: u8) -> Vec<u8> {
        let len = entries.len() * 6;
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            SETTINGS,
            flags,
            0,
            0,
            0,
            0,
        ];
        for (id, v) in entries {
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f
    }

    #[test]
    fn the_first_settings_frame_decides() {
        let enabled = settings(&[(0x3, 100), (SETTINGS_ENABLE_CONNECT_PROTOCOL, 1)], 0);
        let cases: Vec<(Vec<u8>, Preface)> = vec![
            (
                enabled.clone(),
                Preface::Settings {
                    connect_protocol: true,
                },
            ),
            (
                settings(&[(0x3, 100)], 0),
                Preface::Settings {
                    connect_protocol: false,
                },
            ),
            (
                settings(
                    &[
                        (SETTINGS_ENABLE_CONNECT_PROTOCOL, 1),
                        (SETTINGS_ENABLE_CONNECT_PROTOCOL, 0),
                    ],
                    0,
                ),
                Preface::Settings {
                    connect_protocol: false,
                },
            ),
            (
                settings(&[(SETTINGS_ENABLE_CONNECT_PROTOCOL, 2)], 0),
                Preface::Settings {
                    connect_protocol: false,
                },
            ),
            (
                settings(&[], 0),
                Preface::Settings {
                    connect_protocol: false,
                },
            ),
            // Incomplete: the header, then part of the payload.
            (enabled[..5].to_vec(), Preface::NeedMore),
            (enabled[..12].to_vec(), Preface::NeedMore),
            // An ACK, another frame type, or an HTTP/1 answer is no preface.
            (settings(&[], 1), Preface::Invalid),
            (b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), Preface::Invalid),
            (vec![0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0, 0, 0, 1], Preface::Invalid),
            (
                vec![0, 0, 5, SETTINGS, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5],
                Preface::Invalid,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_preface(&bytes), want, "{bytes:?}");
        }
        // Bytes after the frame (the server's next frames) change nothing.
        let mut more = enabled.clone();
        more.extend_from_slice(&settings(&[], 1));
        assert_eq!(
            parse_preface(&more),
            Preface::Settings {
                connect_protocol: true
            }
        );
    }

    #[tokio::test]
    async fn the_io_publishes_the_answer_as_the_preface_arrives() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(64);
        let (mut io, mut answer) = PrefaceIo::new(client);
        let frame = settings(&[(SETTINGS_ENABLE_CONNECT_PROTOCOL, 1)], 0);
        server.write_all(&frame[..4]).await.unwrap();
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(n, 4);
        assert_eq!(*answer.borrow(), None, "not decided on a partial frame");
        server.write_all(&frame[4..]).await.unwrap();
        server.write_all(b"next").await.unwrap();
        let mut got = buf[..n].to_vec();
        while got.len() < frame.len() + 4 {
            let n = io.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got[..frame.len()], &frame[..], "bytes pass through unchanged");
        answer.wait_for(Option::is_some).await.unwrap();
        assert_eq!(*answer.borrow(), Some(true));

        // A server that closes before its preface: decided, not supported.
        let (client, server) = tokio::io::duplex(64);
        let (mut io, answer) = PrefaceIo::new(client);
        drop(server);
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        assert_eq!(*answer.borrow(), Some(false));
    }
}
