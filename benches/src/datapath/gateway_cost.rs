//! Our gateway against Envoy's as a gateway, in the same run: `ours-gateway` against
//! `envoy-gateway`, each a gateway plus the called service's sidecar, judged against the
//! ingress targets (throughput at least 1.2×, proxy CPU per request at most 0.6×).

use std::fmt::Write as _;

use serde::Serialize;

use super::Topology;
use super::report::{
    Target, TopologyResult, at_least, at_most, num, ratio, requests_per_second, times,
};

/// At least this many times Envoy's requests per second.
pub(crate) const THROUGHPUT_LIMIT: f64 = 1.2;
/// At most this many times Envoy's proxy CPU per request.
pub(crate) const CPU_LIMIT: f64 = 0.6;

/// Ours against Envoy's, both as gateways; `None` fields were not measured.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayComparison {
    pub ours_requests_per_second: Option<f64>,
    pub envoy_requests_per_second: Option<f64>,
    /// Both proxies' (gateway and sidecar) CPU seconds per 10,000 requests.
    pub ours_cpu_seconds_per_10k_at_max: Option<f64>,
    pub envoy_cpu_seconds_per_10k_at_max: Option<f64>,
    pub ours_cpu_seconds_per_10k_at_rate: Option<f64>,
    pub envoy_cpu_seconds_per_10k_at_rate: Option<f64>,
    /// Added p99 over direct, median of the rounds' own.
    pub ours_added_p99_median_of_rounds_us: Option<f64>,
    pub envoy_added_p99_median_of_rounds_us: Option<f64>,
    /// The largest proxy's peak RSS of each, in MiB.
    pub ours_peak_rss_mib: Option<f64>,
    pub envoy_peak_rss_mib: Option<f64>,
    /// The pass/fail lines, also listed among the report's targets.
    pub targets: Vec<Target>,
}

impl GatewayComparison {
    /// The comparison, when the run included either gateway configuration.
    pub(crate) fn compare(results: &[TopologyResult]) -> Option<Self> {
        let find = |t| results.iter().find(|r| r.name == t);
        let (ours, envoy) = (find(Topology::OursGateway), find(Topology::EnvoyGateway));
        if ours.is_none() && envoy.is_none() {
            return None;
        }
        // A configuration that stopped mid-run has numbers of fewer rounds: not comparable.
        let (ours, envoy) = (
            ours.filter(|r| r.failure.is_none()),
            envoy.filter(|r| r.failure.is_none()),
        );
        let both = |f: fn(&TopologyResult) -> Option<f64>| (ours.and_then(f), envoy.and_then(f));
        let rss = |r: &TopologyResult| {
            r.proxies
                .iter()
                .map(|p| p.peak_rss_kib)
                .max()
                .map(|k| k as f64 / 1024.0)
        };
        let at_max = both(|r| r.proxy_cpu_seconds_per_10k_at_max);
        let at_rate = both(|r| r.proxy_cpu_seconds_per_10k_at_rate);
        let p99 = both(|r| r.added_p99_median_of_rounds_us);
        let peak = both(rss);
        let targets = vec![
            at_least(
                &format!("gateway: max throughput ≥ {THROUGHPUT_LIMIT} × Envoy's as a gateway"),
                requests_per_second(ours),
                requests_per_second(envoy),
                THROUGHPUT_LIMIT,
                "req/s",
            ),
            at_most(
                &format!(
                    "gateway: proxy CPU per request ≤ {CPU_LIMIT} × Envoy's as a gateway (max-throughput phase)"
                ),
                at_max.0,
                at_max.1,
                CPU_LIMIT,
                "CPU s per 10k requests",
                3,
            ),
        ];
        Some(Self {
            ours_requests_per_second: requests_per_second(ours),
            envoy_requests_per_second: requests_per_second(envoy),
            ours_cpu_seconds_per_10k_at_max: at_max.0,
            envoy_cpu_seconds_per_10k_at_max: at_max.1,
            ours_cpu_seconds_per_10k_at_rate: at_rate.0,
            envoy_cpu_seconds_per_10k_at_rate: at_rate.1,
            ours_added_p99_median_of_rounds_us: p99.0,
            envoy_added_p99_median_of_rounds_us: p99.1,
            ours_peak_rss_mib: peak.0,
            envoy_peak_rss_mib: peak.1,
            targets,
        })
    }

    /// The section of the markdown report.
    pub(crate) fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Gateway: ours against Envoy's\n");
        let _ = writeln!(
            md,
            "TLS from the client to the gateway, HTTP/2 with mutual TLS from the gateway to the \
             service's sidecar, HTTP/1.1 to the app; both proxies of each counted.\n"
        );
        let _ = writeln!(
            md,
            "| quantity | ours-gateway | envoy-gateway | ours ÷ Envoy |\n|---|---:|---:|---:|"
        );
        let rows = [
            (
                "max req/s",
                self.ours_requests_per_second,
                self.envoy_requests_per_second,
                0,
            ),
            (
                "proxy CPU s / 10k requests, max-throughput phase",
                self.ours_cpu_seconds_per_10k_at_max,
                self.envoy_cpu_seconds_per_10k_at_max,
                3,
            ),
            (
                "proxy CPU s / 10k requests, fixed-rate phase",
                self.ours_cpu_seconds_per_10k_at_rate,
                self.envoy_cpu_seconds_per_10k_at_rate,
                3,
            ),
            (
                "added p99 µs over direct, median of the rounds' own",
                self.ours_added_p99_median_of_rounds_us,
                self.envoy_added_p99_median_of_rounds_us,
                0,
            ),
            (
                "peak RSS MiB, largest proxy",
                self.ours_peak_rss_mib,
                self.envoy_peak_rss_mib,
                1,
            ),
        ];
        for (name, ours, envoy, decimals) in rows {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} |",
                num(ours, decimals),
                num(envoy, decimals),
                times(ratio(ours, envoy)),
            );
        }
    }
}
