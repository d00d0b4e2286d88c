//! The injecting webhook: registered, trusting the mesh's root (which must be valid for a while
//! yet), and answering the API server with a mutated pod.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::outcome::{CallError, Outcome, REINSTALL, bounded};
use crate::names;

/// A root closer than this to its end fails the CA check.
pub const ROOT_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The webhook configuration, with both webhooks; or the outcome of not finding it.
pub(super) async fn configuration(
    client: &kube::Client,
) -> Result<MutatingWebhookConfiguration, Outcome> {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let config = match bounded(api.get(names::WEBHOOK_CONFIGURATION)).await {
        Ok(config) => config,
        Err(e) if e.is_not_found() => {
            return Err(Outcome::failed(
                format!(
                    "MutatingWebhookConfiguration {} does not exist",
                    names::WEBHOOK_CONFIGURATION
                ),
                REINSTALL,
            ));
        }
        Err(e) => {
            return Err(Outcome::failed(
                e.to_string(),
                "check the API server's health",
            ));
        }
    };
    let present: Vec<&str> = config
        .webhooks
        .iter()
        .flatten()
        .map(|w| w.name.as_str())
        .collect();
    let absent: Vec<&str> = [names::NAMESPACE_WEBHOOK, names::POD_WEBHOOK]
        .into_iter()
        .filter(|name| !present.contains(name))
        .collect();
    if absent.is_empty() {
        Ok(config)
    } else {
        Err(Outcome::failed(
            format!(
                "MutatingWebhookConfiguration {} lacks webhook {}",
                names::WEBHOOK_CONFIGURATION,
                absent.join(" and ")
            ),
            REINSTALL,
        ))
    }
}

/// Each webhook's caBundle holds the root of Secret mesh-ca, and the root is valid for at
/// least [`ROOT_MARGIN`] more.
pub(super) async fn ca_healthy(
    client: &kube::Client,
    config: &MutatingWebhookConfiguration,
) -> Outcome {
    let secrets = Api::<Secret>::namespaced(client.clone(), names::NAMESPACE);
    let secret = match bounded(secrets.get(names::CA_SECRET)).await {
        Ok(secret) => secret,
        Err(e) if e.is_not_found() => {
            return Outcome::failed(
                format!(
                    "Secret {}/{} does not exist",
                    names::NAMESPACE,
                    names::CA_SECRET
                ),
                REINSTALL,
            );
        }
        Err(e) => return Outcome::failed(e.to_string(), "check the API server's health"),
    };
    let root_pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get(names::CA_CERT_KEY))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let Some(root) = certificates(&root_pem).into_iter().next() else {
        return Outcome::failed(
            format!(
                "Secret {}/{} has no certificate under {}",
                names::NAMESPACE,
                names::CA_SECRET,
                names::CA_CERT_KEY
            ),
            REINSTALL,
        );
    };
    for webhook in config.webhooks.iter().flatten() {
        let bundle = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone())
            .unwrap_or_default();
        if !certificates(&bundle).contains(&root) {
            return Outcome::failed(
                format!(
                    "the caBundle of webhook {} does not hold the mesh's root (Secret {}/{}): \
                     the API server will not trust the webhook's certificate",
                    webhook.name,
                    names::NAMESPACE,
                    names::CA_SECRET
                ),
                REINSTALL,
            );
        }
    }
    validity(&root)
}

/// Whether the root is in its validity period and not within [`ROOT_MARGIN`] of its end.
fn validity(der: &[u8]) -> Outcome {
    let parsed = match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert,
        Err(e) => {
            return Outcome::failed(format!("the mesh's root cannot be parsed: {e}"), REINSTALL);
        }
    };
    let validity = parsed.validity();
    let until = validity.not_after.to_string();
    let rotate = "make a new root and install it: meshctl install --output-trust-anchor ca.pem \
                  | kubectl apply -f -, then kubectl -n mesh-system rollout restart deployment \
                  mesh-control-plane (sidecars take the new root as they restart)";
    if !validity.is_valid() {
        return Outcome::failed(
            format!(
                "the mesh's root is not valid now (valid from {} until {until})",
                validity.not_before
            ),
            rotate,
        );
    }
    match validity.time_to_expiration() {
        Some(left) if left.whole_seconds() >= ROOT_MARGIN.as_secs().cast_signed() => {
            Outcome::passed(format!("valid until {until}"))
        }
        left => Outcome::failed(
            format!(
                "the mesh's root expires on {until}, in {} days",
                left.map_or(0, |d| d.whole_days())
            ),
            rotate,
        ),
    }
}

