//! Gateway API objects as gateway files: each `Gateway` of the mesh's class, with the
//! `HTTPRoute`s attached to it, becomes `gateways/<service>.yaml` for the gateway service it
//! names, held to the same rules as a file (`mesh_api::gateway`), and each object gets the
//! verdict its status reports.
//!
//! - A Gateway is the gateway service of its name (annotation `mesh.local/service` names
//!   another). Each listener binds `<address>:<port>`, the address from `spec.addresses[0]`
//!   (type `IPAddress`) or `0.0.0.0`. An HTTPS listener's `certificateRefs` name Secrets the
//!   gateway's pod mounts at `<CERTIFICATES_DIR>/<secret>/tls.crt` and `tls.key`: the control
//!   plane never reads, nor carries, private keys.
//! - An HTTPRoute attaches to the listeners its `parentRefs` name (all of a Gateway's, or the
//!   `sectionName`/`port` one) whose `hostname` it shares, and becomes one route per set of
//!   listeners with the same effective host names.
//! - Anything the gateway does not do (filters, timeouts, other kinds, other namespaces, TLS
//!   passthrough) refuses the listener or the route with a message naming the field, never
//!   ignored. A refused listener is left out; a Gateway with no valid listener, or a refused
//!   route, keeps what was last accepted for it (or nothing), while the others' changes apply.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use kube::api::DynamicObject;
use mesh_api::gateway::GatewayFile;
use mesh_api::validate::Errors;
use serde_json::{Map, Value, json};

use crate::config::{ConfigFiles, GATEWAYS_DIR};

/// Where a gateway's pod mounts the Secrets its HTTPS listeners name, one directory each.
pub(crate) const CERTIFICATES_DIR: &str = "/etc/mesh/gateway-certs";
/// The annotation of a Gateway naming the gateway service it configures (default: its name).
pub(crate) const SERVICE_ANNOTATION: &str = mesh_inject::names::SERVICE_ANNOTATION;
/// The Gateway API's group, the default of `parentRefs[].group`.
const GROUP: &str = mesh_kube::names::GATEWAY_API_GROUP;

/// The fields of a Gateway's spec the gateway honours.
const GATEWAY_FIELDS: &[&str] = &["gatewayClassName", "listeners", "addresses"];
const LISTENER_FIELDS: &[&str] = &[
    "name",
    "hostname",
    "port",
    "protocol",
    "tls",
    "allowedRoutes",
];
const TLS_FIELDS: &[&str] = &["mode", "certificateRefs"];
const ROUTE_FIELDS: &[&str] = &["parentRefs", "hostnames", "rules"];
const RULE_FIELDS: &[&str] = &["name", "matches", "backendRefs"];
const BACKEND_FIELDS: &[&str] = &["group", "kind", "name", "namespace", "port", "weight"];

/// The watched objects, by name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Objects {
    pub(crate) gateways: BTreeMap<String, DynamicObject>,
    pub(crate) routes: BTreeMap<String, DynamicObject>,
}

/// What the mapping needs to know of the mesh.
pub(crate) struct Context<'a> {
    /// The mesh's namespace: where the objects are, and the only one references may name.
    pub(crate) namespace: &'a str,
    /// The `gatewayClassName` of the Gateways the mesh serves.
    pub(crate) class: &'a str,
    /// The services a service calls (its MeshService's `calls`); `None`: not declared.
    pub(crate) calls: &'a dyn Fn(&str) -> Option<Vec<String>>,
}

/// What was last accepted, for objects refused now.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LastAccepted {
    /// The file listeners of each Gateway.
    listeners: BTreeMap<String, Vec<Value>>,
    /// The file routes of each HTTPRoute on each Gateway, by (route, gateway).
    routes: BTreeMap<(String, String), Vec<Value>>,
}

/// The gateway files of the objects, and each object's verdict.
#[derive(Clone, Debug, Default)]
pub(crate) struct Mapped {
    /// `gateways/<service>.yaml`, one per Gateway with listeners in force.
    pub(crate) files: ConfigFiles,
    pub(crate) gateways: BTreeMap<String, GatewayVerdict>,
    pub(crate) routes: BTreeMap<String, RouteVerdict>,
    /// What is accepted now, to remember once in force.
    pub(crate) accepted: LastAccepted,
}

/// A status condition, as the Gateway API writes them (without its times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Condition {
    pub(crate) kind: &'static str,
    pub(crate) status: bool,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// A Gateway's verdict.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GatewayVerdict {
    /// The generation judged.
    pub(crate) generation: Option<i64>,
    /// The gateway file it makes (`gateways/<service>.yaml`).
    pub(crate) file: String,
    /// `Accepted`.
    pub(crate) accepted: Condition,
    /// `Programmed`: whether its listeners (now or last accepted) are in force; the
    /// caller refines it with the gateway file's own verdict.
    pub(crate) programmed: Condition,
    /// Each listener's status, in the spec's order.
    pub(crate) listeners: Vec<ListenerStatus>,
}

/// A listener's status.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ListenerStatus {
    pub(crate) name: String,
    pub(crate) attached_routes: u32,
    /// `Accepted` and `ResolvedRefs`; `Programmed` follows from the gateway's.
    pub(crate) accepted: Condition,
    pub(crate) resolved_refs: Condition,
    /// Whether it is in the gateway's file.
    pub(crate) in_force: bool,
}

