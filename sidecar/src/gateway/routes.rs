//! Which mesh service an outside request goes to: the routes attached to its listener whose
//! hostnames take its host (an exact name before the longest wildcard before routes without
//! hostnames), then their rules' matches in the Gateway API's precedence (ties in the order
//! written), then one of the rule's `backendRefs` by weight.

use std::cmp::Reverse;

use http::Request;
use mesh_api::route_match::RouteMatch;

use crate::config::{GatewayConfig, Hostname};
use crate::outbound::weighted;

/// The routes of one listener, ready to match.
#[derive(Debug)]
pub(crate) struct ListenerRoutes {
    /// Each attached route's hostnames, by route index into `names`.
    hostnames: Vec<(usize, Vec<Hostname>)>,
    /// Every match of the attached routes' rules, in precedence order.
    entries: Vec<Entry>,
    /// Every rule's backends (service, version, weight), by (route, rule).
    backends: Vec<((usize, usize), Vec<Backend>)>,
}

/// One of a rule's `backendRefs`.
#[derive(Debug)]
struct Backend {
    service: String,
    /// Only this version of it; `None`: the service split as it splits itself.
    version: Option<String>,
    weight: u32,
}

#[derive(Debug)]
struct Entry {
    route: usize,
    rule: usize,
    matches: RouteMatch,
}

/// Where a request goes, or why nowhere.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routing<'a> {
    /// The route (by index) and the mesh service its rule picked, or one version of it.
    To {
        route: usize,
        service: &'a str,
        version: Option<&'a str>,
    },
    /// No attached route takes the host.
    NoHost,
    /// Routes take the host, none of their rules the request.
    NoRule,
}

// === impl ListenerRoutes ===

impl ListenerRoutes {
    /// The routes of `config` attached to listener `listener`.
    pub(crate) fn new(config: &GatewayConfig, listener: usize) -> Self {
        let attached: Vec<usize> = config
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.listeners.contains(&listener))
            .map(|(i, _)| i)
            .collect();
        let hostnames = attached
            .iter()
            .map(|&i| (i, config.routes[i].hostnames.clone()))
            .collect();
        let mut entries = Vec::new();
        let mut backends = Vec::new();
        for &route in &attached {
            for (rule, r) in config.routes[route].rules.iter().enumerate() {
                for m in &r.matches {
                    entries.push(Entry {
                        route,
                        rule,
                        matches: m.clone(),
                    });
                }
                let weights = r
                    .backends
                    .iter()
                    .map(|b| Backend {
                        service: b.service.clone(),
                        version: b.version.clone(),
                        weight: b.weight,
                    })
                    .collect();
                backends.push(((route, rule), weights));
            }
        }
        // Stable: equal precedence keeps the order written.
        entries.sort_by(|a, b| a.matches.precedence(&b.matches));
        Self {
            hostnames,
            entries,
            backends,
        }
    }

    /// Where `req`, for `host` (lowercase, without port), goes.
    pub(crate) fn route<B>(&self, host: &str, req: &Request<B>) -> Routing<'_> {
        let Some(best) = self
            .hostnames
            .iter()
            .filter_map(|(_, names)| host_rank(names, host))
            .min()
        else {
            return Routing::NoHost;
        };
        let takes = |route: usize| {
            self.hostnames
                .iter()
                .any(|(i, names)| *i == route && host_rank(names, host) == Some(best))
        };
        let headers = req.headers();
        let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
        let (method, path, query) = (req.method().as_str(), req.uri().path(), req.uri().query());
        let Some(entry) = self
            .entries
            .iter()
            .find(|e| takes(e.route) && e.matches.matches(method, path, header, query))
        else {
            return Routing::NoRule;
        };
        let Some((_, weights)) = self
            .backends
            .iter()
            .find(|(at, _)| *at == (entry.route, entry.rule))
        else {
            return Routing::NoRule;
        };
        let total = weights
            .iter()
            .map(|b| b.weight)
            .fold(0u32, u32::saturating_add);
        match weighted::draw(weights.iter().map(|b| b.weight), total) {
            Some(pick) => Routing::To {
                route: entry.route,
                service: &weights[pick].service,
                version: weights[pick].version.as_deref(),
            },
            None => Routing::NoRule,
        }
    }
}

