//! The bootstrap file: one sidecar's identity, listeners, local app and destinations.
//!
//! Read in two layers. Serde types mirror the YAML exactly and reject unknown fields; their
//! error carries the field path (`destinations.inventory.endpoints[1]`). Then [`Config`] is
//! built by validation that collects *every* error with its path, so an operator fixes a file
//! in one pass. Values users write as text (addresses, durations, SPIFFE IDs) stay text in the
//! schema so that all their errors are collected by validation rather than the first one
//! aborting the parse.
//!
//! Relative file paths (`tls.*`, `control_plane.*`) are relative to the directory of the
//! bootstrap file.
//!
//! A sidecar gets its certificate and destinations in one of two ways: from files (`tls` and
//! `destinations`), or from the control plane (`control_plane`), which issues the certificate
//! from a CSR and pushes destinations, policy and authorization as they change.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::identity::{Credentials, SpiffeId};
use crate::telemetry::{OtlpProtocol, TracingConfig};
use mesh_api::authorization::{self, AuthorizationFile, AuthorizationPolicy, Decision};
pub use mesh_api::validate::ConfigError;
use mesh_api::validate::{Errors, check_label, duration};

pub use mesh_api::policy;

pub use self::policy::{
    Backoff, BreakerPolicy, Budget, DestinationPolicy, LoadBalancer, RetryOn, RetryPolicy,
};

/// Default outbound listener, where the local app sends plain HTTP.
pub const DEFAULT_OUTBOUND: &str = "127.0.0.1:15001";
/// Default inbound listener, where peer sidecars connect with mutual TLS.
pub const DEFAULT_INBOUND: &str = "127.0.0.1:15006";
/// Default admin listener.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Span export and sampling.
    pub tracing: TracingConfig,
    /// Whether to write one JSON line per request to standard output.
    pub access_log: bool,
    /// Who may call this service.
    pub authorization: AuthorizationPolicy,
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

/// Where the three listeners bind.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct ListenAddrs {
    /// Plain HTTP from the local app.
    pub outbound: SocketAddr,
    /// Mutual TLS from peer sidecars.
    pub inbound: SocketAddr,
    /// Health, metrics, config and shutdown.
    pub admin: SocketAddr,
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
}

/// Every problem found in a configuration file.
#[derive(Debug)]
pub struct InvalidConfig {
    /// The file, when there is one.
    pub file: Option<PathBuf>,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

// === schema: the file as users write it ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    service: String,
    #[serde(default)]
    namespace: Option<String>,
    trust_domain: String,
    app: String,
    #[serde(default)]
    listen: ListenFile,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    tls: Option<TlsFile>,
    #[serde(default)]
    control_plane: Option<ControlPlaneFile>,
    #[serde(default)]
    destinations: BTreeMap<String, DestinationFile>,
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    drain_timeout: Option<String>,
    #[serde(default)]
    tracing: TracingFile,
    #[serde(default)]
    access_log: bool,
    #[serde(default)]
    authorization: AuthorizationFile,
    #[serde(default)]
    app_health: Option<AppHealthFile>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppHealthFile {
    path: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    unhealthy_after: Option<u32>,
    healthy_after: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TracingFile {
    otlp_endpoint: Option<String>,
    protocol: Option<String>,
    sampling: Option<f64>,
    max_queue: Option<usize>,
    service_name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenFile {
    outbound: Option<String>,
    inbound: Option<String>,
    admin: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
    trust_bundle: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlPlaneFile {
    address: String,
    trust_anchor: PathBuf,
    token_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationFile {
    endpoints: Vec<String>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<policy::RetriesFile>,
    #[serde(default)]
    circuit_breaker: Option<policy::BreakerFile>,
    #[serde(default)]
    load_balancer: Option<String>,
    #[serde(default)]
    routes: Option<Vec<mesh_api::route::RouteFile>>,
}

// === impl Config ===

impl Config {
    /// Reads and validates a bootstrap file.
    pub fn from_file(path: &Path) -> Result<Self, InvalidConfig> {
        let with_file = |errors| InvalidConfig {
            file: Some(path.to_owned()),
            errors,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            with_file(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read file: {e}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base).map_err(|e| with_file(e.errors))
    }

    /// Parses and validates YAML; relative paths are resolved against `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Self, InvalidConfig> {
        // serde_path_to_error records where the first structural error (unknown field, wrong
        // type, missing field) happened; the YAML error itself carries line and column.
        let mut failed_at = None;
        let file: File = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                failed_at = Some(e.path().to_string());
                e.into_inner()
            })
        })
        .map_err(|e| InvalidConfig {
            file: None,
            errors: vec![ConfigError {
                path: failed_at.filter(|p| p != ".").unwrap_or_default(),
                message: e.to_string(),
            }],
        })?;
        let mut errors = Errors::default();
        let config = validate(file, base, &mut errors);
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(InvalidConfig {
                file: None,
                errors: errors.into_vec(),
            }),
        }
    }

