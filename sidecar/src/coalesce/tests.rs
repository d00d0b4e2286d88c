//! A burst of frames written by reference leaves in one write on the flush after it; a quiet
//! write, a large one and h2's own buffer leave at once; nothing waits past a full buffer, a
//! stale burst or a shutdown; and HTTP/2 over real sockets carries every byte of a stream of
//! small messages in far fewer writes than messages.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::{Coalesced, GATHER_LIMIT};

/// A long burst, so which writes join it does not depend on this machine's speed.
const LONG_BURST: Duration = Duration::from_secs(30);

/// A real socket that counts the writes made on it.
struct Counted {
    tcp: TcpStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A connected pair of real sockets: the counted writing side and the reading side.
async fn socket_pair() -> (Counted, Arc<AtomicUsize>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialled, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = Counted {
        tcp: dialled.unwrap(),
        writes: writes.clone(),
    };
    (counted, writes, accepted.unwrap().0)
}

/// Counts the wake-ups of the task that polls with it.
#[derive(Default)]
struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Polls `io`'s flush once with a waker that counts: whether it was ready, and the wake-ups.
fn flush_once<T: AsyncWrite + Unpin>(io: &mut Coalesced<T>) -> (bool, usize) {
    let wakes = Arc::new(WakeCount::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    let ready = matches!(Pin::new(io).poll_flush(&mut cx), Poll::Ready(Ok(())));
    (ready, wakes.0.load(Ordering::Relaxed))
}

/// Writes `bytes` as h2 writes a DATA frame it holds by reference: its head and its payload, two
/// buffers in one vectored write.
async fn write_frame<T: AsyncWrite + Unpin>(io: &mut Coalesced<T>, bytes: &[u8]) {
    let (head, payload) = bytes.split_at(bytes.len() / 2);
    let taken = io
        .write_vectored(&[IoSlice::new(head), IoSlice::new(payload)])
        .await
        .unwrap();
    assert_eq!(taken, bytes.len(), "a gathered frame is taken whole");
}

/// Reads exactly `len` bytes from `tcp`, bounded in time.
async fn read_exactly(tcp: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut got))
        .await
        .expect("the bytes arrive within 10 s")
        .unwrap();
    got
}

#[tokio::test]
async fn a_write_while_quiet_goes_straight_through() {
    let (counted, writes, mut peer) = socket_pair().await;
    let mut io = Coalesced::with_burst(counted, true, LONG_BURST);

    io.write_all(b"first").await.unwrap();

    assert_eq!(
        writes.load(Ordering::Relaxed),
        1,
        "written before any flush"
    );
    assert!(io.gathered.is_empty() && io.gathered.capacity() == 0);
    assert_eq!(read_exactly(&mut peer, 5).await, b"first");
}

#[tokio::test]
async fn a_burst_leaves_in_one_write_on_the_flush_after_the_task_is_woken() {
    let (counted, writes, mut peer) = socket_pair().await;
    let mut io = Coalesced::with_burst(counted, true, LONG_BURST);
    io.write_all(b"a").await.unwrap();
    for part in [&b"bb"[..], b"ccc", b"dddd"] {
        write_frame(&mut io, part).await;
    }
    assert_eq!(writes.load(Ordering::Relaxed), 1, "the burst is gathered");

    let (ready, woken) = flush_once(&mut io);
    assert!(ready, "a put-off flush does not hold h2 back");
    assert_eq!(
        woken, 1,
        "the task is woken to flush again on its next turn"
    );
    assert_eq!(
        writes.load(Ordering::Relaxed),
        1,
        "the first flush is put off"
    );

    let (ready, woken) = flush_once(&mut io);
    assert!(ready);
    assert_eq!(woken, 0);
    assert_eq!(
        writes.load(Ordering::Relaxed),
        2,
        "one write for the whole burst"
    );
    assert_eq!(read_exactly(&mut peer, 10).await, b"abbcccdddd");
    assert_eq!(
        io.gathered.capacity(),
        0,
        "the buffer is freed after the burst"
    );
}

#[tokio::test]
async fn a_burst_older_than_its_window_leaves_at_its_first_flush() {
    let (counted, writes, mut peer) = socket_pair().await;
    let mut io = Coalesced::with_burst(counted, true, LONG_BURST);
    io.write_all(b"a").await.unwrap();
    write_frame(&mut io, b"bc").await;
    io.last_write_out = Instant::now().checked_sub(2 * LONG_BURST);

    let (ready, woken) = flush_once(&mut io);

    assert!(ready);
    assert_eq!(woken, 0, "nothing is put off");
    assert_eq!(writes.load(Ordering::Relaxed), 2);
    assert_eq!(read_exactly(&mut peer, 3).await, b"abc");
}

