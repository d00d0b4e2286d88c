//! Prometheus metrics of one sidecar, registered once and shared by both directions.
//!
//! Names and labels (all prefixed `mesh_`):
//! - `requests_total{direction, source, destination, status_code}`: requests answered;
//! - `request_duration_seconds{direction, source, destination, status_class}`: time until the
//!   response headers are ready (histogram; `status_class` is `2xx`, `5xx`, ...);
//! - `route_requests_total{destination, route, status_code}` and
//!   `route_request_duration_seconds{destination, route, status_class}`: the same, outbound, for
//!   requests that took one of the destination's named routes;
//! - `app_healthy`: 1 while the local app answers its health probe (always 1 without
//!   `app_health`);
//! - `open_connections{direction}`: accepted connections now open (inbound, outbound, admin);
//! - `connections_untrusted_total{direction}`: open mesh connections closed because the peer's
//!   certificate stopped verifying against a changed trust bundle;
//! - `tls_handshake_failures_total{direction, reason}`: failed mTLS handshakes, inbound as
//!   server, outbound as client, by the reason sent in `x-mesh-error`;
//! - `connections_refused_total{direction, reason}`: connections a listener closed at once
//!   because a limit was reached (`max-connections`, `max-handshakes`) or that were closed for
//!   sending nothing after their handshake (`first-bytes-timeout`);
//! - `app_requests_refused_total`: inbound requests answered 503 because
//!   `limits.app.max_concurrent_requests` were in flight to the app.
//!
//! Resilience, per destination (`destination`) and endpoint (`endpoint`, a peer's address):
//! - `retries_total{destination, reason}`: retries made, by the failure that caused them
//!   (`connect-failure`, `refused-stream`, `reset`, `gateway-error`, `5xx`, `retriable-status`,
//!   `per-try-timeout`);
//! - `retry_budget_exhausted_total{destination}`: retries not made because the budget was spent;
//! - `timeouts_total{destination, kind}`: `request` (the overall timeout) or `per-try`;
//! - `shed_requests_total{destination}`: requests answered 503 because `max_requests` and
//!   `max_pending` were full;
//! - `endpoint_requests_total{destination, endpoint}`: the load balancer's choices (an
//!   endpoint's series leave with it, when a new destination table no longer has it);
//! - `ejections_total{destination, endpoint}`: outlier ejections;
//! - `ejected_endpoints{destination}`: endpoints ejected now.
//!
//! TCP streams tunnelled between sidecars, by `direction`, `source` and `destination` as for
//! requests (outbound: this service and the `tcp` destination; inbound: the caller's service
//! and this one):
//! - `tcp_connections_opened_total` and `tcp_connections_closed_total`;
//! - `tcp_sent_bytes_total` (from the source towards the destination) and
//!   `tcp_received_bytes_total` (back from the destination);
//! - `tcp_connection_duration_seconds`: from open to close (histogram, 1 ms to about 70 min);
//! - `tcp_idle_timeouts_total`: streams reset after `idle_timeout` with no byte either way;
//! - `tcp_connect_failures_total{destination, reason}`: outbound, app connections that could
//!   not be tunnelled, by the reason of `x-mesh-error` (the peer's, or this sidecar's).
//!
//! Protocol detection: `protocol_detections_total{outcome}`, connections from the app by what
//! their first bytes were: `http1`, `h2`, `tcp` (anything else, a TLS ClientHello included) or
//! `timeout` (nothing decisive within `detect_timeout`). Four values, so the label is bounded.
//!
//! Redirected connections whose original destination (and, for HTTP, whose Host) names no
//! destination, by `outbound.unknown`, with `protocol` `http` (a request) or `tcp` (a
//! connection):
//! - `outbound_passthrough_total{protocol}`: sent straight to the address the app dialled;
//! - `outbound_denied_total{protocol}`: refused.
//!
//! HTTP passthrough requests are also in `requests_total` and `request_duration_seconds`, and
//! TCP passthrough streams in the `tcp_*` families, with `destination="passthrough"`.
//!
//! Gateway mode: `gateway_requests_total{listener, route}`, outside requests routed, and
//! `gateway_refused_total{listener, reason}`, outside requests answered by the gateway itself:
//! `no-route` (404), `body-too-large` (413), `headers-too-large` (431, also when the HTTP
//! server refuses an HTTP/1.1 head over the listener's buffer before the request is seen),
//! `uri-too-long` (414, the HTTP server's), `rate-limited` (429). Routed requests are in
//! `requests_total` by destination too.
//!
//! Authorization: `authorization_denied_total{source}`, inbound requests and tunnels refused.
//!
//! Rate limiting: `rate_limited_total{source}`, inbound requests refused with 429, by caller.
//!
//! Mirroring: `mirrored_requests_total{destination, route, mirror, result}`, copies a route's
//! `RequestMirror` sent, by the copy's status class, `error`, or why none was sent (`busy`,
//! `body-not-copied`).
//!
//! Fault injection: `faults_injected_total{destination, route, kind}`, requests the caller's
//! sidecar delayed (`kind="delay"`) or answered itself (`kind="abort"`) by a `fault` policy.
//!
//! Control plane and identity:
//! - `control_plane_connected`: 1 while the snapshot stream is open;
//! - `snapshot_version`: version of the snapshot applied (0 before the first);
//! - `snapshots_total{result}`: snapshots `applied` or `rejected`;
//! - `certificate_expiry_timestamp_seconds`: when the current certificate expires;
//! - `certificate_renewals_total{result}`: renewals `ok` or `failed`.
//!
//! Tracing:
//! - `span_export_queue`: spans waiting for export;
//! - `spans_dropped_total{reason}`: `queue-full` or `export-failed`;
//! - `spans_exported_total`: spans the collector accepted.
//!
//! Handles for a destination's series are resolved once, when its stack is built
//! ([`DestinationMetrics`]), so the request path only increments atomics.
//!
//! `source` and `destination` are service names. An outbound request to an unknown destination
//! is labelled `destination="unknown"`, so callers cannot grow the label set without bound.
//!
//! This file holds the registry and the families; the label sets and their encoding are in
//! `metrics/labels.rs`. `metrics/window.rs` keeps the last minutes of each edge's traffic
//! second by second, for `/stats` (`meshctl stat`, the dashboard).

