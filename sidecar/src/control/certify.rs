//! The sidecar's certificate from the control plane: made from a CSR, renewed before expiry.
//!
//! The key pair is generated here and only the CSR (public key, requested SPIFFE ID, proof of
//! possession) is sent: `CertifyRequest` has no field that could carry a private key. The CSR
//! and the call are `mesh_api::certify`'s, shared with the control plane's test client; this
//! module adds the token file, the time limit, the check of what came back, and renewal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::identity::{Credentials, CredentialsError, Identity, SpiffeId};
use crate::metrics::ControlMetrics;

use super::backoff::Backoff;

/// Limit on one Certify call.
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertifyError {
    /// The token file (a join token, or the pod's projected service-account token) could
    /// not be read.
    #[error("cannot read the token file {path:?}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The token file holds no token.
    #[error("the token file {path:?} is empty")]
    EmptyToken { path: PathBuf },
    /// The CSR could not be made, or the control plane refused or could not be reached.
    #[error(transparent)]
    Certify(#[from] mesh_api::certify::CertifyError),
    /// The control plane did not answer in time.
    #[error("control plane did not answer within {CERTIFY_TIMEOUT:?}")]
    Timeout,
    /// The issued certificate is unusable.
    #[error("issued certificate: {0}")]
    Credentials(#[from] CredentialsError),
}

/// Obtains certificates for one service identity.
#[derive(Debug)]
pub(crate) struct Certifier {
    pub(crate) service: String,
    pub(crate) id: SpiffeId,
    pub(crate) token_file: PathBuf,
}

impl Certifier {
    /// One certificate: a new key pair, a CSR for our SPIFFE ID, the token, and the answer
    /// checked to carry our identity.
    pub(crate) async fn certify(&self, channel: Channel) -> Result<Credentials, CertifyError> {
        let token = read_token(&self.token_file)?;
        let certify = mesh_api::certify::certify(channel, &self.service, &self.id, &token);
        let workload = tokio::time::timeout(CERTIFY_TIMEOUT, certify)
            .await
            .map_err(|_| CertifyError::Timeout)??;
        Ok(Credentials::from_parts(
            &self.id,
            workload.chain(),
            workload.private_key(),
            workload.trust_bundle(),
        )?)
    }

    /// Certifies until it works (backing off between tries) or `stop` fires.
    pub(crate) async fn certify_until_ok(
        &self,
        channel: &Channel,
        stop: &CancellationToken,
    ) -> Option<Credentials> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.certify(channel.clone()).await {
                Ok(credentials) => return Some(credentials),
                Err(error) => {
                    tracing::warn!(%error, identity = %self.id, "cannot obtain a certificate; trying again");
                }
            }
            if !backoff.wait(stop).await {
                return None;
            }
        }
    }
}

