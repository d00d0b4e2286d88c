//! Distributed tracing: context propagation, spans, and their export over OTLP.
//!
//! Outbound, the sidecar continues the trace the app's request carries (W3C, or B3) with a
//! CLIENT span, or starts one when the parent-based ratio sampler says so, and passes its own
//! span on to the next hop. Inbound, it makes a SERVER span as the caller's child and hands the
//! app a `traceparent` naming that span, so the app's own calls continue the trace. Spans go to
//! an OTLP collector (gRPC or HTTP/protobuf) through a bounded queue ([`export`]). `tap` streams
//! the requests themselves to operators who ask (`meshctl tap`).

pub mod access_log;
pub mod export;
pub mod propagation;
pub mod spans;
pub(crate) mod tap;

use std::time::Duration;

use http::StatusCode;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanRef, Status, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use serde::Serialize;
use tokio::task::JoinHandle;

use self::export::{ExportMetrics, QueueProcessor};

/// Attribute names: OpenTelemetry HTTP semantic conventions, and the mesh's own.
pub mod attr {
    /// HTTP method.
    pub const METHOD: &str = "http.request.method";
    /// Request path.
    pub const URL_PATH: &str = "url.path";
    /// Response status code.
    pub const STATUS: &str = "http.response.status_code";
    /// The authority the request named.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The socket address of the other side.
    pub const PEER_ADDRESS: &str = "network.peer.address";
    /// What failed: an `x-mesh-error` reason or a 5xx status code.
    pub const ERROR_TYPE: &str = "error.type";
    /// The caller's SPIFFE ID.
    pub const SOURCE_IDENTITY: &str = "mesh.source.identity";
    /// The destination service.
    pub const DESTINATION: &str = "mesh.destination.service";
    /// The endpoint (peer sidecar address) a try went to.
    pub const ENDPOINT: &str = "mesh.destination.endpoint";
    /// Tries made.
    pub const ATTEMPTS: &str = "mesh.attempts";
    /// The destination's named route the request took.
    pub const ROUTE: &str = "mesh.route";
    /// The protocol an upgrade asked for (`websocket`), or `CONNECT` for a tunnel.
    pub const UPGRADE: &str = "mesh.upgrade";
    /// Set on the span of a mirrored copy.
    pub const MIRROR: &str = "mesh.mirror";
    /// A delay injected by a fault policy, in milliseconds.
    pub const FAULT_DELAY: &str = "mesh.fault.delay_ms";
    /// The status an injected abort answered with (`503`, or `grpc:14`).
    pub const FAULT_ABORT: &str = "mesh.fault.abort";
}

/// Ends a request's span with its outcome: status code, tries, and on failure `error.type` and
/// status ERROR (a 5xx, or a response the mesh made because something failed).
pub(crate) fn end_span(
    span: SpanRef<'_>,
    status: StatusCode,
    mesh_error: Option<&str>,
    attempts: u32,
) {
    if span.is_recording() {
        span.set_attribute(KeyValue::new(attr::STATUS, i64::from(status.as_u16())));
        if attempts > 0 {
            span.set_attribute(KeyValue::new(attr::ATTEMPTS, i64::from(attempts)));
        }
        let error = mesh_error.map(str::to_owned).or_else(|| {
            status
                .is_server_error()
                .then(|| status.as_u16().to_string())
        });
        if let Some(error) = error {
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error.clone()));
            span.set_status(Status::error(error));
        }
    }
    span.end();
}

/// The trace ID of `cx`'s span, for logs; empty when there is none.
pub(crate) fn trace_id(cx: &opentelemetry::Context) -> String {
    use opentelemetry::trace::TraceContextExt;
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Limit on one OTLP request.
const OTLP_TIMEOUT: Duration = Duration::from_secs(5);

/// Tracing settings, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TracingConfig {
    /// OTLP collector; spans are not exported without one (context still propagates).
    pub otlp_endpoint: Option<String>,
    /// OTLP transport.
    pub protocol: OtlpProtocol,
    /// Share of new traces (no sampled parent) that are recorded, 0 to 1.
    pub sampling: f64,
    /// Spans that may wait for export; more are dropped and counted.
    pub max_queue: usize,
    /// `service.name` of the spans; the mesh service name unless `OTEL_SERVICE_NAME` is set.
    pub service_name: Option<String>,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention), POST to `/v1/traces`.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// The tracer of one sidecar and its export task.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    export: Option<JoinHandle<()>>,
    sampling: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            protocol: OtlpProtocol::Grpc,
            sampling: 1.0,
            max_queue: 2048,
            service_name: None,
        }
    }
}

impl TracingConfig {
    /// Fills what the bootstrap file leaves unset from the standard OpenTelemetry variables
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`),
    /// read through `env`. What the file says wins, as the OpenTelemetry spec has it for
    /// explicit configuration.
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        if self.otlp_endpoint.is_none() {
            self.otlp_endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| !e.is_empty());
            if let Some(protocol) = env("OTEL_EXPORTER_OTLP_PROTOCOL") {
                self.protocol = match protocol.as_str() {
                    "http/protobuf" => OtlpProtocol::HttpProtobuf,
                    _ => OtlpProtocol::Grpc,
                };
            }
        }
        if self.service_name.is_none() {
            self.service_name = env("OTEL_SERVICE_NAME").filter(|n| !n.is_empty());
        }
        self
    }
}

// === impl Tracing ===

impl Tracing {
    /// Builds the tracer for `service`; starts the export task when an endpoint is set.
    pub fn start(
        config: &TracingConfig,
        service: &str,
        metrics: ExportMetrics,
    ) -> anyhow::Result<Self> {
        let name = config
            .service_name
            .clone()
            .unwrap_or_else(|| service.to_owned());
        let resource = Resource::builder_empty().with_service_name(name).build();
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling)));
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_resource(resource.clone());
        let mut export = None;
        if let Some(endpoint) = &config.otlp_endpoint {
            let exporter = match config.protocol {
                OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(OTLP_TIMEOUT)
                    .build()?,
                OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(
                        opentelemetry_http::hyper::HyperClient::with_default_connector(
                            OTLP_TIMEOUT,
                            None,
                        ),
                    )
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                    .with_timeout(OTLP_TIMEOUT)
                    .build()?,
            };
            let (processor, task) =
                QueueProcessor::start(exporter, resource, config.max_queue, metrics);
            builder = builder.with_span_processor(processor);
            export = Some(task);
        }
        let provider = builder.build();
        let tracer = provider.tracer("mesh-sidecar");
        Ok(Self {
            provider,
            tracer,
            export,
            sampling: config.sampling,
        })
    }

    /// The tracer that makes the sidecar's spans.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Starts the sidecar's request spans: recorded when they are exported, otherwise only
    /// their identity for the next hop.
    pub fn spans(&self) -> spans::Spans {
        spans::Spans::new(self.tracer.clone(), self.export.is_some(), self.sampling)
    }

    /// Exports what is queued (at most `limit`), then stops.
    pub async fn shutdown(self, limit: Duration) {
        let Self {
            provider,
            tracer,
            export,
            sampling: _,
        } = self;
        drop(tracer);
        drop(provider);
        if let Some(task) = export
            && tokio::time::timeout(limit, task).await.is_err()
        {
            tracing::warn!("span export did not finish within {limit:?}; queued spans are lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_and_stops_without_an_endpoint() {
        let t = Tracing::start(
            &TracingConfig::default(),
            "orders",
            ExportMetrics::default(),
        )
        .unwrap();
        t.shutdown(Duration::from_secs(1)).await;
    }
}
