//! The data-path harness in quick mode, direct and ours only (Envoy would need a download):
//! proves the harness starts the processes, loads them and counts sane numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use mesh_benches::datapath::{self, EnvoySource, Options, Plan, Topology};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_direct_and_ours() {
    let report = datapath::run(quick(vec![Topology::Direct, Topology::Ours]))
        .await
        .unwrap();
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
    assert!(markdown.contains("## Ours ÷ Envoy"), "{markdown}");
}

/// `ours-transparent` and its baseline `ours-explicit`, each in two network namespaces joined by
/// a veth link: every request must succeed through the redirect (the app listens on its
/// namespace's loopback only, and the client dials an address where nothing listens, so only
/// both redirects and both sidecars can answer). Needs root and nft; checks no timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_transparent_and_explicit() {
    if !mesh_testkit::netns::available("quick_run_transparent_and_explicit") {
        return;
    }
    let nft = std::process::Command::new("nft").arg("--version").output();
    if !nft.is_ok_and(|out| out.status.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nft missing under CI (Debian: nftables)"
        );
        eprintln!(
            "quick_run_transparent_and_explicit: skipped: nft not installed (Debian: nftables)"
        );
        return;
    }
    let options = quick(vec![
        Topology::Direct,
        Topology::OursExplicit,
        Topology::OursTransparent,
    ]);
    let report = datapath::run(options).await.unwrap();
    let markdown = report.markdown();
    // The run deleted its namespaces (and with them the veth links) when it ended.
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let ours = format!("mesh-{}x", std::process::id());
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(!listed.contains(&ours), "left behind: {listed}");
    assert!(report.skipped.is_empty(), "{markdown}");
    assert_eq!(report.results.len(), 3, "{markdown}");
    assert!(!report.has_failures(), "{markdown}");
    for result in &report.results[1..] {
        let t = result.throughput.as_ref().unwrap();
        assert!(t.requests > 0 && t.errors == 0, "{markdown}");
        let l = result.latency.as_ref().unwrap();
        assert_eq!(l.errors, 0, "{markdown}");
        assert_eq!(l.recorded, l.scheduled, "{markdown}");
        assert_eq!(result.proxies.len(), 2, "{markdown}");
        assert!(
            result.proxies.iter().all(|p| p.peak_rss_kib > 0),
            "{markdown}"
        );
    }
    // Both sides measured, so both redirect targets are judged (whatever the verdict).
    let redirect = report.redirect.as_ref().unwrap();
    assert_eq!(redirect.targets.len(), 2, "{markdown}");
    assert!(
        redirect.targets.iter().all(|t| t.met.is_some()),
        "{markdown}"
    );
    assert!(markdown.contains("| ours-transparent |"), "{markdown}");
    assert!(
        markdown.contains("## Transparent (redirect) against explicit"),
        "{markdown}"
    );
}

/// `ours-gateway`: every request crosses TLS to the gateway (which verifies nothing of the
/// client but serves the edge certificate the client checks), is routed by its host name and
/// goes on over mTLS to the service's sidecar; the comparison section shows ours alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_gateway() {
    let report = datapath::run(quick(vec![Topology::Direct, Topology::OursGateway]))
        .await
        .unwrap();
    let markdown = report.markdown();
    assert!(!report.has_failures(), "{markdown}");
    let gateway = &report.results[1];
    assert_eq!(gateway.name, Topology::OursGateway, "{markdown}");
    let roles: Vec<&str> = gateway.proxies.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(
        roles,
        ["gateway (gateway)", "server side (gateway-inventory)"],
        "{markdown}"
    );
    let t = gateway.throughput.as_ref().unwrap();
    assert!(t.requests > 0 && t.errors == 0, "{markdown}");
    let l = gateway.latency.as_ref().unwrap();
    assert_eq!(l.recorded, l.scheduled, "{markdown}");
    let comparison = report.gateway.as_ref().unwrap();
    assert!(comparison.ours_requests_per_second.is_some(), "{markdown}");
    assert!(comparison.envoy_requests_per_second.is_none(), "{markdown}");
    assert!(
        comparison.targets.iter().all(|t| t.met.is_none()),
        "without Envoy nothing is judged: {markdown}"
    );
    assert!(
        markdown.contains("## Gateway: ours against Envoy's"),
        "{markdown}"
    );
    // Without our pair or Envoy's in the run, the pair's section and targets are left out.
    assert!(!markdown.contains("## Ours ÷ Envoy"), "{markdown}");
    assert_eq!(report.targets.len(), comparison.targets.len(), "{markdown}");
}

/// A quick run of `topologies` with this profile's binaries (the sidecar is built there when a
/// narrower test run, `-p mesh-benches`, did not build it) and no Envoy.
fn quick(topologies: Vec<Topology>) -> Options {
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_datapath"));
    let bin_dir = harness.parent().unwrap().to_owned();
    datapath::build_sidecar_if_missing(&bin_dir).unwrap();
    Options {
        mode: "quick".to_owned(),
        plan: Plan::quick(),
        topologies,
        harness,
        bin_dir,
        envoy: EnvoySource::Path(PathBuf::from("/nonexistent/envoy")),
        command: "datapath_smoke".to_owned(),
    }
}
