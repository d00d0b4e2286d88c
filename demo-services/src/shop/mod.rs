//! The commerce demo: five small services that call each other through their sidecars.
//!
//! Every service shares the same frame, [`App`]: `/health`, the fault knobs under `/admin/`,
//! injected faults in front of the business endpoints, and the `x-demo-instance` header on
//! every response, so the mesh's load balancing is visible from outside.

pub mod dial;
pub mod faults;
pub mod http;
pub mod input;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod store;
pub mod storefront;
pub mod upstream;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::{HeaderName, HeaderValue};
use ::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::faults::{FaultState, Faults, FaultsPatch};
use self::http::{ApiError, Reply, bytes_response, read_json, reply};
pub use self::upstream::Calls;
use self::upstream::Upstream;

pub use self::input::{Item, MAX_ITEMS, MAX_QTY, check_id, check_items, check_text};
use crate::server::Body;

/// Header naming the instance that answered.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("x-demo-instance");

/// How long after `POST /admin/crash` the process exits, so the 202 reaches the caller.
const CRASH_DELAY: Duration = Duration::from_millis(50);

/// The services of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Service {
    Storefront,
    Orders,
    Inventory,
    Payments,
    Notifications,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Self::Storefront,
        Self::Orders,
        Self::Inventory,
        Self::Payments,
        Self::Notifications,
    ];

    /// The name other services use in `Host` and the mesh uses in its configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Storefront => "storefront",
            Self::Orders => "orders",
            Self::Inventory => "inventory",
            Self::Payments => "payments",
            Self::Notifications => "notifications",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a service instance needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: Service,
    /// Shown in `x-demo-instance` and logs.
    pub instance: String,
    /// Where calls to other services go.
    pub calls: Calls,
    /// Holds `<service>.sqlite`.
    pub data_dir: PathBuf,
    pub faults: Faults,
    /// Bound on every outgoing call.
    pub upstream_timeout: Duration,
    /// How often orders retries releases that failed while the order was placed.
    pub release_retry_every: Duration,
}

impl Config {
    /// Defaults for everything but what each instance must be told.
    pub fn new(service: Service, calls: Calls, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            service,
            instance: service.name().to_owned(),
            calls,
            data_dir: data_dir.into(),
            faults: Faults::default(),
            upstream_timeout: Duration::from_secs(10),
            release_retry_every: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid instance name {0:?}")]
    Instance(String),
    #[error(transparent)]
    Outbound(#[from] upstream::InvalidOutbound),
    #[error("invalid initial faults: {0}")]
    Faults(ApiError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// The business part of each service.
enum Logic {
    Storefront(storefront::Storefront),
    Orders(orders::Orders),
    Inventory(inventory::Inventory),
    Payments(payments::Payments),
    Notifications(notifications::Notifications),
}

struct Inner {
    service: Service,
    instance: String,
    instance_header: HeaderValue,
    faults: FaultState,
    crash: watch::Sender<bool>,
    logic: Logic,
}

/// One running service instance; clones share it.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

impl App {
    /// Opens the service's store (migrating and seeding it) and gets ready to serve.
    pub async fn open(config: Config) -> Result<Self, StartError> {
        let instance_header = HeaderValue::from_str(&config.instance)
            .ok()
            .filter(|_| !config.instance.is_empty())
            .ok_or_else(|| StartError::Instance(config.instance.clone()))?;
        let faults = Faults::default()
            .patched(&FaultsPatch {
                latency_ms: Some(config.faults.latency_ms),
                error_rate: Some(config.faults.error_rate),
                error_status: Some(config.faults.error_status),
                fail_next: Some(config.faults.fail_next),
            })
            .map_err(StartError::Faults)?;
        let upstream = Upstream::new(&config.calls, config.upstream_timeout)?;
        let dir = &config.data_dir;
        let logic = match config.service {
            Service::Storefront => Logic::Storefront(storefront::Storefront::new(upstream)),
            Service::Orders => Logic::Orders(
                orders::Orders::open(dir, upstream, config.release_retry_every).await?,
            ),
            Service::Inventory => Logic::Inventory(inventory::Inventory::open(dir).await?),
            Service::Payments => Logic::Payments(payments::Payments::open(dir).await?),
            Service::Notifications => {
                Logic::Notifications(notifications::Notifications::open(dir).await?)
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                service: config.service,
                instance: config.instance,
                instance_header,
                faults: FaultState::new(faults),
                crash: watch::Sender::new(false),
                logic,
            }),
        })
    }

    pub fn service(&self) -> Service {
        self.inner.service
    }

    /// Resolves once `POST /admin/crash` has been answered; the embedder then exits.
    pub async fn crash_requested(&self) {
        let mut crash = self.inner.crash.subscribe();
        // The sender lives as long as `self`, so this only ends by a crash request.
        let _ = crash.wait_for(|crashed| *crashed).await;
    }

    /// Answers one request; never panics, every error is a JSON response.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut rsp = self.route(req).await;
        tracing::debug!(%method, %path, status = rsp.status().as_u16(), "request");
        rsp.headers_mut()
            .insert(INSTANCE_HEADER, self.inner.instance_header.clone());
        rsp
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let inner = &self.inner;
        let path = req.uri().path();
        let result = if path == "/health" {
            if matches!(*req.method(), Method::GET | Method::HEAD) {
                Ok(bytes_response(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"ok"),
                ))
            } else {
                Err(ApiError::MethodNotAllowed)
            }
        } else if path.starts_with("/admin/") {
            self.admin(req).await
        } else {
            let name = inner.service.name();
            if let Some(injected) = inner.faults.inject(name, &inner.instance).await {
                return injected;
            }
            match &inner.logic {
                Logic::Storefront(s) => s.handle(req).await,
                Logic::Orders(s) => s.handle(req).await,
                Logic::Inventory(s) => s.handle(req).await,
                Logic::Payments(s) => s.handle(req).await,
                Logic::Notifications(s) => s.handle(req).await,
            }
        };
        result.unwrap_or_else(ApiError::into_response)
    }

    async fn admin(&self, req: Request<Incoming>) -> Reply {
        let faults = &self.inner.faults;
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/admin/faults") => reply(StatusCode::OK, &faults.get().await),
            (Method::PUT, "/admin/faults") => {
                let patch: FaultsPatch = read_json(req).await?;
                let now = faults.apply(&patch).await?;
                tracing::info!(?now, "faults changed");
                reply(StatusCode::OK, &now)
            }
            (Method::POST, "/admin/crash") => {
                tracing::warn!("crash requested");
                let crash = self.inner.crash.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CRASH_DELAY).await;
                    crash.send_replace(true);
                });
                reply(StatusCode::ACCEPTED, &json!({"crashing": true}))
            }
            (_, "/admin/faults" | "/admin/crash") => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NoRoute),
        }
    }
}

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: App) {
    serve_until(listener, app, std::future::pending()).await;
}

/// Serves `app` on `listener` until `stop` completes, then lets in-flight requests finish
/// (see [`crate::server::serve_until`]); `false` when some did not within the limit.
pub async fn serve_until(listener: TcpListener, app: App, stop: impl Future<Output = ()>) -> bool {
    crate::server::serve_until(
        listener,
        move |req| {
            let app = app.clone();
            async move { app.handle(req).await }
        },
        stop,
    )
    .await
}
