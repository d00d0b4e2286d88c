//! Why the manifests could not be made.

use std::path::PathBuf;

/// Why the manifests could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A root file could not be read.
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The root given is not a usable CA certificate and key.
    #[error("{flag} {path}: {message}")]
    BadRoot {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The root could not be made or loaded (e.g. a bad trust domain).
    #[error("the mesh's root: {0}")]
    Ca(#[from] mesh_control_plane::ca::CertError),
    /// A flag's value cannot be used.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The manifests could not be written as YAML.
    #[error("cannot write the manifests as YAML: {0}")]
    Yaml(String),
}
