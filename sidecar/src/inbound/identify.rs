//! Step 9: terminate mutual TLS and identify the caller.
//!
//! The handshake requires a client certificate chaining to the trust bundle; the caller's
//! identity is the SPIFFE ID in its URI SAN. A connection that fails the handshake (plain TCP,
//! plain HTTP, an unknown CA, an expired certificate) or whose certificate carries no SPIFFE ID
//! is closed before any HTTP is read. An identified connection's requests carry its
//! [`Caller`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::{find_cause, tls_reason};
use crate::identity::{SpiffeId, ids_in_certificate};
use crate::metrics::Label;

/// The identified peer of one inbound connection.
#[derive(Debug)]
pub(crate) struct Caller {
    /// Its SPIFFE ID.
    pub(crate) id: SpiffeId,
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
        Self { id, label, addr }
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
pub(crate) async fn identify(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, SpiffeId), IdentifyError> {
    let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| IdentifyError::Timeout(timeout))?
        .map_err(IdentifyError::Handshake)?;
    let caller = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| ids_in_certificate(leaf).into_iter().next())
        .ok_or(IdentifyError::NoIdentity)?;
    Ok((tls, caller))
}
