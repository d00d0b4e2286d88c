//! gRPC channels to the control plane over TLS 1.3.
//!
//! The control plane must present `spiffe://<trust-domain>/ns/mesh-system/sa/control-plane`.
//! Before this sidecar has a certificate, it trusts the configured trust anchor and presents
//! none (only `Identity.Certify` accepts that). Afterwards it uses its live identity: its current
//! certificate and the current trust bundle, so rotations apply to the next connection. The
//! channel itself is `mesh_api::channel`'s, shared with the control plane's test client.

use std::sync::Arc;

use mesh_api::host_port::HostPort;
use rustls::ClientConfig;
use tonic::transport::Channel;

use crate::identity::{CredentialsError, SpiffeId};

/// The identity the control plane of `trust_domain` presents.
pub(crate) fn control_plane_id(trust_domain: &str) -> Result<SpiffeId, CredentialsError> {
    SpiffeId::control_plane(trust_domain).map_err(|e| CredentialsError::Pem {
        path: "trust_domain".into(),
        what: e.to_string(),
    })
}

/// A lazily connected channel: it connects on first use and again after the connection
/// drops, each time with `tls` (and a name resolved again).
pub(crate) fn channel(address: HostPort, tls: Arc<ClientConfig>) -> Channel {
    mesh_api::channel::lazy(address, tls)
}
