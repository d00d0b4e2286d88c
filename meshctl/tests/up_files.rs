//! `meshctl up` before any process starts: demo.yaml, ports, bootstrap files, prometheus.yml,
//! and the CLI's errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use meshctl::up::plan::{self, PortError};
use meshctl::up::{ControlPlaneAddrs, DemoConfig, TracingSpec};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn parse(yaml: &str) -> Result<DemoConfig, Vec<meshctl::up::FieldError>> {
    DemoConfig::from_yaml(yaml, Path::new("/base"))
}

const MINIMAL: &str = "\
control_plane: { config_dir: mesh }
run_dir: run
ports_from: 20000
services:
  orders: { instances: 2 }
  storefront: { instances: 1 }
";

#[test]
fn the_repository_demo_file_parses_as_the_contract_says() {
    let path = repo_root().join("config/demo.yaml");
    let config = DemoConfig::load(&path).unwrap();
    let base = path.parent().unwrap();
    assert_eq!(config.control_plane.config_dir, base.join("demo/mesh"));
    assert_eq!(config.run_dir, base.join("../target/demo"));
    assert_eq!(
        config.control_plane.api,
        Some("127.0.0.1:15010".parse().unwrap())
    );
    assert_eq!(
        config.control_plane.admin,
        Some("127.0.0.1:15014".parse().unwrap())
    );
    assert_eq!(
        config.tracing,
        Some(TracingSpec {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            protocol: "grpc".into()
        })
    );
    assert_eq!(config.ports_from, 18000);
    // The shop's URL in the README and the tour.
    assert_eq!(
        config.gateway.listen,
        Some("127.0.0.1:18080".parse().unwrap())
    );
    let services: Vec<(&str, u16)> = config
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.instances))
        .collect();
    // Callers first, whatever the file's order.
    assert_eq!(
        services,
        [
            ("storefront", 1),
            ("orders", 2),
            ("inventory", 3),
            ("payments", 2),
            ("notifications", 1)
        ]
    );
    assert_eq!(config.instance_count(), 9);
}

#[test]
fn the_demo_mesh_configuration_declares_every_demo_service() {
    let mesh = mesh_control_plane::config::load(&repo_root().join("config/demo/mesh")).unwrap();
    for service in meshctl::up::config::DEMO_SERVICES {
        assert!(mesh.services.contains_key(service), "{service} missing");
    }
    assert_eq!(
        mesh.services["orders"].calls,
        ["inventory", "payments", "notifications"]
    );
}

#[test]
fn optional_parts_and_relative_paths() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.control_plane.config_dir, Path::new("/base/mesh"));
    assert_eq!(config.run_dir, Path::new("/base/run"));
    assert_eq!(config.control_plane.api, None);
    assert_eq!(config.tracing, None);
    assert_eq!(config.services[0].name, "storefront");
}

fn field_errors(yaml: &str) -> Vec<String> {
    parse(yaml)
        .unwrap_err()
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn errors_name_the_field() {
    let unknown = field_errors(&MINIMAL.replace("run_dir: run", "run_dir: run\nrundir: x"));
    assert!(unknown[0].contains("rundir"), "{unknown:?}");

    let nested =
        field_errors(&MINIMAL.replace("{ instances: 2 }", "{ instances: 2, replicas: 3 }"));
    assert!(nested[0].starts_with("services.orders"), "{nested:?}");
    assert!(nested[0].contains("replicas"), "{nested:?}");

    let wrong_type = field_errors(&MINIMAL.replace("{ instances: 2 }", "{ instances: two }"));
    assert!(
        wrong_type[0].starts_with("services.orders.instances"),
        "{wrong_type:?}"
    );

    let missing = field_errors(&MINIMAL.replace("ports_from: 20000\n", ""));
    assert!(missing[0].contains("ports_from"), "{missing:?}");

    // Checks after parsing report every problem at once.
    let many = field_errors(
        "control_plane: { config_dir: m, api: 'localhost', admin: 127.0.0.1:0 }\n\
         run_dir: r\n\
         ports_from: 80\n\
         tracing: { otlp_endpoint: '127.0.0.1:4317', protocol: thrift }\n\
         services:\n  Orders: { instances: 1 }\n  inventory: { instances: 0 }\n",
    );
    for field in [
        "control_plane.api: invalid socket address \"localhost\"",
        "control_plane.admin: ",
        "ports_from: 80 is a privileged port",
        "tracing.otlp_endpoint: ",
        "tracing.protocol: \"thrift\"",
        "services.Orders: ",
        "services.inventory.instances: must be at least 1",
    ] {
        assert!(
            many.iter().any(|e| e.starts_with(field)),
            "{field} in {many:?}"
        );
    }

    let error = DemoConfig::load(Path::new("/nonexistent/demo.yaml")).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/demo.yaml"),
        "{error}"
    );
}

