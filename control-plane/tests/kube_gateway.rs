//! Ingress from the Gateway API against a real API server with the Gateway API's CRDs: a
//! Gateway of the mesh's class and its HTTPRoutes reach the gateway service's snapshot within
//! a second, with their status written as Gateway API controllers do; edits apply live, an
//! invalid route is refused with its reason in its status while the others keep working, and
//! a deleted route is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::kube_mesh::{KubeMesh, MESH_NAMESPACE};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use mesh_api::proto::v1;
use serde_json::{Value, json};

const MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\n";
/// How long a status may take to be written once the configuration changed.
const STATUS_PATIENCE: Duration = Duration::from_secs(10);
/// How soon an applied object reaches the gateway's snapshot.
const LIVE: Duration = Duration::from_secs(1);
const CONTROLLER: &str = "mesh.local/gateway-controller";

/// The test cluster with the Gateway API's CRDs installed; `None` when skipped.
async fn start(test: &str) -> Option<KubeMesh> {
    let crds = mesh_kube_testkit::gateway_api::available(test)?;
    let mesh = KubeMesh::start(test, MESH).await?;
    mesh_kube_testkit::gateway_api::install_crds(&mesh.cluster, &crds).await;
    Some(mesh)
}

fn api(mesh: &KubeMesh, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind);
    let resource = kube::discovery::ApiResource::from_gvk_with_plural(&gvk, plural);
    Api::namespaced_with(mesh.admin(), MESH_NAMESPACE, &resource)
}

fn gateways(mesh: &KubeMesh) -> Api<DynamicObject> {
    api(mesh, "Gateway", "gateways")
}

fn routes(mesh: &KubeMesh) -> Api<DynamicObject> {
    api(mesh, "HTTPRoute", "httproutes")
}

/// Applies a Gateway API object of `kind` as kubectl does; the object as stored.
async fn apply(api: &Api<DynamicObject>, kind: &str, name: &str, spec: Value) -> DynamicObject {
    let object = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": MESH_NAMESPACE },
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"))
}

/// The gateway file a snapshot carries, as JSON (the control plane writes it as JSON).
fn gateway_file(snapshot: &v1::Snapshot) -> Option<Value> {
    let yaml = &snapshot.gateway.as_ref()?.yaml;
    Some(serde_json::from_str(yaml).expect("the gateway file is JSON"))
}

