//! The injecting webhook of the real `control-plane` binary: its certificate and its answers to
//! plain HTTPS clients, and a real kube-apiserver calling it for the pods that opted in, then
//! failing closed when it is down.
//!
//! The API server tests need the binaries `scripts/build-kube.sh` builds: without them they
//! print why they skip, and under `CI=true` they fail naming the script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use mesh_control_plane::admin_client;
use mesh_kube_testkit::TestCluster;
use mesh_testkit::eventually;
use mesh_testkit::process::{KillOnDrop, Signal};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_control-plane");
const SERVICE_NAME: &str = "mesh-control-plane.mesh-system.svc";
const PROXY_IMAGE: &str = "registry.test/mesh/sidecar:test";
const SIDECAR_CONTROL_PLANE: &str = "control-plane.test:15010";

/// The `control-plane` binary with its webhook on a loopback port.
struct Running {
    process: KillOnDrop,
    admin: SocketAddr,
    webhook: SocketAddr,
}

impl Running {
    fn start(dirs: &Dirs, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("--config-dir")
            .arg(dirs.config.path())
            .arg("--state-dir")
            .arg(dirs.state())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--webhook", "127.0.0.1:0"])
            .args(extra)
            .env("MESH_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let process = KillOnDrop::new(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no start line within 30s");
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .parse()
                .unwrap()
        };
        Self {
            process,
            admin: field("admin="),
            webhook: field("webhook="),
        }
    }

    async fn stop(mut self) {
        self.process.signal(Signal::SIGTERM);
        let status = self.process.exit_within(Duration::from_secs(15)).await;
        assert!(status.success(), "{status}");
    }

    async fn metric(&self, outcome: &str) -> f64 {
        let (_, body) = admin_client::request(self.admin, Method::GET, "/metrics")
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let series = format!("mesh_control_plane_webhook_requests_total{{outcome=\"{outcome}\"}}");
        mesh_testkit::metrics::value(&text, &series)
            .unwrap_or_else(|| panic!("{series} is missing from /metrics:\n{text}"))
    }
}

/// A TLS client trusting only `ca_pem`, speaking only `version`.
fn client_tls(
    ca_pem: &[u8],
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem) {
        let cert: CertificateDer<'static> = cert.unwrap();
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One HTTPS request to the webhook, its server verified as `name`: the status, the body and
/// the certificate it served.
async fn request(
    webhook: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    name: &str,
    method: Method,
    body: impl Into<Bytes>,
) -> Result<(StatusCode, String, CertificateDer<'static>), std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(webhook).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri("/inject")
        .header(http::header::HOST, "webhook")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("no answer within 10s")
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    conn.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), served))
}

fn subject_alt_names(cert: &CertificateDer<'_>) -> String {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    format!("{:?}", san.value.general_names)
}

