//! A real OTLP trace receiver, gRPC and HTTP/protobuf, keeping what it receives for assertions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_stream::wrappers::TcpListenerStream;

/// One span as received, with the `service.name` of its resource.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    pub span: Span,
}

impl ReceivedSpan {
    /// The string or integer attribute `key`, as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }

    /// The names of the span's events.
    pub fn events(&self) -> Vec<&str> {
        self.span.events.iter().map(|e| e.name.as_str()).collect()
    }
}

fn attr(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

/// A collector listening for OTLP/gRPC and OTLP/HTTP (protobuf) on 127.0.0.1.
#[derive(Clone)]
pub struct Collector {
    /// The OTLP/gRPC address.
    pub grpc: SocketAddr,
    /// The OTLP/HTTP address (traces are POSTed to `/v1/traces`).
    pub http: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[derive(Clone)]
struct Store(Arc<Mutex<Vec<ReceivedSpan>>>);

impl Store {
    async fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().await;
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner()).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Starts both receivers; they run until the test's runtime ends.
    pub async fn start() -> Self {
        let store = Store(Arc::default());
        let grpc = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gRPC receiver");
        let grpc_addr = grpc.local_addr().expect("address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(store.clone()))
                .serve_with_incoming(TcpListenerStream::new(grpc)),
        );
        let http_store = store.clone();
        let http_addr = crate::app::start(move |req| {
            let store = http_store.clone();
            async move {
                let ok = req.uri().path() == "/v1/traces";
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let status = match (ok, body.map(ExportTraceServiceRequest::decode)) {
                    (true, Ok(Ok(request))) => {
                        store.keep(request).await;
                        StatusCode::OK
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                let reply = ExportTraceServiceResponse {
                    partial_success: None,
                }
                .encode_to_vec();
                Response::builder()
                    .status(status)
                    .header("content-type", "application/x-protobuf")
                    .body(
                        Full::new(Bytes::from(reply))
                            .map_err(|never| match never {})
                            .boxed_unsync(),
                    )
                    .expect("valid response")
            }
        })
        .await;
        Self {
            grpc: grpc_addr,
            http: http_addr,
            spans: store.0,
        }
    }

    /// Every span received so far.
    pub async fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().await.clone()
    }

    /// Waits (at most `patience`) until at least `n` spans have arrived.
    pub async fn wait_for(&self, n: usize, patience: Duration) -> Vec<ReceivedSpan> {
        crate::wait::eventually(&format!("{n} spans"), patience, || async {
            let spans = self.spans().await;
            (spans.len() >= n).then_some(spans)
        })
        .await
    }
}
