//! HTTP/1.1 upgrades (WebSockets) and CONNECT tunnels from the app, carried to the destination
//! on the pooled mTLS connection to a peer sidecar.
//!
//! An upgrade (`Connection: upgrade`, `Upgrade: websocket`) becomes an extended CONNECT
//! (RFC 8441): `:protocol websocket` with the request's path and end-to-end headers
//! (`Sec-WebSocket-*`, `Origin`). A CONNECT becomes a TCP stream to the destination's app, as a
//! `tcp` destination's connections do (`tunnel.rs`); its authority (`inventory:8080`) must name
//! the port the destination's app listens on. If the peer answers 200, the app gets
//! `101 Switching Protocols` (upgrade, with the destination app's headers) or `200` (CONNECT),
//! and bytes flow both ways through `splice.rs`; any other answer reaches the app unchanged and
//! nothing is upgraded.
//!
//! The stream goes straight to the destination's balancer (steps 6 to 8): no retries, since a
//! stream's bytes cannot be replayed. The destination's `timeout` bounds the wait for the
//! answer (504), never the stream once it is open.

use std::time::Duration;

use http::header::{CONNECTION, EXPECT, HOST, HeaderValue, UPGRADE};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use tower::Service;

use crate::body::{Body, BoxError, empty};
use crate::error::RequestTimeout;
use crate::headers::{
    APP_STATUS, APP_STATUS_CARRIER, ORIG_PROTO, ORIG_PROTO_HTTP1, TUNNEL, absolute_uri,
    remove_hop_by_hop,
};
use crate::metrics::Label;
use crate::splice::{
    MeshStream, OpenStreams, Splice, splice_upgraded, splice_upgraded_stream, stream_body,
};

use super::balance::Balance;
use super::tunnel::tunnel_request;

/// What kind of stream an app's request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// An HTTP/1.1 upgrade to this protocol (`websocket`).
    Protocol(String),
    /// A CONNECT tunnel (HTTP/1.1 or HTTP/2).
    Connect,
}

// === impl Upgrade ===

impl Upgrade {
    /// The upgrade or tunnel `req` asks for, if any.
    pub(crate) fn of<B>(req: &Request<B>) -> Option<Self> {
        if req.method() == Method::CONNECT {
            return Some(Upgrade::Connect);
        }
        if req.version() != Version::HTTP_11 {
            return None;
        }
        let asks = req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        // Only a visible-ASCII token can be a `:protocol`; anything else is not an upgrade.
        let protocol = req.headers().get(UPGRADE)?.to_str().ok()?.trim();
        // `h2c` (curl --http2 on http://) asks to speak HTTP/2 to the sidecar itself, not to
        // the destination: served as the HTTP/1.1 request it also is, its upgrade dropped.
        let h2c = protocol
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("h2c"));
        (asks && !h2c).then(|| Upgrade::Protocol(protocol.to_owned()))
    }

    /// The span's `mesh.upgrade`: the protocol, or `CONNECT`.
    pub(crate) fn name(&self) -> &str {
        match self {
            Upgrade::Protocol(p) => p,
            Upgrade::Connect => "CONNECT",
        }
    }
}

/// Where an upgrade goes.
pub(crate) struct Peer<'a> {
    /// The destination service.
    pub(crate) destination: &'a Label,
    /// Its balancer (steps 6 to 8).
    pub(crate) balance: Balance,
    /// Its `timeout`: the limit on the wait for the answer, not on the stream.
    pub(crate) timeout: Option<Duration>,
    /// The authority the app named.
    pub(crate) authority: Authority,
}

