//! Each connection an app opens to a `tcp` destination's listener, carried to the destination
//! as one HTTP/2 CONNECT stream (`:authority` `<destination>:<port>`) on the pooled mTLS
//! connection to a peer sidecar, then copied both ways by `splice.rs`.
//!
//! Steps 6 to 8 are the HTTP path's: the destination's balancer picks the endpoint (skipping
//! ejected ones; a failed connect counts towards ejection) and its connection is the one HTTP
//! requests share, with the same `connect_timeout` and identity check. There is no timeout,
//! concurrency limit or retry: a stream lasts as long as its app wants, and its bytes cannot be
//! replayed on another endpoint once sent. A connection that cannot be tunnelled is reset, so
//! the app sees a failure rather than an empty answer.

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::{Authority, Parts};
use http::{Method, Request, StatusCode, Uri};
use hyper::upgrade::Upgraded;
use tokio::sync::watch;
use tower::Service;

use crate::body::{BoxError, empty};
use crate::error::Reason;
use crate::headers::MESH_ERROR;
use crate::log_limit::LogLimit;
use crate::metrics::{Direction, Label, Metrics};
use crate::splice::{AppStream, TcpSide, splice};

use super::policy::Destinations;

/// A tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error("destination is no longer a tcp destination of this sidecar")]
    Gone,
    #[error("peer refused the tunnel with {status} ({reason})")]
    Refused { status: StatusCode, reason: String },
    #[error(transparent)]
    Failed(BoxError),
}

impl TunnelError {
    /// The reason label: this sidecar's `x-mesh-error`, or the peer's when it is one a tunnel
    /// can get (any other peer text is not a label value: it would be unbounded).
    fn reason(&self) -> &'static str {
        match self {
            TunnelError::Gone => Reason::NoRoute.as_str(),
            TunnelError::Refused { reason, .. } => [
                Reason::Unauthorized,
                Reason::TunnelPortRefused,
                Reason::AppUnavailable,
            ]
            .into_iter()
            .map(Reason::as_str)
            .find(|known| known == reason)
            .unwrap_or("peer-refused"),
            TunnelError::Failed(error) => crate::error::reason(error.as_ref()).as_str(),
        }
    }
}

/// What every connection of one `tcp` destination's listener needs.
pub(crate) struct Tunnels {
    destination: String,
    /// This service, the `source` of the metrics.
    source: Label,
    destinations: watch::Receiver<Arc<Destinations>>,
    metrics: Arc<Metrics>,
    /// Caps warnings about tunnels that could not be opened.
    log_limit: LogLimit,
}

// === impl Tunnels ===

impl Tunnels {
    pub(crate) fn new(
        destination: String,
        source: Label,
        destinations: watch::Receiver<Arc<Destinations>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            destination,
            source,
            destinations,
            metrics,
            log_limit: LogLimit::new(10),
        }
    }

    /// Opens the tunnel for one accepted connection and copies until both ends are done.
    pub(crate) async fn forward<S>(self: Arc<Self>, tcp: S, peer: SocketAddr)
    where
        S: AppStream,
    {
        match self.open().await {
            Ok((tunnel, destination)) => {
                let metrics = self
                    .metrics
                    .tcp(Direction::Outbound, &self.source, &destination);
                splice(tcp, tunnel, TcpSide::Source, metrics).await;
            }
            Err(error) => {
                self.metrics
                    .tcp_connect_failed(&self.destination.as_str().into(), error.reason());
                if self.log_limit.allow("failed TCP tunnels") {
                    tracing::warn!(
                        destination = %self.destination, %peer, %error,
                        "TCP connection not tunnelled"
                    );
                }
                tcp.abort();
            }
        }
    }

    /// Sends a CONNECT for `destination:port` through the destination's current balancer and
    /// waits for the tunnel; also returns the destination's metric label.
    async fn open(&self) -> Result<(Upgraded, Label), TunnelError> {
        let stack = self
            .destinations
            .borrow()
            .get(&self.destination)
            .ok_or(TunnelError::Gone)?;
        let port = stack.listener().ok_or(TunnelError::Gone)?.port;
        let failed = |e: BoxError| TunnelError::Failed(e);
        // Without a port, the peer joins the tunnel to its own app's port.
        let authority = match port {
            Some(port) => format!("{}:{port}", self.destination),
            None => self.destination.clone(),
        };
        let authority: Authority = authority
            .parse()
            .map_err(|e: http::uri::InvalidUri| failed(e.into()))?;
        let mut parts = Parts::default();
        parts.authority = Some(authority);
        let uri = Uri::from_parts(parts).map_err(|e| failed(e.into()))?;
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(uri)
            .version(http::Version::HTTP_2)
            .body(empty())
            .map_err(|e| failed(e.into()))?;
        let rsp = stack.balance().clone().call(req).await.map_err(failed)?;
        if rsp.status() != StatusCode::OK {
            let reason = rsp
                .headers()
                .get(MESH_ERROR)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no x-mesh-error")
                .to_owned();
            return Err(TunnelError::Refused {
                status: rsp.status(),
                reason,
            });
        }
        let tunnel = hyper::upgrade::on(rsp)
            .await
            .map_err(|e| failed(e.into()))?;
        Ok((tunnel, stack.name.clone()))
    }
}
