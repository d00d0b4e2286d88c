//! The services' policy in Kubernetes mode, end to end: MeshService objects watched
//! (`mesh_services`), judged one by one (`acceptance`), the judgement put in force by the
//! caller, then each object's verdict written back to it (`verdicts`). Gateway API objects
//! (`gateway_objects`) join them as gateway files (`gateway_api`), judged alike, their
//! verdicts written to their status (`gateway_status`).

use std::collections::BTreeMap;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use serde_json::Value;

use super::acceptance::{Acceptance, Verdicts, object_name};
use super::gateway_api::{self, Condition, Context, LastAccepted, Mapped};
use super::gateway_objects::GatewayObjects;
use super::gateway_status::{GatewayVerdicts, StatusWriter};
use super::mesh_services::{MeshServices, file_name};
use super::verdicts::VerdictWriter;
use crate::config::{ConfigFiles, InvalidConfig, MeshConfig};

/// MeshService objects as the services' configuration, and their verdicts.
#[derive(Debug)]
pub(crate) struct ClusterPolicy {
    services: MeshServices,
    acceptance: Acceptance,
    verdicts: watch::Sender<Verdicts>,
    /// The last judgement, until it is put in force.
    judged: Option<(Verdicts, BTreeMap<String, Vec<u8>>)>,
    gateways: GatewayApi,
}

/// Gateways and HTTPRoutes as gateway files, and their verdicts.
#[derive(Debug)]
struct GatewayApi {
    objects: GatewayObjects,
    namespace: String,
    class: String,
    /// What was last accepted of each object, for those refused now.
    last: LastAccepted,
    /// The mapping of the files last read, until judged.
    mapped: Option<Mapped>,
    /// The last judgement's verdicts and accepted objects, until put in force.
    judged: Option<(GatewayVerdicts, LastAccepted, ConfigFiles)>,
    /// The gateway files in force, and the verdicts of the judgement that put them there:
    /// objects that change without changing the files (a route refused from the start) are
    /// judged with these, as the configuration is not judged again.
    in_force: Option<(ConfigFiles, Verdicts)>,
    verdicts: watch::Sender<GatewayVerdicts>,
}

impl ClusterPolicy {
    /// Watches `namespace`'s MeshService objects, and its Gateways of class `gateway_class`
    /// with their HTTPRoutes, and writes their verdicts as `replica`, until `shutdown`;
    /// returns once the first lists have arrived.
    pub(crate) async fn start(
        client: kube::Client,
        namespace: &str,
        replica: &str,
        gateway_class: &str,
        shutdown: CancellationToken,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (mut services, watch) =
            MeshServices::watch(client.clone(), namespace, shutdown.clone());
        let (mut objects, mut tasks) = GatewayObjects::watch(&client, namespace, &shutdown);
        services.first().await;
        objects.first().await;
        let (verdicts, judged) = watch::channel(Verdicts::new());
        let (gateway_verdicts, gateway_judged) = watch::channel(GatewayVerdicts::default());
        let statuses = StatusWriter::new(&client, namespace, mesh_kube::names::GATEWAY_CONTROLLER);
        tasks.push(tokio::spawn(statuses.run(
            objects.receivers(),
            gateway_judged,
            shutdown.clone(),
        )));
        let writer = VerdictWriter::new(client, namespace, replica);
        tasks.push(tokio::spawn(writer.run(
            services.objects(),
            judged,
            shutdown,
        )));
        tasks.push(watch);
        let policy = Self {
            services,
            acceptance: Acceptance::default(),
            verdicts,
            judged: None,
            gateways: GatewayApi {
                objects,
                namespace: namespace.to_owned(),
                class: gateway_class.to_owned(),
                last: LastAccepted::default(),
                mapped: None,
                judged: None,
                in_force: None,
                verdicts: gateway_verdicts,
            },
        };
        (policy, tasks)
    }

