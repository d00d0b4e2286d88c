//! Operator tooling for the mesh.
//!
//! # Layout
//! - [`certs`]: a development certificate authority that mints SPIFFE workload certificates,
//!   used by `meshctl dev-certs` and by the test kit (so test certificates never expire on disk).
//! - [`status`]: the control plane's `/status` as a table (`meshctl status`).

#![deny(missing_docs)]

pub mod certs;
pub mod status;
