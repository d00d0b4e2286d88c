//! A gateway's configuration, shaped after the Gateway API: listeners (like a Gateway's), routes
//! (like HTTPRoutes, attached to listeners by name) and what outside clients may send. As
//! written (serde types that reject unknown fields) and as run, validated with field paths.
//!
//! One schema for both places it is written: a sidecar bootstrap's `gateway:` section and the
//! control plane's `gateways/<name>.yaml`, so both are held to the same rules.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::backend_ref::{BackendRef, BackendRefFile, backend_ref};
use crate::rate_limit::Rate;
use crate::retry::parse_size;
use crate::route_match::{self, MatchFile, RouteMatch};
use crate::validate::{Errors, check_label};
use serde::{Deserialize, Serialize, Serializer};

/// Most listeners, routes per gateway, and hostnames or rules per route: bounds the work of
/// routing one request.
const MAX_LISTENERS: usize = 16;
const MAX_ROUTES: usize = 256;
const MAX_HOSTNAMES: usize = 16;
const MAX_RULES: usize = 64;
/// Most certificates of one HTTPS listener.
const MAX_CERTIFICATES: usize = 64;

// === schema ===

/// `gateway:` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    #[serde(default)]
    listeners: Vec<ListenerFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
    #[serde(default)]
    clients: ClientsFile,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    trusted_hops: Option<u32>,
    max_request_bytes: Option<String>,
    max_header_bytes: Option<String>,
    rate_limit: Option<ClientRateFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientRateFile {
    requests_per_second: f64,
    burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    name: String,
    address: String,
    protocol: String,
    #[serde(default)]
    tls: Option<ListenerTlsFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerTlsFile {
    certificates: Vec<CertificateFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateFile {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    name: String,
    #[serde(rename = "parentRefs")]
    parent_refs: Vec<ParentRefFile>,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    rules: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParentRefFile {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    matches: Vec<MatchFile>,
    #[serde(default, rename = "backendRefs")]
    backend_refs: Vec<BackendRefFile>,
}

// === runtime ===

/// A sidecar in gateway mode: outside clients' HTTP, routed to mesh destinations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayConfig {
    /// Where outside clients connect, in the order written.
    pub listeners: Vec<GatewayListener>,
    /// The routes, in the order written (ties in precedence go to the earlier).
    pub routes: Vec<GatewayRoute>,
    /// What outside clients may send.
    pub clients: GatewayClients,
}

/// What outside clients may send, and whose word on their address is taken.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayClients {
    /// Proxies in front whose `x-forwarded-for` entries are believed; 0: only the peer.
    pub trusted_hops: u32,
    /// Longest request body (by its `content-length`): 413 beyond.
    pub max_request_bytes: u64,
    /// Most request header bytes: 431 beyond.
    pub max_header_bytes: u32,
    /// Requests per client address: 429 beyond.
    pub rate_limit: Option<Rate>,
}

/// Where outside clients connect.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayListener {
    /// What routes' `parentRefs` name it by.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// `HTTPS`: the certificates to serve, chosen by SNI; `None`: plain `HTTP`.
    pub tls: Option<Vec<CertificatePaths>>,
}

/// A certificate chain and its key, PEM files watched for changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificatePaths {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

/// An HTTPRoute: the listeners it is attached to, the hosts it serves, its rules.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayRoute {
    /// Its name, in metrics.
    pub name: String,
    /// Indices into [`GatewayConfig::listeners`].
    pub listeners: Vec<usize>,
    /// Empty: any host.
    pub hostnames: Vec<Hostname>,
    /// Its rules, in the order written.
    pub rules: Vec<GatewayRule>,
}

/// A route's host name: exact, or `*.` and a suffix (which matches one label or more).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hostname {
    /// This name only.
    Exact(String),
    /// The suffix, with its leading dot (`.example.com`).
    Wildcard(String),
}

