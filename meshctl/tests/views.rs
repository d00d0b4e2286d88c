//! `meshctl stat` and `meshctl tap` against a running demo mesh (the real control plane,
//! sidecars and apps, started by `meshctl up`'s code) under a load of known rate; and what they
//! say when the input is wrong or the mesh is not there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use mesh_testkit::eventually;
use mesh_testkit::process::KillOnDrop;
use meshctl::loadgen::LoadOptions;
use meshctl::up::UpOptions;
use nix::sys::signal::{Signal, kill};
use serde_json::Value;

use self::common::{meshctl, pid, require_binaries, service};

/// Orders per second the test places.
const RATE: f64 = 10.0;

/// How far a measured rate may be from the rate sent: the window's edges cut a second or so of
/// a 10 s window, and the load generator paces by schedule, not exactly.
const TOLERANCE: f64 = 0.25;

fn edge<'a>(report: &'a Value, source: &str, destination: &str) -> Option<&'a Value> {
    report["edges"]
        .as_array()?
        .iter()
        .find(|e| e["source"] == source && e["destination"] == destination)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_shows_every_edge_at_the_rate_sent_and_tap_streams_requests() {
    let bins = require_binaries();
    let run_dir = tempfile::tempdir().unwrap();
    let config = common::demo_config(
        run_dir.path(),
        None,
        vec![
            service("storefront", 1),
            service("orders", 2),
            service("inventory", 1),
            service("payments", 1),
            service("notifications", 1),
        ],
    );
    let mut mesh = meshctl::up::up(&config, &UpOptions::new(&bins))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let admin = mesh.control_plane().admin.to_string();

    // A tap on orders, from before the load starts, as a user runs it.
    let tap_out = run_dir.path().join("tap.out");
    let tap_err = run_dir.path().join("tap.err");
    let mut tap = KillOnDrop::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["tap", "orders", "--path", "/orders", "--admin", &admin])
            .stdout(std::fs::File::create(&tap_out).unwrap())
            .stderr(std::fs::File::create(&tap_err).unwrap())
            .spawn()
            .unwrap(),
    );
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    eventually("the tap to open", Duration::from_secs(10), || {
        let err = read(&tap_err);
        async move {
            if err.contains("tapping orders on 2 sidecar(s)") {
                Ok(())
            } else {
                Err(err)
            }
        }
    })
    .await;

    // 10 orders a second for 14 s; stat looks at the last 10 s once 12 s have passed.
    let load = LoadOptions {
        target: mesh.storefront_url().unwrap(),
        rate: RATE,
        duration: Duration::from_secs(14),
        concurrency: 16,
        sidecars: Vec::new(),
        progress: false,
    };
    let load = tokio::spawn(async move { meshctl::loadgen::run(&load).await });
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (ok, out, err) =
        meshctl(&["stat", "--admin", &admin, "--window", "10s", "-o", "json"]).await;
    assert!(ok, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    eprintln!("{out}");
    // Every order: storefront -> orders -> inventory, payments, notifications.
    for (source, destination) in [
        ("storefront", "orders"),
        ("orders", "inventory"),
        ("orders", "payments"),
        ("orders", "notifications"),
    ] {
        let e = edge(&report, source, destination)
            .unwrap_or_else(|| panic!("no edge {source} -> {destination} in {out}"));
        let rps = e["rps"].as_f64().unwrap();
        assert!(
            rps >= RATE * (1.0 - TOLERANCE),
            "{source} -> {destination}: {rps}/s for {RATE}/s sent"
        );
        // Orders may reserve and release stock more than once per order; the others once.
        if destination != "inventory" {
            assert!(
                rps <= RATE * (1.0 + TOLERANCE),
                "{source} -> {destination}: {rps}/s for {RATE}/s sent"
            );
        }
        assert_eq!(e["success_rate"].as_f64(), Some(1.0), "{e}");
        let (p50, p99) = (e["p50_ms"].as_f64().unwrap(), e["p99_ms"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 < 5000.0, "{e}");
    }
    let payments = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["destination"] == "payments")
        .unwrap();
    let rps = payments["rps"].as_f64().unwrap();
    assert!((rps - RATE).abs() <= RATE * TOLERANCE, "payments {rps}/s");

    // The table, for one service: its row and the edges to and from it.
    let (ok, out, err) = meshctl(&["stat", "orders", "--admin", &admin, "--window", "10s"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("storefront -> orders"), "{out}");
    assert!(out.contains("orders -> payments"), "{out}");
    assert!(
        !out.lines()
            .any(|l| l.starts_with("storefront ") && !l.contains("->")),
        "{out}"
    );

    // An unknown service: one line naming those there are.
    let (ok, out, err) = meshctl(&["stat", "billing", "--admin", &admin]).await;
    assert!(!ok, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "no service \"billing\" in the mesh (services: gateway, inventory, notifications"
        ),
        "{err}"
    );

    load.await.unwrap().unwrap();

    // The tap showed the orders as they came: storefront's calls arriving at orders, and only
    // paths under /orders.
    let lines = read(&tap_out);
    let inbound: Vec<&str> = lines
        .lines()
        .filter(|l| {
            l.contains("  inbound  spiffe://mesh.local/ns/default/sa/storefront -> orders  POST /orders  201  ")
        })
        .collect();
    assert!(inbound.len() >= 50, "{} lines:\n{lines}", inbound.len());
    assert!(lines.lines().all(|l| l.contains(" /orders")), "{lines}");
    // Ctrl-C: it stops at once, and cleanly.
    tap.signal(Signal::SIGINT);
    let status = tap.exit_within(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}: {}", read(&tap_err));

    // Tapping an unknown service: one line naming those there are.
    let (ok, _, err) = meshctl(&["tap", "billing", "--admin", &admin]).await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no service \"billing\" in the mesh"), "{err}");

    // A sidecar that died (its instance still registered until its lease ends): the others'
    // numbers, and one line naming it.
    let victim = mesh.instances_of("orders").nth(1).unwrap().clone();
    kill(pid(victim.sidecar_pid.unwrap()), Signal::SIGKILL).unwrap();
    let (ok, out, err) = meshctl(&["stat", "--admin", &admin]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("EDGE"), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("meshctl: {}: its sidecar at ", victim.name))
            && lines[0].contains("meshctl status"),
        "{err}"
    );

    // One name per instance: status names them as `up` did, ejections included.
    let (ok, out, err) = meshctl(&["status", "--admin", &admin]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("\norders         orders-2 ") || out.contains(" orders-2 "),
        "{out}"
    );
    // A sidecar's /config shows the authorization in force: the control plane's.
    let client = meshctl::http::HttpClient::new(Duration::from_secs(5));
    let payments = mesh.instances_of("payments").next().unwrap().admin_url();
    let config = client
        .get(&format!("{payments}/config"))
        .await
        .unwrap()
        .json();
    let snapshot = client
        .get(&format!("{payments}/snapshot"))
        .await
        .unwrap()
        .json();
    assert_eq!(
        config["authorization"], snapshot["authorization"],
        "{config}"
    );
    assert!(
        config["authorization"].to_string().contains("deny"),
        "{config}"
    );
    assert_eq!(
        config["authorization_source"],
        format!("control plane snapshot {}", snapshot["version"])
    );
    // Logs written to files carry no terminal colour codes.
    let log = std::fs::read_to_string(mesh.run_dir().log("control-plane")).unwrap();
    assert!(!log.contains('\u{1b}'), "{log}");

    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_and_tap_without_a_control_plane_say_how_to_get_one() {
    let nobody = mesh_testkit::free_port().to_string();
    let (ok, out, err) = meshctl(&["stat", "--admin", &nobody]).await;
    assert!(!ok, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the control plane's admin endpoint at {nobody} (Connection refused"
        )) && err.contains("meshctl up"),
        "{err}"
    );
    let (ok, _, err) = meshctl(&["status", "--admin", &nobody]).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "meshctl: cannot reach the control plane's admin endpoint at {nobody} (Connection \
             refused (os error 111)): is the mesh running? start it with `meshctl up`, or pass --admin"
        )
    );
    let (ok, _, err) = meshctl(&["tap", "orders", "--admin", &nobody]).await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach the control plane"), "{err}");
}
