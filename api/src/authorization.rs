//! Who may call a service: checked by the callee's sidecar (step 10 of the request path),
//! written by operators in the sidecar's bootstrap file or the control plane's config.
//!
//! The policy names callers by service (in this sidecar's trust domain) or by full SPIFFE ID. A
//! caller on the `deny` list is refused; one on the `allow` list is let in; anyone else gets the
//! `default`. A refusal is a 403 with `x-mesh-error: unauthorized` and a body naming the rule
//! that refused, so the calling team knows what to ask for.
//!
//! `rules` narrow this by method and path (Linkerd's route-scoped AuthorizationPolicy, Istio's
//! `operation`): a request a rule matches is let in only for that rule's callers.
//!
//! ```yaml
//! authorization:
//!   default: deny
//!   allow: [orders, storefront]
//!   rules:
//!     - name: product-writes
//!       matches: [{ method: POST, path: { type: PathPrefix, value: /products } }]
//!       allow: [orders]              # storefront may read products, not write them
//! ```
//!
//! The service-wide `deny` refuses first, whatever a rule says. Of the rules that match a
//! request, the one whose match comes first in the Gateway API's precedence (as for routes)
//! decides: a caller on its `deny` is refused, one on its `allow` let in, anyone else gets its
//! `default` (deny unless written). A request no rule matches gets the service-wide lists and
//! default. Rules match method and path only, never headers, which a caller chooses. A CONNECT
//! tunnel has no path: when a service has rules, only a rule for `method: CONNECT` (or one with
//! neither method nor path) lets one in, so a tunnel to the app's port cannot get around them.
//!
//! `unauthenticated` decides for plain (non-TLS) connections from outside the mesh, which have
//! no identity: `deny` (the default: zero trust) refuses them with `x-mesh-error:
//! unauthenticated`; `allow` (Linkerd's `all-unauthenticated`) lets them in. Such a caller is on
//! no list, since lists name identities: the service-wide `allow` and `deny` never apply to it,
//! and a rule that matches its request lets it in only when the rule's `default` is `allow`.

use serde::{Deserialize, Serialize};

use crate::route_match::{MatchFile, RouteMatch};
use crate::spiffe::SpiffeId;
use crate::validate::{Errors, check_label};

/// Most rules one service may have.
pub const MAX_RULES: usize = 64;

/// Who may call this service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthorizationPolicy {
    /// What callers on neither list get.
    pub default: Decision,
    /// Callers let in.
    pub allow: Vec<Principal>,
    /// Callers refused, whatever else says.
    pub deny: Vec<Principal>,
    /// Who may make the requests of some methods and paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthorizationRule>,
    /// What plain connections from outside the mesh, with no identity, get.
    pub unauthenticated: Decision,
}

/// Who may make the requests one rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthorizationRule {
    /// Its name, in refusals.
    pub name: String,
    /// The requests it applies to: any one of these (method and path only).
    pub matches: Vec<RouteMatch>,
    /// What callers on neither of its lists get.
    pub default: Decision,
    /// Callers let in.
    pub allow: Vec<Principal>,
    /// Callers refused.
    pub deny: Vec<Principal>,
}

/// The outcome for callers no rule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Let in.
    Allow,
    /// Refuse.
    Deny,
}

/// A caller, as a policy names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Principal {
    /// A service of this sidecar's trust domain, any namespace.
    Service(String),
    /// One exact identity.
    Id(SpiffeId),
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
#[error("caller {caller} may not call {service}: {rule}")]
pub struct Unauthorized {
    /// The caller's identity, or `unauthenticated`.
    pub caller: String,
    /// This service.
    pub service: String,
    /// The rule that refused.
    pub rule: String,
}

/// Why a plain connection from outside the mesh was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{service} takes only mesh mTLS: this connection is plain, with no client certificate; \
     to let in clients outside the mesh, set authorization.unauthenticated: allow"
)]
pub struct Unauthenticated {
    /// This service.
    pub service: String,
}

/// The name an unauthenticated caller goes by in refusals and metrics.
pub const UNAUTHENTICATED: &str = "unauthenticated";

impl Default for AuthorizationPolicy {
    /// Everyone in the mesh may call, as before any policy is written.
    fn default() -> Self {
        Self {
            default: Decision::Allow,
            allow: Vec::new(),
            deny: Vec::new(),
            rules: Vec::new(),
            unauthenticated: Decision::Deny,
        }
    }
}

