//! WebSockets and CONNECT from the app, through a real sidecar pair: the upgrade crosses the
//! mesh as an extended CONNECT stream and reaches the app as the HTTP/1.1 upgrade it was.
//!
//! The WebSocket app and client are tokio-tungstenite's, so both ends speak real frames and the
//! real close handshake.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use mesh_testkit::{Sidecar, TestMesh, eventually, metrics, tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const PATIENCE: Duration = Duration::from_secs(10);

/// A WebSocket app that echoes every message, picks the `chat` subprotocol when offered, and
/// refuses upgrades to `/refused` with 426 and a body. Reports the caller identity header of
/// each upgrade request it sees.
async fn websocket_echo() -> (SocketAddr, mpsc::UnboundedReceiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // tungstenite's callback signature, large error included.
                #[allow(clippy::result_large_err)]
                let callback = |req: &Request, mut rsp: Response| {
                    let caller = req
                        .headers()
                        .get("x-mesh-client-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let _ = tx.send(caller);
                    if req.uri().path() == "/refused" {
                        let mut refused = ErrorResponse::new(Some("speak HTTP/3".to_owned()));
                        *refused.status_mut() = StatusCode::UPGRADE_REQUIRED;
                        refused
                            .headers_mut()
                            .insert("x-app", http::HeaderValue::from_static("refused"));
                        return Err(refused);
                    }
                    let offers_chat = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .is_some_and(|v| v.to_str().unwrap_or("").contains("chat"));
                    if offers_chat {
                        rsp.headers_mut().insert(
                            "sec-websocket-protocol",
                            http::HeaderValue::from_static("chat"),
                        );
                    }
                    Ok(rsp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(conn, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// An `inventory` sidecar in front of `app` (with `inventory_yaml`), and `orders` calling it.
/// Returns `(mesh, orders, inventory)`; the mesh keeps the certificates alive.
async fn pair(app: SocketAddr, inventory_yaml: &str) -> (TestMesh, Sidecar, Sidecar) {
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app)
        .extra_yaml(inventory_yaml)
        .start()
        .await;
    let orders = orders_calling(&mesh, &inventory, "").await;
    (mesh, orders, inventory)
}

/// An `orders` sidecar (with `yaml`) whose `inventory` destination is `inventory`.
async fn orders_calling(mesh: &TestMesh, inventory: &Sidecar, yaml: &str) -> Sidecar {
    mesh.sidecar("orders")
        .extra_yaml(yaml)
        .destination("inventory", &[inventory.inbound])
        .start()
        .await
}

/// Waits for at most [`PATIENCE`].
async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?} waiting for {what}"))
}

/// A WebSocket handshake with `Host: inventory` sent to `outbound`.
async fn ws_connect(
    outbound: SocketAddr,
    path: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let mut req = format!("ws://inventory{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("chat"),
    );
    let tcp = TcpStream::connect(outbound).await.unwrap();
    bounded(
        "the WebSocket handshake",
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
}

#[tokio::test]
async fn websocket_frames_and_close_cross_the_pair() {
    let (app, mut seen) = websocket_echo().await;
    let (_mesh, orders, inventory) = pair(app, "").await;

    let (mut ws, rsp) = ws_connect(orders.outbound, "/chat").await.unwrap();
    assert_eq!(rsp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(rsp.headers()["sec-websocket-protocol"], "chat");
    let caller = bounded("the app's upgrade request", seen.recv()).await;
    assert_eq!(caller.flatten().as_deref(), Some(crate::ORDERS_ID));

    for msg in [
        Message::text("hello through the mesh"),
        Message::binary(vec![0u8, 1, 2, 255, 254]),
        Message::binary((0..200_000).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    ] {
        ws.send(msg.clone()).await.unwrap();
        let echoed = bounded("the echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, msg);
    }

    // The close handshake: our Close reaches the app, its Close comes back, then the end.
    ws.close(None).await.unwrap();
    let mut closed = false;
    for _ in 0..10 {
        match bounded("the app's close", ws.next()).await {
            Some(Ok(Message::Close(_))) => closed = true,
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
            Some(Err(WsError::ConnectionClosed)) | None => break,
            Some(Err(e)) => panic!("close failed: {e}"),
        }
    }
    assert!(closed, "the app's Close frame did not arrive");
    // The app has closed its connection; the stream ends once the client closes its own.
    drop(ws);

    // Counted as a request answered 101, and as a stream with its bytes, both sides.
    let series = |direction: &str, name: &str| {
        format!(r#"{name}{{direction="{direction}",source="orders",destination="inventory"}}"#)
    };
    let requests = r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="101"}"#;
    eventually("the upgrade's metrics", PATIENCE, || async {
        let out = orders.metrics().await;
        let inb = inventory.metrics().await;
        let closed_both = metrics::value(
            &out,
            &series("outbound", "mesh_tcp_connections_closed_total"),
        ) == Some(1.0)
            && metrics::value(
                &inb,
                &series("inbound", "mesh_tcp_connections_closed_total"),
            ) == Some(1.0);
        let ok = closed_both
            && metrics::value(&out, requests) == Some(1.0)
            && metrics::value(&out, &series("outbound", "mesh_tcp_sent_bytes_total"))
                .is_some_and(|b| b > 200_000.0)
            && metrics::value(&out, &series("outbound", "mesh_tcp_received_bytes_total"))
                .is_some_and(|b| b > 200_000.0);
        ok.then_some(()).ok_or(out)
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_the_app_refuses_arrives_unchanged() {
    let (app, _seen) = websocket_echo().await;
    let (_mesh, orders, _inventory) = pair(app, "").await;

    let Err(WsError::Http(rsp)) = ws_connect(orders.outbound, "/refused").await else {
        panic!("the upgrade was not refused");
    };
    assert_eq!(rsp.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(rsp.headers()["x-app"], "refused");
    assert!(rsp.headers().get("x-mesh-error").is_none());
    // tungstenite hands over the body as it came, chunked framing included.
    let body = String::from_utf8_lossy(rsp.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("speak HTTP/3"), "{body:?}");

    // Counted as a request answered with the app's status.
    let out = orders.metrics().await;
    let requests = r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="426"}"#;
    assert_eq!(metrics::value(&out, requests), Some(1.0), "{out}");
}

#[tokio::test]
async fn an_unauthorized_caller_cannot_upgrade() {
    let (app, mut seen) = websocket_echo().await;
    let (_mesh, orders, _inventory) =
        pair(app, "authorization: { default: deny, allow: [payments] }\n").await;

    let Err(WsError::Http(rsp)) = ws_connect(orders.outbound, "/chat").await else {
        panic!("the upgrade was not refused");
    };
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert_eq!(rsp.headers()["x-mesh-error"], "unauthorized");
    assert!(seen.try_recv().is_err(), "the app saw a refused caller");
}

/// Sends `CONNECT <authority>` on a new connection to `outbound`; returns the connection and
/// the response head.
async fn connect(outbound: SocketAddr, authority: &str) -> (TcpStream, String) {
    let mut conn = TcpStream::connect(outbound).await.unwrap();
    conn.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Byte by byte, so nothing of the stream after the head is read here.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "response head too long");
        let mut byte = [0u8; 1];
        let n = bounded("the CONNECT response", conn.read(&mut byte))
            .await
            .unwrap();
        assert_eq!(n, 1, "closed before the response head ended: {head:?}");
        head.push(byte[0]);
    }
    (conn, String::from_utf8(head).unwrap())
}

#[tokio::test]
async fn connect_tunnels_to_the_peers_app_and_carries_half_close() {
    let (app, mut seen) = tcp::reply_at_eof().await;
    let (_mesh, orders, _inventory) = pair(app, "").await;

    let (mut conn, head) = connect(orders.outbound, &format!("inventory:{}", app.port())).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sent: Vec<u8> = (0..100_000).map(|i| (i % 253) as u8).collect();
    conn.write_all(&sent).await.unwrap();
    // Our half-close reaches the app, which only then answers; its answer still comes back.
    conn.shutdown().await.unwrap();
    let mut reply = Vec::new();
    bounded("the reply", conn.read_to_end(&mut reply))
        .await
        .unwrap();
    assert_eq!(reply, sent);
    let mut eof = false;
    for _ in 0..1000 {
        match bounded("the app's report", seen.recv()).await.unwrap() {
            tcp::Seen::Read(_) => continue,
            tcp::Seen::Eof => {
                eof = true;
                break;
            }
            tcp::Seen::Failed(kind) => panic!("the app's connection failed: {kind:?}"),
        }
    }
    assert!(eof);

    let requests = r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="200"}"#;
    let out = orders.metrics().await;
    assert_eq!(metrics::value(&out, requests), Some(1.0), "{out}");
}

#[tokio::test]
async fn connect_to_another_port_is_refused_by_the_far_sidecar() {
    let (app, _seen) = tcp::reply_at_eof().await;
    let (_mesh, orders, _inventory) = pair(app, "").await;

    let other = if app.port() == 22 { 23 } else { 22 };
    let (_conn, head) = connect(orders.outbound, &format!("inventory:{other}")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("x-mesh-error: tunnel-port-refused"), "{head}");
}

#[tokio::test]
async fn an_h2_apps_connect_is_tunnelled_too() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (app, _seen) = tcp::reply_at_eof().await;
    let (_mesh, orders, _inventory) = pair(app, "").await;

    let tcp = TcpStream::connect(orders.outbound).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::connect(format!("inventory:{}", app.port()))
        .version(http::Version::HTTP_2)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let rsp = bounded("the CONNECT response", sender.send_request(req))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut tunnel = TokioIo::new(
        bounded("the tunnel", hyper::upgrade::on(rsp))
            .await
            .unwrap(),
    );
    tunnel.write_all(b"over h2 and back").await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut reply = Vec::new();
    bounded("the reply", tunnel.read_to_end(&mut reply))
        .await
        .unwrap();
    assert_eq!(reply, b"over h2 and back");
}

#[tokio::test]
async fn a_websocket_is_one_client_span_and_one_server_span_marked_as_upgrades() {
    use mesh_testkit::otlp::Collector;
    const CLIENT: i32 = 3;
    const SERVER: i32 = 2;

    let collector = Collector::start().await;
    let tracing = format!(
        "tracing: {{ otlp_endpoint: \"http://{}\", protocol: grpc }}\n",
        collector.grpc
    );
    let (app, _seen) = websocket_echo().await;
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app)
        .extra_yaml(&tracing)
        .start()
        .await;
    let orders = orders_calling(&mesh, &inventory, &tracing).await;

    let (mut ws, _) = ws_connect(orders.outbound, "/chat").await.unwrap();
    ws.send(Message::text("traced")).await.unwrap();
    bounded("the echo", ws.next()).await.unwrap().unwrap();

    // Both spans end at the 101, while the WebSocket is still open.
    let spans = collector.wait_for(2, PATIENCE).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let client = spans.iter().find(|s| s.service == "orders").unwrap();
    let server = spans.iter().find(|s| s.service == "inventory").unwrap();
    assert_eq!(client.span.kind, CLIENT);
    assert_eq!(server.span.kind, SERVER);
    assert_eq!(server.span.parent_span_id, client.span.span_id);
    for span in [client, server] {
        assert_eq!(
            span.attr("mesh.upgrade").as_deref(),
            Some("websocket"),
            "{span:#?}"
        );
    }
    assert_eq!(
        client.attr("http.response.status_code").as_deref(),
        Some("101")
    );
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
}

#[tokio::test]
async fn an_app_that_ignores_the_upgrade_answers_as_it_would_a_request() {
    use mesh_testkit::{app, client};

    let (_mesh, orders, _inventory) = pair(app::echo("inventory").await, "").await;
    let req = http::Request::get(format!("{}/chat", orders.outbound_url()))
        .header("host", "inventory")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let rsp = bounded("the answer", client::http1().request(req))
        .await
        .unwrap();
    // The echo app does not speak WebSocket: its 200 and body come back, nothing upgraded.
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(rsp.headers().get("x-mesh-app-status").is_none());
    let seen = client::json(rsp).await;
    let headers = &seen["headers"];
    assert_eq!(headers["upgrade"][0], "websocket", "{seen}");
    assert_eq!(headers["sec-websocket-key"][0], "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(headers["x-mesh-client-id"][0], crate::ORDERS_ID);
    assert_eq!(seen["path"], "/chat");
}

#[tokio::test]
async fn the_destinations_timeout_bounds_the_handshake_not_the_stream() {
    // An app that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            conns.push(conn);
        }
    });
    let (echo, _seen) = websocket_echo().await;
    let mesh = TestMesh::new();
    let silent = mesh.sidecar("inventory").app(silent_addr).start().await;
    let talking = mesh.sidecar("chat").app(echo).start().await;
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy("inventory", &[silent.inbound], "timeout: 300ms")
        .destination_with_policy("chat", &[talking.inbound], "timeout: 300ms")
        .start()
        .await;

    let Err(WsError::Http(rsp)) = ws_connect(orders.outbound, "/chat").await else {
        panic!("the upgrade did not time out");
    };
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(rsp.headers()["x-mesh-error"], "timeout");

    // Once open, a stream outlives the timeout.
    let mut req = "ws://chat/chat".into_client_request().unwrap();
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("chat"));
    let tcp = TcpStream::connect(orders.outbound).await.unwrap();
    let (mut ws, _) = bounded("the handshake", tokio_tungstenite::client_async(req, tcp))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    ws.send(Message::text("still here")).await.unwrap();
    let echoed = bounded("the echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("still here"));
    held.abort();
}

#[tokio::test]
async fn the_calling_sidecar_drains_an_open_websocket_before_it_stops() {
    let (app, _seen) = websocket_echo().await;
    let (_mesh, orders, _inventory) = pair(app, "").await;
    let outbound = orders.outbound;
    let (mut ws, _) = ws_connect(outbound, "/chat").await.unwrap();

    let stopping = tokio::spawn(orders.shutdown());
    eventually("the outbound listener to close", PATIENCE, || async {
        TcpStream::connect(outbound).await.is_err().then_some(())
    })
    .await;
    // Well within the 5 s drain time the WebSocket still carries messages both ways.
    let msg = Message::text("said during the drain");
    ws.send(msg.clone()).await.unwrap();
    assert_eq!(bounded("the echo", ws.next()).await.unwrap().unwrap(), msg);
    assert!(
        !stopping.is_finished(),
        "the sidecar waits for the open WebSocket"
    );
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = bounded("the end of the WebSocket", ws.next()).await {}
    drop(ws);
    bounded("the sidecar to stop once the WebSocket is done", stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_websocket_still_open_when_the_drain_time_is_up_is_cut() {
    let (app, _seen) = websocket_echo().await;
    let mesh = TestMesh::new();
    let inventory = mesh.sidecar("inventory").app(app).start().await;
    let orders = orders_calling(&mesh, &inventory, "drain_timeout: 300ms\n").await;
    let (mut ws, _) = ws_connect(orders.outbound, "/chat").await.unwrap();

    bounded(
        "the sidecar to stop after its drain time",
        orders.shutdown(),
    )
    .await
    .unwrap();
    // The stream was cut: the client's connection ends without a Close from the app.
    loop {
        match bounded("the cut", ws.next()).await {
            None | Some(Err(_)) => break,
            Some(Ok(Message::Close(_))) => panic!("the app did not close; the sidecar did"),
            Some(Ok(_)) => {}
        }
    }
}
