//! Step 6: choose an endpoint for each try.
//!
//! First, an endpoint whose ejection has ended gets the one probe request it is owed (see
//! [`super::breaker`]). Otherwise the choice is among endpoints in the pool that this request
//! has not tried yet (all of them, on the first try; if every endpoint was tried, any):
//! - `p2c-ewma`: two candidates at random, the one with the lower peak-EWMA load wins
//!   (Mitzenmacher's power of two choices, as in Finagle and Linkerd): close to the best choice
//!   at the cost of two comparisons, and without the herd behaviour of always picking the least
//!   loaded;
//! - `round-robin`: the next one in turn.
//!
//! If the breaker has taken every endpoint out (it never takes more than its allowed share,
//! but that share may be all of two), the balancer ignores ejection rather than fail.
//! Each try's outcome feeds the endpoint's latency estimate and breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::Service;

use crate::classify::Class;
use crate::config::LoadBalancer;
use crate::error::{BoxError, NoEndpoints};
use crate::headers::forwarded_response;
use crate::metrics::EndpointMetrics;
use crate::telemetry::attr;
use opentelemetry::KeyValue;

use super::attempts::Attempts;
use super::breaker::{Health, Outlier, State, Transition};
use super::connect::Endpoint;
use super::ewma::PeakEwma;
use super::{Req, ResponseFuture, Rsp};

/// Picks an endpoint and sends the try there.
#[derive(Clone, Debug)]
pub(crate) struct Balance {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    destination: Arc<str>,
    slots: Vec<Slot>,
    algorithm: LoadBalancer,
    next: AtomicUsize,
    outlier: Outlier,
    /// Origin of the nanosecond clock of breaker and EWMA state.
    epoch: Instant,
}

/// One endpoint and what the balancer knows of it.
#[derive(Debug)]
pub(crate) struct Slot {
    endpoint: Endpoint,
    load: PeakEwma,
    health: Health,
    metrics: EndpointMetrics,
}

/// Ends a try's bookkeeping however the try ends (a per-try timeout drops it mid-flight).
struct InFlight<'a> {
    shared: &'a Shared,
    index: usize,
    started: Instant,
    done: bool,
}

// === impl Balance ===

impl Balance {
    pub(crate) fn new(
        destination: Arc<str>,
        endpoints: Vec<(Endpoint, EndpointMetrics)>,
        algorithm: LoadBalancer,
        outlier: Outlier,
    ) -> Self {
        let epoch = Instant::now();
        let slots = endpoints
            .into_iter()
            .map(|(endpoint, metrics)| Slot {
                endpoint,
                load: PeakEwma::new(0),
                health: Health::default(),
                metrics,
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                destination,
                slots,
                algorithm,
                next: AtomicUsize::new(0),
                outlier,
                epoch,
            }),
        }
    }
}

impl Service<Req> for Balance {
    type Response = Rsp;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> ResponseFuture {
        let shared = self.shared.clone();
        Box::pin(async move {
            let attempts = req.extensions().get::<Arc<Attempts>>().cloned();
            let now = shared.now();
            let index = shared
                .pick(now, attempts.as_deref())
                .ok_or_else(|| NoEndpoints {
                    destination: shared.destination.to_string(),
                })?;
            let endpoint = shared.slots[index].endpoint.addr();
            if let Some(attempts) = &attempts {
                attempts.record(index);
                let span = attempts.span();
                if span.is_recording() {
                    span.add_event(
                        "attempt",
                        vec![
                            KeyValue::new("mesh.attempt", i64::from(attempts.count())),
                            KeyValue::new(attr::ENDPOINT, endpoint.to_string()),
                        ],
                    );
                    span.set_attribute(KeyValue::new(attr::ENDPOINT, endpoint.to_string()));
                    span.set_attribute(KeyValue::new(
                        attr::PEER_ADDRESS,
                        endpoint.ip().to_string(),
                    ));
                }
            }
            let mut in_flight = InFlight::start(&shared, index);
            let result = in_flight.slot().endpoint.send(req).await;
            let class = match &result {
                Ok(rsp) => Class::of_status(rsp.status()),
                Err(err) => Class::of_error(err.as_ref()),
            };
            if let Transition::Ejected(time) = in_flight.finish(class)
                && let Some(attempts) = &attempts
            {
                attempts.event("endpoint ejected", || {
                    vec![
                        KeyValue::new(attr::ENDPOINT, endpoint.to_string()),
                        KeyValue::new("mesh.ejection.seconds", time.as_secs_f64()),
                    ]
                });
            }
            Ok(forwarded_response(result?))
        })
    }
}

