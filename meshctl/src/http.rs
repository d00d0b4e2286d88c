//! A small pooled HTTP/1.1 client for the demo's JSON APIs (storefront, fault knobs, metrics).
//!
//! Keep-alive matters for `loadgen`: a new connection per order would measure connection setup
//! and run out of ephemeral ports at high rates.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not usable.
    #[error("invalid URL {url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// Connecting or exchanging failed.
    #[error("{method} {url}: {message}")]
    Transport {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// No complete response in time.
    #[error("{method} {url}: no response within {}ms", timeout.as_millis())]
    Timeout {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },
}

/// A response: status, headers and the whole body.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A cloneable client with a per-request timeout.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client whose requests (response and body) must finish within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            timeout,
        }
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Result<Response, HttpError> {
        self.send(Method::GET, url, None, &[]).await
    }

    /// `method url` with a JSON body.
    pub async fn json(
        &self,
        method: Method,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<Response, HttpError> {
        self.send(method, url, Some(body), &[]).await
    }

    /// `method url` with an optional JSON body and extra headers.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<Response, HttpError> {
        let request = request(&method, url, body, headers)?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| transport(&method, url, &e))?;
            collect(response, &method, url).await
        };
        within(self.timeout, exchange, &method, url).await
    }
}

/// `method url` with an optional JSON body on `io`, a connection the caller opened (such as
/// one from inside an instance's namespace, [`crate::netns::dial`]); the URL's host is only the
/// `Host` header. The exchange must finish within `timeout`.
pub async fn send_on(
    io: tokio::net::TcpStream,
    method: Method,
    url: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut request = request(&method, url, body, &[])?;
    if let Some(authority) = request.uri().authority().cloned() {
        let host = http::HeaderValue::from_str(authority.as_str()).map_err(|e| HttpError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        request.headers_mut().insert(http::header::HOST, host);
    }
    // HTTP/1.1 on the wire takes the path, not the whole URL.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .parse::<Uri>()
        .map_err(|e| HttpError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
    *request.uri_mut() = path;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| transport(&method, url, &e))?;
        let conn = tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(&method, url, &e));
        let response = match response {
            Ok(response) => collect(response, &method, url).await,
            Err(e) => Err(e),
        };
        conn.abort();
        response
    };
    within(timeout, exchange, &method, url).await
}

/// The request `send` and `send_on` make.
fn request(
    method: &Method,
    url: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
) -> Result<http::Request<Full<Bytes>>, HttpError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| HttpError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
    if uri.scheme_str() != Some("http") {
        return Err(HttpError::Url {
            url: url.to_owned(),
            message: "only http:// URLs are supported".into(),
        });
    }
    let mut builder = http::Request::builder().method(method.clone()).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let payload = match body {
        Some(json) => {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            Bytes::from(json.to_string())
        }
        None => Bytes::new(),
    };
    builder
        .body(Full::new(payload))
        .map_err(|e| HttpError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })
}

/// The whole response.
async fn collect(
    response: http::Response<hyper::body::Incoming>,
    method: &Method,
    url: &str,
) -> Result<Response, HttpError> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| transport(method, url, &e))?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `exchange`, or a timeout error after `timeout`.
async fn within(
    timeout: Duration,
    exchange: impl Future<Output = Result<Response, HttpError>>,
    method: &Method,
    url: &str,
) -> Result<Response, HttpError> {
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            method: method.clone(),
            url: url.to_owned(),
            timeout,
        })?
}

fn transport(method: &Method, url: &str, error: &(dyn std::error::Error + 'static)) -> HttpError {
    HttpError::Transport {
        method: method.clone(),
        url: url.to_owned(),
        message: error_chain(error),
    }
}

/// An error and its causes on one line: hyper's own message alone ("client error (Connect)")
/// does not say what happened.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
