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

pub mod classify;
pub mod config;
pub mod error;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod telemetry;

mod admin;
pub mod inbound;
mod outbound;
mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::config::{Config, ListenAddrs};
use crate::identity::Credentials;
use crate::inbound::Inbound;
use crate::metrics::{Direction, Metrics};
use crate::outbound::Outbound;
use crate::outbound::policy::Destinations;
use crate::telemetry::Tracing;

/// The body type inside the proxy: a boxed stream of bytes, never collected whole.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, error::BoxError>;

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

/// Runs a sidecar on bound listeners until `shutdown` completes or `POST /shutdown` arrives,
/// then drains in-flight requests (at most `config.drain_timeout`) and returns.
pub async fn run(
    config: Config,
    credentials: Credentials,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let drain = CancellationToken::new();
    let admin_stop = CancellationToken::new();

    let destinations = Destinations::build(
        &config.destinations,
        &credentials,
        config.connect_timeout,
        &metrics,
    )?;
    // The sender stays alive for the life of the sidecar; a control-plane client will publish
    // new tables through it.
    let (_destinations_tx, destinations_rx) = watch::channel(Arc::new(destinations));
    let tracing = Tracing::start(&config.tracing, &config.service, metrics.span_export())?;
    let outbound = Arc::new(Outbound::new(
        &config.service,
        credentials.id(),
        destinations_rx,
        metrics.clone(),
        tracing.tracer().clone(),
        config.access_log,
    ));
    let inbound = Arc::new(Inbound::new(
        &config,
        metrics.clone(),
        tracing.tracer().clone(),
    ));
    let acceptor = TlsAcceptor::from(credentials.server_config()?);
    let admin = Arc::new(Admin {
        ready: AtomicBool::new(false),
        config_json: {
            let mut json = serde_json::to_vec_pretty(&config)?;
            json.push(b'\n');
            json.into()
        },
        metrics: metrics.clone(),
        shutdown: drain.clone(),
    });

    ::tracing::info!(
        identity = %credentials.id(),
        outbound = %listeners.outbound.local_addr()?,
        inbound = %listeners.inbound.local_addr()?,
        admin = %listeners.admin.local_addr()?,
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
        move |tcp, _peer, watcher| {
            let outbound = outbound.clone();
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
        },
    ));

    let inbound_metrics = metrics.clone();
    let inbound_task = tokio::spawn(serve::serve(
        Direction::Inbound,
        listeners.inbound,
        drain.clone(),
        config.drain_timeout,
        metrics.clone(),
        move |tcp, peer, watcher| {
            let (inbound, acceptor, metrics) =
                (inbound.clone(), acceptor.clone(), inbound_metrics.clone());
            async move {
                let (tls, caller) = match inbound::identify::identify(
                    &acceptor,
                    tcp,
                    TLS_HANDSHAKE_TIMEOUT,
                )
                .await
                {
                    Ok(ok) => ok,
                    Err(error) => {
                        metrics.tls_failure(Direction::Inbound, error.reason());
                        ::tracing::warn!(%peer, reason = error.reason(), %error, "inbound connection refused");
                        return;
                    }
                };
                ::tracing::debug!(%peer, %caller, "inbound connection identified");
                let caller = Arc::new(inbound::Caller::new(caller, peer));
                let http = http_server();
                let conn = http.serve_connection(
                    TokioIo::new(tls),
                    service_fn(move |req| inbound.clone().handle(caller.clone(), req)),
                );
                if let Err(error) = watcher.watch(conn.into_owned()).await {
                    ::tracing::debug!(%peer, %error, "inbound connection closed with error");
                }
            }
        },
    ));

    let admin_http = {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new());
        b
    };
    let admin_for_conns = admin.clone();
    let admin_task = tokio::spawn(serve::serve(
        Direction::Admin,
        listeners.admin,
        admin_stop.clone(),
        config.drain_timeout,
        metrics.clone(),
        move |tcp, _peer, watcher| {
            let admin = admin_for_conns.clone();
            let conn = admin_http.serve_connection(
                TokioIo::new(tcp),
                service_fn(move |req| admin.clone().handle(req)),
            );
            let conn = watcher.watch(conn);
            async move {
                let _ = conn.await;
            }
        },
    ));

    admin.ready.store(true, Ordering::Release);
    tokio::select! {
        () = shutdown => ::tracing::info!("shutdown signal received"),
        () = drain.cancelled() => {},
    }
    admin.ready.store(false, Ordering::Release);
    drain.cancel();
    let (outbound_done, inbound_done) = tokio::join!(outbound_task, inbound_task);
    outbound_done?;
    inbound_done?;
    admin_stop.cancel();
    admin_task.await?;
    // Every request is done: send the spans still queued.
    tracing.shutdown(Duration::from_secs(5)).await;
    ::tracing::info!("sidecar stopped");
    Ok(())
}
