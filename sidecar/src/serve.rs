//! Step 1, shared by every listener: accept connections and drain them on shutdown.
//!
//! Each accepted connection runs in its own task with a [`Draining`] handle. On shutdown the
//! listener closes first (new connections are refused), then every open connection is asked to
//! finish: HTTP/1.1 closes after the response in flight, HTTP/2 sends GOAWAY and lets open
//! streams complete. Whatever is still running when the drain time is up is dropped. A
//! connection may also be given a maximum age, past which it is asked to finish the same way
//! and, if it has not within its grace time, dropped.
//!
//! Each listener takes at most its `max_connections` at once ([`ConnectionCap`]): one more is
//! closed as it is accepted, counted and logged (at most ten lines a second), so a flood costs
//! a descriptor for a moment and never a task.
//!
//! Also here: binding the three [`Listeners`], and the HTTP server the outbound and inbound
//! listeners share ([`http_server`]), built from a listener's `limits`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::config::{HttpListenerLimits, ListenAddrs};
use crate::metrics::{Direction, Metrics};
use mesh_api::log_limit::LogLimit;

/// The first pause after a failed `accept` (e.g. out of file descriptors), doubled after each
/// failure in a row up to [`MAX_ACCEPT_BACKOFF`], so the loop neither spins nor sleeps long
/// once descriptors are free again.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The connections a listener may have open at once, shared by the listeners that draw on one
/// budget (the outbound listener and destinations' `listen` addresses).
#[derive(Clone, Debug)]
pub(crate) struct ConnectionCap {
    open: Arc<Semaphore>,
    max: u32,
}

// === impl ConnectionCap ===

impl ConnectionCap {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            open: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// A place for one more connection, held until it drops; `None` when all are taken.
    pub(crate) fn try_open(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }

    pub(crate) fn max(&self) -> u32 {
        self.max
    }
}

/// The pause after `failures` failed accepts in a row (at least one).
fn accept_backoff(failures: u32) -> Duration {
    MIN_ACCEPT_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_ACCEPT_BACKOFF)
}

/// The three bound listeners of a sidecar.
#[derive(Debug)]
pub struct Listeners {
    /// Plain HTTP from the local app.
    pub outbound: TcpListener,
    /// Mutual TLS from peer sidecars; none for a gateway, which is no destination.
    pub inbound: Option<TcpListener>,
    /// Admin endpoint.
    pub admin: TcpListener,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on listen.{name} {addr}: {source}")]
pub struct BindError {
    name: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

// === impl Listeners ===

impl Listeners {
    /// Binds the addresses of `listen`: all three, or without `inbound` (a gateway's).
    pub async fn bind(listen: &ListenAddrs, inbound: bool) -> Result<Self, BindError> {
        async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { name, addr, source })
        }
        Ok(Self {
            outbound: bind("outbound", listen.outbound).await?,
            inbound: match inbound {
                true => Some(bind("inbound", listen.inbound).await?),
                false => None,
            },
            admin: bind("admin", listen.admin).await?,
        })
    }
}

/// The largest HTTP/2 frame a sidecar accepts from a peer sidecar. The default (16 KiB) makes a
/// TCP stream's far side write 16 KiB at a time to its app however much arrived; 64 KiB is the
/// largest chunk a stream reads (`splice`), so each chunk crosses as one frame and is written
/// with one call. Frames this size delay other streams on the connection by tens of
/// microseconds at most.
pub(crate) const PEER_MAX_FRAME_SIZE: u32 = 64 << 10;

/// The most header bytes a response from a peer sidecar may carry: as much as the inbound
/// listener takes in a request by default (an app's 64 KiB plus the mesh's own headers).
pub(crate) const MAX_PEER_HEADER_BYTES: u32 = 96 << 10;

/// The HTTP/1.1 + HTTP/2 server of a listener with `limits`. The timer drives HTTP/1.1's
/// header-read timeout (a client that never finishes its headers is dropped) and HTTP/2
/// keep-alive pings. Header bytes are refused with 431 by hyper, header count too on HTTP/1.1
/// (HTTP/2's is checked per request, `http_limits.rs`); the HTTP/2 reset limits make a
/// connection that resets streams faster than they are served get GOAWAY `ENHANCE_YOUR_CALM`.
pub(crate) fn http_server(limits: &HttpListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes as usize)
        .max_headers(limits.max_headers as usize);
    let h2 = limits.http2;
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(h2.keep_alive_interval))
        .keep_alive_timeout(h2.keep_alive_timeout)
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams as usize)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams as usize)
        .max_header_list_size(limits.max_header_bytes);
    http
}

/// When a listener stops accepting (`token`), and how long its open connections then get to
/// finish (`timeout`).
#[derive(Clone, Debug)]
pub(crate) struct Drain {
    pub(crate) token: CancellationToken,
    pub(crate) timeout: Duration,
}

/// A connection's part in its listener's drain: it tells the connection when to finish, and
/// holds the drain open while the connection runs.
#[derive(Debug)]
pub(crate) struct Draining {
    stop: CancellationToken,
    _open: Option<TaskTrackerToken>,
}

/// How long a connection may live, and how long it then gets to finish.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxAge {
    pub(crate) age: Duration,
    pub(crate) grace: Duration,
}

impl Draining {
    /// A connection of no listener, which nothing drains.
    #[cfg(test)]
    pub(crate) fn never() -> Self {
        Self {
            stop: CancellationToken::new(),
            _open: None,
        }
    }

