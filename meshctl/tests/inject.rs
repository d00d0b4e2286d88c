//! `meshctl inject` and `meshctl uninject` as a user runs them: the binary, manifests on stdin
//! or in a file, output on stdout, the report on stderr, and exit 1 with nothing on stdout for
//! every refused input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

const MANIFESTS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
  namespace: shop
spec:
  selector:
    matchLabels: { app: orders }
  template:
    metadata:
      labels: { app: orders }
    spec:
      containers:
      - name: app
        image: example/orders:1
        ports: [{ containerPort: 8080 }]
---
apiVersion: v1
kind: Service
metadata: { name: orders, namespace: shop }
spec:
  selector: { app: orders }
  ports: [{ port: 80, targetPort: 8080 }]
";

/// A directory with the mesh's ca.pem, made by `meshctl dev-certs`.
struct Mesh {
    dir: tempfile::TempDir,
}

impl Mesh {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(MESHCTL)
            .args(["dev-certs", "--out"])
            .arg(dir.path())
            .arg("orders")
            .output()
            .unwrap();
        assert!(output.status.success(), "dev-certs: {output:?}");
        Self { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn inject(&self, stdin: &str) -> Output {
        self.run(
            &["inject", "--trust-anchor", self.ca().to_str().unwrap()],
            stdin,
        )
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(MESHCTL)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A run refused for its flags exits before reading its input: the pipe is then closed,
        // which is no failure of the test's own.
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("writing meshctl's input: {e}"),
        }
        child.wait_with_output().unwrap()
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple(text).unwrap()
}

/// Exit 1, nothing on stdout, and a message on stderr containing `message`.
fn assert_refused(output: &Output, message: &str) {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        output.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = stderr(output);
    assert!(
        stderr.contains(message),
        "expected {message:?} in:\n{stderr}"
    );
}

#[test]
fn inject_reads_stdin_and_writes_stdout_with_the_report_on_stderr() {
    let mesh = Mesh::new();
    let output = mesh.inject(MANIFESTS);
    let injected = stdout(&output);
    assert_eq!(
        stderr(&output),
        "Deployment shop/orders injected\nService shop/orders passed through: no pods\n"
    );
    let docs = documents(&injected);
    assert_eq!(docs.len(), 2);
    let pod = &docs[0]["spec"]["template"];
    let names: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mesh-init", "mesh-proxy"]);
    assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always");
    let bootstrap = pod["spec"]["initContainers"][1]["env"][4]["value"]
        .as_str()
        .unwrap();
    let ca = std::fs::read_to_string(mesh.ca()).unwrap();
    let bootstrap: serde_json::Value = serde_saphyr::from_str(bootstrap).unwrap();
    assert_eq!(bootstrap["control_plane"]["trust_anchor_pem"], ca.as_str());
    assert_eq!(bootstrap["service"], "orders");
    assert_eq!(docs[1], documents(MANIFESTS)[1]);
    // The user's order of keys is kept.
    assert!(injected.starts_with("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"));
}

#[test]
fn a_file_and_dash_read_the_same_as_stdin() {
    let mesh = Mesh::new();
    let from_stdin = stdout(&mesh.inject(MANIFESTS));
    let file = mesh.file("app.yaml", MANIFESTS);
    let ca = mesh.ca();
    let args = |input: &Path| {
        vec![
            "inject".to_owned(),
            "--trust-anchor".to_owned(),
            ca.display().to_string(),
            input.display().to_string(),
        ]
    };
    let from_file = mesh.run(
        &args(&file).iter().map(String::as_str).collect::<Vec<_>>(),
        "",
    );
    assert_eq!(stdout(&from_file), from_stdin);
    let from_dash = mesh.run(
        &args(Path::new("-"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        MANIFESTS,
    );
    assert_eq!(stdout(&from_dash), from_stdin);
}

#[test]
fn injecting_twice_is_injecting_once_and_uninject_gives_back_the_input() {
    let mesh = Mesh::new();
    let once = stdout(&mesh.inject(MANIFESTS));
    let second = mesh.inject(&once);
    assert_eq!(stdout(&second), once);
    assert!(
        stderr(&second).contains("Deployment shop/orders skipped: already injected"),
        "{}",
        stderr(&second)
    );
    let back = stdout(&mesh.run(&["uninject"], &once));
    assert_eq!(documents(&back), documents(MANIFESTS));
    let file = mesh.file("injected.yaml", &once);
    let back_from_file = stdout(&mesh.run(&["uninject", file.to_str().unwrap()], ""));
    assert_eq!(back_from_file, back);
}

#[test]
fn flags_reach_the_injected_containers() {
    let mesh = Mesh::new();
    let ca = mesh.ca();
    let output = mesh.run(
        &[
            "inject",
            "--trust-anchor",
            ca.to_str().unwrap(),
            "--trust-domain",
            "prod.example",
            "--proxy-image",
            "registry.local/sidecar:dev",
            "--image-pull-policy",
            "IfNotPresent",
            "--control-plane",
            "cp.example:9000",
            "--proxy-uid",
            "1337",
            "--log-level",
            "debug",
        ],
        MANIFESTS,
    );
    let docs = documents(&stdout(&output));
    let init = &docs[0]["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(init[0]["image"], "registry.local/sidecar:dev");
    assert_eq!(init[1]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(init[0]["args"][2], "1337");
    assert_eq!(init[1]["env"][3]["value"], "debug");
    let bootstrap: serde_json::Value =
        serde_saphyr::from_str(init[1]["env"][4]["value"].as_str().unwrap()).unwrap();
    assert_eq!(bootstrap["trust_domain"], "prod.example");
    assert_eq!(bootstrap["control_plane"]["address"], "cp.example:9000");
}

#[test]
fn every_refused_input_exits_1_with_a_message_and_no_output() {
    let mesh = Mesh::new();
    let deployment = |template_spec: &str, annotations: &str| {
        format!(
            "kind: Deployment\nmetadata: {{ name: orders, namespace: shop }}\nspec:\n  template:\n    metadata:\n      labels: {{ app: orders }}\n      annotations: {{ {annotations} }}\n    spec:\n{template_spec}\n"
        )
    };
    let cases = [
        (
            "kind: Pod\nmetadata: { name: [x\n".to_owned(),
            "the input is not YAML",
        ),
        (
            format!("{MANIFESTS}---\n42\n"),
            "document 5 is a number, not a Kubernetes object",
        ),
        (
            "kind: Deployment\nmetadata: { name: orders, namespace: shop }\nspec: {}\n".to_owned(),
            "document 3: Deployment shop/orders: spec.template: missing",
        ),
        (
            deployment(
                "      containers: [{ name: app, ports: [{ containerPort: 15000 }] }]",
                "",
            ),
            "spec.template.spec.containers[0].ports[0]: containerPort 15000",
        ),
        (
            deployment("      containers: [{ name: mesh-proxy }]", ""),
            "spec.template.spec.containers[0].name",
        ),
        (
            deployment(
                "      containers: [{ name: app }]\n      volumes: [{ name: mesh-token }]",
                "",
            ),
            "spec.template.spec.volumes[0].name",
        ),
        (
            deployment(
                "      containers: [{ name: app }]",
                "mesh.local/app-port: \"http\"",
            ),
            "annotation mesh.local/app-port: \"http\"",
        ),
        (
            "kind: Pod\nmetadata: { name: p }\nspec: { containers: [{ name: app }] }\n".to_owned(),
            "Pod p: no mesh service name: set annotation mesh.local/service",
        ),
    ];
    for (input, message) in &cases {
        // A good document first: nothing of it may be written either.
        let input = format!("{MANIFESTS}---\n{input}");
        assert_refused(&mesh.inject(&input), message);
    }
    assert_refused(&mesh.run(&["uninject"], "a: [b\n"), "the input is not YAML");
}

#[test]
fn bad_flags_and_files_exit_1_naming_them() {
    let mesh = Mesh::new();
    let ca = mesh.ca();
    let ca = ca.to_str().unwrap();
    assert_refused(
        &mesh.run(&["inject", "--trust-anchor", "missing.pem"], MANIFESTS),
        "cannot read missing.pem",
    );
    let not_pem = mesh.file("not.pem", "hello\n");
    assert_refused(
        &mesh.run(
            &["inject", "--trust-anchor", not_pem.to_str().unwrap()],
            MANIFESTS,
        ),
        "no PEM certificate",
    );
    assert_refused(
        &mesh.run(&["inject", "--trust-anchor", ca, "missing.yaml"], ""),
        "cannot read missing.yaml",
    );
    assert_refused(
        &mesh.run(
            &["inject", "--trust-anchor", ca, "--control-plane", "nowhere"],
            MANIFESTS,
        ),
        "--control-plane \"nowhere\": is not HOST:PORT",
    );
    assert_refused(
        &mesh.run(&["uninject", "missing.yaml"], ""),
        "cannot read missing.yaml",
    );
    // Without the trust anchor, clap refuses (its usage error's code is 2).
    let output = mesh.run(&["inject"], MANIFESTS);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(
        stderr(&output).contains("--trust-anchor"),
        "{}",
        stderr(&output)
    );
}
