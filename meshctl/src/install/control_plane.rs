//! The control plane itself: its namespace, the Secret with the mesh's root, the ConfigMap with
//! its configuration directory, its Deployment and its Service.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mesh_kube::names::{CA_CERT_KEY, CA_KEY_KEY, CA_SECRET, CONFIG_MAP, CONTROL_PLANE};
use serde_json::{Value, json};

use super::error::InstallError;
use super::layout::{
    ADMIN_PORT, CA_DIR, CONFIG_DIR, CONTROL_PLANE_UID, GRPC_PORT, STATE_DIR, WEBHOOK_PORT,
    WEBHOOK_SERVICE_PORT, labels, meta, selector,
};
use super::options::InstallOptions;
use super::root::Root;

/// Mode of the CA files in the pod: readable by the control plane's group only.
const CA_FILE_MODE: i64 = 0o440;

/// Secret mesh-ca: the root the control plane signs with (`--ca-dir`).
pub(super) fn ca_secret(root: &Root) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(CA_SECRET),
        "type": "Opaque",
        "data": {
            CA_CERT_KEY: BASE64.encode(&root.cert_pem),
            CA_KEY_KEY: BASE64.encode(&root.key_pem),
        },
    })
}

/// ConfigMap mesh-config: `mesh.yaml`. The services are MeshService objects.
pub(super) fn config_map(options: &InstallOptions) -> Result<Value, InstallError> {
    let mesh_yaml = serde_saphyr::to_string(&json!({ "trust_domain": options.trust_domain }))
        .map_err(|e| InstallError::Yaml(e.to_string()))?;
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(CONFIG_MAP),
        "data": { mesh_control_plane::config::MESH_FILE: mesh_yaml },
    }))
}

/// The control plane's Deployment.
pub(super) fn deployment(options: &InstallOptions) -> Value {
    let args = [
        "--config-dir".to_owned(),
        CONFIG_DIR.to_owned(),
        "--kubernetes".to_owned(),
        "--state-dir".to_owned(),
        STATE_DIR.to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{GRPC_PORT}"),
        "--admin".to_owned(),
        format!("0.0.0.0:{ADMIN_PORT}"),
        "--webhook".to_owned(),
        format!("0.0.0.0:{WEBHOOK_PORT}"),
        "--ca-dir".to_owned(),
        CA_DIR.to_owned(),
        "--proxy-image".to_owned(),
        options.proxy_image.clone(),
    ];
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": "admin" }, "periodSeconds": 5, "failureThreshold": 3 });
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(CONTROL_PLANE),
        "spec": {
            "replicas": options.replicas,
            "selector": { "matchLabels": selector() },
            "template": {
                "metadata": { "labels": labels() },
                "spec": {
                    "serviceAccountName": CONTROL_PLANE,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": CONTROL_PLANE_UID,
                        "runAsGroup": CONTROL_PLANE_UID,
                        "fsGroup": CONTROL_PLANE_UID,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "control-plane",
                        "image": options.control_plane_image,
                        "args": args,
                        // The replica's name (its Lease holder identity) and the namespace of
                        // its CA Secret and Lease.
                        "env": [
                            {
                                "name": "POD_NAME",
                                "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } },
                            },
                            {
                                "name": "POD_NAMESPACE",
                                "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } },
                            },
                        ],
                        "ports": [
                            { "name": "grpc", "containerPort": GRPC_PORT },
                            { "name": "admin", "containerPort": ADMIN_PORT },
                            { "name": "webhook", "containerPort": WEBHOOK_PORT },
                        ],
                        "readinessProbe": probe("/ready"),
                        "livenessProbe": probe("/live"),
                        "resources": {
                            "requests": { "cpu": "100m", "memory": "64Mi" },
                            "limits": { "memory": "256Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [
                            { "name": "config", "mountPath": CONFIG_DIR, "readOnly": true },
                            { "name": "state", "mountPath": STATE_DIR },
                            { "name": "ca", "mountPath": CA_DIR, "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        {
                            "name": "config",
                            "configMap": {
                                "name": CONFIG_MAP,
                                "items": [{
                                    "key": mesh_control_plane::config::MESH_FILE,
                                    "path": mesh_control_plane::config::MESH_FILE,
                                }],
                            },
                        },
                        { "name": "state", "emptyDir": {} },
                        {
                            "name": "ca",
                            "secret": { "secretName": CA_SECRET, "defaultMode": CA_FILE_MODE },
                        },
                    ],
                },
            },
        },
    })
}

/// The control plane's Service: the API sidecars dial, the admin server, and the webhook on
/// 443 as the API server expects.
pub(super) fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(CONTROL_PLANE),
        "spec": {
            "selector": selector(),
            "ports": [
                { "name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc" },
                { "name": "admin", "port": ADMIN_PORT, "targetPort": "admin" },
                { "name": "webhook", "port": WEBHOOK_SERVICE_PORT, "targetPort": "webhook" },
            ],
        },
    })
}
