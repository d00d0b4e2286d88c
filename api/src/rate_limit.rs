//! How many requests a service's sidecars let in: checked by each callee sidecar (after
//! authorization), for its own instance.
//!
//! ```yaml
//! rate_limit:
//!   requests_per_second: 50          # all callers together, per instance
//!   burst: 50                        # requests let in at once after a quiet spell; default: one second's
//!   callers:                         # a caller's own limit, besides the total
//!     orders: { requests_per_second: 10 }
//!     spiffe://mesh.local/ns/batch/sa/reports: { requests_per_second: 1, burst: 5 }
//! ```
//!
//! A request must fit its caller's own limit, when it has one, and then the total; a caller
//! over its own limit does not use up the total, so it cannot crowd out the others. A refused
//! request gets `429` with `Retry-After` and `x-mesh-error: rate-limited` (a gRPC caller gets
//! `RESOURCE_EXHAUSTED`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authorization::{Principal, principal};
use crate::validate::Errors;

/// Most callers with limits of their own.
pub const MAX_CALLERS: usize = 64;
/// Highest rate accepted.
const MAX_RATE: f64 = 1_000_000.0;

/// The rate limit of a service, validated.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RateLimitPolicy {
    /// All callers together; `None`: no total limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<Rate>,
    /// Callers with limits of their own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<(Principal, Rate)>,
}

/// A rate and the burst allowed at it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Requests let in at once after a quiet spell.
    pub burst: u32,
}

// === impl Rate ===

impl Rate {
    /// The time one request uses up.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.requests_per_second)
    }
}

// === impl RateLimitPolicy ===

impl RateLimitPolicy {
    /// Whether it limits anything.
    pub fn is_empty(&self) -> bool {
        self.total.is_none() && self.callers.is_empty()
    }
}

// === schema ===

/// The `rate_limit` block, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    requests_per_second: Option<f64>,
    burst: Option<u32>,
    #[serde(default)]
    callers: std::collections::BTreeMap<String, RateFile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    requests_per_second: Option<f64>,
    burst: Option<u32>,
}

impl RateLimitFile {
    /// The callers it names, as written.
    pub fn caller_names(&self) -> impl Iterator<Item = &str> {
        self.callers.keys().map(String::as_str)
    }
}

// === validation ===

/// Validates a `rate_limit` block at `path`.
pub fn validate(file: RateLimitFile, path: &str, errors: &mut Errors) -> RateLimitPolicy {
    let total = match (file.requests_per_second, file.burst) {
        (None, None) => None,
        (rps, burst) => rate(rps, burst, path, errors),
    };
    if file.callers.len() > MAX_CALLERS {
        errors.push(
            format!("{path}.callers"),
            format!("at most {MAX_CALLERS} callers"),
        );
    }
    let callers = file
        .callers
        .into_iter()
        .filter_map(|(name, r)| {
            let at = format!("{path}.callers.{name}");
            let who = principal(errors, &at, &name)?;
            let rate = rate(r.requests_per_second, r.burst, &at, errors)?;
            Some((who, rate))
        })
        .collect();
    RateLimitPolicy { total, callers }
}

fn rate(rps: Option<f64>, burst: Option<u32>, path: &str, errors: &mut Errors) -> Option<Rate> {
    let Some(rps) = rps else {
        errors.push(
            format!("{path}.requests_per_second"),
            "missing: the sustained rate, e.g. 50",
        );
        return None;
    };
    if !(rps.is_finite() && rps > 0.0 && rps <= MAX_RATE) {
        errors.push(
            format!("{path}.requests_per_second"),
            format!("{rps}: must be greater than 0 and at most {MAX_RATE}"),
        );
        return None;
    }
    // One second's worth by default, and at least one request.
    let burst = burst.unwrap_or_else(|| rps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
    if burst == 0 {
        errors.push(format!("{path}.burst"), "must be at least 1");
        return None;
    }
    Some(Rate {
        requests_per_second: rps,
        burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (RateLimitPolicy, Vec<String>) {
        let file: RateLimitFile = serde_saphyr::from_str(yaml).unwrap();
        let mut errors = Errors::default();
        let policy = validate(file, "rate_limit", &mut errors);
        let errors = errors.lines();
        (policy, errors)
    }

    #[test]
    fn a_total_and_callers_with_their_bursts() {
        let (p, errors) = parse(
            "{ requests_per_second: 50, callers: { orders: { requests_per_second: 0.5 }, \
             'spiffe://mesh.local/ns/x/sa/y': { requests_per_second: 2, burst: 5 } } }",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            p.total,
            Some(Rate {
                requests_per_second: 50.0,
                burst: 50
            })
        );
        assert_eq!(p.callers[0].0, Principal::Service("orders".into()));
        assert_eq!(p.callers[0].1.burst, 1);
        assert_eq!(p.callers[1].1.burst, 5);
        assert_eq!(p.callers[0].1.interval(), Duration::from_secs(2));
    }

    #[test]
    fn bad_rates_are_reported_at_their_paths() {
        let (_, errors) = parse(
            "{ burst: 0, callers: { Orders: { requests_per_second: 1 }, b: { requests_per_second: -1 } } }",
        );
        assert_eq!(
            errors,
            [
                "rate_limit.requests_per_second: missing: the sustained rate, e.g. 50",
                "rate_limit.callers.Orders: invalid name \"Orders\": use 1-63 lowercase letters, digits and '-'",
                "rate_limit.callers.b.requests_per_second: -1: must be greater than 0 and at most 1000000",
            ]
        );
    }
}
