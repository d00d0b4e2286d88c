//! Service discovery in Kubernetes mode against a real API server: a mesh service's endpoints
//! are the ready addresses of its Service's EndpointSlices, its virtual address the Service's
//! ClusterIP, and every slice edit reaches the sidecars watching within a second.
//!
//! The first test needs no root: its slices name pod addresses nothing listens on (no traffic
//! is sent). The second runs real sidecars in network namespaces (root) and sends requests
//! through the mesh to the endpoints a slice names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kube_mesh::{AUDIENCE, KubeMesh, MESH_NAMESPACE, write_projected_token};
use common::{Sidecar, endpoints, spawn, workspace_binary};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use mesh_api::proto::v1;
use mesh_control_plane::{ControlPlane, Listeners};
use mesh_testkit::eventually;
use mesh_testkit::netns::{Host, TwoHosts};
use serde_json::{Value, json};

/// How soon a slice edit must be in the snapshots sidecars watch.
const PUSH: Duration = Duration::from_secs(1);

/// The label that ties a slice to its Service.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Certifies a sidecar of `service` with its ServiceAccount's token, ready to register and
/// watch.
async fn certified(cp: &ControlPlane, mesh: &KubeMesh, service: &str) -> Sidecar {
    mesh.sidecar(cp, service).await
}

/// The cluster's Services and EndpointSlices of the mesh's namespace, as an administrator.
struct Objects {
    services: Api<Service>,
    slices: Api<EndpointSlice>,
}

impl Objects {
    fn new(mesh: &KubeMesh) -> Self {
        Self {
            services: Api::namespaced(mesh.admin(), MESH_NAMESPACE),
            slices: Api::namespaced(mesh.admin(), MESH_NAMESPACE),
        }
    }

    /// Creates or replaces Service `name` with `ports`; its ClusterIP, as allocated.
    async fn apply_service(&self, name: &str, ports: Value) -> String {
        let object = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "namespace": MESH_NAMESPACE },
            "spec": { "selector": { "app": name }, "ports": ports },
        });
        let service = self
            .services
            .patch(name, &apply(), &Patch::Apply(object))
            .await
            .unwrap_or_else(|e| panic!("apply Service {name}: {e}"));
        service.spec.unwrap().cluster_ip.unwrap()
    }

    /// Creates or replaces slice `name` of Service `service`: each endpoint an address and
    /// its `ready` condition (`None`: unset).
    async fn apply_slice(&self, name: &str, service: &str, endpoints: &[(&str, Option<bool>)]) {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(address, ready)| match ready {
                Some(ready) => json!({ "addresses": [address], "conditions": { "ready": ready } }),
                None => json!({ "addresses": [address] }),
            })
            .collect();
        let object = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": MESH_NAMESPACE,
                "labels": { SERVICE_NAME: service },
            },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            "endpoints": endpoints,
        });
        self.slices
            .patch(name, &apply(), &Patch::Apply(object))
            .await
            .unwrap_or_else(|e| panic!("apply EndpointSlice {name}: {e}"));
    }

    async fn delete_slice(&self, name: &str) {
        self.slices
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete EndpointSlice {name}: {e}"));
    }
}

fn apply() -> PatchParams {
    PatchParams::apply("kube-discovery-test").force()
}

/// The endpoints of `destination` in `snapshot`, as a set.
fn endpoint_set(snapshot: &v1::Snapshot, destination: &str) -> BTreeSet<String> {
    endpoints(snapshot, destination).into_iter().collect()
}

fn set(addresses: &[&str]) -> BTreeSet<String> {
    addresses.iter().map(|a| (*a).to_owned()).collect()
}

/// Waits, at most [`PUSH`], for `watcher`'s snapshot to show exactly `expected` as inventory's
/// endpoints.
async fn expect_endpoints(watcher: &mut common::Watcher, step: &str, expected: &[&str]) {
    let expected = set(expected);
    let started = tokio::time::Instant::now();
    let deadline = started + PUSH;
    let mut last = BTreeSet::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(snapshot) = watcher.next(left).await else {
            panic!(
                "{step}: no snapshot with endpoints {expected:?} within {PUSH:?}; last {last:?}"
            );
        };
        last = endpoint_set(&snapshot, "inventory");
        if last == expected {
            eprintln!("{step}: in the snapshot after {:?}", started.elapsed());
            return;
        }
    }
}

const MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\n\
                    registration: { allowed_addresses: [10.244.0.0/16] }\n";

#[tokio::test]
async fn endpoint_slices_say_where_a_services_instances_are_and_edits_reach_sidecars_at_once() {
    let test =
        "endpoint_slices_say_where_a_services_instances_are_and_edits_reach_sidecars_at_once";
    let Some(mesh) = KubeMesh::start(test, MESH).await else {
        return;
    };
    let objects = Objects::new(&mesh);
    mesh.apply_mesh_service("orders", json!({ "calls": ["inventory", "payments"] }))
        .await;
    mesh.apply_mesh_service("inventory", json!({})).await;
    // Declared, with no Service: its endpoints are its sidecars' registrations.
    mesh.apply_mesh_service("payments", json!({})).await;
    let cluster_ip = objects
        .apply_service(
            "inventory",
            json!([
                { "name": "http", "port": 80, "targetPort": 8080 },
                { "name": "cache", "port": 6379, "appProtocol": "redis" },
            ]),
        )
        .await;
    // Two slices: one address in both, one not ready, one with no condition at all.
    objects
        .apply_slice(
            "inventory-a",
            "inventory",
            &[
                ("10.244.1.1", Some(true)),
                ("10.244.1.2", None),
                ("10.244.1.3", Some(false)),
            ],
        )
        .await;
    objects
        .apply_slice(
            "inventory-b",
            "inventory",
            &[("10.244.2.1", Some(true)), ("10.244.1.2", Some(true))],
        )
        .await;
    // A Service, with a slice, that no MeshService declares.
    objects
        .apply_service("stray", json!([{ "port": 80 }]))
        .await;
    objects
        .apply_slice("stray-a", "stray", &[("10.244.9.1", Some(true))])
        .await;

    let cp = mesh.control_plane("replica-a").await;
    let orders = certified(&cp, &mesh, "orders").await;
    let mut watcher = orders.watch("orders-1").await;
    let first = watcher.next(Duration::from_secs(5)).await.unwrap();
    // Not ready (10.244.1.3) is left out, and the address in two slices counts once. No
    // sidecar has registered: each is dialled at the injected sidecar's inbound port.
    assert_eq!(
        endpoint_set(&first, "inventory"),
        set(&["10.244.1.1:15006", "10.244.1.2:15006", "10.244.2.1:15006"]),
        "ready endpoints at start"
    );
    let inventory = first
        .destinations
        .iter()
        .find(|d| d.name == "inventory")
        .unwrap();
    assert_eq!(
        inventory.virtual_address, cluster_ip,
        "the ClusterIP is the virtual address"
    );
    assert_eq!(
        inventory.opaque_ports,
        [6379],
        "a port whose appProtocol is not HTTP's is opaque TCP"
    );
    let names: Vec<&str> = first.destinations.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["inventory", "payments"]);
    assert!(
        !cp.status().services.contains_key("stray"),
        "a Service no MeshService declares is no mesh service"
    );

    // Remove one.
    objects
        .apply_slice(
            "inventory-a",
            "inventory",
            &[("10.244.1.2", None), ("10.244.1.3", Some(false))],
        )
        .await;
    expect_endpoints(
        &mut watcher,
        "endpoint removed",
        &["10.244.1.2:15006", "10.244.2.1:15006"],
    )
    .await;

    // Add one.
    objects
        .apply_slice(
            "inventory-b",
            "inventory",
            &[
                ("10.244.2.1", Some(true)),
                ("10.244.1.2", Some(true)),
                ("10.244.2.2", Some(true)),
            ],
        )
        .await;
    expect_endpoints(
        &mut watcher,
        "endpoint added",
        &["10.244.1.2:15006", "10.244.2.1:15006", "10.244.2.2:15006"],
    )
    .await;

    // Mark one not ready.
    objects
        .apply_slice(
            "inventory-b",
            "inventory",
            &[
                ("10.244.2.1", Some(false)),
                ("10.244.1.2", Some(true)),
                ("10.244.2.2", Some(true)),
            ],
        )
        .await;
    expect_endpoints(
        &mut watcher,
        "endpoint not ready",
        &["10.244.1.2:15006", "10.244.2.2:15006"],
    )
    .await;

    // Across two slices: 10.244.1.2 leaves slice a but stays in b; 10.244.1.3 turns ready.
    objects
        .apply_slice("inventory-a", "inventory", &[("10.244.1.3", Some(true))])
        .await;
    expect_endpoints(
        &mut watcher,
        "edit across two slices",
        &["10.244.1.2:15006", "10.244.1.3:15006", "10.244.2.2:15006"],
    )
    .await;
    // A slice deleted takes its endpoints with it, unless another slice has them too.
    objects.delete_slice("inventory-b").await;
    expect_endpoints(&mut watcher, "slice deleted", &["10.244.1.3:15006"]).await;

    // A sidecar registering from a slice's address adds what only it knows: where its inbound
    // listener is. One registering from an address no slice lists is no endpoint.
    let inventory = certified(&cp, &mesh, "inventory").await;
    inventory
        .register("inventory-3", "10.244.1.3:16006", "")
        .await;
    inventory.register("stranger", "10.244.7.7:15006", "").await;
    expect_endpoints(&mut watcher, "registered sidecar", &["10.244.1.3:16006"]).await;

    // Payments has no Service: its registrations are its endpoints, as in local mode.
    let payments = certified(&cp, &mesh, "payments").await;
    payments
        .register("payments-1", "10.244.5.5:15006", "")
        .await;
    let snapshot = watcher
        .until(PUSH, |s| !endpoints(s, "payments").is_empty())
        .await;
    assert_eq!(endpoints(&snapshot, "payments"), ["10.244.5.5:15006"]);
    cp.stop().await.unwrap();
}

