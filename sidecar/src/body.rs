//! The body and error types every step of the proxy passes along; a leaf, so any module can
//! use them without reaching up to the crate root.

use bytes::Bytes;

/// The error type inside the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type inside the proxy: a boxed stream of bytes, never collected whole.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body with no bytes: CONNECT requests and their answers, whose bytes flow in the tunnel.
pub(crate) fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
