//! What the Kubernetes tests of meshctl share: a test cluster, running meshctl, and applying
//! its manifests server-side as kubectl would.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiResource, Scope};
use mesh_kube_testkit::TestCluster;
use serde_json::Value;

/// How long one meshctl run may take.
const MESHCTL_PATIENCE: Duration = Duration::from_secs(120);

/// The cluster for `test`, or `None` when the binaries are missing outside CI.
pub async fn cluster(test: &str) -> Option<TestCluster> {
    let binaries = mesh_kube_testkit::binaries::available(test)?;
    Some(
        TestCluster::start(&binaries)
            .await
            .unwrap_or_else(|e| panic!("{test}: start the test cluster: {e}")),
    )
}

/// Runs meshctl with `args`: whether it succeeded, its stdout and its stderr.
pub async fn meshctl(args: &[&str]) -> (bool, String, String) {
    let (code, stdout, stderr) = meshctl_code(args).await;
    (code == Some(0), stdout, stderr)
}

/// Runs meshctl with `args`: its exit code, stdout and stderr.
pub async fn meshctl_code(args: &[&str]) -> (Option<i32>, String, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(MESHCTL_PATIENCE, run)
        .await
        .unwrap_or_else(|_| panic!("meshctl {args:?} did not end within {MESHCTL_PATIENCE:?}"))
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `meshctl install` with `args`, its documents parsed.
pub async fn install(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["install"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = meshctl(&all).await;
    assert!(ok, "meshctl {all:?}: {stderr}");
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&stdout).unwrap_or_else(|e| {
        panic!("meshctl install printed YAML that does not parse: {e}\n{stdout}")
    })
}

/// The API resource of an object's kind, asked of the server (a CRD's kind is served a moment
/// after the CRD is stored, so this waits for it).
async fn resource_of(client: &kube::Client, object: &Value) -> (ApiResource, Scope) {
    let api_version = object["apiVersion"].as_str().unwrap();
    let kind = object["kind"].as_str().unwrap();
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
async fn api_for(client: &kube::Client, object: &Value) -> (Api<DynamicObject>, String) {
    let (resource, scope) = resource_of(client, object).await;
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
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

/// Each object's kind/name and resource version.
pub fn resource_versions(objects: &[DynamicObject]) -> BTreeMap<String, String> {
    objects
        .iter()
        .map(|o| {
            let kind = o.types.as_ref().map_or("?", |t| t.kind.as_str());
            (
                format!("{kind}/{}", o.metadata.name.as_deref().unwrap_or("?")),
                o.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}
