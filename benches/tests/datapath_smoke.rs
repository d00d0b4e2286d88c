//! The data-path harness in quick mode, direct and ours only (Envoy would need a download):
//! proves the harness starts the processes, loads them and counts sane numbers.

use std::path::PathBuf;

use mesh_benches::datapath::{self, EnvoySource, Options, Plan, Topology};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_direct_and_ours() {
    // The directory of this profile's binaries; the sidecar is built there when a narrower
    // test run (`-p mesh-benches`) did not build it.
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_datapath"));
    let bin_dir = harness.parent().unwrap().to_owned();
    datapath::build_sidecar_if_missing(&bin_dir).unwrap();
    let options = Options {
        mode: "quick".to_owned(),
        plan: Plan::quick(),
        topologies: vec![Topology::Direct, Topology::Ours],
        harness,
        bin_dir,
        envoy: EnvoySource::Path(PathBuf::from("/nonexistent/envoy")),
        command: "datapath_smoke".to_owned(),
    };
    let report = datapath::run(options).await.unwrap();
    let markdown = report.markdown();
    assert_eq!(report.results.len(), 2, "{markdown}");
    assert!(!report.has_failures(), "{markdown}");
    for result in &report.results {
        assert!(result.failure.is_none(), "{markdown}");
        let t = result.throughput.as_ref().unwrap();
        assert!(t.requests > 0 && t.errors == 0, "{markdown}");
        assert!(t.requests_per_second > 0.0, "{markdown}");
        let l = result.latency.as_ref().unwrap();
        assert_eq!(l.errors, 0, "{markdown}");
        assert_eq!(
            l.recorded, l.scheduled,
            "every scheduled request recorded: {markdown}"
        );
        assert!(
            l.p50_us > 0 && l.p50_us <= l.p99_us && l.p99_us <= l.max_us,
            "{markdown}"
        );
    }
    let ours = &report.results[1];
    assert_eq!(ours.proxies.len(), 2, "{markdown}");
    for proxy in &ours.proxies {
        assert!(proxy.peak_rss_kib > 0, "{markdown}");
    }
    assert!(
        ours.proxy_cpu_seconds_per_10k_at_max.is_some(),
        "{markdown}"
    );
    assert!(ours.added_p50_us.is_some(), "{markdown}");
    assert!(markdown.contains("| ours |"), "{markdown}");
}
