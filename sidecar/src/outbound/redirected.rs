//! Opaque TCP the redirect rules sent to the outbound listener: the address the app dialled (its
//! original destination) names the destination, a service's virtual address or one of its
//! endpoints, and the connection is tunnelled to it as a destination's listener would tunnel
//! it (`tunnel.rs`). A destination declared `protocol: tcp` is tunnelled before any byte is
//! read, since its server may speak first; others only once detection found no HTTP.
//!
//! A connection whose original destination is no destination of this sidecar is closed (a policy
//! to let such connections through is not built yet).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::{Label, Metrics};
use crate::splice::{AppStream, OpenStreams};

use super::policy::Destinations;
use super::tunnel::Tunnels;

/// What redirected TCP connections need.
pub(crate) struct RedirectedTcp {
    /// This service, the `source` of the metrics.
    pub(crate) source: Label,
    pub(crate) destinations: watch::Receiver<Arc<Destinations>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) idle_timeout: Duration,
    /// Streams open on the outbound side, for the drain.
    pub(crate) streams: OpenStreams,
}

// === impl RedirectedTcp ===

impl RedirectedTcp {
    /// Whether a connection dialled to `original` goes to a `protocol: tcp` destination, to be
    /// tunnelled without waiting for the client to speak.
    pub(crate) fn skips_detection(&self, original: SocketAddr) -> bool {
        self.destinations
            .borrow()
            .by_address(original)
            .is_some_and(|(_, stack)| stack.tcp().is_some())
    }

    /// Tunnels `io` to the destination at `original`, or closes it when there is none.
    pub(crate) async fn forward<S: AppStream>(
        &self,
        io: S,
        original: SocketAddr,
        peer: SocketAddr,
    ) {
        let destination = self
            .destinations
            .borrow()
            .by_address(original)
            .map(|(name, _)| name.to_owned());
        let Some(destination) = destination else {
            tracing::debug!(%peer, %original,
                "redirected TCP connection closed: its address is no destination of this sidecar");
            io.abort();
            return;
        };
        tracing::debug!(%peer, %original, %destination, "redirected TCP connection tunnelled");
        let tunnels = Arc::new(Tunnels::new(
            destination,
            self.source.clone(),
            self.destinations.clone(),
            self.metrics.clone(),
            self.idle_timeout,
        ));
        self.streams.run(tunnels.forward(io, peer)).await;
    }
}
