//! The sidecar probes its app: `/ready` and `mesh_app_healthy` follow the app's health.

use std::time::Duration;

use http::StatusCode;
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{Sidecar, TestMesh, app, client, eventually, free_port};

/// `/ready`'s status and body.
async fn ready(sidecar: &Sidecar) -> (StatusCode, String) {
    let rsp = client::get_url(&sidecar.admin_url("/ready")).await;
    let status = rsp.status();
    (status, client::text(rsp).await)
}

/// GET `url`: status and body, or `None` while nothing answers there.
async fn get(url: &str) -> Option<(StatusCode, String)> {
    let rsp = client::http1()
        .request(http::Request::get(url).body(Default::default()).ok()?)
        .await
        .ok()?;
    let status = rsp.status();
    Some((status, client::text(rsp).await))
}

async fn app_healthy(sidecar: &Sidecar) -> bool {
    let m = client::text(client::get_url(&sidecar.admin_url("/metrics")).await).await;
    m.lines().any(|l| l == "mesh_app_healthy 1")
}

#[tokio::test]
async fn ready_and_the_gauge_follow_the_apps_http_health_probe() {
    let mesh = TestMesh::new();
    let (addr, faults) = app::faulty("inventory").await;
    let inventory = mesh
        .sidecar("inventory")
        .app(addr)
        .extra_yaml(
            "app_health: { path: /healthz, interval: 50ms, timeout: 40ms, unhealthy_after: 2 }\n",
        )
        .start()
        .await;
    let patience = Duration::from_secs(10);
    eventually("the app to be found up", patience, || async {
        (ready(&inventory).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(app_healthy(&inventory).await);

    faults.fail(503, 10);
    let body = eventually("the app to be found down", patience, || async {
        let (status, body) = ready(&inventory).await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    assert_eq!(
        body,
        "app down: GET /healthz answered 503 Service Unavailable\n"
    );
    assert!(!app_healthy(&inventory).await);

    faults.fail(503, 0);
    eventually("the app to be found up again", patience, || async {
        (ready(&inventory).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(app_healthy(&inventory).await);
}

#[tokio::test]
async fn without_a_path_the_probe_is_a_tcp_connect_and_an_app_never_up_is_never_ready() {
    let mesh = TestMesh::new();
    let app = free_port();
    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let config = mesh
        .sidecar("inventory")
        .app(app)
        .extra_yaml("app_health: { interval: 50ms, timeout: 40ms }\n")
        .write_config(outbound, inbound, admin);
    let mut child = KillOnDrop::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{admin}/ready");
    let patience = Duration::from_secs(10);
    let body = eventually("the probe's failure on /ready", patience, || async {
        let (_, body) = get(&url).await?;
        body.starts_with(&format!("app down: connect to {app}"))
            .then_some(body)
    })
    .await;
    assert!(body.contains("refused"), "{body}");
    // The app comes up: a listener is enough for a TCP probe.
    let _listener = std::net::TcpListener::bind(app).unwrap();
    eventually("ready once the app listens", patience, || async {
        (get(&url).await?.0 == StatusCode::OK).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}
