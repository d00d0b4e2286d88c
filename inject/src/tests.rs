//! Injection of every supported kind, streams and lists, each annotation, idempotence,
//! uninjection, and each refused input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

use crate::*;

const PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\nZm9vYmFy\n-----END CERTIFICATE-----\n";

fn settings() -> Settings {
    Settings::new("mesh.local", PEM)
}

fn parse(text: &str) -> Vec<Value> {
    crate::document::parse(text)
        .unwrap()
        .iter()
        .map(|node| node.to_json().unwrap())
        .collect()
}

fn inject(text: &str) -> Injection {
    inject_yaml(text, &settings()).unwrap_or_else(|e| panic!("inject: {e}\n{text}"))
}

fn error(text: &str) -> String {
    match inject_yaml(text, &settings()) {
        Ok(injection) => panic!("expected an error, got\n{}", injection.output),
        Err(e) => e.to_string(),
    }
}

/// The pod template of the only document of `text`, at `path`.
fn template<'a>(document: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(document, |value, key| &value[*key])
}

fn init_names(pod: &Value) -> Vec<&str> {
    pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn env<'a>(pod: &'a Value, name: &str) -> &'a str {
    pod["spec"]["initContainers"][1]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))["value"]
        .as_str()
        .unwrap()
}

fn bootstrap(pod: &Value) -> Value {
    let text = env(pod, "MESH_SIDECAR_BOOTSTRAP");
    let nodes = crate::document::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    nodes[0].to_json().unwrap()
}

fn init_args(pod: &Value) -> Vec<&str> {
    pod["spec"]["initContainers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

const POD_SPEC: &str = "
      containers:
      - name: app
        image: example/orders:1
        ports:
        - containerPort: 8080";

fn workload(kind: &str, api_version: &str) -> String {
    let template = format!(
        "
    metadata:
      labels:
        app: orders
    spec:{POD_SPEC}"
    );
    match kind {
        "Pod" => format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: orders\n  namespace: shop\n  labels:\n    app: orders\nspec:{}\n",
            POD_SPEC.replace("\n    ", "\n")
        ),
        "CronJob" => format!(
            "apiVersion: {api_version}\nkind: CronJob\nmetadata:\n  name: orders\n  namespace: shop\nspec:\n  schedule: \"*/5 * * * *\"\n  jobTemplate:\n    spec:\n      template:{}\n",
            template.replace("\n    ", "\n        ")
        ),
        _ => format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: orders\n  namespace: shop\nspec:\n  template:{template}\n"
        ),
    }
}

const KINDS: [(&str, &str, &[&str]); 7] = [
    ("Pod", "v1", &[]),
    ("Deployment", "apps/v1", &["spec", "template"]),
    ("StatefulSet", "apps/v1", &["spec", "template"]),
    ("DaemonSet", "apps/v1", &["spec", "template"]),
    ("ReplicaSet", "apps/v1", &["spec", "template"]),
    ("Job", "batch/v1", &["spec", "template"]),
    (
        "CronJob",
        "batch/v1",
        &["spec", "jobTemplate", "spec", "template"],
    ),
];

#[test]
fn every_kind_gets_the_mesh_containers_volume_and_marker() {
    for (kind, api_version, path) in KINDS {
        let input = workload(kind, api_version);
        let injection = inject(&input);
        assert_eq!(
            injection.objects,
            vec![ObjectReport {
                document: 1,
                object: format!("{kind} shop/orders"),
                outcome: ObjectOutcome::Injected,
            }],
            "{kind}"
        );
        let output = parse(&injection.output);
        let pod = template(&output[0], path);
        assert_eq!(init_names(pod), ["mesh-init", "mesh-proxy"], "{kind}");
        assert_eq!(
            pod["metadata"]["annotations"][INJECTED_ANNOTATION], MESH_VERSION,
            "{kind}"
        );
        assert_eq!(pod["spec"]["volumes"][0]["name"], TOKEN_VOLUME, "{kind}");
        assert_eq!(pod["spec"]["containers"][0]["name"], "app", "{kind}");
        // Everything else is as it was.
        let mut back = output[0].clone();
        *template_mut(&mut back, path) = uninject_pod(pod);
        assert_eq!(back, parse(&input)[0], "{kind}");
    }
}

fn template_mut<'a>(document: &'a mut Value, path: &[&str]) -> &'a mut Value {
    path.iter().fold(document, |value, key| &mut value[*key])
}

