//! A TCP stream carried as one HTTP/2 stream whose request body holds the source's bytes and
//! whose response body holds the destination's, both streamed at once.
//!
//! Unlike a CONNECT stream as hyper exposes it (which ends cleanly however it ends), a body
//! tells its reader how it ended: `END_STREAM` is the app's half-close, and an `RST_STREAM`
//! is an abort. So an app's TCP reset reaches the other app as a reset: the side that sees the
//! reset fails its body with `CONNECT_ERROR` (RFC 9113 §8.5), the other sidecar reads that as
//! an error and resets its socket (`SO_LINGER` 0). The bytes also cross with no copy in the
//! proxy: what is read from the socket is the DATA frame's payload, and a received frame's
//! payload is what is written to the socket.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use http_body_util::channel::{Channel, Sender};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::idle::Idle;
use super::pump::{MAX_BUFFER, MIN_BUFFER};
use crate::body::{Body, BoxError};

/// How many chunks may wait between the socket and HTTP/2's flow control: one being sent, one
/// read ahead.
const CHUNKS_AHEAD: usize = 1;

/// The mesh's end of a stream: what goes to the peer sidecar, and what comes from it.
pub(crate) struct MeshStream {
    /// Feeds the body of our request (source side) or our response (destination side).
    pub(crate) send: Sender<Bytes, BoxError>,
    /// The peer's body: its response (source side) or its request (destination side).
    pub(crate) recv: Body,
}

/// The body that carries a stream's bytes to the peer, and the sender that feeds it.
pub(crate) fn stream_body() -> (Sender<Bytes, BoxError>, Body) {
    let (send, body) = Channel::new(CHUNKS_AHEAD);
    (send, body.boxed_unsync())
}

/// How one direction of a stream ended, when not by a clean end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamAborted {
    #[error("the app's connection failed: {0}")]
    App(#[source] std::io::Error),
    #[error("the peer sidecar reset the stream: {0}")]
    Peer(#[source] BoxError),
    #[error("the peer sidecar stopped reading")]
    PeerGone,
}

/// Copies what the app sends into the peer's body until the app half-closes (then the body
/// ends: `END_STREAM`) or fails (then the body fails: `RST_STREAM(CONNECT_ERROR)`).
pub(crate) async fn app_to_peer<R>(
    app: &mut R,
    send: &mut Sender<Bytes, BoxError>,
    counted: &Counter,
    idle: &Idle,
) -> Result<(), StreamAborted>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut size = MIN_BUFFER;
    loop {
        let mut chunk = BytesMut::with_capacity(size);
        let read = match app.read_buf(&mut chunk).await {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(error) => return Err(StreamAborted::App(error)),
        };
        counted.inc_by(read as u64);
        idle.touch();
        // Reads that fill the chunk ask for larger ones; small reads give the memory back.
        if read == chunk.capacity() {
            size = (size * 2).min(MAX_BUFFER);
        } else if read < size / 2 {
            size = (size / 2).max(MIN_BUFFER);
        }
        send.send_data(chunk.freeze())
            .await
            .map_err(|_| StreamAborted::PeerGone)?;
    }
}

/// Writes the peer's body to the app until it ends (then the app's connection is half-closed)
/// or fails (a reset by the peer).
pub(crate) async fn peer_to_app<W>(
    recv: &mut Body,
    app: &mut W,
    counted: &Counter,
    idle: &Idle,
) -> Result<(), StreamAborted>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    while let Some(frame) = recv.frame().await {
        let frame = frame.map_err(StreamAborted::Peer)?;
        if let Ok(data) = frame.into_data() {
            counted.inc_by(data.len() as u64);
            idle.touch();
            app.write_all(&data).await.map_err(StreamAborted::App)?;
        }
    }
    app.shutdown().await.map_err(StreamAborted::App)
}

/// Fails the body so that the peer sees a reset with `CONNECT_ERROR`, not an end.
pub(crate) fn reset(send: Sender<Bytes, BoxError>) {
    send.abort(Box::new(h2::Error::from(h2::Reason::CONNECT_ERROR)));
}
