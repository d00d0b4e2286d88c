//! The mesh under test: a temporary configuration directory, the control plane started
//! in-process on port-0 listeners, and a thread that notes when it publishes a new version.
//!
//! Services: `backend`, and `frontend-0` … `frontend-{F-1}`, each calling `backend`. A change
//! of `backend`'s timeout therefore changes the snapshot of every frontend, so every watcher
//! receives it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_control_plane::client::{self, Workload};
use mesh_control_plane::{ControlPlane, Listeners, Options};
use rustls::RootCertStore;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::BenchError;

/// The trust domain of the benchmark mesh.
pub(crate) const TRUST_DOMAIN: &str = "mesh.local";
/// The namespace of the benchmark mesh.
pub(crate) const NAMESPACE: &str = "default";
/// The service every frontend calls, whose policy the benchmark changes.
pub(crate) const BACKEND: &str = "backend";
/// `backend`'s timeout before the first change; change `r` sets this plus `r` ms.
pub(crate) const FIRST_TIMEOUT_MS: u64 = 2_000;

/// The name of frontend `i`.
pub(crate) fn frontend(i: usize) -> String {
    format!("frontend-{i}")
}

/// `backend.yaml` with a given timeout.
fn backend_yaml(timeout_ms: u64) -> String {
    format!("name: {BACKEND}\ncalls: []\ntimeout: {timeout_ms}ms\n")
}

/// A running control plane over its own temporary directories.
pub(crate) struct Mesh {
    dirs: tempfile::TempDir,
    cp: Arc<ControlPlane>,
    published: Option<Published>,
}

/// Publishes seen from the control plane's side: (version, when first seen).
struct Published {
    stop: Arc<AtomicBool>,
    rx: mpsc::UnboundedReceiver<(u64, Instant)>,
    thread: std::thread::JoinHandle<()>,
}

/// The bench drives the control plane from one address far past what one caller may ask
/// in production: many streams per connection and a Certify flood.
const BENCH_LIMITS: &str = "api:\n  max_concurrent_streams: 4096\n  rate_limits:\n    \
    certify_per_source_ip: { requests_per_second: 1000000, burst: 1000000 }\n    \
    certify_per_service: { requests_per_second: 1000000, burst: 1000000 }\n";

impl Mesh {
    /// Writes the configuration (`frontends` frontends calling `backend`) and starts the control
    /// plane, polling its configuration every `config_poll`.
    pub(crate) async fn start(frontends: usize, config_poll: Duration) -> Result<Self, BenchError> {
        let io = |what| move |source| BenchError::Io { what, source };
        let dirs = tempfile::tempdir().map_err(io("create a temporary directory"))?;
        let config = dirs.path().join("config");
        let services = config.join("services");
        std::fs::create_dir_all(&services).map_err(io("create the configuration directory"))?;
        std::fs::write(
            config.join("mesh.yaml"),
            format!(
                "trust_domain: {TRUST_DOMAIN}\nnamespace: {NAMESPACE}\ncertificate_lifetime: 1h\n\
                 {BENCH_LIMITS}"
            ),
        )
        .map_err(io("write mesh.yaml"))?;
        std::fs::write(
            services.join(format!("{BACKEND}.yaml")),
            backend_yaml(FIRST_TIMEOUT_MS),
        )
        .map_err(io("write backend.yaml"))?;
        for i in 0..frontends {
            let name = frontend(i);
            std::fs::write(
                services.join(format!("{name}.yaml")),
                format!("name: {name}\ncalls: [{BACKEND}]\n"),
            )
            .map_err(io("write a frontend's file"))?;
        }
        let mut options = Options::new(&config, dirs.path().join("state"));
        options.config_poll = config_poll;
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = Listeners::bind(any, any).await?;
        let cp = Arc::new(mesh_control_plane::start(options, listeners).await?);
        Ok(Self {
            dirs,
            cp,
            published: None,
        })
    }

    /// The control plane.
    pub(crate) fn cp(&self) -> &ControlPlane {
        &self.cp
    }

