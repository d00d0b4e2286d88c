//! `meshctl install`: the control plane's manifests for a cluster, built as typed JSON values
//! and printed as multi-document YAML for `kubectl apply -f -`.
//!
//! - `options`: the flags; `root`: the mesh's root, made or read and checked;
//! - `layout`: ports, mounts and labels of the control plane's pod;
//! - one module per part: `rbac`, `control_plane` (namespace, Secret, ConfigMap, Deployment,
//!   Service), `webhook`; the CRD and RBAC come from `mesh_kube::objects`; `error`: [`InstallError`].

mod control_plane;
mod error;
pub mod layout;
pub mod options;
mod root;
mod webhook;

use serde_json::Value;

pub use self::error::InstallError;
pub use self::options::{InstallOptions, RootSource};
pub use self::root::Root;
pub use self::webhook::WebhookClient;

/// The manifests of one install, and the root they carry.
#[derive(Debug)]
pub struct Install {
    /// The objects, in the order they are applied.
    pub objects: Vec<Value>,
    /// The mesh's root.
    pub root: Root,
}

/// The manifests for `options`, the webhook reached as `webhook_client` says.
pub fn manifests(
    options: &InstallOptions,
    webhook_client: &WebhookClient,
) -> Result<Install, InstallError> {
    if options.replicas == 0 {
        return Err(InstallError::Flag {
            flag: "--replicas",
            message: "must be at least 1: with none, the webhook cannot answer and opted-in pods \
                      cannot start"
                .to_owned(),
        });
    }
    for (flag, image) in [
        ("--control-plane-image", &options.control_plane_image),
        ("--proxy-image", &options.proxy_image),
    ] {
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(InstallError::Flag {
                flag,
                message: format!("{image:?} is not an image reference"),
            });
        }
    }
    if let WebhookClient::Url(url) = webhook_client
        && !url.starts_with("https://")
    {
        return Err(InstallError::Flag {
            flag: "--webhook-url",
            message: format!("{url:?}: the API server calls webhooks over https:// only"),
        });
    }
    let root = root::root(&options.root, &options.trust_domain)?;
    let mut objects = vec![
        mesh_kube::objects::namespace(),
        mesh_kube::objects::mesh_service_crd(),
    ];
    objects.extend(mesh_kube::objects::control_plane_rbac());
    objects.extend([
        control_plane::ca_secret(&root),
        control_plane::config_map(options)?,
        control_plane::deployment(options),
        control_plane::service(),
        webhook::configuration(&root.cert_pem, webhook_client),
    ]);
    Ok(Install { objects, root })
}

impl Install {
    /// The objects as YAML documents separated by `---`.
    pub fn to_yaml(&self) -> Result<String, InstallError> {
        serde_saphyr::to_string_multiple(&self.objects)
            .map_err(|e| InstallError::Yaml(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object<'a>(install: &'a Install, kind: &str) -> &'a Value {
        install
            .objects
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    }

    #[test]
    fn the_config_map_is_a_configuration_the_control_plane_accepts() {
        let options = InstallOptions {
            trust_domain: "prod.example".to_owned(),
            ..InstallOptions::default()
        };
        let install = manifests(&options, &WebhookClient::Service).unwrap();
        let mesh_yaml = object(&install, "ConfigMap")["data"]["mesh.yaml"]
            .as_str()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), mesh_yaml).unwrap();
        let config = mesh_control_plane::config::load(dir.path()).unwrap();
        assert_eq!(config.trust_domain, "prod.example");
    }

    #[test]
    fn the_webhooks_select_opted_in_namespaces_and_pods_and_fail_closed() {
        let install = manifests(&InstallOptions::default(), &WebhookClient::Service).unwrap();
        let webhooks = &object(&install, "MutatingWebhookConfiguration")["webhooks"];
        let excluded = json!({
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["mesh-system", "kube-system"],
        });
        let selector = |key: &str, operator: &str, value: &str| json!({ "key": key, "operator": operator, "values": [value] });
        assert_eq!(webhooks[0]["name"], "namespace.inject.mesh.local");
        assert_eq!(
            webhooks[0]["namespaceSelector"]["matchExpressions"],
            json!([selector("mesh.local/inject", "In", "enabled"), excluded])
        );
        assert_eq!(
            webhooks[0]["objectSelector"]["matchExpressions"],
            json!([selector("mesh.local/inject", "NotIn", "disabled")])
        );
        assert_eq!(webhooks[1]["name"], "pod.inject.mesh.local");
        assert_eq!(
            webhooks[1]["namespaceSelector"]["matchExpressions"],
            json!([selector("mesh.local/inject", "NotIn", "enabled"), excluded])
        );
        assert_eq!(
            webhooks[1]["objectSelector"]["matchExpressions"],
            json!([selector("mesh.local/inject", "In", "enabled")])
        );
        let bundle = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            &install.root.cert_pem,
        );
        for webhook in webhooks.as_array().unwrap() {
            assert_eq!(webhook["failurePolicy"], "Fail");
            assert_eq!(webhook["sideEffects"], "None");
            assert_eq!(webhook["timeoutSeconds"], 10);
            assert_eq!(webhook["clientConfig"]["caBundle"], bundle.as_str());
            assert_eq!(
                webhook["clientConfig"]["service"],
                json!({ "namespace": "mesh-system", "name": "mesh-control-plane", "path": "/inject", "port": 443 })
            );
        }
    }

    #[test]
    fn the_deployment_passes_the_images_and_the_control_planes_flags() {
        let options = InstallOptions {
            control_plane_image: "registry.example/cp:1".to_owned(),
            proxy_image: "registry.example/proxy:1".to_owned(),
            replicas: 2,
            ..InstallOptions::default()
        };
        let install = manifests(&options, &WebhookClient::Service).unwrap();
        let deployment = object(&install, "Deployment");
        assert_eq!(deployment["spec"]["replicas"], 2);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/cp:1");
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "--config-dir /etc/mesh --kubernetes --state-dir /var/lib/mesh \
             --listen 0.0.0.0:15010 \
             --admin 0.0.0.0:15014 --webhook 0.0.0.0:15017 --ca-dir /var/run/mesh/ca \
             --proxy-image registry.example/proxy:1"
        );
    }

    #[test]
    fn a_webhook_url_must_be_https() {
        let error = manifests(
            &InstallOptions::default(),
            &WebhookClient::Url("http://127.0.0.1:9443/inject".to_owned()),
        )
        .unwrap_err();
        assert!(error.to_string().starts_with("--webhook-url"), "{error}");
    }
}
