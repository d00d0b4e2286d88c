//! Upstream apps on 127.0.0.1 port 0. Their tasks end with the test's runtime.

use std::future::Future;
use std::net::SocketAddr;

use demo_services::server::{Body, serve};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// Starts the demo echo app as `service`.
pub async fn echo(service: &'static str) -> SocketAddr {
    start(move |req| demo_services::echo::handle(service, req)).await
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
    tokio::spawn(serve(listener, handler));
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
