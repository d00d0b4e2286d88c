//! What `meshctl inject` writes is what a real Kubernetes API server accepts: one injected
//! object of every supported kind, and the items of an injected List, are validated, defaulted
//! and admitted (server-side apply, dry run) with the mesh's containers intact; and the same
//! object with one of the injected fields broken is refused, so the check can fail.
//!
//! Needs the binaries `scripts/build-kube.sh` builds: without them the test prints why it
//! skips, and under `CI=true` it fails naming the script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use mesh_inject::{ObjectOutcome, Settings};
use mesh_kube_testkit::TestCluster;
use serde_json::{Value, json};

const NAMESPACE: &str = "shop";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";

/// A pod template whose app listens on 8080.
fn template(app: &str) -> Value {
    json!({
        "metadata": {
            "labels": { "app": app },
            "annotations": { "mesh.local/opaque-ports": "5432", "mesh.local/skip-outbound-cidrs": "169.254.169.254" },
        },
        "spec": {
            "containers": [{ "name": "app", "image": "example.test/app:1", "ports": [{ "containerPort": 8080 }] }],
        },
    })
}

fn workload(kind: &str, api_version: &str, name: &str) -> Value {
    let mut template = template(name);
    let metadata = json!({ "name": name, "namespace": NAMESPACE });
    let selector = json!({ "matchLabels": { "app": name } });
    match kind {
        "Pod" => {
            template["apiVersion"] = json!(api_version);
            template["kind"] = json!(kind);
            template["metadata"]["name"] = json!(name);
            template["metadata"]["namespace"] = json!(NAMESPACE);
            template
        }
        "Job" => {
            template["spec"]["restartPolicy"] = json!("Never");
            json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata,
                    "spec": { "template": template } })
        }
        "CronJob" => {
            template["spec"]["restartPolicy"] = json!("OnFailure");
            json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata,
                    "spec": { "schedule": "*/5 * * * *",
                              "jobTemplate": { "spec": { "template": template } } } })
        }
        "StatefulSet" => json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata,
                    "spec": { "serviceName": name, "selector": selector, "template": template } }),
        _ => json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata,
                    "spec": { "selector": selector, "template": template } }),
    }
}

/// Where each kind keeps its pod template.
fn pod_template(object: &Value) -> &Value {
    match object["kind"].as_str() {
        Some("Pod") => object,
        Some("CronJob") => &object["spec"]["jobTemplate"]["spec"]["template"],
        _ => &object["spec"]["template"],
    }
}

fn resource(kind: &str) -> ApiResource {
    match kind {
        "Pod" => ApiResource::erase::<Pod>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
        "DaemonSet" => ApiResource::erase::<DaemonSet>(&()),
        "ReplicaSet" => ApiResource::erase::<ReplicaSet>(&()),
        "Job" => ApiResource::erase::<Job>(&()),
        "CronJob" => ApiResource::erase::<CronJob>(&()),
        other => panic!("no resource for {other}"),
    }
}

/// Server-side apply with dry run: validated, defaulted, admitted, not stored.
async fn dry_run_apply(client: &kube::Client, object: &Value) -> Result<Value, kube::Error> {
    let kind = object["kind"].as_str().unwrap();
    let name = object["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource(kind));
    let applied = api
        .patch(
            name,
            &PatchParams::apply("meshctl-inject-test").dry_run(),
            &Patch::Apply(object),
        )
        .await?;
    Ok(serde_json::to_value(applied).unwrap())
}

/// Whether everything `ours` sets is in `theirs` as set: the server may add defaults (probe
/// periods, the API token's mount), but must not drop or change a field.
fn within(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Object(ours), Value::Object(theirs)) => ours
            .iter()
            .all(|(key, value)| theirs.get(key).is_some_and(|t| within(value, t))),
        (Value::Array(ours), Value::Array(theirs)) => ours
            .iter()
            .all(|item| theirs.iter().any(|t| within(item, t))),
        _ => ours == theirs,
    }
}

