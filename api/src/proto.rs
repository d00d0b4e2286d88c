//! The gRPC API (`proto/mesh/v1/mesh.proto`) and conversions between its messages and the
//! policy types, so both ends agree on one mapping.

use std::time::Duration;

use crate::authorization::{AuthorizationPolicy, AuthorizationRule, Decision, Principal};
use crate::backend_ref::MAX_WEIGHT;
use crate::fault::{Abort, AbortStatus, Delay, FaultPolicy};
use crate::policy::{BreakerPolicy, DestinationPolicy, LoadBalancer};
use crate::rate_limit::{Rate, RateLimitPolicy};
use crate::retry::{
    Backoff, Budget, MAX_BUDGET_MIN_PER_SECOND, MAX_BUDGET_RATIO, RetryOn, RetryPolicy,
};
use crate::route::{BackendRef, MAX_BACKENDS, MAX_ROUTES, PathMatch, RouteMatch, RoutePolicy};
use crate::route_filter::{
    Filter, Header, HeaderModifier, Mirror, PathModifier, Redirect, UrlRewrite,
};
use crate::route_match::{Pattern, Value, ValueMatch};
use crate::tcp::TcpDestination;

/// Generated messages, clients and servers of `mesh.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v1 {
    tonic::include_proto!("mesh.v1");
}

/// The control plane's identity, kept with the SPIFFE code and named here too.
pub use crate::spiffe::{CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE};

