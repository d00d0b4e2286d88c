//! Outbound: routes plain HTTP from the local app to other services, over mutual TLS.
//!
//! The request path, one module per step:
//! 1. accept, detect HTTP/1.1 or HTTP/2 ([`accept`], over `serve.rs`)
//! 2. name the destination service from Host / :authority ([`destination`])
//! 3. look up the destination's stack in the current table ([`policy`]), or the stack of the
//!    route the request matches first in the Gateway API's precedence ([`route_match`]); apply
//!    the route's filters ([`filters`]), pick one of its `backendRefs`, and inject its faults
//!    ([`fault`]); a stack is:
//!    - 5a the overall timeout ([`timeout`])
//!    - 7a concurrency limits that shed excess load ([`shed`])
//!    - 5b budgeted retries with backoff and a replayable body ([`retry`], [`replay`])
//!    - 5c the per-try timeout ([`timeout`])
//!    - 4 the traffic split, a backend (version) by weight, once per request, and
//!      6 the load balancer, p2c over peak EWMA or round robin ([`balance`], [`ewma`])
//!    - 7b outlier ejection of failing endpoints ([`breaker`])
//!    - 8 the endpoint's pooled mTLS HTTP/2 connection, which verifies the peer's SPIFFE ID
//!      ([`connect`])
//!
//! A `protocol: tcp` destination is reached through a listener of its own instead
//! ([`tcp_listen`]), each connection tunnelled over the same balancer and connections
//! ([`tunnel`]). An HTTP/1.1 upgrade (WebSocket) or a CONNECT takes steps 2 and 3 here, then
//! goes straight to the balancer as a CONNECT stream ([`upgrade`]).
//!
//! A redirected request whose Host and original destination name no destination leaves this
//! path after step 3: `outbound.unknown: passthrough` sends it straight to the address the app
//! dialled ([`passthrough`]), `deny` answers 403.
//!
//! The layers share the request, response and future types of [`stack`]. This file is the
//! handler that strings steps 2 to 8 together; `proxy_request.rs` records each request. Errors
//! at any step become one synthetic response in `error::rescue`; every response carries
//! `x-mesh-attempts`, the number of tries made.

pub(crate) mod accept;
pub(crate) mod attempts;
pub(crate) mod balance;
pub(crate) mod breaker;
pub(crate) mod connect;
pub(crate) mod destination;
pub(crate) mod ewma;
pub(crate) mod fault;
pub(crate) mod filters;
pub(crate) mod mirror;
pub(crate) mod passthrough;
pub(crate) mod policy;
pub(crate) mod redirected;
pub(crate) mod replay;
pub(crate) mod retry;
pub(crate) mod route_match;
pub(crate) mod shed;
pub(crate) mod stack;
pub(crate) mod tcp_listen;
pub(crate) mod timeout;
pub(crate) mod tunnel;
pub(crate) mod upgrade;
pub(crate) mod weighted;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{EXPECT, HOST};
use http::uri::Authority;
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::{Body, BoxError};
use crate::body_limit::BodyLimit;
use crate::config::{Config, UnknownDestination};
use crate::error::{NoAuthority, NoRoute, OutboundDenied, TcpOnly};
use crate::headers::{
    MIRROR, ORIG_PROTO, ORIG_PROTO_HTTP1, TUNNEL, absolute_uri, remove_hop_by_hop,
};
use crate::identity::SpiffeId;
use crate::metrics::{Direction, Label, Metrics};
use crate::original_dst::OriginalDst;
use crate::proxy_request::{Parties, Recorder};
use crate::splice::{OpenStreams, Splice, TcpSide};
use crate::telemetry::spans::Spans;
use crate::telemetry::{attr, propagation};
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;

use self::attempts::Attempts;
use self::balance::Balance;
use self::destination::PinnedVersion;
use self::fault::Faults;
use self::filters::Filtered;
use self::mirror::{MirrorLabels, MirrorTarget};
use self::passthrough::Upstream;
use self::policy::{DestinationService, Destinations, RouteTarget};
use self::stack::call;
use self::upgrade::Upgrade;
use mesh_api::route::{Filter, PathMatch};

