//! Adds the mesh's sidecar to Kubernetes pods, and takes it out again.
//!
//! One implementation for both ways a pod joins the mesh: `meshctl inject` rewrites manifests
//! ([`inject_yaml`]), and the control plane's admission webhook rewrites pods as the API server
//! admits them ([`inject_pod`]). Both work on `serde_json::Value`s, so neither this crate nor
//! the control plane needs Kubernetes' client libraries.
//!
//! - [`names`]: the labels, annotations, container names and ports the mesh owns;
//! - [`Settings`]: the mesh-wide inputs (image, control plane, trust anchor);
//! - [`inject_pod`] / [`uninject_pod`]: one pod or pod template;
//! - [`inject_yaml`] / [`uninject_yaml`]: streams of objects of any kind.

mod annotations;
mod document;
mod error;
pub mod names;
mod pod;
mod settings;
mod sidecar;
mod stream;
mod workload;

pub use error::InjectError;
pub use names::*;
pub use pod::{PodOutcome, inject_pod, uninject_pod};
pub use settings::Settings;
pub use stream::{Injection, ObjectOutcome, ObjectReport, inject_yaml, uninject_yaml};

#[cfg(test)]
mod tests;
