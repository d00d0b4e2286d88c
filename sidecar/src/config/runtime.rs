//! The validated configuration the sidecar runs on, and what `/config` shows.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mesh_api::authorization::AuthorizationPolicy;
use mesh_api::host_port::HostPort;
use mesh_api::policy::DestinationPolicy;
pub use mesh_api::tcp::TcpDestination;
use serde::{Serialize, Serializer};

use crate::identity::SpiffeId;
use crate::redirect::PortRange;
use crate::telemetry::TracingConfig;
use mesh_api::gateway::GatewayConfig;

/// Default outbound listener, where the local app sends plain HTTP.
pub const DEFAULT_OUTBOUND: &str = "127.0.0.1:15001";
/// Default inbound listener, where peer sidecars connect with mutual TLS.
pub const DEFAULT_INBOUND: &str = "127.0.0.1:15006";
/// Default admin listener.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// An hour, as Envoy's TCP proxy: long enough for pooled database connections between uses.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The validated configuration of one sidecar.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The service this instance belongs to.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// The trust domain of every identity in the mesh.
    pub trust_domain: String,
    /// This sidecar's SPIFFE ID, derived from the three fields above.
    pub identity: SpiffeId,
    /// The local application, where inbound requests are forwarded.
    pub app: SocketAddr,
    /// Gateway mode: outside clients' HTTP routed to destinations; then there is no app.
    pub gateway: Option<GatewayConfig>,
    /// What relative paths in configuration pushed later (a gateway's certificate files) are
    /// relative to: the bootstrap file's directory.
    pub base_dir: std::path::PathBuf,
    /// Listener addresses.
    pub listen: ListenAddrs,
    /// The version of the app, for traffic splits (`v1` unless set).
    pub version: String,
    /// This instance's name in the registry and every operator view (e.g. `inventory-1`);
    /// unset, the sidecar makes one up from the service, its pid and a random suffix.
    pub instance: Option<String>,
    /// Certificate, key and trust bundle files (without a control plane).
    pub tls: Option<TlsPaths>,
    /// The control plane that issues the certificate and pushes destinations and policy.
    pub control_plane: Option<ControlPlaneConfig>,
    /// Services this instance may call, by name (without a control plane).
    pub destinations: BTreeMap<String, Destination>,
    /// Limit on TCP connect plus TLS handshake to a peer sidecar.
    #[serde(serialize_with = "human_duration")]
    pub connect_timeout: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    #[serde(serialize_with = "human_duration")]
    pub drain_timeout: Duration,
    /// How long a connection from the app may stay silent before it is taken for opaque TCP
    /// (on a detecting listener) or closed (on the outbound listener).
    #[serde(serialize_with = "human_duration")]
    pub detect_timeout: Duration,
    /// How long a TCP stream (opaque TCP, a WebSocket, a CONNECT) may carry no byte either way
    /// before both of its ends are reset.
    #[serde(serialize_with = "human_duration")]
    pub idle_timeout: Duration,
    /// How long a peer sidecar's connection to this one may stay open; `None`: half the
    /// lifetime of the certificate it presented. Never past that certificate's expiry.
    #[serde(serialize_with = "human_duration_opt")]
    pub max_connection_age: Option<Duration>,
    /// Span export and sampling.
    pub tracing: TracingConfig,
    /// Whether to write one JSON line per request to standard output.
    pub access_log: bool,
    /// Who may call this service.
    pub authorization: AuthorizationPolicy,
    /// How many requests this instance lets in.
    pub rate_limit: mesh_api::rate_limit::RateLimitPolicy,
    /// How the sidecar probes its app; `None`: it does not, and the app is taken to be up.
    pub app_health: Option<AppHealthConfig>,
    /// Caps and timeouts of every listener and of requests to the app.
    pub limits: Limits,
    /// How the outbound listener treats redirected connections outside the mesh.
    pub outbound: OutboundConfig,
    /// How the inbound listener treats plain connections.
    pub inbound: InboundConfig,
}

/// `inbound:`, the inbound listener's policy.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct InboundConfig {
    /// Ports of the app whose redirected connections are opaque TCP, joined to the app without
    /// protocol detection: a server that speaks first (MySQL, SMTP) would otherwise wait for
    /// the detection to time out.
    #[serde(serialize_with = "display_list")]
    pub opaque_ports: Vec<PortRange>,
}

impl InboundConfig {
    /// Whether a connection dialled to `port` skips detection.
    pub fn is_opaque(&self, port: u16) -> bool {
        self.opaque_ports
            .iter()
            .any(|range| (range.first..=range.last).contains(&port))
    }
}

