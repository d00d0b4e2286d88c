//! Tells an open connection when the certificate that authenticated its peer stops verifying
//! against the trust bundle: a root was removed (`meshctl ca remove-root`), or the certificate
//! has expired since. A handshake checks the peer once; without this, a connection made before
//! a root was removed would go on trusting it for as long as it lived.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_api::tls::{LiveClientVerifier, SpiffeServerVerifier};
use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use tokio::sync::watch;

use mesh_api::spiffe::SpiffeId;

/// The trust bundle as it changes, for connections to check their peer against.
#[derive(Clone, Debug)]
pub struct TrustChanges {
    changes: watch::Receiver<u64>,
    roots: Arc<ArcSwap<RootCertStore>>,
    client_verifier: Arc<LiveClientVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl TrustChanges {
    pub(super) fn new(
        changes: watch::Receiver<u64>,
        roots: Arc<ArcSwap<RootCertStore>>,
        client_verifier: Arc<LiveClientVerifier>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            changes,
            roots,
            client_verifier,
            algorithms,
        }
    }

    /// Completes once `chain`, a client's certificate chain, no longer verifies against the
    /// trust bundle, checked each time the bundle changes; never, if it always does.
    pub fn client_untrusted(
        self,
        chain: Vec<CertificateDer<'static>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let verifier = self.client_verifier.clone();
        self.until_untrusted(move |now| {
            let Some((leaf, intermediates)) = chain.split_first() else {
                return false;
            };
            verifier
                .verify_client_cert(leaf, intermediates, now)
                .is_ok()
        })
    }

    /// Completes once `chain`, a server's certificate chain presented as `peer`, no longer
    /// verifies against the trust bundle, checked each time the bundle changes.
    pub fn server_untrusted(
        self,
        chain: Vec<CertificateDer<'static>>,
        peer: SpiffeId,
    ) -> impl Future<Output = ()> + Send + 'static {
        let verifier = SpiffeServerVerifier::new(self.roots.clone(), peer, self.algorithms);
        // The verifier checks the SPIFFE ID, not the name.
        let name = ServerName::IpAddress(std::net::IpAddr::from([0, 0, 0, 0]).into());
        self.until_untrusted(move |now| {
            let Some((leaf, intermediates)) = chain.split_first() else {
                return false;
            };
            verifier
                .verify_server_cert(leaf, intermediates, &name, &[], now)
                .is_ok()
        })
    }

    async fn until_untrusted(mut self, trusted: impl Fn(UnixTime) -> bool + Send + 'static) {
        loop {
            if self.changes.changed().await.is_err() {
                // The identity is gone (the sidecar stops): nothing changes any more.
                std::future::pending::<()>().await;
            }
            if !trusted(UnixTime::now()) {
                return;
            }
        }
    }
}
