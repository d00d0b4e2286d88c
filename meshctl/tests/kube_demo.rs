//! The demo's Kubernetes manifests (`config/kubernetes/`): the mesh ConfigMap and the
//! MeshService objects hold exactly the demo's files, and every manifest, as written and as `meshctl inject` makes it, is stored
//! by the real API server after `meshctl install`; each injected bootstrap is one the sidecar
//! accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kube_common;

use std::path::{Path, PathBuf};

use kube_common::{apply_all, cluster, install, meshctl};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifests(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("config/kubernetes").join(file)).unwrap();
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .unwrap_or_else(|e| panic!("config/kubernetes/{file}: {e}"))
}

fn config_map<'a>(objects: &'a [Value], name: &str) -> &'a serde_json::Map<String, Value> {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
        .and_then(|o| o["data"].as_object())
        .unwrap_or_else(|| panic!("no ConfigMap {name} with data"))
}

/// A YAML file of the repository, parsed.
fn parsed(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_policy_manifests_hold_the_demos_files() {
    let demo = repo().join("config/demo/mesh");
    let objects = manifests("mesh-config.yaml");
    let mesh = config_map(&objects, "mesh-config");
    let mesh_yaml: Value = serde_saphyr::from_str(mesh["mesh.yaml"].as_str().unwrap()).unwrap();
    let mut expected = parsed(&demo.join("mesh.yaml"));
    // On a cluster the mesh is the shop's namespace: its pods' ServiceAccounts are the identities.
    expected["namespace"] = Value::from("shop");
    assert_eq!(
        mesh_yaml, expected,
        "mesh-config's mesh.yaml is config/demo/mesh/mesh.yaml"
    );

    let policy = manifests("shop-policy.yaml");
    let mut files: Vec<String> = std::fs::read_dir(demo.join("services"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = policy
        .iter()
        .map(|o| {
            assert_eq!(o["kind"], "MeshService", "{o}");
            assert_eq!(o["metadata"]["namespace"], "shop", "{o}");
            format!("{}.yaml", o["metadata"]["name"].as_str().unwrap())
        })
        .collect();
    names.sort();
    assert_eq!(names, files, "one MeshService per service file");
    for object in &policy {
        let name = object["metadata"]["name"].as_str().unwrap();
        let mut spec = object["spec"].clone();
        spec["name"] = Value::from(name);
        assert_eq!(
            spec,
            parsed(&demo.join("services").join(format!("{name}.yaml"))),
            "MeshService {name} is its service file"
        );
    }
}

/// `value` with every number a float: the API server stores `1.0` as `1`, the same number.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map_or_else(|| value.clone(), Value::from),
        Value::Array(items) => items.iter().map(numbers_as_floats).collect(),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
            .collect(),
        other => other.clone(),
    }
}

/// The `mesh-proxy` container's bootstrap with Kubernetes' expansion of the pod's fields done.
fn expanded_bootstrap(pod_spec: &Value, pod_ip: &str) -> String {
    let proxy = pod_spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mesh-proxy")
        .expect("mesh-proxy");
    let bootstrap = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MESH_SIDECAR_BOOTSTRAP")
        .and_then(|e| e["value"].as_str())
        .expect("MESH_SIDECAR_BOOTSTRAP");
    bootstrap
        .replace("$(POD_NAME)", "orders-7d9f-abcde")
        .replace("$(POD_IP)", pod_ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_manifests_are_stored_as_written_and_as_injected() {
    let test = "the_demo_manifests_are_stored_as_written_and_as_injected";
    let Some(cluster) = cluster(test).await else {
        return;
    };
    let admin = cluster.admin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("ca.pem");
    let installed = install(&["--output-trust-anchor", anchor.to_str().unwrap()]).await;
    apply_all(&admin, &installed).await;

    for file in [
        "mesh-config.yaml",
        "jaeger.yaml",
        "shop.yaml",
        "shop-policy.yaml",
    ] {
        let stored = apply_all(&admin, &manifests(file)).await;
        assert_eq!(stored.len(), manifests(file).len(), "{file}");
        if file == "shop-policy.yaml" {
            // The CRD's schema keeps every field the demo's policy uses: nothing is pruned.
            for (written, stored) in manifests(file).iter().zip(&stored) {
                assert_eq!(
                    numbers_as_floats(&stored.data["spec"]),
                    numbers_as_floats(&written["spec"]),
                    "MeshService {} as stored",
                    written["metadata"]["name"]
                );
            }
        }
    }

    let shop = repo().join("config/kubernetes/shop.yaml");
    let (ok, stdout, stderr) = meshctl(&[
        "inject",
        "--trust-anchor",
        anchor.to_str().unwrap(),
        "--tracing-endpoint",
        "http://jaeger.observability.svc:4317",
        shop.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "meshctl inject: {stderr}");
    let injected = serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&stdout).unwrap();
    let stored = apply_all(&admin, &injected).await;
    let deployments: Vec<Value> = stored
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 5, "the five services");
    for deployment in &deployments {
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let spec = &deployment["spec"]["template"]["spec"];
        let init: Vec<&str> = spec["initContainers"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no init containers stored"))
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(init, ["mesh-init", "mesh-proxy"], "{name}");
        // What the kubelet would hand the sidecar is a bootstrap it accepts.
        let bootstrap = expanded_bootstrap(spec, "10.244.1.7");
        let config = mesh_sidecar::config::Config::from_yaml(&bootstrap, Path::new("/"))
            .unwrap_or_else(|e| {
                panic!("{name}: the sidecar refuses its bootstrap: {e:?}\n{bootstrap}")
            });
        assert_eq!(config.service, name, "{name}");
        assert!(
            bootstrap.contains("advertise: \"10.244.1.7:15006\""),
            "{bootstrap}"
        );
        assert!(
            bootstrap.contains("app_health: { path: \"/health\" }"),
            "{bootstrap}"
        );
    }
}
