//! Traces across sidecars: one trace through three services, spans exported over OTLP (gRPC and
//! HTTP/protobuf) to a real receiver, B3 continuity, and export failures that cost no request.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use mesh_testkit::otlp::{Collector, ReceivedSpan};
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{TestMesh, app, client, eventually, free_port};

const CLIENT: i32 = 3;
const SERVER: i32 = 2;
const STATUS_ERROR: i32 = 2;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn find<'a>(spans: &'a [ReceivedSpan], service: &str, kind: i32) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && s.span.kind == kind)
        .collect()
}

#[tokio::test]
async fn one_trace_across_three_services_with_a_retry_event() {
    let collector = Collector::start().await;
    let mesh = TestMesh::new();
    let grpc = format!(
        "tracing: {{ otlp_endpoint: \"http://{}\", protocol: grpc }}\n",
        collector.grpc
    );
    let http = format!(
        "tracing: {{ otlp_endpoint: \"http://{}\", protocol: http/protobuf }}\n",
        collector.http
    );
    // c fails its first request; b's sidecar retries it.
    let (c_app, c_faults) = app::faulty("c").await;
    c_faults.fail_next(1, 503);
    let c = mesh.sidecar("c").app(c_app).extra_yaml(&grpc).start().await;
    // b relays to c through its own sidecar, forwarding the trace headers.
    let b_next = Arc::new(OnceLock::new());
    let b_app = app::relay("c", b_next.clone()).await;
    let b = mesh
        .sidecar("b")
        .app(b_app)
        .extra_yaml(&http)
        .destination_with_policy(
            "c",
            &[c.inbound],
            "retries: { attempts: 2, backoff: { base: 1ms, max: 2ms } }\n\
             routes: [{ name: orders, match: { path_prefix: /order } }]",
        )
        .start()
        .await;
    b_next.set(b.outbound).unwrap();
    // a relays to b; the test calls app a directly, as a user would.
    let a_next = Arc::new(OnceLock::new());
    let a_app = app::relay("b", a_next.clone()).await;
    let a = mesh
        .sidecar("a")
        .app(a_app)
        .extra_yaml(&grpc)
        .destination("b", &[b.inbound])
        .start()
        .await;
    a_next.set(a.outbound).unwrap();

    let rsp = client::get_url(&format!("http://{a_app}/order/7")).await;
    assert_eq!(rsp.status(), StatusCode::OK);

    let spans = collector.wait_for(5, Duration::from_secs(15)).await;
    let trace_ids: std::collections::BTreeSet<_> =
        spans.iter().map(|s| hex(&s.span.trace_id)).collect();
    assert_eq!(trace_ids.len(), 1, "one trace: {spans:#?}");

    let (a_client, b_server, b_client, c_servers) = (
        find(&spans, "a", CLIENT),
        find(&spans, "b", SERVER),
        find(&spans, "b", CLIENT),
        find(&spans, "c", SERVER),
    );
    assert_eq!(
        (
            a_client.len(),
            b_server.len(),
            b_client.len(),
            c_servers.len()
        ),
        (1, 1, 1, 2),
        "{spans:#?}"
    );
    let (a_client, b_server, b_client) = (a_client[0], b_server[0], b_client[0]);
    // The request started the trace at a's sidecar.
    assert!(a_client.span.parent_span_id.is_empty());
    assert_eq!(b_server.span.parent_span_id, a_client.span.span_id);
    // App b forwarded the headers, so its call is a child of b's SERVER span.
    assert_eq!(b_client.span.parent_span_id, b_server.span.span_id);
    for c_server in &c_servers {
        assert_eq!(c_server.span.parent_span_id, b_client.span.span_id);
    }

    // b's call took the `orders` route of its destination c; a's destination has no routes.
    assert_eq!(b_client.attr("mesh.route").as_deref(), Some("orders"));
    assert_eq!(a_client.attr("mesh.route"), None);
    assert_eq!(a_client.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(a_client.attr("url.path").as_deref(), Some("/order/7"));
    assert_eq!(a_client.attr("server.address").as_deref(), Some("b"));
    assert_eq!(
        a_client.attr("mesh.destination.service").as_deref(),
        Some("b")
    );
    assert_eq!(
        a_client.attr("mesh.source.identity").as_deref(),
        Some("spiffe://mesh.local/ns/default/sa/a")
    );
    assert_eq!(
        a_client.attr("mesh.destination.endpoint"),
        Some(b.inbound.to_string())
    );
    assert_eq!(
        a_client.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        b_server.attr("mesh.source.identity").as_deref(),
        Some("spiffe://mesh.local/ns/default/sa/a")
    );
    assert_eq!(
        b_server.attr("network.peer.address").as_deref(),
        Some("127.0.0.1")
    );

    // b's client span shows the retry: two tries, a retry event with its reason.
    assert_eq!(b_client.attr("mesh.attempts").as_deref(), Some("2"));
    assert_eq!(
        b_client.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(b_client.events(), ["attempt", "retry", "attempt"]);
    let retry = &b_client.span.events[1];
    let reason = retry
        .attributes
        .iter()
        .find(|kv| kv.key == "mesh.retry.reason");
    assert!(format!("{reason:?}").contains("gateway-error"), "{retry:?}");

    // c's first SERVER span is the failure, marked as an error.
    let failed: Vec<_> = c_servers
        .iter()
        .filter(|s| s.attr("http.response.status_code").as_deref() == Some("503"))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attr("error.type").as_deref(), Some("503"));
    assert_eq!(
        failed[0].span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
}

#[tokio::test]
async fn b3_in_w3c_and_b3_out() {
    let mesh = TestMesh::new();
    let (orders, _inventory) = mesh.pair(|o| o, |i| i).await;
    let req = http::Request::get(format!("{}/x", orders.outbound_url()))
        .header("host", "inventory")
        .header("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")
        .body(http_body_util::Full::default())
        .unwrap();
    let seen = client::json(client::http1().request(req).await.unwrap()).await;
    let traceparent = seen["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    // The 64-bit B3 trace continues, widened, in W3C form, sampled.
    assert_eq!(parts[1], "0000000000000000a3ce929d0e0e4736");
    assert_eq!(parts[3], "01");
    // The app also gets B3 back, naming the span of inventory's sidecar.
    let b3 = seen["headers"]["b3"][0].as_str().unwrap();
    assert_eq!(b3, format!("{}-{}-1", parts[1], parts[2]));
    assert_ne!(parts[2], "00f067aa0ba902b7");
}

#[tokio::test]
async fn a_collector_that_is_down_costs_spans_not_requests() {
    let mesh = TestMesh::new();
    let down = format!(
        "tracing: {{ otlp_endpoint: \"http://{}\", max_queue: 2 }}\n",
        free_port()
    );
    let (orders, _inventory) = mesh
        .pair(|o| o.extra_yaml(&down), |i| i.extra_yaml(&down))
        .await;
    for _ in 0..30 {
        let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    let url = orders.admin_url("/metrics");
    eventually(
        "dropped spans to be counted",
        Duration::from_secs(15),
        || {
            let url = url.clone();
            async move {
                let text = client::text(client::get_url(&url).await).await;
                let dropped: f64 = text
                    .lines()
                    .filter(|l| l.starts_with("mesh_spans_dropped_total"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                (dropped >= 1.0).then_some(())
            }
        },
    )
    .await;
}

/// The `rotel-agent` OTLP collector: `$ROTEL_AGENT`, on the PATH, or inside PyPI's `rotel`
/// package (`pip install rotel`, which `.ci/run` does).
fn rotel_agent() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("ROTEL_AGENT") {
        return Some(path.into());
    }
    if std::process::Command::new("rotel-agent")
        .arg("--version")
        .output()
        .is_ok()
    {
        return Some("rotel-agent".into());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .ok()?;
    let path = std::path::PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.exists().then_some(path)
}

#[tokio::test]
async fn spans_reach_a_separate_collector_process() {
    let Some(agent) = rotel_agent() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "rotel-agent is required in CI"
        );
        eprintln!("rotel-agent not found; `pip install rotel` to run this test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rotel.log");
    let (grpc, http) = (free_port(), free_port());
    let _rotel = KillOnDrop::new(
        std::process::Command::new(agent)
            .args(["start", "--exporter", "blackhole", "--debug-log", "traces"])
            .arg("--otlp-grpc-endpoint")
            .arg(grpc.to_string())
            .arg("--otlp-http-endpoint")
            .arg(http.to_string())
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("rotel to listen", Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(grpc).await.ok().map(|_| ())
    })
    .await;

    let mesh = TestMesh::new();
    let tracing = format!("tracing: {{ otlp_endpoint: \"http://{grpc}\" }}\n");
    let (orders, _inventory) = mesh
        .pair(|o| o.extra_yaml(&tracing), |i| i.extra_yaml(&tracing))
        .await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    eventually(
        "rotel to log the received traces",
        Duration::from_secs(20),
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.contains("Received traces").then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_access_log_is_one_json_line_per_request() {
    use std::io::{BufRead, BufReader};
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .start()
        .await;
    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let config = mesh
        .sidecar("orders")
        .extra_yaml("access_log: true\n")
        .destination_with_policy(
            "inventory",
            &[inventory.inbound],
            "routes: [{ name: stock, match: { methods: [GET], path_prefix: /api/stock } }]",
        )
        .write_config(outbound, inbound, admin);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop::new(child);
    let stdout = child.stdout.take().unwrap();
    let ready = format!("http://{admin}/ready");
    eventually("the sidecar to be ready", Duration::from_secs(10), || {
        let url = ready.clone();
        async move {
            let req = http::Request::get(url)
                .body(http_body_util::Full::default())
                .ok()?;
            client::http1()
                .request(req)
                .await
                .ok()
                .filter(|r| r.status() == StatusCode::OK)
                .map(|_| ())
        }
    })
    .await;
    let req = http::Request::get(format!("http://{outbound}/api/stock/abc"))
        .header("host", "inventory")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(
        client::http1().request(req).await.unwrap().status(),
        StatusCode::OK
    );
    // Reading blocks; the line was written before the response, so it is there.
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(10), line)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["direction"], "outbound");
    assert_eq!(entry["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(entry["source"], "spiffe://mesh.local/ns/default/sa/orders");
    assert_eq!(entry["destination"], "inventory");
    assert_eq!(entry["route"], "stock");
    assert_eq!(
        (entry["method"].as_str(), entry["path"].as_str()),
        (Some("GET"), Some("/api/stock/abc"))
    );
    assert_eq!(
        (entry["status"].as_u64(), entry["attempts"].as_u64()),
        (Some(200), Some(1))
    );
    assert!(entry["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));
}
