//! Error collection for declarative files: every problem, each at its field path, so an
//! operator fixes a file in one pass.

use std::time::Duration;

use serde::Serializer;

/// One problem in a configuration, at a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted field path, e.g. `destinations.inventory.endpoints[1]`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The problems found so far.
#[derive(Debug, Default)]
pub struct Errors(Vec<ConfigError>);

impl Errors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in the order found.
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }

    /// The problems as `path: message` lines, for tests.
    #[cfg(test)]
    pub(crate) fn lines(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }
}

/// Checks that a service, namespace or destination name is a DNS label.
pub fn check_label(errors: &mut Errors, path: &str, value: &str) {
    if let Err(e) = crate::spiffe::check_label(value) {
        errors.push(path, e.to_string());
    }
}

/// Parses a time limit: a positive human duration, or `none` for no limit (which lets a
/// service lift a limit its defaults set). Returns `None` for `none` and after reporting an
/// invalid value.
pub fn limit(errors: &mut Errors, path: &str, value: String) -> Option<Duration> {
    if value == "none" {
        return None;
    }
    Some(duration(errors, path, Some(value), Duration::ZERO)).filter(|d| !d.is_zero())
}

/// Parses a positive human duration (`250ms`, `2s`, `1m`), or returns `default` when absent
/// or invalid (after reporting it).
pub fn duration(
    errors: &mut Errors,
    path: &str,
    value: Option<String>,
    default: Duration,
) -> Duration {
    let Some(value) = value else {
        return default;
    };
    match humantime::parse_duration(&value) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            errors.push(path, "must be greater than zero");
            default
        }
        Err(e) => {
            errors.push(
                path,
                format!("invalid duration {value:?} ({e}); write e.g. 250ms, 2s, 1m"),
            );
            default
        }
    }
}

/// Writes a duration the way [`duration`] reads it (`250ms`, `2s`), so shown policy can be
/// pasted back into a file.
pub(crate) fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Writes a limit the way [`limit`] reads it; no limit is `null`.
pub(crate) fn serialize_optional_duration<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serialize_duration(d, s),
        None => s.serialize_none(),
    }
}
