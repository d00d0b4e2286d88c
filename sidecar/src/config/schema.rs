//! The bootstrap file as users write it: serde types that mirror the YAML and reject unknown
//! fields. Values users write as text (addresses, durations, SPIFFE IDs) stay text here, so
//! validation can report every bad one instead of the parse stopping at the first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mesh_api::authorization::AuthorizationFile;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) service: String,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    pub(super) trust_domain: String,
    /// Required, except for a gateway, which has no app.
    #[serde(default)]
    pub(super) app: Option<String>,
    #[serde(default)]
    pub(super) listen: ListenFile,
    #[serde(default)]
    pub(super) version: Option<String>,
    #[serde(default)]
    pub(super) instance: Option<String>,
    #[serde(default)]
    pub(super) tls: Option<TlsFile>,
    #[serde(default)]
    pub(super) control_plane: Option<ControlPlaneFile>,
    #[serde(default)]
    pub(super) destinations: BTreeMap<String, DestinationFile>,
    #[serde(default)]
    pub(super) connect_timeout: Option<String>,
    #[serde(default)]
    pub(super) drain_timeout: Option<String>,
    #[serde(default)]
    pub(super) detect_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_connection_age: Option<String>,
    #[serde(default)]
    pub(super) tracing: TracingFile,
    #[serde(default)]
    pub(super) access_log: bool,
    #[serde(default)]
    pub(super) authorization: AuthorizationFile,
    #[serde(default)]
    pub(super) rate_limit: Option<mesh_api::rate_limit::RateLimitFile>,
    #[serde(default)]
    pub(super) app_health: Option<AppHealthFile>,
    #[serde(default)]
    pub(super) limits: LimitsFile,
    #[serde(default)]
    pub(super) outbound: OutboundFile,
    #[serde(default)]
    pub(super) inbound: InboundFile,
    #[serde(default)]
    pub(super) gateway: Option<mesh_api::gateway::GatewayFile>,
}

/// `inbound:`, how the inbound listener treats plain connections.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InboundFile {
    /// Ports (`3306`) or ranges (`"8000-8099"`) whose redirected connections skip detection.
    #[serde(default)]
    pub(super) opaque_ports: Vec<PortText>,
}

/// A port written as a number or as text (a range); kept as text so that validation reports
/// every bad one with its index.
pub(super) struct PortText(pub(super) String);

impl<'de> Deserialize<'de> for PortText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port (3306) or a range of ports (\"8000-8099\")")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortText, E> {
                Ok(PortText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortText, E> {
                Ok(PortText(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortText, E> {
                Ok(PortText(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `outbound:`, how the outbound listener treats what names no destination.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboundFile {
    /// `passthrough` (the default) or `deny`.
    pub(super) unknown: Option<String>,
}

/// `limits:`, every field optional (the defaults are in `runtime.rs`).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    #[serde(default)]
    pub(super) outbound: HttpListenerLimitsFile,
    #[serde(default)]
    pub(super) inbound: InboundLimitsFile,
    #[serde(default)]
    pub(super) admin: AdminLimitsFile,
    #[serde(default)]
    pub(super) app: AppLimitsFile,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpListenerLimitsFile {
    pub(super) max_connections: Option<u32>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) max_header_bytes: Option<u32>,
    pub(super) max_headers: Option<u32>,
    #[serde(default)]
    pub(super) http2: Http2LimitsFile,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InboundLimitsFile {
    pub(super) max_connections: Option<u32>,
    pub(super) max_handshakes: Option<u32>,
    pub(super) tls_handshake_timeout: Option<String>,
    pub(super) first_bytes_timeout: Option<String>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) max_header_bytes: Option<u32>,
    pub(super) max_headers: Option<u32>,
    #[serde(default)]
    pub(super) http2: Http2LimitsFile,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Http2LimitsFile {
    pub(super) max_concurrent_streams: Option<u32>,
    pub(super) max_pending_accept_reset_streams: Option<u32>,
    pub(super) max_local_error_reset_streams: Option<u32>,
    pub(super) idle_timeout: Option<String>,
    pub(super) keep_alive_interval: Option<String>,
    pub(super) keep_alive_timeout: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminLimitsFile {
    pub(super) max_connections: Option<u32>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) max_header_bytes: Option<u32>,
    pub(super) max_headers: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppLimitsFile {
    pub(super) max_concurrent_requests: Option<u32>,
    pub(super) connect_timeout: Option<String>,
    pub(super) max_idle_connections: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppHealthFile {
    pub(super) path: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) unhealthy_after: Option<u32>,
    pub(super) healthy_after: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TracingFile {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) sampling: Option<f64>,
    pub(super) max_queue: Option<usize>,
    pub(super) service_name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenFile {
    pub(super) outbound: Option<String>,
    pub(super) inbound: Option<String>,
    pub(super) admin: Option<String>,
    pub(super) advertise: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) trust_bundle: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlPlaneFile {
    pub(super) address: String,
    /// A PEM file; exactly one of this and `trust_anchor_pem`.
    #[serde(default)]
    pub(super) trust_anchor: Option<PathBuf>,
    /// The PEM text itself, for a bootstrap given inline.
    #[serde(default)]
    pub(super) trust_anchor_pem: Option<String>,
    pub(super) token_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DestinationFile {
    pub(super) endpoints: Vec<String>,
    #[serde(default)]
    pub(super) identity: Option<String>,
    #[serde(default)]
    pub(super) timeout: Option<String>,
    #[serde(default)]
    pub(super) retries: Option<mesh_api::policy::RetriesFile>,
    #[serde(default)]
    pub(super) circuit_breaker: Option<mesh_api::policy::BreakerFile>,
    #[serde(default)]
    pub(super) load_balancer: Option<String>,
    #[serde(default)]
    pub(super) routes: Option<Vec<mesh_api::route::RouteFile>>,
    #[serde(default)]
    pub(super) fault: Option<mesh_api::fault::FaultFile>,
    /// `http` (the default) or `tcp`.
    #[serde(default)]
    pub(super) protocol: Option<String>,
    /// Where the local app connects to reach a `tcp` destination.
    #[serde(default)]
    pub(super) listen: Option<String>,
    /// The port the destination's app serves a `tcp` destination on.
    #[serde(default)]
    pub(super) port: Option<u16>,
    /// The IP the local app reaches the destination at, when its connections are redirected.
    #[serde(default)]
    pub(super) virtual_address: Option<String>,
}