// === real traffic, with root ===

const PATIENCE: Duration = Duration::from_secs(20);

/// Registrations come from host B's first address for both of its instances: the second
/// instance's address is allowed by range.
const NETNS_MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\n\
                          registry: { heartbeat_interval: 200ms, lease: 1500ms }\n\
                          registration: { allowed_addresses: [198.18.0.0/15] }\n";

/// Host B's second address, on a subnet of the link of its own (host A has one there too).
const B_SECOND: &str = "198.18.1.2";
const A_SECOND: &str = "198.18.1.1";
/// The control plane's API, on host A's address (its socket made inside A).
const CONTROL_PLANE_PORT: u16 = 15010;

/// `ip` with `args`, which must succeed.
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `curl` inside `host` with `args`: its output, or why there is none.
async fn curl(host: &Host, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::from(host.command("curl"))
        .args(["-s", "--max-time", "2"])
        .args(args)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("curl {args:?} in {}: {}", host.name, out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until `url` answers 200 inside `host`.
async fn wait_ready(what: &str, host: &Host, url: &str) {
    eventually(what, PATIENCE, || async {
        let code = curl(host, &["-o", "/dev/null", "-w", "%{http_code}", url]).await?;
        (code == "200").then_some(()).ok_or(code)
    })
    .await;
}

/// Sends `count` requests for inventory through orders' sidecar (one curl, one connection);
/// how many each instance answered.
async fn call_inventory(orders: &Host, count: usize) -> Result<(usize, usize), String> {
    let url = "http://127.0.0.1:15001/";
    let mut args = vec!["-H", "Host: inventory", "--fail"];
    args.extend(std::iter::repeat_n(url, count));
    let out = curl(orders, &args).await?;
    let first = out.matches("\"inventory-1\"").count();
    let second = out.matches("\"inventory-2\"").count();
    if first + second != count {
        return Err(format!("{count} calls, {first} + {second} answers: {out}"));
    }
    Ok((first, second))
}

/// A sidecar's bootstrap file: certified with its ServiceAccount's projected token, written
/// into a directory laid out as the kubelet's projected volume.
async fn bootstrap(
    mesh: &KubeMesh,
    file: &str,
    service: &str,
    listen: &str,
    control_plane: &str,
) -> String {
    let dirs = &mesh.dirs;
    let state = dirs.state().display();
    let token_dir = dirs.config.path().join(format!("token-{file}"));
    std::fs::create_dir_all(&token_dir).unwrap();
    let token_file = write_projected_token(&token_dir, &mesh.token(service, AUDIENCE).await);
    let token_file = token_file.display();
    let yaml = format!(
        "service: {service}\ntrust_domain: mesh.local\n{listen}\
         control_plane:\n  address: {control_plane}\n  trust_anchor: {state}/ca.pem\n  \
         token_file: {token_file}\n"
    );
    let path = dirs.config.path().join(format!("{file}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// The control plane's listeners: the API on host A's address, made inside A so sidecars
/// there and on B reach it; the admin on the test's loopback.
async fn listeners_in(a: &Host) -> Listeners {
    let api_addr = format!("{}:{CONTROL_PLANE_PORT}", a.ip);
    let api = a.enter(|| std::net::TcpListener::bind(&api_addr).unwrap());
    api.set_nonblocking(true).unwrap();
    Listeners {
        api: tokio::net::TcpListener::from_std(api).unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        webhook: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_the_endpoint_slices_between_sidecars_in_network_namespaces() {
    let test = "traffic_follows_the_endpoint_slices_between_sidecars_in_network_namespaces";
    if !mesh_testkit::netns::available(test) {
        return;
    }
    let Some(mesh) = KubeMesh::start(test, NETNS_MESH).await else {
        return;
    };
    // Dropped after the processes inside.
    let hosts = TwoHosts::create();
    let (a, b) = (&hosts.a, &hosts.b);
    ip(&[
        "-n",
        &b.name,
        "addr",
        "add",
        &format!("{B_SECOND}/24"),
        "dev",
        &b.interface,
    ]);
    ip(&[
        "-n",
        &a.name,
        "addr",
        "add",
        &format!("{A_SECOND}/24"),
        "dev",
        &a.interface,
    ]);

    let objects = Objects::new(&mesh);
    mesh.apply_mesh_service("orders", json!({ "calls": ["inventory"] }))
        .await;
    mesh.apply_mesh_service("inventory", json!({})).await;
    let cluster_ip = objects
        .apply_service("inventory", json!([{ "name": "http", "port": 80 }]))
        .await;
    let b_first = b.ip.to_string();
    objects
        .apply_slice(
            "inventory-a",
            "inventory",
            &[(&b_first, Some(true)), (B_SECOND, Some(true))],
        )
        .await;
    let cp = mesh_control_plane::start(mesh.options("replica-a"), listeners_in(a).await)
        .await
        .unwrap();
    let control_plane = format!("{}:{CONTROL_PLANE_PORT}", a.ip);

    // Host B: two instances of inventory, one on each of B's addresses, their sidecars' inbound
    // listeners there at the injected port.
    let sidecar = workspace_binary("sidecar");
    let echo = workspace_binary("echo-app");
    let mut processes = Vec::new();
    for (n, address) in [(1, b_first.as_str()), (2, B_SECOND)] {
        let app = format!("127.0.0.1:{}", 8080 + n);
        processes.push(spawn(
            b,
            &echo,
            &["--name", &format!("inventory-{n}"), "--listen", &app],
        ));
        let listen = format!(
            "app: {app}\nlisten:\n  outbound: 127.0.0.1:{}\n  admin: 127.0.0.1:{}\n  \
             inbound: {address}:15006\n",
            15101 + 100 * n,
            15100 + 100 * n,
        );
        let config = bootstrap(
            &mesh,
            &format!("inventory-{n}"),
            "inventory",
            &listen,
            &control_plane,
        )
        .await;
        processes.push(spawn(b, &sidecar, &["--config", &config]));
    }
    // Host A: orders' sidecar (no app: the test's curl is its app).
    let listen = format!(
        "app: 127.0.0.1:8080\nlisten:\n  outbound: 127.0.0.1:15001\n  admin: 127.0.0.1:15000\n  \
         inbound: {}:0\n",
        a.ip
    );
    let config = bootstrap(&mesh, "orders", "orders", &listen, &control_plane).await;
    processes.push(spawn(a, &sidecar, &["--config", &config]));
    for (what, host, admin) in [
        ("inventory-1's sidecar", b, "127.0.0.1:15200"),
        ("inventory-2's sidecar", b, "127.0.0.1:15300"),
        ("orders' sidecar", a, "127.0.0.1:15000"),
    ] {
        wait_ready(what, host, &format!("http://{admin}/ready")).await;
    }

    // Both endpoints of the slice answer, through the mesh.
    eventually("both inventory instances to answer", PATIENCE, || async {
        match call_inventory(a, 10).await? {
            (first, second) if first > 0 && second > 0 => Ok(()),
            answered => Err(format!("answered {answered:?}")),
        }
    })
    .await;

    // An app on host A that dials the Service's ClusterIP, with no Host naming inventory, is
    // redirected to orders' sidecar (which runs as root, the user the redirect lets through),
    // and routed as inventory: the ClusterIP is its virtual address.
    // A pod has a default route; without one, connect() to the ClusterIP fails before the
    // redirect can take it. It points at host B, a namespace of this test.
    ip(&["-n", &a.name, "route", "add", "default", "via", &b_first]);
    let redirect = a
        .command(&sidecar)
        .args(["redirect", "--proxy-uid", "0", "--inbound-ports", "8080"])
        .output()
        .unwrap();
    assert!(
        redirect.status.success(),
        "sidecar redirect: {}",
        String::from_utf8_lossy(&redirect.stderr)
    );
    let url = format!("http://{cluster_ip}/by-cluster-ip");
    let seen = eventually("the ClusterIP to route as inventory", PATIENCE, || async {
        let out = tokio::process::Command::from(a.command("setpriv"))
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["curl", "-sS", "-i", "--max-time", "2", &url])
            .output()
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let body = text.split("\r\n\r\n").last().unwrap_or_default();
        let seen: Value = serde_json::from_str(body).map_err(|e| {
            format!(
                "{}: {text} {}: {e}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok::<Value, String>(seen)
    })
    .await;
    assert!(
        seen["service"].as_str().unwrap().starts_with("inventory-"),
        "{seen}"
    );
    assert_eq!(seen["path"], "/by-cluster-ip", "{seen}");
    assert_eq!(
        seen["caller"], "spiffe://mesh.local/ns/default/sa/orders",
        "through the mesh, with orders' identity: {seen}"
    );

    // The second leaves the slice (its sidecar stays up and registered): within a second, no
    // call reaches it.
    objects
        .apply_slice("inventory-a", "inventory", &[(&b_first, Some(true))])
        .await;
    let removed = tokio::time::Instant::now();
    eventually("calls to stop reaching inventory-2", PUSH, || async {
        match call_inventory(a, 4).await? {
            (_, 0) => Ok(()),
            answered => Err(format!("answered {answered:?}")),
        }
    })
    .await;
    eprintln!(
        "inventory-2 out of the traffic after {:?}",
        removed.elapsed()
    );
    assert_eq!(
        call_inventory(a, 20).await.unwrap(),
        (20, 0),
        "every call goes to the endpoint left"
    );

    // Back in the slice, it gets calls again.
    objects
        .apply_slice(
            "inventory-a",
            "inventory",
            &[(&b_first, Some(true)), (B_SECOND, Some(true))],
        )
        .await;
    eventually("inventory-2 to answer again", PATIENCE, || async {
        match call_inventory(a, 10).await? {
            (_, second) if second > 0 => Ok(()),
            answered => Err(format!("answered {answered:?}")),
        }
    })
    .await;
    drop(processes);
    cp.stop().await.unwrap();
}
