//! The CA's state in Secret `mesh-ca` of the control plane's namespace, so every replica signs
//! with the same roots and serves the same trust bundle.
//!
//! # Keys
//! - `ca.pem`, `ca-key.pem`: the root that signs, and its key (what `meshctl install` writes,
//!   read as is: a Secret with only these two is that one root).
//! - `bundle.pem`: the trust bundle, every root trusted (the state directory's `ca.pem`).
//! - `signer`: the id of the root that signs.
//! - `root-<id>.pem`, `root-<id>-key.pem`: each root held with its key.
//! - `retired-<id>.pem`, `retired-<id>-key.pem`: roots removed from the bundle, for the record.
//! - `intermediate.pem`, `intermediate-key.pem`: an operator's intermediate, when one signs.
//!
//! # Lifecycle
//! A replica reads the Secret at start; when there is none it makes a CA (a new root, or the
//! `--ca-dir` one) and creates the Secret with it. Create is atomic: of replicas starting
//! together one wins, the others read the winner's. The Secret is then written into the state
//! directory, in [`Authority`]'s layout, and the CA opened from there. Every replica watches the
//! Secret and reloads when it changes; the leader writes rotation steps to it over the version
//! it last read (the API server refuses a write over a change it has not seen).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use crate::ca::{Authority, CertError, create_private_dir, write_atomic};
use crate::mesh::{Mesh, SharedCa};

const BUNDLE_KEY: &str = "bundle.pem";
const SIGNER_KEY: &str = "signer";
const SIGNER_CERT_KEY: &str = mesh_kube::names::CA_CERT_KEY;
const SIGNER_KEY_KEY: &str = mesh_kube::names::CA_KEY_KEY;
const INTERMEDIATE: &str = "intermediate.pem";
const INTERMEDIATE_KEY: &str = "intermediate-key.pem";
/// Roots held (`roots/` in the state directory) and retired (`retired/`).
const ROOT_SETS: [&str; 2] = ["root", "retired"];

