use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// What the I/O under a cork saw.
#[derive(Default)]
struct Seen {
    writes: Vec<Vec<u8>>,
    flushes: usize,
    /// Writes wait (Pending) while set; the waiting task is in `waiting`.
    blocked: bool,
    waiting: Option<Waker>,
    broken: bool,
}

#[derive(Clone, Default)]
struct Probe(Arc<Mutex<Seen>>);

impl Probe {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap()
    }

    fn unblock(&self) {
        let mut s = self.seen();
        s.blocked = false;
        if let Some(w) = s.waiting.take() {
            w.wake();
        }
    }
}

impl AsyncWrite for Probe {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut s = self.seen();
        if s.broken {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "peer gone")));
        }
        if s.blocked {
            s.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        s.writes.push(data.to_vec());
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.seen().flushes += 1;
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Probe {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn the_writes_and_flushes_of_one_poll_leave_in_one_write_at_its_end() {
    let probe = Probe::default();
    let (mut io, cork) = cork(probe.clone());
    let seen_inside = probe.clone();
    cork.task(async move {
        io.write_all(b"HEADERS").await.unwrap();
        io.flush().await.unwrap();
        io.write_all(b"DATA").await.unwrap();
        io.flush().await.unwrap();
        // Nothing has left yet: the flushes were recorded, not made.
        assert!(seen_inside.seen().writes.is_empty());
        assert_eq!(seen_inside.seen().flushes, 0);
    })
    .await;
    let s = probe.seen();
    assert_eq!(s.writes, vec![b"HEADERSDATA".to_vec()]);
    assert_eq!(s.flushes, 1);
}

#[tokio::test]
async fn bytes_written_outside_a_flushing_task_leave_at_the_next_flushing_poll() {
    // hyper's HTTP/2 client writes the connection preface from the task that asked for
    // the connection; the connection's own task sends it.
    let probe = Probe::default();
    let (mut io, cork) = cork(probe.clone());
    io.write_all(b"PRI * HTTP/2.0").await.unwrap();
    io.flush().await.unwrap();
    assert!(probe.seen().writes.is_empty());
    cork.task(async {}).await;
    assert_eq!(probe.seen().writes, vec![b"PRI * HTTP/2.0".to_vec()]);
    assert_eq!(probe.seen().flushes, 1);
}

#[tokio::test]
async fn a_large_write_into_an_empty_buffer_goes_straight_through() {
    let probe = Probe::default();
    let (mut io, cork) = cork(probe.clone());
    let seen_inside = probe.clone();
    cork.task(async move {
        io.write_all(&[7; LIMIT]).await.unwrap();
        assert_eq!(seen_inside.seen().writes.len(), 1, "not copied into the buffer");
        io.write_all(b"small").await.unwrap();
        assert_eq!(seen_inside.seen().writes.len(), 1);
    })
    .await;
    let s = probe.seen();
    assert_eq!(s.writes.len(), 2);
    assert_eq!(s.writes[0].len(), LIMIT);
    assert_eq!(s.writes[1], b"small");
}

/// A connection task writing `LIMIT - 10` bytes, then 20 more, into a cork over a full
/// I/O: it waits in its second write.
async fn waiting_writer() -> (Probe, Cork, tokio::task::JoinHandle<()>) {
    let probe = Probe::default();
    probe.seen().blocked = true;
    let (mut io, cork) = cork(probe.clone());
    let writer = tokio::spawn(cork.task(async move {
        io.write_all(&[1; LIMIT - 10]).await.unwrap();
        io.flush().await.unwrap();
        // 20 more would overflow the buffer: this write waits for the I/O.
        io.write_all(&[2; 20]).await.unwrap();
        io.flush().await.unwrap();
    }));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !writer.is_finished(),
        "a write past the limit waits while the I/O is full"
    );
    assert!(probe.seen().writes.is_empty());
    (probe, cork, writer)
}

#[tokio::test]
async fn a_full_io_holds_the_task_until_it_drains_and_writes_keep_their_order() {
    let (probe, _cork, task) = waiting_writer().await;
    probe.unblock();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the I/O's wake-up resumed the task")
        .unwrap();
    let s = probe.seen();
    let all: Vec<u8> = s.writes.concat();
    assert_eq!(all.len(), LIMIT + 10);
    assert!(all[..LIMIT - 10].iter().all(|b| *b == 1) && all[LIMIT - 10..].iter().all(|b| *b == 2));
    assert_eq!(s.writes.len(), 2, "the first drain, then the end-of-poll write");
}

#[tokio::test]
async fn a_finished_connection_does_not_wait_on_a_peer_that_takes_nothing() {
    let probe = Probe::default();
    probe.seen().blocked = true;
    let (mut io, cork) = cork(probe.clone());
    let task = tokio::spawn(cork.task(async move {
        io.write_all(b"GOAWAY").await.unwrap();
        io.flush().await.unwrap();
        "done"
    }));
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "done");
    assert!(probe.seen().writes.is_empty());
}

