//! A mesh across two hosts: the control plane and `orders` on host A, `inventory` (HTTP) and
//! `redis` (opaque TCP) on host B, each host a network namespace, joined by a veth pair. B's
//! inbound listeners bind a wildcard and advertise B's address; HTTP requests and a Redis
//! session from A reach them over that link, with mutual TLS.
//!
//! Needs root (see `mesh_testkit::netns`); every process, the namespaces and the files are gone
//! when the test ends, however it ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Dirs, spawn, workspace_binary};
use mesh_testkit::eventually;
use mesh_testkit::netns::{Host, TwoHosts};

const PATIENCE: Duration = Duration::from_secs(20);

const MESH: &str = "trust_domain: mesh.local\n\
                    registry: { heartbeat_interval: 200ms, lease: 1500ms }\n";

// Each namespace has ports of its own: these cannot clash with anything else on the machine.
const CONTROL_PLANE_PORT: u16 = 15010;
const CONTROL_PLANE_ADMIN: &str = "127.0.0.1:15014";
const OUTBOUND: &str = "127.0.0.1:15001";
const ADMIN: &str = "127.0.0.1:15000";
const APP: &str = "127.0.0.1:8080";
// Redis and its sidecar on host B, beside inventory's.
const REDIS_PORT: u16 = 6379;
const REDIS_OUTBOUND: &str = "127.0.0.1:15101";
const REDIS_ADMIN: &str = "127.0.0.1:15100";
/// Where orders' app reaches redis, on orders' sidecar.
const REDIS_LISTEN: &str = "127.0.0.1:6380";

/// Where one sidecar listens for its app and its admin, and where its app listens.
struct Local<'a> {
    outbound: &'a str,
    admin: &'a str,
    app: &'a str,
}

const LOCAL: Local<'static> = Local {
    outbound: OUTBOUND,
    admin: ADMIN,
    app: APP,
};