/// An HTTPRoute's verdict, per Gateway of the mesh it names.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RouteVerdict {
    pub(crate) generation: Option<i64>,
    pub(crate) parents: Vec<ParentStatus>,
}

/// A route's status for one of its `parentRefs`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParentStatus {
    /// The `parentRef` as written.
    pub(crate) parent_ref: Value,
    pub(crate) accepted: Condition,
    pub(crate) resolved_refs: Condition,
}

impl Condition {
    fn yes(kind: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: true,
            reason,
            message: message.into(),
        }
    }

    fn no(kind: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// A problem with an object's field, and the reason its condition gives.
#[derive(Clone, Debug)]
struct Problem {
    field: String,
    message: String,
    reason: &'static str,
}

impl Problem {
    fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            reason,
        }
    }

    fn unsupported(field: impl Into<String>) -> Self {
        Self::new(
            field,
            "UnsupportedValue",
            "not supported by the mesh's gateways",
        )
    }
}

/// The problems as one message: `field: problem; ...`.
fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A listener as mapped: its file form, what routes attaching to it need, its problems.
struct Listener {
    name: String,
    hostname: Option<String>,
    port: Option<i64>,
    /// Whether HTTPRoutes may attach (`allowedRoutes.kinds`).
    takes_routes: bool,
    file: Value,
    problems: Vec<Problem>,
    refs: Vec<Problem>,
}

