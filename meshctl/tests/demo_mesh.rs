//! The demo mesh end to end, as `meshctl up` runs it: real control plane, sidecars and
//! demo-service apps as child processes, an OTLP collector in this test.
//!
//! Orders go through the gateway to the storefront while an inventory instance dies, while payments fails
//! 30 % of the time, and while payments fails always; one order's trace spans every service;
//! and after `stop()` no process of the run is left.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_testkit::eventually;
use mesh_testkit::otlp::Collector;
use mesh_testkit::process::KillOnDrop;
use meshctl::http::{HttpClient, Response};
use meshctl::up::{RunningMesh, TracingSpec, UpOptions};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};

use self::common::{pid, repo_root, require_binaries, service};

async fn order(client: &HttpClient, storefront: &str, sku: &str) -> Response {
    client
        .json(
            Method::POST,
            &format!("{storefront}/api/orders"),
            &serde_json::json!({"customer": "test", "items": [{"sku": sku, "qty": 1}]}),
        )
        .await
        .unwrap()
}

async fn available(client: &HttpClient, inventory_app: &str, sku: &str) -> i64 {
    let response = client
        .get(&format!("{inventory_app}/products/{sku}"))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()["available"].as_i64().unwrap()
}

async fn set_faults(
    client: &HttpClient,
    mesh: &RunningMesh,
    service: &str,
    faults: serde_json::Value,
) {
    for i in mesh.instances_of(service) {
        let response = client
            .json(
                Method::PUT,
                &format!("{}/admin/faults", i.app_url()),
                &faults,
            )
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    }
}

