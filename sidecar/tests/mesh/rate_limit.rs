//! Rate limiting on the inbound side: a total and a caller's own limit, 429 with
//! `Retry-After`, counted by caller; and callers' balancers take a 429 as a load signal.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use mesh_testkit::{Sidecar, TestMesh, app, client, metrics};
use tokio::time::Instant;

use crate::calling_inventory;

/// GET /stock from `caller` to inventory: the status, `Retry-After` and `x-mesh-error`.
async fn call(caller: &Sidecar) -> (StatusCode, Option<String>, Option<String>, Duration) {
    let started = Instant::now();
    let rsp = client::get(&format!("{}/stock", caller.outbound_url()), "inventory").await;
    let header = |name: &str| {
        rsp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let out = (
        rsp.status(),
        header("retry-after"),
        header("x-mesh-error"),
        started.elapsed(),
    );
    client::text(rsp).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_own_limit_gets_429_while_the_others_pass() {
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .extra_yaml(
            "rate_limit:\n\
             \x20 requests_per_second: 50\n\
             \x20 callers: { orders: { requests_per_second: 10 } }\n",
        )
        .start()
        .await;
    let orders = calling_inventory(&mesh, "orders", &inventory).await;
    let storefront = calling_inventory(&mesh, "storefront", &inventory).await;

    // For two seconds orders asks 40 times a second and storefront 15 times a second, side by
    // side: 110 requests, within the total's 50 at once plus 50 a second.
    let window = Duration::from_secs(2);
    let paced = |caller: Sidecar, every: Duration| {
        tokio::spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(every);
            let mut results = Vec::new();
            while started.elapsed() < window {
                ticks.tick().await;
                results.push(call(&caller).await);
            }
            (caller, results, started.elapsed())
        })
    };
    let orders_task = paced(orders, Duration::from_millis(25));
    let storefront_task = paced(storefront, Duration::from_millis(66));
    let (orders, from_orders, took) = orders_task.await.unwrap();
    let (_storefront, from_storefront, _) = storefront_task.await.unwrap();

    // Storefront: every request let in, none slowed down.
    assert!(from_storefront.len() >= 20, "{}", from_storefront.len());
    for (status, _, error, elapsed) in &from_storefront {
        assert_eq!(*status, StatusCode::OK, "{error:?}");
        assert!(*elapsed < Duration::from_millis(500), "{elapsed:?}");
    }
    // Orders: its burst (10) and then 10 a second; every other request refused at once.
    let let_in = from_orders
        .iter()
        .filter(|(s, ..)| *s == StatusCode::OK)
        .count();
    let most = 10 + (took.as_secs_f64() * 10.0).ceil() as usize + 1;
    assert!(
        (15..=most).contains(&let_in),
        "{let_in} of {} let in over {took:?}",
        from_orders.len()
    );
    let refused: Vec<_> = from_orders
        .iter()
        .filter(|(s, ..)| *s != StatusCode::OK)
        .collect();
    assert!(refused.len() >= 20, "{} refused", refused.len());
    for (status, retry_after, error, _) in &refused {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.as_deref(), Some("rate-limited"));
        assert_eq!(retry_after.as_deref(), Some("1"));
    }

    let m = inventory.metrics().await;
    assert_eq!(
        metrics::value(&m, r#"mesh_rate_limited_total{source="orders"}"#),
        Some(refused.len() as f64),
        "{m}"
    );
    assert_eq!(
        metrics::value(&m, r#"mesh_rate_limited_total{source="storefront"}"#),
        None
    );

    // Still over its limit, a gRPC caller is told RESOURCE_EXHAUSTED.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let rsp = client::h2_request(
            orders.outbound,
            Request::post("http://inventory/stock.Stock/Get")
                .header("content-type", "application/grpc")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
        statuses.push(
            rsp.headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
    }
    assert!(statuses.contains(&Some("8".to_owned())), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_steers_the_callers_balancer_away_without_ejecting_the_instance() {
    let mesh = TestMesh::new();
    let limited = mesh
        .sidecar("inventory")
        .app(app::echo("inventory-limited").await)
        .extra_yaml("rate_limit: { requests_per_second: 1 }\n")
        .start()
        .await;
    let free = mesh
        .sidecar("inventory")
        .app(app::echo("inventory-free").await)
        .start()
        .await;
    // One failure would eject an endpoint.
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy(
            "inventory",
            &[limited.inbound, free.inbound],
            "circuit_breaker: { consecutive_failures: 1 }\nretries: { attempts: 1 }",
        )
        .start()
        .await;
    let mut limited_answers = 0;
    for _ in 0..100 {
        let (status, ..) = call(&orders).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited_answers += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
        }
    }
    let m = orders.metrics().await;
    assert_eq!(
        metrics::value(
            &m,
            &format!(
                r#"mesh_ejections_total{{destination="inventory",endpoint="{}"}}"#,
                limited.inbound
            )
        ),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metrics::value(&m, r#"mesh_ejected_endpoints{destination="inventory"}"#),
        Some(0.0)
    );
    // After a 429 the limited instance weighs as loaded, so few requests go back to it.
    assert!(limited_answers <= 10, "{limited_answers} of 100 refused");
    let to_free = metrics::value(
        &m,
        &format!(
            r#"mesh_endpoint_requests_total{{destination="inventory",endpoint="{}"}}"#,
            free.inbound
        ),
    )
    .unwrap();
    assert!(
        to_free >= 85.0,
        "{to_free} of 100 to the unlimited instance\n{m}"
    );
}
