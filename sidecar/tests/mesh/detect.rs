//! Protocol detection on connections from the app: an `http` destination's `listen` address
//! serves the HTTP detected there as requests to it and tunnels everything else; a `tcp`
//! destination's never waits for the client; the outbound listener closes what is not HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use mesh_testkit::{Sidecar, TestMesh, app, client, eventually, free_port, metrics};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(10);
const BANNER: &[u8] = b"220 banner.test ESMTP\r\n";

/// An app that speaks first: the banner on accept, then it echoes what it reads.
async fn banner_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                conn.write_all(BANNER).await?;
                let (mut read, mut write) = conn.split();
                tokio::io::copy(&mut read, &mut write).await
            });
        }
    });
    addr
}

/// A caller `orders` with `detect_timeout` whose destination `backend` (the app `app` behind
/// its own sidecar) has the policy lines `policy`; returns both sidecars.
async fn pair(
    mesh: &TestMesh,
    app: SocketAddr,
    detect_timeout: &str,
    policy: &str,
) -> (Sidecar, Sidecar) {
    let server = mesh.sidecar("backend").app(app).start().await;
    let caller = mesh
        .sidecar("orders")
        .extra_yaml(&format!("detect_timeout: {detect_timeout}\n"))
        .destination_with_policy("backend", &[server.inbound], policy)
        .start()
        .await;
    (caller, server)
}

/// Waits until `listen` accepts; the probe connection closes without a byte (outcome `tcp`).
async fn wait_for_listener(listen: SocketAddr) {
    eventually("the destination's listener", PATIENCE, || async move {
        TcpStream::connect(listen).await
    })
    .await;
}

fn detections(text: &str, outcome: &str) -> f64 {
    let series = format!(r#"mesh_protocol_detections_total{{outcome="{outcome}"}}"#);
    metrics::value(text, &series).unwrap_or(0.0)
}

/// Waits until `sidecar` has counted `n` detections with `outcome`.
async fn counted(sidecar: &Sidecar, outcome: &str, n: f64) {
    eventually(&format!("{n} detections {outcome}"), PATIENCE, || async {
        (detections(&sidecar.metrics().await, outcome) == n).then_some(())
    })
    .await;
}

async fn read_banner(conn: &mut TcpStream) -> Vec<u8> {
    let mut banner = vec![0u8; BANNER.len()];
    conn.read_exact(&mut banner).await.unwrap();
    banner
}

#[tokio::test]
async fn a_tcp_destination_never_waits_for_the_client() {
    let mesh = TestMesh::new();
    let app = banner_app().await;
    let listen = free_port();
    let policy = format!("protocol: tcp\nlisten: \"{listen}\"\nport: {}", app.port());
    let (orders, _server) = pair(&mesh, app, "5s", &policy).await;
    wait_for_listener(listen).await;

    let mut conn = TcpStream::connect(listen).await.unwrap();
    // Well inside the 5 s detection would wait: no byte is read before the tunnel opens.
    let banner = tokio::time::timeout(Duration::from_secs(2), read_banner(&mut conn))
        .await
        .expect("the banner arrives before any detection timeout could fire");
    assert_eq!(banner, BANNER);
    conn.write_all(b"EHLO orders\r\n").await.unwrap();
    let mut echo = [0u8; 13];
    conn.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"EHLO orders\r\n");
    let text = orders.metrics().await;
    for outcome in ["http1", "h2", "tcp", "timeout"] {
        assert_eq!(detections(&text, outcome), 0.0, "{outcome}: {text}");
    }
}

#[tokio::test]
async fn a_server_that_speaks_first_is_reached_once_detection_times_out() {
    let mesh = TestMesh::new();
    let app = banner_app().await;
    let listen = free_port();
    let (orders, server) = pair(&mesh, app, "300ms", &format!("listen: \"{listen}\"")).await;
    wait_for_listener(listen).await;
    counted(&orders, "tcp", 1.0).await;

    let started = tokio::time::Instant::now();
    let mut conn = TcpStream::connect(listen).await.unwrap();
    let banner = tokio::time::timeout(PATIENCE, read_banner(&mut conn))
        .await
        .expect("the banner arrives once detection gives up");
    assert_eq!(banner, BANNER);
    assert!(started.elapsed() >= Duration::from_millis(300));
    conn.write_all(b"QUIT\r\n").await.unwrap();
    let mut echo = [0u8; 6];
    conn.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"QUIT\r\n");
    drop(conn);

    let text = orders.metrics().await;
    assert_eq!(detections(&text, "timeout"), 1.0, "{text}");
    // Tunnelled without a port of its own: the peer joined it to its app's port.
    let opened = r#"mesh_tcp_connections_opened_total{direction="inbound",source="orders",destination="backend"}"#;
    assert_eq!(metrics::value(&server.metrics().await, opened), Some(2.0));
}

