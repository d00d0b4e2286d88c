//! Credentials from PEM files or from parts: the certificate chain, its key and the trust
//! bundle, checked against this sidecar's SPIFFE ID before anything uses them.

use std::path::Path;
use std::sync::Arc;

use mesh_api::spiffe::{SpiffeId, describe, ids_in_certificate};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::FromDer;

/// The ALPN protocol spoken between sidecars.
pub const ALPN_H2: &[u8] = b"h2";

/// Why credentials could not be loaded; each names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("cannot read {path:?}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds no usable PEM item of the expected kind.
    #[error("{path:?}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// The certificate does not carry this sidecar's identity.
    #[error("certificate names {presented}, but this sidecar is {expected}")]
    WrongIdentity {
        /// The identity the config implies.
        expected: SpiffeId,
        /// The SPIFFE IDs in the certificate.
        presented: String,
    },
    /// rustls refused the combination (e.g. key does not match certificate).
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// The trust bundle could not build a client verifier.
    #[error("trust bundle: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Certificate chain, key and trust bundle of one sidecar, checked to belong together.
#[derive(Debug)]
pub struct Credentials {
    pub(super) id: SpiffeId,
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: PrivateKeyDer<'static>,
    pub(super) roots: Arc<RootCertStore>,
    roots_der: Vec<CertificateDer<'static>>,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) not_after: Option<i64>,
}

// === impl Credentials ===

impl Credentials {
    /// Loads PEM files and checks that the certificate carries `expected`.
    pub fn load(
        expected: &SpiffeId,
        cert: &Path,
        key: &Path,
        trust_bundle: &Path,
    ) -> Result<Self, CredentialsError> {
        let chain = read_certs(cert)?;
        let key_der =
            PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| CredentialsError::Pem {
                path: key.display().to_string(),
                what: format!("no private key: {e}"),
            })?;
        let roots = read_certs(trust_bundle)?;
        Self::from_parts(expected, chain, key_der, roots).map_err(|e| match e {
            CredentialsError::Pem { what, .. } => CredentialsError::Pem {
                path: trust_bundle.display().to_string(),
                what,
            },
            other => other,
        })
    }

    /// Builds credentials from parsed parts (used by `load`, and by the control-plane client
    /// once certificates are issued from CSRs).
    pub fn from_parts(
        expected: &SpiffeId,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots_der: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CredentialsError> {
        let roots = trust_store(&roots_der)?;
        let leaf = chain.first().ok_or_else(|| CredentialsError::Pem {
            path: "certificate".into(),
            what: "empty chain".into(),
        })?;
        let presented = ids_in_certificate(leaf);
        if !presented.contains(expected) {
            return Err(CredentialsError::WrongIdentity {
                expected: expected.clone(),
                presented: describe(&presented),
            });
        }
        let not_after = x509_parser::certificate::X509Certificate::from_der(leaf)
            .ok()
            .map(|(_, c)| c.validity().not_after.timestamp());
        Ok(Self {
            id: expected.clone(),
            chain,
            key,
            roots: Arc::new(roots),
            roots_der,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            not_after,
        })
    }

    /// This sidecar's identity.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Expiry of the leaf certificate, seconds since the Unix epoch.
    pub fn not_after(&self) -> Option<i64> {
        self.not_after
    }

    /// SHA-256 (hex) of the CA certificate that issued the leaf: the next certificate of the
    /// chain, or else the root of the trust bundle the leaf verifies against. Empty when
    /// neither is known.
    pub fn issuer_sha256(&self) -> String {
        if let Some(issuer) = self.chain.get(1) {
            return sha256_hex(issuer);
        }
        let Some(leaf) = self.chain.first() else {
            return String::new();
        };
        let Ok(parsed) = rustls::server::ParsedCertificate::try_from(leaf) else {
            return String::new();
        };
        let now = rustls::pki_types::UnixTime::now();
        let algorithms = self.provider.signature_verification_algorithms.all;
        self.roots_der
            .iter()
            .find(|root| {
                trust_store(std::slice::from_ref(root)).is_ok_and(|store| {
                    rustls::client::verify_server_cert_signed_by_trust_anchor(
                        &parsed,
                        &store,
                        &[],
                        now,
                        algorithms,
                    )
                    .is_ok()
                })
            })
            .map(|root| sha256_hex(root))
            .unwrap_or_default()
    }

    /// The trust bundle, DER.
    pub fn trust_bundle(&self) -> &[CertificateDer<'static>] {
        &self.roots_der
    }
}

/// A client config that presents no certificate and accepts only a server named `peer` chained
/// to `roots`: for asking the control plane for a first certificate.
pub fn anonymous_client_config(
    roots: Arc<RootCertStore>,
    peer: SpiffeId,
) -> Result<Arc<rustls::ClientConfig>, CredentialsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = mesh_api::tls::SpiffeServerVerifier::fixed(roots, peer);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Hex SHA-256 of a certificate's DER: how the control plane names CA certificates.
pub fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A root store of the given CA certificates.
pub fn trust_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, CredentialsError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).map_err(|e| CredentialsError::Pem {
            path: "trust bundle".into(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    if store.is_empty() {
        return Err(CredentialsError::Pem {
            path: "trust bundle".into(),
            what: "no certificate found".into(),
        });
    }
    Ok(store)
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let pem_err = |what: String| CredentialsError::Pem {
        path: path.display().to_string(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err("no certificate found".into()));
    }
    Ok(certs)
}
