//! The per-pod choices: read from the pod's labels and `mesh.local/` annotations, each checked
//! so that a bad value is refused here, naming the annotation, rather than by a sidecar that
//! cannot start.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::error::InjectError;
use crate::names;

/// What one pod asks of its sidecar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PodOptions {
    /// The mesh service the pod is an instance of.
    pub(crate) service: String,
    /// The instance's version, from its labels.
    pub(crate) version: Option<String>,
    /// Where the sidecar forwards inbound calls; none when the pod takes no calls.
    pub(crate) app_port: Option<u16>,
    /// `--exclude-inbound-ports` of the redirect, checked and normalised.
    pub(crate) skip_inbound_ports: Vec<String>,
    /// `--exclude-outbound-ports` of the redirect, checked and normalised.
    pub(crate) skip_outbound_ports: Vec<String>,
    /// `--exclude-outbound-cidrs` of the redirect, checked and normalised.
    pub(crate) skip_outbound_cidrs: Vec<String>,
    /// Inbound ports served as opaque TCP.
    pub(crate) opaque_ports: Vec<u16>,
    /// The sidecar's log filter, when the pod sets one.
    pub(crate) log_level: Option<String>,
}

/// Where a pod's metadata and spec are, for messages: the object and the path prefix of its
/// pod template (`""` for a Pod, `"spec.template."` for a Deployment).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Location<'a> {
    pub(crate) object: &'a str,
    pub(crate) prefix: &'a str,
}

impl Location<'_> {
    /// `path` under the template's prefix; `""` is the template itself.
    pub(crate) fn field(&self, path: &str) -> String {
        match (self.prefix.trim_end_matches('.'), path) {
            ("", "") => "(the pod)".to_owned(),
            (prefix, "") => prefix.to_owned(),
            _ => format!("{}{path}", self.prefix),
        }
    }

    pub(crate) fn bad_field(&self, path: &str, problem: impl Into<String>) -> InjectError {
        InjectError::BadField {
            object: self.object.to_owned(),
            field: self.field(path),
            problem: problem.into(),
        }
    }
}

/// A string-to-string map of the pod's metadata (`labels`, `annotations`), or none.
pub(crate) fn metadata_map<'a>(
    pod: &'a Map<String, Value>,
    key: &str,
    at: Location<'_>,
) -> Result<Option<&'a Map<String, Value>>, InjectError> {
    let Some(metadata) = pod.get("metadata") else {
        return Ok(None);
    };
    let metadata = match metadata {
        Value::Object(metadata) => metadata,
        Value::Null => return Ok(None),
        _ => return Err(at.bad_field("metadata", "must be a mapping")),
    };
    match metadata.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(at.bad_field(&format!("metadata.{key}"), "must be a mapping")),
    }
}

/// A label's value, when set; labels are strings.
pub(crate) fn label<'a>(
    labels: Option<&'a Map<String, Value>>,
    name: &str,
    at: Location<'_>,
) -> Result<Option<&'a str>, InjectError> {
    match labels.and_then(|labels| labels.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(other) => Err(at.bad_field(
            &format!("metadata.labels[{name}]"),
            format!("{other} is not a string: label values are strings (quote it)"),
        )),
    }
}

/// Reads the pod's options. `spec` is the pod's spec, for the default app port.
pub(crate) fn read(
    pod: &Map<String, Value>,
    spec: &Map<String, Value>,
    at: Location<'_>,
) -> Result<PodOptions, InjectError> {
    let labels = metadata_map(pod, "labels", at)?;
    let annotations = Annotations {
        map: metadata_map(pod, "annotations", at)?,
        at,
    };

    let service = match annotations.get(names::SERVICE_ANNOTATION)? {
        Some(service) => {
            check_service(service)
                .map_err(|problem| annotations.bad(names::SERVICE_ANNOTATION, service, problem))?;
            service.to_owned()
        }
        None => service_from_labels(labels, at)?,
    };
    let mut version = None;
    for name in names::VERSION_LABELS {
        if let Some(value) = label(labels, name, at)? {
            version = Some(value.to_owned());
            break;
        }
    }

    let app_port = match annotations.get(names::APP_PORT_ANNOTATION)? {
        Some(text) => Some(
            parse_port(text)
                .map_err(|problem| annotations.bad(names::APP_PORT_ANNOTATION, text, problem))?,
        ),
        None => first_container_port(spec, at)?,
    };

    let ports = |annotation: &'static str| -> Result<Vec<String>, InjectError> {
        match annotations.get(annotation)? {
            None => Ok(Vec::new()),
            Some(text) => list(text, parse_port_range)
                .map_err(|problem| annotations.bad(annotation, text, problem)),
        }
    };
    let skip_inbound_ports = ports(names::SKIP_INBOUND_PORTS_ANNOTATION)?;
    let skip_outbound_ports = ports(names::SKIP_OUTBOUND_PORTS_ANNOTATION)?;
    let skip_outbound_cidrs = match annotations.get(names::SKIP_OUTBOUND_CIDRS_ANNOTATION)? {
        None => Vec::new(),
        Some(text) => list(text, parse_cidr).map_err(|problem| {
            annotations.bad(names::SKIP_OUTBOUND_CIDRS_ANNOTATION, text, problem)
        })?,
    };
    let opaque_ports = match annotations.get(names::OPAQUE_PORTS_ANNOTATION)? {
        None => Vec::new(),
        Some(text) => list(text, parse_port)
            .map_err(|problem| annotations.bad(names::OPAQUE_PORTS_ANNOTATION, text, problem))?,
    };
    let log_level = match annotations.get(names::LOG_LEVEL_ANNOTATION)? {
        None => None,
        Some(text) => Some(
            check_log_level(text)
                .map_err(|problem| annotations.bad(names::LOG_LEVEL_ANNOTATION, text, problem))?,
        ),
    };

    Ok(PodOptions {
        service,
        version,
        app_port,
        skip_inbound_ports,
        skip_outbound_ports,
        skip_outbound_cidrs,
        opaque_ports,
        log_level,
    })
}

