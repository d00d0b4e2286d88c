//! Step 3, after the faults: copies of a share of a route's requests (`RequestMirror`), sent to
//! another service or version, fire and forget.
//!
//! The caller's request goes on as if there were no mirror: its body streams to the destination
//! while a copy of each chunk is kept (`Tee`), and the copy is sent once the body has ended, in
//! a task of its own. So the mirror's latency, failure or answer never reaches the caller. A
//! body longer than the route's replay buffer (`retries.max_buffered_body`) is not mirrored at
//! all: copying it would cost memory the mirror is not worth. A copy takes one try through the
//! target's balancer, without the target's retries or concurrency limits (a mirror must not use
//! up the primary's), under a limit of its own: at most `MAX_IN_FLIGHT` copies per route and
//! target at once, each given `MIRROR_TIMEOUT`, the rest skipped. A copy carries
//! `x-mesh-mirror: 1` and has a CLIENT span of its own, a child of the request's.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::attempts::Attempts;
use super::balance::Balance;
use super::stack::call;
use crate::body::{Body, BoxError};
use crate::error;
use crate::headers::{MIRROR, absolute_uri};
use crate::metrics::{Label, Metrics, status_class};
use crate::telemetry::spans::Spans;
use crate::telemetry::{attr, end_span, propagation};

/// Copies in flight per route and target; beyond, copies are skipped.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// Limit on one copy, its answer included.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a copy waits for the caller's body to end.
const BODY_WAIT: Duration = Duration::from_secs(30);

/// A mirror of a route, resolved for one request: where copies go.
pub(crate) struct MirrorTarget {
    /// The target's balancer.
    pub(crate) balance: Balance,
    /// The backend of that balancer the copy is pinned to (a version), if any.
    pub(crate) pin: Option<usize>,
    /// The authority a copy is sent with: the target service's name.
    pub(crate) authority: Authority,
    /// Labels: the target service, and the destination and route mirrored.
    pub(crate) labels: MirrorLabels,
    /// Of the route's requests, 0 to 100.
    pub(crate) percent: f64,
    /// Copies in flight to this target from this route.
    pub(crate) in_flight: Arc<Semaphore>,
}

/// What a copy's metrics and span name.
#[derive(Clone, Debug)]
pub(crate) struct MirrorLabels {
    pub(crate) destination: Label,
    pub(crate) route: Label,
    pub(crate) mirror: Label,
}

/// Where copies are traced and counted: the request's trace, and this sidecar's spans and
/// metrics.
pub(crate) struct Recording<'a> {
    pub(crate) parent: &'a Context,
    pub(crate) b3: Option<propagation::B3>,
    pub(crate) spans: &'a Spans,
    pub(crate) metrics: &'a Arc<Metrics>,
}

/// What a copy is made of, taken from the request as it is sent to the destination.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// Sends copies of the request whose head (as forwarded) is in `parts` to the `targets` the
/// dice pick, and returns the body to send the destination in place of `body`.
pub(crate) fn start(
    targets: Vec<MirrorTarget>,
    parts: &http::request::Parts,
    body: Body,
    max_body: u64,
    recording: &Recording<'_>,
) -> Body {
    let metrics = recording.metrics;
    let picked: Vec<(MirrorTarget, OwnedSemaphorePermit)> = targets
        .into_iter()
        .filter(|t| t.percent >= 100.0 || fastrand::f64() * 100.0 < t.percent)
        .filter_map(|t| match t.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Some((t, permit)),
            Err(_) => {
                metrics.mirrored(
                    &t.labels.destination,
                    &t.labels.route,
                    &t.labels.mirror,
                    "busy",
                );
                None
            }
        })
        .collect();
    if picked.is_empty() {
        return body;
    }
    let (body, copies): (Body, Vec<oneshot::Receiver<Option<Bytes>>>) = if body.is_end_stream() {
        let ready = picked
            .iter()
            .map(|_| {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Some(Bytes::new()));
                rx
            })
            .collect();
        (body, ready)
    } else {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            picked.iter().map(|_| oneshot::channel()).unzip();
        (Tee::new(body, max_body, senders).boxed_unsync(), receivers)
    };
    for ((target, permit), copy) in picked.into_iter().zip(copies) {
        let head = Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        };
        let (spans, metrics, parent) = (
            recording.spans.clone(),
            metrics.clone(),
            recording.parent.clone(),
        );
        let b3 = recording.b3;
        tokio::spawn(async move {
            let body = tokio::time::timeout(BODY_WAIT, copy).await;
            let labels = target.labels.clone();
            match body {
                Ok(Ok(Some(body))) => send(target, head, body, &parent, b3, &spans, &metrics).await,
                // Too long for the buffer, or the caller's body never ended.
                _ => metrics.mirrored(
                    &labels.destination,
                    &labels.route,
                    &labels.mirror,
                    "body-not-copied",
                ),
            }
            drop(permit);
        });
    }
    body
}