#[tokio::test]
async fn another_task_of_the_connection_never_takes_the_writers_wake_up() {
    // hyper's HTTP/2 client spawns a task per request through the same executor: when one
    // finishes while the connection waits for the I/O, the I/O must still wake the
    // connection.
    let (probe, cork, writer) = waiting_writer().await;
    let others = async {
        cork.task(async {}).await;
        tokio::spawn(cork.task(async {})).await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(5), others)
        .await
        .expect("the other tasks finish without waiting for the I/O");
    probe.unblock();
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the connection was woken when the I/O could take more")
        .unwrap();
    assert_eq!(probe.seen().writes.concat().len(), LIMIT + 10);
}

#[tokio::test]
async fn a_failed_write_is_returned_by_the_connections_next_call() {
    let probe = Probe::default();
    probe.seen().broken = true;
    let (mut io, cork) = cork(probe.clone());
    let io = cork
        .task(async move {
            io.write_all(b"DATA").await.unwrap();
            io.flush().await.unwrap();
            io
        })
        .await;
    let mut io = io;
    let w = io.write_all(b"more").await.unwrap_err();
    assert_eq!(w.kind(), io::ErrorKind::BrokenPipe);
    assert!(w.to_string().contains("peer gone"), "{w}");
    let r = io.read(&mut [0; 8]).await.unwrap_err();
    assert_eq!(r.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(io.flush().await.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
}

/// Counts the writes that reach the transport.
struct Counted<I> {
    inner: I,
    writes: Arc<AtomicUsize>,
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, b);
        if r.is_ready() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, b);
        if r.is_ready() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, b)
    }
}

use std::time::Duration;

const ANSWERS: usize = 16;

/// An HTTP/2 server (hyper, as the inbound proxy serves a peer) holds sixteen requests,
/// then answers all of them at once with 1 KiB each: the number of writes those answers
/// took on the server's transport, and on the client's side (corked too when `corked`)
/// what the bodies were.
async fn writes_for_sixteen_answers(corked: bool) -> usize {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let server_io = Counted {
        inner: server_io,
        writes: writes.clone(),
    };
    let (release, gate) = tokio::sync::watch::channel(false);
    let held = Arc::new(AtomicUsize::new(0));
    let svc = {
        let held = held.clone();
        hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
            let mut gate = gate.clone();
            let held = held.clone();
            async move {
                held.fetch_add(1, Ordering::SeqCst);
                gate.wait_for(|open| *open).await.unwrap();
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; 1024]))))
            }
        })
    };
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let server = if corked {
        let (io, cork) = cork(server_io);
        tokio::spawn(
            cork.task(builder.serve_connection(TokioIo::new(io), svc))
                .map(drop)
                .boxed(),
        )
    } else {
        tokio::spawn(
            builder
                .serve_connection(TokioIo::new(server_io), svc)
                .map(drop)
                .boxed(),
        )
    };
    let (io, cork) = cork(client_io);
    let (sender, conn) = hyper::client::conn::http2::Builder::new(cork.executor())
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let requests: Vec<_> = (0..ANSWERS)
        .map(|i| {
            let mut s = sender.clone();
            tokio::spawn(async move {
                let req = Request::get(format!("http://myapp/{i}"))
                    .body(Full::default())
                    .unwrap();
                let rsp = s.send_request(req).await.unwrap();
                rsp.into_body().collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while held.load(Ordering::SeqCst) < ANSWERS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the server holds every request");
    // Let the server's connection settle (window updates, acknowledgements).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = writes.load(Ordering::SeqCst);
    release.send_replace(true);
    for r in requests {
        let body = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body.len(), 1024);
        assert!(body.iter().all(|b| *b == b'x'));
    }
    let after = writes.load(Ordering::SeqCst);
    server.abort();
    after - before
}

use futures::FutureExt;

#[tokio::test]
async fn sixteen_answers_ready_together_leave_in_one_write() {
    let plain = writes_for_sixteen_answers(false).await;
    let corked = writes_for_sixteen_answers(true).await;
    eprintln!("{ANSWERS} answers: {plain} writes uncorked, {corked} corked");
    // Without the cork h2 writes each answer's chained DATA payload on its own.
    assert!(plain >= ANSWERS, "uncorked: {plain} writes");
    assert!(
        corked <= 2,
        "corked: {corked} writes for {ANSWERS} answers (uncorked: {plain})"
    );
}
