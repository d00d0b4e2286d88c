//! What `meshctl up` is about to run: ports, sidecar and gateway bootstrap files, the Prometheus scrape
//! configuration, and `mesh.json`, the record of a running demo that `loadgen` and `fault` read.
//!
//! Everything here is plain data and text, so it is tested without starting a process.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{DemoConfig, ServiceSpec, TracingSpec};

/// The control plane's listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPlaneAddrs {
    /// gRPC API, where sidecars connect.
    pub api: SocketAddr,
    /// Admin HTTP (`/ready`, `/status`, `/metrics`).
    pub admin: SocketAddr,
}

/// One instance of a service: its app and its sidecar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service.
    pub service: String,
    /// 1-based number among the service's instances.
    pub index: u16,
    /// `<service>-<index>`, the app's `--instance` name.
    pub name: String,
    /// The version its sidecar registers (`v1` unless `versions` in demo.yaml says otherwise).
    #[serde(default = "first_version")]
    pub version: String,
    /// The app's own listener.
    pub app: SocketAddr,
    /// The sidecar's outbound listener, where the app sends its calls.
    pub outbound: SocketAddr,
    /// The sidecar's inbound listener (mTLS, from peer sidecars).
    pub inbound: SocketAddr,
    /// The sidecar's admin listener (`/ready`, `/metrics`).
    pub admin: SocketAddr,
    /// The app's process id, once started.
    #[serde(default)]
    pub app_pid: Option<u32>,
    /// The sidecar's process id, once started.
    #[serde(default)]
    pub sidecar_pid: Option<u32>,
    /// Its network namespace (`meshctl up --transparent`); `None`: the host's, on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its sidecar's user in that namespace: what meshctl acts as to reach the app past the
    /// redirect (`meshctl fault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_uid: Option<u32>,
}

impl Instance {
    /// The app's base URL.
    pub fn app_url(&self) -> String {
        format!("http://{}", self.app)
    }

    /// The sidecar's admin base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The sidecar's metrics URL.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin)
    }
}

/// The gateway in front of the storefront: the sidecar binary with no app, whose HTTP listener
/// is where users and `meshctl loadgen` enter the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    /// Its HTTP listener, routing every host to the storefront.
    pub http: SocketAddr,
    /// Its outbound listener (unused by any app; the gateway hands its requests to it).
    pub outbound: SocketAddr,
    /// Its admin listener (`/ready`, `/metrics`).
    pub admin: SocketAddr,
    /// Its process id, once started.
    #[serde(default)]
    pub pid: Option<u32>,
}

impl Gateway {
    /// The service name it runs as, declared in the mesh configuration.
    pub const SERVICE: &'static str = "gateway";

    /// The URL users open.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Its admin base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

/// Ports for the control plane, every instance and the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The control plane's listeners.
    pub control_plane: ControlPlaneAddrs,
    /// Every instance, callers first, in start order.
    pub instances: Vec<Instance>,
    /// The gateway's listeners.
    pub gateway: Gateway,
    /// Ports from `ports_from` on that were in use and skipped, so every later port moved up:
    /// `meshctl up` says so, since the usual addresses (the README's) are then not the ones in
    /// use.
    pub skipped: Vec<u16>,
}

impl Plan {
    /// A warning naming the skipped ports and how to choose others; `None` when none was.
    pub fn skipped_warning(&self) -> Option<String> {
        skipped_warning(&self.skipped)
    }
}

/// See [`Plan::skipped_warning`].
pub(super) fn skipped_warning(skipped: &[u16]) -> Option<String> {
    let first = skipped.first()?;
    let list: Vec<String> = skipped.iter().map(u16::to_string).collect();
    let (s, were) = if list.len() == 1 {
        ("", "was")
    } else {
        ("s", "were")
    };
    Some(format!(
        "port{s} {} {were} in use, so every port from {first} on moved up and this run's \
         addresses differ from the usual ones (see the table); to choose the ports, stop what \
         uses them or set ports_from in the demo file (--config)",
        list.join(", ")
    ))
}

