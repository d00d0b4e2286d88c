//! What one request has been through: how many tries, and which endpoints they went to.
//!
//! Shared (in the request's extensions) between the retry layer, which rebuilds the request for
//! each try, and the balancer, which records its choice and avoids endpoints already tried. The
//! outbound handler reads the count for `x-mesh-attempts`, even when a timeout cut the request
//! short.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Tries of one request so far.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    count: AtomicU32,
    /// Bit i set: endpoint i was tried (endpoints past 64 are not tracked).
    tried: AtomicU64,
}

// === impl Attempts ===

impl Attempts {
    /// Records a try sent to endpoint `index`.
    pub(crate) fn record(&self, index: usize) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if index < 64 {
            self.tried.fetch_or(1 << index, Ordering::Relaxed);
        }
    }

    /// Tries made.
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether endpoint `index` was tried already.
    pub(crate) fn tried(&self, index: usize) -> bool {
        index < 64 && self.tried.load(Ordering::Relaxed) & (1 << index) != 0
    }
}
