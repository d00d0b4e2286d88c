//! Step 11 for TCP: an authorized caller's CONNECT stream joined to a new connection to the app.
//!
//! A peer sidecar carries each TCP connection of its app as one HTTP/2 CONNECT stream (RFC 9113
//! §8.5) whose `:authority` names the app's port. This sidecar only ever dials its own app: a
//! CONNECT naming another port is refused with 403 (`tunnel-port-refused`), so the mesh cannot
//! be used to reach other ports of the host. The host part of the authority is not dialled.
//!
//! The app is connected before the 200 is sent, so a caller whose app is down gets 502
//! (`app-unavailable`) and its balancer counts the failure against this endpoint.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use tokio::net::TcpStream;

use crate::body::{Body, BoxError, empty};
use crate::error::{AppConnectFailed, TunnelPortRefused};
use crate::metrics::TcpMetrics;
use crate::splice::{TcpSide, splice};

/// Opens tunnels to the local app.
#[derive(Clone, Debug)]
pub(crate) struct AppTunnels {
    app: SocketAddr,
}

// === impl AppTunnels ===

impl AppTunnels {
    pub(crate) fn new(app: SocketAddr) -> Self {
        Self { app }
    }

    /// Connects to the app for the CONNECT `req` and answers 200; once the caller's side has
    /// switched to the tunnel, bytes flow between the two until both ends are done.
    pub(crate) async fn open<B>(
        &self,
        mut req: Request<B>,
        metrics: TcpMetrics,
    ) -> Result<Response<Body>, BoxError> {
        let authority = req.uri().authority();
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
        let app = connect_app(self.app).await?;
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(tunnel) => splice(app, tunnel, TcpSide::Destination, metrics).await,
                Err(error) => tracing::debug!(%error, "tunnel closed before it opened"),
            }
        });
        let mut rsp = Response::new(empty());
        *rsp.status_mut() = StatusCode::OK;
        Ok(rsp)
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
    use crate::metrics::{Direction, Metrics};

    fn connect(authority: &str) -> Request<()> {
        Request::builder()
            .method(http::Method::CONNECT)
            .uri(authority)
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn only_the_apps_port_is_tunnelled() {
        let tunnels = AppTunnels::new("127.0.0.1:6379".parse().unwrap());
        let metrics = Metrics::new().tcp(Direction::Inbound, &"orders".into(), &"redis".into());
        let err = tunnels
            .open(connect("redis:22"), metrics.clone())
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
        let tunnels = AppTunnels::new(app);
        let metrics = Metrics::new().tcp(Direction::Inbound, &"orders".into(), &"redis".into());
        let err = tunnels
            .open(connect(&format!("redis:{}", app.port())), metrics)
            .await
            .unwrap_err();
        let (_, rsp) = rescue(err.as_ref());
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(rsp.headers()["x-mesh-error"], "app-unavailable");
    }
}
