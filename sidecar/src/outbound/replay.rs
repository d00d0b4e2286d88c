//! Request bodies that can be sent again.
//!
//! A retry must send the same bytes as the first try. Before the first try of a retryable
//! request, the body is read into memory up to `max_buffered_body`; if it ends within the limit
//! (trailers included) each try sends a copy. If it does not, the bytes read so far are sent
//! once, followed by the rest of the stream, and the request is not retried: large uploads keep
//! streaming and are never held whole in memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};
use crate::error::RequestBodyFailed;

/// The outcome of reading a body for replay.
pub(crate) enum Replay {
    /// The whole body, ready to be sent any number of times.
    Buffered(Buffered),
    /// The body is larger than the limit: send it once.
    TooLarge(Body),
}

/// A complete request body held in memory.
#[derive(Clone, Debug)]
pub(crate) struct Buffered {
    data: Bytes,
    trailers: Option<HeaderMap>,
}

/// Sends held frames: the data, then the trailers.
#[derive(Debug)]
struct ReplayBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

/// Sends the bytes already read, then the rest of the original body.
struct PrefixedBody {
    prefix: Option<Bytes>,
    rest: Body,
}

// === impl Replay ===

impl Replay {
    /// Reads `body` until it ends or exceeds `limit` bytes.
    pub(crate) async fn read(mut body: Body, limit: u64) -> Result<Self, BoxError> {
        if body.size_hint().lower() > limit {
            // A declared length over the limit: do not read anything ahead.
            return Ok(Replay::TooLarge(body));
        }
        let mut data = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(RequestBodyFailed)?;
            match frame.into_data() {
                Ok(chunk) => {
                    if (data.len() + chunk.len()) as u64 > limit {
                        data.extend_from_slice(&chunk);
                        let rest = PrefixedBody {
                            prefix: Some(data.freeze()),
                            rest: body,
                        };
                        return Ok(Replay::TooLarge(rest.boxed_unsync()));
                    }
                    data.extend_from_slice(&chunk);
                }
                Err(frame) => {
                    // Trailers end the body.
                    if let Ok(trailers) = frame.into_trailers() {
                        return Ok(Replay::Buffered(Buffered {
                            data: data.freeze(),
                            trailers: Some(trailers),
                        }));
                    }
                }
            }
        }
        Ok(Replay::Buffered(Buffered {
            data: data.freeze(),
            trailers: None,
        }))
    }
}

// === impl Buffered ===

impl Buffered {
    /// A fresh body with the held bytes and trailers (no copy of the bytes).
    pub(crate) fn body(&self) -> Body {
        ReplayBody {
            data: Some(self.data.clone()).filter(|d| !d.is_empty()),
            trailers: self.trailers.clone(),
        }
        .boxed_unsync()
    }
}

impl HttpBody for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

// === impl PrefixedBody ===

impl HttpBody for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A body of `chunks`, optionally ending with trailers, with no declared length.
    fn chunked(chunks: &[&'static [u8]], trailers: Option<HeaderMap>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        http_body_util::StreamBody::new(tokio_stream::iter(frames))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    async fn collect(body: Body) -> (Bytes, Option<HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn small_chunked_body_replays_byte_identical_every_time() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = chunked(&[b"first ", b"second ", b"third"], Some(trailers));
        let Replay::Buffered(held) = Replay::read(body, 64).await.unwrap() else {
            panic!("a 18-byte body fits a 64-byte limit");
        };
        for _ in 0..3 {
            let (data, trailers) = collect(held.body()).await;
            assert_eq!(&data[..], b"first second third");
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
    }

    #[tokio::test]
    async fn body_over_the_limit_streams_once_without_duplicating_the_prefix() {
        let body = chunked(&[b"0123456789", b"abcdefghij", b"KLMNOPQRST"], None);
        let Replay::TooLarge(rest) = Replay::read(body, 15).await.unwrap() else {
            panic!("a 30-byte body exceeds a 15-byte limit");
        };
        let (data, _) = collect(rest).await;
        assert_eq!(&data[..], b"0123456789abcdefghijKLMNOPQRST");
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_not_read_ahead() {
        let body = http_body_util::Full::new(Bytes::from_static(&[7u8; 100]))
            .map_err(|never| match never {})
            .boxed_unsync();
        let Replay::TooLarge(rest) = Replay::read(body, 10).await.unwrap() else {
            panic!("100 bytes exceed 10");
        };
        assert_eq!(rest.size_hint().exact(), Some(100));
        assert_eq!(collect(rest).await.0.len(), 100);
    }

    #[tokio::test]
    async fn empty_body_replays_as_empty() {
        let Replay::Buffered(held) = Replay::read(crate::error::synthetic_body(""), 10)
            .await
            .unwrap()
        else {
            panic!("empty fits");
        };
        assert!(held.body().is_end_stream());
    }
}