/// Maps the objects onto gateway files and verdicts; refused objects keep `last`.
pub(crate) fn map(objects: &Objects, context: &Context<'_>, last: &LastAccepted) -> Mapped {
    let mut mapped = Mapped::default();
    // Gateway name → (service, listeners in force)
    let mut in_force: BTreeMap<String, (String, Vec<Value>)> = BTreeMap::new();
    let mut listener_statuses: BTreeMap<String, Vec<(Listener, bool)>> = BTreeMap::new();
    let mut services: BTreeMap<String, String> = BTreeMap::new();
    for (name, gateway) in &objects.gateways {
        if gateway.data["spec"]["gatewayClassName"].as_str() != Some(context.class) {
            continue;
        }
        let service = gateway
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SERVICE_ANNOTATION))
            .cloned()
            .unwrap_or_else(|| name.clone());
        let mut problems = Vec::new();
        if let Some(other) = services.get(&service) {
            problems.push(Problem::new(
                "metadata.name",
                "UnsupportedValue",
                format!("Gateway {other} already configures gateway service {service:?}"),
            ));
        }
        let spec = &gateway.data["spec"];
        problems.extend(unknown_fields(spec, GATEWAY_FIELDS, "spec"));
        let address = address(spec, &mut problems);
        let mut listeners: Vec<Listener> = spec["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, l)| listener(l, i, &address, context.namespace))
            .collect();
        shared_listener_rules(&mut listeners);
        let valid: Vec<Value> = listeners
            .iter()
            .filter(|l| l.problems.is_empty() && l.refs.is_empty())
            .map(|l| l.file.clone())
            .collect();
        if valid.is_empty() && problems.is_empty() {
            problems.push(Problem::new(
                "spec.listeners",
                "ListenersNotValid",
                "no listener is valid",
            ));
        }
        let accepted_listeners = if problems.is_empty() {
            services.insert(service.clone(), name.clone());
            mapped
                .accepted
                .listeners
                .insert(name.clone(), valid.clone());
            Some(valid)
        } else {
            last.listeners.get(name).cloned().inspect(|listeners| {
                services
                    .entry(service.clone())
                    .or_insert_with(|| name.clone());
                mapped
                    .accepted
                    .listeners
                    .insert(name.clone(), listeners.clone());
            })
        };
        let refused = listeners
            .iter()
            .filter(|l| !l.problems.is_empty() || !l.refs.is_empty())
            .count();
        let accepted = if !problems.is_empty() {
            let instead = if accepted_listeners.is_some() {
                "; the last accepted listeners stay in force"
            } else {
                "; the gateway is not configured until the Gateway is valid"
            };
            let reason = problems.first().map_or("Invalid", |p| p.reason);
            Condition::no(
                "Accepted",
                reason,
                format!("{}{instead}", describe(&problems)),
            )
        } else if refused > 0 {
            Condition::yes(
                "Accepted",
                "ListenersNotValid",
                format!("{refused} listener(s) refused: see their conditions"),
            )
        } else {
            Condition::yes("Accepted", "Accepted", "the Gateway is valid")
        };
        let file = format!("{GATEWAYS_DIR}/{service}.yaml");
        if let Some(listeners) = accepted_listeners
            && services.get(&service) == Some(name)
        {
            in_force.insert(name.clone(), (service.clone(), listeners));
        }
        let programmed = if in_force.contains_key(name) {
            Condition::yes(
                "Programmed",
                "Programmed",
                format!("gateway service {service} serves it"),
            )
        } else {
            Condition::no("Programmed", "Invalid", "no listener is in force")
        };
        let statuses = listeners
            .into_iter()
            .map(|l| {
                let ok = problems.is_empty() && l.problems.is_empty() && l.refs.is_empty();
                (l, ok)
            })
            .collect();
        listener_statuses.insert(name.clone(), statuses);
        mapped.gateways.insert(
            name.clone(),
            GatewayVerdict {
                generation: gateway.metadata.generation,
                file,
                accepted,
                programmed,
                listeners: Vec::new(),
            },
        );
    }

    // Routes: oldest first, then by name (the Gateway API's tie-break).
    let mut routes: Vec<(&String, &DynamicObject)> = objects.routes.iter().collect();
    routes.sort_by_key(|(name, route)| {
        (
            route.metadata.creation_timestamp.as_ref().map(|t| t.0),
            (*name).clone(),
        )
    });
    let mut file_routes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut attached: BTreeMap<(String, String), u32> = BTreeMap::new();
    for (name, route) in routes {
        let spec = &route.data["spec"];
        let parents: Vec<(usize, &Value)> = spec["parentRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, p)| names_gateway(p, context.namespace, &mapped.gateways))
            .collect();
        if parents.is_empty() {
            continue;
        }
        let translated = translate_route(spec, context.namespace);
        let mut statuses = Vec::new();
        let gateways: BTreeSet<&str> = parents
            .iter()
            .filter_map(|(_, p)| p["name"].as_str())
            .collect();
        for gateway in gateways {
            let mine: Vec<&(usize, &Value)> = parents
                .iter()
                .filter(|(_, p)| p["name"].as_str() == Some(gateway))
                .collect();
            let key = (name.clone(), gateway.to_owned());
            let Some((service, listeners)) = in_force.get(gateway) else {
                for (_, parent) in mine {
                    statuses.push(ParentStatus {
                        parent_ref: (*parent).clone(),
                        accepted: Condition::no(
                            "Accepted",
                            "Pending",
                            format!("Gateway {gateway} has no listener in force"),
                        ),
                        resolved_refs: resolved(&translated.refs),
                    });
                }
                continue;
            };
            // A refused Gateway serves its last accepted listeners: its routes keep theirs.
            if mapped
                .gateways
                .get(gateway)
                .is_some_and(|g| !g.accepted.status)
            {
                if let Some(entries) = last.routes.get(&key) {
                    attach(gateway, entries, &mut attached, &mut file_routes);
                    mapped.accepted.routes.insert(key.clone(), entries.clone());
                }
                for (_, parent) in mine {
                    statuses.push(ParentStatus {
                        parent_ref: (*parent).clone(),
                        accepted: Condition::no(
                            "Accepted",
                            "Pending",
                            format!(
                                "Gateway {gateway} is refused: its last accepted listeners and \
                                 routes stay in force"
                            ),
                        ),
                        resolved_refs: resolved(&translated.refs),
                    });
                }
                continue;
            }
            let statuses_of = &listener_statuses[gateway];
            let mut problems = translated.problems.clone();
            let mut refs = translated.refs.clone();
            let calls = (context.calls)(service).unwrap_or_default();
            for (field, backend) in &translated.backends {
                if !calls.iter().any(|c| c == backend) {
                    refs.push(Problem::new(
                        field.clone(),
                        "BackendNotFound",
                        format!(
                            "{backend:?} is not a service gateway {service} calls: add it to \
                             the calls of MeshService {service}"
                        ),
                    ));
                }
            }
            // The listeners each parentRef attaches to.
            let mut on: Vec<(String, Vec<String>)> = Vec::new();
            let mut parent_problems: Vec<Option<Problem>> = Vec::new();
            for (j, parent) in &mine {
                let candidates: Vec<&(Listener, bool)> = statuses_of
                    .iter()
                    .filter(|(l, ok)| {
                        *ok && listeners.iter().any(|f| f["name"] == json!(l.name))
                            && parent["sectionName"].as_str().is_none_or(|s| s == l.name)
                            && parent["port"].as_i64().is_none_or(|p| Some(p) == l.port)
                    })
                    .collect();
                if candidates.is_empty() {
                    parent_problems.push(Some(Problem::new(
                        format!("spec.parentRefs[{j}]"),
                        "NoMatchingParent",
                        format!("Gateway {gateway} has no valid listener this parentRef names"),
                    )));
                    continue;
                }
                let allowed: Vec<&&(Listener, bool)> =
                    candidates.iter().filter(|(l, _)| l.takes_routes).collect();
                if allowed.is_empty() {
                    parent_problems.push(Some(Problem::new(
                        format!("spec.parentRefs[{j}]"),
                        "NotAllowedByListeners",
                        "its listeners' allowedRoutes.kinds do not take HTTPRoutes",
                    )));
                    continue;
                }
                let mut matched = false;
                for (l, _) in allowed {
                    if let Some(hosts) = intersect(l.hostname.as_deref(), &translated.hostnames) {
                        matched = true;
                        match on.iter_mut().find(|(_, h)| *h == hosts) {
                            Some((names, _)) if names.split(',').all(|n| n != l.name) => {
                                names.push(',');
                                names.push_str(&l.name);
                            }
                            Some(_) => {}
                            None => on.push((l.name.clone(), hosts)),
                        }
                    }
                }
                parent_problems.push((!matched).then(|| {
                    Problem::new(
                        "spec.hostnames",
                        "NoMatchingListenerHostname",
                        format!("no host name in common with the listeners of Gateway {gateway}"),
                    )
                }));
            }
            // The shared rules, on the route as written.
            if problems.is_empty() && refs.is_empty() && !on.is_empty() {
                let parent_names: Vec<Value> = on
                    .iter()
                    .flat_map(|(names, _)| names.split(','))
                    .map(|n| json!({ "name": n }))
                    .collect();
                let candidate = json!({
                    "listeners": listeners,
                    "routes": [{
                        "name": name,
                        "parentRefs": parent_names,
                        "hostnames": spec["hostnames"].as_array().cloned().unwrap_or_default(),
                        "rules": translated.rules,
                    }],
                });
                problems.extend(shared_route_rules(candidate));
            }
            let ok = problems.is_empty() && refs.is_empty() && !on.is_empty();
            let entries: Option<Vec<Value>> = if ok {
                let several = on.len() > 1;
                Some(
                    on.iter()
                        .map(|(names, hosts)| {
                            let route_name = if several {
                                format!("{name}-{}", names.split(',').next().unwrap_or_default())
                            } else {
                                name.clone()
                            };
                            json!({
                                "name": route_name,
                                "parentRefs": names.split(',').map(|n| json!({ "name": n })).collect::<Vec<_>>(),
                                "hostnames": hosts,
                                "rules": translated.rules,
                            })
                        })
                        .collect(),
                )
            } else {
                last.routes.get(&key).cloned().filter(|entries| {
                    entries.iter().all(|e| {
                        e["parentRefs"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .all(|p| listeners.iter().any(|l| l["name"] == p["name"]))
                    })
                })
            };
            let fallback = !ok && entries.is_some();
            if let Some(entries) = &entries {
                attach(gateway, entries, &mut attached, &mut file_routes);
                mapped.accepted.routes.insert(key, entries.clone());
            }
            let instead = if fallback {
                "; the last accepted version stays in force"
            } else {
                "; the route is not in force"
            };
            for ((_, parent), own) in mine.iter().zip(parent_problems) {
                let accepted = if !problems.is_empty() || !refs.is_empty() {
                    let mut all = problems.clone();
                    all.extend(refs.iter().cloned());
                    let reason = problems.first().map_or("UnsupportedValue", |p| p.reason);
                    Condition::no("Accepted", reason, format!("{}{instead}", describe(&all)))
                } else if let Some(own) = own {
                    Condition::no(
                        "Accepted",
                        own.reason,
                        format!("{}: {}", own.field, own.message),
                    )
                } else {
                    Condition::yes("Accepted", "Accepted", "the route is in force")
                };
                statuses.push(ParentStatus {
                    parent_ref: (*parent).clone(),
                    accepted,
                    resolved_refs: resolved(&refs),
                });
            }
        }
        mapped.routes.insert(
            name.clone(),
            RouteVerdict {
                generation: route.metadata.generation,
                parents: statuses,
            },
        );
    }

    for (gateway, (service, listeners)) in &in_force {
        let routes = file_routes.remove(gateway).unwrap_or_default();
        let file = json!({ "listeners": listeners, "routes": routes });
        // JSON is YAML: the files' parser reads it.
        let text = serde_json::to_vec_pretty(&file).unwrap_or_default();
        mapped
            .files
            .insert(format!("{GATEWAYS_DIR}/{service}.yaml"), text);
    }
    for (gateway, verdict) in &mut mapped.gateways {
        verdict.listeners = listener_statuses
            .remove(gateway)
            .unwrap_or_default()
            .into_iter()
            .map(|(l, ok)| {
                let accepted = match l.problems.first() {
                    None => Condition::yes("Accepted", "Accepted", "the listener is valid"),
                    Some(p) => Condition::no("Accepted", p.reason, describe(&l.problems)),
                };
                let resolved_refs = match l.refs.first() {
                    None => Condition::yes("ResolvedRefs", "ResolvedRefs", "references resolved"),
                    Some(p) => Condition::no("ResolvedRefs", p.reason, describe(&l.refs)),
                };
                ListenerStatus {
                    attached_routes: attached
                        .get(&(gateway.clone(), l.name.clone()))
                        .copied()
                        .unwrap_or(0),
                    name: l.name,
                    accepted,
                    resolved_refs,
                    in_force: ok,
                }
            })
            .collect();
    }
    mapped
}

/// Adds a route's file entries to `gateway`'s file and counts them on each listener they name.
fn attach(
    gateway: &str,
    entries: &[Value],
    attached: &mut BTreeMap<(String, String), u32>,
    file_routes: &mut BTreeMap<String, Vec<Value>>,
) {
    for entry in entries {
        for p in entry["parentRefs"].as_array().into_iter().flatten() {
            if let Some(listener) = p["name"].as_str() {
                *attached
                    .entry((gateway.to_owned(), listener.to_owned()))
                    .or_default() += 1;
            }
        }
    }
    file_routes
        .entry(gateway.to_owned())
        .or_default()
        .extend(entries.iter().cloned());
}

/// `ResolvedRefs` of a route's references.
fn resolved(refs: &[Problem]) -> Condition {
    match refs.first() {
        None => Condition::yes("ResolvedRefs", "ResolvedRefs", "every backendRef resolved"),
        Some(first) => Condition::no("ResolvedRefs", first.reason, describe(refs)),
    }
}

/// Whether a `parentRef` names a Gateway of the mesh (in its namespace, of its class).
fn names_gateway(
    parent: &Value,
    namespace: &str,
    gateways: &BTreeMap<String, GatewayVerdict>,
) -> bool {
    parent["group"].as_str().is_none_or(|g| g == GROUP)
        && parent["kind"].as_str().is_none_or(|k| k == "Gateway")
        && parent["namespace"].as_str().is_none_or(|n| n == namespace)
        && parent["name"]
            .as_str()
            .is_some_and(|n| gateways.contains_key(n))
}

/// The fields of `object` not in `known`, each refused.
fn unknown_fields(object: &Value, known: &[&str], at: &str) -> Vec<Problem> {
    object
        .as_object()
        .into_iter()
        .flat_map(Map::keys)
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| Problem::unsupported(format!("{at}.{k}")))
        .collect()
}

