//! The gateway's listeners kept in step with its configuration: the bootstrap file's, or the
//! control plane's whenever it declares one. Routes and client limits change at once, for the
//! next request; a listener added is bound; one removed stops accepting while its open
//! connections finish (the drain timeout applies); one whose address, protocol or certificate
//! files changed is both. Without news from the control plane, the configuration in force
//! stays.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use mesh_api::gateway::GatewayFile;
use mesh_api::validate::Errors;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::config::{GatewayConfig, GatewayListener as ListenerConfig, HttpListenerLimits};
use crate::metrics::Metrics;
use crate::serve::{ConnectionCap, Drain};

use super::accept::{self, GatewayStartError};
use super::listener::GatewayListener;

/// The gateway configuration the control plane declares; `None`: it declares none.
pub(crate) type Pushed = watch::Receiver<Option<Arc<GatewayConfig>>>;

/// The listeners being served, by name, with the addresses they are bound to: what the
/// gateway's heartbeats report, so `meshctl status` shows where outside clients reach it.
pub(crate) type BoundListeners = watch::Sender<Vec<(String, SocketAddr)>>;

/// The gateway configuration a snapshot carries (`gateways/<service>.yaml` as written), held to
/// the bootstrap's rules; relative certificate paths start at `base`.
pub(crate) fn parse(yaml: &str, base: &Path) -> Result<GatewayConfig, String> {
    let file: GatewayFile = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
    let mut errors = Errors::default();
    let config = mesh_api::gateway::validate(file, "", base, &mut errors);
    if errors.is_empty() {
        return Ok(config);
    }
    let lines: Vec<String> = errors
        .into_vec()
        .into_iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    Err(lines.join("; "))
}

/// How long a changed listener waits for the one it replaces to let go of its address.
const REBIND_PATIENCE: Duration = Duration::from_secs(2);
const REBIND_PAUSE: Duration = Duration::from_millis(50);

/// A listener being served.
struct Running<F> {
    config: ListenerConfig,
    /// Where it is bound.
    address: SocketAddr,
    handler: Arc<ArcSwap<GatewayListener<F>>>,
    /// Stops it accepting; its open connections then drain.
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running listeners and what new ones are made of.
struct Live<F> {
    bootstrap: Arc<GatewayConfig>,
    forward: F,
    limits: HttpListenerLimits,
    cap: ConnectionCap,
    drain: Drain,
    metrics: Arc<Metrics>,
    running: Vec<Running<F>>,
    /// Listeners removed, still draining.
    stopped: Vec<JoinHandle<()>>,
    bound: BoundListeners,
}

/// Binds the listeners of the configuration in force (the control plane's, else `bootstrap`),
/// then follows `pushed` until `drain`; each request routed, then given to `forward` (the
/// outbound proxy). `bound` always holds the listeners served. The task ends when every
/// listener has drained.
pub(crate) async fn start<F, Fut>(
    bootstrap: GatewayConfig,
    mut pushed: Pushed,
    forward: F,
    (limits, cap): (&HttpListenerLimits, ConnectionCap),
    drain: Drain,
    (metrics, bound): (Arc<Metrics>, BoundListeners),
) -> Result<JoinHandle<()>, GatewayStartError>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut live = Live {
        bootstrap: Arc::new(bootstrap),
        forward,
        limits: limits.clone(),
        cap,
        drain,
        metrics,
        running: Vec::new(),
        stopped: Vec::new(),
        bound,
    };
    let first = live.in_force(&pushed.borrow_and_update());
    // At start a listener that cannot be had stops the gateway, as a bad bootstrap does.
    if let Some(error) = live.apply(&first).await.into_iter().next() {
        live.finish().await;
        return Err(error);
    }
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = live.drain.token.cancelled() => break,
                changed = pushed.changed() => {
                    if changed.is_err() {
                        // No control plane: the configuration never changes.
                        live.drain.token.cancelled().await;
                        break;
                    }
                    let config = live.in_force(&pushed.borrow_and_update());
                    for error in live.apply(&config).await {
                        ::tracing::error!(%error, "gateway listener not started; the others \
                            serve the new configuration");
                    }
                }
            }
        }
        live.finish().await;
    }))
}

// === impl Live ===

