//! I/O adapters: replaying bytes read during detection, and counting bytes for metrics.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::{OpenConn, TcpStats};

/// An I/O that first yields `prefix` (bytes already read), then reads from the inner one.
pub struct PrefixedIo<I> {
    prefix: BytesMut,
    inner: I,
}

impl<I> PrefixedIo<I> {
    /// Wraps `inner` with `prefix` to replay.
    pub fn new(prefix: BytesMut, inner: I) -> Self {
        Self { prefix, inner }
    }

    /// The inner I/O.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for PrefixedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// `AsyncWrite` for a wrapper that only watches or rewrites what is read: every write
/// call goes to its `inner` as it is.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<I> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }
            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}
pub(crate) use write_through;

write_through!(PrefixedIo);

/// Counts a connection open while it lives and the bytes read and written, adding them to
/// `stats` as they flow (relaxed atomics on a per-label-set counter: no locks, no
/// allocation).
pub struct CountingIo<I> {
    inner: I,
    stats: Arc<TcpStats>,
    open: OpenConn,
}

impl<I> CountingIo<I> {
    /// Counts `inner` (open, bytes, close) into `stats`.
    pub fn new(inner: I, stats: Arc<TcpStats>) -> Self {
        let open = stats.open();
        Self { inner, stats, open }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CountingIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.stats.add_read(n);
        }
        if let Poll::Ready(Err(e)) = &r {
            self.open.failed(e);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CountingIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        match &r {
            Poll::Ready(Ok(n)) => self.stats.add_write(*n),
            Poll::Ready(Err(e)) => self.open.failed(e),
            Poll::Pending => {}
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        match &r {
            Poll::Ready(Ok(n)) => self.stats.add_write(*n),
            Poll::Ready(Err(e)) => self.open.failed(e),
            Poll::Pending => {}
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Turns on TCP keepalive on `tcp`, first probing after `idle` without traffic (Linkerd's
/// `…_ACCEPT_KEEPALIVE` / `…_CONNECT_KEEPALIVE`): a peer that vanished without a FIN or
/// RST (a node gone, a NAT entry dropped) is noticed, and its connection closed.
pub fn set_keepalive(tcp: &tokio::net::TcpStream, idle: std::time::Duration) -> std::io::Result<()> {
    // The kernel counts whole seconds, at least one.
    let idle = std::time::Duration::from_secs(idle.as_secs().max(1));
    socket2::SockRef::from(tcp).set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockopt(tcp: &tokio::net::TcpStream, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap();
        // SAFETY: getsockopt writes at most `len` bytes into `v`; the fd is open.
        let rc = unsafe {
            libc::getsockopt(
                tcp.as_raw_fd(),
                level,
                name,
                std::ptr::from_mut(&mut v).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        v
    }

    #[tokio::test]
    async fn keepalive_probes_after_the_idle_time() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(sockopt(&tcp, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        set_keepalive(&tcp, std::time::Duration::from_millis(10_000)).unwrap();
        assert_eq!(sockopt(&tcp, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(sockopt(&tcp, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 10);
        // Below a second rounds up to the kernel's smallest idle time.
        set_keepalive(&tcp, std::time::Duration::from_millis(10)).unwrap();
        assert_eq!(sockopt(&tcp, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 1);
    }
}
