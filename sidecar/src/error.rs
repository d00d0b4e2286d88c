//! Typed errors of the data path, and the one place they become responses.
//!
//! Each failure is a small struct that says what happened and to whom (the destination, the
//! endpoint, the peer identity, the local app). Inside the proxy they travel as [`BoxError`];
//! [`rescue`] finds the cause by downcasting and picks the status code and the machine-readable
//! reason sent in `x-mesh-error`, so a 5xx made by the mesh is never mistaken for one made by
//! an application.
//!
//! Status codes follow who is at fault: a destination the mesh cannot reach is unavailable
//! (503); a peer that answers but cannot be trusted, or an app that fails behind its sidecar, is
//! a bad gateway (502).

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::Body;
pub use crate::body::BoxError;
use crate::headers::{MESH_ERROR, OVERLOADED};
use crate::identity::{PeerIdentityMismatch, SpiffeId};
use mesh_api::authorization::{Unauthenticated, Unauthorized};
use mesh_api::tls::ForeignClient;

/// The request names no authority (no `Host` header, no `:authority`).
#[derive(Debug, thiserror::Error)]
#[error("request has no Host header or :authority; the mesh routes by service name")]
pub struct NoAuthority;

/// A request the mesh does not proxy (`CONNECT` tunnels).
#[derive(Debug, thiserror::Error)]
#[error("{method} is not supported by the mesh")]
pub struct Unsupported {
    /// The request method.
    pub method: http::Method,
}

/// An HTTP request named a `protocol: tcp` destination, which the app reaches on its own
/// listener.
#[derive(Debug, thiserror::Error)]
#[error("destination {destination:?} is a tcp destination: connect to {listen} instead")]
pub struct TcpOnly {
    /// The destination.
    pub destination: String,
    /// Its listener.
    pub listen: SocketAddr,
}

/// The destination is not one this sidecar knows.
#[derive(Debug, thiserror::Error)]
#[error("no route to destination {destination:?}: it is not among this sidecar's destinations")]
pub struct NoRoute {
    /// The service name taken from the request.
    pub destination: String,
}

/// A redirected request to an address outside the mesh, refused by `outbound.unknown: deny`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{address} (Host {host:?}) is not a destination of this sidecar, and outbound.unknown: deny \
     refuses addresses outside the mesh"
)]
pub struct OutboundDenied {
    /// The address the app dialled.
    pub address: SocketAddr,
    /// The authority the request named.
    pub host: String,
}

/// A redirected request to an address outside the mesh could not be sent there
/// (`outbound.unknown: passthrough`).
#[derive(Debug, thiserror::Error)]
#[error("passthrough to {address} failed: {}", with_causes(source.as_ref()))]
pub struct PassthroughFailed {
    /// The address the app dialled.
    pub address: SocketAddr,
    /// What failed: the connect, or the exchange.
    pub source: BoxError,
}

/// The destination is known but has no endpoints to send to.
#[derive(Debug, thiserror::Error)]
#[error("destination {destination:?} has no endpoints")]
pub struct NoEndpoints {
    /// The service name.
    pub destination: String,
}

/// The whole request (all tries, backoff and queueing) exceeded the destination's `timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request to {destination:?} exceeded its timeout of {timeout:?}")]
pub struct RequestTimeout {
    /// The destination service.
    pub destination: String,
    /// The limit.
    pub timeout: Duration,
}

/// One try exceeded the destination's `retries.per_try_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("try to {destination:?} exceeded its per-try timeout of {timeout:?}")]
pub struct PerTryTimeout {
    /// The destination service.
    pub destination: String,
    /// The limit.
    pub timeout: Duration,
}

/// The destination's `max_requests` are in flight and `max_pending` are waiting.
#[derive(Debug, thiserror::Error)]
#[error(
    "{destination:?} is overloaded: max_requests ({max_requests}) in flight and max_pending \
     ({max_pending}) waiting"
)]
pub struct Overloaded {
    /// The destination service.
    pub destination: String,
    /// The in-flight limit.
    pub max_requests: u32,
    /// The waiting limit.
    pub max_pending: u32,
}

