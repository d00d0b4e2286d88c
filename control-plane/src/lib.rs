//! The mesh's control plane: certificate authority, registry, declarative policy, and the
//! configuration each sidecar runs on, pushed as it changes.
//!
//! # Layout
//! - [`ca`]: certificate authorities: the state directory's [`ca::Authority`] and the
//!   development [`ca::DevCa`], over shared certificate fields and signing (`ca/x509.rs`).
//! - [`config`]: the configuration directory (`mesh.yaml`, `services/*.yaml`) and its
//!   validation.
//! - `mesh`: the state behind one lock (`mesh/mod.rs`): the registry of instances, leases and
//!   acknowledgements (`registry.rs`), the per-service snapshots computed from configuration
//!   and registry (`snapshot.rs`), root-rotation gating (`rotation.rs`) and `/status`
//!   (`status.rs`).
//! - `authenticate`: whose token entitles it to a service's certificate (join tokens, or
//!   TokenReview in Kubernetes mode).
//! - `grpc`: the `mesh.v1` services; `tls`: the API's TLS with live certificates;
//!   `listener`: the API's connections within their limits; `rate_limit`: per-caller call
//!   rates; `log_limit`: warnings about refused callers, capped.
//! - `virtual_addresses`: the table of services' virtual addresses in the state directory.
//! - `admin`: the admin HTTP server; [`admin_client`]: a small client for it (meshctl, tests).
//! - `webhook`: the Kubernetes admission webhook that injects the sidecar into pods
//!   (`mesh_inject` makes the change), served over HTTPS with a certificate from the CA.
//! - [`client`]: the sidecar's side of the API (CSR, SPIFFE-verified connection), for tests and
//!   tools; the work is `mesh_api::certify` and `mesh_api::channel`, which sidecars use too.
//!
//! No module imports from lib.rs or from a module above it; parents tie their children.
//!
//! # State directory
//! - `ca.pem`, `roots/`, `signer`, and optionally an operator's `ca-key.pem` or
//!   `intermediate.pem` + `intermediate-key.pem`: the CA (see [`ca::Authority`]). In
//!   Kubernetes mode these are a copy of Secret `mesh-ca`, which all replicas share, rewritten
//!   whenever the Secret changes.
//! - `tokens/<service>`: join tokens (see [`Tokens`]); not in Kubernetes mode, where sidecars
//!   present their projected service-account tokens.
//! - `virtual-addresses`: each service's virtual address, kept so it never moves (see
//!   `virtual_addresses.rs`).
//! - `version`: the last snapshot version, written on stop; the next start continues above it
//!   and above the clock in milliseconds, so versions only ever increase.
//!
//! # Running in-process
//! ```no_run
//! # async fn example() -> Result<(), mesh_control_plane::Error> {
//! use mesh_control_plane::{Listeners, Options};
//! let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()).await?;
//! let cp = mesh_control_plane::start(Options::new("config", "state"), listeners).await?;
//! println!("api {} admin {}", cp.api_addr(), cp.admin_addr());
//! cp.stop().await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod accept;
mod admin;
pub mod admin_client;
mod authenticate;
pub mod ca;
pub mod client;
pub mod config;
mod grpc;
mod kubernetes;
mod listener;
mod log_limit;
mod mesh;
pub mod metrics;
mod rate_limit;
mod tls;
mod tokens;
mod virtual_addresses;
mod webhook;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_api::proto::v1;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::ca::CertError;
pub use crate::config::{InvalidConfig, MeshConfig};
pub use crate::kubernetes::{CaSecretError, ElectionOptions, KubernetesError, KubernetesOptions};
pub use crate::listener::PeerInfo;
pub use crate::mesh::{GatewayListenerStatus, InstanceStatus, Replicas, ServiceStatus, Status};
pub use crate::tls::{TlsError, control_plane_id};
pub use crate::tokens::{TokenError, Tokens, admin_token_path};
pub use crate::virtual_addresses::{AddressError, TABLE_FILE as VIRTUAL_ADDRESS_FILE};
pub use crate::webhook::{
    DEFAULT_NAMES as DEFAULT_WEBHOOK_NAMES, PATH as WEBHOOK_PATH, WebhookOptions,
};

/// The API's default listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:15010";
/// The admin server's default listener.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15014";
/// How often the configuration directory is read for changes.
pub const DEFAULT_CONFIG_POLL: Duration = Duration::from_millis(200);

