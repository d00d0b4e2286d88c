//! The sidecar started as a Kubernetes pod starts it: no bootstrap file, the YAML itself in
//! `MESH_SIDECAR_BOOTSTRAP`, the control plane dialled by name, its trust anchor inline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{TestMesh, app, client, eventually, free_port};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{LocalControlPlane, ORDERS_ID, until_ready};

const SIDECAR: &str = env!("CARGO_BIN_EXE_sidecar");
const PATIENCE: Duration = Duration::from_secs(15);

/// A control plane in this process for `orders` calling `inventory`.
async fn cluster() -> LocalControlPlane {
    LocalControlPlane::start(&[
        ("orders", "name: orders\ncalls: [inventory]\n"),
        ("inventory", "name: inventory\n"),
    ])
    .await
}

/// `sidecar` with no arguments and `bootstrap` as its only configuration, run in `dir`, its
/// log on a pipe.
fn spawn_inline(bootstrap: &str, dir: &Path) -> KillOnDrop {
    KillOnDrop::new(
        Command::new(SIDECAR)
            .env_remove("MESH_SIDECAR_CONFIG")
            .env("MESH_SIDECAR_BOOTSTRAP", bootstrap)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// The PEM text indented to sit under `trust_anchor_pem: |`.
fn indented(pem: &str) -> String {
    pem.lines().map(|line| format!("    {line}\n")).collect()
}

/// What an injected pod's sidecar is given: the control plane by name (`localhost`, which may
/// resolve to ::1 first, where nothing listens, before 127.0.0.1), the trust anchor inline, and
/// a token file relative to the working directory. It gets its certificate, takes its first
/// snapshot, and carries a call to inventory over mTLS.
#[tokio::test]
async fn a_sidecar_given_only_inline_yaml_enrols_by_name_and_serves() {
    let cluster = cluster().await;
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .control_plane(cluster.for_service("inventory"))
        .start()
        .await;

    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let anchor = std::fs::read_to_string(cluster.state().join("ca.pem")).unwrap();
    let bootstrap = format!(
        "service: orders\ninstance: orders-pod\ntrust_domain: mesh.local\napp: 127.0.0.1:1\n\
         listen: {{ outbound: \"{outbound}\", inbound: \"{inbound}\", admin: \"{admin}\" }}\n\
         drain_timeout: 1s\n\
         control_plane:\n  address: localhost:{port}\n  trust_anchor_pem: |\n{pem}  \
         token_file: tokens/orders\n",
        port = cluster.control_plane.api_addr().port(),
        pem = indented(&anchor),
    );
    let mut orders = spawn_inline(&bootstrap, cluster.state());
    until_ready(
        "orders to be ready",
        &mut orders,
        admin,
        PATIENCE,
        |orders| {
            let mut log = String::new();
            if let Some(mut stderr) = orders.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
            }
            log
        },
    )
    .await;

    // The certificate is orders', issued by the control plane: inventory's app sees it.
    let url = format!("http://{outbound}/api/stock");
    let seen = eventually("a call to inventory through orders", PATIENCE, || {
        let url = url.clone();
        async move {
            let rsp = client::get(&url, "inventory").await;
            if rsp.status() != StatusCode::OK {
                return Err(format!("{}: {}", rsp.status(), client::text(rsp).await));
            }
            Ok(client::json(rsp).await)
        }
    })
    .await;
    assert_eq!(seen["service"], "inventory", "{seen}");
    assert_eq!(seen["caller"], ORDERS_ID, "{seen}");
    drop(inventory);
}

/// A mistake in the inline YAML stops the sidecar at once, naming the variable (where a file
/// would be named) and the field; so does giving a bootstrap two ways.
#[test]
fn bad_inline_yaml_exits_2_naming_the_variable_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = |bootstrap: &str, args: &[&str]| {
        let out = Command::new(SIDECAR)
            .args(args)
            .env_remove("MESH_SIDECAR_CONFIG")
            .env("MESH_SIDECAR_BOOTSTRAP", bootstrap)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = "service: orders\ntrust_domain: mesh.local\napp: 127.0.0.1:8080\n\
                control_plane:\n  address: mesh-control-plane.mesh-system.svc:15010\n  \
                trust_anchor: ca.pem\n  token_file: token\n";

    let (code, stderr) = run(&good.replace("127.0.0.1:8080", "nowhere"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid configuration in MESH_SIDECAR_BOOTSTRAP:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("app: invalid socket address \"nowhere\""),
        "{stderr}"
    );

    let (code, stderr) = run(&good.replace("15010", "http"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("MESH_SIDECAR_BOOTSTRAP"), "{stderr}");
    assert!(stderr.contains("control_plane.address: "), "{stderr}");

    // A syntax error's excerpt names the variable, not the parser's `<input>`.
    let (code, stderr) = run(&format!("{good}listen: {{ admin: [\n"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("MESH_SIDECAR_BOOTSTRAP"), "{stderr}");
    assert!(!stderr.contains("<input>"), "{stderr}");

    let (code, stderr) = run(good, &["--config", "sidecar.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--config") && stderr.contains("MESH_SIDECAR_BOOTSTRAP"),
        "{stderr}"
    );
}

/// A control plane whose name does not resolve (a Service not created yet) is a connect
/// error naming the name, logged and tried again with backoff; the sidecar keeps running.
#[tokio::test]
async fn a_control_plane_name_that_does_not_resolve_is_logged_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = TestMesh::new();
    let anchor = std::fs::read_to_string(mesh.trust_bundle()).unwrap();
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let admin = free_port();
    let bootstrap = format!(
        "service: orders\ntrust_domain: mesh.local\napp: 127.0.0.1:1\n\
         listen: {{ outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: \"{admin}\" }}\n\
         control_plane:\n  address: mesh-control-plane.no-such-namespace.invalid:15010\n  \
         trust_anchor_pem: |\n{pem}  token_file: token\n",
        pem = indented(&anchor),
    );
    let mut sidecar = spawn_inline(&bootstrap, dir.path());
    let stderr = tokio::process::ChildStderr::from_std(sidecar.stderr.take().unwrap()).unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut failures = Vec::new();
    let mut log = String::new();
    let read = async {
        while failures.len() < 2 {
            let Some(line) = lines.next_line().await.unwrap() else {
                break;
            };
            if line.contains("cannot obtain a certificate") {
                failures.push(line.clone());
            }
            log.push_str(&line);
            log.push('\n');
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("fewer than two failed tries within {PATIENCE:?}:\n{log}"));
    assert_eq!(failures.len(), 2, "the sidecar stopped:\n{log}");
    for failure in &failures {
        assert!(
            failure.contains("cannot resolve mesh-control-plane.no-such-namespace.invalid"),
            "{failure}"
        );
    }
    assert!(sidecar.try_wait().unwrap().is_none(), "it exited:\n{log}");
    let rsp = client::get_url(&format!("http://{admin}/ready")).await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        client::text(rsp).await,
        "not ready: waiting for a certificate from the control plane at \
         mesh-control-plane.no-such-namespace.invalid:15010\n"
    );
}
