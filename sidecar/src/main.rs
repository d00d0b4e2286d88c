//! `sidecar --config FILE`: runs one sidecar from a bootstrap file; or, with
//! `MESH_SIDECAR_BOOTSTRAP` set to the bootstrap YAML itself (what a Kubernetes pod spec sets),
//! from that.
//! `sidecar redirect ...`: installs the nftables rules that send the app's TCP through the
//! sidecar (see `mesh_sidecar::redirect`).
//!
//! Exit codes: 0 after a clean drain, 2 for a bad configuration or flag (every error is printed
//! with its field path or flag), 1 for anything else that stops the process.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_sidecar::Listeners;
use mesh_sidecar::config::{Config, InvalidConfig, Origin};
use mesh_sidecar::redirect::{self, Done, RedirectError};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's allocator: a TCP stream's chunks are allocated on one task and
/// freed on another, at a rate where glibc's heap keeps growing and trimming (`brk`, page faults)
/// and its larger blocks are mapped and unmapped each time (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sidecar",
    version,
    about = "The mesh's per-instance proxy",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Bootstrap file (YAML). Instead, MESH_SIDECAR_BOOTSTRAP may hold the YAML itself.
    #[arg(long, short, env = "MESH_SIDECAR_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `mesh_sidecar=debug`.
    #[arg(long, env = "MESH_LOG", default_value = "info")]
    log: String,
    /// Log lines as JSON objects instead of text.
    #[arg(long, env = "MESH_LOG_JSON")]
    log_json: bool,
    /// Worker threads that serve traffic (default 1: the sidecar runs on a single thread, the
    /// cheapest per request and the lowest tail at a pod's load). Give more to a sidecar that
    /// has more than a core to itself and carries more than one core's worth of traffic.
    #[arg(long, env = "MESH_SIDECAR_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

#[derive(Subcommand)]
enum Command {
    /// Sends this network namespace's TCP through the sidecar with nftables rules (one table,
    /// `inet mesh_redirect`, replaced as a whole); needs root or NET_ADMIN.
    Redirect(redirect::Options),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Redirect(options)) = &args.command {
        return run_redirect(options);
    }
    let bootstrap = match Bootstrap::choose(args.config, std::env::var_os(BOOTSTRAP_VARIABLE)) {
        Ok(bootstrap) => bootstrap,
        Err(why) => {
            eprintln!("sidecar: {why}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr, coloured only when a person is watching.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }

    let mut config = match bootstrap.load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("sidecar: {err}");
            return ExitCode::from(2);
        }
    };
    // The standard OpenTelemetry variables fill in what the file leaves unset.
    config.tracing = config.tracing.with_env(|name| std::env::var(name).ok());
    let credentials = match config.load_credentials() {
        Ok(credentials) => credentials,
        Err(mut err) => {
            err.origin = Some(bootstrap.origin());
            eprintln!("sidecar: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match build_runtime(args.workers) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sidecar: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = Listeners::bind(&config.listen, config.gateway.is_none()).await?;
        mesh_sidecar::run(config, credentials, listeners, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sidecar: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The environment variable that may hold the bootstrap YAML itself.
const BOOTSTRAP_VARIABLE: &str = "MESH_SIDECAR_BOOTSTRAP";

/// Where this sidecar's bootstrap comes from: a file, or the YAML in `MESH_SIDECAR_BOOTSTRAP`.
enum Bootstrap {
    File(PathBuf),
    Inline(String),
}

impl Bootstrap {
    /// The one bootstrap given; both, neither, or a variable that is not UTF-8 is an error
    /// naming what to set.
    fn choose(file: Option<PathBuf>, inline: Option<OsString>) -> Result<Self, String> {
        match (file, inline) {
            (Some(_), Some(_)) => Err(format!(
                "both --config (or MESH_SIDECAR_CONFIG) and {BOOTSTRAP_VARIABLE} are set: \
                 give the bootstrap one way"
            )),
            (Some(file), None) => Ok(Bootstrap::File(file)),
            (None, Some(inline)) => inline
                .into_string()
                .map(Bootstrap::Inline)
                .map_err(|_| format!("{BOOTSTRAP_VARIABLE} is not UTF-8 text")),
            (None, None) => Err(format!(
                "--config FILE (or MESH_SIDECAR_CONFIG) is required, or the bootstrap YAML \
                 itself in {BOOTSTRAP_VARIABLE}"
            )),
        }
    }

    fn load(&self) -> Result<Config, InvalidConfig> {
        match self {
            Bootstrap::File(path) => Config::from_file(path),
            Bootstrap::Inline(text) => Config::from_variable(BOOTSTRAP_VARIABLE, text),
        }
    }

    fn origin(&self) -> Origin {
        match self {
            Bootstrap::File(path) => Origin::File(path.clone()),
            Bootstrap::Inline(_) => Origin::Variable(BOOTSTRAP_VARIABLE),
        }
    }
}

/// `sidecar redirect`: the script on stdout for `--dry-run`, a line on stderr otherwise.
fn run_redirect(options: &redirect::Options) -> ExitCode {
    match redirect::run(options) {
        Ok(Done::Printed(script)) => {
            print!("{script}");
            ExitCode::SUCCESS
        }
        Ok(Done::Installed) => {
            eprintln!(
                "sidecar redirect: table {} installed: outbound TCP to port {}, inbound to port {}",
                redirect::TABLE,
                options.outbound_port,
                options.inbound_port
            );
            ExitCode::SUCCESS
        }
        Ok(Done::Removed) => {
            eprintln!("sidecar redirect: table {} removed", redirect::TABLE);
            ExitCode::SUCCESS
        }
        Err(err @ RedirectError::Flag(_)) => {
            eprintln!("sidecar redirect: {err}");
            ExitCode::from(2)
        }
        Err(err @ RedirectError::Nft(_)) => {
            eprintln!("sidecar redirect: {err}");
            ExitCode::FAILURE
        }
    }
}

/// One worker (the default) means a current-thread runtime: every task, timer and socket is
/// served by the thread that runs `main`, with no cross-thread wake-ups. More workers share work
/// by stealing. The default is not one worker per CPU: a sidecar shares its node with its app
/// and every other pod's sidecar, and measured on two cores, two workers added 1.75–2.0× Envoy's
/// p99 at 1,000 requests a second where one worker added 0.3–0.5× (docs/performance.md).
fn build_runtime(workers: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    match workers.unwrap_or(1) {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the sidecar");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
