//! What a route does to the requests it takes: filters in the shape of the Gateway API's
//! `HTTPRouteFilter`, applied by the caller's sidecar in the order written.
//!
//! ```yaml
//! filters:
//!   - type: RequestHeaderModifier
//!     requestHeaderModifier:
//!       set: [{ name: x-canary, value: "1" }]      # replaces any value
//!       add: [{ name: x-via, value: mesh }]        # appends a value
//!       remove: [x-debug]
//!   - type: ResponseHeaderModifier
//!     responseHeaderModifier: { set: [{ name: cache-control, value: no-store }] }
//!   - type: URLRewrite
//!     urlRewrite:
//!       hostname: inventory.internal               # the Host the app sees
//!       path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 }   # or ReplaceFullPath
//!   - type: RequestRedirect                        # answered by the sidecar, not forwarded
//!     requestRedirect: { scheme: https, hostname: shop.example, port: 443, statusCode: 301 }
//!   - type: RequestMirror                          # a copy to another service, answer discarded
//!     requestMirror: { backendRef: { name: inventory-shadow }, percent: 10 }
//! ```
//!
//! `ReplacePrefixMatch` replaces the part of the path the route's `PathPrefix` matched, so a
//! route using it must match by prefix only. A route either redirects or forwards: a
//! `RequestRedirect` excludes `URLRewrite` and `backendRefs`. Mesh headers (`x-mesh-*`) and
//! `host` cannot be modified (the hostname is `URLRewrite`'s).

use serde::{Deserialize, Serialize};

use crate::route_match::{PathMatch, RouteMatch, check_path};
use crate::validate::Errors;

/// Most headers one modifier may name.
const MAX_HEADERS: usize = 16;
/// Headers of one connection, which the mesh removes and rebuilds on each hop.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// One filter of a route, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum Filter {
    /// Changes the request's headers before it is forwarded.
    RequestHeaderModifier {
        /// The changes.
        #[serde(rename = "requestHeaderModifier")]
        modifier: HeaderModifier,
    },
    /// Changes the response's headers before the app gets it.
    ResponseHeaderModifier {
        /// The changes.
        #[serde(rename = "responseHeaderModifier")]
        modifier: HeaderModifier,
    },
    /// Rewrites the host or path the destination's app sees.
    #[serde(rename = "URLRewrite")]
    UrlRewrite {
        /// The rewrite.
        #[serde(rename = "urlRewrite")]
        rewrite: UrlRewrite,
    },
    /// Answers with a redirect instead of forwarding.
    RequestRedirect {
        /// Where to.
        #[serde(rename = "requestRedirect")]
        redirect: Redirect,
    },
    /// Sends a copy of some requests elsewhere, fire and forget.
    RequestMirror {
        /// Where to, and how many.
        #[serde(rename = "requestMirror")]
        mirror: Mirror,
    },
}

/// A copy of a share of a route's requests, sent to a backend; its answer is discarded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mirror {
    /// Where copies go (its weight is unused).
    #[serde(rename = "backendRef")]
    pub backend_ref: crate::backend_ref::BackendRef,
    /// Of the route's requests, 0 to 100.
    pub percent: f64,
}

impl Eq for Mirror {}

/// Header changes: `remove`, then `set`, then `add`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifier {
    /// Replace the header's values with this one (lowercase names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<Header>,
    /// Append this value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<Header>,
    /// Remove the header.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name (lowercase) and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// A rewrite of the request's host or path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UrlRewrite {
    /// The authority (`Host`) the destination's app sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The new path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// How a path is replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum PathModifier {
    /// The whole path becomes this.
    ReplaceFullPath {
        /// The path.
        #[serde(rename = "replaceFullPath")]
        path: String,
    },
    /// The prefix the route matched becomes this; the rest of the path stays.
    ReplacePrefixMatch {
        /// The prefix.
        #[serde(rename = "replacePrefixMatch")]
        prefix: String,
    },
}

/// A redirect; each part left out keeps the request's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// The port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
}

// === impl PathModifier ===

