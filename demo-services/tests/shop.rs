//! The commerce services in-process, calling each other through a Host-routing stand-in for
//! the sidecar's outbound port.

mod common;

use std::time::Duration;

use common::{Shop, WAIT, call, call_raw, call_with};
use demo_services::shop::Calls;
use demo_services::shop::Service::{Inventory, Notifications, Orders, Payments, Storefront};
use http::{Method, StatusCode};
use mesh_testkit::eventually;
use serde_json::{Value, json};

const ALL: [demo_services::shop::Service; 5] =
    [Storefront, Orders, Inventory, Payments, Notifications];

#[tokio::test]
async fn reservations_are_all_or_nothing_idempotent_and_released_once() {
    let shop = Shop::start(&[Inventory]).await;
    let url = |p: &str| shop.url(Inventory, p);

    let products = call(Method::GET, &url("/products"), None).await;
    assert_eq!(products.status, StatusCode::OK);
    let list = products.json.as_array().unwrap();
    assert!(list.len() >= 5);
    for p in list {
        for field in ["sku", "name", "price_cents", "available"] {
            assert!(p.get(field).is_some(), "{field} missing in {p}");
        }
    }
    let mugs = shop.available("ceramic-mug").await;
    let books = shop.available("signed-cookbook").await;

    // One line too large: nothing is taken, not even the line that would fit.
    let too_much = json!({"order_id": "o-1", "items": [
        {"sku": "ceramic-mug", "qty": 2},
        {"sku": "signed-cookbook", "qty": books + 1},
    ]});
    let rsp = call(Method::POST, &url("/reservations"), Some(too_much)).await;
    assert_eq!(rsp.status, StatusCode::CONFLICT);
    assert_eq!(rsp.json["error"], "insufficient stock");
    assert_eq!(rsp.json["sku"], "signed-cookbook");
    assert_eq!(shop.available("ceramic-mug").await, mugs);
    assert_eq!(shop.available("signed-cookbook").await, books);
    let missing = call(Method::GET, &url("/reservations/o-1"), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Reserving twice for one order takes the stock once.
    let fits = json!({"order_id": "o-2", "items": [
        {"sku": "ceramic-mug", "qty": 2},
        {"sku": "signed-cookbook", "qty": 1},
    ]});
    let first = call(Method::POST, &url("/reservations"), Some(fits.clone())).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.json);
    assert_eq!(first.json["order_id"], "o-2");
    let again = call(Method::POST, &url("/reservations"), Some(fits)).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json["reservation_id"], first.json["reservation_id"]);
    assert_eq!(shop.available("ceramic-mug").await, mugs - 2);
    assert_eq!(shop.available("signed-cookbook").await, books - 1);
    let held = call(Method::GET, &url("/reservations/o-2"), None).await;
    assert_eq!(held.status, StatusCode::OK);
    assert_eq!(held.json["status"], "reserved");

    // Releasing gives the stock back once.
    let released = call(Method::DELETE, &url("/reservations/o-2"), None).await;
    assert_eq!(released.status, StatusCode::OK);
    assert_eq!(released.json, json!({"released": true}));
    let twice = call(Method::DELETE, &url("/reservations/o-2"), None).await;
    assert_eq!(twice.json, json!({"released": false}));
    let never = call(Method::DELETE, &url("/reservations/nope"), None).await;
    assert_eq!(never.json, json!({"released": false}));
    assert_eq!(shop.available("ceramic-mug").await, mugs);
    assert_eq!(shop.available("signed-cookbook").await, books);
    let gone = call(Method::GET, &url("/reservations/o-2"), None).await;
    assert_eq!(gone.json["status"], "released");

    // Bad input names the field.
    for (body, field) in [
        (
            json!({"items": [{"sku": "ceramic-mug", "qty": 1}]}),
            "order_id",
        ),
        (json!({"order_id": "o-3", "items": []}), "items"),
        (
            json!({"order_id": "o-3", "items": [{"sku": "ceramic-mug", "qty": 0}]}),
            "items[0].qty",
        ),
        (
            json!({"order_id": "o-3", "items": [{"sku": "ceramic-mug", "qty": "2"}]}),
            "items[0].qty",
        ),
        (
            json!({"order_id": "o-3", "items": [{"qty": 1}]}),
            "items[0].sku",
        ),
        (
            json!({"order_id": "o-3", "items": [{"sku": "no-such", "qty": 1}]}),
            "items[0].sku",
        ),
        (
            json!({"order_id": "a/b", "items": [{"sku": "ceramic-mug", "qty": 1}]}),
            "order_id",
        ),
    ] {
        let rsp = call(Method::POST, &url("/reservations"), Some(body.clone())).await;
        assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(rsp.json["field"], field, "{body} → {:?}", rsp.json);
    }
    let unknown = call(Method::GET, &url("/products/no-such"), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.json["error"].is_string());
}