/// Label used for requests whose destination is not known, to bound metric cardinality.
const UNKNOWN: &str = "unknown";

/// Where a request goes after step 3.
enum Target {
    /// To a destination of this sidecar, through the mesh (boxed: the other is small).
    Mesh(Box<Routed>),
    /// Straight to the address the app dialled, outside the mesh.
    Passthrough(SocketAddr),
}

/// A redirected request whose Host and original destination name no destination: the
/// address, for `outbound.unknown` to decide on. Never leaves this module.
#[derive(Debug, thiserror::Error)]
#[error("{0} is outside the mesh")]
struct Outside(SocketAddr);

/// Where step 3 sends a request.
struct Routed {
    /// The destination service.
    destination: Label,
    /// The destination's named route the request matched, if any.
    route: Option<Label>,
    /// The route's filters and the path match that took the request, when it has filters.
    filters: Option<(Arc<[Filter]>, PathMatch)>,
    /// The backend of the balancer the route's `backendRefs`, or a [`PinnedVersion`], pinned
    /// the request to.
    pin: Option<usize>,
    /// The faults the route, or else the destination, injects.
    faults: Option<Arc<Faults>>,
    /// Where the route's mirrors send copies, resolved; empty without mirrors.
    mirrors: Vec<MirrorTarget>,
    /// The route's replay buffer, the longest body a mirror copies.
    max_body: u64,
    /// The route's stack, or the destination's.
    service: DestinationService,
    /// The destination's balancer alone, for upgrades and tunnels.
    balance: Balance,
    /// The destination's `timeout`: how long an upgrade may wait for its answer.
    timeout: Option<std::time::Duration>,
    authority: Authority,
}

/// The outbound proxy of one sidecar.
#[derive(Debug)]
pub(crate) struct Outbound {
    service: Label,
    /// This sidecar's identity, for spans.
    identity: String,
    /// The destination label of requests that name no known destination.
    unknown: Label,
    destinations: watch::Receiver<Arc<Destinations>>,
    recorder: Recorder,
    /// For the byte counts of upgraded streams, and mirrored copies.
    metrics: Arc<Metrics>,
    /// How long an upgraded stream may be quiet.
    idle_timeout: Duration,
    /// Where upgraded streams are counted, for the drain.
    streams: OpenStreams,
    /// For the spans of mirrored copies.
    spans: Spans,
    /// What redirected requests outside the mesh get (`outbound.unknown`).
    outside: UnknownDestination,
    /// The destination label of passthrough requests.
    passthrough: Label,
    /// How long a passthrough connection may take to open.
    connect_timeout: Duration,
}

// === impl Outbound ===

impl Outbound {
    pub(crate) fn new(
        config: &Config,
        identity: &SpiffeId,
        destinations: watch::Receiver<Arc<Destinations>>,
        metrics: Arc<Metrics>,
        spans: Spans,
        streams: OpenStreams,
    ) -> Self {
        Self {
            identity: identity.to_string(),
            service: config.service.as_str().into(),
            unknown: UNKNOWN.into(),
            destinations,
            recorder: Recorder::new(
                Direction::Outbound,
                spans.clone(),
                config.access_log,
                metrics.clone(),
            ),
            metrics,
            idle_timeout: config.idle_timeout,
            streams,
            spans,
            outside: config.outbound.unknown,
            passthrough: passthrough::DESTINATION.into(),
            connect_timeout: config.connect_timeout,
        }
    }

