//! From the file as written to the configuration the sidecar runs on: every field checked,
//! defaults filled in, relative paths resolved, and *every* error collected with its path so an
//! operator fixes a file in one pass.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_api::authorization::{self, Decision};
use mesh_api::host_port::HostPort;
use mesh_api::tcp::TcpFields;
use mesh_api::validate::{Errors, check_label, duration};

use super::runtime::{
    Advertise, AppHealthConfig, Config, ControlPlaneConfig, DEFAULT_ADMIN, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DETECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_INBOUND,
    DEFAULT_OUTBOUND, Destination, InboundConfig, ListenAddrs, OutboundConfig, TcpDestination,
    TlsPaths, TrustAnchor, UnknownDestination,
};
use super::schema::{
    AppHealthFile, ControlPlaneFile, DestinationFile, File, InboundFile, OutboundFile, TracingFile,
};
use crate::identity::SpiffeId;
use crate::redirect::PortRange;
use crate::telemetry::{OtlpProtocol, TracingConfig};

pub(super) fn validate(file: File, base: &Path, errors: &mut Errors) -> Option<Config> {
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
    // `gateway: {}` with a control plane: the control plane declares the listeners and routes.
    let from_control_plane = file.control_plane.is_some();
    let gateway = file.gateway.map(|gateway| {
        if gateway.is_empty() && from_control_plane {
            mesh_api::gateway::GatewayConfig::unset()
        } else {
            mesh_api::gateway::validate(gateway, "gateway", base, errors)
        }
    });
    let app = match (&file.app, &gateway) {
        (Some(app), None) => socket_addr(errors, "app", app),
        (None, None) => {
            errors.push("app", "missing: the address of the local app");
            None
        }
        (Some(_), Some(_)) => {
            errors.push(
                "app",
                "not allowed with gateway: a gateway has no local app",
            );
            None
        }
        // Nothing listens on port 0: a peer that calls a gateway gets `app-unavailable`.
        (None, Some(_)) => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    };
    let unbound = || SocketAddr::from(([127, 0, 0, 1], 0));
    // A gateway binds no inbound listener and registers no address: written, either would be
    // silently ignored.
    let inbound = if gateway.is_some() {
        for (field, written) in [
            ("inbound", file.listen.inbound.is_some()),
            ("advertise", file.listen.advertise.is_some()),
        ] {
            if written {
                errors.push(
                    format!("listen.{field}"),
                    "not allowed with gateway: a gateway has no inbound listener (nothing in \
                     the mesh calls it); remove it",
                );
            }
        }
        None
    } else {
        listen_addr(errors, "inbound", file.listen.inbound, DEFAULT_INBOUND)
    };
    let mut listen = ListenAddrs {
        outbound: listen_addr(errors, "outbound", file.listen.outbound, DEFAULT_OUTBOUND)
            .unwrap_or_else(unbound),
        inbound: inbound.unwrap_or_else(unbound),
        admin: listen_addr(errors, "admin", file.listen.admin, DEFAULT_ADMIN)
            .unwrap_or_else(unbound),
        advertise: None,
    };
    let distinct: &[SocketAddr] = match inbound {
        Some(_) => &[listen.outbound, listen.inbound, listen.admin],
        None => &[listen.outbound, listen.admin],
    };
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
    // Set, even when invalid: its own errors say what is wrong with it.
    let registers = file.control_plane.is_some();
    let control_plane = file
        .control_plane
        .and_then(|cp| control_plane_config(cp, &resolve, errors));
    match (tls.is_some(), registers) {
        (false, false) => errors.push(
            "",
            "set either tls (certificate files) or control_plane (certificates from the control plane)",
        ),
        (true, true) => errors.push(
            "control_plane",
            "the control plane issues the certificate: remove tls",
        ),
        _ => {}
    }
    if let Some(inbound) = inbound {
        listen.advertise = advertise(errors, file.listen.advertise.as_deref(), inbound, registers);
    }
    if registers && !file.destinations.is_empty() {
        errors.push(
            "destinations",
            "the control plane pushes destinations: remove them, or remove control_plane",
        );
    }
    let version = file.version.unwrap_or_else(|| "v1".to_owned());
    check_label(errors, "version", &version);
    if let Some(instance) = &file.instance {
        check_label(errors, "instance", instance);
    }

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
        let tcp = tcp_destination(&dest, &path, &listen, errors);
        let virtual_address = dest.virtual_address.as_deref().and_then(|text| {
            let field = format!("{path}.virtual_address");
            match text.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() => {
                    errors.push(field, format!("{ip} is the unspecified address"));
                    None
                }
                Ok(ip) => Some(ip.to_canonical()),
                Err(_) => {
                    errors.push(
                        field,
                        format!("{text:?} is not an IP address (e.g. 127.240.0.10)"),
                    );
                    None
                }
            }
        });
        let identity = match dest.identity {
            Some(id) => id
                .parse::<SpiffeId>()
                .map_err(|e| errors.push(format!("{path}.identity"), format!("{id:?}: {e}")))
                .ok(),
            None => SpiffeId::for_service(&file.trust_domain, &namespace, &name).ok(),
        };
        let policy = mesh_api::policy::validate(
            mesh_api::policy::PolicyFile {
                timeout: dest.timeout,
                retries: dest.retries,
                circuit_breaker: dest.circuit_breaker,
                load_balancer: dest.load_balancer,
                routes: dest.routes,
                fault: dest.fault,
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
                    tcp,
                    virtual_address,
                },
            );
        }
    }

    // A route's backends are destinations of this file; versions come from a control plane's
    // traffic split, which a bootstrap file has none of.
    for (name, dest) in &destinations {
        for (i, route) in dest.policy.routes.iter().enumerate() {
            for (field, backend) in route.backends() {
                let at = format!("destinations.{name}.routes[{i}].{field}");
                if !destinations.contains_key(&backend.service) {
                    errors.push(
                        format!("{at}.name"),
                        format!(
                            "{:?} is not a destination of this sidecar: add it to destinations",
                            backend.service
                        ),
                    );
                }
                if backend.version.is_some() {
                    errors.push(
                        format!("{at}.version"),
                        "versions come from the control plane's traffic_split; a bootstrap \
                         destination has one set of endpoints",
                    );
                }
            }
        }
    }

    // A redirected connection to a virtual address must map to one destination.
    let mut virtual_addresses: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for (name, dest) in &destinations {
        let Some(ip) = dest.virtual_address else {
            continue;
        };
        if let Some(other) = virtual_addresses.insert(ip, name) {
            errors.push(
                format!("destinations.{name}.virtual_address"),
                format!("{ip} is already the virtual address of destinations.{other}"),
            );
        }
    }

    let mut tcp_listens: Vec<(&str, SocketAddr)> = Vec::new();
    for (name, dest) in &destinations {
        let Some(tcp) = &dest.tcp else { continue };
        if let Some((other, _)) = tcp_listens.iter().find(|(_, a)| *a == tcp.listen) {
            errors.push(
                format!("destinations.{name}.listen"),
                format!(
                    "{} is already the listen address of destinations.{other}",
                    tcp.listen
                ),
            );
        }
        tcp_listens.push((name, tcp.listen));
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
    let detect_timeout = duration(
        errors,
        "detect_timeout",
        file.detect_timeout,
        DEFAULT_DETECT_TIMEOUT,
    );
    if detect_timeout > MAX_DETECT_TIMEOUT {
        errors.push(
            "detect_timeout",
            "must be at most 60s: a client that speaks only after the server waits this long",
        );
    }
    let idle_timeout = duration(
        errors,
        "idle_timeout",
        file.idle_timeout,
        DEFAULT_IDLE_TIMEOUT,
    );
    if idle_timeout < MIN_IDLE_TIMEOUT {
        errors.push(
            "idle_timeout",
            "must be at least 100ms: a stream this quiet is normal between two messages",
        );
    }
    let max_connection_age = file.max_connection_age.map(|age| {
        let age = duration(errors, "max_connection_age", Some(age), Duration::ZERO);
        if age < MIN_CONNECTION_AGE {
            errors.push(
                "max_connection_age",
                "must be at least 1s: every connection would be torn down as it opens",
            );
        }
        age
    });
    let tracing = tracing_config(file.tracing, errors);
    let app_health = file.app_health.map(|f| app_health_config(f, errors));
    let limits = super::limits::validate(file.limits, errors);
    let outbound = outbound_config(file.outbound, errors);
    let inbound = inbound_config(file.inbound, errors);
    let authorization =
        authorization::validate(file.authorization, "authorization", Decision::Allow, errors);
    let rate_limit = file
        .rate_limit
        .map(|r| mesh_api::rate_limit::validate(r, "rate_limit", errors))
        .unwrap_or_default();
    Some(Config {
        app_health,
        authorization,
        rate_limit,
        tracing,
        access_log: file.access_log,
        service: file.service,
        namespace,
        trust_domain: file.trust_domain,
        identity: identity?,
        app: app?,
        gateway,
        base_dir: base.to_path_buf(),
        listen,
        version,
        instance: file.instance,
        tls,
        control_plane,
        destinations,
        connect_timeout,
        drain_timeout,
        detect_timeout,
        idle_timeout,
        max_connection_age,
        limits,
        outbound,
        inbound,
    })
}

