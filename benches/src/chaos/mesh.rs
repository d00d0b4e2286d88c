//! The mesh under chaos, as real processes in one work directory: the control plane, the
//! caller's (`orders`) sidecar, and three `inventory` instances, each an echo app behind its
//! own sidecar. Every sidecar gets its certificate from the control plane's CA and its
//! destinations from its snapshots. Each piece can be killed (SIGKILL) and started again on
//! the same ports and files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_control_plane::admin_client;
use mesh_testkit::free_port;

use super::error::Error;
use crate::datapath::procs::Proc;

/// The service whose sidecar the load goes through.
pub(crate) const CALLER: &str = "orders";
/// The service the load calls, with [`INSTANCES`] instances.
pub(crate) const DESTINATION: &str = "inventory";
/// Instances of the destination.
pub(crate) const INSTANCES: usize = 3;
/// The trust domain.
const TRUST_DOMAIN: &str = "mesh.local";
/// How long a process gets to become ready after a start.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// Heartbeats every second, and an instance silent for three leaves every snapshot: a killed
/// sidecar leaves within seconds, and root rotation is not held up long by one that is gone.
const MESH_YAML: &str = "trust_domain: mesh.local\nnamespace: default\ncertificate_lifetime: 1h\n\
                         registry: { heartbeat_interval: 1s, lease: 3s }\n";

/// The binaries the mesh runs, all from one build profile.
pub(crate) const BINARIES: [(&str, &str); 3] = [
    ("mesh-sidecar", "sidecar"),
    ("mesh-control-plane", "control-plane"),
    ("mesh-testkit", "echo-app"),
];

/// `inventory.yaml` after policy edit `edit` (0 is the file the mesh starts with), retrying on
/// `retry_on`. Every edit sets a timeout of its own (2 s plus `edit` ms), so the last one can
/// be recognised in a sidecar's snapshot; odd edits allow four tries instead of three, and
/// every third adds a route for reads with a timeout of its own.
pub(crate) fn destination_policy(edit: u32, retry_on: &[String]) -> String {
    let attempts = if edit % 2 == 1 { 4 } else { 3 };
    let mut yaml = format!(
        "name: {DESTINATION}\ncalls: []\ntimeout: {timeout}ms\n\
         retries:\n  attempts: {attempts}\n  per_try_timeout: 500ms\n  \
         retry_on: [{retry_on}]\n  \
         backoff: {{ base: 25ms, max: 250ms }}\n\
         circuit_breaker: {{ consecutive_failures: 3, base_ejection_time: 5s }}\n\
         load_balancer: p2c-ewma\n\
         authorization: {{ default: deny, allow: [{CALLER}] }}\n",
        timeout = edit_timeout_ms(edit),
        retry_on = retry_on.join(", "),
    );
    if edit % 3 == 2 {
        yaml.push_str(&format!(
            "routes:\n  - name: reads\n    matches: [{{ path: {{ type: PathPrefix, value: / }}, method: GET }}]\n    \
             timeout: {}ms\n",
            edit_timeout_ms(edit) + 500
        ));
    }
    yaml
}

/// The destination timeout that edit `edit` sets.
pub(crate) fn edit_timeout_ms(edit: u32) -> u64 {
    2_000 + u64::from(edit)
}

/// Listen addresses of one sidecar.
#[derive(Clone, Copy)]
struct Ports {
    outbound: SocketAddr,
    inbound: SocketAddr,
    admin: SocketAddr,
}

impl Ports {
    fn pick() -> Self {
        Self {
            outbound: free_port(),
            inbound: free_port(),
            admin: free_port(),
        }
    }
}

/// One instance of the destination: its app and its sidecar, each running or killed.
struct Instance {
    name: String,
    app_addr: SocketAddr,
    ports: Ports,
    config: PathBuf,
    app: Option<Proc>,
    sidecar: Option<Proc>,
}

