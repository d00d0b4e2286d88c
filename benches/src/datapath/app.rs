//! The app behind every configuration: HTTP/1.1 keep-alive, one fixed small body; and, for the
//! large-bodies workload, `POST /large`: a 1 MiB request body counted, a 1 MiB body answered.
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

use super::Error;

/// The response body: small, so the proxies' per-request cost dominates.
pub const BODY: &[u8] = b"hello from the datapath app\n";

/// The path of the large-bodies exchange.
pub(crate) const LARGE_PATH: &str = "/large";
/// Size of the large-bodies workload's request and response bodies.
pub(crate) const LARGE_BODY_BYTES: usize = 1 << 20;
/// The large body both ways, static so that neither the app nor the load client allocates a
/// payload per request: their cost stays small beside the proxies'.
pub(crate) static LARGE_BODY: [u8; LARGE_BODY_BYTES] = [b'x'; LARGE_BODY_BYTES];

/// Serves [`BODY`] on `addr` until the process is killed.
pub fn serve_blocking(addr: SocketAddr) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("app runtime", e))?;
    runtime.block_on(serve(addr))
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
