//! `Registry.Register` and `Heartbeat`: this instance stays in the registry while it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_api::proto::v1::registry_client::RegistryClient;
use mesh_api::proto::v1::{
    DeregisterRequest, GatewayListener, HeartbeatRequest, Instance, RegisterRequest,
};
use tokio::sync::watch;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::apply::Applier;
use super::backoff::Backoff;
use crate::app_health::AppStatus;

/// Limit on one registry call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// This instance as the registry knows it.
#[derive(Clone, Debug)]
pub(crate) struct InstanceInfo {
    pub(crate) id: String,
    pub(crate) service: String,
    /// Where peers reach it; none for an instance that is no destination (a gateway).
    pub(crate) address: Option<SocketAddr>,
    pub(crate) version: String,
    /// The admin listener, for operator tools.
    pub(crate) admin_address: SocketAddr,
}

/// Why the app is down, as the registry takes it: empty while it is up or not probed.
fn app_down(app: Option<&watch::Receiver<AppStatus>>) -> String {
    app.and_then(|rx| rx.borrow().as_deref().map(str::to_owned))
        .unwrap_or_default()
}

/// Resolves when what `rx` watches (the app's status, a gateway's listeners) changes; never
/// without one.
async fn changed<T>(rx: Option<&mut watch::Receiver<T>>) {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        // Its sender is gone (probing has stopped): nothing more will change.
        std::future::pending::<()>().await;
    }
}

/// A gateway's listeners as the registry takes them: empty for any other instance.
fn gateway_listeners(
    bound: Option<&watch::Receiver<Vec<(String, SocketAddr)>>>,
) -> Vec<GatewayListener> {
    bound.map_or_else(Vec::new, |rx| {
        rx.borrow()
            .iter()
            .map(|(name, address)| GatewayListener {
                name: name.clone(),
                address: address.to_string(),
            })
            .collect()
    })
}

/// Registers, then sends heartbeats until `stop`; registers again whenever the control plane
/// has forgotten the instance (it restarted, or a partition outlasted the lease). A change in
/// the app's health (`app`) or a gateway's listeners (`bound`) is sent at once.
pub(crate) async fn keep_registered(
    channel: Channel,
    instance: InstanceInfo,
    applier: Arc<Applier>,
    (mut app, mut bound): (
        Option<watch::Receiver<AppStatus>>,
        Option<watch::Receiver<Vec<(String, SocketAddr)>>>,
    ),
    stop: CancellationToken,
) {
    let mut client = RegistryClient::new(channel);
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        let registered = tokio::time::timeout(
            CALL_TIMEOUT,
            client.register(RegisterRequest {
                instance: Some(Instance {
                    instance_id: instance.id.clone(),
                    service: instance.service.clone(),
                    address: instance.address.map(|a| a.to_string()).unwrap_or_default(),
                    version: instance.version.clone(),
                    app_down: app_down(app.as_ref()),
                    admin_address: instance.admin_address.to_string(),
                }),
            }),
        )
        .await;
        let interval = match registered {
            Ok(Ok(response)) => {
                let ms = response
                    .into_inner()
                    .heartbeat_interval_ms
                    .clamp(100, 60_000);
                tracing::info!(instance = %instance.id, address = ?instance.address, "registered with the control plane");
                backoff.reset();
                Duration::from_millis(ms)
            }
            Ok(Err(status)) => {
                tracing::warn!(code = %status.code(), error = status.message(), "registration failed; trying again");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::warn!("registration timed out; trying again");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        // Heartbeats until the control plane no longer knows us; the first at once, so the
        // control plane learns the instance's certificate and state without waiting.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    () = sleep(interval) => {}
                    () = changed(app.as_mut()) => {}
                    () = changed(bound.as_mut()) => {}
                    () = stop.cancelled() => return,
                }
            }
            let beat = HeartbeatRequest {
                instance_id: instance.id.clone(),
                applied_version: applier.applied.load(Ordering::Acquire),
                certificate_not_after_unix: applier.identity.not_after(),
                certificate_issuer_sha256: applier.identity.issuer_sha256().to_string(),
                ejected_endpoints: applier.destinations.borrow().ejected(),
                app_down: app_down(app.as_ref()),
                gateway_listeners: gateway_listeners(bound.as_ref()),
            };
            match tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(beat)).await {
                Ok(Ok(response)) if response.get_ref().known => {}
                Ok(Ok(_)) => {
                    tracing::info!(
                        "the control plane does not know this instance; registering again"
                    );
                    break;
                }
                Ok(Err(status)) => {
                    tracing::debug!(code = %status.code(), error = status.message(), "heartbeat failed");
                }
                Err(_) => tracing::debug!("heartbeat timed out"),
            }
        }
    }
}

/// How long a sidecar that deregistered keeps serving before it closes its listeners: time for
/// the control plane's push to reach callers, so they stop choosing it.
const DEREGISTER_GRACE: Duration = Duration::from_millis(500);

/// Takes the instance out of the registry on shutdown, then gives callers a moment to hear of
/// it. Best effort: with the control plane unreachable, the lease ends it instead (callers
/// retry the refused connections elsewhere meanwhile).
pub(crate) async fn deregister(channel: Channel, instance_id: &str) {
    let request = DeregisterRequest {
        instance_id: instance_id.to_owned(),
    };
    let mut client = RegistryClient::new(channel);
    match tokio::time::timeout(CALL_TIMEOUT, client.deregister(request)).await {
        Ok(Ok(response)) => {
            tracing::info!(
                instance = instance_id,
                removed = response.get_ref().removed,
                "deregistered from the control plane"
            );
            sleep(DEREGISTER_GRACE).await;
        }
        Ok(Err(status)) => {
            tracing::warn!(code = %status.code(), error = status.message(), "cannot deregister; the lease will expire instead");
        }
        Err(_) => tracing::warn!("deregistration timed out; the lease will expire instead"),
    }
}