/// The pod's annotations, read one `mesh.local/` key at a time.
struct Annotations<'a> {
    map: Option<&'a Map<String, Value>>,
    at: Location<'a>,
}

impl<'a> Annotations<'a> {
    fn get(&self, annotation: &'static str) -> Result<Option<&'a str>, InjectError> {
        match self.map.and_then(|map| map.get(annotation)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(other) => Err(self.bad(
                annotation,
                &other.to_string(),
                "is not a string: annotation values are strings (quote it)",
            )),
        }
    }

    fn bad(
        &self,
        annotation: &'static str,
        value: &str,
        problem: impl Into<String>,
    ) -> InjectError {
        InjectError::BadAnnotation {
            object: self.at.object.to_owned(),
            field: self.at.field("metadata.annotations"),
            annotation,
            value: value.to_owned(),
            problem: problem.into(),
        }
    }
}

fn service_from_labels(
    labels: Option<&Map<String, Value>>,
    at: Location<'_>,
) -> Result<String, InjectError> {
    for name in names::SERVICE_LABELS {
        if let Some(service) = label(labels, name, at)? {
            check_service(service).map_err(|problem| {
                at.bad_field(
                    &format!("metadata.labels[{name}]"),
                    format!("{service:?} cannot name a mesh service: {problem}"),
                )
            })?;
            return Ok(service.to_owned());
        }
    }
    Err(InjectError::NoServiceName {
        object: at.object.to_owned(),
        field: at.field("metadata"),
    })
}

/// The first `containerPort` of the first app container, the default app port.
fn first_container_port(
    spec: &Map<String, Value>,
    at: Location<'_>,
) -> Result<Option<u16>, InjectError> {
    let Some(Value::Array(containers)) = spec.get("containers") else {
        return Ok(None);
    };
    let Some(Value::Object(first)) = containers.first() else {
        return Ok(None);
    };
    let Some(Value::Array(ports)) = first.get("ports") else {
        return Ok(None);
    };
    let Some(port) = ports.first() else {
        return Ok(None);
    };
    let field = "spec.containers[0].ports[0].containerPort";
    match port.get("containerPort") {
        Some(Value::Number(number)) => number
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .filter(|port| *port != 0)
            .map(Some)
            .ok_or_else(|| at.bad_field(field, format!("{number} is not a port (1-65535)"))),
        Some(other) => Err(at.bad_field(field, format!("{other} is not a port (1-65535)"))),
        None => Err(at.bad_field(field, "missing")),
    }
}

/// A mesh service name: a DNS label, as it becomes part of the pod's SPIFFE ID.
fn check_service(name: &str) -> Result<(), String> {
    let label_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty()
        || name.len() > 63
        || !label_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(
            "a service name is 1-63 lowercase letters, digits and '-', starting and ending with a \
             letter or digit"
                .to_owned(),
        );
    }
    Ok(())
}

/// Comma-separated items, each parsed by `item`, written back normalised.
fn list<T>(text: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items: Vec<T> = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(item)
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err("is empty: list items separated by commas".to_owned());
    }
    Ok(items)
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!("{text:?} is not a port (1-65535)")),
    }
}

/// A port or a range `a-b`, as `sidecar redirect` takes them.
fn parse_port_range(text: &str) -> Result<String, String> {
    match text.split_once('-') {
        None => parse_port(text).map(|port| port.to_string()),
        Some((first, last)) => {
            let (first, last) = (parse_port(first)?, parse_port(last)?);
            if first > last {
                return Err(format!("range {text:?} ends before it starts"));
            }
            Ok(format!("{first}-{last}"))
        }
    }
}

/// A network `address/prefix` or one address, as `sidecar redirect` takes them.
fn parse_cidr(text: &str) -> Result<String, String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address.trim(), Some(prefix.trim())),
        None => (text.trim(), None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IP address (write e.g. 10.0.0.0/8)"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => Ok(format!("{address}/{max}")),
        Some(prefix) => match prefix.parse::<u8>() {
            Ok(bits) if bits <= max => Ok(format!("{address}/{bits}")),
            _ => Err(format!("prefix /{prefix} is not between /0 and /{max}")),
        },
    }
}

/// A log filter: one token of letters, digits and the filter's punctuation.
fn check_log_level(text: &str) -> Result<String, String> {
    let text = text.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-:=,./[]{}*\"".contains(c);
    if text.is_empty() || !text.chars().all(allowed) {
        return Err(
            "is not a log filter: write a level (debug, info, warn) or a filter such as \
             info,mesh_sidecar=debug"
                .to_owned(),
        );
    }
    Ok(text.to_owned())
}
