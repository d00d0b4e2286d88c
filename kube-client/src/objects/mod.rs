//! The mesh's own cluster objects that more than one program makes: the MeshService
//! CustomResourceDefinition and the control plane's RBAC. `meshctl install` prints them, and
//! the control plane's tests install them in a test cluster, so both use the same objects.

mod crd;
mod crd_schema;
mod rbac;

use serde_json::{Value, json};

pub use self::crd::definition as mesh_service_crd;
pub use self::rbac::rbac as control_plane_rbac;

/// The labels of every object of an install.
pub fn labels() -> Value {
    json!({
        "app.kubernetes.io/name": crate::names::CONTROL_PLANE,
        "app.kubernetes.io/part-of": "mesh",
        "app.kubernetes.io/version": crate::names::MESH_VERSION,
    })
}

/// `metadata` for a cluster-scoped object.
pub fn cluster_meta(name: &str) -> Value {
    json!({ "name": name, "labels": labels() })
}

/// `metadata` for an object in the control plane's namespace.
pub fn meta(name: &str) -> Value {
    json!({ "name": name, "namespace": crate::names::NAMESPACE, "labels": labels() })
}

/// The control plane's namespace, held to the restricted Pod Security Standard.
pub fn namespace() -> Value {
    let mut metadata = cluster_meta(crate::names::NAMESPACE);
    metadata["labels"]["pod-security.kubernetes.io/enforce"] = json!("restricted");
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata })
}
