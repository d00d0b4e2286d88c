//! The control plane and real sidecars together: certificates from CSRs, policy and
//! authorization pushed live, renewal and root rotation under traffic, a control plane that
//! dies and comes back, instances that leave, and traffic splits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::Dirs;
use http::{Method, StatusCode};
use mesh_control_plane::ControlPlane;
use mesh_testkit::metrics;
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{
    ControlPlaneRef, Sidecar, SidecarBuilder, TestMesh, app, client, eventually, free_port, tcp,
};

const PATIENCE: Duration = Duration::from_secs(15);

fn mesh_yaml(lifetime: &str) -> String {
    format!(
        "trust_domain: mesh.local\ncertificate_lifetime: {lifetime}\n\
         registry: {{ heartbeat_interval: 200ms, lease: 1500ms }}\n"
    )
}

const ORDERS: &str = "name: orders\ncalls: [inventory]\n";
const STOREFRONT: &str = "name: storefront\ncalls: [inventory]\n";
const INVENTORY: &str = "name: inventory\n";

/// A control plane, its directories, and sidecars attached to it.
struct Cluster {
    dirs: Dirs,
    api: SocketAddr,
    admin: SocketAddr,
    mesh: TestMesh,
}

impl Cluster {
    fn new(lifetime: &str, services: &[(&str, &str)], api: SocketAddr, admin: SocketAddr) -> Self {
        Self {
            dirs: Dirs::new(&mesh_yaml(lifetime), services),
            api,
            admin,
            mesh: TestMesh::new(),
        }
    }

    /// A cluster with an in-process control plane on port 0.
    async fn start(lifetime: &str, services: &[(&str, &str)]) -> (Self, ControlPlane) {
        Self::start_with(&mesh_yaml(lifetime), services).await
    }

    /// A cluster with this `mesh.yaml`, its control plane in-process on port 0.
    async fn start_with(mesh: &str, services: &[(&str, &str)]) -> (Self, ControlPlane) {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut cluster = Self {
            dirs: Dirs::new(mesh, services),
            api: any,
            admin: any,
            mesh: TestMesh::new(),
        };
        let cp = cluster.dirs.start().await;
        cluster.api = cp.api_addr();
        cluster.admin = cp.admin_addr();
        (cluster, cp)
    }

    /// orders → inventory, with storefront declared too (it calls inventory): a control
    /// plane, and ready sidecars of inventory and orders in front of echo apps.
    async fn shop(lifetime: &str) -> (Self, ControlPlane, Sidecar, Sidecar) {
        let (cluster, cp) = Self::start(
            lifetime,
            &[
                ("orders", ORDERS),
                ("storefront", STOREFRONT),
                ("inventory", INVENTORY),
            ],
        )
        .await;
        let inventory = cluster
            .sidecar("inventory", app::echo("inventory").await, "")
            .await;
        let orders = cluster
            .sidecar("orders", app::echo("orders").await, "")
            .await;
        (cluster, cp, inventory, orders)
    }

    fn control_plane(&self, service: &str) -> ControlPlaneRef {
        ControlPlaneRef {
            address: self.api,
            trust_anchor: self.dirs.state().join("ca.pem"),
            token_file: self.dirs.state().join("tokens").join(service),
        }
    }

    /// A sidecar for `service` in front of `app`, ready (certificate and first snapshot).
    async fn sidecar(&self, service: &str, app: SocketAddr, extra: &str) -> Sidecar {
        let builder = self
            .mesh
            .sidecar(service)
            .app(app)
            .control_plane(self.control_plane(service))
            .extra_yaml(extra);
        Self::ready(service, builder).await
    }

    /// Starts the sidecar `builder` describes and waits until it is ready.
    async fn ready(service: &str, builder: SidecarBuilder<'_>) -> Sidecar {
        let sidecar = builder.start().await;
        let url = sidecar.admin_url("/ready");
        eventually(&format!("{service} sidecar ready"), PATIENCE, || {
            let url = url.clone();
            async move {
                let rsp = client::http1()
                    .request(http::Request::get(&url).body(Default::default()).unwrap())
                    .await
                    .ok()?;
                (rsp.status() == StatusCode::OK).then_some(())
            }
        })
        .await;
        sidecar
    }

    async fn status(&self) -> serde_json::Value {
        let (status, body) =
            mesh_control_plane::admin_client::request(self.admin, Method::GET, "/status")
                .await
                .unwrap();
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    }

    async fn admin(&self, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        let token =
            std::fs::read_to_string(mesh_control_plane::admin_token_path(self.dirs.state()))
                .unwrap();
        let (status, body) = mesh_control_plane::admin_client::request_with_token(
            self.admin,
            method,
            path,
            Some(&token),
        )
        .await
        .unwrap();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
        (status, json)
    }
}

