//! Turning the tallies into numbers, ratios against Envoy, targets, markdown and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::gateway_cost::GatewayComparison;
use super::procs::TICKS_PER_SEC;
use super::procs::{rss_split_kib, thread_count};
use super::redirect_cost::RedirectCost;
use super::{Error, Options, Plan, Tally, Topology, peak_rss_kib};

/// Where and when the numbers were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub date_utc: String,
    /// The commit the binaries were built from (`-dirty`: with uncommitted changes), when run
    /// from a checkout.
    pub commit: Option<String>,
    /// The sidecar binary measured (`$MESH_BENCH_SIDECAR`, else the one beside the harness),
    /// relative to the working directory when inside it: its directory names the profile.
    pub sidecar_binary: Option<String>,
    /// /proc/loadavg before anything was started and after the last round.
    pub load_before: String,
    pub load_after: String,
    /// Share of all cores' time that processes other than the harness, the app and the
    /// proxies used during the rounds: a busy machine shows here.
    pub other_processes_cpu_share: Option<f64>,
    pub envoy_version: Option<String>,
}

impl Machine {
    /// The report lines naming when, where, which commit and how busy the machine was.
    pub(crate) fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "- date: {}", self.date_utc);
        if let Some(commit) = &self.commit {
            let _ = writeln!(md, "- commit: {commit}");
        }
        if let Some(sidecar) = &self.sidecar_binary {
            let _ = writeln!(md, "- sidecar binary: `{sidecar}`");
        }
        let _ = writeln!(
            md,
            "- CPU: {}, {} cores; kernel {}",
            self.cpu_model, self.cores, self.kernel
        );
        let _ = writeln!(
            md,
            "- load average before: {}; after: {}; other processes' share of CPU during the rounds: {}",
            self.load_before,
            self.load_after,
            self.other_processes_cpu_share
                .map_or_else(|| "–".to_owned(), |s| format!("{:.0}%", s * 100.0))
        );
        if let Some(v) = &self.envoy_version {
            let _ = writeln!(md, "- Envoy: {v}");
        }
    }

    pub(crate) fn collect(
        load_before: String,
        load_after: String,
        other_processes_cpu_share: Option<f64>,
        envoy_version: Option<String>,
    ) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            date_utc: utc_now(),
            commit: commit(),
            sidecar_binary: measured_sidecar(),
            load_before,
            load_after,
            other_processes_cpu_share,
            envoy_version,
        }
    }
}

/// The plan as run.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub rounds: u32,
    pub connections: usize,
    pub throughput_seconds_per_round: f64,
    pub rate_per_second: u32,
    pub rate_connections: usize,
    pub latency_seconds_per_round: f64,
    pub warmup_seconds: f64,
}

/// Closed-loop results, summed over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
}

/// Open-loop results, merged over rounds; latencies in microseconds from the intended send
/// time.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub rate_per_second: u32,
    pub scheduled: u64,
    pub recorded: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Each round's own p99, in round order.
    pub p99_by_round_us: Vec<u64>,
}

/// One proxy process.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyResult {
    pub role: String,
    pub pid: u32,
    pub cpu_seconds_throughput: f64,
    pub cpu_seconds_latency: f64,
    pub peak_rss_kib: u64,
    /// RSS at the end of the run, anonymous and file-backed (the binary's pages, shared by
    /// every process of the same binary on the host).
    pub rss_anon_kib_at_end: Option<u64>,
    pub rss_file_kib_at_end: Option<u64>,
    /// Threads at the end of the run (shows the one-worker settings took effect).
    pub threads: Option<u64>,
}

/// One configuration.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyResult {
    pub name: Topology,
    pub path: String,
    /// Why it could not start or stopped being measured.
    pub failure: Option<String>,
    pub throughput: Option<ThroughputResult>,
    pub latency: Option<LatencyResult>,
    pub proxies: Vec<ProxyResult>,
    /// Both proxies' CPU seconds per 10,000 requests in the max-throughput phase.
    pub proxy_cpu_seconds_per_10k_at_max: Option<f64>,
    /// The same in the fixed-rate phase (includes idle timers and wake-ups).
    pub proxy_cpu_seconds_per_10k_at_rate: Option<f64>,
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    /// The median over rounds of this round's p99 minus direct's p99 in the same round: a
    /// check on `added_p99_us` that one disturbed round cannot move.
    pub added_p99_median_of_rounds_us: Option<f64>,
}

