//! Kubernetes mode against a real API server: a test cluster with the mesh's namespace, CRD
//! and RBAC installed, and a control plane that reaches it as its ServiceAccount (so the tests
//! exercise the rights `meshctl install` grants, no more).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use mesh_api::certify::CertifyError;
use mesh_control_plane::client::{self, ClientError, Workload};
use mesh_control_plane::{ControlPlane, ElectionOptions, KubernetesOptions, Options};
use mesh_kube_testkit::TestCluster;
use mesh_testkit::ControlPlaneRef;
use serde_json::{Value, json};

use super::{Dirs, Sidecar, TD, anonymous, listeners};

/// The namespace of the mesh's services in these tests (`namespace` in mesh.yaml).
pub const MESH_NAMESPACE: &str = "default";

/// The audience of the sidecars' projected tokens, the control plane's default.
pub const AUDIENCE: &str = mesh_inject::names::TOKEN_AUDIENCE;

/// How long the tokens these tests request live (the API server's minimum is 10 minutes).
pub const TOKEN_SECONDS: i64 = 600;

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

/// Workload identities: ServiceAccounts, their tokens (the TokenRequest API, as the kubelet
/// gets a pod's projected token) and sidecars certified with them.
impl KubeMesh {
    /// Creates namespace `name` unless it exists.
    pub async fn namespace(&self, name: &str) {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        create_unless_exists(Api::all(self.admin()), &namespace, name).await;
    }

    /// Creates ServiceAccount `name` in `namespace` unless it exists; the account as stored.
    pub async fn service_account_in(&self, namespace: &str, name: &str) -> ServiceAccount {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        create_unless_exists(api.clone(), &account, name).await;
        api.get(name).await.unwrap()
    }

    /// A token of ServiceAccount `namespace/account` (created if missing) for `audience`, valid
    /// for [`TOKEN_SECONDS`], from the TokenRequest API; `bound` to an object (a Secret, a Pod)
    /// if given, so that deleting the object invalidates the token.
    pub async fn token_request(
        &self,
        namespace: &str,
        account: &str,
        audience: &str,
        bound: Option<BoundObjectReference>,
    ) -> String {
        self.service_account_in(namespace, account).await;
        let api: Api<ServiceAccount> = Api::namespaced(self.admin(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.to_owned()]),
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: bound,
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let issued = api
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{account}: {e}"));
        issued
            .status
            .and_then(|status| status.token)
            .unwrap_or_else(|| panic!("TokenRequest for {namespace}/{account}: no token"))
    }

    /// A token of ServiceAccount `account` of the mesh's namespace for `audience`: what the
    /// kubelet puts in the sidecar's projected volume.
    pub async fn token(&self, account: &str, audience: &str) -> String {
        self.token_request(MESH_NAMESPACE, account, audience, None)
            .await
    }

    /// Certify as `service` with `token`: the workload, or the control plane's refusal.
    pub async fn certify(
        &self,
        cp: &ControlPlane,
        service: &str,
        token: &str,
    ) -> Result<Workload, tonic::Status> {
        self.certify_at(cp, &self.dirs, service, token).await
    }

    /// [`KubeMesh::certify`] with control plane `cp` of state directory `dirs` (a replica).
    pub async fn certify_at(
        &self,
        cp: &ControlPlane,
        dirs: &Dirs,
        service: &str,
        token: &str,
    ) -> Result<Workload, tonic::Status> {
        let channel = anonymous(cp, dirs).await;
        match client::certify(channel, TD, MESH_NAMESPACE, service, token).await {
            Ok(workload) => Ok(workload),
            Err(ClientError::Certify(CertifyError::Refused(status))) => Err(status),
            Err(e) => panic!("certify {service}: {e}"),
        }
    }

    /// A sidecar of `service`: its ServiceAccount (same name) made, a token of it for the
    /// mesh's audience, a certificate for that token, and a channel with that certificate.
    pub async fn sidecar(&self, cp: &ControlPlane, service: &str) -> Sidecar {
        self.sidecar_at(cp, &self.dirs, service).await
    }

    /// [`KubeMesh::sidecar`] with control plane `cp` of state directory `dirs` (a replica).
    pub async fn sidecar_at(&self, cp: &ControlPlane, dirs: &Dirs, service: &str) -> Sidecar {
        let token = self.token(service, AUDIENCE).await;
        let workload = self
            .certify_at(cp, dirs, service, &token)
            .await
            .unwrap_or_else(|status| panic!("certify {service}: {status:?}"));
        let roots = client::roots_from_pem(&dirs.bundle_pem()).unwrap();
        let channel = client::connect(cp.api_addr(), roots, TD, Some(workload.client_cert()))
            .await
            .unwrap();
        Sidecar {
            service: service.to_owned(),
            workload,
            channel,
        }
    }

    /// Where a sidecar process finds the control plane `cp`, with its token in `token_file`
    /// (see [`write_projected_token`]).
    pub fn control_plane_ref(&self, cp: &ControlPlane, token_file: &Path) -> ControlPlaneRef {
        ControlPlaneRef {
            address: cp.api_addr(),
            trust_anchor: self.dirs.state().join("ca.pem"),
            token_file: token_file.to_owned(),
        }
    }
}

/// Writes `token` into the projected volume `dir` as the kubelet does, and returns the token's
/// path: `dir/token` is a symlink to `..data/token`, `..data` to a directory of this
/// generation; a rotation writes a new directory and renames a new `..data` over the old one, so
/// a reader always finds a whole token at the same path.
pub fn write_projected_token(dir: &Path, token: &str) -> PathBuf {
    let generation = (0..)
        .map(|n| dir.join(format!("..generation_{n}")))
        .find(|d| !d.exists())
        .unwrap();
    std::fs::create_dir_all(&generation).unwrap();
    std::fs::write(generation.join("token"), token).unwrap();
    let next = dir.join("..data_tmp");
    std::os::unix::fs::symlink(generation.file_name().unwrap(), &next).unwrap();
    let data = dir.join("..data");
    let previous = std::fs::read_link(&data).ok();
    std::fs::rename(&next, &data).unwrap();
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
    let link = dir.join("token");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/token", &link).unwrap();
    }
    link
}

/// Creates `object` through `api`; an object of that name already there is fine.
async fn create_unless_exists<K>(api: Api<K>, object: &K, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create {name}: {e}"),
    }
}

/// The field manager that wrote an object's status (its `status` subresource's managed fields).
pub fn status_manager(meta: &ObjectMeta) -> Option<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .find(|m| m.subresource.as_deref() == Some("status"))
        .and_then(|m| m.manager.clone())
}