/// The running mesh. Dropping it kills every process; a temporary work directory goes too.
pub(crate) struct Mesh {
    dir: WorkDir,
    bins: PathBuf,
    api: SocketAddr,
    cp_admin: SocketAddr,
    control_plane: Option<Proc>,
    caller: Proc,
    caller_ports: Ports,
    instances: Vec<Instance>,
    /// Starts so far, for a fresh log file per start.
    starts: u32,
}

/// Where the mesh's files live: removed at the end unless the user named the directory.
enum WorkDir {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// YAML double-quoted scalar (JSON strings are a subset), so any path survives.
fn quoted(path: &Path) -> String {
    serde_json::Value::from(path.to_string_lossy()).to_string()
}

impl Mesh {
    /// Writes the configuration, starts the control plane, the apps and the sidecars, and
    /// waits until the caller's snapshot lists every instance.
    pub(crate) async fn start(
        bins: &Path,
        work_dir: Option<&Path>,
        retry_on: &[String],
    ) -> Result<Self, Error> {
        for (_, bin) in BINARIES {
            if !bins.join(bin).exists() {
                return Err(Error::MissingBinary(bins.join(bin)));
            }
        }
        let dir = match work_dir {
            Some(path) => {
                std::fs::create_dir_all(path).map_err(io(path.display()))?;
                WorkDir::Kept(path.to_owned())
            }
            None => WorkDir::Temporary(tempfile::tempdir().map_err(io("a temporary directory"))?),
        };
        let root = dir.path().to_owned();
        let services = root.join("config").join("services");
        for sub in [&services, &root.join("sidecars"), &root.join("logs")] {
            std::fs::create_dir_all(sub).map_err(io(sub.display()))?;
        }
        let write =
            |path: PathBuf, text: String| std::fs::write(&path, text).map_err(io(path.display()));
        write(root.join("config").join("mesh.yaml"), MESH_YAML.to_owned())?;
        write(
            services.join(format!("{CALLER}.yaml")),
            format!("name: {CALLER}\ncalls: [{DESTINATION}]\n"),
        )?;
        write(
            services.join(format!("{DESTINATION}.yaml")),
            destination_policy(0, retry_on),
        )?;

        let (api, cp_admin) = (free_port(), free_port());
        let caller_ports = Ports::pick();
        let caller_config = root.join("sidecars").join(format!("{CALLER}.yaml"));
        write(
            caller_config.clone(),
            sidecar_yaml(&root, CALLER, CALLER, free_port(), caller_ports, api, false),
        )?;
        let mut instances = Vec::new();
        for i in 1..=INSTANCES {
            let name = format!("{DESTINATION}-{i}");
            let (app_addr, ports) = (free_port(), Ports::pick());
            let config = root.join("sidecars").join(format!("{name}.yaml"));
            write(
                config.clone(),
                sidecar_yaml(&root, DESTINATION, &name, app_addr, ports, api, true),
            )?;
            instances.push(Instance {
                name,
                app_addr,
                ports,
                config,
                app: None,
                sidecar: None,
            });
        }

        let mut starts = 0;
        let mut spawner = Spawner {
            root: &root,
            bins,
            starts: &mut starts,
        };
        let mut cp = spawner.control_plane(api, cp_admin)?;
        cp.wait_ready(cp_admin, "/ready", READY_LIMIT).await?;
        // The caller starts after the control plane, which makes its token file.
        let caller = spawner.sidecar(CALLER, &caller_config)?;
        let mut mesh = Self {
            dir,
            bins: bins.to_owned(),
            api,
            cp_admin,
            control_plane: Some(cp),
            caller,
            caller_ports,
            instances,
            starts,
        };
        for i in 0..INSTANCES {
            mesh.start_app(i).await?;
            mesh.start_sidecar(i).await?;
        }
        let admin = mesh.caller_ports.admin;
        mesh.caller.wait_ready(admin, "/ready", READY_LIMIT).await?;
        mesh.wait_for_endpoints(INSTANCES, READY_LIMIT).await?;
        Ok(mesh)
    }

