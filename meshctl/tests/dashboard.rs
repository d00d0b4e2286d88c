//! `meshctl dashboard` in a real browser: headless Chromium (Debian's `chromium`) loads the
//! page served by the real binary, in front of a running demo mesh under load, and the test
//! reads the DOM the page's JavaScript built and takes screenshots (under
//! `target/dashboard/`). The graph shows every service and edge; a fault on payments turns the
//! orders -> payments edge below 100 % within seconds; a service page shows its instances, who
//! may call it and its requests linked to Jaeger; and with the mesh gone the page says stale.
//! In front of a control plane declaring 50 services, the graph lays every node out apart, with
//! its name whole, within a stated size.

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

/// The window the pages are loaded in, as a user's laptop would show them.
const WINDOW: (u32, u32) = (1400, 900);

/// How long one Chromium run may take, its 5 s of virtual time included.
const BROWSER_PATIENCE: Duration = Duration::from_secs(60);

/// Headless Chromium with a profile of its own, in a window of `size`, loading `url` and
/// letting its scripts run for `budget` of virtual time.
fn browser(
    bin: &Path,
    profile: &Path,
    url: &str,
    budget: Duration,
    size: (u32, u32),
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ])
    .arg(format!("--window-size={},{}", size.0, size.1))
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={}", budget.as_millis()))
    .arg(url)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    cmd
}

