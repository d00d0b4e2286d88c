//! Test support for the mesh's Kubernetes work: a real etcd and kube-apiserver on loopback ports,
//! started per test with their own certificates, and `kube` clients for an admin and for plain
//! users.
//!
//! - [`binaries`]: where `scripts/build-kube.sh` puts the two programs, and the skip-or-fail rule
//!   when they are missing.
//! - [`TestCluster`]: the running pair; stops both and removes its directory on drop.
//! - [`apply`]: manifests applied server-side as kubectl does, and read back.
//! - [`mesh`]: the mesh's namespace, CRD and RBAC, and the control plane's kubeconfig.
//! - [`gateway_api`]: the Gateway API's CRDs, as `scripts/gateway-api-crds.sh` fetches them.
//!
//! ```no_run
//! # async fn example() {
//! let Some(binaries) = mesh_kube_testkit::binaries::available("my_test") else { return };
//! let cluster = mesh_kube_testkit::TestCluster::start(&binaries).await.expect("cluster");
//! let client = cluster.admin().expect("admin client");
//! # drop(client);
//! # }
//! ```

pub mod apply;
pub mod binaries;
mod cluster;
mod error;
pub mod gateway_api;
pub mod mesh;
mod pki;

pub use cluster::{SERVICE_ACCOUNT_ISSUER, TestCluster};
pub use error::ClusterError;