    /// The caller's outbound listener, where the load goes.
    pub(crate) fn outbound(&self) -> SocketAddr {
        self.caller_ports.outbound
    }

    /// The control plane's admin address.
    pub(crate) fn cp_admin(&self) -> SocketAddr {
        self.cp_admin
    }

    /// The work directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the services' policy files are.
    pub(crate) fn services_dir(&self) -> PathBuf {
        self.dir().join("config").join("services")
    }

    /// The admin token that changing the CA needs.
    pub(crate) fn admin_token(&self) -> Result<String, Error> {
        let path = mesh_control_plane::admin_token_path(&self.dir().join("state"));
        let token = std::fs::read_to_string(&path).map_err(io(path.display()))?;
        Ok(token.trim().to_owned())
    }

    /// An instance's name.
    pub(crate) fn instance_name(&self, i: usize) -> &str {
        &self.instances[i].name
    }

    fn starter(&mut self) -> Spawner<'_> {
        Spawner {
            root: self.dir.path(),
            bins: &self.bins,
            starts: &mut self.starts,
        }
    }

    /// SIGKILLs instance `i`'s sidecar (its app keeps running).
    pub(crate) fn kill_sidecar(&mut self, i: usize) {
        drop(self.instances[i].sidecar.take());
    }

    /// Starts instance `i`'s sidecar with its bootstrap file and waits until it is ready.
    pub(crate) async fn start_sidecar(&mut self, i: usize) -> Result<(), Error> {
        let (name, config) = (
            self.instances[i].name.clone(),
            self.instances[i].config.clone(),
        );
        let mut proc = self.starter().sidecar(&name, &config)?;
        proc.wait_ready(self.instances[i].ports.admin, "/ready", READY_LIMIT)
            .await?;
        self.instances[i].sidecar = Some(proc);
        Ok(())
    }

    /// SIGKILLs instance `i`'s app (its sidecar keeps running).
    pub(crate) fn kill_app(&mut self, i: usize) {
        drop(self.instances[i].app.take());
    }

    /// Starts instance `i`'s app where it listened before and waits until it answers.
    pub(crate) async fn start_app(&mut self, i: usize) -> Result<(), Error> {
        let (name, addr) = (self.instances[i].name.clone(), self.instances[i].app_addr);
        let mut proc = self.starter().app(&name, addr)?;
        proc.wait_ready(addr, "/health", READY_LIMIT).await?;
        self.instances[i].app = Some(proc);
        Ok(())
    }

    /// SIGKILLs the control plane.
    pub(crate) fn kill_control_plane(&mut self) {
        drop(self.control_plane.take());
    }

    /// Starts the control plane on its old addresses and state directory; waits for `/ready`.
    pub(crate) async fn start_control_plane(&mut self) -> Result<(), Error> {
        let (api, admin) = (self.api, self.cp_admin);
        let mut proc = self.starter().control_plane(api, admin)?;
        proc.wait_ready(admin, "/ready", READY_LIMIT).await?;
        self.control_plane = Some(proc);
        Ok(())
    }

    /// The caller's snapshot as its admin `/snapshot` shows it.
    pub(crate) async fn caller_snapshot(&self) -> Result<serde_json::Value, Error> {
        admin_json(self.caller_ports.admin, Method::GET, "/snapshot", None).await
    }

