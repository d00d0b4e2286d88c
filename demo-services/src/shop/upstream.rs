//! Calls to other services. Every call carries `Host: <service>` and the caller's trace headers,
//! so the sidecars can route it and stitch the spans into one trace. Where it is sent depends
//! on [`Calls`]: to the sidecar's outbound listener, or, in the transparent mesh, to
//! `http://<service>/` as any app would, never knowing of a sidecar.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use mesh_api::trace_context::PROPAGATED_HEADERS;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::dial::Dialer;

/// Upstream answers larger than this are treated as broken.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// The trace headers of one incoming request.
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders(Vec<(HeaderName, HeaderValue)>);

impl TraceHeaders {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut found = Vec::new();
        for name in PROPAGATED_HEADERS {
            for value in headers.get_all(name) {
                found.push((HeaderName::from_static(name), value.clone()));
            }
        }
        Self(found)
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{service} did not answer within {timeout:?}")]
    Timeout {
        service: &'static str,
        timeout: Duration,
    },
    #[error("{service} unreachable: {message}")]
    Transport {
        service: &'static str,
        message: String,
    },
    #[error("{service} answered {status}")]
    Status {
        service: &'static str,
        status: StatusCode,
    },
    #[error("{service} sent an unreadable answer: {message}")]
    BadResponse {
        service: &'static str,
        message: String,
    },
    #[error("cannot build a request to {service}: {message}")]
    Request {
        service: &'static str,
        message: String,
    },
}

/// A fully read upstream answer.
#[derive(Debug)]
pub struct Answer {
    pub service: &'static str,
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

impl Answer {
    /// The body as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, UpstreamError> {
        serde_json::from_slice(&self.body).map_err(|err| UpstreamError::BadResponse {
            service: self.service,
            message: err.to_string(),
        })
    }

    /// `Ok(self)` when the status is 2xx, else the status as an error.
    pub fn success(self) -> Result<Self, UpstreamError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(UpstreamError::Status {
                service: self.service,
                status: self.status,
            })
        }
    }
}

/// Where an instance sends its calls to other services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Calls {
    /// To the sidecar's outbound listener, `host:port`, naming the service in `Host`.
    Sidecar { outbound: String },
    /// To `http://<service>/`, the name resolved by the system resolver: in the transparent
    /// mesh the hosts file maps it to the service's virtual address and netfilter rules bring
    /// the connection to the sidecar.
    Transparent,
}

/// An outbound listener address that is no `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("invalid outbound address {address:?}: {source}")]
pub struct InvalidOutbound {
    pub address: String,
    pub source: http::uri::InvalidUri,
}

/// The keep-alive client of one [`Calls`] mode. Connections are pooled per authority: one
/// pool towards the outbound listener, or one per service.
#[derive(Clone)]
enum Route {
    Sidecar {
        client: Client<HttpConnector, Full<Bytes>>,
        outbound: Authority,
    },
    Transparent {
        client: Client<Dialer, Full<Bytes>>,
    },
}

/// The HTTP/1.1 keep-alive client towards other services.
#[derive(Clone)]
pub struct Upstream {
    route: Route,
    timeout: Duration,
}

impl Upstream {
    /// A client for `calls`; each call (connect, answer and body) is bounded by `timeout`.
    pub fn new(calls: &Calls, timeout: Duration) -> Result<Self, InvalidOutbound> {
        let route = match calls {
            Calls::Sidecar { outbound: address } => {
                let outbound: Authority = address.parse().map_err(|source| InvalidOutbound {
                    address: address.clone(),
                    source,
                })?;
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(timeout));
                Route::Sidecar {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    outbound,
                }
            }
            Calls::Transparent => Route::Transparent {
                client: Client::builder(TokioExecutor::new()).build(Dialer),
            },
        };
        Ok(Self { route, timeout })
    }

    /// The URL a call to `service` at `path` (with its query) is sent to.
    pub fn url(&self, service: &'static str, path: &str) -> Result<Uri, http::Error> {
        let authority = match &self.route {
            Route::Sidecar { outbound, .. } => outbound.clone(),
            Route::Transparent { .. } => Authority::try_from(service)?,
        };
        Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
    }

    fn request(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        match &self.route {
            Route::Sidecar { client, .. } => client.request(req),
            Route::Transparent { client } => client.request(req),
        }
    }

    pub async fn get(
        &self,
        service: &'static str,
        path: &str,
        trace: &TraceHeaders,
    ) -> Result<Answer, UpstreamError> {
        self.send(service, Method::GET, path, None, trace).await
    }

    pub async fn delete(
        &self,
        service: &'static str,
        path: &str,
        trace: &TraceHeaders,
    ) -> Result<Answer, UpstreamError> {
        self.send(service, Method::DELETE, path, None, trace).await
    }

    pub async fn post_json(
        &self,
        service: &'static str,
        path: &str,
        body: &impl Serialize,
        trace: &TraceHeaders,
    ) -> Result<Answer, UpstreamError> {
        let body = serde_json::to_vec(body).map_err(|err| UpstreamError::Request {
            service,
            message: err.to_string(),
        })?;
        self.send(service, Method::POST, path, Some(Bytes::from(body)), trace)
            .await
    }

    /// Sends one request with a JSON body (if any) and reads the whole answer.
    pub async fn send(
        &self,
        service: &'static str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        trace: &TraceHeaders,
    ) -> Result<Answer, UpstreamError> {
        let request_error = |message: String| UpstreamError::Request { service, message };
        let uri = self
            .url(service, path)
            .map_err(|err| request_error(err.to_string()))?;
        let has_body = body.is_some();
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|err| request_error(err.to_string()))?;
        let headers = req.headers_mut();
        headers.insert(HOST, HeaderValue::from_static(service));
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        trace.apply(headers);

        let call = async {
            let rsp = self
                .request(req)
                .await
                .map_err(|err| UpstreamError::Transport {
                    service,
                    message: error_chain(&err),
                })?;
            let (parts, body) = rsp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|err| UpstreamError::BadResponse {
                    service,
                    message: err.to_string(),
                })?
                .to_bytes();
            Ok(Answer {
                service,
                status: parts.status,
                content_type: parts.headers.get(CONTENT_TYPE).cloned(),
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| UpstreamError::Timeout {
                service,
                timeout: self.timeout,
            })?
    }
}

/// The error and its causes on one line: hyper's top-level messages alone say little.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
