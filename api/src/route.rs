//! Routes of a destination: requests picked out by path, method, headers and query that get
//! their own timeout and retries, filters, and backends.
//!
//! A destination's policy applies to every request to it; a route narrows it for some of them.
//! Routes take the shape of the Gateway API's HTTPRoute rules: `matches`
//! ([`crate::route_match`]), `filters` ([`crate::route_filter`]) and `backendRefs`, with the
//! Gateway API's field names, and the Gateway API's precedence decides which route a request
//! takes (exact path, longest prefix, regular expression, then method, header and query
//! matches; see [`crate::route_match`]). A request no route matches gets the destination's
//! own policy.
//!
//! ```yaml
//! routes:
//!   - name: testers
//!     matches: [{ headers: [{ name: x-tester, value: "yes" }] }]
//!     backendRefs: [{ name: inventory, version: v2 }]
//!   - name: stock-lookup
//!     matches: [{ method: GET, path: { type: PathPrefix, value: /stock } }]
//!     timeout: 500ms
//!     retries: { attempts: 3, per_try_timeout: 150ms }
//!   - name: export
//!     match: { path: /export }       # the earlier form: methods, path or path_prefix
//!     timeout: none                  # no overall limit for this route
//! ```
//!
//! A route's `timeout` replaces the destination's (`none`: no limit). Its `retries` fields
//! replace the destination's one by one; the rest are inherited. The retry budget, circuit
//! breaker, concurrency limits and load balancer stay the destination's: a route is a way of
//! calling the service, not a separate set of endpoints, and a budget split per route would
//! let an outage multiply load once per route.
//!
//! `backendRefs` send the route's requests, by weight, to a version of the destination (which
//! must be in its traffic split) or to another service, whose own policy then applies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::backend_ref::BackendRef;
use crate::backend_ref::{BackendRefFile, backend_ref};
use crate::fault::{self, FaultFile, FaultPolicy};
use crate::retry::{self, RetriesFile, RetryPolicy};
pub use crate::route_filter::Filter;
use crate::route_filter::FilterFile;
use crate::route_match::{MatchFile, check_method, check_path};
pub use crate::route_match::{PathMatch, RouteMatch};
use crate::validate::Errors;

/// Most routes one destination may have; each is a metric label value, so they are bounded.
pub const MAX_ROUTES: usize = 128;
/// Most matches of one route (the Gateway API's limit).
pub const MAX_MATCHES: usize = 64;
/// Most backends of one route (the Gateway API's limit).
pub const MAX_BACKENDS: usize = 16;

/// One route, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutePolicy {
    /// Its name: unique within the destination, and the `route` label of its metrics.
    pub name: String,
    /// The requests it applies to: those that fit any one of these.
    pub matches: Vec<RouteMatch>,
    /// What is done to its requests and responses, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Where its requests go, by weight; empty: the destination, split as the destination is.
    #[serde(rename = "backendRefs", skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    /// Limit on the whole request, all tries included (504 when exceeded); `None`: no limit.
    #[serde(serialize_with = "crate::validate::serialize_optional_duration")]
    pub timeout: Option<Duration>,
    /// Its retries: the destination's, with the fields the route sets replaced. The budget is
    /// always the destination's.
    pub retries: RetryPolicy,
    /// Faults injected into its requests: its own, or else the destination's.
    #[serde(skip_serializing_if = "FaultPolicy::is_empty")]
    pub fault: FaultPolicy,
}

// === schema ===

/// One entry of `routes`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    name: Option<String>,
    /// The earlier form of `matches`, still read: `{ methods, path | path_prefix }`.
    #[serde(rename = "match")]
    legacy_match: Option<LegacyMatchFile>,
    matches: Option<Vec<MatchFile>>,
    filters: Option<Vec<FilterFile>>,
    #[serde(rename = "backendRefs")]
    backend_refs: Option<Vec<BackendRefFile>>,
    timeout: Option<String>,
    retries: Option<RetriesFile>,
    fault: Option<FaultFile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyMatchFile {
    methods: Option<Vec<String>>,
    path: Option<String>,
    path_prefix: Option<String>,
}

// === impl RouteFile ===

impl RouteFile {}

// === impl RoutePolicy ===

impl RoutePolicy {
    /// Every backend it sends requests or copies to, with its field path within the route:
    /// its `backendRefs`, then its mirrors'.
    pub fn backends(&self) -> impl Iterator<Item = (String, &BackendRef)> {
        let refs = self
            .backend_refs
            .iter()
            .enumerate()
            .map(|(j, b)| (format!("backendRefs[{j}]"), b));
        let mirrors = self
            .filters
            .iter()
            .enumerate()
            .filter_map(|(k, f)| match f {
                Filter::RequestMirror { mirror } => Some((
                    format!("filters[{k}].requestMirror.backendRef"),
                    &mirror.backend_ref,
                )),
                _ => None,
            });
        refs.chain(mirrors)
    }
}

// === validation ===