mod labels;
pub mod window;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub(crate) use self::labels::status_class;
pub use self::labels::{
    DestinationLabels, Direction, DirectionLabels, EndpointLabels, Label, LatencyLabels,
    RefusedLabels, RequestLabels, RetryLabels, RetryReason, RouteLatencyLabels, RouteRequestLabels,
    SourceLabels, SpanDropLabels, TcpFailureLabels, TcpLabels, TimeoutLabels, TlsFailureLabels,
};
use self::labels::{
    DetectionLabels, FaultLabels, GatewayRefusedLabels, GatewayRouteLabels, MirrorLabels,
    OutsideLabels, ResultLabels,
};

/// Pre-resolved series of one destination.
#[derive(Clone, Debug)]
pub struct DestinationMetrics {
    retries: [Counter; 7],
    /// Retries refused by the budget.
    pub budget_exhausted: Counter,
    /// Overall timeouts.
    pub request_timeouts: Counter,
    /// Per-try timeouts.
    pub per_try_timeouts: Counter,
    /// Shed requests.
    pub shed: Counter,
    /// Endpoints ejected now.
    pub ejected_endpoints: Gauge,
}

impl DestinationMetrics {
    /// The retry counter for `reason`.
    pub fn retries(&self, reason: RetryReason) -> &Counter {
        let i = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        &self.retries[i]
    }
}

/// Pre-resolved series of one endpoint.
#[derive(Clone, Debug)]
pub struct EndpointMetrics {
    /// Requests the load balancer sent here.
    pub requests: Counter,
    /// Times this endpoint was ejected.
    pub ejections: Counter,
}

/// Pre-resolved series of one TCP stream's source and destination.
#[derive(Clone, Debug)]
pub struct TcpMetrics {
    /// Streams opened.
    pub opened: Counter,
    /// Streams closed.
    pub closed: Counter,
    /// Bytes from the source towards the destination.
    pub sent: Counter,
    /// Bytes from the destination back to the source.
    pub received: Counter,
    /// Time from open to close.
    pub duration: Histogram,
    /// Streams ended because they carried nothing for `idle_timeout`.
    pub idle_timeouts: Counter,
}

