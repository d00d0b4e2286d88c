//! Each MeshService's verdict where kubectl shows it: the `Accepted` condition of its status
//! (the `Accepted` column of `kubectl get msvc`) and, when it is refused, a Warning event
//! (`kubectl describe msvc <name>`).
//!
//! The status is server-side applied under a field manager of its own, so the condition is
//! this writer's alone, and only when it differs from the stored one: the same verdict twice
//! writes nothing, and `lastTransitionTime` moves only when `status` flips. A verdict is
//! written only on the spec it judged (same service file), with that object's generation.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::acceptance::{InForce, Verdict, Verdicts};
use super::mesh_services::{CONDITION, MeshService, Objects, resource};

/// The field manager of the status, and the events' reporting controller.
pub(crate) const MANAGER: &str = "mesh-control-plane";
/// How long one write may take before it is retried (the API server may be away).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a failed write is retried.
pub(crate) const RETRY: Duration = Duration::from_secs(2);

/// Where the verdicts are written.
pub(crate) struct VerdictWriter {
    api: Api<DynamicObject>,
    recorder: Recorder,
    namespace: String,
    /// The condition last written per object (by uid: a recreated object is another), until
    /// the watch shows it stored.
    written: BTreeMap<String, (Option<String>, Value)>,
}

impl VerdictWriter {
    /// A writer for the MeshService objects of `namespace`, reporting as `replica`.
    pub(crate) fn new(client: kube::Client, namespace: &str, replica: &str) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(replica.to_owned()),
        };
        Self {
            api: Api::namespaced_with(client.clone(), namespace, &resource()),
            recorder: Recorder::new(client, reporter),
            namespace: namespace.to_owned(),
            written: BTreeMap::new(),
        }
    }

    /// Writes the verdicts on the objects as both change, until `shutdown`.
    pub(crate) async fn run(
        mut self,
        mut objects: watch::Receiver<Option<Objects>>,
        mut verdicts: watch::Receiver<Verdicts>,
        shutdown: CancellationToken,
    ) {
        loop {
            let now = objects.borrow_and_update().clone().unwrap_or_default();
            let judged = verdicts.borrow_and_update().clone();
            // A write waits for an API server that may be away: shutdown must not.
            let failed = tokio::select! {
                () = shutdown.cancelled() => return,
                failed = self.write_all(&now, &judged) => failed,
            };
            let retry = retry_if(failed);
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = objects.changed() => if changed.is_err() { return },
                changed = verdicts.changed() => if changed.is_err() { return },
                () = retry => {}
            }
        }
    }

    /// Writes every verdict that differs from its object's status; whether a write failed.
    async fn write_all(&mut self, objects: &Objects, verdicts: &Verdicts) -> bool {
        self.written.retain(|name, _| objects.contains_key(name));
        let mut failed = false;
        for (name, object) in objects {
            let Some(verdict) = verdicts.get(name) else {
                continue;
            };
            // A newer spec is on its way to being judged.
            if verdict.file != object.file {
                continue;
            }
            let condition = condition(verdict, object);
            if object
                .accepted
                .as_ref()
                .is_some_and(|c| same(c, &condition))
            {
                self.written.remove(name);
                continue;
            }
            if self
                .written
                .get(name)
                .is_some_and(|(uid, c)| *uid == object.uid && same(c, &condition))
            {
                continue;
            }
            match self.write(name, object, verdict, &condition).await {
                Ok(()) => {
                    self.written
                        .insert(name.clone(), (object.uid.clone(), condition));
                }
                Err(e) => {
                    tracing::warn!(meshservice = %name, error = %e, "cannot write the MeshService's status; retrying");
                    failed = true;
                }
            }
        }
        failed
    }

    /// Applies the condition to the status, then, for a refusal, records an event.
    async fn write(
        &self,
        name: &str,
        object: &MeshService,
        verdict: &Verdict,
        condition: &Value,
    ) -> Result<(), WriteError> {
        let status = json!({
            "apiVersion": resource().api_version,
            "kind": resource().kind,
            "status": {
                "observedGeneration": object.generation,
                "conditions": [condition],
            },
        });
        let params = PatchParams::apply(MANAGER).force();
        tokio::time::timeout(
            CALL_TIMEOUT,
            self.api.patch_status(name, &params, &Patch::Apply(status)),
        )
        .await
        .map_err(|_| WriteError::Timeout)?
        .map_err(WriteError::Api)?;
        if verdict.accepted() {
            tracing::info!(meshservice = %name, generation = ?object.generation, "MeshService accepted");
            return Ok(());
        }
        let message = message(verdict);
        tracing::warn!(meshservice = %name, generation = ?object.generation, "MeshService refused: {message}");
        let event = Event {
            type_: EventType::Warning,
            reason: "Invalid".to_owned(),
            note: Some(truncate(&message, 1000)),
            action: "Validate".to_owned(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some(resource().api_version),
            kind: Some(resource().kind),
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            uid: object.uid.clone(),
            ..ObjectReference::default()
        };
        tokio::time::timeout(CALL_TIMEOUT, self.recorder.publish(&event, &reference))
            .await
            .map_err(|_| WriteError::Timeout)?
            .map_err(WriteError::Api)
    }
}

/// Why a verdict could not be written.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("the API server did not answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("{0}")]
    Api(kube::Error),
}

/// The `Accepted` condition of a verdict on `object`, keeping the stored
/// `lastTransitionTime` unless `status` flips.
fn condition(verdict: &Verdict, object: &MeshService) -> Value {
    let (status, reason) = if verdict.accepted() {
        ("True", "Accepted")
    } else {
        ("False", "Invalid")
    };
    let stored = object.accepted.as_ref();
    let since = stored
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    json!({
        "type": CONDITION,
        "status": status,
        "reason": reason,
        "message": message(verdict),
        "observedGeneration": object.generation,
        "lastTransitionTime": since,
    })
}

/// The time now as a condition's `lastTransitionTime` (RFC 3339, in seconds).
pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Conditions are the same verdict when all but their transition time agree.
fn same(stored: &Value, wanted: &Value) -> bool {
    ["status", "reason", "message", "observedGeneration"]
        .iter()
        .all(|field| stored.get(field) == wanted.get(field))
}

/// What the condition says: in force, or why not and what serves instead.
fn message(verdict: &Verdict) -> String {
    if verdict.accepted() {
        return "the spec is valid and in force".to_owned();
    }
    let instead = match verdict.in_force {
        InForce::Spec => "",
        InForce::LastAccepted => "; the last accepted spec stays in force",
        InForce::Nothing => "; the service is not in the mesh until its spec is valid",
    };
    format!("{}{instead}", verdict.errors.join("; "))
}

/// At most `max` bytes of `text`, cut at a character boundary (events' notes are limited).
pub(crate) fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Completes after [`RETRY`] when the last writes `failed`, else never: the status writers
/// wait on it beside their inputs' changes.
pub(crate) async fn retry_if(failed: bool) {
    if failed {
        tokio::time::sleep(RETRY).await;
    } else {
        std::future::pending::<()>().await;
    }
}
