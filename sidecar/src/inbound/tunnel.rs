//! Step 11 for TCP: an authorized caller's TCP stream joined to a new connection to the app.
//!
//! A peer sidecar carries each TCP connection of its app as one HTTP/2 request marked
//! `x-mesh-tunnel: tcp` whose `:authority` names the app's port: the request body is what its
//! app sends, and the response body what ours sends back (`splice::stream` says why bodies
//! rather than CONNECT). This sidecar only ever dials its own app: a stream naming another port
//! is refused with 403 (`tunnel-port-refused`), so the mesh cannot be used to reach other ports
//! of the host. The host part of the authority is not dialled.
//!
//! The app is connected before the 200 is sent, so a caller whose app is down gets 502
//! (`app-unavailable`) and its balancer counts the failure against this endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};
use crate::error::{AppConnectFailed, TunnelPortRefused};
use crate::headers::TUNNEL;
use crate::metrics::TcpMetrics;
use crate::splice::{MeshStream, Splice, TcpSide, splice_stream, stream_body};

/// Opens tunnels to the local app.
#[derive(Clone, Debug)]
pub(crate) struct AppTunnels {
    app: SocketAddr,
    idle_timeout: Duration,
}

// === impl AppTunnels ===

impl AppTunnels {
    pub(crate) fn new(app: SocketAddr, idle_timeout: Duration) -> Self {
        Self { app, idle_timeout }
    }

    /// Whether a peer's `req` asks for a TCP stream.
    pub(crate) fn asked<B>(req: &Request<B>) -> bool {
        req.headers().contains_key(TUNNEL)
    }

    /// Connects to the app for the stream `req` asks for and answers 200; bytes then flow
    /// between the two bodies and the app's connection until both ends are done.
    pub(crate) async fn open(
        &self,
        req: Request<Incoming>,
        metrics: TcpMetrics,
    ) -> Result<Response<Body>, BoxError> {
        let app = self.connect(req.uri().authority()).await?;
        let (send, body) = stream_body();
        let recv = req.into_body().map_err(BoxError::from).boxed_unsync();
        let how = Splice {
            side: TcpSide::Destination,
            metrics,
            idle_timeout: self.idle_timeout,
        };
        tokio::spawn(splice_stream(app, MeshStream { send, recv }, how));
        let mut rsp = Response::new(body);
        *rsp.status_mut() = StatusCode::OK;
        Ok(rsp)
    }

    /// The new connection to the app's port that `authority` asks for.
    async fn connect(&self, authority: Option<&Authority>) -> Result<TcpStream, BoxError> {
        // No port: the caller's destination leaves the port to each peer (an `http`
        // destination's listener), which is the app's.
        let port = authority.map(|a| a.port_u16().unwrap_or(self.app.port()));
        if port != Some(self.app.port()) {
            return Err(TunnelPortRefused {
                authority: authority.map(|a| a.to_string()).unwrap_or_default(),
                app_port: self.app.port(),
            }
            .into());
        }
        Ok(connect_app(self.app).await?)
    }
}

/// A new connection to the app, for a stream of its own.
pub(crate) async fn connect_app(app: SocketAddr) -> Result<TcpStream, AppConnectFailed> {
    let tcp = TcpStream::connect(app)
        .await
        .map_err(|source| AppConnectFailed { app, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::rescue;

    fn authority(authority: &str) -> Authority {
        authority.parse().unwrap()
    }

    #[tokio::test]
    async fn only_the_apps_port_is_tunnelled() {
        let tunnels = AppTunnels::new("127.0.0.1:6379".parse().unwrap(), Duration::from_secs(1));
        let err = tunnels
            .connect(Some(&authority("redis:22")))
            .await
            .unwrap_err();
        let (reason, rsp) = rescue(err.as_ref());
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
        assert_eq!(rsp.headers()["x-mesh-error"], "tunnel-port-refused");
        assert_eq!(reason.as_str(), "tunnel-port-refused");
        assert!(err.to_string().contains("\"redis:22\""), "{err}");
        assert!(err.to_string().contains("port 6379"), "{err}");
    }

    #[tokio::test]
    async fn an_app_that_is_down_is_a_bad_gateway() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let app = listener.local_addr().unwrap();
        drop(listener);
        let tunnels = AppTunnels::new(app, Duration::from_secs(1));
        let err = tunnels
            .connect(Some(&authority(&format!("redis:{}", app.port()))))
            .await
            .unwrap_err();
        let (_, rsp) = rescue(err.as_ref());
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(rsp.headers()["x-mesh-error"], "app-unavailable");
    }
}
