//! Kubernetes mode against a real API server: a test cluster with the mesh's namespace, CRD
//! and RBAC installed, and a control plane that reaches it as its ServiceAccount (so the tests
//! exercise the rights `meshctl install` grants, no more).

use std::path::PathBuf;
use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use mesh_control_plane::{ControlPlane, ElectionOptions, KubernetesOptions, Options};
use mesh_kube_testkit::TestCluster;
use serde_json::{Value, json};

use super::{Dirs, listeners};

/// The namespace of the mesh's services in these tests (`namespace` in mesh.yaml).
pub const MESH_NAMESPACE: &str = "default";

/// A test cluster ready for the control plane, and its configuration directory.
pub struct KubeMesh {
    pub cluster: TestCluster,
    /// A kubeconfig authenticating as the control plane's ServiceAccount.
    pub kubeconfig: PathBuf,
    pub dirs: Dirs,
}

impl KubeMesh {
    /// The cluster for `test` with the mesh installed, `mesh_yaml` as the configuration; `None`
    /// when the cluster's binaries are missing outside CI.
    pub async fn start(test: &str, mesh_yaml: &str) -> Option<Self> {
        let binaries = mesh_kube_testkit::binaries::available(test)?;
        let cluster = TestCluster::start(&binaries)
            .await
            .unwrap_or_else(|e| panic!("{test}: start the test cluster: {e}"));
        let kubeconfig = mesh_kube_testkit::mesh::install_control_plane_access(&cluster)
            .await
            .unwrap_or_else(|e| panic!("{test}: install the mesh's objects: {e}"));
        Some(Self {
            cluster,
            kubeconfig,
            dirs: Dirs::new(mesh_yaml, &[]),
        })
    }

    /// The options of a control plane in Kubernetes mode named `replica`.
    pub fn options(&self, replica: &str) -> Options {
        let mut options = self.dirs.options();
        let mut kubernetes = KubernetesOptions::new(Some(self.kubeconfig.clone()));
        kubernetes.replica = replica.to_owned();
        options.kubernetes = Some(kubernetes);
        options
    }

    /// Starts a control plane in Kubernetes mode on port 0.
    pub async fn control_plane(&self, replica: &str) -> ControlPlane {
        mesh_control_plane::start(self.options(replica), listeners().await)
            .await
            .unwrap_or_else(|e| panic!("start control plane {replica}: {e}"))
    }

    /// Directories of one replica among several: the same mesh.yaml, a state directory of its
    /// own (as each pod of a Deployment has).
    pub fn replica_dirs(&self) -> Dirs {
        let mesh_yaml = std::fs::read_to_string(self.dirs.config.path().join("mesh.yaml")).unwrap();
        Dirs::new(&mesh_yaml, &[])
    }

    /// Starts replica `replica` in Kubernetes mode with `dirs` and `election`'s timing.
    pub async fn replica(
        &self,
        replica: &str,
        dirs: &Dirs,
        election: ElectionOptions,
    ) -> ControlPlane {
        let mut options = dirs.options();
        let mut kubernetes = KubernetesOptions::new(Some(self.kubeconfig.clone()));
        kubernetes.replica = replica.to_owned();
        kubernetes.election = election;
        options.kubernetes = Some(kubernetes);
        mesh_control_plane::start(options, listeners().await)
            .await
            .unwrap_or_else(|e| panic!("start control plane {replica}: {e}"))
    }

    pub fn admin(&self) -> kube::Client {
        self.cluster.admin().unwrap()
    }

    /// MeshService objects of the mesh's namespace.
    pub fn mesh_services(&self) -> Api<DynamicObject> {
        let resource = kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                mesh_kube::names::POLICY_GROUP,
                mesh_kube::names::POLICY_VERSION,
                mesh_kube::names::POLICY_KIND,
            ),
            mesh_kube::names::POLICY_PLURAL,
        );
        Api::namespaced_with(self.admin(), MESH_NAMESPACE, &resource)
    }

    /// Creates or replaces MeshService `name` with `spec`, as `kubectl apply` would; the
    /// object as stored.
    pub async fn apply_mesh_service(&self, name: &str, spec: Value) -> DynamicObject {
        let object = json!({
            "apiVersion": format!(
                "{}/{}",
                mesh_kube::names::POLICY_GROUP,
                mesh_kube::names::POLICY_VERSION
            ),
            "kind": mesh_kube::names::POLICY_KIND,
            "metadata": { "name": name, "namespace": MESH_NAMESPACE },
            "spec": spec,
        });
        // The CRD's kind is served a moment after the CRD is stored.
        mesh_testkit::eventually(
            &format!("MeshService {name} to be applied"),
            Duration::from_secs(20),
            || {
                let api = self.mesh_services();
                let object = object.clone();
                async move {
                    api.patch(
                        name,
                        &PatchParams::apply("kubectl").force(),
                        &Patch::Apply(object),
                    )
                    .await
                }
            },
        )
        .await
    }
}