/// Why the CA Secret could not be read, created or written.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    /// The API server refused or failed.
    #[error("{what} Secret {namespace}/{name}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: &'static str,
        /// The API server's answer.
        source: kube::Error,
    },
    /// The CA it holds (or the one made for it) is unusable.
    #[error("the CA of Secret {namespace}/{name}: {source}")]
    Ca {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: &'static str,
        /// What is wrong.
        source: CertError,
    },
    /// A key of the Secret that names a root is not a root id.
    #[error("Secret {namespace}/{name} key {key:?}: {message}")]
    Key {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: &'static str,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// This replica's handle on the CA Secret: the object as last read or written, whose
/// resourceVersion guards the next write.
#[derive(Debug)]
pub(crate) struct CaSecret {
    api: Api<Secret>,
    namespace: String,
    state_dir: PathBuf,
    trust_domain: String,
    last: tokio::sync::Mutex<Option<Secret>>,
}

impl CaSecret {
    /// Reads the CA from the Secret (creating it when absent, from `import`'s root if given)
    /// into `state_dir`, and opens it.
    pub(crate) async fn open(
        client: kube::Client,
        namespace: &str,
        state_dir: &Path,
        trust_domain: &str,
        import: Option<PathBuf>,
    ) -> Result<(Arc<Self>, Authority), CaSecretError> {
        let this = Arc::new(Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            state_dir: state_dir.to_owned(),
            trust_domain: trust_domain.to_owned(),
            last: tokio::sync::Mutex::new(None),
        });
        let secret = match this.get().await? {
            Some(secret) => secret,
            None => this.create(import).await?,
        };
        let ca = this.apply(secret).await?;
        Ok((this, ca))
    }

    /// The name for messages.
    fn name(&self) -> String {
        format!("{}/{}", self.namespace, mesh_kube::names::CA_SECRET)
    }

    fn api_error(&self, what: &'static str) -> impl FnOnce(kube::Error) -> CaSecretError + '_ {
        move |source| CaSecretError::Api {
            what,
            namespace: self.namespace.clone(),
            name: mesh_kube::names::CA_SECRET,
            source,
        }
    }

    fn ca_error(&self, source: CertError) -> CaSecretError {
        CaSecretError::Ca {
            namespace: self.namespace.clone(),
            name: mesh_kube::names::CA_SECRET,
            source,
        }
    }

    async fn get(&self) -> Result<Option<Secret>, CaSecretError> {
        self.api
            .get_opt(mesh_kube::names::CA_SECRET)
            .await
            .map_err(self.api_error("read"))
    }

    /// Makes a CA in a scratch directory and creates the Secret with it; when another replica
    /// created it first, reads theirs.
    async fn create(&self, import: Option<PathBuf>) -> Result<Secret, CaSecretError> {
        let scratch = self.state_dir.join(format!(
            ".ca-new-{}",
            crate::ca::hex(&crate::ca::random_bytes::<4>())
        ));
        let trust_domain = self.trust_domain.clone();
        let dir = scratch.clone();
        let made = tokio::task::spawn_blocking(move || {
            let result = (|| {
                if let Some(from) = import {
                    Authority::import_root(&dir, &from)?;
                }
                Authority::open(&dir, &trust_domain)?;
                read_state(&dir)
            })();
            let _ = fs::remove_dir_all(&dir);
            result
        })
        .await
        .map_err(|e| self.ca_error(io_error(&scratch, e)))?
        .map_err(|e| self.ca_error(e))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(mesh_kube::names::CA_SECRET.to_owned()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(to_secret_data(made)),
            ..Secret::default()
        };
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(created) => {
                tracing::info!(secret = %self.name(), "created the CA Secret with a new CA");
                Ok(created)
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() || status.is_conflict() => {
                tracing::info!(secret = %self.name(), "another replica created the CA Secret first; using its CA");
                self.get().await?.ok_or_else(|| CaSecretError::Api {
                    what: "read (just created by another replica)",
                    namespace: self.namespace.clone(),
                    name: mesh_kube::names::CA_SECRET,
                    source: kube::Error::Api(status),
                })
            }
            Err(e) => Err(self.api_error("create")(e)),
        }
    }

    /// Writes `secret`'s CA into the state directory, opens it, and remembers the object.
    async fn apply(&self, secret: Secret) -> Result<Authority, CaSecretError> {
        let data = from_secret_data(secret.data.clone().unwrap_or_default());
        check_keys(&data).map_err(|(key, message)| CaSecretError::Key {
            namespace: self.namespace.clone(),
            name: mesh_kube::names::CA_SECRET,
            key,
            message,
        })?;
        let dir = self.state_dir.clone();
        let trust_domain = self.trust_domain.clone();
        let ca = tokio::task::spawn_blocking(move || {
            // Opened in a scratch directory first: a Secret that does not make a CA leaves
            // the state directory's copy as it was.
            let scratch = dir.join(format!(
                ".ca-check-{}",
                crate::ca::hex(&crate::ca::random_bytes::<4>())
            ));
            let checked = write_state(&scratch, &data)
                .and_then(|()| Authority::open(&scratch, &trust_domain));
            let _ = fs::remove_dir_all(&scratch);
            checked?;
            write_state(&dir, &data)?;
            Authority::open(&dir, &trust_domain)
        })
        .await
        .map_err(|e| self.ca_error(io_error(&self.state_dir, e)))?
        .map_err(|e| self.ca_error(e))?;
        *self.last.lock().await = Some(secret);
        Ok(ca)
    }

    /// The resourceVersion last read or written.
    async fn version(&self) -> Option<String> {
        self.last
            .lock()
            .await
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone())
    }

    async fn store_state(&self) -> Result<(), String> {
        let dir = self.state_dir.clone();
        let data = tokio::task::spawn_blocking(move || read_state(&dir))
            .await
            .map_err(|e| format!("reading the state directory's CA: {e}"))?
            .map_err(|e| e.to_string())?;
        let mut last = self.last.lock().await;
        let Some(mut secret) = last.clone() else {
            return Err(format!("Secret {} was never read", self.name()));
        };
        // The object as last read, resourceVersion included: a write over a change this
        // replica has not seen is refused (409) rather than losing it.
        secret.data = Some(to_secret_data(data));
        let stored = self
            .api
            .replace(mesh_kube::names::CA_SECRET, &PostParams::default(), &secret)
            .await
            .map_err(|e| format!("writing Secret {}: {e}", self.name()))?;
        tracing::info!(
            secret = %self.name(),
            version = ?stored.metadata.resource_version,
            "stored the CA in its Secret"
        );
        *last = Some(stored);
        Ok(())
    }

    async fn load_state(&self) -> Result<Authority, String> {
        let secret = self
            .get()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("Secret {} is gone", self.name()))?;
        self.apply(secret).await.map_err(|e| e.to_string())
    }

    async fn restore_last(&self) -> Result<Authority, String> {
        let last = self
            .last
            .lock()
            .await
            .clone()
            .ok_or_else(|| format!("Secret {} was never read", self.name()))?;
        self.apply(last).await.map_err(|e| e.to_string())
    }

    /// Reloads the mesh's CA whenever the Secret changes (a version this replica has not
    /// read or written), until `shutdown`. A Secret that cannot be used keeps the CA in force.
    pub(crate) async fn watch(self: Arc<Self>, mesh: Arc<Mesh>, shutdown: CancellationToken) {
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={}", mesh_kube::names::CA_SECRET));
        let stream = watcher::watcher(self.api.clone(), config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = stream.next() => event,
            };
            let secret = match event {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(secret = %self.name(), error = %e, "watching the CA Secret; retrying");
                    continue;
                }
                Some(Ok(Event::Apply(secret) | Event::InitApply(secret))) => secret,
                Some(Ok(Event::Delete(_))) => {
                    tracing::warn!(secret = %self.name(), "the CA Secret was deleted; the CA in force stays");
                    continue;
                }
                Some(Ok(Event::Init | Event::InitDone)) => continue,
            };
            if secret.metadata.resource_version.is_some()
                && secret.metadata.resource_version == self.version().await
            {
                continue;
            }
            if let Err(e) = mesh.reload_shared_ca().await {
                tracing::error!(secret = %self.name(), error = %e, "cannot reload the CA; the CA in force stays");
            }
        }
    }
}

