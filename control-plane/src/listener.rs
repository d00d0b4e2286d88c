//! The API's connections: accepted within `api.max_connections`, handshaken within
//! `api.max_handshakes` and `api.handshake_timeout`, and closed after `api.idle_timeout` with
//! no call in flight.
//!
//! A connection over a cap is closed as soon as it is accepted: the client sees the connection
//! end and retries later, while the connections already open keep being served. Each limit is
//! counted in `mesh_control_plane_limited_total{limit}`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use mesh_api::spiffe::{SpiffeId, id_in_certificate};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::ApiLimits;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;

/// Data read this recently keeps an idle connection open a little longer: a call whose first
/// bytes were just read has not started yet.
const READ_GRACE: Duration = Duration::from_secs(1);

/// Who is on the other end of an API connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The SPIFFE ID of its verified client certificate, if it presented one.
    pub identity: Option<SpiffeId>,
    calls: Arc<Calls>,
}

/// The calls in flight on one connection, for its idle timeout.
#[derive(Debug)]
struct Calls {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// When the last call ended, in milliseconds since `epoch`.
    last_end_ms: AtomicU64,
}

/// A call in flight, for as long as it lives.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Calls>);

/// An accepted TLS connection that tells tonic who the peer is.
#[derive(Debug)]
pub(crate) struct TlsConnection {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    idle: Idle,
    /// Its place under `api.max_connections`, freed when the server drops it.
    _slot: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct Idle {
    timeout: Duration,
    check: Pin<Box<Sleep>>,
    last_read: Instant,
    metrics: Arc<Metrics>,
}

/// Accepts TCP connections within the caps and completes handshakes concurrently, so one slow
/// client never holds up the rest; yields finished connections to the gRPC server.
pub(crate) fn incoming(
    acceptor: TlsAcceptor,
    listener: TcpListener,
    limits: &ApiLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let (max_connections, max_handshakes) = (limits.max_connections, limits.max_handshakes);
    let handshake_timeout = limits.handshake_timeout;
    let idle_timeout = limits.idle_timeout;
    let log_limit = Arc::new(LogLimit::new(5));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = connections.clone().try_acquire_owned() else {
                metrics.limited("api.max_connections");
                if log_limit.allow("refused API connections") {
                    tracing::warn!(%remote, max_connections, "connection closed: api.max_connections open already");
                }
                continue;
            };
            let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                metrics.limited("api.max_handshakes");
                if log_limit.allow("refused API connections") {
                    tracing::warn!(%remote, max_handshakes, "connection closed: api.max_handshakes in progress already");
                }
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, metrics) = (acceptor.clone(), tx.clone(), metrics.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics.limited("api.handshake_timeout");
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                drop(handshake);
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|leaf| id_in_certificate(leaf).ok());
                let now = Instant::now();
                let info = PeerInfo {
                    remote_addr: Some(remote),
                    identity,
                    calls: Arc::new(Calls {
                        epoch: now,
                        in_flight: AtomicUsize::new(0),
                        last_end_ms: AtomicU64::new(0),
                    }),
                };
                let idle = Idle {
                    timeout: idle_timeout,
                    check: Box::pin(tokio::time::sleep(idle_timeout)),
                    last_read: now,
                    metrics,
                };
                let connection = TlsConnection {
                    inner: tls,
                    info,
                    idle,
                    _slot: slot,
                };
                let _ = tx.send(Ok(connection)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

// === impl PeerInfo ===

impl PeerInfo {
    /// Marks a call in flight on this connection until the returned guard drops, so the
    /// connection is not idle meanwhile.
    pub(crate) fn call(&self) -> InFlight {
        self.calls.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.calls.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_end_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl Idle ===

impl Idle {
    /// Ready when the connection has been idle for the timeout: no call in flight since, and
    /// nothing read within [`READ_GRACE`].
    fn poll_expired(&mut self, calls: &Calls, cx: &mut Context<'_>) -> Poll<()> {
        while self.check.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if calls.in_flight.load(Ordering::Acquire) > 0 {
                self.check.as_mut().reset(now + self.timeout);
                continue;
            }
            let last_end =
                calls.epoch + Duration::from_millis(calls.last_end_ms.load(Ordering::Acquire));
            let idle_until = last_end + self.timeout;
            let read_until = self.last_read + READ_GRACE;
            if now >= idle_until && now >= read_until {
                self.metrics.limited("api.idle_timeout");
                return Poll::Ready(());
            }
            self.check.as_mut().reset(idle_until.max(read_until));
        }
        Poll::Pending
    }
}

// === impl TlsConnection ===

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.idle.last_read = Instant::now();
                }
                Poll::Ready(result)
            }
            // Idle past the timeout: end the connection as if the client had closed it.
            Poll::Pending => match this.idle.poll_expired(&this.info.calls, cx) {
                Poll::Ready(()) => {
                    tracing::debug!(remote = ?this.info.remote_addr, "idle connection closed");
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
