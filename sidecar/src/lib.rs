//! The sidecar: the data plane that runs next to one instance of a service.
//!
//! The app speaks plain HTTP to the sidecar; sidecars speak HTTP/2 over mutual TLS to each
//! other, each proving its SPIFFE identity. Three listeners:
//! - **outbound** (default 127.0.0.1:15001): plain HTTP/1.1 or HTTP/2 from the local app, routed
//!   by `Host` / `:authority` to a destination service's sidecars;
//! - **inbound** (default 127.0.0.1:15006): mutual TLS from peer sidecars, forwarded to the app
//!   with the caller's verified identity in `x-mesh-client-id`;
//! - **admin** (default 127.0.0.1:15000): `/live`, `/ready`, `/metrics`, `/config`,
//!   `/snapshot`, `POST /shutdown`.
//!
//! # The request path, one file per step
//! ```text
//! app --HTTP/1.1 or h2--> outbound listener
//!    1  serve.rs, outbound/accept    accept; HTTP/1.1 or HTTP/2 detected (detect.rs)
//!    2  outbound/destination         Host / :authority -> service name
//!    3  outbound/policy              the destination's stack, or its matching route's
//!       outbound/route_match         which route: Gateway API precedence over its matches
//!       outbound/filters             the route's filters; a backendRef by weight
//!       outbound/fault               the route's injected delay or abort
//!       outbound/mirror              copies of the route's requests, fire and forget
//!    4  outbound/balance             traffic split: a backend (version) by weight
//!   5a  outbound/timeout             the whole request -> 504
//!   7a  outbound/shed                max_requests in flight, max_pending waiting -> 503
//!   5b  outbound/retry               budgeted retries, body replay (outbound/replay)
//!   5c  outbound/timeout             one try
//!    6  outbound/balance             p2c over peak EWMA (outbound/ewma) or round robin
//!   7b  outbound/breaker             outlier ejection per endpoint
//!    8  outbound/connect             the endpoint's pooled HTTP/2 connection over mTLS
//!                                        --- TLS 1.3, both sides authenticated --->
//! inbound listener
//!    1  serve.rs, inbound/accept     accept
//!    9  inbound/identify             TLS accept, client certificate; caller = its SPIFFE ID
//!   10  inbound/authorize            the caller against the AuthorizationPolicy -> 403
//!       inbound/rate_limit           the caller's own rate and the total -> 429
//!   11  inbound/forward              to the app, in the protocol the caller's app spoke
//! ```
//! A `protocol: tcp` destination has a listener of its own (`outbound/tcp_listen`); each
//! connection there (`outbound/tunnel`) is one HTTP/2 CONNECT stream on the endpoint's pooled
//! connection (steps 6 to 8), identified and authorized as a request (9, 10), then joined to
//! the app's port (`inbound/tunnel`); the bytes are copied both ways by `splice.rs`. An `http`
//! destination may have a listener too: there, and on the outbound listener, `detect.rs` reads
//! each connection's first bytes to tell HTTP/1.x and HTTP/2 from opaque TCP. An app's HTTP/1.1
//! upgrade (WebSocket) or CONNECT on the outbound listener takes steps 1 to 3, then becomes
//! such a stream (`outbound/upgrade`): an extended CONNECT for an upgrade, which the far side
//! turns back into the app's upgrade request (`inbound/upgrade`).
//!
//! `outbound/mod.rs` and `inbound/mod.rs` are the handlers that string the steps together;
//! both record each request the same way through `proxy_request.rs` (span, failure rescued
//! into a response, metrics, access log).
//!
//! # Beside the path
//! - [`config`]: the bootstrap file (schema, validation, runtime types);
//! - [`identity`]: certificates, SPIFFE IDs and verifiers;
//! - `control/`: the control-plane client (certificate, snapshots, registration);
//! - [`telemetry`]: trace propagation, spans, export, access log; [`metrics`]: Prometheus;
//! - `admin.rs` and `app_health.rs`: the admin endpoint and the app's health probe;
//! - `coalesce.rs`: under every HTTP/2 connection, a burst of frames leaves in one write;
//! - `serve.rs` and `http_limits.rs`: each listener's `limits` (connection caps, header count,
//!   the HTTP idle timeout); `inbound/accept.rs` and `inbound/forward.rs` hold the handshake
//!   and app limits;
//! - [`redirect`]: `sidecar redirect`, the nftables rules that send an unmodified app's TCP
//!   through the sidecar; [`original_dst`]: where such a connection was going;
//! - [`error`]: typed errors and the one place they become responses; [`classify`]: how a
//!   try ended; [`headers`]: hop-by-hop and mesh headers; [`body`]: the body and error types.

