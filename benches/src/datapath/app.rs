//! The app behind every configuration: HTTP/1.1 keep-alive, one fixed small body; or, for
//! the gRPC workloads, the test Echo service over plaintext HTTP/2.
//!
//! It runs as its own process (`datapath --serve-app ADDR`) on a single-threaded runtime, so it
//! costs as little as a server can and its CPU never mixes with the load client's. The echo
//! app of the demo services is not used: it builds a JSON description of each request whose
//! size depends on the headers each proxy adds, so the configurations would not compare alike.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use mesh_testkit::grpc::EchoService;
use mesh_testkit::grpc::pb::echo_server::EchoServer;
use tower::ServiceExt;

use super::Error;

/// The response body: small, so the proxies' per-request cost dominates.
pub const BODY: &[u8] = b"hello from the datapath app\n";

/// What the app process serves (`--app`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AppKind {
    /// [`BODY`] over HTTP/1.1.
    #[default]
    Http,
    /// The Echo service (unary and server-streaming calls) over h2c, with HTTP/1.1 and HTTP/2
    /// `GET`s that are not gRPC answered 200, for readiness checks.
    Grpc,
}

impl AppKind {
    /// The `--app` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// Serves `kind` on `addr` until the process is killed.
pub fn serve_blocking(addr: SocketAddr, kind: AppKind) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("app runtime", e))?;
    match kind {
        AppKind::Http => runtime.block_on(serve(addr)),
        AppKind::Grpc => runtime.block_on(serve_grpc(addr)),
    }
}

async fn serve(addr: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("app listen on {addr}"), e))?;
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of descriptors or similar: pause instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(tcp),
            service_fn(|_req| async {
                let mut rsp = Response::new(Full::new(Bytes::from_static(BODY)));
                rsp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                Ok::<_, Infallible>(rsp)
            }),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// Serves the Echo service. HTTP/1.1 and HTTP/2 share the port (hyper_util's auto builder
/// tells them apart by the HTTP/2 preface): the readiness check and the proxies' plain probes
/// speak HTTP/1.1, gRPC arrives as h2c from the load client, our inbound sidecar and Envoy.
pub(crate) async fn serve_grpc(addr: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("app listen on {addr}"), e))?;
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let grpc = EchoServer::new(EchoService);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let grpc = grpc.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let grpc = grpc.clone();
            async move {
                if is_grpc(&req) {
                    grpc.oneshot(req).await
                } else {
                    Ok(Response::new(tonic::body::Body::empty()))
                }
            }
        });
        let http = http.clone();
        tokio::spawn(async move {
            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

/// A gRPC call: `content-type: application/grpc`, with or without a `+format` suffix.
fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
