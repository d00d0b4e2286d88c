//! `meshctl up`: the demo mesh on this machine, as child processes.
//!
//! [`up`] starts the control plane, waits for it to be ready, then for every instance its
//! sidecar, waits for the sidecar to have its certificate and first snapshot, and only then
//! its app, so an app's first call already finds a working mesh; then it waits for each
//! sidecar's `/ready`, which holds until the sidecar's probe of its app succeeds. Sidecars start together, then
//! apps together, then the gateway in front of the storefront, where users enter. If any child exits or does not get ready in time, everything started is
//! stopped and the error names the child and shows the end of its log.
//!
//! The CLI and the tests use this same code; tests pass their own run directory, ports and
//! binary directory.

pub mod config;
pub mod jaeger;
pub mod plan;
mod process;
mod report;
pub mod transparent;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use http::Method;
use mesh_control_plane::admin_client;
use nix::sys::signal::Signal;

pub use self::config::{
    ControlPlaneSpec, DemoConfig, DemoConfigError, FieldError, GatewaySpec, ServiceSpec,
    TracingSpec,
};
pub use self::jaeger::JaegerSpec;
pub use self::plan::{ControlPlaneAddrs, Gateway, Instance, Manifest, ManifestError, Plan, RunDir};
use self::process::Proc;
pub use self::process::{Role, log_tail};
pub use self::transparent::TransparentSpec;
use crate::netns::bridge::Bridge;
use crate::netns::teardown::{Teardown, Undo};
use crate::netns::{self, NetnsError, hosts};

/// The binaries a demo run needs.
pub const BINARIES: [&str; 3] = ["control-plane", "sidecar", "demo-service"];

/// How `up` runs things.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Where `control-plane`, `sidecar` and `demo-service` are.
    pub bin_dir: PathBuf,
    /// How long each stage may take to become ready.
    pub ready_timeout: Duration,
    /// How long stopping processes may take (per stage) before they are killed.
    pub stop_timeout: Duration,
    /// A Jaeger to run beside the mesh, receiving every sidecar's spans; `None`: none.
    pub jaeger: Option<JaegerSpec>,
    /// Each instance in a network namespace of its own, its traffic redirected through its
    /// sidecar (`--transparent`); `None`: every process on the host's loopback.
    pub transparent: Option<TransparentSpec>,
}

impl UpOptions {
    /// Binaries from `bin_dir`, 30 s to get ready, 10 s to stop.
    pub fn new(bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: bin_dir.into(),
            ready_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            jaeger: None,
            transparent: None,
        }
    }

    /// The directory of the running executable, where cargo puts every workspace binary.
    pub fn default_bin_dir() -> Result<PathBuf, UpError> {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_owned))
            .ok_or(UpError::NoBinDir)
    }
}

