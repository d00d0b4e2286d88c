//! The per-request side of a listener's limits, for what hyper does not enforce itself: the
//! header count of HTTP/2 requests (hyper counts HTTP/1.1's), and the idle timeout, which needs
//! to know when a connection last had a request in flight.
//!
//! [`Limited::wrap`] puts both around a connection's handler. A request with more header fields
//! than `max_headers` is answered 431 before the handler sees it. Every other request counts as
//! in flight from its arrival until its response body has been sent (or dropped), so a long
//! download or a gRPC stream keeps its connection busy; [`Limited::idle`] completes once the
//! count has stayed at zero for the idle timeout, and the connection is then asked to finish
//! (HTTP/2 GOAWAY, HTTP/1.1 close).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::{Body, BoxError};
use crate::error::synthetic_body;
use crate::serve::Idle;

/// Requests in flight on one connection, and when one last started or ended. Kept in atomics
/// that the idle timer reads when it fires, so a request costs no wake-up of the timer.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds from `epoch` to the last start or end of a request.
    last: AtomicU64,
    epoch: Instant,
}

/// The limits of one connection's requests.
#[derive(Clone, Debug)]
pub(crate) struct Limited {
    max_headers: usize,
    idle_timeout: Duration,
    activity: Arc<Activity>,
}

/// Holds a request in flight until dropped (with the response body that carries it).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

/// A response body that holds a guard until it ends or is dropped.
pub(crate) struct Guarded<G> {
    inner: Body,
    _guard: G,
}

// === impl Limited ===

impl Limited {
    pub(crate) fn new(max_headers: u32, idle_timeout: Duration) -> Self {
        Self {
            max_headers: max_headers as usize,
            idle_timeout,
            activity: Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                last: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// `handle` with the header-count check and in-flight counting around it.
    pub(crate) fn wrap<B, H, F>(
        &self,
        handle: H,
    ) -> impl Fn(
        Request<B>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>
    + Send
    + Sync
    + 'static
    where
        H: Fn(Request<B>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    {
        let limited = self.clone();
        move |req: Request<B>| {
            if req.headers().len() > limited.max_headers {
                let rsp = too_many_headers(limited.max_headers);
                return Box::pin(async move { Ok(rsp) });
            }
            let in_flight = limited.start();
            let answer = handle(req);
            Box::pin(async move {
                let rsp = answer.await?;
                Ok(rsp.map(|body| guarded(body, in_flight)))
            })
        }
    }

    /// Counts a request in flight until the returned guard drops.
    fn start(&self) -> InFlight {
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        self.activity.touch();
        InFlight(self.activity.clone())
    }

    /// Completes once no request has been in flight for the idle timeout.
    pub(crate) fn idle(&self) -> Idle {
        let activity = self.activity.clone();
        let timeout = self.idle_timeout;
        Box::pin(async move {
            loop {
                let due = activity.last_change() + timeout;
                if Instant::now() < due {
                    tokio::time::sleep_until(due).await;
                } else if activity.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                } else {
                    // Busy: look again a timeout later, or when the last request ends.
                    tokio::time::sleep(timeout).await;
                }
            }
        })
    }
}

// === impl Activity ===

impl Activity {
    fn touch(&self) {
        let since = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(since, Ordering::AcqRel);
    }

    fn last_change(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last.load(Ordering::Acquire))
    }
}

/// 431 naming the limit, for an HTTP/2 request with too many header fields.
fn too_many_headers(max: usize) -> Response<Body> {
    let mut rsp = Response::new(synthetic_body(format!(
        "request has more than {max} header fields (max_headers)\n"
    )));
    *rsp.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    rsp
}

// === impl InFlight ===

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl Guarded ===

/// `body`, holding `guard` until it ends or is dropped.
pub(crate) fn guarded<G: Send + Unpin + 'static>(body: Body, guard: G) -> Body {
    Guarded {
        inner: body,
        _guard: guard,
    }
    .boxed_unsync()
}

impl<G: Unpin> HttpBody for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_timeout_with_nothing_in_flight() {
        let limited = Limited::new(100, Duration::from_secs(10));
        let mut idle = limited.idle();
        let request = limited.start();
        // In flight: never idle, however long.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut idle)
                .await
                .is_err()
        );
        drop(request);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // A request that comes and goes restarts the count.
        drop(limited.start());
        let started = tokio::time::Instant::now();
        idle.await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
