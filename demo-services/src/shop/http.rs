//! JSON in and out, and the one error type every handler returns, so that every failure
//! becomes a JSON body with a fitting status instead of a panic or a bare status line.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::store::StoreError;
use super::upstream::UpstreamError;
use crate::server::Body;

/// Request bodies larger than this are refused: every body here is a small JSON document.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a request could not be served; each maps to a status and a JSON error body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Input that fails parsing or validation; `field` names what is wrong.
    #[error("{message}")]
    BadRequest { field: String, message: String },
    #[error("request body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    #[error("{what} not found")]
    NotFound { what: &'static str, id: String },
    #[error("no such endpoint")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A reservation would take more than is in stock.
    #[error("insufficient stock")]
    InsufficientStock { sku: String },
    /// A repeated idempotent request disagrees with the first one.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound { .. } | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InsufficientStock { .. } | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let body = match &self {
            Self::BadRequest { field, message } => json!({"error": message, "field": field}),
            Self::NotFound { id, .. } => json!({"error": self.to_string(), "id": id}),
            Self::InsufficientStock { sku } => json!({"error": self.to_string(), "sku": sku}),
            _ => json!({"error": self.to_string()}),
        };
        json_response(status, &body)
    }
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes into `T`; a parse error names the field.
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = read_body(req).await?;
    parse_json(&bytes)
}

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes.
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge),
        Err(err) => Err(ApiError::BodyRead(err.to_string())),
    }
}

/// Parses `bytes` as `T`, naming the offending field (`items[0].qty`) on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().to_string();
        // Malformed JSON has no meaningful field: the body as a whole is wrong.
        if err.inner().is_syntax() || err.inner().is_eof() {
            return ApiError::bad("body", format!("invalid JSON: {message}"));
        }
        // serde reports a missing field at its parent; name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(name), ".") => name.to_owned(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "body".to_owned(),
            (None, path) => path.to_owned(),
        };
        ApiError::bad(field, format!("invalid request body: {message}"))
    })
}

/// A response with `value` as its JSON body.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = match serde_json::to_vec(value) {
        Ok(body) => body,
        Err(err) => {
            // Only a non-string map key or a failing Serialize impl can get here.
            tracing::error!(error = %err, "cannot encode a response");
            return bytes_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                Bytes::from_static(br#"{"error":"cannot encode the response"}"#),
            );
        }
    };
    bytes_response(status, "application/json", Bytes::from(body))
}

/// A response with the given body and content type.
pub fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Body> {
    let mut rsp = Response::new(full(body));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

/// Wraps bytes as a response body.
pub fn full(body: Bytes) -> Body {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The path split on `/`, without empty segments: `/products/abc` → `["products", "abc"]`.
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Shorthand for handlers that answer JSON with a fixed status.
pub type Reply = Result<Response<Body>, ApiError>;

/// `Ok` JSON reply.
pub fn reply(status: StatusCode, value: &impl Serialize) -> Reply {
    Ok(json_response(status, value))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        qty: i64,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        customer: String,
        items: Vec<Line>,
    }

    fn field_of(body: &str) -> String {
        match parse_json::<Order>(body.as_bytes()) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert_eq!(field_of(r#"{"items": []}"#), "customer");
        assert_eq!(field_of(r#"{"customer": 1, "items": []}"#), "customer");
        assert_eq!(
            field_of(r#"{"customer": "a", "items": [{"sku": "x"}]}"#),
            "items[0].qty"
        );
        assert_eq!(
            field_of(r#"{"customer": "a", "items": [{"sku": "x", "qty": -1.5}]}"#),
            "items[0].qty"
        );
        assert_eq!(field_of("42"), "body");
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of(""), "body");
    }
}
