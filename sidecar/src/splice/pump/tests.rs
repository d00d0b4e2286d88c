//! The pump's buffer follows the flow: it grows while bursts fill it, is freed between bursts,
//! and stays small for small messages; and the bytes arrive as sent, over real sockets.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::net::{TcpListener, TcpStream};

use super::{MAX_BUFFER, MIN_BUFFER, Pump, copy_both};

/// Polls `pump` from `reader` to `writer` once, as a task would when woken.
async fn poll_once(pump: &mut Pump, reader: &mut DuplexStream, writer: &mut DuplexStream) -> bool {
    std::future::poll_fn(|cx| {
        Poll::Ready(
            pump.poll_copy(cx, Pin::new(&mut *reader), Pin::new(&mut *writer))
                .is_ready(),
        )
    })
    .await
}

/// Reads everything `reader` has now, without waiting for more.
async fn drain(reader: &mut DuplexStream) -> usize {
    let mut total = 0;
    let mut chunk = vec![0u8; 64 << 10];
    while let Ok(Ok(read)) =
        tokio::time::timeout(Duration::from_millis(20), reader.read(&mut chunk)).await
    {
        if read == 0 {
            break;
        }
        total += read;
    }
    total
}

#[tokio::test]
async fn a_burst_that_fills_the_buffer_grows_it_and_the_buffer_is_freed_after() {
    let (mut app, mut from) = duplex(4 << 20);
    // A slower writer than reader, so the pump holds its buffer between polls.
    let (mut to, mut peer) = duplex(512 << 10);
    let mut pump = Pump::default();
    assert_eq!(
        pump.allocated(),
        0,
        "nothing is allocated before bytes flow"
    );

    app.write_all(&vec![7u8; 2 << 20]).await.unwrap();
    let mut largest = 0;
    // Bounded: each poll moves at least one buffer's worth, so 2 MiB needs far fewer.
    for _ in 0..1_000 {
        poll_once(&mut pump, &mut from, &mut to).await;
        largest = largest.max(pump.allocated());
        if drain(&mut peer).await == 0 && pump.allocated() == 0 {
            break;
        }
    }
    assert_eq!(
        largest, MAX_BUFFER,
        "a long burst grows the buffer to the cap"
    );
    assert_eq!(
        pump.allocated(),
        0,
        "the buffer is freed once the burst is written"
    );
}

#[tokio::test]
async fn small_messages_keep_the_smallest_buffer() {
    let (mut app, mut from) = duplex(1 << 20);
    let (mut to, mut peer) = duplex(1 << 20);
    let mut pump = Pump::default();
    for round in 0..20u32 {
        app.write_all(format!("GET key:{round}\r\n").as_bytes())
            .await
            .unwrap();
        poll_once(&mut pump, &mut from, &mut to).await;
        assert!(
            drain(&mut peer).await > 0,
            "round {round}: the message went through"
        );
        assert_eq!(pump.allocated(), 0, "round {round}: freed between messages");
        assert_eq!(pump.next_size(), MIN_BUFFER, "round {round}");
    }
}

#[tokio::test]
async fn a_grown_buffer_shrinks_when_bursts_get_small_again() {
    let (mut app, mut from) = duplex(4 << 20);
    let (mut to, mut peer) = duplex(4 << 20);
    let mut pump = Pump::default();
    app.write_all(&vec![1u8; 1 << 20]).await.unwrap();
    for _ in 0..1_000 {
        poll_once(&mut pump, &mut from, &mut to).await;
        if drain(&mut peer).await == 0 && pump.allocated() == 0 {
            break;
        }
    }
    assert!(pump.next_size() > MIN_BUFFER);
    for _ in 0..10 {
        app.write_all(b"ping").await.unwrap();
        poll_once(&mut pump, &mut from, &mut to).await;
        drain(&mut peer).await;
    }
    assert_eq!(
        pump.next_size(),
        MIN_BUFFER,
        "each small burst halves the next buffer"
    );
}

#[tokio::test]
async fn copy_both_carries_each_direction_byte_for_byte_with_half_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    // The far end echoes everything reversed in order of arrival, then closes its side.
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        socket.read_to_end(&mut received).await.unwrap();
        socket.write_all(&received).await.unwrap();
        socket.shutdown().await.unwrap();
        received.len()
    });
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entry = front.local_addr().unwrap();
    let proxy = tokio::spawn(async move {
        let (mut client_side, _) = front.accept().await.unwrap();
        let mut target_side = TcpStream::connect(target).await.unwrap();
        copy_both(&mut client_side, &mut target_side).await
    });

    let payload: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
    let mut client = TcpStream::connect(entry).await.unwrap();
    let (mut read_half, mut write_half) = client.split();
    let sent = async {
        write_half.write_all(&payload).await.unwrap();
        write_half.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let (_, read) = tokio::join!(sent, read_half.read_to_end(&mut echoed));
    read.unwrap();
    assert_eq!(echo.await.unwrap(), payload.len());
    assert!(echoed == payload, "the echo arrives byte for byte");
    proxy.await.unwrap().unwrap();
}
