//! The bootstrap file of the sidecar `meshctl run` starts in an instance's namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// The sidecar's listeners inside the namespace: the ports `sidecar redirect` assumes, as in
/// `meshctl up --transparent`.
pub use crate::up::transparent::{ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT};
/// The app's port when `--app-port` is not given: nothing listens there, so the instance
/// takes no calls.
pub const NO_APP_PORT: u16 = 80;

/// What goes into the file.
#[derive(Debug)]
pub struct SidecarSpec<'a> {
    /// `--service`.
    pub service: &'a str,
    /// The instance's name.
    pub instance: &'a str,
    /// From the control plane's `/config`.
    pub trust_domain: &'a str,
    /// The namespace's address on the bridge.
    pub address: Ipv4Addr,
    /// `--app-port`.
    pub app_port: Option<u16>,
    /// The control plane's API as reached from the namespace.
    pub control_plane: SocketAddr,
    /// The trust anchor and join token, copied into the instance's directory.
    pub trust_anchor: &'a Path,
    /// See `trust_anchor`.
    pub token_file: &'a Path,
}

/// YAML double-quoted scalar (JSON string syntax is a subset of it).
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The bootstrap file's text. Inbound listens on every address of the namespace, where
/// redirected connections arrive, and advertises the namespace's address; admin listens on the
/// namespace's address, where `meshctl` on the host reaches `/ready` and `meshctl stat` reads
/// `/metrics`.
pub fn render(spec: &SidecarSpec<'_>) -> String {
    format!(
        "# Written by `meshctl run` for {instance}.\n\
         service: {service}\n\
         instance: {instance}\n\
         trust_domain: {trust_domain}\n\
         app: 127.0.0.1:{app}\n\
         listen:\n  \
           outbound: 127.0.0.1:{OUTBOUND_PORT}\n  \
           inbound: 0.0.0.0:{INBOUND_PORT}\n  \
           admin: {address}:{ADMIN_PORT}\n  \
           advertise: \"{address}:{INBOUND_PORT}\"\n\
         control_plane:\n  \
           address: \"{cp}\"\n  \
           trust_anchor: {anchor}\n  \
           token_file: {token}\n",
        service = spec.service,
        instance = spec.instance,
        trust_domain = spec.trust_domain,
        app = spec.app_port.unwrap_or(NO_APP_PORT),
        address = spec.address,
        cp = spec.control_plane,
        anchor = quoted(&spec.trust_anchor.to_string_lossy()),
        token = quoted(&spec.token_file.to_string_lossy()),
    )
}
