//! Plain connections from outside the mesh to the inbound port: refused by default
//! (`authorization.unauthenticated: deny`), served with no caller identity when allowed, while
//! peer sidecars keep using mTLS on the same port.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use mesh_testkit::tcp::{self, Seen};
use mesh_testkit::{Sidecar, TestMesh, app, client, metrics};

use crate::{ORDERS_ID, calling_inventory};

const PATIENCE: Duration = Duration::from_secs(10);

const FORGED_ID: &str = "spiffe://mesh.local/ns/default/sa/payments";

/// An `inventory` sidecar in front of `app` with `authorization` as its block.
async fn inventory(mesh: &TestMesh, app: std::net::SocketAddr, authorization: &str) -> Sidecar {
    mesh.sidecar("inventory")
        .app(app)
        .extra_yaml(&format!("authorization: {authorization}\n"))
        .start()
        .await
}

/// `req` over HTTP/1.1 straight to the sidecar's inbound port, no TLS.
async fn plain_http1(
    sidecar: &Sidecar,
    req: Request<Full<Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = format!("http://{}{path}", sidecar.inbound).parse().unwrap();
    client::http1()
        .request(Request::from_parts(parts, body))
        .await
        .unwrap()
}

/// `req` over HTTP/2 with prior knowledge (h2c) straight to the sidecar's inbound port.
async fn plain_h2(
    sidecar: &Sidecar,
    req: Request<Full<Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    client::h2_request(sidecar.inbound, req).await
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://inventory{path}"))
        .header("x-mesh-client-id", FORGED_ID)
        .body(Full::default())
        .unwrap()
}

async fn metric(sidecar: &Sidecar, series: &str) -> Option<f64> {
    metrics::value(&sidecar.metrics().await, series)
}

const DENIED: &str = r#"mesh_authorization_denied_total{source="unauthenticated"}"#;

#[tokio::test]
async fn plain_http1_and_h2c_are_refused_with_403_unauthenticated_by_default() {
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .start()
        .await;
    for rsp in [
        plain_http1(&inventory, get("/x")).await,
        plain_h2(&inventory, get("/x")).await,
    ] {
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
        assert_eq!(rsp.headers()["x-mesh-error"], "unauthenticated");
        let body = client::text(rsp).await;
        assert!(body.contains("takes only mesh mTLS"), "{body}");
        assert!(
            body.contains("authorization.unauthenticated: allow"),
            "{body}"
        );
    }
    assert_eq!(metric(&inventory, DENIED).await, Some(2.0));
    let refused = r#"mesh_requests_total{direction="inbound",source="unauthenticated",destination="inventory",status_code="403"}"#;
    assert_eq!(metric(&inventory, refused).await, Some(2.0));
}

#[tokio::test]
async fn allowed_plain_clients_reach_the_app_with_no_identity_beside_mtls_peers() {
    let mesh = TestMesh::new();
    let inventory = inventory(
        &mesh,
        app::echo("inventory").await,
        "{ unauthenticated: allow }",
    )
    .await;
    let orders = calling_inventory(&mesh, "orders", &inventory).await;
    // All three at once on the same port: plain HTTP/1.1, h2c, and a peer over mTLS.
    let meshed_url = format!("{}/meshed", orders.outbound_url());
    let (http1, h2, meshed) = tokio::join!(
        plain_http1(&inventory, get("/plain1")),
        plain_h2(&inventory, get("/plain2")),
        client::get(&meshed_url, "inventory"),
    );
    for (rsp, version) in [(http1, "HTTP/1.1"), (h2, "HTTP/2.0")] {
        assert_eq!(rsp.status(), StatusCode::OK);
        let seen = client::json(rsp).await;
        assert_eq!(seen["version"], version);
        // The forged identity did not reach the app, and none replaced it.
        assert_eq!(seen["caller"], serde_json::Value::Null, "{seen}");
        assert!(seen["headers"].get("x-mesh-client-id").is_none(), "{seen}");
    }
    assert_eq!(meshed.status(), StatusCode::OK);
    assert_eq!(client::json(meshed).await["caller"], ORDERS_ID);
    let text = inventory.metrics().await;
    let plain = r#"mesh_requests_total{direction="inbound",source="unauthenticated",destination="inventory",status_code="200"}"#;
    let peer = r#"mesh_requests_total{direction="inbound",source="orders",destination="inventory",status_code="200"}"#;
    assert_eq!(metrics::value(&text, plain), Some(2.0), "{text}");
    assert_eq!(metrics::value(&text, peer), Some(1.0), "{text}");
    assert_eq!(metrics::value(&text, DENIED), None, "{text}");
}

