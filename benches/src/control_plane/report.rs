//! What a run measured, as JSON (serde) and as a markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Target: the 10,000-watcher push, p99 from the file write to each watcher's receipt.
pub const PUSH_P99_TARGET_MS: f64 = 1_000.0;
/// Target: Identity.Certify calls signed per second over gRPC+TLS.
pub const SIGN_RATE_TARGET: f64 = 2_000.0;
/// The watcher count the push target is stated for.
pub const PUSH_TARGET_WATCHERS: usize = 10_000;

/// Percentiles of a set of durations, in milliseconds (nearest rank).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latencies {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latencies {
    /// Sorts `values` and takes their percentiles.
    pub fn of(values: &mut [Duration]) -> Self {
        values.sort_unstable();
        let rank = |q: f64| {
            if values.is_empty() {
                return 0.0;
            }
            let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
            ms(values[i])
        };
        Self {
            count: values.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: rank(1.0),
        }
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Where and how the run happened.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// From /proc/cpuinfo.
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// From /proc/sys/kernel/osrelease.
    pub kernel: String,
    /// UTC, when the run started.
    pub date: String,
    /// 1/5/15-minute load averages at the start and at the end (the machine may be shared).
    pub load_start: String,
    /// See `load_start`.
    pub load_end: String,
    /// `release` or `debug`.
    pub profile: String,
    /// The commit the binaries were built from, when run from a checkout.
    pub commit: Option<String>,
}

impl Machine {
    /// Reads the facts of this machine now (`load_end` is filled in at the end).
    pub fn now() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            date,
            load_start: load(),
            load_end: String::new(),
            commit: crate::datapath::commit(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
        }
    }
}

/// The load averages now.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings a run used.
#[derive(Clone, Debug, Serialize)]
pub struct Used {
    /// Frontend services the watchers are spread over (round robin by channel).
    pub frontends: usize,
    /// Watch streams per TLS connection.
    pub streams_per_channel: usize,
    /// The control plane's configuration poll interval.
    pub config_poll_ms: u64,
    /// Policy changes per watcher count.
    pub changes: usize,
    /// Tokio worker threads (client and control plane share them).
    pub worker_threads: usize,
    /// Soft open-file limit in force.
    pub nofile_limit: u64,
    /// Whether each watcher count ran in a fresh process.
    pub process_per_count: bool,
}

/// One policy change, pushed to every watcher.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    /// 1-based.
    pub change: usize,
    /// The new `backend` timeout.
    pub timeout_ms: u64,
    /// The version the control plane published for it.
    pub version: u64,
    /// From the file write to the control plane publishing (poll interval + reload).
    pub write_to_publish_ms: Option<f64>,
    /// From the file write to each watcher's receipt.
    pub write_to_receive_ms: Latencies,
    /// From the publish to each watcher's receipt: the fan-out alone.
    pub publish_to_receive_ms: Option<Latencies>,
    /// From the file write until every watcher had it (the slowest watcher).
    pub all_have_it_ms: Option<f64>,
    /// Watchers that did not get it in time.
    pub missed: usize,
    /// `snapshots_pushed` counted by the control plane during this change.
    pub pushed_by_control_plane: Option<u64>,
}

/// Memory of the process (KiB), relative to a baseline taken before the control plane started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Memory {
    /// VmRSS before the control plane started.
    pub baseline_rss_kib: u64,
    /// Growth with the control plane started and idle (no connection, no watcher).
    pub idle_kib: i64,
    /// Growth with every watcher open and on its first snapshot, over idle.
    pub watchers_kib: i64,
    /// `watchers_kib` per watcher, bytes.
    pub per_watcher_bytes: f64,
    /// Peak (VmHWM) during the changes, over idle; `None` when VmHWM could not be reset.
    pub peak_during_changes_kib: Option<i64>,
}

/// One watcher count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scale {
    /// Watch streams.
    pub watchers: usize,
    /// TLS connections they share.
    pub channels: usize,
    /// From the first watch opened until every watcher had its first snapshot.
    pub open_all_ms: f64,
    /// Watchers that never got their first snapshot.
    pub no_first_snapshot: usize,
    /// Streams that ended or failed during the run, with the first reason.
    pub streams_ended: usize,
    /// The first reason a stream ended, if any did.
    pub first_end_reason: Option<String>,
    /// Open file descriptors of the process with every watcher open.
    pub open_fds: usize,
    /// Memory.
    pub memory: Memory,
    /// Each change.
    pub changes: Vec<Change>,
    /// Every watcher's receipt of every change: write to receive.
    pub write_to_receive_ms: Latencies,
    /// Every watcher's receipt of every change: publish to receive.
    pub publish_to_receive_ms: Latencies,
    /// The slowest change's "all have it".
    pub worst_all_have_it_ms: Option<f64>,
}