/// The address the listeners bind: `spec.addresses[0]` (an IP address), or every address.
fn address(spec: &Value, problems: &mut Vec<Problem>) -> String {
    let addresses = spec["addresses"].as_array().cloned().unwrap_or_default();
    if addresses.len() > 1 {
        problems.push(Problem::new(
            "spec.addresses",
            "UnsupportedAddress",
            "at most one address: the one the gateway's listeners bind",
        ));
    }
    let Some(first) = addresses.first() else {
        return "0.0.0.0".to_owned();
    };
    if first["type"].as_str().is_some_and(|t| t != "IPAddress") {
        problems.push(Problem::new(
            "spec.addresses[0].type",
            "UnsupportedAddress",
            "only IPAddress: the address the gateway's listeners bind",
        ));
    }
    match first["value"].as_str().map(str::parse::<IpAddr>) {
        Some(Ok(IpAddr::V6(ip))) => format!("[{ip}]"),
        Some(Ok(IpAddr::V4(ip))) => ip.to_string(),
        _ => {
            problems.push(Problem::new(
                "spec.addresses[0].value",
                "UnsupportedAddress",
                format!("{}: not an IP address", first["value"]),
            ));
            "0.0.0.0".to_owned()
        }
    }
}

/// Listener `i` as a file listener bound on `address`.
fn listener(spec: &Value, i: usize, address: &str, namespace: &str) -> Listener {
    let at = format!("spec.listeners[{i}]");
    let name = spec["name"].as_str().unwrap_or_default().to_owned();
    let mut problems = unknown_fields(spec, LISTENER_FIELDS, &at);
    let mut refs = Vec::new();
    let protocol = spec["protocol"].as_str().unwrap_or_default();
    if !matches!(protocol, "HTTP" | "HTTPS") {
        problems.push(Problem::new(
            format!("{at}.protocol"),
            "UnsupportedProtocol",
            format!("{protocol:?}: the mesh's gateways serve HTTP and HTTPS"),
        ));
    }
    let port = spec["port"].as_i64();
    let mut file = json!({
        "name": name,
        "address": format!("{address}:{}", port.unwrap_or_default()),
        "protocol": protocol,
    });
    let tls = &spec["tls"];
    if !tls.is_null() {
        problems.extend(unknown_fields(tls, TLS_FIELDS, &format!("{at}.tls")));
        if tls["mode"].as_str().is_some_and(|m| m != "Terminate") {
            problems.push(Problem::new(
                format!("{at}.tls.mode"),
                "UnsupportedValue",
                "only Terminate: the gateway ends TLS and routes the requests",
            ));
        }
        let mut certificates = Vec::new();
        for (j, cert) in tls["certificateRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{at}.tls.certificateRefs[{j}]");
            if cert["group"].as_str().is_some_and(|g| !g.is_empty())
                || cert["kind"].as_str().is_some_and(|k| k != "Secret")
            {
                refs.push(Problem::new(
                    at.clone(),
                    "InvalidCertificateRef",
                    "only Secrets (group \"\", kind Secret)",
                ));
                continue;
            }
            if cert["namespace"].as_str().is_some_and(|n| n != namespace) {
                refs.push(Problem::new(
                    format!("{at}.namespace"),
                    "RefNotPermitted",
                    "a Secret of another namespace: ReferenceGrants are not supported",
                ));
                continue;
            }
            let secret = cert["name"].as_str().unwrap_or_default();
            let dir = Path::new(CERTIFICATES_DIR).join(secret);
            certificates.push(json!({
                "cert": dir.join("tls.crt"),
                "key": dir.join("tls.key"),
            }));
        }
        file["tls"] = json!({ "certificates": certificates });
    }
    let allowed = &spec["allowedRoutes"];
    if allowed["namespaces"]["from"]
        .as_str()
        .is_some_and(|from| from == "Selector")
    {
        problems.push(Problem::new(
            format!("{at}.allowedRoutes.namespaces.from"),
            "UnsupportedValue",
            "Selector: the mesh takes routes from its own namespace (Same or All)",
        ));
    }
    let kinds = allowed["kinds"].as_array();
    let mut takes_routes = true;
    if let Some(kinds) = kinds.filter(|k| !k.is_empty()) {
        let http_route =
            |k: &Value| k["kind"] == "HTTPRoute" && k["group"].as_str().is_none_or(|g| g == GROUP);
        takes_routes = kinds.iter().any(http_route);
        if let Some(other) = kinds.iter().position(|k| !http_route(k)) {
            refs.push(Problem::new(
                format!("{at}.allowedRoutes.kinds[{other}]"),
                "InvalidRouteKinds",
                "the mesh's gateways take HTTPRoutes only",
            ));
        }
    }
    Listener {
        name,
        hostname: spec["hostname"].as_str().map(str::to_owned),
        port,
        takes_routes,
        file,
        problems,
        refs,
    }
}