#[test]
fn the_containers_are_the_designed_ones() {
    let output = parse(&inject(&workload("Pod", "v1")).output);
    let pod = &output[0];
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(
        init["image"],
        format!("ghcr.io/mesh-rs/sidecar:{MESH_VERSION}")
    );
    assert_eq!(init_args(pod), ["redirect", "--proxy-uid", "65532"]);
    assert_eq!(
        init["securityContext"],
        json!({
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN"] },
        })
    );
    assert!(init.get("imagePullPolicy").is_none());
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert!(proxy.get("args").is_none());
    let env_names: Vec<&str> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env_names,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "POD_IP",
            "MESH_LOG",
            "MESH_SIDECAR_BOOTSTRAP"
        ]
    );
    assert_eq!(
        proxy["env"][2]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(env(pod, "MESH_LOG"), "info");
    assert_eq!(
        proxy["ports"][0],
        json!({ "name": "mesh-admin", "containerPort": 15000 })
    );
    assert_eq!(
        proxy["ports"][1],
        json!({ "name": "mesh-inbound", "containerPort": 15006 })
    );
    assert_eq!(
        proxy["startupProbe"]["httpGet"],
        json!({ "path": "/ready", "port": 15000 })
    );
    assert_eq!(
        proxy["readinessProbe"]["httpGet"],
        json!({ "path": "/ready", "port": 15000 })
    );
    assert_eq!(
        proxy["livenessProbe"]["httpGet"],
        json!({ "path": "/live", "port": 15000 })
    );
    assert_eq!(
        proxy["resources"],
        json!({ "requests": { "cpu": "100m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } })
    );
    assert_eq!(
        proxy["securityContext"],
        json!({
            "runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        })
    );
    assert_eq!(
        proxy["volumeMounts"],
        json!([{ "name": "mesh-token", "mountPath": TOKEN_DIR, "readOnly": true }])
    );
    assert_eq!(
        pod["spec"]["volumes"][0],
        json!({ "name": "mesh-token", "projected": { "sources": [{ "serviceAccountToken": {
            "audience": "mesh.local", "expirationSeconds": 3600, "path": "token" } }] } })
    );
    assert_eq!(
        bootstrap(pod),
        json!({
            "service": "orders",
            "instance": "$(POD_NAME)",
            "trust_domain": "mesh.local",
            "app": "127.0.0.1:8080",
            "listen": {
                "outbound": "127.0.0.1:15001", "inbound": "0.0.0.0:15006",
                "admin": "0.0.0.0:15000", "advertise": "$(POD_IP):15006",
            },
            "control_plane": {
                "address": DEFAULT_CONTROL_PLANE,
                "trust_anchor_pem": PEM,
                "token_file": "/var/run/secrets/mesh.local/serviceaccount/token",
            },
        })
    );
}

#[test]
fn settings_reach_the_containers() {
    let settings = Settings {
        proxy_image: "registry.local/sidecar:dev".into(),
        image_pull_policy: Some("Never".into()),
        control_plane: "cp.example:9000".into(),
        trust_domain: "prod.example".into(),
        proxy_uid: 1337,
        log_level: "debug".into(),
        version: "9.9.9".into(),
        ..settings()
    };
    let output = inject_yaml(&workload("Pod", "v1"), &settings)
        .unwrap()
        .output;
    let pod = &parse(&output)[0];
    for container in pod["spec"]["initContainers"].as_array().unwrap() {
        assert_eq!(container["image"], "registry.local/sidecar:dev");
        assert_eq!(container["imagePullPolicy"], "Never");
    }
    assert_eq!(init_args(pod), ["redirect", "--proxy-uid", "1337"]);
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["securityContext"]["runAsGroup"], 1337);
    assert_eq!(env(pod, "MESH_LOG"), "debug");
    assert_eq!(pod["metadata"]["annotations"][INJECTED_ANNOTATION], "9.9.9");
    let bootstrap = bootstrap(pod);
    assert_eq!(bootstrap["control_plane"]["address"], "cp.example:9000");
    assert_eq!(bootstrap["trust_domain"], "prod.example");
}

fn pod_with(metadata: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n{metadata}\nspec:\n{spec}\n")
}

const ONE_CONTAINER: &str = "  containers:\n  - name: app\n    image: app:1";

fn injected_pod(metadata: &str, spec: &str) -> Value {
    parse(&inject(&pod_with(metadata, spec)).output).remove(0)
}

#[test]
fn the_service_name_comes_from_the_annotation_then_the_labels() {
    let pod = injected_pod(
        "  labels: { app: a, app.kubernetes.io/name: b }\n  annotations: { mesh.local/service: c }",
        ONE_CONTAINER,
    );
    assert_eq!(bootstrap(&pod)["service"], "c");
    let pod = injected_pod(
        "  labels: { app: a, app.kubernetes.io/name: b }",
        ONE_CONTAINER,
    );
    assert_eq!(bootstrap(&pod)["service"], "b");
    let pod = injected_pod("  labels: { app: a }", ONE_CONTAINER);
    assert_eq!(bootstrap(&pod)["service"], "a");
}

#[test]
fn the_version_comes_from_the_labels_when_set() {
    let pod = injected_pod(
        "  labels: { app: a, app.kubernetes.io/version: v2, version: v1 }",
        ONE_CONTAINER,
    );
    assert_eq!(bootstrap(&pod)["version"], "v2");
    let pod = injected_pod("  labels: { app: a, version: v1 }", ONE_CONTAINER);
    assert_eq!(bootstrap(&pod)["version"], "v1");
    let pod = injected_pod("  labels: { app: a }", ONE_CONTAINER);
    assert!(bootstrap(&pod).get("version").is_none());
}

#[test]
fn the_app_port_comes_from_the_annotation_then_the_first_container_port() {
    let spec = "  containers:\n  - name: app\n    ports: [{ containerPort: 8080 }, { containerPort: 9090 }]\n  - name: other\n    ports: [{ containerPort: 7070 }]";
    let pod = injected_pod(
        "  labels: { app: a }\n  annotations: { mesh.local/app-port: \"9090\" }",
        spec,
    );
    assert_eq!(bootstrap(&pod)["app"], "127.0.0.1:9090");
    let pod = injected_pod("  labels: { app: a }", spec);
    assert_eq!(bootstrap(&pod)["app"], "127.0.0.1:8080");
    let pod = injected_pod("  labels: { app: a }", ONE_CONTAINER);
    assert_eq!(bootstrap(&pod)["app"], "127.0.0.1:80");
}

#[test]
fn skip_annotations_become_redirect_flags() {
    let pod = injected_pod(
        "  labels: { app: a }\n  annotations:\n    mesh.local/skip-inbound-ports: \"9100, 9200-9299\"\n    mesh.local/skip-outbound-ports: \"5432\"\n    mesh.local/skip-outbound-cidrs: \"10.1.0.0/16,fd00::/8, 169.254.169.254\"",
        ONE_CONTAINER,
    );
    assert_eq!(
        init_args(&pod),
        [
            "redirect",
            "--proxy-uid",
            "65532",
            "--exclude-inbound-ports",
            "9100,9200-9299",
            "--exclude-outbound-ports",
            "5432",
            "--exclude-outbound-cidrs",
            "10.1.0.0/16,fd00::/8,169.254.169.254/32",
        ]
    );
}

#[test]
fn opaque_ports_and_log_level_reach_the_sidecar() {
    let pod = injected_pod(
        "  labels: { app: a }\n  annotations:\n    mesh.local/opaque-ports: \"5432,6379\"\n    mesh.local/log-level: \"info,mesh_sidecar=debug\"",
        ONE_CONTAINER,
    );
    assert_eq!(
        bootstrap(&pod)["inbound"],
        json!({ "opaque_ports": [5432, 6379] })
    );
    assert_eq!(env(&pod, "MESH_LOG"), "info,mesh_sidecar=debug");
    let pod = injected_pod("  labels: { app: a }", ONE_CONTAINER);
    assert!(bootstrap(&pod).get("inbound").is_none());
}

#[test]
fn existing_init_containers_and_volumes_stay_after_the_mesh_ones() {
    let spec = "  initContainers:\n  - name: migrate\n    image: m:1\n  containers:\n  - name: app\n  volumes:\n  - name: data\n    emptyDir: {}";
    let pod = injected_pod("  labels: { app: a }", spec);
    assert_eq!(init_names(&pod), ["mesh-init", "mesh-proxy", "migrate"]);
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["data", "mesh-token"]);
}

const STREAM: &str = "\
# a comment, which is not kept
kind: Service
apiVersion: v1
metadata: { name: orders, namespace: shop }
spec:
  selector: { app: orders }
  ports: [{ port: 80, targetPort: 8080 }]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
  namespace: shop
  labels: { tier: backend, app: orders }
spec:
  replicas: 2
  selector:
    matchLabels: { app: orders }
  template:
    metadata:
      labels: { app: orders }
      annotations: { zeta: z, alpha: a }
    spec:
      terminationGracePeriodSeconds: 30
      containers:
      - name: app
        image: example/orders:1
        ports:
        - containerPort: 8080
          name: http
---
---
apiVersion: v1
kind: ConfigMap
metadata: { name: settings }
data:
  port: \"8080\"
  enabled: \"true\"
  motd: |
    hello
    world
";

#[test]
fn a_stream_passes_other_kinds_through_and_keeps_the_key_order() {
    let injection = inject(STREAM);
    let outcomes: Vec<(usize, &str, ObjectOutcome)> = injection
        .objects
        .iter()
        .map(|o| (o.document, o.object.as_str(), o.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, "Service shop/orders", ObjectOutcome::PassedThrough),
            (2, "Deployment shop/orders", ObjectOutcome::Injected),
            (3, "ConfigMap settings", ObjectOutcome::PassedThrough),
        ]
    );
    assert_eq!(
        injection.report(),
        "Service shop/orders passed through: no pods\nDeployment shop/orders injected\n\
         ConfigMap settings passed through: no pods\n"
    );
    let input = parse(STREAM);
    let output = parse(&injection.output);
    assert_eq!(output.len(), 3);
    assert_eq!(output[0], input[0]);
    assert_eq!(output[2], input[2]);
    assert_eq!(output[2]["data"]["port"], "8080", "strings stay strings");
    // Keys as written: kind before apiVersion in the Service, zeta before alpha, the mesh's
    // annotation last; container keys in the usual order.
    let whole = &injection.output;
    assert!(whole.find("kind: Service").unwrap() < whole.find("apiVersion: v1").unwrap());
    assert!(!whole.contains("a comment"));
    let text = &whole[whole.find("kind: Deployment").unwrap()..];
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle}\n{text}"))
    };
    assert!(position("zeta: z") < position("alpha: a"));
    assert!(position("alpha: a") < position("mesh.local/injected"));
    assert!(position("tier: backend") < position("app: orders"));
    assert!(position("replicas: 2") < position("selector:"));
    assert!(position("terminationGracePeriodSeconds") < position("initContainers"));
    assert!(position("- name: mesh-init") < position("image: ghcr.io"));
    assert!(position("containerPort: 8080") < position("name: http"));
}

