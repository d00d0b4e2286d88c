//! Routes of a destination: requests picked out by method and path that get their own timeout
//! and retries.
//!
//! A destination's policy applies to every request to it; a route narrows it for some of them.
//! Reads may be retried three times under a 500 ms limit while a checkout POST gets 5 s and no
//! retry, on the same service. Routes are tried in order and the first whose `match` fits
//! the request applies; a request no route matches gets the destination's own policy.
//!
//! ```yaml
//! routes:
//!   - name: stock-lookup
//!     match: { methods: [GET], path_prefix: /stock }
//!     timeout: 500ms
//!     retries: { attempts: 3, per_try_timeout: 150ms }
//!   - name: export
//!     match: { path: /export }
//!     timeout: none                  # no overall limit for this route
//! ```
//!
//! A route's `timeout` replaces the destination's (`none`: no limit). Its `retries` fields
//! replace the destination's one by one; the rest are inherited. The retry budget, circuit
//! breaker, concurrency limits and load balancer stay the destination's: a route is a way of
//! calling the service, not a separate set of endpoints, and a budget split per route would
//! let an outage multiply load once per route.
//!
//! Paths match as written, before any decoding. `path_prefix` matches whole segments:
//! `/stock` matches `/stock` and `/stock/abc`, not `/stockpile`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::{self, RetriesFile, RetryPolicy};
use crate::validate::Errors;

/// Most routes one destination may have; each is a metric label value, so they are bounded.
pub const MAX_ROUTES: usize = 64;

/// One route, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutePolicy {
    /// Its name: unique within the destination, and the `route` label of its metrics.
    pub name: String,
    /// Which requests it applies to.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Limit on the whole request, all tries included (504 when exceeded); `None`: no limit.
    #[serde(serialize_with = "crate::validate::serialize_optional_duration")]
    pub timeout: Option<Duration>,
    /// Its retries: the destination's, with the fields the route sets replaced. The budget is
    /// always the destination's.
    pub retries: RetryPolicy,
}

/// Which requests a route applies to: all of its conditions hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteMatch {
    /// Request methods, as sent (HTTP methods are case-sensitive); empty: any method.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The request path.
    #[serde(flatten)]
    pub path: PathMatch,
}

/// How a route matches the request path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathMatch {
    /// The path is exactly this (the query is not part of it).
    #[serde(rename = "path")]
    Exact(String),
    /// The path is this or starts with it followed by `/`. Stored without a trailing `/`,
    /// except the root `/`, which matches every path.
    #[serde(rename = "path_prefix")]
    Prefix(String),
}

// === impl RouteMatch ===

impl RouteMatch {
    /// Whether a request with this method and path (without query) is on the route.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.path.matches(path)
    }
}

// === impl PathMatch ===

impl PathMatch {
    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) if prefix == "/" => true,
            Self::Prefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
        }
    }
}

// === schema ===

/// One entry of `routes`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    name: Option<String>,
    #[serde(rename = "match")]
    matches: Option<MatchFile>,
    timeout: Option<String>,
    retries: Option<RetriesFile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchFile {
    methods: Option<Vec<String>>,
    path: Option<String>,
    path_prefix: Option<String>,
}

// === validation ===