    /// Loads the certificate, key and trust bundle this config names; `None` when the
    /// control plane issues them.
    pub fn load_credentials(&self) -> Result<Option<Credentials>, InvalidConfig> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        Credentials::load(&self.identity, &tls.cert, &tls.key, &tls.trust_bundle)
            .map(Some)
            .map_err(|e| InvalidConfig {
                file: None,
                errors: vec![ConfigError {
                    path: "tls".into(),
                    message: e.to_string(),
                }],
            })
    }
}

fn validate(file: File, base: &Path, errors: &mut Errors) -> Option<Config> {
    check_label(errors, "service", &file.service);
    let namespace = file.namespace.unwrap_or_else(|| "default".to_owned());
    check_label(errors, "namespace", &namespace);
    let identity = match SpiffeId::for_service(&file.trust_domain, &namespace, &file.service) {
        Ok(id) => Some(id),
        Err(e) => {
            // A bad service or namespace is already reported; blame the trust domain only when
            // it is the cause.
            if SpiffeId::for_service(&file.trust_domain, "ns", "sa").is_err() {
                errors.push("trust_domain", format!("{:?}: {e}", file.trust_domain));
            }
            None
        }
    };
    let app = socket_addr(errors, "app", &file.app);
    let listen = ListenAddrs {
        outbound: listen_addr(errors, "outbound", file.listen.outbound, DEFAULT_OUTBOUND),
        inbound: listen_addr(errors, "inbound", file.listen.inbound, DEFAULT_INBOUND),
        admin: listen_addr(errors, "admin", file.listen.admin, DEFAULT_ADMIN),
    };
    let distinct = [listen.outbound, listen.inbound, listen.admin];
    if distinct
        .iter()
        .enumerate()
        .any(|(i, a)| a.port() != 0 && distinct[..i].contains(a))
    {
        errors.push(
            "listen",
            "outbound, inbound and admin must use different addresses",
        );
    }
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let tls = file.tls.map(|tls| TlsPaths {
        cert: resolve(tls.cert),
        key: resolve(tls.key),
        trust_bundle: resolve(tls.trust_bundle),
    });
    let control_plane = file.control_plane.and_then(|cp| {
        Some(ControlPlaneConfig {
            address: socket_addr(errors, "control_plane.address", &cp.address)?,
            trust_anchor: resolve(cp.trust_anchor),
            token_file: resolve(cp.token_file),
        })
    });
    match (&tls, &control_plane) {
        (None, None) => errors.push(
            "",
            "set either tls (certificate files) or control_plane (certificates from the control plane)",
        ),
        (Some(_), Some(_)) => errors.push(
            "control_plane",
            "the control plane issues the certificate: remove tls",
        ),
        _ => {}
    }
    if control_plane.is_some() && !file.destinations.is_empty() {
        errors.push(
            "destinations",
            "the control plane pushes destinations: remove them, or remove control_plane",
        );
    }
    let version = file.version.unwrap_or_else(|| "v1".to_owned());
    check_label(errors, "version", &version);

    let mut destinations = BTreeMap::new();
    for (name, dest) in file.destinations {
        let path = format!("destinations.{name}");
        check_label(errors, &path, &name);
        if dest.endpoints.is_empty() {
            errors.push(
                format!("{path}.endpoints"),
                "must list at least one endpoint",
            );
        }
        let endpoints: Vec<_> = dest
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| socket_addr(errors, &format!("{path}.endpoints[{i}]"), e))
            .collect();
        let identity = match dest.identity {
            Some(id) => id
                .parse::<SpiffeId>()
                .map_err(|e| errors.push(format!("{path}.identity"), format!("{id:?}: {e}")))
                .ok(),
            None => SpiffeId::for_service(&file.trust_domain, &namespace, &name).ok(),
        };
        let policy = policy::validate(
            policy::PolicyFile {
                timeout: dest.timeout,
                retries: dest.retries,
                circuit_breaker: dest.circuit_breaker,
                load_balancer: dest.load_balancer,
                routes: dest.routes,
            },
            &path,
            errors,
        );
        if let Some(identity) = identity {
            destinations.insert(
                name,
                Destination {
                    endpoints,
                    identity,
                    policy,
                },
            );
        }
    }

    let connect_timeout = duration(
        errors,
        "connect_timeout",
        file.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
    );
    let drain_timeout = duration(
        errors,
        "drain_timeout",
        file.drain_timeout,
        DEFAULT_DRAIN_TIMEOUT,
    );
    let tracing = tracing_config(file.tracing, errors);
    let app_health = file.app_health.map(|f| app_health_config(f, errors));
    let authorization =
        authorization::validate(file.authorization, "authorization", Decision::Allow, errors);
    Some(Config {
        app_health,
        authorization,
        tracing,
        access_log: file.access_log,
        service: file.service,
        namespace,
        trust_domain: file.trust_domain,
        identity: identity?,
        app: app?,
        listen,
        version,
        tls,
        control_plane,
        destinations,
        connect_timeout,
        drain_timeout,
    })
}

