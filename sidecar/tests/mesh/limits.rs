//! `limits:` on every listener, each held by a real sidecar on real sockets: connection caps,
//! handshake caps and timeouts, header timeouts, header count, the HTTP/2 reset limits and idle
//! timeout, and the limits on requests to the app.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use mesh_testkit::{Sidecar, TestMesh, app, client, eventually, metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

const PATIENCE: Duration = Duration::from_secs(10);

/// Reads until the sidecar closes `conn`; panics if it is still open after `patience`.
async fn closed_within(conn: &mut TcpStream, patience: Duration, what: &str) {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(patience, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {patience:?}");
}

/// Whether `conn` is still open: nothing to read within a short look.
async fn still_open(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf))
        .await
        .is_err()
}

fn series(text: &str, name: &str, labels: &str) -> f64 {
    metrics::value(text, &format!("{name}{{{labels}}}")).unwrap_or(0.0)
}

fn refused(text: &str, direction: &str, reason: &str) -> f64 {
    series(
        text,
        "mesh_connections_refused_total",
        &format!(r#"direction="{direction}",reason="{reason}""#),
    )
}

/// Waits until `sidecar` counts `n` open connections on `direction`.
async fn open_connections(sidecar: &Sidecar, direction: &str, n: f64) {
    let labels = format!(r#"direction="{direction}""#);
    eventually(
        &format!("{n} open {direction} connections"),
        PATIENCE,
        || async {
            let text = sidecar.metrics().await;
            (series(&text, "mesh_open_connections", &labels) == n).then_some(())
        },
    )
    .await;
}

/// An `orders` sidecar with `orders_yaml` calling `inventory` (the echo app) with
/// `inventory_yaml`; returns `(mesh, orders, inventory)`.
async fn pair(orders_yaml: &str, inventory_yaml: &str) -> (TestMesh, Sidecar, Sidecar) {
    let mesh = TestMesh::new();
    let (orders, inventory) = mesh
        .pair(
            |o| o.extra_yaml(orders_yaml),
            |i| i.extra_yaml(inventory_yaml),
        )
        .await;
    (mesh, orders, inventory)
}

#[tokio::test]
async fn outbound_connections_over_the_cap_are_closed_while_those_under_it_are_served() {
    // Silent connections wait for detection as long as the test needs them.
    let (_mesh, orders, _inventory) = pair(
        "detect_timeout: 60s\nlimits: { outbound: { max_connections: 3 } }\n",
        "",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(orders.outbound).await.unwrap());
    }
    // The third place: an HTTP/1.1 keep-alive connection that is served.
    let mut served = TcpStream::connect(orders.outbound).await.unwrap();
    served
        .write_all(b"GET /a HTTP/1.1\r\nHost: inventory\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    served.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    open_connections(&orders, "outbound", 3.0).await;

    // A fourth is closed as it is accepted, and counted.
    let mut over = TcpStream::connect(orders.outbound).await.unwrap();
    closed_within(&mut over, PATIENCE, "a connection over max_connections").await;
    assert_eq!(
        refused(&orders.metrics().await, "outbound", "max-connections"),
        1.0
    );
    for conn in &mut held {
        assert!(
            still_open(conn).await,
            "a connection under the cap was closed"
        );
    }

    // A place freed is taken again.
    drop(held.pop());
    open_connections(&orders, "outbound", 2.0).await;
    let rsp = client::get(&format!("{}/b", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
}

#[tokio::test]
async fn admin_connections_over_the_cap_are_closed() {
    let mesh = TestMesh::new();
    let sidecar = mesh
        .sidecar("orders")
        .extra_yaml("limits: { admin: { max_connections: 2, header_read_timeout: 60s } }\n")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(sidecar.admin).await.unwrap());
    }
    let mut over = TcpStream::connect(sidecar.admin).await.unwrap();
    closed_within(
        &mut over,
        PATIENCE,
        "an admin connection over max_connections",
    )
    .await;
    for conn in &mut held {
        assert!(
            still_open(conn).await,
            "an admin connection under the cap was closed"
        );
    }
    drop(held.pop());
    let text = eventually("an admin place freed", PATIENCE, || async {
        let rsp = client::http1()
            .request(
                Request::get(sidecar.admin_url("/metrics"))
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await;
        match rsp {
            Ok(rsp) => Some(client::text(rsp).await),
            Err(_) => None,
        }
    })
    .await;
    assert!(refused(&text, "admin", "max-connections") >= 1.0, "{text}");
}

#[tokio::test]
async fn inbound_connections_over_the_cap_are_closed_and_counted() {
    let (_mesh, orders, inventory) =
        pair("", "limits: { inbound: { max_connections: 2 } }\n").await;
    // orders' pooled connection takes one place.
    let rsp = client::get(&format!("{}/a", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut held = TcpStream::connect(inventory.inbound).await.unwrap();
    open_connections(&inventory, "inbound", 2.0).await;
    let mut over = TcpStream::connect(inventory.inbound).await.unwrap();
    closed_within(
        &mut over,
        PATIENCE,
        "an inbound connection over max_connections",
    )
    .await;
    assert!(
        still_open(&mut held).await,
        "a connection under the cap was closed"
    );
    let text = inventory.metrics().await;
    assert_eq!(refused(&text, "inbound", "max-connections"), 1.0, "{text}");
    // The established peer connection is still served.
    let rsp = client::get(&format!("{}/b", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
}

#[tokio::test]
async fn two_hundred_slow_header_connections_are_closed_by_the_header_read_timeout() {
    let (_mesh, orders, _inventory) =
        pair("limits: { outbound: { header_read_timeout: 500ms } }\n", "").await;
    let mut conns = JoinSet::new();
    for _ in 0..200 {
        let addr = orders.outbound;
        conns.spawn(async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            // Detected as HTTP/1.1, then the headers never end.
            conn.write_all(b"GET / HTTP/1.1\r\nHost: inventory\r\nx-slow: ")
                .await
                .unwrap();
            closed_within(&mut conn, PATIENCE, "a slow-header connection").await;
        });
    }
    while let Some(done) = conns.join_next().await {
        done.unwrap();
    }
    open_connections(&orders, "outbound", 0.0).await;
    let rsp = client::get(&format!("{}/after", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
}

#[tokio::test]
async fn silent_peers_are_closed_by_the_handshake_and_first_bytes_timeouts() {
    let (mesh, orders, inventory) = pair(
        "",
        "limits: { inbound: { tls_handshake_timeout: 500ms, first_bytes_timeout: 500ms } }\n",
    )
    .await;
    // Before the handshake: 200 connections that send nothing.
    let mut conns = JoinSet::new();
    for _ in 0..200 {
        let addr = inventory.inbound;
        conns.spawn(async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            closed_within(&mut conn, PATIENCE, "a silent TLS client").await;
        });
    }
    while let Some(done) = conns.join_next().await {
        done.unwrap();
    }
    // After a complete handshake with a valid certificate: nothing more.
    let config = crate::mtls::client_config(&mesh, &mesh.leaf("orders"), "silent");
    let tcp = TcpStream::connect(inventory.inbound).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("inventory").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a peer silent after its handshake is still connected"
    );
    let text = inventory.metrics().await;
    assert_eq!(
        refused(&text, "inbound", "first-bytes-timeout"),
        1.0,
        "{text}"
    );
    let rsp = client::get(&format!("{}/after", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_flood_of_unfinished_handshakes_keeps_a_real_peer_out_only_while_the_cap_is_full() {
    let (_mesh, orders, inventory) = pair(
        "",
        "limits: { inbound: { max_handshakes: 5, tls_handshake_timeout: 5s } }\n",
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..5 {
        flood.push(TcpStream::connect(inventory.inbound).await.unwrap());
    }
    open_connections(&inventory, "inbound", 5.0).await;
    // Past the cap, each is closed at once instead of waiting out its handshake.
    for _ in 0..20 {
        let mut conn = TcpStream::connect(inventory.inbound).await.unwrap();
        closed_within(
            &mut conn,
            Duration::from_secs(1),
            "a handshake over the cap",
        )
        .await;
    }
    assert_eq!(
        refused(&inventory.metrics().await, "inbound", "max-handshakes"),
        20.0
    );
    // One place frees: a real peer's handshake takes it while the rest of the flood waits.
    drop(flood.pop());
    open_connections(&inventory, "inbound", 4.0).await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(client::json(rsp).await["caller"], crate::ORDERS_ID);
    // The rest of the flood goes when its handshakes time out.
    for conn in &mut flood {
        closed_within(
            conn,
            PATIENCE,
            "a flood connection past tls_handshake_timeout",
        )
        .await;
    }
    let text = inventory.metrics().await;
    let timeouts = r#"mesh_tls_handshake_failures_total{direction="inbound",reason="tls-timeout"}"#;
    assert_eq!(metrics::value(&text, timeouts), Some(4.0), "{text}");
}

#[tokio::test]
async fn too_many_headers_are_refused_with_431_on_both_http_versions() {
    let (_mesh, orders, _inventory) = pair("limits: { outbound: { max_headers: 20 } }\n", "").await;
    let request = |n: usize| {
        let mut req = Request::get("http://inventory/h");
        for i in 0..n {
            req = req.header(format!("x-h{i}"), "v");
        }
        req.body(Full::<Bytes>::default()).unwrap()
    };
    // HTTP/2: counted by the sidecar before the request is routed.
    let rsp = client::h2_request(orders.outbound, request(30)).await;
    assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let rsp = client::h2_request(orders.outbound, request(10)).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    // HTTP/1.1: counted by hyper as it parses.
    let mut h1 = Request::get(orders.outbound_url()).header("host", "inventory");
    for i in 0..30 {
        h1 = h1.header(format!("x-h{i}"), "v");
    }
    let rsp = client::http1()
        .request(h1.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

/// HTTP/2 frames written by hand, so a burst reaches the sidecar in one write.
mod frames {
    pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub(super) const GOAWAY: u8 = 7;
    pub(super) const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub(super) fn settings() -> Vec<u8> {
        frame(4, 0, 0, &[])
    }

    /// HEADERS, END_STREAM | END_HEADERS, with `block` as its HPACK block.
    pub(super) fn headers(stream: u32, block: &[u8]) -> Vec<u8> {
        frame(1, 0x5, stream, block)
    }

    /// `GET http://inventory/` in HPACK: static-table method, scheme and path, a literal
    /// authority.
    pub(super) fn get_block() -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x84, 0x01, 9];
        block.extend_from_slice(b"inventory");
        block
    }

    pub(super) fn rst_cancel(stream: u32) -> Vec<u8> {
        frame(3, 0, stream, &8u32.to_be_bytes())
    }
}

/// Sends `burst` after the preface in one write, then reads frames until the sidecar closes the
/// connection; returns the GOAWAY error code it sent, if any.
async fn goaway_after(addr: SocketAddr, burst: Vec<u8>) -> Option<u32> {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut out = frames::PREFACE.to_vec();
    out.extend(frames::settings());
    out.extend(burst);
    conn.write_all(&out).await.unwrap();
    let read = async {
        let mut goaway = None;
        loop {
            let mut head = [0u8; 9];
            if conn.read_exact(&mut head).await.is_err() {
                return goaway;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if conn.read_exact(&mut payload).await.is_err() {
                return goaway;
            }
            if head[3] == frames::GOAWAY && len >= 8 {
                goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
    };
    // Still open after the wait: whatever came, the sidecar did not close the connection.
    tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn rapid_resets_get_goaway_enhance_your_calm_and_the_sidecar_stays_healthy() {
    let (_mesh, orders, _inventory) = pair(
        "limits: { outbound: { http2: { max_pending_accept_reset_streams: 3 } } }\n",
        "",
    )
    .await;
    // Ten streams opened and reset before the sidecar accepts them: over 3, under h2's 20.
    let mut burst = Vec::new();
    for i in 0..10u32 {
        let stream = 2 * i + 1;
        burst.extend(frames::headers(stream, &frames::get_block()));
        burst.extend(frames::rst_cancel(stream));
    }
    assert_eq!(
        goaway_after(orders.outbound, burst).await,
        Some(frames::ENHANCE_YOUR_CALM)
    );
    // The h2 crate's client, its requests and resets queued before its connection runs, sees
    // the same.
    let tcp = TcpStream::connect(orders.outbound).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    for _ in 0..10 {
        let req = Request::get("http://inventory/").body(()).unwrap();
        let (_, mut stream) = client.send_request(req, true).unwrap();
        stream.send_reset(h2::Reason::CANCEL);
    }
    let error = tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the sidecar ends the connection")
        .expect_err("with an error");
    assert!(error.is_go_away() && error.is_remote(), "{error}");
    assert_eq!(error.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM));
    drop(client);
    let rsp = client::h2_request(
        orders.outbound,
        Request::get("http://inventory/ok")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(rsp.status(), StatusCode::OK);
}

#[tokio::test]
async fn streams_the_sidecar_must_reset_get_goaway_past_max_local_error_resets() {
    let (_mesh, orders, _inventory) = pair(
        "limits: { outbound: { http2: { max_local_error_reset_streams: 3 } } }\n",
        "",
    )
    .await;
    // Requests without :method are malformed: the sidecar resets each (a stream error).
    let mut burst = Vec::new();
    for i in 0..10u32 {
        burst.extend(frames::headers(2 * i + 1, &[0x86, 0x84]));
    }
    assert_eq!(
        goaway_after(orders.outbound, burst).await,
        Some(frames::ENHANCE_YOUR_CALM)
    );
    let rsp = client::get(&format!("{}/ok", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let (_mesh, orders, _inventory) = pair(
        "limits: { outbound: { http2: { idle_timeout: 500ms } } }\n",
        "",
    )
    .await;
    let tcp = TcpStream::connect(orders.outbound).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (rsp, _) = client
        .send_request(Request::get("http://inventory/").body(()).unwrap(), true)
        .unwrap();
    let rsp = rsp.await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut body = rsp.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    // Nothing more: the sidecar sends GOAWAY and the connection ends.
    let ended = tokio::time::timeout(PATIENCE, conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is still open");
}

#[tokio::test]
async fn requests_over_the_apps_concurrency_limit_are_refused_with_503() {
    let mesh = TestMesh::new();
    let (gated, mut gate) = app::gated().await;
    let inventory = mesh
        .sidecar("inventory")
        .app(gated)
        .extra_yaml("limits: { app: { max_concurrent_requests: 2 } }\n")
        .start()
        .await;
    let orders = crate::calling_inventory(&mesh, "orders", &inventory).await;
    let url = format!("{}/held", orders.outbound_url());
    let mut held = JoinSet::new();
    for _ in 0..2 {
        let url = url.clone();
        held.spawn(async move { client::get(&url, "inventory").await.status() });
        gate.arrived().await;
    }
    let rsp = tokio::time::timeout(PATIENCE, client::get(&url, "inventory"))
        .await
        .expect("the request over the limit is answered at once, not queued");
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers()["x-mesh-error"], "app-concurrency-limit");
    let text = inventory.metrics().await;
    assert!(
        metrics::value(&text, "mesh_app_requests_refused_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    gate.release(2);
    while let Some(status) = tokio::time::timeout(PATIENCE, held.join_next())
        .await
        .expect("the held requests end once released")
    {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    // The places are free again.
    gate.release(1);
    let rsp = tokio::time::timeout(PATIENCE, client::get(&url, "inventory"))
        .await
        .expect("an answer");
    assert_eq!(rsp.status(), StatusCode::OK);
}

/// A listener on 127.0.0.1 that never accepts, its backlog filled: a connect to it gets no
/// answer. Returns its address and the connections that fill it (kept open).
async fn unanswering_listener() -> (SocketAddr, tokio::net::TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut filled = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(conn)) => filled.push(conn),
            Ok(Err(error)) => panic!("connect to the filling listener: {error}"),
            Err(_) => return (addr, listener, filled),
        }
    }
    panic!("the backlog of {addr} did not fill after 64 connections");
}

#[tokio::test]
async fn a_connect_to_an_app_that_never_answers_times_out() {
    let (app, _listener, _filled) = unanswering_listener().await;
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app)
        .extra_yaml("limits: { app: { connect_timeout: 300ms } }\n")
        .start()
        .await;
    let orders = crate::calling_inventory(&mesh, "orders", &inventory).await;
    let rsp = tokio::time::timeout(
        PATIENCE,
        client::get(&format!("{}/x", orders.outbound_url()), "inventory"),
    )
    .await
    .expect("an answer before the connect would give up by itself");
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(rsp.headers()["x-mesh-error"], "app-unavailable");
    let body = client::text(rsp).await;
    assert!(body.contains("connect timed out after 300ms"), "{body}");
}

/// An HTTP/1.1 app that holds each request until `gate` has a permit for it, and counts its
/// open connections.
async fn counting_app(
    gate: std::sync::Arc<tokio::sync::Semaphore>,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = open.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (open, gate) = (counted.clone(), gate.clone());
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let gate = gate.clone();
                    async move {
                        if let Ok(permit) = gate.acquire().await {
                            permit.forget();
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"released"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

#[tokio::test]
async fn idle_connections_to_the_app_are_kept_up_to_max_idle_connections() {
    use std::sync::atomic::Ordering;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let (app, open) = counting_app(gate.clone()).await;
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app)
        .extra_yaml("limits: { app: { max_idle_connections: 1 } }\n")
        .start()
        .await;
    let orders = crate::calling_inventory(&mesh, "orders", &inventory).await;
    // Three requests at once (HTTP/1.1, so HTTP/1.1 to the app): three connections.
    let mut requests = JoinSet::new();
    for i in 0..3 {
        let url = format!("{}/{i}", orders.outbound_url());
        requests.spawn(async move { client::get(&url, "inventory").await.status() });
    }
    eventually("three connections to the app", PATIENCE, || async {
        (open.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;
    gate.add_permits(3);
    while let Some(status) = tokio::time::timeout(PATIENCE, requests.join_next())
        .await
        .expect("the requests end once released")
    {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    // One stays in the pool; the others are closed.
    eventually("one idle connection left to the app", PATIENCE, || async {
        let now = open.load(Ordering::SeqCst);
        if now == 1 {
            Ok(())
        } else {
            Err(format!("{now} open"))
        }
    })
    .await;
}

/// An app that answers each request with the `Host` it got, counting the connections it
/// accepted.
async fn host_echo_app() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    let host = req.headers().get("host").cloned();
                    async move {
                        let host =
                            host.map_or_else(Bytes::new, |h| Bytes::copy_from_slice(h.as_bytes()));
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(host)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn one_pool_to_the_app_whatever_name_it_was_called_by() {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;
    let (app, accepted) = host_echo_app().await;
    let mesh = TestMesh::new();
    let inventory = mesh.sidecar("inventory").app(app).start().await;
    let inventory_id = "spiffe://mesh.local/ns/default/sa/inventory";
    let orders = mesh
        .sidecar("orders")
        .destination("inventory", &[inventory.inbound])
        .destination_with_identity("shop", &[inventory.inbound], inventory_id)
        .destination_with_identity("stock", &[inventory.inbound], inventory_id)
        .start()
        .await;
    // One after another, so one idle connection can serve them all.
    for round in 0..3 {
        for name in ["inventory", "shop", "stock"] {
            let url = format!("{}/{round}", orders.outbound_url());
            let rsp = client::get(&url, name).await;
            assert_eq!(rsp.status(), StatusCode::OK, "{name}");
            let body = rsp.into_body().collect().await.unwrap().to_bytes();
            // The app still sees the name it was called by.
            assert_eq!(body, name.as_bytes(), "Host at the app");
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "nine sequential HTTP/1.1 requests under three names share one connection to the app"
    );
}
