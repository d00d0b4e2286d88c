//! Injected latency and errors, changeable at run time through `/admin/faults`, so the demo
//! can show what retries, timeouts and circuit breakers do.

use std::time::Duration;

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::RwLock;

use super::http::{ApiError, json_response};
use crate::server::Body;

pub const MAX_LATENCY_MS: u64 = 60_000;

/// The faults a service injects into its business endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Faults {
    pub latency_ms: u64,
    pub error_rate: f64,
    pub error_status: u16,
    /// The next this many requests fail with `error_status`, whatever `error_rate` says: a
    /// failure that happens exactly once, for showing (and testing) one retry.
    pub fail_next: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            error_rate: 0.0,
            error_status: 503,
            fail_next: 0,
        }
    }
}

/// A change to [`Faults`]; missing fields stay as they are.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub error_status: Option<u16>,
    pub fail_next: Option<u32>,
}

impl Faults {
    /// `self` with `patch` applied, or a 400 naming the first field out of range.
    pub fn patched(self, patch: &FaultsPatch) -> Result<Self, ApiError> {
        let mut next = self;
        if let Some(ms) = patch.latency_ms {
            if ms > MAX_LATENCY_MS {
                return Err(ApiError::bad(
                    "latency_ms",
                    format!("latency_ms must be at most {MAX_LATENCY_MS}"),
                ));
            }
            next.latency_ms = ms;
        }
        if let Some(rate) = patch.error_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ApiError::bad(
                    "error_rate",
                    "error_rate must be between 0 and 1",
                ));
            }
            next.error_rate = rate;
        }
        if let Some(status) = patch.error_status {
            if !(500..=599).contains(&status) {
                return Err(ApiError::bad(
                    "error_status",
                    "error_status must be between 500 and 599",
                ));
            }
            next.error_status = status;
        }
        if let Some(n) = patch.fail_next {
            next.fail_next = n;
        }
        Ok(next)
    }
}

/// The current faults of one running service.
#[derive(Debug, Default)]
pub struct FaultState {
    current: RwLock<Faults>,
}

impl FaultState {
    pub fn new(faults: Faults) -> Self {
        Self {
            current: RwLock::new(faults),
        }
    }

    pub async fn get(&self) -> Faults {
        *self.current.read().await
    }

    pub async fn apply(&self, patch: &FaultsPatch) -> Result<Faults, ApiError> {
        let mut current = self.current.write().await;
        *current = current.patched(patch)?;
        Ok(*current)
    }

    /// Sleeps the configured latency, then returns an injected error response with the
    /// configured probability (`None`: serve the request normally).
    pub async fn inject(&self, service: &str, instance: &str) -> Option<Response<Body>> {
        let (faults, forced) = {
            let mut current = self.current.write().await;
            let forced = current.fail_next > 0;
            current.fail_next = current.fail_next.saturating_sub(1);
            (*current, forced)
        };
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        let fail = forced
            || faults.error_rate >= 1.0
            || (faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate);
        if !fail {
            return None;
        }
        let status =
            StatusCode::from_u16(faults.error_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        Some(json_response(
            status,
            &json!({"error": "injected fault", "service": service, "instance": instance}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_changes_only_given_fields() {
        let patch = FaultsPatch {
            error_rate: Some(0.5),
            ..FaultsPatch::default()
        };
        let next = Faults::default().patched(&patch).unwrap();
        assert_eq!(next.error_rate, 0.5);
        assert_eq!(next.latency_ms, 0);
        assert_eq!(next.error_status, 503);
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        for (patch, field) in [
            (
                FaultsPatch {
                    latency_ms: Some(60_001),
                    ..FaultsPatch::default()
                },
                "latency_ms",
            ),
            (
                FaultsPatch {
                    error_rate: Some(1.5),
                    ..FaultsPatch::default()
                },
                "error_rate",
            ),
            (
                FaultsPatch {
                    error_rate: Some(f64::NAN),
                    ..FaultsPatch::default()
                },
                "error_rate",
            ),
            (
                FaultsPatch {
                    error_status: Some(404),
                    ..FaultsPatch::default()
                },
                "error_status",
            ),
        ] {
            match Faults::default().patched(&patch) {
                Err(ApiError::BadRequest { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a 400 for {field}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn fail_next_fails_exactly_that_many_requests() {
        let state = FaultState::default();
        state
            .apply(&FaultsPatch {
                fail_next: Some(2),
                ..FaultsPatch::default()
            })
            .await
            .unwrap();
        let mut failed = Vec::new();
        for _ in 0..4 {
            failed.push(state.inject("payments", "payments-1").await.is_some());
        }
        assert_eq!(failed, [true, true, false, false]);
        assert_eq!(state.get().await.fail_next, 0);
    }
}
