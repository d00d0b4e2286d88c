//! Peak-EWMA load of one endpoint, for the power-of-two-choices balancer.
//!
//! The estimate jumps to any latency above it (peak) and otherwise moves towards new samples
//! as a moving average weighted by time (decay 10 s), so one slow response is noticed at once
//! and recovery is believed gradually. Between samples the estimate decays towards zero, so an
//! endpoint that was slow is tried again eventually instead of being starved forever. Load is
//! the estimate times (requests in flight + 1). A failed request counts as a slow one.
//!
//! State is three atomics; concurrent updates may lose a sample, which only blurs an estimate.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Estimate for an endpoint with no samples yet.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Time constant of the moving average and of the decay.
const DECAY: Duration = Duration::from_secs(10);
/// What a failed request is taken to have cost.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Latency estimate and requests in flight.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    /// Estimate in nanoseconds, as f64 bits.
    rtt: AtomicU64,
    /// When the estimate was last updated, nanoseconds on the balancer's clock.
    stamp: AtomicU64,
    in_flight: AtomicU32,
}

// === impl PeakEwma ===

impl PeakEwma {
    pub(crate) fn new(now: u64) -> Self {
        Self {
            rtt: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(now),
            in_flight: AtomicU32::new(0),
        }
    }

    /// A copy for a rebuilt balancer that keeps this one's clock: the estimate and when it was
    /// made. Requests in flight finish on the old balancer, so the copy has none.
    pub(crate) fn carried(&self) -> Self {
        Self {
            rtt: AtomicU64::new(self.rtt.load(Ordering::Relaxed)),
            stamp: AtomicU64::new(self.stamp.load(Ordering::Relaxed)),
            in_flight: AtomicU32::new(0),
        }
    }

    /// Load at `now`: decayed estimate times (in flight + 1).
    pub(crate) fn load(&self, now: u64) -> f64 {
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed)) + 1.0;
        self.decayed(now).0 * pending
    }

    /// A request started.
    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that started ended after `rtt` (or failed, when `failed`).
    pub(crate) fn finish(&self, now: u64, rtt: Duration, failed: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let sample = if failed {
            rtt.max(FAILURE_PENALTY)
        } else {
            rtt
        };
        let sample = sample.as_nanos() as f64;
        // `decayed` already carries the old estimate's weight; the sample gets the rest. (Weighing
        // the old estimate twice would pull an endpoint with history below one without: fresh
        // endpoints would lose every draw and get no traffic for tens of seconds.)
        let (decayed, weight) = self.decayed(now);
        let next = if sample > decayed {
            sample
        } else {
            decayed + sample * (1.0 - weight)
        };
        self.rtt.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// The estimate decayed to `now`, and the weight the old estimate keeps.
    fn decayed(&self, now: u64) -> (f64, f64) {
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        let weight = (-elapsed / DECAY.as_nanos() as f64).exp();
        (
            f64::from_bits(self.rtt.load(Ordering::Relaxed)) * weight,
            weight,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_slow_sample_is_noticed_at_once_and_forgotten_gradually() {
        let e = PeakEwma::new(0);
        e.start();
        e.finish(MS, Duration::from_millis(200), false);
        assert!((e.load(MS) - 200.0 * MS as f64).abs() < MS as f64);
        // Fast samples pull it down only as time passes.
        e.start();
        e.finish(2 * MS, Duration::from_millis(1), false);
        assert!(e.load(2 * MS) > 190.0 * MS as f64);
        // After long idleness the estimate has decayed towards zero.
        assert!(e.load(60_000 * MS) < MS as f64);
    }

    #[test]
    fn requests_in_flight_and_failures_raise_the_load() {
        let (a, b) = (PeakEwma::new(0), PeakEwma::new(0));
        a.start();
        assert!(a.load(0) > b.load(0));
        a.finish(MS, Duration::from_millis(1), true);
        b.start();
        b.finish(MS, Duration::from_millis(1), false);
        // A failure costs the 1 s penalty; a fast success leaves the 30 ms default in place.
        assert!(a.load(MS) > 10.0 * b.load(MS));
    }
}
