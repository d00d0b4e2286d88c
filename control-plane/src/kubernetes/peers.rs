//! What each replica's sidecars trust and hold, shared so the leader gates rotation steps on
//! sidecars connected to any replica: every replica writes its summary (see
//! `RotationSummary`) into an annotation of a Lease of its own, `mesh-control-plane-<replica>`,
//! renewed every `renew_every`; the leader lists them and counts those renewed within a lease
//! duration. A replica that stops clears its Lease's holder, and is no longer counted.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

use super::leader::ElectionOptions;
use crate::mesh::{Mesh, Peers, RotationSummary};

/// The annotation holding a replica's summary (JSON).
const SUMMARY_ANNOTATION: &str = "mesh.local/rotation-summary";
/// The label marking the replicas' own Leases, valued with the election's Lease name.
const REPLICA_LABEL: &str = "mesh.local/replica-of";

/// This replica's summary Lease, and the others'.
#[derive(Debug)]
pub(crate) struct PeerLeases {
    api: Api<Lease>,
    namespace: String,
    replica: String,
    options: ElectionOptions,
}

impl PeerLeases {
    pub(crate) fn new(
        client: kube::Client,
        namespace: &str,
        replica: &str,
        options: ElectionOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            replica: replica.to_owned(),
            options,
        })
    }

    fn own(&self) -> String {
        format!("{}-{}", mesh_kube::names::LEASE, self.replica)
    }

    /// Writes this replica's summary every `renew_every` until `shutdown`, then clears the
    /// holder so the leader stops counting this replica.
    pub(crate) async fn publish(self: Arc<Self>, mesh: Arc<Mesh>, shutdown: CancellationToken) {
        let mut last: Option<Lease> = None;
        loop {
            last = self.write(last, Some(&mesh.rotation_summary())).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.options.renew_every) => {}
            }
        }
        self.write(last, None).await;
    }

    /// Writes `summary` (`None`: this replica leaves) over `last`, or over the Lease as read.
    async fn write(&self, last: Option<Lease>, summary: Option<&RotationSummary>) -> Option<Lease> {
        let name = self.own();
        let lease = match last {
            Some(lease) => Some(lease),
            None => match self.api.get_opt(&name).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(lease = %format!("{}/{name}", self.namespace), error = %e, "cannot read this replica's Lease");
                    return None;
                }
            },
        };
        let exists = lease.is_some();
        let mut lease = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let text = summary.and_then(|s| serde_json::to_string(s).ok());
        lease
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(REPLICA_LABEL.to_owned(), mesh_kube::names::LEASE.to_owned());
        let annotations = lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        match &text {
            Some(text) => annotations.insert(SUMMARY_ANNOTATION.to_owned(), text.clone()),
            None => annotations.remove(SUMMARY_ANNOTATION),
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = text.as_ref().map(|_| self.replica.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.options.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX));
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        let written = if exists {
            self.api
                .replace(&name, &PostParams::default(), &lease)
                .await
        } else {
            self.api.create(&PostParams::default(), &lease).await
        };
        match written {
            Ok(lease) => Some(lease),
            Err(e) => {
                tracing::warn!(lease = %format!("{}/{name}", self.namespace), error = %e, "cannot write this replica's summary");
                None
            }
        }
    }

    async fn read_summaries(&self) -> Result<Vec<(String, RotationSummary)>, String> {
        let selector = format!("{REPLICA_LABEL}={}", mesh_kube::names::LEASE);
        let leases = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("listing Leases {selector} in {}: {e}", self.namespace))?;
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let mut summaries = Vec::new();
        for lease in leases {
            let name = lease.metadata.name.clone().unwrap_or_default();
            let Some(spec) = lease.spec else { continue };
            let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
                continue;
            };
            if holder == self.replica {
                continue;
            }
            let renewed = spec.renew_time.map_or(0, |t| t.0.as_second());
            let duration = spec
                .lease_duration_seconds
                .map_or(self.options.lease_duration, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
            let duration = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
            if now - renewed > duration {
                // A replica that died: its sidecars go to the others.
                continue;
            }
            let text = lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SUMMARY_ANNOTATION))
                .ok_or_else(|| {
                    format!(
                        "Lease {}/{name} has no {SUMMARY_ANNOTATION}",
                        self.namespace
                    )
                })?;
            let summary = serde_json::from_str(text).map_err(|e| {
                format!("Lease {}/{name} {SUMMARY_ANNOTATION}: {e}", self.namespace)
            })?;
            summaries.push((holder, summary));
        }
        Ok(summaries)
    }
}

impl Peers for PeerLeases {
    fn summaries(&self) -> BoxFuture<'_, Result<Vec<(String, RotationSummary)>, String>> {
        Box::pin(self.read_summaries())
    }
}