/// The token in `path`, read anew at each call: the kubelet rotates a projected token by
/// swapping the `..data` symlink its file goes through, and an operator replaces a join token
/// file, both without the path changing.
fn read_token(path: &std::path::Path) -> Result<String, CertifyError> {
    let token = std::fs::read_to_string(path).map_err(|source| CertifyError::Token {
        path: path.to_owned(),
        source,
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(CertifyError::EmptyToken {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// Renews the certificate at about two thirds of its remaining lifetime (60 to 70%, so a fleet
/// started together does not renew together), or soon after `renew_now` (the CA changed).
/// A failed renewal keeps the current certificate and tries again with backoff.
pub(crate) async fn renew(
    certifier: Certifier,
    channel: Channel,
    identity: Arc<Identity>,
    renew_now: Arc<Notify>,
    metrics: ControlMetrics,
    stop: CancellationToken,
) {
    loop {
        let left = identity.not_after() - unix_now();
        let delay = Duration::from_secs_f64((left.max(0) as f64) * (0.6 + fastrand::f64() / 10.0))
            .max(Duration::from_millis(500));
        tokio::select! {
            () = sleep(delay) => {}
            () = renew_now.notified() => {
                // Spread a fleet's renewals after a CA change over a second.
                sleep(Duration::from_millis(fastrand::u64(0..1000))).await;
            }
            () = stop.cancelled() => return,
        }
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let renewed = certifier
                .certify(channel.clone())
                .await
                .and_then(|credentials| Ok(identity.replace(&credentials)?));
            match renewed {
                Ok(()) => {
                    metrics.renewals_ok.inc();
                    metrics.certificate_expiry.set(identity.not_after());
                    tracing::info!(identity = %identity.id(), not_after = identity.not_after(), "certificate renewed");
                    break;
                }
                Err(error) => {
                    metrics.renewals_failed.inc();
                    tracing::warn!(%error, "certificate renewal failed; keeping the current one");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use mesh_api::proto::v1::identity_server::{Identity as IdentityApi, IdentityServer};
    use mesh_api::proto::v1::{CertifyRequest, CertifyResponse};
    use rcgen::{CertificateSigningRequestParams, SanType};
    use rustls::pki_types::CertificateSigningRequestDer;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;

    /// An Identity service that keeps what it was sent and refuses it.
    #[derive(Default)]
    struct Recorder(Arc<tokio::sync::Mutex<Vec<CertifyRequest>>>);

    #[tonic::async_trait]
    impl IdentityApi for Recorder {
        async fn certify(
            &self,
            request: tonic::Request<CertifyRequest>,
        ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
            self.0.lock().await.push(request.into_inner());
            Err(tonic::Status::unauthenticated("not this time"))
        }
    }

    #[tokio::test]
    async fn the_request_carries_a_csr_for_our_identity_and_no_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("orders");
        std::fs::write(&token_file, "s3cret\n").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IdentityServer::new(Recorder(seen.clone())))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let certifier = Certifier {
            service: "orders".into(),
            id: "spiffe://mesh.local/ns/default/sa/orders".parse().unwrap(),
            token_file,
        };

        let err = certifier.certify(channel).await.unwrap_err();
        assert!(err.to_string().contains("not this time"), "{err}");
        server.abort();

        let request = seen.lock().await.pop().unwrap();
        // Every field of the request, by name: a field added later (say, a key) fails to
        // compile here until this test looks at it.
        let CertifyRequest {
            service,
            token,
            csr_der,
        } = request;
        assert_eq!(service, "orders");
        assert_eq!(token, "s3cret", "the token is sent without its newline");
        // The CSR parses, its signature (proof of possession) checks, and it asks for exactly
        // our SPIFFE ID. A PKCS#10 request holds a public key only.
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            csr_der.as_slice(),
        ))
        .unwrap();
        let uris: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(uri) => uri.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(uris, ["spiffe://mesh.local/ns/default/sa/orders"]);
    }

    /// A projected volume as the kubelet writes it: `token` is a symlink to `..data/token`,
    /// `..data` a symlink to a timestamped directory; a rotation writes a new directory and
    /// renames a new `..data` over the old one, so the path never changes and never dangles.
    fn kubelet_write(volume: &std::path::Path, generation: u32, token: &str) {
        let data = volume.join(format!("..2026_12_03_0{generation}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("token"), token).unwrap();
        let next = volume.join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().unwrap(), &next).unwrap();
        std::fs::rename(&next, volume.join("..data")).unwrap();
        let link = volume.join("token");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("..data/token", &link).unwrap();
        }
        if generation > 1 {
            std::fs::remove_dir_all(volume.join(format!("..2026_12_03_0{}", generation - 1)))
                .unwrap();
        }
    }

    #[test]
    fn a_token_rotated_by_the_kubelet_is_read_at_the_next_call() {
        let volume = tempfile::tempdir().unwrap();
        let path = volume.path().join("token");
        kubelet_write(volume.path(), 1, "first");
        assert_eq!(read_token(&path).unwrap(), "first");
        kubelet_write(volume.path(), 2, "second");
        assert_eq!(read_token(&path).unwrap(), "second");
    }

    #[test]
    fn an_empty_or_unreadable_token_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("token");
        std::fs::write(&empty, "\n").unwrap();
        let err = read_token(&empty).unwrap_err();
        assert!(matches!(err, CertifyError::EmptyToken { .. }), "{err}");
        assert!(err.to_string().contains(&*empty.to_string_lossy()), "{err}");
        // A directory where the file should be (a volume mounted at the wrong path).
        let err = read_token(dir.path()).unwrap_err();
        assert!(matches!(err, CertifyError::Token { .. }), "{err}");
        assert!(
            err.to_string().contains(&*dir.path().to_string_lossy()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_token_file_is_named() {
        let certifier = Certifier {
            service: "orders".into(),
            id: "spiffe://mesh.local/ns/default/sa/orders".parse().unwrap(),
            token_file: "/nonexistent/tokens/orders".into(),
        };
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let err = certifier.certify(channel).await.unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tokens/orders"),
            "{err}"
        );
    }
}