/// Why ports could not be handed out.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A port named in the file is taken.
    #[error("{field} {addr} is in use (is a demo mesh already running? see `ss -ltnp`)")]
    InUse {
        /// The field of `demo.yaml`.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Not enough free ports above `ports_from`.
    #[error("not enough free ports from {from} up to 65535 (need {needed})")]
    Exhausted {
        /// `ports_from`.
        from: u16,
        /// How many were needed.
        needed: usize,
    },
}

/// Hands out ports from `config.ports_from` upwards, skipping those `is_free` rejects: four
/// per instance (app, outbound, inbound, admin), after the control plane's two when the file
/// does not name them, then the gateway's (HTTP unless named, outbound, admin: it has no
/// inbound listener), last so that adding it moved no instance's port.
pub fn allocate(
    config: &DemoConfig,
    mut is_free: impl FnMut(u16) -> bool,
) -> Result<Plan, PortError> {
    let named = [
        ("control_plane.api", config.control_plane.api),
        ("control_plane.admin", config.control_plane.admin),
        ("gateway.listen", config.gateway.listen),
    ];
    let fixed: Vec<u16> = named
        .iter()
        .filter_map(|(_, addr)| addr.map(|a| a.port()))
        .collect();
    for (field, addr) in named {
        if let Some(addr) = addr
            && !is_free(addr.port())
        {
            return Err(PortError::InUse { field, addr });
        }
    }
    let needed = config.instance_count() * 4 + 2 + 3;
    let mut next = u32::from(config.ports_from);
    let mut skipped = Vec::new();
    let mut take = || -> Result<SocketAddr, PortError> {
        while next <= u32::from(u16::MAX) {
            let port = u16::try_from(next).map_err(|_| PortError::Exhausted {
                from: config.ports_from,
                needed,
            })?;
            next += 1;
            if fixed.contains(&port) {
                continue;
            }
            if is_free(port) {
                return Ok(loopback(port));
            }
            skipped.push(port);
        }
        Err(PortError::Exhausted {
            from: config.ports_from,
            needed,
        })
    };
    let api = match config.control_plane.api {
        Some(addr) => addr,
        None => take()?,
    };
    let admin = match config.control_plane.admin {
        Some(addr) => addr,
        None => take()?,
    };
    let mut instances = Vec::new();
    for service in &config.services {
        let versions = instance_versions(service);
        for (index, version) in (1..=service.instances).zip(versions) {
            instances.push(Instance {
                service: service.name.clone(),
                index,
                name: format!("{}-{index}", service.name),
                version,
                app: take()?,
                outbound: take()?,
                inbound: take()?,
                admin: take()?,
                app_pid: None,
                sidecar_pid: None,
                namespace: None,
                proxy_uid: None,
            });
        }
    }
    let http = match config.gateway.listen {
        Some(addr) => addr,
        None => take()?,
    };
    let gateway = Gateway {
        http,
        outbound: take()?,
        admin: take()?,
        pid: None,
    };
    Ok(Plan {
        control_plane: ControlPlaneAddrs { api, admin },
        instances,
        gateway,
        skipped,
    })
}

fn first_version() -> String {
    "v1".to_owned()
}

/// The version of each of `service`'s instances, in order: `v1` first, then each version of
/// `versions` for as many instances as it names.
fn instance_versions(service: &ServiceSpec) -> Vec<String> {
    let named: Vec<String> = service
        .versions
        .iter()
        .flat_map(|(version, &count)| std::iter::repeat_n(version.clone(), usize::from(count)))
        .collect();
    let first = usize::from(service.instances).saturating_sub(named.len());
    std::iter::repeat_n(first_version(), first)
        .chain(named)
        .collect()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Whether nothing listens on 127.0.0.1:`port` (binding it is the only reliable test).
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(loopback(port)).is_ok()
}

/// The layout of a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// The directory itself (absolute).
    pub root: PathBuf,
}

