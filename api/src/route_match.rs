//! Which requests a route takes: matches in the shape of the Gateway API's `HTTPRouteMatch`
//! (path, method, headers, query parameters), so a route written here reads like an
//! HTTPRoute rule and a later Kubernetes mode can map real HTTPRoutes onto the same types.
//!
//! ```yaml
//! matches:                                   # any one of them; absent: every request
//!   - path: { type: PathPrefix, value: /stock }    # Exact | PathPrefix (default) | RegularExpression
//!     method: GET                                  # absent: any method
//!     headers:                                     # all of them
//!       - { name: x-tester, value: "yes" }         # type: Exact (default) | RegularExpression
//!     queryParams:
//!       - { name: debug, type: RegularExpression, value: "1|true" }
//! ```
//!
//! Paths and query parameters match as written, before any percent-decoding. A regular
//! expression (RE2 syntax, the `regex` crate) must match the whole value. Header names are
//! case-insensitive, header values and query parameter names and values case-sensitive; of a
//! repeated query parameter, the first counts.
//!
//! Precedence is the Gateway API's: across all the routes of a destination, the first match in
//! this order wins: an `Exact` path; a `PathPrefix` with the most characters; a
//! `RegularExpression` path; then, among equal paths, one with a method, then the most header
//! matches, then the most query parameter matches; remaining ties go to the route written
//! first.

use std::cmp::{Ordering, Reverse};

use serde::{Deserialize, Serialize, Serializer};

use crate::validate::Errors;

/// Most header or query parameter matches in one match (the Gateway API's limit).
pub const MAX_VALUE_MATCHES: usize = 16;
/// Longest regular expression accepted, in bytes.
const MAX_PATTERN: usize = 1024;
/// Memory a compiled expression may take; bounds what one bad pattern can cost a sidecar.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// One way a request can match a route: all of its conditions hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteMatch {
    /// The request path.
    pub path: PathMatch,
    /// The method, as sent (methods are case-sensitive); `None`: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request headers that must be present with a matching value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameters that must be present with a matching value.
    #[serde(rename = "queryParams", skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
}

/// How the request path matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    /// The path is exactly this (the query is not part of it).
    Exact(String),
    /// The path is this or starts with it followed by `/`. Stored without a trailing `/`,
    /// except the root `/`, which matches every path.
    PathPrefix(String),
    /// The whole path matches this expression.
    RegularExpression(Pattern),
}

/// A named header or query parameter and how its value matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueMatch {
    /// The header name (lowercase) or the query parameter name.
    pub name: String,
    /// How the value matches.
    pub value: Value,
}

/// How a value matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Byte for byte.
    Exact(String),
    /// The whole value matches this expression.
    RegularExpression(Pattern),
}

/// A regular expression that must match a whole value, kept with its source for display and
/// comparison.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

// === impl RouteMatch ===

impl RouteMatch {
    /// Every request: the default when a route has no `matches`.
    pub fn any() -> Self {
        Self {
            path: PathMatch::PathPrefix("/".to_owned()),
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }

    /// Whether a request matches, given its method, path (without query), a lookup of its
    /// headers by lowercase name, and its query string.
    pub fn matches<'h>(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'h [u8]>,
        query: Option<&str>,
    ) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path.matches(path)
            && self
                .headers
                .iter()
                .all(|h| header(&h.name).is_some_and(|v| h.value.matches(v)))
            && self
                .query_params
                .iter()
                .all(|q| query_param(query, &q.name).is_some_and(|v| q.value.matches(v.as_bytes())))
    }

    /// The Gateway API's precedence: `Less` when `self` is tried before `other`.
    pub fn precedence(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }

    fn rank(&self) -> (u8, Reverse<usize>, bool, Reverse<usize>, Reverse<usize>) {
        let (kind, length) = match &self.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::PathPrefix(p) => (1, p.len()),
            PathMatch::RegularExpression(_) => (2, 0),
        };
        (
            kind,
            Reverse(length),
            self.method.is_none(),
            Reverse(self.headers.len()),
            Reverse(self.query_params.len()),
        )
    }
}

/// The first value of the query parameter `name`, as written.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

// === impl PathMatch ===

impl PathMatch {
    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::PathPrefix(prefix) if prefix == "/" => true,
            Self::PathPrefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
            Self::RegularExpression(pattern) => pattern.matches(path.as_bytes()),
        }
    }
}

// === impl Value ===

impl Value {
    /// Whether `value` matches.
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(exact) => exact.as_bytes() == value,
            Self::RegularExpression(pattern) => pattern.matches(value),
        }
    }
}

impl Serialize for ValueMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (kind, value) = match &self.value {
            Value::Exact(v) => ("Exact", v.as_str()),
            Value::RegularExpression(p) => ("RegularExpression", p.as_str()),
        };
        let mut out = s.serialize_struct("ValueMatch", 3)?;
        out.serialize_field("type", kind)?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("value", value)?;
        out.end()
    }
}