/// The `authorization` block, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationFile {
    /// `allow` or `deny`.
    #[serde(default)]
    pub default: Option<String>,
    /// Callers let in: service names or SPIFFE IDs.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Callers refused.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Rules by method and path.
    #[serde(default)]
    pub rules: Vec<RuleFile>,
    /// `allow` or `deny` (the default): plain connections from outside the mesh.
    #[serde(default)]
    pub unauthenticated: Option<String>,
}

/// One entry of `rules`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    name: Option<String>,
    matches: Option<Vec<MatchFile>>,
    default: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

impl AuthorizationFile {
    /// Every caller the block names as written, with its field path: `allow[0]`,
    /// `rules[1].deny[0]`, ...
    pub fn principals(&self) -> Vec<(String, &str)> {
        fn list(prefix: String, entries: &[String]) -> Vec<(String, &str)> {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("{prefix}[{i}]"), e.as_str()))
                .collect()
        }
        let mut all = list("allow".into(), &self.allow);
        all.extend(list("deny".into(), &self.deny));
        for (i, rule) in self.rules.iter().enumerate() {
            all.extend(list(format!("rules[{i}].allow"), &rule.allow));
            all.extend(list(format!("rules[{i}].deny"), &rule.deny));
        }
        all
    }
}

/// Parses a decision word (`allow` or `deny`) at `path`.
pub fn decision(
    errors: &mut Errors,
    path: &str,
    word: Option<&str>,
    default: Decision,
) -> Decision {
    match word {
        None => default,
        Some("allow") => Decision::Allow,
        Some("deny") => Decision::Deny,
        Some(other) => {
            errors.push(path, format!("{other:?}: use allow or deny"));
            default
        }
    }
}

/// Parses one caller: a SPIFFE ID, or else a service name.
pub fn principal(errors: &mut Errors, path: &str, entry: &str) -> Option<Principal> {
    if entry.starts_with("spiffe://") {
        entry
            .parse()
            .map(Principal::Id)
            .map_err(|e| errors.push(path, format!("{entry:?}: {e}")))
            .ok()
    } else {
        check_label(errors, path, entry);
        Some(Principal::Service(entry.to_owned()))
    }
}

/// Validates the block at `path` (e.g. `authorization`); an absent `default` is `default`.
pub fn validate(
    file: AuthorizationFile,
    path: &str,
    default: Decision,
    errors: &mut Errors,
) -> AuthorizationPolicy {
    let default = decision(
        errors,
        &format!("{path}.default"),
        file.default.as_deref(),
        default,
    );
    let mut principals = |list: Vec<String>, field: &str| -> Vec<Principal> {
        list.iter()
            .enumerate()
            .filter_map(|(i, entry)| principal(errors, &format!("{path}.{field}[{i}]"), entry))
            .collect()
    };
    let allow = principals(file.allow, "allow");
    let deny = principals(file.deny, "deny");
    let rules = rules(file.rules, &format!("{path}.rules"), errors);
    let unauthenticated = decision(
        errors,
        &format!("{path}.unauthenticated"),
        file.unauthenticated.as_deref(),
        Decision::Deny,
    );
    AuthorizationPolicy {
        default,
        allow,
        deny,
        rules,
        unauthenticated,
    }
}

fn rules(files: Vec<RuleFile>, path: &str, errors: &mut Errors) -> Vec<AuthorizationRule> {
    if files.len() > MAX_RULES {
        errors.push(path, format!("at most {MAX_RULES} rules"));
    }
    let mut names = std::collections::BTreeSet::new();
    files
        .into_iter()
        .enumerate()
        .map(|(i, file)| {
            let at = |field: &str| format!("{path}[{i}].{field}");
            let name = file.name.unwrap_or_default();
            if name.is_empty() {
                errors.push(at("name"), "missing: a refusal names the rule");
            } else if !names.insert(name.clone()) {
                errors.push(at("name"), format!("{name:?} names two rules"));
            } else {
                check_label(errors, &at("name"), &name);
            }
            let matches: Vec<RouteMatch> = match file.matches {
                None => vec![RouteMatch::any()],
                Some(list) if list.is_empty() => vec![RouteMatch::any()],
                Some(list) => list
                    .into_iter()
                    .enumerate()
                    .map(|(j, m)| {
                        let m_at = format!("{path}[{i}].matches[{j}]");
                        let m = crate::route_match::validate(m, &m_at, errors);
                        if !m.headers.is_empty() || !m.query_params.is_empty() {
                            errors.push(
                                m_at,
                                "rules match method and path only: a caller chooses its \
                                 headers and query",
                            );
                        }
                        m
                    })
                    .collect(),
            };
            let default = decision(
                errors,
                &at("default"),
                file.default.as_deref(),
                Decision::Deny,
            );
            let mut principals = |list: Vec<String>, field: &str| -> Vec<Principal> {
                list.iter()
                    .enumerate()
                    .filter_map(|(j, entry)| {
                        principal(errors, &format!("{}[{j}]", at(field)), entry)
                    })
                    .collect()
            };
            let allow = principals(file.allow, "allow");
            let deny = principals(file.deny, "deny");
            AuthorizationRule {
                name,
                matches,
                default,
                allow,
                deny,
            }
        })
        .collect()
}

