//! End-to-end tests of the sidecar data path: real sockets on 127.0.0.1, real mutual TLS,
//! sidecars driven through their bootstrap files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod app_health;
mod authorization;
mod bootstrap;
mod detect;
mod errors;
mod faults;
mod gateway;
mod gateway_pushed;
mod grpc;
mod inline_bootstrap;
mod limits;
mod mirror;
mod mtls;
mod passthrough;
mod postgres;
mod rate_limit;
mod redirect;
mod resilience;
mod routes;
mod shutdown;
mod tcp;
mod tracing;
mod transparency;
mod unauthenticated;
mod upgrade;

use mesh_testkit::{Sidecar, TestMesh};

/// An `orders` sidecar calling an `inventory` sidecar in front of the echo app.
pub(crate) struct Pair {
    /// Keeps the certificates directory alive.
    pub(crate) _mesh: TestMesh,
    pub(crate) orders: Sidecar,
    pub(crate) inventory: Sidecar,
}

impl Pair {
    pub(crate) async fn start() -> Self {
        let mesh = TestMesh::new();
        let (orders, inventory) = mesh.pair(|o| o, |i| i).await;
        Self {
            _mesh: mesh,
            orders,
            inventory,
        }
    }
}

/// A `service` sidecar whose one destination is `inventory`.
pub(crate) async fn calling_inventory(
    mesh: &TestMesh,
    service: &str,
    inventory: &Sidecar,
) -> Sidecar {
    mesh.sidecar(service)
        .destination("inventory", &[inventory.inbound])
        .start()
        .await
}

pub(crate) const ORDERS_ID: &str = "spiffe://mesh.local/ns/default/sa/orders";

/// The tries a response says it took (`x-mesh-attempts`).
pub(crate) fn attempts(rsp: &http::Response<hyper::body::Incoming>) -> u32 {
    rsp.headers()["x-mesh-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A control plane in this process on port 0, for tests that run the `sidecar` binary against
/// one: its configuration declares `services` (`(name, file text)`), with a registry quick
/// enough that instances come and go within a test.
pub(crate) struct LocalControlPlane {
    /// Read by the control plane for as long as it runs.
    _config: tempfile::TempDir,
    state: tempfile::TempDir,
    pub(crate) control_plane: mesh_control_plane::ControlPlane,
}

impl LocalControlPlane {
    pub(crate) async fn start(services: &[(&str, &str)]) -> Self {
        let (config, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(
            config.path().join("mesh.yaml"),
            "trust_domain: mesh.local\nregistry: { heartbeat_interval: 200ms, lease: 1500ms }\n",
        )
        .unwrap();
        let dir = config.path().join("services");
        std::fs::create_dir(&dir).unwrap();
        for (name, text) in services {
            std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
        }
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners = mesh_control_plane::Listeners::bind(any, any).await.unwrap();
        let options = mesh_control_plane::Options::new(config.path(), state.path());
        let control_plane = mesh_control_plane::start(options, listeners).await.unwrap();
        Self {
            _config: config,
            state,
            control_plane,
        }
    }

    /// The configuration directory it reads (`mesh.yaml`, `services/`, `gateways/`).
    pub(crate) fn config_dir(&self) -> &std::path::Path {
        self._config.path()
    }

    /// The state directory: `ca.pem`, `tokens/<service>`.
    pub(crate) fn state(&self) -> &std::path::Path {
        self.state.path()
    }

    /// How `service`'s sidecar reaches it: its API, `ca.pem` and the service's join token.
    pub(crate) fn for_service(&self, service: &str) -> mesh_testkit::ControlPlaneRef {
        mesh_testkit::ControlPlaneRef {
            address: self.control_plane.api_addr(),
            trust_anchor: self.state().join("ca.pem"),
            token_file: self.state().join(format!("tokens/{service}")),
        }
    }
}

/// Waits (at most `patience`) for `/ready` of the `sidecar` process on `admin`; a process that
/// exits first fails the test with what `log` reads of it.
pub(crate) async fn until_ready(
    what: &str,
    process: &mut mesh_testkit::process::KillOnDrop,
    admin: std::net::SocketAddr,
    patience: std::time::Duration,
    log: impl Fn(&mut mesh_testkit::process::KillOnDrop) -> String,
) {
    use mesh_testkit::client;
    let ready = format!("http://{admin}/ready");
    mesh_testkit::eventually(what, patience, || {
        if let Some(status) = process.try_wait().unwrap() {
            panic!(
                "the sidecar exited ({status}) before it was ready:\n{}",
                log(process)
            );
        }
        let ready = ready.clone();
        async move {
            let rsp = client::http1()
                .request(http::Request::get(&ready).body(Default::default()).unwrap())
                .await
                .map_err(|e| e.to_string())?;
            if rsp.status() == http::StatusCode::OK {
                Ok(())
            } else {
                Err(client::text(rsp).await)
            }
        }
    })
    .await;
}
