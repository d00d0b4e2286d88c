//! Kubernetes mode's policy against a real API server: a MeshService change reaches watching
//! sidecars within a second, each object's verdict is in its status (and, when refused, an
//! event), a refused object keeps its last accepted spec while the others' changes apply, and
//! the control plane rides out an API-server outage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::kube_mesh::{KubeMesh, MESH_NAMESPACE};
use common::{Sidecar, policy_timeout};
use http::{Method, StatusCode};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use mesh_control_plane::{ControlPlane, client};
use serde_json::{Value, json};
use tonic::transport::Channel;

const MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\n";
/// How long a status or an event may take to be written once the configuration changed.
const VERDICT_PATIENCE: Duration = Duration::from_secs(10);

/// A sidecar of `service`, certified with its ServiceAccount's token and connected.
async fn certify(cp: &ControlPlane, mesh: &KubeMesh, service: &str) -> Sidecar {
    mesh.sidecar(cp, service).await
}

/// A new connection of a certified sidecar, with the certificate it has.
async fn reconnect(cp: &ControlPlane, mesh: &KubeMesh, sidecar: &Sidecar) -> Channel {
    let roots = client::roots_from_pem(&mesh.dirs.bundle_pem()).unwrap();
    let certificate = Some(sidecar.workload.client_cert());
    client::connect(cp.api_addr(), roots, common::TD, certificate)
        .await
        .unwrap()
}

