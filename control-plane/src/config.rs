//! The declarative configuration directory: `mesh.yaml` plus one `services/*.yaml` per service.
//!
//! Read in two layers, like the sidecar's bootstrap file: serde types mirror the YAML exactly and
//! reject unknown fields, then validation collects *every* error with its file and field path,
//! so an operator fixes the directory in one pass. A directory that fails validation never
//! replaces the one in force.
//!
//! ```yaml
//! # mesh.yaml
//! trust_domain: mesh.local        # required
//! namespace: default              # default "default"
//! certificate_lifetime: 24h       # default 24h, at least 5s, at most 366d
//! registry: { heartbeat_interval: 5s, lease: 15s }   # lease must exceed the interval
//! authorization: { default: allow }                   # allow | deny
//! defaults: { timeout: 10s, retries: {...}, circuit_breaker: {...}, load_balancer: p2c-ewma }
//! api: { max_connections: 1024, rate_limits: {...}, ... }   # listener limits, see `limits`
//! registration: { allowed_addresses: [10.0.0.0/8], max_instances_per_service: 1000 }
//! admin: { max_connections: 64, header_timeout: 5s }
//! virtual_addresses: { range: 127.240.0.0/12 }       # where services' virtual addresses come from
//!
//! # services/inventory.yaml
//! name: inventory
//! calls: [payments]               # its dependencies, each a declared service
//! timeout: 2s                     # policy fields; each replaces the same field of `defaults`
//! authorization: { default: deny, allow: [orders], deny: [], rules: [...] }
//! traffic_split: { v1: 90, v2: 10 }
//! routes: [...]                   # HTTPRoute-shaped rules: matches, filters, backendRefs
//! fault: { delay: {...}, abort: {...} }
//! rate_limit: { requests_per_second: 50, callers: { orders: { requests_per_second: 10 } } }
//! virtual_address: 127.240.0.10   # optional: pins its address, inside virtual_addresses.range
//!
//! # services/redis.yaml: a TCP service
//! name: redis
//! protocol: tcp                   # default http
//! listen: 127.0.0.1:6380          # where each caller's app connects, on its own sidecar
//! port: 6379                      # the port redis serves on, behind its sidecar
//!
//! # an http service may have a listener too: each connection there is detected, HTTP served
//! # as requests to it, anything else tunnelled to its app's port (`port` is optional)
//! listen: 127.0.0.1:8090
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use mesh_api::authorization::{self, AuthorizationFile, AuthorizationPolicy, Decision};
use mesh_api::policy::{self, BreakerFile, DestinationPolicy, PolicyFile, RetriesFile};
use mesh_api::route::RouteFile;
use mesh_api::spiffe;
use mesh_api::tcp::{TcpDestination, TcpFields};
use mesh_api::validate::{Errors, check_label, duration};
use serde::{Deserialize, Serialize, Serializer};

pub use self::file_errors::{ConfigFiles, FileError};
use self::file_errors::{drain, file_error, yaml};
pub use self::gateways::{DeclaredGateway, GATEWAYS_DIR};
pub use self::limits::{AdminLimits, ApiLimits, Cidr, RateLimits, RegistrationSettings};
pub use self::virtual_addresses::{DEFAULT_RANGE, VirtualAddressSettings};

mod file_errors;
mod gateways;
mod limits;
mod virtual_addresses;

/// The mesh file's name in the configuration directory.
pub const MESH_FILE: &str = "mesh.yaml";
/// The directory of service files.
pub const SERVICES_DIR: &str = "services";

const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const MIN_LIFETIME: Duration = Duration::from_secs(5);
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const DEFAULT_LEASE: Duration = Duration::from_secs(15);
const MAX_WEIGHT: u32 = 1_000_000;

/// The validated configuration of the mesh.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeshConfig {
    /// The trust domain of every identity.
    pub trust_domain: String,
    /// The namespace of every service.
    pub namespace: String,
    /// Lifetime of issued workload certificates.
    #[serde(serialize_with = "human_duration")]
    pub certificate_lifetime: Duration,
    /// Heartbeats and leases.
    pub registry: RegistrySettings,
    /// What callers no rule names get, for services that do not say.
    pub default_authorization: Decision,
    /// The declared services, by name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// The gRPC listener's limits (fixed at start).
    pub api: ApiLimits,
    /// What instances may register.
    pub registration: RegistrationSettings,
    /// The admin listener's limits (fixed at start).
    pub admin: AdminLimits,
    /// Where services' virtual addresses come from.
    pub virtual_addresses: VirtualAddressSettings,
    /// The gateways' listeners and routes (`gateways/<service>.yaml`), by service.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gateways: BTreeMap<String, DeclaredGateway>,
}

