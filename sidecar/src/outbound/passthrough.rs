//! Redirected traffic to an address outside the mesh, under `outbound.unknown: passthrough`:
//! sent straight to the address the app dialled (its original destination), in plain TCP, as
//! if no sidecar were there. The sidecar's own UID is excluded from the redirect rules, so the
//! connection it opens leaves the namespace instead of coming back to it.
//!
//! Opaque TCP is spliced both ways (`splice`). HTTP stays HTTP, so that it is counted and
//! traced like the mesh's requests: each redirected app connection gets one connection of its
//! own to its original destination ([`Upstream`]), opened at its first request that names no
//! destination and reused for the next (keep-alive), in the protocol the app spoke (HTTP/1.1,
//! or HTTP/2 with prior knowledge). Requests keep their Host (`:authority`) and end-to-end
//! headers; the mesh adds none, and no name is resolved: the connection goes to the IP and
//! port the app dialled. An HTTP/1.1 upgrade (a WebSocket) or a CONNECT the server accepts
//! turns the two connections into one byte stream. What fails to connect, or fails on the way,
//! is answered 502 (`x-mesh-error: passthrough-failed`).

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::body::{Body, BoxError, empty};
use crate::coalesce::Coalesced;
use crate::error::{PassthroughFailed, Unsupported};
use crate::headers::remove_hop_by_hop;
use crate::splice::{OpenStreams, Splice, splice_upgraded};

use super::upgrade::Upgrade;

/// The `destination` label of passthrough requests and streams.
pub(crate) const DESTINATION: &str = "passthrough";

/// One redirected app connection's own connection to its original destination.
#[derive(Debug)]
pub(crate) struct Upstream {
    address: SocketAddr,
    /// Opened at the first request; `None` again once it is known to be closed.
    sender: Mutex<Option<Sender>>,
}

#[derive(Debug)]
enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

// === impl Upstream ===

impl Upstream {
    /// The way to `address`, the original destination; nothing is opened yet.
    pub(crate) fn new(address: SocketAddr) -> Self {
        Self {
            address,
            sender: Mutex::new(None),
        }
    }

    /// Sends `req` on this connection's upstream, opened (again) when there is none or it
    /// closed. An HTTP/1.1 exchange holds the connection until its response headers: the app
    /// cannot send its next request before this one's response has been written anyway.
    async fn send(
        &self,
        req: Request<Body>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, BoxError> {
        let failed = |source: BoxError| PassthroughFailed {
            address: self.address,
            source,
        };
        let http2 = req.version() == Version::HTTP_2;
        let mut slot = self.sender.lock().await;
        if let Some(Sender::Http2(send)) = slot.as_ref()
            && !send.is_closed()
        {
            let mut send = send.clone();
            drop(slot);
            return Ok(send.send_request(req).await.map_err(|e| failed(e.into()))?);
        }
        let reusable = match slot.as_mut() {
            Some(Sender::Http1(send)) => send.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            *slot = Some(self.open(http2, connect_timeout).await?);
        }
        let answer = match slot.as_mut() {
            Some(Sender::Http1(send)) => send.send_request(req).await,
            Some(Sender::Http2(send)) => {
                let mut send = send.clone();
                drop(slot);
                send.send_request(req).await
            }
            None => return Err(failed("no connection".into()).into()),
        };
        Ok(answer.map_err(|e| failed(e.into()))?)
    }

    /// Connects to the original destination and starts HTTP on it.
    async fn open(&self, http2: bool, timeout: Duration) -> Result<Sender, PassthroughFailed> {
        let failed = |source: BoxError| PassthroughFailed {
            address: self.address,
            source,
        };
        let tcp = connect(self.address, timeout).await?;
        let io = TokioIo::new(Coalesced::new(tcp, http2));
        if http2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| failed(e.into()))?;
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "passthrough HTTP/2 connection closed with error");
                }
            });
            Ok(Sender::Http2(send))
        } else {
            let (send, conn) = http1::handshake(io).await.map_err(|e| failed(e.into()))?;
            tokio::spawn(async move {
                if let Err(error) = conn.with_upgrades().await {
                    tracing::debug!(%error, "passthrough HTTP/1 connection closed with error");
                }
            });
            Ok(Sender::Http1(send))
        }
    }
}

/// A plain TCP connection to `address`, within `timeout`.
pub(crate) async fn connect(
    address: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, PassthroughFailed> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => {
            return Err(PassthroughFailed {
                address,
                source: error.into(),
            });
        }
        Err(_) => {
            return Err(PassthroughFailed {
                address,
                source: format!("connect timed out after {timeout:?} (connect_timeout)").into(),
            });
        }
    };
    // Small writes of an interactive protocol go out at once, as they would without the mesh.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Sends the app's `req` to its original destination through `upstream`, and its response
/// back; an upgrade or CONNECT the server accepts is spliced as a stream, counted in `how`.
pub(crate) async fn forward(
    upstream: &Upstream,
    mut req: Request<Incoming>,
    upgrade: Option<Upgrade>,
    (connect_timeout, how): (Duration, Splice),
    streams: &OpenStreams,
) -> Result<Response<Body>, BoxError> {
    if upgrade.is_some() && req.version() == Version::HTTP_2 {
        // An HTTP/2 CONNECT would need a stream of its own on the upstream connection.
        return Err(Unsupported {
            method: req.method().clone(),
        }
        .into());
    }
    let from_app = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(Upgrade::Protocol(protocol)) = &upgrade {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(UPGRADE, HeaderValue::from_str(protocol)?);
    }
    let connect = parts.method == Method::CONNECT;
    let req = Request::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
    let mut rsp = upstream.send(req, connect_timeout).await?;
    let switched = match rsp.status() {
        StatusCode::SWITCHING_PROTOCOLS => true,
        status => connect && status.is_success(),
    };
    match from_app {
        Some(from_app) if switched => {
            let to_upstream = hyper::upgrade::on(&mut rsp);
            streams.spawn(splice_upgraded(from_app, to_upstream, how));
            let (parts, _) = rsp.into_parts();
            Ok(Response::from_parts(parts, empty()))
        }
        _ => {
            let (mut parts, body) = rsp.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                body.map_err(BoxError::from).boxed_unsync(),
            ))
        }
    }
}
