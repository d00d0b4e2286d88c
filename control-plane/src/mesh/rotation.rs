//! Root rotation gating: a root becomes the signer only once every live instance runs a
//! snapshot that trusts it, and leaves the bundle only once no live instance holds a certificate
//! it issued. Until a lease has passed after a start, the registry cannot say either.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::registry::Registry;
use crate::ca::{RootInfo, RotationError};

/// Why an admin CA operation was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// The operation is unsafe now; `force` overrides.
    #[error("{0}")]
    Conflict(String),
    /// No such root.
    #[error("{0}")]
    NotFound(String),
    /// The CA refused.
    #[error("{0}")]
    Rotation(#[from] RotationError),
}

/// The first snapshot version whose bundle holds each root.
#[derive(Debug, Default)]
pub(super) struct RootsSince(HashMap<String, u64>);

impl RootsSince {
    /// Every root of a CA loaded at start, trusted since `version`.
    pub(super) fn new(roots: Vec<RootInfo>, version: u64) -> Self {
        Self(roots.into_iter().map(|r| (r.id, version)).collect())
    }

    /// Records that root `id` is in bundles from `version` on.
    pub(super) fn added(&mut self, id: &str, version: u64) {
        self.0.insert(id.to_owned(), version);
    }

    /// Forgets roots no longer in the bundle.
    pub(super) fn keep(&mut self, roots: &[RootInfo]) {
        self.0.retain(|id, _| roots.iter().any(|r| &r.id == id));
    }

    /// The first version trusting root `id` (0 when unknown).
    pub(super) fn since(&self, id: &str) -> u64 {
        self.0.get(id).copied().unwrap_or(0)
    }
}

/// How long the registry may still be refilling, `up` after a start: until a lease has passed,
/// live sidecars may not have registered again.
pub(super) fn warming_left(up: Duration, lease: Duration) -> Option<Duration> {
    lease.checked_sub(up).filter(|left| !left.is_zero())
}

/// After a restart the registry is empty until sidecars register again; until a lease has
/// passed, it cannot say who trusts what.
pub(super) fn warmed_up(up: Duration, lease: Duration) -> Result<(), AdminError> {
    if up < lease {
        return Err(AdminError::Conflict(format!(
            "the control plane started {:.1}s ago and sidecars may still be registering \
             again; retry after the lease ({}), or force",
            up.as_secs_f64(),
            humantime::format_duration(lease)
        )));
    }
    Ok(())
}

/// Refuses to make root `id` the signer while a live instance has not acknowledged or applied
/// a snapshot from `since` on (the first that trusts it).
pub(super) fn check_use(
    registry: &Registry,
    lease: Duration,
    now: Instant,
    id: &str,
    since: u64,
) -> Result<(), AdminError> {
    let behind: Vec<String> = registry
        .live(lease, now)
        .filter_map(|(key, record)| {
            let ack = registry.ack_of(key).map_or(0, |a| a.acked_version);
            let applied = ack.max(record.applied_version);
            (applied < since).then(|| format!("{}/{} (at {applied})", key.0, key.1))
        })
        .collect();
    if !behind.is_empty() {
        return Err(AdminError::Conflict(format!(
            "{} instance(s) have not acknowledged a snapshot (version {since} or later) \
             that trusts root {id}: {}; wait for them, or force",
            behind.len(),
            sample(&behind)
        )));
    }
    Ok(())
}

/// Refuses to remove `root` while a live instance holds a certificate it issued.
pub(super) fn check_remove(
    registry: &Registry,
    lease: Duration,
    now: Instant,
    root: &RootInfo,
) -> Result<(), AdminError> {
    let holders: Vec<String> = registry
        .live(lease, now)
        .filter(|(_, record)| record.issuer_sha256 == root.sha256)
        .map(|(key, _)| format!("{}/{}", key.0, key.1))
        .collect();
    if !holders.is_empty() {
        return Err(AdminError::Conflict(format!(
            "{} instance(s) still hold a certificate issued by root {}: {}; wait for \
             them to renew, or force",
            holders.len(),
            root.id,
            sample(&holders)
        )));
    }
    Ok(())
}

/// The first five items, for a message.
fn sample(items: &[String]) -> String {
    let mut text = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        text.push_str(", ...");
    }
    text
}
