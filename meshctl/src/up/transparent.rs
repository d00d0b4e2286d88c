//! `meshctl up --transparent`: the demo mesh with each instance in a network namespace of its
//! own on a host bridge, as `meshctl run` places one process (see [`crate::netns`]).
//!
//! The apps know no sidecar: each demo-service runs with `--transparent`, listens on
//! 127.0.0.1:[`APP_PORT`] of its namespace, and calls `http://inventory/...`, which the
//! namespace's hosts file maps to inventory's virtual address and `sidecar redirect` sends to
//! its sidecar. The control plane's API and Jaeger's OTLP receiver listen on the bridge's
//! address, where the namespaces reach the host; the control plane's admin endpoint and
//! Jaeger's UI stay on loopback. Users reach the storefront through the gateway, which runs on
//! the host and calls the storefront's namespace address over mTLS; a plain connection to that
//! address is brought by the redirect to the storefront's sidecar, which refuses it.
//!
//! Here: the settings, names, and files; `up` does the starting and stopping.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::netns::bridge::{DEFAULT_BRIDGE, DEFAULT_RANGE, STATE_ROOT};
use crate::netns::cidr::Ipv4Net;
use crate::up::config::TracingSpec;
use crate::up::plan::Instance;

/// The sidecars' UID when no other is given (`meshctl run` uses it too).
pub const DEFAULT_PROXY_UID: u32 = 65532;
/// Where each app listens, inside its namespace.
pub const APP_PORT: u16 = 8080;
/// The sidecar's listeners inside a namespace (those `sidecar redirect` assumes).
pub const OUTBOUND_PORT: u16 = 15001;
/// See [`OUTBOUND_PORT`].
pub const INBOUND_PORT: u16 = 15006;
/// See [`OUTBOUND_PORT`].
pub const ADMIN_PORT: u16 = 15000;

/// How the namespaces are laid out.
#[derive(Clone, Debug)]
pub struct TransparentSpec {
    /// The host bridge.
    pub bridge: String,
    /// Where the namespaces' addresses come from; the bridge has the first.
    pub network: Ipv4Net,
    /// Where the bridge's records go.
    pub state_root: PathBuf,
    /// The sidecars' user; the apps run as root, whose connections are redirected.
    pub proxy_uid: u32,
}

impl TransparentSpec {
    /// The defaults of `meshctl run`: bridge `mesh0` on 198.19.0.0/24, sidecars as 65532.
    /// Sharing them lets `meshctl run` put one more process into the running demo.
    pub fn new() -> Self {
        Self {
            bridge: DEFAULT_BRIDGE.to_owned(),
            network: DEFAULT_RANGE
                .parse()
                .unwrap_or_else(|_| Ipv4Net::containing(Ipv4Addr::new(198, 19, 0, 0), 24)),
            state_root: PathBuf::from(STATE_ROOT),
            proxy_uid: DEFAULT_PROXY_UID,
        }
    }
}

impl Default for TransparentSpec {
    fn default() -> Self {
        Self::new()
    }
}

/// The namespace and host veth names of the `index`th instance of this `meshctl up`.
pub fn names(instance: &Instance, index: usize) -> (String, String) {
    let pid = std::process::id();
    (
        format!("meshctl-up-{pid}-{}", instance.name),
        format!("mu{pid}x{index}"),
    )
}

/// Points `instance` at its namespace: the app and the sidecar's inbound and admin listeners
/// on `address`, the outbound listener on the namespace's loopback; its sidecar runs as
/// `proxy_uid`.
pub fn place(instance: &mut Instance, namespace: &str, address: Ipv4Addr, proxy_uid: u32) {
    let at = |port| SocketAddr::new(IpAddr::V4(address), port);
    instance.app = at(APP_PORT);
    instance.inbound = at(INBOUND_PORT);
    instance.admin = at(ADMIN_PORT);
    instance.outbound = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), OUTBOUND_PORT);
    instance.namespace = Some(namespace.to_owned());
    instance.proxy_uid = Some(proxy_uid);
}

/// `tracing` with its endpoint's host moved to `gateway`, where the namespaces reach Jaeger.
pub fn tracing_at(tracing: &TracingSpec, gateway: Ipv4Addr) -> TracingSpec {
    let port = tracing
        .otlp_endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or(4317);
    TracingSpec {
        otlp_endpoint: format!("http://{gateway}:{port}"),
        protocol: tracing.protocol.clone(),
    }
}

/// YAML double-quoted scalar (JSON string syntax is a subset of it).
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The bootstrap file of `instance`'s sidecar in its namespace: inbound on every address,
/// advertising the namespace's; the trust anchor and join token copied into `dir`, which the
/// sidecar's user owns.
pub fn sidecar_bootstrap(
    instance: &Instance,
    trust_domain: &str,
    control_plane: SocketAddr,
    dir: &Path,
    tracing: Option<&TracingSpec>,
) -> String {
    let mut out = format!(
        "# Written by `meshctl up --transparent` for {name}; rewritten on every run.\n\
         service: {service}\n\
         instance: {name}\n\
         trust_domain: {trust_domain}\n\
         app: 127.0.0.1:{APP_PORT}\n\
         version: {version}\n\
         listen:\n  \
           outbound: {outbound}\n  \
           inbound: 0.0.0.0:{INBOUND_PORT}\n  \
           admin: {admin}\n  \
           advertise: \"{inbound}\"\n\
         control_plane:\n  \
           address: \"{control_plane}\"\n  \
           trust_anchor: {anchor}\n  \
           token_file: {token}\n\
         access_log: false\n\
         app_health: {{ path: /health, interval: 1s }}\n",
        name = instance.name,
        service = instance.service,
        version = instance.version,
        outbound = instance.outbound,
        admin = instance.admin,
        inbound = instance.inbound,
        anchor = quoted(&dir.join("ca.pem").to_string_lossy()),
        token = quoted(&dir.join("token").to_string_lossy()),
    );
    if let Some(tracing) = tracing {
        out.push_str(&format!(
            "tracing:\n  otlp_endpoint: {}\n  protocol: {}\n  service_name: {}\n",
            quoted(&tracing.otlp_endpoint),
            tracing.protocol,
            instance.service,
        ));
    }
    out
}

/// The arguments of `ip` that run `bin args` in `namespace`, as `uid` when given (with
/// `setpriv`, which execs it, so the pid is the program's).
pub fn in_namespace(
    namespace: &str,
    uid: Option<u32>,
    bin: &Path,
    args: Vec<OsString>,
) -> Vec<OsString> {
    let mut all: Vec<OsString> = vec!["netns".into(), "exec".into(), namespace.into()];
    if let Some(uid) = uid {
        all.extend([
            "setpriv".into(),
            format!("--reuid={uid}").into(),
            format!("--regid={uid}").into(),
            "--clear-groups".into(),
            "--pdeathsig".into(),
            "TERM".into(),
            "--".into(),
        ]);
    }
    all.push(bin.as_os_str().to_owned());
    all.extend(args);
    all
}
