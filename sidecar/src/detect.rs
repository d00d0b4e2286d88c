//! Protocol detection on connections from the app: HTTP/1.x, HTTP/2 with prior knowledge, or
//! anything else (opaque TCP, a TLS ClientHello included).
//!
//! Only what the client sends first is read, and only until it decides: a request line's
//! method token and its space (HTTP/1.x), the 24-byte HTTP/2 preface, or a byte that can be
//! neither. A client that has sent nothing decisive when `detect_timeout` fires is decided on
//! with what is there: opaque TCP, outcome `timeout`. The bytes read are not lost: [`Rewind`]
//! replays them to whoever handles the connection next.
//!
//! The inbound listener asks one more thing first ([`detect_inbound`]): does the connection
//! open with a TLS handshake record (type 0x16, then major version 3)? That is a peer sidecar's
//! mTLS; anything else is a plain client from outside the mesh, detected as above. Neither a
//! method token nor the HTTP/2 preface can start with 0x16, so the two questions never overlap.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::splice::AppStream;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest method token taken for HTTP; registered methods have at most 17 characters.
const MAX_METHOD: usize = 32;

/// What a connection's first bytes say it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    H2,
    /// Anything else: bytes to pass on untouched.
    Tcp,
}

/// How detection ended, the `outcome` label of `mesh_protocol_detections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Http1,
    H2,
    /// Bytes that are not HTTP, or a client that closed before they said.
    Tcp,
    /// Nothing decisive sent within `detect_timeout`.
    Timeout,
}

// === impl Outcome ===

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Http1 => "http1",
            Outcome::H2 => "h2",
            Outcome::Tcp => "tcp",
            Outcome::Timeout => "timeout",
        }
    }

    /// The protocol to handle the connection as: a timeout is opaque TCP.
    pub(crate) fn protocol(self) -> Protocol {
        match self {
            Outcome::Http1 => Protocol::Http1,
            Outcome::H2 => Protocol::H2,
            Outcome::Tcp | Outcome::Timeout => Protocol::Tcp,
        }
    }
}

/// What an inbound connection opens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A TLS handshake record: a peer sidecar's mTLS.
    Tls,
    /// Anything else: a plain client from outside the mesh, and what it speaks.
    Plain(Outcome),
}

/// Reads what `io` sends first until its protocol is known, for at most `timeout`; returns the
/// outcome and the connection with those bytes put back in front.
pub(crate) async fn detect<S>(io: S, timeout: Duration) -> io::Result<(Outcome, Rewind<S>)>
where
    S: AsyncRead + Unpin,
{
    let undecided = (Outcome::Timeout, Outcome::Tcp);
    read_until(io, timeout, undecided, |buf| classify(buf).map(decided)).await
}

/// As [`detect`], for the inbound listener: a TLS handshake record first, else a plain
/// connection's protocol.
pub(crate) async fn detect_inbound<S>(io: S, timeout: Duration) -> io::Result<(Inbound, Rewind<S>)>
where
    S: AsyncRead + Unpin,
{
    let undecided = (
        Inbound::Plain(Outcome::Timeout),
        Inbound::Plain(Outcome::Tcp),
    );
    read_until(io, timeout, undecided, |buf| match buf {
        [TLS_HANDSHAKE, TLS_MAJOR_VERSION, ..] => Some(Inbound::Tls),
        [TLS_HANDSHAKE] => None,
        _ => classify(buf).map(|p| Inbound::Plain(decided(p))),
    })
    .await
}

/// The content type of a TLS handshake record, what a ClientHello arrives in.
const TLS_HANDSHAKE: u8 = 0x16;

/// The record's major version: 3 for every TLS from 1.0 to 1.3.
const TLS_MAJOR_VERSION: u8 = 0x03;

/// The outcome of a decided protocol.
fn decided(protocol: Protocol) -> Outcome {
    match protocol {
        Protocol::Http1 => Outcome::Http1,
        Protocol::H2 => Outcome::H2,
        Protocol::Tcp => Outcome::Tcp,
    }
}

