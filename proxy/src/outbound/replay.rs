//! A request body that can be sent again. The first attempt streams the client's body as
//! it arrives, keeping a copy of each data frame (up to a bound) and the trailers; a retry
//! replays that copy. A body that outgrew the bound, failed, or had not ended when the
//! attempt's answer came is not replayable, and the request is not retried.
//!
//! Attempts run one after another, so at most one clone reads the client's body: a retry
//! is only made once that body has ended, after which every clone reads the copy alone.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What every clone shares.
struct Shared<B> {
    /// The client's body, until it ends or fails.
    rest: Option<B>,
    /// The data frames read so far (emptied once over the bound).
    frames: Vec<Bytes>,
    /// Their total size.
    bytes: usize,
    /// The client's trailers, once read.
    trailers: Option<HeaderMap>,
    /// The client's body ended cleanly.
    done: bool,
    /// The copy was given up: over the bound, or the body failed.
    lost: bool,
    /// The bound.
    cap: usize,
}

/// One attempt's view of the request body.
pub struct Replay<B = Incoming> {
    shared: Arc<Mutex<Shared<B>>>,
    /// The next frame of the copy this clone sends.
    pos: usize,
    trailers_sent: bool,
}

impl<B: Body> Replay<B> {
    /// Wraps the client's body, keeping up to `cap` bytes for retries.
    pub fn new(body: B, cap: usize) -> Self {
        let done = body.is_end_stream();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                rest: (!done).then_some(body),
                frames: Vec::new(),
                bytes: 0,
                trailers: None,
                done,
                lost: false,
                cap,
            })),
            pos: 0,
            trailers_sent: false,
        }
    }

    /// A handle on the same copy, to ask for [`Replay::replay`] once the attempt is over.
    pub fn replay_handle(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            pos: 0,
            trailers_sent: false,
        }
    }

    /// A fresh copy for another attempt, if the whole body has been read and kept.
    pub fn replay(&self) -> Option<Self> {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        (s.done && !s.lost).then(|| Self {
            shared: self.shared.clone(),
            pos: 0,
            trailers_sent: false,
        })
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Replay<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let mut s = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if this.pos < s.frames.len() {
            let b = s.frames[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if let Some(rest) = s.rest.as_mut() {
            return match Pin::new(rest).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    s.rest = None;
                    s.done = true;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    s.rest = None;
                    s.lost = true;
                    s.frames = Vec::new();
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if !s.lost {
                            if s.bytes + data.len() <= s.cap {
                                s.bytes += data.len();
                                s.frames.push(data.clone());
                                this.pos += 1;
                            } else {
                                s.lost = true;
                                s.frames = Vec::new();
                                this.pos = 0;
                            }
                        }
                        if s.rest.as_ref().is_some_and(Body::is_end_stream) {
                            s.rest = None;
                            s.done = true;
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Err(frame) => {
                        if let Some(t) = frame.trailers_ref() {
                            s.trailers = Some(t.clone());
                            s.rest = None;
                            s.done = true;
                            this.trailers_sent = true;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                },
            };
        }
        match &s.trailers {
            Some(t) if !this.trailers_sent => {
                this.trailers_sent = true;
                Poll::Ready(Some(Ok(Frame::trailers(t.clone()))))
            }
            _ => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.rest.is_none() && this_done(&s, self.pos, self.trailers_sent)
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let kept: u64 = s.frames.iter().skip(self.pos).map(|b| b.len() as u64).sum();
        match &s.rest {
            None => SizeHint::with_exact(kept),
            Some(rest) => {
                let h = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(kept + h.lower());
                if let Some(u) = h.upper() {
                    out.set_upper(kept + u);
                }
                out
            }
        }
    }
}

/// Whether a clone at `pos` has sent everything of a body that is no longer read.
fn this_done<B>(s: &Shared<B>, pos: usize, trailers_sent: bool) -> bool {
    pos >= s.frames.len() && (s.trailers.is_none() || trailers_sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type FrameResult = Result<Frame<Bytes>, std::io::Error>;
    type Frames = Vec<FrameResult>;
    type TestBody = StreamBody<futures::stream::Iter<std::vec::IntoIter<FrameResult>>>;

    fn body(frames: Frames) -> TestBody {
        StreamBody::new(futures::stream::iter(frames))
    }

    fn data(s: &'static str) -> FrameResult {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    fn trailers() -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        t
    }

    /// Reads a body whole: (data, trailers).
    async fn read<B: Body<Data = Bytes> + Unpin>(b: B) -> (String, Option<HeaderMap>)
    where
        B::Error: std::fmt::Debug,
    {
        let c = b.collect().await.unwrap();
        let t = c.trailers().cloned();
        (String::from_utf8(c.to_bytes().to_vec()).unwrap(), t)
    }

    #[tokio::test]
    async fn a_chunked_body_with_trailers_is_replayed_whole() {
        let first = Replay::new(
            body(vec![
                data("hello "),
                data("world"),
                Ok(Frame::trailers(trailers())),
            ]),
            64,
        );
        let handle = first.replay_handle();
        assert!(handle.replay().is_none(), "not replayable before it is read");
        assert_eq!(read(first).await, ("hello world".into(), Some(trailers())));
        for _ in 0..2 {
            let again = handle.replay().expect("replayable once read");
            assert_eq!(again.size_hint().exact(), Some(11));
            assert_eq!(read(again).await, ("hello world".into(), Some(trailers())));
        }
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_sent_but_not_kept() {
        let first = Replay::new(body(vec![data("0123456789"), data("abcdef")]), 12);
        let handle = first.replay_handle();
        assert_eq!(read(first).await.0, "0123456789abcdef");
        assert!(handle.replay().is_none());
    }

    #[tokio::test]
    async fn a_failed_body_is_not_kept() {
        let first = Replay::new(body(vec![data("abc"), Err(std::io::Error::other("reset"))]), 64);
        let handle = first.replay_handle();
        assert!(first.collect().await.is_err());
        assert!(handle.replay().is_none());
    }

    #[tokio::test]
    async fn a_body_not_read_to_its_end_is_not_replayable() {
        let mut first = Replay::new(body(vec![data("abc"), data("def")]), 64);
        let handle = first.replay_handle();
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "abc");
        assert!(handle.replay().is_none(), "the attempt has not read it all");
        drop(first);
        assert!(handle.replay().is_none());
    }

    #[tokio::test]
    async fn an_empty_body_is_replayable_at_once() {
        let first = Replay::new(http_body_util::Empty::<Bytes>::new(), 64);
        let again = first.replay().expect("nothing to read");
        assert!(again.is_end_stream());
        assert_eq!(read(again).await, (String::new(), None));
    }
}