/// A rule: any of its matches (all requests when none are written) to one of its backends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayRule {
    /// Any of these; [`RouteMatch::any`] when none were written.
    pub matches: Vec<RouteMatch>,
    /// Mesh services, or one version of one, by weight.
    pub backends: Vec<BackendRef>,
}

// === impl GatewayConfig ===

impl GatewayConfig {
    /// No listeners and no routes, clients at their defaults: a gateway whose configuration is
    /// yet to come from the control plane.
    pub fn unset() -> Self {
        let mut errors = Errors::default();
        Self {
            listeners: Vec::new(),
            routes: Vec::new(),
            clients: clients(ClientsFile::default(), "clients", &mut errors),
        }
    }

    /// Whether it has no listener (see [`GatewayConfig::unset`]).
    pub fn is_unset(&self) -> bool {
        self.listeners.is_empty()
    }
}

// === impl Hostname ===

impl Serialize for Hostname {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Hostname::Exact(name) => s.serialize_str(name),
            Hostname::Wildcard(suffix) => s.serialize_str(&format!("*{suffix}")),
        }
    }
}

impl Hostname {
    /// Whether `host` (lowercase, without port) is this name.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Hostname::Exact(name) => name == host,
            Hostname::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

// === validation ===

// === impl GatewayFile ===

impl GatewayFile {
    /// The service names of every route's `backendRefs`, each with its field path (relative to
    /// the file, `...backendRefs[k]`) and the version it names, if any, for checks only the
    /// writer's context can make.
    pub fn backend_names(&self) -> Vec<(String, &str, Option<&str>)> {
        let mut names = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            for (j, rule) in route.rules.iter().enumerate() {
                for (k, backend) in rule.backend_refs.iter().enumerate() {
                    if let Some(name) = &backend.name {
                        let path = format!("routes[{i}].rules[{j}].backendRefs[{k}]");
                        names.push((path, name.as_str(), backend.version.as_deref()));
                    }
                }
            }
        }
        names
    }

    /// Whether nothing is written (`gateway: {}`): the listeners and routes come from elsewhere.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
            && self.routes.is_empty()
            && self.clients.trusted_hops.is_none()
            && self.clients.max_request_bytes.is_none()
            && self.clients.max_header_bytes.is_none()
            && self.clients.rate_limit.is_none()
    }
}

