//! The state of the mesh: configuration, CA, registry, and the snapshot each service's sidecars
//! run on.
//!
//! Every change (configuration, instance registered or expired, trust bundle or signer)
//! recomputes each service's snapshot. Only services whose snapshot content changed get a new
//! one, stamped with the next global version, so a change in an unrelated service never reaches
//! a sidecar. One immutable `Arc<Snapshot>` per service is shared through a `watch` channel by
//! all of its watchers; a slow watcher skips straight to the latest.
//!
//! Snapshots are built off the state's lock: a rebuild copies what it reads (configuration,
//! trust, the instances) under a read lock, builds without any lock, and publishes under the
//! publisher's own lock only if no rebuild of a newer state published first. Registry changes
//! only mark the state changed and wake one rebuild task ([`Mesh::rebuild_on_change`]), so a
//! burst of registrations and heartbeats costs one rebuild, and never waits for one.
//! Configuration and CA changes rebuild at once, so their callers know the version that
//! carries them.
//!
//! - `registry`: instances, leases, heartbeats and acknowledgements.
//! - `cluster`: in Kubernetes mode, the Services and EndpointSlices that say where services'
//!   instances are, and how the registry completes them.
//! - `snapshot`: the pure function from configuration, trust and registry to snapshots.
//! - `rotation`: when a root may become the signer or leave the bundle.
//! - `status`: the `/status` document.
//! - `shared`: a CA kept with other replicas, and which replica leads (Kubernetes mode).
//!
//! This module holds the [`Mesh`] type: the state's lock, the publisher, and version stamping.

mod cluster;
mod registry;
mod rotation;
mod shared;
mod snapshot;
mod status;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use mesh_api::proto::v1;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use self::cluster::{Cluster, ClusterService};
pub(crate) use self::registry::RegistryError;
use self::registry::{Beat, Registry};
pub(crate) use self::rotation::AdminError;
use self::rotation::RootsSince;
pub(crate) use self::rotation::RotationSummary;
pub use self::shared::Replicas;
pub(crate) use self::shared::{Leadership, Peers, SharedCa};
use self::snapshot::Trust;
pub use self::status::{GatewayListenerStatus, InstanceStatus, ServiceStatus, Status};
use crate::ca::{Authority, RotationError};
use crate::config::MeshConfig;
use crate::metrics::Metrics;

/// The shared state.
#[derive(Debug)]
pub(crate) struct Mesh {
    state: RwLock<State>,
    /// The snapshots in force; rebuilds publish here.
    publisher: RwLock<Publisher>,
    /// Wakes the rebuild task after a registry change.
    changed: Notify,
    /// The CA, for the TLS layer (server certificate and client verifier follow it).
    ca_tx: watch::Sender<Arc<Authority>>,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Serializes rotation steps, which write files, and reloads of a shared CA.
    rotation: tokio::sync::Mutex<()>,
    /// Where the CA is kept with other replicas, if it is.
    shared: OnceLock<Arc<dyn SharedCa>>,
    /// Which replica may take rotation steps, when there are several.
    leadership: OnceLock<Arc<dyn Leadership>>,
    /// The other replicas, whose sidecars gate rotation steps too.
    peers: OnceLock<Arc<dyn Peers>>,
}

#[derive(Debug)]
struct State {
    config: Arc<MeshConfig>,
    ca: Arc<Authority>,
    registry: Registry,
    /// What the cluster says of the services (Kubernetes mode, once its first list arrived).
    cluster: Option<Arc<Cluster>>,
    root_since: RootsSince,
    /// Counts changes that snapshots depend on, so a rebuild knows which state it saw.
    generation: u64,
}

#[derive(Debug)]
struct Publisher {
    /// The latest snapshot version.
    version: u64,
    /// The version that first carried the configuration in force.
    config_version: u64,
    /// The state generation the published snapshots were built from.
    generation: u64,
    published: BTreeMap<String, watch::Sender<Arc<v1::Snapshot>>>,
}

