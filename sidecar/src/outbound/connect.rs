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
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::body::{Body, BoxError};
use crate::coalesce::Coalesced;
use crate::error::{ConnectFailed, ConnectTimeout, TlsFailed, UpstreamFailed};
use crate::identity::SpiffeId;
use crate::identity::TrustChanges;
use crate::serve::{MAX_PEER_HEADER_BYTES, PEER_MAX_FRAME_SIZE, UNTRUSTED_GRACE};

/// Interval of HTTP/2 PINGs on an idle peer connection, so a dead peer is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows towards peers. Fixed rather than adaptive: an adaptive window
/// grows with throughput and lets a peer send megabytes ahead of a slow downstream reader,
/// which is memory the sidecar must hold. 1 MiB per stream keeps loopback and LAN transfers at
/// full speed (see benches/RESULTS.md) and bounds what one stream can buffer.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// A peer sidecar's inbound address and the connection to it.
pub(crate) struct Endpoint {
    addr: SocketAddr,
    peer: SpiffeId,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    connect_timeout: Duration,
    /// The trust bundle as it changes: a connection to a peer no longer trusted is closed.
    trust: Option<TrustChanges>,
    /// The current connection. The lock is held while connecting, so concurrent requests
    /// share one new connection; afterwards it is held only to clone the sender.
    conn: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    sender: Option<http2::SendRequest<Body>>,
    /// The last failed connect: when it ended, and why. Requests that were already waiting
    /// for the lock when it failed share the failure instead of each trying again in turn,
    /// which against an unresponsive peer would cost one `connect_timeout` per request.
    failed: Option<(Instant, Arc<dyn std::error::Error + Send + Sync>)>,
}

/// A connect attempt made by another request that was waiting on the same endpoint failed.
///
/// Its `source` is the original error itself (not the `Arc`), so classification by cause
/// (`ConnectTimeout`, `TlsFailed`, ...) sees through it.
#[derive(Debug)]
pub(crate) struct SharedConnectFailure(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for SharedConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedConnectFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
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
            trust: None,
            conn: Mutex::new(Slot::default()),
        }
    }

    /// Closes each connection of this endpoint once the peer's certificate stops verifying
    /// against the trust bundle (a root was removed), so the next request connects anew.
    pub(crate) fn watching(mut self, trust: TrustChanges) -> Self {
        self.trust = Some(trust);
        self
    }

    /// The peer's inbound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The identity the peer must present.
    pub(crate) fn peer(&self) -> &SpiffeId {
        &self.peer
    }

    /// Sends one request over the pooled connection, connecting first if needed.
    pub(crate) async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        let upstream = |source| UpstreamFailed {
            endpoint: self.addr,
            peer: self.peer.clone(),
            source,
        };
        let mut sender = self.sender().await?;
        if sender.ready().await.is_err() {
            // The connection closed (the peer drained, or went away) before anything was sent
            // on it: one new connection may carry the request.
            sender = self.sender().await?;
            sender.ready().await.map_err(upstream)?;
        }
        match sender.try_send_request(req).await {
            Ok(rsp) => Ok(rsp),
            Err(mut failed) => match failed.take_message() {
                // Never sent: the connection closed under it (a GOAWAY, its maximum age), so
                // one new connection may carry it.
                Some(req) => {
                    let mut sender = self.sender().await?;
                    sender.ready().await.map_err(upstream)?;
                    Ok(sender.send_request(req).await.map_err(upstream)?)
                }
                None => Err(upstream(failed.into_error()).into()),
            },
        }
    }

    async fn sender(&self) -> Result<http2::SendRequest<Body>, BoxError> {
        let waiting_since = Instant::now();
        let mut slot = self.conn.lock().await;
        if let Some(sender) = slot.sender.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        if let Some((at, error)) = &slot.failed
            && *at >= waiting_since
        {
            return Err(SharedConnectFailure(error.clone()).into());
        }
        let connected = match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Ok(connected) => connected,
            Err(_) => Err(ConnectTimeout {
                endpoint: self.addr,
                peer: self.peer.clone(),
                timeout: self.connect_timeout,
            }
            .into()),
        };
        match connected {
            Ok(sender) => {
                slot.sender = Some(sender.clone());
                slot.failed = None;
                Ok(sender)
            }
            Err(error) => {
                let error: Arc<dyn std::error::Error + Send + Sync> = Arc::from(error);
                slot.failed = Some((Instant::now(), error.clone()));
                Err(SharedConnectFailure(error).into())
            }
        }
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
        let chain: Option<Vec<_>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect());
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(PEER_MAX_FRAME_SIZE)
            .max_header_list_size(MAX_PEER_HEADER_BYTES)
            .handshake(TokioIo::new(Coalesced::new(tls, true)))
            .await
            .map_err(|source| UpstreamFailed {
                endpoint: self.addr,
                peer: self.peer.clone(),
                source,
            })?;
        let (addr, peer) = (self.addr, self.peer.clone());
        let untrusted = self
            .trust
            .clone()
            .zip(chain)
            .map(|(trust, chain)| trust.server_untrusted(chain, peer.clone()));
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let closed = match untrusted {
                None => connection.await,
                Some(untrusted) => tokio::select! {
                    closed = &mut connection => closed,
                    () = untrusted => {
                        tracing::warn!(%addr, %peer,
                            "closing the connection: the peer's certificate no longer verifies \
                             against the trust bundle");
                        // Requests in flight get a moment; new ones open a new connection,
                        // since the peer sends GOAWAY as it sees the same bundle.
                        tokio::time::timeout(UNTRUSTED_GRACE, connection)
                            .await
                            .unwrap_or(Ok(()))
                    }
                },
            };
            if let Err(error) = closed {
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