/// How well a route's `names` take `host`, lower first: an exact name, then wildcards by
/// longest suffix, then a route without hostnames; `None` when they do not take it.
fn host_rank(names: &[Hostname], host: &str) -> Option<(u8, Reverse<usize>)> {
    if names.is_empty() {
        return Some((2, Reverse(0)));
    }
    names
        .iter()
        .filter(|name| name.matches(host))
        .map(|name| match name {
            Hostname::Exact(_) => (0, Reverse(0)),
            Hostname::Wildcard(suffix) => (1, Reverse(suffix.len())),
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn routes(yaml: &str) -> ListenerRoutes {
        let text = format!(
            "service: gateway\ntrust_domain: mesh.local\n\
             control_plane: {{ address: \"127.0.0.1:1\", trust_anchor: ca.pem, token_file: t }}\n\
             gateway:\n  listeners: [{{ name: web, address: \"127.0.0.1:0\", protocol: HTTP }}]\n\
             {yaml}"
        );
        let config = Config::from_yaml(&text, std::path::Path::new("/")).unwrap();
        ListenerRoutes::new(config.gateway.as_ref().unwrap(), 0)
    }

    fn to<'a>(table: &'a ListenerRoutes, host: &str, path: &str) -> Routing<'a> {
        table.route(host, &Request::get(path).body(()).unwrap())
    }

    #[test]
    fn an_exact_host_beats_a_wildcard_which_beats_no_hostnames() {
        let table = routes(
            "  routes:\n\
             \x20   - { name: any, parentRefs: [{ name: web }], rules: [{ backendRefs: [{ name: fallback }] }] }\n\
             \x20   - { name: wild, parentRefs: [{ name: web }], hostnames: [\"*.example.com\"], rules: [{ backendRefs: [{ name: wild }] }] }\n\
             \x20   - { name: shop, parentRefs: [{ name: web }], hostnames: [shop.example.com], rules: [{ matches: [{ path: { type: PathPrefix, value: /api/orders } }], backendRefs: [{ name: orders }] }, { backendRefs: [{ name: storefront }] }] }\n",
        );
        let service = |host, path| match to(&table, host, path) {
            Routing::To { service, .. } => service.to_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(service("shop.example.com", "/api/orders/7"), "orders");
        assert_eq!(service("shop.example.com", "/api/ordersx"), "storefront");
        assert_eq!(service("a.b.example.com", "/"), "wild");
        assert_eq!(service("example.com", "/"), "fallback");
        assert_eq!(service("other.org", "/"), "fallback");
    }

    #[test]
    fn a_host_no_route_takes_or_a_path_no_rule_takes_is_not_routed() {
        let table = routes(
            "  routes:\n\
             \x20   - { name: shop, parentRefs: [{ name: web }], hostnames: [shop.example.com], rules: [{ matches: [{ path: { type: Exact, value: /x } }], backendRefs: [{ name: orders }] }] }\n",
        );
        assert_eq!(to(&table, "other.example.com", "/x"), Routing::NoHost);
        assert_eq!(to(&table, "shop.example.com", "/y"), Routing::NoRule);
        assert_eq!(
            to(&table, "shop.example.com", "/x"),
            Routing::To {
                route: 0,
                service: "orders",
                version: None,
            }
        );
    }

    #[test]
    fn a_backend_may_name_one_version_of_a_service() {
        let table = routes(
            "  routes:\n\
             \x20   - { name: shop, parentRefs: [{ name: web }], rules: [{ backendRefs: [{ name: orders, version: v2 }] }] }\n",
        );
        assert_eq!(
            to(&table, "shop.example.com", "/"),
            Routing::To {
                route: 0,
                service: "orders",
                version: Some("v2"),
            }
        );
    }
}
