//! Step 5b: retries, within a budget, with backoff, only when it is safe.
//!
//! # Why a budget and not just a number of attempts
//! With three attempts per request, an outage triples the load on the failing service just
//! when it can least take it, and every hop that retries multiplies it again. A budget caps
//! retries at `ratio` of the requests of the last `window` (plus `min_per_second`, so a quiet
//! caller can still retry): under a full outage the extra load is at most `ratio`, and once the
//! budget is spent the original failure is returned at once. The budget itself is tower's
//! `TpsBudget`.
//!
//! # What is retried
//! A try is retried when its outcome ([`Class`]) matches `retry_on` or `retriable_status_codes`,
//! tries remain, the budget allows, and the request is safe to send again: an idempotent method
//! (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or any method when `non_idempotent` is set, and a
//! body that fits `max_buffered_body` (see [`super::replay`]). Other methods (POST, PATCH) are
//! still retried after a connect failure or a refused stream: the request never reached the
//! app, so sending it again cannot do anything twice. Between tries the layer waits a
//! random time up to an exponentially growing ceiling (full jitter), so retries from many callers
//! do not arrive in step. Each try goes through the balancer again, which prefers endpoints this
//! request has not tried.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request};
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::{Layer, Service};

use crate::body::{Body, BoxError};
use crate::classify::Class;
use crate::config::{Backoff, RetryOn, RetryPolicy};
use crate::metrics::{DestinationMetrics, RetryReason};
use opentelemetry::KeyValue;

use super::attempts::Attempts;
use super::replay::Replay;
use super::stack::{Req, ResponseFuture, Rsp};

/// Retries the inner service per the destination's policy.
#[derive(Clone, Debug)]
pub(crate) struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Makes [`Retry`] services sharing one budget.
#[derive(Clone, Debug)]
pub(crate) struct RetryLayer {
    shared: Arc<Shared>,
}

struct Shared {
    policy: RetryPolicy,
    budget: Arc<TpsBudget>,
    metrics: DestinationMetrics,
}

// === impl RetryLayer ===

impl RetryLayer {
    pub(crate) fn new(policy: RetryPolicy, metrics: DestinationMetrics) -> Self {
        // Validation keeps the window in 1s..=60s and the ratio in 0..=1000, as TpsBudget needs.
        let budget = Arc::new(TpsBudget::new(
            policy.budget.window,
            policy.budget.min_per_second,
            policy.budget.ratio,
        ));
        Self {
            shared: Arc::new(Shared {
                policy,
                budget,
                metrics,
            }),
        }
    }

    /// A layer for one route of the destination: its own policy, this layer's budget and
    /// metrics. A route's policy carries the destination's budget settings, so no route can
    /// spend more than the destination's budget allows.
    pub(crate) fn for_route(&self, policy: RetryPolicy) -> Self {
        Self {
            shared: Arc::new(Shared {
                policy,
                budget: self.shared.budget.clone(),
                metrics: self.shared.metrics.clone(),
            }),
        }
    }

    /// The retry budget this layer's services share (for `bench_support`).
    pub(crate) fn budget(&self) -> &TpsBudget {
        &self.shared.budget
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl Retry ===

impl<S> Service<Req> for Retry<S>
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
        // Each try waits for the inner service's readiness itself (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> ResponseFuture {
        let (inner, shared) = (self.inner.clone(), self.shared.clone());
        Box::pin(async move { shared.run(inner, req).await })
    }
}

