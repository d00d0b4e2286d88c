//! The state of the mesh: configuration, CA, registry, and the snapshot each service's sidecars
//! run on.
//!
//! Every change (configuration, instance registered or expired, trust bundle or signer)
//! recomputes each service's snapshot. Only services whose snapshot content changed get a new
//! one, stamped with the next global version, so a change in an unrelated service never reaches
//! a sidecar. One immutable `Arc<Snapshot>` per service is shared through a `watch` channel by
//! all of its watchers; a slow watcher skips straight to the latest.
//!
//! - `registry`: instances, leases, heartbeats and acknowledgements.
//! - `snapshot`: the pure function from configuration, trust and registry to snapshots.
//! - `rotation`: when a root may become the signer or leave the bundle.
//! - `status`: the `/status` document.
//!
//! This module holds the [`Mesh`] type: one lock over the state, and the version stamping.

mod registry;
mod rotation;
mod snapshot;
mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use mesh_api::proto::v1;
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use self::registry::RegistryError;
use self::registry::{Beat, Registry};
pub(crate) use self::rotation::AdminError;
use self::rotation::RootsSince;
use self::snapshot::Trust;
pub use self::status::{InstanceStatus, ServiceStatus, Status};
use crate::ca::{Authority, RotationError};
use crate::config::MeshConfig;
use crate::metrics::Metrics;

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
    registry: Registry,
    published: BTreeMap<String, watch::Sender<Arc<v1::Snapshot>>>,
    root_since: RootsSince,
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
        let root_since = RootsSince::new(ca.roots(), first_version);
        let mut state = State {
            config: Arc::new(config),
            config_version: first_version,
            ca: ca.clone(),
            version: first_version.saturating_sub(1),
            registry: Registry::default(),
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
        let address = registry::check(caller, instance)?;
        let mut state = self.write();
        if !state.config.services.contains_key(caller) {
            return Err(RegistryError::Undeclared(caller.to_owned()));
        }
        state
            .registry
            .register(caller, instance, address, Instant::now());
        self.count_instances(&state);
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
        match state.registry.heartbeat(caller, beat, Instant::now()) {
            Beat::Unknown => false,
            Beat::Renewed => true,
            Beat::AppChanged => {
                state.republish(&self.metrics);
                true
            }
        }
    }

    /// Removes one instance of `caller` at its request; false when it was not registered.
    pub(crate) fn deregister(&self, caller: &str, instance_id: &str) -> bool {
        let mut state = self.write();
        let Some(record) = state.registry.deregister(caller, instance_id) else {
            return false;
        };
        tracing::info!(service = %caller, instance = %instance_id, address = %record.address, "deregistered");
        self.count_instances(&state);
        state.republish(&self.metrics);
        true
    }

    /// Removes instances whose lease expired; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let mut state = self.write();
        let lease = state.config.registry.lease;
        let removed = state.registry.expire(lease, Instant::now());
        if removed > 0 {
            self.metrics.lease_expirations.inc_by(removed as u64);
            self.count_instances(&state);
            state.republish(&self.metrics);
        }
        removed
    }

    fn count_instances(&self, state: &State) {
        self.metrics
            .registered_instances
            .set(i64::try_from(state.registry.len()).unwrap_or(i64::MAX));
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
        self.write()
            .registry
            .watch_stream(service, instance_id, open);
    }

    /// Records an acknowledgement (or, with `error`, a rejection) of `version`.
    pub(crate) fn ack(&self, service: &str, instance_id: &str, version: u64, error: &str) {
        self.write()
            .registry
            .ack(service, instance_id, version, error);
    }

    // === CA rotation ===

    /// Generates a new root and adds it to the trust bundle of every snapshot.
    pub(crate) async fn add_root(&self) -> Result<String, AdminError> {
        let _guard = self.rotation.lock().await;
        let ca = self.authority();
        let (next, id) = off_thread("root generation", move || ca.add_root()).await?;
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
            let since = state.root_since.since(id);
            let lease = state.config.registry.lease;
            rotation::check_use(&state.registry, lease, Instant::now(), id, since)?;
        }
        let id_owned = id.to_owned();
        let next = off_thread("signer change", move || ca.use_root(&id_owned)).await?;
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
            let lease = state.config.registry.lease;
            rotation::check_remove(&state.registry, lease, Instant::now(), &root)?;
        }
        let id_owned = id.to_owned();
        let next = off_thread("root removal", move || ca.remove_root(&id_owned)).await?;
        tracing::info!(root = %id, force, "removed a root from the trust bundle");
        self.set_authority(next, None);
        Ok(())
    }

    /// How long the registry may still be refilling after a start: until a lease has passed,
    /// live sidecars may not have registered again.
    pub(crate) fn warming_left(&self) -> Option<Duration> {
        rotation::warming_left(self.started.elapsed(), self.config().registry.lease)
    }

    fn warmed_up(&self) -> Result<(), AdminError> {
        let lease = self.config().registry.lease;
        rotation::warmed_up(self.started.elapsed(), lease)
    }

    fn set_authority(&self, ca: Authority, added: Option<&str>) {
        let ca = Arc::new(ca);
        let mut state = self.write();
        state.ca = ca.clone();
        state.republish(&self.metrics);
        if let Some(id) = added {
            let version = state.version;
            state.root_since.added(id, version);
        }
        state.root_since.keep(&ca.roots());
        drop(state);
        self.ca_tx.send_replace(ca);
    }

    // === status ===

    /// The `/status` document.
    pub(crate) fn status(&self) -> Status {
        let state = self.read();
        let services = state
            .published
            .iter()
            .map(|(name, tx)| (name.clone(), tx.borrow().version, tx.receiver_count()));
        let versions = status::Versions {
            latest: state.version,
            config: state.config_version,
        };
        status::status(
            versions,
            &state.ca,
            services,
            &state.registry,
            Instant::now(),
        )
    }
}

/// Runs a CA step, which generates keys and writes files, away from the async workers.
async fn off_thread<T: Send + 'static>(
    what: &str,
    step: impl FnOnce() -> Result<T, RotationError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(step)
        .await
        .map_err(|e| AdminError::Conflict(format!("{what} failed: {e}")))?
        .map_err(AdminError::from)
}

// === impl State ===

impl State {
    /// Recomputes every service's snapshot; those that changed get the next version.
    fn republish(&mut self, metrics: &Metrics) {
        let trust = Trust {
            bundle_der: self.ca.trust_bundle_der(),
            issuer_sha256: self.ca.issuer_sha256().to_owned(),
        };
        let mut changed = Vec::new();
        for name in self.config.services.keys() {
            let next = snapshot::snapshot(&self.config, &trust, &self.registry, name);
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
}
