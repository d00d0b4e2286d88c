//! What injection adds to a pod: the `mesh-init` container that installs the redirect, the
//! `mesh-proxy` native sidecar with its bootstrap, and the `mesh-token` volume.

use serde_json::{Value, json};

use crate::annotations::PodOptions;
use crate::names;
use crate::settings::Settings;

/// Where the sidecar listens; `$(POD_IP)` is expanded by Kubernetes from the env var before.
const LISTEN: &str = "{ outbound: 127.0.0.1:15001, inbound: 0.0.0.0:15006, admin: 0.0.0.0:15000, \
                      advertise: \"$(POD_IP):15006\" }";

/// `mesh-init`: runs `sidecar redirect` as root with only NET_ADMIN, before anything else.
pub(crate) fn init_container(settings: &Settings, options: &PodOptions) -> Value {
    let mut args = vec![
        "redirect".to_owned(),
        "--proxy-uid".to_owned(),
        settings.proxy_uid.to_string(),
    ];
    let mut flag = |name: &str, values: &[String]| {
        if !values.is_empty() {
            args.push(name.to_owned());
            args.push(values.join(","));
        }
    };
    flag("--exclude-inbound-ports", &options.skip_inbound_ports);
    flag("--exclude-outbound-ports", &options.skip_outbound_ports);
    flag("--exclude-outbound-cidrs", &options.skip_outbound_cidrs);
    let mut container = json!({
        "name": names::INIT_CONTAINER,
        "image": settings.proxy_image,
        "args": args,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN"] },
        },
    });
    pull_policy(&mut container, settings);
    container
}

/// `mesh-proxy`: the sidecar as a native sidecar, its bootstrap inline in the environment.
pub(crate) fn proxy_container(settings: &Settings, options: &PodOptions) -> Value {
    // apiVersion as the server would default it, so stored pods equal what was written.
    let field = |path: &str| json!({ "fieldRef": { "apiVersion": "v1", "fieldPath": path } });
    let log_level = options.log_level.as_deref().unwrap_or(&settings.log_level);
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": names::ADMIN_PORT } });
    let mut container = json!({
        "name": names::PROXY_CONTAINER,
        "image": settings.proxy_image,
        "restartPolicy": "Always",
        "env": [
            { "name": "POD_NAME", "valueFrom": field("metadata.name") },
            { "name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace") },
            { "name": "POD_IP", "valueFrom": field("status.podIP") },
            { "name": "MESH_LOG", "value": log_level },
            { "name": "MESH_SIDECAR_BOOTSTRAP", "value": bootstrap(settings, options) },
        ],
        "ports": [
            { "name": "mesh-admin", "containerPort": names::ADMIN_PORT },
            { "name": "mesh-inbound", "containerPort": names::INBOUND_PORT },
        ],
        "startupProbe": probe("/ready"),
        "readinessProbe": probe("/ready"),
        "livenessProbe": probe("/live"),
        "resources": {
            "requests": { "cpu": "100m", "memory": "32Mi" },
            "limits": { "memory": "128Mi" },
        },
        "securityContext": {
            "runAsUser": settings.proxy_uid,
            "runAsGroup": settings.proxy_uid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": [
            { "name": names::TOKEN_VOLUME, "mountPath": names::TOKEN_DIR, "readOnly": true },
        ],
    });
    pull_policy(&mut container, settings);
    container
}

/// `mesh-token`: a service-account token for the mesh's audience, renewed by the kubelet.
pub(crate) fn token_volume() -> Value {
    json!({
        "name": names::TOKEN_VOLUME,
        "projected": {
            "sources": [{
                "serviceAccountToken": {
                    "audience": names::TOKEN_AUDIENCE,
                    "expirationSeconds": 3600,
                    "path": "token",
                },
            }],
        },
    })
}

fn pull_policy(container: &mut Value, settings: &Settings) {
    if let (Some(policy), Value::Object(map)) = (&settings.image_pull_policy, container) {
        map.insert("imagePullPolicy".to_owned(), json!(policy));
    }
}

/// The sidecar's bootstrap YAML. Every value that comes from outside is written as a quoted
/// scalar (or a block of PEM lines), so no annotation or label can add keys to it.
pub(crate) fn bootstrap(settings: &Settings, options: &PodOptions) -> String {
    let quoted = |text: &str| Value::String(text.to_owned()).to_string();
    let mut yaml = format!(
        "service: {}\ninstance: \"$(POD_NAME)\"\n",
        quoted(&options.service)
    );
    if let Some(version) = &options.version {
        yaml.push_str(&format!("version: {}\n", quoted(version)));
    }
    yaml.push_str(&format!(
        "trust_domain: {}\napp: 127.0.0.1:{}\nlisten: {LISTEN}\n",
        quoted(&settings.trust_domain),
        options.app_port.unwrap_or(80),
    ));
    if !options.opaque_ports.is_empty() {
        let ports: Vec<String> = options.opaque_ports.iter().map(u16::to_string).collect();
        yaml.push_str(&format!(
            "inbound: {{ opaque_ports: [{}] }}\n",
            ports.join(", ")
        ));
    }
    yaml.push_str(&format!(
        "control_plane:\n  address: {}\n  trust_anchor_pem: |\n",
        quoted(&settings.control_plane)
    ));
    for line in settings.trust_anchor_pem.lines().map(str::trim_end) {
        if line.is_empty() {
            yaml.push('\n');
        } else {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml.push_str(&format!("  token_file: {}/token\n", names::TOKEN_DIR));
    yaml
}