/// Identity.Certify over gRPC+TLS.
#[derive(Clone, Debug, Serialize)]
pub struct Signing {
    /// How the calls connected.
    pub client: String,
    /// Calls in flight.
    pub concurrency: usize,
    /// TLS connections they share.
    pub channels: usize,
    /// How long the calls ran.
    pub seconds: f64,
    /// Certificates issued.
    pub issued: usize,
    /// Calls that failed.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// Issued per second.
    pub per_second: f64,
    /// Per-call latency.
    pub latency_ms: Latencies,
    /// Distinct CSRs made beforehand (each with a new key).
    pub csr_pool: usize,
    /// How long making them took.
    pub csr_pool_secs: f64,
    /// Whether the run issued more than the pool and so reused CSRs (each still signed anew).
    pub csrs_reused: bool,
}

/// `Authority::sign_csr_der` without the network.
#[derive(Clone, Debug, Serialize)]
pub struct CaAlone {
    /// On one thread.
    pub one_thread_per_second: f64,
    /// Threads of the second measurement (every core).
    pub threads: usize,
    /// On every core.
    pub all_threads_per_second: f64,
}

/// A target, met or missed.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The bar.
    pub target: String,
    /// What was measured, or why it was not.
    pub measured: String,
    /// `None` when this run did not measure it.
    pub met: Option<bool>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Settings.
    pub settings: Used,
    /// One entry per watcher count.
    pub scales: Vec<Scale>,
    /// Identity.Certify over the network.
    pub signing: Signing,
    /// The CA alone.
    pub ca_alone: CaAlone,
    /// The targets.
    pub targets: Vec<Target>,
    /// How memory was measured, and what that cannot tell.
    pub memory_method: String,
    /// Everything that went wrong (missed changes, failed streams or calls).
    pub failures: Vec<String>,
}

/// The method note for memory, stated in every report.
pub const MEMORY_METHOD: &str = "The control plane runs inside the benchmark process, so its memory is the growth of \
the process's VmRSS (/proc/self/status) over a baseline read just before it started. \"idle\" is the growth with \
the control plane started and nothing connected; \"+watchers\" is the further growth once every watch stream \
is open and has its first snapshot, so it holds both ends of every stream (the control plane's task, channel and \
HTTP/2 stream state, and the simulated sidecar's task, decoder and HTTP/2 state): an upper bound of the \
control plane's share, which is roughly half of it since both ends keep similar state. The peak is VmHWM \
after resetting it (/proc/self/clear_refs) before the changes. The benchmark binary runs each watcher count in \
a fresh process (it re-runs itself), because the allocator keeps freed memory and a later count would reuse \
what an earlier one freed; the library's in-process `run` does not, so there only the first count's numbers \
are clean.";

/// What stands behind the numbers, from how the control plane and tonic work (not measured
/// per run).
const READING: &str = "Reading the numbers:\n\n\
- write→publish is the configuration poll (a change waits 0 to one poll interval for the next read) plus the \
reload; at 1,000 watchers it is most of the latency. An inotify watch, or a shorter `Options::config_poll`, \
would remove most of it.\n\
- publish→receive is the fan-out: every watch stream is its own task that clones the whole snapshot message \
and encodes it on its own, then writes it through HTTP/2 and TLS; with 10,000 streams these per-stream costs \
(task wake-ups, small TLS writes, encode here and decode in the simulated sidecars, one acknowledgement each, \
each taking the mesh state's write lock) add up, on two cores shared with the clients. Encoding each \
version once and handing every stream the same bytes would remove the clone and the encode per stream.\n\
- Memory per watcher: tonic gives every streaming call an 8 KiB encode buffer and an 8 KiB decode buffer, on \
each end, so about 32 KiB of the measured growth per watcher are codec buffers, half of them the control \
plane's. A codec with smaller buffer settings (tonic's `BufferSettings`) would shrink that.\n";

