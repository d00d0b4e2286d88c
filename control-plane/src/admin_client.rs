//! A minimal client for the admin server (plain HTTP/1.1), shared by `meshctl` and tests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Why an admin request failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// No connection.
    #[error("cannot connect to the admin server at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("admin request failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("invalid admin request: {0}")]
    Request(#[from] http::Error),
    /// No response in time.
    #[error("the admin server at {0} did not answer within 30s")]
    Timeout(SocketAddr),
}

/// Sends `method path` (path may carry a query) and returns the status and body.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Bytes), AdminClientError> {
    request_with_token(addr, method, path, None).await
}

/// As [`request`], with the admin token that changes to the CA need.
pub async fn request_with_token(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Bytes), AdminClientError> {
    tokio::time::timeout(Duration::from_secs(30), exchange(addr, method, path, token))
        .await
        .map_err(|_| AdminClientError::Timeout(addr))?
}

async fn exchange(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Bytes), AdminClientError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| AdminClientError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    if let Some(token) = token {
        request = request.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        );
    }
    let request = request.body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    drop(sender);
    conn.abort();
    Ok((status, body))
}