fn app_health_config(file: AppHealthFile, errors: &mut Errors) -> AppHealthConfig {
    if let Some(path) = &file.path
        && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        errors.push(
            "app_health.path",
            format!("{path:?} is not a request path: write e.g. /healthz"),
        );
    }
    let interval = duration(
        errors,
        "app_health.interval",
        file.interval,
        Duration::from_secs(2),
    );
    let timeout = duration(
        errors,
        "app_health.timeout",
        file.timeout,
        Duration::from_secs(1),
    );
    if timeout > interval {
        errors.push("app_health.timeout", "must not exceed app_health.interval");
    }
    let count = |errors: &mut Errors, field: &str, value: Option<u32>, default: u32| {
        let n = value.unwrap_or(default);
        if !(1..=100).contains(&n) {
            errors.push(format!("app_health.{field}"), "must be between 1 and 100");
        }
        n.clamp(1, 100)
    };
    AppHealthConfig {
        path: file.path,
        interval,
        timeout,
        unhealthy_after: count(errors, "unhealthy_after", file.unhealthy_after, 3),
        healthy_after: count(errors, "healthy_after", file.healthy_after, 1),
    }
}

fn tracing_config(file: TracingFile, errors: &mut Errors) -> TracingConfig {
    let defaults = TracingConfig::default();
    if let Some(endpoint) = &file.otlp_endpoint {
        let ok = endpoint.parse::<http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
        });
        if !ok {
            errors.push(
                "tracing.otlp_endpoint",
                format!("invalid URL {endpoint:?}: write e.g. http://127.0.0.1:4317"),
            );
        }
    }
    let protocol = match file.protocol.as_deref() {
        None | Some("grpc") => OtlpProtocol::Grpc,
        Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some(other) => {
            errors.push(
                "tracing.protocol",
                format!("unknown protocol {other:?}: use grpc or http/protobuf"),
            );
            OtlpProtocol::Grpc
        }
    };
    let sampling = file.sampling.unwrap_or(defaults.sampling);
    if !(0.0..=1.0).contains(&sampling) {
        errors.push("tracing.sampling", "must be between 0 and 1");
    }
    let max_queue = file.max_queue.unwrap_or(defaults.max_queue);
    if !(1..=1_000_000).contains(&max_queue) {
        errors.push("tracing.max_queue", "must be between 1 and 1000000");
    }
    TracingConfig {
        otlp_endpoint: file.otlp_endpoint,
        protocol,
        sampling: sampling.clamp(0.0, 1.0),
        max_queue,
        service_name: file.service_name,
    }
}

fn socket_addr(errors: &mut Errors, path: &str, value: &str) -> Option<SocketAddr> {
    value
        .parse()
        .map_err(|_| errors.push(path, format!("invalid socket address {value:?}")))
        .ok()
}

fn listen_addr(
    errors: &mut Errors,
    name: &str,
    value: Option<String>,
    default: &str,
) -> SocketAddr {
    let value = value.unwrap_or_else(|| default.to_owned());
    socket_addr(errors, &format!("listen.{name}"), &value)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn human_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

// === impl InvalidConfig ===

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "invalid configuration in {}:", file.display())?,
            None => write!(f, "invalid configuration:")?,
        }
        for e in &self.errors {
            if e.path.is_empty() {
                write!(f, "\n  {}", e.message)?;
            } else {
                write!(f, "\n  {}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for InvalidConfig {}

#[cfg(test)]
mod tests;