/// How the registry keeps instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RegistrySettings {
    /// How often sidecars send heartbeats.
    #[serde(serialize_with = "human_duration")]
    pub heartbeat_interval: Duration,
    /// An instance silent this long is removed.
    #[serde(serialize_with = "human_duration")]
    pub lease: Duration,
}

/// One declared service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceConfig {
    /// Its name, a DNS label.
    pub name: String,
    /// The file that declares it, relative to the configuration directory.
    pub file: String,
    /// The services it calls.
    pub calls: Vec<String>,
    /// The policy its callers apply to it (`defaults` merged in).
    pub policy: DestinationPolicy,
    /// Who may call it.
    pub authorization: AuthorizationPolicy,
    /// How many requests each of its instances lets in.
    pub rate_limit: mesh_api::rate_limit::RateLimitPolicy,
    /// Weights between its versions, when split.
    pub traffic_split: Option<BTreeMap<String, u32>>,
    /// For a `protocol: tcp` service, where its callers' apps connect and its app's port.
    pub tcp: Option<TcpDestination>,
    /// The IP its callers' apps reach it at: pinned by its file, or, once the control plane
    /// puts the configuration in force, allocated from `virtual_addresses.range`.
    pub virtual_address: Option<std::net::IpAddr>,
}

/// Every problem found in a configuration directory.
#[derive(Clone, Debug, thiserror::Error)]
pub struct InvalidConfig {
    /// The problems, file by file.
    pub errors: Vec<FileError>,
}

// === schema: the files as users write them ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshFile {
    trust_domain: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    certificate_lifetime: Option<String>,
    #[serde(default)]
    registry: RegistryFile,
    #[serde(default)]
    authorization: MeshAuthorizationFile,
    #[serde(default)]
    defaults: PolicyFile,
    #[serde(default)]
    api: limits::ApiFile,
    #[serde(default)]
    registration: limits::RegistrationFile,
    #[serde(default)]
    admin: limits::AdminFile,
    #[serde(default)]
    virtual_addresses: virtual_addresses::VirtualAddressesFile,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    heartbeat_interval: Option<String>,
    lease: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshAuthorizationFile {
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    #[serde(default)]
    calls: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<RetriesFile>,
    #[serde(default)]
    circuit_breaker: Option<BreakerFile>,
    #[serde(default)]
    load_balancer: Option<String>,
    #[serde(default)]
    authorization: Option<AuthorizationFile>,
    #[serde(default)]
    rate_limit: Option<mesh_api::rate_limit::RateLimitFile>,
    #[serde(default)]
    traffic_split: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    routes: Option<Vec<RouteFile>>,
    #[serde(default)]
    fault: Option<mesh_api::fault::FaultFile>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    virtual_address: Option<String>,
}

// === reading ===

/// Reads and validates the directory.
pub fn load(dir: &Path) -> Result<MeshConfig, InvalidConfig> {
    parse(&read_files(dir)?)
}

/// Reads and validates `dir`'s `mesh.yaml` with the service files of `services` (such as a
/// second ConfigMap's mount).
pub fn load_in(dir: &Path, services: &Path) -> Result<MeshConfig, InvalidConfig> {
    parse(&read_files_in(dir, services)?)
}

/// Reads `mesh.yaml` and every `services/*.yaml` (or `.yml`; hidden files are skipped).
pub fn read_files(dir: &Path) -> Result<ConfigFiles, InvalidConfig> {
    read_files_in(dir, &dir.join(SERVICES_DIR))
}

/// Reads `dir/mesh.yaml` and every `*.yaml` of `services`; the files are named
/// `services/<name>` in errors wherever the directory is. A Kubernetes ConfigMap mounted as
/// `services` works: its files are symlinks, which are followed, and its `..data` entries are
/// hidden.
pub fn read_files_in(dir: &Path, services: &Path) -> Result<ConfigFiles, InvalidConfig> {
    read_some(dir, Some(services))
}

/// Reads `dir/mesh.yaml` alone, for services declared elsewhere (MeshService objects).
pub fn read_mesh_file(dir: &Path) -> Result<ConfigFiles, InvalidConfig> {
    read_some(dir, None)
}