/// Validates a gateway's file; `prefix` is where it sits in its file (`gateway` in a bootstrap,
/// empty for a file of its own), and relative certificate paths are relative to `base`.
pub fn validate(
    file: GatewayFile,
    prefix: &str,
    base: &Path,
    errors: &mut Errors,
) -> GatewayConfig {
    let field = |rest: &str| {
        if prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{prefix}.{rest}")
        }
    };
    if file.listeners.is_empty() {
        errors.push(field("listeners"), "at least one listener is needed");
    }
    if file.listeners.len() > MAX_LISTENERS {
        errors.push(
            field("listeners"),
            format!("at most {MAX_LISTENERS} listeners"),
        );
    }
    let mut listeners: Vec<GatewayListener> = Vec::new();
    for (i, listener) in file.listeners.into_iter().enumerate() {
        let at = field(&format!("listeners[{i}]"));
        check_label(errors, &format!("{at}.name"), &listener.name);
        if listeners.iter().any(|l| l.name == listener.name) {
            errors.push(
                format!("{at}.name"),
                format!("{:?}: another listener has this name", listener.name),
            );
        }
        let address = match listener.address.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(e) => {
                errors.push(
                    format!("{at}.address"),
                    format!("invalid socket address {:?}: {e}", listener.address),
                );
                continue;
            }
        };
        if address.port() != 0 && listeners.iter().any(|l| l.address == address) {
            errors.push(
                format!("{at}.address"),
                format!("{address}: another listener listens there"),
            );
        }
        let tls = match (listener.protocol.as_str(), listener.tls) {
            ("HTTP", None) => None,
            ("HTTP", Some(_)) => {
                errors.push(format!("{at}.tls"), "only an HTTPS listener takes tls");
                None
            }
            ("HTTPS", None) => {
                errors.push(
                    format!("{at}.tls"),
                    "missing: an HTTPS listener needs tls.certificates",
                );
                None
            }
            ("HTTPS", Some(tls)) => {
                if tls.certificates.is_empty() {
                    errors.push(format!("{at}.tls.certificates"), "at least one certificate");
                }
                if tls.certificates.len() > MAX_CERTIFICATES {
                    errors.push(
                        format!("{at}.tls.certificates"),
                        format!("at most {MAX_CERTIFICATES} certificates"),
                    );
                }
                Some(
                    tls.certificates
                        .into_iter()
                        .map(|c| CertificatePaths {
                            cert: base.join(c.cert),
                            key: base.join(c.key),
                        })
                        .collect(),
                )
            }
            (other, _) => {
                errors.push(
                    format!("{at}.protocol"),
                    format!("{other:?}: use HTTP or HTTPS"),
                );
                None
            }
        };
        listeners.push(GatewayListener {
            name: listener.name,
            address,
            tls,
        });
    }
    if file.routes.len() > MAX_ROUTES {
        errors.push(field("routes"), format!("at most {MAX_ROUTES} routes"));
    }
    let mut routes: Vec<GatewayRoute> = Vec::new();
    for (i, route) in file.routes.into_iter().enumerate() {
        let at = field(&format!("routes[{i}]"));
        check_label(errors, &format!("{at}.name"), &route.name);
        if routes.iter().any(|r| r.name == route.name) {
            errors.push(
                format!("{at}.name"),
                format!("{:?}: another route has this name", route.name),
            );
        }
        if route.parent_refs.is_empty() {
            errors.push(
                format!("{at}.parentRefs"),
                "at least one listener to attach the route to",
            );
        }
        let mut attached = Vec::new();
        for (j, parent) in route.parent_refs.iter().enumerate() {
            match listeners.iter().position(|l| l.name == parent.name) {
                Some(index) if !attached.contains(&index) => attached.push(index),
                Some(_) => {}
                None => errors.push(
                    format!("{at}.parentRefs[{j}].name"),
                    format!("no listener named {:?}", parent.name),
                ),
            }
        }
        if route.hostnames.len() > MAX_HOSTNAMES {
            errors.push(
                format!("{at}.hostnames"),
                format!("at most {MAX_HOSTNAMES} hostnames"),
            );
        }
        let hostnames = route
            .hostnames
            .iter()
            .enumerate()
            .filter_map(|(j, name)| hostname(name, &format!("{at}.hostnames[{j}]"), errors))
            .collect();
        if route.rules.is_empty() {
            errors.push(format!("{at}.rules"), "at least one rule");
        }
        if route.rules.len() > MAX_RULES {
            errors.push(format!("{at}.rules"), format!("at most {MAX_RULES} rules"));
        }
        let rules = route
            .rules
            .into_iter()
            .enumerate()
            .map(|(j, rule)| self::rule(rule, &format!("{at}.rules[{j}]"), errors))
            .collect();
        routes.push(GatewayRoute {
            name: route.name,
            listeners: attached,
            hostnames,
            rules,
        });
    }
    let clients = clients(file.clients, &field("clients"), errors);
    GatewayConfig {
        listeners,
        routes,
        clients,
    }
}

/// The request body a gateway takes unless told otherwise.
const DEFAULT_MAX_REQUEST_BYTES: u64 = 10 << 20;
/// The header bytes a gateway takes unless told otherwise (hyper's smallest buffer is 8 KiB).
const DEFAULT_MAX_HEADER_BYTES: u32 = 64 << 10;
const MIN_HEADER_BYTES: u64 = 8 << 10;
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Most proxies in front whose word is taken.
const MAX_TRUSTED_HOPS: u32 = 16;

