//! Chaos under load: the control plane, a caller's sidecar and three instances of a
//! destination, all real processes with certificates from the control plane's CA, under
//! open-loop load while a schedule kills a sidecar, an app and the control plane (each started
//! again later), edits the destination's policy file a hundred times and rotates the root CA.
//! Every request's outcome and latency is kept; the target is that no idempotent request
//! fails. [`run`] is the entry point; `bin/chaos.rs` prints and saves its [`Report`].
//!
//! - [`error`]: what stops a run before it has a report.
//! - [`mesh`]: the processes, their files, and how each is killed and started again.
//! - [`load`]: the open-loop load and each request's outcome.
//! - [`faults`]: the schedule, the root rotation and the policy edits.
//! - [`report`]: totals, failures by cause, latency, the faults and a timeline.

mod error;
mod faults;
mod load;
mod mesh;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

pub use self::error::Error;
pub use self::faults::{Event, PolicyEdits};
pub use self::load::{Outcome, Sample};
pub use self::report::{Cause, Report, Slice, TIMELINE_STEP};

use crate::datapath::{Machine, load_average};

/// How hard and how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests a second.
    pub rate: u32,
    pub duration: Duration,
    /// Policy edits over the run.
    pub edits: u32,
}

impl Plan {
    /// 1,000 requests a second for 60 s.
    pub fn full() -> Self {
        Self {
            rate: 1_000,
            duration: Duration::from_secs(60),
            edits: 100,
        }
    }

    /// 200 requests a second for 15 s, every fault still applied.
    pub fn quick() -> Self {
        Self {
            rate: 200,
            duration: Duration::from_secs(15),
            edits: 100,
        }
    }
}

/// A run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `full` or `quick`, for the report.
    pub mode: String,
    pub plan: Plan,
    /// Where `sidecar`, `control-plane` and `echo-app` are.
    pub bin_dir: PathBuf,
    /// Keep the mesh's files and logs here instead of a temporary directory.
    pub work_dir: Option<PathBuf>,
    /// The destination's `retries.retry_on`.
    pub retry_on: Vec<String>,
    /// The command line, for the report.
    pub command: String,
}

/// What the destination's retries are for: the mesh's default conditions, written out so that a
/// run can be told apart from one with `--retry-on`. With `reset`, an idempotent GET whose
/// connection breaks (a peer killed mid-request) is sent again elsewhere.
pub const RETRY_ON: [&str; 4] = [
    "connect-failure",
    "refused-stream",
    "reset",
    "gateway-error",
];

/// How long root rotation steps may go on after the load ended.
const ROTATION_GRACE: Duration = Duration::from_secs(30);
/// How long the last policy edit gets to reach the caller's sidecar after the load.
const EDIT_PATIENCE: Duration = Duration::from_secs(10);

/// Starts the mesh, runs the load with the faults, and stops everything.
pub async fn run(options: Options) -> Result<Report, Error> {
    let Plan {
        rate,
        duration,
        edits,
    } = options.plan;
    let load_before = load_average();
    let mut mesh = mesh::Mesh::start(
        &options.bin_dir,
        options.work_dir.as_deref(),
        &options.retry_on,
    )
    .await?;
    load::probe(mesh.outbound(), Duration::from_secs(10))
        .await
        .map_err(|why| Error::Setup(format!("no request got through before the load: {why}")))?;

    let start = Instant::now() + Duration::from_millis(20);
    let outbound = mesh.outbound();
    let services = mesh.services_dir();
    let (samples, edited, events) = tokio::join!(
        load::run(outbound, rate, duration, start),
        faults::edit_policy(services, &options.retry_on, edits, start, duration),
        faults::run_schedule(
            &mut mesh,
            start,
            duration,
            start + duration + ROTATION_GRACE
        ),
    );
    let mut edited = edited;
    let mut harness_errors = Vec::new();
    if edited.written > 0 {
        edited.last_in_force = Some(faults::wait_for_edit(&mesh, edits, EDIT_PATIENCE).await);
    }
    if let Err(e) = mesh.check_alive() {
        harness_errors.push(e.to_string());
    }
    let scheduled = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let kept_dir = options.work_dir.as_ref().map(|d| d.display().to_string());
    drop(mesh);
    Ok(Report {
        command: options.command,
        mode: options.mode,
        machine: Machine::collect(load_before, load_average(), None, None),
        rate,
        duration,
        retry_on: options.retry_on,
        scheduled,
        samples,
        events,
        edits: edited,
        harness_errors,
        kept_dir,
    })
}

/// Builds `sidecar`, `control-plane` and `echo-app` with the profile of `bin_dir` when they
/// are not there, as after a test run narrowed to `-p mesh-benches`.
pub fn build_missing_binaries(bin_dir: &Path) -> Result<(), Error> {
    for (package, bin) in mesh::BINARIES {
        if bin_dir.join(bin).exists() {
            continue;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "-p", package, "--bin", bin]);
        if bin_dir.ends_with("release") {
            command.arg("--release");
        }
        let status = command.status().map_err(|source| Error::Io {
            what: "run cargo build".to_owned(),
            source,
        })?;
        if !status.success() {
            return Err(Error::MissingBinary(bin_dir.join(bin)));
        }
    }
    Ok(())
}
