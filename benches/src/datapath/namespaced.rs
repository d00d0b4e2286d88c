//! Our sidecar pair on two hosts: network namespaces A (the client and its sidecar) and B (the
//! app and its sidecar) joined by a veth link, in two ways that differ only in how traffic
//! reaches the sidecars:
//!
//! - *explicit*: the client calls its sidecar's outbound listener, 127.0.0.1:15001, with
//!   `Host: inventory`; that sidecar dials the other's inbound listener, 198.18.0.2:15006.
//! - *transparent*: `sidecar redirect` runs in both namespaces, as an init container would. The
//!   client dials inventory's virtual address, 127.240.0.9:80, with that address as its `Host`,
//!   as an unmodified app that resolved the name would; the redirect brings the connection to
//!   the outbound listener, which names the destination by that address and dials the app's
//!   address, 198.18.0.2:8080; B's redirect brings that to the inbound listener.
//!
//! Both sidecars run as their own user (the redirect skips its connections) on one worker. The
//! app listens on B's loopback only, so in the transparent case nothing but both redirects can
//! answer: a request that succeeds crossed both sidecars. Needs root.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use mesh_testkit::netns::TwoHosts;
use mesh_testkit::process::effective_uid;

use super::dial::Dial;
use super::procs::Proc;
use super::topology::{CLIENT, READY_LIMIT, Running, Runtime, SERVER, sidecar_args, sidecar_yaml};
use super::{Error, load};

/// The sidecars' user in both namespaces, as the redirect's `--proxy-uid`.
pub(crate) const PROXY_UID: u32 = 65532;
/// Each namespace has its own ports, so the sidecars use their defaults.
const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;
const ADMIN: u16 = 15000;
/// The app's port in B, on B's loopback.
const APP_PORT: u16 = 8080;
/// Inventory's virtual address: nothing listens there, only the redirect can take it.
const VIRTUAL_ADDRESS: &str = "127.240.0.9";

/// How the client's requests reach the sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interception {
    /// The client addresses its sidecar.
    Explicit,
    /// `sidecar redirect` in both namespaces.
    Redirect,
}

impl Interception {
    fn suffix(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Redirect => "transparent",
        }
    }
}

/// What a configuration in namespaces holds beyond its proxies: where its client runs and the
/// `Host` it sends, its app, and the namespaces, deleted last.
#[derive(Debug)]
pub(crate) struct Namespaced {
    client_namespace: Arc<str>,
    authority: &'static str,
    _app: Proc,
    _hosts: TwoHosts,
}

impl Namespaced {
    pub(crate) fn dial(&self, addr: SocketAddr) -> Dial {
        Dial {
            addr,
            namespace: Some(self.client_namespace.clone()),
            authority: self.authority,
            tls: None,
        }
    }
}

/// Why the configurations in namespaces cannot run here; `None` when they can.
pub(crate) fn unavailable() -> Option<String> {
    (effective_uid() != Some(0)).then(|| {
        "network namespaces, sidecars under their own user and the redirect's nftables rules \
         need root"
            .to_owned()
    })
}

/// Creates the namespaces and starts the app, both sidecars and, for [`Interception::Redirect`],
/// the redirect in each namespace; returns once a request has gone through.
pub(crate) async fn start(
    bin_dir: &Path,
    harness: &Path,
    dir: &Path,
    interception: Interception,
) -> Result<Running, Error> {
    let sidecar = super::sidecar_binary(bin_dir)?;
    let hosts = std::panic::catch_unwind(TwoHosts::create).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        Error::Namespaces(why)
    })?;
    let (a, b) = (hosts.a.name.as_str(), hosts.b.name.as_str());
    share_with_proxy_user(dir)?;
    let suffix = interception.suffix();
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let app_addr = local(APP_PORT);

    let mut app = Command::new("ip");
    app.args(["netns", "exec", b])
        .arg(harness)
        .args(["--serve-app", &app_addr.to_string()]);
    let mut app = Proc::spawn(
        &format!("app-{suffix}"),
        app,
        &dir.join(format!("app-{suffix}.log")),
    )?;
    app.wait_ready_in(Some(b), app_addr, "/", READY_LIMIT)
        .await?;

    let (destination, entry, authority) = match interception {
        Interception::Explicit => (
            format!(
                "{{ {SERVER}: {{ endpoints: [\"{}:{INBOUND}\"] }} }}",
                hosts.b.ip
            ),
            local(OUTBOUND),
            load::AUTHORITY,
        ),
        Interception::Redirect => {
            let uid = PROXY_UID.to_string();
            redirect(&sidecar, a, &["--proxy-uid", &uid]).await?;
            let app_port = APP_PORT.to_string();
            redirect(
                &sidecar,
                b,
                &["--proxy-uid", &uid, "--inbound-ports", &app_port],
            )
            .await?;
            (
                format!(
                    "{{ {SERVER}: {{ endpoints: [\"{}:{APP_PORT}\"], virtual_address: \"{VIRTUAL_ADDRESS}\" }} }}",
                    hosts.b.ip
                ),
                SocketAddr::new(
                    VIRTUAL_ADDRESS.parse().map_err(|_| {
                        Error::Namespaces(format!("{VIRTUAL_ADDRESS} is not an address"))
                    })?,
                    80,
                ),
                VIRTUAL_ADDRESS,
            )
        }
    };
    let mut proxies = Vec::new();
    for (role, service, namespace, inbound, destinations) in [
        (
            "client side",
            CLIENT,
            a,
            local(INBOUND),
            destination.as_str(),
        ),
        (
            "server side",
            SERVER,
            b,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, INBOUND)),
            "{}",
        ),
    ] {
        let listen = [local(OUTBOUND), inbound, local(ADMIN)];
        let yaml = sidecar_yaml(service, app_addr, listen, destinations);
        let stem = format!("sidecar-{service}-{suffix}");
        let config = dir.join(format!("{stem}.yaml"));
        std::fs::write(&config, yaml).map_err(|e| Error::io(config.display(), e))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", namespace, "setpriv"])
            .arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .arg("--clear-groups")
            .arg(&sidecar);
        sidecar_args(&mut command, &config, Runtime::Default);
        let mut proc = Proc::spawn(&stem, command, &dir.join(format!("{stem}.log")))?;
        proc.wait_ready_in(Some(namespace), local(ADMIN), "/ready", READY_LIMIT)
            .await?;
        proxies.push((role, proc));
    }
    let running = Running {
        entry,
        proxies,
        namespaced: Some(Namespaced {
            client_namespace: Arc::from(a),
            authority,
            _app: app,
            _hosts: hosts,
        }),
        edge: None,
    };
    load::probe(&running.dial(), READY_LIMIT).await?;
    Ok(running)
}

/// Lets the sidecars' user read the run's directory and its private keys (the harness made
/// them as root, the keys mode 0600).
fn share_with_proxy_user(dir: &Path) -> Result<(), Error> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| Error::io(dir.display(), e))?;
    for service in [CLIENT, SERVER] {
        let key = dir.join(format!("{service}-key.pem"));
        std::os::unix::fs::chown(&key, Some(PROXY_UID), Some(PROXY_UID))
            .map_err(|e| Error::io(key.display(), e))?;
    }
    Ok(())
}

/// `sidecar redirect ARGS` inside `namespace`.
async fn redirect(sidecar: &Path, namespace: &str, args: &[&str]) -> Result<(), Error> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(sidecar)
        .arg("redirect")
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Spawn {
            name: "sidecar redirect".to_owned(),
            source: e,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Redirect {
            namespace: namespace.to_owned(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
