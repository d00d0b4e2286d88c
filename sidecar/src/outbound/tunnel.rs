//! TCP destinations: a listener of its own per `protocol: tcp` destination (the way Consul's
//! explicit upstreams work), each accepted connection carried to the destination as one HTTP/2
//! CONNECT stream on the pooled mTLS connection to a peer sidecar.
//!
//! Steps 6 to 8 are the HTTP path's: the destination's balancer picks the endpoint (skipping
//! ejected ones; a failed connect counts towards ejection) and its connection is the one HTTP
//! requests share, with the same `connect_timeout` and identity check. There is no timeout,
//! concurrency limit or retry: a stream lasts as long as its app wants, and its bytes cannot be
//! replayed on another endpoint once sent. A connection that cannot be tunnelled is reset, so
//! the app sees a failure rather than an empty answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::{Authority, Parts};
use http::{Method, Request, StatusCode, Uri};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::body::{BoxError, empty};
use crate::config::Config;
use crate::error::Reason;
use crate::headers::MESH_ERROR;
use crate::log_limit::LogLimit;
use crate::metrics::{Direction, Label, Metrics};
use crate::serve::{self, Drain};
use crate::splice::{TcpSide, splice};

use super::policy::Destinations;

/// A `tcp` destination's listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on destinations.{destination}.listen {addr}: {source}")]
pub(crate) struct TcpListenError {
    destination: String,
    addr: SocketAddr,
    source: std::io::Error,
}

/// A tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error("destination is no longer a tcp destination of this sidecar")]
    Gone,
    #[error("peer refused the tunnel with {status} ({reason})")]
    Refused { status: StatusCode, reason: String },
    #[error(transparent)]
    Failed(BoxError),
}

impl TunnelError {
    /// The reason label: this sidecar's `x-mesh-error`, or the peer's when it is one a tunnel
    /// can get (any other peer text is not a label value: it would be unbounded).
    fn reason(&self) -> &'static str {
        match self {
            TunnelError::Gone => Reason::NoRoute.as_str(),
            TunnelError::Refused { reason, .. } => [
                Reason::Unauthorized,
                Reason::TunnelPortRefused,
                Reason::AppUnavailable,
            ]
            .into_iter()
            .map(Reason::as_str)
            .find(|known| known == reason)
            .unwrap_or("peer-refused"),
            TunnelError::Failed(error) => crate::error::reason(error.as_ref()).as_str(),
        }
    }
}

/// A `tcp` destination's name, its `listen` address and the listener bound there.
pub(crate) type Bound = (String, SocketAddr, TcpListener);

/// The bound listeners of the bootstrap file's `tcp` destinations.
pub(crate) async fn bind(config: &Config) -> Result<Vec<Bound>, TcpListenError> {
    let mut listeners = Vec::new();
    for (name, dest) in &config.destinations {
        let Some(tcp) = dest.tcp else { continue };
        let listener = TcpListener::bind(tcp.listen)
            .await
            .map_err(|source| TcpListenError {
                destination: name.clone(),
                addr: tcp.listen,
                source,
            })?;
        listeners.push((name.clone(), tcp.listen, listener));
    }
    Ok(listeners)
}

/// Serves the listeners of the `tcp` destinations until `drain`: `bound` first (the bootstrap
/// file's, bound before the sidecar started serving), then, as the destination table changes,
/// a new `listen` address is bound and one no longer in the table stops accepting. Streams
/// already open on a closed listener carry on.
pub(crate) fn spawn(
    bound: Vec<Bound>,
    source: Label,
    mut destinations: watch::Receiver<Arc<Destinations>>,
    drain: Drain,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut listeners = Listeners {
            running: HashMap::new(),
            stopped: Vec::new(),
            source,
            destinations: destinations.clone(),
            drain: drain.clone(),
            metrics,
        };
        for (name, addr, listener) in bound {
            listeners.start(name, addr, listener);
        }
        loop {
            let wanted: Vec<(String, SocketAddr)> = destinations
                .borrow_and_update()
                .tcp()
                .map(|(name, tcp)| (name.to_owned(), tcp.listen))
                .collect();
            listeners.reconcile(wanted).await;
            tokio::select! {
                () = drain.token.cancelled() => break,
                changed = destinations.changed() => if changed.is_err() {
                    drain.token.cancelled().await;
                    break;
                },
            }
        }
        listeners.stop_all().await;
    })
}

/// The running listeners, by destination and address.
struct Listeners {
    running: HashMap<(String, SocketAddr), Running>,
    /// Tasks of listeners taken out of the table, still closing.
    stopped: Vec<JoinHandle<()>>,
    source: Label,
    destinations: watch::Receiver<Arc<Destinations>>,
    drain: Drain,
    metrics: Arc<Metrics>,
}

