//! Routes: requests picked out by method and path get their own timeout and retries, on the
//! same endpoints, limits and budget as the rest of the destination's requests.

use std::time::Duration;

use crate::attempts;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use mesh_testkit::app::{self, Faults};
use mesh_testkit::{Sidecar, TestMesh, client};

/// One faulty inventory app behind its sidecar, and an orders sidecar calling it with
/// `policy`.
async fn setup(policy: &str) -> (TestMesh, std::sync::Arc<Faults>, Sidecar, Sidecar) {
    let mesh = TestMesh::new();
    let (addr, faults) = app::faulty("inventory").await;
    let inventory = mesh.sidecar("inventory").app(addr).start().await;
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy("inventory", &[inventory.inbound], policy)
        .start()
        .await;
    (mesh, faults, inventory, orders)
}

async fn send(
    orders: &Sidecar,
    method: Method,
    path: &str,
) -> http::Response<hyper::body::Incoming> {
    client::http1()
        .request(
            Request::builder()
                .method(method)
                .uri(format!("{}{path}", orders.outbound_url()))
                .header("host", "inventory")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_route_retries_its_requests_and_the_rest_keep_the_destinations_retries() {
    let (_mesh, faults, _inventory, orders) = setup(
        "retries: { attempts: 1, retry_on: [gateway-error], backoff: { base: 1ms, max: 2ms } }\n\
         routes:\n\
         - { name: reads, match: { methods: [GET, HEAD], path_prefix: /stock }, \
             retries: { attempts: 3 } }",
    )
    .await;
    faults.fail(503, 10);

    // On the route: three tries, with the backoff inherited from the destination.
    let rsp = send(&orders, Method::GET, "/stock/abc").await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&rsp), 3);
    // Off the route by method, by path segment, and by path: the destination's single try.
    for (method, path) in [
        (Method::POST, "/stock/abc"),
        (Method::GET, "/stockpile"),
        (Method::GET, "/orders"),
    ] {
        let rsp = send(&orders, method.clone(), path).await;
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(attempts(&rsp), 1, "{method} {path}");
    }

    let m = client::text(client::get(&orders.admin_url("/metrics"), "admin").await).await;
    assert!(
        m.contains(
            r#"mesh_route_requests_total{destination="inventory",route="reads",status_code="503"} 1"#
        ),
        "{m}"
    );
    // The route's retries are counted with the destination's.
    assert!(
        m.contains(r#"mesh_retries_total{destination="inventory",reason="gateway-error"} 2"#),
        "{m}"
    );
    // Requests off every route appear only in the destination's series.
    assert!(
        m.contains(
            r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="503"} 4"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn a_route_timeout_answers_504_while_the_destinations_lets_the_same_latency_through() {
    let (_mesh, faults, _inventory, orders) = setup(
        "timeout: 10s\n\
         routes:\n\
         - { name: quote, match: { path: /quote }, timeout: 200ms }\n\
         - { name: export, match: { path_prefix: /export }, timeout: none }",
    )
    .await;
    faults.delay(Duration::from_millis(600));

    let started = tokio::time::Instant::now();
    let rsp = send(&orders, Method::GET, "/quote").await;
    let elapsed = started.elapsed();
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(rsp.headers()["x-mesh-error"], "timeout");
    assert!(client::text(rsp).await.contains("200ms"));
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(600),
        "answered after {elapsed:?}"
    );

    // `/quote/x` is not `/quote` (an exact path), so it has the destination's 10 s.
    for path in ["/quote/x", "/export/all"] {
        let rsp = send(&orders, Method::GET, path).await;
        assert_eq!(rsp.status(), StatusCode::OK, "{path}");
    }

    let config = client::json(client::get(&orders.admin_url("/config"), "admin").await).await;
    let routes = &config["destinations"]["inventory"]["routes"];
    assert_eq!(routes[0]["name"], "quote", "{config}");
    assert_eq!(routes[0]["match"]["path"], "/quote");
    assert_eq!(routes[0]["timeout"], "200ms");
    assert_eq!(routes[1]["match"]["path_prefix"], "/export");
    assert!(routes[1]["timeout"].is_null());
}

#[tokio::test]
async fn routes_share_the_destinations_concurrency_limit() {
    let mesh = TestMesh::new();
    let (addr, mut gate) = app::gated().await;
    let inventory = mesh.sidecar("inventory").app(addr).start().await;
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy(
            "inventory",
            &[inventory.inbound],
            "circuit_breaker: { max_requests: 1, max_pending: 0 }\n\
             routes:\n\
             - { name: held, match: { path_prefix: /held } }",
        )
        .start()
        .await;

    // A request on the route holds the destination's only slot at the app...
    let held = tokio::spawn({
        let url = format!("{}/held", orders.outbound_url());
        async move { client::get(&url, "inventory").await.status() }
    });
    gate.arrived().await;
    // ...so a request off the route is shed at once, as is one on the route.
    for path in ["/other", "/held/again"] {
        let rsp = send(&orders, Method::GET, path).await;
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(rsp.headers()["x-mesh-overloaded"], "true");
    }
    gate.release(1);
    let status = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}
