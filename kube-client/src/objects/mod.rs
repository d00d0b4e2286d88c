//! The mesh's own cluster objects that more than one program makes: the MeshService
//! CustomResourceDefinition and the control plane's RBAC. `meshctl install` prints them, and
//! the control plane's tests install them in a test cluster, so both use the same objects.

mod crd;
mod crd_schema;
mod meta;
mod rbac;

use serde_json::{Value, json};

pub use self::crd::definition as mesh_service_crd;
pub use self::meta::{cluster_meta, labels, meta};
pub use self::rbac::rbac as control_plane_rbac;

/// The control plane's namespace, held to the restricted Pod Security Standard.
pub fn namespace() -> Value {
    let mut metadata = cluster_meta(crate::names::NAMESPACE);
    metadata["labels"]["pod-security.kubernetes.io/enforce"] = json!("restricted");
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata })
}
