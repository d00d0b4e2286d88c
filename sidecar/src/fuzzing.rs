//! Entry points into crate-private parsers, for the fuzz targets in `fuzz/` only.
//!
//! Each item runs the code the sidecar runs on bytes it does not control (a connection's first
//! bytes, a snapshot from the control plane) and adds no logic of its own, so the fuzzer tests
//! the real thing. This is not an API: nothing but the fuzz targets should use it, and it
//! changes whenever they need it to.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use mesh_api::proto::v1;
use opentelemetry::trace::TracerProvider as _;
use tokio::io::AsyncRead;
use tokio::sync::watch;

use crate::config::Config;
use crate::control::apply::Applier;
use crate::detect;
use crate::identity::Identity;
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::outbound::policy::Destinations;
use crate::telemetry::spans::Spans;

/// Detects the protocol of what `io` sends first, as the listeners do; returns the outcome's
/// metric label and the connection with the bytes detection read put back in front.
pub async fn detect<S>(io: S, timeout: Duration) -> io::Result<(&'static str, impl AsyncRead)>
where
    S: AsyncRead + Unpin,
{
    let (outcome, io) = detect::detect(io, timeout).await?;
    Ok((outcome.as_str(), io))
}

/// What a snapshot is applied to: a sidecar's identity, inbound handler and destination table.
pub struct SnapshotTarget {
    applier: Applier,
    /// Kept so that publishing a new table always has a receiver, as in a running sidecar.
    _table: watch::Receiver<Arc<Destinations>>,
}

impl SnapshotTarget {
    /// A sidecar configured by `config` (its inbound settings) holding `identity`, with no
    /// snapshot applied yet.
    pub fn new(config: &Config, identity: Identity) -> Self {
        let metrics = Arc::new(Metrics::new());
        // Spans as without an OTLP endpoint: applying a snapshot records none.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let spans = Spans::new(provider.tracer("fuzz"), false, 1.0);
        let inbound = Arc::new(Inbound::new(config, metrics.clone(), spans));
        let (table, receiver) = watch::channel(Arc::new(Destinations::default()));
        let applier = Applier::new(
            Arc::new(identity),
            table,
            inbound,
            metrics,
            config.connect_timeout,
            Arc::new(ArcSwapOption::empty()),
            (
                tokio::sync::watch::channel(None).0,
                std::path::PathBuf::new(),
            ),
        );
        Self {
            applier,
            _table: receiver,
        }
    }

    /// Checks and applies `snapshot` as the control-plane client does; the error says why it
    /// was rejected.
    pub fn apply(&self, snapshot: &v1::Snapshot) -> Result<(), String> {
        self.applier.apply(snapshot).map_err(|e| e.to_string())
    }
}
