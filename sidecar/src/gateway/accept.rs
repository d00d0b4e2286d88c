//! One gateway listener: bound (loading and watching its certificates), then serving HTTP/1.1
//! and HTTP/2 from outside clients under the outbound listener's `limits`, every request to
//! the [`GatewayListener`] in force when it arrives.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::coalesce::Coalesced;
use crate::config::{GatewayListener as ListenerConfig, HttpListenerLimits};
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

// === impl Bound ===

impl Bound {
    /// The address it is bound to (the port chosen when the configuration says 0).
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Binds `listener` (`gateway.listeners[index]`), loading its certificates, which are then
/// watched until `stop`.
pub(crate) async fn bind(
    listener: &ListenerConfig,
    index: usize,
    stop: &CancellationToken,
) -> Result<Bound, GatewayStartError> {
    let name = || listener.name.clone();
    let tls = match &listener.tls {
        Some(paths) => {
            let certificates =
                SniCertificates::load(paths).map_err(|cause| GatewayStartError::Certificate {
                    index,
                    name: name(),
                    cause,
                })?;
            let server = certificates
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
    Ok(Bound { tcp, tls })
}

/// Serves `bound` until `drain`, each request to the handler `handler` holds when it arrives.
/// `limits.max_header_bytes` is the clients' header limit, which hyper enforces on HTTP/1.1
/// with 431 itself: the connection's end says so, and the handler counts it.
pub(crate) fn spawn<F, Fut>(
    bound: Bound,
    handler: Arc<ArcSwap<GatewayListener<F>>>,
    (limits, cap): (HttpListenerLimits, ConnectionCap),
    drain: Drain,
    metrics: Arc<Metrics>,
) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let http = Arc::new(http_server(&limits));
    let Bound { tcp, tls } = bound;
    tokio::spawn(serve::serve(
        Direction::Outbound,
        tcp,
        drain,
        metrics,
        cap,
        move |tcp, peer, draining| {
            let (http, limits, handler) = (http.clone(), limits.clone(), handler.clone());
            let tls = tls.clone();
            async move {
                let handle = {
                    let handler = handler.clone();
                    move |req| handler.load_full().handle(peer, req)
                };
                let ended = match tls {
                    None => {
                        let io = Coalesced::passthrough(tcp);
                        serve_http(&http, &limits, io, handle, draining).await
                    }
                    Some(tls) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                let io = Coalesced::new(stream, http2);
                                serve_http(&http, &limits, io, handle, draining).await
                            }
                            Ok(Err(error)) => {
                                ::tracing::debug!(%peer, %error, "gateway TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                ::tracing::debug!(%peer, "gateway TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                handler.load().count_ended(ended);
            }
        },
    ))
}
