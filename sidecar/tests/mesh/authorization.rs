//! Step 10: the inbound side refuses callers its policy does not allow.

use http::StatusCode;
use mesh_testkit::{TestMesh, app, client};

use crate::calling_inventory;

#[tokio::test]
async fn only_allowed_callers_reach_the_app() {
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .extra_yaml("authorization: { default: deny, allow: [orders] }\n")
        .start()
        .await;
    let orders = calling_inventory(&mesh, "orders", &inventory).await;
    let payments = calling_inventory(&mesh, "payments", &inventory).await;

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

    let metrics = client::text(client::get_url(&inventory.admin_url("/metrics")).await).await;
    assert!(
        metrics.contains(r#"mesh_authorization_denied_total{source="payments"} 1"#),
        "{metrics}"
    );
}

/// `method` `path` from `caller` to inventory: the status and the body.
async fn call(
    caller: &mesh_testkit::Sidecar,
    method: http::Method,
    path: &str,
) -> (StatusCode, String) {
    let rsp = client::http1()
        .request(
            http::Request::builder()
                .method(method)
                .uri(format!("{}{path}", caller.outbound_url()))
                .header("host", "inventory")
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = rsp.status();
    (status, client::text(rsp).await)
}

#[tokio::test]
async fn a_rule_lets_a_caller_read_products_but_not_write_them() {
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .extra_yaml(
            "authorization:\n\
             \x20 default: deny\n\
             \x20 allow: [orders, storefront]\n\
             \x20 rules:\n\
             \x20   - name: product-writes\n\
             \x20     matches: [{ method: POST, path: { type: PathPrefix, value: /products } }]\n\
             \x20     allow: [orders]\n",
        )
        .start()
        .await;
    let storefront = calling_inventory(&mesh, "storefront", &inventory).await;
    let orders = calling_inventory(&mesh, "orders", &inventory).await;

    let (status, body) = call(&storefront, http::Method::GET, "/products").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&storefront, http::Method::POST, "/products").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body.trim_end(),
        "caller spiffe://mesh.local/ns/default/sa/storefront may not call inventory: \
         POST /products is only for callers on authorization.rules[product-writes].allow"
    );
    // Off the rule's paths the service-wide lists decide.
    let (status, _) = call(&storefront, http::Method::POST, "/orders").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&orders, http::Method::POST, "/products/7").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let metrics = inventory.metrics().await;
    assert!(
        metrics.contains(r#"mesh_authorization_denied_total{source="storefront"} 1"#),
        "{metrics}"
    );
}
