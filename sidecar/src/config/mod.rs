//! The bootstrap file: one sidecar's identity, listeners, local app and destinations.
//!
//! Read in two layers. The serde types of `schema.rs` mirror the YAML exactly and reject unknown
//! fields; their error carries the field path (`destinations.inventory.endpoints[1]`). Then
//! `validate.rs` builds the [`Config`] of `runtime.rs`, collecting *every* error with its path,
//! so an operator fixes a file in one pass. Values users write as text (addresses, durations,
//! SPIFFE IDs) stay text in the schema so that all their errors are collected by validation
//! rather than the first one aborting the parse.
//!
//! The YAML comes from a file, or from an environment variable that holds it
//! (`MESH_SIDECAR_BOOTSTRAP`, what a Kubernetes pod spec sets, expanding `$(POD_IP)` in it).
//! Relative file paths (`tls.*`, `control_plane.*`) are relative to the directory of the
//! bootstrap file, or to the working directory for a bootstrap given in a variable.
//!
//! A sidecar gets its certificate and destinations in one of two ways: from files (`tls` and
//! `destinations`), or from the control plane (`control_plane`), which issues the certificate
//! from a CSR and pushes destinations, policy and authorization as they change.

mod limits;
mod parse;
mod runtime;
mod schema;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use mesh_api::policy;
pub use mesh_api::validate::ConfigError;
use mesh_api::validate::Errors;

pub use self::policy::{
    Backoff, BreakerPolicy, Budget, DestinationPolicy, LoadBalancer, RetryOn, RetryPolicy,
};
#[cfg(test)]
use self::runtime::DEFAULT_CONNECT_TIMEOUT;
pub use self::runtime::{
    AdminLimits, Advertise, AppHealthConfig, AppLimits, Config, ControlPlaneConfig, DEFAULT_ADMIN,
    DEFAULT_INBOUND, DEFAULT_OUTBOUND, Destination, Http2Limits, HttpListenerLimits, InboundConfig,
    InboundLimits, Limits, ListenAddrs, NotDialable, OutboundConfig, TcpDestination, TlsPaths,
    TrustAnchor, UnknownDestination,
};
use self::schema::File;
use self::validate::validate;
use crate::identity::Credentials;
pub use mesh_api::gateway::{
    CertificatePaths, GatewayClients, GatewayConfig, GatewayListener, GatewayRoute, GatewayRule,
    Hostname,
};

/// Every problem found in a bootstrap.
#[derive(Debug)]
pub struct InvalidConfig {
    /// Where the bootstrap came from, when known.
    pub origin: Option<Origin>,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

/// Where a bootstrap's YAML came from, named in its errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// An environment variable holding the YAML itself.
    Variable(&'static str),
}

// === impl Config ===

impl Config {
    /// Reads and validates a bootstrap file.
    pub fn from_file(path: &Path) -> Result<Self, InvalidConfig> {
        let origin = Origin::File(path.to_owned());
        let text = std::fs::read_to_string(path).map_err(|e| InvalidConfig {
            origin: Some(origin.clone()),
            errors: vec![ConfigError {
                path: String::new(),
                message: format!("cannot read file: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_origin(&text, base, origin)
    }

    /// Validates the bootstrap YAML held by the environment variable `name`; relative paths
    /// are resolved against the working directory.
    pub fn from_variable(name: &'static str, text: &str) -> Result<Self, InvalidConfig> {
        // Unreadable, paths stay relative, which opening them resolves the same way.
        let base = std::env::current_dir().unwrap_or_default();
        Self::from_origin(text, &base, Origin::Variable(name))
    }

    /// As [`Config::from_yaml`], its errors naming `origin`.
    fn from_origin(text: &str, base: &Path, origin: Origin) -> Result<Self, InvalidConfig> {
        // The YAML parser calls the text `<input>`; name the file or variable instead.
        let name = origin.to_string();
        Self::from_yaml(text, base).map_err(|e| InvalidConfig {
            errors: e
                .errors
                .into_iter()
                .map(|mut err| {
                    err.message = err.message.replace("<input>", &name);
                    err
                })
                .collect(),
            origin: Some(origin),
        })
    }

    /// Parses and validates YAML; relative paths are resolved against `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Self, InvalidConfig> {
        let file: File = parse::file(text).map_err(|errors| InvalidConfig {
            origin: None,
            errors,
        })?;
        let mut errors = Errors::default();
        let config = validate(file, base, &mut errors);
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(InvalidConfig {
                origin: None,
                errors: errors.into_vec(),
            }),
        }
    }

    /// Loads the certificate, key and trust bundle this config names; `None` when the
    /// control plane issues them.
    pub fn load_credentials(&self) -> Result<Option<Credentials>, InvalidConfig> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        Credentials::load(&self.identity, &tls.cert, &tls.key, &tls.trust_bundle)
            .map(Some)
            .map_err(|e| InvalidConfig {
                origin: None,
                errors: vec![ConfigError {
                    path: "tls".into(),
                    message: e.to_string(),
                }],
            })
    }
}

// === impl InvalidConfig ===

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "invalid configuration in {origin}:")?,
            None => write!(f, "invalid configuration:")?,
        }
        for e in &self.errors {
            if e.path.is_empty() {
                write!(f, "\n  {}", e.message)?;
            } else {
                write!(f, "\n  {}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for InvalidConfig {}

// === impl Origin ===

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => path.display().fmt(f),
            Origin::Variable(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests;
