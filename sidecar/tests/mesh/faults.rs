//! Fault injection: delays and aborts the caller's sidecar injects, counted and on the span,
//! with the apps unchanged.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use mesh_testkit::app::{self, Faults};
use mesh_testkit::otlp::Collector;
use mesh_testkit::{Sidecar, TestMesh, client, metrics};
use tokio::time::Instant;

/// A faulty inventory app behind its sidecar, and an orders sidecar calling it with `policy`
/// (and `extra` bootstrap lines).
async fn setup(policy: &str, extra: &str) -> (TestMesh, std::sync::Arc<Faults>, Sidecar, Sidecar) {
    let mesh = TestMesh::new();
    let (addr, faults) = app::faulty("inventory").await;
    let inventory = mesh.sidecar("inventory").app(addr).start().await;
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy("inventory", &[inventory.inbound], policy)
        .extra_yaml(extra)
        .start()
        .await;
    (mesh, faults, inventory, orders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_on_half_the_requests_adds_its_time_to_about_half() {
    let (_mesh, _faults, _inventory, orders) = setup(
        "routes:\n\
         - name: slow-stock\n\
         \x20 matches: [{ path: { value: /stock } }]\n\
         \x20 fault: { delay: { fixedDelay: 200ms, percentage: 50 } }\n",
        "",
    )
    .await;
    // 200 requests, ten at a time, so the delays overlap without loading the machine enough
    // to slow the others down to 200ms.
    let n = 200;
    let url = format!("{}/stock/1", orders.outbound_url());
    let mut delayed = 0;
    for _ in 0..n / 10 {
        let wave: Vec<_> = (0..10)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let rsp = client::get(&url, "inventory").await;
                    assert_eq!(rsp.status(), StatusCode::OK);
                    started.elapsed()
                })
            })
            .collect();
        for task in wave {
            let elapsed = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .unwrap()
                .unwrap();
            if elapsed >= Duration::from_millis(200) {
                delayed += 1;
            }
        }
    }
    let m = orders.metrics().await;
    let counted = metrics::value(
        &m,
        r#"mesh_faults_injected_total{destination="inventory",route="slow-stock",kind="delay"}"#,
    )
    .unwrap_or_else(|| panic!("no delay count in\n{m}"));
    // Half of 200 is 100, with a standard deviation of about 7: ±35 is 5 of them.
    assert!(
        (65.0..=135.0).contains(&counted),
        "{counted} of {n} delayed"
    );
    // Every delayed request took its 200ms more; a request not delayed may rarely take as long
    // on a loaded machine, so a few more may be seen slow than were delayed.
    let counted = counted as usize;
    assert!(
        (counted..=counted + 5).contains(&delayed),
        "{counted} delayed, {delayed} seen taking 200ms or more"
    );
    // Off the route, nothing is delayed.
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            client::get(&format!("{}/other", orders.outbound_url()), "inventory")
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[tokio::test]
async fn an_abort_answers_for_the_destination_with_the_mesh_reason_counted_and_on_the_span() {
    let collector = Collector::start().await;
    let tracing = format!(
        "tracing: {{ otlp_endpoint: \"http://{}\", protocol: grpc }}\n",
        collector.grpc
    );
    let (_mesh, faults, _inventory, orders) = setup(
        "fault: { abort: { httpStatus: 503, percentage: 100 } }\n\
         routes:\n\
         - name: grpc-stock\n\
         \x20 matches: [{ path: { value: /stock.Stock } }]\n\
         \x20 fault: { abort: { grpcStatus: UNAVAILABLE } }\n",
        &tracing,
    )
    .await;

    let rsp = client::get(&format!("{}/products", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers()["x-mesh-error"], "fault-injected");
    assert_eq!(
        client::text(rsp).await,
        "fault injected by the mesh: abort with 503\n"
    );
    // A gRPC route's abort is a gRPC answer: 200 with grpc-status in the headers.
    let rsp = client::h2_request(
        orders.outbound,
        Request::post("http://inventory/stock.Stock/Get")
            .header("content-type", "application/grpc")
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(rsp.status(), StatusCode::OK, "{:?}", rsp.headers());
    assert_eq!(rsp.headers()["grpc-status"], "14");
    assert_eq!(rsp.headers()["content-type"], "application/grpc");
    // The app never saw either request.
    assert_eq!(faults.requests(), 0);

    let m = orders.metrics().await;
    for series in [
        r#"mesh_faults_injected_total{destination="inventory",route="",kind="abort"} 1"#,
        r#"mesh_faults_injected_total{destination="inventory",route="grpc-stock",kind="abort"} 1"#,
        r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="503"} 1"#,
    ] {
        assert!(m.contains(series), "{series} in\n{m}");
    }
    let spans = collector.wait_for(2, Duration::from_secs(15)).await;
    let aborted: Vec<_> = spans
        .iter()
        .filter_map(|s| s.attr("mesh.fault.abort"))
        .collect();
    assert!(aborted.contains(&"503".to_owned()), "{spans:#?}");
    assert!(aborted.contains(&"grpc:14".to_owned()), "{spans:#?}");
    let http = spans
        .iter()
        .find(|s| s.attr("mesh.fault.abort").as_deref() == Some("503"))
        .unwrap();
    assert_eq!(http.attr("error.type").as_deref(), Some("fault-injected"));
}
