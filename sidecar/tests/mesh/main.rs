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