/// GET `path` of `destination` through `sidecar`'s outbound listener: status and body.
async fn call(sidecar: &Sidecar, destination: &str, path: &str) -> (StatusCode, String) {
    let rsp = client::get(&format!("{}{path}", sidecar.outbound_url()), destination).await;
    let status = rsp.status();
    (status, client::text(rsp).await)
}

/// The `version` of the sidecar's `/snapshot`.
async fn snapshot(sidecar: &Sidecar) -> serde_json::Value {
    let rsp = client::get_url(&sidecar.admin_url("/snapshot")).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    client::json(rsp).await
}

/// Requests from `caller` to inventory in a loop until stopped, counting failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Traffic {
    fn start(outbound_url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let http = client::http1();
            let mut failures = Vec::new();
            // Bounded: at most 100k requests or 60 s, whichever comes first.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            for _ in 0..100_000 {
                if s.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                    break;
                }
                let req = http::Request::get(format!("{outbound_url}/echo"))
                    .header("host", "inventory")
                    .body(Default::default())
                    .unwrap();
                n.fetch_add(1, Ordering::Relaxed);
                match http.request(req).await {
                    Ok(rsp) if rsp.status() == StatusCode::OK => {
                        let _ = client::text(rsp).await;
                    }
                    Ok(rsp) => {
                        let status = rsp.status();
                        failures.push(format!("{status}: {}", client::text(rsp).await));
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        });
        Self { stop, sent, task }
    }

    /// Stops, and checks that more than `min_sent` requests went out and none failed.
    async fn finish_without_failures(self, min_sent: u64) {
        let (sent, failures) = self.finish().await;
        assert!(sent > min_sent, "only {sent} requests sent");
        assert!(
            failures.is_empty(),
            "{} of {sent} failed: {failures:?}",
            failures.len()
        );
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.unwrap();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_get_certificates_and_endpoints_from_the_control_plane() {
    let (cluster, cp) = Cluster::start("1h", &[("orders", ORDERS), ("inventory", INVENTORY)]).await;
    let inventory = cluster
        .sidecar("inventory", app::echo("inventory").await, "")
        .await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;

    let (status, body) = eventually("orders reaching inventory", PATIENCE, || async {
        let (status, body) = call(&orders, "inventory", "/whoami").await;
        (status == StatusCode::OK).then_some((status, body))
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["caller"], "spiffe://mesh.local/ns/default/sa/orders");

    // Scoped snapshots: orders knows inventory; inventory, which calls nothing, knows no one.
    let orders_snapshot = snapshot(&orders).await;
    assert_eq!(
        orders_snapshot["destinations"]["inventory"]["backends"][0]["endpoints"][0],
        inventory.inbound.to_string()
    );
    let inventory_snapshot = snapshot(&inventory).await;
    assert_eq!(inventory_snapshot["destinations"], serde_json::json!({}));

    // The control plane sees both instances and the versions they applied.
    let status = cluster.status().await;
    for service in ["orders", "inventory"] {
        let instances = status["services"][service]["instances"].as_array().unwrap();
        assert_eq!(instances.len(), 1, "{status:#}");
        assert_eq!(instances[0]["acked"], true, "{status:#}");
    }
    cp.stop().await.unwrap();
}

/// A sidecar listening on every interface registers the address it advertises, with the port
/// its listener bound, and its callers dial that. (127.0.0.2 reaches the wildcard listener
/// through loopback; `across_hosts.rs` does the same between two hosts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_dial_the_address_a_sidecar_advertises() {
    // The sidecar reaches the control plane from 127.0.0.1 and advertises 127.0.0.2, which
    // registration therefore allows.
    let mesh = format!(
        "{}registration: {{ allowed_addresses: [127.0.0.2/32] }}\n",
        mesh_yaml("1h")
    );
    let (cluster, cp) =
        Cluster::start_with(&mesh, &[("orders", ORDERS), ("inventory", INVENTORY)]).await;
    let builder = cluster
        .mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .control_plane(cluster.control_plane("inventory"))
        .inbound_at("0.0.0.0:0".parse().unwrap())
        .advertise("127.0.0.2");
    let inventory = Cluster::ready("inventory", builder).await;
    let advertised = format!("127.0.0.2:{}", inventory.inbound.port());
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;

    wait_for_inventory_endpoints(&orders, 1).await;
    assert_eq!(
        inventory_endpoints(&snapshot(&orders).await),
        [&*advertised]
    );
    let status = cluster.status().await;
    assert_eq!(
        status["services"]["inventory"]["instances"][0]["address"], advertised,
        "{status:#}"
    );
    let (code, body) = call(&orders, "inventory", "/whoami").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["caller"], "spiffe://mesh.local/ns/default/sa/orders");
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_with_a_wrong_token_gets_no_certificate_and_is_never_ready() {
    let (cluster, cp) = Cluster::start("1h", &[("orders", ORDERS), ("inventory", INVENTORY)]).await;
    let wrong = cluster.mesh.dir().join("wrong-token");
    std::fs::write(&wrong, "0000").unwrap();
    let sidecar = cluster
        .mesh
        .sidecar("orders")
        .control_plane(ControlPlaneRef {
            token_file: wrong,
            ..cluster.control_plane("orders")
        })
        .start()
        .await;
    // The control plane counts the refusals; the sidecar keeps asking and stays unready.
    eventually("two refused certify calls", PATIENCE, || async {
        let (_, body) =
            mesh_control_plane::admin_client::request(cluster.admin, Method::GET, "/metrics")
                .await
                .ok()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let refused: f64 = text
            .lines()
            .filter(|l| l.starts_with("mesh_control_plane_certificates_refused"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (refused >= 2.0).then_some(())
    })
    .await;
    let ready = client::get_url(&sidecar.admin_url("/ready")).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let live = client::get_url(&sidecar.admin_url("/live")).await;
    assert_eq!(live.status(), StatusCode::OK);
    sidecar.shutdown().await.unwrap();
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edits_are_pushed_and_change_behaviour_and_invalid_edits_change_nothing() {
    let (cluster, cp, _inventory, orders) = Cluster::shop("1h").await;
    let (status, _) = call(&orders, "inventory", "/delay/300").await;
    assert_eq!(status, StatusCode::OK, "no timeout yet");

    // A timeout: the slow call now answers 504.
    cluster
        .dirs
        .write_service("inventory", "name: inventory\ntimeout: 100ms\n");
    eventually("the timeout to apply", PATIENCE, || async {
        let (status, _) = call(&orders, "inventory", "/delay/300").await;
        (status == StatusCode::GATEWAY_TIMEOUT).then_some(())
    })
    .await;

    // A route with its own timeout: the slow path gets 2 s; the rest keep the service's 100 ms.
    cluster.dirs.write_service(
        "inventory",
        "name: inventory\ntimeout: 100ms\n\
         routes: [{ name: delays, match: { methods: [GET], path_prefix: /delay }, timeout: 2s }]\n",
    );
    eventually("the route to apply", PATIENCE, || async {
        let (status, _) = call(&orders, "inventory", "/delay/300").await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    let m = orders.metrics().await;
    assert!(
        metrics::value(
            &m,
            "mesh_route_requests_total{destination=\"inventory\",route=\"delays\",status_code=\"200\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );

    // Authorization: only storefront may call inventory now; orders gets 403 naming the rule.
    cluster.dirs.write_service(
        "inventory",
        "name: inventory\ntimeout: 100ms\nauthorization: { default: deny, allow: [storefront] }\n",
    );
    let body = eventually("orders to be denied", PATIENCE, || async {
        let (status, body) = call(&orders, "inventory", "/echo").await;
        (status == StatusCode::FORBIDDEN).then_some(body)
    })
    .await;
    assert!(
        body.contains("spiffe://mesh.local/ns/default/sa/orders")
            && body.contains("not on authorization.allow"),
        "{body}"
    );
    let inventory_metrics = _inventory.metrics().await;
    assert!(
        metrics::value(
            &inventory_metrics,
            "mesh_authorization_denied_total{source=\"orders\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{inventory_metrics}"
    );
    let storefront = cluster
        .sidecar("storefront", app::echo("storefront").await, "")
        .await;
    let (status, _) = call(&storefront, "inventory", "/echo").await;
    assert_eq!(status, StatusCode::OK);

    // An invalid edit: reported, not applied; everything keeps running as it was.
    let before = snapshot(&orders).await["version"].as_u64().unwrap();
    let failed_reloads = |text: &str| {
        metrics::value(
            text,
            "mesh_control_plane_config_reloads_total{result=\"failed\"}",
        )
        .unwrap_or(0.0)
    };
    let (_, body) =
        mesh_control_plane::admin_client::request(cluster.admin, Method::GET, "/metrics")
            .await
            .unwrap();
    let failed_before = failed_reloads(&String::from_utf8_lossy(&body));
    cluster.dirs.write_service(
        "inventory",
        "name: inventory\ntimeout: soon\nauthorization: { default: allow }\n",
    );
    eventually("the invalid edit to be reported", PATIENCE, || async {
        let (_, body) =
            mesh_control_plane::admin_client::request(cluster.admin, Method::GET, "/metrics")
                .await
                .ok()?;
        (failed_reloads(&String::from_utf8_lossy(&body)) > failed_before).then_some(())
    })
    .await;
    let (status, _) = call(&orders, "inventory", "/echo").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the last good policy still runs"
    );
    assert_eq!(snapshot(&orders).await["version"].as_u64().unwrap(), before);
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_under_continuous_traffic_without_a_failed_request() {
    let (cluster, cp, inventory, orders) = Cluster::shop("5s").await;
    let first_expiry = snapshot_expiry(&inventory).await;
    let traffic = Traffic::start(orders.outbound_url());

    // Both sidecars renew (at 60-70% of 5 s) at least twice, so the first certificates have
    // expired by the end.
    for sidecar in [&orders, &inventory] {
        eventually("two renewals", PATIENCE, || async {
            let text = sidecar.metrics().await;
            (metrics::value(&text, "mesh_certificate_renewals_total{result=\"ok\"}")? >= 2.0)
                .then_some(())
        })
        .await;
    }
    traffic.finish_without_failures(50).await;
    assert!(snapshot_expiry(&inventory).await > first_expiry);
    assert!(
        first_expiry
            < std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as f64,
        "the first certificate has expired"
    );
    // A new caller's fresh handshake with inventory works on the renewed certificates.
    let storefront = cluster
        .sidecar("storefront", app::echo("storefront").await, "")
        .await;
    assert_eq!(
        call(&storefront, "inventory", "/echo").await.0,
        StatusCode::OK
    );
    cp.stop().await.unwrap();
}

/// The expiry of the sidecar's certificate, from its metrics.
async fn snapshot_expiry(sidecar: &Sidecar) -> f64 {
    metrics::value(
        &sidecar.metrics().await,
        "mesh_certificate_expiry_timestamp_seconds",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_rotates_under_continuous_traffic_without_a_failed_request() {
    let (cluster, cp, inventory, orders) = Cluster::shop("1h").await;
    let old = cluster.status().await["signer"]
        .as_str()
        .unwrap()
        .to_owned();
    let traffic = Traffic::start(orders.outbound_url());

    // 1. Add the new root: every sidecar trusts both.
    let (status, body) = cluster.admin(Method::POST, "/ca/roots").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["id"].as_str().unwrap().to_owned();
    // 2. Issue from it, once every sidecar has acknowledged the bundle that holds it.
    eventually("the new root to become the signer", PATIENCE, || async {
        let (status, _) = cluster
            .admin(Method::POST, &format!("/ca/signer/{new}"))
            .await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    // Sidecars see the new issuer and renew.
    eventually(
        "every certificate to come from the new root",
        PATIENCE,
        || async {
            let status = cluster.status().await;
            let all_new = ["orders", "inventory"].iter().all(|s| {
                status["services"][s]["instances"]
                    .as_array()
                    .is_some_and(|list| {
                        !list.is_empty() && list.iter().all(|i| i["issuer_id"] == new.as_str())
                    })
            });
            all_new.then_some(())
        },
    )
    .await;
    // 3. Remove the old root.
    eventually("the old root to be removed", PATIENCE, || async {
        let (status, _) = cluster
            .admin(Method::DELETE, &format!("/ca/roots/{old}"))
            .await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    eventually("sidecars to trust only the new root", PATIENCE, || async {
        let roots = snapshot(&inventory).await["trust_bundle_sha256"]
            .as_array()?
            .len();
        (roots == 1).then_some(())
    })
    .await;
    // The connection orders opened before the rotation was authenticated by the old root: it
    // is closed, not trusted for the rest of its life.
    eventually(
        "the connection the old root authenticated to be closed",
        PATIENCE,
        || async {
            let untrusted = r#"mesh_connections_untrusted_total{direction="inbound"}"#;
            let closed = metrics::value(&inventory.metrics().await, untrusted)?;
            (closed >= 1.0).then_some(())
        },
    )
    .await;
    traffic.finish_without_failures(20).await;
    // Fresh handshakes after the rotation work too.
    let storefront = cluster
        .sidecar("storefront", app::echo("storefront").await, "")
        .await;
    assert_eq!(
        call(&storefront, "inventory", "/echo").await.0,
        StatusCode::OK
    );
    cp.stop().await.unwrap();
}

/// The inventory endpoints in a sidecar's snapshot.
fn inventory_endpoints(snapshot: &serde_json::Value) -> Vec<String> {
    snapshot["destinations"]["inventory"]["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect()
}

/// Waits until `sidecar`'s snapshot lists `n` inventory endpoints.
async fn wait_for_inventory_endpoints(sidecar: &Sidecar, n: usize) {
    eventually(
        &format!("{n} inventory endpoints in the snapshot"),
        PATIENCE,
        || async { (inventory_endpoints(&snapshot(sidecar).await).len() == n).then_some(()) },
    )
    .await;
}

/// The `sidecar` binary, built beside the control plane's.
fn sidecar_binary() -> std::path::PathBuf {
    common::workspace_binary("sidecar")
}

/// An instance whose sidecar finds its app down leaves its callers' snapshots, and returns
/// when the app answers again; meanwhile callers' requests all go to the other instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_app_is_down_leaves_callers_snapshots_until_it_answers_again() {
    let (cluster, cp) = Cluster::start("1h", &[("orders", ORDERS), ("inventory", INVENTORY)]).await;
    let (sick_app, faults) = app::faulty("inventory-a").await;
    let sick = cluster
        .sidecar(
            "inventory",
            sick_app,
            "app_health: { path: /healthz, interval: 100ms, timeout: 90ms, unhealthy_after: 2 }\n",
        )
        .await;
    let well = cluster
        .sidecar("inventory", app::echo("inventory-b").await, "")
        .await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;
    wait_for_inventory_endpoints(&orders, 2).await;

    faults.fail(503, 10);
    eventually(
        "the sick instance to leave orders' snapshot",
        PATIENCE,
        || async {
            (inventory_endpoints(&snapshot(&orders).await) == [well.inbound.to_string()])
                .then_some(())
        },
    )
    .await;
    let status = cluster.status().await;
    let reported: Vec<String> = status["services"]["inventory"]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["app_down"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        reported,
        ["GET /healthz answered 503 Service Unavailable"],
        "{status}"
    );
    for _ in 0..20 {
        let (status, body) = call(&orders, "inventory", "/x").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    faults.fail(503, 0);
    eventually(
        "the instance to return to orders' snapshot",
        PATIENCE,
        || async {
            let endpoints = inventory_endpoints(&snapshot(&orders).await);
            endpoints.contains(&sick.inbound.to_string()).then_some(())
        },
    )
    .await;
    cp.stop().await.unwrap();
}

/// An instance joining a destination rebuilds its callers' balancers; an instance they had
/// ejected stays ejected instead of coming back into rotation with the newcomer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_instance_stays_ejected_when_another_joins() {
    let inventory_policy = "name: inventory\nretries: { attempts: 1 }\nload_balancer: round-robin\n\
                            circuit_breaker: { consecutive_failures: 2, base_ejection_time: 60s }\n";
    let (cluster, cp) =
        Cluster::start("1h", &[("orders", ORDERS), ("inventory", inventory_policy)]).await;
    let (failing_app, faults) = app::faulty("inventory-a").await;
    faults.fail(503, 10);
    let failing = cluster.sidecar("inventory", failing_app, "").await;
    let _healthy = cluster
        .sidecar("inventory", app::echo("inventory-b").await, "")
        .await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;
    wait_for_inventory_endpoints(&orders, 2).await;

    let ejected = r#"mesh_ejected_endpoints{destination="inventory"}"#;
    let to_failing = format!(
        r#"mesh_endpoint_requests_total{{destination="inventory",endpoint="{}"}}"#,
        failing.inbound
    );
    eventually("the failing instance to be ejected", PATIENCE, || async {
        call(&orders, "inventory", "/x").await;
        (metrics::value(&orders.metrics().await, ejected) == Some(1.0)).then_some(())
    })
    .await;
    let sent_before = metrics::value(&orders.metrics().await, &to_failing);

    // A third instance joins: orders' balancer for inventory is rebuilt.
    let _joined = cluster
        .sidecar("inventory", app::echo("inventory-c").await, "")
        .await;
    wait_for_inventory_endpoints(&orders, 3).await;
    for _ in 0..30 {
        let (status, body) = call(&orders, "inventory", "/x").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let m = orders.metrics().await;
    assert_eq!(metrics::value(&m, ejected), Some(1.0), "{m}");
    assert_eq!(metrics::value(&m, &to_failing), sent_before, "{m}");
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_stops_heartbeating_leaves_the_snapshot_and_gets_no_traffic() {
    let (cluster, cp) = Cluster::start("1h", &[("orders", ORDERS), ("inventory", INVENTORY)]).await;
    let a = cluster
        .sidecar("inventory", app::echo("inventory-a").await, "")
        .await;
    // b is a real sidecar process, so it can die without a word: SIGKILL.
    let (b_inbound, b_admin) = (free_port(), free_port());
    let b_config = cluster
        .mesh
        .sidecar("inventory")
        .app(app::echo("inventory-b").await)
        .control_plane(cluster.control_plane("inventory"))
        .write_config(free_port(), b_inbound, b_admin);
    let mut b = KillOnDrop::new(
        Command::new(sidecar_binary())
            .arg("--config")
            .arg(&b_config)
            .env("MESH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;
    wait_for_inventory_endpoints(&orders, 2).await;

    // No deregistration, no more heartbeats: after the lease (1.5 s) b leaves the snapshot.
    b.kill().unwrap();
    b.wait().unwrap();
    eventually("b to leave orders' snapshot", PATIENCE, || async {
        let list = inventory_endpoints(&snapshot(&orders).await);
        (list == [a.inbound.to_string()]).then_some(())
    })
    .await;
    assert!(
        !cluster.status().await["services"]["inventory"]["instances"]
            .to_string()
            .contains(&b_inbound.to_string())
    );
    for _ in 0..50 {
        let (status, body) = call(&orders, "inventory", "/whoami").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"inventory-a\""), "{body}");
    }
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_shuts_down_leaves_at_once_and_no_request_fails() {
    // A lease far longer than the test: only deregistration can explain a quick exit.
    let (cluster, cp) = Cluster::start_with(
        "trust_domain: mesh.local\nregistry: { heartbeat_interval: 1s, lease: 60s }\n",
        &[("orders", ORDERS), ("inventory", INVENTORY)],
    )
    .await;
    let a = cluster
        .sidecar("inventory", app::echo("inventory-a").await, "")
        .await;
    let b = cluster
        .sidecar("inventory", app::echo("inventory-b").await, "")
        .await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;
    wait_for_inventory_endpoints(&orders, 2).await;
    let b_inbound = b.inbound;
    let traffic = Traffic::start(orders.outbound_url());
    let leaving = tokio::time::Instant::now();
    assert!(
        orders
            .metrics()
            .await
            .contains(&format!("endpoint=\"{b_inbound}\""))
    );
    b.shutdown().await.unwrap();
    assert_eq!(
        inventory_endpoints(&snapshot(&orders).await),
        [a.inbound.to_string()],
        "b left orders' snapshot before it stopped serving"
    );
    assert!(leaving.elapsed() < Duration::from_secs(10));
    // Keep the traffic going a little after b is gone.
    for _ in 0..20 {
        assert_eq!(call(&orders, "inventory", "/echo").await.0, StatusCode::OK);
    }
    traffic.finish_without_failures(20).await;
    // b's per-endpoint series left with it; a's are still there.
    let series = |addr: SocketAddr| format!("endpoint=\"{addr}\"");
    let m = orders.metrics().await;
    assert!(m.contains(&series(a.inbound)), "{m}");
    assert!(!m.contains(&series(b_inbound)), "{m}");
    cp.stop().await.unwrap();
}

/// Inventory instances of versions v1 and v2 (echo apps saying which), and orders calling
/// inventory, once orders' snapshot has both versions' endpoints.
async fn two_versions(cluster: &Cluster) -> (Sidecar, Sidecar, Sidecar) {
    let v1 = cluster
        .sidecar(
            "inventory",
            app::echo("inventory-v1").await,
            "version: v1\n",
        )
        .await;
    let v2 = cluster
        .sidecar(
            "inventory",
            app::echo("inventory-v2").await,
            "version: v2\n",
        )
        .await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;
    eventually("both versions in orders' snapshot", PATIENCE, || async {
        let backends = snapshot(&orders).await["destinations"]["inventory"]["backends"].clone();
        let full = backends
            .as_array()?
            .iter()
            .all(|b| b["endpoints"].as_array().is_some_and(|e| e.len() == 1));
        (full && backends.as_array()?.len() == 2).then_some(())
    })
    .await;
    (v1, v2, orders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_traffic_split_is_observed() {
    let (cluster, cp) = Cluster::start(
        "1h",
        &[
            ("orders", ORDERS),
            (
                "inventory",
                "name: inventory\ntraffic_split: { v1: 90, v2: 10 }\n",
            ),
        ],
    )
    .await;
    let (_v1, _v2, orders) = two_versions(&cluster).await;
    let n = 2000;
    let mut v2 = 0;
    for _ in 0..n {
        let (status, body) = call(&orders, "inventory", "/whoami").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body.contains("\"inventory-v2\"") {
            v2 += 1;
        }
    }
    // 10% of 2000 is 200, with a standard deviation of about 13: ±60 is over 4 of them.
    assert!((140..=260).contains(&v2), "v2 got {v2} of {n}");
    cp.stop().await.unwrap();
}

/// GET /whoami from `sidecar` to inventory with `headers`: the echo app's `service`.
async fn whoami(sidecar: &Sidecar, headers: &[(&str, &str)]) -> String {
    let mut req = http::Request::get(format!("{}/whoami", sidecar.outbound_url()))
        .header("host", "inventory");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let rsp = client::http1()
        .request(req.body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    client::json(rsp).await["service"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_route_sends_testers_to_v2_within_a_second_of_the_edit() {
    let split = "name: inventory\ntraffic_split: { v1: 100, v2: 0 }\n";
    let (cluster, cp) = Cluster::start("1h", &[("orders", ORDERS), ("inventory", split)]).await;
    let (_v1, _v2, orders) = two_versions(&cluster).await;
    // v2 has no weight: nobody gets it, testers included.
    for _ in 0..20 {
        assert_eq!(
            whoami(&orders, &[("x-tester", "yes")]).await,
            "inventory-v1"
        );
    }

    cluster.dirs.write_service(
        "inventory",
        &format!(
            "{split}routes:\n\
             - name: testers\n\
             \x20 matches: [{{ headers: [{{ name: x-tester, value: 'yes' }}] }}]\n\
             \x20 backendRefs: [{{ name: inventory, version: v2 }}]\n"
        ),
    );
    let edited = tokio::time::Instant::now();
    eventually("testers reach v2", PATIENCE, || async {
        (whoami(&orders, &[("x-tester", "yes")]).await == "inventory-v2").then_some(())
    })
    .await;
    let applied = edited.elapsed();
    assert!(
        applied < Duration::from_secs(1),
        "applied after {applied:?}"
    );
    for _ in 0..50 {
        assert_eq!(
            whoami(&orders, &[("x-tester", "yes")]).await,
            "inventory-v2"
        );
        assert_eq!(whoami(&orders, &[("x-tester", "no")]).await, "inventory-v1");
        assert_eq!(whoami(&orders, &[]).await, "inventory-v1");
    }
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_rules_and_rate_limits_apply_within_a_second_of_the_edit() {
    let (cluster, cp, _inventory, orders) = Cluster::shop("1h").await;
    let post = || async {
        let rsp = client::http1()
            .request(
                http::Request::post(format!("{}/products", orders.outbound_url()))
                    .header("host", "inventory")
                    .body(Default::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = rsp.status();
        (status, client::text(rsp).await)
    };
    assert_eq!(post().await.0, StatusCode::OK);

    cluster.dirs.write_service(
        "inventory",
        "name: inventory\n\
         authorization:\n\
         \x20 rules:\n\
         \x20   - { name: product-writes, matches: [{ method: POST, path: { value: /products } }], allow: [storefront] }\n\
         rate_limit: { requests_per_second: 1000, callers: { orders: { requests_per_second: 5, burst: 5 } } }\n",
    );
    let edited = tokio::time::Instant::now();
    eventually("the rule refuses orders' POST", PATIENCE, || async {
        (post().await.0 == StatusCode::FORBIDDEN).then_some(())
    })
    .await;
    let applied = edited.elapsed();
    assert!(
        applied < Duration::from_secs(1),
        "applied after {applied:?}"
    );
    let (_, body) = post().await;
    assert!(
        body.contains("authorization.rules[product-writes].allow"),
        "{body}"
    );
    // Reads are let in, up to orders' own limit.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(call(&orders, "inventory", "/products").await.0);
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    cp.stop().await.unwrap();
}

fn spawn_binary(cluster: &Cluster) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .arg("--config-dir")
        .arg(cluster.dirs.config.path())
        .arg("--state-dir")
        .arg(cluster.dirs.state())
        .arg("--listen")
        .arg(cluster.api.to_string())
        .arg("--admin")
        .arg(cluster.admin.to_string())
        .env("MESH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop::new(child)
}

async fn wait_control_plane_ready(cluster: &Cluster) {
    eventually("the control plane to be ready", PATIENCE, || async {
        let (status, _) =
            mesh_control_plane::admin_client::request(cluster.admin, Method::GET, "/ready")
                .await
                .ok()?;
        (status == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_while_the_control_plane_is_down_and_sidecars_converge_when_it_returns() {
    let cluster = Cluster::new(
        "1h",
        &[("orders", ORDERS), ("inventory", INVENTORY)],
        free_port(),
        free_port(),
    );
    let mut process = spawn_binary(&cluster);
    wait_control_plane_ready(&cluster).await;
    let _inventory = cluster
        .sidecar("inventory", app::echo("inventory").await, "")
        .await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;
    assert_eq!(call(&orders, "inventory", "/echo").await.0, StatusCode::OK);
    let traffic = Traffic::start(orders.outbound_url());

    // Killed: no goodbye, no drain.
    process.kill().unwrap();
    process.wait().unwrap();
    eventually("orders to notice", PATIENCE, || async {
        let text = orders.metrics().await;
        (metrics::value(&text, "mesh_control_plane_connected")? == 0.0).then_some(())
    })
    .await;
    // Longer than the lease: with no control plane nothing expires on the sidecars' side.
    for _ in 0..40 {
        let (status, body) = call(&orders, "inventory", "/delay/20").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // A change made while it was down is served when it returns, on the same state.
    cluster
        .dirs
        .write_service("inventory", "name: inventory\ntimeout: 100ms\n");
    let _process = spawn_binary(&cluster);
    wait_control_plane_ready(&cluster).await;
    eventually(
        "orders to reconnect and apply the new policy",
        PATIENCE,
        || async {
            let (status, _) = call(&orders, "inventory", "/delay/300").await;
            (status == StatusCode::GATEWAY_TIMEOUT).then_some(())
        },
    )
    .await;
    // Sidecars that reconnect keep their endpoints while the registry refills: not one
    // request failed, before, during or after.
    traffic.finish_without_failures(50).await;
    eventually(
        "every sidecar to acknowledge the current version",
        PATIENCE,
        || async {
            let status = cluster.status().await;
            let services = status["services"].as_object()?;
            let all = ["orders", "inventory"].iter().all(|s| {
                services[*s]["instances"]
                    .as_array()
                    .is_some_and(|list| list.len() == 1 && list.iter().all(|i| i["acked"] == true))
            });
            all.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_tcp_service_is_tunnelled_and_its_listener_moves_with_the_config() {
    let (app, _seen) = tcp::reply_at_eof().await;
    let (first, second) = (free_port(), free_port());
    let tcp_service = |listen: SocketAddr| {
        format!(
            "name: cache\nprotocol: tcp\nlisten: \"{listen}\"\nport: {}\n",
            app.port()
        )
    };
    let (cluster, cp) = Cluster::start(
        "1h",
        &[
            ("orders", "name: orders\ncalls: [cache]\n"),
            ("cache", &tcp_service(first)),
        ],
    )
    .await;
    let _cache = cluster.sidecar("cache", app, "").await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;

    let reply = eventually("the cache's endpoint to be tunnelled", PATIENCE, || async {
        tcp::round_trip(first, b"ping", PATIENCE)
            .await
            .ok()
            .filter(|r| r == b"ping")
    })
    .await;
    assert_eq!(reply, b"ping");
    let shown = &snapshot(&orders).await["destinations"]["cache"]["tcp"];
    assert_eq!(shown["listen"], first.to_string(), "{shown}");
    assert_eq!(shown["port"], app.port(), "{shown}");

    // A new listen address: the sidecar opens it and closes the old one.
    cluster.dirs.write_service("cache", &tcp_service(second));
    eventually("the new listener", PATIENCE, || async {
        tcp::round_trip(second, b"pong", PATIENCE)
            .await
            .ok()
            .filter(|r| r == b"pong")
    })
    .await;
    eventually("the old listener to close", PATIENCE, || async {
        tokio::net::TcpStream::connect(first)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn an_http_service_with_a_listener_serves_http_there_and_tunnels_the_rest() {
    let listen = free_port();
    let (cluster, cp) = Cluster::start(
        "1h",
        &[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            (
                "inventory",
                &format!("name: inventory\nlisten: \"{listen}\"\ntimeout: 2s\n"),
            ),
        ],
    )
    .await;
    let _inventory = cluster
        .sidecar("inventory", app::echo("inventory").await, "")
        .await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;

    // HTTP at the listener is a request to inventory, whatever host the app named.
    let seen = eventually("HTTP through inventory's listener", PATIENCE, || async {
        let url = format!("http://{listen}/stock");
        let rsp = client::http1()
            .request(
                http::Request::get(&url)
                    .header("host", "localhost")
                    .body(Default::default())
                    .unwrap(),
            )
            .await
            .ok()?;
        (rsp.status() == StatusCode::OK).then_some(rsp)
    })
    .await;
    let seen = client::json(seen).await;
    assert_eq!(seen["service"], "inventory", "{seen}");
    assert_eq!(seen["headers"]["host"][0], "inventory", "{seen}");

    // Anything else is tunnelled to inventory's app port, which no file named: the echo app's
    // HTTP server gets the line as it was sent, and refuses it.
    let reply = tcp::round_trip(listen, b"*1\r\n$4\r\nPING\r\n", PATIENCE)
        .await
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");

    let shown = &snapshot(&orders).await["destinations"]["inventory"]["tcp"];
    assert_eq!(shown["listen"], listen.to_string(), "{shown}");
    assert_eq!(shown["detect"], true, "{shown}");
    assert!(shown.get("port").is_none(), "{shown}");
    let text = orders.metrics().await;
    let tcp = r#"mesh_protocol_detections_total{outcome="tcp"}"#;
    assert_eq!(metrics::value(&text, tcp), Some(1.0), "{text}");
    let tunnelled = r#"mesh_tcp_connections_opened_total{direction="outbound",source="orders",destination="inventory"}"#;
    assert_eq!(metrics::value(&text, tunnelled), Some(1.0), "{text}");
    cp.stop().await.unwrap();
}

/// A sidecar's snapshot carries each destination's virtual address, the one `/status` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecars_snapshot_carries_its_destinations_virtual_addresses() {
    let (cluster, cp) = Cluster::start(
        "1h",
        &[
            ("orders", "name: orders\ncalls: [inventory, payments]\n"),
            ("inventory", INVENTORY),
            ("payments", "name: payments\nvirtual_address: 127.240.0.7\n"),
        ],
    )
    .await;
    let orders = cluster
        .sidecar("orders", app::echo("orders").await, "")
        .await;
    let snapshot = snapshot(&orders).await;
    let status = cluster.status().await;
    let inventory = status["services"]["inventory"]["virtual_address"]
        .as_str()
        .unwrap();
    assert!(inventory.starts_with("127."), "{status:#}");
    assert_eq!(
        snapshot["destinations"]["inventory"]["virtual_address"], inventory,
        "{snapshot:#}"
    );
    assert_eq!(
        snapshot["destinations"]["payments"]["virtual_address"], "127.240.0.7",
        "{snapshot:#}"
    );
    cp.stop().await.unwrap();
}