/// The shared rules on the listeners without problems so far; each error refuses its
/// listener, until those left are valid together.
fn shared_listener_rules(listeners: &mut [Listener]) {
    for _ in 0..=listeners.len() {
        let checked: Vec<usize> = (0..listeners.len())
            .filter(|&i| listeners[i].problems.is_empty() && listeners[i].refs.is_empty())
            .collect();
        if checked.is_empty() {
            return;
        }
        let file = json!({
            "listeners": checked.iter().map(|&i| listeners[i].file.clone()).collect::<Vec<_>>(),
        });
        let errors = shared_rules(file);
        if errors.is_empty() {
            return;
        }
        for (path, message) in errors {
            let Some((index, rest)) = path
                .strip_prefix("listeners[")
                .and_then(|rest| rest.split_once(']'))
            else {
                continue;
            };
            let Some(&i) = index.parse::<usize>().ok().and_then(|k| checked.get(k)) else {
                continue;
            };
            let field = rest.trim_start_matches('.');
            let (field, reason) = match field.split('.').next().unwrap_or_default() {
                "address" => ("port", "PortUnavailable"),
                "tls" => ("tls.certificateRefs", "UnsupportedValue"),
                "name" => ("name", "UnsupportedValue"),
                _ => ("", "UnsupportedValue"),
            };
            let at = if field.is_empty() {
                format!("spec.listeners[{i}]")
            } else {
                format!("spec.listeners[{i}].{field}")
            };
            let message = message.replace("tls.certificates", "tls.certificateRefs");
            listeners[i]
                .problems
                .push(Problem::new(at, reason, message));
        }
    }
}

