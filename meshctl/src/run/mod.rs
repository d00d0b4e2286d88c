//! `meshctl run`: any local process in the mesh, the way an init container and a sidecar put a
//! pod's app there.
//!
//! In order: checks (root, `ip`/`nft`/`setpriv`, the control plane answers and declares the
//! service, the range overlaps no route of the host); a namespace on the shared bridge with
//! its hosts file ([`crate::netns`]); the sidecar's files in the instance's directory, owned by
//! the proxy's user; `sidecar redirect` in the namespace; the sidecar as the proxy's user, until
//! its `/ready`; then the command as the app's user, with meshctl's standard streams. When the
//! command exits, or on SIGINT, SIGTERM or SIGHUP, the command and then the sidecar are stopped
//! and everything made is removed, in reverse order.
//!
//! - [`checks`]: what is checked before anything changes.
//! - [`bootstrap`]: the sidecar's bootstrap file.
//! - [`child`]: processes in the namespace, as a user.

pub mod bootstrap;
pub mod checks;
pub mod child;

use std::ffi::OsString;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http::Method;
use mesh_control_plane::admin_client;
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::signal::unix::{self as unix_signal, SignalKind};

use self::bootstrap::{ADMIN_PORT, SidecarSpec};
use self::checks::{CheckError, MeshView};
use crate::netns::bridge::{Bridge, BridgeError};
use crate::netns::cidr::Ipv4Net;
use crate::netns::teardown::{Teardown, Undo};
use crate::netns::{Instance, NetnsError, hosts};

/// The control plane's API port when `--control-plane` is not given.
pub const DEFAULT_API_PORT: u16 = 15010;
/// The proxy's UID when there is no `mesh-proxy` user and `--proxy-uid` is not given.
pub const DEFAULT_PROXY_UID: u32 = crate::up::transparent::DEFAULT_PROXY_UID;
/// `nobody`: the app's UID when neither `--uid` nor `SUDO_UID` is given.
pub const NOBODY: u32 = 65534;
/// How often the hosts file is refreshed from the control plane.
const HOSTS_REFRESH: Duration = Duration::from_secs(2);
/// How long the command and then the sidecar get to exit after being asked.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// What `meshctl run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `--service`.
    pub service: String,
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// `--app-port`: where the command listens, on 127.0.0.1 of its namespace.
    pub app_port: Option<u16>,
    /// `--uid`: the command's user.
    pub uid: Option<u32>,
    /// `--proxy-uid`: the sidecar's user.
    pub proxy_uid: Option<u32>,
    /// `--instance`: the instance's name (default `<service>-<pid>`).
    pub instance: Option<String>,
    /// `--admin`: the control plane's admin endpoint, as reached from the host.
    pub admin: SocketAddr,
    /// `--control-plane`: its API as reached from the namespace.
    pub control_plane: Option<SocketAddr>,
    /// `--state-dir`: the control plane's state directory (trust anchor, join tokens).
    pub state_dir: PathBuf,
    /// `--network`.
    pub network: Ipv4Net,
    /// `--bridge`.
    pub bridge: String,
    /// Where the bridge's records go (`/run/mesh`).
    pub state_root: PathBuf,
    /// The `sidecar` binary.
    pub sidecar_bin: PathBuf,
    /// How long the sidecar may take to be ready.
    pub ready_timeout: Duration,
}

/// Why `meshctl run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A check before anything changed.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// The namespace or the bridge.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// `--control-plane` on loopback.
    #[error(
        "--control-plane {0}: a loopback address is not reachable from the instance's namespace; \
         start the control plane with --listen 0.0.0.0:{port} (or on the bridge's address) and \
         leave --control-plane out",
        port = .0.port()
    )]
    LoopbackControlPlane(SocketAddr),
    /// The control plane's API does not answer on the address the namespace dials.
    #[error(
        "the control plane's API is not reachable from the namespace at {addr} ({reason}): if \
         it listens on 127.0.0.1 only, start it with --listen 0.0.0.0:{port} or --listen \
         {ip}:{port} (the bridge's address), or pass --control-plane",
        port = .addr.port(), ip = .addr.ip()
    )]
    ControlPlaneUnreachable {
        /// The address dialled.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No sidecar binary.
    #[error("the sidecar binary {} does not exist: build it (cargo build) or pass --bin-dir", .0.display())]
    NoSidecar(PathBuf),
    /// A file or a process could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// `sidecar redirect` failed.
    #[error("`sidecar redirect` in {namespace} failed: {message}")]
    Redirect {
        /// The namespace.
        namespace: String,
        /// What it said.
        message: String,
    },
    /// The sidecar exited before it was ready.
    #[error("the sidecar exited before it was ready ({status}); its log ends:\n{tail}")]
    SidecarExited {
        /// How it exited.
        status: String,
        /// The end of its log.
        tail: String,
    },
    /// The sidecar was not ready in time.
    #[error("the sidecar was not ready at {url} within {after:?}; its log ends:\n{tail}")]
    NotReady {
        /// Its `/ready`.
        url: String,
        /// `--ready-timeout`.
        after: Duration,
        /// The end of its log.
        tail: String,
    },
    /// A signal came during set-up.
    #[error("{0} during set-up; everything made was removed")]
    Interrupted(Signal),
}