impl RunDir {
    /// The control plane's state (CA, `ca.pem`, `tokens/`).
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    /// The apps' SQLite files.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// One log file per process.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The sidecars' bootstrap files.
    pub fn sidecars(&self) -> PathBuf {
        self.root.join("sidecars")
    }
    /// The Prometheus scrape configuration.
    pub fn prometheus(&self) -> PathBuf {
        self.root.join("prometheus.yml")
    }
    /// The record of the running mesh.
    pub fn manifest(&self) -> PathBuf {
        self.root.join(MANIFEST)
    }
    /// The log file of the process `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    /// The bootstrap file of an instance's sidecar.
    pub fn bootstrap(&self, instance: &Instance) -> PathBuf {
        self.sidecars().join(format!("{}.yaml", instance.name))
    }
    /// The gateway's bootstrap file.
    pub fn gateway_bootstrap(&self) -> PathBuf {
        self.sidecars().join(format!("{}.yaml", Gateway::SERVICE))
    }
}

/// The file name of the record of a running mesh, in its run directory.
pub const MANIFEST: &str = "mesh.json";

/// YAML double-quoted scalar: JSON string syntax is a subset of it, so paths with any
/// character survive.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The bootstrap file of `instance`'s sidecar: its ports, the control plane that certifies and
/// configures it, where its spans go, and its probe of the app (`/health` every second), so an
/// instance whose app died leaves its callers' endpoints within seconds.
pub fn sidecar_bootstrap(
    instance: &Instance,
    trust_domain: &str,
    control_plane: &ControlPlaneAddrs,
    state_dir: &Path,
    tracing: Option<&TracingSpec>,
) -> String {
    let mut out = format!(
        "# Written by `meshctl up` for {name}; rewritten on every run.\n\
         service: {service}\n\
         instance: {name}\n\
         trust_domain: {trust_domain}\n\
         app: {app}\n\
         version: {version}\n\
         listen: {{ outbound: {outbound}, inbound: {inbound}, admin: {admin} }}\n\
         control_plane:\n  \
           address: {cp}\n  \
           trust_anchor: {anchor}\n  \
           token_file: {token}\n\
         access_log: false\n\
         app_health: {{ path: /health, interval: 1s }}\n",
        name = instance.name,
        service = instance.service,
        version = instance.version,
        app = instance.app,
        outbound = instance.outbound,
        inbound = instance.inbound,
        admin = instance.admin,
        cp = control_plane.api,
        anchor = quoted(&state_dir.join("ca.pem").to_string_lossy()),
        token = quoted(
            &state_dir
                .join("tokens")
                .join(&instance.service)
                .to_string_lossy()
        ),
    );
    if let Some(tracing) = tracing {
        let _ = write!(
            out,
            "tracing:\n  otlp_endpoint: {}\n  protocol: {}\n  service_name: {}\n",
            quoted(&tracing.otlp_endpoint),
            tracing.protocol,
            instance.service,
        );
    }
    out
}

/// The gateway's bootstrap file: one HTTP listener routing every host to the storefront, its
/// certificate and destinations from the control plane at `control_plane_api` (on the host's
/// side of the bridge with `--transparent`, where the gateway runs too), its spans where the
/// sidecars' go, so an order's trace starts at the gateway.
pub fn gateway_bootstrap(
    gateway: &Gateway,
    trust_domain: &str,
    control_plane_api: SocketAddr,
    state_dir: &Path,
    tracing: Option<&TracingSpec>,
) -> String {
    let mut out = format!(
        "# Written by `meshctl up` for the gateway; rewritten on every run.\n\
         service: {service}\n\
         instance: {service}\n\
         trust_domain: {trust_domain}\n\
         listen: {{ outbound: \"{outbound}\", admin: \"{admin}\" }}\n\
         control_plane:\n  \
           address: \"{cp}\"\n  \
           trust_anchor: {anchor}\n  \
           token_file: {token}\n\
         access_log: false\n\
         gateway:\n  \
           listeners: [{{ name: web, address: \"{http}\", protocol: HTTP }}]\n  \
           routes:\n    \
             - name: shop\n      \
               parentRefs: [{{ name: web }}]\n      \
               rules: [{{ backendRefs: [{{ name: storefront }}] }}]   # every host, every path\n",
        service = Gateway::SERVICE,
        outbound = gateway.outbound,
        admin = gateway.admin,
        http = gateway.http,
        cp = control_plane_api,
        anchor = quoted(&state_dir.join("ca.pem").to_string_lossy()),
        token = quoted(
            &state_dir
                .join("tokens")
                .join(Gateway::SERVICE)
                .to_string_lossy()
        ),
    );
    if let Some(tracing) = tracing {
        let _ = write!(
            out,
            "tracing:\n  otlp_endpoint: {}\n  protocol: {}\n  service_name: {}\n",
            quoted(&tracing.otlp_endpoint),
            tracing.protocol,
            Gateway::SERVICE,
        );
    }
    out
}

