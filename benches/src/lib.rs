//! Benchmarks of the mesh, run against real sidecar processes on loopback.
//!
//! # Layout
//! - [`pair`]: starts an echo app behind an `inventory` sidecar and an `orders` sidecar calling
//!   it, as release processes with development certificates, and stops them on drop.
//! - [`control_plane`]: the control plane in-process at scale: push latency to many watchers,
//!   memory, CSR signing rate (`bin/control_plane_scale.rs`).
//! - [`kube_discovery`]: the control plane in Kubernetes mode against a real API server
//!   holding 1,000 Services and 10,000 endpoints: slice edit to watchers, sync time, memory
//!   (`bin/kube_discovery_scale.rs`).
//! - [`datapath`]: direct vs our sidecar pair vs an Envoy pair: throughput, latency, proxy CPU
//!   and memory in one interleaved run (`bin/datapath.rs`); [`datapath::tcp`] the same for opaque
//!   TCP (redis-benchmark and one bulk stream) against Envoy `tcp_proxy` (`bin/tcp_path.rs`).
//! - `bin/body_memory.rs`: the 100 MiB streaming memory target.
//! - [`chaos`]: a control plane, a caller and three instances of a destination as processes,
//!   under load while sidecars, apps and the control plane are killed, policy is edited and the
//!   root CA rotates; every failed request counted by cause (`bin/chaos.rs`).

pub mod chaos;
pub mod control_plane;
pub mod datapath;
pub mod kube_discovery;
pub mod pair;
