//! The services' policy from MeshService objects: each object of the mesh's namespace is the
//! service file of the service it names (its spec, with `name` from the object's name), so the
//! cluster's policy passes through the same validation, with the same errors, as the files.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigFiles, SERVICES_DIR};

/// The condition of a MeshService's status that carries the control plane's verdict.
pub(crate) const CONDITION: &str = "Accepted";

/// The MeshService objects of one namespace as service files, kept current by a watch.
#[derive(Clone, Debug)]
pub(crate) struct MeshServices {
    objects: watch::Receiver<Option<Objects>>,
}

/// The objects as watched, by name.
pub(crate) type Objects = BTreeMap<String, MeshService>;

/// One MeshService: its service file, and what its status needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MeshService {
    /// Its spec as the service file `services/<name>.yaml`.
    pub(crate) file: Vec<u8>,
    /// `metadata.generation`: which spec a verdict is about.
    pub(crate) generation: Option<i64>,
    /// `metadata.uid`, for events about it.
    pub(crate) uid: Option<String>,
    /// Its `Accepted` condition as stored, if any.
    pub(crate) accepted: Option<Value>,
}

/// The longest wait between attempts to watch: after an API-server outage, changes made once
/// it is back reach the mesh within this (kube's default grows to 30 s).
const MAX_BACKOFF: Duration = Duration::from_secs(3);
const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// Doubling waits from [`MIN_BACKOFF`] to [`MAX_BACKOFF`], reset by a successful watch event.
#[derive(Debug)]
struct CappedBackoff {
    next: Duration,
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        Some(wait)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// A watch's backoff: from [`MIN_BACKOFF`], doubling to [`MAX_BACKOFF`].
pub(crate) fn capped_backoff() -> impl Backoff {
    CappedBackoff { next: MIN_BACKOFF }
}

/// The MeshService kind as the API serves it.
pub(crate) fn resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(
        mesh_kube::names::POLICY_GROUP,
        mesh_kube::names::POLICY_VERSION,
        mesh_kube::names::POLICY_KIND,
    );
    ApiResource::from_gvk_with_plural(&gvk, mesh_kube::names::POLICY_PLURAL)
}

/// The service file's name of a MeshService.
pub(crate) fn file_name(object: &str) -> String {
    format!("{SERVICES_DIR}/{object}.yaml")
}

impl MeshServices {
    /// Starts watching `namespace`'s MeshService objects until `shutdown`. The watch retries
    /// with backoff when the API server is away, at most [`MAX_BACKOFF`] apart; the files in
    /// force stay until it answers.
    pub(crate) fn watch(
        client: kube::Client,
        namespace: &str,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource());
        let (tx, objects) = watch::channel(None);
        let task = tokio::spawn(async move {
            let stream =
                watcher::watcher(api, watcher::Config::default()).backoff(capped_backoff());
            let mut stream = std::pin::pin!(stream);
            let mut objects = Objects::new();
            let mut initial = Objects::new();
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = stream.next() => event,
                };
                match event {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watching MeshService objects; retrying");
                    }
                    Some(Ok(Event::Init)) => initial.clear(),
                    Some(Ok(Event::InitApply(object))) => {
                        if let Some((name, service)) = mesh_service(&object) {
                            initial.insert(name, service);
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        objects = std::mem::take(&mut initial);
                        tx.send_replace(Some(objects.clone()));
                    }
                    Some(Ok(Event::Apply(object))) => {
                        if let Some((name, service)) = mesh_service(&object) {
                            objects.insert(name, service);
                            tx.send_replace(Some(objects.clone()));
                        }
                    }
                    Some(Ok(Event::Delete(object))) => {
                        if let Some(name) = &object.metadata.name {
                            objects.remove(name);
                            tx.send_replace(Some(objects.clone()));
                        }
                    }
                }
            }
        });
        (Self { objects }, task)
    }

    /// The service files, once the first list has arrived.
    pub(crate) async fn first(&mut self) -> ConfigFiles {
        loop {
            if self.objects.borrow_and_update().is_some() {
                return self.current();
            }
            if self.objects.changed().await.is_err() {
                return ConfigFiles::new();
            }
        }
    }

    /// The service files now (empty before the first list).
    pub(crate) fn current(&self) -> ConfigFiles {
        self.objects
            .borrow()
            .iter()
            .flatten()
            .map(|(name, service)| (file_name(name), service.file.clone()))
            .collect()
    }

    /// The objects as watched, as they change (`None` before the first list).
    pub(crate) fn objects(&self) -> watch::Receiver<Option<Objects>> {
        self.objects.clone()
    }

    /// Completes when the objects change (never, once the watch has ended).
    pub(crate) async fn changed(&mut self) {
        if self.objects.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A MeshService as watched: its service file and the metadata its status needs.
fn mesh_service(object: &DynamicObject) -> Option<(String, MeshService)> {
    let (name, file) = service_file(object)?;
    let accepted = object
        .data
        .get("status")
        .and_then(|status| status.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(CONDITION))
        })
        .cloned();
    let service = MeshService {
        file,
        generation: object.metadata.generation,
        uid: object.metadata.uid.clone(),
        accepted,
    };
    Some((name, service))
}

/// A MeshService as its service file: the spec, named after the object.
fn service_file(object: &DynamicObject) -> Option<(String, Vec<u8>)> {
    let name = object.metadata.name.clone()?;
    let mut spec = object
        .data
        .get("spec")
        .cloned()
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(fields) = &mut spec {
        fields.insert("name".to_owned(), Value::String(name.clone()));
    }
    // JSON is YAML: the files' parser reads it, and names fields the same way.
    let text = serde_json::to_vec_pretty(&spec).unwrap_or_default();
    Some((name, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = CappedBackoff { next: MIN_BACKOFF };
        let waits: Vec<Duration> = backoff.by_ref().take(6).collect();
        assert_eq!(waits[0], MIN_BACKOFF);
        assert_eq!(waits[1], MIN_BACKOFF * 2);
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF), "{waits:?}");
        assert_eq!(waits[5], MAX_BACKOFF);
        backoff.reset();
        assert_eq!(backoff.next(), Some(MIN_BACKOFF));
    }
}