    /// Proxies one request; every failure becomes a response, so this never errors.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let upgrade = Upgrade::of(&req);
        let target = self.target(&req, upgrade.as_ref());
        let (destination, route) = match &target {
            Ok(Target::Mesh(routed)) => (routed.destination.clone(), routed.route.clone()),
            Ok(Target::Passthrough(_)) => (self.passthrough.clone(), None),
            Err(_) => (self.unknown.clone(), None),
        };
        let request = self
            .recorder
            .start(started, &req, |method| format!("{method} {destination}"));
        {
            let span = request.trace.span();
            if span.is_recording() {
                span.set_attributes([
                    KeyValue::new(attr::METHOD, req.method().to_string()),
                    KeyValue::new(attr::URL_PATH, req.uri().path().to_owned()),
                    KeyValue::new(attr::SOURCE_IDENTITY, self.identity.clone()),
                    KeyValue::new(attr::DESTINATION, destination.to_string()),
                ]);
                if let Ok(Target::Mesh(routed)) = &target {
                    span.set_attribute(KeyValue::new(
                        attr::SERVER_ADDRESS,
                        routed.authority.host().to_owned(),
                    ));
                }
                if let Some(route) = &route {
                    span.set_attribute(KeyValue::new(attr::ROUTE, route.to_string()));
                }
                if let Some(upgrade) = &upgrade {
                    span.set_attribute(KeyValue::new(attr::UPGRADE, upgrade.name().to_owned()));
                }
            }
        }
        let attempts = Arc::new(Attempts::new(request.trace.clone()));
        // A route's `backendRefs` or a gateway's version chose the backend: every try, and an
        // upgrade's one, goes there.
        if let Ok(Target::Mesh(routed)) = &target
            && let Some(pin) = routed.pin
        {
            attempts.pin_backend(pin);
        }
        let outcome = match (target, upgrade) {
            (Ok(Target::Passthrough(address)), upgrade) => {
                self.metrics.outbound_passthrough("http");
                // Each redirected connection has its own; a request without one gets a
                // connection of its own.
                let upstream = req
                    .extensions()
                    .get::<Arc<Upstream>>()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Upstream::new(address)));
                let how = Splice {
                    side: TcpSide::Source,
                    metrics: self.metrics.tcp(
                        Direction::Outbound,
                        &self.service,
                        &self.passthrough,
                    ),
                    idle_timeout: self.idle_timeout,
                };
                let settings = (self.connect_timeout, how);
                passthrough::forward(&upstream, req, upgrade, settings, &self.streams).await
            }
            (Ok(Target::Mesh(routed)), Some(upgrade)) => {
                let metrics =
                    self.metrics
                        .tcp(Direction::Outbound, &self.service, &routed.destination);
                let prepare = |peer_req: &mut Request<Body>| {
                    propagation::inject(attempts.context(), request.b3, peer_req.headers_mut());
                    peer_req.extensions_mut().insert(attempts.clone());
                };
                let peer = upgrade::Peer {
                    destination: &routed.destination,
                    balance: routed.balance,
                    timeout: routed.timeout,
                    authority: routed.authority,
                };
                let how = Splice {
                    side: TcpSide::Source,
                    metrics,
                    idle_timeout: self.idle_timeout,
                };
                upgrade::forward(peer, upgrade, req, prepare, how, &self.streams).await
            }
            (Ok(Target::Mesh(routed)), None) => {
                self.forward(*routed, req, attempts.clone(), request.b3)
                    .await
            }
            (Err(err), _) => Err(err),
        };
        let parties = Parties {
            source: &self.service,
            source_id: &self.identity,
            destination: &destination,
            route: route.as_ref(),
        };
        let tries = attempts.count();
        Ok(self.recorder.finish(request, outcome, &parties, tries))
    }

    /// Steps 2 and 3, and for a redirected request outside the mesh, what `outbound.unknown`
    /// says.
    fn target<B>(&self, req: &Request<B>, upgrade: Option<&Upgrade>) -> Result<Target, BoxError> {
        let err = match self.route(req, upgrade) {
            Ok(routed) => return Ok(Target::Mesh(Box::new(routed))),
            Err(err) => err,
        };
        let Some(&Outside(address)) = err.downcast_ref::<Outside>() else {
            return Err(err);
        };
        match self.outside {
            UnknownDestination::Passthrough => Ok(Target::Passthrough(address)),
            UnknownDestination::Deny => {
                self.metrics.outbound_denied("http");
                let host = destination::authority(req)
                    .map_or_else(|| address.to_string(), |a| a.to_string());
                Err(OutboundDenied { address, host }.into())
            }
        }
    }

    /// Steps 2 and 3: the destination, the stack of the request's route, and the authority to
    /// forward. An upgrade or a CONNECT takes no route: routes set timeouts and retries, which
    /// a stream does not have.
    fn route<B>(&self, req: &Request<B>, upgrade: Option<&Upgrade>) -> Result<Routed, BoxError> {
        let original = req.extensions().get::<OriginalDst>().map(|dst| dst.0);
        let authority = match destination::authority(req) {
            Some(authority) => authority,
            None => original
                .and_then(|dst| Authority::try_from(dst.to_string()).ok())
                .ok_or(NoAuthority)?,
        };
        let name = destination::service_name(&authority);
        let stack = {
            let table = self.destinations.borrow();
            match table.get(&name) {
                Some(stack) => stack,
                // A redirected connection names its service by the address the app dialled (a
                // service's virtual address, or one of its endpoints) when its Host does not.
                None => match original {
                    Some(dst) => table
                        .by_address(dst)
                        .map(|(_, stack)| stack)
                        .ok_or(Outside(dst))?,
                    None => return Err(NoRoute { destination: name }.into()),
                },
            }
        };
        if let Some(tcp) = stack.tcp()
            && upgrade != Some(&Upgrade::Connect)
        {
            return Err(TcpOnly {
                destination: stack.name.to_string(),
                listen: tcp.listen,
            }
            .into());
        }
        let route = match upgrade {
            Some(_) => None,
            None => stack.route(req.method(), req.uri(), req.headers()),
        };
        let mut routed = Routed {
            destination: stack.name.clone(),
            route: route.map(|(r, _)| r.name.clone()),
            filters: route
                .filter(|(r, _)| !r.filters.is_empty())
                .map(|(r, matched)| (r.filters.clone(), matched.path.clone())),
            pin: None,
            faults: route.map_or(&stack.faults, |(r, _)| &r.faults).clone(),
            mirrors: Vec::new(),
            max_body: route.map_or(0, |(r, _)| r.max_body),
            service: route.map_or(&stack.service, |(r, _)| &r.service).clone(),
            balance: stack.balance().clone(),
            timeout: stack.timeout(),
            authority,
        };
        if let Some((r, _)) = route
            && !r.mirrors.is_empty()
        {
            let table = self.destinations.borrow();
            routed.mirrors = r
                .mirrors
                .iter()
                .filter_map(|m| {
                    let (balance, pin) = match &m.target {
                        RouteTarget::Split => (stack.balance().clone(), None),
                        RouteTarget::Backend(index) => (stack.balance().clone(), Some(*index)),
                        RouteTarget::Service { name, version } => {
                            // A target missing from the table is skipped: the caller's request
                            // must not fail for its mirror.
                            let other = table.get(name)?;
                            let pin = version
                                .as_ref()
                                .map(|v| other.balance().backend_of(v).unwrap_or(usize::MAX));
                            (other.balance().clone(), pin)
                        }
                    };
                    let authority = match &m.target {
                        RouteTarget::Service { name, .. } => name.parse().ok()?,
                        _ => routed.authority.clone(),
                    };
                    Some(MirrorTarget {
                        balance,
                        pin,
                        authority,
                        labels: MirrorLabels {
                            destination: stack.name.clone(),
                            route: r.name.clone(),
                            mirror: m.service.clone(),
                        },
                        percent: m.percent,
                        in_flight: m.in_flight.clone(),
                    })
                })
                .collect();
        }
        let pinned = req.extensions().get::<PinnedVersion>();
        match (pinned, route.map(|(r, _)| r.target())) {
            // The destination's own stack and routes, only that version's endpoints.
            (Some(PinnedVersion(version)), _) => {
                // A version with no backend pins none in range: no endpoint, a 503.
                routed.pin = Some(stack.balance().backend_of(version).unwrap_or(usize::MAX));
            }
            (None, None | Some(RouteTarget::Split)) => {}
            (None, Some(RouteTarget::Backend(index))) => routed.pin = Some(*index),
            (None, Some(RouteTarget::Service { name, version })) => {
                // Another service's request: its own stack and policy.
                let other = self
                    .destinations
                    .borrow()
                    .get(name)
                    .ok_or_else(|| NoRoute {
                        destination: name.clone(),
                    })?;
                routed.pin = version
                    .as_ref()
                    .map(|v| other.balance().backend_of(v).unwrap_or(usize::MAX));
                routed.service = other.service.clone();
                routed.balance = other.balance().clone();
            }
        }
        Ok(routed)
    }

    /// Steps 5 to 8: the route's filters, then through the stack.
    async fn forward(
        &self,
        routed: Routed,
        req: Request<Incoming>,
        attempts: Arc<Attempts>,
        b3: Option<propagation::B3>,
    ) -> Result<Response<Body>, BoxError> {
        let mut authority = routed.authority;
        let (mut parts, body) = req.into_parts();
        if let Some((filters, matched)) = &routed.filters {
            let filtered = filters::request(
                filters,
                matched,
                &mut parts.uri,
                &mut parts.headers,
                &mut authority,
            )?;
            if let Filtered::Answer(mut rsp) = filtered {
                filters::response(filters, &mut rsp)?;
                return Ok(rsp);
            }
        }
        if let Some(faults) = &routed.faults {
            faults.inject(&attempts).await?;
        }
        let mut req = to_peer_request(Request::from_parts(parts, body), authority)?;
        if !routed.mirrors.is_empty() {
            let (parts, body) = req.into_parts();
            let recording = mirror::Recording {
                parent: attempts.context(),
                b3,
                spans: &self.spans,
                metrics: &self.metrics,
            };
            let body = mirror::start(routed.mirrors, &parts, body, routed.max_body, &recording);
            req = Request::from_parts(parts, body);
        }
        // The next hop's parent is this sidecar's CLIENT span.
        propagation::inject(attempts.context(), b3, req.headers_mut());
        req.extensions_mut().insert(attempts);
        let mut rsp = call(routed.service, req).await?;
        if let Some((filters, _)) = &routed.filters {
            filters::response(filters, &mut rsp)?;
        }
        Ok(rsp)
    }
}