impl TopologyResult {
    fn errors(&self) -> u64 {
        self.throughput.as_ref().map_or(0, |t| t.errors)
            + self.latency.as_ref().map_or(0, |l| l.errors)
    }

    fn max_rss_kib(&self) -> Option<u64> {
        self.proxies.iter().map(|p| p.peak_rss_kib).max()
    }
}

/// A target, checked against Envoy in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    /// `None` when a number is missing (a configuration failed).
    pub met: Option<bool>,
    pub detail: String,
}

/// A configuration asked for that this machine cannot run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub name: Topology,
    pub why: String,
}

/// Everything one run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub mode: String,
    pub machine: Machine,
    pub plan: PlanReport,
    pub results: Vec<TopologyResult>,
    /// ours ÷ envoy.
    pub ratios: Ratios,
    /// ours-transparent against ours-explicit, when the run included them.
    pub redirect: Option<RedirectCost>,
    /// ours-gateway against envoy-gateway, when the run included them.
    pub gateway: Option<GatewayComparison>,
    /// Ours against Envoy, then the redirect's, then the gateway's.
    pub targets: Vec<Target>,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<String>,
}

/// Ours divided by Envoy's, for each compared quantity.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    pub proxy_cpu_per_request_at_max: Option<f64>,
    pub proxy_cpu_per_request_at_rate: Option<f64>,
    pub added_p99: Option<f64>,
    pub added_p99_median_of_rounds: Option<f64>,
    pub added_p50: Option<f64>,
    pub peak_rss: Option<f64>,
    pub throughput: Option<f64>,
}

pub(crate) fn summarize(tally: &Tally, plan: &Plan) -> Result<TopologyResult, Error> {
    let throughput = (tally.closed.seconds > 0.0).then(|| ThroughputResult {
        requests: tally.closed.ok,
        errors: tally.closed.errors,
        seconds: tally.closed.seconds,
        requests_per_second: tally.closed.ok as f64 / tally.closed.seconds,
    });
    let latency = tally.open.as_ref().map(|open| LatencyResult {
        rate_per_second: plan.rate,
        scheduled: open.sent,
        recorded: open.hist.len(),
        errors: open.errors,
        p50_us: open.hist.value_at_quantile(0.50),
        p90_us: open.hist.value_at_quantile(0.90),
        p99_us: open.hist.value_at_quantile(0.99),
        max_us: open.hist.max(),
        p99_by_round_us: tally.round_p99.clone(),
    });
    let mut proxies = Vec::new();
    if let Some(running) = &tally.running {
        for ((role, proc), (tp, lat)) in running.proxies.iter().zip(&tally.cpu) {
            let (rss_anon_kib_at_end, rss_file_kib_at_end) = rss_split_kib(proc.pid()).unzip();
            proxies.push(ProxyResult {
                role: format!("{role} ({})", proc.name),
                pid: proc.pid(),
                cpu_seconds_throughput: *tp as f64 / TICKS_PER_SEC,
                cpu_seconds_latency: *lat as f64 / TICKS_PER_SEC,
                peak_rss_kib: peak_rss_kib(proc.pid())?,
                rss_anon_kib_at_end,
                rss_file_kib_at_end,
                threads: thread_count(proc.pid()),
            });
        }
    }
    let per_10k = |cpu: f64, requests: u64| {
        (!proxies.is_empty() && requests > 0).then(|| cpu / requests as f64 * 10_000.0)
    };
    let at_max = per_10k(
        proxies.iter().map(|p| p.cpu_seconds_throughput).sum(),
        tally.closed.ok,
    );
    let at_rate = per_10k(
        proxies.iter().map(|p| p.cpu_seconds_latency).sum(),
        latency.as_ref().map_or(0, |l| l.recorded + l.errors),
    );
    Ok(TopologyResult {
        name: tally.topology,
        path: tally.topology.path().to_owned(),
        failure: tally.failure.clone(),
        throughput,
        latency,
        proxies,
        proxy_cpu_seconds_per_10k_at_max: at_max,
        proxy_cpu_seconds_per_10k_at_rate: at_rate,
        added_p50_us: None,
        added_p99_us: None,
        added_p99_median_of_rounds_us: None,
    })
}

