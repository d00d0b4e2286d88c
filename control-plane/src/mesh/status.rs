//! What `/status` reports: versions, trust, and each service's watchers and instances with
//! what they acknowledged.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

use super::registry::Registry;
use super::shared::Replicas;
use crate::ca::{Authority, RootInfo};
use crate::config::MeshConfig;

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The latest snapshot version.
    pub version: u64,
    /// The snapshot version at which the configuration in force was applied.
    pub config_version: u64,
    /// The trusted roots.
    pub trust_bundle: Vec<RootInfo>,
    /// The signing root's id (`null` when an operator's intermediate signs).
    pub signer: Option<String>,
    /// Hex SHA-256 of the signing CA certificate.
    pub issuer_sha256: String,
    /// Every declared service.
    pub services: BTreeMap<String, ServiceStatus>,
    /// This replica and the leader, when replicas share the CA (Kubernetes mode); absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
}

/// One service in `/status`.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// Version of the service's current snapshot.
    pub snapshot_version: u64,
    /// Open watch streams.
    pub watchers: usize,
    /// The IP its callers' apps reach it at, for hosts files.
    pub virtual_address: Option<String>,
    /// Registered instances.
    pub instances: Vec<InstanceStatus>,
}

/// One instance in `/status`.
#[derive(Debug, Serialize)]
pub struct InstanceStatus {
    /// Chosen by the sidecar.
    pub instance_id: String,
    /// The address it registered (its sidecar's advertised address), where callers dial it;
    /// empty for a gateway, which no caller is sent to (see `gateway_listeners`).
    pub address: String,
    /// A gateway's listeners as it last reported them bound, where outside clients reach it;
    /// empty for any other instance.
    pub gateway_listeners: Vec<GatewayListenerStatus>,
    /// App version ("" means v1).
    pub version: String,
    /// Milliseconds since its last heartbeat or registration.
    pub last_heartbeat_ms: u64,
    /// The snapshot version it reported running on.
    pub applied_version: u64,
    /// The latest version it acknowledged on its watch stream.
    pub acked_version: u64,
    /// Whether it runs the service's current snapshot.
    pub acked: bool,
    /// The last snapshot it rejected, and why.
    pub rejected: Option<String>,
    /// Expiry of its certificate, seconds since the Unix epoch (0: not reported).
    pub certificate_not_after_unix: i64,
    /// Hex SHA-256 of the CA certificate that issued its certificate.
    pub issuer_sha256: String,
    /// The root id of that CA, when it is a root of the bundle.
    pub issuer_id: Option<String>,
    /// Endpoints it has ejected, as `destination/ip:port`.
    pub ejected_endpoints: Vec<String>,
    /// Why its sidecar finds the app down (it is then in no snapshot); `None` while it is up.
    pub app_down: Option<String>,
    /// Its sidecar's admin listener, where `meshctl stat` and `tap` read it; `None` when it
    /// did not report one.
    pub admin_address: Option<String>,
}

/// One listener of a gateway in `/status`.
#[derive(Debug, Serialize)]
pub struct GatewayListenerStatus {
    /// What its routes' `parentRefs` name it by.
    pub name: String,
    /// The address it is bound to.
    pub address: String,
}

/// The mesh's versions, for [`status`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Versions {
    /// The latest snapshot version.
    pub(super) latest: u64,
    /// The version at which the configuration in force was applied.
    pub(super) config: u64,
}

/// The `/status` document. `services` holds each declared service with its current snapshot
/// version and open watch streams; instances of other services are left out.
pub(super) fn status(
    versions: Versions,
    ca: &Authority,
    config: &MeshConfig,
    services: impl IntoIterator<Item = (String, u64, usize)>,
    registry: &Registry,
    now: Instant,
) -> Status {
    let mut services: BTreeMap<String, ServiceStatus> = services
        .into_iter()
        .map(|(name, snapshot_version, watchers)| {
            let virtual_address = config
                .services
                .get(&name)
                .and_then(|s| s.virtual_address)
                .map(|ip| ip.to_string());
            (
                name,
                ServiceStatus {
                    snapshot_version,
                    watchers,
                    virtual_address,
                    instances: Vec::new(),
                },
            )
        })
        .collect();
    for (key, record) in registry.instances() {
        let (service, id) = key;
        let Some(entry) = services.get_mut(service) else {
            continue;
        };
        let ack = registry.ack_of(key);
        let acked_version = ack.map_or(0, |a| a.acked_version);
        let current = entry.snapshot_version;
        entry.instances.push(InstanceStatus {
            instance_id: id.clone(),
            address: record.address.map(|a| a.to_string()).unwrap_or_default(),
            gateway_listeners: record
                .gateway_listeners
                .iter()
                .map(|(name, address)| GatewayListenerStatus {
                    name: name.clone(),
                    address: address.to_string(),
                })
                .collect(),
            version: record.version.clone(),
            last_heartbeat_ms: u64::try_from(now.duration_since(record.last_seen).as_millis())
                .unwrap_or(u64::MAX),
            applied_version: record.applied_version,
            acked_version,
            acked: record.applied_version == current || acked_version == current,
            rejected: ack
                .and_then(|a| a.rejected.as_ref())
                .map(|(v, e)| format!("version {v}: {e}")),
            certificate_not_after_unix: record.certificate_not_after_unix,
            issuer_sha256: record.issuer_sha256.clone(),
            issuer_id: ca.root_id_of(&record.issuer_sha256).map(str::to_owned),
            ejected_endpoints: record.ejected.clone(),
            app_down: (!record.app_down.is_empty()).then(|| record.app_down.clone()),
            admin_address: (!record.admin_address.is_empty()).then(|| record.admin_address.clone()),
        });
    }
    Status {
        version: versions.latest,
        config_version: versions.config,
        trust_bundle: ca.roots(),
        signer: ca.signer_id().map(str::to_owned),
        issuer_sha256: ca.issuer_sha256().to_owned(),
        services,
        replicas: None,
    }
}