// === impl Pattern ===

impl Pattern {
    /// Compiles `source` to match whole values.
    pub fn new(source: &str) -> Result<Self, String> {
        if source.len() > MAX_PATTERN {
            return Err(format!(
                "longer than {MAX_PATTERN} bytes; match less of the value"
            ));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("{source:?} is not a regular expression: {e}"))?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `value` matches (never, when it is not UTF-8).
    pub fn matches(&self, value: &[u8]) -> bool {
        std::str::from_utf8(value).is_ok_and(|v| self.regex.is_match(v))
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

// === schema ===

/// One entry of a route's `matches`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    path: Option<PathFile>,
    method: Option<String>,
    headers: Option<Vec<ValueFile>>,
    #[serde(rename = "queryParams")]
    query_params: Option<Vec<ValueFile>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: String,
    value: String,
}

// === validation ===

/// Validates one entry of `matches` at `path`.
pub fn validate(file: MatchFile, path: &str, errors: &mut Errors) -> RouteMatch {
    let path_file = file.path.unwrap_or_default();
    let path_at = format!("{path}.path");
    let value = path_file.value.unwrap_or_else(|| "/".to_owned());
    let path_match = match path_file.kind.as_deref().unwrap_or("PathPrefix") {
        "Exact" => {
            check_path(&value, &format!("{path_at}.value"), errors);
            PathMatch::Exact(value)
        }
        "PathPrefix" => {
            check_path(&value, &format!("{path_at}.value"), errors);
            prefix(&value)
        }
        "RegularExpression" => match Pattern::new(&value) {
            Ok(pattern) => PathMatch::RegularExpression(pattern),
            Err(message) => {
                errors.push(format!("{path_at}.value"), message);
                PathMatch::PathPrefix("/".to_owned())
            }
        },
        other => {
            errors.push(
                format!("{path_at}.type"),
                format!("{other:?}: use Exact, PathPrefix or RegularExpression"),
            );
            PathMatch::PathPrefix("/".to_owned())
        }
    };
    let method = file
        .method
        .filter(|m| check_method(m, &format!("{path}.method"), errors));
    let headers = values(file.headers, &format!("{path}.headers"), true, errors);
    let query_params = values(
        file.query_params,
        &format!("{path}.queryParams"),
        false,
        errors,
    );
    RouteMatch {
        path: path_match,
        method,
        headers,
        query_params,
    }
}

/// A prefix as matched: without its trailing `/`, except the root.
pub(crate) fn prefix(value: &str) -> PathMatch {
    let trimmed = value.trim_end_matches('/');
    PathMatch::PathPrefix(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn values(
    files: Option<Vec<ValueFile>>,
    path: &str,
    headers: bool,
    errors: &mut Errors,
) -> Vec<ValueMatch> {
    let files = files.unwrap_or_default();
    if files.len() > MAX_VALUE_MATCHES {
        errors.push(path, format!("at most {MAX_VALUE_MATCHES}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, file) in files.into_iter().enumerate() {
        let at = |field: &str| format!("{path}[{i}].{field}");
        let name = if headers {
            match http::HeaderName::from_bytes(file.name.as_bytes()) {
                Ok(name) => name.as_str().to_owned(),
                Err(_) => {
                    errors.push(at("name"), format!("{:?} is not a header name", file.name));
                    continue;
                }
            }
        } else {
            if file.name.is_empty() || file.name.contains(['&', '=', '#', ' ']) {
                errors.push(
                    at("name"),
                    format!("{:?} is not a query parameter name", file.name),
                );
                continue;
            }
            file.name
        };
        if !seen.insert(name.clone()) {
            errors.push(at("name"), format!("{name:?} is matched twice"));
        }
        let value = match file.kind.as_deref().unwrap_or("Exact") {
            "Exact" => Value::Exact(file.value),
            "RegularExpression" => match Pattern::new(&file.value) {
                Ok(pattern) => Value::RegularExpression(pattern),
                Err(message) => {
                    errors.push(at("value"), message);
                    continue;
                }
            },
            other => {
                errors.push(
                    at("type"),
                    format!("{other:?}: use Exact or RegularExpression"),
                );
                continue;
            }
        };
        out.push(ValueMatch { name, value });
    }
    out
}

/// Whether `method` is a method token in upper case; reports it at `path` when not.
pub(crate) fn check_method(method: &str, path: &str, errors: &mut Errors) -> bool {
    let token = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        errors.push(path, format!("{method:?} is not an HTTP method"));
        false
    } else if method.bytes().any(|b| b.is_ascii_lowercase()) {
        errors.push(
            path,
            format!(
                "methods are case-sensitive and {method:?} would match no standard one: \
                 write {:?}",
                method.to_ascii_uppercase()
            ),
        );
        false
    } else {
        true
    }
}

/// Checks a path as a route writes it: absolute, without query or fragment.
pub(crate) fn check_path(value: &str, path: &str, errors: &mut Errors) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_match(p: &str) -> PathMatch {
        PathMatch::PathPrefix(p.to_owned())
    }

    fn parse(yaml_like: MatchFile) -> (RouteMatch, Vec<String>) {
        let mut errors = Errors::default();
        let m = validate(yaml_like, "m", &mut errors);
        let errors = errors.lines();
        (m, errors)
    }

    fn header(kind: &str, name: &str, value: &str) -> ValueFile {
        ValueFile {
            kind: Some(kind.into()),
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let stock = prefix_match("/stock");
        assert!(stock.matches("/stock"));
        assert!(stock.matches("/stock/"));
        assert!(stock.matches("/stock/abc"));
        assert!(!stock.matches("/stockpile"));
        assert!(!stock.matches("/"));
        assert!(!stock.matches("/Stock"));
        assert!(prefix_match("/").matches("/anything/at/all"));
    }

    #[test]
    fn headers_and_query_parameters_all_hold() {
        let (m, errors) = parse(MatchFile {
            method: Some("GET".into()),
            headers: Some(vec![
                header("Exact", "X-Tester", "yes"),
                header("RegularExpression", "x-build", "v[0-9]+"),
            ]),
            query_params: Some(vec![header("Exact", "debug", "1")]),
            ..MatchFile::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(m.headers[0].name, "x-tester");
        let headers = |tester: &'static str, build: &'static str| {
            move |name: &str| match name {
                "x-tester" => Some(tester.as_bytes()),
                "x-build" => Some(build.as_bytes()),
                _ => None,
            }
        };
        assert!(m.matches("GET", "/x", headers("yes", "v12"), Some("a=b&debug=1")));
        assert!(!m.matches("GET", "/x", headers("yes", "v12x"), Some("debug=1")));
        assert!(!m.matches("GET", "/x", headers("Yes", "v1"), Some("debug=1")));
        assert!(!m.matches("GET", "/x", headers("yes", "v1"), Some("debug=2&debug=1")));
        assert!(!m.matches("GET", "/x", headers("yes", "v1"), None));
        assert!(!m.matches("POST", "/x", headers("yes", "v1"), Some("debug=1")));
    }

    #[test]
    fn bad_matches_are_reported_at_their_paths() {
        let (_, errors) = parse(MatchFile {
            path: Some(PathFile {
                kind: Some("RegularExpression".into()),
                value: Some("/a(".into()),
            }),
            method: Some("get".into()),
            headers: Some(vec![header("Fuzzy", "x", "y"), header("Exact", "a b", "c")]),
            query_params: Some(vec![header("Exact", "a=b", "c")]),
        });
        let text = errors.join("\n");
        for expected in [
            "m.path.value: \"/a(\" is not a regular expression",
            "m.method: methods are case-sensitive",
            "m.headers[0].type: \"Fuzzy\": use Exact or RegularExpression",
            "m.headers[1].name: \"a b\" is not a header name",
            "m.queryParams[0].name: \"a=b\" is not a query parameter name",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }

    #[test]
    fn precedence_is_the_gateway_apis() {
        let with = |path: PathMatch, method: Option<&str>, headers: usize| RouteMatch {
            path,
            method: method.map(Into::into),
            headers: (0..headers)
                .map(|i| ValueMatch {
                    name: format!("h{i}"),
                    value: Value::Exact("x".into()),
                })
                .collect(),
            query_params: Vec::new(),
        };
        let mut list = [
            with(
                PathMatch::RegularExpression(Pattern::new("/.*").unwrap()),
                None,
                0,
            ),
            with(prefix_match("/"), None, 3),
            with(prefix_match("/stock"), None, 0),
            with(prefix_match("/stock"), None, 1),
            with(prefix_match("/stock"), Some("GET"), 0),
            with(PathMatch::Exact("/stock".into()), None, 0),
        ];
        list.sort_by(RouteMatch::precedence);
        let order: Vec<String> = list
            .iter()
            .map(|m| {
                let path = match &m.path {
                    PathMatch::Exact(p) => format!("Exact {p}"),
                    PathMatch::PathPrefix(p) => format!("PathPrefix {p}"),
                    PathMatch::RegularExpression(p) => format!("RegularExpression {}", p.as_str()),
                };
                format!("{path} {:?} {}", m.method, m.headers.len())
            })
            .collect();
        assert_eq!(
            order,
            [
                "Exact /stock None 0",
                "PathPrefix /stock Some(\"GET\") 0",
                "PathPrefix /stock None 1",
                "PathPrefix /stock None 0",
                "PathPrefix / None 3",
                "RegularExpression /.* None 0",
            ]
        );
    }
}