/// Validates the `routes` of a destination at `path` (e.g. `routes`), given the destination's
/// resolved timeout and its `retries` as written, which route fields replace one by one.
pub(crate) fn validate(
    files: Vec<RouteFile>,
    path: &str,
    timeout: Option<Duration>,
    retries: &RetriesFile,
    errors: &mut Errors,
) -> Vec<RoutePolicy> {
    if files.len() > MAX_ROUTES {
        errors.push(path, format!("at most {MAX_ROUTES} routes per destination"));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut routes = Vec::with_capacity(files.len());
    for (i, file) in files.into_iter().enumerate().take(MAX_ROUTES) {
        let at = |field: &str| format!("{path}[{i}].{field}");
        let name = file.name.unwrap_or_default();
        if let Err(message) = check_name(&name) {
            errors.push(at("name"), message);
        } else if !names.insert(name.clone()) {
            errors.push(at("name"), format!("{name:?} names two routes"));
        }
        let Some(matches) = file.matches else {
            errors.push(
                at("match"),
                "missing: say which requests the route is for, e.g. \
                 { methods: [GET], path_prefix: /stock }",
            );
            continue;
        };
        let matches = route_match(matches, &at("match"), errors);
        let timeout = match file.timeout {
            None => timeout,
            Some(text) => crate::validate::limit(errors, &at("timeout"), text),
        };
        let own = file.retries.unwrap_or_default();
        if own.budget.is_some() {
            errors.push(
                at("retries.budget"),
                "the retry budget is the destination's, shared by all its routes: \
                 set it in the destination's retries",
            );
        }
        // Errors in inherited fields are the destination's, reported at its own path.
        let set = own.fields_set();
        let mut scratch = Errors::default();
        let retries_path = at("retries");
        let retries = retry::retries(own.over(retries), &retries_path, &mut scratch);
        for e in scratch.into_vec() {
            let field = e.path[retries_path.len()..]
                .trim_start_matches('.')
                .split(['.', '['])
                .next()
                .unwrap_or_default();
            if set.contains(&field) {
                errors.push(e.path, e.message);
            }
        }
        routes.push(RoutePolicy {
            name,
            matches,
            timeout,
            retries,
        });
    }
    routes
}

fn route_match(file: MatchFile, path: &str, errors: &mut Errors) -> RouteMatch {
    let methods = file.methods.unwrap_or_default();
    for (i, method) in methods.iter().enumerate() {
        let token = !method.is_empty()
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            errors.push(
                format!("{path}.methods[{i}]"),
                format!("{method:?} is not an HTTP method"),
            );
        } else if method.bytes().any(|b| b.is_ascii_lowercase()) {
            errors.push(
                format!("{path}.methods[{i}]"),
                format!(
                    "methods are case-sensitive and {method:?} would match no standard one: \
                     write {:?}",
                    method.to_ascii_uppercase()
                ),
            );
        }
    }
    let path_match = match (file.path, file.path_prefix) {
        (Some(_), Some(_)) => {
            errors.push(path, "set one of path and path_prefix, not both");
            PathMatch::Prefix("/".to_owned())
        }
        (Some(exact), None) => {
            check_path(&exact, &format!("{path}.path"), errors);
            PathMatch::Exact(exact)
        }
        (None, Some(prefix)) => {
            check_path(&prefix, &format!("{path}.path_prefix"), errors);
            let trimmed = prefix.trim_end_matches('/');
            PathMatch::Prefix(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            })
        }
        (None, None) => PathMatch::Prefix("/".to_owned()),
    };
    RouteMatch {
        methods,
        path: path_match,
    }
}

fn check_path(value: &str, path: &str, errors: &mut Errors) {
    if !value.starts_with('/') {
        errors.push(path, format!("{value:?} must start with '/'"));
    } else if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        errors.push(
            path,
            format!("{value:?} contains {c:?}: a path is matched without query or fragment"),
        );
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if name.is_empty() {
        Err("missing: every route needs a name, its metrics label".to_owned())
    } else if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1-63 lowercase letters, digits, '-' and '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.to_owned())
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let stock = prefix("/stock");
        assert!(stock.matches("/stock"));
        assert!(stock.matches("/stock/"));
        assert!(stock.matches("/stock/abc"));
        assert!(!stock.matches("/stockpile"));
        assert!(!stock.matches("/"));
        assert!(!stock.matches("/Stock"));
        assert!(prefix("/").matches("/anything/at/all"));
    }

    #[test]
    fn exact_path_and_methods() {
        let m = RouteMatch {
            methods: vec!["POST".into(), "PUT".into()],
            path: PathMatch::Exact("/orders".into()),
        };
        assert!(m.matches("POST", "/orders"));
        assert!(m.matches("PUT", "/orders"));
        assert!(!m.matches("GET", "/orders"));
        assert!(!m.matches("POST", "/orders/1"));
        assert!(!m.matches("post", "/orders"));
        let any = RouteMatch {
            methods: vec![],
            path: prefix("/"),
        };
        assert!(any.matches("PATCH", "/x"));
    }
}
