//! `Discovery.Watch`: the stream of snapshots, reopened with backoff whenever it ends.

use std::sync::Arc;
use std::time::Duration;

use mesh_api::proto::v1::WatchRequest;
use mesh_api::proto::v1::discovery_client::DiscoveryClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::apply::Applier;
use super::backoff::Backoff;

/// Follows the control plane's snapshots until `stop`.
pub(crate) async fn follow(
    channel: Channel,
    instance_id: String,
    applier: Arc<Applier>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        let outcome = tokio::select! {
            outcome = stream(channel.clone(), &instance_id, &applier, &mut backoff) => outcome,
            () = stop.cancelled() => return,
        };
        applier.metrics.control.connected.set(0);
        match outcome {
            Ok(()) => tracing::info!("control plane closed the snapshot stream; reconnecting"),
            Err(status) => tracing::warn!(
                code = %status.code(),
                error = status.message(),
                "snapshot stream failed; running on the last snapshot and reconnecting"
            ),
        }
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

/// One stream: each snapshot applied and acknowledged (or rejected with the reason).
async fn stream(
    channel: Channel,
    instance_id: &str,
    applier: &Applier,
    backoff: &mut Backoff,
) -> Result<(), tonic::Status> {
    let (requests, rx) = mpsc::channel(4);
    // The version in force tells the control plane this sidecar already has a snapshot, so
    // one that has just restarted can wait until its registry has refilled.
    let hello = WatchRequest {
        instance_id: instance_id.to_owned(),
        ack_version: applier.applied.load(std::sync::atomic::Ordering::Acquire),
        error: String::new(),
    };
    // The receiver is alive (held below), so the first send cannot fail.
    let _ = requests.send(hello).await;
    let mut snapshots = DiscoveryClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    applier.metrics.control.connected.set(1);
    while let Some(snapshot) = snapshots.message().await? {
        backoff.reset();
        let error = match applier.apply(&snapshot) {
            Ok(()) => {
                tracing::debug!(version = snapshot.version, "snapshot applied");
                String::new()
            }
            Err(error) => {
                tracing::warn!(version = snapshot.version, %error, "snapshot rejected; keeping the previous one");
                error.to_string()
            }
        };
        let ack = WatchRequest {
            instance_id: instance_id.to_owned(),
            ack_version: snapshot.version,
            error,
        };
        if requests.send(ack).await.is_err() {
            break;
        }
    }
    Ok(())
}