/// Fills in each proxied configuration's latency over direct.
pub(crate) fn add_differences(results: &mut [TopologyResult]) {
    let direct = results
        .iter()
        .find(|r| r.name == Topology::Direct)
        .and_then(|r| r.latency.clone());
    let Some(direct) = direct else { return };
    for r in results.iter_mut().filter(|r| r.name != Topology::Direct) {
        if let Some(l) = &r.latency {
            r.added_p50_us = Some(l.p50_us as f64 - direct.p50_us as f64);
            r.added_p99_us = Some(l.p99_us as f64 - direct.p99_us as f64);
            if l.p99_by_round_us.len() == direct.p99_by_round_us.len() {
                let added: Vec<f64> = l
                    .p99_by_round_us
                    .iter()
                    .zip(&direct.p99_by_round_us)
                    .map(|(p, d)| *p as f64 - *d as f64)
                    .collect();
                r.added_p99_median_of_rounds_us = median(added);
            }
        }
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

pub(crate) fn ratio(ours: Option<f64>, envoy: Option<f64>) -> Option<f64> {
    match (ours, envoy) {
        (Some(o), Some(e)) if e > 0.0 => Some(o / e),
        _ => None,
    }
}

/// "missed by 15%" / "met with 20% to spare" for a ratio that must stay at most `limit`.
pub(crate) fn at_most(
    name: &str,
    ours: Option<f64>,
    envoy: Option<f64>,
    limit: f64,
    unit: &str,
    decimals: usize,
) -> Target {
    let r = ratio(ours, envoy);
    let (met, verdict) = match r {
        Some(r) if r <= limit => (
            Some(true),
            format!("met ({:.0}% under the limit)", (1.0 - r / limit) * 100.0),
        ),
        Some(r) => (
            Some(false),
            format!("missed by {:.0}%", (r / limit - 1.0) * 100.0),
        ),
        None => (None, "not measured".to_owned()),
    };
    Target {
        name: name.to_owned(),
        met,
        detail: format!(
            "ours {} vs Envoy {} {unit} → {} (limit ≤ {limit}×): {verdict}",
            num(ours, decimals),
            num(envoy, decimals),
            times(r),
        ),
    }
}

pub(crate) fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

pub(crate) fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}×"))
}

/// Peak RSS per sidecar, MiB, on the keep-alive workload. Its targets, with the sidecar's
/// defaults, are stricter than the other workloads' (CPU ≤ 0.4× Envoy's, added p99 ≤ 0.5×,
/// throughput ≥ 2×, against 0.6×, 0.7×, 1.2×): this is the traffic a mesh carries most.
const RSS_LIMIT_MIB: f64 = 10.0;