/// What a rebuild reads, copied out of the state.
struct Inputs {
    config: Arc<MeshConfig>,
    trust: Trust,
    registry: Registry,
    cluster: Option<Arc<Cluster>>,
    generation: u64,
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
        let state = State {
            config: Arc::new(config),
            ca: ca.clone(),
            registry: Registry::default(),
            cluster: None,
            root_since,
            generation: 0,
        };
        let publisher = Publisher {
            version: first_version.saturating_sub(1),
            config_version: first_version,
            generation: 0,
            published: BTreeMap::new(),
        };
        let (ca_tx, _) = watch::channel(ca);
        let mesh = Self {
            state: RwLock::new(state),
            publisher: RwLock::new(publisher),
            changed: Notify::new(),
            ca_tx,
            metrics,
            started: Instant::now(),
            rotation: tokio::sync::Mutex::new(()),
            shared: OnceLock::new(),
            leadership: OnceLock::new(),
            peers: OnceLock::new(),
        };
        mesh.rebuild();
        let mut publisher = mesh.publish_lock();
        publisher.version = publisher.version.max(first_version);
        drop(publisher);
        mesh
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn published(&self) -> RwLockReadGuard<'_, Publisher> {
        self.publisher
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_lock(&self) -> RwLockWriteGuard<'_, Publisher> {
        self.publisher
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuilds every snapshot from the state as it is now and publishes those that changed;
    /// returns the latest version. The state's lock is held only to copy the inputs.
    fn rebuild(&self) -> u64 {
        let inputs = {
            let state = self.read();
            Inputs {
                config: state.config.clone(),
                trust: Trust {
                    bundle_der: state.ca.trust_bundle_der(),
                    issuer_sha256: state.ca.issuer_sha256().to_owned(),
                },
                registry: state.registry.for_snapshots(),
                cluster: state.cluster.clone(),
                generation: state.generation,
            }
        };
        let built: Vec<(String, v1::Snapshot)> = inputs
            .config
            .services
            .keys()
            .map(|name| {
                let next = snapshot::snapshot(
                    &inputs.config,
                    &inputs.trust,
                    &inputs.registry,
                    inputs.cluster.as_deref(),
                    name,
                );
                (name.clone(), next)
            })
            .collect();
        let mut publisher = self.publish_lock();
        // A rebuild that read a newer state published first: this one is out of date.
        if inputs.generation < publisher.generation {
            return publisher.version;
        }
        publisher.generation = inputs.generation;
        publisher.publish(&inputs.config, built, &self.metrics)
    }

    /// Notes a change snapshots depend on; the caller rebuilds, or wakes the rebuild task.
    fn mark_changed(state: &mut State) {
        state.generation += 1;
    }

