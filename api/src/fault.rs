//! Faults the caller's sidecar injects into a destination's or a route's requests, to test how
//! callers cope without changing the apps: a delay before the request is sent, or an answer
//! the mesh makes up instead of sending it. Istio's `HTTPFaultInjection`, with its field names.
//!
//! ```yaml
//! fault:
//!   delay: { fixedDelay: 200ms, percentage: 50 }     # half the requests wait 200ms first
//!   abort: { httpStatus: 503, percentage: 10 }       # or grpcStatus: UNAVAILABLE (or 14)
//! ```
//!
//! `percentage` is of requests, 0 to 100 (decimals allowed), default 100. A request may be
//! both delayed and aborted: the delay comes first. An abort answers with the status and
//! `x-mesh-error: fault-injected`; a gRPC abort answers 200 with that `grpc-status` (a
//! trailers-only response), as a gRPC server would. A route's `fault` replaces its
//! destination's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::{self, Errors};

/// Longest delay that may be injected.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Faults to inject, validated.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultPolicy {
    /// Wait before sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// Answer instead of sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

/// A fixed delay for a share of requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delay {
    /// How long.
    #[serde(rename = "fixedDelay", serialize_with = "validate::serialize_duration")]
    pub fixed_delay: Duration,
    /// Of requests, 0 to 100.
    pub percentage: f64,
}

/// An answer made up for a share of requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Abort {
    /// The answer.
    #[serde(flatten)]
    pub status: AbortStatus,
    /// Of requests, 0 to 100.
    pub percentage: f64,
}

/// What an aborted request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AbortStatus {
    /// This HTTP status.
    #[serde(rename = "httpStatus")]
    Http(u16),
    /// HTTP 200 with this `grpc-status`.
    #[serde(rename = "grpcStatus")]
    Grpc(u8),
}

// === impl FaultPolicy ===

impl FaultPolicy {
    /// Whether it injects anything.
    pub fn is_empty(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }
}

// === schema ===

/// The `fault` block, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    delay: Option<DelayFile>,
    abort: Option<AbortFile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayFile {
    #[serde(rename = "fixedDelay")]
    fixed_delay: Option<String>,
    percentage: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortFile {
    #[serde(rename = "httpStatus")]
    http_status: Option<u16>,
    #[serde(rename = "grpcStatus")]
    grpc_status: Option<GrpcStatusFile>,
    percentage: Option<f64>,
}

/// A gRPC status as written: its name (`UNAVAILABLE`) or its number (14).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum GrpcStatusFile {
    Code(u8),
    Name(String),
}

/// gRPC status names, by code.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

// === validation ===

/// Validates a `fault` block at `path`.
pub fn validate(file: FaultFile, path: &str, errors: &mut Errors) -> FaultPolicy {
    let percentage = |value: Option<f64>, at: String, errors: &mut Errors| {
        let value = value.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&value) {
            errors.push(at, format!("{value} is not a percentage (0 to 100)"));
        }
        value.clamp(0.0, 100.0)
    };
    let delay = file.delay.and_then(|d| {
        let at = format!("{path}.delay");
        let Some(text) = d.fixed_delay else {
            errors.push(format!("{at}.fixedDelay"), "missing: how long, e.g. 200ms");
            return None;
        };
        let fixed_delay = validate::duration(
            errors,
            &format!("{at}.fixedDelay"),
            Some(text),
            Duration::ZERO,
        );
        if fixed_delay > MAX_DELAY {
            errors.push(format!("{at}.fixedDelay"), "must be at most 1m");
        }
        Some(Delay {
            fixed_delay,
            percentage: percentage(d.percentage, format!("{at}.percentage"), errors),
        })
    });
    let abort = file.abort.and_then(|a| {
        let at = format!("{path}.abort");
        let status = match (a.http_status, a.grpc_status) {
            (Some(_), Some(_)) => {
                errors.push(&at, "set httpStatus or grpcStatus, not both");
                return None;
            }
            (None, None) => {
                errors.push(
                    &at,
                    "set httpStatus (e.g. 503) or grpcStatus (e.g. UNAVAILABLE)",
                );
                return None;
            }
            (Some(code), None) => {
                if !(200..=599).contains(&code) {
                    errors.push(
                        format!("{at}.httpStatus"),
                        format!("{code} is not a status a server answers with (200-599)"),
                    );
                }
                AbortStatus::Http(code)
            }
            (None, Some(grpc)) => {
                let code = match &grpc {
                    GrpcStatusFile::Code(code) => Some(*code).filter(|c| (1..=16).contains(c)),
                    GrpcStatusFile::Name(name) => GRPC_CODES
                        .iter()
                        .position(|n| n == name)
                        .and_then(|c| u8::try_from(c).ok())
                        .filter(|c| *c > 0),
                };
                let Some(code) = code else {
                    let grpc = match &grpc {
                        GrpcStatusFile::Code(code) => code.to_string(),
                        GrpcStatusFile::Name(name) => format!("{name:?}"),
                    };
                    errors.push(
                        format!("{at}.grpcStatus"),
                        format!(
                            "{grpc} is not a gRPC error status: use a name such as \
                             UNAVAILABLE or a code from 1 to 16"
                        ),
                    );
                    return None;
                };
                AbortStatus::Grpc(code)
            }
        };
        Some(Abort {
            status,
            percentage: percentage(a.percentage, format!("{at}.percentage"), errors),
        })
    });
    FaultPolicy { delay, abort }
}

/// The name of a gRPC status code.
pub fn grpc_name(code: u8) -> &'static str {
    GRPC_CODES
        .get(usize::from(code))
        .copied()
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (FaultPolicy, Vec<String>) {
        let file: FaultFile = serde_saphyr::from_str(yaml).unwrap();
        let mut errors = Errors::default();
        let policy = validate(file, "fault", &mut errors);
        let errors = errors.lines();
        (policy, errors)
    }

    #[test]
    fn delays_and_aborts_with_their_defaults() {
        let (p, errors) = parse(
            "{ delay: { fixedDelay: 200ms, percentage: 50 }, abort: { grpcStatus: UNAVAILABLE } }",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            p.delay,
            Some(Delay {
                fixed_delay: Duration::from_millis(200),
                percentage: 50.0
            })
        );
        assert_eq!(
            p.abort,
            Some(Abort {
                status: AbortStatus::Grpc(14),
                percentage: 100.0
            })
        );
        assert_eq!(grpc_name(14), "UNAVAILABLE");
    }

    #[test]
    fn bad_faults_are_reported_at_their_paths() {
        let (_, errors) =
            parse("{ delay: { percentage: 150 }, abort: { httpStatus: 503, grpcStatus: 14 } }");
        assert_eq!(
            errors,
            [
                "fault.delay.fixedDelay: missing: how long, e.g. 200ms",
                "fault.abort: set httpStatus or grpcStatus, not both",
            ]
        );
        let (_, errors) =
            parse("{ delay: { fixedDelay: 2h, percentage: -1 }, abort: { grpcStatus: OK } }");
        assert_eq!(
            errors,
            [
                "fault.delay.fixedDelay: must be at most 1m",
                "fault.delay.percentage: -1 is not a percentage (0 to 100)",
                "fault.abort.grpcStatus: \"OK\" is not a gRPC error status: use a name such as UNAVAILABLE or a code from 1 to 16",
            ]
        );
    }
}