fn targets(
    ours: Option<&TopologyResult>,
    envoy: Option<&TopologyResult>,
    ratios: &Ratios,
) -> Vec<Target> {
    let get = |r: Option<&TopologyResult>, f: fn(&TopologyResult) -> Option<f64>| r.and_then(f);
    let mut out = vec![
        at_most(
            "proxy CPU per request ≤ 0.4 × Envoy's (max-throughput phase)",
            get(ours, |r| r.proxy_cpu_seconds_per_10k_at_max),
            get(envoy, |r| r.proxy_cpu_seconds_per_10k_at_max),
            0.4,
            "CPU s per 10k requests",
            3,
        ),
        // Judged per round, then the median: one disturbed two-second round (a hiccup of the
        // shared machine) sets the pooled p99 of every round's requests on its own.
        at_most(
            "added p99 over direct ≤ 0.5 × Envoy's (median of the rounds' own)",
            get(ours, |r| r.added_p99_median_of_rounds_us),
            get(envoy, |r| r.added_p99_median_of_rounds_us),
            0.5,
            "µs",
            0,
        ),
    ];
    if let Some(r) = ratios.added_p99 {
        out[1].detail.push_str(&format!(
            "; pooled over all rounds: ours {} vs Envoy {} µs → {}",
            num(get(ours, |r| r.added_p99_us), 0),
            num(get(envoy, |r| r.added_p99_us), 0),
            times(Some(r)),
        ));
    }
    let mib = |r: Option<&TopologyResult>| {
        r.and_then(TopologyResult::max_rss_kib)
            .map(|k| k as f64 / 1024.0)
    };
    let (our_rss, envoy_rss) = (mib(ours), mib(envoy));
    let rss_ratio = ratios.peak_rss;
    let (met, verdict) = match (our_rss, rss_ratio) {
        (Some(o), Some(r)) => {
            let met = o <= RSS_LIMIT_MIB && r <= 0.5;
            let mut why = Vec::new();
            if o > RSS_LIMIT_MIB {
                why.push(format!(
                    "{:.1} MiB over {RSS_LIMIT_MIB} MiB",
                    o - RSS_LIMIT_MIB
                ));
            }
            if r > 0.5 {
                why.push(format!("ratio {:.0}% over 0.5×", (r / 0.5 - 1.0) * 100.0));
            }
            (
                Some(met),
                if met {
                    "met".to_owned()
                } else {
                    format!("missed: {}", why.join(", "))
                },
            )
        }
        (Some(o), None) => (
            None,
            format!(
                "{} {RSS_LIMIT_MIB} MiB; no Envoy number to compare",
                if o <= RSS_LIMIT_MIB { "within" } else { "over" }
            ),
        ),
        _ => (None, "not measured".to_owned()),
    };
    let mut detail = format!(
        "largest sidecar {} MiB vs largest Envoy {} MiB → {} : {verdict}",
        our_rss.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}")),
        envoy_rss.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}")),
        times(rss_ratio),
    );
    // What the peak is made of: a process's own memory, and its binary's pages, which every
    // sidecar on a host shares through the page cache.
    for (who, result) in [("sidecar", ours), ("Envoy", envoy)] {
        let largest = result.and_then(|r| r.proxies.iter().max_by_key(|p| p.peak_rss_kib));
        if let Some((anon, file)) =
            largest.and_then(|p| Some((p.rss_anon_kib_at_end?, p.rss_file_kib_at_end?)))
        {
            detail.push_str(&format!(
                "; that {who} at the end: {:.1} MiB anonymous + {:.1} MiB file-backed",
                anon as f64 / 1024.0,
                file as f64 / 1024.0
            ));
        }
    }
    out.push(Target {
        name: format!("peak RSS per sidecar ≤ {RSS_LIMIT_MIB} MiB and ≤ 0.5 × Envoy's"),
        met,
        detail,
    });
    out.push(at_least(
        "max throughput ≥ 2 × Envoy's",
        requests_per_second(ours),
        requests_per_second(envoy),
        2.0,
        "req/s",
    ));
    out
}

/// Whether the run included our sidecar pair or Envoy's, the configurations the main targets
/// compare; a run of only the gateways or the namespaced pair has no such targets.
fn includes_pair(results: &[TopologyResult]) -> bool {
    results
        .iter()
        .any(|r| matches!(r.name, Topology::Ours | Topology::Envoy))
}

/// Max-throughput requests per second of a configuration that ran.
pub(crate) fn requests_per_second(r: Option<&TopologyResult>) -> Option<f64> {
    r.and_then(|r| r.throughput.as_ref())
        .map(|t| t.requests_per_second)
}

/// The verdict on a ratio that must be at least `limit`.
pub(crate) fn at_least(
    name: &str,
    ours: Option<f64>,
    envoy: Option<f64>,
    limit: f64,
    unit: &str,
) -> Target {
    let r = ratio(ours, envoy);
    let (met, verdict) = match r {
        Some(r) if r >= limit => (
            Some(true),
            format!("met ({:.0}% over the limit)", (r / limit - 1.0) * 100.0),
        ),
        Some(r) => (
            Some(false),
            format!("missed by {:.0}%", (1.0 - r / limit) * 100.0),
        ),
        None => (None, "not measured".to_owned()),
    };
    Target {
        name: name.to_owned(),
        met,
        detail: format!(
            "ours {} vs Envoy {} {unit} → {} (limit ≥ {limit}×): {verdict}",
            num(ours, 0),
            num(envoy, 0),
            times(r),
        ),
    }
}

