//! Step 10: the inbound side refuses callers its policy does not allow.

use http::StatusCode;
use mesh_testkit::{TestMesh, app, client};

#[tokio::test]
async fn only_allowed_callers_reach_the_app() {
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .extra_yaml("authorization: { default: deny, allow: [orders] }\n")
        .start()
        .await;
    let orders = mesh
        .sidecar("orders")
        .destination("inventory", &[inventory.inbound])
        .start()
        .await;
    let payments = mesh
        .sidecar("payments")
        .destination("inventory", &[inventory.inbound])
        .start()
        .await;

    let rsp = client::get(&format!("{}/stock", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);

    let rsp = client::get(&format!("{}/stock", payments.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert_eq!(rsp.headers()["x-mesh-error"], "unauthorized");
    let body = client::text(rsp).await;
    assert!(
        body.contains("spiffe://mesh.local/ns/default/sa/payments"),
        "{body}"
    );
    assert!(body.contains("authorization.allow"), "{body}");

    let metrics = client::text(client::get(&inventory.admin_url("/metrics"), "a").await).await;
    assert!(
        metrics.contains(r#"mesh_authorization_denied_total{source="payments"} 1"#),
        "{metrics}"
    );
}
