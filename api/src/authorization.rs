//! Who may call a service: checked by the callee's sidecar (step 10 of the request path),
//! written by operators in the sidecar's bootstrap file or the control plane's config.
//!
//! The policy names callers by service (in this sidecar's trust domain) or by full SPIFFE ID. A
//! caller on the `deny` list is refused; one on the `allow` list is let in; anyone else gets the
//! `default`. A refusal is a 403 with `x-mesh-error: unauthorized` and a body naming the rule
//! that refused, so the calling team knows what to ask for.

use serde::{Deserialize, Serialize};

use crate::spiffe::SpiffeId;
use crate::validate::{Errors, check_label};

/// Who may call this service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthorizationPolicy {
    /// What callers on neither list get.
    pub default: Decision,
    /// Callers let in.
    pub allow: Vec<Principal>,
    /// Callers refused, whatever else says.
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
    /// The caller's identity.
    pub caller: SpiffeId,
    /// This service.
    pub service: String,
    /// The rule that refused.
    pub rule: &'static str,
}

impl Default for AuthorizationPolicy {
    /// Everyone in the mesh may call, as before any policy is written.
    fn default() -> Self {
        Self {
            default: Decision::Allow,
            allow: Vec::new(),
            deny: Vec::new(),
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
    AuthorizationPolicy {
        default,
        allow,
        deny,
    }
}

// === impl AuthorizationPolicy ===

impl AuthorizationPolicy {
    /// Decides for `caller` calling `service` in `trust_domain`.
    pub fn check(
        &self,
        caller: &SpiffeId,
        service: &str,
        trust_domain: &str,
    ) -> Result<(), Unauthorized> {
        let names = |p: &Principal| match p {
            Principal::Id(id) => id == caller,
            Principal::Service(name) => {
                caller.trust_domain() == trust_domain && caller.service() == Some(name.as_str())
            }
        };
        let refuse = |rule| {
            Err(Unauthorized {
                caller: caller.clone(),
                service: service.to_owned(),
                rule,
            })
        };
        if self.deny.iter().any(names) {
            return refuse("it is on authorization.deny");
        }
        if self.allow.iter().any(names) {
            return Ok(());
        }
        match self.default {
            Decision::Allow => Ok(()),
            Decision::Deny => refuse("it is not on authorization.allow and the default is deny"),
        }
    }
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
        }
    }

    const ORDERS: &str = "spiffe://mesh.local/ns/default/sa/orders";
    const PAYMENTS: &str = "spiffe://mesh.local/ns/default/sa/payments";

    #[test]
    fn default_deny_lets_in_only_the_allowed() {
        let p = policy(Decision::Deny, &["orders"], &[]);
        assert!(p.check(&id(ORDERS), "inventory", "mesh.local").is_ok());
        let err = p
            .check(&id(PAYMENTS), "inventory", "mesh.local")
            .unwrap_err();
        assert!(
            err.to_string().contains("not on authorization.allow"),
            "{err}"
        );
        // A service name only matches in our own trust domain.
        let foreign = id("spiffe://other.domain/ns/default/sa/orders");
        assert!(p.check(&foreign, "inventory", "mesh.local").is_err());
    }

    #[test]
    fn deny_wins_and_ids_match_exactly() {
        let p = policy(Decision::Allow, &[ORDERS], &["orders", PAYMENTS]);
        let err = p.check(&id(ORDERS), "inventory", "mesh.local").unwrap_err();
        assert_eq!(err.rule, "it is on authorization.deny");
        assert!(p.check(&id(PAYMENTS), "inventory", "mesh.local").is_err());
        assert!(
            p.check(
                &id("spiffe://mesh.local/ns/default/sa/storefront"),
                "inventory",
                "mesh.local"
            )
            .is_ok()
        );
    }
}
