//! Joins an app's connection and a stream to the peer sidecar, both ways, for as long as either
//! side has bytes to send: the outbound end joins the app's connection to its stream, the
//! inbound end joins the stream to its connection to the app. The app's end is a TCP socket, or
//! an HTTP/1.1 connection the app upgraded (a WebSocket) or turned into a tunnel (CONNECT).
//!
//! TCP streams (a `tcp` destination's connections, an app's CONNECT) cross as request and
//! response bodies (`stream.rs`); a WebSocket crosses as an extended CONNECT, joined by
//! `splice` with the buffers of `pump.rs`. A side that finishes sending (EOF, or `END_STREAM`)
//! half-closes the other, and the reply still flows back. A side that fails (a TCP reset, an
//! RST_STREAM, the peer connection lost) ends both at once: the TCP socket is closed with a
//! reset (`SO_LINGER` 0) and the body towards the peer fails (`RST_STREAM`), so neither end
//! mistakes an abort for a clean end. A stream quiet for its idle timeout is ended the same way
//! (`idle.rs`), and the outbound side's streams are counted for the drain (`open.rs`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::TcpMetrics;

mod idle;
mod open;
mod pump;
mod stream;

use self::idle::Idle;
pub(crate) use self::open::OpenStreams;

pub(crate) use self::stream::{MeshStream, stream_body};

/// Which way the TCP connection faces.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TcpSide {
    /// The calling app (outbound): what it sends goes towards the destination.
    Source,
    /// The destination's app (inbound): what it sends goes back to the source.
    Destination,
}

/// The app's end of a stream: a socket, the socket behind the bytes protocol detection already
/// read from it, or an app's upgraded HTTP connection.
pub(crate) trait AppStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Makes the app see the end as an abort: a reset where the app's end is a socket of ours.
    fn abort(&self);
}

impl AppStream for TcpStream {
    fn abort(&self) {
        let _ = self.set_zero_linger();
    }
}

/// An app's upgraded HTTP connection: hyper owns the socket, so an abort is a close.
impl AppStream for TokioIo<Upgraded> {
    fn abort(&self) {}
}

/// What a splice needs besides its two ends.
#[derive(Clone, Debug)]
pub(crate) struct Splice {
    pub(crate) side: TcpSide,
    pub(crate) metrics: TcpMetrics,
    /// How long the stream may carry no byte either way before both ends are reset.
    pub(crate) idle_timeout: Duration,
}

impl Splice {
    /// The counters of bytes read from the app's end and from the peer's.
    fn counters(&self) -> (Counter, Counter) {
        match self.side {
            TcpSide::Source => (self.metrics.sent.clone(), self.metrics.received.clone()),
            TcpSide::Destination => (self.metrics.received.clone(), self.metrics.sent.clone()),
        }
    }
}

/// Copies between `tcp` and `tunnel` until both directions end, counting bytes as they pass.
/// The stream counts as closed when this ends, or when it is dropped (a drain cut it short).
async fn splice(
    tcp: impl AppStream,
    tunnel: impl AsyncRead + AsyncWrite + Unpin + Send,
    how: Splice,
) {
    let (tcp_reads, tunnel_reads) = how.counters();
    let _open = Open::new(how.metrics.clone());
    let idle = Idle::new(how.idle_timeout);
    let mut tcp = Counted {
        inner: tcp,
        read: tcp_reads,
        idle: &idle,
    };
    let mut tunnel = Counted {
        inner: tunnel,
        read: tunnel_reads,
        idle: &idle,
    };
    let failed = tokio::select! {
        copied = pump::copy_both(&mut tcp, &mut tunnel) => copied.err().map(|e| e.to_string()),
        () = idle.expired() => {
            how.metrics.idle_timeouts.inc();
            Some(format!("no byte either way for {:?}", how.idle_timeout))
        }
    };
    if let Some(error) = failed {
        // Reset rather than close, so the app sees the abort as one; the tunnel's stream ends
        // when it drops.
        tcp.inner.abort();
        tracing::debug!(%error, "TCP stream aborted");
    }
}