impl PathModifier {
    /// The path `path` becomes, when the route matched it with `matched` (a `PathPrefix` for
    /// `ReplacePrefixMatch`, which validation ensures).
    pub fn apply(&self, path: &str, matched: &PathMatch) -> String {
        match (self, matched) {
            (Self::ReplaceFullPath { path }, _) => path.clone(),
            (Self::ReplacePrefixMatch { prefix }, PathMatch::PathPrefix(old)) => {
                let rest = if old == "/" {
                    path
                } else {
                    path.strip_prefix(old.as_str()).unwrap_or(path)
                };
                let prefix = prefix.trim_end_matches('/');
                match (prefix.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_owned(),
                    (true, false) if rest.starts_with('/') => rest.to_owned(),
                    _ if rest.is_empty() || rest.starts_with('/') => format!("{prefix}{rest}"),
                    _ => format!("{prefix}/{rest}"),
                }
            }
            (Self::ReplacePrefixMatch { .. }, _) => path.to_owned(),
        }
    }
}

// === schema ===

/// One entry of a route's `filters`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "requestHeaderModifier")]
    request_header_modifier: Option<HeaderModifierFile>,
    #[serde(rename = "responseHeaderModifier")]
    response_header_modifier: Option<HeaderModifierFile>,
    #[serde(rename = "urlRewrite")]
    url_rewrite: Option<UrlRewriteFile>,
    #[serde(rename = "requestRedirect")]
    request_redirect: Option<RedirectFile>,
    #[serde(rename = "requestMirror")]
    request_mirror: Option<MirrorFile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorFile {
    #[serde(rename = "backendRef")]
    backend_ref: Option<crate::backend_ref::BackendRefFile>,
    percent: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderModifierFile {
    #[serde(default)]
    set: Vec<Header>,
    #[serde(default)]
    add: Vec<Header>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlRewriteFile {
    hostname: Option<String>,
    path: Option<PathModifierFile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathModifierFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "replaceFullPath")]
    replace_full_path: Option<String>,
    #[serde(rename = "replacePrefixMatch")]
    replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedirectFile {
    scheme: Option<String>,
    hostname: Option<String>,
    path: Option<PathModifierFile>,
    port: Option<u16>,
    #[serde(rename = "statusCode")]
    status_code: Option<u16>,
}

// === validation ===

/// Validates a route's `filters` at `path`, given its matches (a prefix rewrite needs prefix
/// matches) and whether it has `backendRefs` (a redirect has none).
pub(crate) fn validate(
    files: Vec<FilterFile>,
    path: &str,
    matches: &[RouteMatch],
    has_backends: bool,
    errors: &mut Errors,
) -> Vec<Filter> {
    let mut seen = std::collections::BTreeSet::new();
    let mut filters = Vec::with_capacity(files.len());
    for (i, file) in files.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(kind) = file.kind.clone() else {
            errors.push(
                format!("{at}.type"),
                "missing: RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, \
                 RequestRedirect or RequestMirror",
            );
            continue;
        };
        if !seen.insert(kind.clone()) && kind != "RequestMirror" {
            errors.push(format!("{at}.type"), format!("{kind} appears twice"));
        }
        if let Some(filter) = filter(file, &kind, &at, matches, errors) {
            filters.push(filter);
        }
    }
    let redirects = filters
        .iter()
        .any(|f| matches!(f, Filter::RequestRedirect { .. }));
    if redirects && seen.contains("URLRewrite") {
        errors.push(path, "a route either redirects or rewrites: not both");
    }
    if redirects && seen.contains("RequestMirror") {
        errors.push(
            path,
            "a redirecting route forwards nothing: it has nothing to mirror",
        );
    }
    if redirects && has_backends {
        errors.push(
            path,
            "a redirecting route forwards nothing: remove its backendRefs",
        );
    }
    filters
}

