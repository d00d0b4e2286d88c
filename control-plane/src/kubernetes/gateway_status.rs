//! Gateway API objects' verdicts where Gateway API controllers write them: a Gateway's
//! `Accepted` and `Programmed` conditions and its listeners' (`kubectl get gateway` shows
//! them), an HTTPRoute's `status.parents[]` entry for each Gateway of the mesh it names, with
//! the mesh's `controllerName`.
//!
//! As for MeshServices (`verdicts`): server-side applied under the control plane's field
//! manager, only when different from what is stored (times aside), `lastTransitionTime`
//! moving only when a condition's `status` flips, and only on the generation judged.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::gateway_api::{Condition, GatewayVerdict, ParentStatus, RouteVerdict};
use super::gateway_objects::{self, http_routes};
use super::verdicts::{CALL_TIMEOUT, MANAGER, now, retry_if, truncate};

/// The objects of one kind, by name, as watched.
type Watched = watch::Receiver<Option<BTreeMap<String, DynamicObject>>>;

/// Longest condition message written (the CRDs allow 32768 bytes).
const MAX_MESSAGE: usize = 8192;

/// The verdicts to write, by object name.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct GatewayVerdicts {
    pub(crate) gateways: BTreeMap<String, GatewayVerdict>,
    pub(crate) routes: BTreeMap<String, RouteVerdict>,
    /// Whether these come from a judgement (not the empty start): only then does a route
    /// without a verdict lose the mesh's entries of its status.
    pub(crate) judged: bool,
}

/// Where the verdicts are written.
pub(crate) struct StatusWriter {
    gateways: Api<DynamicObject>,
    routes: Api<DynamicObject>,
    controller: String,
    /// The status last written per object (kind, name), with its uid, until the watch shows
    /// it stored.
    written: BTreeMap<(&'static str, String), (Option<String>, Value)>,
}

impl StatusWriter {
    /// A writer for `namespace`'s Gateways and HTTPRoutes, as `controller` in routes' status.
    pub(crate) fn new(client: &kube::Client, namespace: &str, controller: &str) -> Self {
        Self {
            gateways: Api::namespaced_with(client.clone(), namespace, &gateway_objects::gateways()),
            routes: Api::namespaced_with(client.clone(), namespace, &http_routes()),
            controller: controller.to_owned(),
            written: BTreeMap::new(),
        }
    }

    /// Writes the verdicts on the objects as both change, until `shutdown`.
    pub(crate) async fn run(
        mut self,
        (mut gateways, mut routes): (Watched, Watched),
        mut verdicts: watch::Receiver<GatewayVerdicts>,
        shutdown: CancellationToken,
    ) {
        loop {
            let stored_gateways = gateways.borrow_and_update().clone().unwrap_or_default();
            let stored_routes = routes.borrow_and_update().clone().unwrap_or_default();
            let judged = verdicts.borrow_and_update().clone();
            let failed = tokio::select! {
                () = shutdown.cancelled() => return,
                failed = self.write_all(&stored_gateways, &stored_routes, &judged) => failed,
            };
            let retry = retry_if(failed);
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = gateways.changed() => if changed.is_err() { return },
                changed = routes.changed() => if changed.is_err() { return },
                changed = verdicts.changed() => if changed.is_err() { return },
                () = retry => {}
            }
        }
    }

    /// Writes every status that differs from its object's; whether a write failed.
    async fn write_all(
        &mut self,
        gateways: &BTreeMap<String, DynamicObject>,
        routes: &BTreeMap<String, DynamicObject>,
        verdicts: &GatewayVerdicts,
    ) -> bool {
        self.written.retain(|(kind, name), _| match *kind {
            "Gateway" => gateways.contains_key(name),
            _ => routes.contains_key(name),
        });
        let mut wanted = Vec::new();
        for (name, verdict) in &verdicts.gateways {
            if let Some(object) = gateways.get(name)
                && object.metadata.generation == verdict.generation
            {
                wanted.push(("Gateway", object, gateway_status(verdict, object)));
            }
        }
        for (name, verdict) in &verdicts.routes {
            if let Some(object) = routes.get(name)
                && object.metadata.generation == verdict.generation
            {
                let status = route_status(verdict, object, &self.controller);
                wanted.push(("HTTPRoute", object, status));
            }
        }
        // Routes no longer attached to a Gateway of the mesh (detached, or their Gateway
        // gone): the mesh's entries leave their status, others' stay.
        if verdicts.judged {
            for (name, object) in routes {
                let ours = object.data["status"]["parents"]
                    .as_array()
                    .is_some_and(|p| {
                        p.iter()
                            .any(|p| p["controllerName"] == json!(self.controller))
                    });
                if ours && !verdicts.routes.contains_key(name) {
                    let none = RouteVerdict {
                        generation: object.metadata.generation,
                        parents: Vec::new(),
                    };
                    wanted.push((
                        "HTTPRoute",
                        object,
                        route_status(&none, object, &self.controller),
                    ));
                }
            }
        }
        let mut failed = false;
        for (kind, object, status) in wanted {
            let name = object.metadata.name.clone().unwrap_or_default();
            let key = (kind, name.clone());
            let stored = object.data.get("status").cloned().unwrap_or(Value::Null);
            if same(&stored, &status) {
                self.written.remove(&key);
                continue;
            }
            if self
                .written
                .get(&key)
                .is_some_and(|(uid, s)| *uid == object.metadata.uid && same(s, &status))
            {
                continue;
            }
            let (api, resource) = match kind {
                "Gateway" => (&self.gateways, gateway_objects::gateways()),
                _ => (&self.routes, http_routes()),
            };
            match write(api, &resource, &name, &status).await {
                Ok(()) => {
                    tracing::info!(kind, name = %name, "Gateway API status written");
                    self.written
                        .insert(key, (object.metadata.uid.clone(), status));
                }
                Err(e) => {
                    tracing::warn!(kind, name = %name, error = %e, "cannot write the status; retrying");
                    failed = true;
                }
            }
        }
        failed
    }
}

