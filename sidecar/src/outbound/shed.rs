//! Step 7a: the destination's concurrency limits, shedding load at once when they are full.
//!
//! Up to `max_requests` requests are in flight to a destination; up to `max_pending` more wait
//! for a slot (bounded by the overall timeout, which sits outside this layer); anything beyond
//! is answered 503 with `x-mesh-overloaded: true` without queueing, so a slow destination
//! cannot make the caller's sidecar pile up requests and memory. Shedding happens once per
//! request, outside the retry layer: a shed request is never retried. A request holds its slot
//! until its response body has ended (or been dropped), so long streaming responses count as
//! in flight for as long as they stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::body::{Body, BoxError};
use crate::config::BreakerPolicy;
use crate::error::Overloaded;
use opentelemetry::KeyValue;

use super::attempts::Attempts;

use super::stack::{Req, ResponseFuture, Rsp};

/// Admits requests within the limits, sheds the rest.
#[derive(Clone, Debug)]
pub(crate) struct Shed<S> {
    inner: S,
    limits: Arc<Limits>,
}

/// Makes [`Shed`] services sharing one set of limits.
#[derive(Clone, Debug)]
pub(crate) struct ShedLayer {
    limits: Arc<Limits>,
}

#[derive(Debug)]
struct Limits {
    /// One permit per request allowed in flight.
    in_flight: Arc<Semaphore>,
    /// Requests waiting for a permit now.
    waiting: AtomicU32,
    max_requests: u32,
    max_pending: u32,
    destination: Arc<str>,
    shed: Counter,
}

/// Leaves the wait count however the wait ends (granted, or cancelled by a timeout).
struct Waiting<'a>(&'a AtomicU32);

// === impl ShedLayer ===

impl ShedLayer {
    pub(crate) fn new(policy: &BreakerPolicy, destination: Arc<str>, shed: Counter) -> Self {
        Self {
            limits: Arc::new(Limits {
                in_flight: Arc::new(Semaphore::new(policy.max_requests as usize)),
                waiting: AtomicU32::new(0),
                max_requests: policy.max_requests,
                max_pending: policy.max_pending,
                destination,
                shed,
            }),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            limits: self.limits.clone(),
        }
    }
}

// === impl Shed ===

impl<S> Service<Req> for Shed<S>
where
    S: Service<Req, Response = Rsp, Error = BoxError, Future = ResponseFuture>
        + Clone
        + Send
        + 'static,
{
    type Response = Rsp;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Admission is decided per request in `call`, so that excess load is answered rather
        // than left waiting for readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> ResponseFuture {
        let (inner, limits) = (self.inner.clone(), self.limits.clone());
        Box::pin(async move {
            let permit = match limits.in_flight.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if limits.waiting.fetch_add(1, Ordering::AcqRel) >= limits.max_pending {
                        limits.waiting.fetch_sub(1, Ordering::AcqRel);
                        limits.shed.inc();
                        if let Some(attempts) = req.extensions().get::<Arc<Attempts>>() {
                            attempts.event("load shed", || {
                                vec![
                                    KeyValue::new(
                                        "mesh.max_requests",
                                        i64::from(limits.max_requests),
                                    ),
                                    KeyValue::new(
                                        "mesh.max_pending",
                                        i64::from(limits.max_pending),
                                    ),
                                ]
                            });
                        }
                        return Err(Overloaded {
                            destination: limits.destination.to_string(),
                            max_requests: limits.max_requests,
                            max_pending: limits.max_pending,
                        }
                        .into());
                    }
                    let _waiting = Waiting(&limits.waiting);
                    limits.in_flight.clone().acquire_owned().await?
                }
            };
            let rsp = super::stack::call(inner, req).await?;
            Ok(rsp.map(|body| {
                InFlightBody {
                    body,
                    permit: Some(permit),
                }
                .boxed_unsync()
            }))
        })
    }
}

/// A response body that holds its request's slot until it ends.
struct InFlightBody {
    body: Body,
    permit: Option<OwnedSemaphorePermit>,
}

