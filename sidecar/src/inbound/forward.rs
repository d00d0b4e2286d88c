//! Step 11: forward to the local app, in the protocol the calling app spoke.
//!
//! Requests arrive over HTTP/2. Those marked `x-mesh-orig-proto: HTTP/1.1` go to the app over a
//! keep-alive HTTP/1.1 pool, the rest over HTTP/2 (prior knowledge), so an HTTP/1.1 app never
//! receives HTTP/2 and gRPC keeps its trailers. The request URI keeps the original authority,
//! which becomes the app's `Host`; the connector ignores it and always dials the app.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::body::Body;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// Idle keep-alive connections to the app are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Clients for the local app, one per protocol.
#[derive(Clone, Debug)]
pub(crate) struct AppClients {
    pub(crate) http1: Client<AppConnector, Body>,
    pub(crate) http2: Client<AppConnector, Body>,
}

/// Dials the local app, whatever the request's authority.
#[derive(Clone, Debug)]
pub(crate) struct AppConnector {
    app: SocketAddr,
}

// === impl AppClients ===

impl AppClients {
    pub(crate) fn new(app: SocketAddr) -> Self {
        let connector = AppConnector { app };
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        Self { http1, http2 }
    }
}

// === impl AppConnector ===

impl tower::Service<Uri> for AppConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _authority: Uri) -> Self::Future {
        let app = self.app;
        Box::pin(async move {
            let tcp = TcpStream::connect(app).await?;
            let _ = tcp.set_nodelay(true);
            Ok(TokioIo::new(tcp))
        })
    }
}