impl SharedCa for CaSecret {
    fn store(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.store_state())
    }

    fn load(&self) -> BoxFuture<'_, Result<Authority, String>> {
        Box::pin(self.load_state())
    }

    fn restore(&self) -> BoxFuture<'_, Result<Authority, String>> {
        Box::pin(self.restore_last())
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> CertError {
    CertError::Io {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

fn to_secret_data(data: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, ByteString> {
    data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()
}

fn from_secret_data(data: BTreeMap<String, ByteString>) -> BTreeMap<String, Vec<u8>> {
    data.into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// The root id a `root-`/`retired-` key names, and whether it is the key's file.
fn root_key(key: &str) -> Option<(&'static str, &str, bool)> {
    ROOT_SETS.into_iter().find_map(|set| {
        let rest = key.strip_prefix(set)?.strip_prefix('-')?;
        match rest.strip_suffix("-key.pem") {
            Some(id) => Some((set, id, true)),
            None => rest.strip_suffix(".pem").map(|id| (set, id, false)),
        }
    })
}

/// Root ids are hex digits (a prefix of the root's SHA-256): they become directory names.
fn check_keys(data: &BTreeMap<String, Vec<u8>>) -> Result<(), (String, String)> {
    if !data.contains_key(SIGNER_CERT_KEY) && !data.contains_key(BUNDLE_KEY) {
        return Err((
            SIGNER_CERT_KEY.to_owned(),
            format!("missing: the Secret holds no CA ({SIGNER_CERT_KEY} or {BUNDLE_KEY})"),
        ));
    }
    for key in data.keys() {
        if let Some((_, id, _)) = root_key(key)
            && (id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err((key.clone(), "does not name a root id (hex digits)".into()));
        }
    }
    Ok(())
}

/// The state directory's CA as Secret data (see the module documentation for the keys).
fn read_state(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, CertError> {
    let read = |path: PathBuf| fs::read(&path).map_err(|source| CertError::Io { path, source });
    let mut data = BTreeMap::new();
    data.insert(BUNDLE_KEY.to_owned(), read(dir.join("ca.pem"))?);
    for (set, sub) in [("root", "roots"), ("retired", "retired")] {
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let at = entry.path();
            if !at.join("cert.pem").is_file() {
                continue;
            }
            data.insert(format!("{set}-{id}.pem"), read(at.join("cert.pem"))?);
            if at.join("key.pem").is_file() {
                data.insert(format!("{set}-{id}-key.pem"), read(at.join("key.pem"))?);
            }
        }
    }
    let signer = dir.join("signer");
    if signer.is_file() {
        let text = read(signer)?;
        let id = String::from_utf8_lossy(&text).trim().to_owned();
        let root = dir.join("roots").join(&id);
        data.insert(SIGNER_CERT_KEY.to_owned(), read(root.join("cert.pem"))?);
        data.insert(SIGNER_KEY_KEY.to_owned(), read(root.join("key.pem"))?);
        data.insert(SIGNER_KEY.to_owned(), format!("{id}\n").into_bytes());
    }
    for name in [INTERMEDIATE, INTERMEDIATE_KEY] {
        if dir.join(name).is_file() {
            data.insert(name.to_owned(), read(dir.join(name))?);
        }
    }
    Ok(data)
}

/// Writes Secret data into the state directory in [`Authority`]'s layout, replacing the CA
/// files there. The trust bundle is written last, over the old one, so a reader of `ca.pem`
/// always finds a whole bundle.
fn write_state(dir: &Path, data: &BTreeMap<String, Vec<u8>>) -> Result<(), CertError> {
    create_private_dir(dir)?;
    for name in ["signer", SIGNER_KEY_KEY, INTERMEDIATE, INTERMEDIATE_KEY] {
        remove(&dir.join(name), |p| fs::remove_file(p))?;
    }
    for sub in ["roots", "retired"] {
        remove(&dir.join(sub), |p| fs::remove_dir_all(p))?;
    }
    let managed = data.contains_key(SIGNER_KEY);
    if managed {
        for (key, bytes) in data {
            let Some((set, id, is_key)) = root_key(key) else {
                continue;
            };
            let at = dir
                .join(if set == "root" { "roots" } else { "retired" })
                .join(id);
            create_private_dir(&at)?;
            let (file, mode) = if is_key {
                ("key.pem", 0o600)
            } else {
                ("cert.pem", 0o644)
            };
            write_atomic(&at.join(file), bytes, mode)?;
        }
        if let Some(signer) = data.get(SIGNER_KEY) {
            write_atomic(&dir.join("signer"), signer, 0o644)?;
        }
    } else if let Some(key) = data.get(SIGNER_KEY_KEY) {
        // As `meshctl install` writes it: one root and its key, adopted on open.
        write_atomic(&dir.join(SIGNER_KEY_KEY), key, 0o600)?;
    }
    for name in [INTERMEDIATE, INTERMEDIATE_KEY] {
        if let Some(bytes) = data.get(name) {
            let mode = if name == INTERMEDIATE_KEY {
                0o600
            } else {
                0o644
            };
            write_atomic(&dir.join(name), bytes, mode)?;
        }
    }
    let bundle = data
        .get(BUNDLE_KEY)
        .or_else(|| data.get(SIGNER_CERT_KEY))
        .map_or(&[][..], Vec::as_slice);
    write_atomic(&dir.join("ca.pem"), bundle, 0o644)
}

fn remove(path: &Path, how: fn(&Path) -> io::Result<()>) -> Result<(), CertError> {
    match how(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CertError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_directory_round_trips_through_secret_data() {
        let from = tempfile::tempdir().unwrap();
        let ca = Authority::open(from.path(), "mesh.local").unwrap();
        let (ca, new) = ca.add_root().unwrap();
        let old = ca.signer_id().unwrap().to_owned();
        let ca = ca.use_root(&new).unwrap();
        let ca = ca.remove_root(&old).unwrap();
        let data = read_state(from.path()).unwrap();
        for key in data.keys() {
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
                "{key}"
            );
        }
        assert!(data.contains_key(&format!("retired-{old}-key.pem")));
        assert_eq!(
            data[SIGNER_CERT_KEY],
            fs::read(from.path().join("roots").join(&new).join("cert.pem")).unwrap()
        );

        let to = tempfile::tempdir().unwrap();
        // Leftovers of an older CA are replaced.
        Authority::open(to.path(), "mesh.local").unwrap();
        write_state(to.path(), &data).unwrap();
        let again = Authority::open(to.path(), "mesh.local").unwrap();
        assert_eq!(again.trust_bundle_der(), ca.trust_bundle_der());
        assert_eq!(again.signer_id(), Some(new.as_str()));
        assert_eq!(read_state(to.path()).unwrap(), data);
    }

    #[test]
    fn the_installed_form_is_one_root_that_signs() {
        let dev = crate::ca::DevCa::generate("mesh.local").unwrap();
        let from = tempfile::tempdir().unwrap();
        dev.write_to(from.path()).unwrap();
        let mut data = BTreeMap::new();
        for key in [SIGNER_CERT_KEY, SIGNER_KEY_KEY] {
            data.insert(key.to_owned(), fs::read(from.path().join(key)).unwrap());
        }
        check_keys(&data).unwrap();
        let to = tempfile::tempdir().unwrap();
        write_state(to.path(), &data).unwrap();
        let ca = Authority::open(to.path(), "mesh.local").unwrap();
        assert_eq!(ca.trust_bundle_der().len(), 1);
        assert!(ca.signer_id().is_some());
    }

    #[test]
    fn keys_naming_roots_must_be_ids() {
        let mut data = BTreeMap::new();
        data.insert(BUNDLE_KEY.to_owned(), Vec::new());
        data.insert("root-...-key.pem".to_owned(), Vec::new());
        let (key, message) = check_keys(&data).unwrap_err();
        assert_eq!(key, "root-...-key.pem");
        assert!(message.contains("root id"), "{message}");
        assert!(check_keys(&BTreeMap::new()).is_err());
    }
}
