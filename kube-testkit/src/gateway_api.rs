//! The Gateway API's CRDs in a test cluster, as a user installs them: the pinned release's
//! standard-channel `GatewayClass`, `Gateway` and `HTTPRoute` CRDs, which
//! `scripts/gateway-api-crds.sh` fetches into the cache beside the cluster's binaries. Missing
//! CRDs skip a test with the reason, or fail it under `CI=true`, as missing binaries do.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cluster::TestCluster;

/// The sigs.k8s.io/gateway-api version whose CRDs the tests install.
pub const VERSION: &str = mesh_kube::names::GATEWAY_API_VERSION;

/// The kinds installed, by their CRD files' plural.
const KINDS: [&str; 3] = ["gatewayclasses", "gateways", "httproutes"];

/// Where `scripts/gateway-api-crds.sh` puts the CRDs, from the environment `env` reads.
pub fn crds_dir(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let kube = crate::binaries::cache_dir(env);
    kube.parent()
        .unwrap_or(Path::new("."))
        .join(format!("gateway-api-{VERSION}"))
}

/// The CRD files in `dir`, or the first one missing.
fn files(dir: &Path) -> Result<Vec<PathBuf>, PathBuf> {
    KINDS
        .iter()
        .map(|kind| dir.join(format!("gateway.networking.k8s.io_{kind}.yaml")))
        .map(|path| if path.is_file() { Ok(path) } else { Err(path) })
        .collect()
}

/// The cached CRD files for `test`, or `None` after printing why it skips; under `CI=true` a
/// missing file fails the test, naming the script that fetches it.
pub fn available(test: &str) -> Option<Vec<PathBuf>> {
    match files(&crds_dir(|name| std::env::var(name).ok())) {
        Ok(files) => Some(files),
        Err(missing) => {
            let why = format!(
                "{} is missing: run scripts/gateway-api-crds.sh to fetch the Gateway API {VERSION} CRDs",
                missing.display()
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: {why}; under CI=true this test must run")
            }
            eprintln!("{test}: skipped: {why}");
            None
        }
    }
}

/// Applies the CRD `files` to `cluster`, and waits until their kinds are served.
pub async fn install_crds(cluster: &TestCluster, files: &[PathBuf]) {
    let admin = cluster
        .admin()
        .unwrap_or_else(|e| panic!("admin client: {e}"));
    let crds: Vec<Value> = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
        })
        .collect();
    crate::apply::apply_all(&admin, &crds).await;
    for crd in &crds {
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let probe = serde_json::json!({ "apiVersion": format!("{group}/v1"), "kind": kind });
        crate::apply::resource_of(&admin, &probe).await;
    }
}
