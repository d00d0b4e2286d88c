//! The control plane's identity and rights: its ServiceAccount, a ClusterRole and a Role made
//! from [`crate::access`] (the list `meshctl check` verifies), and their bindings.

use crate::access::{CONTROL_PLANE_CLUSTER_RULES, CONTROL_PLANE_NAMESPACE_RULES, Rule};
use crate::names::{CONTROL_PLANE, NAMESPACE};
use serde_json::{Value, json};

use super::meta::{cluster_meta, meta};

/// ServiceAccount, ClusterRole, ClusterRoleBinding, Role, RoleBinding.
pub fn rbac() -> Vec<Value> {
    let subject =
        json!([{ "kind": "ServiceAccount", "name": CONTROL_PLANE, "namespace": NAMESPACE }]);
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(CONTROL_PLANE),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": cluster_meta(CONTROL_PLANE),
            "rules": rules(CONTROL_PLANE_CLUSTER_RULES),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": cluster_meta(CONTROL_PLANE),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROL_PLANE },
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(CONTROL_PLANE),
            "rules": rules(CONTROL_PLANE_NAMESPACE_RULES),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(CONTROL_PLANE),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROL_PLANE },
            "subjects": subject,
        }),
    ]
}

fn rules(rules: &[Rule]) -> Value {
    rules
        .iter()
        .map(|rule| {
            let mut value = json!({
                "apiGroups": [rule.group],
                "resources": rule.resources,
                "verbs": rule.verbs,
            });
            if !rule.names.is_empty() {
                value["resourceNames"] = json!(rule.names);
            }
            value
        })
        .collect()
}
