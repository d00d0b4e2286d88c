//! What transparent interception costs: `ours-transparent` against `ours-explicit` in the same
//! run, the same sidecars across the same kind of link with and without `sidecar redirect`,
//! judged against its targets.

use std::fmt::Write as _;

use serde::Serialize;

use super::Topology;
use super::report::{Target, TopologyResult, median};

/// At most this much more proxy CPU per request than the explicit pair (a fraction).
pub(crate) const CPU_LIMIT: f64 = 0.10;
/// At most this much more added p99 than the explicit pair, in µs.
pub(crate) const P99_LIMIT_US: f64 = 50.0;

/// Transparent against explicit; `None` fields were not measured (a configuration failed or
/// was skipped).
#[derive(Debug, Clone, Serialize)]
pub struct RedirectCost {
    /// Both proxies' CPU seconds per 10,000 requests, max-throughput phase.
    pub explicit_cpu_seconds_per_10k_at_max: Option<f64>,
    pub transparent_cpu_seconds_per_10k_at_max: Option<f64>,
    /// Transparent ÷ explicit − 1: 0.05 is 5 % more.
    pub cpu_increase_at_max: Option<f64>,
    /// The same in the fixed-rate phase.
    pub explicit_cpu_seconds_per_10k_at_rate: Option<f64>,
    pub transparent_cpu_seconds_per_10k_at_rate: Option<f64>,
    pub cpu_increase_at_rate: Option<f64>,
    /// Added p99 over direct, median of the rounds' own.
    pub explicit_added_p99_median_of_rounds_us: Option<f64>,
    pub transparent_added_p99_median_of_rounds_us: Option<f64>,
    /// Median over the rounds of transparent's p99 minus explicit's in the same round (direct
    /// cancels): what the target is judged on.
    pub p99_difference_median_of_rounds_us: Option<f64>,
    /// Transparent's p99 minus explicit's, each pooled over all rounds.
    pub p99_difference_pooled_us: Option<f64>,
    pub p50_difference_us: Option<f64>,
    pub explicit_requests_per_second: Option<f64>,
    pub transparent_requests_per_second: Option<f64>,
    /// The pass/fail lines, also listed among the report's targets.
    pub targets: Vec<Target>,
}

impl RedirectCost {
    /// The comparison, when the run included either configuration.
    pub(crate) fn compare(results: &[TopologyResult]) -> Option<Self> {
        let find = |t| results.iter().find(|r| r.name == t);
        let (explicit, transparent) = (
            find(Topology::OursExplicit),
            find(Topology::OursTransparent),
        );
        if explicit.is_none() && transparent.is_none() {
            return None;
        }
        // A configuration that stopped mid-run has numbers of fewer rounds: not comparable.
        let (explicit, transparent) = (
            explicit.filter(|r| r.failure.is_none()),
            transparent.filter(|r| r.failure.is_none()),
        );
        let both =
            |f: fn(&TopologyResult) -> Option<f64>| (explicit.and_then(f), transparent.and_then(f));
        let increase = |(e, t): (Option<f64>, Option<f64>)| match (e, t) {
            (Some(e), Some(t)) if e > 0.0 => Some(t / e - 1.0),
            _ => None,
        };
        let difference = |(e, t): (Option<f64>, Option<f64>)| Some(t? - e?);
        let at_max = both(|r| r.proxy_cpu_seconds_per_10k_at_max);
        let at_rate = both(|r| r.proxy_cpu_seconds_per_10k_at_rate);
        let added_p99 = both(|r| r.added_p99_median_of_rounds_us);
        let rounds = |r: Option<&TopologyResult>| {
            r.and_then(|r| r.latency.as_ref())
                .map(|l| l.p99_by_round_us.clone())
        };
        let p99_difference_median_of_rounds_us = match (rounds(explicit), rounds(transparent)) {
            (Some(e), Some(t)) if e.len() == t.len() => median(
                t.iter()
                    .zip(&e)
                    .map(|(t, e)| *t as f64 - *e as f64)
                    .collect(),
            ),
            _ => None,
        };
        let p99_difference_pooled_us =
            difference(both(|r| r.latency.as_ref().map(|l| l.p99_us as f64)));
        let throughput = both(|r| r.throughput.as_ref().map(|t| t.requests_per_second));
        let mut cost = Self {
            explicit_cpu_seconds_per_10k_at_max: at_max.0,
            transparent_cpu_seconds_per_10k_at_max: at_max.1,
            cpu_increase_at_max: increase(at_max),
            explicit_cpu_seconds_per_10k_at_rate: at_rate.0,
            transparent_cpu_seconds_per_10k_at_rate: at_rate.1,
            cpu_increase_at_rate: increase(at_rate),
            explicit_added_p99_median_of_rounds_us: added_p99.0,
            transparent_added_p99_median_of_rounds_us: added_p99.1,
            p99_difference_median_of_rounds_us,
            p99_difference_pooled_us,
            p50_difference_us: difference(both(|r| r.latency.as_ref().map(|l| l.p50_us as f64))),
            explicit_requests_per_second: throughput.0,
            transparent_requests_per_second: throughput.1,
            targets: Vec::new(),
        };
        cost.targets = cost.judge();
        Some(cost)
    }

