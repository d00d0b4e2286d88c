//! Chaos under load: faults in the mesh while open-loop traffic runs through it.
//!
//! Run: `cargo build --release -p mesh-sidecar -p mesh-control-plane -p mesh-testkit
//!       -p mesh-benches && target/release/chaos [--quick] [--rate N] [--seconds S]`
//!
//! Prints the report and writes it to `<out>/chaos.md` (`chaos-quick.md` with `--quick`).
//! Exits 1 when any request failed (unless `--report-only`) or when a fault could not be
//! applied (then the run proves nothing).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_benches::chaos::{self, Options, Plan};

#[derive(Parser)]
#[command(
    name = "chaos",
    about = "Kills sidecars, an app and the control plane, edits policy and rotates the root CA \
             under open-loop load; counts every failed request by cause"
)]
struct Args {
    /// 200 requests a second for 15 s instead of 1,000 for 60 s; every fault still applied.
    #[arg(long)]
    quick: bool,
    /// Requests a second instead of the plan's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    rate: Option<u32>,
    /// Seconds of load instead of the plan's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(5..=3_600))]
    seconds: Option<u64>,
    /// Policy edits over the run instead of 100.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    edits: Option<u32>,
    /// The destination's retries.retry_on (default: the mesh's default conditions).
    #[arg(long, value_delimiter = ',')]
    retry_on: Option<Vec<String>>,
    /// Exit 0 even when requests failed (still 1 when a fault could not be applied).
    #[arg(long)]
    report_only: bool,
    /// Directory for chaos.md.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// Keep the mesh's configuration, state and logs here instead of a temporary directory.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{}: no parent directory", exe.display()))?
        .to_owned();
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(rate) = args.rate {
        plan.rate = rate;
    }
    if let Some(seconds) = args.seconds {
        plan.duration = Duration::from_secs(seconds);
    }
    if let Some(edits) = args.edits {
        plan.edits = edits;
    }
    let options = Options {
        mode: if args.quick { "quick" } else { "full" }.to_owned(),
        plan,
        bin_dir,
        work_dir: args.work_dir,
        retry_on: args
            .retry_on
            .unwrap_or_else(|| chaos::RETRY_ON.map(str::to_owned).to_vec()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    // Ctrl-C drops the run, and with it every process it started.
    let report = runtime.block_on(async {
        tokio::select! {
            report = chaos::run(options) => report.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })?;
    let markdown = report.markdown();
    println!("{markdown}");
    std::fs::create_dir_all(&args.out)?;
    let name = if args.quick {
        "chaos-quick.md"
    } else {
        "chaos.md"
    };
    let path = args.out.join(name);
    std::fs::write(&path, &markdown)?;
    eprintln!("wrote {}", path.display());
    if !report.faults_applied() {
        eprintln!("chaos: a fault was not applied or a check failed; the run proves nothing");
        return Ok(ExitCode::FAILURE);
    }
    if report.failed() > 0 && !args.report_only {
        eprintln!("chaos: {} requests failed", report.failed());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
