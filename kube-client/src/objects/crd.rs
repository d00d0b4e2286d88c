//! The CustomResourceDefinition of MeshService: one namespaced object per service of the mesh,
//! its spec a control-plane service file, its status the control plane's verdict on it.

use crate::names::{POLICY_CRD, POLICY_GROUP, POLICY_KIND, POLICY_PLURAL, POLICY_VERSION};
use serde_json::{Value, json};

use super::crd_schema;
use super::meta::cluster_meta;

/// The CRD.
pub fn definition() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": cluster_meta(POLICY_CRD),
        "spec": {
            "group": POLICY_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": POLICY_KIND,
                "listKind": format!("{POLICY_KIND}List"),
                "plural": POLICY_PLURAL,
                "singular": POLICY_KIND.to_lowercase(),
                "shortNames": ["msvc"],
                "categories": ["mesh"],
            },
            "versions": [{
                "name": POLICY_VERSION,
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": [
                    { "name": "Protocol", "type": "string", "jsonPath": ".spec.protocol" },
                    {
                        "name": "Accepted",
                        "type": "string",
                        "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status",
                    },
                    { "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" },
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": "A service of the mesh and its policy.",
                        "properties": {
                            "spec": crd_schema::spec(),
                            "status": crd_schema::status(),
                        },
                    },
                },
            }],
        },
    })
}
