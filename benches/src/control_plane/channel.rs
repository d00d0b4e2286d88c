//! gRPC channels to the control plane as the sidecar makes them: TLS 1.3, the control plane
//! verified by its SPIFFE ID, and TCP_NODELAY.
//!
//! Without TCP_NODELAY, small unary calls would stall behind the peer's delayed ACK (~40 ms) and
//! measure the client rather than the control plane. The report compares it with
//! `mesh_control_plane::client::connect`, the shared test client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mesh_api::spiffe::SpiffeId;
use mesh_control_plane::client::{ClientError, SpiffeServerVerifier};
use mesh_control_plane::control_plane_id;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Channel, Endpoint};

/// A connected channel to `addr`, presenting `client_cert` when given.
pub(crate) async fn connect(
    addr: SocketAddr,
    roots: RootCertStore,
    trust_domain: &str,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Channel, ClientError> {
    let expected: SpiffeId = control_plane_id(trust_domain)
        .parse()
        .map_err(|e| rustls::Error::General(format!("{e}")))?;
    let verifier = Arc::new(SpiffeServerVerifier::fixed(Arc::new(roots), expected));
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
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
            tcp.set_nodelay(true)?;
            // Identity is checked by SPIFFE ID; the name only fills SNI.
            let name = ServerName::try_from("control-plane")
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(Endpoint::from_static("http://control-plane")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(service)
        .await?)
}
