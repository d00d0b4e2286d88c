//! What `meshctl run` checks before it changes anything: root, the programs it runs, and that
//! the control plane answers and knows the service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::Method;
use mesh_control_plane::admin_client;
use serde::Deserialize;

use crate::addresses::AddressesError;

/// A program `meshctl run` needs, and the Debian package that has it.
pub const TOOLS: [(&str, &str); 3] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("setpriv", "util-linux"),
];

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Not root.
    #[error(
        "root is needed: meshctl run creates a network namespace, a veth pair and a bridge, \
         and installs nftables rules in the namespace (run it with sudo)"
    )]
    NotRoot,
    /// A program is missing.
    #[error(
        "`{program}` was not found on PATH: install it (Debian and Ubuntu: apt-get install {package})"
    )]
    MissingTool {
        /// The program.
        program: &'static str,
        /// Its package.
        package: &'static str,
    },
    /// The control plane did not answer.
    #[error(
        "the control plane's admin endpoint {addr} does not answer ({reason}): start the \
         control plane, or pass its admin address with --admin"
    )]
    ControlPlaneDown {
        /// `--admin`.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// It answered something unexpected.
    #[error("the control plane at {addr} answered {path} with {what}")]
    ControlPlaneAnswer {
        /// `--admin`.
        addr: SocketAddr,
        /// The path asked.
        path: &'static str,
        /// What was wrong.
        what: String,
    },
    /// The service is not declared.
    #[error(
        "the control plane knows no service {service:?}: declare it in the control plane's \
         configuration directory (services/{service}.yaml), or pick one of: {known}"
    )]
    UnknownService {
        /// `--service`.
        service: String,
        /// The declared services.
        known: String,
    },
    /// A file of the control plane's state directory is missing.
    #[error(
        "cannot read {}: {source} (pass the control plane's state directory with --state-dir)",
        path.display()
    )]
    StateDir {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Fails unless this process runs as root.
pub fn root() -> Result<(), CheckError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(CheckError::NotRoot)
    }
}

/// Fails naming the first of [`TOOLS`] not on `PATH`.
pub fn tools() -> Result<(), CheckError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (program, package) in TOOLS {
        let found = std::env::split_paths(&path).any(|dir| dir.join(program).is_file());
        if !found {
            return Err(CheckError::MissingTool { program, package });
        }
    }
    Ok(())
}

/// What `meshctl run` needs from the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshView {
    /// The trust domain of every identity.
    pub trust_domain: String,
    /// Every declared service, and its virtual address when it has one.
    pub services: BTreeMap<String, Option<String>>,
}

impl MeshView {
    /// The services with a virtual address: the hosts file's entries.
    pub fn addresses(&self) -> BTreeMap<String, String> {
        crate::addresses::with_address(self.services.clone())
    }

    /// Fails unless `service` is declared.
    pub fn require(&self, service: &str) -> Result<(), CheckError> {
        if self.services.contains_key(service) {
            return Ok(());
        }
        let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
        Err(CheckError::UnknownService {
            service: service.to_owned(),
            known: if known.is_empty() {
                "(none declared)".to_owned()
            } else {
                known.join(", ")
            },
        })
    }
}

#[derive(Deserialize)]
struct ConfigDoc {
    trust_domain: String,
}

async fn get<T: serde::de::DeserializeOwned>(
    admin: SocketAddr,
    path: &'static str,
) -> Result<T, CheckError> {
    let (status, body) = admin_client::request(admin, Method::GET, path)
        .await
        .map_err(|e| CheckError::ControlPlaneDown {
            addr: admin,
            reason: crate::stat::short_reason(&e),
        })?;
    if !status.is_success() {
        return Err(CheckError::ControlPlaneAnswer {
            addr: admin,
            path,
            what: format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
        });
    }
    serde_json::from_slice(&body).map_err(|e| CheckError::ControlPlaneAnswer {
        addr: admin,
        path,
        what: format!("an unreadable document: {e}"),
    })
}

/// Reads the trust domain (`/config`) and the services and their virtual addresses
/// (`/status`) from the control plane's admin endpoint.
pub async fn mesh_view(admin: SocketAddr) -> Result<MeshView, CheckError> {
    let config: ConfigDoc = get(admin, "/config").await?;
    let status = services(admin).await?;
    Ok(MeshView {
        trust_domain: config.trust_domain,
        services: status,
    })
}

/// The declared services and their virtual addresses, from `/status`.
pub async fn services(admin: SocketAddr) -> Result<BTreeMap<String, Option<String>>, CheckError> {
    crate::addresses::services(admin)
        .await
        .map_err(|e| match e {
            AddressesError::Down { addr, reason } => CheckError::ControlPlaneDown { addr, reason },
            AddressesError::Answer { addr, what } => CheckError::ControlPlaneAnswer {
                addr,
                path: "/status",
                what,
            },
        })
}

/// Reads a file of the control plane's state directory.
pub fn state_file(state_dir: &Path, relative: &Path) -> Result<Vec<u8>, CheckError> {
    let path = state_dir.join(relative);
    std::fs::read(&path).map_err(|source| CheckError::StateDir { path, source })
}