    /// Serves `conn` until it ends. Asked to finish when the listener drains or `idle`
    /// completes (no request in flight for the idle timeout; the drain's own timeout then
    /// applies), or when `max_age` has passed or `untrusted` completes (its peer's certificate
    /// no longer verifies); in those two cases it is dropped if it has not finished within the
    /// grace time.
    pub(crate) fn serve<C>(
        self,
        conn: C,
        max_age: Option<MaxAge>,
        untrusted: Option<Untrusted>,
        idle: Option<Idle>,
    ) -> Serving<C>
    where
        C: GracefulConnection,
    {
        Serving {
            conn: Box::pin(conn),
            stop: Box::pin(self.stop.cancelled_owned()),
            aged: max_age.map(|limit| Box::pin(tokio::time::sleep(limit.age))),
            untrusted,
            idle,
            grace: max_age.map_or(Duration::ZERO, |limit| limit.grace),
            state: Finish::NotAsked,
            _open: self._open,
        }
    }
}

/// Completes when a connection's peer is no longer trusted.
pub(crate) type Untrusted = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Completes when a connection has had no request in flight for its idle timeout.
pub(crate) type Idle = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long a connection whose peer is no longer trusted gets to finish what it is doing: long
/// enough for requests in flight, short enough that a removed root stops counting at once.
pub(crate) const UNTRUSTED_GRACE: Duration = Duration::from_secs(2);

/// A connection being served (see [`Draining::serve`]). A future of its own rather than an
/// `async fn`: hyper's connection types carry higher-ranked bounds that the compiler cannot
/// prove `Send` through an `async fn`'s state.
pub(crate) struct Serving<C> {
    conn: Pin<Box<C>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    aged: Option<Pin<Box<Sleep>>>,
    untrusted: Option<Untrusted>,
    idle: Option<Idle>,
    grace: Duration,
    state: Finish,
    _open: Option<TaskTrackerToken>,
}

/// Whether a connection has been asked to finish, and why.
enum Finish {
    NotAsked,
    /// The listener drains, or the connection was idle: the drain's timeout applies.
    Draining,
    /// Past its maximum age, or its peer no longer trusted: dropped when this grace timer
    /// fires.
    Ending(Pin<Box<Sleep>>),
}

impl<C: GracefulConnection> Future for Serving<C> {
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(done) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        match &mut this.state {
            Finish::NotAsked => {
                let aged = this
                    .aged
                    .as_mut()
                    .is_some_and(|aged| aged.as_mut().poll(cx).is_ready());
                let untrusted = this
                    .untrusted
                    .as_mut()
                    .is_some_and(|untrusted| untrusted.as_mut().poll(cx).is_ready());
                let idle = this
                    .idle
                    .as_mut()
                    .is_some_and(|idle| idle.as_mut().poll(cx).is_ready());
                if this.stop.as_mut().poll(cx).is_ready() {
                    this.state = Finish::Draining;
                } else if idle {
                    tracing::debug!("closing an idle connection");
                    this.state = Finish::Draining;
                } else if untrusted {
                    this.grace = UNTRUSTED_GRACE;
                    this.state = Finish::Ending(Box::pin(tokio::time::sleep(this.grace)));
                } else if aged {
                    this.state = Finish::Ending(Box::pin(tokio::time::sleep(this.grace)));
                } else {
                    return Poll::Pending;
                }
                this.conn.as_mut().graceful_shutdown();
                // Poll again: the connection acts on the request to finish when polled.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Finish::Draining => Poll::Pending,
            Finish::Ending(grace) => {
                if grace.as_mut().poll(cx).is_ready() {
                    tracing::debug!(grace = ?this.grace, "connection dropped after its grace time");
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

/// Accepts on `listener` until `drain`, handing each connection to `on_accept` while `cap` has
/// room (closing it at once otherwise), then drains.
pub(crate) async fn serve<F, Fut>(
    direction: Direction,
    listener: TcpListener,
    drain: Drain,
    metrics: Arc<Metrics>,
    cap: ConnectionCap,
    on_accept: F,
) where
    F: Fn(TcpStream, SocketAddr, Draining) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let log_limit = LogLimit::new(10);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = drain.token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    failures = 0;
                    let Some(place) = cap.try_open() else {
                        // Dropped here: the client sees its connection closed at once.
                        drop(tcp);
                        metrics.connection_refused(direction, "max-connections");
                        if log_limit.allow("connections refused") {
                            tracing::warn!(direction = direction.as_str(), %peer,
                                max_connections = cap.max(),
                                "connection refused: the listener's max_connections are open");
                        }
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let open = (metrics.connection_opened(direction), place);
                    let draining = Draining {
                        stop: stop.clone(),
                        _open: Some(connections.token()),
                    };
                    let conn = on_accept(tcp, peer, draining);
                    tokio::spawn(async move {
                        conn.await;
                        drop(open);
                    });
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let backoff = accept_backoff(failures);
                    if log_limit.allow("accept failures") {
                        tracing::warn!(direction = direction.as_str(), %error, ?backoff,
                            "accept failed");
                    }
                    tokio::time::sleep(backoff).await;
                }
            },
        }
    }
    drop(listener);
    stop.cancel();
    connections.close();
    if !connections.is_empty() {
        tracing::info!(
            direction = direction.as_str(),
            connections = connections.len(),
            "draining"
        );
    }
    let drain_timeout = drain.timeout;
    if tokio::time::timeout(drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            direction = direction.as_str(),
            ?drain_timeout,
            "drain time is up; dropping open connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_doubling_up_to_a_second() {
        let pauses: Vec<u64> = (1..=9)
            .map(|n| accept_backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(accept_backoff(u32::MAX), MAX_ACCEPT_BACKOFF);
    }

    #[test]
    fn a_cap_gives_out_places_until_full_and_takes_them_back() {
        let cap = ConnectionCap::new(2);
        let first = cap.try_open().expect("first place");
        let _second = cap.try_open().expect("second place");
        assert!(cap.try_open().is_none());
        drop(first);
        assert!(cap.try_open().is_some());
    }
}
