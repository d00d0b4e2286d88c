//! The services the control plane declares and their virtual addresses, from its `/status`:
//! what a namespace's hosts file lists.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::Method;
use mesh_control_plane::admin_client;
use serde::Deserialize;

/// Why `/status` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AddressesError {
    /// No answer.
    #[error("the control plane's admin endpoint {addr} does not answer ({reason})")]
    Down {
        /// Its admin address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// An answer that is not the document.
    #[error("the control plane at {addr} answered /status with {what}")]
    Answer {
        /// Its admin address.
        addr: SocketAddr,
        /// What was wrong.
        what: String,
    },
}

#[derive(Deserialize)]
struct StatusDoc {
    #[serde(default)]
    services: BTreeMap<String, ServiceDoc>,
}

#[derive(Deserialize)]
struct ServiceDoc {
    #[serde(default)]
    virtual_address: Option<String>,
}

/// Every declared service, and its virtual address when it has one.
pub async fn services(
    admin: SocketAddr,
) -> Result<BTreeMap<String, Option<String>>, AddressesError> {
    let (status, body) = admin_client::request(admin, Method::GET, "/status")
        .await
        .map_err(|e| AddressesError::Down {
            addr: admin,
            reason: crate::stat::short_reason(&e),
        })?;
    if !status.is_success() {
        return Err(AddressesError::Answer {
            addr: admin,
            what: format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
        });
    }
    let doc: StatusDoc = serde_json::from_slice(&body).map_err(|e| AddressesError::Answer {
        addr: admin,
        what: format!("an unreadable document: {e}"),
    })?;
    Ok(doc
        .services
        .into_iter()
        .map(|(name, s)| (name, s.virtual_address))
        .collect())
}

/// The services of `services` that have a virtual address.
pub fn with_address(services: BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
    services
        .into_iter()
        .filter_map(|(name, addr)| Some((name, addr?)))
        .collect()
}
