//! One write per burst on an HTTP/2 connection.
//!
//! h2 holds at most one DATA frame over 256 bytes in its encoder and writes and flushes it
//! before it takes the next, so a stream of 1 KiB gRPC replies leaves as one `writev` per
//! reply, and over TLS one record per reply (a 16 KiB frame as two: 16 KiB and its 9-byte
//! head). [`Coalesced`] sits under the HTTP/2 codec and gathers a burst into one buffer:
//! - a write while the connection is quiet goes straight through: no copy, no delay;
//! - so does a write of one buffer: that is h2's own, its small frames (headers, small DATA,
//!   window updates) already packed together, so a unary call's answer never waits;
//! - so does one that would fill the buffer by itself (a tunnel's or a body's 64 KiB frames
//!   between sidecars), after what was gathered before it: copying it would buy no fewer
//!   records and cost a copy and a delay to a stream that fills its own writes;
//! - a frame written by reference (a DATA frame's head and its payload, two buffers) within
//!   [`BURST`] of the last write-out is copied into the buffer, and so is anything after it;
//! - a flush right after such writes is put off: the task is woken, and the other tasks that
//!   were ready (the streams handing this connection more frames) run before it flushes
//!   again. h2 flushes on every turn of its connection task, so what waits leaves on the next.
//!
//! A full buffer ([`GATHER_LIMIT`]), a flush with nothing new since the last one, and a burst
//! older than [`BURST`] write out at once, so no byte waits longer than that and a busy
//! connection keeps its pace. Only for HTTP/2: an HTTP/1.1 connection may be upgraded and
//! handed to code that flushes once and then waits for bytes, where a put-off flush would
//! leave bytes behind; there [`Coalesced::passthrough`] changes nothing.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Writes within this long of the last write-out join the burst: long enough for a task's
/// turn through the frames it was handed, short against any latency a request notices.
const BURST: Duration = Duration::from_micros(50);

/// The most bytes gathered before they are written out: four full TLS records.
const GATHER_LIMIT: usize = 64 * 1024;

/// An HTTP/2 connection's transport, its bursts of writes gathered into one.
#[derive(Debug)]
pub(crate) struct Coalesced<T> {
    io: T,
    /// Gathers writes (HTTP/2), or passes every call through.
    gathers: bool,
    burst: Duration,
    /// Bytes taken and not yet written out: `gathered[written..]`. Empty (no allocation)
    /// between bursts, so an idle connection holds no buffer.
    gathered: Vec<u8>,
    written: usize,
    /// When `io` last took bytes.
    last_write_out: Option<Instant>,
    /// Bytes were gathered since the last flush was asked for.
    unflushed: bool,
}

// === impl Coalesced ===

impl<T> Coalesced<T> {
    /// Gathers bursts of writes when `http2`, else passes every call through.
    pub(crate) fn new(io: T, http2: bool) -> Self {
        Self::with_burst(io, http2, BURST)
    }

    /// Passes every call through.
    pub(crate) fn passthrough(io: T) -> Self {
        Self::new(io, false)
    }

    fn with_burst(io: T, gathers: bool, burst: Duration) -> Self {
        Self {
            io,
            gathers,
            burst,
            gathered: Vec::new(),
            written: 0,
            last_write_out: None,
            unflushed: false,
        }
    }

    fn in_burst(&self, now: Instant) -> bool {
        self.last_write_out
            .is_some_and(|at| now.saturating_duration_since(at) < self.burst)
    }

    /// Copies what fits of `bufs` into the buffer; how many bytes it took.
    fn gather(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(GATHER_LIMIT);
        }
        let mut room = GATHER_LIMIT.saturating_sub(self.gathered.len());
        let mut taken = 0;
        for buf in bufs {
            let n = buf.len().min(room);
            self.gathered.extend_from_slice(&buf[..n]);
            taken += n;
            room -= n;
            if room == 0 {
                break;
            }
        }
        self.unflushed |= taken > 0;
        taken
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes out everything gathered, then frees the buffer.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.gathered.len() {
            let rest = &self.gathered[self.written..];
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.gathered = Vec::new();
        self.written = 0;
        self.last_write_out = Some(Instant::now());
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.gathers {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        let now = Instant::now();
        let large = bufs.iter().map(|buf| buf.len()).sum::<usize>() >= GATHER_LIMIT;
        if large && !this.gathered.is_empty() {
            ready!(this.poll_write_out(cx))?;
        }
        let by_reference = bufs.iter().filter(|buf| !buf.is_empty()).count() > 1;
        if this.gathered.is_empty() && (large || !by_reference || !this.in_burst(now)) {
            let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
            this.last_write_out = Some(now);
            return Poll::Ready(Ok(n));
        }
        if this.gathered.len() >= GATHER_LIMIT {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(this.gather(bufs)))
    }

    fn is_write_vectored(&self) -> bool {
        self.gathers || self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.gathered.is_empty() {
            if this.unflushed && this.gathered.len() < GATHER_LIMIT && this.in_burst(Instant::now())
            {
                // The rest of the burst is likely queued behind this task: flush on its next turn.
                this.unflushed = false;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_write_out(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.gathered.is_empty() {
            ready!(this.poll_write_out(cx))?;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// What a pooled client knows of the connection: the transport's.
impl<T: Connection> Connection for Coalesced<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests;
