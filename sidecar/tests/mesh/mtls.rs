//! Mutual TLS between sidecars: who is trusted, who is refused, and what each side reports.

use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use mesh_control_plane::ca::{DevCa, Leaf, LeafSpec};
use mesh_testkit::{TestMesh, app, client, eventually};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INVENTORY_ID: &str = "spiffe://mesh.local/ns/default/sa/inventory";
const PAYMENTS_ID: &str = "spiffe://mesh.local/ns/default/sa/payments";

/// Waits until the sidecar's metrics have `series` (name and labels) with a value of at least 1.
async fn metric_appears(sidecar: &mesh_testkit::Sidecar, series: &str) {
    eventually(series, Duration::from_secs(5), || async {
        let text = sidecar.metrics().await;
        (mesh_testkit::metrics::value(&text, series)? >= 1.0).then_some(())
    })
    .await;
}

fn expired_leaf(ca: &DevCa, spiffe_id: &str) -> Leaf {
    let now = OffsetDateTime::now_utc();
    ca.issue(&LeafSpec {
        spiffe_id: spiffe_id.into(),
        not_before: now - time::Duration::days(2),
        not_after: now - time::Duration::days(1),
    })
    .unwrap()
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_rejected() {
    let mesh = TestMesh::new();
    let rogue = DevCa::generate("mesh.local").unwrap();
    let leaf = rogue
        .issue_service("default", "orders", Duration::from_secs(3600))
        .unwrap();
    let (orders, inventory) = mesh.pair(|o| o.leaf(leaf), |i| i).await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(rsp.headers()["x-mesh-error"], "tls-rejected-by-peer");
    assert!(client::text(rsp).await.contains(INVENTORY_ID));
    metric_appears(
        &inventory,
        r#"mesh_tls_handshake_failures_total{direction="inbound",reason="tls-untrusted-peer"}"#,
    )
    .await;
    metric_appears(
        &orders,
        r#"mesh_tls_handshake_failures_total{direction="outbound",reason="tls-rejected-by-peer"}"#,
    )
    .await;
}

#[tokio::test]
async fn expired_client_certificate_is_rejected() {
    let mesh = TestMesh::new();
    let expired = expired_leaf(mesh.ca(), crate::ORDERS_ID);
    let (orders, inventory) = mesh.pair(|o| o.leaf(expired), |i| i).await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(rsp.headers()["x-mesh-error"], "tls-rejected-by-peer");
    metric_appears(
        &inventory,
        r#"mesh_tls_handshake_failures_total{direction="inbound",reason="tls-expired-peer"}"#,
    )
    .await;
}

#[tokio::test]
async fn expired_server_certificate_is_rejected_by_the_caller() {
    let mesh = TestMesh::new();
    let expired = expired_leaf(mesh.ca(), INVENTORY_ID);
    let (orders, _inventory) = mesh.pair(|o| o, |i| i.leaf(expired)).await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(rsp.headers()["x-mesh-error"], "tls-expired-peer");
}

#[tokio::test]
async fn server_with_the_wrong_identity_is_rejected_by_the_caller() {
    let mesh = TestMesh::new();
    // A valid sidecar of another service, listed where inventory should be.
    let payments = mesh
        .sidecar("payments")
        .app(app::echo("payments").await)
        .start()
        .await;
    let orders = mesh
        .sidecar("orders")
        .destination("inventory", &[payments.inbound])
        .start()
        .await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(rsp.headers()["x-mesh-error"], "tls-peer-identity");
    let body = client::text(rsp).await;
    assert!(
        body.contains(PAYMENTS_ID) && body.contains(INVENTORY_ID),
        "{body}"
    );
    metric_appears(
        &orders,
        r#"mesh_tls_handshake_failures_total{direction="outbound",reason="tls-peer-identity"}"#,
    )
    .await;
}

#[tokio::test]
async fn identity_override_accepts_the_named_identity() {
    let mesh = TestMesh::new();
    let payments = mesh
        .sidecar("payments")
        .app(app::echo("payments").await)
        .start()
        .await;
    let orders = mesh
        .sidecar("orders")
        .destination_with_identity("inventory", &[payments.inbound], PAYMENTS_ID)
        .start()
        .await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(client::json(rsp).await["service"], "payments");
}

#[tokio::test]
async fn plain_http_to_the_inbound_port_is_refused_as_unauthenticated() {
    let pair = crate::Pair::start().await;
    let mut tcp = tokio::net::TcpStream::connect(pair.inventory.inbound)
        .await
        .unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("inbound answered and closed the plain-HTTP connection within 10s")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    // Not a handshake failure: an HTTP answer the client can read, saying why.
    assert!(got.starts_with("HTTP/1.1 403"), "{got:?}");
    assert!(got.contains("x-mesh-error: unauthenticated"), "{got:?}");
    assert!(got.contains("takes only mesh mTLS"), "{got:?}");
    assert!(!got.contains("\"caller\""), "the app answered: {got:?}");
    metric_appears(
        &pair.inventory,
        r#"mesh_authorization_denied_total{source="unauthenticated"}"#,
    )
    .await;
}

/// Runs `openssl` with `args` in `dir`, failing the test with its stderr.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issues `<name>.pem` / `<name>-key.pem` signed by `ca.pem` in `dir`.
fn openssl_leaf(dir: &std::path::Path, name: &str, keygen: &[&str]) -> Leaf {
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let cert = format!("{name}.pem");
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=URI:spiffe://mesh.local/ns/default/sa/{name}\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             basicConstraints=CA:FALSE\n"
        ),
    )
    .unwrap();
    let mut genkey = vec!["genpkey"];
    genkey.extend_from_slice(keygen);
    genkey.extend_from_slice(&["-out", &key]);
    openssl(dir, &genkey);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/O=openssl/CN={name}"),
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    Leaf {
        cert_pem: std::fs::read_to_string(dir.join(&cert)).unwrap(),
        key_pem: std::fs::read_to_string(dir.join(&key)).unwrap(),
    }
}

