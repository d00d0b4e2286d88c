//! The state of the mesh: configuration, CA, registry, and the snapshot each service's sidecars
//! run on.
//!
//! Every change (configuration, instance registered or expired, trust bundle or signer)
//! recomputes each service's snapshot. Only services whose snapshot content changed get a new
//! one, stamped with the next global version, so a change in an unrelated service never reaches
//! a sidecar. One immutable `Arc<Snapshot>` per service is shared through a `watch` channel by
//! all of its watchers; a slow watcher skips straight to the latest.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use mesh_api::proto::v1;
use mesh_api::spiffe::SpiffeId;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ca::{Authority, RootInfo, RotationError};
use crate::config::MeshConfig;
use crate::metrics::Metrics;

/// Instances are keyed by service, then instance id, so one service can never replace
/// another's instance.
type InstanceKey = (String, String);

/// The shared state.
#[derive(Debug)]
pub(crate) struct Mesh {
    state: RwLock<State>,
    /// The CA, for the TLS layer (server certificate and client verifier follow it).
    ca_tx: watch::Sender<Arc<Authority>>,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Serializes rotation steps, which write files.
    rotation: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct State {
    config: Arc<MeshConfig>,
    config_version: u64,
    ca: Arc<Authority>,
    version: u64,
    registry: BTreeMap<InstanceKey, InstanceRecord>,
    /// Acknowledgements from watch streams, kept apart so they count before Register too.
    acks: HashMap<InstanceKey, WatchAck>,
    published: BTreeMap<String, watch::Sender<Arc<v1::Snapshot>>>,
    /// The first snapshot version whose bundle holds each root.
    root_since: HashMap<String, u64>,
}

#[derive(Debug, Clone)]
struct InstanceRecord {
    address: SocketAddr,
    version: String,
    last_seen: Instant,
    applied_version: u64,
    certificate_not_after_unix: i64,
    issuer_sha256: String,
    ejected: Vec<String>,
    /// Why its sidecar finds the app down; empty while it is up (or not probed).
    app_down: String,
}

#[derive(Debug, Default, Clone)]
struct WatchAck {
    streams: usize,
    acked_version: u64,
    rejected: Option<(u64, String)>,
}

/// Why a registry call was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    /// The instance names another service than the caller's certificate.
    #[error("the certificate is for service {caller}, but the instance is for service {claimed}")]
    WrongService {
        /// From the certificate.
        caller: String,
        /// From the request.
        claimed: String,
    },
    /// The service is not declared in the configuration.
    #[error("service {0:?} is not declared in the configuration")]
    Undeclared(String),
    /// A field is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// Why an admin CA operation was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// The operation is unsafe now; `force` overrides.
    #[error("{0}")]
    Conflict(String),
    /// No such root.
    #[error("{0}")]
    NotFound(String),
    /// The CA refused.
    #[error("{0}")]
    Rotation(#[from] RotationError),
}

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
}

/// One service in `/status`.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// Version of the service's current snapshot.
    pub snapshot_version: u64,
    /// Open watch streams.
    pub watchers: usize,
    /// Registered instances.
    pub instances: Vec<InstanceStatus>,
}

/// One instance in `/status`.
#[derive(Debug, Serialize)]
pub struct InstanceStatus {
    /// Chosen by the sidecar.
    pub instance_id: String,
    /// Its inbound address.
    pub address: String,
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
}

// === impl Mesh ===