/// A Prometheus configuration with one job scraping the control plane's and every sidecar's
/// admin `/metrics`, labelled by service and instance.
pub fn prometheus_config(
    control_plane: &ControlPlaneAddrs,
    instances: &[Instance],
    gateway: &Gateway,
) -> String {
    let mut out = String::from(
        "# Written by `meshctl up`: prometheus --config.file=<this file>\n\
         global:\n  \
           scrape_interval: 5s\n\
         scrape_configs:\n  \
           - job_name: mesh\n    \
             metrics_path: /metrics\n    \
             static_configs:\n",
    );
    let mut target = |addr: SocketAddr, service: &str, instance: &str| {
        let _ = write!(
            out,
            "      - targets: [{}]\n        labels: {{ service: {}, instance: {} }}\n",
            quoted(&addr.to_string()),
            quoted(service),
            quoted(instance),
        );
    };
    target(control_plane.admin, "control-plane", "control-plane");
    for i in instances {
        target(i.admin, &i.service, &i.name);
    }
    target(gateway.admin, Gateway::SERVICE, Gateway::SERVICE);
    out
}

/// The record of a running demo mesh, `<run_dir>/mesh.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The `meshctl up` (or test) process that runs it.
    pub pid: u32,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The storefront app's own URL (with `--transparent`, reachable only through the mesh).
    pub storefront: Option<String>,
    /// The gateway in front of the storefront: where users and `meshctl loadgen` go.
    #[serde(default)]
    pub gateway: Option<Gateway>,
    /// The control plane.
    pub control_plane: ControlPlaneAddrs,
    /// The control plane's process id.
    pub control_plane_pid: Option<u32>,
    /// Where sidecars export spans.
    pub otlp_endpoint: Option<String>,
    /// The Jaeger started beside the mesh (its UI and query API), if any.
    #[serde(default)]
    pub jaeger_url: Option<String>,
    /// Every instance.
    pub instances: Vec<Instance>,
}

/// Why `mesh.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// No file: the mesh is not running from that directory.
    #[error(
        "no demo mesh found: {} does not exist (start one with `meshctl up`, or pass --run-dir)",
        path.display()
    )]
    Missing {
        /// The file looked for.
        path: PathBuf,
    },
    /// Unreadable.
    #[error("cannot read {}: {message}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl Manifest {
    /// Reads `<run_dir>/mesh.json`.
    pub fn load(run_dir: &Path) -> Result<Self, ManifestError> {
        let path = run_dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::Missing { path });
            }
            Err(e) => {
                return Err(ManifestError::Unreadable {
                    path,
                    message: e.to_string(),
                });
            }
        };
        serde_json::from_slice(&text).map_err(|e| ManifestError::Unreadable {
            path,
            message: e.to_string(),
        })
    }

    /// The instances of `service`.
    pub fn instances_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Instance> {
        self.instances.iter().filter(move |i| i.service == service)
    }

    /// Where users enter the demo: the gateway's URL, or the storefront's for a mesh recorded
    /// without one.
    pub fn entry_url(&self) -> Option<String> {
        self.gateway
            .as_ref()
            .map(Gateway::url)
            .or_else(|| self.storefront.clone())
    }
}
