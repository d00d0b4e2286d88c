//! Graceful shutdown: readiness drops, listeners close, in-flight requests finish, exit 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use http_body_util::Full;
use mesh_testkit::process::{KillOnDrop, Signal};
use mesh_testkit::{Sidecar, TestMesh, app, client, eventually, free_port};

/// Status of GET `url`, or `None` when the connection fails.
async fn status_of(url: &str) -> Option<StatusCode> {
    let req = http::Request::get(url).body(Full::default()).ok()?;
    let rsp = client::http1().request(req).await.ok()?;
    Some(rsp.status())
}

async fn gated_pair() -> (TestMesh, app::Gate, Sidecar, Sidecar) {
    let mesh = TestMesh::new();
    let (addr, gate) = app::gated().await;
    let inventory = mesh.sidecar("inventory").app(addr).start().await;
    let orders = mesh
        .sidecar("orders")
        .destination("inventory", &[inventory.inbound])
        .start()
        .await;
    (mesh, gate, orders, inventory)
}

/// Starts a request through `outbound` that the gated app holds.
fn slow_request(outbound: std::net::SocketAddr) -> tokio::task::JoinHandle<(StatusCode, String)> {
    tokio::spawn(async move {
        let rsp = client::get(&format!("http://{outbound}/slow"), "inventory").await;
        let status = rsp.status();
        (status, client::text(rsp).await)
    })
}

#[tokio::test]
async fn admin_shutdown_lets_the_in_flight_request_finish() {
    let (_mesh, mut gate, mut orders, _inventory) = gated_pair().await;
    let in_flight = slow_request(orders.outbound);
    gate.arrived().await;

    let req = http::Request::post(orders.admin_url("/shutdown"))
        .header("x-mesh-confirm", "shutdown")
        .body(Full::default())
        .unwrap();
    let rsp = client::http1().request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::ACCEPTED);

    // Draining: not ready, and the outbound listener takes no new connections.
    let ready_url = orders.admin_url("/ready");
    eventually("/ready to turn 503", Duration::from_secs(5), || {
        let url = ready_url.clone();
        async move { (status_of(&url).await == Some(StatusCode::SERVICE_UNAVAILABLE)).then_some(()) }
    })
    .await;
    let outbound = orders.outbound;
    eventually(
        "outbound to refuse connections",
        Duration::from_secs(5),
        || async move {
            tokio::net::TcpStream::connect(outbound)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let run = orders.take_task();
    assert!(
        !run.is_finished(),
        "sidecar exited with a request in flight"
    );

    gate.release(1);
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "released");
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("sidecar stopped after the drain")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn inbound_drain_lets_the_in_flight_request_finish() {
    let (_mesh, mut gate, orders, inventory) = gated_pair().await;
    let in_flight = slow_request(orders.outbound);
    gate.arrived().await;

    let ready_url = inventory.admin_url("/ready");
    let stopping = tokio::spawn(inventory.shutdown());
    // Draining has begun (the admin endpoint answers until the drain is over) ...
    eventually("inventory /ready to turn 503", Duration::from_secs(5), || {
        let url = ready_url.clone();
        async move { (status_of(&url).await == Some(StatusCode::SERVICE_UNAVAILABLE)).then_some(()) }
    })
    .await;
    // ... and cannot finish while the app holds the request.
    assert!(
        !stopping.is_finished(),
        "inventory stopped with a request in flight"
    );

    gate.release(1);
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "released"));
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    sigterm_drains_then_exits_zero_with(&[]).await;
}

/// One worker runs the sidecar on a current-thread runtime: the same traffic and drain.
#[tokio::test]
async fn sigterm_drains_then_exits_zero_on_one_worker() {
    sigterm_drains_then_exits_zero_with(&["--workers", "1"]).await;
}

async fn sigterm_drains_then_exits_zero_with(args: &[&str]) {
    let mesh = TestMesh::new();
    let (addr, mut gate) = app::gated().await;
    let inventory = mesh.sidecar("inventory").app(addr).start().await;
    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let config = mesh
        .sidecar("orders")
        .destination("inventory", &[inventory.inbound])
        .write_config(outbound, inbound, admin);
    let mut child = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_sidecar"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://{admin}/ready");
    eventually(
        "the sidecar process to be ready",
        Duration::from_secs(10),
        || {
            let url = ready.clone();
            async move { (status_of(&url).await == Some(StatusCode::OK)).then_some(()) }
        },
    )
    .await;

    let in_flight = slow_request(outbound);
    gate.arrived().await;
    child.signal(Signal::SIGTERM);
    eventually("/ready to turn 503", Duration::from_secs(5), || {
        let url = ready.clone();
        async move { (status_of(&url).await == Some(StatusCode::SERVICE_UNAVAILABLE)).then_some(()) }
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    gate.release(1);
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let exit = child.exit_within(Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit}");
}
