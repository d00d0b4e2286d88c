//! A bad bootstrap file stops the process with every error and its field path.

use std::process::Command;

fn run_sidecar(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BAD_VALUES: &str = r#"
service: orders
trust_domain: mesh.local
app: 127.0.0.1:8080
tls: { cert: orders.pem, key: orders-key.pem, trust_bundle: ca.pem }
destinations:
  inventory:
    endpoints: [127.0.0.1:16006, 127.0.0.1:x]
  payments:
    endpoints: []
drain_timeout: forever
"#;

#[test]
fn every_bad_value_is_reported_with_its_path() {
    let (code, stderr) = run_sidecar(BAD_VALUES);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        r#"destinations.inventory.endpoints[1]: invalid socket address "127.0.0.1:x""#,
        "destinations.payments.endpoints: must list at least one endpoint",
        r#"drain_timeout: invalid duration "forever""#,
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("sidecar.yaml"), "{stderr}");
}

#[test]
fn unknown_field_is_reported_with_its_path() {
    let yaml = BAD_VALUES
        .replace("127.0.0.1:x", "127.0.0.1:17006")
        .replace("  payments:\n    endpoints: []\n", "")
        .replace("drain_timeout: forever", "")
        .replace("    endpoints: [", "    retry: 3\n    endpoints: [");
    let (code, stderr) = run_sidecar(&yaml);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("destinations.inventory.retry:"), "{stderr}");
    assert!(stderr.contains("unknown field `retry`"), "{stderr}");
}

#[test]
fn missing_certificate_file_is_named() {
    let yaml = BAD_VALUES
        .replace("127.0.0.1:x", "127.0.0.1:17006")
        .replace("  payments:\n    endpoints: []\n", "")
        .replace("drain_timeout: forever", "");
    let (code, stderr) = run_sidecar(&yaml);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("tls: cannot read") && stderr.contains("orders.pem"),
        "{stderr}"
    );
}

#[test]
fn zero_workers_is_refused_with_the_flag_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .args(["--config", "unused.yaml", "--workers", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--workers"), "{stderr}");
}

/// A sidecar that would register an address nobody can dial does not start: it names the
/// field to set and why.
#[test]
fn a_wildcard_inbound_without_advertise_is_refused_at_start() {
    let yaml = "service: inventory\ntrust_domain: mesh.local\napp: 127.0.0.1:8080\n\
                listen: { inbound: 0.0.0.0:15006 }\n\
                control_plane: { address: 127.0.0.1:15010, trust_anchor: ca.pem, token_file: token }\n";
    let (code, stderr) = run_sidecar(yaml);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("sidecar.yaml"), "{stderr}");
    assert!(
        stderr.contains(
            "listen.advertise: required: listen.inbound 0.0.0.0:15006 is a wildcard address, \
             which peer sidecars cannot dial"
        ),
        "{stderr}"
    );
}

#[test]
fn every_unknown_field_is_reported_and_the_file_is_named() {
    let yaml = BAD_VALUES
        .replace("127.0.0.1:x", "127.0.0.1:17006")
        .replace("  payments:\n    endpoints: []\n", "")
        .replace(
            "drain_timeout: forever",
            "colour: red\nlisten: { shape: round }",
        );
    let (code, stderr) = run_sidecar(&yaml);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("\n  colour: "), "{stderr}");
    assert!(
        stderr.contains("\n  listen.shape: unknown field `shape`"),
        "{stderr}"
    );
    // The excerpt names the file, not the parser's `<input>`.
    assert!(!stderr.contains("<input>"), "{stderr}");
    assert!(stderr.contains("sidecar.yaml:"), "{stderr}");
}

#[tokio::test]
async fn ready_says_what_start_up_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, admin) = (mesh_testkit::free_port(), mesh_testkit::free_port());
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let ca = mesh_control_plane::ca::DevCa::load_or_generate(dir.path(), "mesh.local").unwrap();
    ca.write_to(dir.path()).unwrap();
    let path = dir.path().join("sidecar.yaml");
    std::fs::write(
        &path,
        format!(
            "service: orders\ntrust_domain: mesh.local\napp: 127.0.0.1:1\n\
             listen: {{ outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: {admin} }}\n\
             control_plane: {{ address: {cp}, trust_anchor: ca.pem, token_file: token }}\n"
        ),
    )
    .unwrap();
    let _sidecar = mesh_testkit::process::KillOnDrop::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
            .arg("--config")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = mesh_testkit::eventually(
        "the admin endpoint to answer",
        std::time::Duration::from_secs(10),
        || async {
            let (status, body) =
                mesh_control_plane::admin_client::request(admin, http::Method::GET, "/ready")
                    .await
                    .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        },
    )
    .await;
    assert_eq!(body.0, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body.1,
        format!("not ready: waiting for a certificate from the control plane at {cp}\n")
    );
}
