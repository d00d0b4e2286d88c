//! gRPC channels to the control plane over TLS 1.3.
//!
//! The control plane must present `spiffe://<trust-domain>/ns/mesh-system/sa/control-plane`.
//! Before this sidecar has a certificate, it trusts the configured trust anchor and presents
//! none (only `Identity.Certify` accepts that). Afterwards it uses its live identity: its current
//! certificate and the current trust bundle, so rotations apply to the next connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use mesh_api::proto::{CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE};

use crate::identity::{CredentialsError, SpiffeId};

/// Limit on TCP connect plus TLS handshake to the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The identity the control plane of `trust_domain` presents.
pub(crate) fn control_plane_id(trust_domain: &str) -> Result<SpiffeId, CredentialsError> {
    SpiffeId::for_service(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE).map_err(
        |e| CredentialsError::Pem {
            path: "trust_domain".into(),
            what: e.to_string(),
        },
    )
}

/// A lazily connected channel: it connects on first use and again after the connection
/// drops, each time with `tls`.
pub(crate) fn channel(address: SocketAddr, tls: Arc<ClientConfig>) -> Channel {
    let connector = tower::service_fn(move |_: http::Uri| {
        let tls = TlsConnector::from(tls.clone());
        async move {
            let connect = async {
                let tcp = TcpStream::connect(address).await?;
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
    });
    // The scheme only tells tonic how to frame requests; TLS is the connector's.
    Endpoint::from_static("http://control-plane")
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector_lazy(connector)
}
