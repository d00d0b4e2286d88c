//! The control-plane scale benchmark, small: 50 watchers, two changes, 1 s of signing. Checks
//! that it works end to end, not how fast it is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mesh_benches::control_plane::{Settings, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_gets_each_change_and_the_ca_signs() {
    let settings = Settings {
        watchers: vec![50],
        changes: 2,
        streams_per_channel: 20,
        config_poll: Duration::from_millis(50),
        sign_for: Duration::from_secs(1),
        sign_concurrency: 8,
        ca_alone_for: Duration::from_millis(200),
        first_snapshot_within: Duration::from_secs(10),
        change_within: Duration::from_secs(5),
        command: "control_plane_smoke".into(),
        ..Settings::quick()
    };
    let report = run(&settings).await.unwrap();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    let scale = &report.scales[0];
    assert_eq!(scale.watchers, 50);
    assert_eq!(scale.channels, 3);
    assert_eq!(scale.no_first_snapshot, 0);
    assert_eq!(scale.changes.len(), 2);
    for change in &scale.changes {
        assert_eq!(change.missed, 0, "{change:?}");
        assert_eq!(change.write_to_receive_ms.count, 50, "{change:?}");
        assert!(change.write_to_publish_ms.is_some(), "{change:?}");
    }
    assert!(report.signing.per_second > 0.0, "{:?}", report.signing);
    assert!(report.signing.issued > 0);
    assert!(report.ca_alone.one_thread_per_second > 0.0);
    let markdown = report.markdown();
    assert!(markdown.contains("| 50 |"), "{markdown}");
    serde_json::to_string(&report).unwrap();
}
