//! Target: an EndpointSlice edit reaches 1,000 watching sidecars with p99 under 1 s while the
//! control plane in Kubernetes mode holds 1,000 Services and 10,000 endpoints from a real API
//! server. Also reports the first sync's time and the control plane's memory.
//!
//! Needs the test cluster's binaries (`scripts/build-kube.sh`). Run:
//! `cargo build --release -p mesh-benches && target/release/kube-discovery-scale`
//! (`--quick`: 40 Services and 50 watchers, the smoke run). Exits non-zero when the target is
//! missed or any watcher missed a change.
//!
//! Writes `kube-discovery.md` and `kube-discovery.json` to `--out` (default `benches/results`;
//! with `--quick` only when `--out` is given).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mesh_benches::kube_discovery::{Settings, run};

/// The control plane in Kubernetes mode at cluster scale.
#[derive(Debug, Parser)]
#[command(name = "kube-discovery-scale")]
struct Args {
    /// The smoke run: 40 Services, 50 watchers, 2 changes.
    #[arg(long)]
    quick: bool,
    /// Services in the cluster.
    #[arg(long)]
    services: Option<usize>,
    /// Watching sidecars.
    #[arg(long)]
    watchers: Option<usize>,
    /// Services each frontend calls (each watcher's snapshot carries their endpoints).
    #[arg(long)]
    calls: Option<usize>,
    /// Where to write kube-discovery.md and kube-discovery.json.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut settings = if args.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    if let Some(n) = args.services {
        settings.services = n.max(settings.frontends + 1);
    }
    if let Some(n) = args.calls {
        settings.calls_per_frontend = n.clamp(1, settings.services - settings.frontends);
    }
    if let Some(n) = args.watchers {
        settings.watchers = n.max(1);
    }
    settings.command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = match run(&settings).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("kube-discovery-scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let markdown = report.markdown();
    println!("{markdown}");
    let out = args
        .out
        .or_else(|| (!args.quick).then(|| PathBuf::from("benches/results")));
    if let Some(dir) = out {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        for (file, text) in [
            ("kube-discovery.md", markdown),
            ("kube-discovery.json", json),
        ] {
            if let Err(e) = std::fs::write(dir.join(file), text) {
                eprintln!(
                    "kube-discovery-scale: write {}: {e}",
                    dir.join(file).display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if report.met() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
