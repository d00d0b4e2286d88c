//! Step 3, within a destination: which route a request takes.
//!
//! The matches of all of a destination's routes are put in the Gateway API's precedence order
//! once, when the stack is built (`RouteMatch::precedence`, ties kept in the order written),
//! so a request takes the first that fits. Each header a match names is looked up at most once
//! per request however many matches name it, and only when a match whose path and method fit
//! gets to it: with 100 routes on one header, a request costs one header lookup and 100 byte
//! comparisons, not 100 lookups. Paths are treated the same way: routes told apart by a header
//! usually share their path, which is then matched once per request, not once per route.

use http::{HeaderMap, HeaderName, Method, Uri};
use mesh_api::route::{PathMatch, RoutePolicy};
use mesh_api::route_match::{Value, query_param};

/// Header values (and path matches) remembered per request without allocating; further ones
/// are looked up each time a match needs them.
const CACHED: usize = 16;

/// The matches of one destination's routes, in precedence order.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    entries: Box<[Entry]>,
    /// The distinct header names the entries match on.
    header_names: Box<[HeaderName]>,
    /// The distinct path matches of the entries.
    paths: Box<[PathMatch]>,
}

/// One match, ready to evaluate.
#[derive(Debug)]
struct Entry {
    /// The index of its route, in the order written.
    route: usize,
    method: Option<Method>,
    /// Its path match, by index into `paths`.
    path: usize,
    /// Header matches, by index into `header_names`.
    headers: Box<[(usize, Value)]>,
    query_params: Box<[(String, Value)]>,
}

/// The route a request takes and the path match it took it by (a prefix rewrite replaces the
/// matched prefix).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Matched<'a> {
    pub(crate) route: usize,
    pub(crate) path: &'a PathMatch,
}

// === impl RouteTable ===

impl RouteTable {
    /// The table of `routes`.
    pub(crate) fn new(routes: &[RoutePolicy]) -> Self {
        let mut header_names: Vec<HeaderName> = Vec::new();
        let mut paths: Vec<PathMatch> = Vec::new();
        let mut matches: Vec<(usize, &mesh_api::route::RouteMatch)> = routes
            .iter()
            .enumerate()
            .flat_map(|(i, route)| route.matches.iter().map(move |m| (i, m)))
            .collect();
        // Stable: equal precedence keeps the order written.
        matches.sort_by(|(_, a), (_, b)| a.precedence(b));
        let entries = matches
            .into_iter()
            .map(|(route, m)| Entry {
                route,
                method: m
                    .method
                    .as_deref()
                    .and_then(|m| Method::from_bytes(m.as_bytes()).ok()),
                path: match paths.iter().position(|p| *p == m.path) {
                    Some(index) => index,
                    None => {
                        paths.push(m.path.clone());
                        paths.len() - 1
                    }
                },
                headers: m
                    .headers
                    .iter()
                    .filter_map(|h| {
                        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
                        let index = match header_names.iter().position(|n| *n == name) {
                            Some(index) => index,
                            None => {
                                header_names.push(name);
                                header_names.len() - 1
                            }
                        };
                        Some((index, h.value.clone()))
                    })
                    .collect(),
                query_params: m
                    .query_params
                    .iter()
                    .map(|q| (q.name.clone(), q.value.clone()))
                    .collect(),
            })
            .collect();
        Self {
            entries,
            header_names: header_names.into(),
            paths: paths.into(),
        }
    }

