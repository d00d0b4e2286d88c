//! The sidecar's side of the API, for tests and tools: a key pair and CSR made locally (the key
//! never leaves), and a gRPC channel over TLS 1.3 that verifies the control plane by its SPIFFE
//! ID against a trust bundle.
//!
//! The work is done by `mesh_api::certify` and `mesh_api::channel`, which sidecars use too;
//! this module keeps the calls tests and benchmarks make in one place.

use std::net::SocketAddr;

pub use mesh_api::certify::Workload;
use mesh_api::certify::{self as certify_api, CertifyError};
use mesh_api::channel::{self, ChannelError};
use mesh_api::spiffe::{InvalidSpiffeId, SpiffeId};
pub use mesh_api::tls::SpiffeServerVerifier;
use rcgen::KeyPair;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::Channel;

/// Why a client step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Key or CSR generation failed.
    #[error("key or CSR: {0}")]
    Generate(#[from] rcgen::Error),
    /// The service's identity is invalid.
    #[error("identity: {0}")]
    Identity(#[from] InvalidSpiffeId),
    /// The channel could not be made.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// No certificate was issued.
    #[error(transparent)]
    Certify(#[from] CertifyError),
}

/// A new P-256 key pair and a DER CSR naming `uris` as its URI SANs.
pub fn csr(uris: &[&str]) -> Result<(KeyPair, Vec<u8>), ClientError> {
    Ok(certify_api::key_and_request(uris, None)?)
}

/// Roots from PEM text (such as `ca.pem`).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, ClientError> {
    Ok(channel::roots_from_pem(pem)?)
}

/// Roots from DER certificates (such as a snapshot's trust bundle).
pub fn roots_from_der(ders: &[Vec<u8>]) -> Result<RootCertStore, ClientError> {
    Ok(channel::roots_from_der(ders)?)
}

/// A gRPC channel to the control plane at `addr`, verified as the control plane of
/// `trust_domain` against `roots`, presenting `client_cert` when given.
pub async fn connect(
    addr: SocketAddr,
    roots: RootCertStore,
    trust_domain: &str,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Channel, ClientError> {
    let tls = channel::client_config(roots, trust_domain, client_cert)?;
    Ok(channel::connect(addr, tls).await?)
}

/// Asks for a certificate for `service` with its join token, over an unauthenticated channel.
pub async fn certify(
    channel: Channel,
    trust_domain: &str,
    namespace: &str,
    service: &str,
    token: &str,
) -> Result<Workload, ClientError> {
    let id = SpiffeId::for_service(trust_domain, namespace, service)?;
    Ok(certify_api::certify(channel, service, &id, token).await?)
}
