//! Certificate verification by SPIFFE ID.
//!
//! webpki checks server certificates against a DNS name or IP address, but sidecars present
//! only a SPIFFE URI SAN. The outbound side therefore checks the chain with webpki (trust
//! bundle, validity period, key usage) and then compares the URI SAN with the identity expected
//! for the destination itself. The inbound side needs no name check, so it uses rustls's
//! `WebPkiClientVerifier` unchanged and reads the caller's ID after the handshake.

use std::sync::Arc;

use arc_swap::ArcSwap;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use mesh_api::spiffe::{SpiffeId, describe, ids_in_certificate};

/// The server presented a valid certificate for another identity.
#[derive(Debug, thiserror::Error)]
#[error("peer identity is {presented}, expected {expected}")]
pub struct PeerIdentityMismatch {
    /// The identity the destination must have.
    pub expected: SpiffeId,
    /// What the certificate says (or "none").
    pub presented: String,
}

/// Verifies that a server's certificate chains to the trust bundle and names `expected`.
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    /// The current trust bundle, read per handshake so a rotated bundle applies at once.
    roots: Arc<ArcSwap<RootCertStore>>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

// === impl SpiffeServerVerifier ===

impl SpiffeServerVerifier {
    pub(crate) fn new(
        roots: Arc<ArcSwap<RootCertStore>>,
        expected: SpiffeId,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            roots,
            expected,
            algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots.load(),
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented = ids_in_certificate(end_entity);
        if presented.contains(&self.expected) {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = describe(&presented);
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(PeerIdentityMismatch {
                expected: self.expected.clone(),
                presented,
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
