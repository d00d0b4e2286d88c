//! A request body's byte limit enforced as the body streams, for bodies whose length is not
//! declared up front (chunked HTTP/1.1, HTTP/2 without `content-length`).
//!
//! The limit travels as a request extension from whoever sets it to where the body is handed
//! on; the setter keeps a clone to learn afterwards whether the body went over, because the
//! error the body yields is lost inside the HTTP client that was sending it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};

/// At most `max` bytes of request body; clones share whether that was exceeded.
#[derive(Debug, Clone)]
pub(crate) struct BodyLimit {
    max: u64,
    exceeded: Arc<AtomicBool>,
}

/// A body went over its limit; the stream carrying it is reset.
#[derive(Debug, thiserror::Error)]
#[error("the request body is over the limit of {max} bytes")]
pub(crate) struct BodyTooLarge {
    pub(crate) max: u64,
}

// === impl BodyLimit ===

impl BodyLimit {
    pub(crate) fn new(max: u64) -> Self {
        Self {
            max,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// Whether a body under this limit went over it.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    /// `body`, failing with [`BodyTooLarge`] at the first frame that takes it over the limit.
    pub(crate) fn apply(self, body: Body) -> Body {
        Limited {
            inner: body,
            remaining: self.max,
            limit: self,
        }
        .boxed_unsync()
    }
}

/// A body counting its bytes against a [`BodyLimit`].
struct Limited {
    inner: Body,
    remaining: u64,
    limit: BodyLimit,
}

impl HttpBody for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
            match self.remaining.checked_sub(len) {
                Some(remaining) => self.remaining = remaining,
                None => {
                    self.limit.exceeded.store(true, Ordering::Release);
                    let max = self.limit.max;
                    return Poll::Ready(Some(Err(BodyTooLarge { max }.into())));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(sizes: &[usize]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; *n]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    #[tokio::test]
    async fn a_body_within_the_limit_passes_whole() {
        let limit = BodyLimit::new(10);
        let body = limit.clone().apply(chunks(&[4, 6]));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 10);
        assert!(!limit.exceeded());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_fails_and_says_so() {
        let limit = BodyLimit::new(10);
        let body = limit.clone().apply(chunks(&[4, 6, 1]));
        let err = body.collect().await.unwrap_err();
        assert!(err.downcast_ref::<BodyTooLarge>().is_some(), "{err}");
        assert!(limit.exceeded());
    }
}
