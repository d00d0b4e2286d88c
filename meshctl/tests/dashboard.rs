//! `meshctl dashboard` in a real browser: headless Chromium (Debian's `chromium`) loads the
//! page served by the real binary, in front of a running demo mesh under load, and the test
//! reads the DOM the page's JavaScript built and takes screenshots (under
//! `target/dashboard/`). The graph shows every service and edge; a fault on payments turns the
//! orders -> payments edge below 100 % within seconds; a service page shows its instances, who
//! may call it and its requests linked to Jaeger; and with the mesh gone the page says stale.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{eventually, free_port};
use meshctl::http::HttpClient;
use meshctl::loadgen::LoadOptions;
use meshctl::up::UpOptions;

use self::common::{repo_root, require_binaries, required_in_ci, service};

const SERVICES: [&str; 5] = [
    "storefront",
    "orders",
    "inventory",
    "payments",
    "notifications",
];

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Headless Chromium with a profile of its own, loading `url` and letting its scripts run
/// for `budget` of virtual time.
fn browser(bin: &Path, profile: &Path, url: &str, budget: Duration) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1400,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={}", budget.as_millis()))
    .arg(url)
    .stdin(std::process::Stdio::null());
    cmd
}

/// The DOM after the page's scripts ran.
async fn dom(bin: &Path, profile: &Path, url: &str) -> String {
    let mut cmd = browser(bin, profile, url, Duration::from_secs(5));
    cmd.arg("--dump-dom");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A screenshot of `url` into `file`.
async fn screenshot(bin: &Path, profile: &Path, url: &str, file: &Path) {
    let mut cmd = browser(bin, profile, url, Duration::from_secs(5));
    cmd.arg(format!("--screenshot={}", file.display()));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success() && file.is_file(),
        "no screenshot {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `data-success-rate` of the edge `source -> destination` in the graph, if drawn.
fn edge_success(dom: &str, source: &str, destination: &str) -> Option<String> {
    let marker = format!("data-source=\"{source}\" data-destination=\"{destination}\" data-rps=");
    let rest = &dom[dom.find(&marker)?..];
    let start = rest.find("data-success-rate=\"")? + "data-success-rate=\"".len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_graph_turns_a_failing_edge_red_and_says_when_it_is_stale() {
    let bin = chromium();
    if !required_in_ci("chromium", bin.is_some(), "apt-get install chromium") {
        return;
    }
    let bin = bin.unwrap();
    let bins = require_binaries();
    let shots = repo_root().join("target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let profile = run_dir.path().join("chromium");
    let config = common::demo_config(
        run_dir.path(),
        None,
        SERVICES.iter().map(|s| service(s, 1)).collect(),
    );
    let mut mesh = meshctl::up::up(&config, &UpOptions::new(&bins))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let load = LoadOptions {
        target: mesh.storefront_url().unwrap(),
        rate: 10.0,
        duration: Duration::from_secs(120),
        concurrency: 16,
        sidecars: Vec::new(),
        progress: false,
    };
    let load = tokio::spawn(async move { meshctl::loadgen::run(&load).await });

    let listen = free_port();
    let _dashboard = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .arg("dashboard")
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &mesh.control_plane().admin.to_string()])
            .args(["--jaeger-url", "http://jaeger.example:16686"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{listen}/");
    let client = HttpClient::new(Duration::from_secs(5));
    eventually(
        "the dashboard to see traffic on every edge of an order",
        Duration::from_secs(20),
        || async {
            let r = client
                .get(&format!("{url}api/overview?window=10"))
                .await
                .map_err(|e| e.to_string())?;
            let edges = r.json()["stat"]["edges"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if edges.len() >= 4 {
                Ok(())
            } else {
                Err(r.text())
            }
        },
    )
    .await;

    // The graph: every service a node, every edge drawn and healthy, updated in place.
    let page = dom(&bin, &profile, &url).await;
    for s in SERVICES {
        assert!(
            page.contains(&format!("data-service=\"{s}\"")),
            "{s} missing:\n{page}"
        );
    }
    for (source, destination) in [
        ("storefront", "orders"),
        ("orders", "inventory"),
        ("orders", "payments"),
        ("orders", "notifications"),
    ] {
        assert_eq!(
            edge_success(&page, source, destination).as_deref(),
            Some("1"),
            "{source} -> {destination}:\n{page}"
        );
    }
    assert!(page.contains("data-stale=\"false\""), "{page}");
    let updates: u32 = page
        .split("data-updates=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        updates >= 2,
        "the page polled {updates} times in 5s:\n{page}"
    );
    screenshot(&bin, &profile, &url, &shots.join("graph.png")).await;

    // A fault on payments: within seconds the orders -> payments edge is below 100 %.
    let payments = mesh.instances_of("payments").next().unwrap().app_url();
    common::set_faults(&client, &payments, serde_json::json!({"error_rate": 1.0})).await;
    let failing = eventually(
        "the orders -> payments edge to fall below 100 %",
        Duration::from_secs(15),
        || async {
            let page = dom(&bin, &profile, &url).await;
            match edge_success(&page, "orders", "payments") {
                Some(rate) if rate.parse::<f64>().is_ok_and(|r| r < 1.0) => Ok(page),
                other => Err(format!("success rate {other:?}")),
            }
        },
    )
    .await;
    // Coloured by health: amber while the window still holds the good seconds, then red.
    let edge_class = |page: &str| {
        ["healthy", "degraded", "failing"]
            .into_iter()
            .find(|class| {
                page.contains(&format!(
                    "class=\"edge {class}\" data-source=\"orders\" data-destination=\"payments\""
                ))
            })
    };
    assert!(
        matches!(edge_class(&failing), Some("degraded" | "failing")),
        "{failing}"
    );
    eventually("the edge to turn red", Duration::from_secs(15), || async {
        let page = dom(&bin, &profile, &url).await;
        match edge_class(&page) {
            Some("failing") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    screenshot(&bin, &profile, &url, &shots.join("graph-failing.png")).await;
    common::set_faults(&client, &payments, serde_json::json!({"error_rate": 0.0})).await;

    // A service page: instances, who may call it, its requests linked to Jaeger.
    let service_url = format!("{url}#/service/payments");
    let page = eventually("the payments page", Duration::from_secs(15), || async {
        let page = dom(&bin, &profile, &service_url).await;
        if page.contains("http://jaeger.example:16686/trace/") {
            Ok(page)
        } else {
            Err(page)
        }
    })
    .await;
    assert!(
        page.contains("<h1 id=\"service-name\">payments</h1>"),
        "{page}"
    );
    assert!(page.contains("<td>payments-1</td>"), "{page}");
    assert!(page.contains("Who may call it"), "{page}");
    assert!(page.contains("orders"), "{page}");
    screenshot(&bin, &profile, &service_url, &shots.join("service.png")).await;

    // The mesh goes away: the page says its data is stale instead of showing it as live.
    load.abort();
    mesh.stop().await;
    let page = dom(&bin, &profile, &url).await;
    assert!(page.contains("data-stale=\"true\""), "{page}");
    assert!(page.contains("Stale: "), "{page}");
    assert!(page.contains("cannot reach the control plane"), "{page}");
    screenshot(&bin, &profile, &url, &shots.join("stale.png")).await;
}
