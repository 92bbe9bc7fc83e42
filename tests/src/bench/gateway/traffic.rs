//! Both ends of the gateway benchmark's traffic, in this process: a backend that answers
//! framed requests, and the clients that send them (one bulk transfer, paced ping-pong,
//! many concurrent request flows).
//!
//! Every request on a connection is a 16-byte header — how many payload bytes follow
//! (u64, big endian) and how many bytes the answer must have (u64) — then the payload.
//! The backend reads the payload, writes the answer and counts one request, so the
//! harness can check that every answer a client counted came from the backend (no
//! tunnel answered by itself). Sockets are made in the namespace the caller names (see
//! [`super::netns::in_netns`]) and then driven by this process's tokio runtime.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::netns::in_netns;

/// Bytes of a request header.
pub const HEADER: usize = 16;
/// The largest answer the backend writes.
pub const MAX_ANSWER: u64 = 1 << 20;

fn header(payload: u64, answer: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&payload.to_be_bytes());
    h[8..].copy_from_slice(&answer.to_be_bytes());
    h
}

/// A request: its header and payload in one buffer, and the answer's size.
#[derive(Clone, Debug)]
pub struct Request {
    bytes: Vec<u8>,
    answer: usize,
}

impl Request {
    /// `payload` bytes up, `answer` bytes down.
    pub fn new(payload: usize, answer: usize) -> Self {
        let mut bytes = header(payload as u64, answer as u64).to_vec();
        bytes.resize(HEADER + payload, 0x61);
        Request { bytes, answer }
    }
}

/// The backend: accepts on a listener and answers requests until dropped.
pub struct Backend {
    requests: Arc<AtomicU64>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Listens on `addr` in namespace `ns` (call inside the runtime).
    pub fn start(ns: Option<&str>, addr: SocketAddr) -> io::Result<Self> {
        let listener = in_netns(ns, move || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let _ = serve(tcp, count).await;
                });
            }
        });
        Ok(Backend { requests, addr, task })
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut tcp: TcpStream, count: Arc<AtomicU64>) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 * 1024];
    let zeros = vec![0x62u8; 64 * 1024];
    loop {
        let mut h = [0u8; HEADER];
        match tcp.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut left = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
        let answer = u64::from_be_bytes(h[8..].try_into().expect("8 bytes")).min(MAX_ANSWER);
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = tcp.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= n as u64;
        }
        let mut left = answer as usize;
        while left > 0 {
            let n = left.min(zeros.len());
            tcp.write_all(&zeros[..n]).await?;
            left -= n;
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// `n` connections to `addr`, made in namespace `ns`.
pub async fn connect(ns: Option<&str>, addr: SocketAddr, n: usize) -> io::Result<Vec<TcpStream>> {
    let ns = ns.map(str::to_owned);
    let std_conns = tokio::task::spawn_blocking(move || {
        in_netns(ns.as_deref(), move || {
            (0..n)
                .map(|_| {
                    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                    s.set_nodelay(true)?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
                .collect::<io::Result<Vec<_>>>()
        })
    })
    .await
    .map_err(io::Error::other)??;
    std_conns.into_iter().map(TcpStream::from_std).collect()
}

/// One request on `tcp`: writes it, reads the whole answer into `buf`.
pub async fn exchange(tcp: &mut TcpStream, request: &Request, buf: &mut Vec<u8>) -> io::Result<()> {
    tcp.write_all(&request.bytes).await?;
    buf.resize(request.answer, 0);
    tcp.read_exact(&mut buf[..]).await?;
    Ok(())
}

/// Whether one small request through `addr` (in namespace `ns`) is answered, with
/// blocking sockets and short timeouts: a readiness probe.
pub fn answers(ns: Option<&str>, addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(&header(0, 1))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(())
    })
    .is_ok()
}

/// Sends `bytes` of payload on `tcp` as one request with an 8-byte answer; returns the
/// time from the first byte written to the answer read.
pub async fn bulk(tcp: &mut TcpStream, bytes: u64) -> io::Result<Duration> {
    let chunk = vec![0x63u8; 256 * 1024];
    let t0 = Instant::now();
    tcp.write_all(&header(bytes, 8)).await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        tcp.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    let mut ack = [0u8; 8];
    tcp.read_exact(&mut ack).await?;
    Ok(t0.elapsed())
}

/// `count` requests on `tcp`, one every `1/rate` seconds (each waits for the previous
/// answer); every round trip's duration.
pub async fn paced(
    tcp: &mut TcpStream,
    request: &Request,
    rate: u32,
    count: usize,
) -> io::Result<Vec<Duration>> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = Vec::new();
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        tick.tick().await;
        let t0 = Instant::now();
        exchange(tcp, request, &mut buf).await?;
        samples.push(t0.elapsed());
    }
    Ok(samples)
}

