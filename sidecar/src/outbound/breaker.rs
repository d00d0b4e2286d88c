//! Step 7b: outlier ejection, the circuit breaker of each endpoint.
//!
//! `consecutive_failures` failures in a row ([`Class::is_endpoint_failure`]: 5xx, connect
//! failures, resets) eject an endpoint: the balancer sends it nothing until the ejection time
//! has passed. The n-th ejection of the same endpoint lasts n × `base_ejection_time`, capped at
//! `max_ejection_time`, so an endpoint that keeps failing stays out longer each time. When the
//! time is up the endpoint is half-open: exactly one request probes it. Success returns it to
//! the pool; failure ejects it again, for longer.
//!
//! Ejection never takes more than `max_ejection_percent` of a destination's endpoints (at least
//! one may go when there are two or more), so a destination-wide failure cannot empty the pool.
//! All state is atomic; nothing is locked on the request path.
//!
//! [`Class::is_endpoint_failure`]: crate::classify::Class::is_endpoint_failure

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use crate::config::BreakerPolicy;

/// Destination-wide ejection state: the policy and how many endpoints are out.
#[derive(Debug)]
pub(crate) struct Outlier {
    policy: BreakerPolicy,
    max_ejected: usize,
    ejected: AtomicUsize,
    gauge: Gauge,
}

/// One endpoint's breaker.
#[derive(Debug, Default)]
pub(crate) struct Health {
    consecutive: AtomicU32,
    /// Times ejected so far.
    ejections: AtomicU32,
    /// End of the current ejection, nanoseconds on the balancer's clock; 0 when in the pool.
    ejected_until: AtomicU64,
    /// A half-open probe is in flight.
    probing: AtomicBool,
}

/// Whether the balancer may send a request to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// In the pool.
    Closed,
    /// Ejection over, no probe yet: one request may probe it.
    HalfOpen,
    /// Ejected (or probed by another request).
    Open,
}

/// What a result did to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Nothing changed state.
    None,
    /// The endpoint was ejected for this long.
    Ejected(Duration),
    /// A probe succeeded: the endpoint is back in the pool.
    Returned,
}

// === impl Outlier ===

impl Outlier {
    pub(crate) fn new(policy: BreakerPolicy, endpoints: usize, gauge: Gauge) -> Self {
        let share = endpoints * usize::from(policy.max_ejection_percent) / 100;
        let max_ejected = if endpoints >= 2 && policy.max_ejection_percent > 0 {
            share.max(1)
        } else {
            share
        };
        // The destination's gauge outlives this state: a rebuilt balancer starts with every
        // endpoint in the pool, and the gauge must say so rather than keep the old count.
        gauge.set(0);
        Self {
            policy,
            max_ejected,
            ejected: AtomicUsize::new(0),
            gauge,
        }
    }

    /// How many endpoints are ejected or waiting for their probe.
    #[cfg(test)]
    pub(crate) fn ejected_count(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }

    /// Whether every endpoint is in service: none ejected, none waiting for its probe.
    pub(crate) fn none_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire) == 0
    }

    /// Records a result of `health`'s endpoint at `now`.
    pub(crate) fn record(&self, health: &Health, failed: bool, now: u64) -> Transition {
        self.record_failures(health, u32::from(failed), now)
    }

    /// Records an answer from the endpoint's sidecar that its app is down (`x-mesh-error:
    /// app-unavailable`). The peer knows, so it needs no repeating: it counts as
    /// `consecutive_failures` failures at once. Repeating it would take long, because the load
    /// balancer sends a failing endpoint so little that failures in a row come slowly.
    pub(crate) fn record_app_down(&self, health: &Health, now: u64) -> Transition {
        self.record_failures(health, self.policy.consecutive_failures.max(1), now)
    }

    fn record_failures(&self, health: &Health, failures: u32, now: u64) -> Transition {
        let ejected = health.ejected_until.load(Ordering::Acquire) != 0;
        if failures == 0 {
            health.consecutive.store(0, Ordering::Relaxed);
            if ejected && health.probing.swap(false, Ordering::AcqRel) {
                health.ejected_until.store(0, Ordering::Release);
                self.ejected.fetch_sub(1, Ordering::AcqRel);
                self.gauge.dec();
                return Transition::Returned;
            }
            return Transition::None;
        }
        if ejected {
            // A failed probe (or a late failure of a request sent before the ejection).
            if health.probing.swap(false, Ordering::AcqRel) {
                return Transition::Ejected(self.eject_for(health, now));
            }
            return Transition::None;
        }
        let failures = health.consecutive.fetch_add(failures, Ordering::AcqRel) + failures;
        if failures < self.policy.consecutive_failures || !self.take_ejection_slot() {
            return Transition::None;
        }
        health.consecutive.store(0, Ordering::Relaxed);
        self.gauge.inc();
        Transition::Ejected(self.eject_for(health, now))
    }

    /// Takes on the breakers of a rebuilt balancer, some carried from the one it replaces: at
    /// most `max_ejected` of them stay ejected (the rest return to the pool, as this
    /// destination's share allows no more), and the count and gauge say how many are out.
    pub(crate) fn adopt<'a>(&self, healths: impl IntoIterator<Item = &'a Health>) {
        let mut ejected = 0;
        for health in healths {
            if health.ejected_until.load(Ordering::Acquire) == 0 {
                continue;
            }
            if ejected < self.max_ejected {
                ejected += 1;
            } else {
                health.ejected_until.store(0, Ordering::Release);
                health.consecutive.store(0, Ordering::Relaxed);
            }
        }
        self.ejected.store(ejected, Ordering::Release);
        self.gauge.set(i64::try_from(ejected).unwrap_or(i64::MAX));
    }

    fn take_ejection_slot(&self) -> bool {
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_ejected).then_some(n + 1)
            })
            .is_ok()
    }

    fn eject_for(&self, health: &Health, now: u64) -> Duration {
        let n = health.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let time = self
            .policy
            .base_ejection_time
            .saturating_mul(n)
            .min(self.policy.max_ejection_time);
        let until = now.saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        health.ejected_until.store(until.max(1), Ordering::Release);
        time
    }
}

