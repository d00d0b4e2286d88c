//! What one request has been through: how many tries, and which endpoints they went to.
//!
//! Shared (in the request's extensions) between the retry layer, which rebuilds the request for
//! each try, and the balancer, which records its choice and avoids endpoints already tried. The
//! outbound handler reads the count for `x-mesh-attempts`, even when a timeout cut the request
//! short.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use opentelemetry::trace::{SpanRef, TraceContextExt};
use opentelemetry::{Context, KeyValue};

/// Tries of one request so far.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    count: AtomicU32,
    /// Bit `i % 64` set: an endpoint whose index is `i` modulo 64 was tried. Exact up to 64
    /// endpoints; beyond, a tried endpoint is still always known, and an untried one sharing
    /// its bit may be passed over, which with at most 10 tries leaves most endpoints open.
    tried: AtomicU64,
    /// The backend (version) of a traffic split this request was given to, plus one; 0 until
    /// chosen. Every try of a request goes to the same backend.
    backend: AtomicUsize,
    /// The request's CLIENT span, for the layers' events.
    trace: Context,
}

// === impl Attempts ===

impl Attempts {
    /// A record for a request traced by the span in `trace`.
    pub(crate) fn new(trace: Context) -> Self {
        Self {
            trace,
            ..Self::default()
        }
    }

    /// The context holding the request's span.
    pub(crate) fn context(&self) -> &Context {
        &self.trace
    }

    /// The request's span (a no-op span when it is not recorded).
    pub(crate) fn span(&self) -> SpanRef<'_> {
        self.trace.span()
    }

    /// Adds an event to the request's span, building its attributes only when it records.
    pub(crate) fn event(&self, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) {
        let span = self.span();
        if span.is_recording() {
            span.add_event(name, attributes());
        }
    }

    /// Records a try sent to endpoint `index`.
    pub(crate) fn record(&self, index: usize) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.tried.fetch_or(1 << (index % 64), Ordering::Relaxed);
    }

    /// Sends every try of this request to backend `index` of the balancer (a route's
    /// `backendRefs` chose it), whatever the destination's own split says.
    pub(crate) fn pin_backend(&self, index: usize) {
        self.backend
            .store(index.saturating_add(1), Ordering::Relaxed);
    }

    /// The backend this request was pinned to or given, if any yet.
    pub(crate) fn pinned(&self) -> Option<usize> {
        self.backend.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Tries made.
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// The backend chosen for this request, choosing it with `choose` on the first call.
    pub(crate) fn backend(&self, choose: impl FnOnce() -> usize) -> usize {
        match self.backend.load(Ordering::Relaxed) {
            0 => {
                let chosen = choose();
                self.backend
                    .store(chosen.saturating_add(1), Ordering::Relaxed);
                chosen
            }
            n => n - 1,
        }
    }

    /// Whether endpoint `index` was tried already (or, past 64 endpoints, one sharing its bit).
    pub(crate) fn tried(&self, index: usize) -> bool {
        self.tried.load(Ordering::Relaxed) & (1 << (index % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tried_endpoint_is_known_at_any_index() {
        let a = Attempts::default();
        for index in [3, 70, 200] {
            a.record(index);
        }
        assert_eq!(a.count(), 3);
        assert!([3, 70, 200].iter().all(|&i| a.tried(i)));
        // Past 64 endpoints an untried one may share a bit (134 = 70 + 64), never a tried one
        // go unnoticed; below 64 the record is exact.
        assert!(a.tried(134));
        assert!(!a.tried(4) && !a.tried(71) && !a.tried(63));
    }
}