#[tokio::test]
async fn payments_charge_an_order_once() {
    let shop = Shop::start(&[Payments]).await;
    let url = |p: &str| shop.url(Payments, p);
    let charge = json!({"order_id": "o-9", "amount_cents": 1250});
    let first = call(Method::POST, &url("/charges"), Some(charge.clone())).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.json);
    assert_eq!(first.json["status"], "captured");
    assert_eq!(first.json["order_id"], "o-9");
    let again = call(Method::POST, &url("/charges"), Some(charge)).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json["charge_id"], first.json["charge_id"]);
    let other_amount = json!({"order_id": "o-9", "amount_cents": 99});
    let conflict = call(Method::POST, &url("/charges"), Some(other_amount)).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);

    let got = call(Method::GET, &url("/charges/o-9"), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json["charge_id"], first.json["charge_id"]);
    assert_eq!(got.json["amount_cents"], 1250);

    let refund = call(
        Method::POST,
        &url("/refunds"),
        Some(json!({"order_id": "o-9"})),
    )
    .await;
    assert_eq!(refund.status, StatusCode::OK);
    assert_eq!(refund.json["status"], "refunded");
    let no_charge = call(
        Method::POST,
        &url("/refunds"),
        Some(json!({"order_id": "o-x"})),
    )
    .await;
    assert_eq!(no_charge.status, StatusCode::NOT_FOUND);
    let missing = call(Method::GET, &url("/charges/o-x"), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    for (body, field) in [
        (
            json!({"order_id": "o-1", "amount_cents": 0}),
            "amount_cents",
        ),
        (
            json!({"order_id": "o-1", "amount_cents": -5}),
            "amount_cents",
        ),
        (
            json!({"order_id": "o-1", "amount_cents": 1.5}),
            "amount_cents",
        ),
        (json!({"order_id": "o-1"}), "amount_cents"),
        (json!({"order_id": "", "amount_cents": 5}), "order_id"),
    ] {
        let rsp = call(Method::POST, &url("/charges"), Some(body.clone())).await;
        assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(rsp.json["field"], field, "{body} → {:?}", rsp.json);
    }
    let not_json = call_raw(Method::POST, &url("/charges"), b"{nope").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json.json["field"], "body");
}