/// The app's request body failed while it was being read for replay.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body failed: {0}")]
pub struct RequestBodyFailed(pub BoxError);

/// TCP connect to a peer sidecar failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {peer} at {endpoint}: {source}")]
pub struct ConnectFailed {
    /// The endpoint address.
    pub endpoint: SocketAddr,
    /// The identity expected there.
    pub peer: SpiffeId,
    /// The socket error.
    pub source: io::Error,
}

/// Connecting (TCP and TLS) to a peer sidecar took longer than `connect_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("connecting to {peer} at {endpoint} timed out after {timeout:?}")]
pub struct ConnectTimeout {
    /// The endpoint address.
    pub endpoint: SocketAddr,
    /// The identity expected there.
    pub peer: SpiffeId,
    /// The limit that was hit.
    pub timeout: Duration,
}

/// The TLS handshake with a peer sidecar failed.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {peer} at {endpoint} failed: {source}")]
pub struct TlsFailed {
    /// The endpoint address.
    pub endpoint: SocketAddr,
    /// The identity expected there.
    pub peer: SpiffeId,
    /// The cause, usually wrapping a `rustls::Error`.
    pub source: io::Error,
}

/// The HTTP/2 connection or stream to a peer sidecar failed after connecting.
///
/// With TLS 1.3 a peer that rejects *our* certificate does so after the handshake, so such a
/// rejection shows up here, with a `rustls::Error` in the cause chain.
#[derive(Debug, thiserror::Error)]
#[error("request to {peer} at {endpoint} failed: {source}")]
pub struct UpstreamFailed {
    /// The endpoint address.
    pub endpoint: SocketAddr,
    /// The identity expected there.
    pub peer: SpiffeId,
    /// The HTTP error.
    pub source: hyper::Error,
}

/// Forwarding to the local application failed.
#[derive(Debug, thiserror::Error)]
#[error("local app at {app} failed: {}", with_causes(source))]
pub struct AppFailed {
    /// The app's address.
    pub app: SocketAddr,
    /// The client error.
    pub source: hyper_util::client::legacy::Error,
}

/// `limits.app.max_concurrent_requests` are in flight to the local app.
#[derive(Debug, thiserror::Error)]
#[error(
    "the local app at {app} has {max} requests in flight, its limit \
     (limits.app.max_concurrent_requests)"
)]
pub struct AppConcurrencyLimit {
    /// The app's address.
    pub app: SocketAddr,
    /// The limit.
    pub max: u32,
}

/// An error and its causes on one line: hyper's own message ("client error (Connect)") names
/// no cause, and the cause (refused, timed out) is what an operator needs.
fn with_causes(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        line.push_str(": ");
        line.push_str(&next.to_string());
        cause = next.source();
    }
    line
}

/// Sending an upgrade request to the local app failed.
#[derive(Debug, thiserror::Error)]
#[error("upgrade request to the local app at {app} failed: {source}")]
pub struct AppUpgradeFailed {
    /// The app's address.
    pub app: SocketAddr,
    /// The HTTP error.
    pub source: hyper::Error,
}

/// A peer asked to tunnel to a port other than the app's.
#[derive(Debug, thiserror::Error)]
#[error("CONNECT to {authority:?} refused: this sidecar tunnels only to its app's port {app_port}")]
pub struct TunnelPortRefused {
    /// The `:authority` the peer sent.
    pub authority: String,
    /// The port of the app, the only one allowed.
    pub app_port: u16,
}

/// Connecting to the local app for a TCP tunnel failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the local app at {app}: {source}")]
pub struct AppConnectFailed {
    /// The app's address.
    pub app: SocketAddr,
    /// The socket error.
    pub source: io::Error,
}