/// `control_plane:`: an address to dial (an IP or a name), and exactly one trust anchor, whose
/// inline PEM is checked here as a file's is when it is read.
fn control_plane_config(
    cp: ControlPlaneFile,
    resolve: &impl Fn(PathBuf) -> PathBuf,
    errors: &mut Errors,
) -> Option<ControlPlaneConfig> {
    let address = cp
        .address
        .parse::<HostPort>()
        .map_err(|e| errors.push("control_plane.address", e.to_string()))
        .ok();
    let trust_anchor = match (cp.trust_anchor, cp.trust_anchor_pem) {
        (Some(path), None) => Some(TrustAnchor::File(resolve(path))),
        (None, Some(pem)) => match mesh_api::channel::roots_from_pem(pem.as_bytes()) {
            Ok(_) => Some(TrustAnchor::Pem(pem)),
            Err(e) => {
                errors.push(
                    "control_plane.trust_anchor_pem",
                    format!("{e}: write the mesh's CA certificate (ca.pem) as PEM"),
                );
                None
            }
        },
        (None, None) => {
            errors.push(
                "control_plane",
                "set trust_anchor (a PEM file) or trust_anchor_pem (the PEM itself)",
            );
            None
        }
        (Some(_), Some(_)) => {
            errors.push(
                "control_plane.trust_anchor_pem",
                "set trust_anchor or trust_anchor_pem, not both",
            );
            None
        }
    };
    Some(ControlPlaneConfig {
        address: address?,
        trust_anchor: trust_anchor?,
        token_file: resolve(cp.token_file),
    })
}