    /// Waits until the caller's snapshot lists `n` endpoints of the destination.
    async fn wait_for_endpoints(&self, n: usize, limit: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = 0;
        while tokio::time::Instant::now() < deadline {
            if let Ok(snapshot) = self.caller_snapshot().await {
                seen = snapshot["destinations"][DESTINATION]["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["endpoints"].as_array())
                    .map(Vec::len)
                    .sum::<usize>();
                if seen == n {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::Setup(format!(
            "the {CALLER} sidecar's snapshot lists {seen} {DESTINATION} endpoints after \
             {limit:?}, not {n}"
        )))
    }

    /// Whether every process that should run still does; names the first that exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), Error> {
        if let Some(cp) = &mut self.control_plane {
            cp.check_alive()?;
        }
        self.caller.check_alive()?;
        for instance in &mut self.instances {
            for proc in [&mut instance.app, &mut instance.sidecar]
                .into_iter()
                .flatten()
            {
                proc.check_alive()?;
            }
        }
        Ok(())
    }
}

/// Spawns the mesh's processes, each with a log file of its own per start.
struct Spawner<'a> {
    root: &'a Path,
    bins: &'a Path,
    starts: &'a mut u32,
}

impl Spawner<'_> {
    fn log(&mut self, name: &str) -> PathBuf {
        *self.starts += 1;
        self.root
            .join("logs")
            .join(format!("{:02}-{name}.log", self.starts))
    }

    fn control_plane(&mut self, api: SocketAddr, admin: SocketAddr) -> Result<Proc, Error> {
        let mut command = Command::new(self.bins.join("control-plane"));
        command
            .arg("--config-dir")
            .arg(self.root.join("config"))
            .arg("--state-dir")
            .arg(self.root.join("state"))
            .arg("--listen")
            .arg(api.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .env("MESH_LOG", "info");
        let log = self.log("control-plane");
        Ok(Proc::spawn("control-plane", command, &log)?)
    }

    fn sidecar(&mut self, name: &str, config: &Path) -> Result<Proc, Error> {
        let mut command = Command::new(self.bins.join("sidecar"));
        command.arg("--config").arg(config).env("MESH_LOG", "info");
        let log = self.log(&format!("{name}-sidecar"));
        Ok(Proc::spawn(&format!("{name}'s sidecar"), command, &log)?)
    }

    fn app(&mut self, name: &str, addr: SocketAddr) -> Result<Proc, Error> {
        let mut command = Command::new(self.bins.join("echo-app"));
        command
            .args(["--name", name, "--listen"])
            .arg(addr.to_string());
        let log = self.log(&format!("{name}-app"));
        Ok(Proc::spawn(&format!("{name}'s app"), command, &log)?)
    }
}

/// A sidecar's bootstrap file: the control plane certifies and configures it; the
/// destination's sidecars probe their apps, so an instance whose app died leaves its callers'
/// snapshots.
fn sidecar_yaml(
    root: &Path,
    service: &str,
    instance: &str,
    app: SocketAddr,
    ports: Ports,
    api: SocketAddr,
    probe_app: bool,
) -> String {
    let state = root.join("state");
    let mut yaml = format!(
        "service: {service}\ninstance: {instance}\ntrust_domain: {TRUST_DOMAIN}\napp: \"{app}\"\n\
         listen: {{ outbound: \"{}\", inbound: \"{}\", admin: \"{}\" }}\n\
         control_plane:\n  address: \"{api}\"\n  trust_anchor: {}\n  token_file: {}\n\
         access_log: false\n",
        ports.outbound,
        ports.inbound,
        ports.admin,
        quoted(&state.join("ca.pem")),
        quoted(&state.join("tokens").join(service)),
    );
    if probe_app {
        yaml.push_str("app_health: { path: /health, interval: 1s }\n");
    }
    yaml
}

/// One admin request whose answer must be 200 with a JSON body.
pub(crate) async fn admin_json(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<serde_json::Value, Error> {
    let (status, body) = admin_client::request_with_token(addr, method.clone(), path, token)
        .await
        .map_err(|e| Error::Admin(format!("{method} {path}: {e}")))?;
    if status != StatusCode::OK {
        return Err(Error::Admin(format!(
            "{method} {path}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| Error::Admin(format!("{method} {path}: not JSON: {e}")))
}
