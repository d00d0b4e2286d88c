//! One gateway listener's requests: routed, readdressed to the mesh service, handed on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Uri};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};

use crate::body::Body;
use crate::body_limit::BodyLimit;
use crate::config::{GatewayClients, GatewayConfig};
use crate::error::{RateLimited, Reason, rescue, synthetic};
use crate::metrics::{Label, Metrics};
use crate::outbound::accept::Ended;
use crate::outbound::destination::{self, PinnedVersion};

use super::edge::{ClientRates, Refusal, check_sizes, forwarding};
use super::routes::{ListenerRoutes, Routing};

/// The host the outside client asked for, kept for the service behind the gateway.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// One gateway listener's request handler: routes, then the outbound proxy (`forward`).
#[derive(Debug)]
pub(crate) struct GatewayListener<F> {
    /// The listener's name, for logs and metrics.
    name: Label,
    /// The routes' names, by index, for metrics.
    route_names: Vec<Label>,
    metrics: Arc<Metrics>,
    /// `http` or `https`, for `x-forwarded-proto`.
    proto: &'static str,
    routes: ListenerRoutes,
    clients: GatewayClients,
    /// Per client address, when `clients.rate_limit` is set.
    rates: Option<ClientRates>,
    forward: F,
}

// === impl GatewayListener ===

impl<F, Fut> GatewayListener<F>
where
    F: Fn(Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<Response<Body>, Infallible>>,
{
    /// The handler of listener `index` of `config`.
    pub(crate) fn new(
        config: &GatewayConfig,
        index: usize,
        forward: F,
        metrics: Arc<Metrics>,
    ) -> Self {
        let listener = &config.listeners[index];
        Self {
            name: listener.name.as_str().into(),
            route_names: config
                .routes
                .iter()
                .map(|r| r.name.as_str().into())
                .collect(),
            metrics,
            proto: if listener.tls.is_some() {
                "https"
            } else {
                "http"
            },
            routes: ListenerRoutes::new(config, index),
            clients: config.clients.clone(),
            rates: config.clients.rate_limit.map(ClientRates::new),
            forward,
        }
    }

    /// Checks, then routes one request from `peer`; every failure becomes a response.
    pub(crate) async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let clients = &self.clients;
        let undeclared = match check_sizes(
            req.headers(),
            clients.max_request_bytes,
            clients.max_header_bytes,
        ) {
            Ok(undeclared) => undeclared,
            Err(refusal) => return Ok(self.refuse(refusal)),
        };
        let client = forwarding(
            req.headers_mut(),
            peer.ip(),
            self.proto,
            clients.trusted_hops,
        );
        if let Some(rates) = &self.rates
            && let Err(retry_after) = rates.acquire(client).await
        {
            let limited = RateLimited {
                caller: client.to_string(),
                service: format!("gateway listener {:?}", self.name.as_str()),
                limit: rates.describe(),
                retry_after,
                grpc: false,
            };
            self.metrics.gateway_refused(&self.name, "rate-limited");
            return Ok(rescue(&limited).1);
        }
        let Some(authority) = destination::authority(&req) else {
            return Ok(not_found(
                "the request names no host (Host or :authority)".into(),
            ));
        };
        let host = destination::service_name(&authority);
        let service = match self.routes.route(&host, &req) {
            Routing::To {
                route,
                service,
                version,
            } => {
                if let Some(route) = self.route_names.get(route) {
                    self.metrics.gateway_routed(&self.name, route);
                }
                if let Some(version) = version {
                    req.extensions_mut()
                        .insert(PinnedVersion(version.to_owned()));
                }
                service.to_owned()
            }
            Routing::NoHost => {
                self.metrics.gateway_refused(&self.name, "no-route");
                return Ok(not_found(format!(
                    "no route of gateway listener {:?} serves host {host:?}",
                    self.name.as_str()
                )));
            }
            Routing::NoRule => {
                self.metrics.gateway_refused(&self.name, "no-route");
                return Ok(not_found(format!(
                    "no rule of the routes for host {host:?} on gateway listener {:?} matches \
                     {} {}",
                    self.name.as_str(),
                    req.method(),
                    req.uri().path()
                )));
            }
        };
        if let Err(message) = address_to(&mut req, &authority, &service) {
            return Ok(synthetic(Reason::Internal, message));
        }
        // A declared length was checked above and is held to by the HTTP server; only a body
        // of undeclared length is counted as it streams (see `BodyLimit`).
        let counted = undeclared && !req.body().is_end_stream();
        let Some(limit) = counted.then(|| BodyLimit::new(clients.max_request_bytes)) else {
            return (self.forward)(req).await;
        };
        req.extensions_mut().insert(limit.clone());
        let rsp = (self.forward)(req).await;
        if limit.exceeded() {
            return Ok(self.refuse(Refusal::BodyOverLimit { max: limit.max() }));
        }
        rsp
    }

    /// Counts what hyper refused itself on a connection of this listener, before any request
    /// reached [`GatewayListener::handle`]: a request head over `max_header_bytes` on HTTP/1.1
    /// (431), or a URI over hyper's 64 KiB (414).
    pub(crate) fn count_ended(&self, ended: Ended) {
        let reason = match ended {
            Ended::Closed => return,
            Ended::HeadTooLarge => "headers-too-large",
            Ended::UriTooLong => "uri-too-long",
        };
        self.metrics.gateway_refused(&self.name, reason);
    }

    /// Counts `refusal` and answers it.
    fn refuse(&self, refusal: Refusal) -> Response<Body> {
        let reason = match refusal {
            Refusal::BodyTooLarge { .. } | Refusal::BodyOverLimit { .. } => "body-too-large",
            Refusal::HeadersTooLarge { .. } => "headers-too-large",
        };
        self.metrics.gateway_refused(&self.name, reason);
        refused(refusal)
    }
}