#[tokio::test]
async fn the_certificate_chains_to_ca_pem_names_the_hosts_and_follows_a_rotation() {
    // The root comes from --ca-dir, as from a mounted Secret.
    let secret = tempfile::tempdir().unwrap();
    let root = mesh_control_plane::ca::DevCa::generate(TD).unwrap();
    root.write_to(secret.path()).unwrap();
    let dirs = Dirs::new("trust_domain: mesh.local\n", &[]);
    let ca_dir = secret.path().to_str().unwrap();
    let cp = Running::start(
        &dirs,
        &[
            "--ca-dir",
            ca_dir,
            "--webhook-names",
            &format!("{SERVICE_NAME},127.0.0.1"),
        ],
    );
    assert_eq!(
        dirs.bundle_pem(),
        root.cert_pem().as_bytes(),
        "ca.pem is the imported root"
    );

    // Both names verify, over TLS 1.3 and 1.2; another name does not.
    let ca = dirs.bundle_pem();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for name in [SERVICE_NAME, "127.0.0.1"] {
            let (status, body, served) = request(
                cp.webhook,
                client_tls(&ca, version),
                name,
                Method::POST,
                "garbage",
            )
            .await
            .unwrap_or_else(|e| panic!("{name} over {version:?}: {e}"));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.contains("not an AdmissionReview"), "{body}");
            let names = subject_alt_names(&served);
            assert!(names.contains(SERVICE_NAME), "{names}");
            assert!(names.contains("IPAddress([127, 0, 0, 1])"), "{names}");
        }
    }
    let tls13 = client_tls(&ca, &rustls::version::TLS13);
    let stranger = request(
        cp.webhook,
        tls13.clone(),
        "other.example",
        Method::POST,
        "{}",
    )
    .await;
    assert!(stranger.is_err(), "a name not in --webhook-names verified");
    let (_, _, served) = request(cp.webhook, tls13.clone(), SERVICE_NAME, Method::POST, "{}")
        .await
        .unwrap();
    let (_, served) = x509_parser::parse_x509_certificate(&served).unwrap();
    let left = served
        .validity()
        .time_to_expiration()
        .expect("the certificate is valid now");
    assert!(
        (23..=24).contains(&left.whole_hours()),
        "lives a day: {left}"
    );

    // Only POST /inject; a body over the limit is refused without reading it all.
    let (status, body, _) = request(cp.webhook, tls13.clone(), SERVICE_NAME, Method::GET, "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let huge = vec![b' '; 4 * 1024 * 1024];
    let (status, body, _) = request(cp.webhook, tls13.clone(), SERVICE_NAME, Method::POST, huge)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("bytes"), "{body}");
    // Four garbage bodies, one `{}` and the oversized one; the GET is not a review at all.
    assert_eq!(cp.metric("bad_request").await, 6.0);

    // A rotation: the new root signs, and the webhook's next certificate comes from it.
    let token =
        std::fs::read_to_string(mesh_control_plane::admin_token_path(dirs.state())).unwrap();
    let admin_addr = cp.admin;
    let admin = |method: Method, path: String| {
        let token = token.clone();
        async move {
            let (status, body) =
                admin_client::request_with_token(admin_addr, method, &path, Some(&token))
                    .await
                    .unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            (status, body)
        }
    };
    let (status, body) = admin(Method::POST, "/ca/roots".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_root = body["id"].as_str().unwrap().to_owned();
    let (status, body) = admin(Method::POST, format!("/ca/signer/{new_root}?force=true")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let old_only = client_tls(root.cert_pem().as_bytes(), &rustls::version::TLS13);
    let both = client_tls(&dirs.bundle_pem(), &rustls::version::TLS13);
    let webhook = cp.webhook;
    eventually(
        "the webhook to serve a certificate from the new root",
        Duration::from_secs(10),
        || {
            let (old_only, both) = (old_only.clone(), both.clone());
            async move {
                let from_old = request(webhook, old_only, SERVICE_NAME, Method::POST, "{}").await;
                let from_new = request(webhook, both, SERVICE_NAME, Method::POST, "{}").await;
                (from_old.is_err() && from_new.is_ok()).then_some(())
            }
        },
    )
    .await;
    cp.stop().await;
}

// === against the API server ===

/// The cluster for `test`, or `None` when the binaries are missing outside CI.
async fn cluster(test: &str) -> Option<TestCluster> {
    let binaries = mesh_kube_testkit::binaries::available(test)?;
    Some(
        TestCluster::start(&binaries)
            .await
            .unwrap_or_else(|e| panic!("{test}: start the test cluster: {e}")),
    )
}

/// A namespace, labelled as given, with the `default` ServiceAccount pods need (no controller
/// makes it here).
async fn namespace(client: &kube::Client, name: &str, labels: Value) {
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &account)
        .await
        .unwrap_or_else(|e| panic!("create {name}/default: {e}"));
}