// === impl Principal ===

impl Principal {
    /// Whether this names `caller`; a service name names only callers of `trust_domain`.
    pub fn names(&self, caller: &SpiffeId, trust_domain: &str) -> bool {
        match self {
            Principal::Id(id) => id == caller,
            Principal::Service(name) => {
                caller.trust_domain() == trust_domain && caller.service() == Some(name.as_str())
            }
        }
    }
}

// === impl AuthorizationPolicy ===

impl AuthorizationPolicy {
    /// Decides for `caller` calling `service` in `trust_domain` with a request of `method` to
    /// `path` (empty for a CONNECT tunnel, which has none).
    pub fn check(
        &self,
        caller: &SpiffeId,
        service: &str,
        trust_domain: &str,
        method: &str,
        path: &str,
    ) -> Result<(), Unauthorized> {
        let names = |p: &Principal| p.names(caller, trust_domain);
        let refuse = |rule: String| {
            Err(Unauthorized {
                caller: caller.to_string(),
                service: service.to_owned(),
                rule,
            })
        };
        if self.deny.iter().any(names) {
            return refuse("it is on authorization.deny".to_owned());
        }
        match self.rule(method, path) {
            Some(rule) => {
                let at = format!("authorization.rules[{}]", rule.name);
                if rule.deny.iter().any(names) {
                    refuse(format!("it is on {at}.deny"))
                } else if rule.allow.iter().any(names) || rule.default == Decision::Allow {
                    Ok(())
                } else {
                    refuse(only_for(method, path, &at))
                }
            }
            None if path.is_empty() && !self.rules.is_empty() => {
                refuse(TUNNEL_NEEDS_RULE.to_owned())
            }
            None if self.allow.iter().any(names) => Ok(()),
            None => match self.default {
                Decision::Allow => Ok(()),
                Decision::Deny => {
                    refuse("it is not on authorization.allow and the default is deny".to_owned())
                }
            },
        }
    }

    /// Decides for a plain connection from outside the mesh, which has no identity:
    /// `unauthenticated` first, then a matching rule's `default` (no list can name it).
    pub fn check_unauthenticated(
        &self,
        service: &str,
        method: &str,
        path: &str,
    ) -> Result<(), UnauthenticatedRefused> {
        if self.unauthenticated == Decision::Deny {
            return Err(UnauthenticatedRefused::Plain(Unauthenticated {
                service: service.to_owned(),
            }));
        }
        let refuse = |rule: String| {
            Err(UnauthenticatedRefused::Rule(Unauthorized {
                caller: UNAUTHENTICATED.to_owned(),
                service: service.to_owned(),
                rule,
            }))
        };
        match self.rule(method, path) {
            Some(rule) if rule.default == Decision::Allow => Ok(()),
            Some(rule) => refuse(only_for(
                method,
                path,
                &format!("authorization.rules[{}]", rule.name),
            )),
            None if path.is_empty() && !self.rules.is_empty() => {
                refuse(TUNNEL_NEEDS_RULE.to_owned())
            }
            None => Ok(()),
        }
    }

    /// The rule that decides a request of `method` to `path` (empty for a tunnel), if any.
    fn rule(&self, method: &str, path: &str) -> Option<&AuthorizationRule> {
        let tunnel = path.is_empty();
        let none = |_: &str| None;
        self.rules
            .iter()
            .flat_map(|rule| rule.matches.iter().map(move |m| (rule, m)))
            .filter(|(_, m)| {
                if tunnel {
                    // Only a rule for CONNECT, or one for every request, takes a tunnel.
                    m.method.as_deref().is_none_or(|mm| mm == method)
                        && **m
                            == RouteMatch {
                                method: m.method.clone(),
                                ..RouteMatch::any()
                            }
                } else {
                    m.matches(method, path, none, None)
                }
            })
            .min_by(|(_, a), (_, b)| a.precedence(b))
            .map(|(rule, _)| rule)
    }
}

