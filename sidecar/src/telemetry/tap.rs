//! Live taps: the requests crossing this sidecar, streamed to whoever asked (`GET /tap` on the
//! admin listener, which `meshctl tap` reads), like the access log but on demand.
//!
//! A tap can never slow or break traffic. With no tap open, a request pays one atomic load.
//! With taps open, a request that matches one is copied (names, method, path, status, timing;
//! never a body or a header value) into that tap's bounded channel with `try_send`: a tap over
//! its rate limit skips the request, a tap whose reader is slow drops it, and both are counted
//! and reported in the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events waiting for one tap's reader; more are dropped.
pub(crate) const CHANNEL: usize = 256;

/// Events a tap receives per second unless it asks for fewer; at most [`MAX_RATE`].
pub(crate) const DEFAULT_RATE: u64 = 100;

/// The most events per second a tap may ask for.
pub(crate) const MAX_RATE: u64 = 1000;

/// One request as a tap shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TapEvent {
    /// When it was answered, milliseconds since the Unix epoch.
    pub(crate) time_unix_ms: u64,
    /// `inbound` or `outbound`.
    pub(crate) direction: &'static str,
    /// The caller's SPIFFE ID.
    pub(crate) caller: String,
    /// The caller's service.
    pub(crate) source: String,
    /// The called service.
    pub(crate) destination: String,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) latency_ms: f64,
    /// Tries made (outbound; 0 inbound).
    pub(crate) attempts: u32,
    /// Empty when the request has no trace.
    pub(crate) trace_id: String,
}

/// What a tap wants to see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TapFilter {
    /// Only paths starting with this.
    pub(crate) path_prefix: Option<String>,
    /// Only requests from this caller: a service name or a SPIFFE ID.
    pub(crate) caller: Option<String>,
}

impl TapFilter {
    fn matches(&self, source: &str, caller: &str, path: &str) -> bool {
        self.path_prefix
            .as_deref()
            .is_none_or(|p| path.starts_with(p))
            && self
                .caller
                .as_deref()
                .is_none_or(|c| c == source || c == caller)
    }
}

/// One open tap.
#[derive(Debug)]
struct Subscriber {
    id: u64,
    filter: TapFilter,
    rate: u64,
    tx: mpsc::Sender<TapEvent>,
    /// The second (since `Taps::start`) the `sent` count belongs to, and the count.
    second: AtomicU64,
    sent: AtomicU64,
    /// Over the rate limit.
    skipped: AtomicU64,
    /// Channel full: the reader is slower than the traffic.
    dropped: AtomicU64,
}

/// Every open tap of this sidecar.
#[derive(Debug)]
pub(crate) struct Taps {
    start: Instant,
    open: AtomicUsize,
    next_id: AtomicU64,
    subscribers: ArcSwap<Vec<Arc<Subscriber>>>,
    /// Cancelled when the sidecar drains: every tap stream ends.
    closed: CancellationToken,
}

/// An open tap: events arrive on `events`; dropping it closes the tap.
#[derive(Debug)]
pub(crate) struct Tap {
    taps: Arc<Taps>,
    subscriber: Arc<Subscriber>,
    pub(crate) events: mpsc::Receiver<TapEvent>,
}

/// How many requests a tap missed since it last asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Missed {
    /// Over its rate limit.
    pub(crate) skipped: u64,
    /// Its reader was too slow.
    pub(crate) dropped: u64,
}

impl Default for Taps {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            subscribers: ArcSwap::default(),
            closed: CancellationToken::new(),
        }
    }
}

impl Taps {
    /// Whether any tap is open: the one check every request makes.
    pub(crate) fn active(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0
    }

    /// Opens a tap; `rate` is clamped to 1..=[`MAX_RATE`].
    pub(crate) fn open(self: &Arc<Self>, filter: TapFilter, rate: u64) -> Tap {
        let (tx, events) = mpsc::channel(CHANNEL);
        let subscriber = Arc::new(Subscriber {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            filter,
            rate: rate.clamp(1, MAX_RATE),
            tx,
            second: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        self.subscribers.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(subscriber.clone());
            list
        });
        self.open.fetch_add(1, Ordering::Relaxed);
        Tap {
            taps: self.clone(),
            subscriber,
            events,
        }
    }