// === impl Shared ===

impl Shared {
    fn now(&self) -> u64 {
        // Never 0: the breaker uses 0 for "not ejected".
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The endpoint for the next try of a request that has made `attempts`.
    fn pick(&self, now: u64, attempts: Option<&Attempts>) -> Option<usize> {
        if let Some(i) = (0..self.slots.len()).find(|&i| {
            let health = &self.slots[i].health;
            health.state(now) == State::HalfOpen && health.claim_probe()
        }) {
            return Some(i);
        }
        let tried = |i: usize| attempts.is_some_and(|a| a.tried(i));
        let closed = |i: usize| self.slots[i].health.state(now) == State::Closed;
        let retry = attempts.is_some_and(|a| a.count() > 0);
        self.choose(now, |i| closed(i) && !tried(i))
            .or_else(|| retry.then(|| self.choose(now, |i| !tried(i))).flatten())
            .or_else(|| self.choose(now, closed))
            .or_else(|| self.choose(now, |_| true))
    }

    /// Chooses among the endpoints `eligible` accepts, by the configured algorithm.
    fn choose(&self, now: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.slots.len();
        match self.algorithm {
            LoadBalancer::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
            }
            LoadBalancer::P2cEwma => {
                // Two distinct candidates, uniformly, in one pass (reservoir sampling).
                let (mut a, mut b, mut seen) = (None, None, 0usize);
                for i in (0..n).filter(|&i| eligible(i)) {
                    seen += 1;
                    match seen {
                        1 => a = Some(i),
                        2 => b = Some(i),
                        _ => match fastrand::usize(0..seen) {
                            0 => a = Some(i),
                            1 => b = Some(i),
                            _ => {}
                        },
                    }
                }
                match (a, b) {
                    (Some(a), Some(b)) => {
                        let (la, lb) = (self.slots[a].load.load(now), self.slots[b].load.load(now));
                        Some(if lb < la { b } else { a })
                    }
                    (a, _) => a,
                }
            }
        }
    }
}

// === impl InFlight ===

impl<'a> InFlight<'a> {
    fn start(shared: &'a Shared, index: usize) -> Self {
        let slot = &shared.slots[index];
        slot.metrics.requests.inc();
        slot.load.start();
        Self {
            shared,
            index,
            started: Instant::now(),
            done: false,
        }
    }

    fn slot(&self) -> &'a Slot {
        &self.shared.slots[self.index]
    }

    fn finish(&mut self, class: Class) -> Transition {
        self.done = true;
        let now = self.shared.now();
        let slot = self.slot();
        let failed = class.is_endpoint_failure();
        slot.load.finish(now, self.started.elapsed(), failed);
        let transition = self.shared.outlier.record(&slot.health, failed, now);
        match transition {
            Transition::Ejected(time) => {
                slot.metrics.ejections.inc();
                tracing::warn!(
                    destination = %self.shared.destination,
                    endpoint = %slot.endpoint.addr(),
                    ejection = ?time,
                    "endpoint ejected after consecutive failures"
                );
            }
            Transition::Returned => tracing::info!(
                destination = %self.shared.destination,
                endpoint = %slot.endpoint.addr(),
                "ejected endpoint returned to the pool"
            ),
            Transition::None => {}
        }
        transition
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Cut short (per-try timeout, caller gone): the time it took still tells of its
            // latency; it says nothing of success, so the breaker is not told. A half-open
            // probe is released so that another request can probe.
            let slot = self.slot();
            slot.load
                .finish(self.shared.now(), self.started.elapsed(), false);
            if slot.health.state(self.shared.now()) == State::Open {
                slot.health.release_probe();
            }
        }
    }
}

#[cfg(test)]
mod tests;
