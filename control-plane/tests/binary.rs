//! The real `control-plane` binary: `validate`, start, readiness, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use mesh_control_plane::admin_client;
use mesh_testkit::process::{KillOnDrop, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_control-plane");

#[test]
fn validate_prints_every_error_with_file_and_path() {
    let dirs = Dirs::new(
        "trust_domain: mesh.local\nregistry:\n  heartbeat_interval: 10s\n  lease: 5s\nsurprise: true\n",
        &[
            (
                "orders",
                "name: orders\ncalls: [inventory, ghost]\ntimeout: soon\n",
            ),
            (
                "inventory",
                "name: inventory\nauthorization:\n  allow: [stranger]\ntraffic_split:\n  V1: 10\n",
            ),
        ],
    );
    let out = Command::new(BIN)
        .args(["validate"])
        .arg(dirs.config.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = dirs.config.path().display().to_string();
    for expected in [
        format!("{dir}/mesh.yaml: surprise: "),
        format!("{dir}/services/orders.yaml: calls[1]: service \"ghost\" is not declared"),
        format!("{dir}/services/orders.yaml: timeout: invalid duration"),
        format!(
            "{dir}/services/inventory.yaml: authorization.allow[0]: service \"stranger\" is not declared"
        ),
        format!("{dir}/services/inventory.yaml: traffic_split.V1: "),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    // Fix them: exit 0 and one line.
    std::fs::write(
        dirs.config.path().join("mesh.yaml"),
        "trust_domain: mesh.local\n",
    )
    .unwrap();
    dirs.write_service("orders", "name: orders\ncalls: [inventory]\ntimeout: 2s\n");
    dirs.write_service(
        "inventory",
        "name: inventory\nauthorization:\n  default: deny\n  allow: [orders]\n",
    );
    dirs.write_service("gateway", "name: gateway\ncalls: [orders]\n");
    let gateways = dirs.config.path().join("gateways");
    std::fs::create_dir_all(&gateways).unwrap();
    std::fs::write(
        gateways.join("gateway.yaml"),
        "listeners: [{ name: web, address: 127.0.0.1:8080, protocol: HTTP }]\n\
         routes: [{ name: shop, parentRefs: [{ name: web }], rules: [{ backendRefs: [{ name: orders }] }] }]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg(dirs.config.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("3 services, 1 gateway (gateway)"),
        "{stdout}"
    );
}

#[test]
fn the_binary_starts_serves_and_stops_on_sigterm() {
    let dirs = Dirs::new(
        "trust_domain: mesh.local\n",
        &[("orders", "name: orders\n")],
    );
    let mut child = Command::new(BIN)
        .arg("--config-dir")
        .arg(dirs.config.path())
        .arg("--state-dir")
        .arg(dirs.state())
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("MESH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut process = KillOnDrop::new(child);

    // The start line names both bound addresses.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no start line within 20s");
    let field = |name: &str| -> std::net::SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .parse()
            .unwrap()
    };
    let (api, admin) = (field("api="), field("admin="));
    assert_ne!(api.port(), 0);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, _) = admin_client::request(admin, Method::GET, "/ready")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let (status, body) = admin_client::request(admin, Method::GET, "/live")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body:?}");
        // The API speaks TLS with the control plane's identity, verified against ca.pem.
        let roots = mesh_control_plane::client::roots_from_pem(&dirs.bundle_pem()).unwrap();
        mesh_control_plane::client::connect(api, roots, TD, None)
            .await
            .unwrap();
    });
    assert!(dirs.state().join("tokens").join("orders").exists());

    process.signal(Signal::SIGTERM);
    let status = runtime.block_on(process.exit_within(Duration::from_secs(15)));
    assert!(status.success(), "{status}");
    assert!(dirs.state().join("version").exists());
}

#[test]
fn a_bad_configuration_directory_is_named() {
    let state = tempfile::tempdir().unwrap();
    let run = |dir: &std::path::Path| {
        let out = std::process::Command::new(BIN)
            .arg("--config-dir")
            .arg(dir)
            .arg("--state-dir")
            .arg(state.path())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = state.path().join("nonexistent");
    let err = run(&missing);
    assert!(
        err.contains(&format!(
            "--config-dir {}: no such directory",
            missing.display()
        )),
        "{err}"
    );
    // A directory without mesh.yaml: the error names the directory, and is not coloured.
    let empty = tempfile::tempdir().unwrap();
    let err = run(empty.path());
    assert!(
        err.contains(&format!(
            "control-plane: {}: invalid configuration (1 error):",
            empty.path().display()
        )),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// Lays out `files` the way the kubelet writes a ConfigMap volume: the files in a hidden
/// timestamped directory, `..data` a symlink to it, and each file a symlink through `..data`;
/// an update writes a new directory and swaps `..data` in one rename.
#[allow(clippy::unwrap_used)]
fn write_config_map_volume(dir: &std::path::Path, generation: u32, files: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    let data = format!("..2026_12_02_{generation}");
    std::fs::create_dir(dir.join(&data)).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(&data).join(name), text).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    symlink(&data, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

#[test]
fn services_are_read_from_their_own_directory_laid_out_as_a_config_map_and_followed() {
    let dirs = Dirs::new("trust_domain: mesh.local\n", &[]);
    let services = tempfile::tempdir().unwrap();
    write_config_map_volume(services.path(), 1, &[("orders.yaml", "name: orders\n")]);
    let child = Command::new(BIN)
        .arg("--config-dir")
        .arg(dirs.config.path())
        .arg("--services-dir")
        .arg(services.path())
        .arg("--state-dir")
        .arg(dirs.state())
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("MESH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _process = KillOnDrop::new(child);
    let token = |service: &str| dirs.state().join("tokens").join(service);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let appears = |path: std::path::PathBuf, what: &str| {
        runtime.block_on(mesh_testkit::eventually(
            what,
            Duration::from_secs(20),
            || {
                let exists = path.exists();
                async move { exists.then_some(()) }
            },
        ));
    };
    appears(
        token("orders"),
        "orders, from --services-dir, to be declared",
    );
    assert!(!token("payments").exists());
    // The kubelet's update of the ConfigMap: a new generation with one more file.
    write_config_map_volume(
        services.path(),
        2,
        &[
            ("orders.yaml", "name: orders\n"),
            ("payments.yaml", "name: payments\n"),
        ],
    );
    appears(
        token("payments"),
        "payments, added by the update, to be declared without a restart",
    );
}
