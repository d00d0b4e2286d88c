//! Several replicas side by side: the CA shared through its Secret, the leader elected with
//! the Lease, and each replica's sidecars summarised for the leader's rotation checks. This
//! ties `ca_secret`, `leader`, `peers` and `webhook_bundle` to the mesh.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ca_secret::CaSecret;
use super::leader::Election;
use super::options::{KubernetesError, KubernetesOptions, client};
use super::peers::PeerLeases;
use super::webhook_bundle;
use crate::ca::Authority;
use crate::mesh::Mesh;

/// This replica's CA Secret and election, before they are tied to the mesh.
pub(crate) struct ReplicaSet {
    secret: Arc<CaSecret>,
    election: Arc<Election>,
    peers: Arc<PeerLeases>,
    client: kube::Client,
    renew_every: std::time::Duration,
}

impl ReplicaSet {
    /// Reads (or creates) the CA Secret into `state_dir` and opens the CA from it.
    pub(crate) async fn open(
        options: &KubernetesOptions,
        state_dir: &Path,
        trust_domain: &str,
        import: Option<PathBuf>,
    ) -> Result<(Self, Authority), KubernetesError> {
        options
            .election
            .check()
            .map_err(KubernetesError::Election)?;
        let client = client(options).await?;
        let (secret, ca) = CaSecret::open(
            client.clone(),
            &options.namespace,
            state_dir,
            trust_domain,
            import,
        )
        .await?;
        let election = Election::new(
            client.clone(),
            &options.namespace,
            &options.replica,
            options.election,
        );
        let peers = PeerLeases::new(
            client.clone(),
            &options.namespace,
            &options.replica,
            options.election,
        );
        Ok((
            Self {
                secret,
                election,
                peers,
                client,
                renew_every: options.election.renew_every,
            },
            ca,
        ))
    }

    /// Shares the mesh's CA through the Secret, lets only the leader rotate it, and starts
    /// the Secret's watch and the election until `shutdown`.
    pub(crate) fn start(
        self,
        mesh: &Arc<Mesh>,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        mesh.share_ca(self.secret.clone());
        mesh.follow_leadership(self.election.clone());
        mesh.gate_on_peers(self.peers.clone());
        vec![
            tokio::spawn(self.secret.watch(mesh.clone(), shutdown.clone())),
            tokio::spawn(self.election.clone().run(shutdown.clone())),
            tokio::spawn(self.peers.publish(mesh.clone(), shutdown.clone())),
            tokio::spawn(webhook_bundle::maintain(
                self.client,
                mesh.clone(),
                self.election.clone(),
                self.renew_every,
                shutdown.clone(),
            )),
        ]
    }
}
