//! Serves a request handler on a listener, HTTP/1.1 and HTTP/2 (prior knowledge) alike.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Response body of the demo apps.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Accepts connections until the task is dropped, serving each with `handler`.
pub async fn serve<H, Fut>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let http = auto::Builder::new(TokioExecutor::new());
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of descriptors or similar: pause instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
