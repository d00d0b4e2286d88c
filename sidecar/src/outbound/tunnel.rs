//! Each connection an app opens to a `tcp` destination's listener, carried to the destination
//! as one HTTP/2 stream (`x-mesh-tunnel: tcp`, `:authority` `<destination>:<port>`) on the
//! pooled mTLS connection to a peer sidecar, its bytes in the request and response bodies, and
//! copied both ways by `splice`.
//!
//! Steps 6 to 8 are the HTTP path's: the destination's balancer picks the endpoint (skipping
//! ejected ones; a failed connect counts towards ejection) and its connection is the one HTTP
//! requests share, with the same `connect_timeout` and identity check. There is no timeout,
//! concurrency limit or retry: a stream lasts as long as its app wants, and its bytes cannot be
//! replayed on another endpoint once sent. A connection that cannot be tunnelled is reset, so
//! the app sees a failure rather than an empty answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Method, Request, StatusCode, Uri};
use tokio::sync::watch;
use tower::Service;

use crate::body::BoxError;
use crate::error::Reason;
use crate::headers::{MESH_ERROR, TUNNEL, TUNNEL_TCP};
use crate::metrics::{Direction, Label, Metrics};
use crate::splice::{AppStream, MeshStream, Splice, TcpSide, splice_stream, stream_body};
use mesh_api::log_limit::LogLimit;

use super::policy::Destinations;

/// A tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error("destination is no longer a destination of this sidecar")]
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
    /// How long a stream may be quiet.
    idle_timeout: Duration,
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
        idle_timeout: Duration,
    ) -> Self {
        Self {
            destination,
            source,
            destinations,
            metrics,
            idle_timeout,
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
                let how = Splice {
                    side: TcpSide::Source,
                    metrics,
                    idle_timeout: self.idle_timeout,
                };
                splice_stream(tcp, tunnel, how).await;
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

    /// Opens a stream to `destination:port` through the destination's current balancer and
    /// waits for the peer to accept it; also returns the destination's metric label.
    async fn open(&self) -> Result<(MeshStream, Label), TunnelError> {
        let stack = self
            .destinations
            .borrow()
            .get(&self.destination)
            .ok_or(TunnelError::Gone)?;
        // A destination reached by a redirected connection may have no listener of its own:
        // then, as for an `http` destination without `port`, each peer's own app port.
        let port = stack.listener().and_then(|listener| listener.port);
        let failed = |e: BoxError| TunnelError::Failed(e);
        // Without a port, the peer joins the tunnel to its own app's port.
        let authority = match port {
            Some(port) => format!("{}:{port}", self.destination),
            None => self.destination.clone(),
        };
        let authority: Authority = authority
            .parse()
            .map_err(|e: http::uri::InvalidUri| failed(e.into()))?;
        let (send, body) = stream_body();
        let req = tunnel_request(authority, body).map_err(failed)?;
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
        let tunnel = MeshStream {
            send,
            recv: rsp.into_body(),
        };
        Ok((tunnel, stack.name.clone()))
    }
}

/// The request that opens a stream to `authority`'s app: its body is what the app sends.
pub(crate) fn tunnel_request(
    authority: Authority,
    body: crate::body::Body,
) -> Result<Request<crate::body::Body>, BoxError> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query("/")
        .build()?;
    Ok(Request::builder()
        .method(Method::POST)
        .uri(uri)
        .version(http::Version::HTTP_2)
        .header(TUNNEL, TUNNEL_TCP)
        .body(body)?)
}
