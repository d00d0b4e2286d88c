//! Step 1 on the inbound listener: the first bytes of each connection say what it is
//! ([`detect_inbound`]). A TLS handshake is a peer sidecar: it is identified (step 9,
//! [`identify`](super::identify)) and then served as HTTP/2, every request handed to the
//! inbound handler (`Inbound::handle`, passed in) with the caller it came from. Anything else is
//! a plain client from outside the mesh, with no identity: HTTP/1.x or HTTP/2 prior knowledge
//! is served the same way with an unauthenticated caller, and other bytes go to the plain TCP
//! handler (`Inbound::plain_tcp`, passed in), which joins them to the app if the policy's
//! `unauthenticated` lets them in. A connection the redirect rules brought here from one of
//! `inbound.opaque_ports` goes to that handler at once, nothing read: its app may be a server
//! that speaks first (MySQL, SMTP), whose client would wait as long as detection does.
//!
//! Limits (`limits.inbound`): at most `max_connections` open and `max_handshakes` TLS
//! handshakes in progress (one more connection is closed as it is accepted, so a flood of
//! clients that never finish their handshake holds a bounded number of sockets, each for
//! `tls_handshake_timeout` at most). A connection holds a handshake place from its accept until
//! its first bytes show it plain or its handshake ends, all within `tls_handshake_timeout`; one
//! that says nothing in that time is a plain connection whose detection timed out, and counts
//! as a TLS timeout too when it is not let in. After the handshake the peer has
//! `first_bytes_timeout` to start speaking HTTP (hyper would wait for ever); then the
//! listener's HTTP limits apply.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::identify::{Caller, identify, max_connection_age};
use crate::body::Body;
use crate::coalesce::Coalesced;
use crate::config::{InboundConfig, InboundLimits};
use crate::detect::{Inbound, Outcome, Protocol, Rewind, detect, detect_inbound};
use crate::http_limits::Limited;
use crate::identity::TrustChanges;
use crate::metrics::{Direction, Metrics};
use crate::original_dst::original_dst;
use crate::serve::{
    self, ConnectionCap, Drain, Draining, MaxAge, PEER_MAX_FRAME_SIZE, Untrusted, http_server,
};
use mesh_api::log_limit::LogLimit;

/// Serves the inbound listener until `drain`, then drains its connections. Each connection
/// lives at most `max_age` (see [`max_connection_age`]), then gets the drain time to finish;
/// `limits` bound connections, handshakes and requests; `policy` names the opaque ports.
pub(crate) fn spawn<H, F, P, G>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    (handle, plain_tcp): (H, P),
    (max_age, limits, policy): (Option<Duration>, &InboundLimits, &InboundConfig),
    trust: TrustChanges,
    drain: Drain,
    metrics: Arc<Metrics>,
) -> JoinHandle<()>
where
    H: Fn(Arc<Caller>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    P: Fn(Arc<Caller>, Rewind<TcpStream>) -> Option<G> + Clone + Send + Sync + 'static,
    G: Future<Output = ()> + Send + 'static,
{
    let handshake_log_limit = Arc::new(LogLimit::new(10));
    let connection_metrics = metrics.clone();
    let grace = drain.timeout;
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes as usize));
    let limits = Arc::new(limits.clone());
    let policy = Arc::new(policy.clone());
    let mut http = http_server(&limits.http);
    // Extended CONNECT (RFC 8441) carries the HTTP/1.1 upgrades (WebSockets) of apps.
    http.http2()
        .max_frame_size(PEER_MAX_FRAME_SIZE)
        .enable_connect_protocol();
    let http = Arc::new(http);
    tokio::spawn(serve::serve(
        Direction::Inbound,
        listener,
        drain,
        metrics,
        ConnectionCap::new(limits.http.max_connections),
        move |tcp, peer, draining| {
            let connection = Connection {
                handle: handle.clone(),
                plain_tcp: plain_tcp.clone(),
                acceptor: acceptor.clone(),
                http: http.clone(),
                handshakes: handshakes.clone(),
                limits: limits.clone(),
                policy: policy.clone(),
                metrics: connection_metrics.clone(),
                log_limit: handshake_log_limit.clone(),
                max_age,
                grace,
                trust: trust.clone(),
            };
            connection.serve(tcp, peer, draining)
        },
    ))
}