impl Mesh {
    /// Builds the state and publishes the first snapshots at `first_version`.
    pub(crate) fn new(
        config: MeshConfig,
        ca: Authority,
        metrics: Arc<Metrics>,
        first_version: u64,
    ) -> Self {
        let ca = Arc::new(ca);
        let root_since = ca
            .roots()
            .into_iter()
            .map(|r| (r.id, first_version))
            .collect();
        let mut state = State {
            config: Arc::new(config),
            config_version: first_version,
            ca: ca.clone(),
            version: first_version.saturating_sub(1),
            registry: BTreeMap::new(),
            acks: HashMap::new(),
            published: BTreeMap::new(),
            root_since,
        };
        state.republish(&metrics);
        state.version = state.version.max(first_version);
        let (ca_tx, _) = watch::channel(ca);
        Self {
            state: RwLock::new(state),
            ca_tx,
            metrics,
            started: Instant::now(),
            rotation: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> Arc<MeshConfig> {
        self.read().config.clone()
    }

    /// The CA in force.
    pub(crate) fn authority(&self) -> Arc<Authority> {
        self.read().ca.clone()
    }

    /// Follows CA changes (bundle or signer).
    pub(crate) fn watch_authority(&self) -> watch::Receiver<Arc<Authority>> {
        self.ca_tx.subscribe()
    }

    /// The latest snapshot version.
    pub(crate) fn version(&self) -> u64 {
        self.read().version
    }

    /// Puts a validated configuration in force.
    pub(crate) fn apply_config(&self, config: MeshConfig) {
        let mut state = self.write();
        state.config = Arc::new(config);
        state.republish(&self.metrics);
        state.config_version = state.version;
    }

    // === registry ===

    /// Adds or replaces an instance of the caller's service.
    pub(crate) fn register(
        &self,
        caller: &str,
        instance: &v1::Instance,
    ) -> Result<(Duration, Duration), RegistryError> {
        if instance.service != caller {
            return Err(RegistryError::WrongService {
                caller: caller.to_owned(),
                claimed: instance.service.clone(),
            });
        }
        if instance.instance_id.is_empty() || instance.instance_id.len() > 256 {
            return Err(RegistryError::Invalid(
                "instance_id must be 1 to 256 characters".into(),
            ));
        }
        let address: SocketAddr = instance.address.parse().map_err(|_| {
            RegistryError::Invalid(format!("address {:?} is not an ip:port", instance.address))
        })?;
        if !instance.version.is_empty() && mesh_api::spiffe::check_label(&instance.version).is_err()
        {
            return Err(RegistryError::Invalid(format!(
                "version {:?} is not a DNS label",
                instance.version
            )));
        }
        let mut state = self.write();
        if !state.config.services.contains_key(caller) {
            return Err(RegistryError::Undeclared(caller.to_owned()));
        }
        let key = (caller.to_owned(), instance.instance_id.clone());
        let previous = state.registry.get(&key);
        let record = InstanceRecord {
            address,
            version: instance.version.clone(),
            last_seen: Instant::now(),
            applied_version: previous.map_or(0, |p| p.applied_version),
            certificate_not_after_unix: previous.map_or(0, |p| p.certificate_not_after_unix),
            issuer_sha256: previous
                .map(|p| p.issuer_sha256.clone())
                .unwrap_or_default(),
            ejected: previous.map(|p| p.ejected.clone()).unwrap_or_default(),
            app_down: instance.app_down.clone(),
        };
        state.registry.insert(key, record);
        self.metrics
            .registered_instances
            .set(i64::try_from(state.registry.len()).unwrap_or(i64::MAX));
        state.republish(&self.metrics);
        let registry = state.config.registry;
        Ok((registry.heartbeat_interval, registry.lease))
    }

    /// Renews an instance's lease and records what it reports; false when it is unknown.
    pub(crate) fn heartbeat(&self, caller: &str, beat: &v1::HeartbeatRequest) -> bool {
        let mut state = self.write();
        if !state.config.services.contains_key(caller) {
            // The service was removed from the configuration: let its instances lapse.
            return false;
        }
        let key = (caller.to_owned(), beat.instance_id.clone());
        let Some(record) = state.registry.get_mut(&key) else {
            return false;
        };
        record.last_seen = Instant::now();
        record.applied_version = beat.applied_version;
        record.certificate_not_after_unix = beat.certificate_not_after_unix;
        record.issuer_sha256 = beat.certificate_issuer_sha256.clone();
        record.ejected = beat.ejected_endpoints.clone();
        if record.app_down == beat.app_down {
            return true;
        }
        if beat.app_down.is_empty() {
            tracing::info!(service = %caller, instance = %beat.instance_id, "app up again: back in snapshots");
        } else {
            tracing::info!(service = %caller, instance = %beat.instance_id, reason = %beat.app_down, "app down: out of snapshots");
        }
        record.app_down = beat.app_down.clone();
        state.republish(&self.metrics);
        true
    }

    /// Removes one instance of `caller` at its request; false when it was not registered.
    pub(crate) fn deregister(&self, caller: &str, instance_id: &str) -> bool {
        let mut state = self.write();
        let Some(record) = state
            .registry
            .remove(&(caller.to_owned(), instance_id.to_owned()))
        else {
            return false;
        };
        tracing::info!(service = %caller, instance = %instance_id, address = %record.address, "deregistered");
        self.metrics
            .registered_instances
            .set(i64::try_from(state.registry.len()).unwrap_or(i64::MAX));
        state.republish(&self.metrics);
        true
    }

    /// Removes instances whose lease expired; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let mut state = self.write();
        let lease = state.config.registry.lease;
        let now = Instant::now();
        let before = state.registry.len();
        state.registry.retain(|(service, id), record| {
            let live = now.duration_since(record.last_seen) < lease;
            if !live {
                tracing::info!(%service, instance = %id, address = %record.address, "lease expired");
            }
            live
        });
        let removed = before - state.registry.len();
        if removed > 0 {
            self.metrics.lease_expirations.inc_by(removed as u64);
            self.metrics
                .registered_instances
                .set(i64::try_from(state.registry.len()).unwrap_or(i64::MAX));
            state.republish(&self.metrics);
        }
        removed
    }

    // === discovery ===

    /// The snapshots of `service`, or `None` when it is not declared.
    pub(crate) fn subscribe(&self, service: &str) -> Option<watch::Receiver<Arc<v1::Snapshot>>> {
        self.read()
            .published
            .get(service)
            .map(watch::Sender::subscribe)
    }

    /// Notes a watch stream opening (`true`) or closing for an instance.
    pub(crate) fn watch_stream(&self, service: &str, instance_id: &str, open: bool) {
        let mut state = self.write();
        let key = (service.to_owned(), instance_id.to_owned());
        if open {
            state.acks.entry(key).or_default().streams += 1;
        } else if let Some(ack) = state.acks.get_mut(&key) {
            ack.streams = ack.streams.saturating_sub(1);
            if ack.streams == 0 {
                state.acks.remove(&key);
            }
        }
    }

    /// Records an acknowledgement (or, with `error`, a rejection) of `version`.
    pub(crate) fn ack(&self, service: &str, instance_id: &str, version: u64, error: &str) {
        let mut state = self.write();
        let key = (service.to_owned(), instance_id.to_owned());
        let ack = state.acks.entry(key).or_default();
        if error.is_empty() {
            ack.acked_version = ack.acked_version.max(version);
        } else {
            ack.rejected = Some((version, error.to_owned()));
        }
    }

    // === CA rotation ===

    /// Generates a new root and adds it to the trust bundle of every snapshot.
    pub(crate) async fn add_root(&self) -> Result<String, AdminError> {
        let _guard = self.rotation.lock().await;
        let ca = self.authority();
        let (next, id) = tokio::task::spawn_blocking(move || ca.add_root())
            .await
            .map_err(|e| AdminError::Conflict(format!("root generation failed: {e}")))??;
        tracing::info!(root = %id, "added a root to the trust bundle");
        self.set_authority(next, Some(&id));
        Ok(id)
    }

    /// Makes root `id` the signer, once every live instance runs a snapshot that trusts it.
    pub(crate) async fn use_root(&self, id: &str, force: bool) -> Result<(), AdminError> {
        let _guard = self.rotation.lock().await;
        let ca = self.authority();
        if !ca.roots().iter().any(|r| r.id == id) {
            return Err(AdminError::NotFound(format!(
                "no root {id} in the trust bundle"
            )));
        }
        if !force {
            self.warmed_up()?;
            let state = self.read();
            let since = state.root_since.get(id).copied().unwrap_or(0);
            let behind: Vec<String> = state
                .live()
                .filter_map(|(key, record)| {
                    let ack = state.acks.get(key).map_or(0, |a| a.acked_version);
                    let applied = ack.max(record.applied_version);
                    (applied < since).then(|| format!("{}/{} (at {applied})", key.0, key.1))
                })
                .collect();
            if !behind.is_empty() {
                return Err(AdminError::Conflict(format!(
                    "{} instance(s) have not acknowledged a snapshot (version {since} or later) \
                     that trusts root {id}: {}; wait for them, or force",
                    behind.len(),
                    sample(&behind)
                )));
            }
        }
        let id_owned = id.to_owned();
        let next = tokio::task::spawn_blocking(move || ca.use_root(&id_owned))
            .await
            .map_err(|e| AdminError::Conflict(format!("signer change failed: {e}")))??;
        tracing::info!(root = %id, force, "root is now the signer");
        self.set_authority(next, None);
        Ok(())
    }

    /// Removes root `id` from the trust bundle, once no live instance holds a certificate it
    /// issued.
    pub(crate) async fn remove_root(&self, id: &str, force: bool) -> Result<(), AdminError> {
        let _guard = self.rotation.lock().await;
        let ca = self.authority();
        let Some(root) = ca.roots().into_iter().find(|r| r.id == id) else {
            return Err(AdminError::NotFound(format!(
                "no root {id} in the trust bundle"
            )));
        };
        if root.signer {
            return Err(AdminError::Conflict(
                RotationError::IsSigner(id.to_owned()).to_string(),
            ));
        }
        if !force {
            self.warmed_up()?;
            let state = self.read();
            let holders: Vec<String> = state
                .live()
                .filter(|(_, record)| record.issuer_sha256 == root.sha256)
                .map(|(key, _)| format!("{}/{}", key.0, key.1))
                .collect();
            if !holders.is_empty() {
                return Err(AdminError::Conflict(format!(
                    "{} instance(s) still hold a certificate issued by root {id}: {}; wait for \
                     them to renew, or force",
                    holders.len(),
                    sample(&holders)
                )));
            }
        }
        let id_owned = id.to_owned();
        let next = tokio::task::spawn_blocking(move || ca.remove_root(&id_owned))
            .await
            .map_err(|e| AdminError::Conflict(format!("root removal failed: {e}")))??;
        tracing::info!(root = %id, force, "removed a root from the trust bundle");
        self.set_authority(next, None);
        Ok(())
    }

    /// How long the registry may still be refilling after a start: until a lease has passed,
    /// live sidecars may not have registered again.
    pub(crate) fn warming_left(&self) -> Option<Duration> {
        self.config()
            .registry
            .lease
            .checked_sub(self.started.elapsed())
            .filter(|left| !left.is_zero())
    }

    /// After a restart the registry is empty until sidecars register again; until a lease has
    /// passed, it cannot say who trusts what.
    fn warmed_up(&self) -> Result<(), AdminError> {
        let lease = self.config().registry.lease;
        let up = self.started.elapsed();
        if up < lease {
            return Err(AdminError::Conflict(format!(
                "the control plane started {:.1}s ago and sidecars may still be registering \
                 again; retry after the lease ({}), or force",
                up.as_secs_f64(),
                humantime::format_duration(lease)
            )));
        }
        Ok(())
    }

    fn set_authority(&self, ca: Authority, added: Option<&str>) {
        let ca = Arc::new(ca);
        let mut state = self.write();
        state.ca = ca.clone();
        state.republish(&self.metrics);
        if let Some(id) = added {
            let version = state.version;
            state.root_since.insert(id.to_owned(), version);
        }
        let current: Vec<String> = ca.roots().into_iter().map(|r| r.id).collect();
        state.root_since.retain(|id, _| current.contains(id));
        drop(state);
        self.ca_tx.send_replace(ca);
    }

    // === status ===

    /// The `/status` document.
    pub(crate) fn status(&self) -> Status {
        let state = self.read();
        let now = Instant::now();
        let ca = &state.ca;
        let mut services: BTreeMap<String, ServiceStatus> = state
            .published
            .iter()
            .map(|(name, tx)| {
                (
                    name.clone(),
                    ServiceStatus {
                        snapshot_version: tx.borrow().version,
                        watchers: tx.receiver_count(),
                        instances: Vec::new(),
                    },
                )
            })
            .collect();
        for ((service, id), record) in &state.registry {
            let Some(entry) = services.get_mut(service) else {
                continue;
            };
            let ack = state.acks.get(&(service.clone(), id.clone()));
            let acked_version = ack.map_or(0, |a| a.acked_version);
            let current = entry.snapshot_version;
            entry.instances.push(InstanceStatus {
                instance_id: id.clone(),
                address: record.address.to_string(),
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
            });
        }
        Status {
            version: state.version,
            config_version: state.config_version,
            trust_bundle: ca.roots(),
            signer: ca.signer_id().map(str::to_owned),
            issuer_sha256: ca.issuer_sha256().to_owned(),
            services,
        }
    }
}

fn sample(items: &[String]) -> String {
    let mut text = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        text.push_str(", ...");
    }
    text
}

