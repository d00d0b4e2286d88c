//! `meshctl up --transparent` end to end, as root: the demo mesh with every instance in its own
//! network namespace on a bridge of this test's own, apps calling each other by name through
//! the redirect. An order placed through the gateway on the host crosses every hop over mTLS,
//! which each callee's sidecar shows by counting the request under its caller's identity; the
//! storefront's own namespace address serves nothing to a plain client; and stopping leaves
//! nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_testkit::{eventually, metrics, netns};
use meshctl::fault::FaultChange;
use meshctl::http::HttpClient;
use meshctl::up::{TransparentSpec, UpOptions};

use self::common::{demo_config, require_binaries, service};

/// Inbound requests `callee`'s sidecar answered for `caller` (an identity it verified over
/// mTLS, or `unauthenticated` for a plain connection from outside the mesh).
fn inbound(text: &str, caller: &str, callee: &str, status: u16) -> f64 {
    let series = format!(
        "mesh_requests_total{{direction=\"inbound\",source=\"{caller}\",destination=\"{callee}\",status_code=\"{status}\"}}"
    );
    metrics::value(text, &series).unwrap_or(0.0)
}

fn exists(link: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", link])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn an_order_crosses_every_hop_over_mtls_and_stopping_leaves_nothing() {
    if !netns::available("meshctl_up_transparent") {
        return;
    }
    let bins = require_binaries();
    let run_dir = tempfile::tempdir().unwrap();
    let config = demo_config(
        run_dir.path(),
        None,
        [
            "storefront",
            "orders",
            "inventory",
            "payments",
            "notifications",
        ]
        .into_iter()
        .map(|name| service(name, 1))
        .collect(),
    );
    let bridge = format!("mut{}", std::process::id());
    let mut options = UpOptions::new(bins);
    options.transparent = Some(TransparentSpec {
        bridge: bridge.clone(),
        network: "198.19.105.0/24".parse().unwrap(),
        ..TransparentSpec::new()
    });
    let mut mesh = meshctl::up::up(&config, &options).await.unwrap();
    let namespaces: Vec<String> = mesh
        .instances()
        .iter()
        .map(|i| {
            i.namespace
                .clone()
                .expect("each instance has its namespace")
        })
        .collect();
    let storefront = mesh.storefront_url().unwrap();
    assert!(storefront.starts_with("http://198.19.105."), "{storefront}");
    // Each app calls services by name, which its namespace's hosts file resolves.
    let orders_ns = &mesh.instances_of("orders").next().unwrap().namespace;
    let hosts =
        std::fs::read_to_string(format!("/etc/netns/{}/hosts", orders_ns.as_ref().unwrap()))
            .unwrap();
    assert!(hosts.lines().any(|l| l.ends_with("\tinventory")), "{hosts}");

    // The storefront's app port, from the host: a plain connection the redirect brings to its
    // sidecar, which lets in only the gateway.
    let client = HttpClient::new(Duration::from_secs(10));
    let direct = client
        .get(&format!("{storefront}/api/products"))
        .await
        .unwrap();
    assert_eq!(direct.status, StatusCode::FORBIDDEN, "{}", direct.text());
    assert!(!direct.text().contains("sku"), "{}", direct.text());

    // The gateway, on the host's loopback, as a browser: it calls the storefront's namespace
    // address over mTLS.
    let shop = mesh.gateway_url();
    assert!(shop.starts_with("http://127.0.0.1:"), "{shop}");
    let manifest = meshctl::up::Manifest::load(run_dir.path()).unwrap();
    assert_eq!(manifest.entry_url().as_deref(), Some(shop.as_str()));
    let products = client.get(&format!("{shop}/api/products")).await.unwrap();
    assert_eq!(products.status, StatusCode::OK, "{}", products.text());
    let products: serde_json::Value = serde_json::from_str(&products.text()).unwrap();
    let sku = products[0]["sku"].as_str().unwrap().to_owned();
    let order = client
        .json(
            Method::POST,
            &format!("{shop}/api/orders"),
            &serde_json::json!({"customer": "test", "items": [{"sku": sku, "qty": 1}]}),
        )
        .await
        .unwrap();
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.text());

    // Every edge of the order, counted by the callee's sidecar under the caller's verified
    // identity.
    let admin = |service: &str| mesh.instances_of(service).next().unwrap().metrics_url();
    for (caller, callee, status) in [
        ("gateway", "storefront", 201),
        ("storefront", "orders", 201),
        ("orders", "inventory", 200),
        ("orders", "payments", 201),
    ] {
        let url = &admin(callee);
        let client = &client;
        eventually(
            &format!("{caller} -> {callee} in {url}"),
            Duration::from_secs(10),
            || async move {
                let text = client.get(url).await.ok()?.text();
                (inbound(&text, caller, callee, status) >= 1.0).then_some(())
            },
        )
        .await;
    }

    // `meshctl fault` reaches an app that refuses callers from outside the mesh: from inside
    // its namespace, as its sidecar's user, past the redirect.
    let payments = mesh.instances_of("payments").next().unwrap().clone();
    let direct = client
        .get(&format!("{}/admin/faults", payments.app_url()))
        .await
        .unwrap();
    assert_eq!(direct.status, StatusCode::FORBIDDEN, "{}", direct.text());
    let knobs = meshctl::fault::client();
    let set = FaultChange {
        latency_ms: Some(7),
        ..FaultChange::default()
    };
    let line = meshctl::fault::apply(&knobs, &payments, &set)
        .await
        .unwrap();
    assert!(line.contains("latency 7ms"), "{line}");
    let clear = FaultChange {
        clear: true,
        ..FaultChange::default()
    };
    let line = meshctl::fault::apply(&knobs, &payments, &clear)
        .await
        .unwrap();
    assert_eq!(line, "payments-1: no faults");
    // Past the redirect, not through it: the sidecar passed nothing through to its own app.
    let text = client.get(&payments.metrics_url()).await.unwrap().text();
    let passed = metrics::value(&text, "mesh_outbound_passthrough_total{protocol=\"http\"}");
    assert_eq!(passed.unwrap_or(0.0), 0.0, "{text}");

    let pids = mesh.pids();
    let killed = mesh.stop().await;
    assert!(killed.is_empty(), "killed after the timeout: {killed:?}");
    for pid in pids {
        assert!(!meshctl::up::process_alive(pid), "{pid} is still running");
    }
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in &namespaces {
        assert!(!listed.contains(ns.as_str()), "{ns} is left: {listed}");
        assert!(!Path::new("/etc/netns").join(ns).exists(), "hosts of {ns}");
    }
    assert!(!exists(&bridge), "bridge {bridge} is left");
    assert!(!Path::new("/run/mesh").join(&bridge).exists());
    let veths = Command::new("ip").args(["-br", "link"]).output().unwrap();
    let prefix = format!("mu{}x", std::process::id());
    assert!(
        !String::from_utf8_lossy(&veths.stdout).contains(&prefix),
        "a veth is left"
    );
}