/// Sends one copy, records it, and discards the answer.
async fn send(
    target: MirrorTarget,
    head: Head,
    body: Bytes,
    parent: &Context,
    b3: Option<propagation::B3>,
    spans: &Spans,
    metrics: &Metrics,
) {
    let labels = &target.labels;
    let trace = spans.start(parent, SpanKind::Client, || {
        format!("{} {} (mirror)", head.method, labels.mirror)
    });
    let span = trace.span();
    if span.is_recording() {
        span.set_attributes([
            KeyValue::new(attr::METHOD, head.method.to_string()),
            KeyValue::new(attr::URL_PATH, head.uri.path().to_owned()),
            KeyValue::new(attr::DESTINATION, labels.mirror.to_string()),
            KeyValue::new(attr::ROUTE, labels.route.to_string()),
            KeyValue::new(attr::MIRROR, true),
        ]);
    }
    let attempts = Arc::new(Attempts::new(trace.clone()));
    if let Some(pin) = target.pin {
        attempts.pin_backend(pin);
    }
    let outcome = async {
        let mut req = Request::new(
            Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *req.method_mut() = head.method;
        *req.uri_mut() = absolute_uri(&head.uri, target.authority.as_str())?;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = head.headers;
        req.headers_mut()
            .insert(MIRROR, HeaderValue::from_static("1"));
        propagation::inject(attempts.context(), b3, req.headers_mut());
        req.extensions_mut().insert(attempts.clone());
        tokio::time::timeout(MIRROR_TIMEOUT, call(target.balance, req))
            .await
            .map_err(|_| BoxError::from("mirror timed out"))?
    }
    .await;
    let (status, mesh_error, result) = match &outcome {
        Ok(rsp) => (rsp.status(), None, status_class(rsp.status().as_u16())),
        Err(err) => {
            let reason = error::reason(err.as_ref());
            (reason.status(), Some(reason.as_str()), "error")
        }
    };
    metrics.mirrored(&labels.destination, &labels.route, &labels.mirror, result);
    end_span(trace.span(), status, mesh_error, attempts.count());
}

/// The caller's body, passed on as it is while a copy of it is kept for the mirrors, up to
/// `limit` bytes; each mirror gets the copy when the body ends, or `None` past the limit.
struct Tee {
    inner: Body,
    copy: Option<BytesMut>,
    limit: u64,
    senders: Vec<oneshot::Sender<Option<Bytes>>>,
}

impl Tee {
    fn new(inner: Body, limit: u64, senders: Vec<oneshot::Sender<Option<Bytes>>>) -> Self {
        Self {
            inner,
            copy: Some(BytesMut::new()),
            limit,
            senders,
        }
    }

    fn keep(&mut self, data: &Bytes) {
        let fits = self
            .copy
            .as_ref()
            .is_some_and(|c| (c.len() + data.len()) as u64 <= self.limit);
        match &mut self.copy {
            Some(copy) if fits => copy.extend_from_slice(data),
            _ => {
                // Past the limit: the mirrors are told at once and nothing more is kept.
                self.copy = None;
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        let copy = self.copy.take().map(BytesMut::freeze);
        for tx in self.senders.drain(..) {
            let _ = tx.send(copy.clone());
        }
    }
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                }
                // A client may stop polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            // A broken body is not mirrored: dropping the senders says so.
            Poll::Ready(Some(Err(_))) => this.senders.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Dropped after its last chunk without being polled to its end: still whole.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed_unsync()
    }

    async fn tee(chunks: &[&'static str], limit: u64) -> (Bytes, Option<Bytes>) {
        let (tx, rx) = oneshot::channel();
        let passed = Tee::new(body(chunks), limit, vec![tx])
            .collect()
            .await
            .unwrap()
            .to_bytes();
        (passed, rx.await.unwrap())
    }

    #[tokio::test]
    async fn the_body_passes_whole_and_is_copied_while_it_fits() {
        let (passed, copy) = tee(&["hello ", "mirror"], 64).await;
        assert_eq!(passed, "hello mirror");
        assert_eq!(copy.as_deref(), Some(&b"hello mirror"[..]));
        let (passed, copy) = tee(&["hello ", "mirror"], 8).await;
        assert_eq!(passed, "hello mirror");
        assert_eq!(copy, None);
    }
}