#[tokio::test]
async fn an_order_is_reserved_charged_confirmed_and_notified() {
    let shop = Shop::start(&[Orders, Inventory, Payments, Notifications]).await;
    let beans = shop.available("espresso-beans").await;
    let mugs = shop.available("ceramic-mug").await;
    let order = json!({"customer": "ada", "items": [
        {"sku": "espresso-beans", "qty": 2},
        {"sku": "ceramic-mug", "qty": 1},
    ]});
    let rsp = call(Method::POST, &shop.url(Orders, "/orders"), Some(order)).await;
    assert_eq!(rsp.status, StatusCode::CREATED, "{:?}", rsp.json);
    let placed = &rsp.json;
    assert_eq!(placed["status"], "confirmed");
    assert_eq!(placed["customer"], "ada");
    assert_eq!(placed["total_cents"], 2 * 2400 + 1200);
    assert_eq!(
        placed["items"][0],
        json!({"sku": "espresso-beans", "qty": 2})
    );
    assert!(placed["created_at"].is_string());
    let id = placed["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ord-"), "{id}");

    assert_eq!(shop.available("espresso-beans").await, beans - 2);
    assert_eq!(shop.available("ceramic-mug").await, mugs - 1);
    let charge = call(
        Method::GET,
        &shop.url(Payments, &format!("/charges/{id}")),
        None,
    )
    .await;
    assert_eq!(charge.status, StatusCode::OK);
    assert_eq!(charge.json["amount_cents"], 2 * 2400 + 1200);

    let stored = call(
        Method::GET,
        &shop.url(Orders, &format!("/orders/{id}")),
        None,
    )
    .await;
    assert_eq!(stored.status, StatusCode::OK);
    assert_eq!(stored.json, rsp.json);
    let listed = call(Method::GET, &shop.url(Orders, "/orders"), None).await;
    assert_eq!(listed.json[0]["id"], id.as_str());
    let missing = call(Method::GET, &shop.url(Orders, "/orders/ord-none"), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let notifications = shop.url(Notifications, "/notifications");
    let note = eventually("the order's notification", WAIT, || async {
        let list = call(Method::GET, &notifications, None).await.json;
        list.as_array()?
            .iter()
            .find(|n| n["order_id"] == id.as_str())
            .cloned()
    })
    .await;
    assert!(note["message"].as_str().unwrap().contains(&id));
}

#[tokio::test]
async fn a_failed_payment_fails_the_order_and_releases_its_stock() {
    let shop = Shop::start(&[Orders, Inventory, Payments, Notifications]).await;
    shop.set_faults(Payments, json!({"error_rate": 1.0})).await;
    let beans = shop.available("espresso-beans").await;
    let order = json!({"customer": "bob", "items": [{"sku": "espresso-beans", "qty": 3}]});
    let rsp = call(Method::POST, &shop.url(Orders, "/orders"), Some(order)).await;
    assert_eq!(rsp.status, StatusCode::PAYMENT_REQUIRED, "{:?}", rsp.json);
    assert_eq!(rsp.json["status"], "failed");
    assert_eq!(rsp.json["reason"], "payment failed");
    let id = rsp.json["id"].as_str().unwrap().to_owned();

    assert_eq!(shop.available("espresso-beans").await, beans);
    let reservation = call(
        Method::GET,
        &shop.url(Inventory, &format!("/reservations/{id}")),
        None,
    )
    .await;
    assert_eq!(reservation.json["status"], "released");
    let stored = call(
        Method::GET,
        &shop.url(Orders, &format!("/orders/{id}")),
        None,
    )
    .await;
    assert_eq!(stored.json["status"], "failed");
    assert_eq!(stored.json["reason"], "payment failed");
    let deletes = shop.delivered_to("inventory").await;
    assert!(
        deletes
            .iter()
            .any(|d| d.method == Method::DELETE && d.path == format!("/reservations/{id}"))
    );
    // No notification for a failed order.
    let notes = call(
        Method::GET,
        &shop.url(Notifications, "/notifications"),
        None,
    )
    .await;
    assert_eq!(notes.json, json!([]));
}

#[tokio::test]
async fn a_release_that_fails_is_retried_in_the_background() {
    let shop = Shop::start_with(&[Orders, Inventory, Payments, Notifications], |c| {
        c.release_retry_every = Duration::from_millis(50);
    })
    .await;
    shop.set_faults(Payments, json!({"error_rate": 1.0})).await;
    shop.blocked
        .lock()
        .await
        .push((Method::DELETE, "/reservations/".into()));
    let mugs = shop.available("ceramic-mug").await;
    let order = json!({"customer": "ida", "items": [{"sku": "ceramic-mug", "qty": 2}]});
    let rsp = call(Method::POST, &shop.url(Orders, "/orders"), Some(order)).await;
    assert_eq!(rsp.status, StatusCode::PAYMENT_REQUIRED, "{:?}", rsp.json);
    assert_eq!(rsp.json["reason"], "payment failed");
    let id = rsp.json["id"].as_str().unwrap().to_owned();
    // Inventory was unreachable for the release: the stock is still held...
    assert_eq!(shop.available("ceramic-mug").await, mugs - 2);
    let attempts = shop.delivered_to("inventory").await;
    assert!(attempts.iter().all(|d| d.method != Method::DELETE));

    // ...until inventory can be reached again.
    shop.blocked.lock().await.clear();
    let reservation = shop.url(Inventory, &format!("/reservations/{id}"));
    eventually("the background release", WAIT, || async {
        let rsp = call(Method::GET, &reservation, None).await;
        (rsp.json["status"] == "released").then_some(())
    })
    .await;
    assert_eq!(shop.available("ceramic-mug").await, mugs);
}