    /// The roots that verify the control plane.
    pub(crate) fn roots(&self) -> Result<RootCertStore, BenchError> {
        Ok(client::roots_from_der(&self.cp.trust_bundle_der())?)
    }

    /// A service's join token.
    pub(crate) fn token(&self, service: &str) -> Result<String, BenchError> {
        let token = std::fs::read_to_string(self.cp.token_path(service)).map_err(|source| {
            BenchError::Io {
                what: "read a join token",
                source,
            }
        })?;
        Ok(token.trim().to_owned())
    }

    /// A channel without a client certificate (for Identity.Certify).
    pub(crate) async fn anonymous(&self) -> Result<Channel, BenchError> {
        Ok(client::connect(self.cp.api_addr(), self.roots()?, TRUST_DOMAIN, None).await?)
    }

    /// Certifies one workload of `service`, as a sidecar does at start.
    pub(crate) async fn certify(&self, service: &str) -> Result<Workload, BenchError> {
        let token = self.token(service)?;
        Ok(client::certify(
            self.anonymous().await?,
            TRUST_DOMAIN,
            NAMESPACE,
            service,
            &token,
        )
        .await?)
    }

    /// A channel presenting `workload`'s certificate.
    pub(crate) async fn connect(&self, workload: &Workload) -> Result<Channel, BenchError> {
        Ok(client::connect(
            self.cp.api_addr(),
            self.roots()?,
            TRUST_DOMAIN,
            Some(workload.client_cert()),
        )
        .await?)
    }

    /// Rewrites `backend.yaml` with a new timeout atomically (write, then rename, as a
    /// configuration tool does), returning when the new file became visible.
    pub(crate) fn set_backend_timeout(&self, timeout_ms: u64) -> Result<Instant, BenchError> {
        let services = self.dirs.path().join("config").join("services");
        let tmp = services.join(format!(".{BACKEND}.yaml.tmp"));
        std::fs::write(&tmp, backend_yaml(timeout_ms)).map_err(|source| BenchError::Io {
            what: "write backend.yaml",
            source,
        })?;
        let at = Instant::now();
        std::fs::rename(&tmp, services.join(format!("{BACKEND}.yaml"))).map_err(|source| {
            BenchError::Io {
                what: "rename backend.yaml",
                source,
            }
        })?;
        Ok(at)
    }

    /// Starts noting each new snapshot version as the control plane publishes it. A plain
    /// thread polls every 200 µs, so the note does not wait behind the runtime's busy workers.
    pub(crate) fn watch_publishes(&mut self) {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::unbounded_channel();
        let cp = self.cp.clone();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut last = cp.version();
                while !stop.load(Ordering::Relaxed) {
                    let version = cp.version();
                    if version != last {
                        last = version;
                        if tx.send((version, Instant::now())).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        self.published = Some(Published { stop, rx, thread });
    }

    /// When the first version above `above` was published. The polling thread may not have
    /// run yet on a loaded machine even though the change has reached every watcher, so this
    /// waits for its note while the control plane is known to be past `above` (1 s at most).
    pub(crate) async fn published_after(&mut self, above: u64) -> Option<(u64, Instant)> {
        let published = self.published.as_mut()?;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut found = None;
        while found.is_none() {
            let next = if self.cp.version() > above {
                tokio::time::timeout_at(deadline, published.rx.recv())
                    .await
                    .ok()
                    .flatten()
            } else {
                published.rx.try_recv().ok()
            };
            match next {
                Some((version, at)) if version > above => found = Some((version, at)),
                Some(_) => {}
                None => break,
            }
        }
        // Notes of later versions belong to no change yet measured.
        while published.rx.try_recv().is_ok() {}
        found
    }

    /// Stops the control plane (ending every watch stream) and removes its directories.
    pub(crate) async fn stop(mut self) -> Result<(), BenchError> {
        if let Some(published) = self.published.take() {
            published.stop.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || published.thread.join()).await;
        }
        let cp = Arc::try_unwrap(self.cp).map_err(|_| BenchError::StillShared)?;
        cp.stop().await?;
        drop(self.dirs);
        Ok(())
    }
}