impl Report {
    /// Fills in the targets and the list of failures from the measurements.
    pub fn judge(&mut self) {
        let push = self
            .scales
            .iter()
            .find(|s| s.watchers == PUSH_TARGET_WATCHERS);
        let push_target = match push {
            Some(s) => {
                let missed: usize = s.changes.iter().map(|c| c.missed).sum();
                Target {
                    what: format!("push to {PUSH_TARGET_WATCHERS} watchers, p99 write→receive"),
                    target: format!("< {PUSH_P99_TARGET_MS:.0} ms"),
                    measured: format!(
                        "{:.0} ms (fan-out alone, publish→receive: {:.0} ms; {} missed)",
                        s.write_to_receive_ms.p99, s.publish_to_receive_ms.p99, missed
                    ),
                    met: Some(missed == 0 && s.write_to_receive_ms.p99 < PUSH_P99_TARGET_MS),
                }
            }
            None => Target {
                what: format!("push to {PUSH_TARGET_WATCHERS} watchers, p99 write→receive"),
                target: format!("< {PUSH_P99_TARGET_MS:.0} ms"),
                measured: format!("not run at {PUSH_TARGET_WATCHERS} watchers"),
                met: None,
            },
        };
        let sign_target = Target {
            what: "CSR signing, Identity.Certify over gRPC+TLS".into(),
            target: format!("≥ {SIGN_RATE_TARGET:.0}/s"),
            measured: format!(
                "{:.0}/s ({} in flight; CA alone {:.0}/s on 1 thread, {:.0}/s on {})",
                self.signing.per_second,
                self.signing.concurrency,
                self.ca_alone.one_thread_per_second,
                self.ca_alone.all_threads_per_second,
                self.ca_alone.threads
            ),
            met: Some(self.signing.per_second >= SIGN_RATE_TARGET),
        };
        self.targets = vec![push_target, sign_target];

        let mut failures = Vec::new();
        for s in &self.scales {
            if s.no_first_snapshot > 0 {
                failures.push(format!(
                    "{} watchers: {} never got a first snapshot",
                    s.watchers, s.no_first_snapshot
                ));
            }
            for c in &s.changes {
                if c.missed > 0 {
                    failures.push(format!(
                        "{} watchers, change {}: {} watchers missed it",
                        s.watchers, c.change, c.missed
                    ));
                }
            }
            if s.streams_ended > 0 {
                failures.push(format!(
                    "{} watchers: {} streams ended early ({})",
                    s.watchers,
                    s.streams_ended,
                    s.first_end_reason.as_deref().unwrap_or("")
                ));
            }
        }
        if self.signing.failed > 0 {
            failures.push(format!(
                "{} Certify calls failed ({})",
                self.signing.failed,
                self.signing.first_error.as_deref().unwrap_or("")
            ));
        }
        if self.signing.issued == 0 {
            failures.push("no certificate issued".into());
        }
        self.failures = failures;
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let s = &self.settings;
        let _ = writeln!(md, "# Control plane at scale\n");
        let _ = writeln!(md, "Command: `{}`\n", self.command);
        let _ = writeln!(
            md,
            "Machine: {} ({} cores), Linux {}, {} build of {}, {}. Load average (1/5/15 min) {} at the start, {} at the end; \
             the machine is shared, so other work may have competed for the cores.\n",
            m.cpu,
            m.cores,
            m.kernel,
            m.profile,
            m.commit.as_deref().unwrap_or("an unknown commit"),
            m.date,
            m.load_start,
            m.load_end
        );
        let _ = writeln!(
            md,
            "Setup: one process. The control plane runs in-process on 127.0.0.1 port-0 listeners with a temporary \
             configuration directory: service `backend` and {} frontends (`frontend-0`…) that each call it. \
             Simulated sidecars open Discovery.Watch streams over gRPC+TLS 1.3 (mTLS with a certificate from \
             Identity.Certify, one per frontend), {} streams per TLS connection, spread round-robin by connection \
             over the frontends; each names its own instance and acknowledges every snapshot. A change rewrites \
             `services/backend.yaml` (write + rename) with a new timeout; each watcher's latency runs from the \
             rename to its receipt of a snapshot with that timeout. Configuration poll: {} ms (the default is 200 ms). \
             \"publish\" is when the control plane's snapshot version moved, seen by a thread polling it every 200 µs. \
             Clients and control plane share {} tokio worker threads on {} cores, so client-side decoding competes \
             with the control plane. Open-file limit {}.\n",
            s.frontends,
            s.streams_per_channel,
            s.config_poll_ms,
            s.worker_threads,
            m.cores,
            s.nofile_limit
        );

        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(
            md,
            "| what | target | measured | result |\n|---|---|---|---|"
        );
        for t in &self.targets {
            let result = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                t.what, t.target, t.measured, result
            );
        }

