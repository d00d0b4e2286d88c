//! `meshctl install`: the control plane's manifests for a cluster, built as typed JSON values
//! and printed as multi-document YAML for `kubectl apply -f -`.
//!
//! - `options`: the flags; `root`: the mesh's root, made or read and checked;
//! - `layout`: ports, mounts and labels of the control plane's pod;
//! - one module per part: `rbac`, `control_plane` (namespace, Secret, ConfigMap, Deployment,
//!   Service), `webhook`, `crd` with `crd_schema`; `error`: [`InstallError`].

mod control_plane;
mod crd;
mod crd_schema;
mod error;
pub mod layout;
pub mod options;
mod rbac;
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
    let mut objects = vec![control_plane::namespace(), crd::definition()];
    objects.extend(rbac::objects());
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