/// Reads `io` until `decide` says what its first bytes are, for at most `timeout`. Undecided,
/// it ends with `on_timeout` when the time is up, or `on_close` when the client closed (or
/// filled the buffer with nothing decisive).
async fn read_until<S, T>(
    mut io: S,
    timeout: Duration,
    (on_timeout, on_close): (T, T),
    decide: impl Fn(&[u8]) -> Option<T>,
) -> io::Result<(T, Rewind<S>)>
where
    S: AsyncRead + Unpin,
{
    // Every decision is made within the preface or a method token and its space.
    let mut buf = [0u8; MAX_METHOD + 1];
    let mut len = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = loop {
        let Some(free) = buf.get_mut(len..).filter(|free| !free.is_empty()) else {
            break on_close;
        };
        match tokio::time::timeout_at(deadline, io.read(free)).await {
            Err(_) => break on_timeout,
            Ok(Ok(0)) => break on_close,
            Ok(Ok(n)) => {
                len += n;
                if let Some(decision) = decide(&buf[..len]) {
                    break decision;
                }
            }
            Ok(Err(error)) => return Err(error),
        }
    };
    Ok((outcome, Rewind::new(buf[..len].to_vec(), io)))
}

/// The protocol `buf`, a connection's first bytes, shows; `None` while it could still be
/// either HTTP version.
fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    // The preface reads like a request line with method PRI; while it matches, wait for all of
    // it. One that diverges ("PRI /x HTTP/1.1") is an HTTP/1 request, judged below.
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::H2);
    }
    for (i, &byte) in buf.iter().enumerate() {
        if byte == b' ' {
            return Some(if i == 0 {
                Protocol::Tcp
            } else {
                Protocol::Http1
            });
        }
        if i >= MAX_METHOD || !is_tchar(byte) {
            return Some(Protocol::Tcp);
        }
    }
    None
}

/// A token character (RFC 9110 §5.6.2), what a method is made of.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A connection whose first bytes were already read: they are read again first, then the
/// connection itself. Writes go straight to the connection.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been read again.
    replayed: usize,
    inner: S,
}

