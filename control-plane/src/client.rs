//! The sidecar's side of the API, for tests and tools: a key pair and CSR made locally (the key
//! never leaves), and a gRPC channel over TLS 1.3 that verifies the control plane by its SPIFFE
//! ID against a trust bundle.
//!
//! webpki checks server names as DNS names or IP addresses only, so the control plane's
//! URI-SAN-only certificate is checked by [`SpiffeServerVerifier`]: the chain through webpki,
//! then the URI SAN compared here.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use mesh_api::proto::v1;
use mesh_api::spiffe::SpiffeId;
pub use mesh_api::tls::SpiffeServerVerifier;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Channel, Endpoint};

use crate::tls::{control_plane_id, provider};

/// Why a client step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Key or CSR generation failed.
    #[error("key or CSR: {0}")]
    Generate(#[from] rcgen::Error),
    /// The TLS configuration is invalid.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A trust bundle holds no usable certificate.
    #[error("the trust bundle holds no usable certificate")]
    EmptyBundle,
    /// PEM could not be parsed.
    #[error("PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The channel could not be made.
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The control plane refused.
    #[error("{0}")]
    Status(#[from] tonic::Status),
}

/// A workload's key pair and the certificate the control plane issued for it.
pub struct Workload {
    /// The private key, made here.
    pub key: KeyPair,
    /// Leaf first, then intermediates, DER.
    pub chain_der: Vec<Vec<u8>>,
    /// The roots the control plane trusted when it issued, DER.
    pub trust_bundle_der: Vec<Vec<u8>>,
    /// Expiry of the leaf, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

impl Workload {
    /// The chain and key, as a TLS client certificate.
    pub fn client_cert(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            self.chain_der
                .iter()
                .cloned()
                .map(CertificateDer::from)
                .collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der())),
        )
    }
}

/// A new P-256 key pair and a DER CSR naming `uris` as its URI SANs.
pub fn csr(uris: &[&str]) -> Result<(KeyPair, Vec<u8>), ClientError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|u| Ok(SanType::URI((*u).try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    let der = params.serialize_request(&key)?.der().to_vec();
    Ok((key, der))
}

/// Roots from PEM text (such as `ca.pem`).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    roots(certs)
}

/// Roots from DER certificates (such as a snapshot's trust bundle).
pub fn roots_from_der(ders: &[Vec<u8>]) -> Result<RootCertStore, ClientError> {
    roots(ders.iter().cloned().map(CertificateDer::from).collect())
}

fn roots(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, ClientError> {
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ClientError::EmptyBundle);
    }
    Ok(store)
}

/// A gRPC channel to the control plane at `addr`, verified as the control plane of
/// `trust_domain` against `roots`, presenting `client_cert` when given.
pub async fn connect(
    addr: SocketAddr,
    roots: RootCertStore,
    trust_domain: &str,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Channel, ClientError> {
    let provider = provider();
    let expected: SpiffeId = control_plane_id(trust_domain)
        .parse()
        .map_err(|e| rustls::Error::General(format!("{e}")))?;
    let verifier = Arc::new(SpiffeServerVerifier::fixed(Arc::new(roots), expected));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let service = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            // Small request-response calls: without this each waits out a delayed ACK.
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("control-plane.mesh")
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector(service)
        .await?;
    Ok(channel)
}

/// Asks for a certificate for `service` with its join token, over an unauthenticated channel.
pub async fn certify(
    channel: Channel,
    trust_domain: &str,
    namespace: &str,
    service: &str,
    token: &str,
) -> Result<Workload, ClientError> {
    let id = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service}");
    let (key, csr_der) = csr(&[&id])?;
    let response = v1::identity_client::IdentityClient::new(channel)
        .certify(v1::CertifyRequest {
            service: service.to_owned(),
            token: token.to_owned(),
            csr_der,
        })
        .await?
        .into_inner();
    Ok(Workload {
        key,
        chain_der: response.chain_der,
        trust_bundle_der: response.trust_bundle_der,
        not_after_unix: response.not_after_unix,
    })
}
