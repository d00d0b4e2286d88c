//! Upstream apps on 127.0.0.1 port 0. Their tasks end with the test's runtime.

use std::future::Future;
use std::net::SocketAddr;

use crate::server::{Body, serve};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// Starts the echo app (see [`crate::echo`]) as `service`.
pub async fn echo(service: &'static str) -> SocketAddr {
    start(move |req| crate::echo::handle(service, req)).await
}

/// Starts an app that answers with `handler`.
pub async fn start<H, Fut>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for an app");
    let addr = listener.local_addr().expect("bound address");
    // Never stopped: the app ends with the test's runtime, so there is nothing to drain.
    let never = std::future::pending();
    tokio::spawn(serve(listener, handler, never, std::time::Duration::ZERO));
    addr
}

/// Holds every request until the test releases it, and reports each arrival.
pub struct Gate {
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Gate {
    /// Waits (at most 10 s) until a request has reached the app.
    pub async fn arrived(&mut self) {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.arrived.recv())
            .await
            .expect("a request reached the gated app within 10s")
            .expect("gated app is running");
    }

    /// Lets `n` held requests answer.
    pub fn release(&self, n: usize) {
        self.release.add_permits(n);
    }
}

/// Starts an app that holds each request until [`Gate::release`], then answers 200 "released".
pub async fn gated() -> (SocketAddr, Gate) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let permits = release.clone();
    let addr = start(move |_req| {
        let (tx, permits) = (tx.clone(), permits.clone());
        async move {
            let _ = tx.send(());
            if let Ok(permit) = permits.acquire().await {
                permit.forget();
            }
            Response::new(
                Full::new(Bytes::from_static(b"released"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
        }
    })
    .await;
    (addr, Gate { arrived, release })
}

/// Faults an app injects, changeable while it runs.
#[derive(Debug, Default)]
pub struct Faults {
    /// Requests received.
    requests: std::sync::atomic::AtomicU64,
    /// Status to fail with; 0 for none.
    status: std::sync::atomic::AtomicU32,
    /// Fail this many of every ten requests (10: always).
    per_ten: std::sync::atomic::AtomicU64,
    /// Fail the next this many requests, then per `per_ten`.
    first: std::sync::atomic::AtomicU64,
    /// Delay before answering, milliseconds.
    delay_ms: std::sync::atomic::AtomicU64,
}

impl Faults {
    /// Fails `per_ten` of every ten requests with `status` (in a fixed pattern: the first
    /// `per_ten` of each ten).
    pub fn fail(&self, status: u16, per_ten: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.status.store(u32::from(status), SeqCst);
        self.per_ten.store(per_ten, SeqCst);
    }

    /// Fails the next `n` requests with `status`.
    pub fn fail_next(&self, n: u64, status: u16) {
        use std::sync::atomic::Ordering::SeqCst;
        self.status.store(u32::from(status), SeqCst);
        self.first.store(n, SeqCst);
    }

    /// Delays every answer.
    pub fn delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The status to fail request number `n` with, if any.
    fn failure(&self, n: u64) -> Option<http::StatusCode> {
        use std::sync::atomic::Ordering::SeqCst;
        let status = self.status.load(SeqCst);
        if status == 0 {
            return None;
        }
        let first = self
            .first
            .fetch_update(SeqCst, SeqCst, |f| f.checked_sub(1))
            .is_ok();
        (first || n % 10 < self.per_ten.load(SeqCst))
            .then(|| http::StatusCode::from_u16(status as u16).ok())
            .flatten()
    }
}

/// Starts an app that applies `Faults` and otherwise echoes the request body, answering with
/// `x-app: <name>`.
pub async fn faulty(name: &'static str) -> (SocketAddr, std::sync::Arc<Faults>) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let faults = std::sync::Arc::new(Faults::default());
    let shared = faults.clone();
    let addr = start(move |req| {
        let faults = shared.clone();
        async move {
            let n = faults
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let delay = faults.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            // Read the whole body even when failing, as an app would.
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let (status, body) = match faults.failure(n) {
                Some(status) => (status, Bytes::from_static(b"injected failure")),
                None => (http::StatusCode::OK, body),
            };
            Response::builder()
                .status(status)
                .header("x-app", name)
                .body(
                    Full::new(body)
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .expect("valid response")
        }
    })
    .await;
    (addr, faults)
}

/// Starts an app that calls `host` through the outbound listener set in `next` (once known),
/// forwarding the trace headers, and answers with that call's status.
pub async fn relay(
    host: &'static str,
    next: std::sync::Arc<std::sync::OnceLock<SocketAddr>>,
) -> SocketAddr {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    start(move |req| {
        let next = next.clone();
        async move {
            let outbound = next.get().copied();
            let mut call = http::Request::get(format!(
                "http://{}{}",
                outbound.map(|a| a.to_string()).unwrap_or_default(),
                req.uri().path()
            ))
            .header("host", host);
            for name in mesh_api::trace_context::PROPAGATED_HEADERS {
                if let Some(value) = req.headers().get(name) {
                    call = call.header(name, value);
                }
            }
            let status = match (outbound, call.body(Full::<Bytes>::default())) {
                (Some(_), Ok(call)) => match crate::client::http1().request(call).await {
                    Ok(rsp) => rsp.status(),
                    Err(_) => http::StatusCode::BAD_GATEWAY,
                },
                _ => http::StatusCode::INTERNAL_SERVER_ERROR,
            };
            Response::builder()
                .status(status)
                .body(
                    Full::new(Bytes::from_static(b"relayed"))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .expect("valid response")
        }
    })
    .await
}
