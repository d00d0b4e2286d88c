//! Kubernetes mode against a real API server: the services' policy comes from MeshService
//! objects, through the same validation as the service files.

mod common;

use std::time::Duration;

use common::kube_mesh::KubeMesh;
use serde_json::json;

const MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\n";

#[tokio::test]
async fn mesh_service_objects_declare_the_services_and_their_changes_apply() {
    let Some(mesh) = KubeMesh::start(
        "mesh_service_objects_declare_the_services_and_their_changes_apply",
        MESH,
    )
    .await
    else {
        return;
    };
    mesh.apply_mesh_service("orders", json!({ "calls": ["inventory"] }))
        .await;
    mesh.apply_mesh_service("inventory", json!({ "timeout": "2s" }))
        .await;
    let cp = mesh.control_plane("replica-a").await;
    let services: Vec<String> = cp.status().services.into_keys().collect();
    assert_eq!(services, ["inventory", "orders"], "services at start");

    mesh.apply_mesh_service("payments", json!({})).await;
    mesh_testkit::eventually("payments to join the mesh", Duration::from_secs(10), || {
        let has = cp.status().services.contains_key("payments");
        async move { has.then_some(()).ok_or("not yet") }
    })
    .await;
    cp.stop().await.unwrap();
}
