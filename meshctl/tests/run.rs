//! `meshctl run` end to end, as root: a real control plane, meshctl putting processes in their
//! own network namespaces on a bridge of this test's own, real sidecars, netfilter rules and
//! hosts files; then what is left after it ends (nothing).
//!
//! Each test uses its own bridge and range, so they run in parallel with each other and with
//! a `meshctl run` of the default bridge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use http::Method;
use mesh_control_plane::admin_client;
use mesh_testkit::process::{KillOnDrop, Signal};
use mesh_testkit::{eventually, free_port, netns};

use self::common::bin_dir;

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");
/// Where meshctl keeps its bridges' records.
const STATE_ROOT: &str = "/run/mesh";
/// How long set-up, a call, or stopping may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// The binaries besides meshctl, which `cargo nextest run -p meshctl` does not build.
fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    let built = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
    assert!(
        built,
        "{} is missing: build the workspace first (cargo build)",
        path.display()
    );
    path
}

/// A control plane with its own configuration and state, its API on every address (so the
/// namespaces reach it at their bridge's address) and its admin endpoint on loopback.
struct ControlPlane {
    dir: tempfile::TempDir,
    api_port: u16,
    admin: SocketAddr,
    _process: KillOnDrop,
}

impl ControlPlane {
    /// Declares `echo` (which only `client` may call) and `client` (which calls `echo`).
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let services = dir.path().join("mesh/services");
        std::fs::create_dir_all(&services).unwrap();
        std::fs::write(
            dir.path().join("mesh/mesh.yaml"),
            "trust_domain: mesh.local\nregistry: { heartbeat_interval: 1s, lease: 3s }\n\
             authorization: { default: deny }\n",
        )
        .unwrap();
        std::fs::write(
            services.join("echo.yaml"),
            "name: echo\nauthorization: { default: deny, allow: [client] }\n",
        )
        .unwrap();
        std::fs::write(
            services.join("client.yaml"),
            "name: client\ncalls: [echo]\n",
        )
        .unwrap();
        let api_port = free_port().port();
        let admin = free_port();
        let process = Command::new(binary("control-plane"))
            .arg("--config-dir")
            .arg(dir.path().join("mesh"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--listen", &format!("0.0.0.0:{api_port}")])
            .args(["--admin", &admin.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = KillOnDrop::new(process);
        eventually("the control plane to be ready", PATIENCE, || async move {
            match admin_client::request(admin, Method::GET, "/ready").await {
                Ok((status, _)) if status.is_success() => Ok(()),
                Ok((status, _)) => Err(status.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        Self {
            dir,
            api_port,
            admin,
            _process: process,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// A bridge and range of this test's own.
struct Net {
    bridge: String,
    range: String,
}

impl Net {
    /// `198.19.<octet>.0/24` on a bridge named after this process.
    fn new(octet: u8) -> Self {
        Self {
            bridge: format!("mrt{}", std::process::id()),
            range: format!("198.19.{octet}.0/24"),
        }
    }
}

/// `meshctl run` with this test's control plane and network; add the rest.
fn meshctl_run(cp: &ControlPlane, net: &Net, service: &str) -> Command {
    meshctl_run_at(
        cp,
        &cp.admin.to_string(),
        &format!("0.0.0.0:{}", cp.api_port),
        net,
        service,
    )
}

/// [`meshctl_run`] with another `--admin` and `--control-plane`.
fn meshctl_run_at(
    cp: &ControlPlane,
    admin: &str,
    control_plane: &str,
    net: &Net,
    service: &str,
) -> Command {
    let mut command = Command::new(MESHCTL);
    command
        .args(["run", "--service", service])
        .args(["--admin", admin, "--control-plane", control_plane])
        .arg("--state-dir")
        .arg(cp.state_dir())
        .args(["--network", &net.range, "--bridge", &net.bridge]);
    command
}

/// Runs `command` to its end (bounded) and returns its output and pid.
async fn finish(mut command: Command) -> (Output, u32) {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = tokio::time::timeout(
        PATIENCE * 2,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("meshctl run ends in time")
    .unwrap()
    .unwrap();
    (out, pid)
}

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap()
        .status
        .success()
}

/// Nothing of the `meshctl run` with `pid` for `service` on `net` is left: namespace, veth,
/// hosts directory, the bridge and its records, the sidecar.
fn assert_nothing_left(net: &Net, service: &str, pid: u32) {
    let namespace = format!("meshctl-{service}-{pid}");
    let listed = namespaces();
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&namespace)),
        "{namespace} is left: {listed}"
    );
    assert!(!link_exists(&format!("mr{pid}")), "veth mr{pid} is left");
    assert!(!link_exists(&net.bridge), "bridge {} is left", net.bridge);
    let hosts = Path::new("/etc/netns").join(&namespace);
    assert!(!hosts.exists(), "{} is left", hosts.display());
    let records = Path::new(STATE_ROOT).join(&net.bridge);
    assert!(!records.exists(), "{} is left", records.display());
    assert!(
        !running(&format!("{}/{namespace}/sidecar.yaml", records.display())),
        "the sidecar of {namespace} is still running"
    );
}

#[tokio::test]
async fn a_process_in_the_mesh_calls_another_by_name_over_mtls() {
    if !netns::available("a_process_in_the_mesh_calls_another") {
        return;
    }
    let cp = ControlPlane::start().await;
    let net = Net::new(101);
    let echo_app = binary("echo-app");

    let mut echo = meshctl_run(&cp, &net, "echo");
    echo.args(["--app-port", "8080", "--"])
        .arg(&echo_app)
        .args(["--name", "echo", "--listen", "127.0.0.1:8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut echo = KillOnDrop::new(echo.spawn().unwrap());
    let echo_pid = echo.id();

    // The client resolves `echo` from its hosts file, its connection is redirected to its
    // sidecar, and the sidecar calls echo's over mTLS. Tried until echo's instance is in the
    // client's snapshot, at most 150 times.
    let mut client = meshctl_run(&cp, &net, "client");
    client.args([
        "--",
        "bash",
        "-c",
        "for _ in $(seq 150); do curl -sf --max-time 5 http://echo:8080/hello && exit 0; \
         sleep 0.2; done; exit 1",
    ]);
    let (out, client_pid) = finish(client).await;
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(seen["service"], "echo", "{seen}");
    assert_eq!(seen["path"], "/hello", "{seen}");
    // The identity echo's sidecar read from the client's certificate.
    assert_eq!(
        seen["caller"], "spiffe://mesh.local/ns/default/sa/client",
        "{seen}"
    );
    assert_nothing_left_but_the_bridge(&net, "client", client_pid);

    echo.signal(Signal::SIGINT);
    let status = echo.exit_within(PATIENCE).await;
    // The echo app exits 0 on SIGINT, and meshctl with it.
    assert!(status.success(), "{status}");
    assert_nothing_left(&net, "echo", echo_pid);
}

/// As [`assert_nothing_left`] while another instance still holds the bridge.
fn assert_nothing_left_but_the_bridge(net: &Net, service: &str, pid: u32) {
    let namespace = format!("meshctl-{service}-{pid}");
    assert!(!namespaces().contains(&namespace), "{namespace} is left");
    assert!(!link_exists(&format!("mr{pid}")), "veth mr{pid} is left");
    assert!(!Path::new("/etc/netns").join(&namespace).exists());
    assert!(link_exists(&net.bridge), "echo still uses {}", net.bridge);
}

#[tokio::test]
async fn interrupting_meshctl_run_removes_everything_it_made() {
    if !netns::available("interrupting_meshctl_run") {
        return;
    }
    let cp = ControlPlane::start().await;
    let net = Net::new(102);
    // A command line no other process has, to find it by.
    let seconds = format!("{}", 900_000 + fastrand::u32(..99_999));
    let mut run = meshctl_run(&cp, &net, "echo");
    run.args(["--", "sleep", &seconds])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut run = KillOnDrop::new(run.spawn().unwrap());
    let pid = run.id();
    let namespace = format!("meshctl-echo-{pid}");
    let sleep = format!("^sleep {seconds}$");

    eventually("the command to start", PATIENCE, || {
        let started = running(&sleep);
        async move { started.then_some(()) }
    })
    .await;
    // Everything is there while it runs: namespace, rules, bridge, hosts file, sidecar.
    assert!(namespaces().contains(&namespace), "{}", namespaces());
    let tables = Command::new("ip")
        .args(["netns", "exec", &namespace, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tables.stdout).contains("inet mesh_redirect"),
        "{tables:?}"
    );
    assert!(link_exists(&net.bridge));
    assert!(link_exists(&format!("mr{pid}")));
    let hosts = std::fs::read_to_string(format!("/etc/netns/{namespace}/hosts")).unwrap();
    assert!(hosts.lines().any(|l| l.ends_with("\techo")), "{hosts}");
    assert!(hosts.lines().any(|l| l.ends_with("\tclient")), "{hosts}");
    assert!(running(&format!(
        "{STATE_ROOT}/{}/{namespace}/sidecar.yaml",
        net.bridge
    )));

    run.signal(Signal::SIGINT);
    let status = run.exit_within(PATIENCE).await;
    // The command was stopped by the SIGINT passed on to it: 128 + 2, as a shell says.
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(!running(&sleep), "the command is still running");
    assert_nothing_left(&net, "echo", pid);
}

#[tokio::test]
async fn bad_input_fails_with_exit_code_2_naming_the_fix_and_leaves_nothing() {
    if !netns::available("bad_input_fails") {
        return;
    }
    let cp = ControlPlane::start().await;
    let net = Net::new(103);
    let expect_refusal = |out: &Output, needles: &[&str]| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} missing: {stderr}");
        }
    };

    // A service the control plane does not declare: named, with those it does.
    let mut run = meshctl_run(&cp, &net, "nosuch");
    run.args(["--", "true"]);
    let (out, pid) = finish(run).await;
    expect_refusal(
        &out,
        &["knows no service \"nosuch\"", "pick one of: client, echo"],
    );
    assert_nothing_left(&net, "nosuch", pid);

    // A range that overlaps a route of the host: the route is named.
    let route = BlackholeRoute::add("198.19.104.0/24");
    let overlapping = Net {
        bridge: net.bridge.clone(),
        range: "198.19.104.128/25".to_owned(),
    };
    let mut run = meshctl_run(&cp, &overlapping, "echo");
    run.args(["--", "true"]);
    let (out, pid) = finish(run).await;
    expect_refusal(
        &out,
        &["--network 198.19.104.128/25 overlaps the host's route 198.19.104.0/24:"],
    );
    assert_nothing_left(&overlapping, "echo", pid);
    drop(route);

    // A control plane the namespace cannot reach: found after the namespace was made, which
    // is removed again.
    let admin = cp.admin.to_string();
    let nowhere = format!("0.0.0.0:{}", free_port().port());
    let mut run = meshctl_run_at(&cp, &admin, &nowhere, &net, "echo");
    run.args(["--", "true"]);
    let (out, pid) = finish(run).await;
    expect_refusal(
        &out,
        &[
            "control plane's API is not reachable from the namespace",
            "--listen 0.0.0.0:",
        ],
    );
    assert_nothing_left(&net, "echo", pid);

    // On loopback, it is refused before anything is made.
    let mut run = meshctl_run_at(&cp, &admin, "127.0.0.1:15010", &net, "echo");
    run.args(["--", "true"]);
    let (out, _) = finish(run).await;
    expect_refusal(
        &out,
        &[
            "loopback address is not reachable",
            "--listen 0.0.0.0:15010",
        ],
    );

    // No control plane at --admin.
    let api = format!("0.0.0.0:{}", cp.api_port);
    let mut run = meshctl_run_at(&cp, &free_port().to_string(), &api, &net, "echo");
    run.args(["--", "true"]);
    let (out, pid) = finish(run).await;
    expect_refusal(&out, &["does not answer", "--admin"]);
    assert_nothing_left(&net, "echo", pid);

    // Not root, and no `ip`: each says what to do.
    let mut run = Command::new("setpriv");
    run.args(["--reuid=65534", "--regid=65534", "--clear-groups", MESHCTL])
        .args(["run", "--service", "echo", "--", "true"]);
    let (out, _) = finish(run).await;
    expect_refusal(&out, &["root is needed", "network namespace"]);
    let empty = tempfile::tempdir().unwrap();
    let mut run = meshctl_run(&cp, &net, "echo");
    run.env("PATH", empty.path()).args(["--", "true"]);
    let (out, _) = finish(run).await;
    expect_refusal(&out, &["`ip` was not found", "apt-get install iproute2"]);
}

/// A blackhole route of the host: a route meshctl did not make.
struct BlackholeRoute(&'static str);

impl BlackholeRoute {
    fn add(cidr: &'static str) -> Self {
        let out = Command::new("ip")
            .args(["route", "add", "blackhole", cidr])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip route add blackhole {cidr}: {out:?}"
        );
        Self(cidr)
    }
}

impl Drop for BlackholeRoute {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "delete", "blackhole", self.0])
            .output();
    }
}
