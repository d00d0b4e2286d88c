//! A client for the cluster a kubeconfig names, the way kubectl finds it: the file given, else
//! `KUBECONFIG`, else `~/.kube/config`, else the in-cluster ServiceAccount.

use std::path::{Path, PathBuf};

use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// Which cluster to talk to.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// A kubeconfig file; `None` for kubectl's search.
    pub kubeconfig: Option<PathBuf>,
    /// A context of that kubeconfig; `None` for its current context.
    pub context: Option<String>,
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file given could not be read or parsed.
    #[error("cannot read the kubeconfig {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KubeconfigError,
    },
    /// The kubeconfig has no usable context (the one named, or its current one).
    #[error("kubeconfig {where_}, context {context}: {source}")]
    Context {
        /// The file, or where kubectl would look.
        where_: String,
        /// The context asked for, or "(current)".
        context: String,
        /// Why.
        source: KubeconfigError,
    },
    /// Neither a kubeconfig nor an in-cluster ServiceAccount was found.
    #[error("no cluster found: {0} (pass --kubeconfig, or set KUBECONFIG)")]
    Infer(InferConfigError),
    /// The configuration was read but a client cannot be built from it.
    #[error("cannot make a client for {url}: {source}")]
    Client {
        /// The cluster's URL.
        url: String,
        /// Why.
        source: kube::Error,
    },
}

/// A client for `target`'s cluster.
pub async fn client(target: &Target) -> Result<kube::Client, ConnectError> {
    // kube's TLS builds on rustls' process-wide provider; the mesh uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let context = || {
        target
            .context
            .clone()
            .unwrap_or_else(|| "(current)".to_owned())
    };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let file = read(path)?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| ConnectError::Context {
                    where_: path.display().to_string(),
                    context: context(),
                    source,
                })?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|source| ConnectError::Context {
                where_: "from KUBECONFIG or ~/.kube/config".to_owned(),
                context: context(),
                source,
            })?,
        (None, None) => kube::Config::infer().await.map_err(ConnectError::Infer)?,
    };
    let url = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|source| ConnectError::Client { url, source })
}

fn read(path: &Path) -> Result<Kubeconfig, ConnectError> {
    Kubeconfig::read_from(path).map_err(|source| ConnectError::Read {
        path: path.to_owned(),
        source,
    })
}