/// Applies `status` to object `name`.
async fn write(
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    name: &str,
    status: &Value,
) -> Result<(), String> {
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "status": status,
    });
    let params = PatchParams::apply(MANAGER).force();
    tokio::time::timeout(
        CALL_TIMEOUT,
        api.patch_status(name, &params, &Patch::Apply(patch)),
    )
    .await
    .map_err(|_| format!("the API server did not answer within {CALL_TIMEOUT:?}"))?
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// The status of a Gateway for its verdict.
fn gateway_status(verdict: &GatewayVerdict, object: &DynamicObject) -> Value {
    let stored = &object.data["status"];
    let generation = verdict.generation;
    let conditions = [&verdict.accepted, &verdict.programmed]
        .into_iter()
        .map(|c| condition(c, generation, &stored["conditions"]))
        .collect::<Vec<_>>();
    let listeners = verdict
        .listeners
        .iter()
        .map(|listener| {
            let stored = stored["listeners"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["name"] == json!(listener.name))
                .map(|l| l["conditions"].clone())
                .unwrap_or(Value::Null);
            let programmed = if listener.in_force && verdict.programmed.status {
                Condition {
                    kind: "Programmed",
                    status: true,
                    reason: "Programmed",
                    message: "the gateway serves the listener".to_owned(),
                }
            } else {
                Condition {
                    kind: "Programmed",
                    status: false,
                    reason: "Invalid",
                    message: "the listener is not in force".to_owned(),
                }
            };
            json!({
                "name": listener.name,
                "supportedKinds": [{ "group": mesh_kube::names::GATEWAY_API_GROUP, "kind": "HTTPRoute" }],
                "attachedRoutes": listener.attached_routes,
                "conditions": [
                    condition(&listener.accepted, generation, &stored),
                    condition(&listener.resolved_refs, generation, &stored),
                    condition(&programmed, generation, &stored),
                ],
            })
        })
        .collect::<Vec<_>>();
    json!({ "conditions": conditions, "listeners": listeners })
}

/// The status of an HTTPRoute for its verdict: the mesh's parents, others' entries kept.
fn route_status(verdict: &RouteVerdict, object: &DynamicObject, controller: &str) -> Value {
    let stored: Vec<Value> = object.data["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut parents: Vec<Value> = stored
        .iter()
        .filter(|p| p["controllerName"] != json!(controller))
        .cloned()
        .collect();
    parents.extend(
        verdict
            .parents
            .iter()
            .map(|parent| parent_status(parent, verdict.generation, controller, &stored)),
    );
    json!({ "parents": parents })
}

fn parent_status(
    parent: &ParentStatus,
    generation: Option<i64>,
    controller: &str,
    stored: &[Value],
) -> Value {
    let previous = stored
        .iter()
        .find(|p| p["controllerName"] == json!(controller) && p["parentRef"] == parent.parent_ref)
        .map(|p| p["conditions"].clone())
        .unwrap_or(Value::Null);
    json!({
        "parentRef": parent.parent_ref,
        "controllerName": controller,
        "conditions": [
            condition(&parent.accepted, generation, &previous),
            condition(&parent.resolved_refs, generation, &previous),
        ],
    })
}

/// A condition as written, keeping the stored `lastTransitionTime` of its type unless
/// `status` flips.
fn condition(condition: &Condition, generation: Option<i64>, stored: &Value) -> Value {
    let status = if condition.status { "True" } else { "False" };
    let since = stored
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == json!(condition.kind) && c["status"] == json!(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    json!({
        "type": condition.kind,
        "status": status,
        "reason": condition.reason,
        "message": truncate(&condition.message, MAX_MESSAGE),
        "observedGeneration": generation,
        "lastTransitionTime": since,
    })
}

/// Statuses are the same when all but their transition times agree.
fn same(stored: &Value, wanted: &Value) -> bool {
    without_times(stored) == without_times(wanted)
}

fn without_times(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| *k != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        other => other.clone(),
    }
}
