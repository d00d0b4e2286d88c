//! The names Kubernetes objects carry for the mesh: labels, annotations, containers, the
//! volume, the ports. Fixed, because the webhook, `meshctl inject` and `meshctl check` must
//! all recognise the same pods.

/// Label on a namespace or a pod: `enabled` opts in, `disabled` (on a pod) opts out.
pub const INJECT_LABEL: &str = "mesh.local/inject";
/// [`INJECT_LABEL`]'s value that opts in.
pub const INJECT_ENABLED: &str = "enabled";
/// [`INJECT_LABEL`]'s value that opts a pod out, whatever its namespace says.
pub const INJECT_DISABLED: &str = "disabled";

/// Annotation an injected pod carries, valued with the mesh's version: what makes injection
/// idempotent and lets `uninject` find what to remove.
pub const INJECTED_ANNOTATION: &str = "mesh.local/injected";
/// Annotation naming the pod's mesh service.
pub const SERVICE_ANNOTATION: &str = "mesh.local/service";
/// Annotation naming the app's port, where the sidecar forwards inbound calls.
pub const APP_PORT_ANNOTATION: &str = "mesh.local/app-port";
/// Annotation listing inbound ports (and ranges) that bypass the sidecar.
pub const SKIP_INBOUND_PORTS_ANNOTATION: &str = "mesh.local/skip-inbound-ports";
/// Annotation listing destination ports (and ranges) the app reaches directly.
pub const SKIP_OUTBOUND_PORTS_ANNOTATION: &str = "mesh.local/skip-outbound-ports";
/// Annotation listing destination networks the app reaches directly.
pub const SKIP_OUTBOUND_CIDRS_ANNOTATION: &str = "mesh.local/skip-outbound-cidrs";
/// Annotation listing inbound ports whose connections are opaque TCP (server speaks first).
pub const OPAQUE_PORTS_ANNOTATION: &str = "mesh.local/opaque-ports";
/// Annotation setting the sidecar's log filter.
pub const LOG_LEVEL_ANNOTATION: &str = "mesh.local/log-level";

/// Labels the service name falls back to, in order, when [`SERVICE_ANNOTATION`] is not set.
pub const SERVICE_LABELS: [&str; 2] = ["app.kubernetes.io/name", "app"];
/// Labels the instance's version is read from, in order.
pub const VERSION_LABELS: [&str; 2] = ["app.kubernetes.io/version", "version"];

/// The init container that installs the traffic redirect.
pub const INIT_CONTAINER: &str = "mesh-init";
/// The sidecar, a native sidecar (an init container with `restartPolicy: Always`).
pub const PROXY_CONTAINER: &str = "mesh-proxy";
/// The projected service-account token the sidecar presents to the control plane.
pub const TOKEN_VOLUME: &str = "mesh-token";
/// Where [`TOKEN_VOLUME`] is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/secrets/mesh.local/serviceaccount";
/// The audience of the projected token: the mesh's control plane, nobody else.
pub const TOKEN_AUDIENCE: &str = "mesh.local";

/// The sidecar's admin port (readiness, liveness, metrics).
pub const ADMIN_PORT: u16 = 15000;
/// The sidecar's outbound listener, where the app's redirected connections arrive.
pub const OUTBOUND_PORT: u16 = 15001;
/// The sidecar's inbound listener, where the pod's redirected incoming connections arrive.
pub const INBOUND_PORT: u16 = 15006;
/// Ports a pod's own containers may not use: the sidecar's.
pub const MESH_PORTS: [u16; 3] = [ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT];

/// The UID the sidecar runs as; its own connections are never redirected.
pub const DEFAULT_PROXY_UID: u32 = 65532;
/// What injected sidecars dial: the control plane's Service in `mesh-system`.
pub const DEFAULT_CONTROL_PLANE: &str = "mesh-control-plane.mesh-system.svc:15010";
/// The image repository of the sidecar; the tag is the mesh's version.
pub const PROXY_IMAGE_REPOSITORY: &str = "ghcr.io/mesh-rs/sidecar";
/// The image repository of the control plane; the tag is the mesh's version.
pub const CONTROL_PLANE_IMAGE_REPOSITORY: &str = "ghcr.io/mesh-rs/control-plane";
/// The mesh's version, which tags its images and values [`INJECTED_ANNOTATION`].
pub const MESH_VERSION: &str = env!("CARGO_PKG_VERSION");