async fn retries(mesh: &RunningMesh) -> u64 {
    let admins: Vec<_> = mesh.instances().iter().map(|i| i.admin).collect();
    meshctl::loadgen::scrape_retries(&admins)
        .await
        .values()
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_mesh_survives_failures_traces_orders_and_leaves_nothing_behind() {
    let bins = require_binaries();
    let collector = Collector::start().await;
    let run_dir = tempfile::tempdir().unwrap();
    let config = common::demo_config(
        run_dir.path(),
        Some(TracingSpec {
            otlp_endpoint: format!("http://{}", collector.grpc),
            protocol: "grpc".into(),
        }),
        vec![
            service("storefront", 1),
            service("orders", 1),
            service("inventory", 2),
            service("payments", 2),
            service("notifications", 1),
        ],
    );
    let mut options = UpOptions::new(&bins);
    options.stop_timeout = Duration::from_secs(10);
    let started = tokio::time::Instant::now();
    let mut mesh = meshctl::up::up(&config, &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("the demo mesh started in {:?}", started.elapsed());
    let pids = mesh.pids();
    assert_eq!(
        pids.len(),
        1 + 2 * 7 + 1,
        "the control plane, 7 instances, the gateway"
    );
    let manifest = meshctl::up::Manifest::load(run_dir.path()).unwrap();
    assert_eq!(manifest.instances.len(), 7);
    assert!(
        manifest
            .instances
            .iter()
            .all(|i| i.app_pid.is_some() && i.sidecar_pid.is_some())
    );
    let report = meshctl::up::report(&mesh);
    assert!(report.contains("inventory-2"), "{report}");

    let client = HttpClient::new(Duration::from_secs(15));
    // Users enter through the gateway, which mesh.json records and the report points at.
    let storefront = mesh.gateway_url();
    assert_eq!(manifest.entry_url(), Some(storefront.clone()));
    assert!(manifest.gateway.as_ref().is_some_and(|g| g.pid.is_some()));
    assert!(
        report.contains(&format!("{storefront}/   <- open this")),
        "{report}"
    );
    let inventory_app = mesh.instances_of("inventory").nth(1).unwrap().app_url();

    // A product with plenty of stock, so no order fails for lack of it.
    let products = client
        .get(&format!("{storefront}/api/products"))
        .await
        .unwrap();
    assert_eq!(products.status, StatusCode::OK, "{}", products.text());
    let sku = products
        .json()
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|p| p["available"].as_i64().unwrap_or(0))
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .unwrap();

    // (a) Orders succeed.
    for _ in 0..5 {
        let r = order(&client, &storefront, &sku).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }

    // (b) An inventory instance dies (app and sidecar, SIGKILL) in the middle of 40 orders.
    let victim = mesh.instances_of("inventory").next().unwrap().clone();
    let mut failures = Vec::new();
    for n in 0..40 {
        if n == 15 {
            kill(pid(victim.app_pid.unwrap()), Signal::SIGKILL).unwrap();
            kill(pid(victim.sidecar_pid.unwrap()), Signal::SIGKILL).unwrap();
        }
        let r = order(&client, &storefront, &sku).await;
        if r.status != StatusCode::CREATED {
            failures.push(format!("order {n}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        failures.is_empty(),
        "orders failed while {} died: {failures:#?}",
        victim.name
    );
    let exited = tokio::time::timeout(Duration::from_secs(5), mesh.next_exit())
        .await
        .unwrap();
    assert!(exited.name.starts_with(&victim.name), "{exited:?}");

    // One order carries our own trace context, so its trace can be found. Placed after the
    // kill: a SIGKILLed sidecar takes the spans still in its export queue with it.
    let trace_id = format!("{:016x}{:016x}", fastrand::u64(1..), fastrand::u64(1..));
    let traceparent = format!("00-{trace_id}-{:016x}-01", fastrand::u64(1..));
    let traced = client
        .send(
            Method::POST,
            &format!("{storefront}/api/orders"),
            Some(&serde_json::json!({"customer": "traced", "items": [{"sku": sku, "qty": 1}]})),
            &[("traceparent", &traceparent)],
        )
        .await
        .unwrap();
    assert_eq!(traced.status, StatusCode::CREATED, "{}", traced.text());
    assert_eq!(traced.json()["status"], "confirmed");
    // (c) Payments fails 30 % of requests: the mesh retries, every order still succeeds.
    let retries_before = retries(&mesh).await;
    set_faults(
        &client,
        &mesh,
        "payments",
        serde_json::json!({"error_rate": 0.3}),
    )
    .await;
    let mut failures = Vec::new();
    for n in 0..40 {
        let r = order(&client, &storefront, &sku).await;
        if r.status != StatusCode::CREATED {
            failures.push(format!("order {n}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        failures.is_empty(),
        "orders failed at 30% payment errors: {failures:#?}"
    );
    let retries_after = retries(&mesh).await;
    assert!(
        retries_after > retries_before,
        "no retries counted ({retries_before} -> {retries_after})"
    );

    // (d) Payments always fails: orders fail cleanly and the reserved stock comes back.
    set_faults(
        &client,
        &mesh,
        "payments",
        serde_json::json!({"error_rate": 1.0}),
    )
    .await;
    let before = available(&client, &inventory_app, &sku).await;
    for _ in 0..3 {
        let r = order(&client, &storefront, &sku).await;
        assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.text());
        let body = r.json();
        assert_eq!(body["status"], "failed", "{body}");
        assert_eq!(body["reason"], "payment failed", "{body}");
    }
    eventually("stock to be released", Duration::from_secs(5), || async {
        let now = available(&client, &inventory_app, &sku).await;
        if now == before {
            Ok(())
        } else {
            Err(format!("{before} before, {now} after failed orders"))
        }
    })
    .await;
    set_faults(
        &client,
        &mesh,
        "payments",
        serde_json::json!({"error_rate": 0.0}),
    )
    .await;

    // (e) The traced order is one trace across the gateway, storefront, orders, inventory and
    // payments.
    let wanted: BTreeSet<&str> =
        ["gateway", "storefront", "orders", "inventory", "payments"].into();
    let what = format!("trace {trace_id} to have spans from {wanted:?}");
    let services = eventually(&what, Duration::from_secs(15), || async {
        let services: BTreeSet<String> = collector
            .spans()
            .await
            .into_iter()
            .filter(|s| hex(&s.span.trace_id) == trace_id)
            .map(|s| s.service)
            .collect();
        if wanted.iter().all(|w| services.contains(*w)) {
            Ok(services)
        } else {
            Err(format!("spans from {services:?} only"))
        }
    })
    .await;
    eprintln!("trace {trace_id} spans {services:?}");

    // (f) Stop: every process of the run is gone, reaped, nothing left.
    let killed = mesh.stop().await;
    assert!(killed.is_empty(), "had to be killed: {killed:?}");
    for p in pids {
        assert_eq!(
            kill(pid(p), None),
            Err(Errno::ESRCH),
            "process {p} is still there"
        );
    }
    assert!(
        !run_dir.path().join("mesh.json").exists(),
        "mesh.json outlived the mesh"
    );
    eprintln!("the whole test took {:?}", started.elapsed());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_dies_during_start_up_stops_the_run_and_is_named() {
    // A control plane that exits at once (the other binaries are never reached).
    let fake = tempfile::tempdir().unwrap();
    for (name, target) in [
        ("control-plane", "/bin/false"),
        ("sidecar", "/bin/true"),
        ("demo-service", "/bin/true"),
    ] {
        std::os::unix::fs::symlink(target, fake.path().join(name)).unwrap();
    }
    let run_dir = tempfile::tempdir().unwrap();
    let config = common::demo_config(run_dir.path(), None, vec![service("inventory", 1)]);
    // A bad mesh directory is refused before anything starts.
    let mut bad = config.clone();
    bad.control_plane.config_dir = run_dir.path().join("nowhere");
    let err = meshctl::up::up(&bad, &UpOptions::new(fake.path()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");

    let err = meshctl::up::up(&config, &UpOptions::new(fake.path()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("control-plane exited during start-up"),
        "{text}"
    );
    assert!(text.contains("control-plane.log"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_the_demo_takes_load_and_faults_and_stops_on_ctrl_c() {
    require_binaries();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let demo = dir.path().join("demo.yaml");
    // The other end-to-end test picks from 20000..31000; this one from 31000..32000.
    let ports_from = 31_000 + fastrand::u16(0..9) * 100;
    std::fs::write(
        &demo,
        format!(
            "control_plane: {{ config_dir: {:?} }}\n\
             run_dir: run\n\
             ports_from: {ports_from}\n\
             services:\n  storefront: {{ instances: 1 }}\n  orders: {{ instances: 1 }}\n  \
             inventory: {{ instances: 1 }}\n  payments: {{ instances: 2 }}\n  \
             notifications: {{ instances: 1 }}\n",
            repo_root().join("config/demo/mesh")
        ),
    )
    .unwrap();
    let stdout = std::fs::File::create(dir.path().join("up.out")).unwrap();
    let mut up = KillOnDrop::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .arg("up")
            .arg("--no-jaeger")
            .arg("--config")
            .arg(&demo)
            .stdout(stdout.try_clone().unwrap())
            .stderr(stdout)
            .spawn()
            .unwrap(),
    );
    let output = || std::fs::read_to_string(dir.path().join("up.out")).unwrap_or_default();
    let manifest = eventually("mesh.json", Duration::from_secs(30), || {
        let manifest = meshctl::up::Manifest::load(&run_dir);
        if manifest.is_err()
            && let Ok(Some(status)) = up.try_wait()
        {
            panic!("meshctl up exited ({status}):\n{}", output());
        }
        let manifest = manifest.map_err(|_| output());
        async move { manifest }
    })
    .await;
    let run = run_dir.to_str().unwrap().to_owned();

    let (ok, out, err) = common::meshctl(&[
        "fault",
        "payments",
        "--error-rate",
        "0.5",
        "--latency",
        "5ms",
        "--run-dir",
        &run,
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("payments-1: latency 5ms, error rate 0.5"),
        "{out}"
    );
    assert!(out.contains("payments-2: "), "{out}");

    let (ok, out, err) = common::meshctl(&[
        "loadgen",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--run-dir",
        &run,
    ])
    .await;
    assert!(ok, "{out}{err}");
    for line in [
        "sent ",
        "succeeded ",
        "success rate ",
        "p99 ",
        "retries seen ",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }

    let (ok, out, err) =
        common::meshctl(&["fault", "payments", "--clear", "--run-dir", &run]).await;
    assert!(ok, "{err}");
    assert!(out.contains("payments-2: no faults"), "{out}");

    // Ctrl-C: everything stops, meshctl exits 0, no process is left.
    up.signal(Signal::SIGINT);
    let status = up.exit_within(Duration::from_secs(30)).await;
    let text = output();
    assert!(status.success(), "{status}:\n{text}");
    assert!(text.contains("SERVICE"), "{text}");
    assert!(text.contains("payments-2"), "{text}");
    assert!(text.contains("stopped"), "{text}");
    let gateway = manifest.gateway.clone().unwrap();
    assert!(
        text.contains(&format!("{}/   <- open this", gateway.url())),
        "{text}"
    );
    let mut pids: Vec<u32> = manifest.control_plane_pid.into_iter().collect();
    pids.extend(gateway.pid);
    for i in &manifest.instances {
        pids.extend(i.app_pid);
        pids.extend(i.sidecar_pid);
    }
    assert_eq!(pids.len(), 14);
    for p in pids {
        assert_eq!(
            kill(pid(p), None),
            Err(Errno::ESRCH),
            "process {p} is still there"
        );
    }
    assert!(!run_dir.join("mesh.json").exists());
    assert!(run_dir.join("prometheus.yml").is_file());
}
