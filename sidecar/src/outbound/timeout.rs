//! Steps 5a and 5c: the overall request timeout and the per-try timeout.
//!
//! The same layer serves both. Outside the retry layer it bounds the whole request, queueing,
//! every try and backoff included, and answers 504. Inside it bounds one try; the retry layer
//! sees a [`PerTryTimeout`] and may try another endpoint.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tower::{Layer, Service};

use crate::body::BoxError;
use crate::error::{PerTryTimeout, RequestTimeout};
use opentelemetry::KeyValue;

use super::attempts::Attempts;

use super::stack::{Req, ResponseFuture, Rsp};

/// Which limit a [`Timeout`] enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// The whole request.
    Request,
    /// One try.
    PerTry,
}

/// Bounds the inner service's response time, when a limit is set.
#[derive(Clone, Debug)]
pub(crate) struct Timeout<S> {
    inner: S,
    limit: Option<Duration>,
    kind: Kind,
    destination: Arc<str>,
    expired: Counter,
}

/// Makes [`Timeout`]s.
#[derive(Clone, Debug)]
pub(crate) struct TimeoutLayer {
    limit: Option<Duration>,
    kind: Kind,
    destination: Arc<str>,
    expired: Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::PerTry => "per-try",
        }
    }
}

// === impl TimeoutLayer ===

impl TimeoutLayer {
    pub(crate) fn new(
        limit: Option<Duration>,
        kind: Kind,
        destination: Arc<str>,
        expired: Counter,
    ) -> Self {
        Self {
            limit,
            kind,
            destination,
            expired,
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            limit: self.limit,
            kind: self.kind,
            destination: self.destination.clone(),
            expired: self.expired.clone(),
        }
    }
}

// === impl Timeout ===

impl<S> Service<Req> for Timeout<S>
where
    S: Service<Req, Response = Rsp, Error = BoxError, Future = ResponseFuture>,
{
    type Response = Rsp;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> ResponseFuture {
        let Some(limit) = self.limit else {
            return self.inner.call(req);
        };
        let attempts = req.extensions().get::<Arc<Attempts>>().cloned();
        let response = self.inner.call(req);
        let (kind, destination, expired) =
            (self.kind, self.destination.clone(), self.expired.clone());
        Box::pin(async move {
            match tokio::time::timeout(limit, response).await {
                Ok(result) => result,
                Err(_) => {
                    expired.inc();
                    if let Some(attempts) = &attempts {
                        attempts.event("timeout", || {
                            vec![
                                KeyValue::new("mesh.timeout.kind", kind.as_str()),
                                KeyValue::new("mesh.timeout.seconds", limit.as_secs_f64()),
                            ]
                        });
                    }
                    let destination = destination.to_string();
                    Err(match kind {
                        Kind::Request => RequestTimeout {
                            destination,
                            timeout: limit,
                        }
                        .into(),
                        Kind::PerTry => PerTryTimeout {
                            destination,
                            timeout: limit,
                        }
                        .into(),
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::find_cause;
    use tower::ServiceExt;

    fn slow(
        delay: Duration,
    ) -> impl Service<Req, Response = Rsp, Error = BoxError, Future = ResponseFuture> + Clone {
        tower::service_fn(move |_req: Req| -> ResponseFuture {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(http::Response::new(crate::error::synthetic_body("ok")))
            })
        })
    }

    fn layer(limit: Option<Duration>, kind: Kind) -> (TimeoutLayer, Counter) {
        let counter = Counter::default();
        (
            TimeoutLayer::new(limit, kind, "inventory".into(), counter.clone()),
            counter,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn expires_with_the_kind_of_limit() {
        let (l, expired) = layer(Some(Duration::from_millis(100)), Kind::Request);
        let err = l
            .layer(slow(Duration::from_secs(1)))
            .oneshot(http::Request::new(crate::error::synthetic_body("")))
            .await
            .unwrap_err();
        assert!(find_cause::<RequestTimeout>(err.as_ref()).is_some());
        assert_eq!(expired.get(), 1);

        let (l, _) = layer(Some(Duration::from_millis(100)), Kind::PerTry);
        let err = l
            .layer(slow(Duration::from_secs(1)))
            .oneshot(http::Request::new(crate::error::synthetic_body("")))
            .await
            .unwrap_err();
        assert!(find_cause::<PerTryTimeout>(err.as_ref()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_or_fast_enough_passes_through() {
        for limit in [None, Some(Duration::from_secs(2))] {
            let (l, expired) = layer(limit, Kind::Request);
            let rsp = l
                .layer(slow(Duration::from_secs(1)))
                .oneshot(http::Request::new(crate::error::synthetic_body("")))
                .await
                .unwrap();
            assert_eq!(rsp.status(), http::StatusCode::OK);
            assert_eq!(expired.get(), 0);
        }
    }
}
