//! Step 1, shared by every listener: accept connections and drain them on shutdown.
//!
//! Each accepted connection runs in its own task and is registered with a graceful-shutdown
//! watcher. On shutdown the listener closes first (new connections are refused), then every
//! open connection is asked to finish: HTTP/1.1 closes after the response in flight, HTTP/2
//! sends GOAWAY and lets open streams complete. Whatever is still running when the drain time
//! is up is dropped.
//!
//! Also here: binding the three [`Listeners`], and the HTTP server the outbound and inbound
//! listeners share ([`http_server`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

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

/// The HTTP/1.1 + HTTP/2 server of the outbound and inbound listeners. The timer drives
/// HTTP/1.1's header-read timeout (a client that never finishes its headers is dropped) and
/// HTTP/2 keep-alive pings.
pub(crate) fn http_server() -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)));
    http
}

/// When a listener stops accepting (`token`), and how long its open connections then get to
/// finish (`timeout`).
#[derive(Clone, Debug)]
pub(crate) struct Drain {
    pub(crate) token: CancellationToken,
    pub(crate) timeout: Duration,
}

/// Accepts on `listener` until `drain`, handing each connection to `on_accept`, then drains.
pub(crate) async fn serve<F, Fut>(
    direction: Direction,
    listener: TcpListener,
    drain: Drain,
    metrics: Arc<Metrics>,
    on_accept: F,
) where
    F: Fn(TcpStream, SocketAddr, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            () = drain.token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let open = metrics.connection_opened(direction);
                    let conn = on_accept(tcp, peer, graceful.watcher());
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
    let open = graceful.count();
    if open > 0 {
        tracing::info!(
            direction = direction.as_str(),
            connections = open,
            "draining"
        );
    }
    let drain_timeout = drain.timeout;
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
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
