//! The chaos harness in quick mode against debug builds: it starts the mesh, applies every
//! fault, and accounts for every scheduled request. Whether requests failed is the
//! benchmark's verdict (`target/release/chaos`), not this test's.

use std::path::PathBuf;

use mesh_benches::chaos::{self, Options, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_applies_every_fault_and_counts_every_request() {
    // The directory of this profile's binaries; the mesh's are built there when a narrower
    // test run (`-p mesh-benches`) did not build them.
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_chaos"));
    let bin_dir = harness.parent().unwrap().to_owned();
    chaos::build_missing_binaries(&bin_dir).unwrap();
    let plan = Plan::quick();
    let options = Options {
        mode: "quick".to_owned(),
        plan,
        bin_dir,
        work_dir: None,
        retry_on: chaos::RETRY_ON.map(str::to_owned).to_vec(),
        command: "chaos_smoke".to_owned(),
    };
    let report = chaos::run(options).await.unwrap();
    let md = report.markdown();
    println!("{md}");

    // Every fault was applied, in the schedule's order, and the policy edits landed.
    assert!(report.faults_applied(), "{md}");
    let order = [
        "SIGKILL inventory-1's sidecar",
        "restart inventory-1's sidecar",
        "SIGKILL inventory-2's app",
        "restart inventory-2's app",
        "SIGKILL the control plane",
        "restart the control plane",
        "CA: add a new root",
        "CA: issue from",
        "CA: every live sidecar renewed",
        "CA: remove the old root",
    ];
    let whats: Vec<&str> = report.events.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(whats.len(), order.len(), "{md}");
    for (what, expected) in whats.iter().zip(order) {
        assert!(
            what.starts_with(expected),
            "{what:?} is not {expected:?}: {md}"
        );
    }
    assert!(report.events.windows(2).all(|w| w[0].at <= w[1].at), "{md}");
    assert_eq!(report.edits.written, plan.edits, "{md}");

    // Every scheduled request was sent and recorded, and the report adds up.
    let expected = u64::from(plan.rate) * plan.duration.as_secs();
    assert_eq!(report.scheduled, expected, "{md}");
    assert_eq!(report.samples.len() as u64, expected, "{md}");
    assert!(report.succeeded() > 0, "{md}");
    let by_cause: u64 = report.causes().iter().map(|c| c.requests).sum();
    assert_eq!(report.succeeded() + by_cause, expected, "{md}");
    let timeline = report.timeline();
    assert_eq!(timeline.len(), 3, "15 s in 5 s slices: {md}");
    assert_eq!(
        timeline.iter().map(|s| s.requests).sum::<u64>(),
        expected,
        "{md}"
    );
    assert_eq!(
        timeline.iter().map(|s| s.events.len()).sum::<usize>(),
        order.len(),
        "{md}"
    );
    assert!(
        md.contains("## Timeline") && md.contains("## Faults"),
        "{md}"
    );
}
