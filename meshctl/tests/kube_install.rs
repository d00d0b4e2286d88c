//! `meshctl install` against a real kube-apiserver (mesh-kube-testkit): its output is applied
//! server-side as the admin and stored, a second apply changes nothing, an operator's root
//! ends up in Secret mesh-ca, and every demo service file is a valid MeshService spec that the
//! API server keeps whole.
//!
//! Needs the binaries `scripts/build-kube.sh` builds: without them a test prints why it skips,
//! and under `CI=true` it fails naming the script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kube_common;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube_common::{apply_all, cluster, install, meshctl, read_all, resource_versions};
use mesh_testkit::eventually;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_output_is_applied_server_side_and_a_second_apply_changes_nothing() {
    let Some(cluster) =
        cluster("install_output_is_applied_server_side_and_a_second_apply_changes_nothing").await
    else {
        return;
    };
    let admin = cluster.admin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("trust-anchor.pem");
    let objects = install(&["--output-trust-anchor", anchor.to_str().unwrap()]).await;
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Secret",
            "ConfigMap",
            "Deployment",
            "Service",
            "MutatingWebhookConfiguration",
        ]
    );

    apply_all(&admin, &objects).await;
    // The CRD's status is the API server's to write: once it is established, nothing but an
    // apply would change a stored object.
    eventually("the CRD to be established", Duration::from_secs(20), || {
        let crds = Api::<CustomResourceDefinition>::all(admin.clone());
        async move {
            let crd = crds
                .get("meshservices.mesh.local")
                .await
                .map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                Ok(())
            } else {
                Err("not established yet".to_owned())
            }
        }
    })
    .await;
    let before = read_all(&admin, &objects).await;
    let again = apply_all(&admin, &objects).await;
    assert_eq!(
        resource_versions(&before),
        resource_versions(&again),
        "a second apply of the same manifests changes nothing"
    );

    // The root in the Secret is the one written for `meshctl inject`, and the one the webhook
    // configuration trusts.
    let anchor_pem = std::fs::read_to_string(&anchor).unwrap();
    assert!(
        anchor_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{anchor_pem}"
    );
    let secret = Api::<Secret>::namespaced(admin.clone(), "mesh-system")
        .get("mesh-ca")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["ca.pem"].0, anchor_pem.as_bytes());
    assert!(
        String::from_utf8_lossy(&data["ca-key.pem"].0).contains("PRIVATE KEY"),
        "the Secret holds the root's key"
    );
    let webhooks = Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .get("mesh-sidecar-injector")
        .await
        .unwrap()
        .webhooks
        .unwrap();
    assert_eq!(webhooks.len(), 2);
    for webhook in &webhooks {
        assert_eq!(
            webhook.client_config.ca_bundle.as_ref().unwrap().0,
            anchor_pem.as_bytes()
        );
        let service = webhook.client_config.service.as_ref().unwrap();
        assert_eq!(
            (service.namespace.as_str(), service.name.as_str()),
            ("mesh-system", "mesh-control-plane")
        );
        assert_eq!(service.path.as_deref(), Some("/inject"));
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    }
}

