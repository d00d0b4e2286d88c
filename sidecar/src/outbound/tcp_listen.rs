//! The listeners of destinations with a `listen` address, one per destination (the way
//! Consul's explicit upstreams work), following the destination table: when the bootstrap file
//! or a snapshot adds, moves or removes a `listen` address, the new one opens and the old one
//! stops accepting. Streams already open on a closed listener carry on.
//!
//! A connection to a `protocol: tcp` destination is handed to [`super::tunnel`] at once, no
//! byte read (its server may speak first). On an `http` destination's listener the protocol is
//! detected first (`detect.rs`): HTTP is served by the outbound handler as requests to the
//! destination (`Host: <destination>`, so its routes, retries and timeouts apply), anything
//! else, or a client silent for `detect_timeout`, is tunnelled like a `tcp` destination's.
//!
//! On shutdown the listeners close with the others, and the streams still open get the same
//! `drain_timeout` as HTTP requests to finish; whatever is left then is cut.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::coalesce::Coalesced;
use crate::config::{Config, HttpListenerLimits};
use crate::detect::{Protocol, Rewind, detect};
use crate::metrics::{Direction, Label, Metrics};
use crate::serve::{self, ConnectionCap, Drain, Draining, http_server};
use crate::splice::{AppStream, OpenStreams};

use super::accept::{Handler, serve_http};
use super::policy::Destinations;
use super::tunnel::Tunnels;

/// A `tcp` destination's listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on destinations.{destination}.listen {addr}: {source}")]
pub(crate) struct TcpListenError {
    destination: String,
    addr: SocketAddr,
    source: std::io::Error,
}

/// A `tcp` destination's name, its `listen` address and the listener bound there.
pub(crate) type Bound = (String, SocketAddr, TcpListener);

