//! The services' policy from MeshService objects: each object of the mesh's namespace is the
//! service file of the service it names (its spec, with `name` from the object's name), so the
//! cluster's policy passes through the same validation, with the same errors, as the files.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigFiles, SERVICES_DIR};

/// The MeshService objects of one namespace as service files, kept current by a watch.
#[derive(Clone, Debug)]
pub(crate) struct MeshServices {
    files: watch::Receiver<Option<ConfigFiles>>,
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
    /// with backoff when the API server is away; the files in force stay until it answers.
    pub(crate) fn watch(
        client: kube::Client,
        namespace: &str,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource());
        let (tx, files) = watch::channel(None);
        let task = tokio::spawn(async move {
            let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            let mut objects: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let mut initial: BTreeMap<String, Vec<u8>> = BTreeMap::new();
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
                        if let Some((name, file)) = service_file(&object) {
                            initial.insert(name, file);
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        objects = std::mem::take(&mut initial);
                        tx.send_replace(Some(objects.clone()));
                    }
                    Some(Ok(Event::Apply(object))) => {
                        if let Some((name, file)) = service_file(&object) {
                            objects.insert(name, file);
                            tx.send_replace(Some(objects.clone()));
                        }
                    }
                    Some(Ok(Event::Delete(object))) => {
                        if let Some(name) = &object.metadata.name {
                            objects.remove(&file_name(name));
                            tx.send_replace(Some(objects.clone()));
                        }
                    }
                }
            }
        });
        (Self { files }, task)
    }

    /// The service files, once the first list has arrived.
    pub(crate) async fn first(&mut self) -> ConfigFiles {
        loop {
            if let Some(files) = self.files.borrow_and_update().clone() {
                return files;
            }
            if self.files.changed().await.is_err() {
                return ConfigFiles::new();
            }
        }
    }

    /// The service files now (empty before the first list).
    pub(crate) fn current(&self) -> ConfigFiles {
        self.files.borrow().clone().unwrap_or_default()
    }
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
    Some((file_name(&name), text))
}
