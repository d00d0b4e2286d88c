//! What the Kubernetes tests of meshctl share: a test cluster, running meshctl, and applying
//! its manifests server-side as kubectl would.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::DynamicObject;
use mesh_kube_testkit::TestCluster;
pub use mesh_kube_testkit::apply::{apply_all, read_all};
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
