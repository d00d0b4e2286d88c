//! What injection needs to know about the mesh, beyond the pod: images, where the control
//! plane is, what to trust.

use crate::names;

/// The mesh-wide inputs of injection. Per-pod choices come from the pod's annotations.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The sidecar image, for both `mesh-init` and `mesh-proxy`.
    pub proxy_image: String,
    /// `imagePullPolicy` of both containers; none leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// `host:port` of the control plane's API, as pods reach it.
    pub control_plane: String,
    /// The trust domain of the mesh's SPIFFE IDs.
    pub trust_domain: String,
    /// The mesh's trust anchor (its `ca.pem`), which the sidecar verifies the control plane by.
    pub trust_anchor_pem: String,
    /// The UID the sidecar runs as, exempt from the redirect.
    pub proxy_uid: u32,
    /// The sidecar's log filter unless the pod's `mesh.local/log-level` says otherwise.
    pub log_level: String,
    /// The mesh's version, written into `mesh.local/injected`.
    pub version: String,
}

impl Settings {
    /// The defaults of a mesh installed as documented: this version's image, the control
    /// plane's Service in `mesh-system`, UID 65532, log level `info`.
    pub fn new(trust_domain: impl Into<String>, trust_anchor_pem: impl Into<String>) -> Self {
        Self {
            proxy_image: format!("{}:{}", names::PROXY_IMAGE_REPOSITORY, names::MESH_VERSION),
            image_pull_policy: None,
            control_plane: names::DEFAULT_CONTROL_PLANE.to_owned(),
            trust_domain: trust_domain.into(),
            trust_anchor_pem: trust_anchor_pem.into(),
            proxy_uid: names::DEFAULT_PROXY_UID,
            log_level: "info".to_owned(),
            version: names::MESH_VERSION.to_owned(),
        }
    }
}
