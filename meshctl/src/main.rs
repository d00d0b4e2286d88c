//! `meshctl`: the operator's command line for the mesh.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod demo;
mod kubernetes;
mod views;

use clap::{Parser, Subcommand};
use http::Method;
use mesh_control_plane::admin_client;
use mesh_control_plane::ca::{DEFAULT_LEAF_LIFETIME, DevCa};

#[derive(Parser)]
#[command(name = "meshctl", version, about = "Operate the service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo mesh on this machine: a control plane, and every instance of every service
    /// of config/demo.yaml as a demo-service app behind its own sidecar. Ctrl-C stops it all.
    Up {
        /// The demo file.
        #[arg(long, default_value = "config/demo.yaml")]
        config: PathBuf,
        /// Where control-plane, sidecar and demo-service are (default: beside meshctl).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Orders per second a built-in load generator places through the storefront while
        /// the mesh runs, with a status line; 0 for none.
        #[arg(long, default_value_t = 2.0)]
        load: f64,
        /// Start Jaeger beside the mesh (built by scripts/build-jaeger.sh), receiving every
        /// sidecar's spans; an error if it is not built. Default: start it when it is built.
        #[arg(long, conflicts_with = "no_jaeger")]
        jaeger: bool,
        /// Do not start Jaeger.
        #[arg(long)]
        no_jaeger: bool,
        /// The `jaeger` binary (default: the one scripts/build-jaeger.sh built).
        #[arg(long)]
        jaeger_bin: Option<PathBuf>,
        /// Where Jaeger's UI and query API listen.
        #[arg(long, default_value = meshctl::up::jaeger::DEFAULT_QUERY)]
        jaeger_query: SocketAddr,
        /// Each instance in a network namespace of its own on the bridge mesh0
        /// (198.19.0.0/24), its app calling services by name with its traffic redirected
        /// through its sidecar, as `meshctl run` does. Needs root.
        #[arg(long)]
        transparent: bool,
    },
    /// Put a local process in the mesh: a network namespace on a host bridge, the service's
    /// sidecar, netfilter rules that send the process's TCP through it, and a hosts file that
    /// resolves every service; then COMMAND as an unprivileged user. Needs root. Ctrl-C, or the
    /// command's exit, removes it all; meshctl exits with the command's code.
    Run {
        /// The service the process is an instance of (declared in the control plane).
        #[arg(long)]
        service: String,
        /// The port COMMAND listens on at 127.0.0.1, if it takes calls.
        #[arg(long)]
        app_port: Option<u16>,
        /// COMMAND's user (default: SUDO_UID when run through sudo, else 65534, nobody).
        #[arg(long)]
        uid: Option<u32>,
        /// The sidecar's user (default: the user mesh-proxy if it exists, else 65532).
        #[arg(long)]
        proxy_uid: Option<u32>,
        /// The instance's name (default: <service>-<pid>).
        #[arg(long)]
        instance: Option<String>,
        /// The control plane's admin address, from this host.
        #[arg(long, default_value = mesh_control_plane::DEFAULT_ADMIN)]
        admin: SocketAddr,
        /// The control plane's API, as the namespace reaches it (default: port 15010 at the
        /// bridge's address; 0.0.0.0:PORT means PORT there).
        #[arg(long)]
        control_plane: Option<SocketAddr>,
        /// The control plane's state directory: its ca.pem and tokens/<service>.
        #[arg(long, default_value = "target/demo/state")]
        state_dir: PathBuf,
        /// Where instances' addresses come from; the bridge has the first.
        #[arg(long, default_value = meshctl::netns::bridge::DEFAULT_RANGE)]
        network: meshctl::netns::cidr::Ipv4Net,
        /// The host bridge the namespaces join.
        #[arg(long, default_value = meshctl::netns::bridge::DEFAULT_BRIDGE)]
        bridge: String,
        /// Where the sidecar binary is (default: beside meshctl).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// How long the sidecar may take to be ready.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ready_timeout: Duration,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Place orders through the storefront at a fixed rate and summarize what happened:
    /// successes, failures by status, latency percentiles, and the retries the mesh made.
    Loadgen {
        /// The shop's URL (default: the gateway's, from the running demo's mesh.json).
        #[arg(long)]
        target: Option<String>,
        /// Orders per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// How long to send, e.g. 30s or 2m.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Orders in flight at most.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The demo's run directory (where `meshctl up` wrote mesh.json).
        #[arg(long, default_value = "target/demo")]
        run_dir: PathBuf,
    },
    /// Inject faults into a demo service's apps (every instance, or one), or crash them.
    /// Without options, shows the faults in force.
    Fault {
        /// The service, e.g. payments.
        service: String,
        /// Only this instance (1-based).
        #[arg(long)]
        instance: Option<u16>,
        /// Delay before each answer, e.g. 200ms.
        #[arg(long, value_parser = parse_duration)]
        latency: Option<Duration>,
        /// Share of requests answered with --error-status, 0 to 1.
        #[arg(long)]
        error_rate: Option<f64>,
        /// The status of injected errors (500-599).
        #[arg(long)]
        error_status: Option<u16>,
        /// Remove every fault.
        #[arg(long, conflicts_with_all = ["latency", "error_rate", "error_status", "crash"])]
        clear: bool,
        /// Make the app exit (its sidecar stays; callers fail over to other instances).
        #[arg(long, conflicts_with_all = ["latency", "error_rate", "error_status"])]
        crash: bool,
        /// The demo's run directory (where `meshctl up` wrote mesh.json).
        #[arg(long, default_value = "target/demo")]
        run_dir: PathBuf,
    },
    /// Write a development CA and one certificate per service.
    ///
    /// Writes DIR/ca.pem (the trust bundle), DIR/ca-key.pem, and for each service
    /// DIR/<service>.pem and DIR/<service>-key.pem with the URI SAN
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service>. An existing CA in DIR is reused, so
    /// services can be added later.
    DevCerts {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Trust domain of the SPIFFE IDs.
        #[arg(long, default_value = "mesh.local")]
        trust_domain: String,
        /// Namespace of the SPIFFE IDs.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Leaf lifetime, e.g. `24h` or `365d`.
        #[arg(long, value_parser = parse_lifetime)]
        lifetime: Option<Duration>,
        /// Services to issue certificates for.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show every instance the control plane knows: address, version, applied snapshot (stale
    /// ones marked), certificate expiry and ejected endpoints.
    Status {
        /// The control plane's admin address.
        #[arg(long, default_value = mesh_control_plane::DEFAULT_ADMIN)]
        admin: SocketAddr,
    },
    /// Each service's and each edge's (caller -> callee) traffic over the last seconds:
    /// requests per second, success rate, p50/p95/p99 latency, retries and ejected endpoints,
    /// read from every sidecar through the control plane.
    Stat {
        /// Only this service: its row, and the edges to and from it.
        service: Option<String>,
        /// How far back to look, up to 5m.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        window: Duration,
        /// Refresh every two seconds, in place, until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// `table` or `json`.
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
        /// The control plane's admin address.
        #[arg(long, default_value = mesh_control_plane::DEFAULT_ADMIN)]
        admin: SocketAddr,
    },
    /// Watch the requests crossing a service's sidecars as they are answered: time, direction,
    /// caller and callee, method, path, status, latency, tries and trace ID. Sampled on the
    /// sidecars (at most --rate a second each; what is left out is counted). Ctrl-C stops.
    Tap {
        /// The service.
        service: String,
        /// Only paths starting with this, e.g. /api.
        #[arg(long)]
        path: Option<String>,
        /// Only requests from this caller: a service name or a SPIFFE ID.
        #[arg(long)]
        caller: Option<String>,
        /// Requests per second each sidecar sends at most (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        rate: u64,
        /// One JSON object per request instead of a line of text.
        #[arg(short, long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
        /// The control plane's admin address.
        #[arg(long, default_value = mesh_control_plane::DEFAULT_ADMIN)]
        admin: SocketAddr,
    },
    /// Serve a dashboard of the mesh: the service graph with live edges, and a page per
    /// service (instances, certificates, ejections, routes, who may call it, recent requests
    /// linked to their traces). Ctrl-C stops it.
    Dashboard {
        /// Where the dashboard listens.
        #[arg(long, default_value = "127.0.0.1:15080")]
        listen: SocketAddr,
        /// The control plane's admin address.
        #[arg(long, default_value = mesh_control_plane::DEFAULT_ADMIN)]
        admin: SocketAddr,
        /// The Jaeger UI traces link to (default: the one `meshctl up` started, if any).
        #[arg(long)]
        jaeger_url: Option<String>,
        /// The demo's run directory (where `meshctl up` wrote mesh.json), for its Jaeger.
        #[arg(long, default_value = "target/demo")]
        run_dir: PathBuf,
    },
    /// Print the control plane's manifests for a Kubernetes cluster, as YAML for
    /// `kubectl apply -f -`: namespace mesh-system, its RBAC, the mesh's root (made for this
    /// install unless --ca-cert/--ca-key), configuration, Deployment, Service, the injecting
    /// webhook and the MeshService CRD.
    Install {
        /// The control plane's image.
        #[arg(long, default_value_t = meshctl::install::options::default_control_plane_image())]
        control_plane_image: String,
        /// The image injected sidecars run.
        #[arg(long, default_value_t = meshctl::install::options::default_proxy_image())]
        proxy_image: String,
        /// Control plane replicas.
        #[arg(long, default_value_t = 1)]
        replicas: u16,
        /// The trust domain of every identity.
        #[arg(long, default_value = "mesh.local")]
        trust_domain: String,
        /// An existing root's certificate (PEM), instead of a new one: keep the mesh's root
        /// when installing again (it is in Secret mesh-system/mesh-ca).
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// That root's private key (PEM).
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Also write the root's certificate here: the trust anchor `meshctl inject` takes.
        #[arg(long)]
        output_trust_anchor: Option<PathBuf>,
        /// The URL the API server calls the webhook at, instead of the control plane's Service
        /// (for an API server that cannot reach Services). https:// only.
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// Check the mesh on a Kubernetes cluster: the API server, your rights, the control plane's
    /// resources and readiness, its webhook and CA, and every injected pod's proxy. Each
    /// failure comes with its fix; exits 1 when any check fails.
    Check {
        /// The kubeconfig (default: KUBECONFIG, else ~/.kube/config, else in-cluster).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig's context (default: its current context).
        #[arg(long)]
        context: Option<String>,
        /// The namespace of the webhook's dry-run pod: one you may create pods in.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Add the mesh's sidecar to every pod template of Kubernetes manifests (Pods,
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Lists): the
    /// injected manifests on stdout, what was done to each object on stderr. Pods labelled
    /// mesh.local/inject: disabled are left alone, and so are pods injected already.
    Inject {
        /// The manifests (YAML or JSON, any number of documents); `-` or none for stdin.
        file: Option<PathBuf>,
        /// The mesh's trust anchor (its ca.pem), which sidecars verify the control plane by.
        #[arg(long, value_name = "FILE")]
        trust_anchor: PathBuf,
        /// The trust domain of the mesh's identities.
        #[arg(long, default_value = "mesh.local")]
        trust_domain: String,
        /// The sidecar image (default: ghcr.io/mesh-rs/sidecar:<this version>).
        #[arg(long, value_name = "IMAGE")]
        proxy_image: Option<String>,
        /// imagePullPolicy of the mesh's containers (default: Kubernetes').
        #[arg(long, value_parser = ["Always", "IfNotPresent", "Never"])]
        image_pull_policy: Option<String>,
        /// The control plane's API as pods reach it
        /// (default: mesh-control-plane.mesh-system.svc:15010).
        #[arg(long, value_name = "HOST:PORT")]
        control_plane: Option<String>,
        /// The sidecar's UID, whose connections the redirect leaves alone (default: 65532).
        #[arg(long, value_name = "UID")]
        proxy_uid: Option<u32>,
        /// The sidecar's log filter, for pods without the mesh.local/log-level annotation
        /// (default: info).
        #[arg(long, value_name = "FILTER")]
        log_level: Option<String>,
        /// The OTLP endpoint sidecars export spans to, e.g.
        /// http://jaeger.observability.svc:4317 (default: none, no spans exported).
        #[arg(long, value_name = "URL")]
        tracing_endpoint: Option<String>,
    },
    /// Remove what `meshctl inject` added (containers, volume, annotation) from manifests: the
    /// result on stdout.
    Uninject {
        /// The manifests (YAML or JSON, any number of documents); `-` or none for stdin.
        file: Option<PathBuf>,
    },
    /// Rotate the mesh's root CA: add-root, then use-root once every sidecar trusts it, then
    /// remove-root of the old one once every sidecar renewed its certificate.
    Ca {
        /// The control plane's admin address.
        #[arg(long, global = true, default_value = mesh_control_plane::DEFAULT_ADMIN)]
        admin: SocketAddr,
        /// The control plane's state directory, which holds the admin token that changing the
        /// CA needs (`admin/tokens/control-plane`; the demo's is target/demo/state).
        #[arg(long, global = true, default_value = "target/demo/state")]
        state_dir: PathBuf,
        #[command(subcommand)]
        command: CaCommand,
    },
}

/// The commands are named as operators say them: add-root, use-root, remove-root.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
enum CaCommand {
    /// Generate a new root and add it to the trust bundle.
    AddRoot,
    /// Make a root the signer (refused until every live sidecar trusts it, unless --force).
    UseRoot {
        /// The root's id.
        id: String,
        /// Skip the safety check.
        #[arg(long)]
        force: bool,
    },
    /// Remove a root from the trust bundle (refused while sidecars hold its certificates,
    /// unless --force).
    RemoveRoot {
        /// The root's id.
        id: String,
        /// Skip the safety check.
        #[arg(long)]
        force: bool,
    },
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid lifetime {s:?}"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid lifetime {s:?}: use a number with s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(n * secs))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. 200ms, 30s, 2m"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            service,
            app_port,
            uid,
            proxy_uid,
            instance,
            admin,
            control_plane,
            state_dir,
            network,
            bridge,
            bin_dir,
            ready_timeout,
            command,
        } => {
            let bin_dir = match bin_dir.map_or_else(meshctl::up::UpOptions::default_bin_dir, Ok) {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("meshctl run: {e}");
                    return ExitCode::from(2);
                }
            };
            return ExitCode::from(meshctl::run::run_to_exit(meshctl::run::RunOptions {
                service,
                command,
                app_port,
                uid,
                proxy_uid,
                instance,
                admin,
                control_plane,
                state_dir,
                network,
                bridge,
                state_root: meshctl::netns::bridge::STATE_ROOT.into(),
                sidecar_bin: bin_dir.join("sidecar"),
                ready_timeout,
            }));
        }
        Command::Up {
            config,
            bin_dir,
            load,
            jaeger,
            no_jaeger,
            jaeger_bin,
            jaeger_query,
            transparent,
        } => demo::up(
            &config,
            bin_dir,
            load,
            transparent,
            demo::JaegerChoice {
                wanted: if jaeger {
                    Some(true)
                } else if no_jaeger {
                    Some(false)
                } else {
                    None
                },
                bin: jaeger_bin,
                query: jaeger_query,
            },
        ),
        Command::Loadgen {
            target,
            rate,
            duration,
            concurrency,
            run_dir,
        } => demo::loadgen(target, rate, duration, concurrency, &run_dir),
        Command::Fault {
            service,
            instance,
            latency,
            error_rate,
            error_status,
            clear,
            crash,
            run_dir,
        } => demo::fault(
            &service,
            instance,
            meshctl::fault::FaultChange {
                latency_ms: latency.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                error_rate,
                error_status,
                clear,
                crash,
            },
            &run_dir,
        ),
        Command::DevCerts {
            out,
            trust_domain,
            namespace,
            lifetime,
            services,
        } => dev_certs(
            &out,
            &trust_domain,
            &namespace,
            lifetime.unwrap_or(DEFAULT_LEAF_LIFETIME),
            &services,
        ),
        Command::Status { admin } => status(admin),
        Command::Stat {
            service,
            window,
            watch,
            output,
            admin,
        } => views::stat(admin, service.as_deref(), window, watch, output == "json"),
        Command::Dashboard {
            listen,
            admin,
            jaeger_url,
            run_dir,
        } => views::dashboard(listen, admin, jaeger_url, &run_dir),
        Command::Tap {
            service,
            path,
            caller,
            rate,
            output,
            admin,
        } => views::tap(
            admin,
            &service,
            meshctl::tap::TapQuery {
                path,
                caller,
                rate: Some(rate),
            },
            output == "json",
        ),
        Command::Ca {
            admin,
            state_dir,
            command,
        } => ca(admin, &state_dir, command),
        Command::Install {
            control_plane_image,
            proxy_image,
            replicas,
            trust_domain,
            ca_cert,
            ca_key,
            output_trust_anchor,
            webhook_url,
        } => kubernetes::install(
            &meshctl::install::InstallOptions {
                control_plane_image,
                proxy_image,
                replicas,
                trust_domain,
                root: match (ca_cert, ca_key) {
                    (Some(cert), Some(key)) => meshctl::install::RootSource::Files { cert, key },
                    _ => meshctl::install::RootSource::Generate,
                },
            },
            webhook_url,
            output_trust_anchor.as_deref(),
        ),
        Command::Check {
            kubeconfig,
            context,
            namespace,
        } => {
            return kubernetes::check(
                mesh_kube::connect::Target {
                    kubeconfig,
                    context,
                },
                mesh_kube::check::CheckOptions { namespace },
            );
        }
        Command::Inject {
            file,
            trust_anchor,
            trust_domain,
            proxy_image,
            image_pull_policy,
            control_plane,
            proxy_uid,
            log_level,
            tracing_endpoint,
        } => inject(
            &meshctl::inject::InjectOptions {
                trust_anchor,
                trust_domain,
                proxy_image,
                image_pull_policy,
                control_plane,
                proxy_uid,
                log_level,
                tracing_endpoint,
            },
            file.as_deref(),
        ),
        Command::Uninject { file } => meshctl::inject::uninject(file.as_deref())
            .map(|output| print!("{output}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("meshctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the injected manifests, then the report; nothing at all when injection fails.
fn inject(options: &meshctl::inject::InjectOptions, file: Option<&Path>) -> anyhow::Result<()> {
    let injection = meshctl::inject::inject(options, file)?;
    print!("{}", injection.output);
    eprint!("{}", injection.report());
    Ok(())
}

fn dev_certs(
    out: &std::path::Path,
    trust_domain: &str,
    namespace: &str,
    lifetime: Duration,
    services: &[String],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let ca = DevCa::load_or_generate(out, trust_domain)?;
    ca.write_to(out)?;
    println!("trust bundle  {}", out.join("ca.pem").display());
    for service in services {
        let leaf = ca.issue_service(namespace, service, lifetime)?;
        let (cert, _key) = leaf.write_to(out, service)?;
        println!(
            "{:<13} {} ({})",
            service,
            cert.display(),
            ca.spiffe_id(namespace, service)?
        );
    }
    Ok(())
}

/// Sends one admin request and returns the body, or the server's error message.
fn admin(addr: SocketAddr, method: Method, path: &str) -> anyhow::Result<serde_json::Value> {
    admin_with_token(addr, method, path, None)
}

/// As [`admin`], with the admin token.
fn admin_with_token(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime
        .block_on(admin_client::request_with_token(addr, method, path, token))
        .map_err(|e| meshctl::stat::ViewError::ControlPlaneDown {
            addr,
            reason: meshctl::stat::short_reason(&e),
        })?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("{status}: unreadable answer from {addr}: {e}"))?;
    if !status.is_success() {
        let message = value
            .get("error")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("no message");
        anyhow::bail!("{status}: {message}");
    }
    Ok(value)
}

fn status(addr: SocketAddr) -> anyhow::Result<()> {
    let value = admin(addr, Method::GET, "/status")?;
    let status: meshctl::status::Status = serde_json::from_value(value)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    print!("{}", meshctl::status::render(&status, now));
    Ok(())
}

fn ca(addr: SocketAddr, state_dir: &Path, command: CaCommand) -> anyhow::Result<()> {
    let query = |force: bool| if force { "?force=true" } else { "" };
    let token_file = mesh_control_plane::admin_token_path(state_dir);
    let token = std::fs::read_to_string(&token_file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the admin token {}: {e} (pass the control plane's --state-dir)",
            token_file.display()
        )
    })?;
    let admin = |addr, method, path: &str| admin_with_token(addr, method, path, Some(&token));
    match command {
        CaCommand::AddRoot => {
            let value = admin(addr, Method::POST, "/ca/roots")?;
            let id = value
                .get("id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?");
            println!("added root {id} to the trust bundle");
            println!("once every sidecar runs the new bundle: meshctl ca use-root {id}");
        }
        CaCommand::UseRoot { id, force } => {
            admin(
                addr,
                Method::POST,
                &format!("/ca/signer/{id}{}", query(force)),
            )?;
            println!("root {id} now signs; sidecars renew their certificates from it");
        }
        CaCommand::RemoveRoot { id, force } => {
            admin(
                addr,
                Method::DELETE,
                &format!("/ca/roots/{id}{}", query(force)),
            )?;
            println!("removed root {id} from the trust bundle");
        }
    }
    Ok(())
}