#[test]
fn injecting_twice_changes_nothing_and_uninject_gives_back_the_input() {
    let once = inject(STREAM);
    let twice = inject(&once.output);
    assert_eq!(twice.output, once.output);
    assert_eq!(twice.objects[1].outcome, ObjectOutcome::AlreadyInjected);
    let back = uninject_yaml(&once.output).unwrap();
    assert_eq!(parse(&back), parse(STREAM));
    // Text too, but for the comment: the input as this crate writes it.
    let nodes = crate::document::parse(STREAM).unwrap();
    assert_eq!(back, crate::document::write(&nodes).unwrap());
    // Uninjecting what was never injected changes nothing.
    assert_eq!(uninject_yaml(&back).unwrap(), back);
}

#[test]
fn a_list_is_injected_item_by_item() {
    let input = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}\n- {}\n",
        "{ apiVersion: v1, kind: ConfigMap, metadata: { name: c } }",
        serde_json::to_string(&parse(&workload("Deployment", "apps/v1"))[0]).unwrap(),
    );
    let injection = inject(&input);
    let outcomes: Vec<(&str, ObjectOutcome)> = injection
        .objects
        .iter()
        .map(|o| (o.object.as_str(), o.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("List (no name)", ObjectOutcome::PassedThrough),
            ("ConfigMap c", ObjectOutcome::PassedThrough),
            ("Deployment shop/orders", ObjectOutcome::Injected),
        ]
    );
    let output = parse(&injection.output);
    let pod = &output[0]["items"][1]["spec"]["template"];
    assert_eq!(init_names(pod), ["mesh-init", "mesh-proxy"]);
    assert_eq!(
        parse(&uninject_yaml(&injection.output).unwrap()),
        parse(&input)
    );
    assert_eq!(inject(&injection.output).output, injection.output);
}

