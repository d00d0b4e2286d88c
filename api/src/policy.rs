//! Resilience policy of one destination: timeouts, retries, circuit breaking, load balancing.
//!
//! Every field is optional. The defaults, chosen to be safe for any HTTP service:
//!
//! | field | default |
//! |---|---|
//! | `timeout` | none: a request may take as long as the app allows (`none` says so) |
//! | `retries.attempts` | 2 (one retry) |
//! | `retries.per_try_timeout` | none (`none` says so) |
//! | `retries.retry_on` | `[connect-failure, refused-stream, reset, gateway-error]` |
//! | `retries.retriable_status_codes` | `[]` |
//! | `retries.backoff` | `{ base: 25ms, max: 250ms }`, exponential with full jitter |
//! | `retries.budget` | `{ ratio: 0.2, min_per_second: 10, window: 10s }` |
//! | `retries.non_idempotent` | false: POST and PATCH are retried only after a connect failure or refused stream |
//! | `retries.max_buffered_body` | 64KiB |
//! | `circuit_breaker.consecutive_failures` | 5 |
//! | `circuit_breaker.base_ejection_time` | 30s |
//! | `circuit_breaker.max_ejection_time` | 5m |
//! | `circuit_breaker.max_ejection_percent` | 50 |
//! | `circuit_breaker.max_requests` | 1024 |
//! | `circuit_breaker.max_pending` | 256 |
//! | `load_balancer` | `p2c-ewma` |
//! | `routes` | none: every request gets the fields above |
//! | `fault` | none: see [`crate::fault`] |
//!
//! `routes` give requests picked out by method and path their own timeout and retries; see
//! [`crate::route`]. The retry types live in [`crate::retry`], shared with routes, and are
//! re-exported here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fault::{self, FaultFile, FaultPolicy};
use crate::retry::retries;
pub use crate::retry::{Backoff, Budget, RetriesFile, RetryOn, RetryPolicy};
use crate::route::{self, RouteFile, RoutePolicy};
use crate::validate::{self, Errors};

/// The policy of one destination, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DestinationPolicy {
    /// Limit on the whole request, all attempts and backoff included (504 when exceeded).
    #[serde(serialize_with = "validate::serialize_optional_duration")]
    pub timeout: Option<Duration>,
    /// When and how requests are tried again.
    pub retries: RetryPolicy,
    /// Outlier ejection and load shedding.
    pub circuit_breaker: BreakerPolicy,
    /// How an endpoint is chosen.
    pub load_balancer: LoadBalancer,
    /// Routes; the one a request takes sets its timeout, retries, filters and backends.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RoutePolicy>,
    /// Faults injected into requests that take no route (a route has its own).
    #[serde(skip_serializing_if = "FaultPolicy::is_empty")]
    pub fault: FaultPolicy,
}

/// Outlier ejection and load shedding.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BreakerPolicy {
    /// Failures in a row (5xx, connect failure, reset) that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection of the same endpoint lasts n times this.
    #[serde(serialize_with = "validate::serialize_duration")]
    pub base_ejection_time: Duration,
    /// Cap on the ejection time.
    #[serde(serialize_with = "validate::serialize_duration")]
    pub max_ejection_time: Duration,
    /// Never eject more than this share of the endpoints (at least one may go when there are
    /// two or more).
    pub max_ejection_percent: u8,
    /// Requests in flight to the destination; beyond, requests wait (up to `max_pending`).
    pub max_requests: u32,
    /// Requests waiting for a slot; beyond, requests are shed at once with 503.
    pub max_pending: u32,
}

/// Endpoint selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency times requests in flight.
    P2cEwma,
    /// Each endpoint in turn.
    RoundRobin,
}

// === schema ===

/// The policy fields of a destination, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// `timeout`
    #[serde(default)]
    pub timeout: Option<String>,
    /// `retries`
    #[serde(default)]
    pub retries: Option<RetriesFile>,
    /// `circuit_breaker`
    #[serde(default)]
    pub circuit_breaker: Option<BreakerFile>,
    /// `load_balancer`
    #[serde(default)]
    pub load_balancer: Option<String>,
    /// `routes`
    #[serde(default)]
    pub routes: Option<Vec<RouteFile>>,
    /// `fault`
    #[serde(default)]
    pub fault: Option<FaultFile>,
}

