//! The workloads harness in quick mode, direct and ours only (Envoy would need a download):
//! proves each workload's app, proxies and load client work end to end and count sane numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use mesh_benches::datapath::workloads::{self, Workload, WorkloadOptions, WorkloadReport};
use mesh_benches::datapath::{self, EnvoySource, Plan, Topology};

fn quick(workloads: Vec<Workload>) -> WorkloadOptions {
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_datapath"));
    let bin_dir = harness.parent().unwrap().to_owned();
    datapath::build_sidecar_if_missing(&bin_dir).unwrap();
    WorkloadOptions {
        mode: "quick".to_owned(),
        plan: Plan::quick(),
        workloads,
        topologies: vec![Topology::Direct, Topology::Ours],
        harness,
        bin_dir,
        envoy: EnvoySource::Path(PathBuf::from("/nonexistent/envoy")),
        command: "workloads_smoke".to_owned(),
        idle_connections: None,
    }
}

/// Every configuration ran, every unit succeeded, and the numbers are consistent.
fn assert_sane(w: &WorkloadReport, markdown: &str) {
    assert!(!w.has_failures(), "{markdown}");
    assert_eq!(w.rows.len(), 2, "{markdown}");
    for row in &w.rows {
        assert_eq!(row.errors, 0, "{markdown}");
        assert!(row.units_per_second.unwrap() > 0.0, "{markdown}");
        let (p50, p99) = (row.p50_us.unwrap(), row.p99_us.unwrap());
        assert!(p50 > 0 && p50 <= p99, "{markdown}");
    }
    let ours = &w.rows[1];
    assert_eq!(ours.name, Topology::Ours, "{markdown}");
    assert_eq!(ours.peak_rss_kib.len(), 2, "{markdown}");
    assert!(ours.proxy_cpu_seconds_per_10k.is_some(), "{markdown}");
    assert!(ours.added_p99_median_of_rounds_us.is_some(), "{markdown}");
    // Without Envoy nothing is judged.
    assert!(w.targets.iter().all(|t| t.met.is_none()), "{markdown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_new_connection() {
    let report = workloads::run(quick(vec![Workload::NewConnection]))
        .await
        .unwrap();
    let markdown = report.markdown();
    assert_eq!(report.workloads.len(), 1, "{markdown}");
    assert_sane(&report.workloads[0], &markdown);
    assert!(markdown.contains("## new-connection"), "{markdown}");
}

/// 500 keep-alive connections held idle through each configuration: every one answered before
/// and after idling, and each of our proxies has its memory readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_idle_connections() {
    let mut options = quick(vec![Workload::IdleConnections]);
    options.idle_connections = Some(500);
    let report = workloads::run(options).await.unwrap();
    let markdown = report.markdown();
    assert_eq!(report.workloads.len(), 1, "{markdown}");
    let w = &report.workloads[0];
    assert!(!w.has_failures(), "{markdown}");
    assert!(markdown.contains("## idle-connections"), "{markdown}");
    let idle = w.idle.as_ref().unwrap();
    assert_eq!(idle.connections, 500, "{markdown}");
    assert!(idle.open_files_limit > 500, "{markdown}");
    assert_eq!(idle.rows.len(), 2, "{markdown}");
    let rounds = u64::from(idle.rounds);
    for row in &idle.rows {
        assert!(row.failure.is_none(), "{markdown}");
        assert_eq!(row.errors, 0, "{markdown}");
        assert_eq!(row.answered_before, 500 * rounds, "{markdown}");
        assert_eq!(row.answered_after, 500 * rounds, "{markdown}");
    }
    assert_eq!(idle.rows[0].name, Topology::Direct, "{markdown}");
    assert!(idle.rows[0].proxies.is_empty(), "{markdown}");
    let ours = &idle.rows[1];
    assert_eq!(ours.name, Topology::Ours, "{markdown}");
    assert_eq!(ours.proxies.len(), 2, "{markdown}");
    for p in &ours.proxies {
        assert!(p.baseline_kib > 0, "{markdown}");
        assert!(p.idle_kib > 0, "{markdown}");
        assert!(p.after_close_kib > 0, "{markdown}");
        assert_eq!(
            p.bytes_per_connection_by_round.len(),
            idle.rounds as usize,
            "{markdown}"
        );
    }
    // 500 connections through the client side cost it something.
    assert!(
        ours.proxies[0].idle_kib > ours.proxies[0].baseline_kib,
        "{markdown}"
    );
    // Without Envoy nothing is judged.
    assert!(w.targets.iter().all(|t| t.met.is_none()), "{markdown}");
    assert!(idle.bytes_per_connection_ratio.is_none(), "{markdown}");
}