/// The bound listeners of the bootstrap file's `tcp` destinations.
pub(crate) async fn bind(config: &Config) -> Result<Vec<Bound>, TcpListenError> {
    let mut listeners = Vec::new();
    for (name, dest) in &config.destinations {
        // `tcp` destinations, and `http` ones with `listen`.
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

/// What the listeners hand detected HTTP to, how long they wait for a client to speak, how
/// long a stream may then be quiet, and the outbound listener's limits, which apply here too
/// (its connection cap is shared).
pub(crate) struct DetectedHttp {
    /// The outbound handler.
    pub(crate) handle: Handler,
    pub(crate) detect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) limits: HttpListenerLimits,
    pub(crate) cap: ConnectionCap,
}

/// Serves the listeners of destinations with `listen` until `drain`: `bound` first (the
/// bootstrap file's, bound before the sidecar started serving), then, as the destination table
/// changes, a new `listen` address is bound and one no longer in the table stops accepting.
/// Streams already open on a closed listener carry on.
pub(crate) fn spawn(
    bound: Vec<Bound>,
    source: Label,
    mut destinations: watch::Receiver<Arc<Destinations>>,
    http: DetectedHttp,
    drain: Drain,
    streams: OpenStreams,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut listeners = Listeners {
            running: HashMap::new(),
            stopped: Vec::new(),
            streams,
            source,
            destinations: destinations.clone(),
            server: Arc::new(http_server(&http.limits)),
            http: Arc::new(http),
            drain: drain.clone(),
            metrics,
        };
        for (name, addr, listener) in bound {
            listeners.start(name, addr, listener);
        }
        loop {
            let wanted: Vec<(String, SocketAddr)> = destinations
                .borrow_and_update()
                .listeners()
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
    /// Streams open on any of the listeners (and the outbound side's others), for the drain.
    streams: OpenStreams,
    source: Label,
    destinations: watch::Receiver<Arc<Destinations>>,
    http: Arc<DetectedHttp>,
    /// The HTTP server of detected HTTP.
    server: Arc<auto::Builder<TokioExecutor>>,
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
        let accepted = Arc::new(Accepted {
            tunnels: Arc::new(Tunnels::new(
                destination.clone(),
                self.source.clone(),
                self.destinations.clone(),
                self.metrics.clone(),
                self.http.idle_timeout,
            )),
            authority: HeaderValue::from_str(&destination).ok(),
            destination: destination.clone(),
            destinations: self.destinations.clone(),
            http: self.http.clone(),
            server: self.server.clone(),
            streams: self.streams.clone(),
            metrics: self.metrics.clone(),
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
            self.http.cap.clone(),
            move |tcp, peer, draining| accepted.clone().serve(tcp, peer, draining),
        ));
        tracing::info!(%destination, listen = %addr, "tcp listener open");
        self.running
            .insert((destination, addr), Running { stop, task });
    }

    /// Closes every listener, then gives the open streams the drain time to end.
    async fn stop_all(self) {
        for (_, running) in self.running {
            running.stop.cancel();
            let _ = running.task.await;
        }
        for task in self.stopped {
            let _ = task.await;
        }
        self.streams.drain(self.drain.timeout).await;
    }
}

/// What each connection on one destination's listener needs.
struct Accepted {
    destination: String,
    /// `Host` of the HTTP detected here: the destination's name.
    authority: Option<HeaderValue>,
    tunnels: Arc<Tunnels>,
    destinations: watch::Receiver<Arc<Destinations>>,
    http: Arc<DetectedHttp>,
    server: Arc<auto::Builder<TokioExecutor>>,
    streams: OpenStreams,
    metrics: Arc<Metrics>,
}

// === impl Accepted ===

impl Accepted {
    /// One connection: tunnelled at once to a `tcp` destination; detected, then served as
    /// HTTP or tunnelled, on an `http` one's listener.
    async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, draining: Draining) {
        let detects = self
            .destinations
            .borrow()
            .get(&self.destination)
            .and_then(|stack| stack.listener())
            .is_some_and(|listener| listener.detect);
        if !detects {
            return self.tunnel(tcp, peer).await;
        }
        let (outcome, io) = match detect(tcp, self.http.detect_timeout).await {
            Ok(detected) => detected,
            Err(error) => {
                tracing::debug!(destination = %self.destination, %peer, %error,
                    "connection failed before it spoke");
                return;
            }
        };
        self.metrics.protocol_detected(outcome.as_str());
        if outcome.protocol() == Protocol::Tcp {
            tracing::debug!(destination = %self.destination, %peer, outcome = outcome.as_str(),
                "not HTTP: tunnelled as TCP");
            return self.tunnel(io, peer).await;
        }
        self.serve_http(
            Coalesced::new(io, outcome.protocol() == Protocol::H2),
            draining,
        )
        .await;
    }

    /// Tunnels a connection, counted among the open streams until it ends or is cut.
    async fn tunnel<S: AppStream>(&self, tcp: S, peer: SocketAddr) {
        self.streams
            .run(self.tunnels.clone().forward(tcp, peer))
            .await;
    }

    /// Serves detected HTTP: each request is one to the destination, whatever host it named.
    /// The future owns what it needs, so it holds no borrow of `self` across its awaits.
    fn serve_http(
        &self,
        io: Coalesced<Rewind<TcpStream>>,
        draining: Draining,
    ) -> impl Future<Output = ()> + Send + 'static {
        let handle = self.http.handle.clone();
        let authority = self.authority.clone();
        let server = self.server.clone();
        let http = self.http.clone();
        async move {
            let service = move |mut req: Request<Incoming>| {
                if let Some(authority) = authority.clone() {
                    name_destination(&mut req, &authority);
                }
                handle(req)
            };
            serve_http(&server, &http.limits, io, service, draining).await;
        }
    }
}

/// Makes `req` name the destination whose listener it came in on, as an app would with
/// `Host: <destination>` on the outbound listener.
fn name_destination<B>(req: &mut Request<B>, authority: &HeaderValue) {
    req.headers_mut().insert(HOST, authority.clone());
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = authority.to_str().ok().and_then(|a| a.parse().ok());
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_http_names_the_destination() {
        let authority = HeaderValue::from_static("inventory");
        let mut h1 = Request::get("/stock")
            .header(HOST, "127.0.0.1:8090")
            .body(())
            .unwrap();
        name_destination(&mut h1, &authority);
        assert_eq!(h1.headers()[HOST], "inventory");
        assert_eq!(h1.uri(), "/stock");
        let mut h2 = Request::get("http://localhost:8090/stock?x=1")
            .body(())
            .unwrap();
        name_destination(&mut h2, &authority);
        assert_eq!(h2.uri(), "http://inventory/stock?x=1");
    }
}