/// The TCP stream families.
#[derive(Debug)]
struct TcpFamilies {
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
    duration: Family<TcpLabels, Histogram, fn() -> Histogram>,
    idle_timeouts: Family<TcpLabels, Counter>,
    failed: Family<TcpFailureLabels, Counter>,
}

/// All metric families of a sidecar.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to response headers.
    pub latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    route_requests: Family<RouteRequestLabels, Counter>,
    route_latency: Family<RouteLatencyLabels, Histogram, fn() -> Histogram>,
    /// Open accepted connections.
    pub open_connections: Family<DirectionLabels, Gauge>,
    /// Failed mTLS handshakes.
    pub tls_failures: Family<TlsFailureLabels, Counter>,
    untrusted: Family<DirectionLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    /// Inbound requests refused because the app's concurrency limit was reached.
    pub app_requests_refused: Counter,
    retries: Family<RetryLabels, Counter>,
    budget_exhausted: Family<DestinationLabels, Counter>,
    timeouts: Family<TimeoutLabels, Counter>,
    shed: Family<DestinationLabels, Counter>,
    endpoint_requests: Family<EndpointLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    ejected_endpoints: Family<DestinationLabels, Gauge>,
    span_export: crate::telemetry::export::ExportMetrics,
    denied: Family<SourceLabels, Counter>,
    rate_limited: Family<SourceLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
    mirrored: Family<MirrorLabels, Counter>,
    tcp: TcpFamilies,
    detections: Family<DetectionLabels, Counter>,
    passthrough: Family<OutsideLabels, Counter>,
    gateway_requests: Family<GatewayRouteLabels, Counter>,
    gateway_refused: Family<GatewayRefusedLabels, Counter>,
    outbound_denied: Family<OutsideLabels, Counter>,
    /// Control-plane and certificate state.
    pub control: ControlMetrics,
    /// 1 while the app answers its health probe (always 1 without `app_health`).
    pub app_healthy: Gauge,
    /// Each edge's recent traffic, for `/stats`.
    pub window: window::Windows,
    /// Open taps (`/tap`): shared here because every request's recorder holds this handle.
    pub(crate) taps: std::sync::Arc<crate::telemetry::tap::Taps>,
}

/// Control-plane and certificate state, as handles.
#[derive(Clone, Debug, Default)]
pub struct ControlMetrics {
    /// 1 while the snapshot stream is open.
    pub connected: Gauge,
    /// Version of the applied snapshot.
    pub snapshot_version: Gauge,
    /// Snapshots applied.
    pub snapshots_applied: Counter,
    /// Snapshots rejected.
    pub snapshots_rejected: Counter,
    /// Expiry of the current certificate, Unix seconds.
    pub certificate_expiry: Gauge,
    /// Renewals that succeeded.
    pub renewals_ok: Counter,
    /// Renewals that failed (and will be tried again).
    pub renewals_failed: Counter,
}