/// Why the demo mesh could not be started.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// `demo.yaml` is invalid.
    #[error(transparent)]
    Config(#[from] DemoConfigError),
    /// The mesh configuration directory is invalid.
    #[error("the mesh configuration in {} is invalid: {source}", dir.display())]
    MeshConfig {
        /// The directory.
        dir: PathBuf,
        /// Every problem.
        source: mesh_control_plane::InvalidConfig,
    },
    /// `demo.yaml` runs a service the mesh configuration does not declare.
    #[error(
        "service {service:?} is not declared in {} (add services/{service}.yaml)",
        dir.display()
    )]
    Undeclared {
        /// The service.
        service: String,
        /// The mesh configuration directory.
        dir: PathBuf,
    },
    /// A binary is missing.
    #[error(
        "cannot find the `{name}` binary in {} (build the workspace first: `cargo build --release`, \
         then run target/release/meshctl; or pass --bin-dir)",
        dir.display()
    )]
    MissingBinary {
        /// The binary's name.
        name: &'static str,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The running executable's directory is unknown.
    #[error("cannot tell where meshctl runs from; pass --bin-dir")]
    NoBinDir,
    /// Ports could not be handed out.
    #[error(transparent)]
    Ports(#[from] plan::PortError),
    /// Jaeger cannot listen where the sidecars export.
    #[error(transparent)]
    JaegerEndpoint(#[from] jaeger::EndpointError),
    /// Another run uses the same run directory.
    #[error(
        "a demo mesh is already running from {} (process {pid}); stop it first",
        run_dir.display()
    )]
    AlreadyRunning {
        /// The run directory.
        run_dir: PathBuf,
        /// Its meshctl process.
        pid: u32,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {name} ({}): {source}", bin.display())]
    Spawn {
        /// Its name.
        name: String,
        /// The binary.
        bin: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A process exited during start-up.
    #[error("{name} exited during start-up ({status}); the end of {}:\n{tail}", log.display())]
    Exited {
        /// Its name.
        name: String,
        /// How it ended.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// `--transparent` without root.
    #[error(
        "meshctl up --transparent needs root: it creates a network namespace per instance, veth \
         pairs and a bridge, and installs nftables rules (run it with sudo, or leave out \
         --transparent)"
    )]
    NotRoot,
    /// A namespace, the bridge, or their files.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// `sidecar redirect` failed in a namespace.
    #[error("`sidecar redirect` in {namespace} failed: {message}")]
    Redirect {
        /// The namespace.
        namespace: String,
        /// What it said.
        message: String,
    },
    /// The control plane's `/status`, for the virtual addresses, could not be read.
    #[error("cannot read the virtual addresses from the control plane at {admin}: {reason}")]
    VirtualAddresses {
        /// Its admin address.
        admin: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A process did not become ready in time.
    #[error(
        "{name} was not ready at {url} after {}s; the end of {}:\n{tail}",
        after.as_secs(),
        log.display()
    )]
    NotReady {
        /// Its name.
        name: String,
        /// The URL polled.
        url: String,
        /// How long it was given.
        after: Duration,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
}

/// A child that exited while the mesh ran.
#[derive(Clone, Debug)]
pub struct Exited {
    /// The process's name, e.g. `payments-2 app`.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its pid.
    pub pid: u32,
    /// How it ended.
    pub status: ExitStatus,
    /// Its log file.
    pub log: PathBuf,
}

/// The demo mesh, running. Stop it with [`RunningMesh::stop`]; dropping it kills whatever is
/// left.
#[derive(Debug)]
pub struct RunningMesh {
    run_dir: RunDir,
    control_plane: ControlPlaneAddrs,
    instances: Vec<Instance>,
    gateway: Gateway,
    tracing: Option<TracingSpec>,
    jaeger: Option<JaegerSpec>,
    /// Ports that were in use and skipped.
    skipped: Vec<u16>,
    procs: Vec<Proc>,
    /// Exits already reported by [`RunningMesh::next_exit`].
    reported: Vec<u32>,
    stop_timeout: Duration,
    /// With `--transparent`: the namespaces, in the order of `instances`.
    net: Option<Net>,
    /// What was made for the namespaces, undone after every process stopped (or on drop,
    /// after [`Drop`] killed them).
    teardown: Teardown,
}

/// The namespaces of a transparent run.
#[derive(Debug)]
struct Net {
    spec: TransparentSpec,
    namespaces: Vec<netns::Instance>,
}

/// What `meshctl up` prints once the mesh runs: every instance's addresses, and where to look.
pub fn report(mesh: &RunningMesh) -> String {
    let warning = plan::skipped_warning(&mesh.skipped)
        .map(|w| format!("NOTE: {w}.\n\n"))
        .unwrap_or_default();
    warning
        + &report::render(
            mesh.instances(),
            mesh.gateway(),
            mesh.control_plane(),
            mesh.tracing(),
            mesh.jaeger(),
            mesh.run_dir(),
        )
}

/// Starts the demo mesh described by `config`. See the module documentation for the order.
pub async fn up(config: &DemoConfig, options: &UpOptions) -> Result<RunningMesh, UpError> {
    let bins = binaries(&options.bin_dir)?;
    let mesh_dir = &config.control_plane.config_dir;
    let mesh =
        mesh_control_plane::config::load(mesh_dir).map_err(|source| UpError::MeshConfig {
            dir: mesh_dir.clone(),
            source,
        })?;
    let names = config.services.iter().map(|s| s.name.as_str());
    for service in names.chain([Gateway::SERVICE]) {
        if !mesh.services.contains_key(service) {
            return Err(UpError::Undeclared {
                service: service.to_owned(),
                dir: mesh_dir.clone(),
            });
        }
    }
    let run_dir = prepare_run_dir(&config.run_dir)?;
    if let Ok(previous) = Manifest::load(&run_dir.root)
        && previous.pid != std::process::id()
        && process_alive(previous.pid)
    {
        return Err(UpError::AlreadyRunning {
            run_dir: run_dir.root.clone(),
            pid: previous.pid,
        });
    }
    let plan = plan::allocate(config, plan::port_is_free)?;
    // With a Jaeger and no tracing in the file, spans go where Jaeger listens by default.
    let mut plan = plan;
    let mut tracing = config.tracing.clone().or_else(|| {
        options.jaeger.as_ref().map(|_| TracingSpec {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            protocol: "grpc".into(),
        })
    });
    // Made before anything starts: Jaeger and the control plane listen on the bridge.
    let mut teardown = Teardown::default();
    let net = match &options.transparent {
        Some(spec) => {
            let net = make_namespaces(spec, &mut plan.instances, &mut teardown)?;
            let gateway = std::net::IpAddr::V4(net.gateway());
            plan.control_plane.api = SocketAddr::new(gateway, plan.control_plane.api.port());
            if let (Some(t), std::net::IpAddr::V4(gateway)) = (&tracing, gateway) {
                tracing = Some(transparent::tracing_at(t, gateway));
            }
            Some(net)
        }
        None => None,
    };
    if let (Some(spec), Some(tracing)) = (&options.jaeger, &tracing) {
        let otlp = jaeger::otlp_listen(tracing)?;
        for (field, addr) in [
            ("tracing.otlp_endpoint (Jaeger's OTLP receiver)", otlp),
            ("Jaeger's query address (--jaeger-query)", spec.query),
        ] {
            if !plan::port_is_free(addr.port()) {
                return Err(plan::PortError::InUse { field, addr }.into());
            }
        }
        write(
            &jaeger::config_path(&run_dir.root),
            &jaeger::config(tracing, otlp, spec.query),
        )?;
    }
    let state = run_dir.state();
    for (i, instance) in plan.instances.iter().enumerate() {
        let text = match &net {
            Some(net) => transparent::sidecar_bootstrap(
                instance,
                &mesh.trust_domain,
                plan.control_plane.api,
                &net.namespaces[i].dir,
                tracing.as_ref(),
            ),
            None => plan::sidecar_bootstrap(
                instance,
                &mesh.trust_domain,
                &plan.control_plane,
                &state,
                tracing.as_ref(),
            ),
        };
        write(&run_dir.bootstrap(instance), &text)?;
    }
    // With --transparent too the gateway runs on the host: it has no app to redirect, and it
    // reaches the control plane and the storefront's namespace over the bridge.
    write(
        &run_dir.gateway_bootstrap(),
        &plan::gateway_bootstrap(
            &plan.gateway,
            &mesh.trust_domain,
            plan.control_plane.api,
            &state,
            tracing.as_ref(),
        ),
    )?;
    write(
        &run_dir.prometheus(),
        &plan::prometheus_config(&plan.control_plane, &plan.instances, &plan.gateway),
    )?;

    let mut running = RunningMesh {
        run_dir,
        control_plane: plan.control_plane,
        instances: plan.instances,
        gateway: plan.gateway,
        tracing,
        jaeger: options.jaeger.clone(),
        skipped: plan.skipped.clone(),
        procs: Vec::new(),
        reported: Vec::new(),
        stop_timeout: options.stop_timeout,
        net,
        teardown,
    };
    match running.start(config, &bins, options.ready_timeout).await {
        Ok(()) => Ok(running),
        Err(e) => {
            running.stop().await;
            Err(e)
        }
    }
}

impl Net {
    fn gateway(&self) -> std::net::Ipv4Addr {
        self.namespaces
            .first()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED, |n| n.gateway)
    }
}

