//! Kubernetes mode (`control-plane --kubernetes`): the cluster's API server takes the place of
//! the local mode's files and memory where the cluster already does the job.
//!
//! - `options`: how the control plane reaches its cluster, and why it could not.
//! - `mesh_services`: the services' policy from MeshService objects instead of service files,
//!   fed to the same validation as the files.
//! - `cluster_policy`: those objects judged one by one (`acceptance`): a refused object keeps
//!   its last accepted spec while the others' changes apply, and each object's verdict is
//!   written to its status and events (`verdicts`).
//! - `gateway_objects`, `gateway_api`, `gateway_status`: ingress from the Gateway API:
//!   Gateways of the mesh's class and their HTTPRoutes, watched, mapped onto the gateway files
//!   of file mode (`gateways/<service>.yaml`) and judged with the MeshServices; each object's
//!   verdict written to its status as Gateway API controllers do.
//! - `token_review`: workload identity from projected service-account tokens, reviewed by
//!   the API server, instead of join tokens.
//! - `discovery`: where services' instances are, from Services and EndpointSlices.
//! - `replicas`: several control planes side by side: the CA's state in Secret `mesh-ca`
//!   (`ca_secret`), leader election with Lease `mesh-control-plane` (`leader`), and each
//!   replica's sidecars summarised in a Lease of its own for the leader's rotation checks
//!   (`peers`); the leader keeps the webhook configuration's `caBundle` the trust bundle
//!   (`webhook_bundle`).
//!
//! The mesh's namespace (`namespace` in `mesh.yaml`) is where its services, their
//! MeshService objects, Services and EndpointSlices live; the control plane's own namespace
//! ([`KubernetesOptions::namespace`]) holds its shared state.

mod acceptance;
mod ca_secret;
mod cluster_policy;
mod discovery;
mod gateway_api;
mod gateway_objects;
mod gateway_status;
mod leader;
mod mesh_services;
mod options;
mod peers;
mod replicas;
mod token_review;
mod verdicts;
mod watched;
mod webhook_bundle;

pub use self::ca_secret::CaSecretError;
pub(crate) use self::cluster_policy::ClusterPolicy;
pub(crate) use self::discovery::start as start_discovery;
pub use self::leader::ElectionOptions;
pub(crate) use self::options::client;
pub use self::options::{KubernetesError, KubernetesOptions};
pub(crate) use self::replicas::ReplicaSet;
pub(crate) use self::token_review::{ReviewError, TokenReviewer};
