//! Clients for the outbound listener, as an app would use it.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An HTTP/1.1 keep-alive client.
pub fn http1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge client.
pub fn http2() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GET `url` over HTTP/1.1, its `Host` the URL's authority (as an admin endpoint wants it).
pub async fn get_url(url: &str) -> Response<Incoming> {
    http1()
        .request(Request::get(url).body(Full::default()).expect("request"))
        .await
        .expect("request to an admin endpoint")
}

/// GET `url` with `Host: host` over HTTP/1.1.
pub async fn get(url: &str, host: &str) -> Response<Incoming> {
    http1()
        .request(
            Request::get(url)
                .header("host", host)
                .body(Full::default())
                .expect("request"),
        )
        .await
        .expect("request to outbound")
}

/// Collects a response body as text.
pub async fn text(rsp: Response<Incoming>) -> String {
    let bytes = rsp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Collects a response body as JSON.
pub async fn json(rsp: Response<Incoming>) -> serde_json::Value {
    serde_json::from_str(&text(rsp).await).expect("JSON body")
}

/// Sends one request over a new HTTP/2 prior-knowledge connection to `addr`; the request's URI
/// authority becomes `:authority` (e.g. `http://inventory/path`).
pub async fn h2_request(
    addr: std::net::SocketAddr,
    req: Request<Full<Bytes>>,
) -> Response<Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to outbound");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("HTTP/2 request")
}
