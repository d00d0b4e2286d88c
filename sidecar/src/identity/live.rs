//! This sidecar's identity while it changes: the certificate is renewed and the trust bundle
//! rotated without a restart, a dropped connection or a failed request.
//!
//! rustls configs are built once and never rebuilt. They read the current certificate through
//! a resolver and the current trust bundle through verifiers that load it per handshake, so a
//! swap affects the next handshake only: connections already established keep running on the
//! certificates they were made with.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;
use mesh_api::tls::{LiveCertificate, LiveClientVerifier, SpiffeServerVerifier, no_resumption};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;

use super::credentials::{ALPN_H2, Credentials, CredentialsError};
use super::trust::TrustChanges;
use mesh_api::spiffe::SpiffeId;

/// The identity of this sidecar: one SPIFFE ID, its current certificate and trust bundle.
#[derive(Debug)]
pub struct Identity {
    id: SpiffeId,
    provider: Arc<CryptoProvider>,
    cert: Arc<LiveCertificate>,
    roots: Arc<ArcSwap<RootCertStore>>,
    client_verifier: Arc<LiveClientVerifier>,
    not_after: AtomicI64,
    issuer: ArcSwap<String>,
    /// Bumped each time the trust bundle is replaced.
    trust_changes: watch::Sender<u64>,
}

// === impl Identity ===

impl Identity {
    /// Starts from checked credentials.
    pub fn new(credentials: Credentials) -> Result<Self, CredentialsError> {
        let provider = credentials.provider.clone();
        let certified = certified_key(&provider, &credentials)?;
        let roots = Arc::new(ArcSwap::from(credentials.roots.clone()));
        let client_verifier = Arc::new(LiveClientVerifier::for_trust_domain(
            client_verifier(&provider, credentials.roots.clone())?,
            credentials.id.trust_domain(),
        ));
        Ok(Self {
            id: credentials.id.clone(),
            provider,
            cert: Arc::new(LiveCertificate::new(Arc::new(certified))),
            roots,
            client_verifier,
            not_after: AtomicI64::new(credentials.not_after.unwrap_or(0)),
            issuer: ArcSwap::from_pointee(credentials.issuer_sha256()),
            trust_changes: watch::Sender::new(0),
        })
    }

    /// This sidecar's identity.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Expiry of the current certificate, seconds since the Unix epoch.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Acquire)
    }

    /// SHA-256 (hex) of the CA certificate that issued the current certificate, when the
    /// chain or the trust bundle holds it.
    pub fn issuer_sha256(&self) -> Arc<String> {
        self.issuer.load_full()
    }

    /// Replaces certificate, key and trust bundle. New handshakes use them at once; existing
    /// connections are left alone.
    pub fn replace(&self, credentials: &Credentials) -> Result<(), CredentialsError> {
        if credentials.id != self.id {
            return Err(CredentialsError::WrongIdentity {
                expected: self.id.clone(),
                presented: credentials.id.to_string(),
            });
        }
        let certified = certified_key(&self.provider, credentials)?;
        self.set_trust_bundle(credentials.roots.clone())?;
        self.cert.store(Arc::new(certified));
        self.not_after
            .store(credentials.not_after.unwrap_or(0), Ordering::Release);
        self.issuer.store(Arc::new(credentials.issuer_sha256()));
        Ok(())
    }

    /// Replaces the trust bundle only (a root was added or removed).
    pub fn set_trust_bundle(&self, roots: Arc<RootCertStore>) -> Result<(), CredentialsError> {
        let verifier = client_verifier(&self.provider, roots.clone())?;
        self.roots.store(roots);
        self.client_verifier.store(verifier);
        self.trust_changes
            .send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// The trust bundle as it changes, for open connections to re-check their peer.
    pub fn trust_changes(&self) -> TrustChanges {
        TrustChanges::new(
            self.trust_changes.subscribe(),
            self.roots.clone(),
            self.client_verifier.clone(),
            self.provider.signature_verification_algorithms,
        )
    }

    /// The inbound listener's config: TLS 1.3, client certificate required, ALPN h2, and no
    /// session resumption: a resumed session would skip checking the caller's certificate
    /// against the trust bundle of the day, so a removed root would still let it in.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, CredentialsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(self.client_verifier.clone())
            .with_cert_resolver(self.cert.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        no_resumption(&mut config);
        Ok(Arc::new(config))
    }

    /// A client config that presents our certificate and accepts only a server named `peer`.
    pub fn client_config(&self, peer: &SpiffeId) -> Result<Arc<ClientConfig>, CredentialsError> {
        let verifier = SpiffeServerVerifier::new(
            self.roots.clone(),
            peer.clone(),
            self.provider.signature_verification_algorithms,
        );
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(self.cert.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // Every handshake verifies the peer afresh (see `server_config`).
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

fn certified_key(
    provider: &CryptoProvider,
    credentials: &Credentials,
) -> Result<CertifiedKey, CredentialsError> {
    let key = provider
        .key_provider
        .load_private_key(credentials.key.clone_key())?;
    let certified = CertifiedKey::new(credentials.chain.clone(), key);
    // A key that does not match the certificate is an error now, not on the first handshake.
    certified.keys_match()?;
    Ok(certified)
}

fn client_verifier(
    provider: &Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
) -> Result<Arc<dyn ClientCertVerifier>, CredentialsError> {
    Ok(WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?)
}
