//! Thousands of idle keep-alive client connections: what each costs a proxy in memory.
//!
//! Pooled HTTP clients keep connections to their sidecar open between bursts, so a proxy in
//! front of a busy caller holds thousands of connections that carry nothing most of the time.
//! Their cost is memory, not CPU, so this workload does not use the request loops: per
//! configuration and round it reads each proxy's VmRSS (not VmHWM: the peak would hide what
//! comes back) before, while N connections sit idle after one request each, and after they
//! are closed. One configuration at a time, so the machine never holds more than N of them,
//! and on fresh proxies every round.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::super::load::{self, Sender};
use super::super::report::{at_most, median};
use super::super::topology::{self, Running, Runtime};
use super::super::{Error, Plan, Topology};
use super::{Workload, WorkloadOptions, WorkloadReport, start_plain};

/// Connections of a full run and of a quick one.
pub(crate) const FULL_CONNECTIONS: usize = 10_000;
pub(crate) const QUICK_CONNECTIONS: usize = 1_000;
/// Connections opened (or asked again) at once: enough to be quick, few enough that no
/// listen backlog overflows.
const BATCH: usize = 200;
/// How long one connection's TCP and HTTP/1.1 setup may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// How long opening or asking every connection may take, per 1,000 connections.
const PHASE_LIMIT_PER_1000: Duration = Duration::from_secs(30);
/// How long the proxies' RSS may take to settle, and the sockets to close.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(250);
/// RSS readings in a row that must agree for it to count as settled.
const SETTLED_READINGS: usize = 4;
/// Requests before the baseline, so that pools, TLS sessions and caches are warm.
const WARMUP_REQUESTS: usize = 20;
/// Descriptors the harness needs beyond the connections (the runtime, logs, the app's pipes).
const SPARE_FILES: u64 = 512;

/// Our client-side sidecar's limits here. Its defaults allow 10,000 outbound connections at
/// once, exactly what a full run holds with nothing to spare, and close an HTTP/1.1 keep-alive
/// connection silent for 30 s (`header_read_timeout`), where Envoy's idle timeout is 1 h:
/// both are raised so that the idle phase, not a limit, decides what stays open.
pub(crate) const OURS_CLIENT_LIMITS: &str =
    "limits: { outbound: { max_connections: 20000, header_read_timeout: 10m } }\n";

/// The workload's numbers: one row per configuration.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Connections each configuration held open at once, per round.
    pub connections: usize,
    pub rounds: u32,
    /// The harness's soft RLIMIT_NOFILE after raising it; the proxies inherit it.
    pub open_files_limit: u64,
    pub rows: Vec<IdleRow>,
    /// ours ÷ envoy: bytes per idle connection of the client-side proxy.
    pub bytes_per_connection_ratio: Option<f64>,
    /// How the proxies were configured for this workload, and why.
    pub notes: Vec<String>,
}

/// One configuration, summed over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct IdleRow {
    pub name: Topology,
    /// Why it could not start or stopped being measured.
    pub failure: Option<String>,
    /// Connections that answered their first request, and the request after idling.
    pub answered_before: u64,
    pub answered_after: u64,
    /// Connections that failed either request (or could not be opened).
    pub errors: u64,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
    /// Each proxy, client side first.
    pub proxies: Vec<ProxyMemory>,
}

/// One proxy's VmRSS (medians over the rounds) and what each idle connection cost it.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyMemory {
    pub role: String,
    pub baseline_kib: u64,
    pub idle_kib: u64,
    pub after_close_kib: u64,
    /// (idle − baseline) ÷ connections that answered, median over the rounds.
    pub bytes_per_connection: f64,
    pub bytes_per_connection_by_round: Vec<f64>,
    /// Whether its RSS settled within the limit before every reading (else the last reading).
    pub settled: bool,
}

/// One proxy's readings in one round, KiB.
#[derive(Debug, Clone, Copy)]
struct Reading {
    baseline: u64,
    idle: u64,
    after_close: u64,
    answered: u64,
    settled: bool,
}

impl Reading {
    fn bytes_per_connection(&self) -> f64 {
        (self.idle as f64 - self.baseline as f64) * 1024.0 / self.answered.max(1) as f64
    }
}

