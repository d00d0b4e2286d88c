//! How Kubernetes mode reaches its cluster ([`KubernetesOptions`]), why it could not
//! ([`KubernetesError`]), and the client it makes.

use std::path::PathBuf;

use super::ca_secret::CaSecretError;
use super::leader::ElectionOptions;

/// How the control plane finds and uses its cluster.
#[derive(Clone, Debug)]
pub struct KubernetesOptions {
    /// A kubeconfig file; `None` for the in-cluster ServiceAccount (or kubectl's search).
    pub kubeconfig: Option<PathBuf>,
    /// A context of that kubeconfig; `None` for its current one.
    pub context: Option<String>,
    /// The control plane's own namespace: its CA Secret and its Lease live there.
    pub namespace: String,
    /// This replica's name (the pod's name in a cluster): the Lease's holder when it leads.
    pub replica: String,
    /// The audience sidecars' projected tokens must be issued for.
    pub audience: String,
    /// How the replicas elect their leader with the Lease.
    pub election: ElectionOptions,
    /// The `gatewayClassName` of the Gateways that configure the mesh's gateways.
    pub gateway_class: String,
}

impl KubernetesOptions {
    /// Options for the cluster a kubeconfig names (`None`: in-cluster), with the defaults of
    /// an installed mesh.
    pub fn new(kubeconfig: Option<PathBuf>) -> Self {
        Self {
            kubeconfig,
            context: None,
            namespace: mesh_kube::names::NAMESPACE.to_owned(),
            replica: default_replica(),
            audience: mesh_inject::names::TOKEN_AUDIENCE.to_owned(),
            election: ElectionOptions::default(),
            gateway_class: mesh_kube::names::GATEWAY_CLASS.to_owned(),
        }
    }
}

/// The host's name, else the process id: unique among replicas on one machine or cluster.
fn default_replica() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("control-plane-{}", std::process::id()))
}

/// Why Kubernetes mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// No client could be made for the cluster.
    #[error("{0}")]
    Connect(#[from] mesh_kube::connect::ConnectError),
    /// A call to the API server failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API server's answer.
        source: kube::Error,
    },
    /// The CA Secret could not be read, created or used.
    #[error("{0}")]
    CaSecret(#[from] CaSecretError),
    /// The election's timing does not work.
    #[error("leader election: {0}")]
    Election(String),
}

/// A client for the cluster `options` name.
pub(crate) async fn client(options: &KubernetesOptions) -> Result<kube::Client, KubernetesError> {
    let target = mesh_kube::connect::Target {
        kubeconfig: options.kubeconfig.clone(),
        context: options.context.clone(),
    };
    Ok(mesh_kube::connect::client(&target).await?)
}