impl Shared {
    async fn run<S>(&self, inner: S, req: Req) -> Result<Rsp, BoxError>
    where
        S: Service<Req, Response = Rsp, Error = BoxError, Future = ResponseFuture> + Clone,
    {
        self.budget.deposit();
        // A non-idempotent request may still be retried when the try provably never reached
        // the app: the connection failed, or the peer refused the stream unprocessed.
        let unprocessed_only = !self.may_retry(req.method());
        let unprocessed_retries = self
            .policy
            .retry_on
            .iter()
            .any(|on| matches!(on, RetryOn::ConnectFailure | RetryOn::RefusedStream));
        if self.policy.attempts <= 1 || (unprocessed_only && !unprocessed_retries) {
            return super::stack::call(inner, req).await;
        }
        let (parts, body) = req.into_parts();
        let held = match Replay::read(body, self.policy.max_buffered_body).await? {
            Replay::Buffered(held) => held,
            Replay::TooLarge(body) => {
                return super::stack::call(inner, Request::from_parts(parts, body)).await;
            }
        };
        let attempts = parts.extensions.get::<Arc<Attempts>>().cloned();
        let event =
            |name: &'static str, attributes: fn(RetryReason, u32) -> Vec<KeyValue>, reason, n| {
                if let Some(a) = &attempts {
                    a.event(name, || attributes(reason, n));
                }
            };
        let mut attempt = 1;
        loop {
            let result = super::stack::call(inner.clone(), rebuild(&parts, held.body())).await;
            if attempt >= self.policy.attempts {
                return result;
            }
            let class = match &result {
                Ok(rsp) => Class::of_status(rsp.status()),
                Err(err) => Class::of_error(err.as_ref()),
            };
            let Some(reason) = retry_reason(&self.policy, class) else {
                return result;
            };
            if unprocessed_only
                && !matches!(
                    reason,
                    RetryReason::ConnectFailure | RetryReason::RefusedStream
                )
            {
                return result;
            }
            if !self.budget.withdraw() {
                self.metrics.budget_exhausted.inc();
                event("retry budget exhausted", reason_attributes, reason, attempt);
                return result;
            }
            self.metrics.retries(reason).inc();
            event("retry", reason_attributes, reason, attempt + 1);
            tracing::debug!(reason = reason.as_str(), attempt, "retrying");
            // Drops the failed response and its body.
            drop(result);
            tokio::time::sleep(backoff(&self.policy.backoff, attempt)).await;
            attempt += 1;
        }
    }

    fn may_retry(&self, method: &Method) -> bool {
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        idempotent || self.policy.non_idempotent
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Span event attributes of a retry decision: what failed, and the try about to be made.
fn reason_attributes(reason: RetryReason, attempt: u32) -> Vec<KeyValue> {
    vec![
        KeyValue::new("mesh.retry.reason", reason.as_str()),
        KeyValue::new("mesh.attempt", i64::from(attempt)),
    ]
}

/// The request for one try: the same head, a fresh copy of the body, the shared attempt record.
fn rebuild(parts: &http::request::Parts, body: Body) -> Req {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    if let Some(attempts) = parts.extensions.get::<Arc<Attempts>>() {
        req.extensions_mut().insert(attempts.clone());
    }
    req
}

/// Why a try with outcome `class` should be retried under `policy`, if it should.
pub(crate) fn retry_reason(policy: &RetryPolicy, class: Class) -> Option<RetryReason> {
    let on = |c: RetryOn| policy.retry_on.contains(&c);
    match class {
        Class::Success(s) | Class::ServerError(s)
            if policy.retriable_status_codes.contains(&s.as_u16()) =>
        {
            Some(RetryReason::RetriableStatus)
        }
        Class::ServerError(s) if matches!(s.as_u16(), 502..=504) && on(RetryOn::GatewayError) => {
            Some(RetryReason::GatewayError)
        }
        Class::ServerError(_) if on(RetryOn::ServerError) => Some(RetryReason::ServerError),
        Class::PerTryTimeout if on(RetryOn::GatewayError) || on(RetryOn::ServerError) => {
            Some(RetryReason::PerTryTimeout)
        }
        Class::ConnectFailure if on(RetryOn::ConnectFailure) => Some(RetryReason::ConnectFailure),
        Class::RefusedStream if on(RetryOn::RefusedStream) => Some(RetryReason::RefusedStream),
        Class::Reset if on(RetryOn::Reset) => Some(RetryReason::Reset),
        _ => None,
    }
}

/// The wait before retry `n` (n = 1 after the first try): uniform in
/// `[0, min(max, base * 2^(n-1))]`.
pub(crate) fn backoff(policy: &Backoff, n: u32) -> Duration {
    let ceiling = policy
        .base
        .saturating_mul(1 << n.saturating_sub(1).min(20))
        .min(policy.max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests;
