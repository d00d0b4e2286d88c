//! HTTP semantics pass through the mesh unchanged: methods, bodies, streaming, protocols,
//! end-to-end headers; hop-by-hop headers do not, and the caller's identity cannot be forged.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use mesh_testkit::client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ORDERS_ID, Pair};

#[tokio::test]
async fn http1_get_reaches_the_app_with_the_callers_identity() {
    let pair = Pair::start().await;
    let url = format!("{}/api/stock/abc?n=1", pair.orders.outbound_url());
    let rsp = client::get(&url, "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(rsp.headers().get("x-mesh-error").is_none());
    let seen = client::json(rsp).await;
    assert_eq!(seen["service"], "inventory");
    assert_eq!(seen["path"], "/api/stock/abc");
    assert_eq!(seen["query"], "n=1");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["caller"], ORDERS_ID);
    assert_eq!(seen["headers"]["host"][0], "inventory");
    assert!(seen["headers"].get("x-mesh-orig-proto").is_none());
}

#[tokio::test]
async fn keep_alive_connection_carries_many_requests() {
    let pair = Pair::start().await;
    let http = client::http1();
    for i in 0..20 {
        let req = Request::get(format!("{}/item/{i}", pair.orders.outbound_url()))
            .header("host", "inventory")
            .body(Full::default())
            .unwrap();
        let rsp = http.request(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(client::json(rsp).await["path"], format!("/item/{i}"));
    }
    // One app connection to the outbound listener, reused for every request.
    let metrics = client::text(client::get_url(&pair.orders.admin_url("/metrics")).await).await;
    assert!(
        metrics.contains(r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="200"} 20"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn http1_post_body_arrives_intact() {
    let pair = Pair::start().await;
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let req = Request::post(format!("{}/echo", pair.orders.outbound_url()))
        .header("host", "inventory")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let rsp = client::http1().request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["content-type"], "application/octet-stream");
    let echoed = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.len(), body.len());
    assert!(echoed == body, "echoed body differs");
}

/// The byte at offset `i` of the streamed test body.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

#[tokio::test]
async fn chunked_large_body_streams_both_ways() {
    const CHUNK: u64 = 64 * 1024;
    const CHUNKS: u64 = 512; // 32 MiB
    let pair = Pair::start().await;
    let chunks = tokio_stream::iter((0..CHUNKS).map(|c| {
        let bytes: Vec<u8> = (c * CHUNK..(c + 1) * CHUNK).map(pattern).collect();
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(bytes)))
    }));
    // No length: the request goes out with Transfer-Encoding: chunked.
    let req = Request::post(format!("{}/echo", pair.orders.outbound_url()))
        .header("host", "inventory")
        .body(StreamBody::new(chunks))
        .unwrap();
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let rsp = http.request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(rsp.headers().get("content-length").is_none());
    let mut body = rsp.into_body();
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            for (k, byte) in data.iter().enumerate() {
                assert_eq!(
                    *byte,
                    pattern(offset + k as u64),
                    "byte {}",
                    offset + k as u64
                );
            }
            offset += data.len() as u64;
        }
    }
    assert_eq!(offset, CHUNK * CHUNKS);
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let pair = Pair::start().await;
    let mut tcp = tokio::net::TcpStream::connect(pair.orders.outbound)
        .await
        .unwrap();
    tcp.write_all(
        b"POST /echo HTTP/1.1\r\nHost: inventory\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until(&mut tcp, b"\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    tcp.write_all(b"hello").await.unwrap();
    let rsp = read_until(&mut tcp, b"hello").await;
    assert!(rsp.starts_with("HTTP/1.1 200 OK\r\n"), "{rsp}");
}