/// Validates the `routes` of a destination at `path` (e.g. `routes`), given the destination's
/// resolved timeout and its `retries` as written, which route fields replace one by one.
pub(crate) fn validate(
    files: Vec<RouteFile>,
    path: &str,
    timeout: Option<Duration>,
    retries: &RetriesFile,
    fault: &FaultPolicy,
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
        let matches = match (file.legacy_match, file.matches) {
            (Some(_), Some(_)) => {
                errors.push(
                    at("match"),
                    "set matches or the earlier match, not both: \
                     move its methods and path into matches",
                );
                vec![RouteMatch::any()]
            }
            (Some(legacy), None) => legacy_match(legacy, &at("match"), errors),
            (None, Some(list)) => {
                if list.len() > MAX_MATCHES {
                    errors.push(at("matches"), format!("at most {MAX_MATCHES}"));
                }
                if list.is_empty() {
                    vec![RouteMatch::any()]
                } else {
                    list.into_iter()
                        .enumerate()
                        .map(|(j, m)| {
                            crate::route_match::validate(
                                m,
                                &format!("{path}[{i}].matches[{j}]"),
                                errors,
                            )
                        })
                        .collect()
                }
            }
            (None, None) => vec![RouteMatch::any()],
        };
        let backend_refs = backend_refs(
            file.backend_refs.unwrap_or_default(),
            &at("backendRefs"),
            errors,
        );
        let filters = crate::route_filter::validate(
            file.filters.unwrap_or_default(),
            &at("filters"),
            &matches,
            !backend_refs.is_empty(),
            errors,
        );
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
        let fault = match file.fault {
            Some(own) => fault::validate(own, &at("fault"), errors),
            None => fault.clone(),
        };
        routes.push(RoutePolicy {
            name,
            matches,
            filters,
            backend_refs,
            timeout,
            retries,
            fault,
        });
    }
    routes
}

/// The earlier `match` as the matches it stands for: one per method, each with its path.
fn legacy_match(file: LegacyMatchFile, path: &str, errors: &mut Errors) -> Vec<RouteMatch> {
    let methods = file.methods.unwrap_or_default();
    let methods: Vec<String> = methods
        .into_iter()
        .enumerate()
        .filter(|(i, m)| check_method(m, &format!("{path}.methods[{i}]"), errors))
        .map(|(_, m)| m)
        .collect();
    let path_match = match (file.path, file.path_prefix) {
        (Some(_), Some(_)) => {
            errors.push(path, "set one of path and path_prefix, not both");
            PathMatch::PathPrefix("/".to_owned())
        }
        (Some(exact), None) => {
            check_path(&exact, &format!("{path}.path"), errors);
            PathMatch::Exact(exact)
        }
        (None, Some(prefix)) => {
            check_path(&prefix, &format!("{path}.path_prefix"), errors);
            crate::route_match::prefix(&prefix)
        }
        (None, None) => PathMatch::PathPrefix("/".to_owned()),
    };
    let one = |method: Option<String>| RouteMatch {
        path: path_match.clone(),
        method,
        ..RouteMatch::any()
    };
    if methods.is_empty() {
        vec![one(None)]
    } else {
        methods.into_iter().map(|m| one(Some(m))).collect()
    }
}

fn backend_refs(files: Vec<BackendRefFile>, path: &str, errors: &mut Errors) -> Vec<BackendRef> {
    if files.len() > MAX_BACKENDS {
        errors.push(path, format!("at most {MAX_BACKENDS}"));
    }
    let refs: Vec<BackendRef> = files
        .into_iter()
        .enumerate()
        .filter_map(|(i, file)| backend_ref(file, &format!("{path}[{i}]"), errors))
        .collect();
    if !refs.is_empty() && refs.iter().all(|b| b.weight == 0) {
        errors.push(path, "at least one weight must be greater than 0");
    }
    refs
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

    fn routes(yaml_routes: Vec<RouteFile>) -> (Vec<RoutePolicy>, Vec<String>) {
        let mut errors = Errors::default();
        let out = validate(
            yaml_routes,
            "routes",
            None,
            &RetriesFile::default(),
            &FaultPolicy::default(),
            &mut errors,
        );
        let errors = errors.lines();
        (out, errors)
    }

    #[test]
    fn the_earlier_match_is_one_match_per_method() {
        let (out, errors) = routes(vec![RouteFile {
            name: Some("reads".into()),
            legacy_match: Some(LegacyMatchFile {
                methods: Some(vec!["GET".into(), "HEAD".into()]),
                path: None,
                path_prefix: Some("/stock/".into()),
            }),
            ..RouteFile::default()
        }]);
        assert!(errors.is_empty(), "{errors:?}");
        let m = &out[0].matches;
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].method.as_deref(), Some("GET"));
        assert_eq!(m[1].method.as_deref(), Some("HEAD"));
        assert_eq!(m[0].path, PathMatch::PathPrefix("/stock".into()));
        let none = |_: &str| None;
        assert!(m[1].matches("HEAD", "/stock/1", none, None));
        assert!(!m[1].matches("HEAD", "/stockpile", none, None));
    }

    #[test]
    fn backend_refs_are_checked() {
        let (out, errors) = routes(vec![RouteFile {
            name: Some("split".into()),
            matches: Some(vec![]),
            backend_refs: Some(vec![
                BackendRefFile {
                    name: Some("inventory".into()),
                    version: Some("V2".into()),
                    weight: Some(0),
                },
                BackendRefFile {
                    name: None,
                    version: None,
                    weight: None,
                },
            ]),
            ..RouteFile::default()
        }]);
        assert_eq!(out[0].matches, [RouteMatch::any()]);
        let text = errors.join("\n");
        for expected in [
            "routes[0].backendRefs[0].version: ",
            "routes[0].backendRefs[1].name: missing",
            "routes[0].backendRefs: at least one weight must be greater than 0",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }
}