impl HttpBody for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            // Ended: free the slot now rather than when the body is dropped.
            self.permit = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{find_cause, synthetic_body};
    use std::time::Duration;
    use tower::ServiceExt;

    fn policy(max_requests: u32, max_pending: u32) -> BreakerPolicy {
        BreakerPolicy {
            max_requests,
            max_pending,
            ..crate::config::DestinationPolicy::default().circuit_breaker
        }
    }

    /// A service that answers when `gate` gets a permit.
    fn gated(
        gate: Arc<Semaphore>,
    ) -> impl Service<Req, Response = Rsp, Error = BoxError, Future = ResponseFuture> + Clone {
        tower::service_fn(move |_req: Req| -> ResponseFuture {
            let gate = gate.clone();
            Box::pin(async move {
                gate.acquire().await?.forget();
                Ok(http::Response::new(synthetic_body("ok")))
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn excess_beyond_in_flight_and_pending_is_shed_at_once() {
        let gate = Arc::new(Semaphore::new(0));
        let shed = Counter::default();
        let svc = ShedLayer::new(&policy(2, 1), "inventory".into(), shed.clone())
            .layer(gated(gate.clone()));
        let call = || svc.clone().oneshot(http::Request::new(synthetic_body("")));
        let held: Vec<_> = (0..3).map(|_| tokio::spawn(call())).collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Two in flight, one waiting: the fourth is refused without waiting.
        let err = call().await.unwrap_err();
        let overloaded = find_cause::<Overloaded>(err.as_ref()).unwrap();
        assert_eq!((overloaded.max_requests, overloaded.max_pending), (2, 1));
        assert_eq!(shed.get(), 1);
        gate.add_permits(3);
        for h in held {
            assert_eq!(h.await.unwrap().unwrap().status(), http::StatusCode::OK);
        }
        // Slots are free again.
        gate.add_permits(1);
        assert!(call().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_streaming_response_holds_its_slot_until_the_body_ends() {
        use http_body_util::BodyExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let body = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let svc = ShedLayer::new(&policy(1, 0), "inventory".into(), Counter::default()).layer(
            tower::service_fn(move |_req: Req| -> ResponseFuture {
                let body = body.clone();
                Box::pin(async move {
                    type Frames = std::pin::Pin<
                        Box<dyn tokio_stream::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send>,
                    >;
                    let stream: Frames = match body.lock().await.take() {
                        Some(rx) => Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
                        None => Box::pin(tokio_stream::empty()),
                    };
                    Ok(http::Response::new(
                        http_body_util::StreamBody::new(stream).boxed_unsync(),
                    ))
                })
            }),
        );
        let call = || svc.clone().oneshot(http::Request::new(synthetic_body("")));
        let mut streaming = call().await.unwrap().into_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
            .await
            .unwrap();
        assert!(streaming.frame().await.is_some());
        // Headers are out, the body still streams: the slot is taken.
        assert!(call().await.is_err());
        drop(tx);
        assert!(streaming.frame().await.is_none());
        assert!(call().await.is_ok(), "the slot is free once the body ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_frees_its_pending_place() {
        let gate = Arc::new(Semaphore::new(0));
        let svc = ShedLayer::new(&policy(1, 1), "inventory".into(), Counter::default())
            .layer(gated(gate.clone()));
        let call = || svc.clone().oneshot(http::Request::new(synthetic_body("")));
        // The response (and with it the slot) is dropped once sent, as a server would.
        let in_flight =
            crate::outbound::stack::call(svc.clone(), http::Request::new(synthetic_body("")));
        let _in_flight = tokio::spawn(async move { in_flight.await.map(drop) });
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The waiter gives up (as the overall timeout would make it).
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call())
                .await
                .is_err()
        );
        // Its place is free: the next request waits instead of being shed.
        let waiting = tokio::spawn(call());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!waiting.is_finished());
        gate.add_permits(2);
        assert!(waiting.await.unwrap().is_ok());
    }
}