/// The webhook configuration of docs/kubernetes.md, calling `url` instead of the Service.
fn webhook_configuration(url: &str, ca_pem: &[u8]) -> MutatingWebhookConfiguration {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let webhook = |name: &str, namespace_in: &str, object_in: &str| {
        let (namespace_operator, object_operator) = (namespace_in, object_in);
        json!({
            "name": name,
            "clientConfig": {"url": url, "caBundle": ca_bundle},
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            }],
            "namespaceSelector": {"matchExpressions": [
                {"key": "mesh.local/inject", "operator": namespace_operator, "values": ["enabled"]},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                 "values": ["mesh-system", "kube-system"]},
            ]},
            "objectSelector": {"matchExpressions": [
                {"key": "mesh.local/inject", "operator": object_operator,
                 "values": [if object_operator == "In" { "enabled" } else { "disabled" }]},
            ]},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "failurePolicy": "Fail",
        })
    };
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "mesh-sidecar-injector"},
        "webhooks": [
            webhook("namespace.inject.mesh.local", "In", "NotIn"),
            webhook("pod.inject.mesh.local", "NotIn", "In"),
        ],
    }))
    .unwrap()
}

fn pod(name: &str, labels: Value, port: u16) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{
            "name": "orders",
            "image": "registry.test/orders:1",
            "ports": [{"containerPort": port}],
        }]},
    }))
    .unwrap()
}