impl<F, Fut> Live<F>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    /// The control plane's configuration when it declares one, the bootstrap's otherwise.
    fn in_force(&self, pushed: &Option<Arc<GatewayConfig>>) -> Arc<GatewayConfig> {
        pushed.clone().unwrap_or_else(|| self.bootstrap.clone())
    }

    /// Makes the running listeners those of `config`; returns the listeners that could not be
    /// started.
    async fn apply(&mut self, config: &GatewayConfig) -> Vec<GatewayStartError> {
        self.stopped.retain(|task| !task.is_finished());
        // Stop what is gone or changed first: a changed listener may keep its address.
        let (keep, stop): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| config.listeners.contains(&r.config));
        for running in stop {
            ::tracing::info!(listener = %running.config.name, address = %running.config.address,
                "gateway listener stopping; open connections finish");
            running.stop.cancel();
            self.stopped.push(running.task);
        }
        self.running = keep;
        let mut errors = Vec::new();
        for (index, listener) in config.listeners.iter().enumerate() {
            let handler = Arc::new(GatewayListener::new(
                config,
                index,
                self.forward.clone(),
                self.metrics.clone(),
            ));
            if let Some(running) = self.running.iter().find(|r| r.config == *listener) {
                running.handler.store(handler);
                continue;
            }
            match self.start_listener(listener, index, config, handler).await {
                Ok(running) => self.running.push(running),
                Err(error) => errors.push(error),
            }
        }
        ::tracing::info!(
            listeners = self.running.len(),
            routes = config.routes.len(),
            "gateway configuration in force"
        );
        let bound: Vec<(String, SocketAddr)> = config
            .listeners
            .iter()
            .filter_map(|l| self.running.iter().find(|r| r.config == *l))
            .map(|r| (r.config.name.clone(), r.address))
            .collect();
        self.bound.send_if_modified(|current| {
            let changed = *current != bound;
            *current = bound;
            changed
        });
        errors
    }

    /// Binds and serves `listener`, waiting a little for an address a stopped listener held.
    async fn start_listener(
        &self,
        listener: &ListenerConfig,
        index: usize,
        config: &GatewayConfig,
        handler: Arc<GatewayListener<F>>,
    ) -> Result<Running<F>, GatewayStartError> {
        let stop = self.drain.token.child_token();
        let deadline = tokio::time::Instant::now() + REBIND_PATIENCE;
        let bound = loop {
            match accept::bind(listener, index, &stop).await {
                Err(GatewayStartError::Bind { cause, .. })
                    if cause.kind() == std::io::ErrorKind::AddrInUse
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(REBIND_PAUSE).await;
                }
                Err(error) => {
                    stop.cancel();
                    return Err(error);
                }
                Ok(bound) => break bound,
            }
        };
        let address = bound.local_addr().unwrap_or(listener.address);
        let limits = HttpListenerLimits {
            max_header_bytes: config.clients.max_header_bytes,
            ..self.limits.clone()
        };
        let handler = Arc::new(ArcSwap::new(handler));
        let task = accept::spawn(
            bound,
            handler.clone(),
            (limits, self.cap.clone()),
            Drain {
                token: stop.clone(),
                timeout: self.drain.timeout,
            },
            self.metrics.clone(),
        );
        Ok(Running {
            config: listener.clone(),
            address,
            handler,
            stop,
            task,
        })
    }

    /// Stops every listener and waits for all to drain.
    async fn finish(self) {
        let tasks = self
            .running
            .into_iter()
            .map(|r| {
                r.stop.cancel();
                r.task
            })
            .chain(self.stopped);
        for task in tasks {
            if let Err(error) = task.await {
                ::tracing::error!(%error, "gateway listener task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_gateway_is_held_to_the_bootstraps_rules_with_paths_from_its_directory() {
        let good = "listeners:\n\
            \x20 - name: websecure\n\
            \x20   address: 127.0.0.1:8443\n\
            \x20   protocol: HTTPS\n\
            \x20   tls: { certificates: [{ cert: certs/shop.pem, key: /etc/shop-key.pem }] }\n";
        let config = parse(good, Path::new("/etc/mesh")).unwrap();
        let certificates = config.listeners[0].tls.as_ref().unwrap();
        assert_eq!(certificates[0].cert, Path::new("/etc/mesh/certs/shop.pem"));
        assert_eq!(certificates[0].key, Path::new("/etc/shop-key.pem"));

        let bad =
            format!("{good}routes: [{{ name: shop, parentRefs: [{{ name: web }}], rules: [] }}]\n");
        assert_eq!(
            parse(&bad, Path::new("/")).unwrap_err(),
            "routes[0].parentRefs[0].name: no listener named \"web\"; \
             routes[0].rules: at least one rule"
        );
        let unknown = parse("listeners: []\nroute: []\n", Path::new("/")).unwrap_err();
        assert!(unknown.contains("route"), "{unknown}");
    }
}