/// `outbound:`, the outbound listener's policy.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct OutboundConfig {
    /// What happens to a redirected connection whose original destination (and, for HTTP,
    /// whose Host) names no destination of this sidecar.
    pub unknown: UnknownDestination,
}

/// `outbound.unknown`: what the redirect rules' connections to addresses outside the mesh get.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnknownDestination {
    /// Connected straight to the address the app dialled, in plain TCP: apps keep reaching
    /// what is outside the mesh, as they did before the redirect.
    #[default]
    Passthrough,
    /// Refused: TCP is reset, HTTP answered 403.
    Deny,
}

impl UnknownDestination {
    /// The value as written in the bootstrap file.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownDestination::Passthrough => "passthrough",
            UnknownDestination::Deny => "deny",
        }
    }
}

/// Caps and timeouts of every listener and of requests to the app (`limits:`). The defaults
/// suit a production sidecar: each bounds what one misbehaving client can hold, and none is
/// reached by a healthy app or peer.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Limits {
    /// The outbound listener and the `listen` addresses of destinations (together).
    pub outbound: HttpListenerLimits,
    /// The inbound listener, where peer sidecars connect.
    pub inbound: InboundLimits,
    /// The admin listener.
    pub admin: AdminLimits,
    /// Requests forwarded to the local app.
    pub app: AppLimits,
}

/// Limits of a listener that serves HTTP/1.1 and HTTP/2.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HttpListenerLimits {
    /// Connections open at once; one more is closed as it is accepted.
    pub max_connections: u32,
    /// How long an HTTP/1.1 client may take to send a request's headers, counted from the
    /// connection's start or the end of its previous response (so it also closes idle
    /// keep-alive connections).
    #[serde(serialize_with = "human_duration")]
    pub header_read_timeout: Duration,
    /// The most header bytes a request may carry (431 past it).
    pub max_header_bytes: u32,
    /// The most header fields a request may carry (431 past it).
    pub max_headers: u32,
    /// HTTP/2 connections.
    pub http2: Http2Limits,
}

/// Limits of the inbound listener: those of any HTTP listener, and the TLS handshake's.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InboundLimits {
    /// Connections, headers and HTTP/2.
    #[serde(flatten)]
    pub http: HttpListenerLimits,
    /// TLS handshakes in progress at once; a connection past it is closed as it is accepted.
    pub max_handshakes: u32,
    /// A peer that has not finished its TLS handshake by then is dropped.
    #[serde(serialize_with = "human_duration")]
    pub tls_handshake_timeout: Duration,
    /// A peer that has sent no HTTP/2 preface this long after its handshake is dropped.
    #[serde(serialize_with = "human_duration")]
    pub first_bytes_timeout: Duration,
}

/// Limits of HTTP/2 connections on a listener.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Http2Limits {
    /// Streams one connection may have open at once (the SETTINGS value it is sent).
    pub max_concurrent_streams: u32,
    /// Streams the client may reset before the sidecar has accepted them; past it the
    /// connection gets GOAWAY `ENHANCE_YOUR_CALM` (the "rapid reset" attack, CVE-2023-44487).
    pub max_pending_accept_reset_streams: u32,
    /// Streams the sidecar may reset because the client broke the protocol on them; past it,
    /// GOAWAY `ENHANCE_YOUR_CALM` (the "made you reset" attack, CVE-2025-8671).
    pub max_local_error_reset_streams: u32,
    /// A connection with no request in flight for this long gets GOAWAY and closes.
    #[serde(serialize_with = "human_duration")]
    pub idle_timeout: Duration,
    /// How often a PING checks that the client is still there.
    #[serde(serialize_with = "human_duration")]
    pub keep_alive_interval: Duration,
    /// A client that has not answered a PING within this is closed.
    #[serde(serialize_with = "human_duration")]
    pub keep_alive_timeout: Duration,
}

/// Limits of the admin listener (HTTP/1.1 only).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AdminLimits {
    /// Connections open at once (scrapes, taps, `meshctl`); one more is closed as it is
    /// accepted.
    pub max_connections: u32,
    /// How long a client may take to send a request's headers, from its connection's start
    /// (so a silent client is closed too) or the end of its previous response.
    #[serde(serialize_with = "human_duration")]
    pub header_read_timeout: Duration,
    /// The most header bytes a request may carry (431 past it).
    pub max_header_bytes: u32,
    /// The most header fields a request may carry (431 past it).
    pub max_headers: u32,
}

