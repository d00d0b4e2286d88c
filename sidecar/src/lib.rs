//! The sidecar: the data plane that runs next to one instance of a service.
//!
//! The app speaks plain HTTP to the sidecar; sidecars speak HTTP/2 over mutual TLS to each
//! other, each proving its SPIFFE identity. Three listeners:
//! - **outbound** (default 127.0.0.1:15001): plain HTTP/1.1 or HTTP/2 from the local app, routed
//!   by `Host` / `:authority` to a destination service's sidecars;
//! - **inbound** (default 127.0.0.1:15006): mutual TLS from peer sidecars, forwarded to the app
//!   with the caller's verified identity in `x-mesh-client-id`;
//! - **admin** (default 127.0.0.1:15000): `/live`, `/ready`, `/metrics`, `/config`,
//!   `POST /shutdown`.
//!
//! # Layout, in request order
//! ```text
//! app --plain HTTP--> [outbound]                                  [inbound] --plain--> app
//!  serve.rs             accept, detect HTTP/1.1 or HTTP/2
//!  outbound/destination 2 name the destination service
//!  outbound/policy      3 look up the destination
//!  outbound/balance     6 pick an endpoint
//!  outbound/connect     8 pooled mTLS HTTP/2 connection, peer SPIFFE ID verified
//!                              ----- mTLS ----->
//!                                                  inbound/identify  9  terminate TLS, caller ID
//!                                                  inbound/authorize 10 is the caller allowed?
//!                                                  inbound/forward   11 forward to the app
//! ```
//! Beside the path: [`config`] (the bootstrap file), [`identity`] (certificates and verifiers),
//! [`error`] (typed errors and the one place they become responses), [`headers`] (hop-by-hop
//! and mesh headers), [`metrics`], and `admin`.

// Exists for the benchmarks in `benches/hot_paths.rs` only: thin wrappers over crate-private
// hot paths. Not a stable API; nothing else should use it.
#[doc(hidden)]
pub mod bench_support;
pub mod body;
pub mod classify;
pub mod config;
pub mod error;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod telemetry;

mod admin;
mod app_health;
mod control;
pub mod inbound;
mod log_limit;
mod outbound;
mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;

pub use crate::body::{Body, BoxError};

use crate::admin::Admin;
use crate::config::{Config, ControlPlaneConfig, ListenAddrs};
use crate::control::apply::Applier;
use crate::control::certify::Certifier;
use crate::control::register::InstanceInfo;
use crate::identity::{Credentials, Identity};
use crate::inbound::Inbound;
use crate::log_limit::LogLimit;
use crate::metrics::{Direction, Metrics};
use crate::outbound::Outbound;
use crate::outbound::policy::{BuildContext, DestinationSpec, Destinations};
use crate::telemetry::Tracing;

/// A peer that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The three bound listeners of a sidecar.
#[derive(Debug)]
pub struct Listeners {
    /// Plain HTTP from the local app.
    pub outbound: TcpListener,
    /// Mutual TLS from peer sidecars.
    pub inbound: TcpListener,
    /// Admin endpoint.
    pub admin: TcpListener,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on listen.{name} {addr}: {source}")]
pub struct BindError {
    name: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

// === impl Listeners ===

impl Listeners {
    /// Binds the three addresses of `listen`.
    pub async fn bind(listen: &ListenAddrs) -> Result<Self, BindError> {
        async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { name, addr, source })
        }
        Ok(Self {
            outbound: bind("outbound", listen.outbound).await?,
            inbound: bind("inbound", listen.inbound).await?,
            admin: bind("admin", listen.admin).await?,
        })
    }
}

/// The HTTP/1.1 + HTTP/2 server of the outbound and inbound listeners. The timer drives
/// HTTP/1.1's header-read timeout (a client that never finishes its headers is dropped) and
/// HTTP/2 keep-alive pings.
fn http_server() -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new());
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)));
    http
}

