//! Where `scripts/build-kube.sh` puts etcd and kube-apiserver, and what a test does when they
//! are not there: under CI it fails naming the script, elsewhere it says why it skips.

use std::path::PathBuf;

use crate::error::ClusterError;

/// The k8s.io/kubernetes version `scripts/build-kube.sh` builds; k8s-openapi's `latest`
/// feature (v1.37) matches it.
pub const KUBE_VERSION: &str = "v1.37.2";

/// The two programs of a test cluster.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `etcd` binary.
    pub etcd: PathBuf,
    /// The `kube-apiserver` binary.
    pub apiserver: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`, or which one is missing.
    pub fn in_dir(dir: PathBuf) -> Result<Self, ClusterError> {
        let binaries = Self {
            etcd: dir.join("etcd"),
            apiserver: dir.join("kube-apiserver"),
        };
        for (program, path) in [
            ("etcd", &binaries.etcd),
            ("kube-apiserver", &binaries.apiserver),
        ] {
            if !path.is_file() {
                return Err(ClusterError::MissingBinary {
                    program,
                    path: path.clone(),
                });
            }
        }
        Ok(binaries)
    }

    /// The binaries `scripts/build-kube.sh` built, in
    /// `${MESH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mesh}/kube-<version>`.
    pub fn from_cache() -> Result<Self, ClusterError> {
        Self::in_dir(cache_dir(|name| std::env::var(name).ok()))
    }
}

/// The directory `scripts/build-kube.sh` builds into, from the environment `env` reads.
pub fn cache_dir(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let cache = set("MESH_CACHE_DIR")
        .or_else(|| set("XDG_CACHE_HOME").map(|d| d.join("mesh")))
        .or_else(|| set("HOME").map(|d| d.join(".cache").join("mesh")))
        .unwrap_or_else(|| PathBuf::from(".cache/mesh"));
    cache.join(format!("kube-{KUBE_VERSION}"))
}

/// The cached binaries for `test`, or `None` after printing why it skips. Under `CI=true` a
/// missing binary fails the test instead, naming the script that builds it.
pub fn available(test: &str) -> Option<Binaries> {
    match Binaries::from_cache() {
        Ok(binaries) => Some(binaries),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {why}; under CI=true this test must run")
        }
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            None
        }
    }
}