        let _ = writeln!(md, "\n## Push of a policy change\n");
        let _ = writeln!(
            md,
            "All changes together (ms; write→receive includes the configuration poll):\n"
        );
        let _ = writeln!(
            md,
            "| watchers | connections | open all + first snapshot | write→receive p50 | p90 | p99 | max | all have it (worst change) | publish→receive p50 | p99 | max | missed |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for sc in &self.scales {
            let w = &sc.write_to_receive_ms;
            let p = &sc.publish_to_receive_ms;
            let missed: usize = sc.changes.iter().map(|c| c.missed).sum();
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} ms | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {} |",
                sc.watchers,
                sc.channels,
                sc.open_all_ms,
                w.p50,
                w.p90,
                w.p99,
                w.max,
                opt_ms(sc.worst_all_have_it_ms),
                p.p50,
                p.p99,
                p.max,
                missed
            );
        }
        let _ = writeln!(md, "\nEach change (ms):\n");
        let _ = writeln!(
            md,
            "| watchers | change | timeout | write→publish | write→receive p50 | p90 | p99 | max | all have it | publish→receive p50 | p99 | pushed (control plane) | missed |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for sc in &self.scales {
            for c in &sc.changes {
                let w = &c.write_to_receive_ms;
                let (pp50, pp99) = c
                    .publish_to_receive_ms
                    .as_ref()
                    .map_or(("–".to_owned(), "–".to_owned()), |p| {
                        (format!("{:.0}", p.p50), format!("{:.0}", p.p99))
                    });
                let _ = writeln!(
                    md,
                    "| {} | {} | {} ms | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                    sc.watchers,
                    c.change,
                    c.timeout_ms,
                    opt_ms(c.write_to_publish_ms),
                    w.p50,
                    w.p90,
                    w.p99,
                    w.max,
                    opt_ms(c.all_have_it_ms),
                    pp50,
                    pp99,
                    c.pushed_by_control_plane
                        .map_or("–".to_owned(), |n| n.to_string()),
                    c.missed
                );
            }
        }

        let _ = writeln!(md, "\n## Memory (process RSS growth, KiB)\n");
        let _ = writeln!(
            md,
            "| watchers | baseline RSS | control plane idle | + watchers (both ends) | per watcher (both ends) | peak during changes, over idle | open fds |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for sc in &self.scales {
            let mem = &sc.memory;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.1} KiB | {} | {} |",
                sc.watchers,
                mem.baseline_rss_kib,
                mem.idle_kib,
                mem.watchers_kib,
                mem.per_watcher_bytes / 1024.0,
                mem.peak_during_changes_kib
                    .map_or("–".to_owned(), |k| k.to_string()),
                sc.open_fds
            );
        }
        let _ = writeln!(md, "\nMethod: {}\n", self.memory_method);
        let _ = writeln!(md, "{READING}");

        let sg = &self.signing;
        let ca = &self.ca_alone;
        let _ = writeln!(md, "## CSR signing\n");
        let _ = writeln!(
            md,
            "| path | in flight | seconds | issued | failed | per second | latency p50 | p99 | max |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            md,
            "| Identity.Certify, gRPC+TLS, {} connections, {} | {} | {:.1} | {} | {} | **{:.0}** | {:.1} ms | {:.1} ms | {:.1} ms |",
            sg.channels,
            sg.client,
            sg.concurrency,
            sg.seconds,
            sg.issued,
            sg.failed,
            sg.per_second,
            sg.latency_ms.p50,
            sg.latency_ms.p99,
            sg.latency_ms.max
        );
        let _ = writeln!(
            md,
            "| `Authority::sign_csr_der` alone, 1 thread | – | – | – | – | {:.0} | – | – | – |",
            ca.one_thread_per_second
        );
        let _ = writeln!(
            md,
            "| `Authority::sign_csr_der` alone, {} threads | – | – | – | – | {:.0} | – | – | – |",
            ca.threads, ca.all_threads_per_second
        );
        let _ = writeln!(
            md,
            "\n{} distinct CSRs (each with a new P-256 key) were made beforehand in {:.1} s{}. `sign_csr_der` parses the CSR, \
             checks its signature and identity, and signs the leaf. The client sets TCP_NODELAY, as the sidecar does; without it \
             each small unary call would wait for the server's delayed ACK (~40 ms).\n",
            sg.csr_pool,
            sg.csr_pool_secs,
            if sg.csrs_reused {
                "; the run issued more, so CSRs were reused in turn (each signed anew)"
            } else {
                ""
            }
        );
        if self.failures.is_empty() {
            let _ = writeln!(md, "## Failures\n\nNone.");
        } else {
            let _ = writeln!(md, "## Failures\n");
            for f in &self.failures {
                let _ = writeln!(md, "- {f}");
            }
        }
        md
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.0}"))
}
