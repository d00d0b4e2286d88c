//! Step 1 on the outbound listener: each connection from the local app is served as HTTP/1.1
//! or HTTP/2 (detected from its first bytes), every request handed to the outbound handler
//! (`Outbound::handle`, passed in so this module needs nothing from the one above it).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::body::Body;
use crate::metrics::{Direction, Metrics};
use crate::serve::{self, Drain, http_server};

/// Serves the outbound listener until `drain`, then drains its connections.
pub(crate) fn spawn<H, F>(
    listener: TcpListener,
    handle: H,
    drain: Drain,
    metrics: Arc<Metrics>,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let http = http_server();
    tokio::spawn(serve::serve(
        Direction::Outbound,
        listener,
        drain,
        metrics,
        move |tcp, _peer, watcher| connection(&http, handle.clone(), tcp, watcher),
    ))
}

/// Serves one connection from the local app: HTTP/1.1 or HTTP/2, each request proxied; an
/// HTTP/1.1 upgrade or a CONNECT the peer accepts turns the connection into a byte stream.
fn connection<H, F>(
    http: &auto::Builder<TokioExecutor>,
    handle: H,
    tcp: TcpStream,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + use<H, F>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let conn = http
        .serve_connection_with_upgrades(TokioIo::new(tcp), service_fn(handle))
        .into_owned();
    let conn = watcher.watch(conn);
    async move {
        if let Err(error) = conn.await {
            ::tracing::debug!(%error, "outbound connection closed with error");
        }
    }
}
