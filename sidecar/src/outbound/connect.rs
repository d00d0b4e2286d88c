//! Step 8: one pooled, multiplexed mTLS connection per endpoint.
//!
//! Sidecars always speak HTTP/2 to each other, so one connection per peer carries every
//! concurrent request as its own stream; there is no per-request connect or handshake. The
//! connection is made on first use and again whenever the previous one has closed. Concurrent
//! first requests wait on one connect rather than racing to open several.
//!
//! The TLS client config accepts only a server whose certificate chains to the trust bundle and
//! carries the destination's SPIFFE ID (see `identity::verify`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::Body;
use crate::error::{BoxError, ConnectFailed, ConnectTimeout, TlsFailed, UpstreamFailed};
use crate::identity::SpiffeId;

/// Interval of HTTP/2 PINGs on an idle peer connection, so a dead peer is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer sidecar's inbound address and the connection to it.
pub(crate) struct Endpoint {
    addr: SocketAddr,
    peer: SpiffeId,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    connect_timeout: Duration,
    /// The current connection. The lock is held while connecting, so concurrent requests
    /// share one new connection; afterwards it is held only to clone the sender.
    conn: Mutex<Option<http2::SendRequest<Body>>>,
}

// === impl Endpoint ===

impl Endpoint {
    pub(crate) fn new(
        addr: SocketAddr,
        peer: SpiffeId,
        destination: &str,
        tls: Arc<ClientConfig>,
        connect_timeout: Duration,
    ) -> Self {
        // SNI carries the destination's name; identity is checked by SPIFFE ID, not by SNI.
        let server_name = ServerName::try_from(destination.to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
        Self {
            addr,
            peer,
            server_name,
            tls: TlsConnector::from(tls),
            connect_timeout,
            conn: Mutex::new(None),
        }
    }

    /// The peer's inbound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request over the pooled connection, connecting first if needed.
    pub(crate) async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        let mut sender = self.sender().await?;
        let upstream = |source| UpstreamFailed {
            endpoint: self.addr,
            peer: self.peer.clone(),
            source,
        };
        sender.ready().await.map_err(upstream)?;
        Ok(sender.send_request(req).await.map_err(upstream)?)
    }

    async fn sender(&self) -> Result<http2::SendRequest<Body>, BoxError> {
        let mut slot = self.conn.lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let sender = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| ConnectTimeout {
                endpoint: self.addr,
                peer: self.peer.clone(),
                timeout: self.connect_timeout,
            })??;
        *slot = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<http2::SendRequest<Body>, BoxError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|source| ConnectFailed {
                endpoint: self.addr,
                peer: self.peer.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| TlsFailed {
                endpoint: self.addr,
                peer: self.peer.clone(),
                source,
            })?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .adaptive_window(true)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|source| UpstreamFailed {
                endpoint: self.addr,
                peer: self.peer.clone(),
                source,
            })?;
        let (addr, peer) = (self.addr, self.peer.clone());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %peer, %error, "peer connection closed");
            }
        });
        tracing::debug!(addr = %self.addr, peer = %self.peer, "connected to peer");
        Ok(sender)
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}
