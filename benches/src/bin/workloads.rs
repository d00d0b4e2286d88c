//! Workloads beyond keep-alive requests (a new connection per request, 1 MiB bodies, gRPC,
//! 1,000 destinations, 10,000 idle connections), each through direct, our sidecar pair and an Envoy pair in the same
//! run.
//!
//! Run: `cargo build --release -p mesh-sidecar -p mesh-benches &&
//!       target/release/workloads [--quick] [--only new-connection,large-bodies,grpc-unary,grpc-stream,destinations,idle-connections]
//!       [--idle-connections 10000] [--out benches/results]`
//!
//! The app is the `datapath` binary beside this one (`--serve-app`); Envoy comes from
//! `target/bench-venv` as for `datapath`. A full run exits 0 (it is a measurement); `--quick`
//! exits 1 when any configuration failed to start or saw an error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mesh_benches::datapath::workloads::{self, Workload, WorkloadOptions};
use mesh_benches::datapath::{self, Plan, Topology};

#[derive(Parser)]
#[command(
    name = "workloads",
    about = "Workloads beyond keep-alive: direct vs our sidecars vs Envoy"
)]
struct Args {
    /// Smoke run: one short round per workload; exits 1 on any error or failed start.
    #[arg(long)]
    quick: bool,
    /// Directory for workloads.md and workloads.json (workloads-quick.* with --quick).
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// The Envoy binary to use instead of the one in target/bench-venv.
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Workloads to run, in order: any of new-connection, large-bodies, grpc-unary,
    /// grpc-stream, destinations, idle-connections.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "new-connection,large-bodies,grpc-unary,grpc-stream,destinations,idle-connections"
    )]
    only: Vec<String>,
    /// Configurations to measure, in round order: any of direct, ours, envoy.
    #[arg(long, value_delimiter = ',', default_value = "direct,ours,envoy")]
    configurations: Vec<String>,
    /// Rounds instead of the plan's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: Option<u32>,
    /// Connections idle-connections holds open (default 10,000; 1,000 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    idle_connections: Option<u64>,
    /// Seconds of each phase per configuration and round, instead of the plan's (long phases
    /// leave time to profile a proxy at the fixed rate).
    #[arg(long, value_parser = datapath::parse_phase_seconds)]
    phase_seconds: Option<std::time::Duration>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("workloads: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let setup = datapath::Setup::locate(args.envoy.clone())?;
    let workloads = args
        .only
        .iter()
        .map(|w| w.parse::<Workload>())
        .collect::<Result<Vec<_>, _>>()?;
    let topologies = args
        .configurations
        .iter()
        .map(|t| match t.parse::<Topology>()? {
            t @ (Topology::Direct | Topology::Ours | Topology::Envoy) => Ok(t),
            other => anyhow::bail!(
                "--configurations: {} is not measured here; use direct, ours or envoy",
                other.name()
            ),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
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
    let harness = setup.bin_dir.join("datapath");
    let options = WorkloadOptions {
        mode: if args.quick { "quick" } else { "full" }.to_owned(),
        plan,
        workloads,
        topologies,
        harness,
        bin_dir: setup.bin_dir,
        envoy: setup.envoy,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        idle_connections: args.idle_connections.map(|n| n as usize),
    };
    let report = datapath::run_interruptible(workloads::run(options))?;
    datapath::write_report(
        &args.out,
        "workloads",
        args.quick,
        &report.markdown(),
        &report,
    )?;
    if args.quick && report.has_failures() {
        eprintln!("workloads --quick: a configuration failed or saw errors");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