/// Limits of what the inbound side sends to the local app.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AppLimits {
    /// HTTP requests in flight to the app at once (until each response's body ends); one more
    /// is answered 503 with `x-mesh-error: app-concurrency-limit` at once, without waiting.
    pub max_concurrent_requests: u32,
    /// How long a TCP connect to the app may take; past it the request fails with 502
    /// `app-unavailable`.
    #[serde(serialize_with = "human_duration")]
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept open to the app, per protocol.
    pub max_idle_connections: u32,
}

/// Connections per listener. Envoy sets no cap unless its overload manager is configured (and
/// warns); a cap well above what one app or its callers open still stops a leak or a flood
/// from taking every file descriptor.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// hyper's default, written out; Envoy's `request_headers_timeout` is off by default.
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Envoy's default is 60 KiB.
pub(crate) const DEFAULT_MAX_APP_HEADER_BYTES: u32 = 64 << 10;
/// An app's largest plus room for what the mesh adds (identity, trace context).
pub(crate) const DEFAULT_MAX_PEER_HEADER_BYTES: u32 = DEFAULT_MAX_APP_HEADER_BYTES + (32 << 10);
/// Envoy's `max_headers_count` default, and hyper's.
pub(crate) const DEFAULT_MAX_APP_HEADERS: u32 = 100;
/// An app's most, plus the mesh's own headers.
pub(crate) const DEFAULT_MAX_PEER_HEADERS: u32 = DEFAULT_MAX_APP_HEADERS + 28;
/// Streams per connection from the app: hyper's default is 200, Envoy's is unlimited; a gRPC
/// client multiplexes its calls on one connection, so allow more than hyper does.
pub(crate) const DEFAULT_MAX_APP_STREAMS: u32 = 1_000;
/// Streams per connection from a peer sidecar. TCP tunnels are streams that last as long as
/// their connection, so the usual HTTP/2 limit of a few hundred would let one caller's pool of
/// long-lived connections hold every stream and queue its HTTP requests behind them. What an
/// idle stream costs is a few hundred bytes; what streams can make the sidecar buffer is bounded
/// by the connection's flow-control window, not by their number.
pub(crate) const DEFAULT_MAX_PEER_STREAMS: u32 = 10_000;
/// The h2 crate's default (20), which it chose when fixing the rapid-reset attack.
pub(crate) const DEFAULT_MAX_PENDING_ACCEPT_RESETS: u32 = 20;
/// The h2 crate's default (1024).
pub(crate) const DEFAULT_MAX_LOCAL_ERROR_RESETS: u32 = 1024;
/// Envoy's default `idle_timeout` of HTTP connections.
pub(crate) const DEFAULT_HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Often enough to keep NAT and load-balancer state alive (they drop flows after a minute or
/// more), rarely enough to cost nothing.
pub(crate) const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// hyper's default.
pub(crate) const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A handshake takes a round trip or two and microseconds of CPU; hundreds in progress at once
/// means a flood of clients that never finish, which then waits for the cap instead of
/// holding sockets and memory without bound.
pub(crate) const DEFAULT_MAX_HANDSHAKES: u32 = 256;
/// Generous for a peer across a slow link, short enough that a silent client goes.
pub(crate) const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer sends its HTTP/2 preface in the same flight as its last handshake message.
pub(crate) const DEFAULT_FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes, a few taps and `meshctl` use a handful; the cap keeps a runaway scraper from
/// taking descriptors the data path needs.
pub(crate) const DEFAULT_MAX_ADMIN_CONNECTIONS: u32 = 100;
/// hyper's default, as on the other listeners: shorter would close the keep-alive connections
/// of dashboards and scrapers that poll less often, and make them race the close.
pub(crate) const DEFAULT_ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Admin requests are a path and a few headers.
pub(crate) const DEFAULT_MAX_ADMIN_HEADER_BYTES: u32 = 16 << 10;
pub(crate) const DEFAULT_MAX_ADMIN_HEADERS: u32 = 64;
/// Requests in flight to the app: Envoy's circuit breaker allows 1024 by default, a common
/// source of surprise 503s under load; Linkerd allows 100 000. Ten thousand refuses a flood
/// long before the app runs out of threads or memory in most runtimes.
pub(crate) const DEFAULT_MAX_APP_REQUESTS: u32 = 10_000;
/// The app is on this host: a connect takes microseconds unless its backlog is full.
pub(crate) const DEFAULT_APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Enough keep-alive connections for bursts of HTTP/1.1 requests without one per request.
pub(crate) const DEFAULT_MAX_APP_IDLE_CONNECTIONS: u32 = 100;

/// How the sidecar probes its app: an HTTP GET or a TCP connect every `interval`; after
/// `unhealthy_after` failures in a row its instance leaves its callers' endpoints.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AppHealthConfig {
    /// Path of an HTTP GET that answers 2xx or 3xx while the app is healthy; `None`: a TCP
    /// connect to the app is the probe.
    pub path: Option<String>,
    /// Time between probes.
    #[serde(serialize_with = "human_duration")]
    pub interval: Duration,
    /// Limit on one probe.
    #[serde(serialize_with = "human_duration")]
    pub timeout: Duration,
    /// Failed probes in a row that make the app down.
    pub unhealthy_after: u32,
    /// Successful probes in a row that make it up again.
    pub healthy_after: u32,
}