// === impl State ===

impl State {
    fn live(&self) -> impl Iterator<Item = (&InstanceKey, &InstanceRecord)> {
        let lease = self.config.registry.lease;
        let now = Instant::now();
        self.registry
            .iter()
            .filter(move |(_, r)| now.duration_since(r.last_seen) < lease)
    }

    /// Recomputes every service's snapshot; those that changed get the next version.
    fn republish(&mut self, metrics: &Metrics) {
        let mut changed = Vec::new();
        for name in self.config.services.keys() {
            let next = self.snapshot(name);
            let same = self.published.get(name).is_some_and(|tx| {
                let current = tx.borrow();
                let mut unversioned = (**current).clone();
                unversioned.version = 0;
                unversioned == next
            });
            if !same {
                changed.push((name.clone(), next));
            }
        }
        // Dropping a removed service's channel ends its watch streams.
        let declared = &self.config.services;
        self.published.retain(|name, _| declared.contains_key(name));
        if changed.is_empty() {
            return;
        }
        self.version += 1;
        metrics
            .snapshot_version
            .set(i64::try_from(self.version).unwrap_or(i64::MAX));
        for (name, mut snapshot) in changed {
            snapshot.version = self.version;
            let snapshot = Arc::new(snapshot);
            match self.published.get(&name) {
                Some(tx) => {
                    tx.send_replace(snapshot);
                }
                None => {
                    self.published.insert(name, watch::channel(snapshot).0);
                }
            }
        }
    }

