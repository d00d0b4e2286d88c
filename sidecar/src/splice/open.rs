//! The TCP streams open on the outbound side, whatever opened them (a `tcp` destination's
//! listener, an app's WebSocket upgrade or CONNECT), so that shutdown gives them the drain time
//! to end and then cuts what is left.
//!
//! Streams on the inbound side need no such count: each is a stream of a peer's HTTP/2
//! connection, and the inbound listener's drain already waits for those connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The open streams and the cut that ends them.
#[derive(Clone, Debug)]
pub(crate) struct OpenStreams {
    count: Arc<watch::Sender<usize>>,
    cut: CancellationToken,
}

impl Default for OpenStreams {
    fn default() -> Self {
        Self {
            count: Arc::new(watch::Sender::new(0)),
            cut: CancellationToken::new(),
        }
    }
}

impl OpenStreams {
    /// Runs `stream`, counted as open until it ends or is cut.
    pub(crate) async fn run(&self, stream: impl Future<Output = ()>) {
        let _open = Counted::new(&self.count);
        tokio::select! {
            () = stream => {}
            () = self.cut.cancelled() => {}
        }
    }

    /// Runs `stream` in a task of its own, counted as [`run`](Self::run) counts it.
    pub(crate) fn spawn(&self, stream: impl Future<Output = ()> + Send + 'static) {
        let streams = self.clone();
        tokio::spawn(async move { streams.run(stream).await });
    }

    /// How many streams are open.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits up to `timeout` for every open stream to end, then cuts the rest.
    pub(crate) async fn drain(&self, timeout: Duration) {
        let mut open = self.count.subscribe();
        let streams = *open.borrow_and_update();
        if streams == 0 {
            return;
        }
        tracing::info!(streams, "draining tcp streams");
        if tokio::time::timeout(timeout, open.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(drain_timeout = ?timeout, "drain time is up; cutting tcp streams");
            self.cut.cancel();
        }
    }
}

/// Counts one stream for as long as it lives.
struct Counted(Arc<watch::Sender<usize>>);

impl Counted {
    fn new(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_streams_that_end_and_cuts_those_that_do_not() {
        let streams = OpenStreams::default();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        streams.spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = ended_tx.send(());
        });
        let (cut_tx, mut cut_rx) = tokio::sync::oneshot::channel::<()>();
        streams.spawn(async move {
            // Never ends on its own; dropping it (the cut) drops the sender.
            let _cut_tx = cut_tx;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(streams.count(), 2);

        let started = tokio::time::Instant::now();
        streams.drain(Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(ended_rx.await.is_ok(), "the short stream ended on its own");
        tokio::time::timeout(Duration::from_secs(1), async {
            while streams.count() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the cut stream is gone");
        assert!(
            cut_rx.try_recv().is_err(),
            "the long stream was cut, not finished"
        );
    }
}