/// One configuration's state over the rounds.
struct Config {
    topology: Topology,
    /// Its proxies' roles, client side first, once it has started.
    roles: Vec<&'static str>,
    failure: Option<String>,
    answered_before: u64,
    answered_after: u64,
    errors: u64,
    first_error: Option<String>,
    /// Per proxy, per round.
    readings: Vec<Vec<Reading>>,
}

impl Config {
    /// Stops measuring this configuration; the others go on.
    fn fail(&mut self, err: Error) {
        self.failure = Some(err.to_string());
    }

    fn error(&mut self, count: u64, first: Option<String>) {
        self.errors += count;
        if self.first_error.is_none() {
            self.first_error = first;
        }
    }
}

/// Raises the soft open-file limit to the hard one; fails when even that is too low for
/// `connections` client sockets (the client-side proxy holds as many, in its own process).
fn raise_open_files(connections: usize) -> Result<u64, Error> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let err = |e: nix::Error| Error::OpenFiles(format!("RLIMIT_NOFILE: {e}"));
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(err)?;
    let need = connections as u64 + SPARE_FILES;
    if hard < need {
        return Err(Error::OpenFiles(format!(
            "the hard limit on open files is {hard}, below the {need} that {connections} idle \
             connections need; raise it (ulimit -Hn, LimitNOFILE=) or hold fewer \
             (--idle-connections)"
        )));
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(err)?;
    }
    Ok(hard)
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Result<u64, Error> {
    crate::pair::memory_kib(pid)
        .map(|(rss, _)| rss)
        .map_err(|e| Error::Proc(e.to_string()))
}

/// Polls the RSS of `pids` until the last few readings of each agree (within 0.5% or 64 KiB),
/// for at most [`SETTLE_LIMIT`]; returns the last readings and whether they settled.
async fn settled_rss(pids: &[u32]) -> Result<(Vec<u64>, bool), Error> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut history: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    loop {
        for (pid, h) in pids.iter().zip(&mut history) {
            h.push(rss_kib(*pid)?);
        }
        let settled = history.iter().all(|h| {
            let last = &h[h.len().saturating_sub(SETTLED_READINGS)..];
            let (min, max) = (last.iter().min(), last.iter().max());
            match (min, max) {
                (Some(min), Some(max)) => {
                    last.len() == SETTLED_READINGS && (max - min <= 64 || (max - min) * 200 <= *max)
                }
                _ => true,
            }
        });
        let last = history.iter().filter_map(|h| h.last().copied()).collect();
        if settled {
            return Ok((last, true));
        }
        if Instant::now() >= deadline {
            return Ok((last, false));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sockets on this machine whose local port is `port`, neither listening nor in TIME_WAIT:
/// the connections a server on `port` still holds.
fn held_sockets(port: u16) -> Result<usize, Error> {
    let tcp =
        std::fs::read_to_string("/proc/net/tcp").map_err(|e| Error::io("/proc/net/tcp", e))?;
    let port = format!(":{port:04X}");
    Ok(tcp
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local = fields.next().unwrap_or_default();
            let state = fields.nth(1).unwrap_or_default();
            // 0A: LISTEN, 06: TIME_WAIT, 07: CLOSE.
            local.ends_with(&port) && !matches!(state, "0A" | "06" | "07")
        })
        .count())
}

