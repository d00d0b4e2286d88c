//! Where things are in the control plane's pod: its ports, mounts and labels.

use serde_json::{Value, json};

pub use mesh_kube::objects::{cluster_meta, labels, meta};

/// The gRPC API sidecars dial.
pub const GRPC_PORT: u16 = 15010;
/// The admin server: `/ready`, `/live`, metrics.
pub const ADMIN_PORT: u16 = 15014;
/// The injecting webhook (HTTPS).
pub const WEBHOOK_PORT: u16 = 15017;
/// The webhook's port on the Service, the one the API server dials.
pub const WEBHOOK_SERVICE_PORT: u16 = 443;
/// The webhook's path.
pub const WEBHOOK_PATH: &str = "/inject";

/// The configuration directory (the ConfigMap).
pub const CONFIG_DIR: &str = "/etc/mesh";
/// The state directory (an emptyDir: the root comes back from the Secret on each start).
pub const STATE_DIR: &str = "/var/lib/mesh";
/// Where the CA Secret is mounted.
pub const CA_DIR: &str = "/var/run/mesh/ca";

/// The control plane's user and group: not root.
pub const CONTROL_PLANE_UID: i64 = 65532;

/// The labels that select the control plane's pods.
pub fn selector() -> Value {
    json!({ "app.kubernetes.io/name": mesh_kube::names::CONTROL_PLANE })
}
