//! Accepting on the HTTP listeners (admin, webhook) within a cap on open connections: one over
//! the cap is closed as soon as it is accepted, so the connections already open keep being
//! served, and the refusals are logged at a bounded rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::log_limit::LogLimit;

/// A listener whose open connections are capped.
#[derive(Debug)]
pub(crate) struct CappedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// The listener's name in logs (`admin`, `webhook`).
    name: &'static str,
    log_limit: LogLimit,
}

impl CappedListener {
    pub(crate) fn new(listener: TcpListener, max_connections: usize, name: &'static str) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            name,
            log_limit: LogLimit::new(5),
        }
    }

    /// The next connection with its slot (released when dropped), or `None` once `shutdown`
    /// is cancelled. A connection over the cap is closed and `on_full` called.
    pub(crate) async fn next(
        &self,
        shutdown: &CancellationToken,
        on_full: impl Fn(),
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        loop {
            let (stream, remote) = tokio::select! {
                () = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, listener = self.name, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return Some((stream, remote, slot)),
                Err(_) => {
                    on_full();
                    if self.log_limit.allow("refused connections") {
                        tracing::warn!(
                            %remote,
                            listener = self.name,
                            max_connections = self.max_connections,
                            "connection closed: the listener's connections are all open already"
                        );
                    }
                }
            }
        }
    }
}
