//! Byte relay between a TCP connection and a QUIC stream, with half-close,
//! and the reading of header frames off a stream.
//!
//! Each direction is copied until its source ends, then the destination's
//! write side is finished (TCP `shutdown(Write)` / QUIC `FIN`), so one side
//! can stop sending and still read the answer. The relay ends when both
//! directions have ended, or when either fails: the failing direction resets
//! (QUIC) its stream side, and the other direction is dropped with it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proto::header::{self, HeaderError, Progress, RefusalReason, Reply, Request};

/// Error code sent when a relay aborts a QUIC stream.
pub const RELAY_ERROR: quinn::VarInt = quinn::VarInt::from_u32(1);

const BUF: usize = 64 * 1024;

/// Bytes moved by one relay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// From TCP into the stream.
    pub to_stream: u64,
    /// From the stream out to TCP.
    pub from_stream: u64,
}

/// Counters a relay adds its bytes to as they move.
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Bytes sent into streams.
    pub sent: AtomicU64,
    /// Bytes received from streams.
    pub received: AtomicU64,
}

/// Why a relay or a frame read ended badly.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Socket or stream I/O failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The stream ended before a whole frame arrived.
    #[error("the stream ended inside the gateway header")]
    EndedEarly,
    /// The frame could not be decoded.
    #[error("bad gateway header: {0}")]
    Header(#[from] HeaderError),
    /// The remote gateway refused the stream.
    #[error("the remote gateway refused the stream ({reason}): {message}")]
    Refused {
        /// Why.
        reason: RefusalReason,
        /// The remote's explanation.
        message: String,
    },
}

/// What the stream-to-TCP direction starts with.
#[derive(Debug)]
pub enum Downstream {
    /// Payload already read off the stream (pipelined behind a header).
    Ready(Vec<u8>),
    /// The stream starts with the remote gateway's [`Reply`]: relay only if it
    /// accepts (the opening side, which pipelines its payload meanwhile).
    AwaitReply,
}

/// Reads one request frame off `recv` (a QUIC stream, or a proxy's TCP connection);
/// returns it and any payload read past it.
pub async fn read_request<R: AsyncRead + Unpin>(recv: &mut R) -> Result<(Request, Vec<u8>), RelayError> {
    read_frame(recv, header::decode_request).await
}

/// Reads one request frame as a proxy entry does (with the link it names, if any);
/// returns it and any payload read past it.
pub async fn read_entry_request<R: AsyncRead + Unpin>(
    recv: &mut R,
) -> Result<(header::EntryRequest, Vec<u8>), RelayError> {
    read_frame(recv, header::decode_entry_request).await
}

/// Reads one reply frame off `recv`; returns it and any payload read past it.
pub async fn read_reply<R: AsyncRead + Unpin>(recv: &mut R) -> Result<(Reply, Vec<u8>), RelayError> {
    read_frame(recv, header::decode_reply).await
}

async fn read_frame<T, R: AsyncRead + Unpin>(
    recv: &mut R,
    decode: fn(&[u8]) -> Result<Progress<T>, HeaderError>,
) -> Result<(T, Vec<u8>), RelayError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        match decode(&buf)? {
            Progress::Complete(d) => {
                let rest = buf.split_off(d.consumed);
                return Ok((d.frame, rest));
            }
            Progress::Incomplete { needed } => {
                // Read no further than the frame needs (bounded by MAX_FRAME_LEN)
                // plus whatever payload arrives in the same read.
                let want = (needed - buf.len()).clamp(1, chunk.len());
                match recv.read(&mut chunk[..want]).await? {
                    0 => return Err(RelayError::EndedEarly),
                    n => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }
}

/// Relays `tcp` ↔ (`send`, `recv`) until both directions end.
pub async fn relay(
    tcp: TcpStream,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    downstream: Downstream,
    counters: Arc<ByteCounters>,
) -> Result<Moved, RelayError> {
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let up = async {
        match tcp_to_stream(&mut tcp_read, &mut send, &counters.sent).await {
            Ok(n) => {
                // FIN after the last byte; the peer may still answer.
                let _ = send.finish();
                Ok(n)
            }
            Err(e) => {
                let _ = send.reset(RELAY_ERROR);
                Err(RelayError::Io(e))
            }
        }
    };
    let down = async {
        let initial = match downstream {
            Downstream::Ready(bytes) => bytes,
            Downstream::AwaitReply => match read_reply(&mut recv).await? {
                (Reply::Accepted { .. }, rest) => rest,
                (Reply::Refused { reason, message }, _) => {
                    return Err(RelayError::Refused { reason, message });
                }
            },
        };
        let mut total = 0;
        if !initial.is_empty() {
            tcp_write.write_all(&initial).await?;
            counters
                .received
                .fetch_add(initial.len() as u64, Ordering::Relaxed);
            total += initial.len() as u64;
        }
        match stream_to_tcp(&mut recv, &mut tcp_write, &counters.received).await {
            Ok(n) => {
                tcp_write.shutdown().await?;
                Ok(total + n)
            }
            Err(e) => {
                let _ = recv.stop(RELAY_ERROR);
                Err(RelayError::Io(e))
            }
        }
    };
    let result = tokio::try_join!(up, down);
    match result {
        Ok((to_stream, from_stream)) => Ok(Moved {
            to_stream,
            from_stream,
        }),
        Err(e) => {
            // Whichever side failed, the stream is over in both directions.
            let _ = send.reset(RELAY_ERROR);
            let _ = recv.stop(RELAY_ERROR);
            Err(e)
        }
    }
}

/// Copies a TCP read half into a QUIC stream without copying the bytes again: each
/// read lands in a shared buffer whose filled part is handed to quinn as is (quinn keeps
/// it until the peer acknowledges it), instead of being copied into quinn's own buffer.
async fn tcp_to_stream<R: AsyncRead + Unpin>(
    from: &mut R,
    to: &mut quinn::SendStream,
    counter: &AtomicU64,
) -> io::Result<u64> {
    let mut buf = bytes::BytesMut::new();
    let mut total = 0;
    loop {
        if buf.capacity() - buf.len() < BUF / 4 {
            buf.reserve(BUF);
        }
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        to.write_chunk(buf.split().freeze())
            .await
            .map_err(io::Error::other)?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        total += n as u64;
    }
}

/// Copies a QUIC stream into a TCP write half, writing quinn's received chunks as they
/// are (no copy into an intermediate buffer).
async fn stream_to_tcp<W: AsyncWrite + Unpin>(
    from: &mut quinn::RecvStream,
    to: &mut W,
    counter: &AtomicU64,
) -> io::Result<u64> {
    let mut total = 0;
    loop {
        match from.read_chunk(BUF, true).await.map_err(io::Error::other)? {
            Some(chunk) => {
                to.write_all(&chunk.bytes).await?;
                counter.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                total += chunk.bytes.len() as u64;
            }
            None => {
                to.flush().await?;
                return Ok(total);
            }
        }
    }
}
