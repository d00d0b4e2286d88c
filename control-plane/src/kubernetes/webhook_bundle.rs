//! The leader keeps the injecting webhook's `caBundle` (MutatingWebhookConfiguration
//! `mesh-sidecar-injector`, both webhooks) equal to the trust bundle, so the API server trusts
//! the webhook's serving certificate through a root rotation: every replica serves the webhook
//! with a certificate of its own from the shared CA, and once the new root signs it the API
//! server must trust that root already. One writer is enough, so only the leader writes;
//! a new leader checks again.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::mesh::{Leadership, Mesh};

/// Keeps the webhooks' `caBundle` equal to the mesh's trust bundle while `leadership` says
/// this replica leads, until `shutdown`; looks again at least every `every`.
pub(crate) async fn maintain(
    client: kube::Client,
    mesh: Arc<Mesh>,
    leadership: Arc<dyn Leadership>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut ca_rx = mesh.watch_authority();
    // The bundle the configuration was last found or made to hold.
    let mut in_place: Option<String> = None;
    loop {
        if leadership.view().leading {
            let bundle = mesh.authority().trust_bundle_pem();
            if in_place.as_ref() != Some(&bundle) {
                match write(&api, &bundle).await {
                    Ok(true) => in_place = Some(bundle),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        configuration = mesh_kube::names::WEBHOOK_CONFIGURATION,
                        error = %e,
                        "cannot update the webhook's caBundle; retrying"
                    ),
                }
            }
        } else {
            in_place = None;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = ca_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Puts `bundle` in every webhook's `caBundle`; false when there is no configuration (the
/// webhook is not installed).
async fn write(api: &Api<MutatingWebhookConfiguration>, bundle: &str) -> Result<bool, kube::Error> {
    let name = mesh_kube::names::WEBHOOK_CONFIGURATION;
    let Some(mut configuration) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let wanted = ByteString(bundle.as_bytes().to_vec());
    let mut changed = false;
    for webhook in configuration.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&wanted) {
            webhook.client_config.ca_bundle = Some(wanted.clone());
            changed = true;
        }
    }
    if changed {
        // Over the version read: a concurrent change is refused, and retried on the next look.
        api.replace(name, &PostParams::default(), &configuration)
            .await?;
        tracing::info!(
            configuration = name,
            "the webhook's caBundle is the trust bundle now"
        );
    }
    Ok(true)
}