/// Reads everything `peer` receives until the writer closes, bounded in time.
async fn read_to_close(peer: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
        .await
        .expect("all bytes and the close arrive within 10 s")
        .unwrap();
    got
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_full_buffer_is_written_out_before_it_takes_more() {
    let (counted, writes, mut peer) = socket_pair().await;
    let mut io = Coalesced::with_burst(counted, true, LONG_BURST);
    io.write_all(b"a").await.unwrap();
    let small = 1024;
    let sent = pattern(GATHER_LIMIT + small);

    for chunk in sent.chunks(small) {
        write_frame(&mut io, chunk).await;
    }

    assert_eq!(
        io.gathered.len(),
        small,
        "the first GATHER_LIMIT bytes were written out"
    );
    assert_eq!(writes.load(Ordering::Relaxed), 2);
    io.shutdown().await.unwrap();
    let got = read_to_close(&mut peer).await;
    assert_eq!(got.len(), 1 + sent.len());
    assert_eq!(&got[1..], &sent[..]);
}

#[tokio::test]
async fn a_large_write_goes_straight_through_after_what_was_gathered() {
    let (counted, writes, mut peer) = socket_pair().await;
    let mut io = Coalesced::with_burst(counted, true, LONG_BURST);
    io.write_all(b"a").await.unwrap();
    write_frame(&mut io, b"bb").await;
    let block = pattern(GATHER_LIMIT);

    let taken = io.write(&block).await.unwrap();

    assert!(io.gathered.is_empty(), "nothing of it was copied");
    assert_eq!(
        writes.load(Ordering::Relaxed),
        3,
        "a, then bb, then the block"
    );
    // A socket may take part of it; the rest follows.
    io.write_all(&block[taken..]).await.unwrap();
    io.shutdown().await.unwrap();
    let got = read_to_close(&mut peer).await;
    assert_eq!(&got[..3], b"abb");
    assert_eq!(&got[3..], &block[..]);
}

#[tokio::test]
async fn shutdown_writes_out_what_was_gathered_first() {
    let (counted, _, mut peer) = socket_pair().await;
    let mut io = Coalesced::with_burst(counted, true, LONG_BURST);
    io.write_all(b"head").await.unwrap();
    write_frame(&mut io, b"tail").await;

    io.shutdown().await.unwrap();

    assert_eq!(read_to_close(&mut peer).await, b"headtail");
}

#[tokio::test]
async fn one_buffer_goes_straight_through_in_a_burst_too() {
    let (counted, writes, mut peer) = socket_pair().await;
    let mut io = Coalesced::with_burst(counted, true, LONG_BURST);
    // h2's own buffer: small frames it already packed, such as a unary call's whole answer.
    for part in [&b"a"[..], b"b", b"c"] {
        io.write_all(part).await.unwrap();
    }

    assert_eq!(writes.load(Ordering::Relaxed), 3);
    let (_, woken) = flush_once(&mut io);
    assert_eq!(woken, 0, "nothing waits");
    assert_eq!(read_exactly(&mut peer, 3).await, b"abc");
}

#[tokio::test]
async fn passthrough_writes_every_write_at_once() {
    let (counted, writes, mut peer) = socket_pair().await;
    let mut io = Coalesced::passthrough(counted);
    for part in [&b"a"[..], b"b", b"c"] {
        io.write_all(part).await.unwrap();
    }
    assert_eq!(writes.load(Ordering::Relaxed), 3);
    let (_, woken) = flush_once(&mut io);
    assert_eq!(woken, 0);
    assert_eq!(read_exactly(&mut peer, 3).await, b"abc");
}

/// Messages of the streamed response, and each one's size (a gRPC reply's).
const MESSAGES: usize = 400;
const MESSAGE_BYTES: usize = 1024;

fn message(seq: usize) -> Bytes {
    Bytes::from(vec![(seq % 251) as u8; MESSAGE_BYTES])
}

/// Serves one HTTP/2 connection on `listener` whose transport is `wrap`ped; every response
/// streams [`MESSAGES`] messages. The count of writes made on the server's socket.
async fn stream_server(
    listener: TcpListener,
    wrap: fn(Counted) -> Coalesced<Counted>,
) -> Arc<AtomicUsize> {
    let (tcp, _) = listener.accept().await.unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let io = wrap(Counted {
        tcp,
        writes: writes.clone(),
    });
    let service = hyper::service::service_fn(|_req| async {
        let frames = tokio_stream::iter(
            (0..MESSAGES).map(|seq| Ok::<_, std::convert::Infallible>(Frame::data(message(seq)))),
        );
        Ok::<_, std::convert::Infallible>(hyper::Response::new(StreamBody::new(frames)))
    });
    tokio::spawn(
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service),
    );
    writes
}

/// Fetches one streamed response over HTTP/2 from `addr`: every byte, in order.
async fn fetch_stream(addr: std::net::SocketAddr) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://stream/")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(10), async {
        send.send_request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
    })
    .await
    .expect("the stream ends within 10 s")
    .unwrap();
    rsp.to_bytes().to_vec()
}

/// A served stream's bytes and the writes the server made for them, its transport `wrap`ped.
async fn served(wrap: fn(Counted) -> Coalesced<Counted>) -> (Vec<u8>, usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (writes, body) = tokio::join!(stream_server(listener, wrap), fetch_stream(addr));
    (body, writes.load(Ordering::Relaxed))
}

fn expected_body() -> Vec<u8> {
    (0..MESSAGES)
        .flat_map(|seq| message(seq).to_vec())
        .collect()
}

#[tokio::test]
async fn http2_streams_every_message_in_far_fewer_writes_than_messages() {
    let (body, gathered_writes) = served(|io| Coalesced::with_burst(io, true, LONG_BURST)).await;
    assert_eq!(body, expected_body(), "every byte, in order");

    let (body, plain_writes) = served(Coalesced::passthrough).await;
    assert_eq!(body, expected_body());
    assert!(
        plain_writes >= MESSAGES,
        "h2 writes each message on its own: {plain_writes} writes for {MESSAGES} messages"
    );
    assert!(
        gathered_writes * 4 <= MESSAGES,
        "gathered: {gathered_writes} writes for {MESSAGES} messages"
    );
}

#[tokio::test]
async fn http2_with_the_default_burst_carries_every_byte() {
    let (body, _) = served(|io| Coalesced::new(io, true)).await;
    assert_eq!(body, expected_body());
}
