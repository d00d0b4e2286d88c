//! Opaque TCP the redirect rules sent to the outbound listener: the address the app dialled (its
//! original destination) names the destination, a service's virtual address or one of its
//! endpoints, and the connection is tunnelled to it as a destination's listener would tunnel
//! it (`tunnel.rs`). A destination declared `protocol: tcp`, or a port its Service marks as
//! opaque (`opaque_ports`), is tunnelled before any byte is read, since its server may speak
//! first; others only once detection found no HTTP (or heard nothing within `detect_timeout`:
//! a server that speaks first).
//!
//! A connection whose original destination is no destination of this sidecar is outside the
//! mesh, and `outbound.unknown` decides: `passthrough` connects to that address directly, in
//! plain TCP, and splices the two connections (`passthrough.rs`); `deny` resets it. Either is
//! counted by protocol (`tcp`); a refusal or a failed connect is logged, within a cap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::UnknownDestination;
use crate::error::Reason;
use crate::metrics::{Direction, Label, Metrics};
use crate::splice::{AppStream, OpenStreams, Splice, TcpSide, splice_passthrough};
use mesh_api::log_limit::LogLimit;

use super::passthrough;
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
    /// What a connection outside the mesh gets (`outbound.unknown`).
    pub(crate) outside: UnknownDestination,
    /// How long a passthrough connection may take to open.
    pub(crate) connect_timeout: Duration,
    /// Caps warnings about connections outside the mesh refused or not reached.
    pub(crate) log_limit: LogLimit,
}

// === impl RedirectedTcp ===

impl RedirectedTcp {
    /// Whether a connection dialled to `original` goes to a `protocol: tcp` destination or an
    /// opaque port of one (its Service's `appProtocol`), to be tunnelled without waiting for
    /// the client to speak.
    pub(crate) fn skips_detection(&self, original: SocketAddr) -> bool {
        self.destinations
            .borrow()
            .by_address(original)
            .is_some_and(|(_, stack)| stack.skips_detection(original.port()))
    }

    /// Tunnels `io` to the destination at `original`; when there is none, passes it through
    /// or refuses it, as `outbound.unknown` says.
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
            return self.outside(io, original, peer).await;
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

    /// A connection to `original`, outside the mesh: spliced to it, or reset.
    async fn outside<S: AppStream>(&self, io: S, original: SocketAddr, peer: SocketAddr) {
        if self.outside == UnknownDestination::Deny {
            self.metrics.outbound_denied("tcp");
            if self
                .log_limit
                .allow("refused TCP connections outside the mesh")
            {
                tracing::warn!(%peer, %original,
                    "redirected TCP connection reset: its address is no destination of this \
                     sidecar, and outbound.unknown: deny refuses addresses outside the mesh");
            }
            io.abort();
            return;
        }
        self.metrics.outbound_passthrough("tcp");
        let label: Label = passthrough::DESTINATION.into();
        let upstream = match passthrough::connect(original, self.connect_timeout).await {
            Ok(upstream) => upstream,
            Err(error) => {
                let reason = match error.source.downcast_ref::<std::io::Error>() {
                    Some(_) => Reason::ConnectRefused,
                    None => Reason::ConnectTimeout,
                };
                self.metrics.tcp_connect_failed(&label, reason.as_str());
                if self.log_limit.allow("failed TCP passthroughs") {
                    tracing::warn!(%peer, %error, "redirected TCP connection reset");
                }
                io.abort();
                return;
            }
        };
        tracing::debug!(%peer, %original, "redirected TCP connection passed through");
        let how = Splice {
            side: TcpSide::Source,
            metrics: self.metrics.tcp(Direction::Outbound, &self.source, &label),
            idle_timeout: self.idle_timeout,
        };
        self.streams
            .run(splice_passthrough(io, upstream, how))
            .await;
    }
}
