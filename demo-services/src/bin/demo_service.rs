//! `demo-service SERVICE --listen ADDR --outbound ADDR --data-dir DIR`: one instance of a
//! commerce demo service, run behind its sidecar by `meshctl up`. With `--transparent` instead
//! of `--outbound`, it calls other services by name (`http://inventory/...`) and knows of no
//! sidecar: the transparent mesh's hosts file and netfilter rules bring the calls to it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use demo_services::shop::faults::Faults;
use demo_services::shop::{App, Calls, Config, Service, serve_until};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "demo-service", about = "One service of the commerce demo")]
struct Args {
    /// Which service to run.
    #[arg(value_enum)]
    service: Service,
    /// Where this app serves HTTP/1.1 and h2c.
    #[arg(long)]
    listen: String,
    /// The sidecar's outbound listener (`host:port`): every call to another service goes there.
    #[arg(
        long,
        required_unless_present = "transparent",
        conflicts_with = "transparent"
    )]
    outbound: Option<String>,
    /// Call other services at `http://<service>/`, the name resolved by the system resolver
    /// (the hosts file maps it to the service's virtual address), with no sidecar address.
    #[arg(long)]
    transparent: bool,
    /// Directory of the service's SQLite file, `<data-dir>/<service>.sqlite`.
    #[arg(long)]
    data_dir: PathBuf,
    /// Name shown in `x-demo-instance` and logs (default: the service name).
    #[arg(long)]
    instance: Option<String>,
    /// Injected latency before each business request, in milliseconds (at most 60000).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of business requests answered with `--error-status` (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Status of injected errors (500 to 599).
    #[arg(long, default_value_t = 503)]
    error_status: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MESH_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for people; log files stay plain.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // clap lets exactly one of `--outbound` and `--transparent` through.
    let calls = match args.outbound {
        Some(outbound) => Calls::Sidecar { outbound },
        None => Calls::Transparent,
    };
    let mut config = Config::new(args.service, calls, args.data_dir);
    if let Some(instance) = args.instance {
        config.instance = instance;
    }
    config.faults = Faults {
        latency_ms: args.latency_ms,
        error_rate: args.error_rate,
        error_status: args.error_status,
        fail_next: 0,
    };
    let instance = config.instance.clone();
    let app = App::open(config).await?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(service = %args.service, %instance, %addr, "listening");
    // The bound address on stdout, for whoever started us with port 0.
    println!("demo-service {} listening on {addr}", args.service);

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // SIGTERM or SIGINT stop accepting and let in-flight requests finish, so a saga that is
    // half-way through reserving and charging completes before the process goes.
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
            _ = interrupt.recv() => tracing::info!("SIGINT: draining"),
        }
    };
    tokio::select! {
        drained = serve_until(listener, app.clone(), stop) => {
            if drained {
                tracing::info!("stopped");
                Ok(ExitCode::SUCCESS)
            } else {
                tracing::warn!(
                    "requests still in flight after {:?}; stopping anyway",
                    demo_services::server::DRAIN_LIMIT
                );
                Ok(ExitCode::FAILURE)
            }
        }
        () = app.crash_requested() => {
            tracing::warn!("crashing on request");
            std::process::exit(1);
        }
    }
}
