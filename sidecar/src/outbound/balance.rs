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
//! With a traffic split the endpoints form backends (one per version) with weights: each
//! request is given to a backend by weight first, and all its tries stay within it, so a 90/10
//! split stays 90/10 whatever retries do.
//!
//! If the breaker has taken every endpoint out (it never takes more than its allowed share,
//! but that share may be all of two), the balancer ignores ejection rather than fail.
//! Each try's outcome feeds the endpoint's latency estimate and breaker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::Service;

use crate::body::BoxError;
use crate::classify::Class;
use crate::config::LoadBalancer;
use crate::error::{NoEndpoints, Reason};
use crate::headers::{MESH_ERROR, forwarded_response};
use crate::metrics::EndpointMetrics;
use crate::telemetry::attr;
use opentelemetry::KeyValue;

use super::attempts::Attempts;
use super::breaker::{Health, Outlier, State, Transition};
use super::connect::Endpoint;
use super::ewma::PeakEwma;
use super::stack::{Req, ResponseFuture, Rsp};
use super::weighted;

/// Picks an endpoint and sends the try there.
#[derive(Clone, Debug)]
pub(crate) struct Balance {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    destination: Arc<str>,
    slots: Vec<Slot>,
    /// Weighted ranges of `slots`, one per backend that has endpoints (weight 0 included: a
    /// route may still pin requests to it).
    backends: Vec<(u32, Range<usize>)>,
    /// The version of each of `backends`.
    versions: Vec<String>,
    total_weight: u32,
    algorithm: LoadBalancer,
    next: AtomicUsize,
    outlier: Outlier,
    /// Origin of the nanosecond clock of breaker and EWMA state.
    epoch: Instant,
}

/// One endpoint and what the balancer knows of it.
#[derive(Debug)]
pub(crate) struct Slot {
    endpoint: Arc<Endpoint>,
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

/// The endpoints of one backend (one version of the destination) and its weight.
pub(crate) struct Backend {
    /// Its version (empty without a split).
    pub(crate) version: String,
    pub(crate) weight: u32,
    pub(crate) endpoints: Vec<(Arc<Endpoint>, EndpointMetrics)>,
}

impl Balance {
    /// A balancer over one set of endpoints.
    #[cfg(test)]
    pub(crate) fn new(
        destination: Arc<str>,
        endpoints: Vec<(Endpoint, EndpointMetrics)>,
        algorithm: LoadBalancer,
        outlier: Outlier,
    ) -> Self {
        let endpoints = endpoints
            .into_iter()
            .map(|(endpoint, metrics)| (Arc::new(endpoint), metrics))
            .collect();
        Self::split(
            destination,
            vec![Backend {
                version: String::new(),
                weight: 1,
                endpoints,
            }],
            algorithm,
            outlier,
            None,
        )
    }