/// Waits until the server on `port` holds no more connections than `before`: the proxy has
/// seen every client close.
async fn wait_closed(port: u16, before: usize) -> Result<bool, Error> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        if held_sockets(port)? <= before {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase_limit(connections: usize) -> Duration {
    PHASE_LIMIT_PER_1000.mul_f64((connections as f64 / 1000.0).max(1.0))
}

/// One `GET /` on `send`; an error unless it answered 2xx with its whole body.
async fn ask(send: &mut Sender, authority: &'static str) -> Result<(), Error> {
    match load::request(send, authority).await? {
        true => Ok(()),
        false => Err(Error::Status),
    }
}

/// Opens `count` connections in batches of [`BATCH`], each answering one request before the
/// next batch starts; returns those that answered, the failures and the first error.
async fn open_all(
    dial: &super::super::dial::Dial,
    count: usize,
) -> (Vec<Sender>, u64, Option<String>) {
    let deadline = Instant::now() + phase_limit(count);
    let mut senders = Vec::with_capacity(count);
    let (mut errors, mut first) = (0, None);
    let mut left = count;
    while left > 0 {
        if Instant::now() >= deadline {
            errors += left as u64;
            first.get_or_insert_with(|| "opening the connections ran out of time".to_owned());
            break;
        }
        let batch = left.min(BATCH);
        let mut set = JoinSet::new();
        for _ in 0..batch {
            let dial = dial.clone();
            set.spawn(async move {
                let mut send = tokio::time::timeout(CONNECT_LIMIT, load::connect(&dial))
                    .await
                    .map_err(|_| Error::Timeout)??;
                ask(&mut send, dial.authority).await?;
                Ok::<_, Error>(send)
            });
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(send)) => senders.push(send),
                Ok(Err(e)) => {
                    errors += 1;
                    first.get_or_insert_with(|| e.to_string());
                }
                Err(e) => {
                    errors += 1;
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
        left -= batch;
    }
    (senders, errors, first)
}

/// Sends one more request on every connection, [`BATCH`] at a time; returns the connections
/// (to close them together), how many answered, and the first error.
async fn ask_all(
    senders: Vec<Sender>,
    authority: &'static str,
) -> (Vec<Sender>, u64, Option<String>) {
    let deadline = Instant::now() + phase_limit(senders.len());
    let mut back = Vec::with_capacity(senders.len());
    let (mut answered, mut first) = (0, None);
    let mut rest = senders.into_iter();
    loop {
        let batch: Vec<Sender> = rest.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            first.get_or_insert_with(|| "asking the idle connections ran out of time".to_owned());
            break;
        }
        let mut set = JoinSet::new();
        for mut send in batch {
            set.spawn(async move {
                let result = ask(&mut send, authority).await;
                (send, result)
            });
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok((send, result)) => {
                    match result {
                        Ok(()) => answered += 1,
                        Err(e) => {
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                    back.push(send);
                }
                Err(e) => {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    (back, answered, first)
}

/// One round of one configuration: baseline, N idle connections, one more request on each,
/// all closed.
async fn cycle(config: &mut Config, running: &Running, connections: usize) -> Result<(), Error> {
    let pids = running.pids();
    let dial = running.dial();
    let port = running.entry.port();
    let held_before = held_sockets(port)?;
    let (baseline, settled_0) = settled_rss(&pids).await?;

    let (senders, open_errors, first) = open_all(&dial, connections).await;
    let opened = senders.len() as u64;
    config.answered_before += opened;
    config.error(open_errors, first);
    let (idle, settled_1) = settled_rss(&pids).await?;

    let (senders, answered, first) = ask_all(senders, dial.authority).await;
    config.answered_after += answered;
    config.error(opened - answered, first);
    drop(senders);
    let closed = wait_closed(port, held_before).await?;
    if !closed {
        config.error(
            0,
            Some(format!(
                "the server on port {port} still held connections {SETTLE_LIMIT:?} after the \
                 client closed them"
            )),
        );
    }
    let (after, settled_2) = settled_rss(&pids).await?;

    for (i, per_proxy) in config.readings.iter_mut().enumerate() {
        let at = |v: &[u64]| v.get(i).copied().unwrap_or(0);
        per_proxy.push(Reading {
            baseline: at(&baseline),
            idle: at(&idle),
            after_close: at(&after),
            answered: opened,
            settled: settled_0 && settled_1 && settled_2 && closed,
        });
    }
    Ok(())
}

/// Starts one configuration: as [`start_plain`], with our client side's limits raised.
async fn start(
    topology: Topology,
    options: &WorkloadOptions,
    envoy: Option<&Path>,
    dir: &Path,
    app: std::net::SocketAddr,
) -> Result<Running, Error> {
    match topology {
        Topology::Ours => {
            topology::start_ours_with(
                &options.bin_dir,
                dir,
                app,
                Runtime::Default,
                OURS_CLIENT_LIMITS,
            )
            .await
        }
        other => start_plain(other, options, envoy, dir, app).await,
    }
}

/// A few requests on one connection, so the baseline is a proxy that has served traffic.
async fn warm_up(running: &Running) -> Result<(), Error> {
    let dial = running.dial();
    let mut send = tokio::time::timeout(CONNECT_LIMIT, load::connect(&dial))
        .await
        .map_err(|_| Error::Timeout)??;
    for _ in 0..WARMUP_REQUESTS {
        ask(&mut send, dial.authority).await?;
    }
    Ok(())
}

fn median_kib(values: impl Iterator<Item = u64>) -> u64 {
    median(values.map(|v| v as f64).collect()).map_or(0, |v| v.round() as u64)
}

fn row(config: &Config) -> IdleRow {
    let proxies = config
        .roles
        .iter()
        .zip(&config.readings)
        .filter(|(_, r)| !r.is_empty())
        .map(|(role, r)| {
            let by_round: Vec<f64> = r.iter().map(Reading::bytes_per_connection).collect();
            ProxyMemory {
                role: (*role).to_owned(),
                baseline_kib: median_kib(r.iter().map(|x| x.baseline)),
                idle_kib: median_kib(r.iter().map(|x| x.idle)),
                after_close_kib: median_kib(r.iter().map(|x| x.after_close)),
                bytes_per_connection: median(by_round.clone()).unwrap_or(0.0),
                bytes_per_connection_by_round: by_round,
                settled: r.iter().all(|x| x.settled),
            }
        })
        .collect();
    IdleRow {
        name: config.topology,
        failure: config.failure.clone(),
        answered_before: config.answered_before,
        answered_after: config.answered_after,
        errors: config.errors,
        first_error: config.first_error.clone(),
        proxies,
    }
}

/// Starts the app and every configuration, then per round holds `connections` idle
/// connections through each in turn; summarises the memory each cost.
pub(super) async fn measure(
    workload: Workload,
    plan: &Plan,
    options: &WorkloadOptions,
    envoy: Option<&Path>,
    connections: usize,
) -> Result<(WorkloadReport, Option<f64>), Error> {
    // Before any process starts: the app and the proxies inherit the limit.
    let open_files_limit = raise_open_files(connections)?;
    let dir = tempfile::Builder::new()
        .prefix("workload-")
        .tempdir()
        .map_err(|e| Error::io("temp dir", e))?;
    topology::write_certs(dir.path())?;
    let (app, app_addr) =
        topology::start_app(&options.harness, dir.path(), super::AppKind::Http).await?;
    let mut configs: Vec<Config> = options
        .topologies
        .iter()
        .map(|&topology| Config {
            topology,
            roles: Vec::new(),
            failure: None,
            answered_before: 0,
            answered_after: 0,
            errors: 0,
            first_error: None,
            readings: Vec::new(),
        })
        .collect();
    // Fresh proxies every round: memory a proxy kept from the last round's connections (its
    // allocator rarely gives it back) would make the next round's cost look small.
    for round in 0..plan.rounds {
        for config in &mut configs {
            if config.failure.is_some() {
                continue;
            }
            eprintln!(
                "{} round {}/{}: {} ({connections} connections)",
                workload.name(),
                round + 1,
                plan.rounds,
                config.topology.name()
            );
            let running = match start(config.topology, options, envoy, dir.path(), app_addr).await {
                Ok(running) => running,
                Err(e) => {
                    eprintln!(
                        "{} {}: failed to start: {e}",
                        workload.name(),
                        config.topology.name()
                    );
                    config.fail(e);
                    continue;
                }
            };
            if config.roles.is_empty() {
                config.roles = running.proxies.iter().map(|(role, _)| *role).collect();
                config.readings = vec![Vec::new(); config.roles.len()];
            }
            let done = match warm_up(&running).await {
                Ok(()) => cycle(config, &running, connections).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                eprintln!(
                    "{} {}: failed: {e}",
                    workload.name(),
                    config.topology.name()
                );
                config.fail(e);
            }
            drop(running);
        }
    }
    let rows: Vec<IdleRow> = configs.iter().map(row).collect();
    drop(app);
    let result = IdleResult {
        connections,
        rounds: plan.rounds,
        open_files_limit,
        rows,
        bytes_per_connection_ratio: None,
        notes: vec![
            format!(
                "our client-side sidecar runs with `{}` (defaults: `max_connections` 10,000, \
                 which a full run's 10,000 connections fill exactly; `header_read_timeout` 30 s, \
                 which also closes an HTTP/1.1 connection idle that long)",
                OURS_CLIENT_LIMITS.trim()
            ),
            "Envoy runs with its defaults: no connection limit without an overload manager \
             (it warns about that at start), HTTP idle timeout 1 h"
                .to_owned(),
        ],
    };
    Ok((WorkloadReport::idle(workload, plan, result), None))
}

impl IdleResult {
    fn client_side(&self, topology: Topology) -> Option<f64> {
        let row = self
            .rows
            .iter()
            .find(|r| r.name == topology && r.failure.is_none() && r.errors == 0)?;
        row.proxies.first().map(|p| p.bytes_per_connection)
    }

    /// Fills in the ratio and returns the target: memory per idle connection of the
    /// client-side proxy, which holds the client connections.
    pub(super) fn judge(&mut self) -> Option<super::super::Target> {
        let (ours, envoy) = (
            self.client_side(Topology::Ours),
            self.client_side(Topology::Envoy),
        );
        self.bytes_per_connection_ratio = super::super::report::ratio(ours, envoy);
        let measured = |t| self.rows.iter().any(|r| r.name == t);
        (measured(Topology::Ours) || measured(Topology::Envoy)).then(|| {
            at_most(
                "memory per idle client connection ≤ 0.5 × Envoy's (client-side proxy, VmRSS)",
                ours,
                envoy,
                0.5,
                "bytes per connection",
                0,
            )
        })
    }

    /// Any configuration that failed, saw an error, or held nothing.
    pub(super) fn has_failures(&self) -> bool {
        self.rows.iter().any(|r| {
            r.failure.is_some()
                || r.errors > 0
                || r.answered_before == 0
                || r.answered_after != r.answered_before
        })
    }

    pub(super) fn markdown(&self, md: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            md,
            "Plan: {} round(s), one configuration at a time; {} connections held open at once; \
             open-file limit {}.\n",
            self.rounds, self.connections, self.open_files_limit
        );
        let _ = writeln!(
            md,
            "| configuration | proxy | answered before / after idling | errors | RSS MiB: baseline | with idle connections | after close | bytes per idle connection (median of rounds) |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
        let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
        for r in &self.rows {
            let name = match &r.failure {
                Some(_) => format!("{} (FAILED)", r.name.name()),
                None => r.name.name().to_owned(),
            };
            let answered = format!("{} / {}", r.answered_before, r.answered_after);
            if r.proxies.is_empty() {
                let _ = writeln!(
                    md,
                    "| {name} | – | {answered} | {} | – | – | – | – |",
                    r.errors
                );
            }
            for p in &r.proxies {
                let mark = if p.settled { "" } else { " (not settled)" };
                let _ = writeln!(
                    md,
                    "| {name} | {} | {answered} | {} | {} | {} | {} | {:.0}{mark} |",
                    p.role,
                    r.errors,
                    mib(p.baseline_kib),
                    mib(p.idle_kib),
                    mib(p.after_close_kib),
                    p.bytes_per_connection,
                );
            }
        }
        for r in &self.rows {
            if let Some(failure) = &r.failure {
                let _ = writeln!(
                    md,
                    "\n{} failed: {}",
                    r.name.name(),
                    failure.replace('\n', "\n  ")
                );
            } else if let Some(first) = &r.first_error {
                let _ = writeln!(md, "\n{} first error: {first}", r.name.name());
            }
        }
        let _ = writeln!(md);
        for note in &self.notes {
            let _ = writeln!(md, "- {note}");
        }
        let _ = writeln!(
            md,
            "\nOurs ÷ Envoy: bytes per idle connection (client side) {}.\n",
            super::super::report::times(self.bytes_per_connection_ratio)
        );
    }
}