// === impl Health ===

impl Health {
    /// A copy for a rebuilt balancer that keeps this one's clock: failures in a row, times
    /// ejected, and any ejection in force. A probe in flight belongs to the old balancer; the
    /// copy may send its own.
    pub(crate) fn carried(&self) -> Self {
        Self {
            consecutive: AtomicU32::new(self.consecutive.load(Ordering::Acquire)),
            ejections: AtomicU32::new(self.ejections.load(Ordering::Acquire)),
            ejected_until: AtomicU64::new(self.ejected_until.load(Ordering::Acquire)),
            probing: AtomicBool::new(false),
        }
    }

    /// The endpoint's state at `now`.
    pub(crate) fn state(&self, now: u64) -> State {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            State::Closed
        } else if now < until || self.probing.load(Ordering::Acquire) {
            State::Open
        } else {
            State::HalfOpen
        }
    }

    /// Gives up a claimed probe that never got a result, so another request may probe.
    pub(crate) fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Claims the single probe of a half-open endpoint; false if another request has it.
    pub(crate) fn claim_probe(&self) -> bool {
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 50,
            max_requests: 100,
            max_pending: 10,
        }
    }

    fn outlier(endpoints: usize) -> Outlier {
        Outlier::new(policy(), endpoints, Gauge::default())
    }

    #[test]
    fn a_new_outlier_resets_the_destinations_gauge() {
        let gauge = Gauge::default();
        gauge.set(2);
        let _outlier = Outlier::new(policy(), 3, gauge.clone());
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn an_app_that_is_down_ejects_at_once() {
        let o = outlier(3);
        let h = Health::default();
        assert!(matches!(o.record_app_down(&h, 0), Transition::Ejected(_)));
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let o = outlier(3);
        let h = Health::default();
        assert_eq!(o.record(&h, true, 0), Transition::None);
        assert_eq!(o.record(&h, true, 0), Transition::None);
        assert_eq!(o.record(&h, false, 0), Transition::None);
        assert_eq!(o.record(&h, true, 0), Transition::None);
        assert_eq!(o.record(&h, true, 0), Transition::None);
        assert_eq!(
            o.record(&h, true, S),
            Transition::Ejected(Duration::from_secs(10))
        );
        assert_eq!(h.state(S), State::Open);
        assert_eq!(o.gauge.get(), 1);
    }

    #[test]
    fn after_the_ejection_one_probe_decides() {
        let o = outlier(3);
        let h = Health::default();
        for _ in 0..3 {
            o.record(&h, true, 0);
        }
        assert_eq!(h.state(9 * S), State::Open);
        assert_eq!(h.state(10 * S), State::HalfOpen);
        assert!(h.claim_probe());
        assert!(!h.claim_probe(), "only one probe at a time");
        assert_eq!(h.state(10 * S), State::Open);
        // The probe fails: out again, for twice as long.
        assert_eq!(
            o.record(&h, true, 10 * S),
            Transition::Ejected(Duration::from_secs(20))
        );
        assert_eq!(h.state(29 * S), State::Open);
        assert_eq!(h.state(30 * S), State::HalfOpen);
        // The third ejection would last 30 s; it is capped at 25 s.
        assert!(h.claim_probe());
        assert_eq!(
            o.record(&h, true, 30 * S),
            Transition::Ejected(Duration::from_secs(25))
        );
        assert!(h.state(55 * S) == State::HalfOpen && h.claim_probe());
        // A successful probe returns it.
        assert_eq!(o.record(&h, false, 55 * S), Transition::Returned);
        assert_eq!(h.state(55 * S), State::Closed);
        assert_eq!(o.gauge.get(), 0);
    }

    #[test]
    fn never_more_than_the_allowed_share_is_ejected() {
        // 50 % of 3 endpoints: one may be ejected.
        let o = outlier(3);
        let (a, b) = (Health::default(), Health::default());
        for _ in 0..3 {
            o.record(&a, true, 0);
        }
        for _ in 0..10 {
            assert_eq!(o.record(&b, true, 0), Transition::None);
        }
        assert_eq!(b.state(0), State::Closed);
        // A single endpoint is never ejected.
        let single = outlier(1);
        let h = Health::default();
        for _ in 0..10 {
            single.record(&h, true, 0);
        }
        assert_eq!(h.state(0), State::Closed);
    }
}