    /// The first match, in precedence order, that the request fits.
    pub(crate) fn find(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Matched<'_>> {
        if self.entries.is_empty() {
            return None;
        }
        let path = uri.path();
        let mut headers_seen: [Option<Option<&[u8]>>; CACHED] = [None; CACHED];
        let mut header = |index: usize| -> Option<&[u8]> {
            let lookup = || {
                self.header_names
                    .get(index)
                    .and_then(|name| headers.get(name))
                    .map(|v| v.as_bytes())
            };
            match headers_seen.get_mut(index) {
                Some(slot) => *slot.get_or_insert_with(lookup),
                None => lookup(),
            }
        };
        let mut paths_seen: [Option<bool>; CACHED] = [None; CACHED];
        let mut path_fits = |index: usize| -> bool {
            let check = || self.paths.get(index).is_some_and(|p| p.matches(path));
            match paths_seen.get_mut(index) {
                Some(slot) => *slot.get_or_insert_with(check),
                None => check(),
            }
        };
        self.entries
            .iter()
            .find(|entry| {
                entry.method.as_ref().is_none_or(|m| m == method)
                    && path_fits(entry.path)
                    && entry
                        .headers
                        .iter()
                        .all(|(index, value)| header(*index).is_some_and(|v| value.matches(v)))
                    && entry.query_params.iter().all(|(name, value)| {
                        query_param(uri.query(), name).is_some_and(|v| value.matches(v.as_bytes()))
                    })
            })
            .and_then(|entry| {
                Some(Matched {
                    route: entry.route,
                    path: self.paths.get(entry.path)?,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use mesh_api::policy::{PolicyFile, validate};
    use mesh_api::validate::Errors;

    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let file: PolicyFile = serde_saphyr::from_str(yaml).unwrap();
        let mut errors = Errors::default();
        let policy = validate(file, "", &mut errors);
        assert!(errors.is_empty(), "{:?}", errors.into_vec());
        RouteTable::new(&policy.routes)
    }

    fn find(
        table: &RouteTable,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Option<usize> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        table
            .find(&method, &uri.parse().unwrap(), &map)
            .map(|m| m.route)
    }

    #[test]
    fn the_most_specific_match_wins_whatever_the_order_written() {
        let t = table(
            "routes:\n\
             - { name: all, matches: [{ path: { value: / } }] }\n\
             - { name: stock, matches: [{ path: { value: /stock } }] }\n\
             - { name: testers, matches: [{ path: { value: /stock }, headers: [{ name: x-tester, value: 'yes' }] }] }\n\
             - { name: exact, matches: [{ path: { type: Exact, value: /stock/count } }] }\n\
             - { name: get, matches: [{ method: GET, path: { value: /stock } }] }\n\
             - { name: debug, matches: [{ path: { type: RegularExpression, value: '/d/[0-9]+' }, queryParams: [{ name: debug, value: '1' }] }] }\n",
        );
        assert_eq!(find(&t, Method::GET, "/stock/count", &[]), Some(3));
        assert_eq!(
            find(&t, Method::GET, "/stock/1", &[("x-tester", "yes")]),
            Some(4)
        );
        assert_eq!(
            find(&t, Method::POST, "/stock/1", &[("x-tester", "yes")]),
            Some(2)
        );
        assert_eq!(
            find(&t, Method::POST, "/stock/1", &[("x-tester", "no")]),
            Some(1)
        );
        assert_eq!(find(&t, Method::POST, "/other", &[]), Some(0));
        // The root prefix catches every path before a regular expression gets to it.
        assert_eq!(find(&t, Method::GET, "/d/12?debug=1", &[]), Some(0));
    }

    #[test]
    fn a_header_named_by_many_matches_is_compared_against_each() {
        let routes: String = (0..40)
            .map(|i| {
                format!(
                    "- {{ name: r{i}, matches: [{{ headers: [{{ name: x-tenant, value: t{i} }}, \
                     {{ name: x-h{}, type: RegularExpression, value: '.*' }}] }}] }}\n",
                    i % 20
                )
            })
            .collect();
        let t = table(&format!("routes:\n{routes}"));
        assert_eq!(
            find(&t, Method::GET, "/", &[("x-tenant", "t39"), ("x-h19", "")]),
            Some(39)
        );
        assert_eq!(find(&t, Method::GET, "/", &[("x-tenant", "t39")]), None);
        assert_eq!(
            find(&t, Method::GET, "/", &[("x-tenant", "t3"), ("x-h3", "a")]),
            Some(3)
        );
    }
}
