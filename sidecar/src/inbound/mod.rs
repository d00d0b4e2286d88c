//! Inbound: terminates mutual TLS from peer sidecars and forwards to the local app.
//!
//! The request path, one module per step:
//! 1. accept connections on the inbound listener (`accept.rs`, over `serve.rs`)
//! 9. terminate mTLS and read the caller's SPIFFE ID (`identify.rs`)
//! 10. authorize the caller ([`authorize`])
//! 11. forward to the local app in its own protocol (`forward.rs`); for a CONNECT, join the
//!     stream to a new TCP connection to the app (`tunnel.rs`); for an extended CONNECT (a
//!     WebSocket), send the app its HTTP/1.1 upgrade and join the stream to it (`upgrade.rs`)
//!
//! This file is the handler that strings steps 10 and 11 together for each request of an
//! identified connection; `proxy_request.rs` records it.
//!
//! The caller's identity reaches the app in `x-mesh-client-id`. Any header of that name already
//! on the request is deleted first: it came from the calling app and proves nothing.
//!
//! A plain connection from outside the mesh (no TLS) has no identity: its requests take the
//! same steps with the caller `unauthenticated`, which the policy's `unauthenticated` decides
//! (default deny), and reach the app with no `x-mesh-client-id` at all. If it speaks no HTTP it
//! is joined to the app as it is ([`Inbound::plain_tcp`]), or closed; so is one redirected from
//! an `inbound.opaque_ports` port, before any byte is read (`accept.rs`).

pub(crate) mod accept;
pub mod authorize;
pub(crate) mod forward;
pub(crate) mod identify;
pub(crate) mod rate_limit;
pub(crate) mod tunnel;
pub(crate) mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{Body, BoxError};
use crate::config::Config;
use crate::detect::Rewind;
use crate::error::Unsupported;
use crate::headers::TUNNEL;
use crate::metrics::{Direction, Label, Metrics};
use crate::proxy_request::{Parties, Recorder};
use crate::splice::{Splice, TcpSide, splice_plain};
use crate::telemetry::attr;
use crate::telemetry::spans::Spans;

use self::authorize::{Authorization, AuthorizationPolicy};
use self::forward::AppClients;
use self::identify::Caller;
use self::rate_limit::RateLimit;
use self::tunnel::{AppTunnels, connect_app};
use self::upgrade::AppUpgrades;

/// The inbound proxy of one sidecar.
#[derive(Debug)]
pub(crate) struct Inbound {
    service: Label,
    authorization: Authorization,
    rate_limit: RateLimit,
    clients: AppClients,
    tunnels: AppTunnels,
    upgrades: AppUpgrades,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// The app's address, for plain connections joined to it as they are.
    app: SocketAddr,
    /// How long a plain TCP connection may carry no byte either way.
    idle_timeout: Duration,
}

// === impl Inbound ===

impl Inbound {
    pub(crate) fn new(config: &Config, metrics: Arc<Metrics>, spans: Spans) -> Self {
        Self {
            service: config.service.as_str().into(),
            authorization: Authorization::new(
                config.authorization.clone(),
                config.trust_domain.clone(),
            ),
            rate_limit: RateLimit::new(config.rate_limit.clone(), config.trust_domain.clone()),
            clients: AppClients::new(
                config.app,
                &config.limits.app,
                metrics.app_requests_refused.clone(),
            ),
            tunnels: AppTunnels::new(config.app, config.idle_timeout),
            upgrades: AppUpgrades::new(config.app, config.idle_timeout),
            recorder: Recorder::new(
                Direction::Inbound,
                spans,
                config.access_log,
                metrics.clone(),
            ),
            metrics,
            app: config.app,
            idle_timeout: config.idle_timeout,
        }
    }

    /// Replaces who may call this service; requests already authorized are not affected.
    pub(crate) fn set_authorization(&self, policy: AuthorizationPolicy) {
        self.authorization.set(policy);
    }

    /// Replaces the rate limit; an unchanged one keeps its state.
    pub(crate) fn set_rate_limit(&self, policy: mesh_api::rate_limit::RateLimitPolicy) {
        self.rate_limit.set(policy);
    }