impl RunError {
    /// 2 for what the user must fix (the input, the machine, the control plane), 128 + the
    /// signal when interrupted, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Check(_)
            | Self::LoopbackControlPlane(_)
            | Self::ControlPlaneUnreachable { .. }
            | Self::NoSidecar(_) => 2,
            Self::Netns(NetnsError::Bridge(
                BridgeError::Name(_)
                | BridgeError::TooSmall(_)
                | BridgeError::Overlap { .. }
                | BridgeError::Mismatch { .. }
                | BridgeError::Full(_),
            )) => 2,
            Self::Interrupted(signal) => 128u8.saturating_add(*signal as u8),
            _ => 1,
        }
    }
}

/// Runs `meshctl run` to the end on this thread and returns the exit code: the command's, or
/// [`RunError::exit_code`] after printing the error.
pub fn run_to_exit(options: RunOptions) -> u8 {
    // Current-thread: every child is spawned by this thread, which lives as long as meshctl,
    // so their parent-death signal comes only when meshctl ends.
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RunError::Io {
            what: "start the runtime".to_owned(),
            source,
        })
        .and_then(|runtime| runtime.block_on(run(options)));
    match result {
        Ok(code) => u8::try_from(code.clamp(0, 255)).unwrap_or(1),
        Err(e) => {
            eprintln!("meshctl run: {e}");
            e.exit_code()
        }
    }
}

/// `meshctl run`: returns the command's exit code (128 + signal when a signal ended it).
pub async fn run(options: RunOptions) -> Result<i32, RunError> {
    checks::root()?;
    checks::tools()?;
    if !options.sidecar_bin.is_file() {
        return Err(RunError::NoSidecar(options.sidecar_bin.clone()));
    }
    if let Some(addr) = options.control_plane
        && addr.ip().is_loopback()
    {
        return Err(RunError::LoopbackControlPlane(addr));
    }
    let bridge = Bridge::new(&options.bridge, options.network, options.state_root.clone())
        .map_err(NetnsError::from)?;
    let view = checks::mesh_view(options.admin).await?;
    view.require(&options.service)?;
    let token = checks::state_file(
        &options.state_dir,
        &Path::new("tokens").join(&options.service),
    )?;
    let anchor = checks::state_file(&options.state_dir, Path::new("ca.pem"))?;
    bridge.check_routes().map_err(NetnsError::from)?;
    let mut stop = Stop::install()?;

    let mut teardown = Teardown::default();
    let result = session(
        &options,
        &bridge,
        &view,
        Credentials { token, anchor },
        &mut teardown,
        &mut stop,
    )
    .await;
    for failure in teardown.run() {
        eprintln!("meshctl run: clean-up: {failure}");
    }
    result
}

/// The join token and trust anchor read from the control plane's state directory.
struct Credentials {
    token: Vec<u8>,
    anchor: Vec<u8>,
}

/// SIGINT, SIGTERM and SIGHUP, installed before anything is made.
struct Stop {
    interrupt: unix_signal::Signal,
    terminate: unix_signal::Signal,
    hangup: unix_signal::Signal,
}

impl Stop {
    fn install() -> Result<Self, RunError> {
        let install = |kind| {
            unix_signal::signal(kind).map_err(|source| RunError::Io {
                what: "install signal handlers".to_owned(),
                source,
            })
        };
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.terminate.recv() => Signal::SIGTERM,
            _ = self.hangup.recv() => Signal::SIGHUP,
        }
    }

    /// A signal that came since the last look, without waiting.
    async fn pending(&mut self) -> Result<(), RunError> {
        tokio::select! {
            biased;
            signal = self.recv() => Err(RunError::Interrupted(signal)),
            () = std::future::ready(()) => Ok(()),
        }
    }
}

/// The users the sidecar and the command run as: `(uid, gid)` each.
struct Users {
    proxy: (u32, u32),
    app: (u32, u32),
}

