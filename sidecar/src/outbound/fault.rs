//! Step 3, last: the faults a route (or its destination) injects, before the request enters
//! the stack. A delay waits here, outside the route's timeout (as in Envoy, so a delay tests the
//! caller's patience, not the mesh's); an abort ends the request here with the fault's status,
//! so the destination never sees it and no endpoint is charged with a failure. Both are counted
//! and marked on the request's span.

use std::sync::Arc;

use mesh_api::fault::{AbortStatus, FaultPolicy};
use opentelemetry::KeyValue;
use prometheus_client::metrics::counter::Counter;

use super::attempts::Attempts;
use crate::error::FaultAborted;
use crate::metrics::Metrics;
use crate::telemetry::attr;

/// The fault policy of one route or destination, with its counters.
#[derive(Debug)]
pub(crate) struct Faults {
    policy: FaultPolicy,
    delays: Counter,
    aborts: Counter,
}

// === impl Faults ===

impl Faults {
    /// `None` when `policy` injects nothing, so requests without faults pay nothing.
    pub(crate) fn new(
        policy: &FaultPolicy,
        metrics: &Metrics,
        destination: &str,
        route: &str,
    ) -> Option<Arc<Self>> {
        if policy.is_empty() {
            return None;
        }
        let [delays, aborts] = metrics.faults(destination, route);
        Some(Arc::new(Self {
            policy: policy.clone(),
            delays,
            aborts,
        }))
    }

    /// Delays the request, or aborts it, as the dice say.
    pub(crate) async fn inject(&self, attempts: &Attempts) -> Result<(), FaultAborted> {
        if let Some(delay) = &self.policy.delay
            && chance(delay.percentage)
        {
            self.delays.inc();
            let ms = i64::try_from(delay.fixed_delay.as_millis()).unwrap_or(i64::MAX);
            let span = attempts.span();
            if span.is_recording() {
                span.set_attribute(KeyValue::new(attr::FAULT_DELAY, ms));
            }
            tokio::time::sleep(delay.fixed_delay).await;
        }
        if let Some(abort) = &self.policy.abort
            && chance(abort.percentage)
        {
            self.aborts.inc();
            let span = attempts.span();
            if span.is_recording() {
                let status = match abort.status {
                    AbortStatus::Http(code) => code.to_string(),
                    AbortStatus::Grpc(code) => format!("grpc:{code}"),
                };
                span.set_attribute(KeyValue::new(attr::FAULT_ABORT, status));
            }
            return Err(FaultAborted {
                status: abort.status,
            });
        }
        Ok(())
    }
}

/// True for `percentage` percent of calls.
fn chance(percentage: f64) -> bool {
    percentage >= 100.0 || fastrand::f64() * 100.0 < percentage
}
