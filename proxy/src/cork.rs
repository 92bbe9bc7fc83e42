//! Write coalescing for HTTP/2 connections: what a connection writes during one poll of
//! its task leaves in one write at the end of that poll.
//!
//! h2 does not copy a DATA frame's payload of more than 256 bytes into its codec buffer:
//! it chains the payload after the buffer, and writes and flushes both before it takes
//! the next frame. A connection with sixteen answers ready therefore made sixteen TLS
//! records in sixteen system calls, and woke the peer sixteen times (measured on the
//! server-side proxy at saturation: one `writev` per answer).
//!
//! [`cork`] puts a buffer under the codec. Writes land in the buffer; a flush only
//! records that one was asked for. The task that drives the connection is wrapped in
//! [`Flushing`], which writes the buffer out and flushes the I/O after every poll of it.
//! A connection whose task is not wrapped would never send anything: use the two together
//! ([`Cork::task`] for a connection future polled in a task of ours, [`Cork::executor`]
//! for hyper's HTTP/2 client, which spawns its connection task itself).
//!
//! Backpressure is kept: once [`LIMIT`] bytes wait, a write first drains them to the I/O
//! and waits for it like any write would. A failed write is kept and returned by the next
//! read, write or flush of the connection, which then closes.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes buffered before a write drains them to the I/O first; also the capacity kept
/// between polls. A write of at least this much into an empty buffer goes straight
/// through.
pub const LIMIT: usize = 64 * 1024;

/// Wraps `io`: the connection's end ([`CorkedIo`]) and the flusher of its task ([`Cork`]).
pub fn cork<I>(io: I) -> (CorkedIo<I>, Cork)
where
    I: AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Mutex::new(State {
        io,
        buf: Vec::new(),
        sent: 0,
        flush: false,
        writer: None,
        failed: None,
    }));
    (
        CorkedIo {
            shared: shared.clone(),
        },
        Cork { shared },
    )
}

/// The I/O a connection reads and writes; see the module documentation.
pub struct CorkedIo<I> {
    shared: Arc<Mutex<State<I>>>,
}

/// Flushes a [`CorkedIo`] at the end of every poll of a task.
#[derive(Clone)]
pub struct Cork {
    shared: Arc<dyn EndOfPoll>,
}

struct State<I> {
    io: I,
    /// Bytes waiting; `buf[..sent]` are already written.
    buf: Vec<u8>,
    sent: usize,
    /// A flush was asked for since the last one made.
    flush: bool,
    /// The task that last wrote: the one woken when the I/O can take more.
    writer: Option<Waker>,
    /// The first write that failed; every later call returns it.
    failed: Option<(io::ErrorKind, String)>,
}

impl<I: AsyncWrite + Unpin> State<I> {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some((e.kind(), e.to_string()));
        }
        e
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    fn note_writer(&mut self, cx: &Context<'_>) {
        if !self.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.writer = Some(cx.waker().clone());
        }
    }

    /// Writes the buffer out; then, with `flush`, flushes the I/O if that was asked for.
    fn drain(&mut self, cx: &mut Context<'_>, flush: bool) -> Poll<io::Result<()>> {
        self.check()?;
        while self.sent < self.buf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]) {
                Poll::Ready(Ok(0)) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "the connection takes no more bytes");
                    return Poll::Ready(Err(self.fail(e)));
                }
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > LIMIT {
            self.buf.shrink_to(LIMIT);
        }
        if flush && self.flush {
            if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
                return Poll::Ready(Err(self.fail(e)));
            }
            self.flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: drains the buffer first if they would overflow it.
    fn room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        self.check()?;
        self.note_writer(cx);
        if self.pending() > 0 && self.pending() + len > LIMIT {
            ready!(self.drain(cx, false))?;
        }
        Poll::Ready(Ok(()))
    }
}

fn lock<I>(m: &Mutex<State<I>>) -> std::sync::MutexGuard<'_, State<I>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CorkedIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut s = lock(&self.shared);
        ready!(s.room(cx, total))?;
        if s.pending() == 0 && total >= LIMIT {
            let r = Pin::new(&mut s.io).poll_write_vectored(cx, bufs);
            return match r {
                Poll::Ready(Err(e)) => Poll::Ready(Err(s.fail(e))),
                r => r,
            };
        }
        for b in bufs {
            s.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Records the flush; [`Flushing`] makes it at the end of the task's poll.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        s.check()?;
        s.note_writer(cx);
        s.flush = true;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        s.note_writer(cx);
        s.flush = true;
        ready!(s.drain(cx, true))?;
        Pin::new(&mut s.io).poll_shutdown(cx)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for CorkedIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        s.check()?;
        Pin::new(&mut s.io).poll_read(cx, buf)
    }
}

/// The flush a [`Flushing`] task makes after each poll, over the I/O's type.
trait EndOfPoll: Send + Sync {
    /// Writes out what is buffered and makes a flush that was asked for, when this task
    /// is the one that wrote (the connection's). Other tasks of the same executor (hyper's
    /// per-request ones) never touch the I/O: it keeps one waker for writability, and it
    /// must stay the connection's. When the I/O is full it wakes the writer later; a
    /// failed write is kept and returned by the connection's next call.
    fn end_of_poll(&self, cx: &mut Context<'_>);
}

impl<I: AsyncWrite + Unpin + Send> EndOfPoll for Mutex<State<I>> {
    fn end_of_poll(&self, cx: &mut Context<'_>) {
        let mut s = lock(self);
        if s.pending() == 0 && !s.flush {
            return;
        }
        if s.writer.as_ref().is_some_and(|w| !w.will_wake(cx.waker())) {
            return;
        }
        if let Poll::Ready(Err(_)) = s.drain(cx, true) {
            // The connection learns of it on its next call; make sure there is one.
            cx.waker().wake_by_ref();
        }
    }
}

impl Cork {
    /// `fut`, flushing this cork at the end of every poll.
    pub fn task<F: Future>(&self, fut: F) -> Flushing<F> {
        Flushing {
            fut,
            cork: self.shared.clone(),
        }
    }

    /// A hyper executor that spawns every future as a [`Flushing`] task of this cork
    /// (hyper's HTTP/2 client spawns the connection's task through its executor).
    pub fn executor(&self) -> CorkExecutor {
        CorkExecutor { cork: self.clone() }
    }
}

pin_project_lite::pin_project! {
    /// A future whose every poll ends with its cork's flush; see [`Cork::task`].
    pub struct Flushing<F> {
        #[pin]
        fut: F,
        cork: Arc<dyn EndOfPoll>,
    }
}

impl<F: Future + Unpin> Flushing<F> {
    /// The wrapped future (a connection, to shut down gracefully).
    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.fut
    }
}

impl<F: Future> Future for Flushing<F> {
    type Output = F::Output;

    /// The future's poll, then the flush. A finished connection does not wait for its last
    /// bytes: h2 closes through `poll_shutdown`, which drains the buffer first; whatever is
    /// left after the connection's future ended (an error) is one write attempt, not a
    /// wait on a peer that may never read again.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let r = this.fut.poll(cx);
        this.cork.end_of_poll(cx);
        r
    }
}

/// Spawns futures on tokio as [`Flushing`] tasks of one cork.
#[derive(Clone)]
pub struct CorkExecutor {
    cork: Cork,
}

impl<F> hyper::rt::Executor<F> for CorkExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(self.cork.task(fut));
    }
}

#[cfg(test)]
mod tests;
