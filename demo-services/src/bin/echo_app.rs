//! `echo-app --name inventory --listen 127.0.0.1:8082`: the echo app as a process.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;

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
    tokio::select! {
        () = demo_services::server::serve(listener, move |req| {
            let name = name.clone();
            async move { demo_services::echo::handle(&name, req).await }
        }) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