fn read_some(dir: &Path, services: Option<&Path>) -> Result<ConfigFiles, InvalidConfig> {
    let mut files = ConfigFiles::new();
    let mut errors = Vec::new();
    let mut read = |name: String, path: &Path| match std::fs::read(path) {
        Ok(bytes) => {
            files.insert(name, bytes);
        }
        Err(e) => errors.push(file_error(&name, "", format!("cannot read file: {e}"))),
    };
    read(MESH_FILE.to_owned(), &dir.join(MESH_FILE));
    let Some(services) = services else {
        return if errors.is_empty() {
            Ok(files)
        } else {
            Err(InvalidConfig { errors })
        };
    };
    match std::fs::read_dir(services) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
                if yaml && !name.starts_with('.') && entry.path().is_file() {
                    read(format!("{SERVICES_DIR}/{name}"), &entry.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(file_error(
            SERVICES_DIR,
            "",
            format!("cannot read directory: {e}"),
        )),
    }
    // Gateways are declared next to mesh.yaml, wherever the services are.
    match std::fs::read_dir(dir.join(GATEWAYS_DIR)) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
                if yaml && !name.starts_with('.') && entry.path().is_file() {
                    let name = format!("{GATEWAYS_DIR}/{name}");
                    match std::fs::read(entry.path()) {
                        Ok(bytes) => {
                            files.insert(name, bytes);
                        }
                        Err(e) => {
                            errors.push(file_error(&name, "", format!("cannot read file: {e}")))
                        }
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(file_error(
            GATEWAYS_DIR,
            "",
            format!("cannot read directory: {e}"),
        )),
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(InvalidConfig { errors })
    }
}

/// Validates the contents of a directory as read by [`read_files`].
pub fn parse(files: &ConfigFiles) -> Result<MeshConfig, InvalidConfig> {
    let mut errors = Vec::new();
    let mesh = files
        .get(MESH_FILE)
        .and_then(|text| yaml::<MeshFile>(MESH_FILE, text, &mut errors));
    let mut service_files = Vec::new();
    for (name, text) in files.range(format!("{SERVICES_DIR}/")..) {
        if !name.starts_with(&format!("{SERVICES_DIR}/")) {
            break;
        }
        if let Some(file) = yaml::<ServiceFile>(name, text, &mut errors) {
            service_files.push((name.clone(), file));
        }
    }
    if !files.contains_key(MESH_FILE) {
        errors.push(file_error(MESH_FILE, "", "missing"));
    }
    // Without a readable mesh.yaml the services are still checked (against empty defaults), so
    // one run reports everything.
    let config = match mesh {
        Some(mesh) => {
            let mut config = validate(mesh, service_files, &mut errors);
            let declared = config
                .services
                .iter()
                .map(|(name, service)| {
                    let declared = gateways::Declared {
                        file: &service.file,
                        calls: &service.calls,
                        split: service.traffic_split.as_ref(),
                    };
                    (name.as_str(), declared)
                })
                .collect();
            config.gateways = gateways::validate(files, &declared, &mut errors);
            Some(config)
        }
        None => {
            let mut ignored = Vec::new();
            let placeholder = MeshFile {
                trust_domain: "mesh.local".into(),
                namespace: None,
                certificate_lifetime: None,
                registry: RegistryFile::default(),
                authorization: MeshAuthorizationFile::default(),
                defaults: PolicyFile::default(),
                api: limits::ApiFile::default(),
                registration: limits::RegistrationFile::default(),
                admin: limits::AdminFile::default(),
                virtual_addresses: virtual_addresses::VirtualAddressesFile::default(),
            };
            let partial = validate(placeholder, service_files, &mut ignored);
            errors.extend(ignored.into_iter().filter(|e| e.file != MESH_FILE));
            drop(partial);
            None
        }
    };
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(InvalidConfig { errors }),
    }
}

// === validation ===

fn validate(
    mesh: MeshFile,
    service_files: Vec<(String, ServiceFile)>,
    out: &mut Vec<FileError>,
) -> MeshConfig {
    let mut errors = Errors::default();
    if let Err(e) = spiffe::check_trust_domain(&mesh.trust_domain) {
        errors.push("trust_domain", e.to_string());
    }
    let namespace = mesh.namespace.unwrap_or_else(|| "default".to_owned());
    check_label(&mut errors, "namespace", &namespace);
    let certificate_lifetime = duration(
        &mut errors,
        "certificate_lifetime",
        mesh.certificate_lifetime,
        DEFAULT_LIFETIME,
    );
    if certificate_lifetime < MIN_LIFETIME {
        errors.push("certificate_lifetime", "must be at least 5s");
    }
    // Beyond this, a certificate's end date is past what X.509 dates and the CA's date
    // arithmetic hold; workload certificates are meant to be short-lived anyway.
    if certificate_lifetime > MAX_LIFETIME {
        errors.push(
            "certificate_lifetime",
            "must be at most 366d: workload certificates are short-lived and renewed",
        );
    }
    let registry = RegistrySettings {
        heartbeat_interval: duration(
            &mut errors,
            "registry.heartbeat_interval",
            mesh.registry.heartbeat_interval,
            DEFAULT_HEARTBEAT,
        ),
        lease: duration(
            &mut errors,
            "registry.lease",
            mesh.registry.lease,
            DEFAULT_LEASE,
        ),
    };
    if registry.lease <= registry.heartbeat_interval {
        errors.push("registry.lease", "must exceed registry.heartbeat_interval");
    }
    let default_authorization = authorization::decision(
        &mut errors,
        "authorization.default",
        mesh.authorization.default.as_deref(),
        Decision::Allow,
    );
    // The defaults are checked once, here; a service inherits only fields it does not set.
    policy::validate(mesh.defaults.clone(), "defaults", &mut errors);
    if mesh.defaults.fault.is_some() {
        errors.push(
            "defaults.fault",
            "faults are an experiment on one service: put them in that service's file",
        );
    }
    if mesh.defaults.routes.is_some() {
        errors.push(
            "defaults.routes",
            "routes name paths of one service: put them in that service's file",
        );
    }
    let api = limits::api(mesh.api, &mut errors);
    let registration = limits::registration(mesh.registration, &mut errors);
    let admin = limits::admin(mesh.admin, &mut errors);
    let virtual_addresses = virtual_addresses::settings(mesh.virtual_addresses, &mut errors);
    drain(MESH_FILE, errors, out);

    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    for (file, service) in &service_files {
        if let Some(first) = declared.get(&service.name) {
            out.push(file_error(
                file,
                "name",
                format!("service {:?} is already declared in {first}", service.name),
            ));
        } else {
            declared.insert(service.name.clone(), file.clone());
        }
    }

    let mut services = BTreeMap::new();
    for (file, service) in service_files {
        let mut errors = Errors::default();
        let config = validate_service(
            service,
            &file,
            &mesh.defaults,
            default_authorization,
            &declared,
            &mut errors,
        );
        drain(&file, errors, out);
        if declared.get(&config.name) == Some(&file) {
            services.insert(config.name.clone(), config);
        }
    }
    check_backend_refs(&services, out);
    // Every caller of a TCP service listens at its address, so two must not share one.
    let mut listens: BTreeMap<std::net::SocketAddr, &ServiceConfig> = BTreeMap::new();
    for service in services.values() {
        let Some(tcp) = &service.tcp else { continue };
        if let Some(first) = listens.insert(tcp.listen, service) {
            out.push(file_error(
                &service.file,
                "listen",
                format!(
                    "{} is already the listen address of {}",
                    tcp.listen, first.name
                ),
            ));
        }
    }
    let addresses: Vec<_> = services
        .values()
        .map(|s| virtual_addresses::ServiceAddresses {
            file: &s.file,
            name: &s.name,
            listen: s.tcp.as_ref().map(|t| t.listen),
            pinned: s.virtual_address,
        })
        .collect();
    for (file, path, message) in virtual_addresses::check_services(&virtual_addresses, &addresses) {
        out.push(file_error(file.unwrap_or(MESH_FILE), path, message));
    }
    MeshConfig {
        trust_domain: mesh.trust_domain,
        namespace,
        certificate_lifetime,
        registry,
        default_authorization,
        services,
        api,
        registration,
        admin,
        virtual_addresses,
        gateways: BTreeMap::new(),
    }
}

/// A route's `backendRefs` name declared HTTP services, and versions those services split
/// into.
fn check_backend_refs(services: &BTreeMap<String, ServiceConfig>, out: &mut Vec<FileError>) {
    for service in services.values() {
        for (i, route) in service.policy.routes.iter().enumerate() {
            for (field, backend) in route.backends() {
                let at = format!("routes[{i}].{field}");
                let Some(target) = services.get(&backend.service) else {
                    out.push(file_error(
                        &service.file,
                        &format!("{at}.name"),
                        format!("service {:?} is not declared", backend.service),
                    ));
                    continue;
                };
                if target.tcp.as_ref().is_some_and(|t| !t.detect) {
                    out.push(file_error(
                        &service.file,
                        &format!("{at}.name"),
                        format!("{:?} is a tcp service: routes send requests", target.name),
                    ));
                }
                let Some(version) = &backend.version else {
                    continue;
                };
                let split = target.traffic_split.as_ref();
                if !split.is_some_and(|s| s.contains_key(version)) {
                    out.push(file_error(
                        &service.file,
                        &format!("{at}.version"),
                        format!(
                            "{version:?} is not in {}'s traffic_split: add it there (weight 0 \
                             sends it only the requests of routes that name it)",
                            target.name
                        ),
                    ));
                }
            }
        }
    }
}

fn validate_service(
    file: ServiceFile,
    file_name: &str,
    defaults: &PolicyFile,
    default_decision: Decision,
    declared: &BTreeMap<String, String>,
    errors: &mut Errors,
) -> ServiceConfig {
    check_label(errors, "name", &file.name);
    let tcp = mesh_api::tcp::validate(
        &TcpFields {
            protocol: file.protocol.as_deref(),
            listen: file.listen.as_deref(),
            port: file.port,
            routes: file.routes.is_some(),
            retries: file.retries.is_some(),
            timeout: file.timeout.is_some(),
            fault: file.fault.is_some(),
        },
        "",
        errors,
    );
    let mut seen = BTreeSet::new();
    for (i, call) in file.calls.iter().enumerate() {
        let path = format!("calls[{i}]");
        if !declared.contains_key(call) {
            check_label(errors, &path, call);
            errors.push(&path, format!("service {call:?} is not declared"));
        } else if !seen.insert(call) {
            errors.push(&path, format!("{call:?} is listed twice"));
        }
    }

    // Each top-level policy field the service sets replaces the same field of `defaults`.
    let set: BTreeSet<&str> = [
        ("timeout", file.timeout.is_some()),
        ("retries", file.retries.is_some()),
        ("circuit_breaker", file.circuit_breaker.is_some()),
        ("load_balancer", file.load_balancer.is_some()),
        ("routes", file.routes.is_some()),
        ("fault", file.fault.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    let merged = PolicyFile {
        timeout: file.timeout.or_else(|| defaults.timeout.clone()),
        retries: file.retries.or_else(|| defaults.retries.clone()),
        circuit_breaker: file
            .circuit_breaker
            .or_else(|| defaults.circuit_breaker.clone()),
        load_balancer: file
            .load_balancer
            .or_else(|| defaults.load_balancer.clone()),
        // A route names paths of one service; there are no mesh-wide routes.
        routes: file.routes,
        // Faults are an experiment on one service, never a mesh-wide default.
        fault: file.fault,
    };
    let mut policy_errors = Errors::default();
    let policy = policy::validate(merged, "", &mut policy_errors);
    for e in policy_errors.into_vec() {
        let path = e.path.trim_start_matches('.');
        let field = path.split(['.', '[']).next().unwrap_or_default();
        // Errors in inherited fields belong to mesh.yaml, which reports them.
        if set.contains(field) {
            errors.push(path, e.message);
        }
    }

    let authorization_file = file.authorization.unwrap_or_default();
    for (at, entry) in authorization_file.principals() {
        let is_label = spiffe::check_label(entry).is_ok();
        if !entry.starts_with("spiffe://") && is_label && !declared.contains_key(entry) {
            errors.push(
                format!("authorization.{at}"),
                format!("service {entry:?} is not declared"),
            );
        }
    }
    let authorization = authorization::validate(
        authorization_file,
        "authorization",
        default_decision,
        errors,
    );

    let rate_limit_file = file.rate_limit.unwrap_or_default();
    for caller in rate_limit_file.caller_names() {
        let is_label = spiffe::check_label(caller).is_ok();
        if !caller.starts_with("spiffe://") && is_label && !declared.contains_key(caller) {
            errors.push(
                format!("rate_limit.callers.{caller}"),
                format!("service {caller:?} is not declared"),
            );
        }
    }
    let rate_limit = mesh_api::rate_limit::validate(rate_limit_file, "rate_limit", errors);

    if let Some(split) = &file.traffic_split {
        if split.is_empty() {
            errors.push("traffic_split", "must list at least one version");
        } else if split.values().all(|w| *w == 0) {
            errors.push(
                "traffic_split",
                "at least one weight must be greater than 0",
            );
        }
        for (version, weight) in split {
            let path = format!("traffic_split.{version}");
            check_label(errors, &path, version);
            if *weight > MAX_WEIGHT {
                errors.push(&path, format!("must be at most {MAX_WEIGHT}"));
            }
        }
    }
    let virtual_address = virtual_addresses::pinned(file.virtual_address.as_deref(), errors);
    ServiceConfig {
        name: file.name,
        file: file_name.to_owned(),
        calls: file.calls,
        policy,
        authorization,
        rate_limit,
        traffic_split: file.traffic_split,
        tcp,
        virtual_address,
    }
}

fn human_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

// === impl FileError, InvalidConfig ===

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "invalid configuration ({n} error{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