impl Report {
    pub(crate) fn new(
        options: Options,
        machine: Machine,
        results: Vec<TopologyResult>,
        skipped: Vec<Skipped>,
    ) -> Self {
        let plan = &options.plan;
        let find = |t| results.iter().find(|r| r.name == t && r.failure.is_none());
        let (ours, envoy) = (find(Topology::Ours), find(Topology::Envoy));
        // The same quantity of ours and of Envoy's, divided.
        let ours_over_envoy =
            |f: fn(&TopologyResult) -> Option<f64>| ratio(ours.and_then(f), envoy.and_then(f));
        let ratios = Ratios {
            proxy_cpu_per_request_at_max: ours_over_envoy(|r| r.proxy_cpu_seconds_per_10k_at_max),
            proxy_cpu_per_request_at_rate: ours_over_envoy(|r| r.proxy_cpu_seconds_per_10k_at_rate),
            added_p99: ours_over_envoy(|r| r.added_p99_us),
            added_p99_median_of_rounds: ours_over_envoy(|r| r.added_p99_median_of_rounds_us),
            added_p50: ours_over_envoy(|r| r.added_p50_us),
            peak_rss: ours_over_envoy(|r| r.max_rss_kib().map(|k| k as f64)),
            throughput: ours_over_envoy(|r| r.throughput.as_ref().map(|t| t.requests_per_second)),
        };
        // The pair's targets, when the run included the pair (as n/a when it failed).
        let mut targets = if includes_pair(&results) {
            targets(ours, envoy, &ratios)
        } else {
            Vec::new()
        };
        let redirect = RedirectCost::compare(&results);
        if let Some(redirect) = &redirect {
            targets.extend(redirect.targets.iter().cloned());
        }
        let gateway = GatewayComparison::compare(&results);
        if let Some(gateway) = &gateway {
            targets.extend(gateway.targets.iter().cloned());
        }
        let mut notes = vec![
            format!(
                "All processes share the machine's {} cores: the load client (this harness, a \
                 tokio runtime with one worker per core), the app (one thread, its own process) \
                 and both proxies. Max throughput is that of the whole box, not of a proxy alone.",
                machine.cores
            ),
            "Sidecars run with their default runtime, one thread (no --workers; one thread serves all traffic), Envoys with --concurrency 1 (one worker; \
             Envoy's main and flush threads come on top). Sidecars log at warn with no access \
             log and no tracing export; Envoys log at warn with no access log and otherwise \
             default settings (x-request-id generation and stats stay on)."
                .to_owned(),
            "Latency is measured from each request's intended send time on a fixed schedule \
             (a nanosleep thread), so queueing behind a slow request counts; a constant \
             scheduling and wake-up lag of the client is in every configuration and cancels \
             in the added-latency columns."
                .to_owned(),
            "The p99 target is judged per round: each round's added p99 is that configuration's \
             p99 minus direct's in the same round, and the verdict takes the median over the \
             rounds. A hiccup of the shared machine lasting a second or two lands in one \
             configuration's round and sets the pooled p99 of all its requests by itself; the \
             per-round table shows such rounds, and the pooled figures are reported too."
                .to_owned(),
            "CPU is utime+stime of both proxy processes from /proc/<pid>/stat (10 ms ticks) \
             around each phase; peak RSS is VmHWM at the end of the run."
                .to_owned(),
        ];
        let direct = results
            .iter()
            .find(|r| r.name == Topology::Direct)
            .and_then(|r| r.latency.as_ref());
        if let Some(d) = direct
            && d.p99_us > 4 * d.p50_us.max(1)
        {
            notes.push(format!(
                "Direct's own p99 ({} µs) is {:.0}× its p50 ({} µs): the tail is the machine's \
                 (preemption by other processes sharing the 2 cores), not a proxy's, so the \
                 pooled added-p99 figures of this run are mostly noise; compare p50, p90 and \
                 the rounds' own p99s.",
                d.p99_us,
                d.p99_us as f64 / d.p50_us.max(1) as f64,
                d.p50_us
            ));
        }
        if let Some(share) = machine.other_processes_cpu_share
            && share > 0.05
        {
            notes.push(format!(
                "The machine was busy: other processes used {:.0}% of all cores' time during \
                 the rounds (load average {} before, {} after), so absolute numbers are lower \
                 and noisier than on an idle machine; the interleaved rounds spread that \
                 across configurations alike.",
                share * 100.0,
                machine.load_before,
                machine.load_after
            ));
        }
        if redirect.is_some() {
            notes.push(
                "ours-explicit and ours-transparent run in network namespaces of their own, \
                 joined by a veth link, with their own app, sidecars under UID 65532 and the \
                 load client's sockets made in the client's namespace; they differ only in the \
                 redirect. Their added latency over direct (on loopback) includes the link, so \
                 compare them with each other, not with ours or Envoy."
                    .to_owned(),
            );
        }
        Self {
            command: options.command.clone(),
            mode: options.mode.clone(),
            plan: PlanReport {
                rounds: plan.rounds,
                connections: plan.connections,
                throughput_seconds_per_round: plan.throughput_phase.as_secs_f64(),
                rate_per_second: plan.rate,
                rate_connections: plan.rate_connections,
                latency_seconds_per_round: plan.latency_phase.as_secs_f64(),
                warmup_seconds: plan.warmup.as_secs_f64(),
            },
            machine,
            results,
            ratios,
            redirect,
            gateway,
            targets,
            skipped,
            notes,
        }
    }