#[tokio::test]
async fn certificates_made_by_openssl_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A root with a SEC1 EC key, an RSA leaf and an EC (PKCS#8) leaf.
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca-key.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca-key.pem",
            "-subj",
            "/O=openssl/CN=test root",
            "-days",
            "2",
            "-sha256",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.pem",
        ],
    );
    let inventory_leaf = openssl_leaf(
        d,
        "inventory",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let orders_leaf = openssl_leaf(
        d,
        "orders",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );

    let mesh = TestMesh::new();
    let bundle = d.join("ca.pem");
    let (orders, _inventory) = mesh
        .pair(
            |o| o.leaf(orders_leaf).trust_bundle(bundle.clone()),
            |i| i.leaf(inventory_leaf).trust_bundle(bundle.clone()),
        )
        .await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(client::json(rsp).await["caller"], crate::ORDERS_ID);
}

#[tokio::test]
async fn certificates_signed_from_csrs_work() {
    let mesh = TestMesh::new();
    let (orders_leaf, inventory_leaf) = (
        mesh.leaf_from_csr("orders"),
        mesh.leaf_from_csr("inventory"),
    );
    let (orders, _inventory) = mesh
        .pair(|o| o.leaf(orders_leaf), |i| i.leaf(inventory_leaf))
        .await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(client::json(rsp).await["caller"], crate::ORDERS_ID);
}

/// Opens an mTLS connection to `addr` with `config`, reads the server's first bytes (its HTTP/2
/// SETTINGS, which come after any session tickets, and after the server has checked our
/// certificate), and says how the handshake went.
async fn handshake(
    config: std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> std::io::Result<rustls::HandshakeKind> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("inventory").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await?;
    let mut first = [0u8; 9];
    tls.read_exact(&mut first).await?;
    Ok(tls.get_ref().1.handshake_kind().unwrap())
}

/// A rustls client (sessions kept and resumed, rustls's default) that presents `leaf`, trusts
/// the mesh's bundle and expects the inventory sidecar.
pub(crate) fn client_config(
    mesh: &TestMesh,
    leaf: &Leaf,
    name: &str,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let (cert, key) = leaf.write_to(mesh.dir(), name).unwrap();
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for root in rustls_pki_types::CertificateDer::pem_file_iter(mesh.trust_bundle()).unwrap() {
        roots.add(root.unwrap()).unwrap();
    }
    let verifier = mesh_api::tls::SpiffeServerVerifier::fixed(
        std::sync::Arc::new(roots),
        INVENTORY_ID.parse().unwrap(),
    );
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    std::sync::Arc::new(config)
}

#[tokio::test]
async fn tls_sessions_are_never_resumed_so_a_removed_root_cannot_ride_on_a_ticket() {
    let mesh = TestMesh::new();
    let (_orders, inventory) = mesh.pair(|o| o, |i| i).await;
    let config = client_config(&mesh, &mesh.leaf("orders"), "resumer");
    for attempt in 0..3 {
        assert_eq!(
            handshake(config.clone(), inventory.inbound).await.unwrap(),
            rustls::HandshakeKind::Full,
            "connection {attempt}: every handshake checks the certificate against today's bundle"
        );
    }
}

#[tokio::test]
async fn a_caller_of_another_trust_domain_is_refused_even_when_the_bundle_signs_it() {
    let mesh = TestMesh::new();
    let (_orders, inventory) = mesh.pair(|o| o, |i| i).await;
    let now = OffsetDateTime::now_utc();
    let foreign = mesh
        .ca()
        .issue(&LeafSpec {
            spiffe_id: "spiffe://partner.example/ns/default/sa/orders".into(),
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::hours(1),
        })
        .unwrap();
    let refused = handshake(client_config(&mesh, &foreign, "foreign"), inventory.inbound).await;
    assert!(refused.is_err(), "{refused:?}");
    metric_appears(
        &inventory,
        r#"mesh_tls_handshake_failures_total{direction="inbound",reason="tls-peer-identity"}"#,
    )
    .await;
    // The same CA's certificate in this trust domain is let in.
    let own = client_config(&mesh, &mesh.leaf("orders"), "own");
    assert!(handshake(own, inventory.inbound).await.is_ok());
}

#[tokio::test]
async fn a_peer_connection_is_closed_at_its_maximum_age_and_the_caller_reconnects() {
    let mesh = TestMesh::new();
    let (orders, inventory) = mesh
        .pair(|o| o, |i| i.extra_yaml("max_connection_age: 1s\n"))
        .await;
    let url = format!("{}/stock", orders.outbound_url());
    assert_eq!(
        client::get(&url, "inventory").await.status(),
        StatusCode::OK
    );
    let open = r#"mesh_open_connections{direction="inbound"}"#;
    assert_eq!(
        mesh_testkit::metrics::value(&inventory.metrics().await, open),
        Some(1.0)
    );
    // GOAWAY at one second; the idle connection then closes.
    eventually(
        "the aged connection to close",
        Duration::from_secs(10),
        || async {
            let text = inventory.metrics().await;
            (mesh_testkit::metrics::value(&text, open) == Some(0.0)).then_some(())
        },
    )
    .await;
    // The caller's pool notices and connects again.
    assert_eq!(
        client::get(&url, "inventory").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        mesh_testkit::metrics::value(&inventory.metrics().await, open),
        Some(1.0)
    );
}
