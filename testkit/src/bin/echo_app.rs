//! `echo-app --name inventory --listen 127.0.0.1:8082`: the echo app as a process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// How long requests in flight get to finish after SIGTERM or Ctrl-C.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "echo-app",
    about = "Describes or echoes each HTTP request it receives"
)]
struct Args {
    /// Service name to report in responses.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    println!("{} listening on {}", args.name, listener.local_addr()?);
    let name: Arc<str> = args.name.into();
    let mut terminate = signal(SignalKind::terminate())?;
    // SIGTERM or Ctrl-C stop accepting; requests in flight finish first.
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let handler = move |req| {
        let name = name.clone();
        async move { mesh_testkit::echo::handle(&name, req).await }
    };
    if !mesh_testkit::server::serve(listener, handler, stop, DRAIN_LIMIT).await {
        anyhow::bail!("requests still in flight after {DRAIN_LIMIT:?}");
    }
    Ok(())
}
