//! Recent traffic per edge, second by second, for `meshctl stat` and the dashboard
//! (`GET /stats?window=30s` on the admin listener).
//!
//! Prometheus histograms are cumulative since start, so a window needs two scrapes and a wait.
//! Here each edge (direction, caller, callee) keeps a ring of one-second slots of counters and
//! latency buckets; a request adds to the current slot with a few relaxed atomic adds and no
//! lock, and a report sums the slots of the last N whole seconds. The buckets have fixed
//! bounds, so reports from many sidecars add up before percentiles are taken.
//!
//! Memory: a sidecar may call a thousand destinations, each an edge. A ring is held in pages of
//! [`PAGE_SLOTS`] seconds, each allocated when a request first lands in it, with 32-bit counters
//! (a second's count of one edge fits): an edge called once costs one page (about 3 KiB), an
//! edge busy for five minutes the whole ring (about 30 KiB), where whole rings of 64-bit
//! counters cost 59 KiB for every edge ever seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
pub use mesh_api::stats::{EdgeStats, LATENCY_BOUNDS_MS, StatsReport};
use tokio::time::Instant;

use super::labels::{Direction, Label};

/// Seconds kept: the longest window a report can cover.
pub const MAX_WINDOW_SECONDS: u64 = 300;

/// Slots in each edge's ring: one per second kept, plus the second in progress.
const SLOTS: usize = MAX_WINDOW_SECONDS as usize + 1;

const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Seconds per page of a ring.
const PAGE_SLOTS: usize = 30;
/// Pages per ring.
const PAGES: usize = SLOTS.div_ceil(PAGE_SLOTS);

/// One second of one edge.
#[derive(Debug, Default)]
struct Slot {
    /// Which second (since start, plus one) the counters belong to; 0: never used. 32 bits
    /// last 136 years.
    second: AtomicU32,
    requests: AtomicU32,
    failures: AtomicU32,
    retries: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

/// One edge's ring, in pages allocated on first use.
#[derive(Debug, Default)]
struct EdgeWindow {
    pages: [OnceLock<Box<[Slot; PAGE_SLOTS]>>; PAGES],
}

impl EdgeWindow {
    /// The slot of `second`, its page allocated if it was not yet.
    fn slot_or_allocate(&self, second: u32) -> Option<&Slot> {
        let index = slot_index(second);
        let page = self.pages.get(index / PAGE_SLOTS)?;
        page.get_or_init(|| Box::new(std::array::from_fn(|_| Slot::default())))
            .get(index % PAGE_SLOTS)
    }

    /// The slot of `second`, if its page was ever used.
    fn slot(&self, second: u32) -> Option<&Slot> {
        let index = slot_index(second);
        self.pages
            .get(index / PAGE_SLOTS)?
            .get()?
            .get(index % PAGE_SLOTS)
    }
}

/// Which traffic an edge is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EdgeKey {
    direction: Direction,
    source: Label,
    destination: Label,
}

/// Every edge's ring of this sidecar.
#[derive(Debug)]
pub struct Windows {
    start: Instant,
    /// Replaced (copy on write) only when a new edge appears, which is rare.
    edges: ArcSwap<HashMap<EdgeKey, Arc<EdgeWindow>>>,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            edges: ArcSwap::default(),
        }
    }
}

