//! Serves a handler the way an app behind a sidecar does: HTTP/1.1 and HTTP/2 (prior knowledge)
//! on one listener, so the test kit's apps need nothing from the demo services.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Response body of the test kit's apps.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Serves `handler` until `stop` completes, then closes the listener and gives open connections
/// `drain` to finish (HTTP/2 ones get a GOAWAY). `false` when some were still open after it.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    handler: H,
    stop: impl Future<Output = ()>,
    drain: Duration,
) -> bool
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let builder = auto::Builder::new(TokioExecutor::new());
    let connections = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    while let Some(accepted) = tokio::select! {
        accepted = listener.accept() => Some(accepted),
        () = &mut stop => None,
    } {
        let Ok((tcp, _)) = accepted else {
            // Out of descriptors, say: wait for some to close rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let rsp = handler(req);
            async move { Ok::<_, Infallible>(rsp.await) }
        });
        let conn = connections.watch(
            builder
                .serve_connection(TokioIo::new(tcp), service)
                .into_owned(),
        );
        tokio::spawn(conn);
    }
    drop(listener);
    tokio::time::timeout(drain, connections.shutdown())
        .await
        .is_ok()
}
