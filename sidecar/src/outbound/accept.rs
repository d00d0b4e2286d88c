//! Step 1 on the outbound listener: the protocol of each connection from the local app is
//! detected (`detect.rs`); HTTP/1.1 and HTTP/2 are served, every request handed to the outbound
//! handler (`Outbound::handle`, passed in so this module needs nothing from the one above it).
//! A connection that is not HTTP, or says nothing within `detect_timeout`, names no destination
//! and is closed, unless `sidecar redirect`'s rules brought it here: then the address the app
//! dialled (`original_dst.rs`) names its destination and it is tunnelled, or else passed
//! through or refused by `outbound.unknown` (`redirected.rs`), before detection for a
//! `protocol: tcp` destination. Such a connection's requests carry that address too, as an
//! [`OriginalDst`], and the connection's own way to it for a passthrough ([`Upstream`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::body::Body;
use crate::coalesce::Coalesced;
use crate::config::HttpListenerLimits;
use crate::detect::{Protocol, detect};
use crate::http_limits::Limited;
use crate::metrics::{Direction, Metrics};
use crate::original_dst::{OriginalDst, original_dst};
use crate::serve::{self, ConnectionCap, Drain, Draining, http_server};

use super::passthrough::Upstream;
use super::redirected::RedirectedTcp;

/// The outbound handler behind a pointer, for the listeners of destinations, which hold it
/// beside other state.
pub(crate) type Handler = Arc<dyn Fn(Request<Incoming>) -> HandlerFuture + Send + Sync>;

/// What [`Handler`] returns.
pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Serves the outbound listener until `drain`, then drains its connections. `cap` is shared
/// with the listeners of destinations; `redirected` tunnels the opaque TCP the redirect rules
/// send here.
pub(crate) fn spawn<H, F>(
    listener: TcpListener,
    (handle, redirected): (H, Arc<RedirectedTcp>),
    detect_timeout: Duration,
    (limits, cap): (&HttpListenerLimits, ConnectionCap),
    drain: Drain,
    metrics: Arc<Metrics>,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let http = Arc::new(http_server(limits));
    let limits = limits.clone();
    tokio::spawn(serve::serve(
        Direction::Outbound,
        listener,
        drain,
        metrics.clone(),
        cap,
        move |tcp, peer, draining| {
            connection(
                (http.clone(), limits.clone()),
                (handle.clone(), redirected.clone()),
                (tcp, peer),
                draining,
                detect_timeout,
                metrics.clone(),
            )
        },
    ))
}

/// Serves one connection from the local app: HTTP/1.1 or HTTP/2, each request proxied (an
/// HTTP/1.1 upgrade or a CONNECT the peer accepts turns the connection into a byte stream);
/// anything else is closed.
async fn connection<H, F>(
    (http, limits): (Arc<auto::Builder<TokioExecutor>>, HttpListenerLimits),
    (handle, redirected): (H, Arc<RedirectedTcp>),
    (tcp, peer): (TcpStream, SocketAddr),
    draining: Draining,
    detect_timeout: Duration,
    metrics: Arc<Metrics>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let original = redirected_to(&tcp, peer);
    // The byte-stream branches are boxed: a future is as large as its largest branch, and
    // forwarding (about 6 KiB of state) would otherwise be paid by every HTTP connection, idle
    // or not, on top of its own 2 KiB.
    if let Some(OriginalDst(dst)) = original
        && redirected.skips_detection(dst)
    {
        return Box::pin(redirected.forward(tcp, dst, peer)).await;
    }
    let (outcome, io) = match detect(tcp, detect_timeout).await {
        Ok(detected) => detected,
        Err(error) => {
            ::tracing::debug!(%peer, %error, "outbound connection failed before it spoke");
            return;
        }
    };
    metrics.protocol_detected(outcome.as_str());
    if outcome.protocol() == Protocol::Tcp {
        if let Some(OriginalDst(dst)) = original {
            return Box::pin(redirected.forward(io, dst, peer)).await;
        }
        ::tracing::debug!(
            %peer,
            outcome = outcome.as_str(),
            "outbound connection closed: this listener serves HTTP, and a connection that is \
             not HTTP names no destination (give the destination a listen address)"
        );
        return;
    }
    // The connection's own way to its original destination, for requests outside the mesh.
    let upstream = original.map(|OriginalDst(dst)| Arc::new(Upstream::new(dst)));
    let handle = move |mut req: Request<Incoming>| {
        if let Some(original) = original {
            req.extensions_mut().insert(original);
        }
        if let Some(upstream) = &upstream {
            req.extensions_mut().insert(upstream.clone());
        }
        handle(req)
    };
    let io = Coalesced::new(io, outcome.protocol() == Protocol::H2);
    serve_http(&http, &limits, io, handle, draining).await;
}