#[test]
fn ports_are_handed_out_in_order_skipping_busy_ones() {
    let config = parse(MINIMAL).unwrap();
    let busy = [20003u16, 20006];
    let plan = plan::allocate(&config, |p| !busy.contains(&p)).unwrap();
    let port = |a: SocketAddr| a.port();
    assert_eq!(port(plan.control_plane.api), 20000);
    assert_eq!(port(plan.control_plane.admin), 20001);
    let names: Vec<&str> = plan.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["storefront-1", "orders-1", "orders-2"]);
    let s = &plan.instances[0];
    assert_eq!(
        [s.app, s.outbound, s.inbound, s.admin].map(port),
        [20002, 20004, 20005, 20007]
    );
    let o2 = &plan.instances[2];
    assert_eq!(
        [o2.app, o2.outbound, o2.inbound, o2.admin].map(port),
        [20012, 20013, 20014, 20015]
    );
    assert!(plan.instances.iter().all(|i| i.app.ip().is_loopback()));
    // Said loudly: the addresses are not the usual ones.
    assert_eq!(plan.skipped, busy);
    let warning = plan.skipped_warning().unwrap();
    assert!(
        warning.starts_with("ports 20003, 20006 were in use, so every port from 20003 on moved up"),
        "{warning}"
    );
    assert!(warning.contains("ports_from"), "{warning}");
    assert_eq!(
        plan::allocate(&config, |_| true).unwrap().skipped_warning(),
        None
    );

    // Fixed control-plane ports are never handed out again, and must be free.
    let fixed = parse(&MINIMAL.replace(
        "{ config_dir: mesh }",
        "{ config_dir: mesh, api: 127.0.0.1:20002, admin: 127.0.0.1:20003 }",
    ))
    .unwrap();
    let plan = plan::allocate(&fixed, |_| true).unwrap();
    assert_eq!(port(plan.control_plane.api), 20002);
    assert_eq!(port(plan.instances[0].app), 20000);
    assert_eq!(port(plan.instances[0].outbound), 20001);
    assert_eq!(port(plan.instances[0].inbound), 20004);
    let err = plan::allocate(&fixed, |p| p != 20003).unwrap_err();
    assert!(
        matches!(
            err,
            PortError::InUse {
                field: "control_plane.admin",
                ..
            }
        ),
        "{err}"
    );

    let high = parse(&MINIMAL.replace("20000", "65530")).unwrap();
    let err = plan::allocate(&high, |_| true).unwrap_err();
    assert!(err.to_string().contains("not enough free ports"), "{err}");
}

#[test]
fn a_really_busy_port_is_skipped() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert!(!plan::port_is_free(port));
    let config = parse(&MINIMAL.replace("20000", &port.to_string())).unwrap();
    if let Ok(plan) = plan::allocate(&config, plan::port_is_free) {
        assert_ne!(plan.control_plane.api.port(), port);
    }
}

fn cp() -> ControlPlaneAddrs {
    ControlPlaneAddrs {
        api: "127.0.0.1:20000".parse().unwrap(),
        admin: "127.0.0.1:20001".parse().unwrap(),
    }
}

