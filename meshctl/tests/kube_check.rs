//! `meshctl check` against a real kube-apiserver (mesh-kube-testkit) where `meshctl install`
//! was applied. No pods run there, so the test does what the controllers and kubelet would:
//! it sets the Deployment's and pods' status through the status subresource. The webhook is
//! the real `control-plane --webhook` on loopback, which the API server calls at its URL. Each
//! failure is made for real (nothing listening at the webhook's URL, a binding deleted, a user
//! without rights, a replica not ready, a proxy not ready) and must be named with its fix.
//!
//! Needs the binaries `scripts/build-kube.sh` builds: without them a test prints why it skips,
//! and under `CI=true` it fails naming the script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kube_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube_common::{apply_all, cluster, install, meshctl_code};
use mesh_kube_testkit::TestCluster;
use serde_json::json;

/// How long a change may take to show in check's output: the API server's authorizer and
/// admission read from watch caches.
const SETTLE: Duration = Duration::from_secs(30);

/// A cluster with the install applied and its Deployment marked ready.
struct Installed {
    cluster: TestCluster,
    admin: kube::Client,
    kubeconfig: PathBuf,
    webhook_url: String,
}

async fn installed(test: &str) -> Option<Installed> {
    let cluster = cluster(test).await?;
    let admin = cluster.admin().unwrap();
    let kubeconfig = cluster.admin_kubeconfig().unwrap();
    // Nothing listens there: the API server's call to the webhook is refused.
    let webhook_url = format!("https://{}/inject", mesh_testkit::free_port());
    apply_all(&admin, &install(&["--webhook-url", &webhook_url]).await).await;
    // No controller manager: the dry-run pod's namespace needs its ServiceAccount made.
    create_service_account(&admin, "default").await;
    set_ready_replicas(&admin, 1).await;
    Some(Installed {
        cluster,
        admin,
        kubeconfig,
        webhook_url,
    })
}

async fn create_service_account(admin: &kube::Client, namespace: &str) {
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "default" } })).unwrap(),
        )
        .await
        .unwrap();
}

/// What the Deployment controller and kubelet would report.
async fn set_ready_replicas(admin: &kube::Client, ready: i32) {
    Api::<Deployment>::namespaced(admin.clone(), "mesh-system")
        .patch_status(
            "mesh-control-plane",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "status": {
                    "observedGeneration": 1,
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                }
            })),
        )
        .await
        .unwrap();
}

/// Runs `meshctl check` until `until` holds for its output (at most [`SETTLE`]); returns its
/// exit code and output.
async fn check_until(kubeconfig: &Path, until: impl Fn(&str) -> bool) -> (Option<i32>, String) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (code, stdout, stderr) =
            meshctl_code(&["check", "--kubeconfig", kubeconfig.to_str().unwrap()]).await;
        if until(&stdout) {
            return (code, stdout);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "meshctl check did not show the expected state within {SETTLE:?}:\n{stdout}\n{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The line of `output` that starts with `mark` and names `title`, and the lines under it
/// (a failure's reason and fix).
fn entry<'a>(output: &'a str, mark: &str, title: &str) -> Option<String> {
    let lines: Vec<&'a str> = output.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(mark) && l.contains(title))?;
    let mut text = lines[at].to_owned();
    for line in &lines[at + 1..] {
        if !line.starts_with("    ") {
            break;
        }
        text.push('\n');
        text.push_str(line);
    }
    Some(text)
}

