//! The real `control-plane` binary in Kubernetes mode: `--kubernetes --kubeconfig`, the replica
//! and namespace from the environment the Deployment sets, services from MeshService objects.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::kube_mesh::KubeMesh;
use http::{Method, StatusCode};
use mesh_control_plane::admin_client;
use mesh_testkit::process::{KillOnDrop, Signal};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_control-plane");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_in_kubernetes_mode_declares_the_mesh_service_objects_and_follows_them() {
    let test = "the_binary_in_kubernetes_mode_declares_the_mesh_service_objects_and_follows_them";
    let Some(mesh) = KubeMesh::start(test, "trust_domain: mesh.local\n").await else {
        return;
    };
    mesh.apply_mesh_service("orders", json!({ "timeout": "2s" }))
        .await;
    let mut child = Command::new(BIN)
        .arg("--config-dir")
        .arg(mesh.dirs.config.path())
        .arg("--state-dir")
        .arg(mesh.dirs.state())
        .arg("--kubernetes")
        .arg("--kubeconfig")
        .arg(&mesh.kubeconfig)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("POD_NAME", "mesh-control-plane-7d9f-abcde")
        .env("POD_NAMESPACE", mesh_kube::names::NAMESPACE)
        .env("MESH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut process = KillOnDrop::new(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("no start line within 30s")
        .unwrap();
    let admin: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .unwrap_or_else(|| panic!("no admin= in {line:?}"))
        .parse()
        .unwrap();
    let token_path = mesh_control_plane::admin_token_path(mesh.dirs.state());
    let services = || {
        let token = std::fs::read_to_string(&token_path).unwrap();
        async move {
            let (status, body) =
                admin_client::request_with_token(admin, Method::GET, "/status", Some(&token))
                    .await
                    .map_err(|e| e.to_string())?;
            if status != StatusCode::OK {
                return Err(format!("/status answered {status}"));
            }
            let status: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let mut names: Vec<String> = status["services"]
                .as_object()
                .map(|s| s.keys().cloned().collect())
                .unwrap_or_default();
            names.sort();
            Ok(names)
        }
    };
    assert_eq!(services().await.unwrap(), ["orders"]);

    mesh.apply_mesh_service("payments", json!({})).await;
    mesh_testkit::eventually(
        "payments, a new MeshService, to be declared without a restart",
        Duration::from_secs(10),
        || {
            let listed = services();
            async move {
                let names = listed.await?;
                if names == ["orders", "payments"] {
                    Ok(())
                } else {
                    Err(format!("services {names:?}"))
                }
            }
        },
    )
    .await;

    process.signal(Signal::SIGTERM);
    let status = process.exit_within(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
}