#[test]
fn bootstrap_files_are_valid_sidecar_configurations() {
    let config = parse(MINIMAL).unwrap();
    let plan = plan::allocate(&config, |_| true).unwrap();
    let orders = &plan.instances[1];
    let state = Path::new("/run dir/state");
    let tracing = TracingSpec {
        otlp_endpoint: "http://127.0.0.1:4317".into(),
        protocol: "grpc".into(),
    };
    let text = plan::sidecar_bootstrap(orders, "mesh.local", &cp(), state, Some(&tracing));
    let sidecar = mesh_sidecar::config::Config::from_yaml(&text, Path::new("/elsewhere"))
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert_eq!(sidecar.service, "orders");
    assert_eq!(sidecar.trust_domain, "mesh.local");
    assert_eq!(sidecar.app, orders.app);
    assert_eq!(sidecar.version, "v1");
    assert_eq!(sidecar.listen.outbound, orders.outbound);
    assert_eq!(sidecar.listen.inbound, orders.inbound);
    assert_eq!(sidecar.listen.admin, orders.admin);
    assert!(!sidecar.access_log);
    let probe = sidecar.app_health.as_ref().unwrap();
    assert_eq!(probe.path.as_deref(), Some("/health"));
    assert_eq!(probe.interval, std::time::Duration::from_secs(1));
    let control = sidecar.control_plane.as_ref().unwrap();
    assert_eq!(control.address, cp().api.into());
    assert_eq!(
        control.trust_anchor,
        mesh_sidecar::config::TrustAnchor::File(state.join("ca.pem"))
    );
    assert_eq!(control.token_file, state.join("tokens/orders"));
    assert_eq!(
        sidecar.tracing.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4317")
    );
    assert_eq!(sidecar.tracing.service_name.as_deref(), Some("orders"));

    let plain = plan::sidecar_bootstrap(orders, "mesh.local", &cp(), state, None);
    assert!(!plain.contains("tracing"), "{plain}");
    mesh_sidecar::config::Config::from_yaml(&plain, Path::new("/")).unwrap();
}

#[test]
fn prometheus_config_scrapes_every_sidecar_and_the_control_plane() {
    let config = parse(MINIMAL).unwrap();
    let plan = plan::allocate(&config, |_| true).unwrap();
    let text = plan::prometheus_config(&plan.control_plane, &plan.instances, &plan.gateway);
    assert_eq!(text.matches("job_name").count(), 1, "{text}");
    assert!(text.contains("targets: [\"127.0.0.1:20001\"]"), "{text}");
    assert!(text.contains("service: \"control-plane\""), "{text}");
    for i in &plan.instances {
        assert!(
            text.contains(&format!("targets: [\"{}\"]", i.admin)),
            "{text}"
        );
        assert!(
            text.contains(&format!("instance: \"{}\"", i.name)),
            "{text}"
        );
    }

    let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI (apt-get install prometheus)"
        );
        eprintln!("skipping `promtool check config`: promtool is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool rejected:\n{text}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_text_sums_across_label_sets() {
    let text = "# HELP mesh_retries_total Retries.\n\
                # TYPE mesh_retries_total counter\n\
                mesh_retries_total{destination=\"payments\",reason=\"5xx\"} 7\n\
                mesh_retries_total{destination=\"inventory\",reason=\"connect-failure\"} 2\n\
                mesh_retries_total_created 1700000000\n\
                mesh_retry_budget_exhausted_total{destination=\"payments\"} 5\n";
    assert_eq!(
        meshctl::loadgen::sum_metric(text, "mesh_retries_total"),
        9.0
    );
    assert_eq!(
        meshctl::loadgen::sum_metric("x 1\n", "mesh_retries_total"),
        0.0
    );
}

#[test]
fn fault_bodies() {
    use meshctl::fault::FaultChange;
    assert_eq!(FaultChange::default().body(), None);
    let set = FaultChange {
        error_rate: Some(0.3),
        latency_ms: Some(200),
        ..FaultChange::default()
    };
    assert_eq!(
        set.body().unwrap(),
        serde_json::json!({"error_rate": 0.3, "latency_ms": 200})
    );
    let clear = FaultChange {
        clear: true,
        ..FaultChange::default()
    };
    assert_eq!(
        clear.body().unwrap(),
        serde_json::json!({"latency_ms": 0, "error_rate": 0.0, "error_status": 503})
    );
}

