//! TLS between mesh parts: certificates verified by SPIFFE ID, and certificates and trust
//! bundles that change while connections run. Sidecars and the control plane both use these.
//!
//! webpki checks server certificates against a DNS name or IP address, but mesh parts present
//! only a SPIFFE URI SAN. [`SpiffeServerVerifier`] therefore checks the chain with webpki (trust
//! bundle, validity period, key usage) and then compares the URI SAN with the identity expected
//! itself. A server needs no name check: [`LiveClientVerifier`] delegates to rustls's
//! `WebPkiClientVerifier` on the current bundle, and the caller's ID is read after the
//! handshake.
//!
//! Configs are built once; [`LiveCertificate`] and the verifiers read the current certificate
//! and bundle per handshake, so a renewal or a rotation applies to the next connection and
//! established ones carry on undisturbed.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::spiffe::{SpiffeId, describe, id_in_certificate, ids_in_certificate};

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
pub struct SpiffeServerVerifier {
    /// The current trust bundle, read per handshake so a rotated bundle applies at once.
    roots: Arc<ArcSwap<RootCertStore>>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

// === impl SpiffeServerVerifier ===

impl SpiffeServerVerifier {
    /// A verifier of `expected` against the bundle in `roots`, read per handshake.
    pub fn new(
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

    /// A verifier of `expected` against fixed `roots`, with ring's algorithms.
    pub fn fixed(roots: Arc<RootCertStore>, expected: SpiffeId) -> Self {
        Self::new(
            Arc::new(ArcSwap::new(roots)),
            expected,
            rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
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
        if id_in_certificate(end_entity).as_ref() == Ok(&self.expected) {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = ids_in_certificate(end_entity);
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

/// The current certificate, handed to rustls as server and as client.
#[derive(Debug)]
pub struct LiveCertificate(ArcSwap<CertifiedKey>);

impl LiveCertificate {
    /// Starts with `first`.
    pub fn new(first: Arc<CertifiedKey>) -> Self {
        Self(ArcSwap::new(first))
    }

    /// Replaces the certificate for the handshakes to come.
    pub fn store(&self, next: Arc<CertifiedKey>) {
        self.0.store(next);
    }
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ResolvesClientCert for LiveCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates with the current verifier (rebuilt on each bundle change), and,
/// when given a trust domain, that the certificate names exactly one SPIFFE ID in it.
#[derive(Debug)]
pub struct LiveClientVerifier {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
    trust_domain: Option<String>,
}

/// A client certificate that chains to the bundle but names no identity of this trust domain.
#[derive(Debug, thiserror::Error)]
#[error(
    "client certificate {presented}: this mesh accepts one SPIFFE ID of trust domain {expected:?}"
)]
pub struct ForeignClient {
    /// What the certificate names, or why it names nothing.
    pub presented: String,
    /// The trust domain accepted.
    pub expected: String,
}

impl LiveClientVerifier {
    /// Starts with `first`; any identity the chain carries is accepted.
    pub fn new(first: Arc<dyn ClientCertVerifier>) -> Self {
        Self {
            current: ArcSwap::from_pointee(first),
            trust_domain: None,
        }
    }

    /// Starts with `first`, and accepts only certificates with exactly one SPIFFE ID, of
    /// `trust_domain`: a bundle may hold roots that also sign for other trust domains.
    pub fn for_trust_domain(first: Arc<dyn ClientCertVerifier>, trust_domain: &str) -> Self {
        Self {
            current: ArcSwap::from_pointee(first),
            trust_domain: Some(trust_domain.to_owned()),
        }
    }

    /// Replaces the verifier for the handshakes to come.
    pub fn store(&self, next: Arc<dyn ClientCertVerifier>) {
        self.current.store(Arc::new(next));
    }
}

impl ClientCertVerifier for LiveClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current.load().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current.load().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: they would have to outlive a bundle swap, and mesh parts present their one
        // certificate regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .current
            .load()
            .verify_client_cert(end_entity, intermediates, now)?;
        let Some(expected) = &self.trust_domain else {
            return Ok(verified);
        };
        match id_in_certificate(end_entity) {
            Ok(id) if id.trust_domain() == expected => Ok(verified),
            presented => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(ForeignClient {
                    presented: match presented {
                        Ok(id) => format!("names {id}"),
                        Err(why) => why.to_string(),
                    },
                    expected: expected.clone(),
                })),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// Turns TLS session resumption off on a server: no session kept, no ticket sent. A resumed
/// session skips checking the peer's certificate against the trust bundle of the day, so a root
/// removed from the bundle would still let in whoever holds a session from before.
pub fn no_resumption(config: &mut rustls::ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}