/// The `clients` section, at `path`.
fn clients(file: ClientsFile, path: &str, errors: &mut Errors) -> GatewayClients {
    let at = |field: &str| format!("{path}.{field}");
    let trusted_hops = file.trusted_hops.unwrap_or(0);
    if trusted_hops > MAX_TRUSTED_HOPS {
        errors.push(at("trusted_hops"), format!("at most {MAX_TRUSTED_HOPS}"));
    }
    let size = |field: &str, text: Option<String>, default: u64, errors: &mut Errors| match text {
        None => default,
        Some(text) => parse_size(&text).unwrap_or_else(|| {
            errors.push(
                at(field),
                format!("invalid size {text:?}: write e.g. 16KiB, 1MiB or 4096"),
            );
            default
        }),
    };
    let max_request_bytes = size(
        "max_request_bytes",
        file.max_request_bytes,
        DEFAULT_MAX_REQUEST_BYTES,
        errors,
    );
    let header_bytes = size(
        "max_header_bytes",
        file.max_header_bytes,
        u64::from(DEFAULT_MAX_HEADER_BYTES),
        errors,
    );
    let max_header_bytes = if (MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&header_bytes) {
        u32::try_from(header_bytes).unwrap_or(DEFAULT_MAX_HEADER_BYTES)
    } else {
        errors.push(at("max_header_bytes"), "must be between 8KiB and 1MiB");
        DEFAULT_MAX_HEADER_BYTES
    };
    let rate_limit = file.rate_limit.and_then(|rate| {
        let rps = rate.requests_per_second;
        if !(rps.is_finite() && rps > 0.0 && rps <= 1_000_000.0) {
            errors.push(
                at("rate_limit.requests_per_second"),
                "must be above 0 and at most 1000000",
            );
            return None;
        }
        // One second's worth unless told.
        let burst = rate.burst.unwrap_or_else(|| rps.ceil() as u32).max(1);
        Some(Rate {
            requests_per_second: rps,
            burst,
        })
    });
    GatewayClients {
        trusted_hops,
        max_request_bytes,
        max_header_bytes,
        rate_limit,
    }
}

/// A route's host name at `path`: a DNS name, lowercase, or `*.` and one.
fn hostname(name: &str, path: &str, errors: &mut Errors) -> Option<Hostname> {
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let valid = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    // An IP address is no host name (the Gateway API's rule): a name's last label has a letter.
    let valid = valid
        && rest
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_lowercase()));
    if !valid {
        errors.push(
            path,
            format!(
                "{name:?}: not a host name (lowercase DNS labels, optionally after `*.`; no port, \
                 no IP address)"
            ),
        );
        return None;
    }
    Some(if wildcard {
        Hostname::Wildcard(format!(".{rest}"))
    } else {
        Hostname::Exact(rest.to_owned())
    })
}

/// One rule at `path`.
fn rule(file: RuleFile, path: &str, errors: &mut Errors) -> GatewayRule {
    let matches = if file.matches.is_empty() {
        vec![RouteMatch::any()]
    } else {
        file.matches
            .into_iter()
            .enumerate()
            .map(|(k, m)| route_match::validate(m, &format!("{path}.matches[{k}]"), errors))
            .collect()
    };
    if file.backend_refs.is_empty() {
        errors.push(
            format!("{path}.backendRefs"),
            "at least one mesh service to send the requests to",
        );
    }
    let mut backends = Vec::new();
    for (k, file) in file.backend_refs.into_iter().enumerate() {
        let at = format!("{path}.backendRefs[{k}]");
        if let Some(backend) = backend_ref(file, &at, errors) {
            backends.push(backend);
        }
    }
    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        errors.push(
            format!("{path}.backendRefs"),
            "every weight is 0: no request could be sent",
        );
    }
    GatewayRule { matches, backends }
}
