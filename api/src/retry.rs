//! Retry policy: when a failed request is tried again, how long to wait, and the budget that
//! caps retries. Shared by a destination's policy and its routes, whose `retries` fields replace
//! the destination's one by one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::{self, Errors};

/// Retry policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Total tries, the first included; 1 disables retries.
    pub attempts: u32,
    /// Limit on each try; a try that exceeds it counts as a gateway error.
    #[serde(serialize_with = "validate::serialize_optional_duration")]
    pub per_try_timeout: Option<Duration>,
    /// Which failures are retried.
    pub retry_on: Vec<RetryOn>,
    /// Further response codes that are retried.
    pub retriable_status_codes: Vec<u16>,
    /// Wait between tries.
    pub backoff: Backoff,
    /// Cap on retries relative to requests.
    pub budget: Budget,
    /// Whether POST and PATCH may be retried after any failure, not only one that never reached
    /// the app (only with a body up to `max_buffered_body`).
    pub non_idempotent: bool,
    /// Largest request body kept for replay; larger bodies are streamed and never retried.
    pub max_buffered_body: u64,
}

/// A class of failure that may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The endpoint could not be reached or failed the TLS handshake: nothing was sent.
    ConnectFailure,
    /// The peer refused the HTTP/2 stream before processing it: nothing was processed.
    RefusedStream,
    /// The stream or connection was reset mid-request.
    Reset,
    /// 502, 503 or 504 from upstream, or a per-try timeout.
    GatewayError,
    /// Any 5xx from upstream, or a per-try timeout.
    #[serde(rename = "5xx")]
    ServerError,
}

/// Exponential backoff with full jitter: before retry n, wait a random time in
/// `[0, min(max, base * 2^(n-1))]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Backoff {
    /// First backoff ceiling.
    #[serde(serialize_with = "validate::serialize_duration")]
    pub base: Duration,
    /// Largest backoff ceiling.
    #[serde(serialize_with = "validate::serialize_duration")]
    pub max: Duration,
}

/// The largest `ratio` of a budget; the retry budget refuses to be built with more.
pub const MAX_BUDGET_RATIO: f32 = 1000.0;
/// The largest `min_per_second` of a budget.
pub const MAX_BUDGET_MIN_PER_SECOND: u32 = 1_000_000;

/// Retries may be at most `ratio` of the requests of the last `window`, plus `min_per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Budget {
    /// Retries allowed per request.
    pub ratio: f32,
    /// Retries allowed per second regardless of traffic.
    pub min_per_second: u32,
    /// How long a request counts towards the budget (1s to 60s).
    #[serde(serialize_with = "validate::serialize_duration")]
    pub window: Duration,
}

// === schema ===

/// The `retries` block, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesFile {
    pub(crate) attempts: Option<u32>,
    pub(crate) per_try_timeout: Option<String>,
    pub(crate) retry_on: Option<Vec<String>>,
    pub(crate) retriable_status_codes: Option<Vec<u16>>,
    pub(crate) backoff: Option<BackoffFile>,
    pub(crate) budget: Option<BudgetFile>,
    pub(crate) non_idempotent: Option<bool>,
    pub(crate) max_buffered_body: Option<String>,
}

impl RetriesFile {
    /// This block with the fields it leaves out taken from `base`.
    pub(crate) fn over(self, base: &RetriesFile) -> RetriesFile {
        let base = base.clone();
        RetriesFile {
            attempts: self.attempts.or(base.attempts),
            per_try_timeout: self.per_try_timeout.or(base.per_try_timeout),
            retry_on: self.retry_on.or(base.retry_on),
            retriable_status_codes: self.retriable_status_codes.or(base.retriable_status_codes),
            backoff: self.backoff.or(base.backoff),
            budget: self.budget.or(base.budget),
            non_idempotent: self.non_idempotent.or(base.non_idempotent),
            max_buffered_body: self.max_buffered_body.or(base.max_buffered_body),
        }
    }

