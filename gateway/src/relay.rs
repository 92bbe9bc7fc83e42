//! Byte relay between a TCP connection and a QUIC stream, with half-close,
//! and the reading of header frames off a stream.
//!
//! Each direction is copied until its source ends, then the destination's
//! write side is finished (TCP `shutdown(Write)` / QUIC `FIN`), so one side
//! can stop sending and still read the answer. The relay ends when both
//! directions have ended, or when either fails: the failing direction resets
//! (QUIC) its stream side, the other direction is dropped with it, and the TCP
//! connection is reset (RST), so a reset on one side reaches the other as one.

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

/// An I/O object whose reads count as `sent` and whose writes count as `received` on
/// `counters` as the bytes move (the upstream side of a relay that is not a QUIC stream:
/// what is read from it goes out to the client, what is written to it came in).
pub struct CountedIo<I> {
    inner: I,
    counters: Arc<ByteCounters>,
}

impl<I> CountedIo<I> {
    /// Counts `inner`'s bytes on `counters`.
    pub fn new(inner: I, counters: Arc<ByteCounters>) -> Self {
        Self { inner, counters }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CountedIo<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CountedIo<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            self.counters.received.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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

/// Relays `tcp` ↔ (`send`, `recv`) until both directions end, or until `cut` completes
/// (a drain period is over), which ends it as a failure: both sides reset.
pub async fn relay(
    tcp: TcpStream,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    downstream: Downstream,
    counters: Arc<ByteCounters>,
    cut: impl std::future::Future<Output = ()>,
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
            Downstream::AwaitReply => {
                let reply = tokio::time::timeout(crate::entry::REPLY_TIMEOUT, read_reply(&mut recv))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the remote gateway did not answer within {:?}",
                                crate::entry::REPLY_TIMEOUT
                            ),
                        )
                    })??;
                match reply {
                    (Reply::Accepted { .. }, rest) => rest,
                    (Reply::Refused { reason, message }, _) => {
                        return Err(RelayError::Refused { reason, message });
                    }
                }
            }
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
    let result = tokio::select! {
        r = async { tokio::try_join!(up, down) } => r,
        () = cut => Err(RelayError::Io(io::Error::new(
            io::ErrorKind::Interrupted,
            "the drain period is over",
        ))),
    };
    match result {
        Ok((to_stream, from_stream)) => Ok(Moved {
            to_stream,
            from_stream,
        }),
        Err(e) => {
            // Whichever side failed, the stream is over in both directions, and the TCP
            // peer learns it as a reset, not as an orderly end of the data.
            let _ = send.reset(RELAY_ERROR);
            let _ = recv.stop(RELAY_ERROR);
            if let Ok(tcp) = tcp_read.reunite(tcp_write) {
                let _ = tcp.set_zero_linger();
            }
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

/// Copies a QUIC stream into a TCP write half. quinn hands over what arrived as one chunk
/// per STREAM frame, about a packet each: every chunk ready at once leaves in one
/// vectored write (no copy into an intermediate buffer), where a write per chunk cost a
/// system call and a trip through the receiver's TCP path for every 1.4 KB packet.
async fn stream_to_tcp<W: AsyncWrite + Unpin>(
    from: &mut quinn::RecvStream,
    to: &mut W,
    counter: &AtomicU64,
) -> io::Result<u64> {
    let mut chunks: [bytes::Bytes; CHUNKS] = Default::default();
    let mut total = 0;
    loop {
        match from.read_chunks(&mut chunks).await.map_err(io::Error::other)? {
            Some(n) => {
                let len: usize = chunks[..n].iter().map(|c| c.len()).sum();
                write_all_chunks(to, &mut chunks[..n]).await?;
                counter.fetch_add(len as u64, Ordering::Relaxed);
                total += len as u64;
            }
            None => {
                to.flush().await?;
                return Ok(total);
            }
        }
    }
}

/// The most received chunks one write takes (a 16 KiB answer arrives as about 12 on a
/// 1500-byte path).
const CHUNKS: usize = 32;

/// Writes every byte of `chunks`, in order, with as few vectored writes as the writer
/// takes; the chunks are consumed (emptied or advanced) as they are written.
async fn write_all_chunks<W: AsyncWrite + Unpin>(to: &mut W, chunks: &mut [bytes::Bytes]) -> io::Result<()> {
    use bytes::Buf;
    let mut first = 0;
    while first < chunks.len() {
        let mut slices = [io::IoSlice::new(&[]); CHUNKS];
        let pending = &chunks[first..];
        for (slice, chunk) in slices.iter_mut().zip(pending) {
            *slice = io::IoSlice::new(chunk);
        }
        let mut written = to.write_vectored(&slices[..pending.len().min(CHUNKS)]).await?;
        if written == 0 && pending.iter().any(|c| !c.is_empty()) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while first < chunks.len() && written >= chunks[first].len() {
            written -= chunks[first].len();
            chunks[first].clear();
            first += 1;
        }
        if written > 0 {
            chunks[first].advance(written);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;

    use super::*;

    /// A writer that takes at most `limit` bytes per call and records each call.
    struct Trickle {
        limit: usize,
        out: Vec<u8>,
        calls: usize,
    }

    impl Trickle {
        fn take(&mut self, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
            self.calls += 1;
            let mut room = self.limit;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(room);
                self.out.extend_from_slice(&b[..take]);
                room -= take;
                n += take;
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.take(&[io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.take(bufs)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn chunks() -> Vec<Bytes> {
        (0..12u8)
            .map(|i| Bytes::from(vec![i; 1400 + usize::from(i)]))
            .collect()
    }

    #[tokio::test]
    async fn chunks_ready_together_leave_in_one_write() {
        let mut all = chunks();
        let want: Vec<u8> = all.iter().flat_map(|c| c.iter().copied()).collect();
        let mut w = Trickle {
            limit: usize::MAX,
            out: Vec::new(),
            calls: 0,
        };
        write_all_chunks(&mut w, &mut all).await.unwrap();
        assert_eq!(w.calls, 1);
        assert_eq!(w.out, want);
    }

    #[tokio::test]
    async fn short_writes_resume_mid_chunk_in_order() {
        for limit in [1, 999, 1400, 1401, 5000] {
            let mut all = chunks();
            let want: Vec<u8> = all.iter().flat_map(|c| c.iter().copied()).collect();
            let mut w = Trickle {
                limit,
                out: Vec::new(),
                calls: 0,
            };
            write_all_chunks(&mut w, &mut all).await.unwrap();
            assert_eq!(w.out, want, "a writer taking {limit} bytes a call");
            assert_eq!(
                w.calls,
                want.len().div_ceil(limit),
                "a writer taking {limit} bytes a call"
            );
            assert!(all.iter().all(|c| c.is_empty()), "every chunk is consumed");
        }
    }

    #[tokio::test]
    async fn a_writer_that_takes_nothing_is_an_error() {
        let mut all = chunks();
        let mut w = Trickle {
            limit: 0,
            out: Vec::new(),
            calls: 0,
        };
        let e = write_all_chunks(&mut w, &mut all).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }
}
