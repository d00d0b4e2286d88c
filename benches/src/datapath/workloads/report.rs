//! Each workload's numbers, its ratios to Envoy, its targets, and the run as markdown and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::super::procs::TICKS_PER_SEC;
use super::super::report::{Machine, Target, at_least, at_most, median, num, ratio, times};
use super::super::{Error, Plan, Topology, peak_rss_kib};
use super::exchange::Tally;
use super::idle::IdleResult;
use super::{Workload, WorkloadOptions};

/// One configuration under one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: Topology,
    /// Why it could not start or stopped being measured.
    pub failure: Option<String>,
    /// Closed loop: units of work per second and payload MB/s (10^6 bytes, both ways).
    pub units_per_second: Option<f64>,
    pub mb_per_second: Option<f64>,
    /// Failed units in the closed and the open loops.
    pub errors: u64,
    /// Open loop, µs from the intended send time, pooled over the rounds.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Each round's own open-loop p99.
    pub p99_by_round_us: Vec<u64>,
    /// Median over rounds of this round's p99 minus direct's in the same round.
    pub added_p99_median_of_rounds_us: Option<f64>,
    /// All proxies' CPU seconds per 10,000 units in the closed loop.
    pub proxy_cpu_seconds_per_10k: Option<f64>,
    /// All proxies' CPU seconds per GB (10^9 payload bytes) in the closed loop.
    pub proxy_cpu_seconds_per_gb: Option<f64>,
    /// Peak RSS of each proxy, client side first (KiB).
    pub peak_rss_kib: Vec<u64>,
    /// Counts a workload reads from the configuration after its rounds, by name (the
    /// destinations workload: distinct destinations in the client side's metrics, connections
    /// between the proxies and to the app, the client side's RSS after start).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, u64>,
}

impl Row {
    fn max_rss_kib(&self) -> Option<u64> {
        self.peak_rss_kib.iter().copied().max()
    }
}

/// One workload: its plan, rows, ratios and targets.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub workload: Workload,
    pub description: String,
    pub unit: String,
    pub rounds: u32,
    pub connections: usize,
    pub throughput_seconds_per_round: f64,
    pub rate_per_second: u32,
    pub rate_connections: usize,
    pub latency_seconds_per_round: f64,
    pub rows: Vec<Row>,
    /// Judged per byte: CPU per GB and MB/s instead of per unit ([`Workload::judged_by_bytes`]).
    pub judged_by_bytes: bool,
    /// MB/s and CPU per GB in the table: for workloads judged by bytes, and for those that
    /// move many (streams).
    pub shows_bytes: bool,
    /// ours ÷ envoy: CPU per unit (per GB when judged by bytes), added p99 (median of rounds),
    /// throughput (MB/s when judged by bytes), peak RSS.
    pub cpu_ratio: Option<f64>,
    pub added_p99_ratio: Option<f64>,
    pub throughput_ratio: Option<f64>,
    pub peak_rss_ratio: Option<f64>,
    pub targets: Vec<Target>,
    /// `idle-connections`: its own numbers, in place of the request rows (which it leaves
    /// empty).
    pub idle: Option<IdleResult>,
}

pub(crate) fn summarize(tally: &Tally) -> Result<Row, Error> {
    let mut cpu_ticks = 0;
    let mut peak = Vec::new();
    if let Some(running) = &tally.running {
        for ((_, proc), (closed, _)) in running.proxies.iter().zip(&tally.cpu) {
            cpu_ticks += closed;
            peak.push(peak_rss_kib(proc.pid())?);
        }
    }
    let proxied = !peak.is_empty();
    let cpu = cpu_ticks as f64 / TICKS_PER_SEC;
    let c = &tally.closed;
    let seconds = (c.seconds > 0.0).then_some(c.seconds);
    let hist = tally.hist.as_ref();
    Ok(Row {
        name: tally.topology,
        failure: tally.failure.clone(),
        units_per_second: seconds.map(|s| c.ok as f64 / s),
        mb_per_second: seconds.map(|s| c.bytes as f64 / 1e6 / s),
        errors: c.errors + tally.open.errors,
        p50_us: hist.map(|h| h.value_at_quantile(0.50)),
        p99_us: hist.map(|h| h.value_at_quantile(0.99)),
        p99_by_round_us: tally.round_p99.clone(),
        added_p99_median_of_rounds_us: None,
        proxy_cpu_seconds_per_10k: (proxied && c.ok > 0).then(|| cpu / c.ok as f64 * 10_000.0),
        proxy_cpu_seconds_per_gb: (proxied && c.bytes > 0).then(|| cpu / (c.bytes as f64 / 1e9)),
        peak_rss_kib: peak,
        details: tally.details.clone(),
    })
}

