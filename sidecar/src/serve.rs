//! Step 1, shared by every listener: accept connections and drain them on shutdown.
//!
//! Each accepted connection runs in its own task with a [`Draining`] handle. On shutdown the
//! listener closes first (new connections are refused), then every open connection is asked to
//! finish: HTTP/1.1 closes after the response in flight, HTTP/2 sends GOAWAY and lets open
//! streams complete. Whatever is still running when the drain time is up is dropped. A
//! connection may also be given a maximum age, past which it is asked to finish the same way
//! and, if it has not within its grace time, dropped.
//!
//! Also here: binding the three [`Listeners`], and the HTTP server the outbound and inbound
//! listeners share ([`http_server`]).

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
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::config::ListenAddrs;
use crate::metrics::{Direction, Metrics};

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The three bound listeners of a sidecar.
#[derive(Debug)]
pub struct Listeners {
    /// Plain HTTP from the local app.
    pub outbound: TcpListener,
    /// Mutual TLS from peer sidecars.
    pub inbound: TcpListener,
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
    /// Binds the three addresses of `listen`.
    pub async fn bind(listen: &ListenAddrs) -> Result<Self, BindError> {
        async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { name, addr, source })
        }
        Ok(Self {
            outbound: bind("outbound", listen.outbound).await?,
            inbound: bind("inbound", listen.inbound).await?,
            admin: bind("admin", listen.admin).await?,
        })
    }
}

/// How long an HTTP/1.1 client may take to send a request's headers (hyper's default, written
/// out): one that stalls after its first bytes is then closed.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest HTTP/2 frame a sidecar accepts from a peer sidecar. The default (16 KiB) makes a
/// TCP stream's far side write 16 KiB at a time to its app however much arrived; 64 KiB is the
/// largest chunk a stream reads (`splice`), so each chunk crosses as one frame and is written
/// with one call. Frames this size delay other streams on the connection by tens of
/// microseconds at most.
pub(crate) const PEER_MAX_FRAME_SIZE: u32 = 64 << 10;

/// The most header bytes a request from an app may carry (Envoy's default is 60 KiB). Larger
/// ones are refused at the edge with 431, by hyper, instead of failing later between sidecars.
pub(crate) const MAX_APP_HEADER_BYTES: u32 = 64 << 10;

/// The most header bytes a message between sidecars may carry: an app's largest plus room for
/// what the mesh adds (identity, trace context).
pub(crate) const MAX_PEER_HEADER_BYTES: u32 = MAX_APP_HEADER_BYTES + (32 << 10);

/// The HTTP/1.1 + HTTP/2 server of the outbound and inbound listeners. The timer drives
/// HTTP/1.1's header-read timeout (a client that never finishes its headers is dropped) and
/// HTTP/2 keep-alive pings.
pub(crate) fn http_server() -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_APP_HEADER_BYTES as usize);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .max_header_list_size(MAX_APP_HEADER_BYTES);
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

    /// Serves `conn` until it ends. Asked to finish when the listener drains (the drain's own
    /// timeout then applies), or when `max_age` has passed or `untrusted` completes (its peer's
    /// certificate no longer verifies); in those two cases it is dropped if it has not finished
    /// within the grace time.
    pub(crate) fn serve<C>(
        self,
        conn: C,
        max_age: Option<MaxAge>,
        untrusted: Option<Untrusted>,
    ) -> Serving<C>
    where
        C: GracefulConnection,
    {
        Serving {
            conn: Box::pin(conn),
            stop: Box::pin(self.stop.cancelled_owned()),
            aged: max_age.map(|limit| Box::pin(tokio::time::sleep(limit.age))),
            untrusted,
            grace: max_age.map_or(Duration::ZERO, |limit| limit.grace),
            state: Finish::NotAsked,
            _open: self._open,
        }
    }
}

/// Completes when a connection's peer is no longer trusted.
pub(crate) type Untrusted = Pin<Box<dyn Future<Output = ()> + Send>>;

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
    grace: Duration,
    state: Finish,
    _open: Option<TaskTrackerToken>,
}

/// Whether a connection has been asked to finish, and why.
enum Finish {
    NotAsked,
    /// The listener drains: the drain's timeout applies.
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
                if this.stop.as_mut().poll(cx).is_ready() {
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

/// Accepts on `listener` until `drain`, handing each connection to `on_accept`, then drains.
pub(crate) async fn serve<F, Fut>(
    direction: Direction,
    listener: TcpListener,
    drain: Drain,
    metrics: Arc<Metrics>,
    on_accept: F,
) where
    F: Fn(TcpStream, SocketAddr, Draining) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            () = drain.token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let open = metrics.connection_opened(direction);
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
                    tracing::warn!(direction = direction.as_str(), %error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
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
