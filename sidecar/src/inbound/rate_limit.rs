//! Step 10, after authorization: does this request fit the service's rate limit?
//!
//! Each limit is a GCRA (generic cell rate algorithm) cell: one atomic "theoretical arrival
//! time", advanced by one interval per request let in, and compared with the clock. A request
//! is refused while that time is more than the burst ahead of now, and the difference is exactly
//! how long the caller should wait, which becomes `Retry-After`. Unlike a token bucket there is
//! nothing to refill, no timer and no lock: a check is one load and one compare-and-swap.
//!
//! The caller's own limit is checked first: a caller over it is refused without using up the
//! total, so one greedy caller cannot crowd out the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_api::authorization::Principal;
use mesh_api::rate_limit::{Rate, RateLimitPolicy};
use tokio::time::Instant;

use super::identify::Caller;
use crate::error::RateLimited;
use crate::metrics::Metrics;

/// The rate limit of this service, replaced whole when the policy changes.
#[derive(Debug)]
pub(crate) struct RateLimit {
    limits: ArcSwap<Limits>,
    trust_domain: String,
}

/// The cells of one policy.
#[derive(Debug)]
struct Limits {
    policy: RateLimitPolicy,
    total: Option<Cell>,
    callers: Vec<(Principal, Cell)>,
    /// Origin of the cells' nanosecond clock.
    epoch: Instant,
}

/// One GCRA cell.
#[derive(Debug)]
struct Cell {
    /// Time one request uses up, in nanoseconds.
    interval: u64,
    /// How far ahead of now the arrival time may run: `burst - 1` intervals.
    tolerance: u64,
    /// The theoretical arrival time of the next request, on the epoch's clock.
    tat: AtomicU64,
}

// === impl RateLimit ===

impl RateLimit {
    pub(crate) fn new(policy: RateLimitPolicy, trust_domain: String) -> Self {
        Self {
            limits: ArcSwap::from_pointee(Limits::new(policy)),
            trust_domain,
        }
    }

    /// Puts `policy` in force; an unchanged policy keeps its cells, so a snapshot that changes
    /// something else does not hand every caller a fresh burst.
    pub(crate) fn set(&self, policy: RateLimitPolicy) {
        if self.limits.load().policy != policy {
            self.limits.store(Arc::new(Limits::new(policy)));
        }
    }

    /// Lets the request in, or says how long the caller should wait; refusals are counted by
    /// caller. `grpc`: the refusal is a gRPC answer.
    pub(crate) fn check(
        &self,
        caller: &Caller,
        service: &str,
        grpc: bool,
        metrics: &Metrics,
    ) -> Result<(), RateLimited> {
        let limits = self.limits.load();
        if limits.policy.is_empty() {
            return Ok(());
        }
        let now = u64::try_from(limits.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let own = limits.callers.iter().find(|(who, _)| {
            // A plain caller has no identity for a per-caller limit to name: only the total.
            caller
                .id
                .as_ref()
                .is_some_and(|id| who.names(id, &self.trust_domain))
        });
        let refused = |limit: String, retry_after: Duration| {
            metrics.rate_limited(&caller.label);
            RateLimited {
                caller: caller.name().to_owned(),
                service: service.to_owned(),
                limit,
                retry_after,
                grpc,
            }
        };
        if let Some((who, cell)) = own {
            cell.acquire(now).map_err(|wait| {
                refused(
                    format!("its own limit, rate_limit.callers.{}", principal_text(who)),
                    wait,
                )
            })?;
        }
        if let Some(cell) = &limits.total {
            cell.acquire(now)
                .map_err(|wait| refused("the total, rate_limit".to_owned(), wait))?;
        }
        Ok(())
    }
}

fn principal_text(p: &Principal) -> String {
    match p {
        Principal::Service(name) => name.clone(),
        Principal::Id(id) => id.to_string(),
    }
}

// === impl Limits ===

impl Limits {
    fn new(policy: RateLimitPolicy) -> Self {
        Self {
            total: policy.total.as_ref().map(Cell::new),
            callers: policy
                .callers
                .iter()
                .map(|(who, rate)| (who.clone(), Cell::new(rate)))
                .collect(),
            policy,
            epoch: Instant::now(),
        }
    }
}

// === impl Cell ===

impl Cell {
    fn new(rate: &Rate) -> Self {
        let interval = u64::try_from(rate.interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(rate.burst.saturating_sub(1))),
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one request's interval at `now`, or returns how long until one would fit.
    fn acquire(&self, now: u64) -> Result<(), Duration> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            let ahead = start - now;
            if ahead > self.tolerance {
                return Err(Duration::from_nanos(ahead - self.tolerance));
            }
            match self.tat.compare_exchange_weak(
                tat,
                start.saturating_add(self.interval),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_cell_lets_in_its_burst_then_one_request_per_interval() {
        let cell = Cell::new(&Rate {
            requests_per_second: 10.0,
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(cell.acquire(0), Ok(()));
        }
        // The fourth must wait one interval (100ms) from the start.
        assert_eq!(cell.acquire(0), Err(Duration::from_millis(100)));
        assert_eq!(cell.acquire(40 * MS), Err(Duration::from_millis(60)));
        assert_eq!(cell.acquire(100 * MS), Ok(()));
        assert!(cell.acquire(100 * MS).is_err());
        // A quiet spell refills the burst, no more.
        for _ in 0..3 {
            assert_eq!(cell.acquire(10_000 * MS), Ok(()));
        }
        assert!(cell.acquire(10_000 * MS).is_err());
    }

    #[test]
    fn over_a_second_a_cell_lets_in_its_rate_plus_its_burst() {
        let cell = Cell::new(&Rate {
            requests_per_second: 50.0,
            burst: 50,
        });
        // A request every millisecond for one second.
        let let_in = (0..1000).filter(|ms| cell.acquire(ms * MS).is_ok()).count();
        assert!((99..=101).contains(&let_in), "{let_in}");
    }
}
