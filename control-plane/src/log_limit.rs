//! A cap on warnings per second about refused callers, so a flood of bad calls cannot flood
//! the logs: each refusal is counted in metrics; the log gets examples, and one line per second
//! says how many were left out.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Longest caller-chosen text (a service name) put in a log line.
const MAX_LOGGED: usize = 64;

/// At most `per_second` warnings in each second.
#[derive(Debug)]
pub(crate) struct LogLimit {
    per_second: u64,
    epoch: Instant,
    /// The second (since `epoch`) being counted.
    second: AtomicU64,
    count: AtomicU64,
    left_out: AtomicU64,
}

impl LogLimit {
    pub(crate) fn new(per_second: u64) -> Self {
        Self {
            per_second,
            epoch: Instant::now(),
            second: AtomicU64::new(0),
            count: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// Whether a warning may be logged now; at the first call of a new second, logs how many
    /// the last one left out.
    pub(crate) fn allow(&self) -> bool {
        let now = self.epoch.elapsed().as_secs();
        let second = self.second.load(Ordering::Acquire);
        if now != second
            && self
                .second
                .compare_exchange(second, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.count.store(0, Ordering::Release);
            let left_out = self.left_out.swap(0, Ordering::AcqRel);
            if left_out > 0 {
                tracing::warn!(left_out, "more refused calls were not logged");
            }
        }
        if self.count.fetch_add(1, Ordering::AcqRel) < self.per_second {
            true
        } else {
            self.left_out.fetch_add(1, Ordering::AcqRel);
            false
        }
    }
}

/// Caller-chosen text made safe for a log line: escaped (no control characters or newlines)
/// and cut to [`MAX_LOGGED`] characters.
pub(crate) fn escaped(text: &str) -> String {
    let cut: String = text.chars().take(MAX_LOGGED).collect();
    let mut out = cut.escape_debug().to_string();
    if cut.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn at_most_the_cap_each_second() {
        let limit = LogLimit::new(2);
        assert_eq!((0..10).filter(|_| limit.allow()).count(), 2);
        assert_eq!(limit.left_out.load(Ordering::Acquire), 8);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limit.allow());
        assert_eq!(limit.left_out.load(Ordering::Acquire), 0);
    }

    #[test]
    fn caller_text_is_escaped_and_cut() {
        assert_eq!(escaped("orders"), "orders");
        assert_eq!(escaped("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(100);
        assert_eq!(escaped(&long), format!("{}…", "x".repeat(64)));
    }
}
