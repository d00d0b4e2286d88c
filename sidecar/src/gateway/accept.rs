//! The gateway's listeners: bound at start, each serving HTTP/1.1 and HTTP/2 from outside
//! clients under the outbound listener's `limits`, every request to its [`GatewayListener`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::config::{GatewayConfig, HttpListenerLimits};
use crate::metrics::{Direction, Metrics};
use crate::outbound::accept::serve_http;
use crate::serve::{self, ConnectionCap, Drain, http_server};

use super::certificates::{CertificateError, SniCertificates};
use super::listener::GatewayListener;

/// How long an outside client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A gateway listener could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayStartError {
    // Causes are part of the message, not `source`: the log prints a chain in full.
    #[error("cannot listen on gateway.listeners[{index}] ({name:?}) {address}: {cause}")]
    Bind {
        index: usize,
        name: String,
        address: SocketAddr,
        cause: std::io::Error,
    },
    #[error("gateway.listeners[{index}] ({name:?}).tls: {cause}")]
    Certificate {
        index: usize,
        name: String,
        cause: CertificateError,
    },
    #[error("gateway.listeners[{index}] ({name:?}).tls: {cause}")]
    Tls {
        index: usize,
        name: String,
        cause: rustls::Error,
    },
}

/// A bound listener, and for HTTPS its TLS acceptor.
pub(crate) struct Bound {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

/// Binds every listener of `config`, in order, loading HTTPS listeners' certificates, which
/// are then watched until `stop`.
pub(crate) async fn bind(
    config: &GatewayConfig,
    stop: &CancellationToken,
) -> Result<Vec<Bound>, GatewayStartError> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    for (index, listener) in config.listeners.iter().enumerate() {
        let name = || listener.name.clone();
        let tls = match &listener.tls {
            Some(paths) => {
                let certificates = SniCertificates::load(paths).map_err(|cause| {
                    GatewayStartError::Certificate {
                        index,
                        name: name(),
                        cause,
                    }
                })?;
                let server =
                    certificates
                        .server_config()
                        .map_err(|cause| GatewayStartError::Tls {
                            index,
                            name: name(),
                            cause,
                        })?;
                certificates.watch(stop.clone());
                Some(TlsAcceptor::from(server))
            }
            None => None,
        };
        let tcp =
            TcpListener::bind(listener.address)
                .await
                .map_err(|cause| GatewayStartError::Bind {
                    index,
                    name: name(),
                    address: listener.address,
                    cause,
                })?;
        if let Ok(address) = tcp.local_addr() {
            ::tracing::info!(listener = %listener.name, %address, https = tls.is_some(),
                "gateway listening");
        }
        bound.push(Bound { tcp, tls });
    }
    Ok(bound)
}

/// Serves the `bound` listeners of `config` until `drain`; each request routed, then given to
/// `forward` (the outbound proxy).
pub(crate) fn spawn<F, Fut>(
    config: &GatewayConfig,
    bound: Vec<Bound>,
    forward: F,
    (limits, cap): (&HttpListenerLimits, ConnectionCap),
    drain: Drain,
    metrics: Arc<Metrics>,
) -> Vec<JoinHandle<()>>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    // The clients' header limit, which hyper enforces on HTTP/1.1 with 431 itself.
    let limits = &HttpListenerLimits {
        max_header_bytes: config.clients.max_header_bytes,
        ..limits.clone()
    };
    let http = Arc::new(http_server(limits));
    bound
        .into_iter()
        .enumerate()
        .map(|(index, Bound { tcp, tls })| {
            let listener = Arc::new(GatewayListener::new(
                config,
                index,
                forward.clone(),
                metrics.clone(),
            ));
            let (http, limits) = (http.clone(), limits.clone());
            tokio::spawn(serve::serve(
                Direction::Outbound,
                tcp,
                drain.clone(),
                metrics.clone(),
                cap.clone(),
                move |tcp, peer, draining| {
                    let (http, limits, listener) = (http.clone(), limits.clone(), listener.clone());
                    let tls = tls.clone();
                    async move {
                        let handle = move |req| listener.clone().handle(peer, req);
                        let Some(tls) = tls else {
                            return serve_http(&http, &limits, tcp, handle, draining).await;
                        };
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                serve_http(&http, &limits, stream, handle, draining).await;
                            }
                            Ok(Err(error)) => {
                                ::tracing::debug!(%peer, %error, "gateway TLS handshake failed");
                            }
                            Err(_) => ::tracing::debug!(%peer, "gateway TLS handshake timed out"),
                        }
                    }
                },
            ))
        })
        .collect()
}
