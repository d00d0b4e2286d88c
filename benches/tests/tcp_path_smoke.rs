//! The opaque-TCP harness in quick mode, direct and ours only (Envoy would need a download):
//! proves it starts redis-server and the sidecars, runs redis-benchmark and the bulk stream
//! through them, and counts sane numbers.

use std::path::PathBuf;
use std::process::Command;

use mesh_benches::datapath::tcp::{self, TcpOptions, TcpPlan};
use mesh_benches::datapath::{self, EnvoySource, Topology};

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_direct_and_ours() {
    let missing: Vec<&str> = ["redis-server", "redis-benchmark"]
        .into_iter()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{missing:?} missing under CI (.ci/run installs redis-server and redis-tools)"
        );
        eprintln!("skipped: {missing:?} not installed (Debian: redis-server, redis-tools)");
        return;
    }
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_tcp-path"));
    let bin_dir = harness.parent().unwrap().to_owned();
    datapath::build_sidecar_if_missing(&bin_dir).unwrap();
    let options = TcpOptions {
        mode: "quick".to_owned(),
        plan: TcpPlan::quick(),
        topologies: vec![Topology::Direct, Topology::Ours],
        bin_dir,
        envoy: EnvoySource::Path(PathBuf::from("/nonexistent/envoy")),
        command: "tcp_path_smoke".to_owned(),
    };
    let plan = options.plan.clone();
    let report = tcp::run(options).await.unwrap();
    let markdown = report.markdown();
    assert_eq!(report.results.len(), 2, "{markdown}");
    assert!(!report.has_failures(), "{markdown}");
    for result in &report.results {
        assert_eq!(result.redis_requests, 2 * plan.redis_requests, "{markdown}");
        assert!(result.requests_per_second.unwrap() > 0.0, "{markdown}");
        assert_eq!(result.bulk_bytes, plan.bulk_bytes, "{markdown}");
        assert!(result.megabytes_per_second.unwrap() > 0.0, "{markdown}");
    }
    let ours = &report.results[1];
    assert_eq!(ours.proxies.len(), 4, "redis and bulk pairs: {markdown}");
    for proxy in &ours.proxies {
        assert!(proxy.peak_rss_kib > 0, "{markdown}");
    }
    assert!(ours.proxy_cpu_seconds_per_10k.is_some(), "{markdown}");
    assert!(ours.proxy_cpu_seconds_per_gb.is_some(), "{markdown}");
    assert!(markdown.contains("| ours |"), "{markdown}");
    // Envoy was not run: its targets say so rather than pass.
    assert!(
        report.targets.iter().take(4).all(|t| t.met.is_none()),
        "{markdown}"
    );
}
