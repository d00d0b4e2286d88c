//! The caller's own rights: everything the later checks read or try, asked up front so a
//! refusal names the missing right instead of surfacing as a failed check of the mesh.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::Api;
use kube::api::PostParams;

use super::outcome::{Outcome, bounded};
use super::review::{Subject, missing};
use crate::access::Right;
use crate::names;

/// The rights `meshctl check` uses, with the dry-run pod created in `pod_namespace`.
pub fn needed(pod_namespace: &str) -> Vec<Right> {
    let right = |verb: &str, group: &str, resource: &str, namespace: Option<&str>| Right {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource: resource.to_owned(),
        subresource: None,
        namespace: namespace.map(str::to_owned),
        name: None,
    };
    let mesh = Some(names::NAMESPACE);
    vec![
        right("get", "", "namespaces", None),
        right("get", "", "serviceaccounts", mesh),
        right(
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews",
            None,
        ),
        right(
            "get",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        right("get", "apps", "deployments", mesh),
        right(
            "get",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            None,
        ),
        Right {
            name: Some(names::CA_SECRET.to_owned()),
            ..right("get", "", "secrets", mesh)
        },
        right("create", "", "pods", Some(pod_namespace)),
        right("list", "", "pods", None),
    ]
}

/// Whether the caller holds every right in `rights`; a failure lists the missing ones and the
/// RBAC that grants them.
pub(super) async fn check(client: &kube::Client, rights: &[Right]) -> Outcome {
    let lacking = match missing(client, &Subject::Caller, rights).await {
        Ok(lacking) => lacking,
        Err(e) => {
            return Outcome::failed(
                format!("cannot ask the API server what the caller may do: {e}"),
                "check needs SelfSubjectAccessReview, which every authenticated user has unless \
                 the cluster removed it from the system:basic-user ClusterRole",
            );
        }
    };
    if lacking.is_empty() {
        return Outcome::passed(format!("{} rights", rights.len()));
    }
    let user = whoami(client)
        .await
        .unwrap_or_else(|| "<your user>".to_owned());
    let shown: Vec<String> = lacking.iter().map(ToString::to_string).collect();
    Outcome::failed(
        format!("{user} may not: {}", shown.join("; ")),
        grant(&lacking, &user),
    )
}

/// The caller's user name, if the server says (SelfSubjectReview, Kubernetes 1.28+).
async fn whoami(client: &kube::Client) -> Option<String> {
    let review = bounded(
        Api::<SelfSubjectReview>::all(client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default()),
    )
    .await
    .ok()?;
    review.status?.user_info?.username
}

/// kubectl commands a cluster admin runs to grant `lacking` to `user`: one ClusterRole per
/// verb (so no verb reaches a resource it was not asked for) and a binding for each.
fn grant(lacking: &[Right], user: &str) -> String {
    let mut by_verb: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for right in lacking {
        let resources = by_verb.entry(&right.verb).or_default();
        let resource = right.resource_name();
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }
    let mut commands = Vec::new();
    for (verb, resources) in by_verb {
        let role = format!("mesh-check-{verb}");
        commands.push(format!(
            "kubectl create clusterrole {role} --verb={verb} --resource={}",
            resources.join(",")
        ));
        commands.push(format!(
            "kubectl create clusterrolebinding {role} --clusterrole={role} --user={user}"
        ));
    }
    format!(
        "a cluster admin grants them with:\n{}",
        commands
            .iter()
            .map(|c| format!("  {c}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_has_one_role_per_verb_naming_each_resource_once() {
        let rights = needed("shop");
        let lacking: Vec<Right> = rights
            .into_iter()
            .filter(|r| r.resource == "pods" || r.resource == "deployments")
            .collect();
        let fix = grant(&lacking, "alice");
        assert_eq!(
            fix,
            "a cluster admin grants them with:\n\
             \x20 kubectl create clusterrole mesh-check-create --verb=create --resource=pods\n\
             \x20 kubectl create clusterrolebinding mesh-check-create --clusterrole=mesh-check-create --user=alice\n\
             \x20 kubectl create clusterrole mesh-check-get --verb=get --resource=deployments.apps\n\
             \x20 kubectl create clusterrolebinding mesh-check-get --clusterrole=mesh-check-get --user=alice\n\
             \x20 kubectl create clusterrole mesh-check-list --verb=list --resource=pods\n\
             \x20 kubectl create clusterrolebinding mesh-check-list --clusterrole=mesh-check-list --user=alice"
        );
    }
}
