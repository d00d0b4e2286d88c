//! A gateway whose listeners and routes come from the control plane's
//! `gateways/<service>.yaml`: edits reach it live, an invalid edit is refused and changes
//! nothing, listeners come and go without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{Sidecar, TestMesh, app, client, eventually, free_port};

use crate::gateway::{self_signed, spawn_gateway};
use crate::{LocalControlPlane, until_ready};

const PATIENCE: Duration = Duration::from_secs(15);
/// How soon an edit of the gateway file is served.
const LIVE: Duration = Duration::from_secs(5);

/// A control plane in this process declaring a `gateway` that calls `orders` (split v1: 100,
/// v2: 0) and `storefront`, their sidecars (orders' is v1) and echo apps, and a gateway process whose bootstrap says only
/// `gateway: {}`.
struct PushedEdge {
    config: tempfile::TempDir,
    state: tempfile::TempDir,
    /// `None` once stopped.
    control_plane: Option<mesh_control_plane::ControlPlane>,
    mesh: TestMesh,
    services: Vec<Sidecar>,
    gateway: KillOnDrop,
    /// The `web` listener of the first gateway file.
    web: SocketAddr,
    /// The gateway's admin endpoint.
    admin: SocketAddr,
}

impl PushedEdge {
    /// Starts with `gateways/gateway.yaml` = `file` (`{web}` replaced by the `web` address) and
    /// `gateway: {}` in the gateway's bootstrap.
    async fn start(file: &str) -> Self {
        Self::start_with(file, "{}").await
    }

    /// Starts with `gateways/gateway.yaml` = `file`, unless empty, and `gateway: <bootstrap>`
    /// in the gateway's bootstrap (`{web}` replaced by the `web` address in both).
    async fn start_with(file: &str, bootstrap: &str) -> Self {
        let cluster = LocalControlPlane::start(&[
            ("gateway", "name: gateway\ncalls: [orders, storefront]\n"),
            // One instance, v1, unless a test adds a v2, which gets no share of the split.
            (
                "orders",
                "name: orders\ntraffic_split: { v1: 100, v2: 0 }\n",
            ),
            ("storefront", "name: storefront\n"),
        ])
        .await;
        let web = free_port();
        std::fs::create_dir(cluster.config_dir().join("gateways")).unwrap();
        if !file.is_empty() {
            std::fs::write(
                cluster.config_dir().join("gateways/gateway.yaml"),
                file.replace("{web}", &web.to_string()),
            )
            .unwrap();
        }
        let mesh = TestMesh::new();
        let mut services = Vec::new();
        for service in ["orders", "storefront"] {
            services.push(
                mesh.sidecar(service)
                    .app(app::echo(service).await)
                    .control_plane(cluster.for_service(service))
                    .start()
                    .await,
            );
        }
        let (outbound, admin) = (free_port(), free_port());
        let bootstrap = format!(
            "service: gateway\ntrust_domain: mesh.local\n\
             listen: {{ outbound: \"{outbound}\", admin: \"{admin}\" }}\n\
             drain_timeout: 5s\n\
             control_plane: {{ address: \"{cp}\", trust_anchor: ca.pem, token_file: tokens/gateway }}\n\
             gateway: {gateway}\n",
            cp = cluster.control_plane.api_addr(),
            gateway = bootstrap.replace("{web}", &web.to_string()),
        );
        let bootstrap_file = cluster.state().join("gateway.yaml");
        std::fs::write(&bootstrap_file, bootstrap).unwrap();
        let mut gateway = spawn_gateway(&bootstrap_file, cluster.state());
        let log = cluster.state().join("gateway.log");
        until_ready(
            "the gateway to be ready",
            &mut gateway,
            admin,
            PATIENCE,
            |_| std::fs::read_to_string(&log).unwrap_or_default(),
        )
        .await;
        let LocalControlPlane {
            _config: config,
            state,
            control_plane,
        } = cluster;
        Self {
            config,
            state,
            control_plane: Some(control_plane),
            mesh,
            services,
            gateway,
            web,
            admin,
        }
    }

