//! The app behind every configuration: HTTP/1.1 keep-alive, one fixed small body, and, for the
//! large-bodies workload, `POST /large`: a 1 MiB request body counted, a 1 MiB body answered;
//! or, for the gRPC workloads, the test Echo service over plaintext HTTP/2.
//!
//! It runs as its own process (`datapath --serve-app ADDR`) on a single-threaded runtime, so it
//! costs as little as a server can and its CPU never mixes with the load client's. The echo
//! app of the demo services is not used: it builds a JSON description of each request whose
//! size depends on the headers each proxy adds, so the configurations would not compare alike.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
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

/// The path of the large-bodies exchange.
pub(crate) const LARGE_PATH: &str = "/large";
/// Size of the large-bodies workload's request and response bodies.
pub(crate) const LARGE_BODY_BYTES: usize = 1 << 20;
/// The large body both ways, static so that neither the app nor the load client allocates a
/// payload per request: their cost stays small beside the proxies'.
pub(crate) static LARGE_BODY: [u8; LARGE_BODY_BYTES] = [b'x'; LARGE_BODY_BYTES];

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
            service_fn(|req| async {
                if req.method() == Method::POST && req.uri().path() == LARGE_PATH {
                    return Ok::<_, Infallible>(large(req).await);
                }
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

/// `POST /large`: reads the whole request body frame by frame (counting, not keeping it) and
/// answers [`LARGE_BODY`]; a body of any other length is answered 400, so a proxy that cut or
/// padded it is caught.
async fn large(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut body = req.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received += frame.data_ref().map_or(0, Bytes::len),
            Err(_) => return status(StatusCode::BAD_REQUEST),
        }
    }
    if received != LARGE_BODY_BYTES {
        return status(StatusCode::BAD_REQUEST);
    }
    let mut rsp = Response::new(Full::new(Bytes::from_static(&LARGE_BODY)));
    rsp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    rsp
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::new()));
    *rsp.status_mut() = code;
    rsp
}