/// Decrements an open-connection gauge when the connection ends, however it ends.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by direction, source and destination service and status code",
            requests.clone(),
        );
        let latency: Family<LatencyLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to its response headers",
            latency.clone(),
        );
        let route_requests = Family::default();
        registry.register(
            "route_requests",
            "Outbound requests that took a named route, by destination, route and status code",
            route_requests.clone(),
        );
        let route_latency: Family<RouteLatencyLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "route_request_duration_seconds",
            "Time from receiving an outbound request on a named route to its response headers",
            route_latency.clone(),
        );
        let app_healthy = Gauge::default();
        registry.register(
            "app_healthy",
            "1 while the local app answers its health probe (always 1 without app_health)",
            app_healthy.clone(),
        );
        let open_connections = Family::default();
        registry.register(
            "open_connections",
            "Accepted connections currently open",
            open_connections.clone(),
        );
        let tls_failures = Family::default();
        registry.register(
            "tls_handshake_failures",
            "Failed mutual TLS handshakes, by direction and reason",
            tls_failures.clone(),
        );
        let refused = Family::default();
        registry.register(
            "connections_refused",
            "Connections a listener closed because a limit was reached, by direction and reason",
            refused.clone(),
        );
        let app_requests_refused = Counter::default();
        registry.register(
            "app_requests_refused",
            "Inbound requests answered 503 because max_concurrent_requests were in flight to the app",
            app_requests_refused.clone(),
        );
        let untrusted = Family::default();
        registry.register(
            "connections_untrusted",
            "Open mesh connections closed because the peer's certificate stopped verifying \
             against a changed trust bundle (a removed root), by direction",
            untrusted.clone(),
        );
        let retries = Family::default();
        registry.register(
            "retries",
            "Retries made, by destination and reason",
            retries.clone(),
        );
        let budget_exhausted = Family::default();
        registry.register(
            "retry_budget_exhausted",
            "Retries not made because the destination's retry budget was spent",
            budget_exhausted.clone(),
        );
        let timeouts = Family::default();
        registry.register(
            "timeouts",
            "Requests (kind=request) or tries (kind=per-try) that exceeded their timeout",
            timeouts.clone(),
        );
        let shed = Family::default();
        registry.register(
            "shed_requests",
            "Requests answered 503 because max_requests and max_pending were full",
            shed.clone(),
        );
        let endpoint_requests = Family::default();
        registry.register(
            "endpoint_requests",
            "Requests the load balancer sent to each endpoint",
            endpoint_requests.clone(),
        );
        let ejections = Family::default();
        registry.register(
            "ejections",
            "Outlier ejections of each endpoint",
            ejections.clone(),
        );
        let ejected_endpoints = Family::default();
        registry.register(
            "ejected_endpoints",
            "Endpoints of each destination ejected now",
            ejected_endpoints.clone(),
        );
        let span_export = crate::telemetry::export::ExportMetrics::default();
        registry.register(
            "span_export_queue",
            "Spans waiting to be exported",
            span_export.queued.clone(),
        );
        let dropped: Family<SpanDropLabels, Counter> = Family::default();
        registry.register(
            "spans_dropped",
            "Spans not exported: the queue was full, or the collector failed or was too slow",
            dropped.clone(),
        );
        // One statement per series: `get_or_create` returns a read guard that lives to the end
        // of its statement, and creating the next series needs the write lock.
        let queue_full = dropped
            .get_or_create(&SpanDropLabels {
                reason: "queue-full",
            })
            .clone();
        let export_failed = dropped
            .get_or_create(&SpanDropLabels {
                reason: "export-failed",
            })
            .clone();
        let span_export = crate::telemetry::export::ExportMetrics {
            dropped_queue_full: queue_full,
            dropped_export_failed: export_failed,
            ..span_export
        };
        registry.register(
            "spans_exported",
            "Spans the OTLP collector accepted",
            span_export.exported.clone(),
        );
        let denied = Family::default();
        registry.register(
            "authorization_denied",
            "Inbound requests refused by the authorization policy, by caller",
            denied.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Inbound requests refused by the rate limit, by caller",
            rate_limited.clone(),
        );
        let mirrored = Family::default();
        registry.register(
            "mirrored_requests",
            "Copies of outbound requests a route mirrored, by result",
            mirrored.clone(),
        );
        let faults = Family::default();
        registry.register(
            "faults_injected",
            "Outbound requests delayed or aborted by a fault policy",
            faults.clone(),
        );
        let tcp = TcpFamilies {
            opened: Family::default(),
            closed: Family::default(),
            sent: Family::default(),
            received: Family::default(),
            duration: Family::new_with_constructor(tcp_duration_histogram),
            idle_timeouts: Family::default(),
            failed: Family::default(),
        };
        registry.register(
            "tcp_connect_failures",
            "App connections to a tcp destination that could not be tunnelled, by reason",
            tcp.failed.clone(),
        );
        for (name, help, family) in [
            (
                "tcp_connections_opened",
                "TCP streams opened through the mesh, by direction, source and destination service",
                &tcp.opened,
            ),
            (
                "tcp_connections_closed",
                "TCP streams closed, by direction, source and destination service",
                &tcp.closed,
            ),
            (
                "tcp_sent_bytes",
                "Bytes of TCP streams from the source towards the destination",
                &tcp.sent,
            ),
            (
                "tcp_received_bytes",
                "Bytes of TCP streams from the destination back to the source",
                &tcp.received,
            ),
            (
                "tcp_idle_timeouts",
                "TCP streams reset because they carried nothing either way for idle_timeout",
                &tcp.idle_timeouts,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "tcp_connection_duration_seconds",
            "Time from opening a TCP stream to closing it",
            tcp.duration.clone(),
        );
        let detections = Family::default();
        registry.register(
            "protocol_detections",
            "Connections from the app whose protocol was detected, by outcome: http1, h2, tcp \
             (anything else, TLS included), timeout (nothing sent within detect_timeout)",
            detections.clone(),
        );
        let passthrough = Family::default();
        registry.register(
            "outbound_passthrough",
            "Redirected HTTP requests and TCP connections to an address outside the mesh, sent \
             straight to it (outbound.unknown: passthrough), by protocol",
            passthrough.clone(),
        );
        let gateway_requests = Family::default();
        registry.register(
            "gateway_requests",
            "Outside requests a gateway routed, by listener and route",
            gateway_requests.clone(),
        );
        let gateway_refused = Family::default();
        registry.register(
            "gateway_refused",
            "Outside requests a gateway answered itself, by listener and reason: no-route (404), \
             body-too-large (413), headers-too-large (431), uri-too-long (414), rate-limited (429)",
            gateway_refused.clone(),
        );
        let outbound_denied = Family::default();
        registry.register(
            "outbound_denied",
            "Redirected HTTP requests and TCP connections to an address outside the mesh, \
             refused (outbound.unknown: deny), by protocol",
            outbound_denied.clone(),
        );
        let snapshots = Family::<ResultLabels, Counter>::default();
        let renewals = Family::<ResultLabels, Counter>::default();
        let control = ControlMetrics {
            snapshots_applied: snapshots.get_or_create_owned(&ResultLabels { result: "applied" }),
            snapshots_rejected: snapshots.get_or_create_owned(&ResultLabels { result: "rejected" }),
            renewals_ok: renewals.get_or_create_owned(&ResultLabels { result: "ok" }),
            renewals_failed: renewals.get_or_create_owned(&ResultLabels { result: "failed" }),
            ..ControlMetrics::default()
        };
        registry.register(
            "control_plane_connected",
            "1 while the control plane's snapshot stream is open",
            control.connected.clone(),
        );
        registry.register(
            "snapshot_version",
            "Version of the control-plane snapshot applied (0 before the first)",
            control.snapshot_version.clone(),
        );
        registry.register(
            "snapshots",
            "Control-plane snapshots, applied or rejected",
            snapshots,
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When this sidecar's certificate expires, seconds since the Unix epoch",
            control.certificate_expiry.clone(),
        );
        registry.register(
            "certificate_renewals",
            "Certificate renewals, ok or failed",
            renewals,
        );
        Self {
            control,
            registry,
            requests,
            latency,
            route_requests,
            route_latency,
            open_connections,
            app_healthy,
            window: window::Windows::default(),
            taps: std::sync::Arc::default(),
            tls_failures,
            untrusted,
            refused,
            app_requests_refused,
            span_export,
            denied,
            rate_limited,
            faults,
            mirrored,
            tcp,
            detections,
            passthrough,
            gateway_requests,
            gateway_refused,
            outbound_denied,
            retries,
            budget_exhausted,
            timeouts,
            shed,
            endpoint_requests,
            ejections,
            ejected_endpoints,
        }
    }

    /// Counts a caller refused by the authorization policy.
    pub fn authorization_denied(&self, source: &Label) {
        self.denied
            .get_or_create(&SourceLabels {
                source: source.clone(),
            })
            .inc();
    }

    /// Counts a copy `destination`'s `route` sent (or skipped) to `mirror`.
    pub fn mirrored(
        &self,
        destination: &Label,
        route: &Label,
        mirror: &Label,
        result: &'static str,
    ) {
        self.mirrored
            .get_or_create(&MirrorLabels {
                destination: destination.clone(),
                route: route.clone(),
                mirror: mirror.clone(),
                result,
            })
            .inc();
    }

    /// Counts a request refused by the rate limit.
    pub fn rate_limited(&self, source: &Label) {
        self.rate_limited
            .get_or_create(&SourceLabels {
                source: source.clone(),
            })
            .inc();
    }

    /// Resolves the TCP stream series of one source and destination.
    pub fn tcp(&self, direction: Direction, source: &Label, destination: &Label) -> TcpMetrics {
        let labels = TcpLabels {
            direction,
            source: source.clone(),
            destination: destination.clone(),
        };
        TcpMetrics {
            opened: self.tcp.opened.get_or_create_owned(&labels),
            closed: self.tcp.closed.get_or_create_owned(&labels),
            sent: self.tcp.sent.get_or_create_owned(&labels),
            received: self.tcp.received.get_or_create_owned(&labels),
            duration: self.tcp.duration.get_or_create_owned(&labels),
            idle_timeouts: self.tcp.idle_timeouts.get_or_create_owned(&labels),
        }
    }

    /// Counts a connection from the app whose first bytes were looked at, by `outcome`.
    pub fn protocol_detected(&self, outcome: &'static str) {
        self.detections
            .get_or_create(&DetectionLabels { outcome })
            .inc();
    }

    /// Counts a redirected request (`http`) or connection (`tcp`) sent straight to an address
    /// outside the mesh.
    pub fn outbound_passthrough(&self, protocol: &'static str) {
        self.passthrough
            .get_or_create(&OutsideLabels { protocol })
            .inc();
    }

    /// Counts an outside request a gateway listener routed by `route`.
    pub fn gateway_routed(&self, listener: &Label, route: &Label) {
        self.gateway_requests
            .get_or_create(&GatewayRouteLabels {
                listener: listener.clone(),
                route: route.clone(),
            })
            .inc();
    }

    /// Counts an outside request a gateway listener answered itself, by `reason`.
    pub fn gateway_refused(&self, listener: &Label, reason: &'static str) {
        self.gateway_refused
            .get_or_create(&GatewayRefusedLabels {
                listener: listener.clone(),
                reason,
            })
            .inc();
    }

    /// Counts a redirected request (`http`) or connection (`tcp`) to an address outside the
    /// mesh that `outbound.unknown: deny` refused.
    pub fn outbound_denied(&self, protocol: &'static str) {
        self.outbound_denied
            .get_or_create(&OutsideLabels { protocol })
            .inc();
    }

    /// Counts an app connection to a `tcp` destination that could not be tunnelled.
    pub fn tcp_connect_failed(&self, destination: &Label, reason: &'static str) {
        self.tcp
            .failed
            .get_or_create(&TcpFailureLabels {
                destination: destination.clone(),
                reason,
            })
            .inc();
    }

    /// Counters of the span export pipeline.
    pub fn span_export(&self) -> crate::telemetry::export::ExportMetrics {
        self.span_export.clone()
    }

    /// Resolves (and so creates, at zero) every series of `destination`.
    pub fn destination(&self, destination: &str) -> DestinationMetrics {
        let d = DestinationLabels {
            destination: destination.to_owned(),
        };
        let timeout = |kind: &str| {
            self.timeouts
                .get_or_create(&TimeoutLabels {
                    destination: destination.to_owned(),
                    kind: kind.to_owned(),
                })
                .clone()
        };
        DestinationMetrics {
            retries: RetryReason::ALL.map(|reason| {
                self.retries
                    .get_or_create(&RetryLabels {
                        destination: destination.to_owned(),
                        reason: reason.as_str().to_owned(),
                    })
                    .clone()
            }),
            budget_exhausted: self.budget_exhausted.get_or_create(&d).clone(),
            request_timeouts: timeout("request"),
            per_try_timeouts: timeout("per-try"),
            shed: self.shed.get_or_create(&d).clone(),
            ejected_endpoints: self.ejected_endpoints.get_or_create(&d).clone(),
        }
    }

    /// Resolves the delay and abort counters of a fault policy of `destination`'s `route`
    /// (empty: requests that take no route).
    pub fn faults(&self, destination: &str, route: &str) -> [Counter; 2] {
        ["delay", "abort"].map(|kind| {
            self.faults
                .get_or_create(&FaultLabels {
                    destination: destination.to_owned(),
                    route: route.to_owned(),
                    kind,
                })
                .clone()
        })
    }

    /// Resolves the series of one endpoint of `destination`.
    pub fn endpoint(&self, destination: &str, endpoint: std::net::SocketAddr) -> EndpointMetrics {
        let labels = EndpointLabels {
            destination: destination.to_owned(),
            endpoint: endpoint.to_string(),
        };
        EndpointMetrics {
            requests: self.endpoint_requests.get_or_create(&labels).clone(),
            ejections: self.ejections.get_or_create(&labels).clone(),
        }
    }

    /// Removes the series of an endpoint `destination` no longer has, so that endpoints that
    /// come and go (every restart of a peer on a new port) do not grow `/metrics` forever. Should
    /// it come back, its counters start again from zero, which Prometheus reads as a reset.
    pub fn forget_endpoint(&self, destination: &str, endpoint: std::net::SocketAddr) {
        let labels = EndpointLabels {
            destination: destination.to_owned(),
            endpoint: endpoint.to_string(),
        };
        self.endpoint_requests.remove(&labels);
        self.ejections.remove(&labels);
    }

    /// Counts a newly accepted connection until the returned guard drops.
    pub fn connection_opened(&self, direction: Direction) -> ConnectionGuard {
        let gauge = self
            .open_connections
            .get_or_create(&DirectionLabels { direction })
            .clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// Counts a failed handshake.
    pub fn tls_failure(&self, direction: Direction, reason: &str) {
        self.tls_failures
            .get_or_create(&TlsFailureLabels {
                direction,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a connection closed by a listener's limit.
    pub fn connection_refused(&self, direction: Direction, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels { direction, reason })
            .inc();
    }

    /// Counts an open connection closed because its peer is no longer trusted.
    pub fn connection_untrusted(&self, direction: Direction) {
        self.untrusted
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    /// Records one answered request.
    pub fn request(
        &self,
        direction: Direction,
        source: &Label,
        destination: &Label,
        status_code: u16,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                direction,
                source: source.clone(),
                destination: destination.clone(),
                status_code,
            })
            .inc();
        let status_class = status_class(status_code);
        self.latency
            .get_or_create(&LatencyLabels {
                direction,
                source: source.clone(),
                destination: destination.clone(),
                status_class,
            })
            .observe(seconds);
    }

    /// Records one answered outbound request that took a named route.
    pub fn route_request(
        &self,
        destination: &Label,
        route: &Label,
        status_code: u16,
        seconds: f64,
    ) {
        self.route_requests
            .get_or_create(&RouteRequestLabels {
                destination: destination.clone(),
                route: route.clone(),
                status_code,
            })
            .inc();
        self.route_latency
            .get_or_create(&RouteLatencyLabels {
                destination: destination.clone(),
                route: route.clone(),
                status_class: status_class(status_code),
            })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The Prometheus text exposition (format 0.0.4), for scrapers that do not ask for
    /// OpenMetrics.
    pub fn encode_prometheus(&self) -> Result<String, std::fmt::Error> {
        Ok(to_prometheus_text(&self.encode()?))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Rewrites OpenMetrics text as Prometheus text: a counter family is named by its `_total`
/// samples, and the OpenMetrics-only `# UNIT` and `# EOF` lines go. Samples are the same in
/// both formats.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 1 ms to about 70 minutes, by fours: streams live from a request to a session.
fn tcp_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_documented_names_and_labels() {
        let m = Metrics::new();
        m.request(
            Direction::Outbound,
            &"orders".into(),
            &"inventory".into(),
            200,
            0.002,
        );
        m.tls_failure(Direction::Inbound, "tls-untrusted-peer");
        let guard = m.connection_opened(Direction::Inbound);
        let text = m.encode().unwrap();
        assert!(text.contains(
            r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="200"} 1"#
        ), "{text}");
        assert!(
            text.contains(r#"mesh_open_connections{direction="inbound"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"mesh_tls_handshake_failures_total{direction="inbound",reason="tls-untrusted-peer"} 1"#
        ), "{text}");
        assert!(
            text.contains("mesh_request_duration_seconds_bucket"),
            "{text}"
        );
        drop(guard);
        assert!(
            m.encode()
                .unwrap()
                .contains(r#"mesh_open_connections{direction="inbound"} 0"#)
        );
    }
}