fn has(output: &str, mark: &str, title: &str) -> bool {
    entry(output, mark, title).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_failure_with_its_fix() {
    let Some(Installed {
        cluster,
        admin,
        kubeconfig,
        webhook_url,
    }) = installed("check_names_each_failure_with_its_fix").await
    else {
        return;
    };

    // Everything is in place but the webhook, which nothing serves.
    let (code, out) = check_until(&kubeconfig, |out| {
        has(out, "ok", "the control plane has the rights it needs")
    })
    .await;
    assert_eq!(code, Some(1), "a failed check exits 1:\n{out}");
    for title in [
        "the API server is reachable",
        "its version is 1.29 or newer (v1.37.2)",
        "the caller may do what check needs",
        "namespace mesh-system exists",
        "the control plane's ServiceAccount exists",
        "the policy CRD is established",
        "the control plane is ready (1 of 1 replicas ready)",
        "the webhook is registered",
        "CA healthy",
        "every injected pod's proxy is ready (no injected pods)",
    ] {
        assert!(has(&out, "ok", title), "{title}:\n{out}");
    }
    let webhook = entry(&out, "FAIL", "the webhook injects pods").unwrap();
    assert!(webhook.contains("the webhook is unreachable"), "{webhook}");
    let host_port = webhook_url
        .trim_start_matches("https://")
        .trim_end_matches("/inject");
    assert!(
        webhook.contains(host_port),
        "the API server's error names where it called: {webhook}"
    );
    assert!(
        webhook.contains("fix: the API server cannot reach the webhook"),
        "{webhook}"
    );
    assert!(out.ends_with("1 check failed\n"), "{out}");

    // An injected pod whose proxy is not ready (stored without the webhook: its namespace and
    // it did not opt in, it only carries what injection would have added).
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "shop" } })).unwrap(),
        )
        .await
        .unwrap();
    create_service_account(&admin, "shop").await;
    let pods = Api::<Pod>::namespaced(admin.clone(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "orders-1",
            "annotations": { "mesh.local/injected": env!("CARGO_PKG_VERSION") },
        },
        "spec": {
            "initContainers": [{
                "name": "mesh-proxy",
                "image": "ghcr.io/mesh-rs/sidecar:test",
                "restartPolicy": "Always",
            }],
            "containers": [{ "name": "app", "image": "example.test/orders:1" }],
        },
    }))
    .unwrap();
    mesh_testkit::eventually("the pod to be admitted", SETTLE, || {
        let pods = pods.clone();
        let pod = pod.clone();
        async move { pods.create(&PostParams::default(), &pod).await }
    })
    .await;
    let proxy_status = |ready: bool| {
        json!({
            "status": {
                "initContainerStatuses": [{
                    "name": "mesh-proxy",
                    "ready": ready,
                    "started": true,
                    "restartCount": 0,
                    "image": "ghcr.io/mesh-rs/sidecar:test",
                    "imageID": "",
                    "state": { "running": { "startedAt": "2026-01-01T00:00:00Z" } },
                }]
            }
        })
    };
    pods.patch_status(
        "orders-1",
        &PatchParams::default(),
        &Patch::Strategic(proxy_status(false)),
    )
    .await
    .unwrap();
    let (_, out) = check_until(&kubeconfig, |out| {
        has(out, "FAIL", "every injected pod's proxy is ready")
    })
    .await;
    let pods_entry = entry(&out, "FAIL", "every injected pod's proxy is ready").unwrap();
    assert!(
        pods_entry.contains("1 of 1 injected pods")
            && pods_entry.contains("shop/orders-1 (mesh-proxy not ready)"),
        "{pods_entry}"
    );
    assert!(pods_entry.contains("fix: see why: kubectl"), "{pods_entry}");
    pods.patch_status(
        "orders-1",
        &PatchParams::default(),
        &Patch::Strategic(proxy_status(true)),
    )
    .await
    .unwrap();
    let (_, out) = check_until(&kubeconfig, |out| {
        has(
            out,
            "ok",
            "every injected pod's proxy is ready (1 injected pod)",
        )
    })
    .await;
    assert!(has(&out, "FAIL", "the webhook injects pods"), "{out}");

    // The control plane's replica is no longer ready: the webhook is not even tried.
    set_ready_replicas(&admin, 0).await;
    let (code, out) = check_until(&kubeconfig, |out| {
        has(out, "FAIL", "the control plane is ready")
    })
    .await;
    assert_eq!(code, Some(1));
    let ready = entry(&out, "FAIL", "the control plane is ready").unwrap();
    assert!(ready.contains("0 of 1 replicas ready"), "{ready}");
    assert!(
        ready.contains("kubectl -n mesh-system describe deployment mesh-control-plane"),
        "{ready}"
    );
    assert!(
        has(
            &out,
            "skip",
            "the webhook injects pods (skipped: the control plane is not ready)"
        ),
        "{out}"
    );
    set_ready_replicas(&admin, 1).await;

    // The control plane's cluster-wide rights are gone.
    Api::<ClusterRoleBinding>::all(admin.clone())
        .delete("mesh-control-plane", &DeleteParams::default())
        .await
        .unwrap();
    let (code, out) = check_until(&kubeconfig, |out| {
        has(out, "FAIL", "the control plane has the rights it needs")
    })
    .await;
    assert_eq!(code, Some(1));
    let rights = entry(&out, "FAIL", "the control plane has the rights it needs").unwrap();
    assert!(
        rights
            .contains("system:serviceaccount:mesh-system:mesh-control-plane may not: get services"),
        "{rights}"
    );
    assert!(
        rights.contains("create tokenreviews.authentication.k8s.io"),
        "{rights}"
    );
    assert!(
        !rights.contains("leases"),
        "the Role's rights are still there: {rights}"
    );
    assert!(
        rights.contains("fix: its ClusterRole/Role or their bindings"),
        "{rights}"
    );
    assert!(
        rights.contains("meshctl install --ca-cert ca.pem --ca-key ca-key.pem"),
        "{rights}"
    );

    // One webhook trusts another root than the mesh's.
    let stranger = mesh_control_plane::ca::DevCa::generate("mesh.local").unwrap();
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .patch(
            "mesh-sidecar-injector",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "webhooks": [{
                    "name": "pod.inject.mesh.local",
                    "clientConfig": {
                        "caBundle": base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            stranger.cert_pem(),
                        ),
                    },
                }]
            })),
        )
        .await
        .unwrap();
    let (_, out) = check_until(&kubeconfig, |out| has(out, "FAIL", "CA healthy")).await;
    let ca = entry(&out, "FAIL", "CA healthy").unwrap();
    assert!(
        ca.contains("the caBundle of webhook pod.inject.mesh.local does not hold the mesh's root"),
        "{ca}"
    );
    assert!(
        ca.contains("fix: re-apply the install, keeping the mesh's root"),
        "{ca}"
    );
    drop(cluster);
}