// Exists for the benchmarks in `benches/hot_paths.rs` only: thin wrappers over crate-private
// hot paths. Not a stable API; nothing else should use it.
#[doc(hidden)]
pub mod bench_support;
pub mod body;
pub mod classify;
pub mod config;
pub mod error;
// Exists for the fuzz targets in `fuzz/` only: thin wrappers over crate-private parsers. Not a
// stable API; nothing else should use it.
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod original_dst;
pub mod redirect;
pub mod telemetry;

mod admin;
mod app_health;
mod body_limit;
mod coalesce;
mod control;
mod detect;
mod gateway;
mod http_limits;
pub mod inbound;
mod outbound;
mod proxy_request;
mod serve;
mod splice;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use crate::body::{Body, BoxError};
pub use crate::serve::{BindError, Listeners};

use crate::admin::Admin;
use crate::config::Config;
use crate::control::{Controlled, Started};
use crate::identity::{Credentials, Identity};
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::outbound::policy::Destinations;
use crate::serve::{ConnectionCap, Drain};
use crate::splice::OpenStreams;
use crate::telemetry::Tracing;

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
    let drain = Drain {
        token: CancellationToken::new(),
        timeout: config.drain_timeout,
    };
    tokio::pin!(shutdown);

    // Admin first, so `/live` answers while the certificate is obtained. Probing starts with
    // the sidecar, so the app's status is known by the time it registers.
    let admin_addr = listeners.admin.local_addr()?;
    let (app_health, _stop_probing) = app_health::start(&config, metrics.app_healthy.clone());
    let admin = Arc::new(Admin::new(
        &config,
        metrics.clone(),
        stop_requested.clone(),
        app_health.clone(),
    )?);
    let admin_server = admin.clone().serve(listeners.admin, &config);

    // Credentials: from files, or the first certificate from the control plane.
    let cp_address = config
        .control_plane
        .as_ref()
        .map(|cp| cp.address.to_string());
    if credentials.is_none()
        && let Some(address) = &cp_address
    {
        admin.waiting_for(Some(format!(
            "waiting for a certificate from the control plane at {address}"
        )));
    }
    let obtained =
        control::credentials(credentials, &config, &stop_requested, &mut shutdown).await?;
    let Some((credentials, control)) = obtained else {
        admin_server.stop().await;
        return Ok(());
    };
    let identity = Arc::new(Identity::new(credentials)?);
    metrics.control.certificate_expiry.set(identity.not_after());

    // Both directions' proxies.
    let destinations = Destinations::from_config(&config, &identity, &metrics)?;
    let (destinations_tx, destinations_rx) = watch::channel(Arc::new(destinations));
    let tracing = Tracing::start(&config.tracing, &config.service, metrics.span_export())?;
    // TCP streams of the outbound side, whatever opened them, drained together.
    let streams = OpenStreams::default();
    let outbound = Arc::new(Outbound::new(
        &config,
        identity.id(),
        destinations_rx.clone(),
        metrics.clone(),
        tracing.spans(),
        streams.clone(),
    ));
    let inbound = Arc::new(Inbound::new(&config, metrics.clone(), tracing.spans()));
    let acceptor = TlsAcceptor::from(identity.server_config()?);

    // The control plane: snapshots, renewal and registration, once the first snapshot is in.
    let inbound_addr = match &listeners.inbound {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    // The gateway configuration the control plane declares, if any: it wins over the bootstrap's.
    let (pushed_gateway_tx, pushed_gateway) = tokio::sync::watch::channel(None);
    // The gateway's listeners as bound, which its heartbeats report.
    let (gateway_bound_tx, gateway_bound) = tokio::sync::watch::channel(Vec::new());
    let controlled = Controlled {
        identity: identity.clone(),
        destinations: destinations_tx.clone(),
        inbound: inbound.clone(),
        metrics: metrics.clone(),
        snapshot_json: admin.snapshot_json.clone(),
        app_health,
        inbound_addr,
        admin_addr,
        gateway: pushed_gateway_tx,
        gateway_bound: config.gateway.is_some().then_some(gateway_bound),
    };
    if let Some(address) = &cp_address {
        admin.waiting_for(Some(format!(
            "waiting for the first configuration snapshot from the control plane at {address}"
        )));
    }
    let started = control::start(
        control,
        &config,
        controlled,
        &drain.token,
        &stop_requested,
        &mut shutdown,
    );
    let registration = match started.await? {
        Started::Static => None,
        Started::Registered(registration) => Some(registration),
        Started::Stopped => {
            drain.token.cancel();
            admin_server.stop().await;
            tracing.shutdown(Duration::from_secs(1)).await;
            return Ok(());
        }
    };
    // Without a control plane the table never changes; the sender lives as long as the sidecar.
    let _destinations_tx = destinations_tx;

    // Listeners.
    let tcp_listeners = outbound::tcp_listen::bind(&config).await?;
    ::tracing::info!(
        identity = %identity.id(),
        outbound = %listeners.outbound.local_addr()?,
        inbound = %inbound_addr.map_or_else(|| "none (gateway)".to_owned(), |a| a.to_string()),
        admin = %admin_addr,
        app = %config.app,
        "sidecar serving"
    );
    // One connection budget for the outbound listener and destinations' `listen` addresses.
    let outbound_cap = ConnectionCap::new(config.limits.outbound.max_connections);
    let detected_http = outbound::tcp_listen::DetectedHttp {
        handle: {
            let outbound = outbound.clone();
            Arc::new(move |req| Box::pin(outbound.clone().handle(req)))
        },
        detect_timeout: config.detect_timeout,
        idle_timeout: config.idle_timeout,
        limits: config.limits.outbound.clone(),
        cap: outbound_cap.clone(),
    };
    let tcp_task = outbound::tcp_listen::spawn(
        tcp_listeners,
        config.service.as_str().into(),
        destinations_rx.clone(),
        detected_http,
        drain.clone(),
        streams.clone(),
        metrics.clone(),
    );
    let redirected = Arc::new(outbound::redirected::RedirectedTcp {
        source: config.service.as_str().into(),
        destinations: destinations_rx.clone(),
        metrics: metrics.clone(),
        idle_timeout: config.idle_timeout,
        streams,
        outside: config.outbound.unknown,
        connect_timeout: config.connect_timeout,
        log_limit: mesh_api::log_limit::LogLimit::new(10),
    });
    let gateway_task = match &config.gateway {
        Some(gateway) => {
            let outbound = outbound.clone();
            Some(
                gateway::live::start(
                    gateway.clone(),
                    pushed_gateway,
                    move |req| outbound.clone().handle(req),
                    (&config.limits.outbound, outbound_cap.clone()),
                    drain.clone(),
                    (metrics.clone(), gateway_bound_tx),
                )
                .await?,
            )
        }
        None => None,
    };
    let outbound_task = outbound::accept::spawn(
        listeners.outbound,
        (move |req| outbound.clone().handle(req), redirected),
        config.detect_timeout,
        (&config.limits.outbound, outbound_cap),
        drain.clone(),
        metrics.clone(),
    );
    // A gateway has no inbound listener: nothing in the mesh calls it.
    let inbound_task = listeners.inbound.map(|listener| {
        inbound::accept::spawn(
            listener,
            acceptor,
            (
                {
                    let inbound = inbound.clone();
                    move |caller, req| inbound.clone().handle(caller, req)
                },
                move |caller, tcp| inbound.clone().plain_tcp(caller, tcp),
            ),
            (
                config.max_connection_age,
                &config.limits.inbound,
                &config.inbound,
            ),
            identity.trust_changes(),
            drain.clone(),
            metrics.clone(),
        )
    });
    admin.waiting_for(None);
    admin.ready.store(true, Ordering::Release);

    // Drain: leave the registry, finish requests in flight, close admin, flush spans.
    tokio::select! {
        () = &mut shutdown => ::tracing::info!("shutdown signal received"),
        () = stop_requested.cancelled() => {},
    }
    admin.ready.store(false, Ordering::Release);
    metrics.taps.close();
    if let Some(registration) = registration {
        registration.leave().await;
    }
    drain.token.cancel();
    let inbound_task = async {
        match inbound_task {
            Some(task) => task.await,
            None => Ok(()),
        }
    };
    let (outbound_done, inbound_done) = tokio::join!(outbound_task, inbound_task);
    outbound_done?;
    inbound_done?;
    tcp_task.await?;
    if let Some(task) = gateway_task {
        task.await?;
    }
    admin_server.stop().await;
    // Every request is done: send the spans still queued.
    tracing.shutdown(Duration::from_secs(5)).await;
    ::tracing::info!("sidecar stopped");
    Ok(())
}
