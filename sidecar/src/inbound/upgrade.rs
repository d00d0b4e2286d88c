//! Step 11 for an upgrade: an authorized caller's extended CONNECT (RFC 8441, `:protocol
//! websocket`) sent to the app as the HTTP/1.1 upgrade request the calling app made.
//!
//! Each upgrade gets a connection of its own to the app, since the connection becomes the
//! stream. The request keeps its path and end-to-end headers (`Sec-WebSocket-*`, `Origin`),
//! with `Connection: upgrade`, `Upgrade: <protocol>`, the caller's `x-mesh-client-id` and the
//! trace headers added. If the app switches protocols (101), the caller gets 200 with the app's
//! headers (`Sec-WebSocket-Accept`) and the two streams are joined by `splice.rs`; any other
//! answer goes back as it is, except that a 2xx (an app that ignored the upgrade) travels as
//! 409 with `x-mesh-app-status`, since a 2xx would open the caller's stream.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONNECTION, HOST, HeaderValue, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::ext::Protocol;
use hyper_util::rt::TokioIo;

use crate::body::{Body, BoxError, empty};
use crate::error::AppUpgradeFailed;
use crate::headers::{APP_STATUS, APP_STATUS_CARRIER, forwarded_response};
use crate::identity::SpiffeId;
use crate::metrics::TcpMetrics;
use crate::splice::{Splice, TcpSide, splice_upgraded};
use crate::telemetry::propagation::B3;

use super::forward::headers_for_app;
use super::tunnel::connect_app;

/// Opens upgraded connections to the local app.
#[derive(Clone, Debug)]
pub(crate) struct AppUpgrades {
    app: SocketAddr,
    idle_timeout: Duration,
}

// === impl AppUpgrades ===

impl AppUpgrades {
    pub(crate) fn new(app: SocketAddr, idle_timeout: Duration) -> Self {
        Self { app, idle_timeout }
    }

    /// The protocol an extended CONNECT asks for, if `req` is one.
    pub(crate) fn protocol<B>(req: &Request<B>) -> Option<&Protocol> {
        req.extensions().get::<Protocol>()
    }

    /// Sends the upgrade `req` to the app; on its 101, answers 200 and joins the streams.
    pub(crate) async fn open(
        &self,
        caller: Option<&SpiffeId>,
        mut req: Request<Incoming>,
        trace: &opentelemetry::Context,
        b3: Option<B3>,
        metrics: TcpMetrics,
    ) -> Result<Response<Body>, BoxError> {
        let from_peer = hyper::upgrade::on(&mut req);
        let app_req = self.to_app(caller, req, trace, b3)?;
        let app_failed = |source| AppUpgradeFailed {
            app: self.app,
            source,
        };
        let tcp = connect_app(self.app).await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(app_failed)?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "upgraded app connection closed with error");
            }
        });
        let mut rsp = sender.send_request(app_req).await.map_err(app_failed)?;
        if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = rsp.status();
            let mut rsp = forwarded_response(rsp);
            rsp.headers_mut().remove(APP_STATUS);
            if status.is_success() {
                rsp.headers_mut()
                    .insert(APP_STATUS, HeaderValue::from(status.as_u16()));
                *rsp.status_mut() = APP_STATUS_CARRIER;
            }
            return Ok(rsp);
        }
        let to_app = hyper::upgrade::on(&mut rsp);
        let how = Splice {
            side: TcpSide::Destination,
            metrics,
            idle_timeout: self.idle_timeout,
        };
        tokio::spawn(splice_upgraded(to_app, from_peer, how));
        let (mut parts, _) = forwarded_response(rsp).into_parts();
        parts.status = StatusCode::OK;
        parts.extensions = http::Extensions::new();
        Ok(Response::from_parts(parts, empty()))
    }

    /// The HTTP/1.1 upgrade request the calling app made, rebuilt from the extended CONNECT.
    fn to_app(
        &self,
        caller: Option<&SpiffeId>,
        req: Request<Incoming>,
        trace: &opentelemetry::Context,
        b3: Option<B3>,
    ) -> Result<Request<Body>, BoxError> {
        let (mut parts, _) = req.into_parts();
        let protocol = parts
            .extensions
            .get::<Protocol>()
            .map(|p| HeaderValue::from_str(p.as_str()))
            .transpose()?
            .unwrap_or_else(|| HeaderValue::from_static("websocket"));
        let host = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str())?,
            None => HeaderValue::from_str(&self.app.to_string())?,
        };
        headers_for_app(&mut parts.headers, caller, trace, b3)?;
        parts.headers.insert(HOST, host);
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, protocol);
        parts.method = http::Method::GET;
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()?;
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        Ok(Request::from_parts(parts, empty()))
    }
}
