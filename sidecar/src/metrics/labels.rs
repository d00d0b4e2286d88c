//! Label sets and label values of the sidecar's metric families, and how they encode.
//!
//! Kept apart from the registry in [`super`] so the request path's types ([`Direction`],
//! [`Label`]) are read without the families around them.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// Which listener handled the traffic.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// From the local app to another service.
    Outbound,
    /// From another service to the local app.
    Inbound,
    /// The admin listener.
    Admin,
}

// === impl Direction ===

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Admin => "admin",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// A label value shared by reference count, so recording a request copies no string.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Label(Arc<str>);

impl From<&str> for Label {
    fn from(value: &str) -> Self {
        Self(value.into())
    }
}

impl Label {
    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Outbound or inbound.
    pub direction: Direction,
    /// Calling service.
    pub source: Label,
    /// Called service.
    pub destination: Label,
    /// HTTP status code of the response.
    pub status_code: u16,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// Outbound or inbound.
    pub direction: Direction,
    /// Calling service.
    pub source: Label,
    /// Called service.
    pub destination: Label,
    /// `1xx` to `5xx`.
    pub status_class: &'static str,
}

/// Labels of the per-route request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteRequestLabels {
    /// Called service.
    pub destination: Label,
    /// The route the request took.
    pub route: Label,
    /// HTTP status code of the response.
    pub status_code: u16,
}

/// Labels of the per-route latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLatencyLabels {
    /// Called service.
    pub destination: Label,
    /// The route the request took.
    pub route: Label,
    /// `1xx` to `5xx`.
    pub status_class: &'static str,
}

/// Labels of the TCP stream series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// Outbound or inbound.
    pub direction: Direction,
    /// Calling service.
    pub source: Label,
    /// Called service.
    pub destination: Label,
}

/// Labels of the counters of redirected connections outside the mesh.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutsideLabels {
    /// `http` (one request) or `tcp` (one connection).
    pub(super) protocol: &'static str,
}

/// Labels of the gateway's routed requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GatewayRouteLabels {
    /// The gateway listener's name.
    pub(super) listener: Label,
    /// The route's name.
    pub(super) route: Label,
}

/// Labels of the gateway's refused requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GatewayRefusedLabels {
    /// The gateway listener's name.
    pub(super) listener: Label,
    /// `no-route` (404), `body-too-large` (413), `headers-too-large` (431), `rate-limited`
    /// (429).
    pub(super) reason: &'static str,
}

/// Labels of the protocol detection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DetectionLabels {
    /// `http1`, `h2`, `tcp` or `timeout`.
    pub(super) outcome: &'static str,
}

/// Labels of the counter of TCP connections that could not be tunnelled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpFailureLabels {
    /// The `tcp` destination.
    pub destination: Label,
    /// Why, as in `x-mesh-error`.
    pub reason: &'static str,
}

/// Labels of per-direction gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// The listener.
    pub direction: Direction,
}

/// Labels of the TLS failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailureLabels {
    /// Inbound (we are the TLS server) or outbound (we are the client).
    pub direction: Direction,
    /// Short reason, as in `x-mesh-error`.
    pub reason: String,
}

/// Labels of the refused-connection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// The listener.
    pub direction: Direction,
    /// The limit that closed the connection: `max-connections`, `max-handshakes`,
    /// `first-bytes-timeout`.
    pub reason: &'static str,
}

/// Labels of per-destination series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// The destination service.
    pub destination: String,
}

/// Labels of per-endpoint series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The destination service.
    pub destination: String,
    /// The endpoint's address.
    pub endpoint: String,
}

/// Labels of the retry counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// The destination service.
    pub destination: String,
    /// What failed.
    pub reason: String,
}

/// Labels of the timeout counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// The destination service.
    pub destination: String,
    /// `request` or `per-try`.
    pub kind: String,
}

/// Labels of the span drop counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanDropLabels {
    /// `queue-full` or `export-failed`.
    pub reason: &'static str,
}

/// Why a request was retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// Connect or TLS handshake failed.
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream,
    /// Stream or connection reset.
    Reset,
    /// 502, 503 or 504.
    GatewayError,
    /// Another 5xx.
    ServerError,
    /// A status listed in `retriable_status_codes`.
    RetriableStatus,
    /// The try exceeded `per_try_timeout`.
    PerTryTimeout,
}

impl RetryReason {
    pub(crate) const ALL: [RetryReason; 7] = [
        RetryReason::ConnectFailure,
        RetryReason::RefusedStream,
        RetryReason::Reset,
        RetryReason::GatewayError,
        RetryReason::ServerError,
        RetryReason::RetriableStatus,
        RetryReason::PerTryTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::ConnectFailure => "connect-failure",
            RetryReason::RefusedStream => "refused-stream",
            RetryReason::Reset => "reset",
            RetryReason::GatewayError => "gateway-error",
            RetryReason::ServerError => "5xx",
            RetryReason::RetriableStatus => "retriable-status",
            RetryReason::PerTryTimeout => "per-try-timeout",
        }
    }
}

/// The `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

/// Labels of the mirrored-request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MirrorLabels {
    /// The destination whose route mirrors.
    pub(super) destination: Label,
    /// The route.
    pub(super) route: Label,
    /// The service copies go to.
    pub(super) mirror: Label,
    /// The copy's status class, `error`, `busy` (too many in flight) or `body-not-copied`.
    pub(super) result: &'static str,
}

/// Labels of the injected-fault counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FaultLabels {
    /// The destination service.
    pub(super) destination: String,
    /// The route (empty for requests that take none).
    pub(super) route: String,
    /// `delay` or `abort`.
    pub(super) kind: &'static str,
}

/// Labels of the authorization counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The refused caller's service.
    pub source: Label,
}

/// The `status_class` label of a status code.
pub(crate) fn status_class(status_code: u16) -> &'static str {
    match status_code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
