//! Inbound: terminates mutual TLS from peer sidecars and forwards to the local app.
//!
//! The request path, one module per step:
//! 9. terminate mTLS and read the caller's SPIFFE ID ([`identify`])
//! 10. authorize the caller ([`authorize`])
//! 11. forward to the local app in its own protocol ([`forward`])
//!
//! The caller's identity reaches the app in `x-mesh-client-id`. Any header of that name already
//! on the request is deleted first: it came from the calling app and proves nothing.

pub(crate) mod accept;
pub mod authorize;
pub(crate) mod forward;
pub(crate) mod identify;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use http::header::{HOST, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{Body, BoxError};
use crate::error::{self, AppFailed};
use crate::headers::{
    CLIENT_ID, ORIG_PROTO, ORIG_PROTO_HTTP1, absolute_uri, forwarded_response, remove_hop_by_hop,
};
use crate::identity::SpiffeId;
use crate::log_limit::LogLimit;
use crate::metrics::{Direction, Label, Metrics};
use crate::telemetry::spans::Spans;
use crate::telemetry::{access_log, attr, end_span, propagation, trace_id};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue};

use self::authorize::AuthorizationPolicy;
use self::forward::AppClients;

/// The identified peer of one inbound connection.
#[derive(Debug)]
pub(crate) struct Caller {
    /// Its SPIFFE ID.
    pub(crate) id: SpiffeId,
    /// Its service name (or whole ID) as a metric label.
    pub(crate) label: Label,
    /// Its socket address.
    pub(crate) addr: SocketAddr,
}

impl Caller {
    pub(crate) fn new(id: SpiffeId, addr: SocketAddr) -> Self {
        let label = id.service().unwrap_or(id.as_str()).into();
        Self { id, label, addr }
    }
}

/// The inbound proxy of one sidecar.
#[derive(Debug)]
pub(crate) struct Inbound {
    service: Label,
    trust_domain: String,
    /// Replaced whole when the control plane pushes a new policy.
    authorization: ArcSwap<AuthorizationPolicy>,
    spans: Spans,
    access_log: bool,
    log_limit: LogLimit,
    app: SocketAddr,
    clients: AppClients,
    metrics: Arc<Metrics>,
}

// === impl Inbound ===

impl Inbound {
    pub(crate) fn new(config: &crate::config::Config, metrics: Arc<Metrics>, spans: Spans) -> Self {
        let (service, app, access_log) = (config.service.as_str(), config.app, config.access_log);
        Self {
            trust_domain: config.trust_domain.clone(),
            authorization: ArcSwap::from_pointee(config.authorization.clone()),
            spans,
            access_log,
            log_limit: LogLimit::new(10),
            service: service.into(),
            app,
            clients: AppClients::new(app),
            metrics,
        }
    }

    /// Replaces who may call this service; requests already authorized are not affected.
    pub(crate) fn set_authorization(&self, policy: AuthorizationPolicy) {
        self.authorization.store(Arc::new(policy));
    }

    /// Forwards one request from an identified caller; failures become responses.
    pub(crate) async fn handle(
        self: Arc<Self>,
        caller: Arc<Caller>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let extracted = propagation::extract(req.headers());
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let trace = self.spans.start(&extracted.parent, SpanKind::Server, || {
            format!("{method} {}", self.service)
        });
        if trace.span().is_recording() {
            let host = req.uri().host().map(str::to_owned);
            trace.span().set_attributes([
                KeyValue::new(attr::METHOD, method.to_string()),
                KeyValue::new(attr::URL_PATH, path.clone()),
                KeyValue::new(attr::PEER_ADDRESS, caller.addr.ip().to_string()),
                KeyValue::new(attr::SOURCE_IDENTITY, caller.id.to_string()),
                KeyValue::new(attr::DESTINATION, self.service.to_string()),
            ]);
            if let Some(host) = host {
                trace
                    .span()
                    .set_attribute(KeyValue::new(attr::SERVER_ADDRESS, host));
            }
        }
        let outcome = match self.authorization.load().check(
            &caller.id,
            &self.service.to_string(),
            &self.trust_domain,
        ) {
            Ok(()) => self.forward(&caller.id, req, &trace, extracted.b3).await,
            Err(refused) => {
                self.metrics.authorization_denied(&caller.label);
                Err(refused.into())
            }
        };
        let (rsp, mesh_error) = match outcome {
            Ok(rsp) => (forwarded_response(rsp), None),
            Err(err) => {
                let (reason, rsp) = error::rescue(err.as_ref());
                if self.log_limit.allow("request failures") {
                    tracing::warn!(caller = %caller.id, reason = reason.as_str(), error = %err, "inbound request failed");
                }
                (rsp, Some(reason.as_str()))
            }
        };
        let elapsed = started.elapsed();
        end_span(trace.span(), rsp.status(), mesh_error, 0);
        self.metrics.request(
            Direction::Inbound,
            &caller.label,
            &self.service,
            rsp.status().as_u16(),
            elapsed.as_secs_f64(),
        );
        if self.access_log {
            access_log::write(&access_log::Entry {
                route: None,
                direction: "inbound",
                trace_id: trace_id(&trace),
                source: caller.id.as_str(),
                destination: &self.service.to_string(),
                method: method.as_str(),
                path: &path,
                status: rsp.status().as_u16(),
                duration_ms: elapsed,
                attempts: 0,
            });
        }
        Ok(rsp)
    }

    async fn forward(
        &self,
        caller: &SpiffeId,
        req: Request<Incoming>,
        trace: &Context,
        b3: Option<propagation::B3>,
    ) -> Result<Response<Incoming>, BoxError> {
        let (mut parts, body) = req.into_parts();
        let http1 = parts.version < Version::HTTP_2
            || parts
                .headers
                .get(ORIG_PROTO)
                .is_some_and(|v| v == ORIG_PROTO_HTTP1);
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.remove(ORIG_PROTO);
        parts.headers.remove(CLIENT_ID);
        parts
            .headers
            .insert(CLIENT_ID, HeaderValue::from_str(caller.as_str())?);
        // The app's own calls continue the trace as children of this SERVER span.
        propagation::inject(trace, b3, &mut parts.headers);

        let authority = match parts.uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => match parts.headers.get(HOST).and_then(|h| h.to_str().ok()) {
                Some(host) => host.to_owned(),
                None => self.app.to_string(),
            },
        };
        parts.uri = absolute_uri(&parts.uri, &authority)?;
        let (client, version) = if http1 {
            (&self.clients.http1, Version::HTTP_11)
        } else {
            (&self.clients.http2, Version::HTTP_2)
        };
        parts.version = version;
        let req = Request::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
        client.request(req).await.map_err(|source| {
            BoxError::from(AppFailed {
                app: self.app,
                source,
            })
        })
    }
}
