//! Step 1 on the outbound listener: each connection from the local app is served as HTTP/1.1
//! or HTTP/2 (detected from its first bytes), every request handed to [`Outbound::handle`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Outbound;
use crate::metrics::{Direction, Metrics};
use crate::serve::{self, http_server};

/// Serves the outbound listener until `drain`, then drains its connections.
pub(crate) fn spawn(
    listener: TcpListener,
    outbound: Arc<Outbound>,
    drain: CancellationToken,
    drain_timeout: Duration,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    let http = http_server();
    tokio::spawn(serve::serve(
        Direction::Outbound,
        listener,
        drain,
        drain_timeout,
        metrics,
        move |tcp, _peer, watcher| connection(&http, outbound.clone(), tcp, watcher),
    ))
}

/// Serves one connection from the local app: HTTP/1.1 or HTTP/2, each request proxied.
fn connection(
    http: &auto::Builder<TokioExecutor>,
    outbound: Arc<Outbound>,
    tcp: TcpStream,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + use<> {
    let conn = http
        .serve_connection(
            TokioIo::new(tcp),
            service_fn(move |req| outbound.clone().handle(req)),
        )
        .into_owned();
    let conn = watcher.watch(conn);
    async move {
        if let Err(error) = conn.await {
            ::tracing::debug!(%error, "outbound connection closed with error");
        }
    }
}