/// Why a plain connection's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnauthenticatedRefused {
    /// The service takes no plain connections.
    #[error(transparent)]
    Plain(Unauthenticated),
    /// It does, but a rule keeps this request for callers it names.
    #[error(transparent)]
    Rule(Unauthorized),
}

/// Why a tunnel is refused when a service has rules and none is for tunnels.
const TUNNEL_NEEDS_RULE: &str = "authorization.rules restrict paths and a tunnel has none: a rule \
                                 for method CONNECT may let it in";

/// A refusal by the rule at `at`, which keeps the request for the callers it names.
fn only_for(method: &str, path: &str, at: &str) -> String {
    let what = if path.is_empty() {
        "a tunnel".to_owned()
    } else {
        format!("{method} {path}")
    };
    format!("{what} is only for callers on {at}.allow")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn policy(default: Decision, allow: &[&str], deny: &[&str]) -> AuthorizationPolicy {
        let principal = |s: &&str| {
            if s.starts_with("spiffe://") {
                Principal::Id(id(s))
            } else {
                Principal::Service((*s).to_owned())
            }
        };
        AuthorizationPolicy {
            default,
            allow: allow.iter().map(principal).collect(),
            deny: deny.iter().map(principal).collect(),
            rules: Vec::new(),
            unauthenticated: Decision::Deny,
        }
    }

    const ORDERS: &str = "spiffe://mesh.local/ns/default/sa/orders";
    const PAYMENTS: &str = "spiffe://mesh.local/ns/default/sa/payments";

    #[test]
    fn default_deny_lets_in_only_the_allowed() {
        let p = policy(Decision::Deny, &["orders"], &[]);
        assert!(
            p.check(&id(ORDERS), "inventory", "mesh.local", "GET", "/")
                .is_ok()
        );
        let err = p
            .check(&id(PAYMENTS), "inventory", "mesh.local", "GET", "/")
            .unwrap_err();
        assert!(
            err.to_string().contains("not on authorization.allow"),
            "{err}"
        );
        // A service name only matches in our own trust domain.
        let foreign = id("spiffe://other.domain/ns/default/sa/orders");
        assert!(
            p.check(&foreign, "inventory", "mesh.local", "GET", "/")
                .is_err()
        );
    }

    #[test]
    fn deny_wins_and_ids_match_exactly() {
        let p = policy(Decision::Allow, &[ORDERS], &["orders", PAYMENTS]);
        let err = p
            .check(&id(ORDERS), "inventory", "mesh.local", "GET", "/")
            .unwrap_err();
        assert_eq!(err.rule, "it is on authorization.deny");
        assert!(
            p.check(&id(PAYMENTS), "inventory", "mesh.local", "GET", "/")
                .is_err()
        );
        assert!(
            p.check(
                &id("spiffe://mesh.local/ns/default/sa/storefront"),
                "inventory",
                "mesh.local",
                "GET",
                "/"
            )
            .is_ok()
        );
    }

    const STOREFRONT: &str = "spiffe://mesh.local/ns/default/sa/storefront";

    fn with_rules(yaml_rules: &str) -> AuthorizationPolicy {
        let file = AuthorizationFile {
            default: Some("deny".into()),
            allow: vec!["orders".into(), "storefront".into()],
            deny: vec![],
            rules: serde_saphyr::from_str(yaml_rules).unwrap(),
            unauthenticated: Some("allow".into()),
        };
        let mut errors = Errors::default();
        let policy = validate(file, "authorization", Decision::Allow, &mut errors);
        assert!(errors.is_empty(), "{:?}", errors.into_vec());
        policy
    }

    #[test]
    fn a_rule_narrows_who_may_make_the_requests_it_matches() {
        let p = with_rules(
            "- { name: product-writes, matches: [{ method: POST, path: { value: /products } }], allow: [orders] }\n\
             - { name: admin, matches: [{ path: { value: /admin } }], deny: [orders], default: allow }\n",
        );
        let check = |caller: &str, method: &str, path: &str| {
            p.check(&id(caller), "inventory", "mesh.local", method, path)
                .map_err(|e| e.rule)
        };
        assert_eq!(check(STOREFRONT, "GET", "/products"), Ok(()));
        assert_eq!(
            check(STOREFRONT, "POST", "/products/1"),
            Err(
                "POST /products/1 is only for callers on authorization.rules[product-writes].allow"
                    .into()
            )
        );
        assert_eq!(check(ORDERS, "POST", "/products"), Ok(()));
        assert_eq!(
            check(ORDERS, "GET", "/admin"),
            Err("it is on authorization.rules[admin].deny".into())
        );
        // A rule's default lets in callers the service-wide lists would not.
        assert_eq!(check(PAYMENTS, "GET", "/admin/x"), Ok(()));
        assert!(check(PAYMENTS, "GET", "/other").is_err());
        // A tunnel has no path for these rules to match: refused, naming why.
        let tunnel = check(ORDERS, "CONNECT", "").unwrap_err();
        assert!(tunnel.contains("a rule for method CONNECT"), "{tunnel}");
        let p =
            with_rules("- { name: tunnels, matches: [{ method: CONNECT }], allow: [orders] }\n");
        assert!(
            p.check(&id(ORDERS), "redis", "mesh.local", "CONNECT", "")
                .is_ok()
        );
        assert!(
            p.check(&id(STOREFRONT), "redis", "mesh.local", "CONNECT", "")
                .is_err()
        );
    }

    #[test]
    fn rules_match_only_method_and_path() {
        let file = AuthorizationFile {
            rules: serde_saphyr::from_str(
                "- { name: r, matches: [{ headers: [{ name: x-admin, value: 'yes' }] }] }\n\
                 - { matches: [{ method: post }] }\n",
            )
            .unwrap(),
            ..AuthorizationFile::default()
        };
        let mut errors = Errors::default();
        validate(file, "authorization", Decision::Allow, &mut errors);
        let errors: Vec<String> = errors.lines();
        assert_eq!(
            errors,
            [
                "authorization.rules[0].matches[0]: rules match method and path only: a caller chooses its headers and query",
                "authorization.rules[1].name: missing: a refusal names the rule",
                "authorization.rules[1].matches[0].method: methods are case-sensitive and \"post\" would match no standard one: write \"POST\"",
            ]
        );
    }

    #[test]
    fn unauthenticated_callers_are_refused_unless_allowed_and_no_list_names_them() {
        // Denied by default, whatever the service-wide default says.
        let p = policy(Decision::Allow, &[], &[]);
        let err = p
            .check_unauthenticated("inventory", "GET", "/")
            .unwrap_err();
        assert!(matches!(err, UnauthenticatedRefused::Plain(_)), "{err}");
        assert!(
            err.to_string()
                .contains("set authorization.unauthenticated: allow"),
            "{err}"
        );
        // Allowed: in, even though the service-wide default is deny.
        let mut p = policy(Decision::Deny, &["orders"], &[]);
        p.unauthenticated = Decision::Allow;
        assert!(p.check_unauthenticated("inventory", "GET", "/").is_ok());
        // A rule that names callers keeps its requests for them; one whose default is allow
        // lets an unauthenticated caller in too.
        let p = with_rules(
            "- { name: product-writes, matches: [{ method: POST, path: { value: /products } }], allow: [orders] }\n\
             - { name: public, matches: [{ path: { value: /public } }], default: allow }\n",
        );
        let err = p
            .check_unauthenticated("inventory", "POST", "/products")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "caller unauthenticated may not call inventory: POST /products is only for callers \
             on authorization.rules[product-writes].allow"
        );
        assert!(
            p.check_unauthenticated("inventory", "GET", "/public/x")
                .is_ok()
        );
        assert!(
            p.check_unauthenticated("inventory", "GET", "/other")
                .is_ok()
        );
        // A tunnel needs a rule for CONNECT when there are rules.
        assert!(p.check_unauthenticated("inventory", "CONNECT", "").is_err());
    }

    #[test]
    fn unauthenticated_is_allow_or_deny_and_deny_by_default() {
        let mut errors = Errors::default();
        let p = validate(
            AuthorizationFile::default(),
            "authorization",
            Decision::Allow,
            &mut errors,
        );
        assert_eq!(p.unauthenticated, Decision::Deny);
        let file = AuthorizationFile {
            unauthenticated: Some("yes".into()),
            ..AuthorizationFile::default()
        };
        validate(file, "authorization", Decision::Allow, &mut errors);
        assert_eq!(
            errors.lines(),
            ["authorization.unauthenticated: \"yes\": use allow or deny"]
        );
    }
}
