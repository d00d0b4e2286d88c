//! The contract between sidecars and the control plane.
//!
//! # Layout
//! - [`spiffe`]: SPIFFE IDs and the names they are built from; the only place that knows the
//!   `spiffe://<trust-domain>/ns/<namespace>/sa/<service>` format.

#![deny(missing_docs)]

pub mod spiffe;