fn filter(
    file: FilterFile,
    kind: &str,
    at: &str,
    matches: &[RouteMatch],
    errors: &mut Errors,
) -> Option<Filter> {
    let field = |name: &str| format!("{at}.{name}");
    let set = [
        (
            "requestHeaderModifier",
            file.request_header_modifier.is_some(),
        ),
        (
            "responseHeaderModifier",
            file.response_header_modifier.is_some(),
        ),
        ("urlRewrite", file.url_rewrite.is_some()),
        ("requestRedirect", file.request_redirect.is_some()),
        ("requestMirror", file.request_mirror.is_some()),
    ];
    let wanted = match kind {
        "RequestHeaderModifier" => "requestHeaderModifier",
        "ResponseHeaderModifier" => "responseHeaderModifier",
        "URLRewrite" => "urlRewrite",
        "RequestRedirect" => "requestRedirect",
        "RequestMirror" => "requestMirror",
        other => {
            errors.push(
                field("type"),
                format!(
                    "{other:?}: use RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, \
                     RequestRedirect or RequestMirror"
                ),
            );
            return None;
        }
    };
    for (name, present) in set {
        if present && name != wanted {
            errors.push(field(name), format!("does not go with type {kind}"));
        }
    }
    match kind {
        "RequestHeaderModifier" | "ResponseHeaderModifier" => {
            let file = if kind == "RequestHeaderModifier" {
                file.request_header_modifier
            } else {
                file.response_header_modifier
            };
            let Some(file) = file else {
                errors.push(field(wanted), format!("missing for type {kind}"));
                return None;
            };
            let modifier = header_modifier(file, &field(wanted), errors);
            Some(if kind == "RequestHeaderModifier" {
                Filter::RequestHeaderModifier { modifier }
            } else {
                Filter::ResponseHeaderModifier { modifier }
            })
        }
        "URLRewrite" => {
            let Some(file) = file.url_rewrite else {
                errors.push(field(wanted), "missing for type URLRewrite");
                return None;
            };
            let at = field(wanted);
            let hostname = file
                .hostname
                .filter(|h| check_hostname(h, &format!("{at}.hostname"), errors));
            let path = file
                .path
                .and_then(|p| path_modifier(p, &format!("{at}.path"), matches, errors));
            if hostname.is_none() && path.is_none() {
                errors.push(&at, "set hostname, path or both");
            }
            Some(Filter::UrlRewrite {
                rewrite: UrlRewrite { hostname, path },
            })
        }
        "RequestMirror" => {
            let at = field(wanted);
            let Some(file) = file.request_mirror else {
                errors.push(&at, "missing for type RequestMirror");
                return None;
            };
            let Some(backend) = file.backend_ref else {
                errors.push(
                    format!("{at}.backendRef"),
                    "missing: the service copies go to, e.g. { name: inventory-shadow }",
                );
                return None;
            };
            let backend_ref =
                crate::backend_ref::backend_ref(backend, &format!("{at}.backendRef"), errors)?;
            let percent = file.percent.unwrap_or(100.0);
            if !(0.0..=100.0).contains(&percent) {
                errors.push(
                    format!("{at}.percent"),
                    format!("{percent} is not a percentage (0 to 100)"),
                );
            }
            Some(Filter::RequestMirror {
                mirror: Mirror {
                    backend_ref,
                    percent: percent.clamp(0.0, 100.0),
                },
            })
        }
        _ => {
            let Some(file) = file.request_redirect else {
                errors.push(field(wanted), "missing for type RequestRedirect");
                return None;
            };
            let at = field(wanted);
            let scheme = file.scheme.filter(|s| {
                let ok = s == "http" || s == "https";
                if !ok {
                    errors.push(format!("{at}.scheme"), format!("{s:?}: use http or https"));
                }
                ok
            });
            let hostname = file
                .hostname
                .filter(|h| check_hostname(h, &format!("{at}.hostname"), errors));
            let path = file
                .path
                .and_then(|p| path_modifier(p, &format!("{at}.path"), matches, errors));
            let status_code = file.status_code.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status_code) {
                errors.push(
                    format!("{at}.statusCode"),
                    format!("{status_code}: use 301, 302, 303, 307 or 308"),
                );
            }
            if file.port == Some(0) {
                errors.push(format!("{at}.port"), "must be a port, 1-65535");
            }
            Some(Filter::RequestRedirect {
                redirect: Redirect {
                    scheme,
                    hostname,
                    path,
                    port: file.port.filter(|p| *p > 0),
                    status_code,
                },
            })
        }
    }
}