/// Copies between `app` and a stream to the peer sidecar until both directions end, counting
/// bytes as they pass. A reset on either side resets the other: a failed app connection fails
/// the body towards the peer, and a reset from the peer resets the app's connection.
pub(crate) async fn splice_stream(app: impl AppStream, mesh: MeshStream, how: Splice) {
    let (app_reads, peer_reads) = how.counters();
    let _open = Open::new(how.metrics.clone());
    let idle = Idle::new(how.idle_timeout);
    let MeshStream { send, mut recv } = mesh;
    let mut send = Some(send);
    let (mut reader, mut writer) = tokio::io::split(app);
    let up = async {
        if let Some(send) = send.as_mut() {
            stream::app_to_peer(&mut reader, send, &app_reads, &idle).await?;
        }
        // The app half-closed: dropping the sender ends the body (`END_STREAM`).
        send = None;
        Ok(())
    };
    let down = stream::peer_to_app(&mut recv, &mut writer, &peer_reads, &idle);
    let failed = tokio::select! {
        copied = async { tokio::try_join!(up, down) } => copied.err().map(|e| e.to_string()),
        () = idle.expired() => {
            how.metrics.idle_timeouts.inc();
            Some(format!("no byte either way for {:?}", how.idle_timeout))
        }
    };
    if let Some(error) = failed {
        if let Some(send) = send.take() {
            stream::reset(send);
        }
        reader.unsplit(writer).abort();
        tracing::debug!(%error, "TCP stream aborted");
    }
}

/// Splices an app's upgraded HTTP connection (a CONNECT) and a stream to the peer once the
/// app's connection has switched (after the response that switches it): a future for a task of
/// its own.
pub(crate) async fn splice_upgraded_stream(app: OnUpgrade, mesh: MeshStream, how: Splice) {
    match app.await {
        Ok(app) => splice_stream(TokioIo::new(app), mesh, how).await,
        Err(error) => tracing::debug!(%error, "CONNECT closed before it opened"),
    }
}

/// Splices an app's upgraded HTTP/1.1 connection and a tunnel once both have switched protocols
/// (after the responses that switch them are sent): a future for a task of its own.
pub(crate) async fn splice_upgraded(app: OnUpgrade, tunnel: OnUpgrade, how: Splice) {
    match tokio::try_join!(app, tunnel) {
        Ok((app, tunnel)) => splice(TokioIo::new(app), TokioIo::new(tunnel), how).await,
        Err(error) => tracing::debug!(%error, "upgrade closed before it opened"),
    }
}

/// Joins a new connection to the app and a plain client's connection from outside the mesh
/// (the bytes detection read from it replayed first), until both directions end: a future for
/// a task of its own.
pub(crate) async fn splice_plain(app: TcpStream, client: impl AppStream, how: Splice) {
    splice(app, client, how).await;
}

/// Joins a redirected app's connection (the bytes detection read from it replayed first) and a
/// plain connection to the address it dialled, outside the mesh, until both directions end.
pub(crate) async fn splice_passthrough(app: impl AppStream, upstream: TcpStream, how: Splice) {
    splice(app, upstream, how).await;
}

/// Counts a stream open from creation, and closed with its duration when dropped.
struct Open {
    metrics: TcpMetrics,
    started: Instant,
}

impl Open {
    fn new(metrics: TcpMetrics) -> Self {
        metrics.opened.inc();
        Self {
            metrics,
            started: Instant::now(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.closed.inc();
        self.metrics
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A stream that counts the bytes read from it, and notes them as activity.
struct Counted<'a, S> {
    inner: S,
    read: Counter,
    idle: &'a Idle,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.read.inc_by(read as u64);
            self.idle.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
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
}
