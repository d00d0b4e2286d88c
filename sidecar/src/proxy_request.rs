//! What both directions do around every request they proxy: open its span, turn a failure
//! into the response the mesh sends, count it, log it, and write its access-log line. The
//! handlers in `outbound/mod.rs` and `inbound/mod.rs` differ only in the steps in between.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Method, Request, Response};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use tokio::time::Instant;

use crate::body::{Body, BoxError};
use crate::error;
use crate::headers::ATTEMPTS;
use crate::metrics::{Direction, Label, Metrics};
use crate::telemetry::propagation::{self, B3};
use crate::telemetry::spans::Spans;
use crate::telemetry::tap::{self, TapEvent};
use crate::telemetry::{access_log, end_span, trace_id};
use mesh_api::log_limit::LogLimit;

/// Failed-request warnings logged per second at most; the rest are counted.
const LOG_LIMIT: u64 = 10;

/// Records the requests of one direction.
#[derive(Debug)]
pub(crate) struct Recorder {
    direction: Direction,
    spans: Spans,
    access_log: bool,
    log_limit: LogLimit,
    metrics: Arc<Metrics>,
}

/// One request on its way through a handler.
#[derive(Debug)]
pub(crate) struct ProxyRequest {
    started: Instant,
    /// The request's span (CLIENT outbound, SERVER inbound) as the current context.
    pub(crate) trace: Context,
    /// The B3 headers it arrived with, so the next hop gets them in the same form.
    pub(crate) b3: Option<B3>,
    method: Method,
    path: String,
}

/// Whom a request's metrics, logs and access-log line name.
#[derive(Debug)]
pub(crate) struct Parties<'a> {
    /// The calling service, as a metric label.
    pub(crate) source: &'a Label,
    /// The caller's identity, for logs.
    pub(crate) source_id: &'a str,
    /// The called service.
    pub(crate) destination: &'a Label,
    /// The destination's named route the request took, if any.
    pub(crate) route: Option<&'a Label>,
}

// === impl Recorder ===

impl Recorder {
    pub(crate) fn new(
        direction: Direction,
        spans: Spans,
        access_log: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            direction,
            spans,
            access_log,
            log_limit: LogLimit::new(LOG_LIMIT),
            metrics,
        }
    }

    /// Opens the span of a request that arrived at `started`, as the child of the trace its
    /// headers carry. `name` is called only when the span is recorded.
    pub(crate) fn start<B>(
        &self,
        started: Instant,
        req: &Request<B>,
        name: impl FnOnce(&Method) -> String,
    ) -> ProxyRequest {
        let extracted = propagation::extract(req.headers());
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let kind = match self.direction {
            Direction::Outbound => SpanKind::Client,
            Direction::Inbound | Direction::Admin => SpanKind::Server,
        };
        let trace = self.spans.start(&extracted.parent, kind, || name(&method));
        ProxyRequest {
            started,
            trace,
            b3: extracted.b3,
            method,
            path,
        }
    }

    /// The response to send for `outcome` (a failure becomes the mesh's own response, with
    /// `x-mesh-attempts` when `tries` were made), once the request is recorded: span ended,
    /// request counted, failure logged, access-log line written.
    pub(crate) fn finish(
        &self,
        request: ProxyRequest,
        outcome: Result<Response<Body>, BoxError>,
        parties: &Parties<'_>,
        tries: u32,
    ) -> Response<Body> {
        let (mut rsp, mesh_error) = match outcome {
            Ok(rsp) => (rsp, None),
            Err(err) => {
                let (reason, rsp) = error::rescue(err.as_ref());
                self.failed(&*err, reason, parties);
                (rsp, Some(reason.as_str()))
            }
        };
        if tries > 0 {
            rsp.headers_mut().insert(ATTEMPTS, HeaderValue::from(tries));
        }
        let elapsed = request.started.elapsed();
        let status = rsp.status().as_u16();
        end_span(request.trace.span(), rsp.status(), mesh_error, tries);
        self.metrics.request(
            self.direction,
            parties.source,
            parties.destination,
            status,
            elapsed.as_secs_f64(),
        );
        if let Some(route) = parties.route {
            self.metrics
                .route_request(parties.destination, route, status, elapsed.as_secs_f64());
        }
        let taps = &self.metrics.taps;
        if taps.active() {
            taps.publish(
                parties.source.as_str(),
                parties.source_id,
                &request.path,
                || TapEvent {
                    time_unix_ms: tap::now_unix_ms(),
                    direction: self.direction.as_str(),
                    caller: parties.source_id.to_owned(),
                    source: parties.source.as_str().to_owned(),
                    destination: parties.destination.as_str().to_owned(),
                    method: request.method.as_str().to_owned(),
                    path: request.path.clone(),
                    status,
                    latency_ms: tap::millis(elapsed),
                    attempts: tries,
                    trace_id: trace_id(&request.trace),
                },
            );
        }
        self.metrics.window.record(
            self.direction,
            parties.source,
            parties.destination,
            status,
            elapsed,
            tries,
        );
        if self.access_log {
            access_log::write(&access_log::Entry {
                direction: self.direction.as_str(),
                trace_id: trace_id(&request.trace),
                source: parties.source_id,
                destination: parties.destination.as_str(),
                route: parties.route.map(Label::as_str),
                method: request.method.as_str(),
                path: &request.path,
                status,
                duration_ms: elapsed,
                attempts: tries,
            });
        }
        rsp
    }

    /// Counts an outbound TLS failure and logs the failure, a few per second at most.
    fn failed(
        &self,
        err: &(dyn std::error::Error + 'static),
        reason: error::Reason,
        parties: &Parties<'_>,
    ) {
        let outbound = self.direction == Direction::Outbound;
        if outbound && reason.is_tls() {
            self.metrics.tls_failure(self.direction, reason.as_str());
        }
        if !self.log_limit.allow("request failures") {
            return;
        }
        if outbound {
            tracing::warn!(destination = %parties.destination, reason = reason.as_str(), error = %err, "outbound request failed");
        } else {
            tracing::warn!(caller = %parties.source_id, reason = reason.as_str(), error = %err, "inbound request failed");
        }
    }
}
