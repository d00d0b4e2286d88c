//! The control plane's Deployment has a ready replica.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use super::outcome::{Outcome, REINSTALL, bounded};
use crate::names;

/// At least one replica of the control plane is ready.
pub(super) async fn ready(client: &kube::Client) -> Outcome {
    let api = Api::<Deployment>::namespaced(client.clone(), names::NAMESPACE);
    let deployment = match bounded(api.get(names::CONTROL_PLANE)).await {
        Ok(deployment) => deployment,
        Err(e) if e.is_not_found() => {
            return Outcome::failed(
                format!(
                    "Deployment {}/{} does not exist",
                    names::NAMESPACE,
                    names::CONTROL_PLANE
                ),
                REINSTALL,
            );
        }
        Err(e) => return Outcome::failed(e.to_string(), "check the API server's health"),
    };
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let ready = deployment
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready >= 1 {
        Outcome::passed(format!("{ready} of {wanted} replicas ready"))
    } else {
        Outcome::failed(
            format!("0 of {wanted} replicas ready"),
            format!(
                "see why: kubectl -n {ns} describe deployment {name}; kubectl -n {ns} logs \
                 deployment/{name}",
                ns = names::NAMESPACE,
                name = names::CONTROL_PLANE
            ),
        )
    }
}