/// Rewrites an app's request for the HTTP/2 hop to the peer sidecar.
///
/// The body is passed through as a stream, never buffered. `Expect: 100-continue` is answered by
/// our own HTTP/1.1 server (it sends `100 Continue` when the body is first read), so it is not
/// forwarded; HTTP/2 has no use for it on the mesh hop. A [`BodyLimit`] extension (set by the
/// gateway on bodies of undeclared length) is enforced here, as the body streams.
fn to_peer_request(
    req: Request<Incoming>,
    authority: Authority,
) -> Result<Request<Body>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let http1 = parts.version < Version::HTTP_2;
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.remove(HOST);
    parts.headers.remove(EXPECT);
    // Only a sidecar may say what the app spoke, or that a request is a mirror's copy.
    parts.headers.remove(ORIG_PROTO);
    parts.headers.remove(TUNNEL);
    parts.headers.remove(MIRROR);
    if http1 {
        parts.headers.insert(ORIG_PROTO, ORIG_PROTO_HTTP1);
    }
    parts.uri = absolute_uri(&parts.uri, authority.as_str())?;
    parts.version = Version::HTTP_2;
    let mut body = body.map_err(BoxError::from).boxed_unsync();
    if let Some(limit) = parts.extensions.remove::<BodyLimit>() {
        body = limit.apply(body);
    }
    Ok(Request::from_parts(parts, body))
}
