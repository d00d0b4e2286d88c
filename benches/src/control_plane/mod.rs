//! The control plane at scale, in one process over real gRPC+TLS on loopback: how fast a policy
//! change reaches thousands of watching sidecars, what the watchers cost in memory, and how
//! many CSRs the CA signs per second.
//!
//! - `mesh`: the configuration directory and the control plane under test.
//! - `channel`: gRPC channels made as the sidecar makes them.
//! - `watchers`: simulated sidecars' Discovery.Watch streams.
//! - `signing`: Identity.Certify under load, and the CA alone.
//! - `memory`: /proc readings and the open-file limit.
//! - [`report`]: the results, as JSON and markdown.

mod memory;
mod mesh;
pub mod report;
mod signing;
mod watchers;

use std::collections::HashMap;
use std::time::Duration;

use mesh_control_plane::admin_client;
use tokio::time::Instant;

use self::mesh::{FIRST_TIMEOUT_MS, Mesh, frontend};
use self::report::{Change, Latencies, Machine, Memory, Report, Scale, Used, ms};
use self::watchers::{Event, Fleet};

/// This process's resident set now, in KiB.
pub fn rss_kib() -> std::io::Result<u64> {
    memory::rss()
        .map(|r| r.now_kib)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Why a run could not complete (as opposed to a target missed, which is in the report).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or /proc could not be used.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A field missing from /proc/self/status.
    #[error("{0} missing from /proc/self/status")]
    Proc(String),
    /// The open-file limit could not be read or raised.
    #[error("open-file limit: {0}")]
    Rlimit(nix::Error),
    /// The control plane failed to start or stop.
    #[error("control plane: {0}")]
    ControlPlane(#[from] mesh_control_plane::Error),
    /// A client step (connect, certify, CSR) failed.
    #[error("client: {0}")]
    Client(#[from] mesh_control_plane::client::ClientError),
    /// A call failed.
    #[error("call: {0}")]
    Status(#[from] tonic::Status),
    /// The CA could not be opened or refused to sign.
    #[error("CA: {0}")]
    Ca(#[from] mesh_control_plane::CertError),
    /// A task panicked.
    #[error("task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The control plane was still shared at stop.
    #[error("the control plane is still in use at stop")]
    StillShared,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watcher counts, each on a fresh control plane.
    pub watchers: Vec<usize>,
    /// Policy changes per watcher count.
    pub changes: usize,
    /// Frontend services the watchers are spread over.
    pub frontends: usize,
    /// Watch streams per TLS connection (HTTP/2 multiplexes them).
    pub streams_per_channel: usize,
    /// The control plane's configuration poll interval.
    pub config_poll: Duration,
    /// How long Certify calls run.
    pub sign_for: Duration,
    /// Certify calls in flight.
    pub sign_concurrency: usize,
    /// How long the CA alone signs, per measurement.
    pub ca_alone_for: Duration,
    /// Bound on every watcher opening and getting its first snapshot.
    pub first_snapshot_within: Duration,
    /// Bound on every watcher getting one change.
    pub change_within: Duration,
    /// Tokio worker threads of the runtime the caller built (reported only).
    pub worker_threads: usize,
    /// The command line, for the report.
    pub command: String,
    /// Whether the caller runs each watcher count in a fresh process (reported only).
    pub process_per_count: bool,
}

impl Settings {
    /// The full run: 1,000 and 10,000 watchers, 5 changes, 5 s of signing.
    pub fn full() -> Self {
        Self {
            watchers: vec![1_000, 10_000],
            changes: 5,
            frontends: 4,
            streams_per_channel: 500,
            config_poll: mesh_control_plane::DEFAULT_CONFIG_POLL,
            sign_for: Duration::from_secs(5),
            sign_concurrency: 16,
            ca_alone_for: Duration::from_secs(1),
            first_snapshot_within: Duration::from_secs(120),
            change_within: Duration::from_secs(30),
            worker_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            command: String::new(),
            process_per_count: false,
        }
    }

    /// The smoke run: 200 watchers, 2 changes, 1 s of signing.
    pub fn quick() -> Self {
        Self {
            watchers: vec![200],
            changes: 2,
            sign_for: Duration::from_secs(1),
            ca_alone_for: Duration::from_millis(300),
            first_snapshot_within: Duration::from_secs(20),
            change_within: Duration::from_secs(10),
            ..Self::full()
        }
    }
}

/// Runs everything in `settings` in this process and returns the judged report.
pub async fn run(settings: &Settings) -> Result<Report, BenchError> {
    let machine = Machine::now();
    let nofile_limit = prepare(settings)?;
    let mut scales = Vec::new();
    for &n in &settings.watchers {
        scales.push(scale(settings, n).await?);
    }
    finish(settings, machine, nofile_limit, scales).await
}

/// Raises the open-file limit for the largest watcher count; returns the limit in force.
pub fn prepare(settings: &Settings) -> Result<u64, BenchError> {
    let largest = settings.watchers.iter().copied().max().unwrap_or(0);
    // Both ends of every connection live in this process, plus slack for the runtime and files.
    let connections = largest.div_ceil(settings.streams_per_channel.max(1)) + 64;
    memory::raise_nofile(2 * connections as u64 + 256)
}

/// Measures CSR signing and judges the whole run, given each watcher count's results (measured
/// here or, for clean memory baselines, each in a fresh process).
pub async fn finish(
    settings: &Settings,
    mut machine: Machine,
    nofile_limit: u64,
    scales: Vec<Scale>,
) -> Result<Report, BenchError> {
    let signing_mesh = Mesh::start(settings.frontends.max(1), settings.config_poll).await?;
    let signing =
        signing::certify_rate(&signing_mesh, settings.sign_for, settings.sign_concurrency).await?;
    signing_mesh.stop().await?;
    let ca_alone = signing::ca_alone(settings.ca_alone_for).await?;
    machine.load_end = report::load();
    let mut report = Report {
        command: settings.command.clone(),
        machine,
        settings: Used {
            frontends: settings.frontends,
            streams_per_channel: settings.streams_per_channel,
            config_poll_ms: settings.config_poll.as_millis() as u64,
            changes: settings.changes,
            worker_threads: settings.worker_threads,
            nofile_limit,
            process_per_count: settings.process_per_count,
        },
        scales,
        signing,
        ca_alone,
        targets: Vec::new(),
        memory_method: report::MEMORY_METHOD.into(),
        failures: Vec::new(),
    };
    report.judge();
    Ok(report)
}

/// The `snapshots_pushed` counter from the admin server's metrics.
async fn pushed(mesh: &Mesh) -> Option<u64> {
    let (_, body) = admin_client::request(mesh.cp().admin_addr(), http::Method::GET, "/metrics")
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&body);
    mesh_testkit::metrics::value(&text, "mesh_control_plane_snapshots_pushed_total")
        .map(|v| v as u64)
}

/// Counts of what the watchers reported beyond snapshots.
#[derive(Default)]
struct Ends {
    count: usize,
    first: Option<String>,
}

impl Ends {
    fn note(&mut self, watcher: usize, why: String) {
        self.count += 1;
        self.first
            .get_or_insert_with(|| format!("watcher {watcher}: {why}"));
    }
}

/// One watcher count on a fresh control plane.
pub async fn scale(settings: &Settings, n: usize) -> Result<Scale, BenchError> {
    let frontends = settings.frontends.max(1);
    let per_channel = settings.streams_per_channel.max(1);
    // Let memory freed by an earlier count settle before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = memory::rss()?;
    let mut mesh = Mesh::start(frontends, settings.config_poll).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = memory::rss()?;

    // One certificate per frontend, then the connections, each on one frontend's identity.
    let mut workloads = Vec::with_capacity(frontends);
    for i in 0..frontends {
        workloads.push(mesh.certify(&frontend(i)).await?);
    }
    let channel_count = n.div_ceil(per_channel);
    let mut channels = Vec::with_capacity(channel_count);
    for c in 0..channel_count {
        channels.push(mesh.connect(&workloads[c % frontends]).await?);
    }
    let assignments = (0..n)
        .map(|i| {
            let c = i / per_channel;
            let service = frontend(c % frontends);
            (channels[c].clone(), format!("{service}-{i}"))
        })
        .collect();

    let opened = Instant::now();
    let mut fleet = Fleet::open(assignments);
    let mut ends = Ends::default();
    let mut have_first = vec![false; n];
    let mut first_count = 0;
    let deadline = opened + settings.first_snapshot_within;
    while first_count < n {
        match tokio::time::timeout_at(deadline, fleet.events.recv()).await {
            Ok(Some(Event::Snapshot { watcher, .. })) => {
                if !have_first[watcher] {
                    have_first[watcher] = true;
                    first_count += 1;
                }
            }
            Ok(Some(Event::Ended { watcher, why })) => ends.note(watcher, why),
            Ok(None) | Err(_) => break,
        }
    }
    let open_all_ms = ms(opened.elapsed());
    let no_first_snapshot = n - first_count;
    eprintln!(
        "{n} watchers: {first_count} on their first snapshot after {open_all_ms:.0} ms over {channel_count} connections"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_watchers = memory::rss()?;
    let open_fds = memory::open_fds();
    let peak_reset = memory::reset_peak();

    mesh.watch_publishes();
    let mut changes = Vec::with_capacity(settings.changes);
    let mut all_write = Vec::new();
    let mut all_publish = Vec::new();
    for change in 1..=settings.changes {
        // Two poll intervals of quiet, so the change starts a fresh poll cycle at no fixed phase.
        tokio::time::sleep(2 * settings.config_poll + Duration::from_millis(100)).await;
        while let Ok(event) = fleet.events.try_recv() {
            if let Event::Ended { watcher, why } = event {
                ends.note(watcher, why);
            }
        }
        let timeout_ms = FIRST_TIMEOUT_MS + change as u64;
        let version_before = mesh.cp().version();
        let pushed_before = pushed(&mesh).await;
        let written = mesh.set_backend_timeout(timeout_ms)?;
        let mut received: HashMap<usize, (u64, Instant)> = HashMap::with_capacity(n);
        let deadline = written + settings.change_within;
        while received.len() < n {
            match tokio::time::timeout_at(deadline, fleet.events.recv()).await {
                Ok(Some(Event::Snapshot {
                    watcher,
                    version,
                    timeout_ms: Some(t),
                    at,
                })) if t == timeout_ms => {
                    received.entry(watcher).or_insert((version, at));
                }
                Ok(Some(Event::Snapshot { .. })) => {}
                Ok(Some(Event::Ended { watcher, why })) => ends.note(watcher, why),
                Ok(None) | Err(_) => break,
            }
        }
        let published = mesh.published_after(version_before).await;
        let pushed_after = pushed(&mesh).await;
        let mut write_to_receive: Vec<Duration> = received
            .values()
            .map(|(_, at)| at.saturating_duration_since(written))
            .collect();
        let publish_to_receive: Option<Vec<Duration>> = published.map(|(_, p)| {
            received
                .values()
                .map(|(_, at)| at.saturating_duration_since(p))
                .collect()
        });
        let all_have_it_ms = (received.len() == n)
            .then(|| write_to_receive.iter().max().copied().map(ms))
            .flatten();
        let version = published
            .map(|(v, _)| v)
            .or_else(|| received.values().next().map(|(v, _)| *v))
            .unwrap_or(0);
        all_write.extend_from_slice(&write_to_receive);
        let publish_latencies = publish_to_receive.map(|mut p| {
            all_publish.extend_from_slice(&p);
            Latencies::of(&mut p)
        });
        let record = Change {
            change,
            timeout_ms,
            version,
            write_to_publish_ms: published.map(|(_, p)| ms(p.saturating_duration_since(written))),
            write_to_receive_ms: Latencies::of(&mut write_to_receive),
            publish_to_receive_ms: publish_latencies,
            all_have_it_ms,
            missed: n - received.len(),
            pushed_by_control_plane: pushed_before
                .zip(pushed_after)
                .map(|(b, a)| a.saturating_sub(b)),
        };
        eprintln!(
            "{n} watchers, change {change}: publish after {} ms, p50 {:.0} ms, p99 {:.0} ms, all {} ms, missed {}",
            record
                .write_to_publish_ms
                .map_or("?".into(), |v| format!("{v:.0}")),
            record.write_to_receive_ms.p50,
            record.write_to_receive_ms.p99,
            record
                .all_have_it_ms
                .map_or("–".into(), |v| format!("{v:.0}")),
            record.missed
        );
        changes.push(record);
    }
    let after = memory::rss()?;
    fleet.close().await;
    drop(channels);
    mesh.stop().await?;

    let kib = |a: u64, b: u64| a as i64 - b as i64;
    let watchers_kib = kib(with_watchers.now_kib, idle.now_kib);
    let worst_all_have_it_ms = if changes.iter().all(|c| c.all_have_it_ms.is_some()) {
        changes
            .iter()
            .filter_map(|c| c.all_have_it_ms)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    } else {
        None
    };
    Ok(Scale {
        watchers: n,
        channels: channel_count,
        open_all_ms,
        no_first_snapshot,
        streams_ended: ends.count,
        first_end_reason: ends.first,
        open_fds,
        memory: Memory {
            baseline_rss_kib: baseline.now_kib,
            idle_kib: kib(idle.now_kib, baseline.now_kib),
            watchers_kib,
            per_watcher_bytes: watchers_kib as f64 * 1024.0 / n.max(1) as f64,
            peak_during_changes_kib: peak_reset.then(|| kib(after.peak_kib, idle.now_kib)),
        },
        changes,
        write_to_receive_ms: Latencies::of(&mut all_write),
        publish_to_receive_ms: Latencies::of(&mut all_publish),
        worst_all_have_it_ms,
    })
}
