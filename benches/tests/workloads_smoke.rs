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

/// Payload bytes per unit, from the closed loop's rates.
fn bytes_per_unit(row: &workloads::Row) -> f64 {
    row.mb_per_second.unwrap() * 1e6 / row.units_per_second.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_grpc_unary() {
    let report = workloads::run(quick(vec![Workload::GrpcUnary]))
        .await
        .unwrap();
    let markdown = report.markdown();
    assert_eq!(report.workloads.len(), 1, "{markdown}");
    let w = &report.workloads[0];
    assert_sane(w, &markdown);
    assert_eq!(w.unit, "RPC", "{markdown}");
    // Every counted RPC ended with grpc-status 0 and carried its 42-byte message each way.
    for row in &w.rows {
        let per_rpc = bytes_per_unit(row);
        assert!((per_rpc - 84.0).abs() < 0.5, "{per_rpc} B/RPC\n{markdown}");
    }
    assert!(markdown.contains("## grpc-unary"), "{markdown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_grpc_stream() {
    let report = workloads::run(quick(vec![Workload::GrpcStream]))
        .await
        .unwrap();
    let markdown = report.markdown();
    assert_eq!(report.workloads.len(), 1, "{markdown}");
    let w = &report.workloads[0];
    assert_sane(w, &markdown);
    assert_eq!(w.unit, "stream", "{markdown}");
    // Every counted stream delivered all 100 replies of 1 KiB after its 1 KiB request, in
    // order, and ended with grpc-status 0.
    for row in &w.rows {
        let per_stream = bytes_per_unit(row);
        assert!(
            (per_stream - 101.0 * 1024.0).abs() < 1.0,
            "{per_stream} B/stream\n{markdown}"
        );
    }
    assert!(markdown.contains("## grpc-stream"), "{markdown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_large_bodies() {
    let report = workloads::run(quick(vec![Workload::LargeBodies]))
        .await
        .unwrap();
    let markdown = report.markdown();
    assert_eq!(report.workloads.len(), 1, "{markdown}");
    let w = &report.workloads[0];
    assert_sane(w, &markdown);
    assert!(w.judged_by_bytes, "{markdown}");
    for row in &w.rows {
        // Every counted request carried 1 MiB each way, checked by the app and the client:
        // bytes / s ÷ requests / s is exactly 2 MiB.
        let per_request = row.mb_per_second.unwrap() * 1e6 / row.units_per_second.unwrap();
        assert!(
            (per_request - 2.0 * 1_048_576.0).abs() < 1.0,
            "{per_request} bytes per request\n{markdown}"
        );
    }
    assert!(w.rows[1].proxy_cpu_seconds_per_gb.is_some(), "{markdown}");
    assert!(markdown.contains("## large-bodies"), "{markdown}");
    assert!(markdown.contains("proxy CPU s / GB"), "{markdown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_destinations() {
    let report = workloads::run(quick(vec![Workload::Destinations]))
        .await
        .unwrap();
    let markdown = report.markdown();
    assert_eq!(report.workloads.len(), 1, "{markdown}");
    let w = &report.workloads[0];
    assert_sane(w, &markdown);
    assert!(!w.judged_by_bytes, "{markdown}");
    assert!(!markdown.contains("MB/s"), "{markdown}");
    let ours = &w.rows[1];
    // Every name was called once after start, so the client side's metrics hold all of them.
    let distinct = ours.details["distinct_destinations"];
    assert!(distinct >= 100, "{distinct} destinations\n{markdown}");
    assert!(
        ours.details["client_proxy_rss_after_start_kib"] > 0,
        "{markdown}"
    );
    assert!(ours.details.contains_key("mesh_connections"), "{markdown}");
    assert!(ours.details.contains_key("app_connections"), "{markdown}");
    assert!(markdown.contains("## destinations"), "{markdown}");
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