/// Checks root and the range, then makes a namespace on the bridge for every instance and
/// points the instance at it.
fn make_namespaces(
    spec: &TransparentSpec,
    instances: &mut [Instance],
    teardown: &mut Teardown,
) -> Result<Net, UpError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(UpError::NotRoot);
    }
    let bridge = Bridge::new(&spec.bridge, spec.network, spec.state_root.clone())
        .map_err(NetnsError::from)?;
    bridge.check_routes().map_err(NetnsError::from)?;
    let mut namespaces = Vec::new();
    for (i, instance) in instances.iter_mut().enumerate() {
        let names = transparent::names(instance, i);
        let made = netns::Instance::create(&bridge, names, &Default::default(), teardown)?;
        transparent::place(instance, &made.namespace, made.address, spec.proxy_uid);
        namespaces.push(made);
    }
    Ok(Net {
        spec: spec.clone(),
        namespaces,
    })
}

struct Binaries {
    control_plane: PathBuf,
    sidecar: PathBuf,
    app: PathBuf,
}

fn binaries(dir: &Path) -> Result<Binaries, UpError> {
    let find = |name: &'static str| {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(UpError::MissingBinary {
                name,
                dir: dir.to_owned(),
            })
        }
    };
    Ok(Binaries {
        control_plane: find(BINARIES[0])?,
        sidecar: find(BINARIES[1])?,
        app: find(BINARIES[2])?,
    })
}