/// The `Accepted` condition of MeshService `name` once it describes `generation`.
async fn accepted_condition(mesh: &KubeMesh, name: &str, generation: i64) -> Value {
    let api = mesh.mesh_services();
    mesh_testkit::eventually(
        &format!("MeshService {name}'s status to describe generation {generation}"),
        VERDICT_PATIENCE,
        || {
            let api = api.clone();
            async move {
                let object = api.get(name).await.map_err(|e| e.to_string())?;
                let condition = object.data["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
                    .cloned()
                    .ok_or("no Accepted condition")?;
                if condition["observedGeneration"] == json!(generation)
                    && object.data["status"]["observedGeneration"] == json!(generation)
                {
                    Ok(condition)
                } else {
                    Err(format!("not yet: {condition}"))
                }
            }
        },
    )
    .await
}

fn generation(object: &kube::api::DynamicObject) -> i64 {
    object.metadata.generation.expect("a generation")
}

/// An event about MeshService `name` whose note contains `text`.
async fn refusal_event(mesh: &KubeMesh, name: &str, text: &str) -> Event {
    let events: Api<Event> = Api::namespaced(mesh.admin(), MESH_NAMESPACE);
    mesh_testkit::eventually(
        &format!("an event refusing MeshService {name} for {text:?}"),
        VERDICT_PATIENCE,
        || {
            let events = events.clone();
            async move {
                let list = events
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                list.items
                    .into_iter()
                    .filter(|e| {
                        e.regarding.as_ref().is_some_and(|r| {
                            r.kind.as_deref() == Some("MeshService")
                                && r.name.as_deref() == Some(name)
                        })
                    })
                    .find(|e| e.note.as_deref().is_some_and(|n| n.contains(text)))
                    .ok_or_else(|| "not yet".to_owned())
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_mesh_service_change_reaches_watchers_within_a_second_and_is_accepted() {
    let test = "a_mesh_service_change_reaches_watchers_within_a_second_and_is_accepted";
    let Some(mesh) = KubeMesh::start(test, MESH).await else {
        return;
    };
    mesh.apply_mesh_service("orders", json!({ "calls": ["inventory"] }))
        .await;
    let inventory = mesh
        .apply_mesh_service("inventory", json!({ "timeout": "2s" }))
        .await;
    // Polling the configuration once a minute: only the objects' watch can apply a change
    // within a second.
    let mut options = mesh.options("replica-a");
    options.config_poll = Duration::from_secs(60);
    let cp = mesh_control_plane::start(options, common::listeners().await)
        .await
        .unwrap();
    let first = accepted_condition(&mesh, "inventory", generation(&inventory)).await;
    assert_eq!(first["status"], "True", "{first}");
    assert_eq!(first["reason"], "Accepted", "{first}");

    let orders = certify(&cp, &mesh, "orders").await;
    let mut watch = orders.watch("o-1").await;
    let snapshot = watch
        .next(Duration::from_secs(2))
        .await
        .expect("a first snapshot");
    assert_eq!(policy_timeout(&snapshot, "inventory"), Some(2000));

    let changed_at = tokio::time::Instant::now();
    let changed = mesh
        .apply_mesh_service("inventory", json!({ "timeout": "3s" }))
        .await;
    let pushed = watch
        .until(Duration::from_secs(1), |s| {
            policy_timeout(s, "inventory") == Some(3000)
        })
        .await;
    assert!(
        changed_at.elapsed() <= Duration::from_secs(1),
        "pushed after {:?}",
        changed_at.elapsed()
    );
    assert!(pushed.version > snapshot.version);

    assert!(generation(&changed) > generation(&inventory));
    let now = accepted_condition(&mesh, "inventory", generation(&changed)).await;
    assert_eq!(now["status"], "True", "{now}");
    assert_eq!(
        now["lastTransitionTime"], first["lastTransitionTime"],
        "still accepted: no transition"
    );
    let stored = mesh.mesh_services().get("inventory").await.unwrap();
    assert_eq!(
        common::kube_mesh::status_manager(&stored.metadata).as_deref(),
        Some("mesh-control-plane")
    );

    // Another object's change is judged with inventory's unchanged spec: its status, the same
    // verdict, is not written again.
    let payments = mesh.apply_mesh_service("payments", json!({})).await;
    accepted_condition(&mesh, "payments", generation(&payments)).await;
    let after = mesh.mesh_services().get("inventory").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, stored.metadata.resource_version,
        "an unchanged verdict is not written"
    );
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_mesh_service_is_refused_alone_and_says_why() {
    let test = "an_invalid_mesh_service_is_refused_alone_and_says_why";
    let Some(mesh) = KubeMesh::start(test, MESH).await else {
        return;
    };
    mesh.apply_mesh_service("orders", json!({ "calls": ["inventory", "payments"] }))
        .await;
    mesh.apply_mesh_service("inventory", json!({ "timeout": "2s" }))
        .await;
    mesh.apply_mesh_service("payments", json!({ "timeout": "1s" }))
        .await;
    // Invalid from the start: the control plane starts without it.
    let broken = mesh
        .apply_mesh_service("broken", json!({ "timeout": "soon" }))
        .await;
    let cp = mesh.control_plane("replica-a").await;
    assert!(!cp.config().services.contains_key("broken"));
    let never = accepted_condition(&mesh, "broken", generation(&broken)).await;
    assert_eq!(never["status"], "False", "{never}");
    let message = never["message"].as_str().unwrap();
    assert!(message.starts_with("spec.timeout: "), "{message}");
    assert!(message.contains("not in the mesh"), "{message}");
    let orders = certify(&cp, &mesh, "orders").await;
    let mut watch = orders.watch("o-1").await;
    let first = watch
        .next(Duration::from_secs(2))
        .await
        .expect("a first snapshot");
    assert_eq!(policy_timeout(&first, "inventory"), Some(2000));
    assert_eq!(policy_timeout(&first, "payments"), Some(1000));

    // An invalid spec: refused, with the field named, and an event; its last accepted spec
    // stays in force.
    let banana = mesh
        .apply_mesh_service("inventory", json!({ "timeout": "banana" }))
        .await;
    let refused = accepted_condition(&mesh, "inventory", generation(&banana)).await;
    assert_eq!(refused["status"], "False", "{refused}");
    assert_eq!(refused["reason"], "Invalid", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.starts_with("spec.timeout: "), "{message}");
    println!("refused: {message}");
    assert!(
        message.contains("last accepted spec stays in force"),
        "{message}"
    );
    let event = refusal_event(&mesh, "inventory", "spec.timeout").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.reason.as_deref(), Some("Invalid"));
    // Invalid again, differently: a new message, but no transition. (Past the second of the
    // first refusal, so a new transition time would differ: the times are in seconds.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pear = mesh
        .apply_mesh_service("inventory", json!({ "timeout": "pear" }))
        .await;
    let still = accepted_condition(&mesh, "inventory", generation(&pear)).await;
    assert_eq!(still["status"], "False", "{still}");
    assert!(
        still["message"].as_str().unwrap().contains("\"pear\""),
        "{still}"
    );
    assert_eq!(still["lastTransitionTime"], refused["lastTransitionTime"]);

    // Meanwhile another object's valid change applies, and inventory's policy is as it was.
    mesh.apply_mesh_service("payments", json!({ "timeout": "4s" }))
        .await;
    let pushed = watch
        .until(Duration::from_secs(2), |s| {
            policy_timeout(s, "payments") == Some(4000)
        })
        .await;
    assert_eq!(policy_timeout(&pushed, "inventory"), Some(2000));

    // A cross-object error belongs to the object that has it; orders keeps what it calls.
    let nowhere = mesh
        .apply_mesh_service(
            "orders",
            json!({ "calls": ["inventory", "payments", "nowhere"] }),
        )
        .await;
    let refused = accepted_condition(&mesh, "orders", generation(&nowhere)).await;
    assert_eq!(refused["status"], "False", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.starts_with("spec.calls[2]: "), "{message}");
    refusal_event(&mesh, "orders", "spec.calls[2]").await;
    let payments = mesh.mesh_services().get("payments").await.unwrap();
    let accepted = accepted_condition(&mesh, "payments", generation(&payments)).await;
    assert_eq!(accepted["status"], "True", "{accepted}");
    let services = cp.config().services.clone();
    assert_eq!(services["orders"].calls, ["inventory", "payments"]);

    // Fixed, it flips back to accepted and applies.
    let fixed = mesh
        .apply_mesh_service("inventory", json!({ "timeout": "5s" }))
        .await;
    watch
        .until(Duration::from_secs(2), |s| {
            policy_timeout(s, "inventory") == Some(5000)
        })
        .await;
    let accepted = accepted_condition(&mesh, "inventory", generation(&fixed)).await;
    assert_eq!(accepted["status"], "True", "{accepted}");
    assert_eq!(accepted["reason"], "Accepted", "{accepted}");
    assert!(
        accepted["lastTransitionTime"].as_str() >= refused["lastTransitionTime"].as_str(),
        "{accepted} after {refused}"
    );
    cp.stop().await.unwrap();
}

/// Stops a process (SIGSTOP) until dropped (SIGCONT), so a failing test never leaves it
/// stopped.
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn process(pid: u32) -> Self {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[tokio::test]
async fn the_control_plane_rides_out_an_api_server_outage() {
    let test = "the_control_plane_rides_out_an_api_server_outage";
    let Some(mesh) = KubeMesh::start(test, MESH).await else {
        return;
    };
    mesh.apply_mesh_service("orders", json!({ "calls": ["inventory"] }))
        .await;
    mesh.apply_mesh_service("inventory", json!({ "timeout": "2s" }))
        .await;
    let cp = mesh.control_plane("replica-a").await;
    let orders = certify(&cp, &mesh, "orders").await;
    let mut watch = orders.watch("o-1").await;
    let first = watch
        .next(Duration::from_secs(2))
        .await
        .expect("a first snapshot");
    assert_eq!(policy_timeout(&first, "inventory"), Some(2000));

    let mut inventory = certify(&cp, &mesh, "inventory").await;

    // 30 seconds without an API server: the control plane serves what it knows.
    let (_, apiserver) = mesh.cluster.pids();
    let outage = Stopped::process(apiserver);
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut rounds = 0;
    while tokio::time::Instant::now() < until {
        rounds += 1;
        let config = cp.config();
        assert_eq!(
            config.services["inventory"].policy.timeout,
            Some(Duration::from_secs(2)),
            "the configuration in force stays"
        );
        // A certified sidecar reconnecting now gets its snapshot.
        inventory.channel = reconnect(&cp, &mesh, &inventory).await;
        let mut fresh = inventory.watch(&format!("i-{rounds}")).await;
        fresh
            .next(Duration::from_secs(2))
            .await
            .expect("a snapshot during the outage");
        let (ready, _) = common::admin(&cp, Method::GET, "/ready").await;
        assert_eq!(ready, StatusCode::OK, "ready during the outage");
        // The watching sidecar's stream stays open (its next snapshot may or may not come).
        let _ = watch.next(Duration::from_secs(3)).await;
    }
    assert!(rounds >= 5, "only {rounds} rounds in 30 s");
    drop(outage);

    // Back: a change made now reaches the watching sidecar promptly.
    let changed = mesh
        .apply_mesh_service("inventory", json!({ "timeout": "7s" }))
        .await;
    let changed_at = tokio::time::Instant::now();
    watch
        .until(Duration::from_secs(5), |s| {
            policy_timeout(s, "inventory") == Some(7000)
        })
        .await;
    println!(
        "a change after the outage reached the sidecar in {:?}",
        changed_at.elapsed()
    );
    let verdict = accepted_condition(&mesh, "inventory", generation(&changed)).await;
    assert_eq!(verdict["status"], "True", "{verdict}");
    cp.stop().await.unwrap();
}
