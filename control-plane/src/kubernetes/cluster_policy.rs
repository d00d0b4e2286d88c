//! The services' policy in Kubernetes mode, end to end: MeshService objects watched
//! (`mesh_services`), judged one by one (`acceptance`), the judgement put in force by the
//! caller, then each object's verdict written back to it (`verdicts`).

use std::collections::BTreeMap;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::acceptance::{Acceptance, Verdicts};
use super::mesh_services::MeshServices;
use super::verdicts::VerdictWriter;
use crate::config::{ConfigFiles, InvalidConfig, MeshConfig};

/// MeshService objects as the services' configuration, and their verdicts.
#[derive(Debug)]
pub(crate) struct ClusterPolicy {
    services: MeshServices,
    acceptance: Acceptance,
    verdicts: watch::Sender<Verdicts>,
    /// The last judgement, until it is put in force.
    judged: Option<(Verdicts, BTreeMap<String, Vec<u8>>)>,
}

impl ClusterPolicy {
    /// Watches `namespace`'s MeshService objects and writes their verdicts as `replica`, until
    /// `shutdown`; returns once the first list has arrived.
    pub(crate) async fn start(
        client: kube::Client,
        namespace: &str,
        replica: &str,
        shutdown: CancellationToken,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (mut services, watch) =
            MeshServices::watch(client.clone(), namespace, shutdown.clone());
        services.first().await;
        let (verdicts, judged) = watch::channel(Verdicts::new());
        let writer = VerdictWriter::new(client, namespace, replica);
        let write = tokio::spawn(writer.run(services.objects(), judged, shutdown));
        let policy = Self {
            services,
            acceptance: Acceptance::default(),
            verdicts,
            judged: None,
        };
        (policy, vec![watch, write])
    }

    /// The objects' service files now.
    pub(crate) fn files(&self) -> ConfigFiles {
        self.services.current()
    }

    /// Completes when the objects change.
    pub(crate) async fn changed(&mut self) {
        self.services.changed().await;
    }

    /// The configuration of `files` with each refused object's last accepted spec (or
    /// nothing) in its place; an error when `mesh.yaml` is invalid.
    pub(crate) fn judge(&mut self, files: &ConfigFiles) -> Result<MeshConfig, InvalidConfig> {
        let (config, verdicts, in_force) = self.acceptance.judge(files)?;
        self.judged = Some((verdicts, in_force));
        Ok(config)
    }

    /// The last judgement is in force: its specs become the last accepted ones, and its
    /// verdicts are written.
    pub(crate) fn in_force(&mut self) {
        if let Some((verdicts, in_force)) = self.judged.take() {
            self.acceptance.commit(in_force);
            self.verdicts.send_replace(verdicts);
        }
    }
}