#[test]
fn json_input_is_read_and_written_as_yaml() {
    let input = serde_json::to_string_pretty(&parse(&workload("Pod", "v1"))[0]).unwrap();
    let output = parse(&inject(&input).output);
    assert_eq!(init_names(&output[0]), ["mesh-init", "mesh-proxy"]);
}

#[test]
fn a_disabled_pod_is_left_alone() {
    let input = pod_with(
        "  labels: { app: a, mesh.local/inject: disabled }",
        ONE_CONTAINER,
    );
    let injection = inject(&input);
    assert_eq!(injection.objects[0].outcome, ObjectOutcome::OptedOut);
    assert_eq!(parse(&injection.output), parse(&input));
    assert!(injection.report().contains("mesh.local/inject: disabled"));
}

#[test]
fn inject_pod_answers_for_the_webhook() {
    let pod = json!({
        "metadata": { "labels": { "app": "orders" } },
        "spec": { "containers": [{ "name": "app" }] },
    });
    let PodOutcome::Injected(injected) = inject_pod(&pod, &settings(), "Pod shop/x").unwrap()
    else {
        panic!("not injected");
    };
    assert_eq!(init_names(&injected), ["mesh-init", "mesh-proxy"]);
    assert_eq!(
        inject_pod(&injected, &settings(), "Pod shop/x").unwrap(),
        PodOutcome::AlreadyInjected
    );
    assert_eq!(uninject_pod(&injected), pod);
    let disabled = json!({
        "metadata": { "labels": { "mesh.local/inject": "disabled" } },
        "spec": { "containers": [{ "name": "app" }] },
    });
    assert_eq!(
        inject_pod(&disabled, &settings(), "Pod shop/x").unwrap(),
        PodOutcome::OptedOut
    );
}

