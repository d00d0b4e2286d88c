//! Simulated sidecars: Discovery.Watch streams multiplexed over a few TLS channels, each
//! naming its own instance, acknowledging every snapshot, and reporting when each arrived.

use mesh_api::proto::v1;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::mesh::BACKEND;

/// What a watcher saw.
#[derive(Debug)]
pub(crate) enum Event {
    /// A snapshot arrived.
    Snapshot {
        watcher: usize,
        version: u64,
        /// `backend`'s timeout in it, if it names `backend`.
        timeout_ms: Option<u64>,
        at: Instant,
    },
    /// The stream ended or failed.
    Ended { watcher: usize, why: String },
}

/// Every watch stream of one run; aborted on drop.
pub(crate) struct Fleet {
    tasks: JoinSet<()>,
    /// Snapshots and stream ends, from every watcher.
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
}

impl Fleet {
    /// Opens one watch per entry of `assignments` (the channel it runs on and its instance id).
    /// Returns at once; the streams open in the background.
    pub(crate) fn open(assignments: Vec<(Channel, String)>) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        for (watcher, (channel, instance_id)) in assignments.into_iter().enumerate() {
            let tx = tx.clone();
            tasks.spawn(async move {
                let why = match watch(watcher, channel, instance_id, &tx).await {
                    Ok(()) => "the control plane ended the stream".to_owned(),
                    Err(status) => status.to_string(),
                };
                let _ = tx.send(Event::Ended { watcher, why });
            });
        }
        Self { tasks, events }
    }

    /// Ends every stream and waits for the tasks to finish.
    pub(crate) async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// `backend`'s timeout in a snapshot.
fn backend_timeout(snapshot: &v1::Snapshot) -> Option<u64> {
    snapshot
        .destinations
        .iter()
        .find(|d| d.name == BACKEND)
        .and_then(|d| d.policy.as_ref())
        .map(|p| p.timeout_ms)
}

/// One sidecar's watch: the first request names the instance (version 0: a new sidecar, so the
/// snapshot comes at once), then every snapshot is acknowledged.
async fn watch(
    watcher: usize,
    channel: Channel,
    instance_id: String,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    let first = v1::WatchRequest {
        instance_id: instance_id.clone(),
        ack_version: 0,
        error: String::new(),
    };
    if tx.send(first).await.is_err() {
        return Ok(());
    }
    let mut stream = v1::discovery_client::DiscoveryClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(snapshot) = stream.message().await? {
        let at = Instant::now();
        let version = snapshot.version;
        let _ = events.send(Event::Snapshot {
            watcher,
            version,
            timeout_ms: backend_timeout(&snapshot),
            at,
        });
        let ack = v1::WatchRequest {
            instance_id: instance_id.clone(),
            ack_version: version,
            error: String::new(),
        };
        if tx.send(ack).await.is_err() {
            break;
        }
    }
    Ok(())
}
