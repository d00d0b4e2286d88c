//! A cap on warnings per second, so that an outage or a flood of bad callers does not flood the
//! logs; shared by the sidecar and the control plane.
//!
//! Every failure is counted in metrics (a failed request is also marked on its span); its
//! warning line is for the operator reading logs, who needs examples, not ten thousand copies a
//! second. Past the cap, warnings are counted and one line says how many were left out.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Allows at most `per_second` warnings in each second.
#[derive(Debug)]
pub struct LogLimit {
    per_second: u64,
    epoch: Instant,
    /// The second (since `epoch`) being counted, and how many warnings it has had.
    window: AtomicU64,
    count: AtomicU64,
    suppressed: AtomicU64,
}

// === impl LogLimit ===

impl LogLimit {
    /// At most `per_second` warnings in each second.
    pub fn new(per_second: u64) -> Self {
        Self {
            per_second,
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a warning may be logged now. When a new second starts after warnings were
    /// suppressed, says how many.
    pub fn allow(&self, what: &'static str) -> bool {
        let second = self.epoch.elapsed().as_secs();
        let window = self.window.load(Ordering::Acquire);
        if second != window
            && self
                .window
                .compare_exchange(window, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.count.store(0, Ordering::Release);
            let suppressed = self.suppressed.swap(0, Ordering::AcqRel);
            if suppressed > 0 {
                tracing::warn!(
                    suppressed,
                    "{what}: {suppressed} more warnings were not logged"
                );
            }
        }
        if self.count.fetch_add(1, Ordering::AcqRel) < self.per_second {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn at_most_the_cap_per_second() {
        let limit = LogLimit::new(3);
        let allowed = (0..10).filter(|_| limit.allow("test")).count();
        assert_eq!(allowed, 3);
        assert_eq!(limit.suppressed.load(Ordering::Acquire), 7);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limit.allow("test"));
        assert_eq!(limit.suppressed.load(Ordering::Acquire), 0);
    }
}