fn users(options: &RunOptions) -> Users {
    use nix::unistd::{Uid, User};
    let gid_of = |uid: u32| {
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or(uid, |u| u.gid.as_raw())
    };
    let proxy = match options.proxy_uid {
        Some(uid) => (uid, gid_of(uid)),
        None => match User::from_name("mesh-proxy").ok().flatten() {
            Some(user) => (user.uid.as_raw(), user.gid.as_raw()),
            None => (DEFAULT_PROXY_UID, DEFAULT_PROXY_UID),
        },
    };
    let sudo = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let app = match (options.uid, sudo("SUDO_UID")) {
        (Some(uid), _) => (uid, gid_of(uid)),
        (None, Some(uid)) => (uid, sudo("SUDO_GID").unwrap_or_else(|| gid_of(uid))),
        (None, None) => (NOBODY, NOBODY),
    };
    Users { proxy, app }
}

async fn session(
    options: &RunOptions,
    bridge: &Bridge,
    view: &MeshView,
    credentials: Credentials,
    teardown: &mut Teardown,
    stop: &mut Stop,
) -> Result<i32, RunError> {
    let users = users(options);
    let names = Instance::names(&options.service, std::process::id());
    let instance = Instance::create(bridge, names, &view.addresses(), teardown)?;
    stop.pending().await?;

    let control_plane = match options.control_plane {
        Some(addr) if !addr.ip().is_unspecified() => addr,
        given => SocketAddr::V4(SocketAddrV4::new(
            instance.gateway,
            given.map_or(DEFAULT_API_PORT, |a| a.port()),
        )),
    };
    // The host reaches the bridge's address exactly as the namespace does: whatever listens
    // only on loopback refuses both.
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(control_plane),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(RunError::ControlPlaneUnreachable {
                addr: control_plane,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(RunError::ControlPlaneUnreachable {
                addr: control_plane,
                reason: "no answer within 3s".to_owned(),
            });
        }
    }

    let instance_name = options
        .instance
        .clone()
        .unwrap_or_else(|| format!("{}-{}", options.service, std::process::id()));
    let config = write_sidecar_files(
        options,
        &instance,
        &instance_name,
        &view.trust_domain,
        control_plane,
        &credentials,
        users.proxy,
    )?;

    redirect(options, &instance, users.proxy.0)?;
    teardown.push(Undo::Redirect {
        namespace: instance.namespace.clone(),
        sidecar: options.sidecar_bin.clone(),
    });

    let log_path = instance.dir.join("sidecar.log");
    let log = std::fs::File::create(&log_path).map_err(|source| RunError::Io {
        what: format!("create {}", log_path.display()),
        source,
    })?;
    let log_err = log.try_clone().map_err(|source| RunError::Io {
        what: format!("open {}", log_path.display()),
        source,
    })?;
    let mut sidecar = child::in_namespace(
        &instance.namespace,
        users.proxy.0,
        users.proxy.1,
        &options.sidecar_bin,
    )
    .arg("--config")
    .arg(&config)
    .args(["--workers", "1"])
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log_err)
    // Its own process group: a Ctrl-C in the terminal reaches the command and meshctl, which
    // stops the sidecar after the command.
    .process_group(0)
    .spawn()
    .map_err(|source| RunError::Io {
        what: "start the sidecar".to_owned(),
        source,
    })?;
    let admin = SocketAddr::V4(SocketAddrV4::new(instance.address, ADMIN_PORT));
    eprintln!(
        "meshctl run: {instance_name} in network namespace {ns} at {address} (bridge {bridge}); \
         sidecar admin http://{admin}",
        ns = instance.namespace,
        address = instance.address,
        bridge = bridge.name,
    );
    if let Err(e) = wait_ready(admin, &mut sidecar, options.ready_timeout, &log_path, stop).await {
        child::stop(&mut sidecar, Signal::SIGTERM, Duration::from_secs(2)).await;
        return Err(e);
    }

    let refresher = tokio::spawn(refresh_hosts(
        options.admin,
        instance.namespace.clone(),
        instance.hosts_file.clone(),
        hosts::render(&instance.namespace, &view.addresses()),
    ));
    let code = run_command(options, &instance, users.app, &mut sidecar, stop).await;
    refresher.abort();
    if child::stop(&mut sidecar, Signal::SIGTERM, STOP_PATIENCE)
        .await
        .is_none()
    {
        eprintln!("meshctl run: the sidecar did not exit; it was killed");
    }
    code
}