impl WorkloadReport {
    pub(crate) fn new(workload: Workload, plan: &Plan, mut rows: Vec<Row>) -> Self {
        let direct = rows
            .iter()
            .find(|r| r.name == Topology::Direct)
            .map(|r| r.p99_by_round_us.clone());
        if let Some(direct) = direct {
            for r in rows.iter_mut().filter(|r| r.name != Topology::Direct) {
                if r.p99_by_round_us.len() == direct.len() && !direct.is_empty() {
                    r.added_p99_median_of_rounds_us = median(
                        r.p99_by_round_us
                            .iter()
                            .zip(&direct)
                            .map(|(p, d)| *p as f64 - *d as f64)
                            .collect(),
                    );
                }
            }
        }
        let find = |t| rows.iter().find(|r| r.name == t && r.failure.is_none());
        let (ours, envoy) = (find(Topology::Ours), find(Topology::Envoy));
        let get = |r: Option<&Row>, f: fn(&Row) -> Option<f64>| r.and_then(f);
        let bytes = workload.judged_by_bytes();
        let cpu: fn(&Row) -> Option<f64> = if bytes {
            |r| r.proxy_cpu_seconds_per_gb
        } else {
            |r| r.proxy_cpu_seconds_per_10k
        };
        let p99 = |r: &Row| r.added_p99_median_of_rounds_us;
        let tput: fn(&Row) -> Option<f64> = if bytes {
            |r| r.mb_per_second
        } else {
            |r| r.units_per_second
        };
        let rss = |r: &Row| r.max_rss_kib().map(|k| k as f64);
        let unit = workload.unit();
        let (per, cpu_unit, tput_unit) = if bytes {
            ("GB", "CPU s per GB".to_owned(), "MB/s".to_owned())
        } else {
            (unit, format!("CPU s per 10k {unit}s"), format!("{unit}s/s"))
        };
        let mut targets = Vec::new();
        if ours.is_some() || envoy.is_some() {
            targets.push(at_most(
                &format!("proxy CPU per {per} ≤ 0.6 × Envoy's (closed loop)"),
                get(ours, cpu),
                get(envoy, cpu),
                0.6,
                &cpu_unit,
                if bytes { 2 } else { 3 },
            ));
            targets.push(at_most(
                "added p99 over direct ≤ 0.7 × Envoy's (median of the rounds' own)",
                get(ours, p99),
                get(envoy, p99),
                0.7,
                "µs",
                0,
            ));
            targets.push(at_least(
                "max throughput ≥ 1.2 × Envoy's",
                get(ours, tput),
                get(envoy, tput),
                1.2,
                &tput_unit,
            ));
        }
        Self {
            workload,
            description: workload.describe().to_owned(),
            unit: unit.to_owned(),
            rounds: plan.rounds,
            connections: plan.connections,
            throughput_seconds_per_round: plan.throughput_phase.as_secs_f64(),
            rate_per_second: plan.rate,
            rate_connections: plan.rate_connections,
            latency_seconds_per_round: plan.latency_phase.as_secs_f64(),
            judged_by_bytes: bytes,
            shows_bytes: bytes || workload.moves_bytes(),
            cpu_ratio: ratio(get(ours, cpu), get(envoy, cpu)),
            added_p99_ratio: ratio(get(ours, p99), get(envoy, p99)),
            throughput_ratio: ratio(get(ours, tput), get(envoy, tput)),
            peak_rss_ratio: ratio(get(ours, rss), get(envoy, rss)),
            rows,
            targets,
            idle: None,
        }
    }

    /// A workload measured by [`super::idle`]: no request rows, its own table and target.
    pub(crate) fn idle(workload: Workload, plan: &Plan, mut idle: IdleResult) -> Self {
        let mut report = Self::new(workload, plan, Vec::new());
        report.targets.extend(idle.judge());
        report.idle = Some(idle);
        report
    }

    /// Errors in any phase, or a configuration that failed to start or stopped.
    pub fn has_failures(&self) -> bool {
        if let Some(idle) = &self.idle {
            return idle.has_failures();
        }
        self.rows
            .iter()
            .any(|r| r.failure.is_some() || r.errors > 0 || r.units_per_second.is_none())
    }

    fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## {}\n", self.workload.name());
        let _ = writeln!(md, "{}.\n", self.description);
        if let Some(idle) = &self.idle {
            idle.markdown(md);
            self.targets_markdown(md);
            return;
        }
        let _ = writeln!(
            md,
            "Plan: {} round(s), interleaved; per configuration and round {:.1} s closed loop on \
             {} connections, then {:.1} s at {} {}s/s over {} connections.\n",
            self.rounds,
            self.throughput_seconds_per_round,
            self.connections,
            self.latency_seconds_per_round,
            self.rate_per_second,
            self.unit,
            self.rate_connections,
        );
        // MB/s and CPU per GB only where bytes are what the workload moves.
        let bytes = self.shows_bytes;
        let (mb_head, gb_head, bytes_align) = if bytes {
            (" MB/s |", " proxy CPU s / GB |", "---:|")
        } else {
            ("", "", "")
        };
        let _ = writeln!(
            md,
            "| configuration | max {u}s/s |{mb_head} errors | p50 µs | p99 µs | added p99 µs (median of rounds) | proxy CPU s / 10k {u}s |{gb_head} peak RSS MiB (client / server proxy) |",
            u = self.unit
        );
        let _ = writeln!(
            md,
            "|---|---:|{bytes_align}---:|---:|---:|---:|---:|{bytes_align}---|"
        );
        for r in &self.rows {
            let name = match &r.failure {
                Some(_) => format!("{} (FAILED)", r.name.name()),
                None => r.name.name().to_owned(),
            };
            let rss = if r.peak_rss_kib.is_empty() {
                "–".to_owned()
            } else {
                r.peak_rss_kib
                    .iter()
                    .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let whole = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), |v| v.to_string());
            let (mb, gb) = if bytes {
                (
                    format!(" {} |", num(r.mb_per_second, 1)),
                    format!(" {} |", num(r.proxy_cpu_seconds_per_gb, 2)),
                )
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                md,
                "| {name} | {} |{mb} {} | {} | {} | {} | {} |{gb} {rss} |",
                num(r.units_per_second, 0),
                r.errors,
                whole(r.p50_us),
                whole(r.p99_us),
                num(r.added_p99_median_of_rounds_us, 0),
                num(r.proxy_cpu_seconds_per_10k, 3),
            );
        }
        for r in self.rows.iter().filter(|r| !r.details.is_empty()) {
            let details: Vec<String> = r.details.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(md, "\n{}: {}", r.name.name(), details.join(", "));
        }
        if let Some(notes) = self.workload.notes() {
            let _ = writeln!(md, "\n{notes}");
        }
        for r in self.rows.iter().filter(|r| r.failure.is_some()) {
            let _ = writeln!(
                md,
                "\n{} failed: {}",
                r.name.name(),
                r.failure
                    .as_deref()
                    .unwrap_or_default()
                    .replace('\n', "\n  ")
            );
        }
        let _ = writeln!(
            md,
            "\nOurs ÷ Envoy: CPU per {} {}, added p99 {}, throughput {}, peak RSS {}.\n",
            if self.judged_by_bytes {
                "GB"
            } else {
                self.unit.as_str()
            },
            times(self.cpu_ratio),
            times(self.added_p99_ratio),
            times(self.throughput_ratio),
            times(self.peak_rss_ratio),
        );
        self.targets_markdown(md);
    }

    fn targets_markdown(&self, md: &mut String) {
        for t in &self.targets {
            let mark = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            let _ = writeln!(md, "- **{mark}**: {}: {}", t.name, t.detail);
        }
    }
}

/// The whole run: where and when, and each workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadsReport {
    pub command: String,
    pub mode: String,
    pub machine: Machine,
    pub workloads: Vec<WorkloadReport>,
}

impl WorkloadsReport {
    pub(crate) fn new(
        options: &WorkloadOptions,
        machine: Machine,
        workloads: Vec<WorkloadReport>,
    ) -> Self {
        Self {
            command: options.command.clone(),
            mode: options.mode.clone(),
            machine,
            workloads,
        }
    }

    pub fn has_failures(&self) -> bool {
        self.workloads.iter().any(WorkloadReport::has_failures)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# Workloads against Envoy ({} run)\n", self.mode);
        let _ = writeln!(md, "- command: `{}`", self.command);
        m.markdown(&mut md);
        let _ = writeln!(
            md,
            "- sidecars with their defaults (one thread), Envoys with `--concurrency 1`; the \
             paths are the keep-alive benchmark's (`datapath`): client → proxy ⇒ HTTP/2 + mTLS \
             ⇒ proxy → app"
        );
        for w in &self.workloads {
            w.markdown(&mut md);
        }
        md
    }
}