/// A MeshService's spec as the API server returned it, with every number as a float, so that
/// `1.0` written and `1` read back compare equal.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_file_is_a_mesh_service_the_api_server_keeps_whole() {
    let Some(cluster) =
        cluster("every_service_file_is_a_mesh_service_the_api_server_keeps_whole").await
    else {
        return;
    };
    let admin = cluster.admin().unwrap();
    apply_all(&admin, &install(&[]).await).await;

    // The demo's files, and one that uses every kind of field the file format has.
    let demo =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo/mesh/services");
    let mut specs: Vec<(String, Value)> = Vec::new();
    for entry in std::fs::read_dir(&demo).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut file: Value = serde_saphyr::from_str(&text).unwrap();
        let name = file["name"].as_str().unwrap().to_owned();
        file.as_object_mut().unwrap().remove("name");
        specs.push((name, file));
    }
    specs.push((
        "everything".to_owned(),
        json!({
            "calls": ["inventory"],
            "timeout": "2s",
            "load_balancer": "round-robin",
            "retries": {
                "attempts": 3, "per_try_timeout": "300ms", "retry_on": ["5xx"],
                "retriable_status_codes": [503], "backoff": { "base": "10ms", "max": "1s" },
                "budget": { "ratio": 0.2, "min_per_second": 10, "window": "10s" },
                "non_idempotent": false, "max_buffered_body": "64KiB"
            },
            "circuit_breaker": {
                "consecutive_failures": 5, "base_ejection_time": "30s", "max_ejection_time": "5m",
                "max_ejection_percent": 50, "max_requests": 100, "max_pending": 10
            },
            "authorization": {
                "default": "deny", "allow": ["orders"], "deny": ["spiffe://mesh.local/ns/x/sa/y"],
                "unauthenticated": "deny",
                "rules": [{
                    "name": "reads", "default": "deny", "allow": ["storefront"], "deny": [],
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/api" }, "method": "GET" }]
                }]
            },
            "rate_limit": {
                "requests_per_second": 50.5, "burst": 100,
                "callers": { "orders": { "requests_per_second": 10, "burst": 20 } }
            },
            "traffic_split": { "v1": 90, "v2": 10 },
            "fault": {
                "delay": { "fixedDelay": "1s", "percentage": 10 },
                "abort": { "grpcStatus": "UNAVAILABLE", "percentage": 5 }
            },
            "routes": [
                {
                    "name": "legacy", "match": { "methods": ["GET"], "path_prefix": "/old" },
                    "timeout": "1s", "retries": { "attempts": 2 }
                },
                {
                    "name": "testers",
                    "matches": [{
                        "path": { "type": "Exact", "value": "/cart" },
                        "headers": [{ "type": "Exact", "name": "x-tester", "value": "yes" }],
                        "queryParams": [{ "name": "beta", "value": "1" }]
                    }],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {
                                "set": [{ "name": "x-a", "value": "1" }],
                                "add": [{ "name": "x-b", "value": "2" }],
                                "remove": ["x-c"]
                            }
                        },
                        {
                            "type": "URLRewrite",
                            "urlRewrite": { "hostname": "cart", "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2" } }
                        },
                        {
                            "type": "RequestMirror",
                            "requestMirror": { "backendRef": { "name": "inventory", "version": "v2" }, "percent": 25 }
                        }
                    ],
                    "backendRefs": [{ "name": "inventory", "version": "v2", "weight": 1 }],
                    "fault": { "abort": { "grpcStatus": 14, "httpStatus": 503, "percentage": 1 } }
                },
                {
                    "name": "moved",
                    "filters": [{
                        "type": "RequestRedirect",
                        "requestRedirect": {
                            "scheme": "https", "hostname": "new", "port": 8443, "statusCode": 301,
                            "path": { "type": "ReplaceFullPath", "replaceFullPath": "/" }
                        }
                    }]
                }
            ],
            "protocol": "http",
            "listen": "127.0.0.1:8090",
            "port": 8080,
            "virtual_address": "127.240.0.10"
        }),
    ));

    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "shop" } })).unwrap(),
        )
        .await
        .unwrap();
    let gvk = kube::api::GroupVersionKind::gvk("mesh.local", "v1alpha1", "MeshService");
    // The CRD is served once it is established, which takes a moment after it is stored.
    let (resource, _) = eventually("MeshService to be served", Duration::from_secs(20), || {
        let admin = admin.clone();
        let gvk = gvk.clone();
        async move { kube::discovery::pinned_kind(&admin, &gvk).await }
    })
    .await;
    let services = Api::<DynamicObject>::namespaced_with(admin.clone(), "shop", &resource);
    for (name, spec) in &specs {
        let object = json!({
            "apiVersion": "mesh.local/v1alpha1",
            "kind": "MeshService",
            "metadata": { "name": name },
            "spec": spec,
        });
        let stored = services
            .patch(
                name,
                &PatchParams::apply("meshctl-test"),
                &Patch::Apply(object),
            )
            .await
            .unwrap_or_else(|e| panic!("MeshService {name}: {e}"));
        assert_eq!(
            numbers_as_floats(&stored.data["spec"]),
            numbers_as_floats(spec),
            "MeshService {name}: the API server kept every field (none pruned)"
        );
    }

    // A field the file format does not have: server-side apply refuses it, naming it; a plain
    // create (kubectl create, or apply without --server-side) has it pruned.
    let unknown = json!({
        "apiVersion": "mesh.local/v1alpha1", "kind": "MeshService",
        "metadata": { "name": "pruned" },
        "spec": { "timeout": "1s", "timeuot": "2s" },
    });
    match services
        .patch(
            "pruned",
            &PatchParams::apply("meshctl-test"),
            &Patch::Apply(unknown.clone()),
        )
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.message.contains(".spec.timeuot"),
                "{}",
                status.message
            );
        }
        other => panic!("server-side apply of an unknown field must be refused: {other:?}"),
    }
    let stored = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(unknown).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stored.data["spec"], json!({ "timeout": "1s" }));
    // A wrong type is refused, naming the field (server-side apply says so with a 500, a
    // create with a 422).
    let refused = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "mesh.local/v1alpha1", "kind": "MeshService",
                "metadata": { "name": "wrong" },
                "spec": { "port": "eighty" },
            }))
            .unwrap(),
        )
        .await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{}", status.message);
            assert!(status.message.contains("spec.port"), "{}", status.message);
        }
        other => panic!("a string port must be refused: {other:?}"),
    }

    // The status subresource takes the control plane's conditions.
    let status = services
        .patch_status(
            "inventory",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "status": {
                    "observedGeneration": 1,
                    "conditions": [{
                        "type": "Accepted", "status": "True", "reason": "Valid",
                        "message": "in force", "lastTransitionTime": "2026-01-01T00:00:00Z"
                    }]
                }
            })),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["conditions"][0]["type"], "Accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_root_ends_up_in_secret_mesh_ca() {
    let Some(cluster) = cluster("an_operators_root_ends_up_in_secret_mesh_ca").await else {
        return;
    };
    let admin = cluster.admin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (ok, _, stderr) = meshctl(&["dev-certs", "--out", out, "probe"]).await;
    assert!(ok, "{stderr}");
    let cert = dir.path().join("ca.pem");
    let key = dir.path().join("ca-key.pem");
    let objects = install(&[
        "--ca-cert",
        cert.to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
    ])
    .await;
    apply_all(&admin, &objects).await;
    let data = Api::<Secret>::namespaced(admin.clone(), "mesh-system")
        .get("mesh-ca")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(data["ca.pem"].0, std::fs::read(&cert).unwrap());
    assert_eq!(data["ca-key.pem"].0, std::fs::read(&key).unwrap());
}