    /// A balancer over weighted backends. Backends without endpoints get no requests, nor do
    /// those without weight unless a route pins a request to them.
    ///
    /// Endpoints it shares with `previous` (the balancer it replaces when the destination
    /// changes) keep what that one learnt of them: latency estimate, failures in a row, and any
    /// ejection in force. Without that, every instance joining or leaving a destination would
    /// put its ejected endpoints straight back into rotation and forget which are slow. The
    /// state is copied, not shared: the old balancer's requests still in flight finish against
    /// its own copy, so the two never disagree about how many endpoints each has ejected.
    pub(crate) fn split(
        destination: Arc<str>,
        backends: Vec<Backend>,
        algorithm: LoadBalancer,
        outlier: Outlier,
        previous: Option<&Balance>,
    ) -> Self {
        // The carried state's timestamps are on the previous balancer's clock.
        let epoch = previous.map_or_else(Instant::now, |p| p.shared.epoch);
        let now = u64::try_from(epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let known: HashMap<*const Endpoint, &Slot> = previous
            .map(|p| {
                p.shared
                    .slots
                    .iter()
                    .map(|slot| (Arc::as_ptr(&slot.endpoint), slot))
                    .collect()
            })
            .unwrap_or_default();
        let mut slots = Vec::new();
        let mut ranges = Vec::new();
        let mut versions = Vec::new();
        for backend in backends {
            let start = slots.len();
            slots.extend(backend.endpoints.into_iter().map(|(endpoint, metrics)| {
                match known.get(&Arc::as_ptr(&endpoint)) {
                    Some(old) => Slot {
                        load: old.load.carried(),
                        health: old.health.carried(),
                        endpoint,
                        metrics,
                    },
                    // A new endpoint's default estimate starts now, not at the epoch:
                    // decayed to nothing, it would draw every request until its first
                    // response.
                    None => Slot {
                        endpoint,
                        load: PeakEwma::new(now),
                        health: Health::default(),
                        metrics,
                    },
                }
            }));
            if slots.len() > start {
                ranges.push((backend.weight, start..slots.len()));
                versions.push(backend.version);
            }
        }
        outlier.adopt(slots.iter().map(|slot| &slot.health));
        // Saturating: a snapshot's weights are not bounded, and a sum past u32 must not panic.
        let total_weight = ranges
            .iter()
            .fold(0, |sum: u32, (w, _)| sum.saturating_add(*w));
        Self {
            shared: Arc::new(Shared {
                destination,
                slots,
                backends: ranges,
                versions,
                total_weight,
                algorithm,
                next: AtomicUsize::new(0),
                outlier,
                epoch,
            }),
        }
    }

    /// The index of the backend of `version`, to pin a request to it; `None` when that
    /// version has no endpoints.
    pub(crate) fn backend_of(&self, version: &str) -> Option<usize> {
        self.shared.versions.iter().position(|v| v == version)
    }

    /// The endpoints ejected right now.
    pub(crate) fn ejected(&self) -> Vec<SocketAddr> {
        let now = self.shared.now();
        self.shared
            .slots
            .iter()
            .filter(|slot| slot.health.state(now) != State::Closed)
            .map(|slot| slot.endpoint.addr())
            .collect()
    }

    /// The endpoint objects, to carry their pooled connections into a rebuilt balancer.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.shared.slots.iter().map(|slot| &slot.endpoint)
    }

    /// The slot the next try of a request that has made `attempts` goes to, chosen as `call`
    /// chooses it, without recording or sending anything (for `bench_support`).
    pub(crate) fn pick(&self, attempts: Option<&Attempts>) -> Option<usize> {
        self.shared.pick(self.shared.now(), attempts)
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
            let app_down = result.as_ref().is_ok_and(app_unavailable);
            if let Transition::Ejected(time) = in_flight.finish(class, app_down)
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
        let range = self.backend(attempts)?;
        let tried = |i: usize| attempts.is_some_and(|a| a.tried(i));
        // With no endpoint ejected every one is healthy and none waits for a probe: p2c can
        // draw its two candidates directly instead of scanning the backend, and there is no
        // probe to send.
        let all_healthy = self.outlier.none_ejected();
        if all_healthy
            && self.algorithm == LoadBalancer::P2cEwma
            && let Some(i) = self.two_choices(now, range.clone(), &|i| !tried(i))
        {
            return Some(i);
        }
        if !all_healthy
            && let Some(i) = range.clone().find(|&i| {
                let health = &self.slots[i].health;
                health.state(now) == State::HalfOpen && health.claim_probe()
            })
        {
            return Some(i);
        }
        let closed = |i: usize| self.slots[i].health.state(now) == State::Closed;
        let retry = attempts.is_some_and(|a| a.count() > 0);
        let choose = |eligible: &dyn Fn(usize) -> bool| self.choose(now, range.clone(), eligible);
        choose(&|i| closed(i) && !tried(i))
            .or_else(|| retry.then(|| choose(&|i| !tried(i))).flatten())
            .or_else(|| choose(&closed))
            .or_else(|| choose(&|_| true))
    }