/// Where the three listeners bind, and where peers are told to dial the inbound one.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct ListenAddrs {
    /// Plain HTTP from the local app.
    pub outbound: SocketAddr,
    /// Mutual TLS from peer sidecars.
    pub inbound: SocketAddr,
    /// Health, metrics, config and shutdown.
    pub admin: SocketAddr,
    /// The address registered with the control plane; `None`: the inbound address itself.
    #[serde(serialize_with = "display_option")]
    pub advertise: Option<Advertise>,
}

/// The address peer sidecars dial to reach this one's inbound listener: an IP of this host as
/// peers see it, and a port, or the inbound listener's bound port when none is given (so an
/// inbound port chosen at start, port 0, is advertised as bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertise {
    /// An address of this host that peers reach (never a wildcard).
    pub ip: IpAddr,
    /// The port peers dial; `None`: the inbound listener's bound port.
    pub port: Option<u16>,
}

/// The inbound listener has no address peers could dial, and nothing is advertised instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "listen.advertise: the inbound listener {0} is a wildcard address, which peers cannot dial: \
     set listen.advertise to this host's address as peer sidecars reach it"
)]
pub struct NotDialable(pub SocketAddr);

// === impl ListenAddrs ===

impl ListenAddrs {
    /// Where peers dial this sidecar, given the inbound listener's bound address: `advertise`
    /// (its port defaulting to the bound one), else the bound address unless it is a wildcard.
    pub fn advertised(&self, inbound: SocketAddr) -> Result<SocketAddr, NotDialable> {
        match self.advertise {
            Some(Advertise { ip, port }) => Ok(SocketAddr::new(ip, port.unwrap_or(inbound.port()))),
            None if inbound.ip().is_unspecified() => Err(NotDialable(inbound)),
            None => Ok(inbound),
        }
    }
}

// === impl Advertise ===

impl fmt::Display for Advertise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

/// Paths of the PEM files (no key material is kept here).
#[derive(Clone, Debug, Serialize)]
pub struct TlsPaths {
    /// Leaf certificate (optionally followed by intermediates).
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
    /// CA certificates whose leaves are trusted.
    pub trust_bundle: PathBuf,
}

/// Where the control plane is and how to prove who this sidecar speaks for.
#[derive(Clone, Debug, Serialize)]
pub struct ControlPlaneConfig {
    /// Its API address: an IP, or a name resolved at each connect.
    pub address: HostPort,
    /// The CA certificate(s) its certificate must chain to (the state directory's `ca.pem`).
    #[serde(flatten)]
    pub trust_anchor: TrustAnchor,
    /// The file holding this service's token: its join token, or in Kubernetes the pod's
    /// projected service-account token. Read at each certify, so a rotated token is used.
    pub token_file: PathBuf,
}

/// The control plane's trust anchor: a file, or its PEM text given inline (a bootstrap in an
/// environment variable needs no file beside it).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub enum TrustAnchor {
    /// `trust_anchor`: a PEM file, read at start.
    #[serde(rename = "trust_anchor")]
    File(PathBuf),
    /// `trust_anchor_pem`: the PEM itself.
    #[serde(rename = "trust_anchor_pem")]
    Pem(String),
}

/// A service this sidecar may send requests to.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Destination {
    /// Inbound addresses of the destination's sidecars.
    pub endpoints: Vec<SocketAddr>,
    /// The identity its sidecars must present.
    pub identity: SpiffeId,
    /// Timeouts, retries, circuit breaking and load balancing.
    #[serde(flatten)]
    pub policy: DestinationPolicy,
    /// A listener of its own: every connection tunnelled (`protocol: tcp`), or detected first
    /// and, when HTTP, served as requests (`http` with `listen`); `None`: HTTP requests through
    /// the outbound listener only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpDestination>,
    /// The IP the local app reaches it at (a hosts file names it there); a redirected
    /// connection to it is mapped back to this destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_address: Option<IpAddr>,
}

fn display_option<T: fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn display_list<T: fmt::Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

fn human_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn human_duration_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => human_duration(d, s),
        None => s.serialize_none(),
    }
}
