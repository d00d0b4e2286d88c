//! A TCP app and client for tests of `protocol: tcp` destinations.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the [`reply_at_eof`] app saw of one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Bytes arrived.
    Read(usize),
    /// The client closed its side: the app answered with everything it had read, then closed.
    Eof,
    /// The connection failed (a reset).
    Failed(std::io::ErrorKind),
}

/// A TCP app on port 0 that answers each connection, once its client has finished sending,
/// with everything it sent, and reports what it sees of every connection.
pub async fn reply_at_eof() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut all = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) => {
                            let _ = conn.write_all(&all).await;
                            let _ = conn.shutdown().await;
                            let _ = tx.send(Seen::Eof);
                            return;
                        }
                        Ok(n) => {
                            all.extend_from_slice(&buf[..n]);
                            let _ = tx.send(Seen::Read(n));
                        }
                        Err(e) => {
                            let _ = tx.send(Seen::Failed(e.kind()));
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Connects to `addr`, sends `bytes`, closes the sending side and reads the reply to its end
/// (within `patience`).
pub async fn round_trip(
    addr: SocketAddr,
    bytes: &[u8],
    patience: Duration,
) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(bytes).await?;
    conn.shutdown().await?;
    let mut reply = Vec::new();
    tokio::time::timeout(patience, conn.read_to_end(&mut reply)).await??;
    Ok(reply)
}
