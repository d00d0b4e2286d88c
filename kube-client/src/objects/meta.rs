//! The labels and `metadata` of the mesh's objects.

use serde_json::{Value, json};

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