/// The names of the routes of the gateway file a snapshot carries.
fn route_names(snapshot: &v1::Snapshot) -> Vec<String> {
    gateway_file(snapshot)
        .map(|file| {
            file["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Object `name`'s status once `ready` says it describes what the test waits for.
async fn status_when(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    mesh_testkit::eventually(&format!("{name}'s status: {what}"), STATUS_PATIENCE, || {
        let api = api.clone();
        let ready = &ready;
        async move {
            let object = api.get(name).await.map_err(|e| e.to_string())?;
            let status = object.data["status"].clone();
            if ready(&status) {
                Ok(status)
            } else {
                Err(format!("not yet: {status}"))
            }
        }
    })
    .await
}

/// The mesh's entry of an HTTPRoute's `status.parents`, once it describes `generation`.
async fn route_parent(mesh: &KubeMesh, name: &str, generation: i64) -> Value {
    let status = status_when(&routes(mesh), name, "the mesh's parent entry", |status| {
        status["parents"].as_array().is_some_and(|parents| {
            parents.iter().any(|p| {
                p["controllerName"] == CONTROLLER
                    && p["conditions"][0]["observedGeneration"] == json!(generation)
            })
        })
    })
    .await;
    status["parents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["controllerName"] == CONTROLLER)
        .cloned()
        .unwrap()
}

/// A condition of `conditions` by type, without its transition time.
fn condition(conditions: &Value, kind: &str) -> Value {
    let mut found = conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions}"));
    assert!(found["lastTransitionTime"].is_string(), "{found}");
    found.as_object_mut().unwrap().remove("lastTransitionTime");
    found
}

fn generation(object: &DynamicObject) -> i64 {
    object.metadata.generation.expect("a generation")
}

#[tokio::test]
async fn gateway_api_objects_configure_the_gateway_live_with_their_status() {
    let test = "gateway_api_objects_configure_the_gateway_live_with_their_status";
    let Some(mesh) = start(test).await else {
        return;
    };
    mesh.apply_mesh_service("gateway", json!({ "calls": ["storefront", "orders"] }))
        .await;
    mesh.apply_mesh_service("storefront", json!({})).await;
    mesh.apply_mesh_service("orders", json!({})).await;
    // Polling once a minute: only the objects' watches can apply a change within a second.
    let mut options = mesh.options("replica-a");
    options.config_poll = Duration::from_secs(60);
    let cp = mesh_control_plane::start(options, common::listeners().await)
        .await
        .unwrap();
    let gateway_sidecar = mesh.sidecar(&cp, "gateway").await;
    let mut watch = gateway_sidecar.watch("g-1").await;
    let first = watch
        .next(Duration::from_secs(2))
        .await
        .expect("a snapshot");
    assert!(first.gateway.is_none(), "no Gateway yet");

    let applied_at = tokio::time::Instant::now();
    let gateway = apply(
        &gateways(&mesh),
        "Gateway",
        "gateway",
        json!({
            "gatewayClassName": "mesh",
            "addresses": [{ "type": "IPAddress", "value": "127.0.0.1" }],
            "listeners": [{ "name": "web", "port": 18080, "protocol": "HTTP" }],
        }),
    )
    .await;
    let shop = apply(
        &routes(&mesh),
        "HTTPRoute",
        "shop",
        json!({
            "parentRefs": [{ "name": "gateway", "sectionName": "web" }],
            "hostnames": ["shop.example.com"],
            "rules": [
                {
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/orders" } }],
                    "backendRefs": [{ "name": "orders", "port": 80 }],
                },
                { "backendRefs": [{ "name": "storefront", "port": 80 }] },
            ],
        }),
    )
    .await;
    let snapshot = watch.until(LIVE * 2, |s| route_names(s) == ["shop"]).await;
    assert!(
        applied_at.elapsed() <= LIVE * 2,
        "served after {:?}",
        applied_at.elapsed()
    );
    let file = gateway_file(&snapshot).unwrap();
    assert_eq!(
        file["listeners"],
        json!([{ "name": "web", "address": "127.0.0.1:18080", "protocol": "HTTP" }])
    );
    // With the API server's defaults: weight 1, and a rule without matches matches `/`.
    assert_eq!(
        file["routes"][0],
        json!({
            "name": "shop",
            "parentRefs": [{ "name": "web" }],
            "hostnames": ["shop.example.com"],
            "rules": [
                {
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/orders" } }],
                    "backendRefs": [{ "name": "orders", "weight": 1 }],
                },
                {
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                    "backendRefs": [{ "name": "storefront", "weight": 1 }],
                },
            ],
        })
    );

    // The Gateway's status, as a Gateway API controller writes it.
    let gw_generation = generation(&gateway);
    let status = status_when(&gateways(&mesh), "gateway", "programmed", |s| {
        s["listeners"][0]["attachedRoutes"] == 1
            && s["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "Programmed"))
    })
    .await;
    assert_eq!(
        condition(&status["conditions"], "Accepted"),
        json!({ "type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "the Gateway is valid", "observedGeneration": gw_generation })
    );
    assert_eq!(
        condition(&status["conditions"], "Programmed"),
        json!({ "type": "Programmed", "status": "True", "reason": "Programmed",
                "message": "gateway service gateway serves it", "observedGeneration": gw_generation })
    );
    let listener = &status["listeners"][0];
    assert_eq!(listener["name"], "web");
    assert_eq!(
        listener["supportedKinds"],
        json!([{ "group": "gateway.networking.k8s.io", "kind": "HTTPRoute" }])
    );
    for (kind, reason) in [
        ("Accepted", "Accepted"),
        ("ResolvedRefs", "ResolvedRefs"),
        ("Programmed", "Programmed"),
    ] {
        let c = condition(&listener["conditions"], kind);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("True"), Some(reason)),
            "{c}"
        );
    }
    let parent = route_parent(&mesh, "shop", generation(&shop)).await;
    assert_eq!(
        parent["parentRef"],
        json!({ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gateway", "sectionName": "web" })
    );
    assert_eq!(
        condition(&parent["conditions"], "Accepted"),
        json!({ "type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "the route is in force", "observedGeneration": generation(&shop) })
    );
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs"),
        json!({ "type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs",
                "message": "every backendRef resolved", "observedGeneration": generation(&shop) })
    );
    let stored = routes(&mesh).get("shop").await.unwrap();
    assert_eq!(
        common::kube_mesh::status_manager(&stored.metadata).as_deref(),
        Some("mesh-control-plane")
    );

    // An edit is applied live.
    let edited_at = tokio::time::Instant::now();
    let shop = apply(
        &routes(&mesh),
        "HTTPRoute",
        "shop",
        json!({
            "parentRefs": [{ "name": "gateway", "sectionName": "web" }],
            "hostnames": ["shop.example.com"],
            "rules": [{ "backendRefs": [{ "name": "storefront", "port": 80 }] }],
        }),
    )
    .await;
    watch
        .until(LIVE, |s| {
            gateway_file(s)
                .is_some_and(|f| f["routes"][0]["rules"].as_array().map(Vec::len) == Some(1))
        })
        .await;
    assert!(
        edited_at.elapsed() <= LIVE,
        "after {:?}",
        edited_at.elapsed()
    );
    route_parent(&mesh, "shop", generation(&shop)).await;

    let shop_version = routes(&mesh)
        .get("shop")
        .await
        .unwrap()
        .metadata
        .resource_version;

    // A route the gateway cannot serve is refused, with why, while shop keeps working.
    let broken = apply(
        &routes(&mesh),
        "HTTPRoute",
        "broken",
        json!({
            "parentRefs": [{ "name": "gateway" }],
            "rules": [{
                "filters": [{ "type": "RequestHeaderModifier",
                              "requestHeaderModifier": { "add": [{ "name": "x-a", "value": "b" }] } }],
                "backendRefs": [{ "name": "payments", "port": 80 }],
            }],
        }),
    )
    .await;
    let parent = route_parent(&mesh, "broken", generation(&broken)).await;
    assert_eq!(
        condition(&parent["conditions"], "Accepted"),
        json!({ "type": "Accepted", "status": "False", "reason": "UnsupportedValue",
                "message": "spec.rules[0].filters: not supported by the mesh's gateways; \
                            spec.rules[0].backendRefs[0].name: \"payments\" is not a service \
                            gateway gateway calls: add it to the calls of MeshService gateway; \
                            the route is not in force",
                "observedGeneration": generation(&broken) })
    );
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs")["reason"],
        "BackendNotFound"
    );
    let in_force: Vec<String> = cp.config().gateways["gateway"]
        .config
        .routes
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(in_force, ["shop"]);
    // shop's verdict did not change: its status is not written again.
    let after = routes(&mesh).get("shop").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, shop_version,
        "an unchanged status is not written"
    );

    // shop made invalid: its last accepted version stays in force, its status says why.
    let invalid_shop = apply(
        &routes(&mesh),
        "HTTPRoute",
        "shop",
        json!({
            "parentRefs": [{ "name": "gateway", "sectionName": "web" }],
            "hostnames": ["shop.example.com"],
            "rules": [{
                "matches": [{ "path": { "type": "RegularExpression", "value": "/(" } }],
                "backendRefs": [{ "name": "storefront", "port": 80 }],
            }],
        }),
    )
    .await;
    let parent = route_parent(&mesh, "shop", generation(&invalid_shop)).await;
    let accepted = condition(&parent["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False", "{accepted}");
    let message = accepted["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.rules[0].matches[0].path")
            && message.ends_with("; the last accepted version stays in force"),
        "{message}"
    );
    assert_eq!(cp.config().gateways["gateway"].config.routes.len(), 1);
    assert!(
        cp.config().gateways["gateway"].config.routes[0].rules[0].matches[0]
            == mesh_api::route_match::RouteMatch::any()
    );

    // Detached from the mesh's Gateway: the mesh's entry leaves its status.
    apply(
        &routes(&mesh),
        "HTTPRoute",
        "broken",
        json!({
            "parentRefs": [{ "name": "someone-elses" }],
            "rules": [{ "backendRefs": [{ "name": "payments", "port": 80 }] }],
        }),
    )
    .await;
    status_when(&routes(&mesh), "broken", "no entry of the mesh", |status| {
        status["parents"]
            .as_array()
            .is_some_and(|parents| parents.iter().all(|p| p["controllerName"] != CONTROLLER))
    })
    .await;

    // A deleted route is gone from the gateway.
    routes(&mesh)
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    watch
        .until(LIVE, |s| {
            gateway_file(s).is_some() && route_names(s).is_empty()
        })
        .await;
    let status = status_when(&gateways(&mesh), "gateway", "no attached route", |s| {
        s["listeners"][0]["attachedRoutes"] == 0
    })
    .await;
    assert_eq!(status["listeners"][0]["name"], "web");
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn a_gateway_of_another_class_is_not_the_mesh_s_and_an_invalid_gateway_says_why() {
    let test = "a_gateway_of_another_class_is_not_the_mesh_s_and_an_invalid_gateway_says_why";
    let Some(mesh) = start(test).await else {
        return;
    };
    mesh.apply_mesh_service("gateway", json!({ "calls": ["storefront"] }))
        .await;
    mesh.apply_mesh_service("storefront", json!({})).await;
    let other = apply(
        &gateways(&mesh),
        "Gateway",
        "other",
        json!({
            "gatewayClassName": "someone-else",
            "listeners": [{ "name": "web", "port": 80, "protocol": "HTTP" }],
        }),
    )
    .await;
    let invalid = apply(
        &gateways(&mesh),
        "Gateway",
        "gateway",
        json!({
            "gatewayClassName": "mesh",
            "listeners": [{ "name": "tcp", "port": 9000, "protocol": "TCP" }],
        }),
    )
    .await;
    let cp = mesh.control_plane("replica-a").await;
    let status = status_when(&gateways(&mesh), "gateway", "refused", |s| {
        s["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["observedGeneration"] == json!(generation(&invalid)))
        })
    })
    .await;
    assert_eq!(
        condition(&status["conditions"], "Accepted"),
        json!({ "type": "Accepted", "status": "False", "reason": "ListenersNotValid",
                "message": "spec.listeners: no listener is valid; the gateway is not configured \
                            until the Gateway is valid",
                "observedGeneration": generation(&invalid) })
    );
    let listener = condition(&status["listeners"][0]["conditions"], "Accepted");
    assert_eq!(listener["reason"], "UnsupportedProtocol", "{listener}");
    assert!(cp.config().gateways.is_empty());
    // Not the mesh's: its status is left as the API server made it.
    let stored = gateways(&mesh).get("other").await.unwrap();
    assert_eq!(stored.metadata.generation, other.metadata.generation);
    let pending = condition(&stored.data["status"]["conditions"], "Accepted");
    assert_eq!(pending["reason"], "Pending", "{pending}");

    // The shop demo's Gateway and HTTPRoute are valid Gateway API objects.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/kubernetes/shop-gateway.yaml"),
    )
    .unwrap();
    let client = mesh.admin();
    for document in text.split("\n---\n") {
        let mut object: Value = serde_saphyr::from_str(document).unwrap();
        // In the test cluster's mesh namespace: a dry run asks the API server to validate.
        object["metadata"]["namespace"] = json!(MESH_NAMESPACE);
        let (api, name) = mesh_kube_testkit::apply::api_for(&client, &object).await;
        let mut params = PatchParams::apply("kubectl");
        params.dry_run = true;
        api.patch(&name, &params, &Patch::Apply(object.clone()))
            .await
            .unwrap_or_else(|e| panic!("dry-run apply {name} of shop-gateway.yaml: {e}"));
    }
    cp.stop().await.unwrap();
}

/// GET `path` from the gateway's listener `web` with `Host: host`: its status, `x-mesh-error`
/// and body, or why there is no answer.
async fn through_gateway(
    web: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> Result<(http::StatusCode, String, String), String> {
    let request = http::Request::get(format!("http://{web}{path}"))
        .header("host", host)
        .body(http_body_util::Full::default())
        .map_err(|e| e.to_string())?;
    let response = mesh_testkit::client::http1()
        .request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let error = response
        .headers()
        .get("x-mesh-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, error, mesh_testkit::client::text(response).await))
}

/// Which service's echo app answered a body (`{"service": ...}`).
fn answered_by(body: &str) -> String {
    serde_json::from_str::<Value>(body).map_or_else(
        |_| format!("not JSON: {body}"),
        |v| v["service"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_gateway_routes_outside_requests_over_mtls_as_the_http_routes_say() {
    let test = "a_real_gateway_routes_outside_requests_over_mtls_as_the_http_routes_say";
    let Some(mesh) = start(test).await else {
        return;
    };
    mesh.apply_mesh_service("gateway", json!({ "calls": ["storefront", "orders"] }))
        .await;
    mesh.apply_mesh_service("storefront", json!({})).await;
    mesh.apply_mesh_service("orders", json!({})).await;
    let cp = mesh.control_plane("replica-a").await;
    let token_file = |service: &str| {
        let dir = mesh.dirs.config.path().join(format!("token-{service}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    // Storefront and orders: sidecars in this process, certified with their ServiceAccounts'
    // tokens, their registrations their endpoints (no Service of theirs in the cluster).
    let services = mesh_testkit::TestMesh::new();
    let mut sidecars = Vec::new();
    for service in ["storefront", "orders"] {
        let token = mesh.token(service, common::kube_mesh::AUDIENCE).await;
        let file = common::kube_mesh::write_projected_token(&token_file(service), &token);
        let echo = match service {
            "storefront" => mesh_testkit::app::echo("storefront").await,
            _ => mesh_testkit::app::echo("orders").await,
        };
        sidecars.push(
            services
                .sidecar(service)
                .app(echo)
                .control_plane(mesh.control_plane_ref(&cp, &file))
                .start()
                .await,
        );
    }

    let web = mesh_testkit::free_port();
    apply(
        &gateways(&mesh),
        "Gateway",
        "gateway",
        json!({
            "gatewayClassName": "mesh",
            "addresses": [{ "type": "IPAddress", "value": "127.0.0.1" }],
            "listeners": [{ "name": "web", "port": web.port(), "protocol": "HTTP" }],
        }),
    )
    .await;
    apply(
        &routes(&mesh),
        "HTTPRoute",
        "shop",
        json!({
            "parentRefs": [{ "name": "gateway" }],
            "hostnames": ["shop.example.com"],
            "rules": [
                {
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/api/orders" } }],
                    "backendRefs": [{ "name": "orders", "port": 80 }],
                },
                { "backendRefs": [{ "name": "storefront", "port": 80 }] },
            ],
        }),
    )
    .await;

    // The gateway: the sidecar binary, its bootstrap saying only `gateway: {}`.
    let token = mesh.token("gateway", common::kube_mesh::AUDIENCE).await;
    let gateway_token = common::kube_mesh::write_projected_token(&token_file("gateway"), &token);
    let (outbound, admin) = (mesh_testkit::free_port(), mesh_testkit::free_port());
    let dir = mesh.dirs.config.path();
    let bootstrap = format!(
        "service: gateway\ntrust_domain: mesh.local\n\
         listen: {{ outbound: \"{outbound}\", admin: \"{admin}\" }}\n\
         drain_timeout: 1s\n\
         control_plane: {{ address: \"{cp}\", trust_anchor: \"{anchor}\", token_file: \"{token}\" }}\n\
         gateway: {{}}\n",
        cp = cp.api_addr(),
        anchor = mesh.dirs.state().join("ca.pem").display(),
        token = gateway_token.display(),
    );
    std::fs::write(dir.join("gateway.yaml"), bootstrap).unwrap();
    let log = dir.join("gateway.log");
    let _gateway = mesh_testkit::process::KillOnDrop::new(
        std::process::Command::new(common::workspace_binary("sidecar"))
            .arg("--config")
            .arg(dir.join("gateway.yaml"))
            .env_remove("MESH_SIDECAR_CONFIG")
            .env_remove("MESH_SIDECAR_BOOTSTRAP")
            .env("RUST_LOG", "info")
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let patience = Duration::from_secs(20);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // By path, to each service over mTLS, as the gateway service.
    for (path, service) in [("/api/orders/7", "orders"), ("/", "storefront")] {
        mesh_testkit::eventually(
            &format!("{path} through the gateway to reach {service}"),
            patience,
            || async {
                let (status, error, body) = through_gateway(web, "shop.example.com", path).await?;
                if status == http::StatusCode::OK && answered_by(&body) == service {
                    Ok(())
                } else {
                    Err(format!("{status} {error} {body}\n{}", log_text()))
                }
            },
        )
        .await;
    }
    // Another host has no route.
    let (status, error, _) = through_gateway(web, "other.example.com", "/")
        .await
        .unwrap();
    assert_eq!(
        (status, error.as_str()),
        (http::StatusCode::NOT_FOUND, "no-route")
    );

    // An edit sends orders' path to storefront, live.
    apply(
        &routes(&mesh),
        "HTTPRoute",
        "shop",
        json!({
            "parentRefs": [{ "name": "gateway" }],
            "hostnames": ["shop.example.com"],
            "rules": [{ "backendRefs": [{ "name": "storefront", "port": 80 }] }],
        }),
    )
    .await;
    mesh_testkit::eventually("the edit to be served", Duration::from_secs(5), || async {
        let (status, error, body) =
            through_gateway(web, "shop.example.com", "/api/orders/7").await?;
        if status == http::StatusCode::OK && answered_by(&body) == "storefront" {
            Ok(())
        } else {
            Err(format!("{status} {error} {body}"))
        }
    })
    .await;

    // Deleted: no route for the host any more.
    routes(&mesh)
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    mesh_testkit::eventually(
        "the deletion to be served",
        Duration::from_secs(5),
        || async {
            let (status, error, _) = through_gateway(web, "shop.example.com", "/").await?;
            if status == http::StatusCode::NOT_FOUND && error == "no-route" {
                Ok(())
            } else {
                Err(format!("{status} {error}"))
            }
        },
    )
    .await;
    drop(sidecars);
    cp.stop().await.unwrap();
}
