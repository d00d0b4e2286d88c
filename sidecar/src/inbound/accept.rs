//! Step 1 on the inbound listener: each connection from a peer sidecar is identified (step 9,
//! [`identify`](super::identify)) and then served as HTTP/2, every request handed to the
//! inbound handler (`Inbound::handle`, passed in) with the caller it came from.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::identify::{Caller, identify, max_connection_age};
use crate::body::Body;
use crate::identity::TrustChanges;
use crate::log_limit::LogLimit;
use crate::metrics::{Direction, Metrics};
use crate::serve::{
    self, Drain, Draining, MAX_PEER_HEADER_BYTES, MaxAge, PEER_MAX_FRAME_SIZE, Untrusted,
    http_server,
};

/// Streams one peer connection may have open at once. TCP tunnels are streams that last as long
/// as their connection, so the usual HTTP/2 limit of a few hundred would let one caller's pool
/// of long-lived connections hold every stream and queue its HTTP requests behind them. What an
/// idle stream costs is a few hundred bytes; what streams can make the sidecar buffer is bounded
/// by the connection's flow-control window, not by their number.
const MAX_PEER_STREAMS: u32 = 10_000;

/// A peer that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the inbound listener until `drain`, then drains its connections. Each connection
/// lives at most `max_age` (see [`max_connection_age`]), then gets the drain time to finish.
pub(crate) fn spawn<H, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handle: H,
    max_age: Option<Duration>,
    trust: TrustChanges,
    drain: Drain,
    metrics: Arc<Metrics>,
) -> JoinHandle<()>
where
    H: Fn(Arc<Caller>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let handshake_log_limit = Arc::new(LogLimit::new(10));
    let connection_metrics = metrics.clone();
    let grace = drain.timeout;
    tokio::spawn(serve::serve(
        Direction::Inbound,
        listener,
        drain,
        metrics,
        move |tcp, peer, draining| {
            let connection = Connection {
                handle: handle.clone(),
                acceptor: acceptor.clone(),
                metrics: connection_metrics.clone(),
                log_limit: handshake_log_limit.clone(),
                max_age,
                grace,
                trust: trust.clone(),
            };
            connection.serve(tcp, peer, draining)
        },
    ))
}

/// What one connection from a peer sidecar needs.
struct Connection<H> {
    handle: H,
    acceptor: TlsAcceptor,
    metrics: Arc<Metrics>,
    /// Caps refused-handshake warnings (a port scan should not flood the logs).
    log_limit: Arc<LogLimit>,
    /// `max_connection_age`, if configured.
    max_age: Option<Duration>,
    /// How long a connection past its age gets to finish.
    grace: Duration,
    /// The trust bundle as it changes: a caller no longer trusted is disconnected.
    trust: TrustChanges,
}

// === impl Connection ===

impl<H, F> Connection<H>
where
    H: Fn(Arc<Caller>, Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    /// Terminates mTLS and identifies the caller (step 9), then serves its requests.
    async fn serve(self, tcp: TcpStream, peer: SocketAddr, draining: Draining) {
        let (tls, caller) = match identify(&self.acceptor, tcp, TLS_HANDSHAKE_TIMEOUT).await {
            Ok(identified) => identified,
            Err(error) => {
                self.metrics.tls_failure(Direction::Inbound, error.reason());
                if self.log_limit.allow("refused inbound connections") {
                    ::tracing::warn!(%peer, reason = error.reason(), %error, "inbound connection refused");
                }
                return;
            }
        };
        ::tracing::debug!(%peer, %caller, "inbound connection identified");
        let max_age = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| max_connection_age(leaf, SystemTime::now(), self.max_age))
            .map(|age| MaxAge {
                age,
                grace: self.grace,
            });
        let untrusted = tls.get_ref().1.peer_certificates().map(|chain| {
            let chain = chain.iter().map(|c| c.clone().into_owned()).collect();
            let (became, metrics) = (self.trust.client_untrusted(chain), self.metrics.clone());
            let caller = caller.clone();
            Box::pin(async move {
                became.await;
                metrics.connection_untrusted(Direction::Inbound);
                ::tracing::warn!(%peer, %caller,
                    "closing the connection: the caller's certificate no longer verifies \
                     against the trust bundle");
            }) as Untrusted
        });
        let caller = Arc::new(Caller::new(caller, peer));
        let handle = self.handle;
        let mut http = http_server();
        // Extended CONNECT (RFC 8441) carries the HTTP/1.1 upgrades (WebSockets) of apps.
        http.http2()
            .max_concurrent_streams(MAX_PEER_STREAMS)
            .max_frame_size(PEER_MAX_FRAME_SIZE)
            .max_header_list_size(MAX_PEER_HEADER_BYTES)
            .enable_connect_protocol();
        let conn = http.serve_connection(
            TokioIo::new(tls),
            service_fn(move |req| handle(caller.clone(), req)),
        );
        if let Err(error) = draining.serve(conn.into_owned(), max_age, untrusted).await {
            ::tracing::debug!(%peer, %error, "inbound connection closed with error");
        }
    }
}