/// The mesh's additions survived the server's validation and defaulting unchanged.
fn assert_mesh_intact(sent: &Value, returned: &Value) {
    let what = format!(
        "{} {}",
        returned["kind"],
        returned["metadata"]["name"].as_str().unwrap_or("?")
    );
    let (sent, returned) = (pod_template(sent), pod_template(returned));
    let init = returned["spec"]["initContainers"].as_array().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mesh-init", "mesh-proxy"], "{what}");
    assert_eq!(init[1]["restartPolicy"], "Always", "{what}");
    assert_eq!(
        init[0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN"]),
        "{what}"
    );
    for (i, container) in init.iter().enumerate() {
        let ours = &sent["spec"]["initContainers"][i];
        assert!(
            within(ours, container),
            "{what}: {} came back changed:\nsent {ours:#}\ngot {container:#}",
            names[i]
        );
    }
    let token = returned["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "mesh-token")
        .unwrap_or_else(|| panic!("{what}: no mesh-token volume"));
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"], "mesh.local",
        "{what}"
    );
    assert_eq!(
        returned["metadata"]["annotations"]["mesh.local/injected"],
        mesh_inject::MESH_VERSION,
        "{what}"
    );
}

#[tokio::test]
async fn injected_objects_of_every_kind_are_accepted_by_the_api_server() {
    let test = "injected_objects_of_every_kind_are_accepted_by_the_api_server";
    let Some(binaries) = mesh_kube_testkit::binaries::available(test) else {
        return;
    };
    let cluster = TestCluster::start(&binaries)
        .await
        .unwrap_or_else(|e| panic!("start the test cluster: {e}"));
    let admin = cluster.admin().expect("admin client");
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(NAMESPACE.to_owned());
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create the namespace");
    // Pods need their service account; no controller makes `default` here.
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("default".to_owned());
    Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &account)
        .await
        .expect("create the default service account");

    let kinds = [
        ("Pod", "v1"),
        ("Deployment", "apps/v1"),
        ("StatefulSet", "apps/v1"),
        ("DaemonSet", "apps/v1"),
        ("ReplicaSet", "apps/v1"),
        ("Job", "batch/v1"),
        ("CronJob", "batch/v1"),
    ];
    let mut stream = String::new();
    for (kind, api_version) in kinds {
        let object = workload(kind, api_version, &kind.to_lowercase());
        stream.push_str(&format!(
            "---\n{}\n",
            serde_json::to_string(&object).unwrap()
        ));
    }
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [workload("Deployment", "apps/v1", "listed"), workload("Pod", "v1", "listed-pod")],
    });
    stream.push_str(&format!("---\n{}\n", serde_json::to_string(&list).unwrap()));

    let injection = mesh_inject::inject_yaml(&stream, &Settings::new("mesh.local", PEM))
        .unwrap_or_else(|e| panic!("inject: {e}"));
    let injected_count = injection
        .objects
        .iter()
        .filter(|o| o.outcome == ObjectOutcome::Injected)
        .count();
    assert_eq!(injected_count, kinds.len() + 2, "{}", injection.report());

    let documents: Vec<Value> = serde_saphyr::from_multiple(&injection.output).unwrap();
    let mut objects: Vec<Value> = Vec::new();
    for document in documents {
        if document["kind"] == "List" {
            objects.extend(document["items"].as_array().unwrap().iter().cloned());
        } else {
            objects.push(document);
        }
    }
    assert_eq!(objects.len(), kinds.len() + 2);
    for object in &objects {
        // The ServiceAccount admission plugin reads accounts from a watch cache: a Pod may be
        // refused for a moment after the account was made.
        let returned = mesh_testkit::eventually(
            "the injected object to be accepted",
            Duration::from_secs(20),
            || dry_run_apply(&admin, object),
        )
        .await;
        assert_mesh_intact(object, &returned);
    }

    // The server does check the injected fields: one broken, and the object is refused.
    let mut broken = objects[1].clone();
    assert_eq!(broken["kind"], "Deployment");
    broken["spec"]["template"]["spec"]["initContainers"][1]["restartPolicy"] = json!("Sometimes");
    match dry_run_apply(&admin, &broken).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{}", status.message);
            assert!(
                status.message.contains("initContainers[1].restartPolicy"),
                "{}",
                status.message
            );
        }
        other => panic!("a broken restartPolicy was accepted: {other:?}"),
    }
}