#[tokio::test]
async fn http_on_a_listen_address_goes_to_its_destination_and_is_counted() {
    let mesh = TestMesh::new();
    let app = app::echo("backend").await;
    let listen = free_port();
    let policy = format!("listen: \"{listen}\"\nretries: {{ attempts: 2 }}");
    let (orders, _server) = pair(&mesh, app, "1s", &policy).await;
    wait_for_listener(listen).await;

    // The app names any host: the listener decides the destination.
    let url = format!("http://{listen}/stock/abc");
    for (client, version) in [(client::http1(), "HTTP/1.1"), (client::http2(), "HTTP/2.0")] {
        let req = http::Request::get(&url)
            .header("host", "localhost")
            .body(Default::default())
            .unwrap();
        let rsp = client.request(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["x-mesh-attempts"], "1");
        let seen = client::json(rsp).await;
        assert_eq!(seen["service"], "backend", "{seen}");
        assert_eq!(seen["path"], "/stock/abc", "{seen}");
        assert_eq!(seen["version"], version, "{seen}");
        if version == "HTTP/1.1" {
            // As if the app had sent `Host: backend` to the outbound listener.
            assert_eq!(seen["headers"]["host"][0], "backend", "{seen}");
        }
        assert_eq!(
            seen["caller"], "spiffe://mesh.local/ns/default/sa/orders",
            "{seen}"
        );
    }
    counted(&orders, "http1", 1.0).await;
    counted(&orders, "h2", 1.0).await;
    let text = orders.metrics().await;
    assert_eq!(detections(&text, "timeout"), 0.0, "{text}");
}

#[tokio::test]
async fn garbage_after_a_request_line_is_a_bad_request_and_a_close() {
    let mesh = TestMesh::new();
    let app = app::echo("backend").await;
    let listen = free_port();
    let (orders, _server) = pair(&mesh, app, "1s", &format!("listen: \"{listen}\"")).await;
    wait_for_listener(listen).await;
    let outbound = orders.outbound;

    for addr in [listen, outbound] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\n\x01\x02 not a header\r\n\r\n")
            .await
            .unwrap();
        let mut rsp = Vec::new();
        tokio::time::timeout(PATIENCE, conn.read_to_end(&mut rsp))
            .await
            .expect("the connection closes after the 400")
            .unwrap();
        let rsp = String::from_utf8_lossy(&rsp);
        assert!(rsp.starts_with("HTTP/1.1 400"), "{addr}: {rsp:?}");
    }
    counted(&orders, "http1", 2.0).await;
}

#[tokio::test]
async fn the_outbound_listener_closes_what_is_not_http() {
    let mesh = TestMesh::new();
    let app = app::echo("backend").await;
    let (orders, _server) = pair(&mesh, app, "300ms", "").await;

    // Redis's PING: not HTTP, and no destination to send it to.
    let mut conn = TcpStream::connect(orders.outbound).await.unwrap();
    conn.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut rsp = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut rsp))
        .await
        .expect("closed");
    assert!(rsp.is_empty(), "{:?}", String::from_utf8_lossy(&rsp));
    counted(&orders, "tcp", 1.0).await;

    // Silence: closed when detect_timeout fires.
    let mut conn = TcpStream::connect(orders.outbound).await.unwrap();
    let _ = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut rsp))
        .await
        .expect("closed after detect_timeout");
    assert!(rsp.is_empty());
    counted(&orders, "timeout", 1.0).await;

    // HTTP still works.
    let rsp = client::get(&orders.outbound_url(), "backend").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    counted(&orders, "http1", 1.0).await;
}

/// A TLS app for `localhost` that echoes what it reads, and the client config that trusts it.
async fn tls_echo_app() -> (SocketAddr, rustls::ClientConfig) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_der = CertificateDer::from(cert.der().to_vec());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = acceptor.accept(conn).await?;
                let (mut read, mut write) = tokio::io::split(tls);
                tokio::io::copy(&mut read, &mut write).await?;
                write.shutdown().await
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (addr, client)
}

#[tokio::test]
async fn tls_from_the_app_passes_through_untouched() {
    let mesh = TestMesh::new();
    let (app, client) = tls_echo_app().await;
    let listen = free_port();
    let (orders, _server) = pair(&mesh, app, "5s", &format!("listen: \"{listen}\"")).await;
    wait_for_listener(listen).await;
    counted(&orders, "tcp", 1.0).await;

    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let conn = TcpStream::connect(listen).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(2), connector.connect(name, conn))
        .await
        .expect("the ClientHello is decided on at once, well before detect_timeout")
        .expect("the handshake with the app, end to end through the mesh");
    tls.write_all(b"hello over tls").await.unwrap();
    let mut echo = [0u8; 14];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello over tls");
    counted(&orders, "tcp", 2.0).await;
}

#[tokio::test]
async fn http_on_a_listen_address_is_retried_by_the_destinations_policy() {
    let mesh = TestMesh::new();
    let (app, faults) = app::faulty("backend").await;
    let listen = free_port();
    let policy = format!("listen: \"{listen}\"\nretries: {{ attempts: 2 }}");
    let (_orders, _server) = pair(&mesh, app, "1s", &policy).await;
    wait_for_listener(listen).await;

    faults.fail_next(1, 503);
    let rsp = client::get(&format!("http://{listen}/stock"), "localhost").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["x-mesh-attempts"], "2");
    assert_eq!(rsp.headers()["x-app"], "backend");
    assert_eq!(faults.requests(), 2);
}
