//! The rights the control plane needs, as RBAC rules: cluster-wide, to read what it serves
//! (services, endpoint slices, pods, namespaces, its policy objects, Gateway API objects), review sidecars' tokens
//! and report; in its own namespace, to elect a leader and keep its CA. `meshctl install`
//! writes them into a ClusterRole and a Role, `meshctl check` asks the API server whether the
//! control plane's ServiceAccount holds each of them.

use crate::names;

/// One RBAC rule: `verbs` on `resources` of `group`, limited to `names` when not empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The API group, `""` for the core group.
    pub group: &'static str,
    /// Resources, a subresource as `resource/subresource`.
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Object names the rule is limited to; empty for all. Kubernetes cannot limit `create`
    /// by name, and limits `list` and `watch` only for requests that select the one name
    /// (field selector `metadata.name=<name>`).
    pub names: &'static [&'static str],
}

/// One verb on one resource: the unit an access review asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Right {
    /// The verb.
    pub verb: String,
    /// The API group, `""` for the core group.
    pub group: String,
    /// The resource.
    pub resource: String,
    /// Its subresource, if any.
    pub subresource: Option<String>,
    /// The namespace; `None` for cluster-scoped resources or all namespaces.
    pub namespace: Option<String>,
    /// The object's name, if the right is limited to one.
    pub name: Option<String>,
}

/// The control plane's rights across the cluster (its ClusterRole).
pub const CONTROL_PLANE_CLUSTER_RULES: &[Rule] = &[
    // The workloads it names, addresses and serves configuration for.
    Rule {
        group: "",
        resources: &["services", "pods", "namespaces"],
        verbs: &["get", "list", "watch"],
        names: &[],
    },
    Rule {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: &["get", "list", "watch"],
        names: &[],
    },
    // Sidecars prove who they are with projected ServiceAccount tokens.
    Rule {
        group: "authentication.k8s.io",
        resources: &["tokenreviews"],
        verbs: &["create"],
        names: &[],
    },
    // Its policy objects, and their status (accepted, or why not).
    Rule {
        group: names::POLICY_GROUP,
        resources: &[names::POLICY_PLURAL],
        verbs: &["get", "list", "watch"],
        names: &[],
    },
    Rule {
        group: names::POLICY_GROUP,
        resources: &["meshservices/status"],
        verbs: &["update", "patch"],
        names: &[],
    },
    // Ingress configuration from the Gateway API, and the status it reports on it.
    Rule {
        group: names::GATEWAY_API_GROUP,
        resources: &["gateways", "httproutes"],
        verbs: &["get", "list", "watch"],
        names: &[],
    },
    Rule {
        group: names::GATEWAY_API_GROUP,
        resources: &["gateways/status", "httproutes/status"],
        verbs: &["update", "patch"],
        names: &[],
    },
    // Events about the objects it reads, in their namespaces.
    Rule {
        group: "",
        resources: &["events"],
        verbs: &["create", "patch"],
        names: &[],
    },
    Rule {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        names: &[],
    },
    // The leader keeps the webhook's caBundle the trust bundle through root rotations.
    Rule {
        group: "admissionregistration.k8s.io",
        resources: &["mutatingwebhookconfigurations"],
        verbs: &["get", "update"],
        names: &[names::WEBHOOK_CONFIGURATION],
    },
];

/// The control plane's rights in its own namespace (its Role).
pub const CONTROL_PLANE_NAMESPACE_RULES: &[Rule] = &[
    // Leader election with Lease `mesh-control-plane`, and a Lease per replica
    // (`mesh-control-plane-<replica>`) summarising its sidecars, which the leader lists.
    Rule {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["create", "list"],
        names: &[],
    },
    Rule {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "update"],
        names: &[],
    },
    // Its CA: read at start, watched by every replica, written on rotation by the leader.
    Rule {
        group: "",
        resources: &["secrets"],
        verbs: &["create"],
        names: &[],
    },
    Rule {
        group: "",
        resources: &["secrets"],
        verbs: &["get", "update"],
        names: &[names::CA_SECRET],
    },
    // A list or watch limited to one name by the field selector `metadata.name=<name>`.
    Rule {
        group: "",
        resources: &["secrets"],
        verbs: &["list", "watch"],
        names: &[names::CA_SECRET],
    },
];

impl Rule {
    /// Each verb on each resource (and each name) of the rule, in `namespace`.
    pub fn rights(&self, namespace: Option<&str>) -> Vec<Right> {
        let mut rights = Vec::new();
        for resource in self.resources {
            let (resource, subresource) = match resource.split_once('/') {
                Some((resource, sub)) => (resource, Some(sub.to_owned())),
                None => (*resource, None),
            };
            for verb in self.verbs {
                let names: Vec<Option<&str>> = if self.names.is_empty() {
                    vec![None]
                } else {
                    self.names.iter().map(|n| Some(*n)).collect()
                };
                for name in names {
                    rights.push(Right {
                        verb: (*verb).to_owned(),
                        group: self.group.to_owned(),
                        resource: resource.to_owned(),
                        subresource: subresource.clone(),
                        namespace: namespace.map(str::to_owned),
                        name: name.map(str::to_owned),
                    });
                }
            }
        }
        rights
    }
}

/// Every right the control plane needs: its ClusterRole's across the cluster, its Role's in
/// its namespace.
pub fn control_plane_rights() -> Vec<Right> {
    CONTROL_PLANE_CLUSTER_RULES
        .iter()
        .flat_map(|rule| rule.rights(None))
        .chain(
            CONTROL_PLANE_NAMESPACE_RULES
                .iter()
                .flat_map(|rule| rule.rights(Some(names::NAMESPACE))),
        )
        .collect()
}

impl Right {
    /// `resource[/subresource][.group]`, as kubectl spells a resource.
    pub fn resource_name(&self) -> String {
        let mut name = self.resource.clone();
        if let Some(sub) = &self.subresource {
            name = format!("{name}/{sub}");
        }
        if !self.group.is_empty() {
            name = format!("{name}.{}", self.group);
        }
        name
    }
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource_name())?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        match &self.namespace {
            Some(namespace) => write!(f, " in namespace {namespace}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_expands_to_one_right_per_verb_resource_and_name() {
        let rights = CONTROL_PLANE_NAMESPACE_RULES[3].rights(Some("mesh-system"));
        let shown: Vec<String> = rights.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "get secrets \"mesh-ca\" in namespace mesh-system",
                "update secrets \"mesh-ca\" in namespace mesh-system",
            ]
        );
        let status = CONTROL_PLANE_CLUSTER_RULES[4].rights(None);
        assert_eq!(status[0].resource, "meshservices");
        assert_eq!(status[0].subresource.as_deref(), Some("status"));
        assert_eq!(
            status[0].to_string(),
            "update meshservices/status.mesh.local"
        );
    }

    #[test]
    fn names_limit_only_verbs_kubernetes_can_limit_by_name() {
        for rule in CONTROL_PLANE_CLUSTER_RULES
            .iter()
            .chain(CONTROL_PLANE_NAMESPACE_RULES)
        {
            if !rule.names.is_empty() {
                for verb in rule.verbs {
                    assert!(!["create", "deletecollection"].contains(verb), "{rule:?}");
                }
            }
        }
    }
}
