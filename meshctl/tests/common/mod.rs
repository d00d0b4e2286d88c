//! What the end-to-end tests of the demo mesh share: where the binaries are, ports, services,
//! and running meshctl itself.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use meshctl::up::ServiceSpec;
use nix::unistd::Pid;

/// Where cargo put every workspace binary, meshctl among them.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_meshctl"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The binary directory, once every binary of the demo is there (`cargo nextest run -p meshctl`
/// builds only meshctl's own).
pub fn require_binaries() -> PathBuf {
    let bins = bin_dir();
    for name in meshctl::up::BINARIES {
        assert!(
            bins.join(name).is_file(),
            "{} is missing: build the workspace first (cargo build, or cargo nextest run --workspace)",
            bins.join(name).display()
        );
    }
    bins
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A base port in 20000..31000, below Linux's ephemeral range, different for each run so
/// reruns do not meet sockets in TIME_WAIT; `allocate` skips busy ports anyway.
pub fn ports_from() -> u16 {
    20_000 + fastrand::u16(0..110) * 100
}

pub fn service(name: &str, instances: u16) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        instances,
        versions: Default::default(),
    }
}

pub fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap())
}

/// Runs a meshctl command to completion; returns success, stdout and stderr.
pub async fn meshctl(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether a test that needs `what` runs: yes when it is there; under `CI=true` it must be
/// there (the test fails); elsewhere the test prints why it skips.
pub fn required_in_ci(what: &str, present: bool, how: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is missing under CI=true: {how}");
    }
    eprintln!("skipped: {what} is missing ({how})");
    false
}

/// The demo mesh of the repository's `config/demo/mesh`, running `services` from `run_dir`, on
/// ports from [`ports_from`].
pub fn demo_config(
    run_dir: &Path,
    tracing: Option<meshctl::up::TracingSpec>,
    services: Vec<ServiceSpec>,
) -> meshctl::up::DemoConfig {
    meshctl::up::DemoConfig {
        control_plane: meshctl::up::ControlPlaneSpec {
            config_dir: repo_root().join("config/demo/mesh"),
            api: None,
            admin: None,
        },
        run_dir: run_dir.to_owned(),
        tracing,
        ports_from: ports_from(),
        gateway: meshctl::up::GatewaySpec::default(),
        services,
    }
}

/// Sets the faults of the demo app at `app_url` (`/admin/faults`).
pub async fn set_faults(
    client: &meshctl::http::HttpClient,
    app_url: &str,
    faults: serde_json::Value,
) {
    let response = client
        .json(
            http::Method::PUT,
            &format!("{app_url}/admin/faults"),
            &faults,
        )
        .await
        .unwrap();
    assert!(response.status.is_success(), "{}", response.text());
}
