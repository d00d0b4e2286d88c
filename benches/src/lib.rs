//! Benchmarks of the mesh, run against real sidecar processes on loopback.
//!
//! # Layout
//! - [`pair`]: starts an echo app behind an `inventory` sidecar and an `orders` sidecar calling
//!   it, as release processes with development certificates, and stops them on drop.
//! - `bin/body_memory.rs`: the 100 MiB streaming memory target.

pub mod pair;
