//! Mirroring: a route's `RequestMirror` copies requests to a shadow service, fire and forget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mesh_testkit::otlp::Collector;
use mesh_testkit::{Sidecar, TestMesh, app, client, eventually, metrics};
use tokio::sync::{mpsc, watch};

/// What the shadow app saw of one request: its path, `x-mesh-mirror`, and its body's length.
type Seen = (String, Option<String>, usize);

/// How the shadow app behaves, changeable while it runs.
struct Shadow {
    /// While `true`, the shadow holds each answer until this turns `false`.
    held: watch::Sender<bool>,
    failing: AtomicBool,
}

impl Default for Shadow {
    fn default() -> Self {
        Self {
            held: watch::channel(false).0,
            failing: AtomicBool::default(),
        }
    }
}

/// A shadow app that reports what it sees, holds its answer while `held` and fails with 500
/// while `failing`.
async fn shadow_app(shadow: Arc<Shadow>) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = app::start(move |req: Request<hyper::body::Incoming>| {
        let (tx, shadow) = (tx.clone(), shadow.clone());
        async move {
            let path = req.uri().path().to_owned();
            let mark = req
                .headers()
                .get("x-mesh-mirror")
                .map(|v| v.to_str().unwrap().to_owned());
            let len = req
                .into_body()
                .collect()
                .await
                .map_or(0, |b| b.to_bytes().len());
            let _ = tx.send((path, mark, len));
            // As things stood when the request arrived.
            let status = if shadow.failing.load(Ordering::SeqCst) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            let _ = shadow.held.subscribe().wait_for(|held| !held).await;
            let mut rsp = Response::new(
                Full::new(Bytes::from_static(b"shadow\n"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *rsp.status_mut() = status;
            rsp
        }
    })
    .await;
    (addr, rx)
}

/// Sends `method` `path` with `body` from orders to inventory: the status and the body, within
/// 10 s (a caller that waited for a held mirror copy would not answer in time).
async fn call(
    orders: &Sidecar,
    method: Method,
    path: &str,
    body: &'static [u8],
) -> (StatusCode, String) {
    let exchange = async {
        let rsp = client::http1()
            .request(
                Request::builder()
                    .method(method)
                    .uri(format!("{}{path}", orders.outbound_url()))
                    .header("host", "inventory")
                    .body(Full::new(Bytes::from_static(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = rsp.status();
        (status, client::text(rsp).await)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_copies_every_request_and_its_latency_and_failures_never_reach_the_caller() {
    let collector = Collector::start().await;
    let tracing = format!(
        "tracing: {{ otlp_endpoint: \"http://{}\", protocol: grpc }}\n",
        collector.grpc
    );
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .start()
        .await;
    let shadow = Arc::new(Shadow::default());
    let (shadow_addr, mut seen) = shadow_app(shadow.clone()).await;
    let shadow_sidecar = mesh
        .sidecar("inventory-shadow")
        .app(shadow_addr)
        .start()
        .await;
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy(
            "inventory",
            &[inventory.inbound],
            "retries: { max_buffered_body: 1KiB }\n\
             routes:\n\
             - name: stock\n\
             \x20 matches: [{ path: { value: /stock } }]\n\
             \x20 filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: inventory-shadow }, percent: 100 } }]\n",
        )
        .destination("inventory-shadow", &[shadow_sidecar.inbound])
        .extra_yaml(&tracing)
        .start()
        .await;

    // Every request reaches the shadow, marked, with its body when it fits the replay buffer.
    for i in 0..10 {
        let (status, body) = call(&orders, Method::GET, &format!("/stock/{i}"), b"").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"service\": \"inventory\""), "{body}");
    }
    let (status, _) = call(&orders, Method::POST, "/stock/post", b"twelve bytes").await;
    assert_eq!(status, StatusCode::OK);
    let mut copies = Vec::new();
    for _ in 0..11 {
        let copy = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .unwrap()
            .unwrap();
        copies.push(copy);
    }
    copies.sort();
    assert!(
        copies
            .iter()
            .all(|(_, mark, _)| mark.as_deref() == Some("1")),
        "{copies:?}"
    );
    assert!(
        copies.contains(&("/stock/post".into(), Some("1".into()), 12)),
        "{copies:?}"
    );
    // A body longer than the buffer reaches the destination, and no copy goes out.
    let big: &'static [u8] = Box::leak(vec![b'x'; 4096].into_boxed_slice());
    let (status, body) = call(&orders, Method::POST, "/stock/big", big).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"body_bytes\": 4096"), "{body}");
    // Off the route, nothing is copied.
    call(&orders, Method::GET, "/other", b"").await;

    // A shadow that does not answer until the test lets it: every call is answered while all
    // the copies are held, so the caller does not wait for them.
    shadow.held.send_replace(true);
    for _ in 0..5 {
        let (status, _) = call(&orders, Method::GET, "/stock/slow", b"").await;
        assert_eq!(status, StatusCode::OK);
    }
    for _ in 0..5 {
        let copy = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
        assert_eq!(copy.unwrap().unwrap().0, "/stock/slow");
    }
    shadow.held.send_replace(false);
    // A failing shadow: the caller sees nothing of it either.
    shadow.failing.store(true, Ordering::SeqCst);
    for _ in 0..10 {
        let (status, _) = call(&orders, Method::GET, "/stock/fail", b"").await;
        assert_eq!(status, StatusCode::OK);
    }

    let labels = r#"destination="inventory",route="stock",mirror="inventory-shadow""#;
    eventually(
        "every copy answered and counted",
        Duration::from_secs(15),
        || async {
            let m = orders.metrics().await;
            let count = |result: &str| {
                metrics::value(
                    &m,
                    &format!("mesh_mirrored_requests_total{{{labels},result=\"{result}\"}}"),
                )
            };
            (count("2xx") == Some(16.0) && count("5xx") == Some(10.0)).then_some(())
        },
    )
    .await;
    let m = orders.metrics().await;
    assert_eq!(
        metrics::value(
            &m,
            &format!("mesh_mirrored_requests_total{{{labels},result=\"body-not-copied\"}}")
        ),
        Some(1.0),
        "{m}"
    );
    // The primary requests all succeeded; the copies are not requests of the caller's.
    assert_eq!(
        metrics::value(
            &m,
            r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="200"}"#
        ),
        Some(28.0),
        "{m}"
    );

    // Each copy has a span of its own in the caller's trace.
    let spans = collector.wait_for(20, Duration::from_secs(15)).await;
    let mirror_spans: Vec<_> = spans
        .iter()
        .filter(|s| s.attr("mesh.mirror").as_deref() == Some("true"))
        .collect();
    assert!(!mirror_spans.is_empty(), "{spans:#?}");
    let copy = mirror_spans[0];
    assert_eq!(
        copy.attr("mesh.destination.service").as_deref(),
        Some("inventory-shadow")
    );
    let parent = spans
        .iter()
        .find(|s| s.span.span_id == copy.span.parent_span_id)
        .expect("the copy's parent is the caller's request span");
    assert_eq!(parent.attr("mesh.route").as_deref(), Some("stock"));
    assert!(parent.attr("mesh.mirror").is_none());
}