#[test]
fn uninject_leaves_a_pod_that_was_not_injected_alone() {
    let pod = json!({
        "metadata": { "name": "x" },
        "spec": {
            "initContainers": [{ "name": "mesh-proxy" }],
            "containers": [{ "name": "app" }],
            "volumes": [{ "name": "mesh-token" }],
        },
    });
    assert_eq!(uninject_pod(&pod), pod);
}

#[test]
fn inject_pod_refuses_any_odd_json_without_panicking() {
    let odd = [
        json!(null),
        json!(5),
        json!("pod"),
        json!([]),
        json!({}),
        json!({ "spec": 5 }),
        json!({ "spec": {} }),
        json!({ "spec": { "containers": "app" } }),
        json!({ "spec": { "containers": [] } }),
        json!({ "spec": { "containers": [5] } }),
        json!({ "spec": { "containers": [{ "ports": 5 }] } }),
        json!({ "spec": { "containers": [{ "ports": [5, { "containerPort": "x" }] }] } }),
        json!({ "metadata": 5, "spec": { "containers": [{}] } }),
        json!({ "metadata": { "labels": [] }, "spec": { "containers": [{}] } }),
        json!({ "metadata": { "labels": { "app": 5 } }, "spec": { "containers": [{}] } }),
        json!({ "metadata": { "annotations": { "mesh.local/service": 5 } }, "spec": { "containers": [{}] } }),
        json!({ "metadata": { "labels": { "app": "a" } }, "spec": { "containers": [{}], "volumes": 5 } }),
        json!({ "metadata": { "labels": { "app": "a" } }, "spec": { "containers": [{}], "initContainers": 5 } }),
        json!({ "metadata": { "labels": { "app": "a" } }, "spec": { "containers": [{ "ports": [{ "containerPort": -1 }] }] } }),
    ];
    for pod in odd {
        let result = inject_pod(&pod, &settings(), "Pod shop/x");
        assert!(result.is_err(), "{pod}: {result:?}");
        assert!(result.unwrap_err().to_string().contains("Pod shop/x"));
        let _ = uninject_pod(&pod);
    }
}

#[test]
fn input_that_is_not_yaml_is_refused_with_its_line() {
    let message = error("apiVersion: v1\nkind: Pod\nmetadata: { name: [x\n");
    assert!(message.starts_with("the input is not YAML"), "{message}");
    assert!(
        message.contains("line 3") || message.contains("3:"),
        "{message}"
    );
}

#[test]
fn a_document_that_is_not_an_object_is_refused() {
    let message = error("kind: ConfigMap\nmetadata: { name: a }\n---\njust text\n");
    assert_eq!(
        message,
        "document 2 is a string, not a Kubernetes object (a mapping with kind)"
    );
    let message = error("- a\n- b\n");
    assert!(message.contains("document 1 is a list"), "{message}");
}

