//! `control-plane`: the mesh's CA, registry and configuration server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh_control_plane::ca::ServingName;
use mesh_control_plane::{KubernetesOptions, Listeners, Options, WebhookOptions, config};

#[derive(Parser)]
#[command(
    name = "control-plane",
    version,
    about = "The mesh's control plane: CA, registry and configuration pushed to sidecars",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration directory: mesh.yaml and services/*.yaml.
    #[arg(long, required = true)]
    config_dir: Option<PathBuf>,
    /// The service files' directory, when not CONFIG_DIR/services (such as a second
    /// ConfigMap's mount in Kubernetes).
    #[arg(long, value_name = "DIR")]
    services_dir: Option<PathBuf>,
    /// The state directory: CA, trust bundle (ca.pem) and join tokens.
    #[arg(long, required = true)]
    state_dir: Option<PathBuf>,
    /// The gRPC API's address.
    #[arg(long, default_value = mesh_control_plane::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The admin HTTP server's address.
    #[arg(long, default_value = mesh_control_plane::DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// Serve the injecting admission webhook over HTTPS on this address (path /inject).
    #[arg(long, value_name = "ADDR")]
    webhook: Option<SocketAddr>,
    /// The webhook certificate's names, comma-separated: DNS names, and IP addresses (the
    /// host the API server dials must be among them).
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        default_value = mesh_control_plane::DEFAULT_WEBHOOK_NAMES,
        value_parser = parse_serving_name
    )]
    webhook_names: Vec<ServingName>,
    /// The sidecar image the webhook injects [default: ghcr.io/mesh-rs/sidecar:<version>].
    #[arg(long, value_name = "IMAGE")]
    proxy_image: Option<String>,
    /// The control plane address (HOST:PORT) injected sidecars dial.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = mesh_inject::DEFAULT_CONTROL_PLANE,
        value_parser = parse_host_port
    )]
    sidecar_control_plane: String,
    /// The OTLP endpoint injected sidecars export spans to, such as
    /// http://jaeger.observability.svc:4317 [default: none, no spans exported].
    #[arg(long, value_name = "URL", env = "MESH_TRACING_ENDPOINT", value_parser = parse_url)]
    tracing_endpoint: Option<String>,
    /// A directory holding ca.pem and ca-key.pem (such as a mounted Secret): on a start whose
    /// state directory has no CA yet, that root becomes the mesh's.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// Kubernetes mode: services are declared by MeshService objects of the mesh's namespace,
    /// instead of service files.
    #[arg(long, conflicts_with = "services_dir")]
    kubernetes: bool,
    /// The cluster's kubeconfig in Kubernetes mode [default: the in-cluster ServiceAccount, else
    /// KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "FILE", requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig [default: its current context].
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    kube_context: Option<String>,
    /// The control plane's own namespace, where its CA Secret and Lease are.
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE", default_value = mesh_kube::names::NAMESPACE)]
    kube_namespace: String,
    /// This replica's name, the Lease's holder when it leads [default: the host name].
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    replica: Option<String>,
    /// The audience sidecars' service-account tokens must be issued for.
    #[arg(long, value_name = "AUDIENCE", default_value = mesh_inject::names::TOKEN_AUDIENCE)]
    token_audience: String,
    /// How long the leader's Lease holds without renewal: how long leader-only work waits
    /// after a leader dies without releasing it.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How often the leader renews its Lease, and the other replicas look at it.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    lease_renew: Duration,
    /// The `gatewayClassName` of the Gateways (gateway.networking.k8s.io/v1) that configure the
    /// mesh's gateways.
    #[arg(long, value_name = "NAME", default_value = mesh_kube::names::GATEWAY_CLASS)]
    gateway_class: String,
}

fn parse_url(text: &str) -> Result<String, String> {
    let scheme = text.starts_with("http://") || text.starts_with("https://");
    if scheme && !text.contains(char::is_whitespace) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an http(s) URL (such as http://jaeger.observability.svc:4317)"
        ))
    }
}

fn parse_host_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(text.to_owned())
        }
        _ => Err(format!(
            "{text:?} is not HOST:PORT (such as {})",
            mesh_inject::DEFAULT_CONTROL_PLANE
        )),
    }
}

fn parse_serving_name(text: &str) -> Result<ServingName, String> {
    ServingName::parse(text.trim()).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// Checks a configuration directory and prints every error as FILE: PATH: MESSAGE.
    Validate {
        /// The configuration directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Validate { dir }) = cli.command {
        return validate(&dir);
    }
    init_logging();
    let (Some(config_dir), Some(state_dir)) = (cli.config_dir, cli.state_dir) else {
        eprintln!("control-plane: --config-dir and --state-dir are required");
        return ExitCode::FAILURE;
    };
    if !config_dir.is_dir() {
        eprintln!(
            "control-plane: --config-dir {}: no such directory (it holds mesh.yaml and services/; \
             see docs/control-plane.md)",
            config_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("control-plane: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = Options::new(config_dir.clone(), state_dir);
    options.ca_dir = cli.ca_dir;
    options.services_dir = cli.services_dir;
    if cli.kubernetes {
        let mut kubernetes = KubernetesOptions::new(cli.kubeconfig);
        kubernetes.context = cli.kube_context;
        kubernetes.namespace = cli.kube_namespace;
        if let Some(replica) = cli.replica {
            kubernetes.replica = replica;
        }
        kubernetes.audience = cli.token_audience;
        kubernetes.gateway_class = cli.gateway_class;
        kubernetes.election = mesh_control_plane::ElectionOptions {
            lease_duration: cli.lease_duration,
            renew_every: cli.lease_renew,
        };
        options.kubernetes = Some(kubernetes);
    }
    options.webhook = WebhookOptions {
        names: cli.webhook_names,
        proxy_image: cli.proxy_image,
        sidecar_control_plane: cli.sidecar_control_plane,
        tracing_endpoint: cli.tracing_endpoint,
    };
    let result = runtime.block_on(async {
        let mut listeners = Listeners::bind(cli.listen, cli.admin).await?;
        if let Some(addr) = cli.webhook {
            listeners = listeners.bind_webhook(addr).await?;
        }
        let mut cp = mesh_control_plane::start(options, listeners).await?;
        let mut line = format!(
            "control-plane listening api={} admin={}",
            cp.api_addr(),
            cp.admin_addr()
        );
        if let Some(webhook) = cp.webhook_addr() {
            line.push_str(&format!(" webhook={webhook}"));
        }
        println!("{line}");
        tokio::select! {
            () = signal() => cp.stop().await,
            failed = cp.failed() => {
                failed?;
                cp.stop().await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ mesh_control_plane::Error::Config(_)) => {
            eprintln!("control-plane: {}: {e}", config_dir.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(dir: &std::path::Path) -> ExitCode {
    match config::load(dir) {
        Ok(config) => {
            let gateways: Vec<&str> = config.gateways.keys().map(String::as_str).collect();
            println!(
                "{}: valid: trust domain {}, namespace {}, {} services, {} gateway{}{}",
                dir.display(),
                config.trust_domain,
                config.namespace,
                config.services.len(),
                gateways.len(),
                if gateways.len() == 1 { "" } else { "s" },
                if gateways.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", gateways.join(", "))
                },
            );
            ExitCode::SUCCESS
        }
        Err(invalid) => {
            for e in &invalid.errors {
                let file = dir.join(&e.file);
                if e.path.is_empty() {
                    println!("{}: {}", file.display(), e.message);
                } else {
                    println!("{}: {}: {}", file.display(), e.path, e.message);
                }
            }
            let n = invalid.errors.len();
            eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file (`meshctl up` writes one) gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Completes on SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}
