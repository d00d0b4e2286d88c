//! This sidecar's own identity: its certificate, its key, and the trust bundle.
//!
//! [`Credentials`] turns PEM files into the two rustls configurations the data path needs: a
//! server config for the inbound listener (client certificate required, chained to the trust
//! bundle) and, per destination identity, a client config that presents our certificate and
//! accepts only that identity. Both speak TLS 1.3 only and offer ALPN `h2`, because sidecars
//! always talk HTTP/2 to each other. Configs are built once (per destination, not per request)
//! and shared; TLS work on the request path is limited to new pooled connections.

mod verify;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::prelude::FromDer;

pub use self::verify::PeerIdentityMismatch;
pub use mesh_api::spiffe::{InvalidSpiffeId, SpiffeId, describe, ids_in_certificate};

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

/// Certificate chain, key and trust bundle of one sidecar, ready to make TLS configs.
#[derive(Debug)]
pub struct Credentials {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    not_after: Option<i64>,
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
        let mut roots = RootCertStore::empty();
        for root in read_certs(trust_bundle)? {
            roots.add(root).map_err(|e| CredentialsError::Pem {
                path: trust_bundle.display().to_string(),
                what: format!("not a usable CA certificate: {e}"),
            })?;
        }
        Self::from_parts(expected, chain, key_der, roots)
    }

    /// Builds credentials from parsed parts (used by `load`, and by the control-plane client
    /// once certificates are issued from CSRs).
    pub fn from_parts(
        expected: &SpiffeId,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: RootCertStore,
    ) -> Result<Self, CredentialsError> {
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
        let creds = Self {
            id: expected.clone(),
            chain,
            key,
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            not_after,
        };
        // Build both configs once now, so a key that does not match the certificate is a
        // startup error rather than a failure on the first connection.
        creds.server_config()?;
        creds.client_config(expected)?;
        Ok(creds)
    }

    /// This sidecar's identity.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Expiry of the leaf certificate, seconds since the Unix epoch.
    pub fn not_after(&self) -> Option<i64> {
        self.not_after
    }

    /// The inbound listener's config: TLS 1.3, client certificate required, ALPN h2.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, CredentialsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// A client config that presents our certificate and accepts only a server named `peer`.
    pub fn client_config(&self, peer: &SpiffeId) -> Result<Arc<ClientConfig>, CredentialsError> {
        let verifier = verify::SpiffeServerVerifier::new(
            self.roots.clone(),
            peer.clone(),
            self.provider.signature_verification_algorithms,
        );
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
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
