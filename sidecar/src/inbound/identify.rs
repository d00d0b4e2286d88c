//! Step 9: terminate mutual TLS and identify the caller.
//!
//! The handshake requires a client certificate chaining to the trust bundle; the caller's
//! identity is the SPIFFE ID in its URI SAN. A connection that fails the handshake (an unknown
//! CA, an expired certificate, no client certificate) or whose certificate carries no SPIFFE ID
//! is closed before any HTTP is read. Plain connections never get here: detection sends them
//! the unauthenticated way (`accept.rs`). An identified connection's requests carry its
//! [`Caller`].

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::{find_cause, tls_reason};
use crate::identity::{SpiffeId, id_in_certificate};
use crate::metrics::Label;
use mesh_api::authorization::UNAUTHENTICATED;

/// The peer of one inbound connection: a peer sidecar identified by mTLS, or a plain client
/// from outside the mesh.
#[derive(Debug)]
pub(crate) struct Caller {
    /// Its SPIFFE ID; `None` for a plain connection, which has none.
    pub(crate) id: Option<SpiffeId>,
    /// Its service name (or whole ID) as a metric label.
    pub(crate) label: Label,
    /// Its socket address.
    pub(crate) addr: SocketAddr,
}

/// Why a caller could not be identified.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentifyError {
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The handshake did not finish in time.
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The client certificate carries no SPIFFE ID.
    #[error("client certificate carries no SPIFFE ID")]
    NoIdentity,
}

// === impl Caller ===

impl Caller {
    pub(crate) fn new(id: SpiffeId, addr: SocketAddr) -> Self {
        let label = id.service().unwrap_or(id.as_str()).into();
        Self {
            id: Some(id),
            label,
            addr,
        }
    }

    /// A plain client from outside the mesh: labelled `unauthenticated`.
    pub(crate) fn unauthenticated(addr: SocketAddr) -> Self {
        Self {
            id: None,
            label: UNAUTHENTICATED.into(),
            addr,
        }
    }

    /// Its SPIFFE ID, or `unauthenticated`, for logs, spans and refusals.
    pub(crate) fn name(&self) -> &str {
        self.id.as_ref().map_or(UNAUTHENTICATED, SpiffeId::as_str)
    }
}

// === impl IdentifyError ===

impl IdentifyError {
    /// Short reason for the handshake-failure metric.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            IdentifyError::Timeout(_) => "tls-timeout",
            IdentifyError::NoIdentity => "tls-no-identity",
            IdentifyError::Handshake(e) => match find_cause::<rustls::Error>(e) {
                Some(rustls::Error::NoCertificatesPresented) => "tls-no-client-certificate",
                Some(
                    rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. },
                ) => "tls-not-tls",
                Some(tls) => tls_reason(tls).as_str(),
                None => "tls-handshake",
            },
        }
    }
}

/// Completes the handshake and returns the stream with the caller's identity.
pub(crate) async fn identify<S>(
    acceptor: &TlsAcceptor,
    tcp: S,
    timeout: Duration,
) -> Result<(TlsStream<S>, SpiffeId), IdentifyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| IdentifyError::Timeout(timeout))?
        .map_err(IdentifyError::Handshake)?;
    let caller = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| id_in_certificate(leaf).ok())
        .ok_or(IdentifyError::NoIdentity)?;
    Ok((tls, caller))
}

/// How long a caller's connection may stay open: `configured` when set, else half its
/// certificate's lifetime, and never past the certificate's expiry. A connection authenticated
/// once is otherwise trusted for as long as it lives, so it must not outlive what authenticated
/// it: the certificate, or the root a rotation later removes. `None` when the certificate's dates
/// cannot be read (the handshake has checked them) and nothing is configured.
pub(crate) fn max_connection_age(
    leaf: &[u8],
    now: SystemTime,
    configured: Option<Duration>,
) -> Option<Duration> {
    use x509_parser::prelude::FromDer;
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(leaf) else {
        return configured;
    };
    let at = |t: x509_parser::time::ASN1Time| {
        u64::try_from(t.timestamp())
            .ok()
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
    };
    let validity = cert.validity();
    let (Some(not_before), Some(not_after)) = (at(validity.not_before), at(validity.not_after))
    else {
        return configured;
    };
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let until_expiry = not_after.duration_since(now).unwrap_or_default();
    Some(configured.unwrap_or(lifetime / 2).min(until_expiry))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_1_2026: u64 = 1_767_225_600;
    const HOUR: Duration = Duration::from_secs(3600);

    /// A certificate valid from 2026-01-01 to 2026-01-03 (48 hours).
    fn two_day_leaf() -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 1, 3);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn at(hours: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(JAN_1_2026) + HOUR * u32::try_from(hours).unwrap()
    }

    #[test]
    fn half_the_certificates_lifetime_and_never_past_its_expiry() {
        let leaf = two_day_leaf();
        assert_eq!(max_connection_age(&leaf, at(1), None), Some(HOUR * 24));
        assert_eq!(max_connection_age(&leaf, at(47), None), Some(HOUR));
        assert_eq!(
            max_connection_age(&leaf, at(50), None),
            Some(Duration::ZERO)
        );
        // A configured age applies, still bounded by the expiry.
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(
            max_connection_age(&leaf, at(1), Some(ten_minutes)),
            Some(ten_minutes)
        );
        assert_eq!(
            max_connection_age(&leaf, at(47), Some(HOUR * 5)),
            Some(HOUR)
        );
        assert_eq!(
            max_connection_age(b"not a certificate", at(1), Some(HOUR)),
            Some(HOUR)
        );
        assert_eq!(max_connection_age(b"not a certificate", at(1), None), None);
    }
}
