//! What a test sees when the cluster cannot start: errors that name the program and show why,
//! with nothing left running. Stand-in programs play the binaries, so these run everywhere.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mesh_kube_testkit::binaries::Binaries;
use mesh_kube_testkit::{ClusterError, TestCluster};

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn missing_binaries_name_the_program_and_the_script_that_builds_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = Binaries::in_dir(dir.path().to_owned()).expect_err("nothing is there");
    let message = error.to_string();
    assert!(matches!(
        error,
        ClusterError::MissingBinary {
            program: "etcd",
            ..
        }
    ));
    assert!(message.contains("scripts/build-kube.sh"), "{message}");

    script(dir.path(), "etcd", "exit 0");
    let message = Binaries::in_dir(dir.path().to_owned())
        .expect_err("kube-apiserver is missing")
        .to_string();
    assert!(message.starts_with("kube-apiserver is not at"), "{message}");
}

#[tokio::test]
async fn an_api_server_that_exits_is_reported_with_its_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    // etcd stays up (until killed) and notes its pid; the API server waits (at most 5 s) for
    // that note, then refuses its flags and exits.
    script(
        dir.path(),
        "etcd",
        r#"cd "$(dirname "$0")" && echo $$ > pid.tmp && mv pid.tmp etcd.pid; exec sleep 60"#,
    );
    script(
        dir.path(),
        "kube-apiserver",
        r#"cd "$(dirname "$0")"
for _ in $(seq 500); do [ -f etcd.pid ] && break; sleep 0.01; done
echo "unknown flag: $1" >&2
exit 3"#,
    );
    let binaries = Binaries::in_dir(dir.path().to_owned()).expect("both are there");
    let error = TestCluster::start(&binaries)
        .await
        .expect_err("the API server exits");
    match &error {
        ClusterError::Exited {
            program,
            status,
            log,
            ..
        } => {
            assert_eq!(*program, "kube-apiserver");
            assert_eq!(status.code(), Some(3));
            assert!(
                log.contains("unknown flag: --etcd-servers=http://127.0.0.1:"),
                "{log}"
            );
        }
        other => panic!("expected kube-apiserver to be reported as exited, got {other}"),
    }
    // The stand-in etcd was stopped with the failed start.
    let pid = std::fs::read_to_string(dir.path().join("etcd.pid")).expect("etcd wrote its pid");
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the stand-in etcd ({}) is gone",
        pid.trim()
    );
}