/// One listener's task and what stops it.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

// === impl Listeners ===

impl Listeners {
    /// Opens the listeners of `wanted` that are not open yet and stops the others.
    async fn reconcile(&mut self, wanted: Vec<(String, SocketAddr)>) {
        let gone: Vec<_> = self
            .running
            .keys()
            .filter(|key| !wanted.contains(key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(running) = self.running.remove(&key) {
                tracing::info!(destination = %key.0, listen = %key.1, "tcp listener closed");
                running.stop.cancel();
                self.stopped.push(running.task);
            }
        }
        for (name, addr) in wanted {
            if self.running.contains_key(&(name.clone(), addr)) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(listener) => self.start(name, addr, listener),
                // Tried again with the next table.
                Err(source) => tracing::error!(
                    error = %TcpListenError { destination: name, addr, source },
                    "tcp destination not served"
                ),
            }
        }
        self.stopped.retain(|task| !task.is_finished());
    }

    fn start(&mut self, destination: String, addr: SocketAddr, listener: TcpListener) {
        let stop = self.drain.token.child_token();
        let tunnels = Arc::new(Tunnels {
            destination: destination.clone(),
            source: self.source.clone(),
            destinations: self.destinations.clone(),
            metrics: self.metrics.clone(),
            log_limit: LogLimit::new(10),
        });
        let drain = Drain {
            token: stop.clone(),
            timeout: self.drain.timeout,
        };
        let task = tokio::spawn(serve::serve(
            Direction::Outbound,
            listener,
            drain,
            self.metrics.clone(),
            move |tcp, peer, _watcher| tunnels.clone().forward(tcp, peer),
        ));
        tracing::info!(%destination, listen = %addr, "tcp listener open");
        self.running
            .insert((destination, addr), Running { stop, task });
    }

    async fn stop_all(self) {
        for (_, running) in self.running {
            running.stop.cancel();
            let _ = running.task.await;
        }
        for task in self.stopped {
            let _ = task.await;
        }
    }
}

/// What every connection of one `tcp` destination's listener needs.
struct Tunnels {
    destination: String,
    /// This service, the `source` of the metrics.
    source: Label,
    destinations: watch::Receiver<Arc<Destinations>>,
    metrics: Arc<Metrics>,
    /// Caps warnings about tunnels that could not be opened.
    log_limit: LogLimit,
}

// === impl Tunnels ===

impl Tunnels {
    /// Opens the tunnel for one accepted connection and copies until both ends are done.
    async fn forward(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let stack = self.destinations.borrow().get(&self.destination);
        let opened = match stack.as_ref().and_then(|s| Some((s, s.tcp()?))) {
            Some((stack, tcp_dest)) => {
                let mut balance = stack.balance().clone();
                open(&mut balance, &self.destination, tcp_dest.port).await
            }
            None => Err(TunnelError::Gone),
        };
        match (opened, stack) {
            (Ok(tunnel), Some(stack)) => {
                let metrics = self
                    .metrics
                    .tcp(Direction::Outbound, &self.source, &stack.name);
                splice(tcp, tunnel, TcpSide::Source, metrics).await;
            }
            (Err(error), _) => {
                self.metrics
                    .tcp_connect_failed(&self.destination.as_str().into(), error.reason());
                if self.log_limit.allow("failed TCP tunnels") {
                    tracing::warn!(
                        destination = %self.destination, %peer, %error,
                        "TCP connection not tunnelled"
                    );
                }
                let _ = tcp.set_zero_linger();
            }
            (Ok(_), None) => {}
        }
    }
}

/// Sends a CONNECT for `destination:port` through the balancer and waits for the tunnel.
async fn open(
    balance: &mut super::balance::Balance,
    destination: &str,
    port: u16,
) -> Result<hyper::upgrade::Upgraded, TunnelError> {
    let failed = |e: BoxError| TunnelError::Failed(e);
    let authority: Authority = format!("{destination}:{port}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| failed(e.into()))?;
    let mut parts = Parts::default();
    parts.authority = Some(authority);
    let uri = Uri::from_parts(parts).map_err(|e| failed(e.into()))?;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(uri)
        .version(http::Version::HTTP_2)
        .body(empty())
        .map_err(|e| failed(e.into()))?;
    let rsp = balance.call(req).await.map_err(failed)?;
    if rsp.status() != StatusCode::OK {
        let reason = rsp
            .headers()
            .get(MESH_ERROR)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no x-mesh-error")
            .to_owned();
        return Err(TunnelError::Refused {
            status: rsp.status(),
            reason,
        });
    }
    hyper::upgrade::on(rsp).await.map_err(|e| failed(e.into()))
}
