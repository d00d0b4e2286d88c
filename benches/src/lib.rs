//! Benchmarks of the mesh, run against real sidecar processes on loopback.
//!
//! # Layout
//! - [`pair`]: starts an echo app behind an `inventory` sidecar and an `orders` sidecar calling
//!   it, as release processes with development certificates, and stops them on drop.
//! - [`control_plane`]: the control plane in-process at scale: push latency to many watchers,
//!   memory, CSR signing rate (`bin/control_plane_scale.rs`).
//! - [`datapath`]: direct vs our sidecar pair vs an Envoy pair: throughput, latency, proxy CPU
//!   and memory in one interleaved run (`bin/datapath.rs`); [`datapath::tcp`] the same for opaque
//!   TCP (redis-benchmark and one bulk stream) against Envoy `tcp_proxy` (`bin/tcp_path.rs`).
//! - `bin/body_memory.rs`: the 100 MiB streaming memory target.

pub mod control_plane;
pub mod datapath;
pub mod pair;