/// A request over its service's rate limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "caller {caller} may not call {service} more often: over {limit}; retry after {retry_after:?}"
)]
pub struct RateLimited {
    /// The caller's identity, or `unauthenticated`.
    pub caller: String,
    /// This service.
    pub service: String,
    /// The limit it is over.
    pub limit: String,
    /// How long until a request would fit.
    pub retry_after: Duration,
    /// Whether to answer as a gRPC server (`RESOURCE_EXHAUSTED`).
    pub grpc: bool,
}

/// A request answered by an injected fault instead of being sent.
#[derive(Debug, thiserror::Error)]
#[error("fault injected by the mesh: {}", describe_abort(*.status))]
pub struct FaultAborted {
    /// What it is answered with.
    pub status: mesh_api::fault::AbortStatus,
}

fn describe_abort(status: mesh_api::fault::AbortStatus) -> String {
    match status {
        mesh_api::fault::AbortStatus::Http(code) => format!("abort with {code}"),
        mesh_api::fault::AbortStatus::Grpc(code) => format!(
            "abort with gRPC status {code} ({})",
            mesh_api::fault::grpc_name(code)
        ),
    }
}

/// Machine-readable reason of a response the mesh made itself, sent in `x-mesh-error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No Host / :authority.
    NoAuthority,
    /// A request the mesh does not proxy.
    Unsupported,
    /// Unknown destination.
    NoRoute,
    /// The caller is not allowed to call this service.
    Unauthorized,
    /// A plain connection from outside the mesh, and the service takes only mesh mTLS.
    Unauthenticated,
    /// A tunnel asked for a port other than the app's.
    TunnelPortRefused,
    /// An address outside the mesh, refused by `outbound.unknown: deny`.
    OutboundDenied,
    /// An address outside the mesh could not be reached directly.
    PassthroughFailed,
    /// Known destination without endpoints.
    NoEndpoints,
    /// The destination's concurrency limits are full.
    Overloaded,
    /// The overall request timeout passed.
    Timeout,
    /// The last try exceeded its per-try timeout.
    PerTryTimeout,
    /// The app's request body broke off.
    RequestBody,
    /// TCP connection refused or unreachable.
    ConnectRefused,
    /// TCP + TLS connect did not finish in time.
    ConnectTimeout,
    /// The peer's certificate is valid but names another identity.
    TlsPeerIdentity,
    /// The peer's certificate does not chain to our trust bundle.
    TlsUntrustedPeer,
    /// The peer's certificate is expired or not yet valid.
    TlsExpiredPeer,
    /// The peer refused our certificate (it sent a TLS alert).
    TlsRejectedByPeer,
    /// Any other TLS failure.
    TlsHandshake,
    /// The peer reset the stream or the connection dropped.
    UpstreamReset,
    /// The local app refused the connection (it is down).
    AppUnavailable,
    /// The local app failed mid-request.
    AppError,
    /// The app's concurrency limit (`limits.app.max_concurrent_requests`) is reached.
    AppConcurrencyLimit,
    /// A fault injected by the route's or destination's `fault` policy.
    FaultInjected,
    /// Over the service's rate limit.
    RateLimited,
    /// Something else inside the proxy.
    Internal,
}

// === impl Reason ===