/// A message from the other end that this end cannot apply.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidMessage {
    /// The field, as a path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidMessage {
    InvalidMessage {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn optional_ms(d: Option<Duration>) -> u64 {
    d.map_or(0, ms)
}

fn from_optional_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

// === tcp ===

impl From<&TcpDestination> for v1::TcpDestination {
    fn from(t: &TcpDestination) -> Self {
        Self {
            listen: t.listen.to_string(),
            port: t.port.map_or(0, u32::from),
            detect: t.detect,
        }
    }
}

impl TryFrom<&v1::TcpDestination> for TcpDestination {
    type Error = InvalidMessage;

    fn try_from(t: &v1::TcpDestination) -> Result<Self, InvalidMessage> {
        let listen = t
            .listen
            .parse()
            .map_err(|_| invalid("tcp.listen", format!("invalid address {:?}", t.listen)))?;
        // 0 is "unset": the peer's app port, which only a detecting listener may leave open.
        let port = match u16::try_from(t.port) {
            Ok(0) if t.detect => None,
            Ok(port) if port > 0 => Some(port),
            _ => return Err(invalid("tcp.port", format!("{} is not a port", t.port))),
        };
        Ok(Self {
            listen,
            port,
            detect: t.detect,
        })
    }
}

// === policy ===

impl From<&DestinationPolicy> for v1::Policy {
    fn from(p: &DestinationPolicy) -> Self {
        let b = &p.circuit_breaker;
        Self {
            timeout_ms: optional_ms(p.timeout),
            retries: Some(retries_to_wire(&p.retries)),
            circuit_breaker: Some(v1::CircuitBreaker {
                consecutive_failures: b.consecutive_failures,
                base_ejection_time_ms: ms(b.base_ejection_time),
                max_ejection_time_ms: ms(b.max_ejection_time),
                max_ejection_percent: b.max_ejection_percent.into(),
                max_requests: b.max_requests,
                max_pending: b.max_pending,
            }),
            load_balancer: match p.load_balancer {
                LoadBalancer::P2cEwma => v1::LoadBalancer::P2cEwma,
                LoadBalancer::RoundRobin => v1::LoadBalancer::RoundRobin,
            } as i32,
            routes: p.routes.iter().map(route_to_wire).collect(),
            fault: fault_to_wire(&p.fault),
        }
    }
}

fn fault_to_wire(f: &FaultPolicy) -> Option<v1::Fault> {
    use v1::fault_abort::Status;
    (!f.is_empty()).then(|| v1::Fault {
        delay: f.delay.as_ref().map(|d| v1::FaultDelay {
            fixed_delay_ms: ms(d.fixed_delay),
            percentage: d.percentage,
        }),
        abort: f.abort.as_ref().map(|a| v1::FaultAbort {
            status: Some(match a.status {
                AbortStatus::Http(code) => Status::HttpStatus(code.into()),
                AbortStatus::Grpc(code) => Status::GrpcStatus(code.into()),
            }),
            percentage: a.percentage,
        }),
    })
}

fn fault_from_wire(f: Option<&v1::Fault>, at: &str) -> Result<FaultPolicy, InvalidMessage> {
    use v1::fault_abort::Status;
    let Some(f) = f else {
        return Ok(FaultPolicy::default());
    };
    let percentage = |p: f64, field: &str| {
        if (0.0..=100.0).contains(&p) {
            Ok(p)
        } else {
            Err(invalid(
                &format!("{at}.{field}"),
                format!("{p} is not a percentage"),
            ))
        }
    };
    let delay = f
        .delay
        .as_ref()
        .map(|d| {
            Ok::<_, InvalidMessage>(Delay {
                fixed_delay: Duration::from_millis(d.fixed_delay_ms),
                percentage: percentage(d.percentage, "delay.percentage")?,
            })
        })
        .transpose()?;
    let abort = f
        .abort
        .as_ref()
        .map(|a| {
            let status = match a.status {
                Some(Status::HttpStatus(code)) => u16::try_from(code)
                    .ok()
                    .filter(|c| (200..=599).contains(c))
                    .map(AbortStatus::Http),
                Some(Status::GrpcStatus(code)) => u8::try_from(code)
                    .ok()
                    .filter(|c| (1..=16).contains(c))
                    .map(AbortStatus::Grpc),
                None => None,
            }
            .ok_or_else(|| invalid(&format!("{at}.abort.status"), "missing or out of range"))?;
            Ok::<_, InvalidMessage>(Abort {
                status,
                percentage: percentage(a.percentage, "abort.percentage")?,
            })
        })
        .transpose()?;
    Ok(FaultPolicy { delay, abort })
}

fn retries_to_wire(r: &RetryPolicy) -> v1::Retries {
    v1::Retries {
        attempts: r.attempts,
        per_try_timeout_ms: optional_ms(r.per_try_timeout),
        retry_on: r
            .retry_on
            .iter()
            .map(|on| match on {
                RetryOn::ConnectFailure => v1::RetryOn::ConnectFailure,
                RetryOn::RefusedStream => v1::RetryOn::RefusedStream,
                RetryOn::Reset => v1::RetryOn::Reset,
                RetryOn::GatewayError => v1::RetryOn::GatewayError,
                RetryOn::ServerError => v1::RetryOn::ServerError,
            } as i32)
            .collect(),
        retriable_status_codes: r.retriable_status_codes.iter().map(|&c| c.into()).collect(),
        backoff_base_ms: ms(r.backoff.base),
        backoff_max_ms: ms(r.backoff.max),
        budget_ratio: r.budget.ratio,
        budget_min_per_second: r.budget.min_per_second,
        budget_window_ms: ms(r.budget.window),
        non_idempotent: r.non_idempotent,
        max_buffered_body: r.max_buffered_body,
    }
}

fn route_to_wire(r: &RoutePolicy) -> v1::Route {
    v1::Route {
        name: r.name.clone(),
        timeout_ms: optional_ms(r.timeout),
        retries: Some(retries_to_wire(&r.retries)),
        fault: fault_to_wire(&r.fault),
        matches: r.matches.iter().map(match_to_wire).collect(),
        filters: r.filters.iter().map(filter_to_wire).collect(),
        backend_refs: r.backend_refs.iter().map(backend_ref_to_wire).collect(),
        ..v1::Route::default()
    }
}

fn backend_ref_to_wire(b: &BackendRef) -> v1::BackendRef {
    v1::BackendRef {
        service: b.service.clone(),
        version: b.version.clone().unwrap_or_default(),
        weight: b.weight,
    }
}

/// A backendRef as the YAML path allows it: a weight of at most [`MAX_WEIGHT`], so the sums a
/// sidecar makes of them stay meaningful.
fn backend_ref_from_wire(b: &v1::BackendRef, at: &str) -> Result<BackendRef, InvalidMessage> {
    if b.weight > MAX_WEIGHT {
        return Err(invalid(
            &format!("{at}.weight"),
            format!("{}, more than {MAX_WEIGHT}", b.weight),
        ));
    }
    Ok(BackendRef {
        service: b.service.clone(),
        version: Some(b.version.clone()).filter(|v| !v.is_empty()),
        weight: b.weight,
    })
}

fn match_to_wire(m: &RouteMatch) -> v1::RouteMatch {
    let (path_type, path) = match &m.path {
        PathMatch::Exact(p) => (v1::PathMatchType::Exact, p.clone()),
        PathMatch::PathPrefix(p) => (v1::PathMatchType::Prefix, p.clone()),
        PathMatch::RegularExpression(p) => {
            (v1::PathMatchType::RegularExpression, p.as_str().to_owned())
        }
    };
    let values = |list: &[ValueMatch]| {
        list.iter()
            .map(|v| {
                let (regular_expression, value) = match &v.value {
                    Value::Exact(value) => (false, value.clone()),
                    Value::RegularExpression(p) => (true, p.as_str().to_owned()),
                };
                v1::ValueMatch {
                    name: v.name.clone(),
                    regular_expression,
                    value,
                }
            })
            .collect()
    };
    v1::RouteMatch {
        path_type: path_type as i32,
        path,
        method: m.method.clone().unwrap_or_default(),
        headers: values(&m.headers),
        query_params: values(&m.query_params),
    }
}

fn filter_to_wire(f: &Filter) -> v1::RouteFilter {
    use v1::route_filter::Filter as F;
    let headers = |m: &HeaderModifier| {
        let list = |l: &[Header]| {
            l.iter()
                .map(|h| v1::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        };
        v1::HeaderModifier {
            set: list(&m.set),
            add: list(&m.add),
            remove: m.remove.clone(),
        }
    };
    let path = |p: &PathModifier| match p {
        PathModifier::ReplaceFullPath { path } => v1::PathModifier {
            replace_prefix: false,
            value: path.clone(),
        },
        PathModifier::ReplacePrefixMatch { prefix } => v1::PathModifier {
            replace_prefix: true,
            value: prefix.clone(),
        },
    };
    let filter = match f {
        Filter::RequestHeaderModifier { modifier } => F::RequestHeaderModifier(headers(modifier)),
        Filter::ResponseHeaderModifier { modifier } => F::ResponseHeaderModifier(headers(modifier)),
        Filter::UrlRewrite { rewrite } => F::UrlRewrite(v1::UrlRewrite {
            hostname: rewrite.hostname.clone().unwrap_or_default(),
            path: rewrite.path.as_ref().map(path),
        }),
        Filter::RequestRedirect { redirect } => F::RequestRedirect(v1::RequestRedirect {
            scheme: redirect.scheme.clone().unwrap_or_default(),
            hostname: redirect.hostname.clone().unwrap_or_default(),
            path: redirect.path.as_ref().map(path),
            port: redirect.port.map_or(0, u32::from),
            status_code: redirect.status_code.into(),
        }),
        Filter::RequestMirror { mirror } => F::RequestMirror(v1::RequestMirror {
            backend_ref: Some(backend_ref_to_wire(&mirror.backend_ref)),
            percent: mirror.percent,
        }),
    };
    v1::RouteFilter {
        filter: Some(filter),
    }
}

impl TryFrom<&v1::Policy> for DestinationPolicy {
    type Error = InvalidMessage;

    /// Checks what the sidecar relies on; the control plane validated the rest.
    fn try_from(p: &v1::Policy) -> Result<Self, InvalidMessage> {
        let r = p
            .retries
            .as_ref()
            .ok_or_else(|| invalid("policy.retries", "missing"))?;
        let b = p
            .circuit_breaker
            .as_ref()
            .ok_or_else(|| invalid("policy.circuit_breaker", "missing"))?;
        if b.consecutive_failures == 0 || b.max_requests == 0 {
            return Err(invalid(
                "policy.circuit_breaker",
                "consecutive_failures and max_requests must be at least 1",
            ));
        }
        if p.routes.len() > MAX_ROUTES {
            return Err(invalid(
                "policy.routes",
                format!("{} routes, more than {MAX_ROUTES}", p.routes.len()),
            ));
        }
        let routes = p
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| route_from_wire(route, &format!("policy.routes[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            timeout: from_optional_ms(p.timeout_ms),
            retries: retries_from_wire(r, "policy.retries")?,
            circuit_breaker: BreakerPolicy {
                consecutive_failures: b.consecutive_failures,
                base_ejection_time: Duration::from_millis(b.base_ejection_time_ms),
                max_ejection_time: Duration::from_millis(
                    b.max_ejection_time_ms.max(b.base_ejection_time_ms),
                ),
                max_ejection_percent: u8::try_from(b.max_ejection_percent.min(100)).unwrap_or(100),
                max_requests: b.max_requests,
                max_pending: b.max_pending,
            },
            load_balancer: match v1::LoadBalancer::try_from(p.load_balancer) {
                Ok(v1::LoadBalancer::RoundRobin) => LoadBalancer::RoundRobin,
                Ok(v1::LoadBalancer::P2cEwma) => LoadBalancer::P2cEwma,
                Err(_) => {
                    return Err(invalid(
                        "policy.load_balancer",
                        format!("unknown value {}", p.load_balancer),
                    ));
                }
            },
            routes,
            fault: fault_from_wire(p.fault.as_ref(), "policy.fault")?,
        })
    }
}

fn route_from_wire(r: &v1::Route, at: &str) -> Result<RoutePolicy, InvalidMessage> {
    let field = |name: &str| format!("{at}.{name}");
    if r.name.is_empty() {
        return Err(invalid(&field("name"), "missing"));
    }
    let matches = if r.matches.is_empty() {
        legacy_match_from_wire(r, at)?
    } else {
        r.matches
            .iter()
            .enumerate()
            .map(|(i, m)| match_from_wire(m, &format!("{at}.matches[{i}]")))
            .collect::<Result<_, _>>()?
    };
    let filters = r
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| filter_from_wire(f, &format!("{at}.filters[{i}]")))
        .collect::<Result<_, _>>()?;
    if r.backend_refs.len() > MAX_BACKENDS {
        return Err(invalid(
            &field("backend_refs"),
            format!(
                "{} backends, more than {MAX_BACKENDS}",
                r.backend_refs.len()
            ),
        ));
    }
    let backend_refs = r
        .backend_refs
        .iter()
        .enumerate()
        .map(|(i, b)| backend_ref_from_wire(b, &format!("{at}.backend_refs[{i}]")))
        .collect::<Result<_, _>>()?;
    let retries = r
        .retries
        .as_ref()
        .ok_or_else(|| invalid(&field("retries"), "missing"))?;
    Ok(RoutePolicy {
        name: r.name.clone(),
        matches,
        filters,
        backend_refs,
        timeout: from_optional_ms(r.timeout_ms),
        retries: retries_from_wire(retries, &field("retries"))?,
        fault: fault_from_wire(r.fault.as_ref(), &field("fault"))?,
    })
}

fn legacy_match_from_wire(r: &v1::Route, at: &str) -> Result<Vec<RouteMatch>, InvalidMessage> {
    let path = match (r.path_exact.is_empty(), r.path_prefix.is_empty()) {
        (false, true) => PathMatch::Exact(r.path_exact.clone()),
        (true, false) => PathMatch::PathPrefix(r.path_prefix.clone()),
        _ => {
            return Err(invalid(
                &format!("{at}.matches"),
                "no matches, and not exactly one of path_exact and path_prefix",
            ));
        }
    };
    let one = |method: Option<String>| RouteMatch {
        path: path.clone(),
        method,
        ..RouteMatch::any()
    };
    Ok(if r.methods.is_empty() {
        vec![one(None)]
    } else {
        r.methods.iter().map(|m| one(Some(m.clone()))).collect()
    })
}

fn pattern(source: &str, at: &str) -> Result<Pattern, InvalidMessage> {
    Pattern::new(source).map_err(|e| invalid(at, e))
}

fn match_from_wire(m: &v1::RouteMatch, at: &str) -> Result<RouteMatch, InvalidMessage> {
    let path = match v1::PathMatchType::try_from(m.path_type) {
        Ok(v1::PathMatchType::Exact) => PathMatch::Exact(m.path.clone()),
        Ok(v1::PathMatchType::Prefix) => PathMatch::PathPrefix(m.path.clone()),
        Ok(v1::PathMatchType::RegularExpression) => {
            PathMatch::RegularExpression(pattern(&m.path, &format!("{at}.path"))?)
        }
        Err(_) => {
            return Err(invalid(
                &format!("{at}.path_type"),
                format!("unknown value {}", m.path_type),
            ));
        }
    };
    let values = |list: &[v1::ValueMatch], field: &str| {
        list.iter()
            .map(|v| {
                let value = if v.regular_expression {
                    Value::RegularExpression(pattern(&v.value, &format!("{at}.{field}"))?)
                } else {
                    Value::Exact(v.value.clone())
                };
                Ok(ValueMatch {
                    name: v.name.clone(),
                    value,
                })
            })
            .collect::<Result<Vec<_>, InvalidMessage>>()
    };
    Ok(RouteMatch {
        path,
        method: Some(m.method.clone()).filter(|m| !m.is_empty()),
        headers: values(&m.headers, "headers")?,
        query_params: values(&m.query_params, "query_params")?,
    })
}

fn filter_from_wire(f: &v1::RouteFilter, at: &str) -> Result<Filter, InvalidMessage> {
    use v1::route_filter::Filter as F;
    let headers = |m: &v1::HeaderModifier| {
        let list = |l: &[v1::Header]| {
            l.iter()
                .map(|h| Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        };
        HeaderModifier {
            set: list(&m.set),
            add: list(&m.add),
            remove: m.remove.clone(),
        }
    };
    let path = |p: &v1::PathModifier| {
        if p.replace_prefix {
            PathModifier::ReplacePrefixMatch {
                prefix: p.value.clone(),
            }
        } else {
            PathModifier::ReplaceFullPath {
                path: p.value.clone(),
            }
        }
    };
    let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    Ok(match &f.filter {
        Some(F::RequestHeaderModifier(m)) => Filter::RequestHeaderModifier {
            modifier: headers(m),
        },
        Some(F::ResponseHeaderModifier(m)) => Filter::ResponseHeaderModifier {
            modifier: headers(m),
        },
        Some(F::UrlRewrite(u)) => Filter::UrlRewrite {
            rewrite: UrlRewrite {
                hostname: text(&u.hostname),
                path: u.path.as_ref().map(path),
            },
        },
        Some(F::RequestRedirect(r)) => Filter::RequestRedirect {
            redirect: Redirect {
                scheme: text(&r.scheme),
                hostname: text(&r.hostname),
                path: r.path.as_ref().map(path),
                port: u16::try_from(r.port).ok().filter(|p| *p > 0),
                status_code: u16::try_from(r.status_code)
                    .ok()
                    .filter(|c| (300..=399).contains(c))
                    .ok_or_else(|| {
                        invalid(
                            &format!("{at}.status_code"),
                            format!("{} is not a redirect", r.status_code),
                        )
                    })?,
            },
        },
        Some(F::RequestMirror(m)) => Filter::RequestMirror {
            mirror: Mirror {
                backend_ref: backend_ref_from_wire(
                    m.backend_ref
                        .as_ref()
                        .ok_or_else(|| invalid(&format!("{at}.backend_ref"), "missing"))?,
                    &format!("{at}.backend_ref"),
                )?,
                percent: if (0.0..=100.0).contains(&m.percent) {
                    m.percent
                } else {
                    return Err(invalid(
                        &format!("{at}.percent"),
                        format!("{} is not a percentage", m.percent),
                    ));
                },
            },
        },
        None => return Err(invalid(at, "no filter set")),
    })
}

fn retries_from_wire(r: &v1::Retries, at: &str) -> Result<RetryPolicy, InvalidMessage> {
    let field = |name: &str| format!("{at}.{name}");
    if !(1..=10).contains(&r.attempts) {
        return Err(invalid(&field("attempts"), "must be between 1 and 10"));
    }
    if r.backoff_base_ms > r.backoff_max_ms {
        return Err(invalid(&field("backoff"), "base exceeds max"));
    }
    if !(1_000..=60_000).contains(&r.budget_window_ms) {
        return Err(invalid(
            &field("budget_window_ms"),
            "must be between 1s and 60s",
        ));
    }
    // The bounds the YAML is held to: the retry budget cannot be built outside them.
    if !(0.0..=MAX_BUDGET_RATIO).contains(&r.budget_ratio) {
        return Err(invalid(
            &field("budget_ratio"),
            format!("must be between 0 and {MAX_BUDGET_RATIO}"),
        ));
    }
    if r.budget_min_per_second > MAX_BUDGET_MIN_PER_SECOND {
        return Err(invalid(
            &field("budget_min_per_second"),
            format!("must be at most {MAX_BUDGET_MIN_PER_SECOND}"),
        ));
    }
    let retry_on = r
        .retry_on
        .iter()
        .map(|&on| match v1::RetryOn::try_from(on) {
            Ok(v1::RetryOn::ConnectFailure) => Ok(RetryOn::ConnectFailure),
            Ok(v1::RetryOn::RefusedStream) => Ok(RetryOn::RefusedStream),
            Ok(v1::RetryOn::Reset) => Ok(RetryOn::Reset),
            Ok(v1::RetryOn::GatewayError) => Ok(RetryOn::GatewayError),
            Ok(v1::RetryOn::ServerError) => Ok(RetryOn::ServerError),
            _ => Err(invalid(&field("retry_on"), format!("unknown value {on}"))),
        })
        .collect::<Result<_, _>>()?;
    let retriable_status_codes = r
        .retriable_status_codes
        .iter()
        .map(|&c| {
            u16::try_from(c)
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    invalid(
                        &field("retriable_status_codes"),
                        format!("{c} is not a status code"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(RetryPolicy {
        attempts: r.attempts,
        per_try_timeout: from_optional_ms(r.per_try_timeout_ms),
        retry_on,
        retriable_status_codes,
        backoff: Backoff {
            base: Duration::from_millis(r.backoff_base_ms),
            max: Duration::from_millis(r.backoff_max_ms),
        },
        budget: Budget {
            ratio: r.budget_ratio,
            min_per_second: r.budget_min_per_second,
            window: Duration::from_millis(r.budget_window_ms),
        },
        non_idempotent: r.non_idempotent,
        max_buffered_body: r.max_buffered_body.min(16 << 20),
    })
}

// === authorization ===

fn principal_text(p: &Principal) -> String {
    match p {
        Principal::Service(name) => name.clone(),
        Principal::Id(id) => id.to_string(),
    }
}

fn decision_to_wire(d: Decision) -> i32 {
    let wire = match d {
        Decision::Allow => v1::Decision::Allow,
        Decision::Deny => v1::Decision::Deny,
    };
    wire as i32
}

fn decision_from_wire(d: i32, at: &str) -> Result<Decision, InvalidMessage> {
    match v1::Decision::try_from(d) {
        Ok(v1::Decision::Allow) => Ok(Decision::Allow),
        Ok(v1::Decision::Deny) => Ok(Decision::Deny),
        Err(_) => Err(invalid(at, format!("unknown value {d}"))),
    }
}

impl From<&AuthorizationPolicy> for v1::Authorization {
    fn from(a: &AuthorizationPolicy) -> Self {
        Self {
            default: decision_to_wire(a.default),
            allow: a.allow.iter().map(principal_text).collect(),
            deny: a.deny.iter().map(principal_text).collect(),
            rules: a
                .rules
                .iter()
                .map(|r| v1::AuthorizationRule {
                    name: r.name.clone(),
                    matches: r.matches.iter().map(match_to_wire).collect(),
                    default: decision_to_wire(r.default),
                    allow: r.allow.iter().map(principal_text).collect(),
                    deny: r.deny.iter().map(principal_text).collect(),
                })
                .collect(),
            allow_unauthenticated: a.unauthenticated == Decision::Allow,
        }
    }
}

impl TryFrom<&v1::Authorization> for AuthorizationPolicy {
    type Error = InvalidMessage;

    fn try_from(a: &v1::Authorization) -> Result<Self, InvalidMessage> {
        let mut errors = crate::validate::Errors::default();
        let mut principals = |list: &[String], field: &str| -> Vec<Principal> {
            list.iter()
                .enumerate()
                .filter_map(|(i, entry)| {
                    crate::authorization::principal(
                        &mut errors,
                        &format!("authorization.{field}[{i}]"),
                        entry,
                    )
                })
                .collect()
        };
        let allow = principals(&a.allow, "allow");
        let deny = principals(&a.deny, "deny");
        let rule_principals: Vec<(Vec<Principal>, Vec<Principal>)> = a
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    principals(&r.allow, &format!("rules[{i}].allow")),
                    principals(&r.deny, &format!("rules[{i}].deny")),
                )
            })
            .collect();
        if let Some(e) = errors.into_vec().into_iter().next() {
            return Err(invalid(&e.path, e.message));
        }
        let default = decision_from_wire(a.default, "authorization.default")?;
        let rules = a
            .rules
            .iter()
            .zip(rule_principals)
            .enumerate()
            .map(|(i, (r, (allow, deny)))| {
                let at = format!("authorization.rules[{i}]");
                if r.name.is_empty() {
                    return Err(invalid(&format!("{at}.name"), "missing"));
                }
                Ok(AuthorizationRule {
                    name: r.name.clone(),
                    matches: r
                        .matches
                        .iter()
                        .enumerate()
                        .map(|(j, m)| match_from_wire(m, &format!("{at}.matches[{j}]")))
                        .collect::<Result<_, _>>()?,
                    default: decision_from_wire(r.default, &format!("{at}.default"))?,
                    allow,
                    deny,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            default,
            allow,
            deny,
            rules,
            unauthenticated: if a.allow_unauthenticated {
                Decision::Allow
            } else {
                Decision::Deny
            },
        })
    }
}

// === rate limit ===

fn rate_to_wire(r: &Rate) -> v1::Rate {
    v1::Rate {
        requests_per_second: r.requests_per_second,
        burst: r.burst,
    }
}

fn rate_from_wire(r: Option<&v1::Rate>, at: &str) -> Result<Rate, InvalidMessage> {
    let r = r.ok_or_else(|| invalid(at, "missing"))?;
    if !(r.requests_per_second.is_finite() && r.requests_per_second > 0.0) || r.burst == 0 {
        return Err(invalid(
            at,
            "requests_per_second must be positive and burst at least 1",
        ));
    }
    Ok(Rate {
        requests_per_second: r.requests_per_second,
        burst: r.burst,
    })
}

impl From<&RateLimitPolicy> for v1::RateLimit {
    fn from(p: &RateLimitPolicy) -> Self {
        Self {
            total: p.total.as_ref().map(rate_to_wire),
            callers: p
                .callers
                .iter()
                .map(|(who, rate)| v1::CallerRate {
                    caller: principal_text(who),
                    rate: Some(rate_to_wire(rate)),
                })
                .collect(),
        }
    }
}

impl TryFrom<&v1::RateLimit> for RateLimitPolicy {
    type Error = InvalidMessage;

    fn try_from(p: &v1::RateLimit) -> Result<Self, InvalidMessage> {
        let total = p
            .total
            .as_ref()
            .map(|r| rate_from_wire(Some(r), "rate_limit.total"))
            .transpose()?;
        let callers = p
            .callers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("rate_limit.callers[{i}]");
                let mut errors = crate::validate::Errors::default();
                let who = crate::authorization::principal(&mut errors, &at, &c.caller);
                match (who, errors.into_vec().into_iter().next()) {
                    (Some(who), None) => Ok((who, rate_from_wire(c.rate.as_ref(), &at)?)),
                    (_, Some(e)) => Err(invalid(&e.path, e.message)),
                    (None, None) => Err(invalid(&at, "invalid caller")),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { total, callers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_survives_the_wire() {
        let mut policy = DestinationPolicy {
            timeout: Some(Duration::from_millis(1500)),
            ..DestinationPolicy::default()
        };
        policy.retries.retry_on.push(RetryOn::ServerError);
        policy.retries.retriable_status_codes = vec![429];
        policy.load_balancer = LoadBalancer::RoundRobin;
        let wire = v1::Policy::from(&policy);
        assert_eq!(DestinationPolicy::try_from(&wire).unwrap(), policy);
        assert_eq!(
            DestinationPolicy::try_from(&v1::Policy::from(&DestinationPolicy::default())).unwrap(),
            DestinationPolicy::default()
        );
    }

    #[test]
    fn routes_survive_the_wire_in_order() {
        let mut policy = DestinationPolicy::default();
        let mut reads = policy.retries.clone();
        reads.attempts = 4;
        reads.per_try_timeout = Some(Duration::from_millis(150));
        let get = |method: &str, path: PathMatch| RouteMatch {
            path,
            method: Some(method.into()),
            ..RouteMatch::any()
        };
        policy.routes = vec![
            RoutePolicy {
                name: "reads".into(),
                matches: vec![
                    get("GET", PathMatch::PathPrefix("/stock".into())),
                    RouteMatch {
                        headers: vec![ValueMatch {
                            name: "x-tester".into(),
                            value: Value::RegularExpression(Pattern::new("y.*").unwrap()),
                        }],
                        query_params: vec![ValueMatch {
                            name: "debug".into(),
                            value: Value::Exact("1".into()),
                        }],
                        ..get(
                            "HEAD",
                            PathMatch::RegularExpression(Pattern::new("/s/[0-9]+").unwrap()),
                        )
                    },
                ],
                filters: vec![
                    Filter::RequestHeaderModifier {
                        modifier: HeaderModifier {
                            set: vec![Header {
                                name: "x-a".into(),
                                value: "1".into(),
                            }],
                            add: vec![],
                            remove: vec!["x-b".into()],
                        },
                    },
                    Filter::RequestMirror {
                        mirror: Mirror {
                            backend_ref: BackendRef {
                                service: "shadow".into(),
                                version: None,
                                weight: 1,
                            },
                            percent: 12.5,
                        },
                    },
                    Filter::UrlRewrite {
                        rewrite: UrlRewrite {
                            hostname: Some("inventory.internal".into()),
                            path: Some(PathModifier::ReplacePrefixMatch {
                                prefix: "/v2".into(),
                            }),
                        },
                    },
                ],
                backend_refs: vec![
                    BackendRef {
                        service: "inventory".into(),
                        version: Some("v2".into()),
                        weight: 3,
                    },
                    BackendRef {
                        service: "inventory-next".into(),
                        version: None,
                        weight: 1,
                    },
                ],
                timeout: Some(Duration::from_millis(500)),
                retries: reads,
                fault: FaultPolicy {
                    delay: Some(Delay {
                        fixed_delay: Duration::from_millis(200),
                        percentage: 50.0,
                    }),
                    abort: Some(Abort {
                        status: AbortStatus::Grpc(14),
                        percentage: 1.5,
                    }),
                },
            },
            RoutePolicy {
                name: "export".into(),
                matches: vec![RouteMatch {
                    path: PathMatch::Exact("/export".into()),
                    ..RouteMatch::any()
                }],
                filters: vec![Filter::RequestRedirect {
                    redirect: Redirect {
                        scheme: Some("https".into()),
                        hostname: None,
                        path: Some(PathModifier::ReplaceFullPath { path: "/x".into() }),
                        port: Some(8443),
                        status_code: 301,
                    },
                }],
                backend_refs: vec![],
                timeout: None,
                retries: policy.retries.clone(),
                fault: FaultPolicy {
                    delay: None,
                    abort: Some(Abort {
                        status: AbortStatus::Http(503),
                        percentage: 100.0,
                    }),
                },
            },
        ];
        let wire = v1::Policy::from(&policy);
        assert_eq!(DestinationPolicy::try_from(&wire).unwrap(), policy);

        // A route in the earlier form, from an older control plane.
        let mut old = wire.clone();
        old.routes[1].matches.clear();
        old.routes[1].path_exact = "/export".into();
        old.routes[1].methods = vec!["GET".into(), "HEAD".into()];
        let read = DestinationPolicy::try_from(&old).unwrap();
        let methods: Vec<_> = read.routes[1]
            .matches
            .iter()
            .map(|m| m.method.clone())
            .collect();
        assert_eq!(methods, [Some("GET".into()), Some("HEAD".into())]);
        old.routes[1].path_prefix = "/also".into();
        assert_eq!(
            DestinationPolicy::try_from(&old).unwrap_err().field,
            "policy.routes[1].matches"
        );
        let mut bad = wire;
        if let Some(r) = bad.routes[0].retries.as_mut() {
            r.attempts = 0;
        }
        assert_eq!(
            DestinationPolicy::try_from(&bad).unwrap_err().field,
            "policy.routes[0].retries.attempts"
        );
        // backendRefs are held to the YAML's bounds: a weight past MAX_WEIGHT, or more than
        // MAX_BACKENDS of them.
        let backend = |weight| v1::BackendRef {
            service: "inventory".into(),
            version: String::new(),
            weight,
        };
        let mut heavy = old.clone();
        heavy.routes[1].path_prefix.clear();
        heavy.routes[0].backend_refs = vec![backend(1), backend(MAX_WEIGHT + 1)];
        assert_eq!(
            DestinationPolicy::try_from(&heavy).unwrap_err().field,
            "policy.routes[0].backend_refs[1].weight"
        );
        heavy.routes[0].backend_refs = vec![backend(1); MAX_BACKENDS + 1];
        assert_eq!(
            DestinationPolicy::try_from(&heavy).unwrap_err().field,
            "policy.routes[0].backend_refs"
        );
        heavy.routes[0].backend_refs = vec![backend(MAX_WEIGHT); MAX_BACKENDS];
        assert!(DestinationPolicy::try_from(&heavy).is_ok());
    }

    #[test]
    fn bad_policy_names_the_field() {
        let mut wire = v1::Policy::from(&DestinationPolicy::default());
        if let Some(r) = wire.retries.as_mut() {
            r.attempts = 0;
        }
        let err = DestinationPolicy::try_from(&wire).unwrap_err();
        assert_eq!(err.field, "policy.retries.attempts");
        wire.retries = None;
        assert_eq!(
            DestinationPolicy::try_from(&wire).unwrap_err().field,
            "policy.retries"
        );
    }

    /// The sidecar's retry budget cannot be built outside the bounds the YAML is held to; a
    /// snapshot past them is refused, naming the field, instead of reaching it.
    #[test]
    fn a_retry_budget_out_of_bounds_is_refused() {
        let budget = |ratio: f32, min_per_second: u32| {
            let mut wire = v1::Policy::from(&DestinationPolicy::default());
            if let Some(r) = wire.retries.as_mut() {
                r.budget_ratio = ratio;
                r.budget_min_per_second = min_per_second;
            }
            DestinationPolicy::try_from(&wire).map_err(|e| e.field)
        };
        for ratio in [1000.5, f32::INFINITY, f32::NAN, -0.1] {
            assert_eq!(
                budget(ratio, 10).unwrap_err(),
                "policy.retries.budget_ratio",
                "{ratio}"
            );
        }
        assert_eq!(
            budget(0.2, 1_000_001).unwrap_err(),
            "policy.retries.budget_min_per_second"
        );
        let edges = budget(1000.0, 1_000_000).unwrap();
        assert_eq!(edges.retries.budget.ratio, 1000.0);
        assert_eq!(edges.retries.budget.min_per_second, 1_000_000);
        assert!(budget(0.0, 0).is_ok());
    }

    #[test]
    fn rate_limits_survive_the_wire() {
        let policy = RateLimitPolicy {
            total: Some(Rate {
                requests_per_second: 50.0,
                burst: 50,
            }),
            callers: vec![
                (
                    Principal::Service("orders".into()),
                    Rate {
                        requests_per_second: 0.5,
                        burst: 1,
                    },
                ),
                (
                    Principal::Id("spiffe://mesh.local/ns/x/sa/y".parse().unwrap()),
                    Rate {
                        requests_per_second: 10.0,
                        burst: 3,
                    },
                ),
            ],
        };
        let wire = v1::RateLimit::from(&policy);
        assert_eq!(RateLimitPolicy::try_from(&wire).unwrap(), policy);
        let mut bad = wire;
        bad.callers[1].rate = Some(v1::Rate {
            requests_per_second: 1.0,
            burst: 0,
        });
        assert_eq!(
            RateLimitPolicy::try_from(&bad).unwrap_err().field,
            "rate_limit.callers[1]"
        );
    }

    #[test]
    fn authorization_survives_the_wire() {
        let policy = AuthorizationPolicy {
            default: Decision::Deny,
            allow: vec![
                Principal::Service("orders".into()),
                Principal::Id("spiffe://mesh.local/ns/ops/sa/admin".parse().unwrap()),
            ],
            deny: vec![Principal::Service("storefront".into())],
            rules: vec![AuthorizationRule {
                name: "product-writes".into(),
                matches: vec![RouteMatch {
                    method: Some("POST".into()),
                    path: PathMatch::PathPrefix("/products".into()),
                    ..RouteMatch::any()
                }],
                default: Decision::Deny,
                allow: vec![Principal::Service("orders".into())],
                deny: vec![],
            }],
            unauthenticated: Decision::Allow,
        };
        let wire = v1::Authorization::from(&policy);
        assert!(wire.allow_unauthenticated);
        assert_eq!(AuthorizationPolicy::try_from(&wire).unwrap(), policy);
        // A snapshot that does not carry the field keeps plain connections out.
        let without = v1::Authorization {
            allow_unauthenticated: false,
            ..wire.clone()
        };
        assert_eq!(
            AuthorizationPolicy::try_from(&without)
                .unwrap()
                .unauthenticated,
            Decision::Deny
        );
        assert_eq!(
            AuthorizationPolicy::try_from(&<v1::Authorization as Default>::default())
                .unwrap()
                .unauthenticated,
            Decision::Deny
        );
        let bad = v1::Authorization {
            allow: vec!["Not A Label".into()],
            ..wire
        };
        let err = AuthorizationPolicy::try_from(&bad).unwrap_err();
        assert_eq!(err.field, "authorization.allow[0]");
    }
}
