//! The `sidecar` binary in gateway mode: outside HTTP routed by host and path to mesh
//! services, which it calls over mTLS with its own identity, its certificate and destinations
//! from the control plane.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use mesh_control_plane::{ControlPlane, Listeners, Options};
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{ControlPlaneRef, Sidecar, TestMesh, app, client, eventually, free_port};

const SIDECAR: &str = env!("CARGO_BIN_EXE_sidecar");
const PATIENCE: Duration = Duration::from_secs(15);
const GATEWAY_ID: &str = "spiffe://mesh.local/ns/default/sa/gateway";

/// A control plane on port 0 in this process for a `gateway` calling `orders` and
/// `storefront`, those two services' sidecars and echo apps, and the gateway process.
struct Edge {
    _config: tempfile::TempDir,
    state: tempfile::TempDir,
    _control_plane: ControlPlane,
    _mesh: TestMesh,
    _services: Vec<Sidecar>,
    gateway: KillOnDrop,
    /// The gateway's `web` listener.
    web: SocketAddr,
}

impl Edge {
    async fn start() -> Self {
        let (config, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(
            config.path().join("mesh.yaml"),
            "trust_domain: mesh.local\nregistry: { heartbeat_interval: 200ms, lease: 1500ms }\n",
        )
        .unwrap();
        let services = config.path().join("services");
        std::fs::create_dir(&services).unwrap();
        let write = |name: &str, text: &str| std::fs::write(services.join(name), text).unwrap();
        write(
            "gateway.yaml",
            "name: gateway\ncalls: [orders, storefront]\n",
        );
        write("orders.yaml", "name: orders\n");
        write("storefront.yaml", "name: storefront\n");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(any, any).await.unwrap();
        let control_plane =
            mesh_control_plane::start(Options::new(config.path(), state.path()), listeners)
                .await
                .unwrap();
        let cp = |service: &str| ControlPlaneRef {
            address: control_plane.api_addr(),
            trust_anchor: state.path().join("ca.pem"),
            token_file: state.path().join(format!("tokens/{service}")),
        };
        let mesh = TestMesh::new();
        let mut sidecars = Vec::new();
        for service in ["orders", "storefront"] {
            let echo = app::echo(if service == "orders" {
                "orders"
            } else {
                "storefront"
            })
            .await;
            sidecars.push(
                mesh.sidecar(service)
                    .app(echo)
                    .control_plane(cp(service))
                    .start()
                    .await,
            );
        }
        let web = free_port();
        let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
        let bootstrap = format!(
            "service: gateway\ntrust_domain: mesh.local\n\
             listen: {{ outbound: \"{outbound}\", inbound: \"{inbound}\", admin: \"{admin}\" }}\n\
             drain_timeout: 1s\n\
             control_plane: {{ address: \"{cp}\", trust_anchor: ca.pem, token_file: tokens/gateway }}\n\
             gateway:\n\
             \x20 listeners:\n\
             \x20   - {{ name: web, address: \"{web}\", protocol: HTTP }}\n\
             \x20 routes:\n\
             \x20   - name: shop\n\
             \x20     parentRefs: [{{ name: web }}]\n\
             \x20     hostnames: [shop.example.com]\n\
             \x20     rules:\n\
             \x20       - matches: [{{ path: {{ type: PathPrefix, value: /api/orders }} }}]\n\
             \x20         backendRefs: [{{ name: orders }}]\n\
             \x20       - backendRefs: [{{ name: storefront }}]\n\
             \x20   - name: admin-site\n\
             \x20     parentRefs: [{{ name: web }}]\n\
             \x20     hostnames: [admin.example.org]\n\
             \x20     rules: [{{ backendRefs: [{{ name: orders }}] }}]\n",
            cp = control_plane.api_addr(),
        );
        let file = state.path().join("gateway.yaml");
        std::fs::write(&file, bootstrap).unwrap();
        let gateway = spawn_gateway(&file, state.path());
        let mut edge = Self {
            _config: config,
            state,
            _control_plane: control_plane,
            _mesh: mesh,
            _services: sidecars,
            gateway,
            web,
        };
        edge.wait_ready(admin).await;
        edge
    }

    async fn wait_ready(&mut self, admin: SocketAddr) {
        let ready = format!("http://{admin}/ready");
        let gateway = &mut self.gateway;
        eventually("the gateway to be ready", PATIENCE, || {
            if let Some(status) = gateway.try_wait().unwrap() {
                let mut log = String::new();
                if let Some(mut stderr) = gateway.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
                }
                panic!("the gateway exited ({status}) before it was ready:\n{log}");
            }
            let ready = ready.clone();
            async move {
                let rsp = client::http1()
                    .request(http::Request::get(&ready).body(Default::default()).unwrap())
                    .await
                    .map_err(|e| e.to_string())?;
                if rsp.status() == StatusCode::OK {
                    Ok(())
                } else {
                    Err(client::text(rsp).await)
                }
            }
        })
        .await;
    }

