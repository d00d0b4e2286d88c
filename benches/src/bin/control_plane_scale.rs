//! Targets: a policy change reaches 10,000 watching sidecars with p99 under 1 s, and the CA
//! signs at least 2,000 CSRs per second over gRPC+TLS. Also reports the control plane's memory
//! idle and with the watchers.
//!
//! Run: `cargo build --release -p mesh-benches && target/release/control-plane-scale`
//! (`--quick`: 200 watchers and 1 s of signing, the CI smoke run; exits non-zero when any
//! watcher missed a change, a stream or call failed, or nothing was signed).
//!
//! Each watcher count runs in a fresh process (this binary again, with `--child-scale N`,
//! printing its results as JSON), so each memory baseline is clean: the allocator keeps what an
//! earlier count freed. Signing runs in the parent afterwards.
//!
//! Writes `control-plane.md` and `control-plane.json` to `--out` (default `benches/results`;
//! with `--quick` only when `--out` is given, so the smoke run leaves the full results alone).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_benches::control_plane::report::{Machine, Scale};
use mesh_benches::control_plane::{self, BenchError, Settings};

/// The control plane at scale: push latency to N watchers, memory, CSR signing rate.
#[derive(Debug, Parser)]
#[command(name = "control-plane-scale")]
struct Args {
    /// Watcher counts, each on a fresh control plane.
    #[arg(long, value_delimiter = ',')]
    watchers: Option<Vec<usize>>,
    /// The CI smoke run: 200 watchers, 2 changes, 1 s of signing.
    #[arg(long)]
    quick: bool,
    /// Where to write control-plane.md and control-plane.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The control plane's configuration poll interval, in ms (default: the control plane's).
    #[arg(long)]
    config_poll_ms: Option<u64>,
    /// Policy changes per watcher count.
    #[arg(long)]
    changes: Option<usize>,
    /// Seconds of Identity.Certify calls.
    #[arg(long)]
    sign_secs: Option<f64>,
    /// Certify calls in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Watch streams per TLS connection.
    #[arg(long)]
    streams_per_channel: Option<usize>,
    /// Internal: measure only this watcher count and print it as JSON.
    #[arg(long, hide = true)]
    child_scale: Option<usize>,
}

fn settings(args: &Args) -> Settings {
    let mut s = if args.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    if let Some(w) = &args.watchers {
        s.watchers.clone_from(w);
    }
    if let Some(ms) = args.config_poll_ms {
        s.config_poll = Duration::from_millis(ms.max(1));
    }
    if let Some(c) = args.changes {
        s.changes = c;
    }
    if let Some(secs) = args.sign_secs {
        s.sign_for = Duration::from_secs_f64(secs.max(0.1));
    }
    if let Some(c) = args.concurrency {
        s.sign_concurrency = c.max(1);
    }
    if let Some(p) = args.streams_per_channel {
        s.streams_per_channel = p.max(1);
    }
    s.command = std::env::args().collect::<Vec<_>>().join(" ");
    s.process_per_count = true;
    s
}

/// Why a watcher count's process failed.
#[derive(Debug, thiserror::Error)]
enum ChildError {
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("the {0}-watcher process failed ({1})")]
    Failed(usize, std::process::ExitStatus),
    #[error("the {0}-watcher process printed no result: {1}")]
    Output(usize, serde_json::Error),
}

/// Runs one watcher count in a fresh process of this binary, with the same arguments.
async fn scale_in_child(n: usize) -> Result<Scale, ChildError> {
    let exe = std::env::current_exe().map_err(|e| ChildError::Spawn("self".into(), e))?;
    // Progress and errors go straight to our stderr; only the result comes back on stdout.
    let output = tokio::process::Command::new(&exe)
        .args(std::env::args().skip(1))
        .args(["--child-scale", &n.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| ChildError::Spawn(exe.display().to_string(), e))?
        .wait_with_output()
        .await
        .map_err(|e| ChildError::Spawn(exe.display().to_string(), e))?;
    if !output.status.success() {
        return Err(ChildError::Failed(n, output.status));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| ChildError::Output(n, e))
}

/// The child's part: one watcher count, printed as JSON.
async fn child(settings: &Settings, n: usize) -> ExitCode {
    let result = match control_plane::prepare(settings) {
        Ok(_) => control_plane::scale(settings, n).await,
        Err(e) => Err(e),
    };
    match result.map(|scale| serde_json::to_string(&scale)) {
        Ok(Ok(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("control-plane-scale: JSON: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("control-plane-scale ({n} watchers): {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every watcher count in its own process, then signing here.
async fn run(settings: &Settings) -> Result<control_plane::report::Report, String> {
    let machine = Machine::now();
    let nofile = control_plane::prepare(settings).map_err(|e| e.to_string())?;
    let mut scales = Vec::with_capacity(settings.watchers.len());
    for &n in &settings.watchers {
        scales.push(scale_in_child(n).await.map_err(|e| e.to_string())?);
    }
    control_plane::finish(settings, machine, nofile, scales)
        .await
        .map_err(|e| e.to_string())
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<(), BenchError> {
    let io = |what| move |source| BenchError::Io { what, source };
    std::fs::create_dir_all(dir).map_err(io("create the output directory"))?;
    std::fs::write(dir.join(name), contents).map_err(io("write a result file"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings = settings(&args);
    if let Some(n) = args.child_scale {
        return child(&settings, n).await;
    }
    let report = match run(&settings).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("control-plane-scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let markdown = report.markdown();
    println!("{markdown}");
    let out = match (&args.out, args.quick) {
        (Some(out), _) => Some(out.clone()),
        (None, false) => Some(PathBuf::from("benches/results")),
        (None, true) => None,
    };
    if let Some(out) = out {
        let json = match serde_json::to_string_pretty(&report) {
            Ok(json) => json,
            Err(e) => {
                eprintln!("control-plane-scale: JSON: {e}");
                return ExitCode::FAILURE;
            }
        };
        let written = write(&out, "control-plane.md", &markdown)
            .and_then(|()| write(&out, "control-plane.json", &format!("{json}\n")));
        if let Err(e) = written {
            eprintln!("control-plane-scale: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}/control-plane.{{md,json}}", out.display());
    }
    if args.quick && !report.failures.is_empty() {
        for f in &report.failures {
            eprintln!("failed: {f}");
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
