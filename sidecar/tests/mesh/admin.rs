//! The admin endpoint.

use http::StatusCode;
use mesh_testkit::client;

#[tokio::test]
async fn live_ready_config_and_metrics() {
    let pair = crate::Pair::start().await;
    let admin = |path: &str| pair.orders.admin_url(path);

    assert_eq!(
        client::get(&admin("/live"), "a").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        client::get(&admin("/ready"), "a").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        client::get(&admin("/nope"), "a").await.status(),
        StatusCode::NOT_FOUND
    );

    let config = client::text(client::get(&admin("/config"), "a").await).await;
    let json: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(json["service"], "orders");
    assert_eq!(json["identity"], crate::ORDERS_ID);
    assert_eq!(
        json["destinations"]["inventory"]["endpoints"][0],
        pair.inventory.inbound.to_string()
    );
    assert_eq!(json["connect_timeout"], "1s");
    assert!(!config.contains("PRIVATE KEY"));

    let rsp = client::get(&format!("{}/x", pair.orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let _ = client::text(rsp).await;
    let rsp = client::get(&format!("{}/x", pair.orders.outbound_url()), "elsewhere").await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let orders = client::text(client::get(&admin("/metrics"), "a").await).await;
    for line in [
        r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="200"} 1"#,
        r#"mesh_requests_total{direction="outbound",source="orders",destination="unknown",status_code="503"} 1"#,
        r#"mesh_request_duration_seconds_count{direction="outbound",source="orders",destination="inventory"} 1"#,
        r#"mesh_open_connections{direction="admin"} 1"#,
    ] {
        assert!(orders.contains(line), "missing {line} in\n{orders}");
    }
    let inventory =
        client::text(client::get(&pair.inventory.admin_url("/metrics"), "a").await).await;
    let line = r#"mesh_requests_total{direction="inbound",source="orders",destination="inventory",status_code="200"} 1"#;
    assert!(inventory.contains(line), "missing {line} in\n{inventory}");
    assert!(
        inventory.contains(r#"mesh_open_connections{direction="inbound"} 1"#),
        "{inventory}"
    );
}

#[tokio::test]
async fn wrong_method_is_405() {
    let pair = crate::Pair::start().await;
    let req = http::Request::get(pair.orders.admin_url("/shutdown"))
        .body(http_body_util::Full::default())
        .unwrap();
    let rsp = client::http1().request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // Still running.
    assert_eq!(
        client::get(&pair.orders.admin_url("/ready"), "a")
            .await
            .status(),
        StatusCode::OK
    );
}