/// The `circuit_breaker` block, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    consecutive_failures: Option<u32>,
    base_ejection_time: Option<String>,
    max_ejection_time: Option<String>,
    max_ejection_percent: Option<u32>,
    max_requests: Option<u32>,
    max_pending: Option<u32>,
}

// === validation ===

impl Default for DestinationPolicy {
    fn default() -> Self {
        let mut errors = Errors::default();
        validate(PolicyFile::default(), "", &mut errors)
    }
}

/// Validates the policy of the destination at `path`, reporting problems into `errors`. Bad
/// values fall back to their defaults so that validation can go on and report them all.
pub fn validate(file: PolicyFile, path: &str, errors: &mut Errors) -> DestinationPolicy {
    let timeout = file
        .timeout
        .and_then(|t| validate::limit(errors, &format!("{path}.timeout"), t));
    let retries_file = file.retries.unwrap_or_default();
    let fault = file
        .fault
        .map(|f| fault::validate(f, &format!("{path}.fault"), errors))
        .unwrap_or_default();
    let routes = route::validate(
        file.routes.unwrap_or_default(),
        &format!("{path}.routes"),
        timeout,
        &retries_file,
        &fault,
        errors,
    );
    let retries = retries(retries_file, &format!("{path}.retries"), errors);
    let circuit_breaker = breaker(
        file.circuit_breaker.unwrap_or_default(),
        &format!("{path}.circuit_breaker"),
        errors,
    );
    let load_balancer = match file.load_balancer.as_deref() {
        None | Some("p2c-ewma") => LoadBalancer::P2cEwma,
        Some("round-robin") => LoadBalancer::RoundRobin,
        Some(other) => {
            errors.push(
                format!("{path}.load_balancer"),
                format!("unknown load balancer {other:?}: use p2c-ewma or round-robin"),
            );
            LoadBalancer::P2cEwma
        }
    };
    DestinationPolicy {
        timeout,
        retries,
        circuit_breaker,
        load_balancer,
        routes,
        fault,
    }
}

fn breaker(file: BreakerFile, path: &str, errors: &mut Errors) -> BreakerPolicy {
    let at = |field: &str| format!("{path}.{field}");
    let policy = BreakerPolicy {
        consecutive_failures: file.consecutive_failures.unwrap_or(5),
        base_ejection_time: validate::duration(
            errors,
            &at("base_ejection_time"),
            file.base_ejection_time,
            Duration::from_secs(30),
        ),
        max_ejection_time: validate::duration(
            errors,
            &at("max_ejection_time"),
            file.max_ejection_time,
            Duration::from_secs(300),
        ),
        max_ejection_percent: match file.max_ejection_percent.unwrap_or(50) {
            p @ 0..=100 => p as u8,
            _ => {
                errors.push(at("max_ejection_percent"), "must be between 0 and 100");
                50
            }
        },
        max_requests: file.max_requests.unwrap_or(1024),
        max_pending: file.max_pending.unwrap_or(256),
    };
    if policy.consecutive_failures == 0 {
        errors.push(at("consecutive_failures"), "must be at least 1");
    }
    if policy.base_ejection_time > policy.max_ejection_time {
        errors.push(
            at("base_ejection_time"),
            "must not exceed max_ejection_time",
        );
    }
    if policy.max_requests == 0 {
        errors.push(at("max_requests"), "must be at least 1");
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let p = DestinationPolicy::default();
        assert_eq!(p.timeout, None);
        assert_eq!(p.retries.attempts, 2);
        assert_eq!(
            p.retries.retry_on,
            [
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset,
                RetryOn::GatewayError
            ]
        );
        assert_eq!(p.retries.max_buffered_body, 65536);
        assert_eq!(p.circuit_breaker.consecutive_failures, 5);
        assert_eq!(p.circuit_breaker.max_ejection_percent, 50);
        assert_eq!(p.load_balancer, LoadBalancer::P2cEwma);
    }
}
