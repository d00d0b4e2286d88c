//! Test harness: configuration directories, an in-process control plane on port 0, a sidecar-like
//! client (key and CSR made here, SPIFFE-verified TLS), and bounded waits on watch streams.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod kube_mesh;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_api::proto::v1;
use mesh_control_plane::client::{self, Workload};
use mesh_control_plane::{ControlPlane, Listeners, Options, admin_client};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub const TD: &str = "mesh.local";

/// A configuration directory and a state directory that outlive restarts.
pub struct Dirs {
    pub config: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

impl Dirs {
    pub fn new(mesh_yaml: &str, services: &[(&str, &str)]) -> Self {
        let dirs = Self {
            config: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        };
        std::fs::write(dirs.config.path().join("mesh.yaml"), mesh_yaml).unwrap();
        std::fs::create_dir_all(dirs.config.path().join("services")).unwrap();
        for (name, yaml) in services {
            dirs.write_service(name, yaml);
        }
        dirs
    }

    /// Writes services/<file>.yaml atomically, as a config management tool would.
    pub fn write_service(&self, file: &str, yaml: &str) {
        let dir = self.config.path().join("services");
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, dir.join(format!("{file}.yaml"))).unwrap();
    }

    pub fn state(&self) -> &Path {
        self.state.path()
    }

    pub fn options(&self) -> Options {
        let mut options = Options::new(self.config.path(), self.state.path());
        options.config_poll = Duration::from_millis(100);
        options
    }

    pub async fn start(&self) -> ControlPlane {
        mesh_control_plane::start(self.options(), listeners().await)
            .await
            .unwrap()
    }