/// `curl URL` inside `host`: the status code and body, or why there are none (yet).
async fn curl(host: &Host, url: &str, headers: &[&str]) -> Result<(u16, String), String> {
    let mut command = tokio::process::Command::from(host.command("curl"));
    command.args(["-s", "--max-time", "2", "-w", "\n%{http_code}"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(url).output().await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "curl {url} in {}: {}: {stderr}",
            host.name, out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').ok_or("no status line")?;
    let code = code.parse().map_err(|_| format!("status {code:?}"))?;
    Ok((code, body.to_owned()))
}

/// Waits until `GET url` inside `host` answers 200; returns the body.
async fn wait_ok(what: &str, host: &Host, url: &str) -> String {
    eventually(what, PATIENCE, || async {
        match curl(host, url, &[]).await? {
            (200, body) => Ok(body),
            (code, body) => Err(format!("{code}: {body}")),
        }
    })
    .await
}

/// A bootstrap file for `service` beside the mesh configuration, with these `listen` lines,
/// registering with the control plane at `control_plane`.
fn bootstrap(
    dirs: &Dirs,
    service: &str,
    local: &Local,
    listen: &str,
    control_plane: &str,
) -> String {
    let state = dirs.state().display();
    let Local {
        outbound,
        admin,
        app,
    } = local;
    let yaml = format!(
        "service: {service}\ntrust_domain: mesh.local\napp: {app}\n\
         listen:\n  outbound: {outbound}\n  admin: {admin}\n{listen}\
         control_plane:\n  address: {control_plane}\n  trust_anchor: {state}/ca.pem\n  \
         token_file: {state}/tokens/{service}\n"
    );
    let path = dirs.config.path().join(format!("{service}-sidecar.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_from_host_a_reach_the_advertised_addresses_on_host_b_over_mtls() {
    if !mesh_testkit::netns::available("across_hosts") {
        return;
    }
    // Dropped last: the processes inside stop first.
    let hosts = TwoHosts::create();
    let (a, b) = (&hosts.a, &hosts.b);
    let dirs = Dirs::new(
        MESH,
        &[
            ("orders", "name: orders\ncalls: [inventory, redis]\n"),
            ("inventory", "name: inventory\n"),
            (
                "redis",
                &format!(
                    "name: redis\nprotocol: tcp\nlisten: \"{REDIS_LISTEN}\"\nport: {REDIS_PORT}\n"
                ),
            ),
        ],
    );

    // Host A: the control plane, on A's address on the link.
    let control_plane = format!("{}:{CONTROL_PLANE_PORT}", a.ip);
    let config_dir = dirs.config.path().display().to_string();
    let state_dir = dirs.state().display().to_string();
    let _control_plane = spawn(
        a,
        Path::new(env!("CARGO_BIN_EXE_control-plane")),
        &[
            "--config-dir",
            &config_dir,
            "--state-dir",
            &state_dir,
            "--listen",
            &control_plane,
            "--admin",
            CONTROL_PLANE_ADMIN,
        ],
    );
    let cp_admin = format!("http://{CONTROL_PLANE_ADMIN}");
    wait_ok(
        "the control plane to be ready",
        a,
        &format!("{cp_admin}/ready"),
    )
    .await;

    // Host B: inventory's app, and its sidecar on every interface (port chosen at start),
    // advertising B's address.
    let _app = spawn(
        b,
        &workspace_binary("echo-app"),
        &["--name", "inventory", "--listen", APP],
    );
    let inventory_config = bootstrap(
        &dirs,
        "inventory",
        &LOCAL,
        &format!("  inbound: 0.0.0.0:0\n  advertise: {}\n", b.ip),
        &control_plane,
    );
    let sidecar = workspace_binary("sidecar");
    let _inventory = spawn(b, &sidecar, &["--config", &inventory_config]);

    // Host B: redis, and its sidecar beside inventory's, advertising B's address too.
    let redis_port = REDIS_PORT.to_string();
    let _redis = spawn(
        b,
        Path::new("redis-server"),
        &[
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--port",
            &redis_port,
        ],
    );
    let redis_app = format!("127.0.0.1:{REDIS_PORT}");
    let redis_local = Local {
        outbound: REDIS_OUTBOUND,
        admin: REDIS_ADMIN,
        app: &redis_app,
    };
    let redis_config = bootstrap(
        &dirs,
        "redis",
        &redis_local,
        &format!("  inbound: 0.0.0.0:0\n  advertise: {}\n", b.ip),
        &control_plane,
    );
    let _redis_sidecar = spawn(b, &sidecar, &["--config", &redis_config]);

    // Host A: orders' sidecar, on A's own address, which it advertises as it is.
    let orders_config = bootstrap(
        &dirs,
        "orders",
        &LOCAL,
        &format!("  inbound: {}:0\n", a.ip),
        &control_plane,
    );
    let _orders = spawn(a, &sidecar, &["--config", &orders_config]);
    let sidecar_admin = format!("http://{ADMIN}");
    wait_ok("inventory's app to answer", b, &format!("http://{APP}/")).await;
    wait_ok(
        "inventory's sidecar to be ready",
        b,
        &format!("{sidecar_admin}/ready"),
    )
    .await;
    wait_ok(
        "redis' sidecar to be ready",
        b,
        &format!("http://{REDIS_ADMIN}/ready"),
    )
    .await;
    wait_ok(
        "orders' sidecar to be ready",
        a,
        &format!("{sidecar_admin}/ready"),
    )
    .await;

    // The control plane registered each instance at its advertised address: B's for inventory,
    // with the port its inbound listener bound.
    let registered = |service: &'static str| {
        let url = format!("{cp_admin}/status");
        async move {
            let status: serde_json::Value =
                serde_json::from_str(&wait_ok("/status", a, &url).await).unwrap();
            let address = status["services"][service]["instances"][0]["address"].as_str();
            address
                .map(str::to_owned)
                .ok_or_else(|| format!("{service} not registered: {status}"))
        }
    };
    let inventory_at = eventually("inventory to register", PATIENCE, || {
        registered("inventory")
    })
    .await;
    let (ip, port) = inventory_at.rsplit_once(':').unwrap();
    assert_eq!(ip, b.ip.to_string(), "{inventory_at}");
    assert_ne!(port.parse::<u16>().unwrap(), 0, "{inventory_at}");
    let orders_at = eventually("orders to register", PATIENCE, || registered("orders")).await;
    assert!(orders_at.starts_with(&format!("{}:", a.ip)), "{orders_at}");

    // Orders' snapshot sends inventory's traffic there.
    eventually("orders' snapshot to list inventory", PATIENCE, || async {
        let body = curl(a, &format!("{sidecar_admin}/snapshot"), &[]).await?.1;
        let snapshot: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let endpoints = &snapshot["destinations"]["inventory"]["backends"][0]["endpoints"];
        (*endpoints == serde_json::json!([inventory_at]))
            .then_some(())
            .ok_or(format!("inventory's endpoints: {endpoints}"))
    })
    .await;

    // A request on A crosses to B's app, which sees orders' verified identity.
    let url = format!("http://{OUTBOUND}/whoami");
    let (code, body) = curl(a, &url, &["Host: inventory"]).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["service"], "inventory", "{body}");
    assert_eq!(
        answer["headers"]["x-mesh-client-id"],
        serde_json::json!(["spiffe://mesh.local/ns/default/sa/orders"]),
        "{body}"
    );

    // A Redis session on A crosses to B's redis as opaque TCP over the same mutual TLS: SET
    // and GET through orders' sidecar, which listens for redis where the service file says.
    let (listen_ip, listen_port) = REDIS_LISTEN.rsplit_once(':').unwrap();
    let redis_cli = |args: &'static [&'static str]| {
        let mut command = tokio::process::Command::from(a.command("redis-cli"));
        command
            .args(["-h", listen_ip, "-p", listen_port])
            .args(args);
        async move {
            let out = command.output().await.map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !text.starts_with("Could not connect") {
                Ok(text)
            } else {
                Err(format!("{}: {text}", String::from_utf8_lossy(&out.stderr)))
            }
        }
    };
    let set = eventually("SET through the redis listener", PATIENCE, || {
        redis_cli(&["SET", "crossed", "the-link"])
    })
    .await;
    assert_eq!(set, "OK");
    assert_eq!(redis_cli(&["GET", "crossed"]).await.unwrap(), "the-link");
    // Redis' sidecar saw the session come from orders, through its inbound listener.
    let metrics = wait_ok(
        "redis' sidecar metrics",
        b,
        &format!("http://{REDIS_ADMIN}/metrics"),
    )
    .await;
    let opened = mesh_testkit::metrics::value(
        &metrics,
        r#"mesh_tcp_connections_opened_total{direction="inbound",source="orders",destination="redis"}"#,
    );
    assert!(opened.is_some_and(|n| n >= 2.0), "{metrics}");
}
