//! The validated configuration the sidecar runs on, and what `/config` shows.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mesh_api::authorization::AuthorizationPolicy;
use mesh_api::policy::DestinationPolicy;
pub use mesh_api::tcp::TcpDestination;
use serde::{Serialize, Serializer};

use crate::identity::SpiffeId;
use crate::telemetry::TracingConfig;

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
}

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
    /// Its API address.
    pub address: SocketAddr,
    /// The CA certificate(s) its certificate must chain to (the state directory's `ca.pem`).
    pub trust_anchor: PathBuf,
    /// The file holding this service's join token.
    pub token_file: PathBuf,
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
}

fn display_option<T: fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
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