#[tokio::test]
async fn an_order_beyond_stock_is_409_and_takes_nothing() {
    let shop = Shop::start(&[Orders, Inventory, Payments, Notifications]).await;
    let books = shop.available("signed-cookbook").await;
    let beans = shop.available("espresso-beans").await;
    let order = json!({"customer": "cy", "items": [
        {"sku": "espresso-beans", "qty": 1},
        {"sku": "signed-cookbook", "qty": books + 1},
    ]});
    let rsp = call(Method::POST, &shop.url(Orders, "/orders"), Some(order)).await;
    assert_eq!(rsp.status, StatusCode::CONFLICT, "{:?}", rsp.json);
    assert_eq!(rsp.json["status"], "failed");
    assert_eq!(rsp.json["reason"], "out of stock");
    assert_eq!(rsp.json["sku"], "signed-cookbook");
    assert_eq!(shop.available("signed-cookbook").await, books);
    assert_eq!(shop.available("espresso-beans").await, beans);
    assert!(shop.delivered_to("payments").await.is_empty());
}

#[tokio::test]
async fn orders_reject_bad_input_and_report_unreachable_inventory() {
    // Only orders runs: inventory is unknown to the router.
    let shop = Shop::start(&[Orders]).await;
    let url = shop.url(Orders, "/orders");
    for (body, field) in [
        (
            json!({"items": [{"sku": "ceramic-mug", "qty": 1}]}),
            "customer",
        ),
        (
            json!({"customer": " ", "items": [{"sku": "ceramic-mug", "qty": 1}]}),
            "customer",
        ),
        (json!({"customer": "d"}), "items"),
        (
            json!({"customer": "d", "items": [{"sku": "ceramic-mug", "qty": 1001}]}),
            "items[0].qty",
        ),
        (json!({"customer": "d", "items": "mug"}), "items"),
    ] {
        let rsp = call(Method::POST, &url, Some(body.clone())).await;
        assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(rsp.json["field"], field, "{body} → {:?}", rsp.json);
    }
    let order = json!({"customer": "d", "items": [{"sku": "ceramic-mug", "qty": 1}]});
    let rsp = call(Method::POST, &url, Some(order)).await;
    assert_eq!(rsp.status, StatusCode::BAD_GATEWAY, "{:?}", rsp.json);
    assert_eq!(rsp.json["status"], "failed");
    assert_eq!(rsp.json["reason"], "inventory unavailable");
    let wrong = call(Method::DELETE, &url, None).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn an_unknown_product_fails_the_order_naming_the_item() {
    let shop = Shop::start(&[Orders, Inventory, Payments, Notifications]).await;
    let order = json!({"customer": "e", "items": [
        {"sku": "ceramic-mug", "qty": 1},
        {"sku": "no-such-thing", "qty": 1},
    ]});
    let rsp = call(Method::POST, &shop.url(Orders, "/orders"), Some(order)).await;
    assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{:?}", rsp.json);
    assert_eq!(rsp.json["field"], "items[1].sku");
    assert_eq!(rsp.json["status"], "failed");
}

#[tokio::test]
async fn trace_headers_travel_with_every_call_an_order_makes() {
    let shop = Shop::start(&[Orders, Inventory, Payments, Notifications]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let order = json!({"customer": "f", "items": [{"sku": "filter-papers", "qty": 1}]});
    let rsp = call_with(
        Method::POST,
        &shop.url(Orders, "/orders"),
        Some(order),
        &[
            ("traceparent", traceparent),
            ("tracestate", "vendor=1"),
            ("x-b3-sampled", "1"),
            ("x-unrelated", "keep-out"),
        ],
    )
    .await;
    assert_eq!(rsp.status, StatusCode::CREATED, "{:?}", rsp.json);
    eventually("the notification call", WAIT, || async {
        (!shop.delivered_to("notifications").await.is_empty()).then_some(())
    })
    .await;
    let delivered = shop.delivered.lock().await.clone();
    for host in ["inventory", "payments", "notifications"] {
        assert!(
            delivered.iter().any(|d| d.host == host),
            "no call to {host}"
        );
    }
    for d in &delivered {
        assert_eq!(
            d.headers["traceparent"], traceparent,
            "{} {}",
            d.method, d.path
        );
        assert_eq!(d.headers["tracestate"], "vendor=1");
        assert_eq!(d.headers["x-b3-sampled"], "1");
        assert!(d.headers.get("x-unrelated").is_none());
    }
}

#[tokio::test]
async fn fault_knobs_add_latency_and_errors_to_business_endpoints_only() {
    let shop = Shop::start(&[Inventory]).await;
    let faults = shop.url(Inventory, "/admin/faults");
    let products = shop.url(Inventory, "/products");

    let initial = call(Method::GET, &faults, None).await;
    assert_eq!(
        initial.json,
        json!({"latency_ms": 0, "error_rate": 0.0, "error_status": 503, "fail_next": 0})
    );

    let rsp = call(Method::PUT, &faults, Some(json!({"latency_ms": 200}))).await;
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(
        rsp.json,
        json!({"latency_ms": 200, "error_rate": 0.0, "error_status": 503, "fail_next": 0})
    );
    let started = tokio::time::Instant::now();
    let slow = call(Method::GET, &products, None).await;
    assert_eq!(slow.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let rsp = call(
        Method::PUT,
        &faults,
        Some(json!({"latency_ms": 0, "error_rate": 1.0, "error_status": 500, "fail_next": 0})),
    )
    .await;
    assert_eq!(
        rsp.json,
        json!({"latency_ms": 0, "error_rate": 1.0, "error_status": 500, "fail_next": 0})
    );
    for _ in 0..5 {
        let failed = call(Method::GET, &products, None).await;
        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(failed.json["error"].is_string(), "{:?}", failed.body);
    }
    // Health and admin are not subject to faults.
    let health = call(Method::GET, &shop.url(Inventory, "/health"), None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(&health.body[..], b"ok");
    assert_eq!(
        call(Method::GET, &faults, None).await.status,
        StatusCode::OK
    );

    for (body, field) in [
        (json!({"error_rate": 1.5}), "error_rate"),
        (json!({"error_rate": -0.1}), "error_rate"),
        (json!({"error_rate": "high"}), "error_rate"),
        (json!({"error_status": 404}), "error_status"),
        (json!({"error_status": 600}), "error_status"),
        (json!({"latency_ms": 60_001}), "latency_ms"),
        (json!({"latency_ms": -1}), "latency_ms"),
    ] {
        let rsp = call(Method::PUT, &faults, Some(body.clone())).await;
        assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(rsp.json["field"], field, "{body} → {:?}", rsp.json);
    }
    // Rejected changes change nothing.
    let now = call(Method::GET, &faults, None).await;
    assert_eq!(
        now.json,
        json!({"latency_ms": 0, "error_rate": 1.0, "error_status": 500, "fail_next": 0})
    );

    call(Method::PUT, &faults, Some(json!({"error_rate": 0}))).await;
    assert_eq!(
        call(Method::GET, &products, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_service_has_health_faults_and_its_instance_header() {
    let shop = Shop::start_with(&ALL, |c| c.instance = format!("{}-7", c.service)).await;
    for service in ALL {
        let health = call(Method::GET, &shop.url(service, "/health"), None).await;
        assert_eq!(health.status, StatusCode::OK, "{service}");
        assert_eq!(&health.body[..], b"ok");
        assert_eq!(health.headers["x-demo-instance"], format!("{service}-7"));
        let faults = call(Method::GET, &shop.url(service, "/admin/faults"), None).await;
        assert_eq!(faults.json["error_status"], 503, "{service}");
        assert_eq!(faults.headers["x-demo-instance"], format!("{service}-7"));
        let nowhere = call(Method::GET, &shop.url(service, "/nowhere"), None).await;
        assert_eq!(nowhere.status, StatusCode::NOT_FOUND, "{service}");
        assert!(nowhere.json["error"].is_string());
        assert_eq!(nowhere.headers["x-demo-instance"], format!("{service}-7"));
    }
}

#[tokio::test]
async fn crash_answers_202_then_asks_the_process_to_exit() {
    let shop = Shop::start(&[Notifications]).await;
    let app = shop.app(Notifications).clone();
    let crashed = tokio::spawn(async move { app.crash_requested().await });
    let rsp = call(Method::POST, &shop.url(Notifications, "/admin/crash"), None).await;
    assert_eq!(rsp.status, StatusCode::ACCEPTED);
    tokio::time::timeout(WAIT, crashed).await.unwrap().unwrap();
}

#[tokio::test]
async fn storefront_serves_its_page_and_passes_the_api_through() {
    let shop = Shop::start(&ALL).await;
    let page = call(Method::GET, &shop.url(Storefront, "/"), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    for needle in ["/api/products", "/api/orders", "fetch(", "<form"] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    assert!(!html.contains("src=\"http"), "page must be self-contained");

    let products = call(Method::GET, &shop.url(Storefront, "/api/products"), None).await;
    assert_eq!(products.status, StatusCode::OK);
    assert!(products.json.as_array().unwrap().len() >= 5);

    let order = json!({"customer": "gus", "items": [{"sku": "hand-grinder", "qty": 1}]});
    let placed = call(
        Method::POST,
        &shop.url(Storefront, "/api/orders"),
        Some(order),
    )
    .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.json);
    assert_eq!(placed.json["status"], "confirmed");
    let id = placed.json["id"].as_str().unwrap();

    // Status and body pass through unchanged, errors included.
    let bad = json!({"customer": "gus", "items": []});
    let rejected = call(
        Method::POST,
        &shop.url(Storefront, "/api/orders"),
        Some(bad),
    )
    .await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    assert_eq!(rejected.json["field"], "items");
    let sold_out = json!({"customer": "gus", "items": [{"sku": "signed-cookbook", "qty": 1000}]});
    let conflict = call(
        Method::POST,
        &shop.url(Storefront, "/api/orders"),
        Some(sold_out),
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.json["reason"], "out of stock");

    let listed = call(Method::GET, &shop.url(Storefront, "/api/orders"), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let ids: Vec<&Value> = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert!(ids.contains(&&json!(id)));
    let one = call(
        Method::GET,
        &shop.url(Storefront, &format!("/api/orders/{id}")),
        None,
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json["id"], id);
    assert_eq!(one.headers["x-demo-instance"], "storefront");
    let none = call(
        Method::GET,
        &shop.url(Storefront, "/api/orders/ord-none"),
        None,
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn storefront_answers_502_when_upstreams_are_unreachable() {
    // An outbound port that refuses connections.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let shop = Shop::start_with(&[Storefront], |c| {
        c.calls = Calls::Sidecar {
            outbound: closed.to_string(),
        }
    })
    .await;
    for path in ["/api/products", "/api/orders"] {
        let rsp = call(Method::GET, &shop.url(Storefront, path), None).await;
        assert_eq!(rsp.status, StatusCode::BAD_GATEWAY, "{path}");
        assert!(rsp.json["error"].is_string());
    }
    let order = json!({"customer": "h", "items": [{"sku": "ceramic-mug", "qty": 1}]});
    let rsp = call(
        Method::POST,
        &shop.url(Storefront, "/api/orders"),
        Some(order),
    )
    .await;
    assert_eq!(rsp.status, StatusCode::BAD_GATEWAY);
    // The page itself needs no upstream.
    let page = call(Method::GET, &shop.url(Storefront, "/"), None).await;
    assert_eq!(page.status, StatusCode::OK);
}