    /// Rebuilds after registry changes until `shutdown`: changes that arrive during a rebuild
    /// are coalesced into the next one.
    pub(crate) async fn rebuild_on_change(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => {}
            }
            let mesh = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || mesh.rebuild()).await {
                tracing::error!(error = %e, "snapshot rebuild failed");
            }
        }
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
        self.published().version
    }

    /// Puts a validated configuration in force.
    pub(crate) fn apply_config(&self, config: MeshConfig) {
        let mut state = self.write();
        state.config = Arc::new(config);
        Self::mark_changed(&mut state);
        drop(state);
        let version = self.rebuild();
        self.publish_lock().config_version = version;
    }

    /// Puts what the cluster says of the services in force; wakes the rebuild task when it
    /// changed, so sidecars see it without waiting for anything else.
    pub(crate) fn set_cluster(&self, cluster: Cluster) {
        let mut state = self.write();
        if state.cluster.as_deref() == Some(&cluster) {
            return;
        }
        state.cluster = Some(Arc::new(cluster));
        Self::mark_changed(&mut state);
        drop(state);
        self.changed.notify_one();
    }

    // === registry ===

    /// Adds or replaces an instance of the caller's service, sent from `source`: its address
    /// must be `source`'s or in `registration.allowed_addresses`, and a new instance must fit
    /// under `registration.max_instances_per_service`.
    pub(crate) fn register(
        &self,
        caller: &str,
        instance: &v1::Instance,
        source: Option<IpAddr>,
    ) -> Result<(Duration, Duration), RegistryError> {
        let address = registry::check(caller, instance)?;
        let mut state = self.write();
        if !state.config.services.contains_key(caller) {
            return Err(RegistryError::Undeclared(caller.to_owned()));
        }
        let registration = &state.config.registration;
        registry::check_source(address, source, registration)?;
        let max = registration.max_instances_per_service;
        state
            .registry
            .register(caller, instance, address, Instant::now(), max)?;
        self.count_instances(&state);
        Self::mark_changed(&mut state);
        let registry = state.config.registry;
        drop(state);
        self.changed.notify_one();
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
                Self::mark_changed(&mut state);
                drop(state);
                self.changed.notify_one();
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
        tracing::info!(service = %caller, instance = %instance_id, address = ?record.address, "deregistered");
        self.count_instances(&state);
        Self::mark_changed(&mut state);
        drop(state);
        self.changed.notify_one();
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
            Self::mark_changed(&mut state);
            drop(state);
            self.changed.notify_one();
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
        self.published()
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

    // === replicas ===

    /// Keeps the CA in `shared` from now on: rotation steps are stored there before they
    /// take effect. Set once, at start.
    pub(crate) fn share_ca(&self, shared: Arc<dyn SharedCa>) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("the CA's shared store was already set");
        }
    }

    /// Lets only the replica `leadership` names the leader take rotation steps. Set once, at
    /// start.
    pub(crate) fn follow_leadership(&self, leadership: Arc<dyn Leadership>) {
        if self.leadership.set(leadership).is_err() {
            tracing::warn!("the leadership was already set");
        }
    }

    /// Gates rotation steps on `peers`' sidecars too. Set once, at start.
    pub(crate) fn gate_on_peers(&self, peers: Arc<dyn Peers>) {
        if self.peers.set(peers).is_err() {
            tracing::warn!("the peers were already set");
        }
    }

    /// What this replica's live instances say about the roots, for the leader.
    pub(crate) fn rotation_summary(&self) -> RotationSummary {
        let warm = self.warming_left().is_none();
        let state = self.read();
        rotation::summary(
            &state.registry,
            state.config.registry.lease,
            Instant::now(),
            &state.ca.roots(),
            &state.root_since,
            warm,
        )
    }

    /// Each other replica's summary, or an error naming why they cannot be read.
    async fn peer_summaries(&self) -> Result<Vec<(String, RotationSummary)>, AdminError> {
        match self.peers.get() {
            None => Ok(Vec::new()),
            Some(peers) => peers.summaries().await.map_err(|e| {
                AdminError::Conflict(format!(
                    "cannot read the other replicas' sidecars: {e}; retry, or force"
                ))
            }),
        }
    }

    /// Who leads, when there are replicas.
    pub(crate) fn replicas(&self) -> Option<Replicas> {
        self.leadership.get().map(|l| l.view())
    }

    /// Reads the shared CA again (another replica changed it) and puts it in force.
    pub(crate) async fn reload_shared_ca(&self) -> Result<(), String> {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        let _guard = self.rotation.lock().await;
        let ca = shared.load().await?;
        let before = self.authority();
        if before.trust_bundle_der() != ca.trust_bundle_der()
            || before.issuer_sha256() != ca.issuer_sha256()
        {
            tracing::info!(
                roots = ?ca.roots().iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
                signer = ?ca.signer_id(),
                "the shared CA changed; reloaded it"
            );
        }
        self.set_authority(ca, None);
        Ok(())
    }

    /// Refuses a rotation step on a replica that does not lead: one replica decides them.
    fn check_leader(&self) -> Result<(), AdminError> {
        let Some(view) = self.replicas() else {
            return Ok(());
        };
        if view.leading {
            return Ok(());
        }
        let leader = view.leader.map_or_else(
            || "no replica leads now; retry once one does".to_owned(),
            |leader| format!("replica {leader} leads; send it there"),
        );
        Err(AdminError::NotLeader(format!(
            "replica {} does not lead, and only the leader changes the CA: {leader}",
            view.replica
        )))
    }

    /// Puts a rotation step in force: first in the shared store, if there is one. When that
    /// fails the step is undone (the stored CA read back) and nothing changed.
    async fn commit(&self, next: Authority, added: Option<&str>) -> Result<(), AdminError> {
        if let Some(shared) = self.shared.get()
            && let Err(e) = shared.store().await
        {
            // The stored CA (it may have changed), else the last good one: either way the
            // state directory no longer holds the step.
            let back = match shared.load().await {
                Ok(stored) => Ok(stored),
                Err(reload) => {
                    tracing::warn!(error = %reload, "cannot read the shared CA back; restoring the last good one");
                    shared.restore().await
                }
            };
            match back {
                Ok(ca) => self.set_authority(ca, None),
                Err(restore) => {
                    tracing::error!(error = %restore, "cannot undo the step in the state directory");
                }
            }
            return Err(AdminError::Conflict(format!(
                "the step could not be stored, so nothing changed: {e}"
            )));
        }
        self.set_authority(next, added);
        Ok(())
    }

    // === CA rotation ===

    /// Generates a new root and adds it to the trust bundle of every snapshot.
    pub(crate) async fn add_root(&self) -> Result<String, AdminError> {
        self.check_leader()?;
        let _guard = self.rotation.lock().await;
        let ca = self.authority();
        let (next, id) = off_thread("root generation", move || ca.add_root()).await?;
        self.commit(next, Some(&id)).await?;
        tracing::info!(root = %id, "added a root to the trust bundle");
        Ok(id)
    }

    /// Makes root `id` the signer, once every live instance runs a snapshot that trusts it.
    pub(crate) async fn use_root(&self, id: &str, force: bool) -> Result<(), AdminError> {
        self.check_leader()?;
        let _guard = self.rotation.lock().await;
        let ca = self.authority();
        if !ca.roots().iter().any(|r| r.id == id) {
            return Err(AdminError::NotFound(format!(
                "no root {id} in the trust bundle"
            )));
        }
        if !force {
            self.warmed_up()?;
            for (replica, summary) in self.peer_summaries().await? {
                rotation::check_use_on(&replica, &summary, id)?;
            }
            let state = self.read();
            let since = state.root_since.since(id);
            let lease = state.config.registry.lease;
            rotation::check_use(&state.registry, lease, Instant::now(), id, since)?;
        }
        let id_owned = id.to_owned();
        let next = off_thread("signer change", move || ca.use_root(&id_owned)).await?;
        self.commit(next, None).await?;
        tracing::info!(root = %id, force, "root is now the signer");
        Ok(())
    }

    /// Removes root `id` from the trust bundle, once no live instance holds a certificate it
    /// issued.
    pub(crate) async fn remove_root(&self, id: &str, force: bool) -> Result<(), AdminError> {
        self.check_leader()?;
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
            for (replica, summary) in self.peer_summaries().await? {
                rotation::check_remove_on(&replica, &summary, &root)?;
            }
            let state = self.read();
            let lease = state.config.registry.lease;
            rotation::check_remove(&state.registry, lease, Instant::now(), &root)?;
        }
        let id_owned = id.to_owned();
        let next = off_thread("root removal", move || ca.remove_root(&id_owned)).await?;
        self.commit(next, None).await?;
        tracing::info!(root = %id, force, "removed a root from the trust bundle");
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
        Self::mark_changed(&mut state);
        drop(state);
        let version = self.rebuild();
        let mut state = self.write();
        if let Some(id) = added {
            state.root_since.added(id, version);
        }
        // Roots another replica added arrive with a reload: trusted from this version on.
        for root in ca.roots() {
            if !state.root_since.knows(&root.id) {
                state.root_since.added(&root.id, version);
            }
        }
        state.root_since.keep(&ca.roots());
        drop(state);
        self.ca_tx.send_replace(ca);
    }

    // === status ===

    /// The `/status` document.
    pub(crate) fn status(&self) -> Status {
        let (services, versions): (Vec<_>, _) = {
            let publisher = self.published();
            let services = publisher
                .published
                .iter()
                .map(|(name, tx)| (name.clone(), tx.borrow().version, tx.receiver_count()))
                .collect();
            let versions = status::Versions {
                latest: publisher.version,
                config: publisher.config_version,
            };
            (services, versions)
        };
        let replicas = self.replicas();
        let state = self.read();
        let mut status = status::status(
            versions,
            &state.ca,
            &state.config,
            services,
            &state.registry,
            Instant::now(),
        );
        status.replicas = replicas;
        status
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

// === impl Publisher ===

impl Publisher {
    /// Publishes the snapshots that changed, stamped with the next version; drops the channels
    /// of services no longer declared. Returns the latest version.
    fn publish(
        &mut self,
        config: &MeshConfig,
        built: Vec<(String, v1::Snapshot)>,
        metrics: &Metrics,
    ) -> u64 {
        let changed: Vec<(String, v1::Snapshot)> = built
            .into_iter()
            .filter(|(name, next)| {
                !self.published.get(name).is_some_and(|tx| {
                    let current = tx.borrow();
                    same_content(&current, next)
                })
            })
            .collect();
        // Dropping a removed service's channel ends its watch streams.
        self.published
            .retain(|name, _| config.services.contains_key(name));
        if changed.is_empty() {
            return self.version;
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
        self.version
    }
}

/// Whether two snapshots say the same, their versions aside.
fn same_content(current: &v1::Snapshot, next: &v1::Snapshot) -> bool {
    // Spelled out field by field, so a new field cannot be left out of the comparison.
    let v1::Snapshot {
        version: _,
        trust_bundle_der,
        issuer_sha256,
        authorization,
        rate_limit,
        destinations,
        certificate_lifetime_secs,
        gateway,
    } = current;
    *trust_bundle_der == next.trust_bundle_der
        && *issuer_sha256 == next.issuer_sha256
        && *authorization == next.authorization
        && *rate_limit == next.rate_limit
        && *destinations == next.destinations
        && *certificate_lifetime_secs == next.certificate_lifetime_secs
        && *gateway == next.gateway
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(dir: &std::path::Path) -> Arc<Mesh> {
        let mut files = crate::config::ConfigFiles::new();
        files.insert("mesh.yaml".into(), b"trust_domain: mesh.local\n".to_vec());
        for (name, text) in [
            ("orders", "name: orders\ncalls: [inventory]\n"),
            ("inventory", "name: inventory\n"),
        ] {
            files.insert(format!("services/{name}.yaml"), text.as_bytes().to_vec());
        }
        let config = crate::config::parse(&files).unwrap();
        let ca = Authority::open(dir, "mesh.local").unwrap();
        Arc::new(Mesh::new(config, ca, Arc::new(Metrics::new()), 1))
    }

    fn inventory(id: &str) -> v1::Instance {
        v1::Instance {
            instance_id: id.into(),
            service: "inventory".into(),
            address: "127.0.0.1:7101".into(),
            ..Default::default()
        }
    }

    /// A rebuild publishing (here, held at that step) never holds up registry calls, and the
    /// next rebuild carries what they changed.
    #[test]
    fn registry_calls_never_wait_for_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let mesh = mesh(dir.path());
        let mut orders = mesh.subscribe("orders").unwrap();
        let first = orders.borrow_and_update().version;
        let publishing = mesh.publish_lock();
        let (done_tx, done) = std::sync::mpsc::channel();
        let caller = mesh.clone();
        let thread = std::thread::spawn(move || {
            let source = Some("127.0.0.1".parse().unwrap());
            let registered = caller.register("inventory", &inventory("i-1"), source);
            let beat = v1::HeartbeatRequest {
                instance_id: "i-1".into(),
                ..Default::default()
            };
            let renewed = caller.heartbeat("inventory", &beat);
            let _ = done_tx.send(registered.is_ok() && renewed);
        });
        let finished = done.recv_timeout(Duration::from_secs(10));
        drop(publishing);
        thread.join().unwrap();
        assert_eq!(
            finished,
            Ok(true),
            "registry calls waited for the publisher"
        );
        assert_eq!(orders.borrow().version, first, "nothing published yet");

        let version = mesh.rebuild();
        assert!(version > first);
        let snapshot = orders.borrow_and_update().clone();
        assert_eq!(snapshot.version, version);
        let endpoints: Vec<&str> = snapshot.destinations[0].backends[0]
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        assert_eq!(endpoints, ["127.0.0.1:7101"]);
    }

    /// A rebuild that read an older state than one already published does not replace it.
    #[test]
    fn an_out_of_date_rebuild_is_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let mesh = mesh(dir.path());
        let source = Some("127.0.0.1".parse().unwrap());
        mesh.register("inventory", &inventory("i-1"), source)
            .unwrap();
        let version = mesh.rebuild();
        // As if a rebuild that started before the registration finished now.
        mesh.publish_lock().generation += 1;
        mesh.deregister("inventory", "i-1");
        mesh.publish_lock().generation += 1;
        assert_eq!(mesh.rebuild(), version, "an older state is not published");
        assert_eq!(mesh.version(), version);
    }
}
