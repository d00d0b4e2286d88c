//! Applying manifests server-side as kubectl does, and reading them back: the objects of a
//! test go in one call, each kind asked of the server first (a CRD's kind is served a moment
//! after the CRD is stored). Test support: a failure panics with the object's kind and name.

use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiResource, Scope};
use serde_json::Value;

/// The API resource of an object's kind, asked of the server (a CRD's kind is served a moment
/// after the CRD is stored, so this waits for it).
pub async fn resource_of(client: &kube::Client, object: &Value) -> (ApiResource, Scope) {
    let field = |name: &str| {
        object[name]
            .as_str()
            .unwrap_or_else(|| panic!("an object without {name}: {object}"))
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, capabilities) = mesh_testkit::eventually(
        &format!("{api_version} {kind} to be served"),
        Duration::from_secs(20),
        || {
            let client = client.clone();
            let gvk = gvk.clone();
            async move { kube::discovery::pinned_kind(&client, &gvk).await }
        },
    )
    .await;
    (resource, capabilities.scope)
}

/// The API and name of an object of the manifests.
pub async fn api_for(client: &kube::Client, object: &Value) -> (Api<DynamicObject>, String) {
    let (resource, scope) = resource_of(client, object).await;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("an object without metadata.name: {object}"))
        .to_owned();
    let api = match (scope, object["metadata"]["namespace"].as_str()) {
        (Scope::Namespaced, Some(namespace)) => {
            Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        }
        (Scope::Namespaced, None) => panic!("{name}: a namespaced object without a namespace"),
        (Scope::Cluster, _) => Api::<DynamicObject>::all_with(client.clone(), &resource),
    };
    (api, name)
}

/// Applies each object server-side as the field manager kubectl uses, in order; returns them
/// as stored.
pub async fn apply_all(client: &kube::Client, objects: &[Value]) -> Vec<DynamicObject> {
    let mut stored = Vec::new();
    for object in objects {
        let (api, name) = api_for(client, object).await;
        let applied = api
            .patch(
                &name,
                &PatchParams::apply("kubectl"),
                &Patch::Apply(object.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", object["kind"]));
        stored.push(applied);
    }
    stored
}

/// Each object as stored now.
pub async fn read_all(client: &kube::Client, objects: &[Value]) -> Vec<DynamicObject> {
    let mut stored = Vec::new();
    for object in objects {
        let (api, name) = api_for(client, object).await;
        stored.push(
            api.get(&name)
                .await
                .unwrap_or_else(|e| panic!("get {} {name}: {e}", object["kind"])),
        );
    }
    stored
}