    /// Ends every tap stream (the sidecar is draining).
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves once the sidecar drains.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Offers a request to every open tap that wants it; `event` is called only when one does.
    pub(crate) fn publish(
        &self,
        source: &str,
        caller: &str,
        path: &str,
        event: impl FnOnce() -> TapEvent,
    ) {
        let subscribers = self.subscribers.load();
        // Built at most once, however many taps want it.
        let mut make = Some(event);
        let mut built: Option<TapEvent> = None;
        let second = self.start.elapsed().as_secs() + 1;
        for s in subscribers.iter() {
            if !s.filter.matches(source, caller, path) {
                continue;
            }
            if s.second.swap(second, Ordering::Relaxed) != second {
                s.sent.store(0, Ordering::Relaxed);
            }
            if s.sent.fetch_add(1, Ordering::Relaxed) >= s.rate {
                s.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if built.is_none()
                && let Some(make) = make.take()
            {
                built = Some(make());
            }
            let Some(event) = &built else {
                continue;
            };
            if s.tx.try_send(event.clone()).is_err() {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Tap {
    /// The requests this tap missed since the last call.
    pub(crate) fn missed(&self) -> Missed {
        Missed {
            skipped: self.subscriber.skipped.swap(0, Ordering::Relaxed),
            dropped: self.subscriber.dropped.swap(0, Ordering::Relaxed),
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let id = self.subscriber.id;
        self.taps.subscribers.rcu(|list| {
            list.iter()
                .filter(|s| s.id != id)
                .cloned()
                .collect::<Vec<_>>()
        });
        self.taps.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration in milliseconds, with fractions.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str) -> TapEvent {
        TapEvent {
            time_unix_ms: 1,
            direction: "inbound",
            caller: "spiffe://mesh.local/ns/default/sa/storefront".into(),
            source: "storefront".into(),
            destination: "orders".into(),
            method: "POST".into(),
            path: path.into(),
            status: 201,
            latency_ms: 1.5,
            attempts: 0,
            trace_id: String::new(),
        }
    }

    fn offer(taps: &Taps, source: &str, path: &str) {
        taps.publish(source, "spiffe://x", path, || event(path));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_sees_what_it_filters_for_up_to_its_rate_and_counts_the_rest() {
        let taps = Arc::new(Taps::default());
        assert!(!taps.active());
        let mut tap = taps.open(
            TapFilter {
                path_prefix: Some("/orders".into()),
                caller: Some("storefront".into()),
            },
            3,
        );
        assert!(taps.active());
        offer(&taps, "storefront", "/health");
        offer(&taps, "inventory", "/orders/1");
        for n in 0..5 {
            offer(&taps, "storefront", &format!("/orders/{n}"));
        }
        let mut seen = Vec::new();
        while let Ok(e) = tap.events.try_recv() {
            seen.push(e.path);
        }
        assert_eq!(seen, ["/orders/0", "/orders/1", "/orders/2"]);
        assert_eq!(
            tap.missed(),
            Missed {
                skipped: 2,
                dropped: 0
            }
        );
        // A new second, a new allowance.
        tokio::time::advance(Duration::from_secs(1)).await;
        offer(&taps, "storefront", "/orders/5");
        assert_eq!(tap.events.try_recv().unwrap().path, "/orders/5");
        drop(tap);
        assert!(!taps.active());
        assert!(taps.subscribers.load().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_loses_events_not_traffic() {
        let taps = Arc::new(Taps::default());
        let tap = taps.open(TapFilter::default(), MAX_RATE);
        for n in 0..CHANNEL + 10 {
            offer(&taps, "storefront", &format!("/{n}"));
        }
        assert_eq!(
            tap.missed(),
            Missed {
                skipped: 0,
                dropped: 10
            }
        );
        assert_eq!(tap.missed().dropped, 0, "counts are reset once reported");
    }
}
