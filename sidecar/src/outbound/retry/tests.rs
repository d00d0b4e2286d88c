use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Mutex;
use tower::ServiceExt;

use super::*;
use crate::config::{Budget, DestinationPolicy};
use crate::error::synthetic_body;
use crate::metrics::Metrics;

fn policy(edit: impl FnOnce(&mut RetryPolicy)) -> RetryPolicy {
    let mut p = DestinationPolicy::default().retries;
    p.attempts = 3;
    p.retry_on = vec![RetryOn::GatewayError, RetryOn::ConnectFailure];
    p.backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };
    edit(&mut p);
    p
}

/// An inner service answering with `statuses` in turn (the last one repeats) and recording
/// every body it receives.
#[derive(Clone)]
struct Scripted {
    statuses: Arc<Vec<StatusCode>>,
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Scripted {
    fn new(statuses: &[u16]) -> Self {
        Self {
            statuses: Arc::new(
                statuses
                    .iter()
                    .map(|s| StatusCode::from_u16(*s).unwrap())
                    .collect(),
            ),
            calls: Arc::default(),
            bodies: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Req> for Scripted {
    type Response = Rsp;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> ResponseFuture {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let status = self.statuses[n.min(self.statuses.len() - 1)];
        let bodies = self.bodies.clone();
        Box::pin(async move {
            let body = req.into_body().collect().await?.to_bytes();
            bodies.lock().await.push(body);
            let mut rsp = http::Response::new(synthetic_body(""));
            *rsp.status_mut() = status;
            Ok(rsp)
        })
    }
}

fn metrics() -> DestinationMetrics {
    Metrics::new().destination("inventory")
}

fn get() -> Req {
    http::Request::get("http://inventory/")
        .body(synthetic_body(""))
        .unwrap()
}

fn post(body: &'static [u8]) -> Req {
    http::Request::post("http://inventory/")
        .body(synthetic_body(body))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn gateway_errors_are_retried_until_success() {
    let inner = Scripted::new(&[503, 502, 200]);
    let m = metrics();
    let svc = RetryLayer::new(policy(|_| {}), m.clone()).layer(inner.clone());
    let rsp = svc.oneshot(get()).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(inner.calls(), 3);
    assert_eq!(m.retries(RetryReason::GatewayError).get(), 2);
}

#[tokio::test(start_paused = true)]
async fn attempts_bound_the_tries_and_the_last_failure_is_returned() {
    let inner = Scripted::new(&[503]);
    let svc = RetryLayer::new(policy(|_| {}), metrics()).layer(inner.clone());
    assert_eq!(
        svc.oneshot(get()).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(inner.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn other_statuses_are_not_retried_unless_listed() {
    let inner = Scripted::new(&[409, 200]);
    let svc = RetryLayer::new(policy(|_| {}), metrics()).layer(inner.clone());
    assert_eq!(
        svc.oneshot(get()).await.unwrap().status(),
        StatusCode::CONFLICT
    );
    assert_eq!(inner.calls(), 1);

    let inner = Scripted::new(&[409, 200]);
    let svc = RetryLayer::new(policy(|p| p.retriable_status_codes = vec![409]), metrics())
        .layer(inner.clone());
    assert_eq!(svc.oneshot(get()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(inner.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_only_when_non_idempotent_is_set() {
    let inner = Scripted::new(&[503, 200]);
    let svc = RetryLayer::new(policy(|_| {}), metrics()).layer(inner.clone());
    assert_eq!(
        svc.oneshot(post(b"order")).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(inner.calls(), 1);

    let inner = Scripted::new(&[503, 503, 200]);
    let svc = RetryLayer::new(policy(|p| p.non_idempotent = true), metrics()).layer(inner.clone());
    assert_eq!(
        svc.oneshot(post(b"order")).await.unwrap().status(),
        StatusCode::OK
    );
    let bodies = inner.bodies.lock().await;
    assert_eq!(bodies.len(), 3);
    assert!(bodies.iter().all(|b| &b[..] == b"order"), "{bodies:?}");
}

#[tokio::test(start_paused = true)]
async fn body_over_the_buffer_limit_is_sent_once() {
    let inner = Scripted::new(&[503, 200]);
    let svc = RetryLayer::new(
        policy(|p| {
            p.non_idempotent = true;
            p.max_buffered_body = 4;
        }),
        metrics(),
    )
    .layer(inner.clone());
    let rsp = svc.oneshot(post(b"larger than four")).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(inner.calls(), 1);
    assert_eq!(&inner.bodies.lock().await[0][..], b"larger than four");
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_returns_the_failure_at_once() {
    // No ratio, and a reserve of exactly one retry (1 per second over 1 second).
    let p = policy(|p| {
        p.budget = Budget {
            ratio: 0.0,
            min_per_second: 1,
            window: Duration::from_secs(1),
        }
    });
    let inner = Scripted::new(&[503]);
    let m = metrics();
    let svc = RetryLayer::new(p, m.clone()).layer(inner.clone());
    for _ in 0..3 {
        let rsp = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // 3 requests + the 1 retry the reserve allowed.
    assert_eq!(inner.calls(), 4);
    assert_eq!(m.retries(RetryReason::GatewayError).get(), 1);
    assert!(m.budget_exhausted.get() >= 2);
}

#[test]
fn retry_reasons_follow_retry_on() {
    let p = policy(|p| p.retry_on = vec![RetryOn::GatewayError, RetryOn::RefusedStream]);
    let s = |c| StatusCode::from_u16(c).unwrap();
    assert_eq!(
        retry_reason(&p, Class::ServerError(s(503))),
        Some(RetryReason::GatewayError)
    );
    assert_eq!(retry_reason(&p, Class::ServerError(s(500))), None);
    assert_eq!(
        retry_reason(&p, Class::PerTryTimeout),
        Some(RetryReason::PerTryTimeout)
    );
    assert_eq!(
        retry_reason(&p, Class::RefusedStream),
        Some(RetryReason::RefusedStream)
    );
    assert_eq!(retry_reason(&p, Class::ConnectFailure), None);
    assert_eq!(retry_reason(&p, Class::Reset), None);
    assert_eq!(retry_reason(&p, Class::Success(s(200))), None);
    let p = policy(|p| p.retry_on = vec![RetryOn::ServerError, RetryOn::Reset]);
    assert_eq!(
        retry_reason(&p, Class::ServerError(s(500))),
        Some(RetryReason::ServerError)
    );
    assert_eq!(retry_reason(&p, Class::Reset), Some(RetryReason::Reset));
}

#[test]
fn backoff_stays_within_its_growing_ceiling() {
    let b = Backoff {
        base: Duration::from_millis(25),
        max: Duration::from_millis(250),
    };
    for n in 1..=12u32 {
        let ceiling = Duration::from_millis(25 * (1u64 << (n - 1))).min(b.max);
        for _ in 0..200 {
            assert!(backoff(&b, n) <= ceiling);
        }
    }
    // Full jitter spreads waits across the range rather than clustering at the ceiling.
    let waits: Vec<_> = (0..200).map(|_| backoff(&b, 4)).collect();
    assert!(waits.iter().any(|w| *w < Duration::from_millis(100)));
    assert!(waits.iter().any(|w| *w > Duration::from_millis(100)));
    let _ = Counter::<u64>::default();
}

/// Fails its first `failures` tries with a connect failure, then answers 200, recording bodies.
#[derive(Clone, Default)]
struct RefusesConnections {
    failures: usize,
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Service<Req> for RefusesConnections {
    type Response = Rsp;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> ResponseFuture {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let failures = self.failures;
        let bodies = self.bodies.clone();
        Box::pin(async move {
            if n < failures {
                return Err(crate::error::ConnectFailed {
                    endpoint: ([127, 0, 0, 1], 9).into(),
                    peer: "spiffe://mesh.local/ns/default/sa/inventory"
                        .parse()
                        .unwrap(),
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                }
                .into());
            }
            bodies
                .lock()
                .await
                .push(req.into_body().collect().await?.to_bytes());
            Ok(http::Response::new(synthetic_body("")))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_after_a_connect_failure_because_nothing_was_sent() {
    let inner = RefusesConnections {
        failures: 2,
        ..Default::default()
    };
    let m = metrics();
    let svc = RetryLayer::new(policy(|_| {}), m.clone()).layer(inner.clone());
    assert_eq!(
        svc.oneshot(post(b"order")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    assert_eq!(m.retries(RetryReason::ConnectFailure).get(), 2);
    assert_eq!(
        &inner.bodies.lock().await[..],
        [Bytes::from_static(b"order")]
    );

    // Without connect-failure in retry_on, a POST is sent once.
    let inner = RefusesConnections {
        failures: 1,
        ..Default::default()
    };
    let svc = RetryLayer::new(
        policy(|p| p.retry_on = vec![RetryOn::GatewayError]),
        metrics(),
    )
    .layer(inner.clone());
    assert!(svc.oneshot(post(b"order")).await.is_err());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
}