    /// The slots of the backend this request goes to: chosen by weight on its first try.
    fn backend(&self, attempts: Option<&Attempts>) -> Option<Range<usize>> {
        let pinned = attempts.and_then(Attempts::pinned);
        match self.backends.as_slice() {
            [] => None,
            [(weight, only)] => match pinned {
                Some(0) => Some(only.clone()),
                Some(_) => None,
                None => (*weight > 0).then(|| only.clone()),
            },
            backends => {
                // Out of range when nothing has weight: no backend.
                let by_weight = || {
                    weighted::draw(backends.iter().map(|(w, _)| *w), self.total_weight)
                        .unwrap_or(backends.len())
                };
                let chosen = match attempts {
                    Some(attempts) => attempts.backend(by_weight),
                    None => by_weight(),
                };
                backends.get(chosen).map(|(_, range)| range.clone())
            }
        }
    }

    /// Power of two choices in O(1): two distinct slots of `range` drawn at random, the less
    /// loaded one if both are `eligible`; `None` (scan instead) when either is not. A backend
    /// of one endpoint is that endpoint.
    fn two_choices(
        &self,
        now: u64,
        range: Range<usize>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let (base, n) = (range.start, range.len());
        let (a, b) = match n {
            0 => return None,
            1 => return eligible(base).then_some(base),
            _ => {
                let a = fastrand::usize(0..n);
                let b = fastrand::usize(0..n - 1);
                (base + a, base + if b >= a { b + 1 } else { b })
            }
        };
        (eligible(a) && eligible(b)).then(|| self.less_loaded(now, a, b))
    }

    /// Of two slots, the one with the lower load (`a` on a tie).
    fn less_loaded(&self, now: u64, a: usize, b: usize) -> usize {
        let (la, lb) = (self.slots[a].load.load(now), self.slots[b].load.load(now));
        if lb < la { b } else { a }
    }

    /// Chooses among the endpoints of `range` that `eligible` accepts, by the configured
    /// algorithm.
    fn choose(
        &self,
        now: u64,
        range: Range<usize>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let (base, n) = (range.start, range.len());
        match self.algorithm {
            LoadBalancer::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| base + (start + k) % n)
                    .find(|&i| eligible(i))
            }
            LoadBalancer::P2cEwma => {
                // Two distinct candidates, uniformly, in one pass (reservoir sampling).
                let (mut a, mut b, mut seen) = (None, None, 0usize);
                for i in range.filter(|&i| eligible(i)) {
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
                    (Some(a), Some(b)) => Some(self.less_loaded(now, a, b)),
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

    /// Records how the try went; `app_down`: the endpoint's sidecar said its app is down.
    fn finish(&mut self, class: Class, app_down: bool) -> Transition {
        self.done = true;
        let now = self.shared.now();
        let slot = self.slot();
        let failed = class.is_endpoint_failure();
        // A 429 is the endpoint asking for less: it weighs on its load like a failure, so p2c
        // sends elsewhere, but never counts towards ejecting it.
        let slow = failed || class.is_load_signal();
        slot.load.finish(now, self.started.elapsed(), slow);
        let transition = if app_down {
            self.shared.outlier.record_app_down(&slot.health, now)
        } else {
            self.shared.outlier.record(&slot.health, failed, now)
        };
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

/// Whether a peer sidecar answered that its app is down: a 502 or 503 it made itself, saying
/// `app-unavailable`.
fn app_unavailable<B>(rsp: &http::Response<B>) -> bool {
    matches!(
        rsp.status(),
        http::StatusCode::BAD_GATEWAY | http::StatusCode::SERVICE_UNAVAILABLE
    ) && rsp
        .headers()
        .get(MESH_ERROR)
        .is_some_and(|reason| reason == Reason::AppUnavailable.as_str())
}