impl Reason {
    /// The value of `x-mesh-error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoAuthority => "no-authority",
            Reason::Unsupported => "unsupported",
            Reason::NoRoute => "no-route",
            Reason::Unauthorized => "unauthorized",
            Reason::Unauthenticated => "unauthenticated",
            Reason::TunnelPortRefused => "tunnel-port-refused",
            Reason::OutboundDenied => "outbound-denied",
            Reason::PassthroughFailed => "passthrough-failed",
            Reason::NoEndpoints => "no-endpoints",
            Reason::Overloaded => "overloaded",
            Reason::Timeout => "timeout",
            Reason::PerTryTimeout => "per-try-timeout",
            Reason::RequestBody => "request-body",
            Reason::ConnectRefused => "connect-refused",
            Reason::ConnectTimeout => "connect-timeout",
            Reason::TlsPeerIdentity => "tls-peer-identity",
            Reason::TlsUntrustedPeer => "tls-untrusted-peer",
            Reason::TlsExpiredPeer => "tls-expired-peer",
            Reason::TlsRejectedByPeer => "tls-rejected-by-peer",
            Reason::TlsHandshake => "tls-handshake",
            Reason::UpstreamReset => "upstream-reset",
            Reason::AppUnavailable => "app-unavailable",
            Reason::AppError => "app-error",
            Reason::AppConcurrencyLimit => "app-concurrency-limit",
            Reason::FaultInjected => "fault-injected",
            Reason::RateLimited => "rate-limited",
            Reason::Internal => "internal",
        }
    }

    /// The status code of the synthetic response.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::NoAuthority | Reason::RequestBody => StatusCode::BAD_REQUEST,
            Reason::Unauthorized
            | Reason::Unauthenticated
            | Reason::TunnelPortRefused
            | Reason::OutboundDenied => StatusCode::FORBIDDEN,
            Reason::Overloaded | Reason::AppConcurrencyLimit => StatusCode::SERVICE_UNAVAILABLE,
            Reason::Timeout | Reason::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::Unsupported => StatusCode::NOT_IMPLEMENTED,
            Reason::NoRoute
            | Reason::NoEndpoints
            | Reason::ConnectRefused
            | Reason::ConnectTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            // The fault's own status replaces it (`rescue`).
            Reason::FaultInjected => StatusCode::SERVICE_UNAVAILABLE,
            Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the failure was in TLS, for the handshake-failure metric and log.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            Reason::TlsPeerIdentity
                | Reason::TlsUntrustedPeer
                | Reason::TlsExpiredPeer
                | Reason::TlsRejectedByPeer
                | Reason::TlsHandshake
        )
    }
}

/// Classifies an error by its cause chain.
pub fn reason(err: &(dyn Error + 'static)) -> Reason {
    if find_cause::<FaultAborted>(err).is_some() {
        return Reason::FaultInjected;
    }
    if find_cause::<RateLimited>(err).is_some() {
        return Reason::RateLimited;
    }
    if find_cause::<NoAuthority>(err).is_some() {
        return Reason::NoAuthority;
    }
    if find_cause::<Unsupported>(err).is_some() || find_cause::<TcpOnly>(err).is_some() {
        return Reason::Unsupported;
    }
    if find_cause::<Unauthorized>(err).is_some() {
        return Reason::Unauthorized;
    }
    if find_cause::<Unauthenticated>(err).is_some() {
        return Reason::Unauthenticated;
    }
    if find_cause::<TunnelPortRefused>(err).is_some() {
        return Reason::TunnelPortRefused;
    }
    if find_cause::<AppConnectFailed>(err).is_some() {
        return Reason::AppUnavailable;
    }
    if find_cause::<NoRoute>(err).is_some() {
        return Reason::NoRoute;
    }
    if find_cause::<OutboundDenied>(err).is_some() {
        return Reason::OutboundDenied;
    }
    if find_cause::<PassthroughFailed>(err).is_some() {
        return Reason::PassthroughFailed;
    }
    if find_cause::<RequestTimeout>(err).is_some() {
        return Reason::Timeout;
    }
    if find_cause::<PerTryTimeout>(err).is_some() {
        return Reason::PerTryTimeout;
    }
    if find_cause::<Overloaded>(err).is_some() {
        return Reason::Overloaded;
    }
    if find_cause::<RequestBodyFailed>(err).is_some() {
        return Reason::RequestBody;
    }
    if find_cause::<NoEndpoints>(err).is_some() {
        return Reason::NoEndpoints;
    }
    if find_cause::<ConnectTimeout>(err).is_some() {
        return Reason::ConnectTimeout;
    }
    if find_cause::<ConnectFailed>(err).is_some() {
        return Reason::ConnectRefused;
    }
    if let Some(tls) = find_cause::<rustls::Error>(err) {
        return tls_reason(tls);
    }
    if find_cause::<TlsFailed>(err).is_some() {
        return Reason::TlsHandshake;
    }
    if find_cause::<io::Error>(err).is_some_and(is_tls_alert) {
        return Reason::TlsRejectedByPeer;
    }
    if find_cause::<UpstreamFailed>(err).is_some() {
        return Reason::UpstreamReset;
    }
    if find_cause::<AppUpgradeFailed>(err).is_some() {
        return Reason::AppError;
    }
    if find_cause::<AppConcurrencyLimit>(err).is_some() {
        return Reason::AppConcurrencyLimit;
    }
    if let Some(app) = find_cause::<AppFailed>(err) {
        return if app.source.is_connect() {
            Reason::AppUnavailable
        } else {
            Reason::AppError
        };
    }
    Reason::Internal
}

/// Classifies a rustls error as one of the TLS reasons.
pub fn tls_reason(err: &rustls::Error) -> Reason {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::Other(other))
            if other.0.downcast_ref::<PeerIdentityMismatch>().is_some()
                || other.0.downcast_ref::<ForeignClient>().is_some() =>
        {
            Reason::TlsPeerIdentity
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => Reason::TlsExpiredPeer,
        rustls::Error::InvalidCertificate(_) => Reason::TlsUntrustedPeer,
        rustls::Error::AlertReceived(_) => Reason::TlsRejectedByPeer,
        _ => Reason::TlsHandshake,
    }
}

