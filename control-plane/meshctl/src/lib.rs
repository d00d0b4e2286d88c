//! Operator tooling for the mesh.
//!
//! # Layout
//! - [`up`]: the demo mesh as local processes (`meshctl up`): `demo.yaml`, ports, sidecar
//!   bootstrap files, start-up order, and stopping without leaving a process behind.
//! - [`loadgen`]: orders through the storefront at a fixed rate (`meshctl loadgen`).
//! - [`fault`]: the demo apps' fault knobs (`meshctl fault`).
//! - [`http`]: the small HTTP client those use.
//! - [`certs`]: a development certificate authority that mints SPIFFE workload certificates,
//!   used by `meshctl dev-certs` and by the test kit (so test certificates never expire on disk).
//! - [`status`]: the control plane's `/status` as a table (`meshctl status`).

#![deny(missing_docs)]

pub mod certs;
pub mod fault;
pub mod http;
pub mod loadgen;
pub mod status;
pub mod up;