/// An HTTP/2 app that answers with the request's trailers as `name=value` lines.
async fn trailer_reporting_app() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                let trailers = req.into_body().collect().await?.trailers().cloned();
                let lines: String = trailers
                    .iter()
                    .flatten()
                    .map(|(name, value)| format!("{name}={}\n", value.to_str().unwrap_or("?")))
                    .collect();
                Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(lines))))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn an_identity_forged_in_a_plain_clients_trailers_does_not_reach_the_app() {
    let mesh = TestMesh::new();
    let inventory = inventory(
        &mesh,
        trailer_reporting_app().await,
        "{ unauthenticated: allow }",
    )
    .await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-mesh-client-id", FORGED_ID.parse().unwrap());
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames = tokio_stream::iter([
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"order"))),
        Ok(Frame::trailers(trailers)),
    ]);
    let req = Request::post("http://inventory/orders")
        .body(StreamBody::new(frames))
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(inventory.inbound)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let rsp = sender.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(std::str::from_utf8(&seen).unwrap(), "x-checksum=abc\n");
}

/// Bytes that are neither a TLS handshake nor HTTP: a RESP command.
const OPAQUE: &[u8] = b"*1\r\n$4\r\nPING\r\n";

#[tokio::test]
async fn allowed_plain_tcp_reaches_the_app_and_denied_is_closed() {
    let mesh = TestMesh::new();
    let (app, mut seen) = tcp::reply_at_eof().await;
    let open = inventory(&mesh, app, "{ unauthenticated: allow }").await;
    let reply = tcp::round_trip(open.inbound, OPAQUE, PATIENCE)
        .await
        .unwrap();
    assert_eq!(reply, OPAQUE);
    assert_eq!(seen.recv().await, Some(Seen::Read(OPAQUE.len())));
    assert_eq!(seen.recv().await, Some(Seen::Eof));
    let streams = r#"mesh_tcp_connections_opened_total{direction="inbound",source="unauthenticated",destination="inventory"}"#;
    assert_eq!(metric(&open, streams).await, Some(1.0));

    // The same app behind a sidecar with the default: closed before the app hears of it.
    let closed = inventory(&mesh, app, "{ default: allow }").await;
    let reply = tcp::round_trip(closed.inbound, OPAQUE, PATIENCE).await;
    assert!(
        reply.as_ref().is_ok_and(Vec::is_empty) || reply.is_err(),
        "{reply:?}"
    );
    assert_eq!(metric(&closed, DENIED).await, Some(1.0));
    // The allowed connection above is the only one the app saw.
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn rules_that_name_callers_keep_their_requests_from_plain_clients() {
    let mesh = TestMesh::new();
    let inventory = inventory(
        &mesh,
        app::echo("inventory").await,
        "\n  unauthenticated: allow\n  rules:\n    - name: product-writes\n      \
         matches: [{ method: POST, path: { type: PathPrefix, value: /products } }]\n      \
         allow: [orders]",
    )
    .await;
    let post = Request::post("http://inventory/products")
        .body(Full::default())
        .unwrap();
    let rsp = plain_http1(&inventory, post).await;
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert_eq!(rsp.headers()["x-mesh-error"], "unauthorized");
    let body = client::text(rsp).await;
    assert!(
        body.contains("caller unauthenticated may not call inventory"),
        "{body}"
    );
    assert!(
        body.contains("authorization.rules[product-writes].allow"),
        "{body}"
    );
    let rsp = plain_http1(&inventory, get("/products")).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(metric(&inventory, DENIED).await, Some(1.0));
}

#[tokio::test]
async fn plain_clients_share_the_rate_limit_as_unauthenticated() {
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .extra_yaml(
            "authorization: { unauthenticated: allow }\n\
             rate_limit: { requests_per_second: 1 }\n",
        )
        .start()
        .await;
    // One per second with a burst of at most a few: 20 at once cannot all pass.
    let mut limited = None;
    for _ in 0..20 {
        let rsp = plain_http1(&inventory, get("/x")).await;
        if rsp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(rsp);
            break;
        }
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    let rsp = limited.expect("a plain client over the rate limit gets 429");
    assert_eq!(rsp.headers()["x-mesh-error"], "rate-limited");
    let body = client::text(rsp).await;
    assert!(body.contains("caller unauthenticated"), "{body}");
    let series = r#"mesh_rate_limited_total{source="unauthenticated"}"#;
    assert_eq!(metric(&inventory, series).await, Some(1.0));
}