    /// The objects' service files, and the gateway files of the Gateway API objects, now.
    pub(crate) fn files(&mut self) -> ConfigFiles {
        let mut files = self.services.current();
        let mapped = self.gateways.map(&files);
        files.extend(mapped.files.clone());
        self.gateways.mapped = Some(mapped);
        if let Some((in_force, verdicts)) = self.gateways.in_force.clone()
            && self.gateways.mapped.as_ref().map(|m| &m.files) == Some(&in_force)
        {
            self.gateways.judge(&verdicts);
            self.gateways.commit(verdicts);
        }
        files
    }

    /// Completes when the objects change.
    pub(crate) async fn changed(&mut self) {
        tokio::select! {
            () = self.services.changed() => {}
            () = self.gateways.objects.changed() => {}
        }
    }

    /// The configuration of `files` with each refused object's last accepted spec (or
    /// nothing) in its place; an error when `mesh.yaml` is invalid.
    pub(crate) fn judge(&mut self, files: &ConfigFiles) -> Result<MeshConfig, InvalidConfig> {
        let (config, verdicts, in_force) = self.acceptance.judge(files)?;
        self.gateways.judge(&verdicts);
        self.judged = Some((verdicts, in_force));
        Ok(config)
    }

    /// The last judgement is in force: its specs become the last accepted ones, and its
    /// verdicts are written.
    pub(crate) fn in_force(&mut self) {
        if let Some((verdicts, in_force)) = self.judged.take() {
            self.acceptance.commit(in_force);
            self.gateways.commit(verdicts.clone());
            self.verdicts.send_replace(verdicts);
        }
    }
}

impl GatewayApi {
    /// The Gateway API objects now, mapped with the services' `calls` of `services`.
    fn map(&self, services: &ConfigFiles) -> Mapped {
        let mut objects = self.objects.current();
        let calls = |service: &str| calls(services, service);
        let context = Context {
            namespace: &self.namespace,
            class: &self.class,
            calls: &calls,
        };
        let mut last = self.last.clone();
        last.retain(&objects);
        objects
            .gateways
            .retain(|_, g| g.metadata.deletion_timestamp.is_none());
        gateway_api::map(&objects, &context, &last)
    }

    /// Completes the mapped objects' verdicts with their gateway files' own (say, a gateway
    /// service without a MeshService).
    fn judge(&mut self, verdicts: &Verdicts) {
        let Some(mapped) = self.mapped.clone() else {
            return;
        };
        let mut judged = GatewayVerdicts {
            gateways: mapped.gateways,
            routes: mapped.routes,
            judged: true,
        };
        for gateway in judged.gateways.values_mut() {
            let Some(verdict) = verdicts.get(object_name(&gateway.file)) else {
                continue;
            };
            if !verdict.accepted() {
                let errors: Vec<String> = verdict
                    .errors
                    .iter()
                    .map(|e| e.strip_prefix("spec: ").unwrap_or(e).to_owned())
                    .collect();
                let instead = match verdict.in_force {
                    super::acceptance::InForce::LastAccepted => {
                        "; the last accepted configuration stays in force"
                    }
                    _ => "; the gateway is not configured",
                };
                gateway.programmed = Condition {
                    kind: "Programmed",
                    status: matches!(verdict.in_force, super::acceptance::InForce::LastAccepted),
                    reason: "Invalid",
                    message: format!("{}: {}{instead}", gateway.file, errors.join("; ")),
                };
            }
        }
        self.judged = Some((judged, mapped.accepted, mapped.files));
    }

    /// The last judgement, made with the configuration's `verdicts`, is in force.
    fn commit(&mut self, verdicts: Verdicts) {
        if let Some((judged, accepted, files)) = self.judged.take() {
            self.last = accepted;
            self.in_force = Some((files, verdicts));
            self.verdicts.send_replace(judged);
        }
    }
}

/// The `calls` of `service`'s MeshService among `services` (its spec, as a service file).
fn calls(services: &ConfigFiles, service: &str) -> Option<Vec<String>> {
    let file = services.get(&file_name(service))?;
    let spec: Value = serde_json::from_slice(file).ok()?;
    Some(
        spec["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    )
}