    fn judge(&self) -> Vec<Target> {
        let cpu = self.cpu_increase_at_max;
        let cpu_met = cpu.map(|c| c <= CPU_LIMIT);
        let p99 = self.p99_difference_median_of_rounds_us;
        let p99_met = p99.map(|d| d <= P99_LIMIT_US);
        vec![
            Target {
                name: format!(
                    "redirect: proxy CPU per request ≤ {:.0} % over ours-explicit's (max-throughput phase)",
                    CPU_LIMIT * 100.0
                ),
                met: cpu_met,
                detail: format!(
                    "ours-transparent {} vs ours-explicit {} CPU s per 10k requests → {} \
                     (limit +{:.0} %): {}; fixed-rate phase: {} vs {} → {}",
                    num(self.transparent_cpu_seconds_per_10k_at_max, 3),
                    num(self.explicit_cpu_seconds_per_10k_at_max, 3),
                    percent(cpu),
                    CPU_LIMIT * 100.0,
                    verdict(cpu_met),
                    num(self.transparent_cpu_seconds_per_10k_at_rate, 3),
                    num(self.explicit_cpu_seconds_per_10k_at_rate, 3),
                    percent(self.cpu_increase_at_rate),
                ),
            },
            Target {
                name: format!(
                    "redirect: added p99 ≤ ours-explicit's + {P99_LIMIT_US:.0} µs (median of the rounds' own difference)"
                ),
                met: p99_met,
                detail: format!(
                    "ours-transparent's p99 minus ours-explicit's in the same round, median over \
                     the rounds: {} µs (limit +{P99_LIMIT_US:.0} µs): {}; added p99 over direct, \
                     median of rounds: {} vs {} µs; pooled over all rounds: {} µs",
                    signed(p99),
                    verdict(p99_met),
                    num(self.transparent_added_p99_median_of_rounds_us, 0),
                    num(self.explicit_added_p99_median_of_rounds_us, 0),
                    signed(self.p99_difference_pooled_us),
                ),
            },
        ]
    }

