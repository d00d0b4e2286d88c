//! The real `demo-service` binary: it starts, serves `/health`, stops on SIGTERM with 0, and
//! exits with 1 after `POST /admin/crash`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{WAIT, call, spawn_service};
use demo_services::shop::Service;
use http::{Method, StatusCode};
use mesh_testkit::process::{KillOnDrop, Signal};

/// A running `demo-service`; killed when dropped.
struct Running {
    child: KillOnDrop,
    addr: SocketAddr,
}

async fn start(service: Service, data_dir: &std::path::Path) -> Running {
    start_calling(service, data_dir, &["--outbound", "127.0.0.1:9"]).await
}

/// Like [`start`], with `calls` saying where calls to other services go.
async fn start_calling(service: Service, data_dir: &std::path::Path, calls: &[&str]) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-service"));
    command
        .arg(service.name())
        .args(["--listen", "127.0.0.1:0"])
        .args(calls)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--instance", &format!("{service}-1")])
        .env("MESH_LOG", "warn");
    let (child, addr) = spawn_service(command).await;
    Running { child, addr }
}

/// `demo-service ARGS` run to its end within [`WAIT`].
async fn run_with(args: &[&str]) -> std::process::Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo-service"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, output).await.unwrap().unwrap()
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn exit_code(&mut self) -> Option<i32> {
        self.child.exit_within(WAIT).await.code()
    }

    fn terminate(&self) {
        self.child.signal(Signal::SIGTERM);
    }
}

#[tokio::test]
async fn every_service_starts_serves_health_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    for service in Service::ALL {
        running.push((service, start(service, data.path()).await));
    }
    for (service, app) in &running {
        let rsp = call(Method::GET, &app.url("/health"), None).await;
        assert_eq!(rsp.status, StatusCode::OK, "{service}");
        assert_eq!(&rsp.body[..], b"ok");
        assert_eq!(rsp.headers["x-demo-instance"], format!("{service}-1"));
    }
    for service in [
        Service::Inventory,
        Service::Orders,
        Service::Payments,
        Service::Notifications,
    ] {
        let file = data.path().join(format!("{service}.sqlite"));
        assert!(file.exists(), "{} missing", file.display());
    }
    for (service, app) in &mut running {
        app.terminate();
        assert_eq!(app.exit_code().await, Some(0), "{service}");
    }
}

#[tokio::test]
async fn crash_exits_the_process_with_1() {
    let data = tempfile::tempdir().unwrap();
    let mut app = start(Service::Payments, data.path()).await;
    let rsp = call(Method::POST, &app.url("/admin/crash"), None).await;
    assert_eq!(rsp.status, StatusCode::ACCEPTED);
    assert_eq!(app.exit_code().await, Some(1));
}

#[tokio::test]
async fn a_second_instance_shares_the_store() {
    let data = tempfile::tempdir().unwrap();
    let first = start(Service::Inventory, data.path()).await;
    let second = start(Service::Inventory, data.path()).await;
    let reserve =
        serde_json::json!({"order_id": "o-1", "items": [{"sku": "ceramic-mug", "qty": 4}]});
    let rsp = call(Method::POST, &first.url("/reservations"), Some(reserve)).await;
    assert_eq!(rsp.status, StatusCode::CREATED);
    let seen = call(Method::GET, &second.url("/reservations/o-1"), None).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.json["status"], "reserved");
}

#[tokio::test]
async fn instances_racing_for_scarce_stock_never_oversell() {
    let data = tempfile::tempdir().unwrap();
    let first = start(Service::Inventory, data.path()).await;
    let second = start(Service::Inventory, data.path()).await;
    let stock = call(Method::GET, &first.url("/products/signed-cookbook"), None)
        .await
        .json["available"]
        .as_i64()
        .unwrap();
    let attempts = 4 * stock;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..attempts {
        let url = if i % 2 == 0 { &first } else { &second }.url("/reservations");
        let body = serde_json::json!({
            "order_id": format!("race-{i}"),
            "items": [{"sku": "signed-cookbook", "qty": 1}],
        });
        calls.spawn(async move { call(Method::POST, &url, Some(body)).await.status });
    }
    let statuses = calls.join_all().await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!(created as i64, stock, "{statuses:?}");
    assert_eq!(refused as i64, attempts - stock, "{statuses:?}");
    let left = call(Method::GET, &second.url("/products/signed-cookbook"), None).await;
    assert_eq!(left.json["available"], 0);
}

#[tokio::test]
async fn bad_flags_fail_to_start() {
    let data = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo-service"))
        .arg("inventory")
        .args(["--listen", "127.0.0.1:0", "--outbound", "127.0.0.1:9"])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--error-rate", "2"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, output).await.unwrap().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error_rate"), "{stderr}");
}

#[tokio::test]
async fn transparent_mode_starts_without_an_outbound_address() {
    let data = tempfile::tempdir().unwrap();
    let mut app = start_calling(Service::Storefront, data.path(), &["--transparent"]).await;
    let rsp = call(Method::GET, &app.url("/health"), None).await;
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(rsp.headers["x-demo-instance"], "storefront-1");
    app.terminate();
    assert_eq!(app.exit_code().await, Some(0));
}

#[tokio::test]
async fn outbound_and_transparent_are_one_or_the_other() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let base = ["orders", "--listen", "127.0.0.1:0", "--data-dir", dir];

    let both = [&base[..], &["--outbound", "127.0.0.1:9", "--transparent"]].concat();
    let output = run_with(&both).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--outbound"), "{stderr}");
    assert!(stderr.contains("--transparent"), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    let neither = run_with(&base).await;
    assert_eq!(neither.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&neither.stderr);
    assert!(stderr.contains("--outbound"), "{stderr}");
    assert!(stderr.contains("required"), "{stderr}");
}

#[tokio::test]
async fn a_bad_outbound_address_is_named() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let output = run_with(&[
        "orders",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
        "--outbound",
        "no such/address",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"invalid outbound address "no such/address""#),
        "{stderr}"
    );
}