fn header_modifier(file: HeaderModifierFile, at: &str, errors: &mut Errors) -> HeaderModifier {
    if file.set.len() + file.add.len() + file.remove.len() > MAX_HEADERS {
        errors.push(at, format!("at most {MAX_HEADERS} headers in all"));
    }
    let mut headers = |list: Vec<Header>, field: &str| -> Vec<Header> {
        list.into_iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let path = format!("{at}.{field}[{i}]");
                let name = header_name(&h.name, &format!("{path}.name"), errors)?;
                if http::HeaderValue::from_str(&h.value).is_err() {
                    errors.push(
                        format!("{path}.value"),
                        format!("{:?} is not a header value", h.value),
                    );
                    return None;
                }
                Some(Header {
                    name,
                    value: h.value,
                })
            })
            .collect()
    };
    let set = headers(file.set, "set");
    let add = headers(file.add, "add");
    let remove = file
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, name)| header_name(name, &format!("{at}.remove[{i}]"), errors))
        .collect();
    HeaderModifier { set, add, remove }
}

fn header_name(name: &str, path: &str, errors: &mut Errors) -> Option<String> {
    let Ok(parsed) = http::HeaderName::from_bytes(name.as_bytes()) else {
        errors.push(path, format!("{name:?} is not a header name"));
        return None;
    };
    let lower = parsed.as_str();
    if lower == "host" || lower.starts_with("x-mesh-") || HOP_BY_HOP.contains(&lower) {
        errors.push(
            path,
            format!("{name:?} is the mesh's to set (use URLRewrite's hostname for the host)"),
        );
        return None;
    }
    Some(lower.to_owned())
}

fn check_hostname(host: &str, path: &str, errors: &mut Errors) -> bool {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok {
        errors.push(
            path,
            format!("{host:?} is not a host name (letters, digits, '-' and '.'; no port)"),
        );
    }
    ok
}

fn path_modifier(
    file: PathModifierFile,
    at: &str,
    matches: &[RouteMatch],
    errors: &mut Errors,
) -> Option<PathModifier> {
    match file.kind.as_deref() {
        Some("ReplaceFullPath") => {
            let Some(path) = file.replace_full_path else {
                errors.push(format!("{at}.replaceFullPath"), "missing");
                return None;
            };
            check_path(&path, &format!("{at}.replaceFullPath"), errors);
            Some(PathModifier::ReplaceFullPath { path })
        }
        Some("ReplacePrefixMatch") => {
            let Some(prefix) = file.replace_prefix_match else {
                errors.push(format!("{at}.replacePrefixMatch"), "missing");
                return None;
            };
            check_path(&prefix, &format!("{at}.replacePrefixMatch"), errors);
            if matches
                .iter()
                .any(|m| !matches!(m.path, PathMatch::PathPrefix(_)))
            {
                errors.push(
                    at,
                    "ReplacePrefixMatch replaces the matched prefix: every match of the route \
                     must be a PathPrefix",
                );
            }
            Some(PathModifier::ReplacePrefixMatch { prefix })
        }
        other => {
            errors.push(
                format!("{at}.type"),
                format!("{other:?}: use ReplaceFullPath or ReplacePrefixMatch"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_rewrite(to: &str, path: &str, matched: &str) -> String {
        PathModifier::ReplacePrefixMatch { prefix: to.into() }
            .apply(path, &PathMatch::PathPrefix(matched.into()))
    }

    #[test]
    fn a_prefix_rewrite_keeps_the_rest_of_the_path() {
        assert_eq!(prefix_rewrite("/v2", "/stock/abc", "/stock"), "/v2/abc");
        assert_eq!(prefix_rewrite("/v2", "/stock", "/stock"), "/v2");
        assert_eq!(prefix_rewrite("/", "/stock/abc", "/stock"), "/abc");
        assert_eq!(prefix_rewrite("/", "/stock", "/stock"), "/");
        assert_eq!(prefix_rewrite("/v2/", "/stock/abc", "/stock"), "/v2/abc");
        assert_eq!(prefix_rewrite("/v2", "/abc", "/"), "/v2/abc");
    }
}
