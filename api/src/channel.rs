//! gRPC channels to the control plane over TLS 1.3, verified by its SPIFFE ID.
//!
//! webpki checks server names as DNS names or IP addresses only, so the control plane's
//! URI-SAN-only certificate is checked by [`SpiffeServerVerifier`]: the chain through webpki,
//! then the URI SAN. The TLS server name sent only fills SNI, and a control plane dialled by
//! name ([`HostPort::Name`]) is still verified by its SPIFFE ID, never by that name.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::host_port::HostPort;
use crate::spiffe::{InvalidSpiffeId, SpiffeId};
use crate::tls::SpiffeServerVerifier;

/// Limit on TCP connect plus TLS handshake to the control plane.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a channel to the control plane could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The trust domain gives no valid control plane identity.
    #[error("trust_domain {trust_domain:?}: {source}")]
    TrustDomain {
        /// The trust domain given.
        trust_domain: String,
        /// Why its control plane ID is invalid.
        source: InvalidSpiffeId,
    },
    /// The TLS configuration is invalid (such as a client key that does not fit).
    #[error("TLS to the control plane: {0}")]
    Tls(#[from] rustls::Error),
    /// The trust bundle holds no usable certificate.
    #[error("the trust bundle holds no usable certificate")]
    EmptyBundle,
    /// The trust bundle's PEM could not be parsed.
    #[error("trust bundle PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The control plane could not be reached, or the handshake failed.
    #[error("control plane at {address}: {source}")]
    Connect {
        /// Where it was dialled.
        address: HostPort,
        /// What failed.
        source: tonic::transport::Error,
    },
}

/// Roots from PEM text (such as `ca.pem`).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, ChannelError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    roots(certs)
}

/// Roots from DER certificates (such as a snapshot's trust bundle).
pub fn roots_from_der(ders: &[Vec<u8>]) -> Result<RootCertStore, ChannelError> {
    roots(ders.iter().cloned().map(CertificateDer::from).collect())
}

fn roots(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, ChannelError> {
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ChannelError::EmptyBundle);
    }
    Ok(store)
}

/// TLS 1.3 to the control plane of `trust_domain`, verified against fixed `roots`, presenting
/// `client_cert` when given (without one, only `Identity.Certify` is accepted).
pub fn client_config(
    roots: RootCertStore,
    trust_domain: &str,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, ChannelError> {
    let expected =
        SpiffeId::control_plane(trust_domain).map_err(|source| ChannelError::TrustDomain {
            trust_domain: trust_domain.to_owned(),
            source,
        })?;
    let verifier = Arc::new(SpiffeServerVerifier::fixed(Arc::new(roots), expected));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every handshake verifies the control plane afresh (see `tls::no_resumption`).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A channel that connects on first use, and again after the connection drops, each time
/// with `tls`: a sidecar's, whose `tls` follows its live certificate and bundle. A name is
/// resolved again at each connect.
pub fn lazy(address: impl Into<HostPort>, tls: Arc<ClientConfig>) -> Channel {
    endpoint().connect_with_connector_lazy(connector(address.into(), tls))
}

/// A channel connected now with `tls`, so a wrong address or identity fails here.
pub async fn connect(
    address: impl Into<HostPort>,
    tls: Arc<ClientConfig>,
) -> Result<Channel, ChannelError> {
    let address = address.into();
    endpoint()
        .connect_with_connector(connector(address.clone(), tls))
        .await
        .map_err(|source| ChannelError::Connect { address, source })
}

fn endpoint() -> Endpoint {
    // The scheme only tells tonic how to frame requests; TLS is the connector's.
    Endpoint::from_static("http://control-plane")
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
}

/// TCP then TLS to `address` (a name looked up first), within [`CONNECT_TIMEOUT`].
fn connector(
    address: HostPort,
    tls: Arc<ClientConfig>,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future: Send,
> + Send
+ 'static {
    tower::service_fn(move |_: http::Uri| {
        let tls = TlsConnector::from(tls.clone());
        let address = address.clone();
        async move {
            let connect = async {
                let tcp = address.connect().await?;
                // Small request-response calls: without this each waits out a delayed ACK.
                tcp.set_nodelay(true)?;
                // Identity is checked by SPIFFE ID; the name only fills SNI.
                let name = ServerName::try_from("control-plane")
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                tls.connect(name, tcp).await
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store holding one self-signed certificate.
    fn some_roots() -> RootCertStore {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        roots_from_der(&[cert.der().to_vec()]).unwrap()
    }

    #[test]
    fn an_empty_bundle_is_refused() {
        assert!(matches!(
            roots_from_pem(b"no certificates here"),
            Err(ChannelError::EmptyBundle)
        ));
        assert!(matches!(
            roots_from_der(&[vec![1, 2, 3]]),
            Err(ChannelError::EmptyBundle)
        ));
    }

    #[test]
    fn a_bad_trust_domain_is_named() {
        let roots = some_roots();
        let err = client_config(roots, "Not A Domain", None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("trust_domain \"Not A Domain\": "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_is_named_by_address() {
        // A port just released: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let roots = some_roots();
        let tls = client_config(roots, "mesh.local", None).unwrap();
        let err = connect(address, tls).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("control plane at {address}: ")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_control_plane_name_that_does_not_resolve_is_named() {
        let tls = client_config(some_roots(), "mesh.local", None).unwrap();
        let address: HostPort = "no-such-control-plane.invalid:15010".parse().unwrap();
        let err = connect(address, tls).await.unwrap_err();
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        assert!(
            text.starts_with("control plane at no-such-control-plane.invalid:15010: "),
            "{text}"
        );
        assert!(
            text.contains("cannot resolve no-such-control-plane.invalid"),
            "{text}"
        );
    }
}
