//! Step 11: forward to the local app, in the protocol the calling app spoke.
//!
//! The request is rewritten for the app: hop-by-hop headers and `x-mesh-orig-proto` removed,
//! the caller's verified SPIFFE ID set in `x-mesh-client-id` (replacing any the calling app
//! sent), and the trace continued as a child of this sidecar's SERVER span.
//!
//! Requests arrive over HTTP/2. Those marked `x-mesh-orig-proto: HTTP/1.1` go to the app over a
//! keep-alive HTTP/1.1 pool, the rest over HTTP/2 (prior knowledge), so an HTTP/1.1 app never
//! receives HTTP/2 and gRPC keeps its trailers. The app sees the original authority: as `Host`
//! over HTTP/1.1, where the request URI names the app's address instead, so that one keep-alive
//! pool serves every name the app is called by (pools are keyed by the URI's authority, and a
//! sidecar reached under 1,000 names would otherwise keep up to 1,000 idle connections to its
//! one app); as `:authority` over HTTP/2. The connector always dials the app.
//!
//! Limits (`limits.app`): at most `max_concurrent_requests` in flight to the app, each from
//! when it is sent until its response body ends; one more is answered 503 `x-mesh-error:
//! app-concurrency-limit` at once rather than queued, so the caller's sidecar can try another
//! instance while this one is saturated. A connect to the app that takes longer than
//! `connect_timeout` fails the request (502 `app-unavailable`), and at most
//! `max_idle_connections` keep-alive connections per protocol wait in the pools.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::body::{Body, BoxError};
use crate::coalesce::Coalesced;
use crate::config::AppLimits;
use crate::error::{AppConcurrencyLimit, AppFailed};
use crate::headers::{
    CLIENT_ID, ORIG_PROTO, ORIG_PROTO_HTTP1, absolute_uri, forwarded_response, remove_hop_by_hop,
};
use crate::http_limits::guarded;
use crate::identity::SpiffeId;
use crate::telemetry::propagation::{self, B3};

/// Idle keep-alive connections to the app are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Clients for the local app, one per protocol.
#[derive(Clone, Debug)]
pub(crate) struct AppClients {
    app: SocketAddr,
    /// `app` as a URI authority: the HTTP/1.1 pool's one key.
    app_authority: String,
    http1: Client<AppConnector, Body>,
    http2: Client<AppConnector, Body>,
    /// Places for requests in flight (`max_concurrent_requests`).
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    /// Counts requests refused at the limit.
    refused: Counter,
}

/// Dials the local app, whatever the request's authority, within `connect_timeout`.
#[derive(Clone, Debug)]
pub(crate) struct AppConnector {
    app: SocketAddr,
    connect_timeout: Duration,
    /// Its connections carry HTTP/2, whose bursts of writes leave together.
    http2: bool,
}

// === impl AppClients ===

impl AppClients {
    pub(crate) fn new(app: SocketAddr, limits: &AppLimits, refused: Counter) -> Self {
        let connector = AppConnector {
            app,
            connect_timeout: limits.connect_timeout,
            http2: false,
        };
        let idle = limits.max_idle_connections as usize;
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(idle)
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(AppConnector {
                http2: true,
                ..connector
            });
        Self {
            app,
            app_authority: app.to_string(),
            http1,
            http2,
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests as usize)),
            max_in_flight: limits.max_concurrent_requests,
            refused,
        }
    }

    /// Sends an authorized caller's request to the app, over the pool of the protocol the
    /// caller's app spoke.
    pub(crate) async fn forward(
        &self,
        caller: Option<&SpiffeId>,
        req: Request<Incoming>,
        trace: &opentelemetry::Context,
        b3: Option<B3>,
    ) -> Result<Response<Body>, BoxError> {
        let Ok(in_flight) = self.in_flight.clone().try_acquire_owned() else {
            self.refused.inc();
            return Err(AppConcurrencyLimit {
                app: self.app,
                max: self.max_in_flight,
            }
            .into());
        };
        let (mut parts, body) = req.into_parts();
        let http1 = parts.version < Version::HTTP_2
            || parts
                .headers
                .get(ORIG_PROTO)
                .is_some_and(|v| v == ORIG_PROTO_HTTP1);
        headers_for_app(&mut parts.headers, caller, trace, b3)?;

        let authority = match parts.uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => match parts.headers.get(HOST).and_then(|h| h.to_str().ok()) {
                Some(host) => host.to_owned(),
                None => self.app.to_string(),
            },
        };
        if http1 {
            if !parts.headers.contains_key(HOST) {
                parts
                    .headers
                    .insert(HOST, HeaderValue::from_str(&authority)?);
            }
            parts.uri = absolute_uri(&parts.uri, &self.app_authority)?;
        } else {
            parts.uri = absolute_uri(&parts.uri, &authority)?;
        }
        let (client, version) = if http1 {
            (&self.http1, Version::HTTP_11)
        } else {
            (&self.http2, Version::HTTP_2)
        };
        parts.version = version;
        let body = body
            .map_frame(without_client_id)
            .map_err(BoxError::from)
            .boxed_unsync();
        let req = Request::from_parts(parts, body);
        let rsp = client.request(req).await.map_err(|source| {
            BoxError::from(AppFailed {
                app: self.app,
                source,
            })
        })?;
        // In flight until the response body ends: a streaming answer still occupies the app.
        Ok(forwarded_response(rsp).map(|body| guarded(body, in_flight)))
    }
}

/// Rewrites a caller's headers for the app: hop-by-hop and `x-mesh-orig-proto` removed, the
/// caller's verified ID in `x-mesh-client-id` (replacing any the calling app sent; a plain
/// caller from outside the mesh has none, so the app gets no `x-mesh-client-id` at all), and the
/// trace continued as a child of this sidecar's SERVER span, so the app's own calls join it.
pub(crate) fn headers_for_app(
    headers: &mut HeaderMap,
    caller: Option<&SpiffeId>,
    trace: &opentelemetry::Context,
    b3: Option<B3>,
) -> Result<(), http::header::InvalidHeaderValue> {
    remove_hop_by_hop(headers);
    headers.remove(ORIG_PROTO);
    headers.remove(CLIENT_ID);
    if let Some(caller) = caller {
        headers.insert(CLIENT_ID, HeaderValue::from_str(caller.as_str())?);
    }
    propagation::inject(trace, b3, headers);
    Ok(())
}

/// Removes `x-mesh-client-id` from a request's trailers: a calling app could put one there, and
/// only the header this sidecar sets may name the caller.
fn without_client_id(mut frame: Frame<Bytes>) -> Frame<Bytes> {
    if let Some(trailers) = frame.trailers_mut() {
        trailers.remove(CLIENT_ID);
    }
    frame
}

// === impl AppConnector ===

impl tower::Service<Uri> for AppConnector {
    type Response = TokioIo<Coalesced<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _authority: Uri) -> Self::Future {
        let (app, timeout, http2) = (self.app, self.connect_timeout, self.http2);
        Box::pin(async move {
            let tcp = tokio::time::timeout(timeout, TcpStream::connect(app))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timed out after {timeout:?} (limits.app.connect_timeout)"),
                    )
                })??;
            let _ = tcp.set_nodelay(true);
            Ok(TokioIo::new(Coalesced::new(tcp, http2)))
        })
    }
}
