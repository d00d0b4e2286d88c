//! `config/demo.yaml`: what `meshctl up` runs.
//!
//! ```yaml
//! control_plane: { config_dir: demo/mesh, api: 127.0.0.1:15010, admin: 127.0.0.1:15014 }
//! run_dir: ../target/demo
//! tracing: { otlp_endpoint: http://127.0.0.1:4317 }   # optional; protocol: grpc | http/protobuf
//! ports_from: 18000
//! gateway: { listen: 127.0.0.1:18080 }   # optional; left out: handed out from ports_from
//! services:
//!   storefront: { instances: 1 }
//!   inventory: { instances: 3, versions: { v2: 1 } }   # optional: the last one runs v2
//! ```
//! Instances run version `v1` unless `versions` names another for some of them (the last ones).
//! Relative paths are relative to the file. `control_plane.api` and `admin` may be left out:
//! they are then handed out from `ports_from` like every other port.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The services of the demo, in the order tables list them (callers first).
pub const DEMO_SERVICES: [&str; 5] = [
    "storefront",
    "orders",
    "inventory",
    "payments",
    "notifications",
];

/// A parsed and checked `demo.yaml`.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The control plane to run.
    pub control_plane: ControlPlaneSpec,
    /// Where state, data, logs and bootstrap files go.
    pub run_dir: PathBuf,
    /// Where sidecars export spans; `None`: spans are not exported.
    pub tracing: Option<TracingSpec>,
    /// The first port handed out.
    pub ports_from: u16,
    /// The gateway in front of the storefront, where users enter the mesh.
    pub gateway: GatewaySpec,
    /// The services to run, callers first.
    pub services: Vec<ServiceSpec>,
}

/// The control plane's part of `demo.yaml`.
#[derive(Clone, Debug)]
pub struct ControlPlaneSpec {
    /// The mesh configuration directory (`mesh.yaml`, `services/`).
    pub config_dir: PathBuf,
    /// Its API (gRPC) address; `None`: allocated from `ports_from`.
    pub api: Option<SocketAddr>,
    /// Its admin address; `None`: allocated from `ports_from`.
    pub admin: Option<SocketAddr>,
}

/// The gateway's part of `demo.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Its HTTP listener, the URL users open; `None`: allocated from `ports_from`.
    pub listen: Option<SocketAddr>,
}

/// Where spans go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracingSpec {
    /// The collector, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
}

/// One service and how many instances of it run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name, as declared in the mesh configuration.
    pub name: String,
    /// How many instances run (at least 1).
    pub instances: u16,
    /// How many of them run a version other than `v1`, by version: the last instances do.
    pub versions: BTreeMap<String, u16>,
}

/// One problem in `demo.yaml`, with the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `services.orders.instances` (empty: the whole file).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Why `demo.yaml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DemoConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid; every problem found is listed.
    #[error("invalid {}:{}", file.display(), list(errors))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The problems.
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}

impl DemoConfigError {
    /// The field problems (empty when the file could not be read).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { errors, .. } => errors,
        }
    }
}

// === schema: the file as users write it ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    control_plane: ControlPlaneFile,
    run_dir: PathBuf,
    #[serde(default)]
    tracing: Option<TracingFile>,
    ports_from: u16,
    #[serde(default)]
    gateway: Option<GatewayFile>,
    services: BTreeMap<String, ServiceFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    #[serde(default)]
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlPlaneFile {
    config_dir: PathBuf,
    #[serde(default)]
    api: Option<String>,
    #[serde(default)]
    admin: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TracingFile {
    otlp_endpoint: String,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    instances: u16,
    #[serde(default)]
    versions: BTreeMap<String, u16>,
}

impl DemoConfig {
    /// Reads and checks `path`; relative paths in it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, DemoConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| DemoConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        Self::from_yaml(&text, &base).map_err(|errors| DemoConfigError::Invalid {
            file: path.to_owned(),
            errors,
        })
    }

    /// Parses and checks YAML text; relative paths are resolved against `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Self, Vec<FieldError>> {
        // serde_path_to_error names the field of a structural error (unknown field, wrong type,
        // missing field); the YAML error itself carries line and column.
        let mut failed_at = None;
        let file: File = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                failed_at = Some(e.path().to_string());
                e.into_inner()
            })
        })
        .map_err(|e| {
            vec![FieldError {
                field: failed_at.filter(|p| p != ".").unwrap_or_default(),
                message: e.to_string(),
            }]
        })?;
        validate(file, base)
    }

    /// The number of instances of every service together.
    pub fn instance_count(&self) -> usize {
        self.services.iter().map(|s| usize::from(s.instances)).sum()
    }
}