    /// The section of the markdown report.
    pub(crate) fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Transparent (redirect) against explicit\n");
        let _ = writeln!(
            md,
            "| quantity | ours-explicit | ours-transparent | difference |\n|---|---:|---:|---:|"
        );
        let rows = [
            (
                "proxy CPU s / 10k requests, max-throughput phase",
                self.explicit_cpu_seconds_per_10k_at_max,
                self.transparent_cpu_seconds_per_10k_at_max,
                3,
                percent(self.cpu_increase_at_max),
            ),
            (
                "proxy CPU s / 10k requests, fixed-rate phase",
                self.explicit_cpu_seconds_per_10k_at_rate,
                self.transparent_cpu_seconds_per_10k_at_rate,
                3,
                percent(self.cpu_increase_at_rate),
            ),
            (
                "added p99 µs, median of the rounds' own",
                self.explicit_added_p99_median_of_rounds_us,
                self.transparent_added_p99_median_of_rounds_us,
                0,
                format!(
                    "{} µs (median of the rounds' differences)",
                    signed(self.p99_difference_median_of_rounds_us)
                ),
            ),
            (
                "max req/s",
                self.explicit_requests_per_second,
                self.transparent_requests_per_second,
                0,
                percent(
                    match (
                        self.explicit_requests_per_second,
                        self.transparent_requests_per_second,
                    ) {
                        (Some(e), Some(t)) if e > 0.0 => Some(t / e - 1.0),
                        _ => None,
                    },
                ),
            ),
        ];
        for (name, explicit, transparent, decimals, difference) in rows {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {difference} |",
                num(explicit, decimals),
                num(transparent, decimals)
            );
        }
        let _ = writeln!(
            md,
            "\np99 difference pooled over all rounds: {} µs; p50 difference: {} µs.",
            signed(self.p99_difference_pooled_us),
            signed(self.p50_difference_us)
        );
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

fn signed(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:+.0}"))
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{:+.1} %", v * 100.0))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "not measured",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: Topology, cpu: f64, p99_by_round: Vec<u64>) -> TopologyResult {
        let p99 = p99_by_round.iter().copied().max().unwrap_or(0);
        TopologyResult {
            name,
            path: String::new(),
            failure: None,
            throughput: None,
            latency: Some(super::super::report::LatencyResult {
                rate_per_second: 1000,
                scheduled: 10,
                recorded: 10,
                errors: 0,
                p50_us: 100,
                p90_us: 150,
                p99_us: p99,
                max_us: p99,
                p99_by_round_us: p99_by_round,
            }),
            proxies: Vec::new(),
            proxy_cpu_seconds_per_10k_at_max: Some(cpu),
            proxy_cpu_seconds_per_10k_at_rate: None,
            added_p50_us: None,
            added_p99_us: None,
            added_p99_median_of_rounds_us: None,
        }
    }

    #[test]
    fn judged_on_the_cpu_ratio_and_the_median_of_the_rounds_differences() {
        let results = [
            result(Topology::OursExplicit, 1.0, vec![500, 600, 9000]),
            result(Topology::OursTransparent, 1.08, vec![540, 640, 700]),
        ];
        let cost = RedirectCost::compare(&results).unwrap();
        assert!((cost.cpu_increase_at_max.unwrap() - 0.08).abs() < 1e-9);
        // Differences 40, 40 and -8300: one disturbed round does not decide.
        assert_eq!(cost.p99_difference_median_of_rounds_us, Some(40.0));
        assert_eq!(cost.targets[0].met, Some(true));
        assert_eq!(cost.targets[1].met, Some(true));

        let results = [
            result(Topology::OursExplicit, 1.0, vec![500, 600]),
            result(Topology::OursTransparent, 1.2, vec![600, 700]),
        ];
        let cost = RedirectCost::compare(&results).unwrap();
        assert_eq!(cost.targets[0].met, Some(false));
        assert_eq!(cost.targets[1].met, Some(false));
        assert!(
            cost.targets[0].detail.contains("+20.0 %"),
            "{:?}",
            cost.targets
        );
    }

    #[test]
    fn one_side_missing_is_not_measured_and_neither_is_no_section() {
        let results = [result(Topology::OursTransparent, 1.0, vec![500])];
        let cost = RedirectCost::compare(&results).unwrap();
        assert!(cost.targets.iter().all(|t| t.met.is_none()));
        assert!(RedirectCost::compare(&[result(Topology::Ours, 1.0, vec![1])]).is_none());
    }
}