    /// The names of the fields this block sets.
    pub(crate) fn fields_set(&self) -> Vec<&'static str> {
        [
            ("attempts", self.attempts.is_some()),
            ("per_try_timeout", self.per_try_timeout.is_some()),
            ("retry_on", self.retry_on.is_some()),
            (
                "retriable_status_codes",
                self.retriable_status_codes.is_some(),
            ),
            ("backoff", self.backoff.is_some()),
            ("budget", self.budget.is_some()),
            ("non_idempotent", self.non_idempotent.is_some()),
            ("max_buffered_body", self.max_buffered_body.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackoffFile {
    base: Option<String>,
    max: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetFile {
    ratio: Option<f32>,
    min_per_second: Option<u32>,
    window: Option<String>,
}

// === validation ===

/// Validates a `retries` block at `path`; bad values fall back to their defaults.
pub(crate) fn retries(file: RetriesFile, path: &str, errors: &mut Errors) -> RetryPolicy {
    let at = |field: &str| format!("{path}.{field}");
    let attempts = file.attempts.unwrap_or(2);
    if !(1..=10).contains(&attempts) {
        errors.push(at("attempts"), "must be between 1 and 10");
    }
    let per_try_timeout = file
        .per_try_timeout
        .and_then(|t| validate::limit(errors, &at("per_try_timeout"), t));
    let retry_on = match file.retry_on {
        // `reset` is a default because only requests that are safe to send again (idempotent
        // methods, or bodies the caller marked `non_idempotent`) are retried on it: a peer
        // sidecar that dies mid-request then costs no GET, just as a 502 from it would not.
        None => vec![
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream,
            RetryOn::Reset,
            RetryOn::GatewayError,
        ],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, name)| match name.as_str() {
                "connect-failure" => Some(RetryOn::ConnectFailure),
                "refused-stream" => Some(RetryOn::RefusedStream),
                "reset" => Some(RetryOn::Reset),
                "gateway-error" => Some(RetryOn::GatewayError),
                "5xx" => Some(RetryOn::ServerError),
                other => {
                    errors.push(
                        format!("{path}.retry_on[{i}]"),
                        format!(
                            "unknown condition {other:?}: use connect-failure, refused-stream, \
                             reset, gateway-error or 5xx"
                        ),
                    );
                    None
                }
            })
            .collect(),
    };
    let retriable_status_codes = file.retriable_status_codes.unwrap_or_default();
    for (i, code) in retriable_status_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            errors.push(
                format!("{path}.retriable_status_codes[{i}]"),
                format!("{code} is not an HTTP status code"),
            );
        }
    }
    let backoff_file = file.backoff.unwrap_or_default();
    let backoff = Backoff {
        base: validate::duration(
            errors,
            &at("backoff.base"),
            backoff_file.base,
            Duration::from_millis(25),
        ),
        max: validate::duration(
            errors,
            &at("backoff.max"),
            backoff_file.max,
            Duration::from_millis(250),
        ),
    };
    if backoff.base > backoff.max {
        errors.push(at("backoff"), "base must not exceed max");
    }
    let budget_file = file.budget.unwrap_or_default();
    let budget = Budget {
        ratio: budget_file.ratio.unwrap_or(0.2),
        min_per_second: budget_file.min_per_second.unwrap_or(10),
        window: validate::duration(
            errors,
            &at("budget.window"),
            budget_file.window,
            Duration::from_secs(10),
        ),
    };
    if !(0.0..=MAX_BUDGET_RATIO).contains(&budget.ratio) {
        errors.push(
            at("budget.ratio"),
            format!("must be between 0 and {MAX_BUDGET_RATIO}"),
        );
    }
    if budget.min_per_second > MAX_BUDGET_MIN_PER_SECOND {
        errors.push(
            at("budget.min_per_second"),
            format!("must be at most {MAX_BUDGET_MIN_PER_SECOND}"),
        );
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&budget.window) {
        errors.push(at("budget.window"), "must be between 1s and 60s");
    }
    let max_buffered_body = match file.max_buffered_body {
        None => 64 * 1024,
        Some(text) => match parse_size(&text) {
            Some(n) if n <= 16 << 20 => n,
            Some(_) => {
                errors.push(at("max_buffered_body"), "must be at most 16MiB");
                64 * 1024
            }
            None => {
                errors.push(
                    at("max_buffered_body"),
                    format!("invalid size {text:?}: write e.g. 64KiB, 1MiB or 4096"),
                );
                64 * 1024
            }
        },
    };
    RetryPolicy {
        attempts: attempts.clamp(1, 10),
        per_try_timeout,
        retry_on,
        retriable_status_codes,
        backoff,
        budget,
        non_idempotent: file.non_idempotent.unwrap_or(false),
        max_buffered_body,
    }
}

/// Parses `4096`, `64KiB`, `1MiB`, `10KB`, `1MB` (KB and MB are decimal).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10KB"), Some(10_000));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5 GiB"), None);
    }
}