/// The shared rules' errors on a candidate gateway file, as (path, message).
fn shared_rules(file: Value) -> Vec<(String, String)> {
    let parsed: GatewayFile = match serde_json::from_value(file) {
        Ok(parsed) => parsed,
        Err(e) => return vec![(String::new(), e.to_string())],
    };
    let mut errors = Errors::default();
    mesh_api::gateway::validate(parsed, "", Path::new(""), &mut errors);
    errors
        .into_vec()
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect()
}

/// The shared rules' errors of the one route of `candidate`, at the HTTPRoute's fields.
fn shared_route_rules(candidate: Value) -> Vec<Problem> {
    shared_rules(candidate)
        .into_iter()
        .map(|(path, message)| {
            let field = match path.strip_prefix("routes[0]") {
                Some(".name") => "metadata.name".to_owned(),
                Some(rest) => format!("spec{rest}"),
                None => path,
            };
            Problem::new(field, "UnsupportedValue", message)
        })
        .collect()
}

/// An HTTPRoute's spec as file rules, with its problems.
struct Translated {
    hostnames: Vec<String>,
    rules: Vec<Value>,
    /// Each backend's service, with its field.
    backends: Vec<(String, String)>,
    problems: Vec<Problem>,
    refs: Vec<Problem>,
}

fn translate_route(spec: &Value, namespace: &str) -> Translated {
    let mut problems = unknown_fields(spec, ROUTE_FIELDS, "spec");
    let mut refs = Vec::new();
    let mut backends = Vec::new();
    let hostnames = spec["hostnames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let mut rules = Vec::new();
    for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        problems.extend(unknown_fields(rule, RULE_FIELDS, &at));
        let mut backend_refs = Vec::new();
        for (k, backend) in rule["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{at}.backendRefs[{k}]");
            problems.extend(unknown_fields(backend, BACKEND_FIELDS, &at));
            if backend["group"].as_str().is_some_and(|g| !g.is_empty())
                || backend["kind"].as_str().is_some_and(|k| k != "Service")
            {
                refs.push(Problem::new(
                    at.clone(),
                    "InvalidKind",
                    "only Services (group \"\", kind Service): the mesh's services",
                ));
                continue;
            }
            if backend["namespace"]
                .as_str()
                .is_some_and(|n| n != namespace)
            {
                refs.push(Problem::new(
                    format!("{at}.namespace"),
                    "RefNotPermitted",
                    "a Service of another namespace: ReferenceGrants are not supported",
                ));
                continue;
            }
            let mut file = Map::new();
            if let Some(name) = backend["name"].as_str() {
                backends.push((format!("{at}.name"), name.to_owned()));
                file.insert("name".to_owned(), json!(name));
            }
            if let Some(weight) = backend.get("weight") {
                file.insert("weight".to_owned(), weight.clone());
            }
            backend_refs.push(Value::Object(file));
        }
        let mut file = json!({ "backendRefs": backend_refs });
        if let Some(matches) = rule.get("matches") {
            file["matches"] = matches.clone();
        }
        rules.push(file);
    }
    Translated {
        hostnames,
        rules,
        backends,
        problems,
        refs,
    }
}