/// Serves one connection from the local app: HTTP/1.1 or HTTP/2, each request proxied.
fn outbound_connection(
    http: &auto::Builder<TokioExecutor>,
    outbound: Arc<Outbound>,
    tcp: TcpStream,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + use<> {
    let conn = http
        .serve_connection(
            TokioIo::new(tcp),
            service_fn(move |req| outbound.clone().handle(req)),
        )
        .into_owned();
    let conn = watcher.watch(conn);
    async move {
        if let Err(error) = conn.await {
            ::tracing::debug!(%error, "outbound connection closed with error");
        }
    }
}

/// What one connection from a peer sidecar needs.
struct InboundConnection {
    inbound: Arc<Inbound>,
    acceptor: TlsAcceptor,
    metrics: Arc<Metrics>,
    /// Caps refused-handshake warnings (a port scan should not flood the logs).
    log_limit: Arc<LogLimit>,
}

impl InboundConnection {
    /// Terminates mTLS and identifies the caller (step 9), then serves its requests.
    async fn serve(self, tcp: TcpStream, peer: SocketAddr, watcher: Watcher) {
        let (tls, caller) = match inbound::identify::identify(
            &self.acceptor,
            tcp,
            TLS_HANDSHAKE_TIMEOUT,
        )
        .await
        {
            Ok(identified) => identified,
            Err(error) => {
                self.metrics.tls_failure(Direction::Inbound, error.reason());
                if self.log_limit.allow("refused inbound connections") {
                    ::tracing::warn!(%peer, reason = error.reason(), %error, "inbound connection refused");
                }
                return;
            }
        };
        ::tracing::debug!(%peer, %caller, "inbound connection identified");
        let caller = Arc::new(inbound::Caller::new(caller, peer));
        let inbound = self.inbound;
        let http = http_server();
        let conn = http.serve_connection(
            TokioIo::new(tls),
            service_fn(move |req| inbound.clone().handle(caller.clone(), req)),
        );
        if let Err(error) = watcher.watch(conn.into_owned()).await {
            ::tracing::debug!(%peer, %error, "inbound connection closed with error");
        }
    }
}

/// Serves one admin connection (HTTP/1.1).
fn admin_connection(
    http: &http1::Builder,
    admin: Arc<Admin>,
    tcp: TcpStream,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + use<> {
    let conn = http.serve_connection(
        TokioIo::new(tcp),
        service_fn(move |req| admin.clone().handle(req)),
    );
    let conn = watcher.watch(conn);
    async move {
        let _ = conn.await;
    }
}

/// Warns when this sidecar's certificate has expired or expires within a day: every peer will
/// refuse it, and without a control plane nothing renews it.
fn warn_if_expiring(identity: &Identity) {
    let left = identity.not_after() - control::certify::unix_now();
    if left <= 0 {
        ::tracing::warn!(identity = %identity.id(), "this sidecar's certificate has expired; peers will refuse it");
    } else if left < 24 * 3600 {
        ::tracing::warn!(identity = %identity.id(), seconds_left = left, "this sidecar's certificate expires within a day");
    }
}

/// The control plane's part of a sidecar, once it has a certificate.
struct ControlPlaneClient {
    config: ControlPlaneConfig,
    certifier: Certifier,
}

/// Obtains the first certificate from the control plane, trying until it works; `None` when
/// the sidecar is stopped first.
async fn first_certificate(
    config: &Config,
    cp: &ControlPlaneConfig,
    stop: &CancellationToken,
) -> anyhow::Result<Option<(Credentials, Certifier)>> {
    let anchor = std::fs::read(&cp.trust_anchor).with_context(|| {
        format!(
            "control_plane.trust_anchor: cannot read {}",
            cp.trust_anchor.display()
        )
    })?;
    let roots = rustls::pki_types::CertificateDer::pem_slice_iter(&anchor)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "control_plane.trust_anchor: bad PEM in {}",
                cp.trust_anchor.display()
            )
        })?;
    let roots = identity::trust_store(&roots)
        .with_context(|| format!("control_plane.trust_anchor {}", cp.trust_anchor.display()))?;
    let tls = identity::anonymous_client_config(
        Arc::new(roots),
        control::channel::control_plane_id(&config.trust_domain)?,
    )?;
    let certifier = Certifier {
        service: config.service.clone(),
        id: config.identity.clone(),
        token_file: cp.token_file.clone(),
    };
    let channel = control::channel::channel(cp.address, tls);
    ::tracing::info!(control_plane = %cp.address, identity = %config.identity, "requesting a certificate");
    Ok(certifier
        .certify_until_ok(&channel, stop)
        .await
        .map(|credentials| (credentials, certifier)))
}