#[test]
fn a_known_kind_without_a_pod_template_is_refused() {
    let message = error(
        "kind: Service\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: { name: orders, namespace: shop }\nspec: { replicas: 1 }\n",
    );
    assert_eq!(
        message,
        "document 2: Deployment shop/orders: spec.template: missing: a Deployment needs a pod \
         template here"
    );
    let message =
        error("kind: CronJob\nmetadata: { name: nightly }\nspec: { jobTemplate: { spec: {} } }\n");
    assert!(
        message.contains("CronJob nightly: spec.jobTemplate.spec.template: missing"),
        "{message}"
    );
    let message = error("kind: Pod\nmetadata: { name: p }\n");
    assert!(message.contains("Pod p: spec: missing"), "{message}");
}

#[test]
fn the_mesh_names_and_ports_are_refused_in_the_pod() {
    let deployment = |spec: &str| {
        format!(
            "kind: Deployment\nmetadata: {{ name: orders, namespace: shop }}\nspec:\n  template:\n    metadata: {{ labels: {{ app: orders }} }}\n    spec:\n{spec}\n"
        )
    };
    let message = error(&deployment(
        "      containers:\n      - name: app\n      - name: metrics\n        ports: [{ containerPort: 9090 }, { containerPort: 15006 }]",
    ));
    assert!(
        message.starts_with(
            "document 1: Deployment shop/orders: spec.template.spec.containers[1].ports[1]: \
             containerPort 15006"
        ),
        "{message}"
    );
    let message = error(&deployment("      containers:\n      - name: mesh-proxy"));
    assert!(
        message.contains("spec.template.spec.containers[0].name: \"mesh-proxy\""),
        "{message}"
    );
    let message = error(&deployment(
        "      initContainers: [{ name: mesh-init }]\n      containers: [{ name: app }]",
    ));
    assert!(
        message.contains("spec.template.spec.initContainers[0].name"),
        "{message}"
    );
    let message = error(&deployment(
        "      containers: [{ name: app }]\n      volumes: [{ name: x }, { name: mesh-token }]",
    ));
    assert!(
        message.contains("spec.template.spec.volumes[1].name"),
        "{message}"
    );
    let message = error(&deployment(
        "      hostNetwork: true\n      containers: [{ name: app }]",
    ));
    assert!(
        message.contains("spec.template.spec.hostNetwork"),
        "{message}"
    );
}

#[test]
fn bad_annotation_values_are_refused_by_name() {
    let cases = [
        ("mesh.local/app-port", "\"http\"", "\"http\" is not a port"),
        ("mesh.local/app-port", "8080", "is not a string"),
        ("mesh.local/app-port", "\"70000\"", "is not a port"),
        (
            "mesh.local/skip-inbound-ports",
            "\"9-8\"",
            "ends before it starts",
        ),
        ("mesh.local/skip-outbound-ports", "\"0\"", "is not a port"),
        (
            "mesh.local/skip-outbound-cidrs",
            "\"10.0.0.0/33\"",
            "/0 and /32",
        ),
        (
            "mesh.local/skip-outbound-cidrs",
            "\"example.com\"",
            "not an IP address",
        ),
        ("mesh.local/opaque-ports", "\"5432-5433\"", "is not a port"),
        ("mesh.local/opaque-ports", "\",\"", "is empty"),
        (
            "mesh.local/log-level",
            "\"debug now\"",
            "is not a log filter",
        ),
        ("mesh.local/service", "\"Orders\"", "a service name is"),
    ];
    for (annotation, value, problem) in cases {
        let input = format!(
            "kind: Deployment\nmetadata: {{ name: orders, namespace: shop }}\nspec:\n  template:\n    metadata:\n      labels: {{ app: orders }}\n      annotations: {{ {annotation}: {value} }}\n    spec: {{ containers: [{{ name: app }}] }}\n"
        );
        let message = error(&input);
        assert!(
            message.starts_with(&format!(
                "document 1: Deployment shop/orders: spec.template.metadata.annotations: \
                 annotation {annotation}: "
            )),
            "{message}"
        );
        assert!(message.contains(problem), "{annotation}: {message}");
    }
}

#[test]
fn a_pod_without_a_service_name_is_refused_saying_what_to_set() {
    let message = error(&pod_with("  labels: { tier: web }", ONE_CONTAINER));
    assert_eq!(
        message,
        "document 1: Pod p: no mesh service name: set annotation mesh.local/service, or label \
         app.kubernetes.io/name or app, in metadata"
    );
    let message = error(&pod_with("  labels: { app: Web_1 }", ONE_CONTAINER));
    assert!(message.contains("metadata.labels[app]"), "{message}");
}