/// Readdresses `req` to the mesh `service`, keeping the host asked for in `x-forwarded-host`.
fn address_to<B>(req: &mut Request<B>, asked: &Authority, service: &str) -> Result<(), String> {
    let to = Authority::try_from(service)
        .map_err(|e| format!("{service:?} is not a service name: {e}"))?;
    let asked = HeaderValue::from_str(asked.as_str())
        .map_err(|e| format!("the host {asked} cannot be forwarded: {e}"))?;
    req.headers_mut().insert(X_FORWARDED_HOST, asked);
    let host = HeaderValue::from_str(service)
        .map_err(|e| format!("{service:?} is not a service name: {e}"))?;
    req.headers_mut().insert(HOST, host);
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(to);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| format!("cannot readdress: {e}"))?;
    }
    Ok(())
}

/// 413 or 431, with `x-mesh-error: request-body` or `unsupported` and the limit.
fn refused(refusal: Refusal) -> Response<Body> {
    let (status, message) = match refusal {
        Refusal::BodyTooLarge { length, max } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body ({length} bytes) is over the gateway's {max}"),
        ),
        Refusal::BodyOverLimit { max } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body went over the gateway's {max} bytes"),
        ),
        Refusal::HeadersTooLarge { bytes, max } => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers ({bytes} bytes) are over the gateway's {max}"),
        ),
    };
    let mut rsp = synthetic(Reason::RequestBody, message);
    *rsp.status_mut() = status;
    rsp
}

/// 404 with `x-mesh-error: no-route`: the gateway has no route for the request.
fn not_found(message: String) -> Response<Body> {
    let mut rsp = synthetic(Reason::NoRoute, message);
    *rsp.status_mut() = StatusCode::NOT_FOUND;
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_readdressed_to_the_service_keeping_the_host_asked_for() {
        let mut req = Request::get("https://shop.example.com:8443/api?q=1")
            .header(HOST, "shop.example.com:8443")
            .body(())
            .unwrap();
        let asked = destination::authority(&req).unwrap();
        address_to(&mut req, &asked, "orders").unwrap();
        assert_eq!(req.uri().to_string(), "https://orders/api?q=1");
        assert_eq!(req.headers()[HOST], "orders");
        assert_eq!(req.headers()[X_FORWARDED_HOST], "shop.example.com:8443");
    }
}
