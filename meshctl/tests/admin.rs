//! `meshctl status` and `meshctl ca` against a control plane running in this process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use mesh_control_plane::{Listeners, Options};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

fn meshctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(MESHCTL).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_ca_commands_talk_to_the_admin_server() {
    let config = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("mesh.yaml"),
        "trust_domain: mesh.local\n",
    )
    .unwrap();
    std::fs::create_dir(config.path().join("services")).unwrap();
    std::fs::write(
        config.path().join("services/orders.yaml"),
        "name: orders\ncalls: [inventory]\n",
    )
    .unwrap();
    std::fs::write(
        config.path().join("services/inventory.yaml"),
        "name: inventory\n",
    )
    .unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let cp = mesh_control_plane::start(
        Options::new(config.path(), state.path()),
        Listeners::bind(any, any).await.unwrap(),
    )
    .await
    .unwrap();
    let admin = cp.admin_addr().to_string();
    let state_dir = state.path().display().to_string();

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            meshctl(&args)
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let (ok, stdout, stderr) = run(args(&["status", "--admin", &admin])).await.unwrap();
    assert!(ok, "{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("orders")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("inventory")),
        "{stdout}"
    );
    assert!(stdout.contains("SNAPSHOT"), "{stdout}");

    // Changing the CA needs the admin token, read from the state directory.
    let (ok, _, stderr) = run(args(&[
        "ca",
        "add-root",
        "--admin",
        &admin,
        "--state-dir",
        "/nonexistent",
    ]))
    .await
    .unwrap();
    assert!(!ok);
    assert!(stderr.contains("cannot read the admin token"), "{stderr}");
    let (ok, stdout, stderr) = run(args(&[
        "ca",
        "add-root",
        "--admin",
        &admin,
        "--state-dir",
        &state_dir,
    ]))
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("added root"), "{stdout}");
    assert_eq!(cp.trust_bundle_der().len(), 2);

    // Errors carry the server's message and a failing exit status.
    let (ok, _, stderr) = run(args(&[
        "ca",
        "use-root",
        "0000000000000000",
        "--admin",
        &admin,
        "--state-dir",
        &state_dir,
    ]))
    .await
    .unwrap();
    assert!(!ok);
    assert!(stderr.contains("no root 0000000000000000"), "{stderr}");
    let signer = cp.status().signer.unwrap();
    let (ok, _, stderr) = run(args(&[
        "ca",
        "remove-root",
        &signer,
        "--admin",
        &admin,
        "--state-dir",
        &state_dir,
    ]))
    .await
    .unwrap();
    assert!(!ok);
    assert!(stderr.contains("409"), "{stderr}");

    cp.stop().await.unwrap();
    let (ok, _, stderr) = run(args(&["status", "--admin", &admin])).await.unwrap();
    assert!(!ok);
    assert!(
        stderr.contains("cannot reach the control plane"),
        "{stderr}"
    );
}