    /// The snapshot of `service`, unversioned.
    fn snapshot(&self, service: &str) -> v1::Snapshot {
        let config = &self.config;
        let Some(svc) = config.services.get(service) else {
            return v1::Snapshot::default();
        };
        let destinations = svc
            .calls
            .iter()
            .filter_map(|name| config.services.get(name))
            .map(|dest| v1::Destination {
                name: dest.name.clone(),
                identity: SpiffeId::for_service(
                    &config.trust_domain,
                    &config.namespace,
                    &dest.name,
                )
                .map(|id| id.to_string())
                .unwrap_or_default(),
                policy: Some(v1::Policy::from(&dest.policy)),
                backends: self.backends(dest),
            })
            .collect();
        v1::Snapshot {
            version: 0,
            trust_bundle_der: self.ca.trust_bundle_der(),
            issuer_sha256: self.ca.issuer_sha256().to_owned(),
            authorization: Some(v1::Authorization::from(&svc.authorization)),
            destinations,
            certificate_lifetime_secs: config.certificate_lifetime.as_secs(),
        }
    }

    fn backends(&self, dest: &crate::config::ServiceConfig) -> Vec<v1::Backend> {
        let instances: Vec<(&String, &InstanceRecord)> = self
            .registry
            .range((dest.name.clone(), String::new())..)
            .take_while(|((service, _), _)| service == &dest.name)
            // An instance whose app is down gets no traffic until its sidecar says it is up.
            .filter(|(_, record)| record.app_down.is_empty())
            .map(|((_, id), record)| (id, record))
            .collect();
        let endpoint = |(id, record): &(&String, &InstanceRecord)| v1::Endpoint {
            address: record.address.to_string(),
            instance_id: (*id).clone(),
        };
        match &dest.traffic_split {
            None => vec![v1::Backend {
                version: String::new(),
                weight: 1,
                endpoints: instances.iter().map(endpoint).collect(),
            }],
            Some(split) => split
                .iter()
                .map(|(version, weight)| v1::Backend {
                    version: version.clone(),
                    weight: *weight,
                    endpoints: instances
                        .iter()
                        .filter(|(_, r)| {
                            let v = if r.version.is_empty() {
                                "v1"
                            } else {
                                &r.version
                            };
                            v == version
                        })
                        .map(endpoint)
                        .collect(),
                })
                .collect(),
        }
    }
}
