//! What `meshctl install` takes: images, replicas, trust domain, and where the root comes from.

use std::path::PathBuf;

pub use mesh_kube::names::MESH_VERSION;
use mesh_kube::names::{CONTROL_PLANE_IMAGE_REPOSITORY, PROXY_IMAGE_REPOSITORY};

/// The default control plane image.
pub fn default_control_plane_image() -> String {
    format!("{CONTROL_PLANE_IMAGE_REPOSITORY}:{MESH_VERSION}")
}

/// The default proxy image (the `sidecar` binary as entrypoint, with nft for `redirect`).
pub fn default_proxy_image() -> String {
    format!("{PROXY_IMAGE_REPOSITORY}:{MESH_VERSION}")
}

/// Everything the manifests depend on.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The control plane's image.
    pub control_plane_image: String,
    /// The image injected sidecars run.
    pub proxy_image: String,
    /// Control plane replicas.
    pub replicas: u16,
    /// The trust domain of every identity.
    pub trust_domain: String,
    /// Where the mesh's root comes from.
    pub root: RootSource,
}

/// Where the mesh's root comes from.
#[derive(Clone, Debug)]
pub enum RootSource {
    /// A new root, made for this install.
    Generate,
    /// An existing root: its certificate and private key, PEM.
    Files {
        /// The certificate.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            control_plane_image: default_control_plane_image(),
            proxy_image: default_proxy_image(),
            replicas: 1,
            trust_domain: "mesh.local".to_owned(),
            root: RootSource::Generate,
        }
    }
}
