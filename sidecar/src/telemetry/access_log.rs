//! One JSON line per request on standard output, when `access_log: true`.
//!
//! Fields: `time` (RFC 3339, UTC), `direction`, `trace_id`, `source` and `destination`
//! (identities or service names), `method`, `path`, `status`, `duration_ms`, `attempts`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// `outbound` or `inbound`.
    pub direction: &'a str,
    /// The trace the request belongs to (empty when there is none).
    pub trace_id: String,
    /// Caller.
    pub source: &'a str,
    /// Callee.
    pub destination: &'a str,
    /// The destination's named route the request took (outbound), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// Response status.
    pub status: u16,
    /// Time to response headers.
    #[serde(serialize_with = "millis")]
    pub duration_ms: Duration,
    /// Tries made (outbound).
    pub attempts: u32,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a Entry<'a>,
}

/// Writes `entry` as one line; a failed write is dropped (the log must not fail a request).
pub fn write(entry: &Entry<'_>) {
    let line = Line {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        entry,
    };
    if let Ok(mut json) = serde_json::to_vec(&line) {
        json.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&json);
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}