    /// GET `path` from the gateway with `Host: host`, until the answer is not a 503 (the
    /// destinations' endpoints arrive from the control plane shortly after the first snapshot).
    async fn get(&self, host: &str, path: &str) -> http::Response<hyper::body::Incoming> {
        let url = format!("http://{}{path}", self.web);
        eventually("an answer from the gateway", PATIENCE, || {
            let url = url.clone();
            async move {
                let rsp = client::get(&url, host).await;
                if rsp.status() == StatusCode::SERVICE_UNAVAILABLE {
                    return Err(client::text(rsp).await);
                }
                Ok(rsp)
            }
        })
        .await
    }

    fn state(&self) -> &Path {
        self.state.path()
    }
}

/// `sidecar --config file`, run in `dir`, its log on a pipe.
fn spawn_gateway(file: &Path, dir: &Path) -> KillOnDrop {
    KillOnDrop::new(
        Command::new(SIDECAR)
            .arg("--config")
            .arg(file)
            .env_remove("MESH_SIDECAR_CONFIG")
            .env_remove("MESH_SIDECAR_BOOTSTRAP")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn outside_requests_reach_services_by_host_and_path_as_the_gateway() {
    let edge = Edge::start().await;
    assert!(edge.state().join("gateway.yaml").exists());

    let rsp = edge.get("shop.example.com", "/api/orders/7").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = client::json(rsp).await;
    assert_eq!(seen["service"], "orders", "{seen}");
    assert_eq!(seen["path"], "/api/orders/7", "{seen}");
    assert_eq!(seen["caller"], GATEWAY_ID, "{seen}");
    assert_eq!(
        seen["headers"]["x-forwarded-host"][0], "shop.example.com",
        "{seen}"
    );

    let rsp = edge.get("shop.example.com:80", "/cart").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = client::json(rsp).await;
    assert_eq!(seen["service"], "storefront", "{seen}");
    assert_eq!(seen["caller"], GATEWAY_ID, "{seen}");

    // Another host: no route takes it, and the route for admin.example.org does not match it.
    let rsp = edge.get("www.example.com", "/api/orders/7").await;
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
    assert_eq!(rsp.headers()["x-mesh-error"], "no-route");
    assert!(
        client::text(rsp).await.contains("www.example.com"),
        "the answer names the host"
    );
    let rsp = edge.get("admin.example.org", "/").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(client::json(rsp).await["service"], "orders");
}

/// A gateway's bootstrap mistakes stop the binary, naming the field.
#[test]
fn a_gateway_with_an_app_or_an_unknown_listener_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(
        &file,
        "service: gateway\ntrust_domain: mesh.local\napp: 127.0.0.1:8080\n\
         control_plane: { address: \"127.0.0.1:1\", trust_anchor: ca.pem, token_file: t }\n\
         gateway:\n  listeners: [{ name: web, address: \"127.0.0.1:0\", protocol: HTTP }]\n  \
         routes: [{ name: shop, parentRefs: [{ name: websecure }], rules: [{ backendRefs: [{ name: orders }] }] }]\n",
    )
    .unwrap();
    let out = Command::new(SIDECAR)
        .arg("--config")
        .arg(&file)
        .env_remove("MESH_SIDECAR_CONFIG")
        .env_remove("MESH_SIDECAR_BOOTSTRAP")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("app: not allowed with gateway"), "{stderr}");
    assert!(
        stderr.contains("gateway.routes[0].parentRefs[0].name: no listener named \"websecure\""),
        "{stderr}"
    );
}
