//! Responses the mesh makes itself carry `x-mesh-error`, the right status, and a body that
//! names what failed; responses the app makes pass through untouched.

use http::StatusCode;
use mesh_testkit::{TestMesh, app, client, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn unknown_destination_is_503_naming_it() {
    let pair = crate::Pair::start().await;
    let rsp = client::get(&format!("{}/x", pair.orders.outbound_url()), "nowhere:8080").await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers()["x-mesh-error"], "no-route");
    assert!(client::text(rsp).await.contains("\"nowhere\""));
}

#[tokio::test]
async fn unreachable_destination_sidecar_is_503() {
    let mesh = TestMesh::new();
    let gone = free_port();
    let orders = mesh
        .sidecar("orders")
        .destination("inventory", &[gone])
        .start()
        .await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers()["x-mesh-error"], "connect-refused");
    assert!(client::text(rsp).await.contains(&gone.to_string()));
}

#[tokio::test]
async fn app_down_behind_inbound_is_502() {
    let mesh = TestMesh::new();
    // No app: the inventory sidecar forwards to a port where nothing listens.
    let inventory = mesh.sidecar("inventory").start().await;
    let orders = mesh
        .sidecar("orders")
        .destination("inventory", &[inventory.inbound])
        .start()
        .await;
    let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(rsp.headers()["x-mesh-error"], "app-unavailable");
}

#[tokio::test]
async fn the_apps_own_errors_pass_through_unmarked() {
    let pair = crate::Pair::start().await;
    let rsp = client::get(
        &format!("{}/status/503", pair.orders.outbound_url()),
        "inventory",
    )
    .await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(rsp.headers().get("x-mesh-error").is_none());
    assert_eq!(
        client::text(rsp).await,
        "inventory: status 503 Service Unavailable\n"
    );
}

#[tokio::test]
async fn request_without_authority_is_400() {
    let pair = crate::Pair::start().await;
    let mut tcp = tokio::net::TcpStream::connect(pair.orders.outbound)
        .await
        .unwrap();
    tcp.write_all(b"GET /x HTTP/1.0\r\n\r\n").await.unwrap();
    let mut rsp = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut rsp),
    )
    .await
    .unwrap()
    .unwrap();
    let rsp = String::from_utf8_lossy(&rsp);
    assert!(rsp.starts_with("HTTP/1.0 400"), "{rsp}");
    assert!(
        rsp.to_ascii_lowercase()
            .contains("x-mesh-error: no-authority"),
        "{rsp}"
    );
}

#[tokio::test]
async fn a_dead_endpoint_beside_a_live_one_is_retried_there() {
    // Connect failures are retried by default: nothing was sent, so it is always safe.
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .start()
        .await;
    let gone = free_port();
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy(
            "inventory",
            &[inventory.inbound, gone],
            "load_balancer: round-robin",
        )
        .start()
        .await;
    let mut attempts = Vec::new();
    for _ in 0..4 {
        let rsp = client::get(&format!("{}/x", orders.outbound_url()), "inventory").await;
        assert_eq!(rsp.status(), StatusCode::OK);
        attempts.push(
            rsp.headers()["x-mesh-attempts"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Round robin: a retry takes the next turn as well, so after the first request every
    // request starts on the dead endpoint and moves to the live one.
    assert_eq!(attempts, ["1", "2", "2", "2"]);
}

#[tokio::test]
async fn requests_waiting_on_an_unresponsive_peer_share_one_connect_timeout() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A black hole: accepts TCP, never answers the TLS handshake.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = hole.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let mesh = TestMesh::new();
    let orders = mesh
        .sidecar("orders")
        .extra_yaml("connect_timeout: 500ms\n")
        .destination_with_policy("inventory", &[addr], "retries: { attempts: 1 }")
        .start()
        .await;
    let url = format!("{}/x", orders.outbound_url());
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client::get(&url, "inventory").await })
        })
        .collect();
    for call in calls {
        let rsp = tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.headers()["x-mesh-error"], "connect-timeout");
    }
    // One connect attempt served all five waiting requests.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
