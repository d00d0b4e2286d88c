//! Operator tooling for the mesh.
//!
//! # Layout
//! - [`addresses`]: the services and virtual addresses the control plane's `/status` lists.
//! - [`up`]: the demo mesh as local processes (`meshctl up`): `demo.yaml`, ports, sidecar
//!   bootstrap files, start-up order, and stopping without leaving a process behind.
//! - [`loadgen`]: orders through the storefront at a fixed rate (`meshctl loadgen`).
//! - [`fault`]: the demo apps' fault knobs (`meshctl fault`).
//! - [`http`]: the small HTTP client those use.
//! - [`inject`]: the sidecar added to Kubernetes manifests, and removed (`meshctl inject`,
//!   `meshctl uninject`).
//! - [`status`]: the control plane's `/status` as a table (`meshctl status`).
//! - [`dashboard`]: the mesh in a browser (`meshctl dashboard`).
//! - [`stat`]: each service's and edge's recent traffic, from the sidecars (`meshctl stat`).
//! - [`table`]: the plain-text tables those print.
//! - [`tap`]: the live stream of a service's requests, from its sidecars (`meshctl tap`).
//! - [`netns`]: a network namespace per instance on a shared host bridge, with its hosts file.
//! - [`run`]: any local process in the mesh, in its own namespace behind its sidecar
//!   (`meshctl run`).
//! - [`install`]: the control plane's manifests for a Kubernetes cluster (`meshctl install`).
//! - [`check`]: the printed report of the cluster's checks (`meshctl check`).

#![deny(missing_docs)]

pub mod addresses;
pub mod check;
pub mod dashboard;
pub mod fault;
pub mod http;
pub mod inject;
pub mod install;
pub mod loadgen;
pub mod netns;
pub mod run;
pub mod stat;
pub mod status;
pub mod table;
pub mod tap;
pub mod up;
