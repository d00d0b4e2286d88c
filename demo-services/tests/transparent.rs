//! `demo-service --transparent`: calls go to `http://<service>/`, the name resolved by the
//! system resolver, and failures name the service and the address. The namespace test runs the
//! real binary as an unmodified app behind `sidecar redirect`, with a hosts file that maps
//! inventory to its virtual address, and sees the call cross both sidecars over mTLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use common::{WAIT, spawn_service};
use demo_services::shop::dial::dial;
use demo_services::shop::upstream::Upstream;
use demo_services::shop::{self, App, Calls, Config, Service};
use mesh_sidecar::redirect;
use mesh_testkit::netns::{self, HostsFile, Namespace};
use mesh_testkit::{TestMesh, eventually, metrics};
use tokio::net::TcpListener;

#[tokio::test]
async fn urls_name_the_outbound_listener_or_the_service_itself() {
    let timeout = Duration::from_secs(1);
    let outbound = "127.0.0.1:15001".to_owned();
    let sidecar = Upstream::new(&Calls::Sidecar { outbound }, timeout).unwrap();
    assert_eq!(
        sidecar.url("inventory", "/products?limit=2").unwrap(),
        "http://127.0.0.1:15001/products?limit=2"
    );

    let transparent = Upstream::new(&Calls::Transparent, timeout).unwrap();
    assert_eq!(
        transparent.url("inventory", "/products?limit=2").unwrap(),
        "http://inventory/products?limit=2"
    );
    assert_eq!(
        transparent.url("payments", "/charges/o-1").unwrap(),
        "http://payments/charges/o-1"
    );
    // Every service is reached by its own name, on port 80.
    for service in Service::ALL {
        let url = transparent.url(service.name(), "/health").unwrap();
        assert_eq!(url.host(), Some(service.name()));
        assert_eq!(url.port_u16(), None);
    }
    assert!(transparent.url("not a name", "/").is_err());

    let bad = "no such/address".to_owned();
    let err = Upstream::new(&Calls::Sidecar { outbound: bad }, timeout)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(r#"invalid outbound address "no such/address""#),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_connection_names_the_address() {
    let closed = mesh_testkit::free_port();
    let err = tokio::time::timeout(WAIT, dial("127.0.0.1", closed.port()))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot connect to {closed}: {closed}: ")),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_says_the_hosts_file_should_map_it() {
    // `.invalid` never resolves (RFC 6761).
    let err = tokio::time::timeout(WAIT, dial("inventory.invalid", 80))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("inventory.invalid:80 does not resolve"),
        "{err}"
    );
    assert!(err.contains("should map inventory.invalid to"), "{err}");
}

/// `sidecar redirect`'s flags, parsed as its command line parses them.
#[derive(Parser)]
struct RedirectFlags {
    #[command(flatten)]
    options: redirect::Options,
}

/// Inventory's virtual address: in the default range, where nothing listens.
const INVENTORY_VIP: &str = "127.240.0.9";
/// The app's user: `nobody`. The sidecars run in this test, as root.
const APP_UID: u32 = 65534;

/// `curl URL` inside `namespace`, as root (whose connections the redirect leaves alone): the
/// status and the body as JSON.
async fn curl(namespace: &str, url: &str) -> (u16, serde_json::Value) {
    let out = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace,
            "curl",
            "-sS",
            "--max-time",
            "10",
        ])
        .args(["-w", "\n%{http_code}", url])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

/// Storefront runs unmodified with `--transparent` as another user in a namespace whose TCP
/// is redirected to its sidecar, and whose hosts file maps `inventory` to inventory's virtual
/// address. Its call to `http://inventory/products` reaches the inventory app through both
/// sidecars, which see storefront's verified identity; `orders`, which the hosts file does not
/// name, fails with an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storefront_reaches_inventory_by_name_through_both_sidecars() {
    if !netns::available("storefront_reaches_inventory_by_name") {
        return;
    }
    let ns = Namespace::create();
    let _hosts = HostsFile::write(&ns.name, &[(INVENTORY_VIP, "inventory")]);
    let mesh = TestMesh::new();
    let data = tempfile::tempdir().unwrap();

    // Inventory: the real service in this process, behind its sidecar.
    let app = App::open(Config::new(
        Service::Inventory,
        Calls::Transparent,
        data.path(),
    ))
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    tokio::spawn(shop::serve(listener, app));
    let inventory = mesh.sidecar("inventory").app(app_addr).start().await;

    // Storefront's sidecar serves its outbound side inside the namespace, where the redirect
    // sends the app's connections, and dials inventory from here.
    let outbound = netns::enter(&ns.name, || std::net::TcpListener::bind("127.0.0.1:15001"))
        .expect("bind the outbound listener in the namespace");
    outbound.set_nonblocking(true).unwrap();
    let storefront = mesh
        .sidecar("storefront")
        .destination_with_policy(
            "inventory",
            &[inventory.inbound],
            &format!("virtual_address: {INVENTORY_VIP}"),
        )
        .outbound_listener(TcpListener::from_std(outbound).unwrap())
        .start()
        .await;
    let flags = RedirectFlags::try_parse_from(["redirect", "--proxy-uid", "0"]).unwrap();
    netns::enter(&ns.name, || redirect::run(&flags.options)).expect("install the redirect");

    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.name, "setpriv"])
        .arg(format!("--reuid={APP_UID}"))
        .arg(format!("--regid={APP_UID}"))
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_demo-service"))
        .args(["storefront", "--listen", "127.0.0.1:0", "--transparent"])
        .arg("--data-dir")
        .arg(data.path())
        .env("MESH_LOG", "warn");
    let (_storefront_app, storefront_addr) = spawn_service(command).await;

    let (status, products) =
        curl(&ns.name, &format!("http://{storefront_addr}/api/products")).await;
    assert_eq!(status, 200, "{products}");
    let skus: Vec<&str> = products
        .as_array()
        .unwrap_or_else(|| panic!("a list of products: {products}"))
        .iter()
        .filter_map(|p| p["sku"].as_str())
        .collect();
    assert!(skus.contains(&"ceramic-mug"), "{products}");

    // The call crossed both sidecars, and inventory's saw storefront's certificate.
    let series = |direction: &str| {
        format!(
            "mesh_requests_total{{direction=\"{direction}\",source=\"storefront\",destination=\"inventory\",status_code=\"200\"}}"
        )
    };
    for (sidecar, direction) in [(&storefront, "outbound"), (&inventory, "inbound")] {
        eventually(
            &format!("{} counting the {direction} request", sidecar.service),
            WAIT,
            || async {
                let text = sidecar.metrics().await;
                (metrics::value(&text, &series(direction)) >= Some(1.0))
                    .then_some(())
                    .ok_or(text)
            },
        )
        .await;
    }

    // `orders` is in no hosts file: the error names it and says what to do.
    let (status, failure) = curl(&ns.name, &format!("http://{storefront_addr}/api/orders")).await;
    assert_eq!(status, 502, "{failure}");
    let error = failure["error"].as_str().unwrap_or_default();
    assert!(error.contains("orders:80 does not resolve"), "{failure}");
    assert!(error.contains("should map orders to"), "{failure}");
}