/// Runs Chromium to its end, killed after [`BROWSER_PATIENCE`].
async fn run_browser(mut cmd: tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(BROWSER_PATIENCE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium did not finish within {BROWSER_PATIENCE:?}"))
        .unwrap()
}

/// The DOM after the page's scripts ran.
async fn dom(bin: &Path, profile: &Path, url: &str) -> String {
    let mut cmd = browser(bin, profile, url, Duration::from_secs(5), WINDOW);
    cmd.arg("--dump-dom");
    let out = run_browser(cmd).await;
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A screenshot of `url` into `file`, in a window of `size`.
async fn screenshot_sized(bin: &Path, profile: &Path, url: &str, file: &Path, size: (u32, u32)) {
    let mut cmd = browser(bin, profile, url, Duration::from_secs(5), size);
    cmd.arg(format!("--screenshot={}", file.display()));
    let out = run_browser(cmd).await;
    assert!(
        out.status.success() && file.is_file(),
        "no screenshot {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A screenshot of `url` into `file`.
async fn screenshot(bin: &Path, profile: &Path, url: &str, file: &Path) {
    screenshot_sized(bin, profile, url, file, WINDOW).await;
}

/// `meshctl dashboard` in front of the control plane at `admin`, with `args`; and its URL.
fn dashboard(admin: std::net::SocketAddr, args: &[&str]) -> (KillOnDrop, String) {
    let listen = free_port();
    let process = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .arg("dashboard")
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    (process, format!("http://{listen}/"))
}

/// Waits (20 s at most) until the dashboard's `/api/overview` satisfies `ready`.
async fn overview_until(
    client: &HttpClient,
    url: &str,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) {
    eventually(what, Duration::from_secs(20), || async {
        let r = client
            .get(&format!("{url}api/overview?window=10"))
            .await
            .map_err(|e| e.to_string())?;
        if ready(&r.json()) {
            Ok(())
        } else {
            Err(r.text())
        }
    })
    .await;
}

/// What both tests need: Chromium, the workspace's binaries, the screenshot directory and a
/// run directory; `None` (the test skips, saying why) when Chromium is missing outside CI.
fn setup() -> Option<(PathBuf, PathBuf, PathBuf, tempfile::TempDir)> {
    let bin = chromium();
    if !required_in_ci("chromium", bin.is_some(), "apt-get install chromium") {
        return None;
    }
    let shots = repo_root().join("target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    Some((
        bin.unwrap(),
        require_binaries(),
        shots,
        tempfile::tempdir().unwrap(),
    ))
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
    let Some((bin, bins, shots, run_dir)) = setup() else {
        return;
    };
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

    let (_dashboard, url) = dashboard(
        mesh.control_plane().admin,
        &["--jaeger-url", "http://jaeger.example:16686"],
    );
    let client = HttpClient::new(Duration::from_secs(5));
    overview_until(
        &client,
        &url,
        "the dashboard to see traffic on every edge of an order",
        |o| o["stat"]["edges"].as_array().is_some_and(|e| e.len() >= 4),
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

/// The 50 services of [`the_graph_of_fifty_services_is_laid_out_apart_and_readable`], in five
/// layers: 3 front ends, 12 APIs, 20 domain services, 10 shared stores, 5 platform services.
const LAYERS: [std::ops::Range<usize>; 5] = [0..3, 3..15, 15..35, 35..45, 45..50];

fn svc(i: usize) -> String {
    format!("svc-{i:02}")
}

/// What service `i` calls: each front end fans out to five APIs and calls the auth service
/// (svc-45) directly; each API calls three domain services, and every fourth the config
/// service (svc-46); each domain service two shared stores; each store one platform service.
/// Every service below the front ends has a caller in the layer above, so layers are depths.
fn calls(i: usize) -> std::collections::BTreeSet<usize> {
    let set = |v: &[usize]| v.iter().copied().collect();
    if LAYERS[0].contains(&i) {
        set(&[
            3 + 4 * i,
            4 + 4 * i,
            5 + 4 * i,
            6 + 4 * i,
            3 + (4 * i + 5) % 12,
            45,
        ])
    } else if LAYERS[1].contains(&i) {
        let k = i - 3;
        let mut out: std::collections::BTreeSet<usize> = set(&[
            15 + (2 * k) % 20,
            15 + (2 * k + 1) % 20,
            15 + (2 * k + 7) % 20,
        ]);
        if k.is_multiple_of(4) {
            out.insert(46);
        }
        out
    } else if LAYERS[2].contains(&i) {
        let q = i - 15;
        set(&[35 + q % 10, 35 + (q + 3) % 10])
    } else if LAYERS[3].contains(&i) {
        set(&[45 + (i - 35) % 5])
    } else {
        set(&[])
    }
}

/// One `<g class="node" ...>` of the graph, as the page laid it out.
#[derive(Debug)]
struct NodeBox {
    service: String,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    label_width: f64,
}

/// The value of `name="..."` inside one tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')?;
    Some(&tag[start..start + end])
}

fn nodes(dom: &str) -> Vec<NodeBox> {
    dom.split("<g class=\"node\"")
        .skip(1)
        .map(|rest| {
            let tag = format!(" {}", &rest[..rest.find('>').unwrap()]);
            let service = attribute(&tag, "data-service").unwrap().to_owned();
            let box_: Vec<f64> = attribute(&tag, "data-box")
                .unwrap_or_else(|| panic!("{service} has no data-box: {tag}"))
                .split(',')
                .map(|v| v.parse().unwrap())
                .collect();
            let label_width = attribute(&tag, "data-label-width")
                .unwrap_or_else(|| panic!("{service} has no data-label-width: {tag}"))
                .parse()
                .unwrap();
            NodeBox {
                service,
                x: box_[0],
                y: box_[1],
                w: box_[2],
                h: box_[3],
                label_width,
            }
        })
        .collect()
}

/// The graph of a 50-service mesh stays usable: every service is a node, no two nodes overlap
/// or touch, every name is drawn whole inside its box, and the graph stays within a bound that
/// grows with its tallest layer, scrolling inside its panel.
///
/// What runs: the real `control-plane` binary with a configuration of 50 services whose
/// `calls` form a layered graph (fan-out from front ends, shared stores, edges that skip
/// layers), and the real `meshctl dashboard` in front of it, loaded in headless Chromium. No
/// sidecars: the dashboard draws each declared `calls` edge (dashed grey until it carries
/// traffic) from the control plane's `/config`, so the declared graph is the shape the page
/// lays out, and 100 more processes (a sidecar and an app per service) would test the sidecars'
/// stats, not the layout. Live edges over the same layout are what the 5-service test checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_of_fifty_services_is_laid_out_apart_and_readable() {
    let Some((bin, bins, shots, run_dir)) = setup() else {
        return;
    };
    let (config_dir, state_dir) = (run_dir.path().join("mesh"), run_dir.path().join("state"));
    std::fs::create_dir_all(config_dir.join("services")).unwrap();
    std::fs::write(
        config_dir.join("mesh.yaml"),
        "trust_domain: mesh.local\nnamespace: default\n",
    )
    .unwrap();
    let all: Vec<usize> = (0..50).collect();
    let mut declared = Vec::new();
    for &i in &all {
        let callees: Vec<String> = calls(i).into_iter().map(svc).collect();
        declared.extend(callees.iter().map(|c| (svc(i), c.clone())));
        std::fs::write(
            config_dir.join(format!("services/{}.yaml", svc(i))),
            format!("name: {}\ncalls: [{}]\n", svc(i), callees.join(", ")),
        )
        .unwrap();
    }

    let (api, admin) = (free_port(), free_port());
    let _control_plane = KillOnDrop::new(
        Command::new(bins.join("control-plane"))
            .arg("--config-dir")
            .arg(&config_dir)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--listen", &api.to_string(), "--admin", &admin.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (_dashboard, url) = dashboard(admin, &[]);
    overview_until(
        &HttpClient::new(Duration::from_secs(5)),
        &url,
        "the dashboard to read 50 services and their calls",
        |o| {
            o["status"]["services"].as_object().map(|s| s.len()) == Some(50)
                && o["calls"].as_object().map(|c| c.len()) == Some(50)
        },
    )
    .await;

    let page = dom(&bin, &run_dir.path().join("chromium"), &url).await;
    let nodes = nodes(&page);
    // Every service, once.
    let mut names: Vec<&str> = nodes.iter().map(|n| n.service.as_str()).collect();
    names.sort_unstable();
    let expected: Vec<String> = all.iter().map(|&i| svc(i)).collect();
    assert_eq!(names, expected, "{page}");
    // Every declared edge drawn, idle until it carries traffic.
    for (source, destination) in &declared {
        let marker = format!(
            "class=\"edge idle\" data-source=\"{source}\" data-destination=\"{destination}\""
        );
        assert!(page.contains(&marker), "{source} -> {destination} missing");
    }
    // No two boxes overlap, nor come closer than 8 px: each is told apart from its neighbours.
    const GAP: f64 = 8.0;
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let apart = a.x + a.w + GAP <= b.x
                || b.x + b.w + GAP <= a.x
                || a.y + a.h + GAP <= b.y
                || b.y + b.h + GAP <= a.y;
            assert!(
                apart,
                "{} and {} overlap: {a:?} {b:?}",
                a.service, b.service
            );
        }
    }
    // Each name is drawn whole (at least 5 px a character at 13 px) inside its box, which
    // starts it 10 px in.
    for n in &nodes {
        assert!(
            n.label_width >= 5.0 * n.service.len() as f64 && n.label_width <= n.w - 10.0,
            "{}'s name is {} px wide in a {} px box",
            n.service,
            n.label_width,
            n.w
        );
        assert!(
            page.contains(&format!(">{}</text>", n.service)),
            "{}'s name is not drawn",
            n.service
        );
    }
    // The page's size: five layers side by side and the tallest layer (20 services) at most
    // 100 px a service; every box inside it. The panel scrolls for the rest of the graph.
    let svg = &page[page.find("<svg id=\"graph\"").unwrap()..];
    let svg = &svg[..svg.find('>').unwrap()];
    let width: f64 = attribute(svg, "width").unwrap().parse().unwrap();
    let height: f64 = attribute(svg, "height").unwrap().parse().unwrap();
    let tallest = LAYERS.iter().map(|l| l.len()).max().unwrap() as f64;
    assert!(
        (f64::from(WINDOW.0)..=5.0 * 450.0 + 40.0).contains(&width),
        "the graph is {width} px wide"
    );
    assert!(
        (f64::from(WINDOW.1)..=100.0 * tallest + 100.0).contains(&height),
        "the graph is {height} px high"
    );
    for n in &nodes {
        assert!(
            n.x >= 0.0 && n.y >= 0.0 && n.x + n.w <= width && n.y + n.h <= height,
            "{} is outside the graph: {n:?}",
            n.service
        );
    }
    // Layers left to right: a callee is right of its caller.
    let at = |name: &str| nodes.iter().find(|n| n.service == name).unwrap();
    for (source, destination) in &declared {
        assert!(
            at(destination).x > at(source).x,
            "{destination} is not right of its caller {source}"
        );
    }
    // The whole graph, and the part a laptop's window shows.
    let whole = (width as u32 + 60, height as u32 + 220);
    screenshot_sized(
        &bin,
        &run_dir.path().join("chromium"),
        &url,
        &shots.join("graph-50.png"),
        whole,
    )
    .await;
    screenshot(
        &bin,
        &run_dir.path().join("chromium"),
        &url,
        &shots.join("graph-50-window.png"),
    )
    .await;
}