/// Whether an I/O error is a TLS alert the peer sent us.
///
/// With TLS 1.3 a server verifies the client's certificate after the client considers the
/// handshake done, so a peer refusing our certificate is seen as an alert on the first read,
/// inside the HTTP/2 connection. h2 keeps I/O errors as kind and message only (so that they can
/// be cloned), which drops the `rustls::Error`; what remains is rustls's message for a received
/// alert on an `InvalidData` error.
pub(crate) fn is_tls_alert(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::InvalidData && err.to_string().starts_with("received fatal alert")
}

/// Builds the response for an error: status, `x-mesh-error`, and a one-line text body.
pub fn rescue(err: &(dyn Error + 'static)) -> (Reason, Response<Body>) {
    let reason = reason(err);
    let mut rsp = synthetic(reason, err.to_string());
    if let Some(fault) = find_cause::<FaultAborted>(err) {
        match fault.status {
            mesh_api::fault::AbortStatus::Http(code) => {
                *rsp.status_mut() = StatusCode::from_u16(code).unwrap_or(reason.status());
            }
            mesh_api::fault::AbortStatus::Grpc(code) => {
                grpc_answer(&mut rsp, code, "fault%20injected%20by%20the%20mesh");
            }
        }
    }
    if let Some(limited) = find_cause::<RateLimited>(err) {
        // Whole seconds, rounded up: a caller that waits that long fits.
        let secs =
            limited.retry_after.as_secs() + u64::from(limited.retry_after.subsec_nanos() > 0);
        rsp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        if limited.grpc {
            grpc_answer(&mut rsp, 8, "rate%20limited%20by%20the%20mesh");
        }
    }
    (reason, rsp)
}

/// Makes `rsp` a trailers-only gRPC answer: 200, `grpc-status` in the headers, no body.
fn grpc_answer(rsp: &mut Response<Body>, code: u8, message: &'static str) {
    *rsp.status_mut() = StatusCode::OK;
    *rsp.body_mut() = crate::body::empty();
    let headers = rsp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    headers.insert("grpc-message", HeaderValue::from_static(message));
}

/// A fixed body.
pub fn synthetic_body(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response made by the mesh itself.
pub fn synthetic(reason: Reason, message: String) -> Response<Body> {
    let mut rsp = Response::new(synthetic_body(message + "\n"));
    *rsp.status_mut() = reason.status();
    let headers = rsp.headers_mut();
    headers.insert(MESH_ERROR, HeaderValue::from_static(reason.as_str()));
    if reason == Reason::Overloaded {
        headers.insert(OVERLOADED, HeaderValue::from_static("true"));
    }
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// Finds a cause of type `T` in the chain of `err`.
///
/// Two links of real chains are not reachable through `source()`: `std::io::Error` returns the
/// *inner error's* source rather than the inner error, and `h2::Error` returns none at all. Each
/// is opened explicitly (`get_ref`, `get_io`), which is how a TLS alert from a peer that refused
/// our certificate is found under the HTTP/2 connection error.
pub fn find_cause<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    // Bounded: a cyclic or absurdly deep chain is not worth following.
    for _ in 0..32 {
        let current = next?;
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(io) = current
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::get_io)
        {
            next = Some(io);
            continue;
        }
        if let Some(inner) = current
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            next = Some(inner);
            continue;
        }
        next = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SpiffeId {
        "spiffe://mesh.local/ns/default/sa/inventory"
            .parse()
            .unwrap()
    }

    #[test]
    fn no_route_is_503_with_reason_and_destination() {
        let err: BoxError = Box::new(NoRoute {
            destination: "nowhere".into(),
        });
        let (reason, rsp) = rescue(err.as_ref());
        assert_eq!(reason, Reason::NoRoute);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.headers()[MESH_ERROR], "no-route");
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let mismatch = PeerIdentityMismatch {
            expected: peer(),
            presented: "spiffe://mesh.local/ns/default/sa/evil".into(),
        };
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(std::sync::Arc::new(mismatch)),
        ));
        let err: BoxError = Box::new(TlsFailed {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            peer: peer(),
            source: io::Error::new(io::ErrorKind::InvalidData, tls),
        });
        assert_eq!(reason(err.as_ref()), Reason::TlsPeerIdentity);
        assert_eq!(Reason::TlsPeerIdentity.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn tls_reasons_by_cause() {
        use rustls::{AlertDescription, CertificateError};
        assert_eq!(
            tls_reason(&rustls::Error::InvalidCertificate(
                CertificateError::Expired
            )),
            Reason::TlsExpiredPeer
        );
        assert_eq!(
            tls_reason(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            Reason::TlsUntrustedPeer
        );
        assert_eq!(
            tls_reason(&rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
            Reason::TlsRejectedByPeer
        );
    }

    #[test]
    fn alert_flattened_by_http2_is_a_rejection_by_the_peer() {
        // What an h2 connection error holds once rustls's error has become text.
        let flattened = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::DecryptError).to_string(),
        );
        let err: BoxError = Box::new(flattened);
        assert_eq!(reason(err.as_ref()), Reason::TlsRejectedByPeer);
        let other: BoxError = Box::new(io::Error::new(io::ErrorKind::InvalidData, "bad frame"));
        assert_eq!(reason(other.as_ref()), Reason::Internal);
    }

    #[test]
    fn outside_the_mesh_deny_is_403_and_a_failed_passthrough_502() {
        let err: BoxError = Box::new(OutboundDenied {
            address: "198.18.0.2:8080".parse().unwrap(),
            host: "198.18.0.2:8080".into(),
        });
        let (reason, rsp) = rescue(err.as_ref());
        assert_eq!(reason, Reason::OutboundDenied);
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
        assert_eq!(rsp.headers()[MESH_ERROR], "outbound-denied");
        let err: BoxError = Box::new(PassthroughFailed {
            address: "198.18.0.2:8080".parse().unwrap(),
            source: Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
        });
        let (reason, rsp) = rescue(err.as_ref());
        assert_eq!(reason, Reason::PassthroughFailed);
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn connect_refused_is_503() {
        let err: BoxError = Box::new(ConnectFailed {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            peer: peer(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        });
        let (reason, rsp) = rescue(err.as_ref());
        assert_eq!(reason, Reason::ConnectRefused);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