/// The `control-plane` binary, with its webhook on a loopback port.
struct ControlPlane {
    _process: mesh_testkit::process::KillOnDrop,
    webhook: String,
}

/// Starts the control plane beside meshctl's binary, its root taken from `ca_dir` as from the
/// mounted Secret, its webhook certificate naming 127.0.0.1.
fn start_control_plane(config: &Path, state: &Path, ca_dir: &Path) -> ControlPlane {
    use std::io::BufRead as _;

    let binary = Path::new(env!("CARGO_BIN_EXE_meshctl"))
        .parent()
        .unwrap()
        .join("control-plane");
    assert!(
        binary.is_file(),
        "{} is missing: build it first (cargo build -p mesh-control-plane)",
        binary.display()
    );
    let mut child = std::process::Command::new(binary)
        .arg("--config-dir")
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--webhook", "127.0.0.1:0", "--webhook-names", "127.0.0.1"])
        .arg("--ca-dir")
        .arg(ca_dir)
        .args(["--proxy-image", "registry.test/mesh/sidecar:test"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = mesh_testkit::process::KillOnDrop::new(child);
    // Its first line says where it listens, once it does.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the control plane's start line within 30 s");
    let webhook = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("webhook="))
        .unwrap_or_else(|| panic!("no webhook= in {line:?}"))
        .to_owned();
    ControlPlane {
        _process: process,
        webhook,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_against_the_control_planes_webhook_and_follows_an_injected_pod() {
    let Some(cluster) =
        cluster("check_passes_against_the_control_planes_webhook_and_follows_an_injected_pod")
            .await
    else {
        return;
    };
    let admin = cluster.admin().unwrap();
    let kubeconfig = cluster.admin_kubeconfig().unwrap();

    // One root for the Secret, the webhook configuration and the control plane (--ca-dir).
    let secret = tempfile::tempdir().unwrap();
    mesh_control_plane::ca::DevCa::generate("mesh.local")
        .unwrap()
        .write_to(secret.path())
        .unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("mesh.yaml"),
        "trust_domain: mesh.local\n",
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane(config.path(), state.path(), secret.path());

    let webhook_url = format!("https://{}/inject", control_plane.webhook);
    let cert = secret.path().join("ca.pem");
    let key = secret.path().join("ca-key.pem");
    let objects = install(&[
        "--webhook-url",
        &webhook_url,
        "--ca-cert",
        cert.to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
    ])
    .await;
    apply_all(&admin, &objects).await;
    create_service_account(&admin, "default").await;
    set_ready_replicas(&admin, 1).await;

    let (code, out) = check_until(&kubeconfig, |out| out.ends_with("all checks passed\n")).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        has(
            &out,
            "ok",
            "the webhook injects pods (a dry-run pod in default got mesh-proxy)"
        ),
        "{out}"
    );

    // A pod that opts in is injected by the webhook for real; until the kubelet reports its
    // proxy, check names it.
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "shop" } })).unwrap(),
        )
        .await
        .unwrap();
    create_service_account(&admin, "shop").await;
    let pods = Api::<Pod>::namespaced(admin.clone(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "orders-1",
            "labels": { "mesh.local/inject": "enabled", "app": "orders" },
        },
        "spec": { "containers": [{ "name": "app", "image": "example.test/orders:1" }] },
    }))
    .unwrap();
    let created = mesh_testkit::eventually("the pod to be admitted", SETTLE, || {
        let pods = pods.clone();
        let pod = pod.clone();
        async move { pods.create(&PostParams::default(), &pod).await }
    })
    .await;
    assert!(
        created
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("mesh.local/injected"),
        "the webhook injected it"
    );
    let (code, out) = check_until(&kubeconfig, |out| {
        has(out, "FAIL", "every injected pod's proxy is ready")
    })
    .await;
    assert_eq!(code, Some(1));
    let entry = entry(&out, "FAIL", "every injected pod's proxy is ready").unwrap();
    assert!(
        entry.contains("shop/orders-1 (mesh-proxy has no status yet)"),
        "{entry}"
    );
    pods.patch_status(
        "orders-1",
        &PatchParams::default(),
        &Patch::Strategic(json!({
            "status": {
                "initContainerStatuses": [{
                    "name": "mesh-proxy", "ready": true, "started": true, "restartCount": 0,
                    "image": "registry.test/mesh/sidecar:test", "imageID": "",
                    "state": { "running": { "startedAt": "2026-01-01T00:00:00Z" } },
                }]
            }
        })),
    )
    .await
    .unwrap();
    let (code, out) = check_until(&kubeconfig, |out| out.ends_with("all checks passed\n")).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        has(
            &out,
            "ok",
            "every injected pod's proxy is ready (1 injected pod)"
        ),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_rights_is_told_which_and_how_to_grant_them() {
    let Some(Installed { cluster, .. }) =
        installed("a_caller_without_rights_is_told_which_and_how_to_grant_them").await
    else {
        return;
    };
    let alice = cluster.kubeconfig_as("alice", &["developers"]).unwrap();
    let (code, stdout, stderr) =
        meshctl_code(&["check", "--kubeconfig", alice.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        has(&stdout, "ok", "the API server is reachable"),
        "{stdout}"
    );
    let rights = entry(&stdout, "FAIL", "the caller may do what check needs").unwrap();
    assert!(
        rights.contains(
            "alice may not: get namespaces; get serviceaccounts in namespace mesh-system"
        ),
        "names the user and each missing right: {rights}"
    );
    assert!(
        rights.contains("get secrets \"mesh-ca\" in namespace mesh-system"),
        "{rights}"
    );
    assert!(
        rights.contains("create pods in namespace default"),
        "{rights}"
    );
    assert!(
        rights.contains(
            "kubectl create clusterrole mesh-check-list --verb=list --resource=pods"
        ) && rights.contains(
            "kubectl create clusterrolebinding mesh-check-list --clusterrole=mesh-check-list --user=alice"
        ),
        "{rights}"
    );
    for title in [
        "namespace mesh-system exists",
        "the control plane is ready",
        "the webhook injects pods",
        "every injected pod's proxy is ready",
    ] {
        assert!(
            has(
                &stdout,
                "skip",
                &format!("{title} (skipped: the caller lacks rights check needs)")
            ),
            "{title}: {stdout}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_api_server_fails_the_first_check_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let address = mesh_testkit::free_port();
    std::fs::write(
        &kubeconfig,
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "gone", "cluster": { "server": format!("https://{address}") } }],
            "users": [{ "name": "nobody", "user": { "token": "not-a-token" } }],
            "contexts": [{ "name": "gone", "context": { "cluster": "gone", "user": "nobody" } }],
            "current-context": "gone",
        })
        .to_string(),
    )
    .unwrap();
    let (code, stdout, stderr) =
        meshctl_code(&["check", "--kubeconfig", kubeconfig.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let reachable = entry(&stdout, "FAIL", "the API server is reachable").unwrap();
    assert!(
        reachable.contains("fix: check that the cluster is up"),
        "{reachable}"
    );
    assert!(
        has(
            &stdout,
            "skip",
            "the webhook injects pods (skipped: the API server is not reachable)"
        ),
        "{stdout}"
    );

    let (code, _, stderr) = meshctl_code(&[
        "check",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--context",
        "absent",
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("context absent"), "{stderr}");
}
