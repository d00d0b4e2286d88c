//! Serves a request handler on a listener, HTTP/1.1 and HTTP/2 (prior knowledge) alike.

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

/// Response body of the demo apps.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// How long in-flight requests get to finish after a stop is asked for.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Accepts connections until the task is dropped, serving each with `handler`.
pub async fn serve<H, Fut>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_until(listener, handler, std::future::pending()).await;
}

/// Accepts connections until `stop` completes, then drains: the listener closes, idle
/// connections close, HTTP/1.1 connections close after their current response and HTTP/2 ones
/// get a GOAWAY. Returns `true` once every connection has finished, `false` when some were
/// still open after [`DRAIN_LIMIT`].
pub async fn serve_until<H, Fut>(
    listener: TcpListener,
    handler: H,
    stop: impl Future<Output = ()>,
) -> bool
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let http = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of descriptors or similar: pause instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let conn = http
            .serve_connection(
                TokioIo::new(tcp),
                service_fn(move |req| {
                    let rsp = handler(req);
                    async move { Ok::<_, Infallible>(rsp.await) }
                }),
            )
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_ok()
}