/// Where peers reach this sidecar: the inbound listener, with a wildcard address replaced by
/// loopback.
fn advertised(inbound: SocketAddr) -> SocketAddr {
    if inbound.ip().is_unspecified() {
        let ip: std::net::IpAddr = if inbound.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, inbound.port())
    } else {
        inbound
    }
}

/// Runs a sidecar on bound listeners until `shutdown` completes or `POST /shutdown` arrives,
/// then drains in-flight requests (at most `config.drain_timeout`) and returns.
///
/// With `credentials`, the sidecar runs on them and on the destinations of `config`. Without,
/// it obtains its certificate and destinations from `config.control_plane`: the admin
/// endpoint answers at once, and the outbound and inbound listeners serve (and `/ready` turns
/// 200) once the sidecar has a certificate and a first snapshot.
pub async fn run(
    config: Config,
    credentials: Option<Credentials>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    // Asked to stop (signal or `POST /shutdown`); `drain` follows once the instance has left
    // the registry, and closes the listeners.
    let stop_requested = CancellationToken::new();
    let drain = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let admin_addr = listeners.admin.local_addr()?;
    // Probing starts with the sidecar, so the app's status is known by the time it registers.
    let probing = CancellationToken::new();
    let _stop_probing = probing.clone().drop_guard();
    let app_health = match &config.app_health {
        Some(health) => Some(app_health::spawn(
            health.clone(),
            config.app,
            metrics.app_healthy.clone(),
            probing,
        )),
        None => {
            metrics.app_healthy.set(1);
            None
        }
    };
    let admin = Arc::new(Admin {
        ready: AtomicBool::new(false),
        config_json: {
            let mut json = serde_json::to_vec_pretty(&config)?;
            json.push(b'\n');
            json.into()
        },
        metrics: metrics.clone(),
        snapshot_json: Arc::default(),
        shutdown: stop_requested.clone(),
        app: app_health.clone(),
    });
    let mut admin_http = http1::Builder::new();
    admin_http.timer(TokioTimer::new());
    let admin_for_conns = admin.clone();
    let admin_task = tokio::spawn(serve::serve(
        Direction::Admin,
        listeners.admin,
        admin_stop.clone(),
        config.drain_timeout,
        metrics.clone(),
        move |tcp, _peer, watcher| {
            admin_connection(&admin_http, admin_for_conns.clone(), tcp, watcher)
        },
    ));
    let stop_admin = || async {
        admin_stop.cancel();
        let _ = admin_task.await;
    };
    tokio::pin!(shutdown);

    let (credentials, control) = match (credentials, &config.control_plane) {
        (Some(credentials), _) => (credentials, None),
        (None, Some(cp)) => {
            let obtained = tokio::select! {
                obtained = first_certificate(&config, cp, &stop_requested) => obtained?,
                () = &mut shutdown => None,
            };
            let Some((credentials, certifier)) = obtained else {
                stop_admin().await;
                return Ok(());
            };
            let client = ControlPlaneClient {
                config: cp.clone(),
                certifier,
            };
            (credentials, Some(client))
        }
        (None, None) => anyhow::bail!("no certificate: set tls or control_plane"),
    };
    let identity = Arc::new(Identity::new(credentials)?);
    metrics.control.certificate_expiry.set(identity.not_after());

    let cx = BuildContext {
        identity: &identity,
        connect_timeout: config.connect_timeout,
        metrics: &metrics,
    };
    let specs = config
        .destinations
        .iter()
        .map(|(name, dest)| (name.clone(), DestinationSpec::from(dest)));
    let destinations = Destinations::build(specs, &cx, None)?;
    let (destinations_tx, destinations_rx) = watch::channel(Arc::new(destinations));
    let tracing = Tracing::start(&config.tracing, &config.service, metrics.span_export())?;
    let outbound = Arc::new(Outbound::new(
        &config.service,
        identity.id(),
        destinations_rx,
        metrics.clone(),
        tracing.spans(),
        config.access_log,
    ));
    let inbound = Arc::new(Inbound::new(&config, metrics.clone(), tracing.spans()));
    let acceptor = TlsAcceptor::from(identity.server_config()?);

    let mut registration = None;
    if let Some(client) = control {
        let cp_tls =
            identity.client_config(&control::channel::control_plane_id(&config.trust_domain)?)?;
        let channel = control::channel::channel(client.config.address, cp_tls);
        let applier = Arc::new(Applier::new(
            identity.clone(),
            destinations_tx.clone(),
            inbound.clone(),
            metrics.clone(),
            config.connect_timeout,
            admin.snapshot_json.clone(),
        ));
        let instance = InstanceInfo {
            id: format!(
                "{}-{}-{:04x}",
                config.service,
                std::process::id(),
                fastrand::u16(..)
            ),
            service: config.service.clone(),
            address: advertised(listeners.inbound.local_addr()?),
            version: config.version.clone(),
        };
        let mut first = applier.first.subscribe();
        tokio::spawn(control::watch::follow(
            channel.clone(),
            instance.id.clone(),
            applier.clone(),
            drain.clone(),
        ));
        ::tracing::info!(instance = %instance.id, "waiting for the first snapshot");
        let started = tokio::select! {
            waited = first.wait_for(|applied| *applied) => waited.is_ok(),
            () = &mut shutdown => false,
            () = stop_requested.cancelled() => false,
        };
        if !started {
            drain.cancel();
            stop_admin().await;
            tracing.shutdown(Duration::from_secs(1)).await;
            return Ok(());
        }
        tokio::spawn(control::certify::renew(
            client.certifier,
            channel.clone(),
            identity.clone(),
            applier.renew_now.clone(),
            metrics.control.clone(),
            drain.clone(),
        ));
        let stop = CancellationToken::new();
        let instance_id = instance.id.clone();
        let task = tokio::spawn(control::register::keep_registered(
            channel.clone(),
            instance,
            applier,
            app_health,
            stop.clone(),
        ));
        registration = Some((stop, task, channel, instance_id));
    } else {
        warn_if_expiring(&identity);
    }
    // Without a control plane the table never changes; the sender lives as long as the sidecar.
    let _destinations_tx = destinations_tx;

    ::tracing::info!(
        identity = %identity.id(),
        outbound = %listeners.outbound.local_addr()?,
        inbound = %listeners.inbound.local_addr()?,
        admin = %admin_addr,
        app = %config.app,
        "sidecar serving"
    );

    let http = http_server();
    let outbound_task = tokio::spawn(serve::serve(
        Direction::Outbound,
        listeners.outbound,
        drain.clone(),
        config.drain_timeout,
        metrics.clone(),
        move |tcp, _peer, watcher| outbound_connection(&http, outbound.clone(), tcp, watcher),
    ));
    let inbound_metrics = metrics.clone();
    let handshake_log_limit = Arc::new(LogLimit::new(10));
    let inbound_task = tokio::spawn(serve::serve(
        Direction::Inbound,
        listeners.inbound,
        drain.clone(),
        config.drain_timeout,
        metrics.clone(),
        move |tcp, peer, watcher| {
            let connection = InboundConnection {
                inbound: inbound.clone(),
                acceptor: acceptor.clone(),
                metrics: inbound_metrics.clone(),
                log_limit: handshake_log_limit.clone(),
            };
            connection.serve(tcp, peer, watcher)
        },
    ));

    admin.ready.store(true, Ordering::Release);
    tokio::select! {
        () = &mut shutdown => ::tracing::info!("shutdown signal received"),
        () = stop_requested.cancelled() => {},
    }
    admin.ready.store(false, Ordering::Release);
    if let Some((stop, task, channel, instance_id)) = registration {
        // Heartbeats end first, or one could register the instance again.
        stop.cancel();
        let _ = task.await;
        control::register::deregister(channel, &instance_id).await;
    }
    drain.cancel();
    let (outbound_done, inbound_done) = tokio::join!(outbound_task, inbound_task);
    outbound_done?;
    inbound_done?;
    stop_admin().await;
    // Every request is done: send the spans still queued.
    tracing.shutdown(Duration::from_secs(5)).await;
    ::tracing::info!("sidecar stopped");
    Ok(())
}