fn init_containers(pod: &Pod) -> Vec<(String, Option<String>)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|c| {
            c.iter()
                .map(|c| (c.name.clone(), c.restart_policy.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn injected_annotation(pod: &Pod) -> Option<&String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("mesh.local/injected"))
}

/// The API server's answer to a refused request: its HTTP status code and message.
fn refusal(result: Result<Pod, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

#[tokio::test]
async fn the_api_server_injects_opted_in_pods_through_the_webhook_and_fails_closed_without_it() {
    let test =
        "the_api_server_injects_opted_in_pods_through_the_webhook_and_fails_closed_without_it";
    let Some(cluster) = cluster(test).await else {
        return;
    };
    let dirs = Dirs::new("trust_domain: mesh.local\n", &[]);
    let cp = Running::start(
        &dirs,
        &[
            "--webhook-names",
            &format!("{SERVICE_NAME},127.0.0.1"),
            "--proxy-image",
            PROXY_IMAGE,
            "--sidecar-control-plane",
            SIDECAR_CONTROL_PLANE,
        ],
    );
    let admin = cluster.admin().unwrap();
    let url = format!("https://127.0.0.1:{}/inject", cp.webhook.port());
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .create(
            &PostParams::default(),
            &webhook_configuration(&url, &dirs.bundle_pem()),
        )
        .await
        .unwrap();
    namespace(&admin, "shop", json!({"mesh.local/inject": "enabled"})).await;
    namespace(&admin, "plain", json!({})).await;
    let shop = Api::<Pod>::namespaced(admin.clone(), "shop");
    let plain = Api::<Pod>::namespaced(admin.clone(), "plain");

    // The API server picks the configuration up from its watch: dry runs (which call webhooks
    // without side effects) until a pod comes back injected.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually(
        "the API server to call the webhook",
        Duration::from_secs(30),
        || {
            let (shop, dry_run) = (shop.clone(), dry_run.clone());
            async move {
                let pod = shop
                    .create(&dry_run, &pod("probe", json!({"app": "orders"}), 8080))
                    .await
                    .ok()?;
                (!init_containers(&pod).is_empty()).then_some(())
            }
        },
    )
    .await;

    // In the opted-in namespace: injected, exactly as design says.
    let orders = shop
        .create(
            &PostParams::default(),
            &pod("orders", json!({"app": "orders"}), 8080),
        )
        .await
        .unwrap();
    assert_eq!(
        init_containers(&orders),
        [
            ("mesh-init".to_owned(), None),
            ("mesh-proxy".to_owned(), Some("Always".to_owned())),
        ]
    );
    assert!(
        injected_annotation(&orders).is_some(),
        "{:?}",
        orders.metadata
    );
    let stored = shop.get("orders").await.unwrap();
    assert_eq!(init_containers(&stored), init_containers(&orders));
    let spec = stored.spec.unwrap();
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(proxy.image.as_deref(), Some(PROXY_IMAGE));
    let bootstrap = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "MESH_SIDECAR_BOOTSTRAP")
        .and_then(|e| e.value.clone())
        .expect("the bootstrap variable");
    assert!(bootstrap.contains(SIDECAR_CONTROL_PLANE), "{bootstrap}");
    assert!(bootstrap.contains("service: \"orders\""), "{bootstrap}");
    let anchor = String::from_utf8(dirs.bundle_pem()).unwrap();
    let anchor_line = anchor.lines().nth(1).unwrap();
    assert!(
        bootstrap.contains(anchor_line),
        "the trust anchor is ca.pem: {bootstrap}"
    );
    assert!(
        spec.volumes
            .iter()
            .flatten()
            .any(|v| v.name == "mesh-token"),
        "the token volume"
    );

    // Opted out there: untouched (the webhook is not even called).
    let quiet = shop
        .create(
            &PostParams::default(),
            &pod(
                "quiet",
                json!({"app": "orders", "mesh.local/inject": "disabled"}),
                8080,
            ),
        )
        .await
        .unwrap();
    assert!(init_containers(&quiet).is_empty());
    assert!(injected_annotation(&quiet).is_none());

    // A plain namespace: untouched, unless the pod opts in.
    let plain_pod = plain
        .create(
            &PostParams::default(),
            &pod("plain", json!({"app": "orders"}), 8080),
        )
        .await
        .unwrap();
    assert!(init_containers(&plain_pod).is_empty());
    assert!(injected_annotation(&plain_pod).is_none());
    let opted_in = plain
        .create(
            &PostParams::default(),
            &pod(
                "opted-in",
                json!({"app": "orders", "mesh.local/inject": "enabled"}),
                8080,
            ),
        )
        .await
        .unwrap();
    assert_eq!(init_containers(&opted_in).len(), 2);
    assert!(injected_annotation(&opted_in).is_some());

    // A pod the mesh cannot take (its app listens on the sidecar's inbound port): refused, and
    // the reason reaches the client.
    let (code, message) = refusal(
        shop.create(
            &PostParams::default(),
            &pod("clash", json!({"app": "orders"}), 15006),
        )
        .await,
    );
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("namespace.inject.mesh.local") && message.contains("denied"),
        "{message}"
    );
    assert!(message.contains("15006"), "{message}");
    assert!(message.contains("Pod shop/clash"), "{message}");
    assert!(cp.metric("injected").await >= 3.0);
    assert!(cp.metric("refused").await >= 1.0);

    // Webhook down: pods that never reach it are admitted, opted-in ones refused (Fail).
    cp.stop().await;
    let admitted = plain
        .create(
            &PostParams::default(),
            &pod("plain-later", json!({"app": "orders"}), 8080),
        )
        .await
        .unwrap();
    assert!(init_containers(&admitted).is_empty());
    let (code, message) = refusal(
        shop.create(
            &PostParams::default(),
            &pod("while-down", json!({"app": "orders"}), 8080),
        )
        .await,
    );
    assert!(code >= 500, "{code}: {message}");
    assert!(
        message.contains("failed calling webhook")
            && message.contains("namespace.inject.mesh.local"),
        "{message}"
    );
    let (_, message) = refusal(
        plain
            .create(
                &PostParams::default(),
                &pod(
                    "opted-in-while-down",
                    json!({"app": "orders", "mesh.local/inject": "enabled"}),
                    8080,
                ),
            )
            .await,
    );
    assert!(message.contains("pod.inject.mesh.local"), "{message}");
}
