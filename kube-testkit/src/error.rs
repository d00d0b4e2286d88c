//! Why a test cluster could not start or give a client, naming the program, file or user.

use std::path::{Path, PathBuf};

/// Why a test cluster could not start or give a client.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The binaries `scripts/build-kube.sh` builds are not in the cache.
    #[error("{program} is not at {}: run scripts/build-kube.sh to build it", path.display())]
    MissingBinary {
        /// `etcd` or `kube-apiserver`.
        program: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file or directory of the cluster could not be made or read.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A certificate or key could not be made.
    #[error("cannot make the {what}: {source}")]
    Pki {
        /// Which certificate or key.
        what: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// `etcd` or `kube-apiserver`.
        program: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A program exited while the cluster was starting.
    #[error("{program} exited while starting ({status}); the end of its log:\n{log}")]
    Exited {
        /// `etcd` or `kube-apiserver`.
        program: &'static str,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The last lines it wrote.
        log: String,
    },
    /// A program did not become ready in time.
    #[error("{program} was not ready after {waited:?} ({last}); the end of its log:\n{log}")]
    NotReady {
        /// `etcd` or `kube-apiserver`.
        program: &'static str,
        /// How long the cluster waited.
        waited: std::time::Duration,
        /// The last check's answer.
        last: String,
        /// The last lines it wrote.
        log: String,
    },
    /// The API server's URL does not parse.
    #[error("the API server's URL {url:?} is not a URI: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why it does not parse.
        source: http::uri::InvalidUri,
    },
    /// A client for the cluster could not be built.
    #[error("cannot make a client for user {user:?}: {source}")]
    Client {
        /// The user the client authenticates as.
        user: String,
        /// kube's reason.
        source: kube::Error,
    },
}

impl ClusterError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
