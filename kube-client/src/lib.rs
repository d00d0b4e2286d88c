//! The mesh's Kubernetes client.
//!
//! # Layout
//! - [`names`]: the names of the mesh's objects in a cluster (namespace, control plane, CA
//!   Secret, webhook configuration, policy CRD, injection labels and annotations).
//! - [`access`]: the rights the control plane needs, as RBAC rules: `meshctl install` grants
//!   them and `meshctl check` verifies them, from this one list.
//! - [`connect`]: a client from a kubeconfig file and context, or the environment.
//! - [`objects`]: the MeshService CRD and the control plane's RBAC, as `meshctl install`
//!   prints them and tests install them.
//! - [`check`]: the checks of `meshctl check`, each a cluster call judged; the caller prints.

#![deny(missing_docs)]

pub mod access;
pub mod check;
pub mod connect;
pub mod names;
pub mod objects;
