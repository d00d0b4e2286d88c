//! Per-key rate limits on calls (Certify by source address and by service, Register by caller):
//! one token bucket per key, kept as the time it is full again (GCRA), so a check is one map
//! lookup and no timer runs.
//!
//! Keys a caller can choose (source addresses) could grow the map without bound, so past
//! [`MAX_KEYS`] the keys whose bucket is full again (idle callers) are dropped first, and when
//! none are, the new key is refused like a caller over its limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use mesh_api::rate_limit::Rate;
use tokio::time::Instant;

/// Most keys tracked at once.
pub(crate) const MAX_KEYS: usize = 16_384;

/// Token buckets by key, all at one rate.
#[derive(Debug)]
pub(crate) struct KeyedLimit<K> {
    /// The time one call uses up.
    interval: Duration,
    /// How far ahead of now a bucket's "full again" time may be: the burst's worth, less one.
    tolerance: Duration,
    /// When each key's bucket is full again.
    full_at: RwLock<HashMap<K, Instant>>,
}

impl<K: Eq + Hash> KeyedLimit<K> {
    pub(crate) fn new(rate: Rate) -> Self {
        let interval = rate.interval();
        Self {
            interval,
            tolerance: interval.saturating_mul(rate.burst.saturating_sub(1)),
            full_at: RwLock::new(HashMap::new()),
        }
    }

    /// Whether `key` may make a call now; a call let in uses up its share.
    pub(crate) fn allow(&self, key: K) -> bool {
        let now = Instant::now();
        let mut full_at = self.full_at.write().unwrap_or_else(PoisonError::into_inner);
        if full_at.len() >= MAX_KEYS && !full_at.contains_key(&key) {
            full_at.retain(|_, at| *at > now);
            if full_at.len() >= MAX_KEYS {
                return false;
            }
        }
        let at = full_at.entry(key).or_insert(now);
        let start = (*at).max(now);
        if start.duration_since(now) > self.tolerance {
            return false;
        }
        *at = start + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate_for_each_key_apart() {
        let limit = KeyedLimit::new(Rate {
            requests_per_second: 10.0,
            burst: 3,
        });
        let allowed = (0..10).filter(|_| limit.allow("a")).count();
        assert_eq!(allowed, 3);
        assert!(limit.allow("b"), "another key has its own bucket");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limit.allow("a"));
        assert!(!limit.allow("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_make_room_and_busy_ones_do_not() {
        let limit = KeyedLimit::new(Rate {
            requests_per_second: 1.0,
            burst: 1,
        });
        for key in 0..MAX_KEYS {
            assert!(limit.allow(key));
        }
        assert!(!limit.allow(MAX_KEYS), "every tracked key is busy");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limit.allow(MAX_KEYS), "idle keys were dropped");
    }
}