/// `inbound:`; no opaque ports unless listed.
fn inbound_config(file: InboundFile, errors: &mut Errors) -> InboundConfig {
    let mut opaque_ports = Vec::new();
    for (i, port) in file.opaque_ports.iter().enumerate() {
        match port.0.parse::<PortRange>() {
            Ok(range) => opaque_ports.push(range),
            Err(why) => errors.push(format!("inbound.opaque_ports[{i}]"), why),
        }
    }
    InboundConfig { opaque_ports }
}

/// `outbound:`; `unknown` is passthrough unless set.
fn outbound_config(file: OutboundFile, errors: &mut Errors) -> OutboundConfig {
    let unknown = match file.unknown.as_deref() {
        None | Some("passthrough") => UnknownDestination::Passthrough,
        Some("deny") => UnknownDestination::Deny,
        Some(other) => {
            errors.push(
                "outbound.unknown",
                format!("unknown policy {other:?}: use passthrough or deny"),
            );
            UnknownDestination::Passthrough
        }
    };
    OutboundConfig { unknown }
}

/// A client that sends nothing is held this long at most before it is decided on.
const MAX_DETECT_TIMEOUT: Duration = Duration::from_secs(60);
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);
const MIN_CONNECTION_AGE: Duration = Duration::from_secs(1);

