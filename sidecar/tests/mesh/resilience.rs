//! Timeouts, retries, circuit breaking and load balancing against real apps with injected
//! faults, each behind its own sidecar.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::attempts;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use mesh_testkit::app::{self, Faults};
use mesh_testkit::{Sidecar, TestMesh, client, eventually, free_port};

/// `n` inventory instances: a faulty app behind its own sidecar each.
async fn inventories(
    mesh: &TestMesh,
    n: usize,
) -> (Vec<Arc<Faults>>, Vec<Sidecar>, Vec<SocketAddr>) {
    let (mut faults, mut sidecars, mut endpoints) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let (addr, f) = app::faulty("inventory").await;
        let sidecar = mesh.sidecar("inventory").app(addr).start().await;
        endpoints.push(sidecar.inbound);
        faults.push(f);
        sidecars.push(sidecar);
    }
    (faults, sidecars, endpoints)
}

async fn orders(mesh: &TestMesh, endpoints: &[SocketAddr], policy: &str) -> Sidecar {
    mesh.sidecar("orders")
        .destination_with_policy("inventory", endpoints, policy)
        .start()
        .await
}

/// The value of the series `name{labels}` in `text`, 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    mesh_testkit::metrics::value(text, series).unwrap_or(0.0)
}

#[tokio::test]
async fn an_endpoint_failing_30_percent_of_requests_is_retried_away() {
    let mesh = TestMesh::new();
    let (faults, _inv, endpoints) = inventories(&mesh, 3).await;
    faults[0].fail(503, 3);
    let orders = orders(
        &mesh,
        &endpoints,
        "retries: { attempts: 3, retry_on: [gateway-error], backoff: { base: 1ms, max: 5ms } }",
    )
    .await;
    let http = client::http1();
    let mut retried = 0;
    for i in 0..300 {
        let req = Request::get(format!("{}/stock/{i}", orders.outbound_url()))
            .header("host", "inventory")
            .body(Full::default())
            .unwrap();
        let rsp = http.request(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK, "request {i}");
        if attempts(&rsp) > 1 {
            retried += 1;
        }
    }
    assert!(faults[0].requests() > 0, "the flaky endpoint was used");
    let m = orders.metrics().await;
    let retries = value(
        &m,
        r#"mesh_retries_total{destination="inventory",reason="gateway-error"}"#,
    );
    assert!(
        retries >= 1.0 && retries as u32 == retried,
        "retries {retries}, retried {retried}\n{m}"
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_ejected_then_probed_and_returned_when_back() {
    let mesh = TestMesh::new();
    let (_faults, _inv, mut endpoints) = inventories(&mesh, 2).await;
    let dead = free_port();
    endpoints.push(dead);
    let orders = orders(
        &mesh,
        &endpoints,
        "load_balancer: round-robin\n\
         retries: { attempts: 3, backoff: { base: 1ms, max: 5ms } }\n\
         circuit_breaker: { consecutive_failures: 2, base_ejection_time: 2s }",
    )
    .await;
    let get = || async {
        let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
        assert_eq!(rsp.status(), StatusCode::OK);
    };
    for _ in 0..9 {
        get().await;
    }
    let dead_series = format!(r#"{{destination="inventory",endpoint="{dead}"}}"#);
    let m = orders.metrics().await;
    assert_eq!(
        value(&m, &format!("mesh_ejections_total{dead_series}")),
        1.0,
        "{m}"
    );
    assert_eq!(
        value(&m, r#"mesh_ejected_endpoints{destination="inventory"}"#),
        1.0
    );
    // While ejected it gets nothing.
    let tried = value(&m, &format!("mesh_endpoint_requests_total{dead_series}"));
    for _ in 0..10 {
        get().await;
    }
    let m = orders.metrics().await;
    assert_eq!(
        value(&m, &format!("mesh_endpoint_requests_total{dead_series}")),
        tried
    );

    // It comes back where it was; after the ejection time a probe finds it and returns it.
    let (app, back) = app::faulty("inventory").await;
    let _revived = mesh
        .sidecar("inventory")
        .app(app)
        .inbound_at(dead)
        .start()
        .await;
    eventually(
        "the returned endpoint to get traffic",
        Duration::from_secs(10),
        || async {
            get().await;
            (back.requests() > 0).then_some(())
        },
    )
    .await;
    let m = orders.metrics().await;
    assert_eq!(
        value(&m, r#"mesh_ejected_endpoints{destination="inventory"}"#),
        0.0,
        "{m}"
    );
    let before = back.requests();
    for _ in 0..6 {
        get().await;
    }
    assert!(
        back.requests() >= before + 2,
        "back in the round-robin rotation"
    );
}

#[tokio::test]
async fn when_every_endpoint_fails_retries_stay_within_the_budget() {
    let mesh = TestMesh::new();
    let (faults, _inv, endpoints) = inventories(&mesh, 3).await;
    for f in &faults {
        f.fail(503, 10);
    }
    // ratio 0.2, min_per_second 2, window 10s: attempts <= requests * 1.2 + 2 * 10. The run
    // takes a few seconds, well inside one window: min_per_second is a rate, so a run longer
    // than the window would earn more reserve.
    let orders = orders(
        &mesh,
        &endpoints,
        "retries:\n  attempts: 3\n  retry_on: [gateway-error]\n  backoff: { base: 1ms, max: 2ms }\n  \
         budget: { ratio: 0.2, min_per_second: 2, window: 10s }",
    )
    .await;
    const REQUESTS: u64 = 100;
    for _ in 0..REQUESTS {
        let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            rsp.headers().get("x-mesh-error").is_none(),
            "the app's own 503 is returned"
        );
    }
    let reached: u64 = faults.iter().map(|f| f.requests()).sum();
    let bound = REQUESTS as f64 * 1.2 + 2.0 * 10.0;
    assert!(reached as f64 <= bound, "{reached} attempts > {bound}");
    assert!(reached > REQUESTS, "some retries were allowed");
    let m = orders.metrics().await;
    assert!(
        value(
            &m,
            r#"mesh_retry_budget_exhausted_total{destination="inventory"}"#
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_slow_endpoint_is_left_for_a_fast_one_at_the_per_try_timeout() {
    let mesh = TestMesh::new();
    let (faults, _inv, endpoints) = inventories(&mesh, 3).await;
    faults[0].delay(Duration::from_secs(5));
    let orders = orders(
        &mesh,
        &endpoints,
        "load_balancer: round-robin\ntimeout: 3s\n\
         retries: { attempts: 3, per_try_timeout: 200ms, backoff: { base: 1ms, max: 2ms } }",
    )
    .await;
    let mut moved = 0;
    for _ in 0..6 {
        let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
        assert_eq!(rsp.status(), StatusCode::OK);
        if attempts(&rsp) == 2 {
            moved += 1;
        }
    }
    // Round robin over [slow, fast, fast], where a retry takes the next turn too: requests
    // 1, 3 and 5 start on the slow endpoint and finish on a fast one.
    assert_eq!(moved, 3);
    let m = orders.metrics().await;
    assert_eq!(
        value(
            &m,
            r#"mesh_timeouts_total{destination="inventory",kind="per-try"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            r#"mesh_retries_total{destination="inventory",reason="per-try-timeout"}"#
        ),
        3.0
    );
}

#[tokio::test]
async fn the_overall_timeout_answers_504_on_time() {
    let mesh = TestMesh::new();
    let (faults, _inv, endpoints) = inventories(&mesh, 2).await;
    for f in &faults {
        f.delay(Duration::from_secs(10));
    }
    let orders = orders(&mesh, &endpoints, "timeout: 300ms").await;
    let started = tokio::time::Instant::now();
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    let elapsed = started.elapsed();
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(rsp.headers()["x-mesh-error"], "timeout");
    assert_eq!(attempts(&rsp), 1);
    assert!(client::text(rsp).await.contains("300ms"));
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1300),
        "answered after {elapsed:?}"
    );
}

/// A chunked POST of `chunks` to `/echo` through `orders`.
async fn post(orders: &Sidecar, chunks: Vec<Bytes>) -> http::Response<hyper::body::Incoming> {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(c)));
    let req = Request::post(format!("{}/echo", orders.outbound_url()))
        .header("host", "inventory")
        .body(StreamBody::new(tokio_stream::iter(frames)))
        .unwrap();
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    http.request(req).await.unwrap()
}

fn random_chunks(sizes: &[usize]) -> Vec<Bytes> {
    sizes
        .iter()
        .map(|n| Bytes::from((0..*n).map(|_| fastrand::u8(..)).collect::<Vec<u8>>()))
        .collect()
}

#[tokio::test]
async fn post_bodies_are_retried_only_when_allowed_and_replayed_byte_identical() {
    let mesh = TestMesh::new();
    // One app behind two sidecars: each retry reaches the other sidecar, the same app.
    let (app, faults) = app::faulty("inventory").await;
    let a = mesh.sidecar("inventory").app(app).start().await;
    let b = mesh.sidecar("inventory").app(app).start().await;
    let endpoints = [a.inbound, b.inbound];
    let backoff = "backoff: { base: 1ms, max: 2ms }";
    let default = orders(
        &mesh,
        &endpoints,
        &format!("retries: {{ attempts: 3, {backoff} }}"),
    )
    .await;
    let writes = orders(
        &mesh,
        &endpoints,
        &format!("load_balancer: round-robin\nretries: {{ attempts: 3, non_idempotent: true, max_buffered_body: 64KiB, {backoff} }}"),
    )
    .await;

    // By default a POST is not retried.
    faults.fail_next(1, 503);
    let rsp = post(&default, random_chunks(&[100])).await;
    assert_eq!(
        (rsp.status(), attempts(&rsp)),
        (StatusCode::SERVICE_UNAVAILABLE, 1)
    );
    assert_eq!(faults.requests(), 1);

    // With non_idempotent, a small chunked body is replayed, byte for byte, to the other endpoint.
    faults.fail_next(1, 503);
    let chunks = random_chunks(&[10_000, 1, 7_000, 20_000]);
    let sent: Vec<u8> = chunks.concat();
    let rsp = post(&writes, chunks).await;
    assert_eq!((rsp.status(), attempts(&rsp)), (StatusCode::OK, 2));
    let echoed = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.len(), sent.len());
    assert!(
        echoed == sent,
        "the replayed body differs from the one sent"
    );
    let m = writes.metrics().await;
    for e in endpoints {
        let series =
            format!(r#"mesh_endpoint_requests_total{{destination="inventory",endpoint="{e}"}}"#);
        assert_eq!(value(&m, &series), 1.0, "one try on each endpoint\n{m}");
    }

    // A streamed body over max_buffered_body is sent once, intact, and never retried.
    faults.fail_next(1, 503);
    let before = faults.requests();
    let rsp = post(&writes, random_chunks(&[32_768, 32_768, 32_768])).await;
    assert_eq!(
        (rsp.status(), attempts(&rsp)),
        (StatusCode::SERVICE_UNAVAILABLE, 1)
    );
    assert_eq!(faults.requests(), before + 1);
    faults.fail_next(0, 503);
    let chunks = random_chunks(&[40_000, 40_000, 40_000]);
    let sent: Vec<u8> = chunks.concat();
    let rsp = post(&writes, chunks).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(rsp.into_body().collect().await.unwrap().to_bytes() == sent);
}

#[tokio::test]
async fn max_requests_sheds_excess_at_once_without_queueing() {
    let mesh = TestMesh::new();
    let (addr, mut gate) = app::gated().await;
    let inventory = mesh.sidecar("inventory").app(addr).start().await;
    let orders = orders(
        &mesh,
        &[inventory.inbound],
        "circuit_breaker: { max_requests: 2, max_pending: 1 }",
    )
    .await;
    let url = format!("{}/held", orders.outbound_url());
    let send = || {
        let url = url.clone();
        tokio::spawn(async move {
            let rsp = client::get(&url, "inventory").await;
            let overloaded = rsp.headers().get("x-mesh-overloaded").cloned();
            (rsp.status(), overloaded)
        })
    };
    let held = [send(), send()];
    gate.arrived().await;
    gate.arrived().await;
    // Two in flight. Of the next two, one waits for a slot and one is shed at once.
    let (third, fourth) = (send(), send());
    let shed = eventually("a request to be shed", Duration::from_secs(5), || {
        let (t, f) = (third.is_finished(), fourth.is_finished());
        async move { (t || f).then_some(()) }
    });
    shed.await;
    gate.release(3);
    let mut results = Vec::new();
    for h in held.into_iter().chain([third, fourth]) {
        results.push(
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let shed: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(shed.len(), 1, "{results:?}");
    assert_eq!(shed[0].1.as_ref().unwrap(), "true");
    assert_eq!(
        results.iter().filter(|(s, _)| *s == StatusCode::OK).count(),
        3
    );
    let m = orders.metrics().await;
    assert_eq!(
        value(&m, r#"mesh_shed_requests_total{destination="inventory"}"#),
        1.0
    );
}

#[tokio::test]
async fn p2c_ewma_avoids_a_slow_endpoint_and_round_robin_spreads_evenly() {
    let mesh = TestMesh::new();
    let (faults, _inv, endpoints) = inventories(&mesh, 3).await;
    // Far slower than the others even on a machine so busy that every request takes tens of
    // milliseconds.
    faults[0].delay(Duration::from_millis(200));
    let p2c = orders(&mesh, &endpoints, "load_balancer: p2c-ewma").await;
    for _ in 0..150 {
        let rsp = client::get(&format!("{}/x", p2c.outbound_url()), "inventory").await;
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    let slow = faults[0].requests();
    assert!(slow < 15, "the slow endpoint got {slow} of 150 requests");

    // Round robin ignores latency: no need to wait for the slow endpoint any more.
    faults[0].delay(Duration::ZERO);
    let counts = |f: &[Arc<Faults>]| f.iter().map(|f| f.requests()).collect::<Vec<_>>();
    let before = counts(&faults);
    let rr = orders(&mesh, &endpoints, "load_balancer: round-robin").await;
    for _ in 0..150 {
        let rsp = client::get(&format!("{}/x", rr.outbound_url()), "inventory").await;
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    let spread: Vec<u64> = counts(&faults)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(spread, [50, 50, 50]);
}

#[tokio::test]
async fn a_dead_app_behind_a_live_sidecar_is_ejected_by_its_callers() {
    let mesh = TestMesh::new();
    let (_faults, _inv, mut endpoints) = inventories(&mesh, 2).await;
    // The sidecar is up; its app is not: every request gets 502 app-unavailable from it.
    let dead_app = mesh.sidecar("inventory").app(free_port()).start().await;
    endpoints.push(dead_app.inbound);
    let orders = orders(
        &mesh,
        &endpoints,
        "retries: { attempts: 3, retry_on: [gateway-error], backoff: { base: 1ms, max: 5ms } }\n\
         circuit_breaker: { consecutive_failures: 3, base_ejection_time: 30s }",
    )
    .await;
    let dead = format!(
        r#"mesh_ejections_total{{destination="inventory",endpoint="{}"}}"#,
        dead_app.inbound
    );
    // Bounded: p2c sends the slow, failing instance less and less, but it is still picked now
    // and then; three of those in a row eject it.
    for _ in 0..300 {
        let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
        assert_eq!(rsp.status(), StatusCode::OK, "retried onto a live instance");
        if value(&orders.metrics().await, &dead) >= 1.0 {
            return;
        }
    }
    panic!(
        "not ejected after 300 requests:\n{}",
        orders.metrics().await
    );
}
