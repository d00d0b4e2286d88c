//! The names of the mesh's objects in a cluster, shared by what creates them (`meshctl
//! install`) and what looks for them (`meshctl check`).

/// The namespace of the control plane.
pub const NAMESPACE: &str = "mesh-system";
/// The control plane's ServiceAccount, Deployment, Service, ClusterRole(Binding) and
/// Role(Binding).
pub const CONTROL_PLANE: &str = "mesh-control-plane";
/// The Secret holding the mesh's root (`ca.pem`, `ca-key.pem`).
pub const CA_SECRET: &str = "mesh-ca";
/// The Secret's key holding the root certificate.
pub const CA_CERT_KEY: &str = "ca.pem";
/// The Secret's key holding the root's private key.
pub const CA_KEY_KEY: &str = "ca-key.pem";
/// The ConfigMap holding the control plane's configuration directory.
pub const CONFIG_MAP: &str = "mesh-config";
/// The lease the control plane's replicas elect a leader with.
pub const LEASE: &str = "mesh-control-plane";
/// The MutatingWebhookConfiguration that injects sidecars.
pub const WEBHOOK_CONFIGURATION: &str = "mesh-sidecar-injector";
/// The webhook for pods of opted-in namespaces.
pub const NAMESPACE_WEBHOOK: &str = "namespace.inject.mesh.local";
/// The webhook for opted-in pods of other namespaces.
pub const POD_WEBHOOK: &str = "pod.inject.mesh.local";
// What injection writes into pods and which images it names: one definition, injection's, so
// what `meshctl check` looks for is what the webhook and `meshctl inject` write.
pub use mesh_inject::names::{
    CONTROL_PLANE_IMAGE_REPOSITORY, INJECT_LABEL, INJECTED_ANNOTATION, MESH_VERSION,
    PROXY_CONTAINER, PROXY_IMAGE_REPOSITORY,
};

/// The API group of the mesh's policy objects.
pub const POLICY_GROUP: &str = "mesh.local";
/// Their version.
pub const POLICY_VERSION: &str = "v1alpha1";
/// Their kind: one object per service, its spec a control-plane service file.
pub const POLICY_KIND: &str = "MeshService";
/// Their plural resource name.
pub const POLICY_PLURAL: &str = "meshservices";
/// The CustomResourceDefinition's name, `<plural>.<group>`.
pub const POLICY_CRD: &str = "meshservices.mesh.local";

/// The Gateway API's group: the control plane reads its Gateways and HTTPRoutes (v1).
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
/// The Gateway API version whose CRDs the mesh is tested with (`scripts/gateway-api-crds.sh`).
pub const GATEWAY_API_VERSION: &str = "v1.6.3";
/// The `gatewayClassName` of the Gateways the mesh's gateways serve, unless told otherwise.
pub const GATEWAY_CLASS: &str = "mesh";
/// The `controllerName` the mesh writes into HTTPRoutes' status.
pub const GATEWAY_CONTROLLER: &str = "mesh.local/gateway-controller";

/// The control plane's ServiceAccount as an RBAC user.
pub fn control_plane_user() -> String {
    format!("system:serviceaccount:{NAMESPACE}:{CONTROL_PLANE}")
}

/// The groups Kubernetes puts the control plane's ServiceAccount in.
pub fn control_plane_groups() -> Vec<String> {
    vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{NAMESPACE}"),
        "system:authenticated".to_owned(),
    ]
}