/// The address the app dialled, when the redirect rules sent the connection here.
fn redirected_to(tcp: &TcpStream, peer: SocketAddr) -> Option<OriginalDst> {
    match original_dst(tcp) {
        Ok(Some(dst)) => {
            ::tracing::debug!(%peer, original_dst = %dst, "redirected outbound connection");
            Some(OriginalDst(dst))
        }
        Ok(None) => None,
        Err(error) => {
            ::tracing::debug!(%peer, %error, "cannot read the original destination");
            None
        }
    }
}

/// How a connection [`serve_http`] served ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Closed, cleanly or not, with nothing refused by the HTTP server itself.
    Closed,
    /// hyper answered an HTTP/1.1 request head over `max_header_bytes` (or with more than
    /// `max_headers` fields) with 431 itself, before any handler saw the request.
    HeadTooLarge,
    /// hyper answered a request whose URI is over its 64 KiB with 414 itself.
    UriTooLong,
}

/// Serves HTTP/1.1 or HTTP/2 on `io` until it closes or stays idle for the idle timeout, every
/// request within `limits` to `handle`; says whether hyper refused a request itself.
pub(crate) async fn serve_http<I, H, F>(
    http: &auto::Builder<TokioExecutor>,
    limits: &HttpListenerLimits,
    io: I,
    handle: H,
    draining: Draining,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let limited = Limited::new(limits.max_headers, limits.http2.idle_timeout);
    let conn = http
        .serve_connection_with_upgrades(TokioIo::new(io), service_fn(limited.wrap(handle)))
        .into_owned();
    match draining.serve(conn, None, None, Some(limited.idle())).await {
        Ok(()) => Ended::Closed,
        Err(error) => {
            ::tracing::debug!(%error, "outbound connection closed with error");
            refused_by_hyper(error.as_ref())
        }
    }
}

/// Whether `error`, which ended a connection, is one hyper answered with a status of its own
/// (it writes the 431 or 414, then ends the connection with the parse error).
fn refused_by_hyper(error: &(dyn std::error::Error + 'static)) -> Ended {
    match error.downcast_ref::<hyper::Error>() {
        // hyper says only "too large" for both; its message tells the URI apart.
        Some(e) if e.is_parse_too_large() && e.to_string().contains("URI") => Ended::UriTooLong,
        Some(e) if e.is_parse_too_large() => Ended::HeadTooLarge,
        _ => Ended::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use crate::config::Limits;
    use crate::detect::Outcome;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stalls_in_its_headers_is_closed_by_the_header_read_timeout() {
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: inventory\r\n")
            .await
            .unwrap();
        let (outcome, io) = detect(server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(outcome, Outcome::Http1);
        let started = Instant::now();
        let answer = |_req| async { Ok::<_, Infallible>(Response::new(empty())) };
        let limits = Limits::default().outbound;
        serve_http(
            &http_server(&limits),
            &limits,
            io,
            answer,
            Draining::never(),
        )
        .await;
        let waited = started.elapsed();
        let timeout = limits.header_read_timeout;
        assert!(waited >= timeout && waited < timeout * 2, "{waited:?}");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(!rest.starts_with(b"HTTP/1.1 200"), "{rest:?}");
    }

    /// Serves `request` under `limits` on an in-memory connection: how it ended, and what the
    /// client read.
    async fn served(request: Vec<u8>, limits: HttpListenerLimits) -> (Ended, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(256 << 10);
        let answer = |_req| async { Ok::<_, Infallible>(Response::new(empty())) };
        let writer = tokio::spawn(async move {
            // The server may answer and close before reading it all.
            let _ = client.write_all(&request).await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        });
        let ended = serve_http(
            &http_server(&limits),
            &limits,
            server,
            answer,
            Draining::never(),
        )
        .await;
        (ended, writer.await.unwrap())
    }

    #[tokio::test]
    async fn hypers_own_refusals_of_a_request_head_are_told_apart() {
        let mut limits = Limits::default().outbound;
        limits.max_header_bytes = 8 << 10;
        let big = format!(
            "GET / HTTP/1.1\r\nHost: inventory\r\nx-big: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let (ended, answer) = served(big.into_bytes(), limits.clone()).await;
        assert_eq!(ended, Ended::HeadTooLarge);
        assert!(answer.starts_with(b"HTTP/1.1 431"), "{answer:?}");

        limits.max_header_bytes = 1 << 20;
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: inventory\r\n\r\n",
            "a".repeat(70_000)
        );
        let (ended, answer) = served(long.into_bytes(), limits.clone()).await;
        assert_eq!(ended, Ended::UriTooLong);
        assert!(answer.starts_with(b"HTTP/1.1 414"), "{answer:?}");

        let fine = b"GET / HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n".to_vec();
        let (ended, answer) = served(fine, limits).await;
        assert_eq!(ended, Ended::Closed);
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    }
}