/// Writes the trust anchor, the join token (0600) and the bootstrap file into the instance's
/// directory, all owned by the proxy's user; returns the bootstrap file.
fn write_sidecar_files(
    options: &RunOptions,
    instance: &Instance,
    name: &str,
    trust_domain: &str,
    control_plane: SocketAddr,
    credentials: &Credentials,
    (uid, gid): (u32, u32),
) -> Result<PathBuf, RunError> {
    let anchor = instance.dir.join("ca.pem");
    let token = instance.dir.join("token");
    let config = instance.dir.join("sidecar.yaml");
    let text = bootstrap::render(&SidecarSpec {
        service: &options.service,
        instance: name,
        trust_domain,
        address: instance.address,
        app_port: options.app_port,
        control_plane,
        trust_anchor: &anchor,
        token_file: &token,
    });
    for (path, bytes, mode) in [
        (&anchor, credentials.anchor.as_slice(), 0o644),
        (&token, credentials.token.as_slice(), 0o600),
        (&config, text.as_bytes(), 0o644),
    ] {
        let io = |source| RunError::Io {
            what: format!("write {}", path.display()),
            source,
        };
        std::fs::write(path, bytes).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io)?;
    }
    let io = |source| RunError::Io {
        what: format!("hand {} to the proxy's user", instance.dir.display()),
        source,
    };
    std::os::unix::fs::chown(&instance.dir, Some(uid), Some(gid)).map_err(io)?;
    std::fs::set_permissions(&instance.dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    Ok(config)
}

/// `sidecar redirect` in the namespace: the app's TCP to the sidecar, and incoming TCP for the
/// app's port (every port without `--app-port`) to the inbound listener.
fn redirect(options: &RunOptions, instance: &Instance, proxy_uid: u32) -> Result<(), RunError> {
    let mut command = std::process::Command::new("ip");
    command
        .args(["netns", "exec", &instance.namespace])
        .arg(&options.sidecar_bin)
        .args(["redirect", "--proxy-uid", &proxy_uid.to_string()]);
    if let Some(port) = options.app_port {
        command.args(["--inbound-ports", &port.to_string()]);
    }
    let out = command.output().map_err(|source| RunError::Io {
        what: "run sidecar redirect".to_owned(),
        source,
    })?;
    if !out.status.success() {
        return Err(RunError::Redirect {
            namespace: instance.namespace.clone(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Polls the sidecar's `/ready` until it answers 200, failing if the sidecar exits, the time
/// runs out, or a signal comes.
async fn wait_ready(
    admin: SocketAddr,
    sidecar: &mut Child,
    timeout: Duration,
    log: &Path,
    stop: &mut Stop,
) -> Result<(), RunError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = sidecar.try_wait() {
            return Err(RunError::SidecarExited {
                status: status.to_string(),
                tail: crate::up::log_tail(log, 20),
            });
        }
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            admin_client::request(admin, Method::GET, "/ready"),
        )
        .await;
        if matches!(answer, Ok(Ok((status, _))) if status == http::StatusCode::OK) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RunError::NotReady {
                url: format!("http://{admin}/ready"),
                after: timeout,
                tail: crate::up::log_tail(log, 20),
            });
        }
        tokio::select! {
            signal = stop.recv() => return Err(RunError::Interrupted(signal)),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Runs the command with meshctl's standard streams until it exits or a signal comes (passed
/// on to it); returns its exit code.
async fn run_command(
    options: &RunOptions,
    instance: &Instance,
    (uid, gid): (u32, u32),
    sidecar: &mut Child,
    stop: &mut Stop,
) -> Result<i32, RunError> {
    let Some((program, args)) = options.command.split_first() else {
        return Ok(0);
    };
    let mut command = child::in_namespace(&instance.namespace, uid, gid, program)
        .args(args)
        .spawn()
        .map_err(|source| RunError::Io {
            what: format!("start {}", program.to_string_lossy()),
            source,
        })?;
    let mut sidecar_running = true;
    loop {
        tokio::select! {
            status = command.wait() => {
                return Ok(status.map_or(1, child::exit_code));
            }
            signal = stop.recv() => {
                let status = child::stop(&mut command, signal, STOP_PATIENCE).await;
                return Ok(status.map_or(128 + signal as i32, child::exit_code));
            }
            status = sidecar.wait(), if sidecar_running => {
                sidecar_running = false;
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                eprintln!(
                    "meshctl run: the sidecar exited ({status}); {} is cut off from the mesh",
                    options.service
                );
            }
        }
    }
}

/// Rewrites the hosts file whenever the control plane's services or virtual addresses change,
/// so services declared after the start resolve too. Runs until aborted.
async fn refresh_hosts(admin: SocketAddr, namespace: String, path: PathBuf, mut last: String) {
    loop {
        tokio::time::sleep(HOSTS_REFRESH).await;
        let Ok(services) = checks::services(admin).await else {
            continue;
        };
        let view = MeshView {
            trust_domain: String::new(),
            services,
        };
        let text = hosts::render(&namespace, &view.addresses());
        if text != last && hosts::write_in_place(&path, &text).is_ok() {
            last = text;
        }
    }
}