    /// Starts one more sidecar of `service`, with `extra` in its bootstrap, in front of an echo
    /// app that says `echo`.
    async fn add_instance(&mut self, service: &str, echo: &'static str, extra: &str) {
        let state = self.state.path();
        let control_plane = mesh_testkit::ControlPlaneRef {
            address: self.control_plane().api_addr(),
            trust_anchor: state.join("ca.pem"),
            token_file: state.join(format!("tokens/{service}")),
        };
        let sidecar = self
            .mesh
            .sidecar(service)
            .app(app::echo(echo).await)
            .control_plane(control_plane)
            .extra_yaml(extra)
            .start()
            .await;
        self.services.push(sidecar);
    }

    fn gateway_file(&self) -> PathBuf {
        self.config.path().join("gateways/gateway.yaml")
    }

    fn control_plane(&self) -> &mesh_control_plane::ControlPlane {
        self.control_plane.as_ref().unwrap()
    }

    /// Replaces the gateway file (`{web}` replaced by the first `web` address).
    fn edit(&self, text: &str) {
        let file = self.gateway_file();
        let temp = file.with_extension("yaml.tmp");
        std::fs::write(&temp, text.replace("{web}", &self.web.to_string())).unwrap();
        std::fs::rename(temp, file).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("gateway.log")).unwrap_or_default()
    }

    /// The gateway has not exited (no restart happened behind the test's back).
    fn still_running(&mut self) {
        let log = self.log();
        assert!(
            self.gateway.try_wait().unwrap().is_none(),
            "the gateway exited:\n{log}"
        );
    }

    /// Waits until `host` on `listener` answers with `service`'s echo.
    async fn until_served(&self, listener: SocketAddr, host: &str, service: &str) {
        let what = format!("{host} on {listener} to be served by {service}");
        eventually(&what, LIVE, || async move {
            let seen = served(listener, host, "/").await?;
            if seen == service { Ok(()) } else { Err(seen) }
        })
        .await;
    }

    /// The control plane's count of refused configuration changes.
    async fn refused_changes(&self) -> f64 {
        let url = format!("http://{}/metrics", self.control_plane().admin_addr());
        let text = client::text(client::get_url(&url).await).await;
        mesh_testkit::metrics::value(
            &text,
            "mesh_control_plane_config_reloads_total{result=\"failed\"}",
        )
        .unwrap_or(0.0)
    }
}

/// Which service's echo answers `GET path` with `Host: host` on `listener`, or why none.
async fn served(listener: SocketAddr, host: &str, path: &str) -> Result<String, String> {
    let rsp = client::http1()
        .request(
            Request::get(format!("http://{listener}{path}"))
                .header("host", host)
                .body(Full::default())
                .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = rsp.status();
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", client::text(rsp).await));
    }
    let seen = client::json(rsp).await;
    Ok(seen["service"].as_str().unwrap_or_default().to_owned())
}

const FIRST: &str = "\
listeners: [{ name: web, address: \"{web}\", protocol: HTTP }]
routes:
  - name: shop
    parentRefs: [{ name: web }]
    hostnames: [shop.example.com]
    rules: [{ backendRefs: [{ name: storefront }] }]
";