// === impl Rewind ===

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            replayed: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.replayed..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AppStream for Rewind<TcpStream> {
    fn abort(&self) {
        self.inner.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const PATIENCE: Duration = Duration::from_secs(5);

    #[test]
    fn first_bytes_are_classified() {
        for (bytes, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], Some(Protocol::Http1)),
            (b"G", None),
            (b"DELETE", None),
            (b"POST ", Some(Protocol::Http1)),
            (b"M-SEARCH ", Some(Protocol::Http1)),
            (H2_PREFACE, Some(Protocol::H2)),
            (b"PRI * HTTP/2", None),
            (b"PRI /x HTTP/1.1", Some(Protocol::Http1)),
            (b"\x16\x03\x01\x02\x00\x01", Some(Protocol::Tcp)),
            (b"*1\r\n$4\r\nPING\r\n", Some(Protocol::Tcp)),
            (b" GET", Some(Protocol::Tcp)),
            (b"GET\r\n", Some(Protocol::Tcp)),
            (&[b'A'; MAX_METHOD + 1], Some(Protocol::Tcp)),
        ] {
            assert_eq!(
                classify(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// Detects on a connection whose reads return `chunks` one per read, then whatever the
    /// client writes after detection; returns the outcome and all the detector's reader sees.
    async fn detect_chunks(chunks: &[&[u8]], timeout: Duration) -> (Outcome, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader: Box<dyn AsyncRead + Unpin + Send> = Box::new(tokio::io::empty());
        for chunk in chunks {
            reader = Box::new(reader.chain(std::io::Cursor::new(chunk.to_vec())));
        }
        let reader = reader.chain(server);
        let detected = tokio::time::timeout(PATIENCE, detect(reader, timeout))
            .await
            .expect("detection must end by its timeout");
        let (outcome, mut io) = detected.unwrap();
        client.write_all(b"|after").await.unwrap();
        drop(client);
        let mut seen = Vec::new();
        io.read_to_end(&mut seen).await.unwrap();
        (outcome, seen)
    }

    #[tokio::test]
    async fn a_request_line_in_pieces_is_http1_and_no_byte_is_lost() {
        let (outcome, seen) = detect_chunks(&[b"GE", b"T /x", b" HTTP/1.1\r\n"], PATIENCE).await;
        assert_eq!(outcome, Outcome::Http1);
        assert_eq!(seen, b"GET /x HTTP/1.1\r\n|after");
    }

    #[tokio::test]
    async fn the_h2_preface_in_pieces_is_h2() {
        let (outcome, seen) = detect_chunks(
            &[&H2_PREFACE[..3], &H2_PREFACE[3..10], &H2_PREFACE[10..]],
            PATIENCE,
        )
        .await;
        assert_eq!(outcome, Outcome::H2);
        assert_eq!(&seen[..H2_PREFACE.len()], H2_PREFACE);
        assert_eq!(&seen[H2_PREFACE.len()..], b"|after");
    }

    #[tokio::test]
    async fn a_tls_client_hello_is_tcp_at_its_first_byte() {
        let (outcome, seen) = detect_chunks(&[b"\x16", b"\x03\x01"], PATIENCE).await;
        assert_eq!(outcome, Outcome::Tcp);
        assert_eq!(seen, b"\x16\x03\x01|after");
    }

    #[tokio::test]
    async fn inbound_tells_a_tls_handshake_from_plain_bytes() {
        for (chunks, want) in [
            (&[&b"\x16"[..], b"\x03\x01\x02\x00"][..], Inbound::Tls),
            (&[&b"\x16\x03\x03"[..]], Inbound::Tls),
            (&[&b"\x16\x09"[..]], Inbound::Plain(Outcome::Tcp)),
            (
                &[&b"GET / HTTP/1.1\r\n"[..]],
                Inbound::Plain(Outcome::Http1),
            ),
            (
                &[&H2_PREFACE[..5], &H2_PREFACE[5..]],
                Inbound::Plain(Outcome::H2),
            ),
            (&[&b"SSH-2.0-x\r\n"[..]], Inbound::Plain(Outcome::Tcp)),
            (&[&b"\x16"[..]], Inbound::Plain(Outcome::Tcp)),
        ] {
            let (client, server) = tokio::io::duplex(1024);
            let mut reader: Box<dyn AsyncRead + Unpin + Send> = Box::new(tokio::io::empty());
            let mut sent = Vec::new();
            for chunk in chunks {
                sent.extend_from_slice(chunk);
                reader = Box::new(reader.chain(std::io::Cursor::new(chunk.to_vec())));
            }
            drop(client);
            let detected =
                tokio::time::timeout(PATIENCE, detect_inbound(reader.chain(server), PATIENCE))
                    .await
                    .expect("detection must end by its timeout");
            let (got, mut io) = detected.unwrap();
            assert_eq!(got, want, "{sent:?}");
            let mut seen = Vec::new();
            io.read_to_end(&mut seen).await.unwrap();
            assert_eq!(seen, sent, "no byte is lost");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_inbound_connection_is_a_plain_timeout() {
        let (_client, server) = tokio::io::duplex(1024);
        let (got, _) = detect_inbound(server, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got, Inbound::Plain(Outcome::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn one_byte_then_silence_is_decided_when_the_timeout_fires() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"G").await.unwrap();
        let started = tokio::time::Instant::now();
        let (outcome, mut io) = detect(server, Duration::from_millis(300)).await.unwrap();
        assert_eq!(outcome, Outcome::Timeout);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        drop(client);
        let mut seen = Vec::new();
        io.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, b"G");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_a_timeout_and_a_close_is_tcp() {
        let (_client, server) = tokio::io::duplex(1024);
        let (outcome, _) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(outcome, Outcome::Timeout);
        let (client, server) = tokio::io::duplex(1024);
        drop(client);
        let (outcome, _) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(outcome, Outcome::Tcp);
    }

    #[tokio::test]
    async fn a_small_reader_gets_the_prefix_over_several_reads() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (_, mut io) = detect(server, PATIENCE).await.unwrap();
        drop(client);
        let mut small = [0u8; 2];
        let mut seen = Vec::new();
        loop {
            let n = io.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&small[..n]);
        }
        assert_eq!(seen, b"GET / HTTP/1.1\r\n");
    }
}
