//! Step 7a: the destination's concurrency limits, shedding load at once when they are full.
//!
//! Up to `max_requests` requests are in flight to a destination; up to `max_pending` more wait
//! for a slot (bounded by the overall timeout, which sits outside this layer); anything beyond
//! is answered 503 with `x-mesh-overloaded: true` without queueing, so a slow destination
//! cannot make the caller's sidecar pile up requests and memory. Shedding happens once per
//! request, outside the retry layer: a shed request is never retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::config::BreakerPolicy;
use crate::error::{BoxError, Overloaded};
use opentelemetry::KeyValue;

use super::attempts::Attempts;

use super::{Req, ResponseFuture, Rsp};

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
            let _permit = match limits.in_flight.clone().try_acquire_owned() {
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
            super::call(inner, req).await
        })
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
    async fn a_cancelled_wait_frees_its_pending_place() {
        let gate = Arc::new(Semaphore::new(0));
        let svc = ShedLayer::new(&policy(1, 1), "inventory".into(), Counter::default())
            .layer(gated(gate.clone()));
        let call = || svc.clone().oneshot(http::Request::new(synthetic_body("")));
        let _in_flight = tokio::spawn(call());
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
