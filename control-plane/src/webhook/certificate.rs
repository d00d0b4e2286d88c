//! The webhook's TLS: a serving certificate from the control plane's own CA for the configured
//! names, short-lived and swapped live, so the API server (which trusts `ca.pem` through the
//! webhook configuration's caBundle) always finds a fresh one without a restart.

use std::sync::Arc;
use std::time::Duration;

use mesh_api::tls::{LiveCertificate, no_resumption};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::ca::{Authority, ServingName};
use crate::mesh::Mesh;
use crate::tls::{TlsError, provider};

/// How long a serving certificate lasts: a day, so a leaked key is worth little for long.
pub(crate) const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How soon after a failed issue to try again.
const RETRY: Duration = Duration::from_secs(1);

/// The webhook's live certificate and the TLS configuration that serves it.
#[derive(Debug)]
pub(crate) struct ServingTls {
    names: Vec<ServingName>,
    resolver: Arc<LiveCertificate>,
    config: Arc<ServerConfig>,
}

impl ServingTls {
    /// Issues the first certificate. TLS 1.2 and 1.3 (API servers speak both), HTTP/1.1.
    pub(crate) fn new(ca: &Authority, names: Vec<ServingName>) -> Result<Self, TlsError> {
        let provider = provider();
        let resolver = Arc::new(LiveCertificate::new(issue(ca, &names, &provider)?));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        no_resumption(&mut config);
        Ok(Self {
            names,
            resolver,
            config: Arc::new(config),
        })
    }

    /// Re-issues at two thirds of the certificate's life and whenever the signer changes (a
    /// root rotation), until `shutdown`. Connections in progress keep what they negotiated.
    pub(crate) async fn maintain(&self, mesh: Arc<Mesh>, shutdown: CancellationToken) {
        let provider = provider();
        let mut ca_rx = mesh.watch_authority();
        let mut signer = ca_rx.borrow_and_update().issuer_sha256().to_owned();
        let mut renew_at = renew_time();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(renew_at) => {}
                changed = ca_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = ca_rx.borrow_and_update().issuer_sha256().to_owned();
                    if next == signer {
                        continue;
                    }
                    signer = next;
                }
            }
            match issue(&mesh.authority(), &self.names, &provider) {
                Ok(cert) => {
                    self.resolver.store(cert);
                    tracing::debug!("issued the webhook's serving certificate");
                    renew_at = renew_time();
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot issue the webhook's serving certificate");
                    renew_at = tokio::time::Instant::now() + RETRY;
                }
            }
        }
    }

    /// Accepts TLS with the live certificate.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

fn renew_time() -> tokio::time::Instant {
    tokio::time::Instant::now() + LIFETIME.mul_f64(2.0 / 3.0)
}

fn issue(
    ca: &Authority,
    names: &[ServingName],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let (issued, key) = ca.issue_serving(names, LIFETIME)?;
    let chain = issued
        .chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = provider.key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Authority;
    use crate::metrics::Metrics;

    fn mesh(dir: &std::path::Path) -> Arc<Mesh> {
        let mut files = crate::config::ConfigFiles::new();
        files.insert("mesh.yaml".into(), b"trust_domain: mesh.local\n".to_vec());
        let config = crate::config::parse(&files).unwrap();
        let ca = Authority::open(dir, "mesh.local").unwrap();
        Arc::new(Mesh::new(config, ca, Arc::new(Metrics::new()), 1))
    }

    /// The certificate a client handshaking now is served, verified against the bundle.
    async fn served(tls: &ServingTls, mesh: &Mesh) -> CertificateDer<'static> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(mesh.authority().root_store())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("webhook.test").unwrap();
        let connect = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, client);
        let (client, server) = tokio::join!(connect, tls.acceptor().accept(server));
        server.unwrap();
        client.unwrap().get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    #[tokio::test(start_paused = true)]
    async fn the_certificate_is_renewed_before_it_expires_and_served_live() {
        let dir = tempfile::tempdir().unwrap();
        let mesh = mesh(dir.path());
        let names = vec![ServingName::parse("webhook.test").unwrap()];
        let tls = Arc::new(ServingTls::new(&mesh.authority(), names).unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (tls, mesh, shutdown) = (tls.clone(), mesh.clone(), shutdown.clone());
            async move { tls.maintain(mesh, shutdown).await }
        });
        let first = served(&tls, &mesh).await;
        // Past two thirds of its life (16 h): the same listener serves a new one.
        tokio::time::advance(LIFETIME.mul_f64(0.7)).await;
        tokio::task::yield_now().await;
        let second = served(&tls, &mesh).await;
        assert_ne!(first, second, "renewed");
        shutdown.cancel();
        task.await.unwrap();
    }
}
