//! The demo mesh with a real Jaeger (built by `scripts/build-jaeger.sh`), as `meshctl up
//! --jaeger` runs it: one order placed through the gateway, while payments fails exactly once,
//! is one trace in Jaeger's query API, rooted at the gateway, with spans from every service on
//! the order's path, each span the child of the
//! one before it, the mesh's attributes on them, and the retry as a span event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_testkit::{eventually, free_port};
use meshctl::http::HttpClient;
use meshctl::up::{JaegerSpec, TracingSpec, UpOptions};
use serde_json::Value;

use self::common::{require_binaries, required_in_ci, service};

/// Every service an order passes through: the gateway calls the storefront, which calls
/// orders, which reserves stock (inventory), charges (payments) and notifies (notifications).
const ORDER_PATH: [&str; 6] = [
    "gateway",
    "storefront",
    "orders",
    "inventory",
    "payments",
    "notifications",
];

/// A tag's value on a Jaeger span.
fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_in_jaeger_with_every_hop_and_its_retry() {
    let jaeger_bin = meshctl::up::jaeger::find_binary();
    if !required_in_ci(
        "the Jaeger binary",
        jaeger_bin.is_some(),
        "run scripts/build-jaeger.sh",
    ) {
        return;
    }
    let bins = require_binaries();
    let run_dir = tempfile::tempdir().unwrap();
    let config = common::demo_config(
        run_dir.path(),
        Some(TracingSpec {
            otlp_endpoint: format!("http://{}", free_port()),
            protocol: "grpc".into(),
        }),
        ORDER_PATH[1..].iter().map(|s| service(s, 1)).collect(),
    );
    let mut options = UpOptions::new(&bins);
    options.jaeger = Some(JaegerSpec {
        bin: jaeger_bin.unwrap(),
        query: free_port(),
    });
    let mut mesh = meshctl::up::up(&config, &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let jaeger = mesh.jaeger().unwrap().url();
    let report = meshctl::up::report(&mesh);
    assert!(report.contains(&format!("Jaeger at {jaeger}/")), "{report}");
    let manifest = meshctl::up::Manifest::load(run_dir.path()).unwrap();
    assert_eq!(manifest.jaeger_url.as_deref(), Some(jaeger.as_str()));

    // Payments' next answer is a 503: the orders sidecar retries, and the order succeeds.
    let client = HttpClient::new(Duration::from_secs(15));
    let payments = mesh.instances_of("payments").next().unwrap().app_url();
    common::set_faults(&client, &payments, serde_json::json!({"fail_next": 1})).await;
    let shop = mesh.gateway_url();
    assert_eq!(manifest.entry_url().as_deref(), Some(shop.as_str()));
    let products = client.get(&format!("{shop}/api/products")).await.unwrap();
    let sku = products.json()[0]["sku"].as_str().unwrap().to_owned();
    let order = client
        .json(
            Method::POST,
            &format!("{shop}/api/orders"),
            &serde_json::json!({"customer": "traced", "items": [{"sku": sku, "qty": 1}]}),
        )
        .await
        .unwrap();
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.text());

    // Jaeger has exactly one storefront trace, the order's, once every hop's spans are in.
    let search = format!("{jaeger}/api/traces?service=storefront&limit=20");
    let trace = eventually(
        "Jaeger to hold the order's trace with every service and the retry",
        Duration::from_secs(20),
        || async {
            let r = client.get(&search).await.map_err(|e| e.to_string())?;
            if r.status != StatusCode::OK {
                return Err(format!("{}: {}", r.status, r.text()));
            }
            let traces = r.json()["data"].as_array().cloned().unwrap_or_default();
            // The products listing is a trace of its own; the order's is the one with orders.
            let with_orders: Vec<Value> = traces
                .into_iter()
                .filter(|t| {
                    t["processes"]
                        .as_object()
                        .is_some_and(|p| p.values().any(|p| p["serviceName"] == "orders"))
                })
                .collect();
            let [trace] = with_orders.as_slice() else {
                return Err(format!("{} order traces", with_orders.len()));
            };
            let services: BTreeSet<String> = trace["processes"]
                .as_object()
                .unwrap()
                .values()
                .map(|p| p["serviceName"].as_str().unwrap_or("").to_owned())
                .collect();
            let retried = trace["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| {
                    s["logs"].as_array().is_some_and(|logs| {
                        logs.iter().any(|l| {
                            l["fields"].as_array().is_some_and(|f| {
                                f.iter()
                                    .any(|f| f["key"] == "event" && f["value"] == "retry")
                            })
                        })
                    })
                })
            });
            if ORDER_PATH.iter().all(|s| services.contains(*s)) && retried {
                Ok(trace.clone())
            } else {
                Err(format!("services {services:?}, retry event: {retried}"))
            }
        },
    )
    .await;

    let spans = trace["spans"].as_array().unwrap();
    let trace_id = trace["traceID"].as_str().unwrap();
    let process_service = |s: &Value| -> String {
        let p = s["processID"].as_str().unwrap();
        trace["processes"][p]["serviceName"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanID"].as_str().unwrap(), s))
        .collect();
    // One root: the gateway's CLIENT span for its call to the storefront. Every other span
    // names a parent in the same trace.
    let mut roots = Vec::new();
    for span in spans {
        assert_eq!(span["traceID"], trace_id);
        let parents: Vec<&Value> = span["references"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["refType"] == "CHILD_OF")
            .collect();
        match parents.as_slice() {
            [] => roots.push(span),
            [parent] => {
                assert_eq!(parent["traceID"], trace_id);
                let id = parent["spanID"].as_str().unwrap();
                assert!(
                    by_id.contains_key(id),
                    "span {} ({}) has parent {id}, which is not in the trace",
                    span["operationName"],
                    process_service(span)
                );
            }
            more => panic!("span with {} parents: {span}", more.len()),
        }
    }
    assert_eq!(roots.len(), 1, "roots: {roots:#?}");
    assert_eq!(process_service(roots[0]), "gateway");
    assert_eq!(
        tag(roots[0], "span.kind").and_then(Value::as_str),
        Some("client")
    );
    assert_eq!(
        tag(roots[0], "mesh.destination.service").and_then(Value::as_str),
        Some("storefront")
    );

    // Each inbound (SERVER) span is the child of the caller's outbound (CLIENT) span, which
    // named that service as its destination.
    for span in spans {
        if tag(span, "span.kind").and_then(Value::as_str) != Some("server") {
            continue;
        }
        let parent = span["references"][0]["spanID"].as_str().unwrap();
        let parent = by_id[parent];
        assert_eq!(
            tag(parent, "span.kind").and_then(Value::as_str),
            Some("client")
        );
        assert_eq!(
            tag(parent, "mesh.destination.service").and_then(Value::as_str),
            Some(process_service(span).as_str()),
            "{parent}"
        );
        assert!(
            tag(span, "mesh.source.identity")
                .and_then(Value::as_str)
                .is_some_and(|id| id.starts_with("spiffe://")),
            "{span}"
        );
    }
    for span in spans {
        assert!(tag(span, "http.request.method").is_some(), "{span}");
        assert!(tag(span, "http.response.status_code").is_some(), "{span}");
    }

    // The call to payments took two tries, and its span says so.
    let to_payments = spans
        .iter()
        .find(|s| {
            tag(s, "span.kind").and_then(Value::as_str) == Some("client")
                && tag(s, "mesh.destination.service").and_then(Value::as_str) == Some("payments")
        })
        .unwrap();
    assert_eq!(
        tag(to_payments, "mesh.attempts").and_then(Value::as_i64),
        Some(2),
        "{to_payments}"
    );
    assert_eq!(
        tag(to_payments, "http.response.status_code").and_then(Value::as_i64),
        Some(201),
        "{to_payments}"
    );
    let events: Vec<(String, Option<String>)> = to_payments["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let field = |key: &str| {
                l["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["key"] == key)
                    .and_then(|f| f["value"].as_str())
                    .map(str::to_owned)
            };
            (
                field("event").unwrap_or_default(),
                field("mesh.retry.reason"),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("attempt".to_owned(), None),
            ("retry".to_owned(), Some("gateway-error".to_owned())),
            ("attempt".to_owned(), None),
        ],
        "{to_payments}"
    );

    let killed = mesh.stop().await;
    assert!(killed.is_empty(), "had to be killed: {killed:?}");
}
