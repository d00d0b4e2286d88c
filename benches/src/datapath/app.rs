//! The app behind every configuration: HTTP/1.1 keep-alive, one fixed small body.
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

use super::Error;

/// The response body: small, so the proxies' per-request cost dominates.
pub const BODY: &[u8] = b"hello from the datapath app\n";

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