impl Windows {
    /// Seconds since start, plus one (so 0 marks an unused slot).
    fn second(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_secs() + 1).unwrap_or(u32::MAX)
    }

    fn edge(&self, key: EdgeKey) -> Arc<EdgeWindow> {
        if let Some(edge) = self.edges.load().get(&key) {
            return edge.clone();
        }
        let mut found = None;
        self.edges.rcu(|edges| {
            let mut edges = HashMap::clone(edges);
            let edge = edges
                .entry(key.clone())
                .or_insert_with(|| Arc::new(EdgeWindow::default()))
                .clone();
            found = Some(edge);
            edges
        });
        found.unwrap_or_default()
    }

    /// Records one answered request of `direction` from `source` to `destination`.
    pub fn record(
        &self,
        direction: Direction,
        source: &Label,
        destination: &Label,
        status: u16,
        latency: Duration,
        tries: u32,
    ) {
        let edge = self.edge(EdgeKey {
            direction,
            source: source.clone(),
            destination: destination.clone(),
        });
        let now = self.second();
        let Some(slot) = edge.slot_or_allocate(now) else {
            return;
        };
        let seen = slot.second.load(Ordering::Acquire);
        if seen != now
            && slot
                .second
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This request is the first of a new second in this slot: clear the old second's
            // counts. A request of the same second racing with the clear may be lost; a report
            // is a rate, not an audit.
            slot.requests.store(0, Ordering::Relaxed);
            slot.failures.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
            for bucket in &slot.latency {
                bucket.store(0, Ordering::Relaxed);
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
        if tries > 1 {
            slot.retries.fetch_add(tries - 1, Ordering::Relaxed);
        }
        let ms = latency.as_secs_f64() * 1000.0;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(BUCKETS - 1);
        if let Some(b) = slot.latency.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The last `window` whole seconds (the second in progress is left out), at most
    /// [`MAX_WINDOW_SECONDS`].
    pub fn report(&self, window: u64) -> StatsReport {
        let window = window.clamp(1, MAX_WINDOW_SECONDS);
        // At most 300: fits.
        let window32 = u32::try_from(window).unwrap_or(1);
        let now = self.second();
        // Whole seconds are 1..now-1; the window is the last `window` of them.
        let last = now.saturating_sub(1);
        let first = last.saturating_sub(window32 - 1).max(1);
        let covered = if last == 0 { 0 } else { last - first + 1 };
        let mut edges = Vec::new();
        for (key, edge) in self.edges.load().iter() {
            let mut stats = EdgeStats {
                direction: key.direction.as_str().to_owned(),
                source: key.source.as_str().to_owned(),
                destination: key.destination.as_str().to_owned(),
                requests: 0,
                failures: 0,
                retries: 0,
                latency_buckets: vec![0; BUCKETS],
            };
            for second in first..=last {
                let Some(slot) = edge.slot(second) else {
                    continue;
                };
                if covered == 0 || slot.second.load(Ordering::Acquire) != second {
                    continue;
                }
                stats.requests += u64::from(slot.requests.load(Ordering::Relaxed));
                stats.failures += u64::from(slot.failures.load(Ordering::Relaxed));
                stats.retries += u64::from(slot.retries.load(Ordering::Relaxed));
                for (sum, bucket) in stats.latency_buckets.iter_mut().zip(&slot.latency) {
                    *sum += u64::from(bucket.load(Ordering::Relaxed));
                }
            }
            if stats.requests > 0 {
                edges.push(stats);
            }
        }
        edges.sort_by(|a, b| {
            (&a.direction, &a.source, &a.destination).cmp(&(
                &b.direction,
                &b.source,
                &b.destination,
            ))
        });
        StatsReport {
            window_seconds: window,
            covered_seconds: u64::from(covered),
            latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            edges,
        }
    }
}

fn slot_index(second: u32) -> usize {
    usize::try_from(second).unwrap_or(0) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> Label {
        Label::from(s)
    }

    /// Pages of `edge`'s ring that were allocated.
    fn pages_in_use(w: &Windows, source: &str, destination: &str) -> usize {
        let edges = w.edges.load();
        let edge = edges
            .get(&EdgeKey {
                direction: Direction::Outbound,
                source: label(source),
                destination: label(destination),
            })
            .expect("the edge exists");
        edge.pages.iter().filter(|p| p.get().is_some()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_ring_allocates_a_page_only_when_a_request_lands_in_it() {
        let w = Windows::default();
        let (orders, payments) = (label("orders"), label("payments"));
        let ms = Duration::from_millis;
        w.record(Direction::Outbound, &orders, &payments, 200, ms(1), 1);
        assert_eq!(pages_in_use(&w, "orders", "payments"), 1);
        // The rest of the first page's seconds need nothing more.
        for _ in 1..PAGE_SLOTS - 1 {
            tokio::time::advance(Duration::from_secs(1)).await;
            w.record(Direction::Outbound, &orders, &payments, 200, ms(1), 1);
        }
        assert_eq!(pages_in_use(&w, "orders", "payments"), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        w.record(Direction::Outbound, &orders, &payments, 200, ms(1), 1);
        assert_eq!(pages_in_use(&w, "orders", "payments"), 2);
        // A window across both pages counts every request of its seconds.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(w.report(60).edges[0].requests, PAGE_SLOTS as u64);
        // An unused page reports nothing and allocates nothing.
        assert_eq!(w.report(300).edges[0].requests, PAGE_SLOTS as u64);
        assert_eq!(pages_in_use(&w, "orders", "payments"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_sums_whole_seconds_and_forgets_older_ones() {
        let w = Windows::default();
        let (orders, payments) = (label("orders"), label("payments"));
        let ms = Duration::from_millis;
        // Second 1: 10 requests, 2 of them 503, one retried once.
        for i in 0..10 {
            let status = if i < 2 { 503 } else { 201 };
            let tries = if i == 0 { 2 } else { 1 };
            w.record(
                Direction::Outbound,
                &orders,
                &payments,
                status,
                ms(4),
                tries,
            );
        }
        // The second in progress is not reported yet.
        assert!(w.report(10).edges.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        let r = w.report(10);
        assert_eq!(r.covered_seconds, 1);
        let [edge] = r.edges.as_slice() else {
            panic!("{r:?}")
        };
        assert_eq!(
            (edge.requests, edge.failures, edge.retries),
            (10, 2, 1),
            "{edge:?}"
        );
        assert_eq!(edge.latency_buckets[3], 10, "4ms falls in (3, 5]");
        // Second 2: 5 more. A 1 s window holds only them; a 10 s window both.
        for _ in 0..5 {
            w.record(Direction::Outbound, &orders, &payments, 200, ms(40), 1);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(w.report(1).edges[0].requests, 5);
        assert_eq!(w.report(10).edges[0].requests, 15);
        // Long after, the old seconds are gone even though their slots come round again.
        tokio::time::advance(Duration::from_secs(SLOTS as u64 + 1)).await;
        w.record(Direction::Outbound, &orders, &payments, 200, ms(1), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        let r = w.report(MAX_WINDOW_SECONDS);
        assert_eq!(r.covered_seconds, MAX_WINDOW_SECONDS);
        assert_eq!(r.edges[0].requests, 1, "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn edges_are_kept_apart() {
        let w = Windows::default();
        w.record(
            Direction::Inbound,
            &label("orders"),
            &label("payments"),
            200,
            Duration::ZERO,
            0,
        );
        w.record(
            Direction::Outbound,
            &label("payments"),
            &label("bank"),
            200,
            Duration::from_secs(60),
            1,
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let r = w.report(30);
        let edges: Vec<_> = r
            .edges
            .iter()
            .map(|e| {
                (
                    e.direction.as_str(),
                    e.source.as_str(),
                    e.destination.as_str(),
                )
            })
            .collect();
        assert_eq!(
            edges,
            [
                ("inbound", "orders", "payments"),
                ("outbound", "payments", "bank")
            ]
        );
        assert_eq!(r.edges[1].latency_buckets[BUCKETS - 1], 1);
    }
}