/// The TCP side of a destination, by the rules the control plane also applies, and a listen
/// address that is none of the sidecar's own.
fn tcp_destination(
    dest: &DestinationFile,
    path: &str,
    listen: &ListenAddrs,
    errors: &mut Errors,
) -> Option<TcpDestination> {
    let fields = TcpFields {
        protocol: dest.protocol.as_deref(),
        listen: dest.listen.as_deref(),
        port: dest.port,
        routes: dest.routes.is_some(),
        retries: dest.retries.is_some(),
        timeout: dest.timeout.is_some(),
        fault: dest.fault.is_some(),
    };
    let tcp = mesh_api::tcp::validate(&fields, path, errors)?;
    if [listen.outbound, listen.inbound, listen.admin].contains(&tcp.listen) {
        errors.push(
            format!("{path}.listen"),
            format!(
                "{} is already one of the sidecar's listen addresses",
                tcp.listen
            ),
        );
    }
    Some(tcp)
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
) -> Option<SocketAddr> {
    let value = value.unwrap_or_else(|| default.to_owned());
    socket_addr(errors, &format!("listen.{name}"), &value)
}

/// `listen.advertise`: `IP` or `IP:PORT`, an address peers can dial. Only a sidecar that
/// `registers` with a control plane advertises, and it must when `inbound` is a wildcard.
fn advertise(
    errors: &mut Errors,
    value: Option<&str>,
    inbound: SocketAddr,
    registers: bool,
) -> Option<Advertise> {
    const PATH: &str = "listen.advertise";
    let Some(value) = value else {
        if registers && inbound.ip().is_unspecified() {
            errors.push(
                PATH,
                format!(
                    "required: listen.inbound {inbound} is a wildcard address, which peer \
                     sidecars cannot dial; write this host's address as they reach it, \
                     e.g. 10.0.0.5"
                ),
            );
        }
        return None;
    };
    if !registers {
        errors.push(
            PATH,
            "only a sidecar with a control plane registers an address: remove it, or add \
             control_plane",
        );
        return None;
    }
    let parsed = match value.parse::<SocketAddr>() {
        Ok(addr) => Some((addr.ip(), Some(addr.port()))),
        Err(_) => value
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(value)
            .parse::<IpAddr>()
            .ok()
            .map(|ip| (ip, None)),
    };
    let Some((ip, port)) = parsed else {
        errors.push(
            PATH,
            format!(
                "invalid address {value:?}: write an IP (the inbound port is advertised) or \
                 IP:PORT, e.g. 10.0.0.5 or 10.0.0.5:15006"
            ),
        );
        return None;
    };
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        errors.push(
            PATH,
            format!(
                "{ip} is not an address peer sidecars can dial: write this host's address as \
                 they reach it, e.g. 10.0.0.5"
            ),
        );
        return None;
    }
    match port {
        Some(0) => errors.push(
            PATH,
            format!("port 0 cannot be dialled: write {ip} alone to advertise the inbound port"),
        ),
        Some(_) if inbound.port() == 0 => errors.push(
            PATH,
            format!(
                "listen.inbound has port 0, chosen at start, so no fixed port can be \
                 advertised: write {ip} alone to advertise the port it gets"
            ),
        ),
        _ => return Some(Advertise { ip, port }),
    }
    None
}