#[tokio::test]
async fn routes_edited_in_the_control_plane_are_served_without_a_restart() {
    let mut edge = PushedEdge::start(FIRST).await;
    edge.until_served(edge.web, "shop.example.com", "storefront")
        .await;
    let unknown = served(edge.web, "admin.example.org", "/")
        .await
        .unwrap_err();
    assert!(unknown.starts_with("404"), "{unknown}");

    // A changed backend and a new route for another host name.
    edge.edit(
        "\
listeners: [{ name: web, address: \"{web}\", protocol: HTTP }]
routes:
  - name: shop
    parentRefs: [{ name: web }]
    hostnames: [shop.example.com]
    rules:
      - matches: [{ path: { type: PathPrefix, value: /api/orders } }]
        backendRefs: [{ name: orders }]
      - backendRefs: [{ name: storefront }]
  - name: admin-site
    parentRefs: [{ name: web }]
    hostnames: [admin.example.org]
    rules: [{ backendRefs: [{ name: orders }] }]
",
    );
    edge.until_served(edge.web, "admin.example.org", "orders")
        .await;
    assert_eq!(
        served(edge.web, "shop.example.com", "/api/orders/7").await,
        Ok("orders".to_owned())
    );
    assert_eq!(
        served(edge.web, "shop.example.com", "/").await,
        Ok("storefront".to_owned())
    );
    let rsp = client::get_url(&format!("http://{}/snapshot", edge.admin)).await;
    let snapshot = client::json(rsp).await;
    assert_eq!(
        snapshot["gateway"]["routes"][1]["name"], "admin-site",
        "{snapshot}"
    );
    edge.still_running();

    // An invalid edit: refused by the control plane with file and path, and the gateway goes
    // on serving the routes in force.
    let refused = edge.refused_changes().await;
    edge.edit(
        "\
listeners: [{ name: web, address: \"{web}\", protocol: HTTP }]
routes:
  - name: shop
    parentRefs: [{ name: websecure }]
    rules: [{ backendRefs: [{ name: storefront }] }]
",
    );
    let errors = eventually("the edit to be refused", LIVE, || async {
        if edge.refused_changes().await > refused {
            Ok(())
        } else {
            Err("no refusal counted yet")
        }
    });
    errors.await;
    let invalid = mesh_control_plane::config::load(edge.config.path())
        .unwrap_err()
        .to_string();
    assert!(
        invalid.contains(
            "gateways/gateway.yaml: routes[0].parentRefs[0].name: no listener named \"websecure\""
        ),
        "{invalid}"
    );
    for _ in 0..5 {
        assert_eq!(
            served(edge.web, "admin.example.org", "/").await,
            Ok("orders".to_owned())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    edge.still_running();
}

#[tokio::test]
async fn listeners_added_in_the_control_plane_are_bound_and_removed_ones_stop() {
    let mut edge = PushedEdge::start(FIRST).await;
    edge.until_served(edge.web, "shop.example.com", "storefront")
        .await;

    // A second listener, HTTPS with a certificate made by openssl.
    let certs = tempfile::tempdir().unwrap();
    self_signed(certs.path(), "shop", "shop.example.com").await;
    let websecure = free_port();
    let with_tls = format!(
        "\
listeners:
  - {{ name: web, address: \"{{web}}\", protocol: HTTP }}
  - name: websecure
    address: \"{websecure}\"
    protocol: HTTPS
    tls: {{ certificates: [{{ cert: {dir}/shop.pem, key: {dir}/shop-key.pem }}] }}
routes:
  - name: shop
    parentRefs: [{{ name: web }}, {{ name: websecure }}]
    hostnames: [shop.example.com]
    rules: [{{ backendRefs: [{{ name: storefront }}] }}]
",
        dir = certs.path().display()
    );
    edge.edit(&with_tls);
    let ca = certs.path().join("shop.pem");
    eventually("the HTTPS listener to serve", LIVE, || {
        curl(websecure, "shop.example.com", &ca)
    })
    .await;

    // `web` removed: it stops accepting; `websecure` goes on.
    let without_web = with_tls
        .replace(
            "  - { name: web, address: \"{web}\", protocol: HTTP }\n",
            "",
        )
        .replace(
            "[{ name: web }, { name: websecure }]",
            "[{ name: websecure }]",
        );
    edge.edit(&without_web);
    let web = edge.web;
    eventually("the web listener to stop accepting", LIVE, || async move {
        match tokio::net::TcpStream::connect(web).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let body = curl(websecure, "shop.example.com", &ca).await.unwrap();
    assert!(body.contains("storefront"), "{body}");

    // Back again on the same address.
    edge.edit(&with_tls);
    edge.until_served(edge.web, "shop.example.com", "storefront")
        .await;
    edge.still_running();
    let log = edge.log();
    assert!(log.contains("gateway listener stopping"), "{log}");
}

#[tokio::test]
async fn the_control_planes_gateway_wins_over_the_bootstraps_and_outlives_the_control_plane() {
    let bootstrap = "\
{ listeners: [{ name: web, address: \"{web}\", protocol: HTTP }], \
routes: [{ name: shop, parentRefs: [{ name: web }], hostnames: [shop.example.com], \
rules: [{ backendRefs: [{ name: orders }] }] }] }";
    // Declared by the bootstrap alone: its routes.
    let mut edge = PushedEdge::start_with("", bootstrap).await;
    edge.until_served(edge.web, "shop.example.com", "orders")
        .await;
    // Declared by the control plane too: the control plane's.
    edge.edit(FIRST);
    edge.until_served(edge.web, "shop.example.com", "storefront")
        .await;
    // No longer declared there: the bootstrap's again.
    std::fs::remove_file(edge.gateway_file()).unwrap();
    edge.until_served(edge.web, "shop.example.com", "orders")
        .await;
    edge.edit(FIRST);
    edge.until_served(edge.web, "shop.example.com", "storefront")
        .await;

    // The control plane gone, the gateway keeps what it applied last.
    edge.control_plane.take().unwrap().stop().await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            served(edge.web, "shop.example.com", "/").await,
            Ok("storefront".to_owned())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    edge.still_running();
}

#[tokio::test]
async fn a_removed_listener_finishes_the_requests_it_has_open() {
    let edge = PushedEdge::start(FIRST).await;
    edge.until_served(edge.web, "shop.example.com", "storefront")
        .await;
    let other = free_port();
    let in_flight = tokio::spawn(served(edge.web, "shop.example.com", "/delay/3000"));
    // Moved to another address: the old one stops accepting while the request runs.
    edge.edit(&FIRST.replace("{web}", &other.to_string()));
    let web = edge.web;
    eventually("the old address to stop accepting", LIVE, || async move {
        match tokio::net::TcpStream::connect(web).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the request ended before the listener stopped"
    );
    assert_eq!(in_flight.await.unwrap(), Ok("storefront".to_owned()));
    edge.until_served(other, "shop.example.com", "storefront")
        .await;
}

/// `curl` over TLS to `host` on `listener`, trusting `ca`: the body, or curl's error.
async fn curl(listener: SocketAddr, host: &str, ca: &Path) -> Result<String, String> {
    let port = listener.port();
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "5"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{host}:{port}/"))
        .output()
        .await
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn a_backend_naming_a_version_sends_only_to_that_versions_instances() {
    let file = "\
listeners: [{ name: web, address: \"{web}\", protocol: HTTP }]
routes:
  - name: canary
    parentRefs: [{ name: web }]
    hostnames: [v2.example.com]
    rules: [{ backendRefs: [{ name: orders, version: v2 }] }]
  - name: shop
    parentRefs: [{ name: web }]
    hostnames: [shop.example.com]
    rules: [{ backendRefs: [{ name: orders }] }]
";
    let mut edge = PushedEdge::start(file).await;
    // Only v1 so far: the version has no endpoints, which is the answer for none.
    edge.until_served(edge.web, "shop.example.com", "orders")
        .await;
    let none = served(edge.web, "v2.example.com", "/").await.unwrap_err();
    assert!(none.starts_with("503"), "{none}");

    edge.add_instance("orders", "orders-v2", "version: v2\n")
        .await;
    edge.until_served(edge.web, "v2.example.com", "orders-v2")
        .await;
    // v2 has no weight in orders' split: only the route naming it reaches it.
    for _ in 0..30 {
        let canary = served(edge.web, "v2.example.com", "/").await;
        assert_eq!(canary.as_deref(), Ok("orders-v2"));
        let shop = served(edge.web, "shop.example.com", "/").await;
        assert_eq!(shop.as_deref(), Ok("orders"));
    }
    edge.still_running();
}