    pub fn token(&self, service: &str) -> String {
        std::fs::read_to_string(self.state().join("tokens").join(service))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn bundle_pem(&self) -> Vec<u8> {
        std::fs::read(self.state().join("ca.pem")).unwrap()
    }
}

pub async fn listeners() -> Listeners {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Listeners::bind(any, any).await.unwrap()
}

/// A channel without a client certificate, verifying the control plane against ca.pem.
pub async fn anonymous(cp: &ControlPlane, dirs: &Dirs) -> Channel {
    let roots = client::roots_from_pem(&dirs.bundle_pem()).unwrap();
    client::connect(cp.api_addr(), roots, TD, None)
        .await
        .unwrap()
}

/// TLS to the control plane of `dirs` as its sidecars speak it, with `client_cert` if given.
pub fn client_tls(
    dirs: &Dirs,
    client_cert: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Arc<rustls::ClientConfig> {
    let roots = client::roots_from_pem(&dirs.bundle_pem()).unwrap();
    mesh_api::channel::client_config(roots, TD, client_cert).unwrap()
}

/// A TCP connection to `to` from the loopback address `from`.
pub async fn tcp_from(from: IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// A TLS connection to the control plane's API from `from`.
pub async fn tls_from(
    from: IpAddr,
    cp: &ControlPlane,
    tls: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tcp_from(from, cp.api_addr()).await;
    let name = rustls::pki_types::ServerName::try_from("control-plane").unwrap();
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A gRPC channel to the control plane whose connections come from `from`.
pub async fn channel_from(
    from: IpAddr,
    cp: &ControlPlane,
    tls: Arc<rustls::ClientConfig>,
) -> Channel {
    try_channel_from(from, cp, tls).await.unwrap()
}

/// As [`channel_from`]; an error when the connection fails.
pub async fn try_channel_from(
    from: IpAddr,
    cp: &ControlPlane,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let addr = cp.api_addr();
    let connector = tower::service_fn(move |_: http::Uri| {
        let tls = tls.clone();
        async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from, 0))?;
            let tcp = socket.connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("control-plane").unwrap();
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_static("http://control-plane")
        .connect_with_connector(connector)
        .await
}

/// The control plane's `mesh_control_plane_limited_total` for one limit.
pub async fn limited(cp: &ControlPlane, limit: &str) -> f64 {
    let (_, body) = admin_client::request(cp.admin_addr(), Method::GET, "/metrics")
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let series = format!("mesh_control_plane_limited_total{{limit=\"{limit}\"}}");
    mesh_testkit::metrics::value(&text, &series)
        .unwrap_or_else(|| panic!("{series} is missing from /metrics"))
}

/// A sidecar of `service`: certified with its join token, then connected with that certificate.
pub struct Sidecar {
    pub service: String,
    pub workload: Workload,
    pub channel: Channel,
}

impl Sidecar {
    pub async fn new(cp: &ControlPlane, dirs: &Dirs, service: &str) -> Self {
        let workload = client::certify(
            anonymous(cp, dirs).await,
            TD,
            "default",
            service,
            &dirs.token(service),
        )
        .await
        .unwrap();
        let roots = client::roots_from_pem(&dirs.bundle_pem()).unwrap();
        let channel = client::connect(cp.api_addr(), roots, TD, Some(workload.client_cert()))
            .await
            .unwrap();
        Self {
            service: service.to_owned(),
            workload,
            channel,
        }
    }

    /// A sidecar whose connections (Certify, then the rest) come from the loopback address
    /// `from`.
    pub async fn from(cp: &ControlPlane, dirs: &Dirs, service: &str, from: IpAddr) -> Self {
        let workload = client::certify(
            channel_from(from, cp, client_tls(dirs, None)).await,
            TD,
            "default",
            service,
            &dirs.token(service),
        )
        .await
        .unwrap();
        let tls = client_tls(dirs, Some(workload.client_cert()));
        let channel = channel_from(from, cp, tls).await;
        Self {
            service: service.to_owned(),
            workload,
            channel,
        }
    }

    /// Registers an instance; the status when refused.
    pub async fn try_register(
        &self,
        instance_id: &str,
        address: &str,
    ) -> Result<(), tonic::Status> {
        self.registry()
            .register(v1::RegisterRequest {
                instance: Some(v1::Instance {
                    instance_id: instance_id.into(),
                    service: self.service.clone(),
                    address: address.into(),
                    ..Default::default()
                }),
            })
            .await
            .map(drop)
    }

    pub fn registry(&self) -> v1::registry_client::RegistryClient<Channel> {
        v1::registry_client::RegistryClient::new(self.channel.clone())
    }

    pub async fn register(&self, instance_id: &str, address: &str, version: &str) {
        self.registry()
            .register(v1::RegisterRequest {
                instance: Some(v1::Instance {
                    instance_id: instance_id.into(),
                    service: self.service.clone(),
                    address: address.into(),
                    version: version.into(),
                    app_down: String::new(),
                    admin_address: String::new(),
                }),
            })
            .await
            .unwrap();
    }

    pub async fn heartbeat(&self, beat: v1::HeartbeatRequest) -> bool {
        self.registry()
            .heartbeat(beat)
            .await
            .unwrap()
            .into_inner()
            .known
    }

    pub async fn watch(&self, instance_id: &str) -> Watcher {
        self.watch_from(instance_id, 0).await
    }

    /// A watch from a sidecar that already runs on snapshot `version`.
    pub async fn watch_from(&self, instance_id: &str, version: u64) -> Watcher {
        let (tx, rx) = mpsc::channel(16);
        tx.send(v1::WatchRequest {
            instance_id: instance_id.into(),
            ack_version: version,
            ..Default::default()
        })
        .await
        .unwrap();
        let stream = v1::discovery_client::DiscoveryClient::new(self.channel.clone())
            .watch(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Watcher {
            tx,
            stream,
            instance_id: instance_id.into(),
        }
    }
}

/// One Discovery.Watch stream.
pub struct Watcher {
    pub tx: mpsc::Sender<v1::WatchRequest>,
    pub stream: tonic::Streaming<v1::Snapshot>,
    pub instance_id: String,
}

impl Watcher {
    /// The next snapshot, or `None` if none arrives within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<v1::Snapshot> {
        match tokio::time::timeout(within, self.stream.message()).await {
            Ok(message) => Some(message.unwrap().expect("stream ended")),
            Err(_) => None,
        }
    }

    /// Waits (bounded) for a snapshot that satisfies `ok`, skipping others.
    pub async fn until(
        &mut self,
        within: Duration,
        mut ok: impl FnMut(&v1::Snapshot) -> bool,
    ) -> v1::Snapshot {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let snapshot = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no matching snapshot within {within:?}"));
            if ok(&snapshot) {
                return snapshot;
            }
        }
    }

    pub async fn ack(&self, version: u64) {
        self.tx
            .send(v1::WatchRequest {
                instance_id: self.instance_id.clone(),
                ack_version: version,
                error: String::new(),
            })
            .await
            .unwrap();
    }
}

/// An admin request; the body as JSON when it is JSON, else as a string value.
pub async fn admin(
    cp: &ControlPlane,
    method: Method,
    path: &str,
) -> (StatusCode, serde_json::Value) {
    let token = std::fs::read_to_string(cp.admin_token_path()).unwrap();
    let (status, body) =
        admin_client::request_with_token(cp.admin_addr(), method, path, Some(&token))
            .await
            .unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    (status, value)
}

pub fn policy_timeout(snapshot: &v1::Snapshot, destination: &str) -> Option<u64> {
    snapshot
        .destinations
        .iter()
        .find(|d| d.name == destination)
        .and_then(|d| d.policy.as_ref())
        .map(|p| p.timeout_ms)
}

pub fn endpoints(snapshot: &v1::Snapshot, destination: &str) -> Vec<String> {
    snapshot
        .destinations
        .iter()
        .find(|d| d.name == destination)
        .map(|d| {
            d.backends
                .iter()
                .flat_map(|b| b.endpoints.iter().map(|e| e.address.clone()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn path_in(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
}

/// A binary of the workspace (`sidecar`, `echo-app`), built beside the control plane's.
pub fn workspace_binary(name: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_control-plane")).with_file_name(name);
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo nextest run --workspace`, which builds it",
        bin.display()
    );
    bin
}

/// Whether `chain` (leaf first) is signed up to one of `roots`, valid now.
pub fn verify_chain(chain: &[Vec<u8>], roots: &rustls::RootCertStore) -> Result<(), rustls::Error> {
    use rustls::pki_types::{CertificateDer, UnixTime};
    let leaf = CertificateDer::from(chain[0].clone());
    let intermediates: Vec<_> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &rustls::server::ParsedCertificate::try_from(&leaf)?,
        roots,
        &intermediates,
        UnixTime::now(),
        algorithms.all,
    )
}

/// `program` run inside network namespace `host`, logging warnings to the test's output.
pub fn spawn(
    host: &mesh_testkit::netns::Host,
    program: &Path,
    args: &[&str],
) -> mesh_testkit::process::KillOnDrop {
    let child = host
        .command(program)
        .args(args)
        .env("MESH_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {} in {}: {e}", program.display(), host.name));
    mesh_testkit::process::KillOnDrop::new(child)
}