/// Reads from `tcp` until `end` appears (at most 64 KiB, 10 s).
async fn read_until(tcp: &mut tokio::net::TcpStream, end: &[u8]) -> String {
    let mut buf = Vec::new();
    let read = async {
        while !buf.windows(end.len()).any(|w| w == end) && buf.len() < 65536 {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed early: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("response within 10s");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn http2_prior_knowledge_reaches_an_http2_app_as_http2() {
    let pair = Pair::start().await;
    let req = Request::get("http://inventory/api/h2")
        .header("x-trace", "abc")
        .body(Full::default())
        .unwrap();
    let rsp = client::h2_request(pair.orders.outbound, req).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = client::json(rsp).await;
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["path"], "/api/h2");
    assert_eq!(seen["headers"]["x-trace"][0], "abc");
    assert_eq!(seen["caller"], ORDERS_ID);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_end_to_end_ones_kept() {
    let pair = Pair::start().await;
    let req = Request::get(format!("{}/h", pair.orders.outbound_url()))
        .header("host", "inventory")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-end-to-end", "kept")
        .body(Full::default())
        .unwrap();
    let seen = client::json(client::http1().request(req).await.unwrap()).await;
    let headers = seen["headers"].as_object().unwrap();
    for hop in ["x-hop", "keep-alive", "proxy-connection", "upgrade", "te"] {
        assert!(
            !headers.contains_key(hop),
            "{hop} reached the app: {headers:?}"
        );
    }
    assert_eq!(headers["x-end-to-end"][0], "kept");
}

#[tokio::test]
async fn hop_by_hop_response_headers_do_not_reach_the_caller() {
    let mesh = mesh_testkit::TestMesh::new();
    let app = mesh_testkit::app::start(|_req| async {
        http::Response::builder()
            .header("connection", "x-resp-hop")
            .header("x-resp-hop", "1")
            .header("x-resp-e2e", "kept")
            .body(
                Full::new(Bytes::from_static(b"ok"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    })
    .await;
    let inventory = mesh.sidecar("inventory").app(app).start().await;
    let orders = mesh
        .sidecar("orders")
        .destination("inventory", &[inventory.inbound])
        .start()
        .await;
    let rsp = client::get(&format!("{}/", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["x-resp-e2e"], "kept");
    assert!(
        rsp.headers().get("x-resp-hop").is_none(),
        "{:?}",
        rsp.headers()
    );
}

#[tokio::test]
async fn caller_identity_header_cannot_be_spoofed_by_the_app() {
    let pair = Pair::start().await;
    let req = Request::get(format!("{}/whoami", pair.orders.outbound_url()))
        .header("host", "inventory")
        .header(
            "x-mesh-client-id",
            "spiffe://mesh.local/ns/default/sa/admin",
        )
        .header("x-mesh-orig-proto", "HTTP/2")
        .body(Full::default())
        .unwrap();
    let seen = client::json(client::http1().request(req).await.unwrap()).await;
    assert_eq!(
        seen["headers"]["x-mesh-client-id"],
        serde_json::json!([ORDERS_ID])
    );
    assert_eq!(seen["caller"], ORDERS_ID);
    // The forged protocol marker did not make the HTTP/1.1 request arrive as HTTP/2.
    assert_eq!(seen["version"], "HTTP/1.1");
}

/// An HTTP/2 app that answers each request, once its body has ended, with the names and values
/// of the request's trailers as `name=value` lines.
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
async fn a_caller_identity_in_request_trailers_does_not_reach_the_app() {
    let mesh = mesh_testkit::TestMesh::new();
    let app = trailer_reporting_app().await;
    let (orders, _inventory) = mesh.pair(|o| o, |i| i.app(app)).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert(
        "x-mesh-client-id",
        "spiffe://mesh.local/ns/default/sa/payments"
            .parse()
            .unwrap(),
    );
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames = tokio_stream::iter([
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"order"))),
        Ok(Frame::trailers(trailers)),
    ]);
    // HTTP/2 to the outbound listener: the authority names the destination.
    let req = Request::post("http://inventory/orders")
        .body(StreamBody::new(frames))
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(orders.outbound)
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
    // Other trailers pass; only the sidecar's header may name the caller.
    assert_eq!(std::str::from_utf8(&seen).unwrap(), "x-checksum=abc\n");
}

#[tokio::test]
async fn a_header_too_large_for_the_mesh_is_refused_at_the_edge_with_431() {
    let pair = Pair::start().await;
    let url = format!("{}/big", pair.orders.outbound_url());
    let send = |header_bytes: usize| {
        let url = url.clone();
        async move {
            let req = Request::get(url)
                .header("host", "inventory")
                .header("x-big", "a".repeat(header_bytes))
                .body(Full::<Bytes>::default())
                .unwrap();
            client::http1().request(req).await.unwrap()
        }
    };
    // 40 KiB of headers cross both sidecars and reach the app whole.
    let rsp = send(40 << 10).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = client::json(rsp).await;
    assert_eq!(
        seen["headers"]["x-big"][0].as_str().unwrap().len(),
        40 << 10
    );
    // 100 KiB do not fit the mesh: the calling app's own sidecar says so, before any hop.
    let rsp = send(100 << 10).await;
    assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let inbound = r#"mesh_requests_total{direction="inbound",source="orders",destination="inventory",status_code="200"}"#;
    assert_eq!(
        mesh_testkit::metrics::value(&pair.inventory.metrics().await, inbound),
        Some(1.0),
        "only the first request reached inventory"
    );
}