    /// Errors in any phase, or a configuration that failed to start or stopped.
    pub fn has_failures(&self) -> bool {
        self.results
            .iter()
            .any(|r| r.failure.is_some() || r.errors() > 0 || r.throughput.is_none())
    }

    /// The report as markdown: machine, table, ratios, targets, notes.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let p = &self.plan;
        let _ = writeln!(md, "# Data-path benchmark ({} run)\n", self.mode);
        let _ = writeln!(md, "- command: `{}`", self.command);
        m.markdown(&mut md);
        let _ = writeln!(
            md,
            "- plan: {} round(s), interleaved; per configuration and round {:.1} s closed loop on {} connections, \
             then {:.1} s at {} req/s over {} connections; {:.1} s warm-up first\n",
            p.rounds,
            p.throughput_seconds_per_round,
            p.connections,
            p.latency_seconds_per_round,
            p.rate_per_second,
            p.rate_connections,
            p.warmup_seconds
        );
        let _ = writeln!(
            md,
            "| configuration | max req/s | errors | p50 µs | p90 µs | p99 µs | max µs | errors at rate | added p50 µs | added p99 µs | proxy CPU s / 10k req (max) | (at rate) | peak RSS MiB (client / server proxy) |"
        );
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in &self.results {
            let t = r.throughput.as_ref();
            let l = r.latency.as_ref();
            let opt = |v: Option<String>| v.unwrap_or_else(|| "–".to_owned());
            let rss = if r.proxies.is_empty() {
                "–".to_owned()
            } else {
                r.proxies
                    .iter()
                    .map(|p| format!("{:.1}", p.peak_rss_kib as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let name = match &r.failure {
                Some(_) => format!("{} (FAILED)", r.name.name()),
                None => r.name.name().to_owned(),
            };
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {rss} |",
                opt(t.map(|t| format!("{:.0}", t.requests_per_second))),
                opt(t.map(|t| t.errors.to_string())),
                opt(l.map(|l| l.p50_us.to_string())),
                opt(l.map(|l| l.p90_us.to_string())),
                opt(l.map(|l| l.p99_us.to_string())),
                opt(l.map(|l| l.max_us.to_string())),
                opt(l.map(|l| l.errors.to_string())),
                opt(r.added_p50_us.map(|v| format!("{v:.0}"))),
                opt(r.added_p99_us.map(|v| format!("{v:.0}"))),
                opt(r
                    .proxy_cpu_seconds_per_10k_at_max
                    .map(|v| format!("{v:.3}"))),
                opt(r
                    .proxy_cpu_seconds_per_10k_at_rate
                    .map(|v| format!("{v:.3}"))),
            );
        }
        let _ = writeln!(md, "\nPaths:");
        for r in &self.results {
            let _ = writeln!(md, "- {}: {}", r.name.name(), r.path);
        }
        let _ = writeln!(
            md,
            "\n| proxy | threads | CPU s, max phases | CPU s, rate phases | peak RSS KiB | RSS at end KiB: anonymous / file-backed |\n|---|---:|---:|---:|---:|---:|"
        );
        for r in &self.results {
            for p in &r.proxies {
                let _ = writeln!(
                    md,
                    "| {}: {} | {} | {:.2} | {:.2} | {} | {} / {} |",
                    r.name.name(),
                    p.role,
                    p.threads.map_or_else(|| "–".to_owned(), |t| t.to_string()),
                    p.cpu_seconds_throughput,
                    p.cpu_seconds_latency,
                    p.peak_rss_kib,
                    p.rss_anon_kib_at_end
                        .map_or_else(|| "–".to_owned(), |k| k.to_string()),
                    p.rss_file_kib_at_end
                        .map_or_else(|| "–".to_owned(), |k| k.to_string()),
                );
            }
        }
        let rounds = self
            .results
            .iter()
            .filter_map(|r| r.latency.as_ref())
            .map(|l| l.p99_by_round_us.len())
            .max()
            .unwrap_or(0);
        if rounds > 1 {
            let _ = writeln!(md, "\np99 µs of each round's fixed-rate phase:\n");
            let header: String = (1..=rounds).map(|i| format!(" {i} |")).collect();
            let _ = writeln!(md, "| configuration |{header}");
            let _ = writeln!(md, "|---|{}", "---:|".repeat(rounds));
            for r in &self.results {
                if let Some(l) = &r.latency {
                    let cells: String = l
                        .p99_by_round_us
                        .iter()
                        .map(|v| format!(" {v} |"))
                        .collect();
                    let _ = writeln!(md, "| {} |{cells}", r.name.name());
                }
            }
        }
        let failures: Vec<_> = self
            .results
            .iter()
            .filter_map(|r| r.failure.as_ref().map(|f| (r.name.name(), f)))
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(md, "\n## Failures\n");
            for (name, f) in failures {
                let _ = writeln!(md, "- {name}: {}", f.replace('\n', "\n  "));
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(md, "\n## Skipped\n");
            for s in &self.skipped {
                let _ = writeln!(md, "- {}: {}", s.name.name(), s.why);
            }
        }
        let ra = &self.ratios;
        if includes_pair(&self.results) {
            let _ = writeln!(md, "\n## Ours ÷ Envoy\n");
            let _ = writeln!(md, "| quantity | ratio |\n|---|---:|");
            for (name, v) in [
                (
                    "proxy CPU per request, max-throughput phase",
                    ra.proxy_cpu_per_request_at_max,
                ),
                (
                    "proxy CPU per request, fixed-rate phase",
                    ra.proxy_cpu_per_request_at_rate,
                ),
                ("added p50 over direct", ra.added_p50),
                (
                    "added p99 over direct, median of the rounds' own",
                    ra.added_p99_median_of_rounds,
                ),
                (
                    "added p99 over direct, pooled over all rounds",
                    ra.added_p99,
                ),
                ("peak RSS (largest proxy)", ra.peak_rss),
                ("max throughput", ra.throughput),
            ] {
                let _ = writeln!(md, "| {name} | {} |", times(v));
            }
        }
        if let Some(redirect) = &self.redirect {
            redirect.markdown(&mut md);
        }
        if let Some(gateway) = &self.gateway {
            gateway.markdown(&mut md);
        }
        let _ = writeln!(md, "\n## Targets\n");
        for t in &self.targets {
            let mark = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            let _ = writeln!(md, "- **{mark}**: {}: {}", t.name, t.detail);
        }
        let _ = writeln!(md, "\n## Notes\n");
        for n in &self.notes {
            let _ = writeln!(md, "- {n}");
        }
        md
    }
}

/// The commit the binaries were built from, as `git describe` names it (`-dirty` when the
/// working tree differs), when run from a checkout.
pub fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// The sidecar binary this harness runs, as [`super::sidecar_binary`] finds it.
fn measured_sidecar() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let path = super::sidecar_binary(exe.parent()?).ok()?;
    let cwd = std::env::current_dir().ok()?;
    let shown = path.strip_prefix(&cwd).unwrap_or(&path);
    Some(shown.display().to_string())
}

/// The three load averages from /proc/loadavg.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`, from the system clock (days to civil date after H. Hinnant).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_verdicts() {
        let t = at_most("x", Some(0.5), Some(1.0), 0.6, "s", 3);
        assert_eq!(t.met, Some(true));
        let t = at_most("x", Some(0.9), Some(1.0), 0.6, "s", 3);
        assert_eq!(t.met, Some(false));
        assert!(t.detail.contains("missed by 50%"), "{}", t.detail);
        assert_eq!(at_most("x", Some(1.0), None, 0.6, "s", 3).met, None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn date_format() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z'), "{d}");
    }
}
