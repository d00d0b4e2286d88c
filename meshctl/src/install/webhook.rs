//! The MutatingWebhookConfiguration: two webhooks on pod creation, one for opted-in namespaces
//! and one for opted-in pods elsewhere, both trusting the mesh's root and failing closed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mesh_kube::names::{
    CONTROL_PLANE, INJECT_LABEL, NAMESPACE, NAMESPACE_WEBHOOK, POD_WEBHOOK, WEBHOOK_CONFIGURATION,
};
use serde_json::{Value, json};

use super::layout::{WEBHOOK_PATH, WEBHOOK_SERVICE_PORT, cluster_meta};

/// Namespaces never injected: the control plane's own and the system's.
const EXCLUDED_NAMESPACES: [&str; 2] = [NAMESPACE, "kube-system"];

/// How the API server reaches the webhook.
#[derive(Clone, Debug)]
pub enum WebhookClient {
    /// Through the control plane's Service (a real cluster).
    Service,
    /// At a URL (an API server that cannot dial Services, e.g. one without nodes).
    Url(String),
}

/// The configuration, trusting `root_pem`.
pub(super) fn configuration(root_pem: &str, client: &WebhookClient) -> Value {
    let client_config = match client {
        WebhookClient::Service => json!({
            "service": {
                "namespace": NAMESPACE,
                "name": CONTROL_PLANE,
                "path": WEBHOOK_PATH,
                "port": WEBHOOK_SERVICE_PORT,
            },
            "caBundle": BASE64.encode(root_pem),
        }),
        WebhookClient::Url(url) => json!({ "url": url, "caBundle": BASE64.encode(root_pem) }),
    };
    let not_excluded = json!({
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": EXCLUDED_NAMESPACES,
    });
    let webhook = |name: &str,
                   namespace_operator: &str,
                   object_operator: &str,
                   object_value: &str| {
        json!({
            "name": name,
            "clientConfig": client_config,
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {
                "matchExpressions": [
                    { "key": INJECT_LABEL, "operator": namespace_operator, "values": ["enabled"] },
                    not_excluded,
                ],
            },
            "objectSelector": {
                "matchExpressions": [
                    { "key": INJECT_LABEL, "operator": object_operator, "values": [object_value] },
                ],
            },
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": cluster_meta(WEBHOOK_CONFIGURATION),
        "webhooks": [
            webhook(NAMESPACE_WEBHOOK, "In", "NotIn", "disabled"),
            webhook(POD_WEBHOOK, "NotIn", "In", "enabled"),
        ],
    })
}
