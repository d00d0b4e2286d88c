//! The Kubernetes-mode scale benchmark, small: 40 Services, 50 watchers, two slice edits.
//! Checks that it works end to end, not how fast it is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_benches::kube_discovery::{Settings, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_gets_each_slice_edit() {
    if mesh_kube_testkit::binaries::available("every_watcher_gets_each_slice_edit").is_none() {
        return;
    }
    let settings = Settings {
        command: "kube_discovery_smoke".into(),
        ..Settings::quick()
    };
    let report = run(&settings).await.unwrap();
    assert_eq!(report.missed, 0, "{report:#?}");
    assert_eq!(report.changes.len(), 2);
    for change in &report.changes {
        assert_eq!(change.write_to_receive_ms.count, 50, "{change:?}");
    }
    assert_eq!(report.changes[0].endpoints, 9);
    assert_eq!(report.changes[1].endpoints, 10);
    assert!(report.markdown().contains("| 1 | remove an endpoint | 9 |"));
    serde_json::to_string(&report).unwrap();
}