    /// Joins a plain connection that speaks no HTTP to a new connection to the app, if the
    /// policy lets unauthenticated callers in; `None` (the connection is closed) if not.
    pub(crate) fn plain_tcp(
        self: Arc<Self>,
        caller: Arc<Caller>,
        client: Rewind<TcpStream>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let service = self.service.as_str();
        if !self
            .authorization
            .admits_plain_tcp(&caller, service, &self.metrics)
        {
            ::tracing::debug!(peer = %caller.addr, "plain TCP connection refused by authorization");
            return None;
        }
        Some(async move {
            let app = match connect_app(self.app).await {
                Ok(app) => app,
                Err(error) => {
                    ::tracing::debug!(peer = %caller.addr, %error, "plain TCP connection closed");
                    return;
                }
            };
            let how = Splice {
                side: TcpSide::Destination,
                metrics: self
                    .metrics
                    .tcp(Direction::Inbound, &caller.label, &self.service),
                idle_timeout: self.idle_timeout,
            };
            splice_plain(app, client, how).await;
        })
    }

    /// Forwards one request from a caller; failures become responses.
    pub(crate) async fn handle(
        self: Arc<Self>,
        caller: Arc<Caller>,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        if caller.id.is_none() {
            // Tunnels are how peer sidecars carry TCP; a plain client's request is only HTTP.
            req.headers_mut().remove(TUNNEL);
        }
        let request = self.recorder.start(Instant::now(), &req, |method| {
            format!("{method} {}", self.service)
        });
        {
            let span = request.trace.span();
            if span.is_recording() {
                let host = req.uri().host().map(str::to_owned);
                span.set_attributes([
                    KeyValue::new(attr::METHOD, req.method().to_string()),
                    KeyValue::new(attr::URL_PATH, req.uri().path().to_owned()),
                    KeyValue::new(attr::PEER_ADDRESS, caller.addr.ip().to_string()),
                    KeyValue::new(attr::SOURCE_IDENTITY, caller.name().to_owned()),
                    KeyValue::new(attr::DESTINATION, self.service.to_string()),
                ]);
                if let Some(host) = host {
                    span.set_attribute(KeyValue::new(attr::SERVER_ADDRESS, host));
                }
                if req.method() == Method::CONNECT || AppTunnels::asked(&req) {
                    let upgrade = AppUpgrades::protocol(&req).map_or("CONNECT", |p| p.as_str());
                    span.set_attribute(KeyValue::new(attr::UPGRADE, upgrade.to_owned()));
                }
            }
        }
        let outcome: Result<Response<Body>, BoxError> = match self
            .authorization
            .check(&caller, self.service.as_str(), &req, &self.metrics)
            .and_then(|()| {
                let grpc = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
                self.rate_limit
                    .check(&caller, self.service.as_str(), grpc, &self.metrics)
                    .map_err(BoxError::from)
            }) {
            Ok(()) if AppTunnels::asked(&req) => {
                let metrics = self
                    .metrics
                    .tcp(Direction::Inbound, &caller.label, &self.service);
                self.tunnels.open(req, metrics).await
            }
            Ok(()) if AppUpgrades::protocol(&req).is_some() => {
                let metrics = self
                    .metrics
                    .tcp(Direction::Inbound, &caller.label, &self.service);
                self.upgrades
                    .open(caller.id.as_ref(), req, &request.trace, request.b3, metrics)
                    .await
            }
            // Sidecars send TCP streams as `x-mesh-tunnel` requests, never as a bare CONNECT.
            Ok(()) if req.method() == Method::CONNECT => Err(Unsupported {
                method: Method::CONNECT,
            }
            .into()),
            Ok(()) => {
                self.clients
                    .forward(caller.id.as_ref(), req, &request.trace, request.b3)
                    .await
            }
            Err(refused) => Err(refused),
        };
        let parties = Parties {
            source: &caller.label,
            source_id: caller.name(),
            destination: &self.service,
            route: None,
        };
        Ok(self.recorder.finish(request, outcome, &parties, 0))
    }
}