fn prepare_run_dir(dir: &Path) -> Result<RunDir, UpError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| UpError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Absolute, so bootstrap files and mesh.json mean the same from any directory.
    let root = std::fs::canonicalize(dir).map_err(io(dir))?;
    let run_dir = RunDir { root };
    for sub in [
        run_dir.state(),
        run_dir.data(),
        run_dir.logs(),
        run_dir.sidecars(),
    ] {
        std::fs::create_dir_all(&sub).map_err(io(&sub))?;
    }
    Ok(run_dir)
}

fn write(path: &Path, text: &str) -> Result<(), UpError> {
    std::fs::write(path, text).map_err(|source| UpError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Whether `pid` names a live process (signal 0 checks without sending anything).
pub fn process_alive(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

/// One readiness check: GET `path` on `addr` must answer 200.
struct Probe {
    proc_index: usize,
    addr: SocketAddr,
    path: &'static str,
}

impl RunningMesh {
    async fn start(
        &mut self,
        config: &DemoConfig,
        bins: &Binaries,
        ready_timeout: Duration,
    ) -> Result<(), UpError> {
        if let Some(spec) = self.jaeger.clone() {
            let index = self.spawn(
                "jaeger",
                Role::Tracing,
                &spec.bin,
                vec![
                    "--config".into(),
                    path_arg(&jaeger::config_path(&self.run_dir.root)),
                ],
            )?;
            self.wait_ready(
                vec![Probe {
                    proc_index: index,
                    addr: spec.query,
                    path: "/api/services",
                }],
                ready_timeout,
            )
            .await?;
        }
        let state = self.run_dir.state();
        let cp = self.spawn(
            "control-plane",
            Role::ControlPlane,
            &bins.control_plane,
            vec![
                "--config-dir".into(),
                path_arg(&config.control_plane.config_dir),
                "--state-dir".into(),
                path_arg(&state),
                "--listen".into(),
                self.control_plane.api.to_string().into(),
                "--admin".into(),
                self.control_plane.admin.to_string().into(),
            ],
        )?;
        self.wait_ready(
            vec![Probe {
                proc_index: cp,
                addr: self.control_plane.admin,
                path: "/ready",
            }],
            ready_timeout,
        )
        .await?;
        if self.net.is_some() {
            self.prepare_namespaces(&bins.sidecar).await?;
        }

        let (mut probes, mut sidecars_ready) = (Vec::new(), Vec::new());
        for i in 0..self.instances.len() {
            let instance = &self.instances[i];
            let (name, bootstrap, admin) = (
                format!("{} sidecar", instance.name),
                self.run_dir.bootstrap(instance),
                instance.admin,
            );
            let log = format!("{}-sidecar", instance.name);
            // Many sidecars share the machine: one thread each is the cheapest.
            let args = vec![
                "--config".into(),
                path_arg(&bootstrap),
                "--workers".into(),
                "1".into(),
            ];
            let (bin, args) = match (&self.net, &instance.namespace) {
                (Some(net), Some(ns)) => (
                    PathBuf::from("ip"),
                    transparent::in_namespace(ns, Some(net.spec.proxy_uid), &bins.sidecar, args),
                ),
                _ => (bins.sidecar.clone(), args),
            };
            let index = self.spawn_logged(&name, &log, Role::Sidecar, &bin, args)?;
            self.instances[i].sidecar_pid = Some(self.procs[index].pid);
            // Certified and configured: the snapshot is there. `/ready` also waits for the
            // app, which the sidecar probes and which starts next.
            probes.push(Probe {
                proc_index: index,
                addr: admin,
                path: "/snapshot",
            });
            sidecars_ready.push(Probe {
                proc_index: index,
                addr: admin,
                path: "/ready",
            });
        }
        self.wait_ready(probes, ready_timeout).await?;

        let mut probes = Vec::new();
        let data = path_arg(&self.run_dir.data());
        for i in 0..self.instances.len() {
            let instance = &self.instances[i];
            let (name, log, app) = (
                format!("{} app", instance.name),
                format!("{}-app", instance.name),
                instance.app,
            );
            let index = match &instance.namespace {
                // The app calls services by name and knows no sidecar. It runs as root, whose
                // connections the redirect sends to the sidecar. Its `/health` is not probed
                // from here (the redirect would bring the probe to the sidecar as a caller
                // outside the mesh): its sidecar's `/ready` waits for its own probe of it.
                Some(ns) => {
                    let args = vec![
                        instance.service.clone().into(),
                        "--listen".into(),
                        format!("127.0.0.1:{}", transparent::APP_PORT).into(),
                        "--transparent".into(),
                        "--data-dir".into(),
                        data.clone(),
                        "--instance".into(),
                        instance.name.clone().into(),
                    ];
                    let args = transparent::in_namespace(ns, None, &bins.app, args);
                    self.spawn_logged(&name, &log, Role::App, Path::new("ip"), args)?
                }
                None => {
                    let args = vec![
                        instance.service.clone().into(),
                        "--listen".into(),
                        instance.app.to_string().into(),
                        "--outbound".into(),
                        instance.outbound.to_string().into(),
                        "--data-dir".into(),
                        data.clone(),
                        "--instance".into(),
                        instance.name.clone().into(),
                    ];
                    let index = self.spawn_logged(&name, &log, Role::App, &bins.app, args)?;
                    probes.push(Probe {
                        proc_index: index,
                        addr: app,
                        path: "/health",
                    });
                    index
                }
            };
            self.instances[i].app_pid = Some(self.procs[index].pid);
        }
        self.wait_ready(probes, ready_timeout).await?;
        // Each sidecar has seen its app answer its probe: the instance takes traffic.
        self.wait_ready(sidecars_ready, ready_timeout).await?;
        self.start_gateway(bins, ready_timeout).await?;
        let manifest = self.manifest();
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| UpError::Io {
            path: self.run_dir.manifest(),
            source: std::io::Error::other(e),
        })?;
        write(&self.run_dir.manifest(), &text)
    }

    /// Starts the gateway and waits for its `/ready`: certified, configured, listening.
    async fn start_gateway(
        &mut self,
        bins: &Binaries,
        ready_timeout: Duration,
    ) -> Result<(), UpError> {
        let args = vec![
            "--config".into(),
            path_arg(&self.run_dir.gateway_bootstrap()),
            "--workers".into(),
            "1".into(),
        ];
        let index = self.spawn(Gateway::SERVICE, Role::Gateway, &bins.sidecar, args)?;
        self.gateway.pid = Some(self.procs[index].pid);
        self.wait_ready(
            vec![Probe {
                proc_index: index,
                addr: self.gateway.admin,
                path: "/ready",
            }],
            ready_timeout,
        )
        .await
    }

    fn spawn(
        &mut self,
        name: &str,
        role: Role,
        bin: &Path,
        args: Vec<OsString>,
    ) -> Result<usize, UpError> {
        self.spawn_logged(name, name, role, bin, args)
    }

    fn spawn_logged(
        &mut self,
        name: &str,
        log_name: &str,
        role: Role,
        bin: &Path,
        args: Vec<OsString>,
    ) -> Result<usize, UpError> {
        let log = self.run_dir.log(log_name);
        let proc = Proc::spawn(name, role, bin, &args, &log).map_err(|source| UpError::Spawn {
            name: name.to_owned(),
            bin: bin.to_owned(),
            source,
        })?;
        self.procs.push(proc);
        Ok(self.procs.len() - 1)
    }

    /// Polls every probe until all answer 200, failing as soon as any started process exits.
    async fn wait_ready(
        &mut self,
        mut probes: Vec<Probe>,
        timeout: Duration,
    ) -> Result<(), UpError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut pending = Vec::new();
            for probe in probes {
                let answered = tokio::time::timeout(
                    Duration::from_secs(2),
                    admin_client::request(probe.addr, Method::GET, probe.path),
                )
                .await;
                if !matches!(answered, Ok(Ok((status, _))) if status == http::StatusCode::OK) {
                    pending.push(probe);
                }
            }
            probes = pending;
            for proc in &mut self.procs {
                if let Some(status) = proc.poll_exit() {
                    return Err(UpError::Exited {
                        name: proc.name.clone(),
                        status: status.to_string(),
                        log: proc.log.clone(),
                        tail: log_tail(&proc.log, 20),
                    });
                }
            }
            let Some(first) = probes.first() else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                let proc = &self.procs[first.proc_index];
                return Err(UpError::NotReady {
                    name: proc.name.clone(),
                    url: format!("http://{}{}", first.addr, first.path),
                    after: timeout,
                    log: proc.log.clone(),
                    tail: log_tail(&proc.log, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The record written to `mesh.json`.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            pid: std::process::id(),
            run_dir: self.run_dir.root.clone(),
            storefront: self.storefront_url(),
            gateway: Some(self.gateway.clone()),
            control_plane: self.control_plane,
            control_plane_pid: self
                .procs
                .iter()
                .find(|p| p.role == Role::ControlPlane)
                .map(|p| p.pid),
            otlp_endpoint: self.tracing.as_ref().map(|t| t.otlp_endpoint.clone()),
            jaeger_url: self.jaeger.as_ref().map(JaegerSpec::url),
            instances: self.instances.clone(),
        }
    }

    /// Every instance, callers first.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The instances of `service`.
    pub fn instances_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Instance> {
        self.instances.iter().filter(move |i| i.service == service)
    }

    /// The gateway in front of the storefront.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The URL users open: the gateway's.
    pub fn gateway_url(&self) -> String {
        self.gateway.url()
    }

    /// The first storefront instance's app (with `--transparent`, reachable only through the
    /// mesh: open [`RunningMesh::gateway_url`]).
    pub fn storefront_url(&self) -> Option<String> {
        self.instances_of("storefront")
            .next()
            .map(Instance::app_url)
    }

    /// The control plane's listeners.
    pub fn control_plane(&self) -> ControlPlaneAddrs {
        self.control_plane
    }

    /// Where sidecars export spans.
    pub fn tracing(&self) -> Option<&TracingSpec> {
        self.tracing.as_ref()
    }

    /// The Jaeger running beside the mesh.
    pub fn jaeger(&self) -> Option<&JaegerSpec> {
        self.jaeger.as_ref()
    }

    /// The run directory's layout.
    pub fn run_dir(&self) -> &RunDir {
        &self.run_dir
    }

    /// The pid of every process started, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Waits until a child exits that has not been reported yet, and returns it. Cancel-safe,
    /// so it can sit in a `select!` beside a signal handler. Never returns once all exited.
    pub async fn next_exit(&mut self) -> Exited {
        loop {
            for proc in &mut self.procs {
                if self.reported.contains(&proc.pid) {
                    continue;
                }
                if let Some(status) = proc.poll_exit() {
                    self.reported.push(proc.pid);
                    return Exited {
                        name: proc.name.clone(),
                        role: proc.role,
                        pid: proc.pid,
                        status,
                        log: proc.log.clone(),
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every child in reverse start order: the gateway, apps, sidecars, the control plane;
    /// each stage gets SIGTERM and `stop_timeout` to exit, then SIGKILL. Every child is reaped.
    /// Returns the names of those that had to be killed. Removes `mesh.json`.
    pub async fn stop(&mut self) -> Vec<String> {
        let mut killed = Vec::new();
        for role in [
            Role::Gateway,
            Role::App,
            Role::Sidecar,
            Role::ControlPlane,
            Role::Tracing,
        ] {
            let stage = self.procs.iter_mut().filter(|p| p.role == role);
            let stage: Vec<&mut Proc> = stage.collect();
            if stage.is_empty() {
                continue;
            }
            let mut stage = stage;
            for proc in &mut stage {
                proc.signal(Signal::SIGTERM);
            }
            let deadline = tokio::time::Instant::now() + self.stop_timeout;
            for proc in &mut stage {
                if proc.wait_or_kill(deadline).await {
                    killed.push(proc.name.clone());
                }
            }
        }
        self.remove_manifest();
        for failure in self.teardown.run() {
            eprintln!("meshctl: clean-up: {failure}");
        }
        killed
    }

    /// With the control plane up: each namespace's hosts file from the virtual addresses in
    /// its `/status`, the sidecar's trust anchor and join token copied where its user reads
    /// them, and the redirect installed.
    async fn prepare_namespaces(&mut self, sidecar: &Path) -> Result<(), UpError> {
        let admin = self.control_plane.admin;
        let addresses =
            crate::run::checks::services(admin)
                .await
                .map_err(|e| UpError::VirtualAddresses {
                    admin,
                    reason: e.to_string(),
                })?;
        let addresses: std::collections::BTreeMap<String, String> = addresses
            .into_iter()
            .filter_map(|(name, addr)| Some((name, addr?)))
            .collect();
        let state = self.run_dir.state();
        let Some(net) = &self.net else {
            return Ok(());
        };
        let (uid, gid) = (net.spec.proxy_uid, net.spec.proxy_uid);
        for (instance, ns) in self.instances.iter().zip(&net.namespaces) {
            let hosts_text = hosts::render(&ns.namespace, &addresses);
            hosts::write_in_place(&ns.hosts_file, &hosts_text).map_err(|source| UpError::Io {
                path: ns.hosts_file.clone(),
                source,
            })?;
            for (from, to, mode) in [
                (state.join("ca.pem"), ns.dir.join("ca.pem"), 0o644),
                (
                    state.join("tokens").join(&instance.service),
                    ns.dir.join("token"),
                    0o600,
                ),
            ] {
                copy_owned(&from, &to, mode, uid, gid)?;
            }
            std::os::unix::fs::chown(&ns.dir, Some(uid), Some(gid)).map_err(|source| {
                UpError::Io {
                    path: ns.dir.clone(),
                    source,
                }
            })?;
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &ns.namespace])
                .arg(sidecar)
                .args(["redirect", "--proxy-uid", &uid.to_string()])
                .args(["--inbound-ports", &transparent::APP_PORT.to_string()])
                .output()
                .map_err(|source| UpError::Spawn {
                    name: "sidecar redirect".to_owned(),
                    bin: sidecar.to_owned(),
                    source,
                })?;
            if !out.status.success() {
                return Err(UpError::Redirect {
                    namespace: ns.namespace.clone(),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            self.teardown.push(Undo::Redirect {
                namespace: ns.namespace.clone(),
                sidecar: sidecar.to_owned(),
            });
        }
        Ok(())
    }

    fn remove_manifest(&self) {
        let path = self.run_dir.manifest();
        if Manifest::load(&self.run_dir.root).is_ok_and(|m| m.pid == std::process::id()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for RunningMesh {
    fn drop(&mut self) {
        if self.procs.iter_mut().all(|p| p.poll_exit().is_some()) {
            return;
        }
        for proc in &mut self.procs {
            proc.kill_now();
        }
        // Reap them, briefly: a killed process goes within milliseconds.
        for _ in 0..100 {
            if self.procs.iter_mut().all(|p| p.poll_exit().is_some()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.remove_manifest();
    }
}

/// Copies `from` to `to` with `mode`, owned by `uid`:`gid`.
fn copy_owned(from: &Path, to: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), UpError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| UpError::Io {
        path: to.to_owned(),
        source,
    };
    std::fs::copy(from, to).map_err(|source| UpError::Io {
        path: from.to_owned(),
        source,
    })?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    std::os::unix::fs::chown(to, Some(uid), Some(gid)).map_err(io)
}

fn path_arg(path: &Path) -> OsString {
    path.as_os_str().to_owned()
}