/// What one inbound connection needs.
struct Connection<H, P> {
    handle: H,
    /// Joins a plain connection that is not HTTP to the app, or says no (`None`).
    plain_tcp: P,
    acceptor: TlsAcceptor,
    /// The listener's HTTP server.
    http: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    /// Places for handshakes in progress (`max_handshakes`).
    handshakes: Arc<Semaphore>,
    limits: Arc<InboundLimits>,
    /// `inbound:`, whose opaque ports skip detection.
    policy: Arc<InboundConfig>,
    metrics: Arc<Metrics>,
    /// Caps refused-handshake warnings (a port scan should not flood the logs).
    log_limit: Arc<LogLimit>,
    /// `max_connection_age`, if configured.
    max_age: Option<Duration>,
    /// How long a connection past its age gets to finish.
    grace: Duration,
    /// The trust bundle as it changes: a caller no longer trusted is disconnected.
    trust: TrustChanges,
}

// === impl Connection ===

impl<H, F, P, G> Connection<H, P>
where
    H: Fn(Arc<Caller>, Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    P: Fn(Arc<Caller>, Rewind<TcpStream>) -> Option<G> + Send + Sync + 'static,
    G: Future<Output = ()> + Send + 'static,
{
    /// Tells mTLS from a plain connection by its first bytes, then serves it as such; a
    /// connection to an opaque port is plain TCP without a byte read.
    async fn serve(self, tcp: TcpStream, peer: SocketAddr, draining: Draining) {
        if self.to_opaque_port(&tcp, peer) {
            let io = Rewind::new(Vec::new(), tcp);
            self.serve_plain(Outcome::Tcp, io, peer, draining).await;
            return;
        }
        let Ok(handshaking) = self.handshakes.clone().try_acquire_owned() else {
            self.refuse(
                peer,
                "max-handshakes",
                "max_handshakes TLS handshakes are in progress",
            );
            return;
        };
        let deadline = Instant::now() + self.limits.tls_handshake_timeout;
        match detect_inbound(tcp, self.limits.tls_handshake_timeout).await {
            Ok((Inbound::Tls, io)) => {
                self.serve_mtls(io, peer, draining, handshaking, deadline)
                    .await
            }
            Ok((Inbound::Plain(outcome), io)) => {
                drop(handshaking);
                self.serve_plain(outcome, io, peer, draining).await;
            }
            Err(error) => {
                ::tracing::debug!(%peer, %error, "inbound connection failed before it spoke");
            }
        }
    }

    /// Whether the redirect rules brought `tcp` here from one of `inbound.opaque_ports` (only
    /// looked up when there are some).
    fn to_opaque_port(&self, tcp: &TcpStream, peer: SocketAddr) -> bool {
        if self.policy.opaque_ports.is_empty() {
            return false;
        }
        match original_dst(tcp) {
            Ok(Some(dst)) if self.policy.is_opaque(dst.port()) => {
                ::tracing::debug!(%peer, original_dst = %dst, "inbound connection to an opaque port");
                true
            }
            Ok(_) => false,
            Err(error) => {
                ::tracing::debug!(%peer, %error, "cannot read the original destination");
                false
            }
        }
    }

    /// Terminates mTLS and identifies the caller (step 9), then serves its requests.
    async fn serve_mtls(
        self,
        tcp: Rewind<TcpStream>,
        peer: SocketAddr,
        draining: Draining,
        handshaking: OwnedSemaphorePermit,
        deadline: Instant,
    ) {
        let left = deadline.saturating_duration_since(Instant::now());
        let identified = identify(&self.acceptor, tcp, left).await;
        drop(handshaking);
        let (tls, caller) = match identified {
            Ok(identified) => identified,
            Err(error) => {
                self.metrics.tls_failure(Direction::Inbound, error.reason());
                if self.log_limit.allow("refused inbound connections") {
                    ::tracing::warn!(%peer, reason = error.reason(), %error, "inbound connection refused");
                }
                return;
            }
        };
        ::tracing::debug!(%peer, %caller, "inbound connection identified");
        let max_age = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| max_connection_age(leaf, SystemTime::now(), self.max_age))
            .map(|age| MaxAge {
                age,
                grace: self.grace,
            });
        let trust = self.trust.clone();
        let untrusted = tls.get_ref().1.peer_certificates().map(|chain| {
            let chain = chain.iter().map(|c| c.clone().into_owned()).collect();
            let (became, metrics) = (trust.client_untrusted(chain), self.metrics.clone());
            let caller = caller.clone();
            Box::pin(async move {
                became.await;
                metrics.connection_untrusted(Direction::Inbound);
                ::tracing::warn!(%peer, %caller,
                    "closing the connection: the caller's certificate no longer verifies \
                     against the trust bundle");
            }) as Untrusted
        });
        // hyper reads the first bytes to tell HTTP/1.1 from HTTP/2 with no time limit.
        let (protocol, io) = match detect(tls, self.limits.first_bytes_timeout).await {
            Ok((outcome, io)) if outcome.protocol() != Protocol::Tcp => (outcome.protocol(), io),
            Ok((Outcome::Tcp, _)) => {
                ::tracing::debug!(%peer, "inbound connection closed: not HTTP");
                return;
            }
            Ok(_) => {
                self.refuse(
                    peer,
                    "first-bytes-timeout",
                    "no HTTP within first_bytes_timeout of the handshake",
                );
                return;
            }
            Err(error) => {
                ::tracing::debug!(%peer, %error, "inbound connection failed before it spoke");
                return;
            }
        };
        let caller = Arc::new(Caller::new(caller, peer));
        self.serve_http(io, protocol, caller, draining, max_age, untrusted)
            .await;
    }

    /// Serves a plain connection from outside the mesh: HTTP with an unauthenticated caller,
    /// whose requests the policy's `unauthenticated` decides; other bytes to the plain TCP
    /// handler, or closed if it says no.
    async fn serve_plain(
        self,
        outcome: Outcome,
        io: Rewind<TcpStream>,
        peer: SocketAddr,
        draining: Draining,
    ) {
        let caller = Arc::new(Caller::unauthenticated(peer));
        if outcome.protocol() != Protocol::Tcp {
            ::tracing::debug!(%peer, protocol = outcome.as_str(), "plain inbound connection");
            self.serve_http(io, outcome.protocol(), caller, draining, None, None)
                .await;
            return;
        }
        match (self.plain_tcp)(caller, io) {
            Some(joined) => joined.await,
            None if outcome == Outcome::Timeout => {
                // It said nothing: as likely a TLS client that never sent its ClientHello.
                self.metrics.tls_failure(Direction::Inbound, "tls-timeout");
                ::tracing::debug!(%peer, "inbound connection closed: silent past tls_handshake_timeout");
            }
            None => ::tracing::debug!(%peer, "plain inbound connection closed: not let in"),
        }
    }

    /// Serves HTTP on `io` until it closes, every request handed to the inbound handler with
    /// `caller`; an HTTP/2 connection's bursts of writes leave together.
    async fn serve_http<S>(
        self,
        io: S,
        protocol: Protocol,
        caller: Arc<Caller>,
        draining: Draining,
        max_age: Option<MaxAge>,
        untrusted: Option<Untrusted>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = caller.addr;
        let handle = self.handle;
        let limited = Limited::new(
            self.limits.http.max_headers,
            self.limits.http.http2.idle_timeout,
        );
        let io = Coalesced::new(io, protocol == Protocol::H2);
        let conn = self.http.serve_connection(
            TokioIo::new(io),
            service_fn(limited.wrap(move |req| handle(caller.clone(), req))),
        );
        let idle = Some(limited.idle());
        if let Err(error) = draining
            .serve(conn.into_owned(), max_age, untrusted, idle)
            .await
        {
            ::tracing::debug!(%peer, %error, "inbound connection closed with error");
        }
    }

    /// Closes a connection a limit does not let in: counted, and logged at most ten times a
    /// second.
    fn refuse(&self, peer: SocketAddr, reason: &'static str, why: &str) {
        self.metrics.connection_refused(Direction::Inbound, reason);
        if self.log_limit.allow("refused inbound connections") {
            ::tracing::warn!(%peer, reason, "inbound connection closed: {why}");
        }
    }
}
