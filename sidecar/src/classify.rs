//! One judgement of how a try went, shared by retries, outlier ejection and load balancing.
//!
//! A response is a failure when its status is 5xx; an error is classified by its cause. Each
//! consumer asks its own question of the same [`Class`]: the retry policy whether it matches
//! `retry_on`, the breaker whether it counts towards ejection.

use std::error::Error;

use http::StatusCode;

use crate::error::{
    ConnectFailed, ConnectTimeout, PerTryTimeout, TlsFailed, UpstreamFailed, find_cause,
};

/// How one try ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A response below 500.
    Success(StatusCode),
    /// A 5xx response.
    ServerError(StatusCode),
    /// Connect or TLS failed: the request was not sent.
    ConnectFailure,
    /// The peer refused the stream (HTTP/2 REFUSED_STREAM): the request was not processed.
    RefusedStream,
    /// The stream or connection failed after the request was sent.
    Reset,
    /// The try exceeded its per-try timeout.
    PerTryTimeout,
    /// Anything else (a failure inside this sidecar).
    Other,
}

// === impl Class ===

impl Class {
    /// Classifies a response by status.
    pub fn of_status(status: StatusCode) -> Self {
        if status.is_server_error() {
            Class::ServerError(status)
        } else {
            Class::Success(status)
        }
    }

    /// Classifies an error by its cause chain.
    pub fn of_error(err: &(dyn Error + 'static)) -> Self {
        if find_cause::<PerTryTimeout>(err).is_some() {
            return Class::PerTryTimeout;
        }
        if find_cause::<ConnectFailed>(err).is_some()
            || find_cause::<ConnectTimeout>(err).is_some()
            || find_cause::<TlsFailed>(err).is_some()
        {
            return Class::ConnectFailure;
        }
        if let Some(h2) = find_cause::<h2::Error>(err) {
            // A graceful GOAWAY (NO_ERROR: the peer drains, or the connection reached its
            // maximum age) refuses the streams it did not take, as REFUSED_STREAM does: the
            // request was not processed, so another connection may carry it.
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR));
            if refused {
                return Class::RefusedStream;
            }
        }
        if find_cause::<std::io::Error>(err).is_some_and(crate::error::is_tls_alert) {
            // The peer refused our certificate before reading the request.
            return Class::ConnectFailure;
        }
        if find_cause::<UpstreamFailed>(err).is_some() {
            return Class::Reset;
        }
        Class::Other
    }

    /// Whether the endpoint asked for less traffic (429 Too Many Requests): for the load
    /// balancer a load signal, never a failure.
    pub fn is_load_signal(self) -> bool {
        self == Class::Success(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Whether the endpoint failed, for outlier ejection: 5xx, connect failures and resets.
    /// A refused stream is the peer shedding load, not failing; a per-try timeout is judged by
    /// the latency it adds, not as a failure.
    pub fn is_endpoint_failure(self) -> bool {
        matches!(
            self,
            Class::ServerError(_) | Class::ConnectFailure | Class::Reset
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::BoxError;

    #[test]
    fn statuses() {
        assert_eq!(
            Class::of_status(StatusCode::OK),
            Class::Success(StatusCode::OK)
        );
        assert_eq!(
            Class::of_status(StatusCode::CONFLICT),
            Class::Success(StatusCode::CONFLICT)
        );
        assert!(Class::of_status(StatusCode::BAD_GATEWAY).is_endpoint_failure());
        assert!(!Class::of_status(StatusCode::NOT_FOUND).is_endpoint_failure());
    }

    #[test]
    fn connect_errors_are_connect_failures() {
        let err: BoxError = Box::new(ConnectFailed {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            peer: "spiffe://mesh.local/ns/default/sa/x".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        assert_eq!(Class::of_error(err.as_ref()), Class::ConnectFailure);
        assert!(Class::ConnectFailure.is_endpoint_failure());
        assert!(!Class::PerTryTimeout.is_endpoint_failure());
    }
}
