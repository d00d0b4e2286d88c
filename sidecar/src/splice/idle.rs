//! The idle timeout of a stream: when it last carried a byte either way, and the wait that
//! ends once it has carried none for its limit.
//!
//! Both directions note their activity here and one timer watches it, so a busy stream costs
//! an atomic store per chunk and one timer wake-up per `limit`, not a timer reset per chunk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a stream last moved bytes.
#[derive(Debug)]
pub(crate) struct Idle {
    started: Instant,
    /// Milliseconds from `started` to the last activity.
    last: AtomicU64,
    limit: Duration,
}

impl Idle {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            limit,
        }
    }

    /// Notes that bytes moved now.
    pub(crate) fn touch(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(elapsed, Ordering::Relaxed);
    }

    /// Completes once no bytes have moved for the limit.
    pub(crate) async fn expired(&self) {
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = self.started + last + self.limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_only_after_a_quiet_limit() {
        let idle = Idle::new(Duration::from_secs(10));
        let expired = idle.expired();
        tokio::pin!(expired);
        // Activity every 6 s keeps it open well past the limit.
        for _ in 0..5 {
            tokio::select! {
                () = &mut expired => panic!("expired while active"),
                () = tokio::time::sleep(Duration::from_secs(6)) => idle.touch(),
            }
        }
        let quiet_from = Instant::now();
        (&mut expired).await;
        let quiet = quiet_from.elapsed();
        assert!(
            quiet >= Duration::from_secs(10) && quiet < Duration::from_secs(11),
            "{quiet:?}"
        );
    }
}
