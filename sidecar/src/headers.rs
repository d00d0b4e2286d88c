//! Headers the mesh reads, writes or removes.
//!
//! A proxy forwards end-to-end headers and drops hop-by-hop ones (RFC 9110 §7.6.1): they
//! describe one connection, and HTTP/2 forbids them outright. `te: trailers` is the exception
//! that survives, because gRPC requires it end to end.

use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{Body, BoxError};

/// The caller's verified SPIFFE ID, set by the inbound side for the local app.
pub const CLIENT_ID: HeaderName = HeaderName::from_static("x-mesh-client-id");
/// Why the mesh itself answered (present only on responses the mesh made).
pub const MESH_ERROR: HeaderName = HeaderName::from_static("x-mesh-error");
/// Set (to `true`) on a 503 that sheds load because a destination's limits are full.
pub const OVERLOADED: HeaderName = HeaderName::from_static("x-mesh-overloaded");
/// How many tries the outbound side made for a request.
pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-mesh-attempts");
/// Sidecars always speak HTTP/2 to each other; this records that the app spoke HTTP/1.x, so
/// the destination's sidecar forwards in the app's own protocol.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("x-mesh-orig-proto");
/// Marks a request between sidecars as a TCP stream for the destination's app: its body is what
/// the source sends and its response's body what the destination sends; the `:authority` names
/// the port. Removed from every request an app sends.
pub const TUNNEL: HeaderName = HeaderName::from_static("x-mesh-tunnel");
/// The value of [`TUNNEL`].
pub const TUNNEL_TCP: HeaderValue = HeaderValue::from_static("tcp");
/// Marks a copy a route's `RequestMirror` sent; the mirror's app sees it.
pub const MIRROR: HeaderName = HeaderName::from_static("x-mesh-mirror");
/// Value of [`ORIG_PROTO`] for HTTP/1.x requests.
pub const ORIG_PROTO_HTTP1: HeaderValue = HeaderValue::from_static("HTTP/1.1");

/// The status of an app that answered an upgrade without switching protocols but with a 2xx.
/// A 2xx to an extended CONNECT would open the stream, so on the mesh hop that answer travels
/// as [`APP_STATUS_CARRIER`] with the app's status here, and the caller's sidecar restores it.
pub const APP_STATUS: HeaderName = HeaderName::from_static("x-mesh-app-status");
/// The status that carries [`APP_STATUS`] between sidecars: not a 2xx, and not a failure for
/// the caller's outlier ejection.
pub const APP_STATUS_CARRIER: http::StatusCode = http::StatusCode::CONFLICT;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE` unless it asks for trailers.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names is cheaper than a lookup per name.
    let hop_by_hop = |name: &HeaderName| {
        [
            &CONNECTION,
            &KEEP_ALIVE,
            &PROXY_CONNECTION,
            &TRANSFER_ENCODING,
            &UPGRADE,
            &TE,
        ]
        .contains(&name)
    };
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if name != TE {
            headers.remove(name);
        }
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    let wants_trailers = headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(TE);
    if wants_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The absolute URI `http://<authority><path and query of uri>` of a forwarded request: the
/// authority becomes `:authority` on HTTP/2 and `Host` on HTTP/1.1.
pub(crate) fn absolute_uri(uri: &Uri, authority: &str) -> Result<Uri, http::Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
}

/// A response received from the next hop, as it is passed back: hop-by-hop headers removed,
/// body still streaming.
pub(crate) fn forwarded_response(mut rsp: Response<Incoming>) -> Response<Body> {
    remove_hop_by_hop(rsp.headers_mut());
    rsp.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_hop_by_hop_and_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "close, x-hop"),
            ("connection", "X-Other"),
            ("x-hop", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-end-to-end", "kept"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end-to-end"]);
    }

    #[test]
    fn te_survives_only_as_trailers() {
        let mut h = map(&[("te", "gzip, trailers;q=1")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h[TE], "trailers");
        let mut h = map(&[("te", "gzip")]);
        remove_hop_by_hop(&mut h);
        assert!(h.get(TE).is_none());
    }
}