/// Where the control plane keeps its inputs and state.
#[derive(Clone, Debug)]
pub struct Options {
    /// The configuration directory (`mesh.yaml`, `services/`).
    pub config_dir: PathBuf,
    /// Where the service files are, when not `config_dir/services`.
    pub services_dir: Option<PathBuf>,
    /// The state directory (CA, tokens).
    pub state_dir: PathBuf,
    /// How often to look for configuration changes.
    pub config_poll: Duration,
    /// A directory holding `ca.pem` and `ca-key.pem` (such as a mounted Secret): on a first
    /// start, that root is the CA's, as if the files had been put in the state directory.
    pub ca_dir: Option<PathBuf>,
    /// How the webhook injects pods, when [`Listeners::webhook`] is bound.
    pub webhook: WebhookOptions,
    /// Kubernetes mode: the cluster declares the services (MeshService objects) instead of
    /// the service files.
    pub kubernetes: Option<KubernetesOptions>,
}

impl Options {
    /// Options with the default poll interval.
    pub fn new(config_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            services_dir: None,
            state_dir: state_dir.into(),
            config_poll: DEFAULT_CONFIG_POLL,
            ca_dir: None,
            webhook: WebhookOptions::default(),
            kubernetes: None,
        }
    }
}

/// Bound listeners, so callers (and tests, with port 0) know the addresses before starting.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC API.
    pub api: TcpListener,
    /// The admin HTTP server.
    pub admin: TcpListener,
    /// The injecting webhook (HTTPS), if it is served.
    pub webhook: Option<TcpListener>,
}

impl Listeners {
    /// Binds both listeners.
    pub async fn bind(api: SocketAddr, admin: SocketAddr) -> Result<Self, Error> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        Ok(Self {
            api: bind(api).await?,
            admin: bind(admin).await?,
            webhook: None,
        })
    }

    /// Binds the webhook's listener too.
    pub async fn bind_webhook(mut self, addr: SocketAddr) -> Result<Self, Error> {
        self.webhook = Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })?,
        );
        Ok(self)
    }
}

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration directory is invalid.
    #[error("{0}")]
    Config(#[from] InvalidConfig),
    /// The CA could not be loaded or created.
    #[error("certificate authority: {0}")]
    Ca(#[from] CertError),
    /// Join tokens could not be created.
    #[error("join tokens: {0}")]
    Tokens(#[from] TokenError),
    /// Virtual addresses could not be allocated or recorded.
    #[error("virtual addresses: {0}")]
    VirtualAddresses(#[from] AddressError),
    /// TLS could not be set up.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Kubernetes mode could not start.
    #[error("kubernetes: {0}")]
    Kubernetes(#[from] KubernetesError),
    /// The gRPC server failed.
    #[error("API server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    api_addr: SocketAddr,
    admin_addr: SocketAddr,
    webhook_addr: Option<SocketAddr>,
    state_dir: PathBuf,
    mesh: Arc<mesh::Mesh>,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    /// Where the gRPC API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Where the admin server listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the webhook listens, if it is served.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<MeshConfig> {
        self.mesh.config()
    }

    /// The latest snapshot version.
    pub fn version(&self) -> u64 {
        self.mesh.version()
    }

    /// The `/status` document.
    pub fn status(&self) -> Status {
        self.mesh.status()
    }

    /// The trust bundle, as written to `ca.pem`.
    pub fn trust_bundle_der(&self) -> Vec<Vec<u8>> {
        self.mesh.authority().trust_bundle_der()
    }

    /// The file of a service's join token.
    pub fn token_path(&self, service: &str) -> PathBuf {
        self.state_dir.join("tokens").join(service)
    }

    /// The file of the admin token, which the admin endpoint's changes to the CA need.
    pub fn admin_token_path(&self) -> PathBuf {
        admin_token_path(&self.state_dir)
    }

    /// Completes when the API server stops on its own (an error); never on a healthy server.
    pub async fn failed(&mut self) -> Result<(), Error> {
        match (&mut self.server).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(Error::Io {
                path: PathBuf::new(),
                source: io::Error::other(e),
            }),
        }
    }

    /// Ends every task at once, without a clean stop's steps (no Lease released, no version
    /// recorded): what a crash leaves behind, for failover tests.
    pub fn kill(self) {
        self.server.abort();
        for task in &self.tasks {
            task.abort();
        }
        // Only after the aborts, so no task gets to react to it: this ends what the tasks
        // spawned (connections), which an abort leaves running.
        self.shutdown.cancel();
    }

    /// Stops serving: ends watch streams, lets calls in flight finish, and records the snapshot
    /// version so the next start continues above it.
    pub async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        let server = match tokio::time::timeout(Duration::from_secs(10), self.server).await {
            Ok(Ok(result)) => result.map_err(Error::from),
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::warn!("API connections still open after 10s; closing them");
                Ok(())
            }
        };
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
        }
        save_version(&self.state_dir, self.mesh.version());
        tracing::info!("control plane stopped");
        server
    }
}