/// The host names a route serves on a listener: the Gateway API's intersection of the
/// listener's `hostname` and the route's `hostnames`; `None` when they share none.
fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(listener) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![listener.to_owned()]);
    }
    let covers = |wildcard: &str, name: &str| {
        wildcard
            .strip_prefix('*')
            .is_some_and(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
    };
    let common: Vec<String> = route
        .iter()
        .filter_map(|name| {
            if name == listener || covers(listener, name) {
                Some(name.clone())
            } else if covers(name, listener) {
                Some(listener.to_owned())
            } else {
                None
            }
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    (!common.is_empty()).then_some(common)
}

impl LastAccepted {
    /// Keeps only what `objects` still has.
    pub(crate) fn retain(&mut self, objects: &Objects) {
        self.listeners
            .retain(|gateway, _| objects.gateways.contains_key(gateway));
        self.routes.retain(|(route, gateway), _| {
            objects.routes.contains_key(route) && objects.gateways.contains_key(gateway)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": format!("{GROUP}/v1"),
            "kind": kind,
            "metadata": { "name": name, "namespace": "default", "generation": 1 },
            "spec": spec,
        }))
        .unwrap()
    }

    fn objects(gateways: &[(&str, Value)], routes: &[(&str, Value)]) -> Objects {
        Objects {
            gateways: gateways
                .iter()
                .map(|(n, s)| ((*n).to_owned(), object("Gateway", n, s.clone())))
                .collect(),
            routes: routes
                .iter()
                .map(|(n, s)| ((*n).to_owned(), object("HTTPRoute", n, s.clone())))
                .collect(),
        }
    }

    fn calls(service: &str) -> Option<Vec<String>> {
        (service == "gateway").then(|| vec!["storefront".to_owned(), "orders".to_owned()])
    }

    fn run(objects: &Objects) -> Mapped {
        let context = Context {
            namespace: "default",
            class: "mesh",
            calls: &calls,
        };
        map(objects, &context, &LastAccepted::default())
    }

    fn file(mapped: &Mapped, service: &str) -> Value {
        serde_json::from_slice(&mapped.files[&format!("gateways/{service}.yaml")]).unwrap()
    }

    fn gateway() -> Value {
        json!({
            "gatewayClassName": "mesh",
            "addresses": [{ "type": "IPAddress", "value": "127.0.0.1" }],
            "listeners": [
                { "name": "web", "port": 8080, "protocol": "HTTP" },
                { "name": "websecure", "port": 8443, "protocol": "HTTPS", "hostname": "*.example.com",
                  "tls": { "certificateRefs": [{ "kind": "Secret", "name": "shop-tls" }] } },
            ],
        })
    }

    #[test]
    fn a_gateway_and_its_route_make_a_gateway_file_valid_under_the_shared_rules() {
        let route = json!({
            "parentRefs": [{ "name": "gateway" }],
            "hostnames": ["shop.example.com"],
            "rules": [{
                "matches": [{ "path": { "type": "PathPrefix", "value": "/orders" }, "method": "GET" }],
                "backendRefs": [{ "name": "orders", "port": 80, "weight": 3 }],
            }, {
                "backendRefs": [{ "name": "storefront", "port": 80 }],
            }],
        });
        let mapped = run(&objects(&[("gateway", gateway())], &[("shop", route)]));
        let file = file(&mapped, "gateway");
        assert_eq!(file["listeners"][0]["address"], "127.0.0.1:8080");
        assert_eq!(
            file["listeners"][1]["tls"]["certificates"][0],
            json!({
                "cert": "/etc/mesh/gateway-certs/shop-tls/tls.crt",
                "key": "/etc/mesh/gateway-certs/shop-tls/tls.key",
            })
        );
        assert_eq!(
            file["routes"][0]["parentRefs"],
            json!([{ "name": "web" }, { "name": "websecure" }])
        );
        assert_eq!(file["routes"][0]["hostnames"], json!(["shop.example.com"]));
        assert_eq!(
            file["routes"][0]["rules"][0]["backendRefs"],
            json!([{ "name": "orders", "weight": 3 }])
        );
        assert!(shared_rules(file).is_empty());
        let verdict = &mapped.gateways["gateway"];
        assert!(verdict.accepted.status, "{verdict:?}");
        assert_eq!(verdict.listeners[0].attached_routes, 1);
        let parents = &mapped.routes["shop"].parents;
        assert_eq!(parents.len(), 1);
        assert!(parents[0].accepted.status && parents[0].resolved_refs.status);
    }

    #[test]
    fn listener_hostnames_split_a_route_by_the_names_it_serves_there() {
        let route = json!({
            "parentRefs": [{ "name": "gateway" }],
            "rules": [{ "backendRefs": [{ "name": "storefront", "port": 80 }] }],
        });
        let mapped = run(&objects(&[("gateway", gateway())], &[("shop", route)]));
        let routes = file(&mapped, "gateway")["routes"].clone();
        assert_eq!(routes[0]["name"], "shop-web");
        assert_eq!(routes[0]["hostnames"], json!([]));
        assert_eq!(routes[1]["name"], "shop-websecure");
        assert_eq!(routes[1]["hostnames"], json!(["*.example.com"]));
    }

    #[test]
    fn unsupported_fields_and_refs_refuse_the_route_naming_them() {
        let route = json!({
            "parentRefs": [{ "name": "gateway", "sectionName": "web" }],
            "rules": [{
                "filters": [{ "type": "RequestHeaderModifier" }],
                "backendRefs": [{ "name": "payments", "port": 80 }, { "name": "orders", "namespace": "other" }],
            }],
        });
        let mapped = run(&objects(&[("gateway", gateway())], &[("bad", route)]));
        assert_eq!(file(&mapped, "gateway")["routes"], json!([]));
        let parent = &mapped.routes["bad"].parents[0];
        assert_eq!(parent.parent_ref["sectionName"], "web");
        assert!(!parent.accepted.status);
        assert_eq!(parent.accepted.reason, "UnsupportedValue");
        assert!(
            parent
                .accepted
                .message
                .starts_with("spec.rules[0].filters: not supported by the mesh's gateways"),
            "{}",
            parent.accepted.message
        );
        assert!(!parent.resolved_refs.status);
        assert_eq!(parent.resolved_refs.reason, "RefNotPermitted");
        assert!(
            parent.resolved_refs.message.contains(
                "spec.rules[0].backendRefs[0].name: \"payments\" is not a service gateway gateway calls"
            ),
            "{}",
            parent.resolved_refs.message
        );
    }

    #[test]
    fn shared_rule_errors_name_the_route_field_and_the_last_accepted_version_stays() {
        let good = json!({
            "parentRefs": [{ "name": "gateway", "sectionName": "web" }],
            "rules": [{ "backendRefs": [{ "name": "storefront" }] }],
        });
        let objects_now = objects(&[("gateway", gateway())], &[("shop", good)]);
        let context = Context {
            namespace: "default",
            class: "mesh",
            calls: &calls,
        };
        let first = map(&objects_now, &context, &LastAccepted::default());
        let bad = json!({
            "parentRefs": [{ "name": "gateway", "sectionName": "web" }],
            "rules": [{
                "matches": [{ "path": { "type": "RegularExpression", "value": "(" } }],
                "backendRefs": [{ "name": "storefront" }],
            }],
        });
        let mapped = map(
            &objects(&[("gateway", gateway())], &[("shop", bad)]),
            &context,
            &first.accepted,
        );
        let parent = &mapped.routes["shop"].parents[0];
        assert!(
            parent
                .accepted
                .message
                .starts_with("spec.rules[0].matches[0].path"),
            "{}",
            parent.accepted.message
        );
        assert!(
            parent
                .accepted
                .message
                .ends_with("the last accepted version stays in force")
        );
        assert_eq!(
            file(&mapped, "gateway")["routes"],
            file(&first, "gateway")["routes"]
        );
    }

    #[test]
    fn a_listener_the_gateway_cannot_serve_is_refused_alone() {
        let mut spec = gateway();
        spec["listeners"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "tcp", "port": 9000, "protocol": "TCP" }));
        spec["listeners"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "again", "port": 8080, "protocol": "HTTP" }));
        let mapped = run(&objects(&[("gateway", spec)], &[]));
        let verdict = &mapped.gateways["gateway"];
        assert!(verdict.accepted.status);
        assert_eq!(verdict.accepted.reason, "ListenersNotValid");
        let tcp = &verdict.listeners[2];
        assert_eq!(tcp.accepted.reason, "UnsupportedProtocol");
        let again = &verdict.listeners[3];
        assert_eq!(again.accepted.reason, "PortUnavailable");
        assert!(
            again
                .accepted
                .message
                .starts_with("spec.listeners[3].port: 127.0.0.1:8080: another listener"),
            "{}",
            again.accepted.message
        );
        assert_eq!(
            file(&mapped, "gateway")["listeners"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_refused_gateway_keeps_its_last_accepted_listeners_and_routes() {
        let route = json!({
            "parentRefs": [{ "name": "gateway" }],
            "hostnames": ["shop.example.com"],
            "rules": [{ "backendRefs": [{ "name": "storefront" }] }],
        });
        let context = Context {
            namespace: "default",
            class: "mesh",
            calls: &calls,
        };
        let first = map(
            &objects(&[("gateway", gateway())], &[("shop", route.clone())]),
            &context,
            &LastAccepted::default(),
        );
        let mut refused = gateway();
        refused["tls"] = json!({});
        let mapped = map(
            &objects(&[("gateway", refused)], &[("shop", route)]),
            &context,
            &first.accepted,
        );
        assert_eq!(file(&mapped, "gateway"), file(&first, "gateway"));
        let verdict = &mapped.gateways["gateway"];
        assert_eq!(
            verdict.accepted.message,
            "spec.tls: not supported by the mesh's gateways; the last accepted listeners stay \
             in force"
        );
        assert!(verdict.programmed.status);
        assert_eq!(mapped.routes["shop"].parents[0].accepted.reason, "Pending");
        assert_eq!(mapped.accepted, first.accepted);
    }

    #[test]
    fn other_classes_are_not_the_mesh_s() {
        let mut spec = gateway();
        spec["gatewayClassName"] = json!("other");
        let mapped = run(&objects(&[("gateway", spec)], &[]));
        assert!(mapped.files.is_empty() && mapped.gateways.is_empty());
    }

    #[test]
    fn host_names_intersect_as_the_gateway_api_says() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            intersect(
                Some("*.example.com"),
                &names(&["a.example.com", "b.other.org"])
            ),
            Some(names(&["a.example.com"]))
        );
        assert_eq!(
            intersect(Some("a.example.com"), &names(&["*.example.com"])),
            Some(names(&["a.example.com"]))
        );
        assert_eq!(
            intersect(Some("a.example.com"), &names(&["b.example.com"])),
            None
        );
        assert_eq!(intersect(None, &names(&["x.org"])), Some(names(&["x.org"])));
    }
}
