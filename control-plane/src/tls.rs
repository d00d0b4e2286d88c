//! TLS for the API: TLS 1.3 only, ALPN h2, the control plane's SPIFFE certificate swapped live,
//! and optional client certificates verified against the current trust bundle.
//!
//! Identity.Certify needs no client certificate (the join token proves the service), so client
//! certificates are optional at the TLS layer; every other call checks the caller's identity,
//! which the accepted connection carries (see `listener`) in each request's extensions.

use std::sync::Arc;
use std::time::Duration;

use mesh_api::spiffe::{CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE, format_service_id};
use mesh_api::tls::{LiveCertificate, LiveClientVerifier, no_resumption};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::ca::{Authority, CertError};
use crate::mesh::Mesh;

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built from the trust bundle.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The server certificate could not be issued.
    #[error("server certificate: {0}")]
    Certificate(#[from] CertError),
}

/// The provider used for every TLS operation: ring, named explicitly so the process default
/// never matters.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ID the control plane presents in `trust_domain`.
pub fn control_plane_id(trust_domain: &str) -> String {
    format_service_id(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE)
}

/// The server side's live parts: its certificate and its client verifier.
#[derive(Debug)]
pub(crate) struct ServerTls {
    resolver: Arc<LiveCertificate>,
    verifier: Arc<LiveClientVerifier>,
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Issues the first server certificate and builds the configuration.
    pub(crate) fn new(mesh: &Mesh) -> Result<Self, TlsError> {
        let provider = provider();
        let ca = mesh.authority();
        let resolver = Arc::new(LiveCertificate::new(
            issue(&ca, mesh.config().certificate_lifetime, &provider)?.0,
        ));
        let verifier = Arc::new(LiveClientVerifier::new(client_verifier(&ca, &provider)?));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        no_resumption(&mut config);
        Ok(Self {
            resolver,
            verifier,
            config: Arc::new(config),
        })
    }

    /// Keeps the certificate fresh and the verifier on the current bundle: re-issues at two
    /// thirds of the certificate's life and whenever the signer changes, rebuilds the verifier
    /// when the bundle changes. Connections in progress keep what they negotiated.
    pub(crate) async fn maintain(&self, mesh: Arc<Mesh>, shutdown: CancellationToken) {
        let provider = provider();
        let mut ca_rx = mesh.watch_authority();
        let mut current = ca_rx.borrow_and_update().clone();
        let mut renew_at = renew_time(mesh.config().certificate_lifetime);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(renew_at) => {}
                changed = ca_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = ca_rx.borrow_and_update().clone();
                    if next.trust_bundle_der() != current.trust_bundle_der() {
                        match client_verifier(&next, &provider) {
                            Ok(v) => self.verifier.store(v),
                            Err(e) => tracing::error!(error = %e, "cannot rebuild the client verifier"),
                        }
                    }
                    let signer_changed = next.issuer_sha256() != current.issuer_sha256();
                    current = next;
                    if !signer_changed {
                        continue;
                    }
                }
            }
            let lifetime = mesh.config().certificate_lifetime;
            match issue(&current, lifetime, &provider) {
                Ok((cert, not_after)) => {
                    self.resolver.store(cert);
                    tracing::debug!(not_after, "issued the control plane's certificate");
                    renew_at = renew_time(lifetime);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot issue the control plane's certificate");
                    renew_at = tokio::time::Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }

    /// Accepts TLS on the API's connections, with the live certificate and verifier.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

fn renew_time(lifetime: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + lifetime.mul_f64(2.0 / 3.0)
}

fn issue(
    ca: &Authority,
    lifetime: Duration,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, i64), TlsError> {
    let id = control_plane_id(ca.trust_domain());
    let (issued, key) = ca.issue_own(&id, lifetime)?;
    let chain = issued
        .chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = provider.key_provider.load_private_key(key)?;
    Ok((
        Arc::new(CertifiedKey::new(chain, key)),
        issued.not_after_unix,
    ))
}

fn client_verifier(
    ca: &Authority,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    Ok(
        WebPkiClientVerifier::builder_with_provider(Arc::new(ca.root_store()), provider.clone())
            .allow_unauthenticated()
            .build()?,
    )
}