/// Starts the control plane on bound listeners: loads the configuration (every error reported),
/// loads or creates the CA and (in local mode) join tokens, then serves the API and the admin server. Returns
/// once it is ready.
pub async fn start(options: Options, listeners: Listeners) -> Result<ControlPlane, Error> {
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut token_reviewer = None;
    let mut source = match &options.kubernetes {
        None => ConfigSource::Files {
            dir: options.config_dir.clone(),
            services: options
                .services_dir
                .clone()
                .unwrap_or_else(|| options.config_dir.join(config::SERVICES_DIR)),
        },
        Some(kubernetes) => {
            // The mesh file names the namespace whose MeshService objects declare services.
            let mesh_only = config::parse(&config::read_mesh_file(&options.config_dir)?)?;
            let client = kubernetes::client(kubernetes).await?;
            token_reviewer = Some(kubernetes::TokenReviewer::new(
                client.clone(),
                &kubernetes.audience,
            ));
            let (policy, policy_tasks) = kubernetes::ClusterPolicy::start(
                client,
                &mesh_only.namespace,
                &kubernetes.replica,
                &kubernetes.gateway_class,
                shutdown.clone(),
            )
            .await;
            tasks.extend(policy_tasks);
            ConfigSource::Cluster {
                dir: options.config_dir.clone(),
                policy: Box::new(policy),
            }
        }
    };
    let watched_files = source.read().await?;
    let mut config = source.parse(&watched_files)?;
    let state_dir = options.state_dir.clone();
    let trust_domain = config.trust_domain.clone();
    let import = options.ca_dir.clone();
    let (ca, replicas) = match &options.kubernetes {
        // Replicas share the CA through its Secret, which the state directory mirrors.
        Some(kubernetes) => {
            let (replicas, ca) =
                kubernetes::ReplicaSet::open(kubernetes, &state_dir, &trust_domain, import).await?;
            (ca, Some(replicas))
        }
        None => {
            let ca = tokio::task::spawn_blocking(move || {
                if let Some(from) = import {
                    ca::Authority::import_root(&state_dir, &from)?;
                }
                ca::Authority::open(&state_dir, &trust_domain)
            })
            .await
            .map_err(|e| Error::Io {
                path: options.state_dir.clone(),
                source: io::Error::other(e),
            })??;
            (ca, None)
        }
    };
    let authenticator = match token_reviewer {
        Some(reviewer) => authenticate::Authenticator::TokenReview(Box::new(reviewer)),
        None => authenticate::Authenticator::JoinTokens(Tokens::open(&options.state_dir)?),
    };
    let tokens = authenticator.join_tokens().cloned();
    // After the CA, which creates the state directory on a first start.
    let mut addresses = virtual_addresses::AddressTable::open(&options.state_dir)?;
    addresses.assign(&mut config)?;
    if let Some(tokens) = &tokens {
        for service in tokens.ensure(config.services.keys())? {
            tracing::info!(%service, path = %tokens.path(&service).display(), "created a join token");
        }
    }
    let first_version = first_version(&options.state_dir);
    let metrics = Arc::new(metrics::Metrics::new());
    let limits = config.api.clone();
    let admin_limits = config.admin.clone();
    let mesh = Arc::new(mesh::Mesh::new(config, ca, metrics.clone(), first_version));
    source.in_force();
    if let Some(kubernetes) = &options.kubernetes {
        // Endpoints and virtual addresses from Services and EndpointSlices, before any sidecar
        // can connect.
        let client = kubernetes::client(kubernetes).await?;
        let namespace = mesh.config().namespace.clone();
        tasks.push(
            kubernetes::start_discovery(client, &namespace, mesh.clone(), shutdown.clone()).await,
        );
    }
    if let Some(replicas) = replicas {
        tasks.extend(replicas.start(&mesh, &shutdown));
    }

    let api_addr = local_addr(&listeners.api)?;
    let admin_addr = local_addr(&listeners.admin)?;
    let server_tls = Arc::new(tls::ServerTls::new(&mesh)?);
    tasks.push(tokio::spawn({
        let (tls, mesh, shutdown) = (server_tls.clone(), mesh.clone(), shutdown.clone());
        async move { tls.maintain(mesh, shutdown).await }
    }));
    let incoming = listener::incoming(
        server_tls.acceptor(),
        listeners.api,
        &limits,
        metrics.clone(),
        shutdown.clone(),
    );
    let api = grpc::Api::new(mesh.clone(), authenticator, &limits, shutdown.clone());
    // Set explicitly, every one: tonic's defaults leave the streams per connection unbounded
    // and lift hyper's cap on streams reset for errors (the rapid-reset class of attacks).
    // The timeout covers a call until its response starts, so a Watch stream is not cut.
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_pending_accept_reset_streams(Some(limits.max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(limits.max_local_error_reset_streams))
            .timeout(limits.request_timeout)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .add_service(v1::identity_server::IdentityServer::new(api.clone()))
            .add_service(v1::registry_server::RegistryServer::new(api.clone()))
            .add_service(v1::discovery_server::DiscoveryServer::new(api))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
    );
    tasks.push(tokio::spawn(watch_config(
        mesh.clone(),
        tokens,
        addresses,
        source,
        options.config_poll,
        watched_files,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(sweep(mesh.clone(), shutdown.clone())));
    tasks.push(tokio::spawn(
        mesh.clone().rebuild_on_change(shutdown.clone()),
    ));
    // The admin credential: a token only the control plane's user can read, which changing the
    // CA needs (`meshctl` reads it from the state directory).
    let admin_tokens = tokens::admin_tokens(&options.state_dir)?;
    let admin = Arc::new(admin::Admin {
        mesh: mesh.clone(),
        ready: AtomicBool::new(false),
        tokens: admin_tokens,
        port: admin_addr.port(),
        loopback: admin_addr.ip().is_loopback(),
    });
    tasks.push(tokio::spawn(admin::serve(
        admin.clone(),
        listeners.admin,
        admin_limits,
        shutdown.clone(),
    )));
    let webhook_addr = match listeners.webhook {
        Some(listener) => {
            let addr = local_addr(&listener)?;
            let webhook = Arc::new(webhook::Webhook::new(
                mesh.clone(),
                options.webhook.clone(),
            )?);
            tasks.push(tokio::spawn(webhook.clone().maintain(shutdown.clone())));
            tasks.push(tokio::spawn(webhook.serve(listener, shutdown.clone())));
            Some(addr)
        }
        None => None,
    };
    admin.ready.store(true, Ordering::Release);
    let status = mesh.status();
    tracing::info!(
        api = %api_addr,
        admin = %admin_addr,
        webhook = ?webhook_addr,
        version = status.version,
        signer = status.signer.as_deref().unwrap_or("intermediate"),
        services = status.services.len(),
        "control plane ready"
    );
    Ok(ControlPlane {
        api_addr,
        admin_addr,
        webhook_addr,
        state_dir: options.state_dir,
        mesh,
        shutdown,
        server,
        tasks,
    })
}

/// Starts, serves until `shutdown` completes, then stops cleanly.
pub async fn run(
    options: Options,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let mut cp = start(options, listeners).await?;
    tokio::select! {
        () = shutdown => cp.stop().await,
        failed = cp.failed() => {
            failed?;
            cp.stop().await
        }
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(|source| Error::Io {
        path: PathBuf::new(),
        source,
    })
}

/// Snapshot versions must increase across restarts, so sidecars never mistake a new snapshot
/// for an old one: start above both the clock (milliseconds since the epoch) and the last
/// version recorded on stop.
fn first_version(state_dir: &Path) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let saved = std::fs::read_to_string(state_dir.join("version"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    now.max(saved.saturating_add(1))
}

fn save_version(state_dir: &Path, version: u64) {
    let path = state_dir.join("version");
    if let Err(e) = ca::write_atomic(&path, format!("{version}\n").as_bytes(), 0o644) {
        tracing::warn!(error = %e, "cannot record the snapshot version");
    }
}

/// Where the configuration comes from: `mesh.yaml` always from its directory, the services
/// from their files or, in Kubernetes mode, from MeshService objects.
enum ConfigSource {
    Files {
        dir: PathBuf,
        services: PathBuf,
    },
    Cluster {
        dir: PathBuf,
        policy: Box<kubernetes::ClusterPolicy>,
    },
}

impl ConfigSource {
    /// The configuration's files as they are now.
    async fn read(&mut self) -> Result<config::ConfigFiles, InvalidConfig> {
        let (dir, services) = match self {
            Self::Files { dir, services } => (dir.clone(), Some(services.clone())),
            Self::Cluster { dir, .. } => (dir.clone(), None),
        };
        let read = tokio::task::spawn_blocking(move || match services {
            Some(services) => config::read_files_in(&dir, &services),
            None => config::read_mesh_file(&dir),
        })
        .await
        .map_err(|e| InvalidConfig {
            errors: vec![config::FileError {
                file: String::new(),
                path: String::new(),
                message: format!("configuration read task failed: {e}"),
            }],
        })?;
        let mut files = read?;
        if let Self::Cluster { policy, .. } = self {
            files.extend(policy.files());
        }
        Ok(files)
    }

    /// Validates the files: all or nothing for files; object by object in Kubernetes mode.
    fn parse(&mut self, files: &config::ConfigFiles) -> Result<MeshConfig, InvalidConfig> {
        match self {
            Self::Files { .. } => config::parse(files),
            Self::Cluster { policy, .. } => policy.judge(files),
        }
    }

    /// The last configuration parsed is in force.
    fn in_force(&mut self) {
        if let Self::Cluster { policy, .. } = self {
            policy.in_force();
        }
    }

    /// Completes when the source says it changed (MeshService objects); files are polled.
    async fn changed(&mut self) {
        match self {
            Self::Files { .. } => std::future::pending().await,
            Self::Cluster { policy, .. } => policy.changed().await,
        }
    }
}

/// Polls the configuration (and, in Kubernetes mode, wakes as MeshService objects change);
/// applies a valid change, and keeps the configuration in force when a change is invalid (each
/// error logged once, and counted). A refused object is not an invalid change: see
/// `kubernetes/acceptance.rs`.
async fn watch_config(
    mesh: Arc<mesh::Mesh>,
    tokens: Option<Tokens>,
    mut addresses: virtual_addresses::AddressTable,
    mut source: ConfigSource,
    every: Duration,
    mut last: config::ConfigFiles,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failure: Option<Vec<config::FileError>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            () = source.changed() => {}
        }
        let files = source.read().await;
        let parsed = files.and_then(|files| {
            if files == last {
                return Ok(None);
            }
            last = files;
            source.parse(&last).map(Some)
        });
        let result = parsed.and_then(|config| match config {
            Some(config) => check_fixed(&mesh.config(), config).map(Some),
            None => Ok(None),
        });
        match result {
            Ok(None) => {}
            Ok(Some(mut config)) => {
                // Before the comparison below, so a change that moves no address compares
                // equal; a table that cannot be written keeps the configuration in force.
                if let Err(e) = addresses.assign(&mut config) {
                    tracing::error!(error = %e, "configuration change refused: virtual addresses");
                    mesh.metrics().reloaded(false);
                    continue;
                }
                last_failure = None;
                match tokens.as_ref().map(|t| t.ensure(config.services.keys())) {
                    None => {}
                    Some(Ok(created)) => {
                        for service in created {
                            tracing::info!(%service, "created a join token");
                        }
                    }
                    Some(Err(e)) => tracing::error!(error = %e, "cannot create a join token"),
                }
                mesh.metrics().reloaded(true);
                if *mesh.config() != config {
                    mesh.apply_config(config);
                    tracing::info!(version = mesh.version(), "configuration reloaded");
                }
                source.in_force();
            }
            Err(invalid) => {
                if last_failure.as_ref() != Some(&invalid.errors) {
                    for e in &invalid.errors {
                        tracing::warn!("{e}");
                    }
                    tracing::warn!(
                        errors = invalid.errors.len(),
                        "configuration change refused; the previous configuration stays in force"
                    );
                    mesh.metrics().reloaded(false);
                    last_failure = Some(invalid.errors);
                }
            }
        }
    }
}

/// Identities derive from the trust domain and namespace; changing them would invalidate every
/// certificate at once, so that takes a restart. The listeners' limits are set when they
/// start, so changing them takes a restart too.
fn check_fixed(current: &MeshConfig, next: MeshConfig) -> Result<MeshConfig, InvalidConfig> {
    let mut errors = Vec::new();
    let fixed = |field: &str, message: String| config::FileError {
        file: config::MESH_FILE.to_owned(),
        path: field.to_owned(),
        message,
    };
    for (field, now, then) in [
        ("trust_domain", &current.trust_domain, &next.trust_domain),
        ("namespace", &current.namespace, &next.namespace),
    ] {
        if now != then {
            errors.push(fixed(
                field,
                format!("cannot change from {now:?} to {then:?} while running; restart"),
            ));
        }
    }
    if current.api != next.api {
        errors.push(fixed("api", "cannot change while running; restart".into()));
    }
    if current.admin != next.admin {
        errors.push(fixed(
            "admin",
            "cannot change while running; restart".into(),
        ));
    }
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(InvalidConfig { errors })
    }
}

/// Removes instances whose lease expired, checking at least four times per lease.
async fn sweep(mesh: Arc<mesh::Mesh>, shutdown: CancellationToken) {
    loop {
        let every = (mesh.config().registry.lease / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        mesh.sweep();
    }
}
