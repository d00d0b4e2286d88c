//! The gateway's listeners: bound at start, each serving HTTP/1.1 and HTTP/2 from outside
//! clients under the outbound listener's `limits`, every request to its [`GatewayListener`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::body::Body;
use crate::config::{GatewayConfig, HttpListenerLimits};
use crate::metrics::{Direction, Metrics};
use crate::outbound::accept::serve_http;
use crate::serve::{self, ConnectionCap, Drain, http_server};

use super::listener::GatewayListener;

/// A gateway listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on gateway.listeners[{index}] ({name:?}) {address}: {source}")]
pub(crate) struct GatewayBindError {
    index: usize,
    name: String,
    address: SocketAddr,
    source: std::io::Error,
}

/// Binds every listener of `config`, in order.
pub(crate) async fn bind(config: &GatewayConfig) -> Result<Vec<TcpListener>, GatewayBindError> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    for (index, listener) in config.listeners.iter().enumerate() {
        let tcp = TcpListener::bind(listener.address)
            .await
            .map_err(|source| GatewayBindError {
                index,
                name: listener.name.clone(),
                address: listener.address,
                source,
            })?;
        if let Ok(address) = tcp.local_addr() {
            ::tracing::info!(listener = %listener.name, %address, "gateway listening");
        }
        bound.push(tcp);
    }
    Ok(bound)
}

/// Serves the `bound` listeners of `config` until `drain`; each request routed, then given to
/// `forward` (the outbound proxy).
pub(crate) fn spawn<F, Fut>(
    config: &GatewayConfig,
    bound: Vec<TcpListener>,
    forward: F,
    (limits, cap): (&HttpListenerLimits, ConnectionCap),
    drain: Drain,
    metrics: Arc<Metrics>,
) -> Vec<JoinHandle<()>>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let http = Arc::new(http_server(limits));
    bound
        .into_iter()
        .enumerate()
        .map(|(index, tcp)| {
            let listener = Arc::new(GatewayListener::new(config, index, forward.clone()));
            let (http, limits) = (http.clone(), limits.clone());
            tokio::spawn(serve::serve(
                Direction::Outbound,
                tcp,
                drain.clone(),
                metrics.clone(),
                cap.clone(),
                move |tcp, _peer, draining| {
                    let (http, limits, listener) = (http.clone(), limits.clone(), listener.clone());
                    async move {
                        let handle = move |req| listener.clone().handle(req);
                        serve_http(&http, &limits, tcp, handle, draining).await;
                    }
                },
            ))
        })
        .collect()
}