fn meshctl(args: &[&str], dir: &Path) -> (bool, String, String) {
    let out = Command::new(MESHCTL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = meshctl(&["up"], dir.path());
    assert!(!ok);
    assert!(stderr.contains("config/demo.yaml"), "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");

    let demo = repo_root().join("config/demo.yaml");
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let (ok, _, stderr) = meshctl(
        &[
            "up",
            "--config",
            demo.to_str().unwrap(),
            "--bin-dir",
            empty.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!ok);
    assert!(stderr.contains("`control-plane` binary"), "{stderr}");
    assert!(stderr.contains("cargo build --release"), "{stderr}");

    let (ok, _, stderr) = meshctl(&["loadgen", "--duration", "1s"], dir.path());
    assert!(!ok);
    assert!(stderr.contains("mesh.json"), "{stderr}");
    assert!(stderr.contains("meshctl up"), "{stderr}");

    let (ok, _, stderr) = meshctl(&["fault", "payments", "--error-rate", "2"], dir.path());
    assert!(!ok);
    assert!(stderr.contains("--error-rate"), "{stderr}");
}

#[test]
fn the_last_instances_run_the_versions_demo_yaml_names() {
    let config = parse(&MINIMAL.replace(
        "orders: { instances: 2 }",
        "orders: { instances: 4, versions: { v2: 1, canary: 1 } }",
    ))
    .unwrap();
    let plan = plan::allocate(&config, |_| true).unwrap();
    let versions: Vec<(&str, &str)> = plan
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.version.as_str()))
        .collect();
    assert_eq!(
        versions,
        [
            ("storefront-1", "v1"),
            ("orders-1", "v1"),
            ("orders-2", "v1"),
            ("orders-3", "canary"),
            ("orders-4", "v2"),
        ]
    );
    let v2 = &plan.instances[4];
    let text = plan::sidecar_bootstrap(v2, "mesh.local", &cp(), Path::new("/state"), None);
    let sidecar = mesh_sidecar::config::Config::from_yaml(&text, Path::new("/")).unwrap();
    assert_eq!(sidecar.version, "v2");

    for (versions, field, says) in [
        ("{ v2: 3 }", "services.orders.versions", "names 3 instances"),
        ("{ v2: 0 }", "services.orders.versions.v2", "at least 1"),
        ("{ v1: 1 }", "services.orders.versions.v1", "other than v1"),
        ("{ V2: 1 }", "services.orders.versions.V2", "not a version"),
    ] {
        let errors = field_errors(&MINIMAL.replace(
            "{ instances: 2 }",
            &format!("{{ instances: 2, versions: {versions} }}"),
        ));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{field}: ")) && e.contains(says)),
            "{versions}: {errors:?}"
        );
    }
}

#[test]
fn the_gateway_gets_ports_after_every_instance_and_a_bootstrap_routing_to_the_storefront() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.gateway.listen, None);
    let plan = plan::allocate(&config, |_| true).unwrap();
    let g = &plan.gateway;
    // After the control plane's two and three instances' four: no instance's port moved. No
    // inbound listener: a gateway has none.
    assert_eq!(
        [g.http, g.outbound, g.admin].map(|a| a.port()),
        [20014, 20015, 20016]
    );
    assert_eq!(g.url(), "http://127.0.0.1:20014");

    let named = parse(&MINIMAL.replace(
        "run_dir: run",
        "run_dir: run\ngateway: { listen: 127.0.0.1:20003 }",
    ))
    .unwrap();
    let plan = plan::allocate(&named, |_| true).unwrap();
    assert_eq!(plan.gateway.http.port(), 20003);
    assert!(plan.instances.iter().all(|i| i.app.port() != 20003));
    let err = plan::allocate(&named, |p| p != 20003).unwrap_err();
    assert!(
        matches!(
            err,
            PortError::InUse {
                field: "gateway.listen",
                ..
            }
        ),
        "{err}"
    );
    let errors =
        parse(&MINIMAL.replace("run_dir: run", "run_dir: run\ngateway: { listen: nowhere }"))
            .unwrap_err();
    assert_eq!(errors[0].field, "gateway.listen", "{errors:?}");

    let state = Path::new("/run dir/state");
    let tracing = TracingSpec {
        otlp_endpoint: "http://127.0.0.1:4317".into(),
        protocol: "grpc".into(),
    };
    let text =
        plan::gateway_bootstrap(&plan.gateway, "mesh.local", cp().api, state, Some(&tracing));
    let sidecar = mesh_sidecar::config::Config::from_yaml(&text, Path::new("/elsewhere"))
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert_eq!(sidecar.service, "gateway");
    assert_eq!(sidecar.listen.admin, plan.gateway.admin);
    let control = sidecar.control_plane.as_ref().unwrap();
    assert_eq!(control.token_file, state.join("tokens/gateway"));
    assert_eq!(sidecar.tracing.service_name.as_deref(), Some("gateway"));
    let gateway = sidecar.gateway.as_ref().unwrap();
    assert_eq!(gateway.listeners.len(), 1);
    assert_eq!(gateway.listeners[0].address, plan.gateway.http);
    let [route] = gateway.routes.as_slice() else {
        panic!("{:?}", gateway.routes)
    };
    assert!(route.hostnames.is_empty(), "every host: {route:?}");
    let backends: Vec<&str> = route.rules[0]
        .backends
        .iter()
        .map(|b| b.service.as_str())
        .collect();
    assert_eq!(backends, ["storefront"]);
}
