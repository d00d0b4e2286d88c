//! The echo app: shows what arrived, so the mesh's behaviour is visible.
//!
//! - `/echo`: streams the request body back as the response body (any method).
//! - `/status/<code>`: answers with that status code.
//! - `/delay/<ms>`: waits that long (at most 60 s), then describes the request.
//! - `/flaky/<percent>`: answers 503 to that share of requests (at random), else describes it.
//! - anything else: a JSON description of the request: service, method, path, HTTP version,
//!   headers (including `x-mesh-client-id`, the caller's identity), and the body's length.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use crate::server::Body;

const MAX_DELAY: Duration = Duration::from_secs(60);

/// Handles one request for the service called `service`.
pub async fn handle(service: &str, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/echo" {
        let content_type = req.headers().get(CONTENT_TYPE).cloned();
        let mut rsp = Response::new(req.into_body().boxed_unsync());
        if let Some(ct) = content_type {
            rsp.headers_mut().insert(CONTENT_TYPE, ct);
        }
        return rsp;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => text(status, format!("{service}: status {status}\n")),
            None => text(
                StatusCode::BAD_REQUEST,
                format!("bad status code {code:?}\n"),
            ),
        };
    }
    if let Some(percent) = path.strip_prefix("/flaky/") {
        let Ok(percent) = percent.parse::<u8>() else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("bad percentage {percent:?}\n"),
            );
        };
        if fastrand::u8(0..100) < percent {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{service}: injected failure\n"),
            );
        }
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let Ok(ms) = ms.parse::<u64>() else {
            return text(StatusCode::BAD_REQUEST, format!("bad delay {ms:?}\n"));
        };
        tokio::time::sleep(Duration::from_millis(ms).min(MAX_DELAY)).await;
    }
    describe(service, req).await
}

async fn describe(service: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body_bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("body read failed: {err}\n"),
            );
        }
    };
    let caller = parts
        .headers
        .get("x-mesh-client-id")
        .and_then(|v| v.to_str().ok());
    let description = json!({
        "service": service,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "caller": caller,
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut rsp = text(StatusCode::OK, format!("{description:#}\n"));
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let body = Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut rsp = Response::new(body);
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}