/// What many concurrent request flows achieved in their measured window.
#[derive(Clone, Debug, Default)]
pub struct FlowsResult {
    /// Requests answered inside the window.
    pub completed: u64,
    /// Flows that failed or stalled past the window's end (each ends its flow).
    pub errors: u64,
    /// The window.
    pub window: Duration,
    /// Every answered request's round trip.
    pub latencies: Vec<Duration>,
}

impl FlowsResult {
    /// Requests per second over the window.
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Closed-loop request flows, one per connection: each sends a request as soon as the
/// previous answer is in. Requests that start after `warmup` and end before the window
/// closes are counted; a flow whose request is still open `grace` after the window
/// stops and counts as an error.
pub async fn flows(
    conns: Vec<TcpStream>,
    request: &Request,
    warmup: Duration,
    window: Duration,
    grace: Duration,
) -> FlowsResult {
    let start = tokio::time::Instant::now();
    let (measure_from, measure_to) = (start + warmup, start + warmup + window);
    let mut tasks = tokio::task::JoinSet::new();
    for mut tcp in conns {
        let request = request.clone();
        tasks.spawn(async move {
            let mut buf = Vec::new();
            let mut latencies = Vec::new();
            let mut failed = false;
            while tokio::time::Instant::now() < measure_to {
                let t0 = tokio::time::Instant::now();
                match tokio::time::timeout_at(measure_to + grace, exchange(&mut tcp, &request, &mut buf))
                    .await
                {
                    Ok(Ok(())) => {
                        let t1 = tokio::time::Instant::now();
                        if t0 >= measure_from && t1 <= measure_to {
                            latencies.push(t1 - t0);
                        }
                    }
                    _ => {
                        failed = true;
                        break;
                    }
                }
            }
            (latencies, failed)
        });
    }
    let mut result = FlowsResult {
        window,
        ..FlowsResult::default()
    };
    while let Some(done) = tasks.join_next().await {
        let Ok((latencies, failed)) = done else {
            result.errors += 1;
            continue;
        };
        result.completed += latencies.len() as u64;
        result.errors += u64::from(failed);
        result.latencies.extend(latencies);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backend_answers_each_request_with_the_size_asked_for() {
        let backend = Backend::start(None, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = backend.addr();
        let mut conns = connect(None, addr, 2).await.unwrap();
        let mut buf = Vec::new();
        exchange(&mut conns[0], &Request::new(100, 5000), &mut buf)
            .await
            .unwrap();
        assert_eq!(buf.len(), 5000);
        let took = bulk(&mut conns[1], 3 << 20).await.unwrap();
        assert!(took > Duration::ZERO);
        let lat = paced(&mut conns[0], &Request::new(10, 10), 1000, 5)
            .await
            .unwrap();
        assert_eq!(lat.len(), 5);
        assert_eq!(backend.requests(), 7);
        let r = flows(
            conns,
            &Request::new(10, 100),
            Duration::from_millis(20),
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(r.errors, 0);
        assert!(r.completed > 0 && r.completed as usize == r.latencies.len());
        assert!(backend.requests() >= 7 + r.completed);
        // The probe blocks: off the runtime, so the backend can answer it.
        let probe = tokio::task::spawn_blocking(move || answers(None, addr));
        assert!(probe.await.unwrap());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nothing = closed.local_addr().unwrap();
        drop(closed);
        assert!(
            !tokio::task::spawn_blocking(move || answers(None, nothing))
                .await
                .unwrap()
        );
    }
}
