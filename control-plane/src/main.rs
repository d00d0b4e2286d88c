//! `control-plane`: the mesh's CA, registry and configuration server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_control_plane::{Listeners, Options, config};

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
    /// The state directory: CA, trust bundle (ca.pem) and join tokens.
    #[arg(long, required = true)]
    state_dir: Option<PathBuf>,
    /// The gRPC API's address.
    #[arg(long, default_value = mesh_control_plane::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The admin HTTP server's address.
    #[arg(long, default_value = mesh_control_plane::DEFAULT_ADMIN)]
    admin: SocketAddr,
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
    let result = runtime.block_on(async {
        let listeners = Listeners::bind(cli.listen, cli.admin).await?;
        let (api, admin) = (listeners.api.local_addr(), listeners.admin.local_addr());
        let mut cp =
            mesh_control_plane::start(Options::new(config_dir.clone(), state_dir), listeners)
                .await?;
        if let (Ok(api), Ok(admin)) = (api, admin) {
            println!("control-plane listening api={api} admin={admin}");
        }
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
            println!(
                "{}: valid: trust domain {}, namespace {}, {} services",
                dir.display(),
                config.trust_domain,
                config.namespace,
                config.services.len()
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
