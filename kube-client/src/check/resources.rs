//! The objects `meshctl install` makes for the control plane: its namespace, ServiceAccount and
//! rights, and the policy CRD.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use super::outcome::{Outcome, REINSTALL, bounded};
use super::review::{Subject, missing};
use crate::access;
use crate::names;

/// Namespace mesh-system exists.
pub(super) async fn namespace(client: &kube::Client) -> Outcome {
    match bounded(Api::<Namespace>::all(client.clone()).get(names::NAMESPACE)).await {
        Ok(_) => Outcome::Passed(None),
        Err(e) if e.is_not_found() => Outcome::failed(
            format!("namespace {} does not exist", names::NAMESPACE),
            "install the control plane: meshctl install | kubectl apply -f -",
        ),
        Err(e) => Outcome::failed(e.to_string(), "check the API server's health"),
    }
}

/// The control plane's ServiceAccount exists.
pub(super) async fn service_account(client: &kube::Client) -> Outcome {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), names::NAMESPACE);
    match bounded(api.get(names::CONTROL_PLANE)).await {
        Ok(_) => Outcome::Passed(None),
        Err(e) if e.is_not_found() => Outcome::failed(
            format!(
                "ServiceAccount {}/{} does not exist",
                names::NAMESPACE,
                names::CONTROL_PLANE
            ),
            REINSTALL,
        ),
        Err(e) => Outcome::failed(e.to_string(), "check the API server's health"),
    }
}

/// The control plane's ServiceAccount holds every right of [`access::control_plane_rights`].
pub(super) async fn control_plane_rights(client: &kube::Client) -> Outcome {
    let user = names::control_plane_user();
    let groups = names::control_plane_groups();
    let subject = Subject::User {
        name: &user,
        groups: &groups,
    };
    let wanted = access::control_plane_rights();
    match missing(client, &subject, &wanted).await {
        Ok(lacking) if lacking.is_empty() => Outcome::passed(format!("{} rights", wanted.len())),
        Ok(lacking) => {
            let shown: Vec<String> = lacking.iter().map(ToString::to_string).collect();
            Outcome::failed(
                format!("{user} may not: {}", shown.join("; ")),
                format!(
                    "its ClusterRole/Role or their bindings ({}) are missing or changed; {REINSTALL}",
                    names::CONTROL_PLANE
                ),
            )
        }
        Err(e) => Outcome::failed(
            format!("cannot review the control plane's rights: {e}"),
            "check the API server's health",
        ),
    }
}

/// The policy CRD exists and the API server serves it.
pub(super) async fn policy_crd(client: &kube::Client) -> Outcome {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = match bounded(api.get(names::POLICY_CRD)).await {
        Ok(crd) => crd,
        Err(e) if e.is_not_found() => {
            return Outcome::failed(
                format!(
                    "CustomResourceDefinition {} does not exist",
                    names::POLICY_CRD
                ),
                REINSTALL,
            );
        }
        Err(e) => return Outcome::failed(e.to_string(), "check the API server's health"),
    };
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    if established {
        Outcome::passed(names::POLICY_CRD)
    } else {
        Outcome::failed(
            format!(
                "CustomResourceDefinition {} is not Established",
                names::POLICY_CRD
            ),
            format!(
                "see why: kubectl get crd {} -o jsonpath='{{.status.conditions}}'",
                names::POLICY_CRD
            ),
        )
    }
}
