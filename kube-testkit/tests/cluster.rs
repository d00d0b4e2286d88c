//! The test cluster against itself: a real etcd and kube-apiserver, reached by `kube` clients
//! over TLS with per-run client certificates. Each test starts its own cluster.
//!
//! Needs the binaries `scripts/build-kube.sh` builds: without them a test prints why it skips,
//! and under `CI=true` it fails naming the script.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use mesh_kube_testkit::TestCluster;
use mesh_testkit::eventually;
use serde_json::json;

/// The cluster for `test`, or `None` when the binaries are missing outside CI.
async fn cluster(test: &str) -> Option<TestCluster> {
    let binaries = mesh_kube_testkit::binaries::available(test)?;
    Some(
        TestCluster::start(&binaries)
            .await
            .unwrap_or_else(|e| panic!("{test}: start the test cluster: {e}")),
    )
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

async fn create_namespace(client: &kube::Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta(name),
                ..Namespace::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

/// The API server's answer to a refused request: its HTTP status code and message.
fn refusal(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

#[tokio::test]
async fn a_namespace_and_a_config_map_are_stored_and_read_back() {
    let Some(cluster) = cluster("a_namespace_and_a_config_map_are_stored_and_read_back").await
    else {
        return;
    };
    let admin = cluster.admin().expect("admin client");
    let version = admin.apiserver_version().await.expect("GET /version");
    assert_eq!(
        version.git_version,
        mesh_kube_testkit::binaries::KUBE_VERSION,
        "the server is the pinned build"
    );
    create_namespace(&admin, "shop").await;

    let namespace = Api::<Namespace>::all(admin.clone())
        .get("shop")
        .await
        .expect("read the namespace back");
    assert!(
        namespace.metadata.uid.is_some(),
        "the server gave it a UID: {namespace:?}"
    );
    assert_eq!(
        namespace.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );

    let config_maps = Api::<ConfigMap>::namespaced(admin.clone(), "shop");
    let data = BTreeMap::from([
        ("upstream".to_owned(), "inventory:8080".to_owned()),
        ("retries".to_owned(), "3".to_owned()),
    ]);
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("routes"),
                data: Some(data.clone()),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("create the config map");

    let read = config_maps.get("routes").await.expect("read it back");
    assert_eq!(read.data, Some(data));
    assert_eq!(read.metadata.namespace.as_deref(), Some("shop"));
    let names: Vec<_> = config_maps
        .list(&ListParams::default())
        .await
        .expect("list config maps")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(names.contains(&"routes".to_owned()), "listed: {names:?}");

    // Stored in etcd, not only in the server's memory: a missing name is a real 404.
    let (code, message) = refusal(config_maps.get("absent").await);
    assert_eq!(code, 404, "{message}");
    assert!(message.contains("absent"), "the error names it: {message}");
}

#[tokio::test]
async fn rbac_refuses_an_unbound_user_until_a_role_binding_grants_the_list() {
    let Some(cluster) =
        cluster("rbac_refuses_an_unbound_user_until_a_role_binding_grants_the_list").await
    else {
        return;
    };
    let admin = cluster.admin().expect("admin client");
    create_namespace(&admin, "shop").await;
    create_namespace(&admin, "other").await;

    let alice = cluster.client_as("alice", &["developers"]).expect("alice");
    let alice_shop = Api::<ConfigMap>::namespaced(alice.clone(), "shop");
    let (code, message) = refusal(alice_shop.list(&ListParams::default()).await);
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("\"alice\""),
        "the refusal names the user the certificate authenticated: {message}"
    );

    Api::<Role>::namespaced(admin.clone(), "shop")
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("config-reader"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["configmaps".to_owned()]),
                    verbs: vec!["get".to_owned(), "list".to_owned()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .expect("create the role");
    Api::<RoleBinding>::namespaced(admin.clone(), "shop")
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("alice-reads-config"),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".to_owned()),
                    kind: "Role".to_owned(),
                    name: "config-reader".to_owned(),
                },
                subjects: Some(vec![Subject {
                    api_group: Some("rbac.authorization.k8s.io".to_owned()),
                    kind: "User".to_owned(),
                    name: "alice".to_owned(),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .expect("create the role binding");

    // The authorizer reads bindings from a watch cache: the grant lands within moments.
    eventually(
        "alice's list to be allowed",
        Duration::from_secs(20),
        || {
            let alice_shop = alice_shop.clone();
            async move { alice_shop.list(&ListParams::default()).await }
        },
    )
    .await;

    // The binding is the namespace's and the verbs are the role's, nothing more.
    let (code, message) = refusal(
        Api::<ConfigMap>::namespaced(alice.clone(), "other")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403, "another namespace: {message}");
    let (code, message) = refusal(
        alice_shop
            .create(
                &PostParams::default(),
                &ConfigMap {
                    metadata: meta("written"),
                    ..ConfigMap::default()
                },
            )
            .await,
    );
    assert_eq!(code, 403, "a verb the role lacks: {message}");

    // A user the binding does not name is still refused.
    let bob = cluster.client_as("bob", &["developers"]).expect("bob");
    let (code, message) = refusal(
        Api::<ConfigMap>::namespaced(bob, "shop")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403, "bob: {message}");
}

#[tokio::test]
async fn a_pod_is_admitted_and_stays_pending_without_nodes() {
    let Some(cluster) = cluster("a_pod_is_admitted_and_stays_pending_without_nodes").await else {
        return;
    };
    let admin = cluster.admin().expect("admin client");
    create_namespace(&admin, "shop").await;
    let pods = Api::<Pod>::namespaced(admin.clone(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "orders", "labels": { "app": "orders" } },
        "spec": { "containers": [{ "name": "app", "image": "example.test/orders:1" }] }
    }))
    .expect("pod manifest");

    // With no controller manager, nobody makes a namespace's `default` service account; the
    // ServiceAccount admission plugin refuses the pod and names the account it looked for.
    let (code, message) = refusal(pods.create(&PostParams::default(), &pod).await);
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("serviceaccount \"default\" not found"),
        "{message}"
    );

    Api::<ServiceAccount>::namespaced(admin.clone(), "shop")
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("default"),
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("create the default service account");
    // The admission plugin reads service accounts from a watch cache.
    let created = eventually("the pod to be admitted", Duration::from_secs(20), || {
        let pods = pods.clone();
        let pod = pod.clone();
        async move { pods.create(&PostParams::default(), &pod).await }
    })
    .await;

    let spec = created.spec.expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert!(
        spec.volumes
            .unwrap_or_default()
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-")),
        "admission mounted the service-account token volume"
    );
    assert_eq!(spec.node_name, None, "no scheduler placed it");

    let read = pods.get("orders").await.expect("read the pod back");
    assert_eq!(
        read.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
}

#[tokio::test]
async fn a_deployment_is_dry_run_then_applied_server_side() {
    let Some(cluster) = cluster("a_deployment_is_dry_run_then_applied_server_side").await else {
        return;
    };
    let admin = cluster.admin().expect("admin client");
    create_namespace(&admin, "shop").await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), "shop");
    let manifest = |replicas: i32, template_app: &str| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "inventory" },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "inventory" } },
                "template": {
                    "metadata": { "labels": { "app": template_app } },
                    "spec": { "containers": [{ "name": "app", "image": "example.test/inventory:1" }] }
                }
            }
        })
    };

    // A dry run is validated, defaulted and admitted, but not stored.
    let dry = deployments
        .patch(
            "inventory",
            &PatchParams::apply("mesh-test").dry_run(),
            &Patch::Apply(manifest(2, "inventory")),
        )
        .await
        .expect("dry-run apply");
    assert_eq!(
        dry.spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("RollingUpdate"),
        "the server defaulted the strategy"
    );
    let (code, message) = refusal(deployments.get("inventory").await);
    assert_eq!(code, 404, "a dry run stores nothing: {message}");

    // Invalid input is refused, naming the field.
    let (code, message) = refusal(
        deployments
            .patch(
                "inventory",
                &PatchParams::apply("mesh-test"),
                &Patch::Apply(manifest(2, "orders")),
            )
            .await,
    );
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("spec.template.metadata.labels"),
        "the error names the field: {message}"
    );

    let applied = deployments
        .patch(
            "inventory",
            &PatchParams::apply("mesh-test"),
            &Patch::Apply(manifest(2, "inventory")),
        )
        .await
        .expect("apply");
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| Some((m.manager?, m.operation?)))
        .collect();
    assert!(
        managers.contains(&("mesh-test".to_owned(), "Apply".to_owned())),
        "the server records who applied: {managers:?}"
    );

    // Applying again with another value updates the stored object in place.
    deployments
        .patch(
            "inventory",
            &PatchParams::apply("mesh-test"),
            &Patch::Apply(manifest(3, "inventory")),
        )
        .await
        .expect("apply again");
    let read = deployments.get("inventory").await.expect("read it back");
    assert_eq!(read.spec.replicas, Some(3));
    assert_eq!(read.metadata.generation, Some(2));
}

#[tokio::test]
async fn dropping_the_cluster_stops_both_programs_and_removes_its_directory() {
    let Some(cluster) =
        cluster("dropping_the_cluster_stops_both_programs_and_removes_its_directory").await
    else {
        return;
    };
    let (etcd, apiserver) = cluster.pids();
    let dir = cluster.dir().to_owned();
    assert!(dir.join("etcd").is_dir(), "etcd keeps its data there");
    drop(cluster);
    for (program, pid) in [("etcd", etcd), ("kube-apiserver", apiserver)] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{program} ({pid}) is gone"
        );
    }
    assert!(!dir.exists(), "{} is removed", dir.display());
}
