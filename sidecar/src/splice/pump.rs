//! One direction of a splice: reads from one end and writes what it read to the other.
//!
//! A fixed 8 KiB buffer (what `tokio::io::copy` uses) makes a bulk stream cost one read, one
//! HTTP/2 DATA frame, one TLS record and one write per 8 KiB, and the per-chunk work dominates.
//! A large fixed buffer fixes that but costs its size on every open connection, and a mesh
//! holds many mostly idle ones (pooled database connections, WebSockets). So the buffer here
//! exists only while bytes flow: it is allocated when the reader is polled and freed as soon as
//! the reader has nothing more and everything read was written. Its size follows the flow: it
//! doubles (up to [`MAX_BUFFER`]) when a burst fills it and halves when a burst uses less than
//! half of it, so a connection that carries small messages allocates small buffers.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

/// The smallest buffer, and the first one: what one small message needs.
pub(crate) const MIN_BUFFER: usize = 8 << 10;
/// The largest buffer: a write carries four TLS records, and the allocation stays below
/// glibc's threshold for mapping memory of its own (128 KiB), so a burst costs no system call.
pub(crate) const MAX_BUFFER: usize = 64 << 10;

/// Copies both ways between `a` and `b` until both directions have ended (each end shut down
/// after the other's EOF), or until either fails.
pub(crate) async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_to_b, mut b_to_a) = (Pump::default(), Pump::default());
    let (mut a_done, mut b_done) = (false, false);
    poll_fn(|cx| {
        if !a_done
            && let Poll::Ready(result) = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))
        {
            result?;
            a_done = true;
        }
        if !b_done
            && let Poll::Ready(result) = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))
        {
            result?;
            b_done = true;
        }
        if a_done && b_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// The state of one direction between polls.
#[derive(Debug)]
pub(crate) struct Pump {
    /// Bytes read and not yet written from `written` on; unallocated while the flow is quiet.
    buf: BytesMut,
    written: usize,
    /// The capacity to allocate for the next burst.
    size: usize,
    /// Bytes read since the buffer was last allocated.
    burst: usize,
    read_done: bool,
    need_flush: bool,
}

impl Default for Pump {
    fn default() -> Self {
        Self {
            buf: BytesMut::new(),
            written: 0,
            size: MIN_BUFFER,
            burst: 0,
            read_done: false,
            need_flush: false,
        }
    }
}

impl Pump {
    /// The buffer's capacity now: zero between bursts.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// The capacity the next burst starts with.
    #[cfg(test)]
    pub(crate) fn next_size(&self) -> usize {
        self.size
    }

    /// Copies until `reader` ends (then shuts `writer` down) or fails; `Ready` only then.
    pub(crate) fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        // Give other tasks a turn after a while, as tokio's own copy does.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            if !self.read_done && self.has_room() {
                match self.poll_fill(cx, reader.as_mut()) {
                    Poll::Ready(result) => {
                        coop.made_progress();
                        result?;
                    }
                    Poll::Pending if self.written == self.buf.len() => {
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            coop.made_progress();
                            self.need_flush = false;
                        }
                        self.release();
                        return Poll::Pending;
                    }
                    // Nothing more to read now, but something to write.
                    Poll::Pending => {}
                }
            }

            while self.written < self.buf.len() {
                let wrote = match writer.as_mut().poll_write(cx, &self.buf[self.written..]) {
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Poll::Ready(result) => result?,
                    Poll::Pending => {
                        // Top the buffer up meanwhile, for a larger write when it can go.
                        if !self.read_done && self.has_room() {
                            ready!(self.poll_fill(cx, reader.as_mut()))?;
                        }
                        return Poll::Pending;
                    }
                };
                if wrote == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                coop.made_progress();
                self.written += wrote;
                self.need_flush = true;
            }
            self.recycle();

            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.release();
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn has_room(&self) -> bool {
        self.buf.capacity() == 0 || self.buf.len() < self.buf.capacity()
    }

    /// Reads once into the buffer's free space, allocating the buffer first if the flow was
    /// quiet.
    fn poll_fill<R>(&mut self, cx: &mut Context<'_>, reader: Pin<&mut R>) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
    {
        if self.buf.capacity() == 0 {
            self.buf = BytesMut::with_capacity(self.size);
            self.burst = 0;
        }
        match tokio_util::io::poll_read_buf(reader, cx, &mut self.buf) {
            Poll::Ready(Ok(0)) => {
                self.read_done = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(read)) => {
                self.burst += read;
                Poll::Ready(Ok(()))
            }
            // Interrupted: try again on the next turn.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Everything read was written: start the buffer over, larger if the reads filled it.
    fn recycle(&mut self) {
        let filled = self.buf.len() == self.buf.capacity();
        self.buf.clear();
        self.written = 0;
        if filled && self.size < MAX_BUFFER {
            self.size = (self.size * 2).min(MAX_BUFFER);
            self.buf = BytesMut::with_capacity(self.size);
        }
    }

    /// The reader has nothing more for now and nothing is left to write: free the buffer, and
    /// start the next burst smaller if this one used less than half of it.
    fn release(&mut self) {
        if self.buf.capacity() == 0 {
            return;
        }
        if self.burst < self.size / 2 {
            self.size = (self.size / 2).max(MIN_BUFFER);
        }
        self.buf = BytesMut::new();
        self.written = 0;
        self.burst = 0;
    }
}

#[cfg(test)]
mod tests;
