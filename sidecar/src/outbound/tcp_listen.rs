//! The listeners of `protocol: tcp` destinations, one per destination (the way Consul's
//! explicit upstreams work), following the destination table: when the bootstrap file or a
//! snapshot adds, moves or removes a `listen` address, the new one opens and the old one stops
//! accepting. Streams already open on a closed listener carry on. Each accepted connection is
//! handed to [`super::tunnel`].
//!
//! On shutdown the listeners close with the others, and the streams still open get the same
//! `drain_timeout` as HTTP requests to finish; whatever is left then is cut.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::{Direction, Label, Metrics};
use crate::serve::{self, Drain};

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
            streams: Arc::new(watch::Sender::new(0)),
            cut: CancellationToken::new(),
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
    /// Streams open on any of the listeners, for the drain to wait on.
    streams: Arc<watch::Sender<usize>>,
    /// Ends every stream still open when the drain time is up.
    cut: CancellationToken,
    source: Label,
    destinations: watch::Receiver<Arc<Destinations>>,
    drain: Drain,
    metrics: Arc<Metrics>,
}

/// Counts one stream in `Listeners::streams` for as long as it lives.
struct OpenStream(Arc<watch::Sender<usize>>);

impl OpenStream {
    fn new(streams: &Arc<watch::Sender<usize>>) -> Self {
        streams.send_modify(|n| *n += 1);
        Self(streams.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
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
        let tunnels = Arc::new(Tunnels::new(
            destination.clone(),
            self.source.clone(),
            self.destinations.clone(),
            self.metrics.clone(),
        ));
        let drain = Drain {
            token: stop.clone(),
            timeout: self.drain.timeout,
        };
        let task = tokio::spawn(serve::serve(
            Direction::Outbound,
            listener,
            drain,
            self.metrics.clone(),
            {
                let (streams, cut) = (self.streams.clone(), self.cut.clone());
                move |tcp, peer, _watcher| {
                    let open = OpenStream::new(&streams);
                    let forward = tunnels.clone().forward(tcp, peer);
                    let cut = cut.clone();
                    async move {
                        tokio::select! {
                            () = forward => {}
                            () = cut.cancelled() => {}
                        }
                        drop(open);
                    }
                }
            },
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
        let mut open = self.streams.subscribe();
        let streams = *open.borrow_and_update();
        if streams == 0 {
            return;
        }
        tracing::info!(streams, "draining tcp streams");
        let drain_timeout = self.drain.timeout;
        if tokio::time::timeout(drain_timeout, open.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(?drain_timeout, "drain time is up; cutting tcp streams");
            self.cut.cancel();
        }
    }
}