#[tokio::test]
async fn a_root_that_is_not_usable_is_refused_naming_the_flag_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    for sub in ["a", "b"] {
        let (ok, _, stderr) = meshctl(&["dev-certs", "--out", &path(sub), "probe"]).await;
        assert!(ok, "{stderr}");
    }

    // b's key with a's root.
    let (ok, stdout, stderr) = meshctl(&[
        "install",
        "--ca-cert",
        &path("a/ca.pem"),
        "--ca-key",
        &path("b/ca-key.pem"),
    ])
    .await;
    assert!(!ok && stdout.is_empty(), "refused, nothing printed");
    assert!(
        stderr.contains("--ca-key") && stderr.contains("b/ca-key.pem"),
        "{stderr}"
    );
    assert!(
        stderr.contains("is not the key of the certificate"),
        "{stderr}"
    );

    // A workload certificate is not a root.
    let (ok, _, stderr) = meshctl(&[
        "install",
        "--ca-cert",
        &path("a/probe.pem"),
        "--ca-key",
        &path("a/probe-key.pem"),
    ])
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("--ca-cert") && stderr.contains("is not a CA certificate"),
        "{stderr}"
    );

    let (ok, _, stderr) = meshctl(&["install", "--ca-cert", &path("a/ca.pem")]).await;
    assert!(
        !ok && stderr.contains("--ca-key"),
        "both or neither: {stderr}"
    );

    let (ok, _, stderr) = meshctl(&["install", "--replicas", "0"]).await;
    assert!(!ok && stderr.contains("--replicas"), "{stderr}");

    let (ok, _, stderr) = meshctl(&["install", "--trust-domain", "Not A Domain"]).await;
    assert!(!ok && stderr.contains("Not A Domain"), "{stderr}");
}