fn validate(file: File, base: &Path) -> Result<DemoConfig, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut error = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            message,
        });
    };
    let mut address = |field: &str, value: Option<String>| {
        value.and_then(|v| match v.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Some(addr),
            Ok(_) => {
                error(field, format!("{v:?} needs a port other than 0"));
                None
            }
            Err(_) => {
                error(
                    field,
                    format!("invalid socket address {v:?}; write e.g. 127.0.0.1:15010"),
                );
                None
            }
        })
    };
    let api = address("control_plane.api", file.control_plane.api);
    let admin = address("control_plane.admin", file.control_plane.admin);
    let gateway_listen = address("gateway.listen", file.gateway.and_then(|g| g.listen));
    if api.is_some() && api == admin {
        error(
            "control_plane.admin",
            "must differ from control_plane.api".into(),
        );
    }
    if let Some(listen) = gateway_listen
        && [api, admin]
            .iter()
            .flatten()
            .any(|a| a.port() == listen.port())
    {
        error(
            "gateway.listen",
            format!("port {} is already the control plane's", listen.port()),
        );
    }
    if file.ports_from < 1024 {
        error(
            "ports_from",
            format!(
                "{} is a privileged port; use 1024 or above",
                file.ports_from
            ),
        );
    }
    let tracing = file.tracing.and_then(|t| {
        let protocol = t.protocol.unwrap_or_else(|| "grpc".into());
        let mut ok = true;
        if !(t.otlp_endpoint.starts_with("http://") || t.otlp_endpoint.starts_with("https://")) {
            error(
                "tracing.otlp_endpoint",
                format!(
                    "{:?} must be a URL starting with http:// or https://",
                    t.otlp_endpoint
                ),
            );
            ok = false;
        }
        if protocol != "grpc" && protocol != "http/protobuf" {
            error(
                "tracing.protocol",
                format!("{protocol:?} is not one of grpc, http/protobuf"),
            );
            ok = false;
        }
        ok.then_some(TracingSpec {
            otlp_endpoint: t.otlp_endpoint,
            protocol,
        })
    });
    if file.services.is_empty() {
        error("services", "lists no service".into());
    }
    let mut services = Vec::new();
    for (name, service) in file.services {
        let field = format!("services.{name}");
        if !is_dns_label(&name) {
            error(
                &field,
                format!("{name:?} is not a service name (a DNS label: a-z, 0-9, '-')"),
            );
        }
        if service.instances == 0 {
            error(&format!("{field}.instances"), "must be at least 1".into());
        }
        for (version, count) in &service.versions {
            let at = format!("{field}.versions.{version}");
            if !is_dns_label(version) || version == "v1" {
                error(
                    &at,
                    format!(
                        "{version:?} is not a version for some instances: a label (a-z, 0-9, \
                         '-') other than v1, which the other instances run"
                    ),
                );
            }
            if *count == 0 {
                error(&at, "must be at least 1".into());
            }
        }
        let versioned: u32 = service.versions.values().map(|&n| u32::from(n)).sum();
        if versioned > u32::from(service.instances) {
            error(
                &format!("{field}.versions"),
                format!(
                    "names {versioned} instances, but the service has {}",
                    service.instances
                ),
            );
        }
        services.push(ServiceSpec {
            name,
            instances: service.instances,
            versions: service.versions,
        });
    }
    services.sort_by_key(|s| {
        let rank = DEMO_SERVICES
            .iter()
            .position(|known| *known == s.name)
            .unwrap_or(DEMO_SERVICES.len());
        (rank, s.name.clone())
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(DemoConfig {
        control_plane: ControlPlaneSpec {
            config_dir: base.join(file.control_plane.config_dir),
            api,
            admin,
        },
        run_dir: base.join(file.run_dir),
        tracing,
        ports_from: file.ports_from,
        gateway: GatewaySpec {
            listen: gateway_listen,
        },
        services,
    })
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