/// The DER of each certificate in a PEM bundle.
fn certificates(pem_text: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect()
}

/// A dry-run create of an opted-in pod in `namespace` comes back with the proxy.
pub(super) async fn answers(client: &kube::Client, namespace: &str) -> Outcome {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let pod: Pod = match serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "mesh-check-",
            "labels": {
                names::INJECT_LABEL: "enabled",
                "app.kubernetes.io/name": "mesh-check",
            },
        },
        "spec": {
            "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }],
        },
    })) {
        Ok(pod) => pod,
        Err(e) => return Outcome::failed(format!("the probe pod: {e}"), "report this as a bug"),
    };
    let params = PostParams {
        dry_run: true,
        field_manager: Some("meshctl-check".to_owned()),
    };
    match bounded(pods.create(&params, &pod)).await {
        Ok(created) => {
            let injected = created
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.name == names::PROXY_CONTAINER));
            if injected {
                Outcome::passed(format!(
                    "a dry-run pod in {namespace} got {}",
                    names::PROXY_CONTAINER
                ))
            } else {
                Outcome::failed(
                    format!(
                        "did not inject: a dry-run pod labelled {}=enabled in namespace \
                         {namespace} came back without {}",
                        names::INJECT_LABEL,
                        names::PROXY_CONTAINER
                    ),
                    format!(
                        "check the webhooks' selectors (kubectl get \
                         mutatingwebhookconfiguration {} -o yaml: namespace {namespace} must not \
                         be excluded) and the control plane's log (kubectl -n {} logs \
                         deployment/{})",
                        names::WEBHOOK_CONFIGURATION,
                        names::NAMESPACE,
                        names::CONTROL_PLANE
                    ),
                )
            }
        }
        Err(e @ CallError::Kube(kube::Error::Api(_)))
            if e.to_string().contains("failed calling webhook") =>
        {
            Outcome::failed(
                format!("the webhook is unreachable: {e}"),
                format!(
                    "the API server cannot reach the webhook: check that Service {ns}/{name} has \
                     ready endpoints (kubectl -n {ns} get endpointslices -l \
                     kubernetes.io/service-name={name}) and that nothing (a NetworkPolicy, a \
                     firewall) keeps the API server from its port 15017",
                    ns = names::NAMESPACE,
                    name = names::CONTROL_PLANE
                ),
            )
        }
        Err(e) => Outcome::failed(
            format!("the dry-run pod in {namespace} was refused: {e}"),
            format!(
                "if the webhook refused it, the control plane's log says why (kubectl -n {} logs \
                 deployment/{}); else pass --namespace with a namespace you may create pods in",
                names::NAMESPACE,
                names::CONTROL_PLANE
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(valid_for: time::Duration) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + valid_for;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_root_within_30_days_of_its_end_fails_and_a_later_one_passes() {
        assert!(matches!(
            validity(&root(time::Duration::days(365))),
            Outcome::Passed(Some(detail)) if detail.contains("valid until")
        ));
        let Outcome::Failed { reason, fix } = validity(&root(time::Duration::days(10))) else {
            panic!("a root with 10 days left must fail");
        };
        assert!(
            reason.contains("in 9 days") || reason.contains("in 10 days"),
            "{reason}"
        );
        assert!(fix.contains("meshctl install"), "{fix}");
        let Outcome::Failed { reason, .. } = validity(&root(time::Duration::minutes(-5))) else {
            panic!("an expired root must fail");
        };
        assert!(reason.contains("not valid now"), "{reason}");
    }

    #[test]
    fn certificates_are_read_from_a_bundle_and_other_blocks_ignored() {
        let der = root(time::Duration::days(1));
        let bundle = format!(
            "{}{}",
            pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3])),
            pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()))
        );
        assert_eq!(certificates(bundle.as_bytes()), vec![der]);
        assert!(certificates(b"not pem").is_empty());
    }
}
