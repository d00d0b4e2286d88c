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

    let m = client::text(client::get_url(&orders.admin_url("/metrics")).await).await;
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

    let config = client::json(client::get_url(&orders.admin_url("/config")).await).await;
    let routes = &config["destinations"]["inventory"]["routes"];
    assert_eq!(routes[0]["name"], "quote", "{config}");
    // Shown in the Gateway API's shape, whichever form was written.
    assert_eq!(routes[0]["matches"][0]["path"]["type"], "Exact");
    assert_eq!(routes[0]["matches"][0]["path"]["value"], "/quote");
    assert_eq!(routes[0]["timeout"], "200ms");
    assert_eq!(routes[1]["matches"][0]["path"]["type"], "PathPrefix");
    assert_eq!(routes[1]["matches"][0]["path"]["value"], "/export");
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

/// Echo apps for `inventory` and `inventory-next` behind their sidecars, and an orders sidecar
/// calling both, with `policy` on inventory.
async fn two_services(policy: &str) -> (TestMesh, [Sidecar; 3]) {
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .start()
        .await;
    let next = mesh
        .sidecar("inventory-next")
        .app(app::echo("inventory-next").await)
        .start()
        .await;
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy("inventory", &[inventory.inbound], policy)
        .destination("inventory-next", &[next.inbound])
        .start()
        .await;
    (mesh, [orders, inventory, next])
}

/// GET `path` from orders to inventory with `headers`; the status and the echo app's JSON.
async fn echo(
    orders: &Sidecar,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let mut req =
        Request::get(format!("{}{path}", orders.outbound_url())).header("host", "inventory");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let rsp = client::http1()
        .request(req.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (rsp.status(), rsp.headers().clone());
    let body = client::text(rsp).await;
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, headers, json)
}

#[tokio::test]
async fn a_rewrite_arrives_rewritten_with_its_headers_changed_and_a_redirect_is_answered() {
    let (_mesh, [orders, _inventory, _next]) = two_services(
        "routes:\n\
         - name: v2-api\n\
         \x20 matches: [{ path: { type: PathPrefix, value: /api/v1 } }]\n\
         \x20 filters:\n\
         \x20 - type: URLRewrite\n\
         \x20   urlRewrite: { hostname: inventory.internal, path: { type: ReplacePrefixMatch, replacePrefixMatch: /api/v2 } }\n\
         \x20 - type: RequestHeaderModifier\n\
         \x20   requestHeaderModifier: { set: [{ name: x-api, value: v2 }], add: [{ name: x-via, value: mesh }], remove: [x-debug] }\n\
         \x20 - type: ResponseHeaderModifier\n\
         \x20   responseHeaderModifier: { set: [{ name: cache-control, value: no-store }] }\n\
         - name: moved\n\
         \x20 matches: [{ path: { type: Exact, value: /old } }]\n\
         \x20 filters: [{ type: RequestRedirect, requestRedirect: { hostname: shop.example, path: { type: ReplaceFullPath, replaceFullPath: /new }, statusCode: 301 } }]\n",
    )
    .await;

    let (status, headers, body) = echo(
        &orders,
        "/api/v1/stock/7?full=1",
        &[("x-debug", "1"), ("x-api", "v1"), ("x-via", "app")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["path"], "/api/v2/stock/7");
    assert_eq!(body["query"], "full=1");
    assert_eq!(body["headers"]["host"][0], "inventory.internal");
    assert_eq!(body["headers"]["x-api"], serde_json::json!(["v2"]));
    assert_eq!(body["headers"]["x-via"], serde_json::json!(["app", "mesh"]));
    assert!(body["headers"]["x-debug"].is_null(), "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    // Off the route: as sent.
    let (_, headers, body) = echo(&orders, "/api/v10", &[]).await;
    assert_eq!(body["path"], "/api/v10");
    assert!(!headers.contains_key("cache-control"));

    let (status, headers, _) = echo(&orders, "/old?x=1", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "http://shop.example/new?x=1");
    let m = orders.metrics().await;
    assert!(
        m.contains(
            r#"mesh_route_requests_total{destination="inventory",route="moved",status_code="301"} 1"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn a_header_match_sends_testers_to_another_service_and_weights_split_a_route() {
    let (_mesh, [orders, _inventory, _next]) = two_services(
        "routes:\n\
         - name: testers\n\
         \x20 matches: [{ headers: [{ name: x-tester, value: 'yes' }] }]\n\
         \x20 backendRefs: [{ name: inventory-next }]\n\
         - name: halves\n\
         \x20 matches: [{ path: { value: /halves } }]\n\
         \x20 backendRefs: [{ name: inventory, weight: 1 }, { name: inventory-next, weight: 1 }]\n",
    )
    .await;
    for _ in 0..20 {
        let (_, _, body) = echo(&orders, "/stock", &[("x-tester", "yes")]).await;
        assert_eq!(body["service"], "inventory-next", "{body}");
        // The other service's sidecar sees the caller as itself.
        assert!(
            body["caller"].as_str().unwrap().ends_with("/sa/orders"),
            "{body}"
        );
        for tester in [&[("x-tester", "no")][..], &[]] {
            let (_, _, body) = echo(&orders, "/stock", tester).await;
            assert_eq!(body["service"], "inventory", "{body}");
        }
    }

    // 2,000 requests split 1:1. Half is 1,000 with a standard deviation of about 22: ±100
    // (5 %) is over 4 of them.
    let n = 2000;
    let mut next = 0;
    for _ in 0..n {
        let (status, _, body) = echo(&orders, "/halves", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["service"] == "inventory-next" {
            next += 1;
        }
    }
    assert!(
        (900..=1100).contains(&next),
        "inventory-next got {next} of {n}"
    );
}

#[tokio::test]
async fn a_backend_ref_to_a_destination_this_sidecar_lacks_is_refused_by_name() {
    let mesh = TestMesh::new();
    let builder = mesh.sidecar("orders").destination_with_policy(
        "inventory",
        &["127.0.0.1:1".parse().unwrap()],
        "routes: [{ name: r, backendRefs: [{ name: elsewhere }, { name: inventory, version: v2 }] }]",
    );
    let path = builder.write_config(
        mesh_testkit::free_port(),
        mesh_testkit::free_port(),
        mesh_testkit::free_port(),
    );
    let err = mesh_sidecar::config::Config::from_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("destinations.inventory.routes[0].backendRefs[0].name: \"elsewhere\" is not a destination of this sidecar"),
        "{err}"
    );
    assert!(
        err.contains("destinations.inventory.routes[0].backendRefs[1].version: versions come from the control plane"),
        "{err}"
    );
}