/// Sends the app's upgrade or CONNECT `req` to `peer`; on the peer's 200 answers the app so
/// that its connection switches, and joins the two streams.
pub(crate) async fn forward(
    peer: Peer<'_>,
    upgrade: Upgrade,
    mut req: Request<Incoming>,
    prepare: impl FnOnce(&mut Request<Body>),
    how: Splice,
    streams: &OpenStreams,
) -> Result<Response<Body>, BoxError> {
    let from_app = hyper::upgrade::on(&mut req);
    let (mut peer_req, stream) = match &upgrade {
        Upgrade::Protocol(protocol) => (to_peer(protocol, peer.authority, req)?, None),
        Upgrade::Connect => {
            let (send, body) = stream_body();
            (tunnel_request(peer.authority, body)?, Some(send))
        }
    };
    prepare(&mut peer_req);
    let mut balance = peer.balance;
    let answer = balance.call(peer_req);
    let mut rsp = match peer.timeout {
        None => answer.await?,
        Some(limit) => {
            tokio::time::timeout(limit, answer)
                .await
                .map_err(|_| RequestTimeout {
                    destination: peer.destination.to_string(),
                    timeout: limit,
                })??
        }
    };
    if rsp.status() != StatusCode::OK {
        // The app answered 2xx without switching: the peer sidecar carried its status aside.
        if rsp.status() == APP_STATUS_CARRIER
            && let Some(status) = rsp.headers_mut().remove(APP_STATUS)
            && let Ok(status) = StatusCode::from_bytes(status.as_bytes())
        {
            *rsp.status_mut() = status;
        }
        return Ok(rsp);
    }
    let to_peer = hyper::upgrade::on(&mut rsp);
    let (mut parts, body) = rsp.into_parts();
    match stream {
        Some(send) => {
            let mesh = MeshStream { send, recv: body };
            streams.spawn(splice_upgraded_stream(from_app, mesh, how));
        }
        None => streams.spawn(splice_upgraded(from_app, to_peer, how)),
    }
    if let Upgrade::Protocol(protocol) = upgrade {
        parts.status = StatusCode::SWITCHING_PROTOCOLS;
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(UPGRADE, HeaderValue::from_str(&protocol)?);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.extensions = http::Extensions::new();
    Ok(Response::from_parts(parts, empty()))
}

/// The extended CONNECT (`:protocol`, `:path`) for the peer. The body is empty; the stream is
/// what follows the 200.
fn to_peer<B>(
    protocol: &str,
    authority: Authority,
    req: Request<B>,
) -> Result<Request<Body>, BoxError> {
    let (mut parts, _) = req.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.remove(HOST);
    parts.headers.remove(EXPECT);
    parts.headers.remove(ORIG_PROTO);
    parts.headers.remove(TUNNEL);
    // Every upgrade comes from an HTTP/1.1 app, and goes to the destination's as one.
    parts.headers.insert(ORIG_PROTO, ORIG_PROTO_HTTP1);
    let mut extensions = http::Extensions::new();
    extensions.insert(Protocol::from(protocol));
    parts.uri = absolute_uri(&parts.uri, authority.as_str())?;
    parts.method = Method::CONNECT;
    parts.version = Version::HTTP_2;
    parts.extensions = extensions;
    Ok(Request::from_parts(parts, empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get("/chat");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        let ws = request(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(
            Upgrade::of(&ws),
            Some(Upgrade::Protocol("websocket".to_owned()))
        );
        assert_eq!(Upgrade::of(&request(&[("upgrade", "websocket")])), None);
        assert_eq!(Upgrade::of(&request(&[("connection", "upgrade")])), None);
        let h2c = request(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert_eq!(Upgrade::of(&h2c), None);
        let connect = Request::connect("inventory:8080").body(()).unwrap();
        assert_eq!(Upgrade::of(&connect), Some(Upgrade::Connect));
    }

    #[test]
    fn an_upgrade_becomes_an_extended_connect_with_its_end_to_end_headers() {
        let ws = request(&[
            ("host", "inventory"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "chat"),
            ("origin", "http://orders"),
            ("x-mesh-orig-proto", "HTTP/2"),
        ]);
        let Some(Upgrade::Protocol(protocol)) = Upgrade::of(&ws) else {
            panic!("not an upgrade");
        };
        let req = to_peer(&protocol, "inventory".parse().unwrap(), ws).unwrap();
        assert_eq!(req.method(), Method::CONNECT);
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri(), "http://inventory/chat");
        assert_eq!(
            req.extensions().get::<Protocol>().unwrap().as_str(),
            "websocket"
        );
        let mut names: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "origin",
                "sec-websocket-key",
                "sec-websocket-protocol",
                "x-mesh-orig-proto"
            ]
        );
        assert_eq!(req.headers()[ORIG_PROTO], "HTTP/1.1");
    }

    #[test]
    fn a_connect_becomes_a_tcp_stream_to_the_apps_port() {
        let req = tunnel_request("inventory:6379".parse().unwrap(), empty()).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri(), "http://inventory:6379/");
        assert_eq!(req.headers()[TUNNEL], "tcp");
        assert!(req.extensions().get::<Protocol>().is_none());
    }
}
