//! The control plane in-process, over real sockets and real TLS.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use mesh_api::proto::v1;
use mesh_control_plane::client;
use mesh_testkit::{eventually, metrics};
use tonic::Code;

const MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\n";
const SHORT_LEASE: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\nregistry:\n  heartbeat_interval: 200ms\n  lease: 1s\n";

fn shop() -> Vec<(&'static str, &'static str)> {
    vec![
        ("orders", "name: orders\ncalls: [inventory]\n"),
        ("inventory", "name: inventory\ntimeout: 2s\n"),
        ("payments", "name: payments\ncalls: [notifications]\n"),
        ("notifications", "name: notifications\n"),
    ]
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    mesh_api::spiffe::ids_in_certificate(der)
        .iter()
        .map(|id| id.to_string())
        .collect()
}

#[tokio::test]
async fn certify_issues_exactly_the_services_identity() {
    let dirs = Dirs::new(MESH, &shop());
    let cp = dirs.start().await;

    // Tokens: one per service, private.
    for service in ["orders", "inventory", "payments", "notifications"] {
        let path = dirs.state().join("tokens").join(service);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{service}");
        assert_eq!(dirs.token(service).len(), 64);
    }
    let mode = std::fs::metadata(dirs.state().join("tokens"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let roots = client::roots_from_pem(&dirs.bundle_pem()).unwrap();
    verify_chain(&orders.workload.chain_der, &roots).unwrap();
    assert_eq!(
        uri_sans(&orders.workload.chain_der[0]),
        ["spiffe://mesh.local/ns/default/sa/orders"]
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let life = orders.workload.not_after_unix - now;
    assert!(
        (3590..=3610).contains(&life),
        "lifetime {life}s, expected 1h"
    );
    assert_eq!(orders.workload.trust_bundle_der.len(), 1);

    let identity = || v1::identity_client::IdentityClient::new(orders.channel.clone());
    let (_, csr_der) = client::csr(&["spiffe://mesh.local/ns/default/sa/orders"]).unwrap();

    // A wrong token: Unauthenticated, naming the service, never echoing the token.
    let err = identity()
        .certify(v1::CertifyRequest {
            service: "orders".into(),
            token: "not-the-token-1234".into(),
            csr_der: csr_der.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("orders"), "{err}");
    assert!(!err.message().contains("not-the-token-1234"), "{err}");

    // Another service's token does not work either, nor an undeclared service.
    for (service, token) in [
        ("orders", dirs.token("payments")),
        ("ghost", dirs.token("orders")),
    ] {
        let err = identity()
            .certify(v1::CertifyRequest {
                service: service.into(),
                token,
                csr_der: csr_der.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{service}: {err}");
    }

    // The right token, but a CSR for another identity: PermissionDenied naming both.
    let (_, other) = client::csr(&["spiffe://mesh.local/ns/default/sa/payments"]).unwrap();
    let err = identity()
        .certify(v1::CertifyRequest {
            service: "orders".into(),
            token: dirs.token("orders"),
            csr_der: other,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("sa/payments"), "{err}");
    assert!(err.message().contains("sa/orders"), "{err}");

    let (_, metrics) = admin(&cp, Method::GET, "/metrics").await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert_eq!(
        metrics::value(&metrics, "mesh_control_plane_certificates_issued_total"),
        Some(1.0)
    );
    assert_eq!(
        metrics::value(
            &metrics,
            "mesh_control_plane_certificates_refused_total{reason=\"unauthenticated\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn registry_takes_the_service_from_the_certificate() {
    let dirs = Dirs::new(MESH, &shop());
    let cp = dirs.start().await;

    // Without a client certificate: Unauthenticated.
    let err = v1::registry_client::RegistryClient::new(anonymous(&cp, &dirs).await)
        .heartbeat(v1::HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let register = |service: &str, address: &str| v1::RegisterRequest {
        instance: Some(v1::Instance {
            instance_id: "o-1".into(),
            service: service.into(),
            address: address.into(),
            version: String::new(),
            app_down: String::new(),
            admin_address: String::new(),
        }),
    };
    let err = orders
        .registry()
        .register(register("inventory", "127.0.0.1:7001"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = orders
        .registry()
        .register(register("orders", "not-an-address"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let reply = orders
        .registry()
        .register(register("orders", "127.0.0.1:7001"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.heartbeat_interval_ms, 5000);
    assert_eq!(reply.lease_ms, 15000);
    let beat = |id: &str| v1::HeartbeatRequest {
        instance_id: id.into(),
        applied_version: 7,
        certificate_not_after_unix: orders.workload.not_after_unix,
        certificate_issuer_sha256: "ab".repeat(32),
        ejected_endpoints: vec!["inventory/127.0.0.1:9".into()],
        app_down: String::new(),
        gateway_listeners: Vec::new(),
    };
    assert!(orders.heartbeat(beat("o-1")).await);
    assert!(!orders.heartbeat(beat("o-unknown")).await);

    let (status, body) = admin(&cp, Method::GET, "/status").await;
    assert_eq!(status, StatusCode::OK);
    let instance = &body["services"]["orders"]["instances"][0];
    assert_eq!(instance["instance_id"], "o-1");
    assert_eq!(instance["address"], "127.0.0.1:7001");
    assert_eq!(instance["applied_version"], 7);
    assert_eq!(instance["acked"], false);
    assert_eq!(instance["ejected_endpoints"][0], "inventory/127.0.0.1:9");
    assert_eq!(body["trust_bundle"].as_array().unwrap().len(), 1);

    // Admin: unknown paths 404, wrong methods 405.
    assert_eq!(
        admin(&cp, Method::GET, "/nope").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin(&cp, Method::DELETE, "/status").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(admin(&cp, Method::GET, "/ready").await.0, StatusCode::OK);
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn edits_reach_dependents_only_and_bad_edits_change_nothing() {
    let dirs = Dirs::new(MESH, &shop());
    let cp = dirs.start().await;
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let payments = Sidecar::new(&cp, &dirs, "payments").await;
    let mut orders_watch = orders.watch("o-1").await;
    let mut payments_watch = payments.watch("p-1").await;

    // The current snapshot at once, scoped to the service's dependencies.
    let first = orders_watch.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.destinations.len(), 1);
    assert_eq!(first.destinations[0].name, "inventory");
    assert_eq!(
        first.destinations[0].identity,
        "spiffe://mesh.local/ns/default/sa/inventory"
    );
    assert_eq!(policy_timeout(&first, "inventory"), Some(2000));
    assert_eq!(first.certificate_lifetime_secs, 3600);
    assert_eq!(first.trust_bundle_der.len(), 1);
    assert!(!first.issuer_sha256.is_empty());
    let payments_first = payments_watch.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(payments_first.destinations[0].name, "notifications");

    // A valid edit of inventory reaches orders within a second, with a higher version.
    let edited_at = tokio::time::Instant::now();
    dirs.write_service("inventory", "name: inventory\ntimeout: 3s\n");
    let pushed = orders_watch
        .next(Duration::from_secs(1))
        .await
        .expect("no push within 1s");
    assert!(edited_at.elapsed() <= Duration::from_secs(1));
    assert!(pushed.version > first.version);
    assert_eq!(policy_timeout(&pushed, "inventory"), Some(3000));
    // Payments does not call inventory: nothing for it.
    assert!(
        payments_watch
            .next(Duration::from_millis(700))
            .await
            .is_none()
    );

    // An invalid edit: nothing pushed, the old configuration stays, the failure is counted.
    dirs.write_service(
        "inventory",
        "name: inventory\ntimeout: 5s\nretries: {attempts: 0}\nbogus: 1\n",
    );
    let (_, metrics) = eventually("a failed reload", Duration::from_secs(3), || async {
        let (_, m) = admin(&cp, Method::GET, "/metrics").await;
        let text = m.as_str().unwrap().to_owned();
        (metrics::value(
            &text,
            "mesh_control_plane_config_reloads_total{result=\"failed\"}",
        ) >= Some(1.0))
        .then_some(((), text))
    })
    .await;
    assert!(
        metrics.contains("config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        orders_watch
            .next(Duration::from_millis(500))
            .await
            .is_none()
    );
    let (_, config) = admin(&cp, Method::GET, "/config").await;
    assert_eq!(config["services"]["inventory"]["policy"]["timeout"], "3s");
    let (_, status) = admin(&cp, Method::GET, "/status").await;
    assert_eq!(status["version"], pushed.version);
    assert_eq!(status["config_version"], pushed.version);

    // Acks are recorded per instance.
    orders_watch.ack(pushed.version).await;
    orders.register("o-1", "127.0.0.1:7001", "").await;
    eventually("the ack in /status", Duration::from_secs(2), || async {
        let (_, status) = admin(&cp, Method::GET, "/status").await;
        (status["services"]["orders"]["instances"][0]["acked"] == true).then_some(())
    })
    .await;
    cp.stop().await.unwrap();
}

/// After a restart the registry is empty. A sidecar that reconnects with a snapshot keeps it
/// until a lease has passed (by then its peers have registered again), instead of getting one
/// without their endpoints; a new sidecar gets the current snapshot at once.
#[tokio::test]
async fn a_fresh_control_plane_holds_snapshots_of_reconnecting_sidecars_for_a_lease() {
    let dirs = Dirs::new(SHORT_LEASE, &shop());
    let cp = dirs.start().await;
    let started = tokio::time::Instant::now();
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let inventory = Sidecar::new(&cp, &dirs, "inventory").await;

    let mut reconnecting = orders.watch_from("o-1", 42).await;
    let mut fresh = orders.watch("o-2").await;
    assert!(fresh.next(Duration::from_millis(500)).await.is_some());
    assert!(
        reconnecting
            .next(Duration::from_millis(300))
            .await
            .is_none(),
        "a snapshot during the warm-up"
    );
    inventory.register("i-1", "127.0.0.1:7101", "").await;
    let held = reconnecting
        .next(Duration::from_secs(3))
        .await
        .expect("a snapshot once the lease has passed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(endpoints(&held, "inventory"), ["127.0.0.1:7101"]);
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn silent_instances_leave_their_callers_snapshots() {
    let dirs = Dirs::new(SHORT_LEASE, &shop());
    let cp = dirs.start().await;
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let inventory = Sidecar::new(&cp, &dirs, "inventory").await;
    let mut watch = orders.watch("o-1").await;
    let first = watch.next(Duration::from_secs(2)).await.unwrap();
    assert!(endpoints(&first, "inventory").is_empty());

    inventory.register("i-1", "127.0.0.1:7101", "").await;
    let registered = watch
        .until(Duration::from_secs(2), |s| {
            !endpoints(s, "inventory").is_empty()
        })
        .await;
    assert_eq!(endpoints(&registered, "inventory"), ["127.0.0.1:7101"]);
    assert_eq!(registered.destinations[0].backends[0].weight, 1);
    assert_eq!(registered.destinations[0].backends[0].version, "");

    // No more heartbeats: gone after the lease (1s) plus a sweep.
    let silent_since = tokio::time::Instant::now();
    let expired = watch
        .until(Duration::from_secs(4), |s| {
            endpoints(s, "inventory").is_empty()
        })
        .await;
    assert!(silent_since.elapsed() >= Duration::from_millis(700));
    assert!(expired.version > registered.version);
    assert!(
        !inventory
            .heartbeat(v1::HeartbeatRequest {
                instance_id: "i-1".into(),
                ..Default::default()
            })
            .await
    );
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn traffic_split_groups_instances_by_version() {
    let mut services = shop();
    services[1] = (
        "inventory",
        "name: inventory\ntraffic_split:\n  v1: 90\n  v2: 10\n",
    );
    let dirs = Dirs::new(MESH, &services);
    let cp = dirs.start().await;
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let inventory = Sidecar::new(&cp, &dirs, "inventory").await;
    inventory.register("i-a", "127.0.0.1:7201", "").await;
    inventory.register("i-b", "127.0.0.1:7202", "v2").await;
    inventory.register("i-c", "127.0.0.1:7203", "v3").await;
    // Registrations reach snapshots through the next rebuild, so the first snapshot may come
    // before them: wait (bounded) for one that has all three.
    let shape = |snapshot: &v1::Snapshot| -> Vec<(String, u32, Vec<String>)> {
        snapshot.destinations[0]
            .backends
            .iter()
            .map(|b| {
                (
                    b.version.clone(),
                    b.weight,
                    b.endpoints.iter().map(|e| e.instance_id.clone()).collect(),
                )
            })
            .collect()
    };
    let expected = [
        ("v1".to_owned(), 90, vec!["i-a".to_owned()]),
        ("v2".to_owned(), 10, vec!["i-b".to_owned()]),
    ];
    let mut watch = orders.watch("o-1").await;
    let snapshot = watch
        .until(Duration::from_secs(5), |s| {
            s.destinations.first().is_some_and(|_| shape(s) == expected)
        })
        .await;
    assert_eq!(shape(&snapshot), expected);
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_directory_refuses_to_start_with_every_error() {
    let dirs = Dirs::new(
        "trust_domain: mesh.local\ncertificate_lifetime: 1s\n",
        &[
            ("a", "name: orders\ncalls: [ghost]\n"),
            ("b", "name: orders\n"),
            (
                "c",
                "name: shop\ntraffic_split: {v1: 0}\nretries: {attempts: 99}\n",
            ),
        ],
    );
    let err = mesh_control_plane::start(dirs.options(), listeners().await)
        .await
        .unwrap_err();
    let mesh_control_plane::Error::Config(invalid) = err else {
        panic!("expected a configuration error, got {err}");
    };
    let lines: Vec<String> = invalid.errors.iter().map(|e| e.to_string()).collect();
    for expected in [
        "mesh.yaml: certificate_lifetime: must be at least 5s",
        "services/a.yaml: calls[0]: service \"ghost\" is not declared",
        "services/b.yaml: name: service \"orders\" is already declared in services/a.yaml",
        "services/c.yaml: traffic_split: at least one weight must be greater than 0",
        "services/c.yaml: retries.attempts: must be between 1 and 10",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "missing {expected:?} in {lines:#?}"
        );
    }
}

/// Root rotation from the first root to a new one, with sidecars that keep working.
#[tokio::test]
async fn root_rotation_waits_for_sidecars() {
    let dirs = Dirs::new(SHORT_LEASE, &shop());
    let cp = dirs.start().await;
    let orders = Arc::new(Sidecar::new(&cp, &dirs, "orders").await);
    orders.register("o-1", "127.0.0.1:7301", "").await;
    let mut watch = orders.watch("o-1").await;
    let first = watch.next(Duration::from_secs(2)).await.unwrap();
    watch.ack(first.version).await;
    let old_issuer = first.issuer_sha256.clone();
    let (_, status) = admin(&cp, Method::GET, "/status").await;
    let old_root = status["signer"].as_str().unwrap().to_owned();

    // The sidecar heartbeats in the background, reporting its certificate's issuer.
    let (issuer_tx, issuer_rx) = tokio::sync::watch::channel(old_issuer.clone());
    let beating = {
        let orders = orders.clone();
        tokio::spawn(async move {
            loop {
                let issuer = issuer_rx.borrow().clone();
                orders
                    .heartbeat(v1::HeartbeatRequest {
                        instance_id: "o-1".into(),
                        applied_version: 0,
                        certificate_not_after_unix: 0,
                        certificate_issuer_sha256: issuer,
                        ejected_endpoints: vec![],
                        app_down: String::new(),
                        gateway_listeners: vec![],
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };

    // Add a root: the next snapshot trusts both.
    let (status, body) = admin(&cp, Method::POST, "/ca/roots").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_root = body["id"].as_str().unwrap().to_owned();
    let with_two = watch.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(with_two.trust_bundle_der.len(), 2);
    assert_eq!(
        with_two.issuer_sha256, old_issuer,
        "the old root still signs"
    );
    assert_eq!(
        client::roots_from_pem(&dirs.bundle_pem()).unwrap().len(),
        2,
        "ca.pem holds both roots"
    );

    // Not yet acknowledged: refused.
    let (status, body) = admin(&cp, Method::POST, &format!("/ca/signer/{new_root}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().len() > 10);

    // Acknowledged: accepted (once the start-up grace of one lease has passed).
    watch.ack(with_two.version).await;
    eventually("use-root accepted", Duration::from_secs(5), || async {
        let (status, body) = admin(&cp, Method::POST, &format!("/ca/signer/{new_root}")).await;
        match status {
            StatusCode::OK => Some(()),
            StatusCode::CONFLICT => None,
            other => panic!("{other}: {body}"),
        }
    })
    .await;
    let rotated = watch.next(Duration::from_secs(2)).await.unwrap();
    assert_ne!(rotated.issuer_sha256, old_issuer);

    // New certificates chain to the new root alone; the control plane's own certificate too.
    let renewed = Sidecar::new(&cp, &dirs, "orders").await;
    let only_new = client::roots_from_der(&rotated.trust_bundle_der[1..]).unwrap();
    verify_chain(&renewed.workload.chain_der, &only_new).unwrap();
    let only_old = client::roots_from_der(&rotated.trust_bundle_der[..1]).unwrap();
    assert!(verify_chain(&renewed.workload.chain_der, &only_old).is_err());
    // The control plane re-issues its own certificate as the signer changes (a moment later).
    eventually(
        "a server certificate from the new root",
        Duration::from_secs(3),
        || async {
            let channel = client::connect(
                cp.api_addr(),
                only_new.clone(),
                TD,
                Some(renewed.workload.client_cert()),
            )
            .await
            .ok()?;
            v1::registry_client::RegistryClient::new(channel)
                .heartbeat(v1::HeartbeatRequest::default())
                .await
                .ok()
        },
    )
    .await;

    // Removing the old root: refused while the sidecar reports a certificate from it.
    let (status, body) = admin(&cp, Method::DELETE, &format!("/ca/roots/{old_root}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("orders/o-1"),
        "{body}"
    );
    let (status, _) = admin(&cp, Method::DELETE, &format!("/ca/roots/{new_root}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "the signer cannot go");

    issuer_tx.send(rotated.issuer_sha256.clone()).unwrap();
    eventually("remove-root accepted", Duration::from_secs(3), || async {
        let (status, _) = admin(&cp, Method::DELETE, &format!("/ca/roots/{old_root}")).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    let one = watch
        .until(Duration::from_secs(2), |s| s.trust_bundle_der.len() == 1)
        .await;
    assert_eq!(one.trust_bundle_der, rotated.trust_bundle_der[1..]);
    assert_eq!(client::roots_from_pem(&dirs.bundle_pem()).unwrap().len(), 1);
    beating.abort();
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_ca_tokens_and_increasing_versions() {
    let dirs = Dirs::new(MESH, &shop());
    let cp = dirs.start().await;
    let bundle = dirs.bundle_pem();
    let token = dirs.token("orders");
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let mut watch = orders.watch("o-1").await;
    let before = watch.next(Duration::from_secs(2)).await.unwrap();
    // A few changes, so the version moves past its start.
    for timeout in ["3s", "4s", "5s"] {
        dirs.write_service(
            "inventory",
            &format!("name: inventory\ntimeout: {timeout}\n"),
        );
        watch.next(Duration::from_secs(2)).await.unwrap();
    }
    let last = cp.version();
    assert!(last >= before.version + 3);
    cp.stop().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), watch.stream.message())
            .await
            .is_ok(),
        "the watch stream ends on stop"
    );

    // A new service declared while stopped gets a token; existing ones are kept.
    dirs.write_service("shipping", "name: shipping\n");
    let cp = dirs.start().await;
    assert_eq!(dirs.bundle_pem(), bundle);
    assert_eq!(dirs.token("orders"), token);
    assert_eq!(dirs.token("shipping").len(), 64);
    assert!(cp.version() > last, "{} <= {last}", cp.version());

    // The old certificate still works against the restarted control plane.
    let channel = client::connect(
        cp.api_addr(),
        client::roots_from_pem(&bundle).unwrap(),
        TD,
        Some(orders.workload.client_cert()),
    )
    .await
    .unwrap();
    let again = Sidecar {
        service: "orders".into(),
        workload: client::certify(anonymous(&cp, &dirs).await, TD, "default", "orders", &token)
            .await
            .unwrap(),
        channel,
    };
    let mut watch = again.watch("o-1").await;
    let after = watch.next(Duration::from_secs(2)).await.unwrap();
    assert!(after.version > last);

    // A service declared by a live edit gets its token too.
    dirs.write_service("billing", "name: billing\n");
    eventually("billing's token", Duration::from_secs(3), || async {
        dirs.state()
            .join("tokens")
            .join("billing")
            .exists()
            .then_some(())
    })
    .await;
    cp.stop().await.unwrap();
}

/// Connects to the control plane's API with `config`, reads its first bytes (the HTTP/2
/// SETTINGS, after any session ticket) and says how the handshake went.
#[allow(clippy::unwrap_used)]
async fn handshake_kind(
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> rustls::HandshakeKind {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("control-plane").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut first = [0u8; 9];
    tls.read_exact(&mut first).await.unwrap();
    tls.get_ref().1.handshake_kind().unwrap()
}

#[tokio::test]
async fn the_api_never_resumes_a_tls_session() {
    let dirs = Dirs::new("trust_domain: mesh.local\n", &[]);
    let cp = dirs.start().await;
    let roots = client::roots_from_pem(&dirs.bundle_pem()).unwrap();
    let verifier = mesh_api::tls::SpiffeServerVerifier::fixed(
        Arc::new(roots),
        mesh_api::spiffe::SpiffeId::control_plane("mesh.local").unwrap(),
    );
    // rustls's client keeps sessions and resumes them by default: this one would.
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = Arc::new(config);
    for attempt in 0..3 {
        assert_eq!(
            handshake_kind(config.clone(), cp.api_addr()).await,
            rustls::HandshakeKind::Full,
            "connection {attempt}"
        );
    }
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn changing_the_ca_needs_the_admin_token_and_no_page_can_reach_the_admin() {
    let dirs = Dirs::new("trust_domain: mesh.local\n", &[]);
    let cp = dirs.start().await;
    let token_file = cp.admin_token_path();
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Without the token, or with a wrong one: 401, and the bundle is unchanged.
    for token in [None, Some("not-the-token")] {
        let (status, body) = mesh_control_plane::admin_client::request_with_token(
            cp.admin_addr(),
            Method::POST,
            "/ca/roots",
            token,
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(String::from_utf8_lossy(&body).contains("admin/tokens/control-plane"));
    }
    assert_eq!(cp.trust_bundle_der().len(), 1);
    // Reading needs no token; with it, the change is made.
    assert_eq!(admin(&cp, Method::GET, "/ca/roots").await.0, StatusCode::OK);
    assert_eq!(
        admin(&cp, Method::POST, "/ca/roots").await.0,
        StatusCode::OK
    );
    assert_eq!(cp.trust_bundle_der().len(), 2);
    // A DNS name pointed at this machine is refused, whatever the request.
    let rebound = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(cp.admin_addr())
            .await
            .unwrap();
        tcp.write_all(
            b"GET /status HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), rebound)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    cp.stop().await.unwrap();
}

/// Each service's virtual address in `/status`, by name.
async fn virtual_addresses(cp: &mesh_control_plane::ControlPlane) -> Vec<(String, String)> {
    let (status, body) = admin(cp, Method::GET, "/status").await;
    assert_eq!(status, StatusCode::OK);
    let Some(services) = body["services"].as_object() else {
        panic!("/status has no services: {body:#}");
    };
    services
        .iter()
        .map(|(name, s)| {
            let ip = s["virtual_address"].as_str().unwrap_or_default().to_owned();
            (name.clone(), ip)
        })
        .collect()
}

#[tokio::test]
async fn virtual_addresses_stay_across_a_restart_and_when_a_service_is_added() {
    let dirs = Dirs::new(
        MESH,
        &[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            ("inventory", "name: inventory\n"),
            ("payments", "name: payments\nvirtual_address: 127.240.0.7\n"),
        ],
    );
    let cp = dirs.start().await;
    let first = virtual_addresses(&cp).await;
    assert_eq!(first.len(), 3, "{first:?}");
    let range: mesh_control_plane::config::Cidr = "127.240.0.0/12".parse().unwrap();
    for (name, ip) in &first {
        let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|_| panic!("{name}: {ip:?}"));
        assert!(range.contains(ip), "{name}: {ip}");
    }
    assert!(first.contains(&("payments".into(), "127.240.0.7".into())));
    let table =
        std::fs::read_to_string(dirs.state().join(mesh_control_plane::VIRTUAL_ADDRESS_FILE))
            .unwrap();
    for (name, ip) in &first {
        assert!(table.contains(&format!("{name} {ip}\n")), "{table}");
    }
    cp.stop().await.unwrap();

    // The same state directory after a restart: the same addresses.
    let cp = dirs.start().await;
    assert_eq!(virtual_addresses(&cp).await, first);

    // A service added while running gets one of its own; the others keep theirs.
    dirs.write_service("audit", "name: audit\n");
    let added = eventually(
        "audit's virtual address",
        Duration::from_secs(3),
        || async {
            let now = virtual_addresses(&cp).await;
            (now.len() == 4).then_some(now)
        },
    )
    .await;
    for entry in &first {
        assert!(added.contains(entry), "{entry:?} moved: {added:?}");
    }
    let audit = &added.iter().find(|(name, _)| name == "audit").unwrap().1;
    assert!(first.iter().all(|(_, ip)| ip != audit), "{added:?}");
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn a_duplicate_or_out_of_range_virtual_address_is_refused_naming_the_field() {
    let dirs = Dirs::new(
        "trust_domain: mesh.local\nvirtual_addresses: { range: 127.241.0.0/16 }\n",
        &[
            (
                "inventory",
                "name: inventory\nvirtual_address: 127.241.0.9\n",
            ),
            ("payments", "name: payments\nvirtual_address: 127.241.0.9\n"),
            ("audit", "name: audit\nvirtual_address: 127.242.0.1\n"),
        ],
    );
    let err = mesh_control_plane::start(dirs.options(), listeners().await)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "services/payments.yaml: virtual_address: 127.241.0.9 is already the virtual address of inventory"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "services/audit.yaml: virtual_address: 127.242.0.1 is outside virtual_addresses.range 127.241.0.0/16"
        ),
        "{err}"
    );
    // Nothing was allocated for a configuration that was refused.
    assert!(
        !dirs
            .state()
            .join(mesh_control_plane::VIRTUAL_ADDRESS_FILE)
            .exists()
    );
}
