use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use mesh_api::authorization::Decision;

const GOOD: &str = r#"
service: orders
trust_domain: mesh.local
app: 127.0.0.1:8080
listen: { outbound: 127.0.0.1:15001, inbound: 127.0.0.1:15006, admin: 127.0.0.1:15000 }
tls: { cert: certs/orders.pem, key: certs/orders-key.pem, trust_bundle: /etc/mesh/ca.pem }
destinations:
  inventory:
    endpoints: [127.0.0.1:16006, 127.0.0.1:17006]
  payments:
    endpoints: [127.0.0.1:18006]
    identity: spiffe://other.domain/ns/pay/sa/payments
"#;

fn errors(yaml: &str) -> Vec<ConfigError> {
    Config::from_yaml(yaml, Path::new("/base"))
        .unwrap_err()
        .errors
}

fn paths(yaml: &str) -> Vec<String> {
    errors(yaml).into_iter().map(|e| e.path).collect()
}

#[test]
fn parses_the_documented_example() {
    let config = Config::from_yaml(GOOD, Path::new("/base")).unwrap();
    assert_eq!(config.namespace, "default");
    assert_eq!(
        config.identity.as_str(),
        "spiffe://mesh.local/ns/default/sa/orders"
    );
    let tls = config.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("/base/certs/orders.pem"));
    assert_eq!(tls.trust_bundle, Path::new("/etc/mesh/ca.pem"));
    let inventory = &config.destinations["inventory"];
    assert_eq!(inventory.endpoints.len(), 2);
    assert_eq!(
        inventory.identity.as_str(),
        "spiffe://mesh.local/ns/default/sa/inventory"
    );
    assert_eq!(
        config.destinations["payments"].identity.as_str(),
        "spiffe://other.domain/ns/pay/sa/payments"
    );
    assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
}

#[test]
fn listeners_default_to_the_pod_ports() {
    let yaml = GOOD.replace(
        "listen: { outbound: 127.0.0.1:15001, inbound: 127.0.0.1:15006, admin: 127.0.0.1:15000 }\n",
        "",
    );
    let config = Config::from_yaml(&yaml, Path::new("/")).unwrap();
    assert_eq!(config.listen.outbound.port(), 15001);
    assert_eq!(config.listen.inbound.port(), 15006);
    assert_eq!(config.listen.admin.port(), 15000);
}

#[test]
fn reports_every_bad_value_with_its_path() {
    let yaml = GOOD
        .replace("127.0.0.1:17006", "127.0.0.1:x")
        .replace("app: 127.0.0.1:8080", "app: localhost")
        .replace("identity: spiffe://", "identity: https://")
        + "connect_timeout: soon\n";
    let errs = errors(&yaml);
    let got: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "app",
            "destinations.inventory.endpoints[1]",
            "destinations.payments.identity",
            "connect_timeout"
        ]
    );
    assert_eq!(errs[1].message, r#"invalid socket address "127.0.0.1:x""#);
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let yaml = GOOD.replace(
        "    identity: spiffe",
        "    weight: 3\n    identity: spiffe",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "destinations.payments.weight");
    assert!(
        errs[0].message.contains("unknown field"),
        "{}",
        errs[0].message
    );
}

#[test]
fn wrong_types_name_the_field() {
    let yaml = GOOD.replace("endpoints: [127.0.0.1:18006]", "endpoints: 5");
    assert_eq!(paths(&yaml), ["destinations.payments.endpoints"]);
}

#[test]
fn names_must_be_dns_labels() {
    let yaml = GOOD.replace("service: orders", "service: Orders_1");
    assert_eq!(paths(&yaml), ["service"]);
    let yaml = GOOD.replace("  inventory:", "  Inventory:");
    assert_eq!(paths(&yaml), ["destinations.Inventory"]);
}

#[test]
fn empty_endpoint_lists_and_shared_listeners_are_errors() {
    let yaml = GOOD
        .replace("[127.0.0.1:18006]", "[]")
        .replace("admin: 127.0.0.1:15000", "admin: 127.0.0.1:15001");
    assert_eq!(paths(&yaml), ["listen", "destinations.payments.endpoints"]);
}

#[test]
fn missing_required_field_is_named() {
    let yaml = GOOD.replace("app: 127.0.0.1:8080\n", "");
    let errs = errors(&yaml);
    assert!(errs[0].message.contains("app"), "{:?}", errs);
}

const POLICY: &str = r#"
service: orders
trust_domain: mesh.local
app: 127.0.0.1:8080
tls: { cert: c.pem, key: k.pem, trust_bundle: ca.pem }
destinations:
  inventory:
    endpoints: [127.0.0.1:16006, 127.0.0.1:17006, 127.0.0.1:18006]
    timeout: 2s
    retries:
      attempts: 3
      per_try_timeout: 500ms
      retry_on: [connect-failure, refused-stream, reset, gateway-error, 5xx]
      retriable_status_codes: [409]
      backoff: { base: 25ms, max: 250ms }
      budget: { ratio: 0.2, min_per_second: 10, window: 10s }
      non_idempotent: false
      max_buffered_body: 64KiB
    circuit_breaker:
      consecutive_failures: 5
      base_ejection_time: 10s
      max_ejection_time: 5m
      max_ejection_percent: 50
      max_requests: 1024
      max_pending: 256
    load_balancer: round-robin
"#;

#[test]
fn parses_the_documented_policy() {
    let config = Config::from_yaml(POLICY, Path::new("/")).unwrap();
    let p = &config.destinations["inventory"].policy;
    assert_eq!(p.timeout, Some(Duration::from_secs(2)));
    assert_eq!(p.retries.attempts, 3);
    assert_eq!(p.retries.per_try_timeout, Some(Duration::from_millis(500)));
    assert_eq!(p.retries.retry_on.len(), 5);
    assert_eq!(p.retries.retriable_status_codes, [409]);
    assert_eq!(p.retries.budget.window, Duration::from_secs(10));
    assert_eq!(
        p.circuit_breaker.base_ejection_time,
        Duration::from_secs(10)
    );
    assert_eq!(
        p.circuit_breaker.max_ejection_time,
        Duration::from_secs(300)
    );
    assert_eq!(p.load_balancer, LoadBalancer::RoundRobin);
}

#[test]
fn every_bad_policy_value_is_reported_with_its_path() {
    let yaml = POLICY
        .replace("attempts: 3", "attempts: 0")
        .replace("reset, gateway", "resets, gateway")
        .replace("[409]", "[409, 999]")
        .replace("base: 25ms, max: 250ms", "base: 1s, max: 250ms")
        .replace("ratio: 0.2", "ratio: -1")
        .replace("window: 10s", "window: 2m")
        .replace("max_buffered_body: 64KiB", "max_buffered_body: lots")
        .replace("max_ejection_percent: 50", "max_ejection_percent: 150")
        .replace("round-robin", "random");
    let got = paths(&yaml);
    assert_eq!(
        got,
        [
            "destinations.inventory.retries.attempts",
            "destinations.inventory.retries.retry_on[2]",
            "destinations.inventory.retries.retriable_status_codes[1]",
            "destinations.inventory.retries.backoff",
            "destinations.inventory.retries.budget.ratio",
            "destinations.inventory.retries.budget.window",
            "destinations.inventory.retries.max_buffered_body",
            "destinations.inventory.circuit_breaker.max_ejection_percent",
            "destinations.inventory.load_balancer",
        ]
    );
}

#[test]
fn unknown_policy_field_is_an_error() {
    let yaml = POLICY.replace(
        "      non_idempotent",
        "      jitter: full\n      non_idempotent",
    );
    assert_eq!(paths(&yaml), ["destinations.inventory.retries.jitter"]);
}

#[test]
fn authorization_entries_are_services_or_spiffe_ids() {
    let yaml = format!(
        "{GOOD}authorization: {{ default: deny, allow: [storefront, \"spiffe://other.domain/ns/x/sa/y\"], deny: [Bad_Name] }}\n"
    );
    assert_eq!(paths(&yaml), ["authorization.deny[0]"]);
    let yaml = format!("{GOOD}authorization: {{ default: maybe }}\n");
    assert_eq!(paths(&yaml), ["authorization.default"]);
    let yaml = format!("{GOOD}authorization: {{ default: deny, allow: [storefront] }}\n");
    let config = Config::from_yaml(&yaml, Path::new("/")).unwrap();
    assert_eq!(config.authorization.allow.len(), 1);
    // Plain connections from outside the mesh: deny unless written.
    assert_eq!(config.authorization.unauthenticated, Decision::Deny);
    let yaml = format!("{GOOD}authorization: {{ unauthenticated: allow }}\n");
    let config = Config::from_yaml(&yaml, Path::new("/")).unwrap();
    assert_eq!(config.authorization.unauthenticated, Decision::Allow);
    let yaml = format!("{GOOD}authorization: {{ unauthenticated: yes }}\n");
    assert_eq!(paths(&yaml), ["authorization.unauthenticated"]);
}

/// The YAML block that follows `heading` in the README, completed into a configuration.
fn readme_config(heading: &str) -> Config {
    let readme = concat!(
        include_str!("../../../docs/resilience.md"),
        include_str!("../../../docs/observability.md")
    );
    let section = &readme[readme.find(heading).unwrap()..];
    let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let yaml = format!(
        "service: orders\ntrust_domain: mesh.local\napp: 127.0.0.1:8080\n\
         tls: {{ cert: c.pem, key: k.pem, trust_bundle: ca.pem }}\n{block}"
    );
    Config::from_yaml(&yaml, Path::new("/")).unwrap_or_else(|e| panic!("{heading}: {e}"))
}

/// The README's block of policy defaults is a valid configuration, and it says the truth.
#[test]
fn the_documented_defaults_parse_and_are_the_defaults() {
    let config = readme_config("these are the defaults:");
    assert_eq!(
        config.destinations["inventory"].policy,
        DestinationPolicy::default()
    );
}

/// The README's tracing settings are a valid configuration.
#[test]
fn the_documented_tracing_settings_parse() {
    let config = readme_config("Configuration, in the bootstrap file (all optional):");
    assert_eq!(
        config.tracing.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4317")
    );
    assert!(!config.access_log);
}

const WITH_CONTROL_PLANE: &str = r#"
service: orders
trust_domain: mesh.local
app: 127.0.0.1:8080
version: v2
control_plane:
  address: 127.0.0.1:15010
  trust_anchor: state/ca.pem
  token_file: /var/lib/mesh/tokens/orders
"#;

#[test]
fn control_plane_replaces_tls_and_destinations() {
    let config = Config::from_yaml(WITH_CONTROL_PLANE, Path::new("/base")).unwrap();
    let cp = config.control_plane.as_ref().unwrap();
    assert_eq!(
        cp.address,
        mesh_api::host_port::HostPort::Ip("127.0.0.1:15010".parse().unwrap())
    );
    assert_eq!(
        cp.trust_anchor,
        TrustAnchor::File("/base/state/ca.pem".into())
    );
    assert_eq!(cp.token_file, Path::new("/var/lib/mesh/tokens/orders"));
    assert_eq!(config.version, "v2");
    assert!(config.tls.is_none());
    assert!(config.load_credentials().unwrap().is_none());
}

#[test]
fn control_plane_with_tls_or_destinations_or_neither_is_an_error() {
    let both =
        format!("{WITH_CONTROL_PLANE}tls: {{ cert: c.pem, key: k.pem, trust_bundle: ca.pem }}\n");
    assert_eq!(errors(&both)[0].path, "control_plane");
    let dests =
        format!("{WITH_CONTROL_PLANE}destinations:\n  inventory:\n    endpoints: [127.0.0.1:1]\n");
    assert_eq!(errors(&dests)[0].path, "destinations");
    let neither = WITH_CONTROL_PLANE
        .split("control_plane:")
        .next()
        .unwrap()
        .to_owned();
    let errs = errors(&neither);
    assert!(errs[0].message.contains("control_plane"), "{errs:?}");
    let bad = WITH_CONTROL_PLANE.replace("127.0.0.1:15010", "nowhere");
    let errs = errors(&bad);
    assert_eq!(errs[0].path, "control_plane.address");
    assert!(errs[0].message.contains("write host:port"), "{errs:?}");
    // Only the address is blamed: the control plane is set, just not valid.
    assert_eq!(errs.len(), 1, "{errs:?}");
    let bad_version = WITH_CONTROL_PLANE.replace("version: v2", "version: V_2");
    assert_eq!(errors(&bad_version)[0].path, "version");
}

#[test]
fn a_control_plane_address_may_be_a_name() {
    let yaml = WITH_CONTROL_PLANE.replace(
        "127.0.0.1:15010",
        "mesh-control-plane.mesh-system.svc:15010",
    );
    let config = Config::from_yaml(&yaml, Path::new("/")).unwrap();
    assert_eq!(
        config.control_plane.unwrap().address.to_string(),
        "mesh-control-plane.mesh-system.svc:15010"
    );
    for bad in ["mesh_cp:15010", "localhost", "localhost:0"] {
        let errs = errors(&WITH_CONTROL_PLANE.replace("127.0.0.1:15010", bad));
        assert_eq!(errs[0].path, "control_plane.address", "{bad}: {errs:?}");
        assert!(errs[0].message.contains(&format!("{bad:?}")), "{errs:?}");
    }
}

/// A self-signed CA certificate as PEM, indented for a YAML block under `trust_anchor_pem`.
fn ca_pem_block() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn the_trust_anchor_may_be_inline_pem_and_exactly_one_is_required() {
    let inline = WITH_CONTROL_PLANE.replace(
        "  trust_anchor: state/ca.pem\n",
        &format!("  trust_anchor_pem: |\n{}", ca_pem_block()),
    );
    let config = Config::from_yaml(&inline, Path::new("/base")).unwrap();
    let TrustAnchor::Pem(pem) = config.control_plane.unwrap().trust_anchor else {
        panic!("not inline");
    };
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");

    let both = WITH_CONTROL_PLANE.replace(
        "  trust_anchor: state/ca.pem\n",
        &format!(
            "  trust_anchor: state/ca.pem\n  trust_anchor_pem: |\n{}",
            ca_pem_block()
        ),
    );
    let errs = errors(&both);
    assert_eq!(errs[0].path, "control_plane.trust_anchor_pem", "{errs:?}");
    assert!(errs[0].message.contains("not both"), "{errs:?}");

    let neither = WITH_CONTROL_PLANE.replace("  trust_anchor: state/ca.pem\n", "");
    let errs = errors(&neither);
    assert_eq!(errs[0].path, "control_plane", "{errs:?}");
    assert!(errs[0].message.contains("trust_anchor_pem"), "{errs:?}");

    let garbage = WITH_CONTROL_PLANE.replace(
        "  trust_anchor: state/ca.pem\n",
        "  trust_anchor_pem: not a certificate\n",
    );
    let errs = errors(&garbage);
    assert_eq!(errs[0].path, "control_plane.trust_anchor_pem", "{errs:?}");
    assert!(
        errs[0].message.contains("no usable certificate"),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn opaque_ports_are_ports_or_ranges_and_bad_ones_are_named() {
    let config = Config::from_yaml(
        &format!(
            "{WITH_CONTROL_PLANE}inbound: {{ opaque_ports: [3306, \"25\", \"8000-8099\"] }}\n"
        ),
        Path::new("/"),
    )
    .unwrap();
    for port in [3306, 25, 8000, 8050, 8099] {
        assert!(config.inbound.is_opaque(port), "{port}");
    }
    for port in [80, 3307, 7999, 8100] {
        assert!(!config.inbound.is_opaque(port), "{port}");
    }
    let none = Config::from_yaml(WITH_CONTROL_PLANE, Path::new("/")).unwrap();
    assert!(none.inbound.opaque_ports.is_empty());

    let errs = errors(&format!(
        "{WITH_CONTROL_PLANE}inbound: {{ opaque_ports: [3306, 0, 70000, \"9-8\", mysql] }}\n"
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "inbound.opaque_ports[1]",
            "inbound.opaque_ports[2]",
            "inbound.opaque_ports[3]",
            "inbound.opaque_ports[4]"
        ],
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{WITH_CONTROL_PLANE}inbound: {{ opaque_port: [3306] }}\n"
    ));
    assert_eq!(errs[0].path, "inbound.opaque_port", "{errs:?}");
}

/// The README's bootstrap file with a control plane is valid as it stands.
#[test]
fn the_documented_control_plane_bootstrap_parses() {
    let readme = include_str!("../../../docs/configuration.md");
    let marker = "`control_plane`; everything else stays (see `config/sidecars/`):\n```yaml\n";
    let start = readme.find(marker).unwrap() + marker.len();
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let config = Config::from_yaml(block, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.version, "v1");
    assert_eq!(
        config.control_plane.unwrap().token_file,
        Path::new("/var/lib/mesh/tokens/inventory")
    );
}

/// `WITH_CONTROL_PLANE` with `listen` set to these YAML lines.
fn with_listen(listen: &str) -> String {
    format!("{WITH_CONTROL_PLANE}listen:\n{listen}")
}

/// `listen.advertise`'s errors, by path and message.
fn advertise_errors(listen: &str) -> Vec<String> {
    errors(&with_listen(listen))
        .into_iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

#[test]
fn the_inbound_address_is_advertised_unless_advertise_says_otherwise() {
    let config = Config::from_yaml(WITH_CONTROL_PLANE, Path::new("/")).unwrap();
    let bound: SocketAddr = "127.0.0.1:15006".parse().unwrap();
    assert_eq!(config.listen.advertise, None);
    assert_eq!(config.listen.advertised(bound), Ok(bound));

    let yaml = with_listen("  inbound: 0.0.0.0:15006\n  advertise: 198.18.0.2:16006\n");
    let config = Config::from_yaml(&yaml, Path::new("/")).unwrap();
    assert_eq!(
        config.listen.advertised("0.0.0.0:15006".parse().unwrap()),
        Ok("198.18.0.2:16006".parse().unwrap())
    );
}

#[test]
fn an_advertised_ip_alone_takes_the_port_the_inbound_listener_bound() {
    for (advertise, expected) in [
        ("198.18.0.2", "198.18.0.2:41234"),
        ("fd00::2", "[fd00::2]:41234"),
        ("\"[fd00::2]\"", "[fd00::2]:41234"),
    ] {
        let yaml = with_listen(&format!("  inbound: 0.0.0.0:0\n  advertise: {advertise}\n"));
        let config = Config::from_yaml(&yaml, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
        let bound = "0.0.0.0:41234".parse().unwrap();
        assert_eq!(
            config.listen.advertised(bound),
            Ok(expected.parse().unwrap())
        );
    }
    let errs = advertise_errors("  inbound: \"[::]:0\"\n  advertise: \"[fd00::2]:16006\"\n");
    assert!(errs[0].contains("port 0, chosen at start"), "{errs:?}");
}

#[test]
fn a_wildcard_inbound_with_a_control_plane_must_advertise() {
    for inbound in ["0.0.0.0:15006", "\"[::]:15006\""] {
        let errs = advertise_errors(&format!("  inbound: {inbound}\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("listen.advertise: required: listen.inbound ")
                && errs[0].contains("is a wildcard address, which peer sidecars cannot dial"),
            "{errs:?}"
        );
    }
    // Without a control plane nothing is registered: a wildcard inbound is fine.
    let yaml = GOOD.replace("inbound: 127.0.0.1:15006", "inbound: 0.0.0.0:15006");
    let config = Config::from_yaml(&yaml, Path::new("/")).unwrap();
    assert!(config.listen.advertised(config.listen.inbound).is_err());
}

#[test]
fn advertised_addresses_must_be_dialable() {
    for (advertise, expected) in [
        (
            "0.0.0.0",
            "listen.advertise: 0.0.0.0 is not an address peer sidecars can dial",
        ),
        (
            "\"[::]:16006\"",
            "listen.advertise: :: is not an address peer sidecars can dial",
        ),
        (
            "224.0.0.1",
            "listen.advertise: 224.0.0.1 is not an address peer sidecars can dial",
        ),
        (
            "255.255.255.255",
            "listen.advertise: 255.255.255.255 is not an address",
        ),
        (
            "198.18.0.2:0",
            "listen.advertise: port 0 cannot be dialled: write 198.18.0.2 alone",
        ),
        (
            "inventory.internal:15006",
            "listen.advertise: invalid address \"inventory.internal:15006\": write an IP",
        ),
        (
            "\"[fd00::2\"",
            "listen.advertise: invalid address \"[fd00::2\": write an IP",
        ),
    ] {
        let errs = advertise_errors(&format!(
            "  inbound: 0.0.0.0:15006\n  advertise: {advertise}\n"
        ));
        assert_eq!(errs.len(), 1, "{advertise}: {errs:?}");
        assert!(errs[0].starts_with(expected), "{advertise}: {errs:?}");
    }
    let errs = advertise_errors("  inbound: 0.0.0.0:0\n  advertise: 198.18.0.2:16006\n");
    assert_eq!(
        errs,
        [
            "listen.advertise: listen.inbound has port 0, chosen at start, so no fixed port can \
          be advertised: write 198.18.0.2 alone to advertise the port it gets"
        ]
    );
}

#[test]
fn advertise_without_a_control_plane_is_an_error() {
    let yaml = GOOD.replace(
        "inbound: 127.0.0.1:15006,",
        "inbound: 0.0.0.0:15006, advertise: 198.18.0.2,",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "listen.advertise");
    assert!(errs[0].message.contains("control_plane"), "{errs:?}");
}

/// The two-host example of the README is valid as it stands: each sidecar advertises its
/// host's address.
#[test]
fn the_documented_two_host_bootstrap_files_parse() {
    let readme = include_str!("../../../docs/configuration.md");
    for (marker, advertised) in [
        (
            "`orders`' bootstrap file names that address",
            "198.18.0.1:15006",
        ),
        ("On host B (198.18.0.2):", "198.18.0.2:15006"),
    ] {
        let section = &readme[readme.find(marker).unwrap()..];
        let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
        let block = &section[start..start + section[start..].find("```").unwrap()];
        let config = Config::from_yaml(block, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.listen.advertised(config.listen.inbound),
            Ok(advertised.parse().unwrap())
        );
    }
}

/// The example bootstrap files in config/ are valid.
#[test]
fn the_example_bootstrap_files_parse() {
    for file in [
        "config/sidecars/orders.yaml",
        "config/sidecars/inventory.yaml",
        "config/sidecars/gateway.yaml",
        "config/examples/orders.yaml",
        "config/examples/inventory.yaml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
        Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn app_health_defaults_and_errors() {
    let config = Config::from_yaml(
        &format!("{GOOD}app_health: {{ path: /healthz }}\n"),
        Path::new("/base"),
    )
    .unwrap();
    let health = config.app_health.unwrap();
    assert_eq!(health.path.as_deref(), Some("/healthz"));
    assert_eq!(health.interval, Duration::from_secs(2));
    assert_eq!(health.timeout, Duration::from_secs(1));
    assert_eq!((health.unhealthy_after, health.healthy_after), (3, 1));
    assert_eq!(
        Config::from_yaml(GOOD, Path::new("/base"))
            .unwrap()
            .app_health,
        None
    );
    let errors = errors(&format!(
        "{GOOD}app_health: {{ path: healthz, interval: 1s, timeout: 2s, unhealthy_after: 0 }}\n"
    ));
    let found: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        found,
        [
            "app_health.path",
            "app_health.timeout",
            "app_health.unhealthy_after"
        ],
        "{errors:?}"
    );
}

#[test]
fn a_tcp_destination_listens_locally_and_its_errors_name_the_field() {
    let tcp = "destinations:\n  redis:\n    endpoints: [127.0.0.1:19006]\n    protocol: tcp\n";
    let config = Config::from_yaml(
        &format!(
            "{}{tcp}    listen: 127.0.0.1:6380\n    port: 6379\n",
            GOOD.split("destinations:").next().unwrap()
        ),
        Path::new("/base"),
    )
    .unwrap();
    let redis = config.destinations["redis"].tcp.unwrap();
    assert_eq!(redis.listen.to_string(), "127.0.0.1:6380");
    assert_eq!(redis.port, Some(6379));

    let base = GOOD.split("destinations:").next().unwrap();
    let found = paths(&format!(
        "{base}{tcp}    listen: 127.0.0.1:15001\n    port: 6379\n    routes: []\n    retries: {{ attempts: 2 }}\n"
    ));
    assert_eq!(
        found,
        [
            "destinations.redis.routes",
            "destinations.redis.retries",
            "destinations.redis.listen"
        ]
    );
    let found = paths(&format!("{base}{tcp}"));
    assert_eq!(
        found,
        ["destinations.redis.listen", "destinations.redis.port"]
    );
    let two = format!(
        "{base}{tcp}    listen: 127.0.0.1:6380\n    port: 6379\n  cache:\n    endpoints: [127.0.0.1:19007]\n    protocol: tcp\n    listen: 127.0.0.1:6380\n    port: 11211\n"
    );
    assert_eq!(paths(&two), ["destinations.redis.listen"]);
}

#[test]
fn idle_timeout_defaults_to_an_hour_and_is_checked() {
    let config = Config::from_yaml(GOOD, Path::new("/base")).unwrap();
    assert_eq!(config.idle_timeout, Duration::from_secs(3600));
    let base = GOOD.split("destinations:").next().unwrap();
    let rest = &GOOD[base.len()..];
    let config = Config::from_yaml(
        &format!("{base}idle_timeout: 5m\n{rest}"),
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(config.idle_timeout, Duration::from_secs(300));
    for bad in ["0s", "50ms", "never"] {
        let errors = errors(&format!("{base}idle_timeout: {bad}\n{rest}"));
        assert_eq!(errors[0].path, "idle_timeout", "{bad}: {errors:?}");
    }
}

#[test]
fn max_connection_age_is_optional_and_checked() {
    assert_eq!(
        Config::from_yaml(GOOD, Path::new("/base"))
            .unwrap()
            .max_connection_age,
        None
    );
    let base = GOOD.split("destinations:").next().unwrap();
    let rest = &GOOD[base.len()..];
    let config = Config::from_yaml(
        &format!("{base}max_connection_age: 2h\n{rest}"),
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(config.max_connection_age, Some(Duration::from_secs(7200)));
    for bad in ["0s", "500ms", "forever"] {
        let errors = errors(&format!("{base}max_connection_age: {bad}\n{rest}"));
        assert_eq!(errors[0].path, "max_connection_age", "{bad}: {errors:?}");
    }
}

#[test]
fn an_http_destination_may_listen_and_detect_timeout_is_checked() {
    let base = GOOD.split("destinations:").next().unwrap();
    let http = "destinations:\n  inventory:\n    endpoints: [127.0.0.1:19006]\n    listen: 127.0.0.1:8090\n    retries: { attempts: 2 }\n";
    let config = Config::from_yaml(
        &format!("{base}detect_timeout: 300ms\n{http}"),
        Path::new("/base"),
    )
    .unwrap();
    let listener = config.destinations["inventory"].tcp.unwrap();
    assert!(listener.detect);
    assert_eq!(listener.port, None);
    assert_eq!(config.detect_timeout, Duration::from_millis(300));
    assert_eq!(
        Config::from_yaml(GOOD, Path::new("/base"))
            .unwrap()
            .detect_timeout,
        Duration::from_secs(1)
    );
    for bad in ["0s", "2m", "soon"] {
        let errors = errors(&format!("{base}detect_timeout: {bad}\n{http}"));
        assert_eq!(errors[0].path, "detect_timeout", "{bad}: {errors:?}");
    }
}

#[test]
fn limits_are_read_shown_and_checked_by_path() {
    let base = GOOD.split("destinations:").next().unwrap();
    let rest = &GOOD[base.len()..];
    let config = Config::from_yaml(
        &format!("{base}limits: {{ inbound: {{ max_handshakes: 8 }}, app: {{ connect_timeout: 250ms }} }}\n{rest}"),
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(config.limits.inbound.max_handshakes, 8);
    assert_eq!(
        config.limits.app.connect_timeout,
        Duration::from_millis(250)
    );
    let shown = serde_json::to_value(&config).unwrap();
    assert_eq!(shown["limits"]["inbound"]["max_handshakes"], 8);
    assert_eq!(shown["limits"]["inbound"]["max_connections"], 10_000);
    assert_eq!(shown["limits"]["app"]["connect_timeout"], "250ms");
    assert_eq!(
        paths(&format!(
            "{base}limits: {{ outbound: {{ max_conections: 1 }} }}\n{rest}"
        )),
        ["limits.outbound.max_conections"]
    );
    assert_eq!(
        paths(&format!(
            "{base}limits: {{ admin: {{ max_connections: 0 }} }}\n{rest}"
        )),
        ["limits.admin.max_connections"]
    );
}

#[test]
fn a_destination_may_set_its_virtual_address() {
    let yaml = GOOD.replace(
        "    endpoints: [127.0.0.1:18006]\n",
        "    endpoints: [127.0.0.1:18006]\n    virtual_address: 127.240.0.11\n",
    );
    let config = Config::from_yaml(&yaml, Path::new("/base")).unwrap();
    assert_eq!(
        config.destinations["payments"].virtual_address,
        Some("127.240.0.11".parse().unwrap())
    );
    assert_eq!(config.destinations["inventory"].virtual_address, None);
}

#[test]
fn bad_or_shared_virtual_addresses_name_the_destination() {
    let yaml = GOOD
        .replace(
            "    endpoints: [127.0.0.1:16006, 127.0.0.1:17006]\n",
            "    endpoints: [127.0.0.1:16006, 127.0.0.1:17006]\n    virtual_address: 127.240.0.11\n",
        )
        .replace(
            "    endpoints: [127.0.0.1:18006]\n",
            "    endpoints: [127.0.0.1:18006]\n    virtual_address: 127.240.0.11\n",
        );
    let errors: Vec<String> = errors(&yaml)
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("destinations.payments.virtual_address")
            && errors[0]
                .contains("127.240.0.11 is already the virtual address of destinations.inventory"),
        "{errors:?}"
    );
    for bad in ["inventory", "0.0.0.0"] {
        let yaml = GOOD.replace(
            "    endpoints: [127.0.0.1:18006]\n",
            &format!("    endpoints: [127.0.0.1:18006]\n    virtual_address: {bad:?}\n"),
        );
        assert_eq!(
            paths(&yaml),
            ["destinations.payments.virtual_address"],
            "{bad}"
        );
    }
}

#[test]
fn outbound_unknown_is_passthrough_unless_set_and_shown() {
    let config = Config::from_yaml(GOOD, Path::new("/base")).unwrap();
    assert_eq!(config.outbound.unknown, UnknownDestination::Passthrough);
    let shown = serde_json::to_value(&config).unwrap();
    assert_eq!(shown["outbound"]["unknown"], "passthrough");

    let config = Config::from_yaml(
        &format!("{GOOD}outbound: {{ unknown: deny }}\n"),
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(config.outbound.unknown, UnknownDestination::Deny);
    let shown = serde_json::to_value(&config).unwrap();
    assert_eq!(shown["outbound"]["unknown"], "deny");
}

#[test]
fn a_bad_outbound_unknown_names_the_field_and_the_choices() {
    let errors = errors(&format!("{GOOD}outbound: {{ unknown: allow_any }}\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "outbound.unknown");
    assert!(
        errors[0].message.contains("\"allow_any\"")
            && errors[0].message.contains("passthrough or deny"),
        "{errors:?}"
    );
    assert_eq!(
        paths(&format!("{GOOD}outbound: {{ unknwon: deny }}\n")),
        ["outbound.unknwon"]
    );
}

const GATEWAY: &str = r#"
service: gateway
trust_domain: mesh.local
control_plane: { address: "127.0.0.1:15010", trust_anchor: ca.pem, token_file: token }
gateway:
  listeners:
    - { name: web, address: "0.0.0.0:8080", protocol: HTTP }
  routes:
    - name: shop
      parentRefs: [{ name: web }]
      hostnames: [shop.example.com, "*.shop.example.com"]
      rules:
        - matches: [{ path: { type: PathPrefix, value: /api/orders } }]
          backendRefs: [{ name: orders }]
        - backendRefs: [{ name: storefront, weight: 3 }, { name: storefront-next }]
"#;

#[test]
fn a_gateway_needs_no_app_and_its_routes_name_listeners() {
    let config = Config::from_yaml(GATEWAY, Path::new("/base")).unwrap();
    let gateway = config.gateway.as_ref().unwrap();
    assert_eq!(gateway.listeners[0].name, "web");
    let shop = &gateway.routes[0];
    assert_eq!(shop.listeners, [0]);
    assert_eq!(
        shop.hostnames,
        [
            Hostname::Exact("shop.example.com".into()),
            Hostname::Wildcard(".shop.example.com".into())
        ]
    );
    assert_eq!(shop.rules[1].backends[0].weight, 3);
    // Without `gateway:`, `app` is required.
    let without = GOOD.replace("app: 127.0.0.1:8080\n", "");
    assert_eq!(paths(&without), ["app"]);
}

#[test]
fn gateway_mistakes_are_reported_by_field() {
    let bad = GATEWAY
        .replace(
            "trust_domain: mesh.local\n",
            "trust_domain: mesh.local\napp: 127.0.0.1:1\n",
        )
        .replace("protocol: HTTP", "protocol: UDP")
        .replace("[{ name: web }]", "[{ name: web }, { name: websecure }]")
        .replace("*.shop.example.com\"]", "Shop.example.com:443\", 10.0.0.1]")
        .replace("type: PathPrefix", "type: Glob")
        .replace("{ name: storefront-next }", "{ name: orders, version: V2 }");
    let errors = errors(&bad);
    let found: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    let expect = [
        "app: not allowed with gateway",
        "gateway.listeners[0].protocol: \"UDP\": use HTTP or HTTPS",
        "gateway.routes[0].parentRefs[1].name: no listener named \"websecure\"",
        "gateway.routes[0].hostnames[1]: \"Shop.example.com:443\": not a host name",
        "gateway.routes[0].hostnames[2]: \"10.0.0.1\": not a host name",
        "gateway.routes[0].rules[0].matches[0].path.type: \"Glob\"",
        "gateway.routes[0].rules[1].backendRefs[1].version: ",
    ];
    for expected in expect {
        assert!(
            found.iter().any(|f| f.starts_with(expected)),
            "{expected} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn a_gateway_refuses_an_inbound_listener_naming_the_field() {
    let with = |listen: &str| {
        GATEWAY.replace(
            "trust_domain: mesh.local\n",
            &format!("trust_domain: mesh.local\nlisten: {listen}\n"),
        )
    };
    let found: Vec<String> = errors(&with(
        "{ inbound: \"127.0.0.1:15006\", advertise: 10.0.0.5 }",
    ))
    .iter()
    .map(|e| format!("{}: {}", e.path, e.message))
    .collect();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("listen.inbound: not allowed with gateway: a gateway has no inbound"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("listen.advertise: not allowed with gateway"),
        "{found:#?}"
    );
    // Outbound and admin are its own; the inbound default does not stand in their way.
    let config = Config::from_yaml(
        &with("{ outbound: \"127.0.0.1:15006\", admin: \"127.0.0.1:15000\" }"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(config.listen.outbound.port(), 15006);
}

#[test]
fn gateway_client_limits_are_read_and_checked() {
    let good = format!(
        "{GATEWAY}  clients: {{ trusted_hops: 1, max_request_bytes: 1MiB, max_header_bytes: 16KiB, \
         rate_limit: {{ requests_per_second: 50, burst: 100 }} }}\n"
    );
    let config = Config::from_yaml(&good, Path::new("/base")).unwrap();
    let clients = &config.gateway.as_ref().unwrap().clients;
    assert_eq!(clients.trusted_hops, 1);
    assert_eq!(clients.max_request_bytes, 1 << 20);
    assert_eq!(clients.max_header_bytes, 16 << 10);
    assert_eq!(clients.rate_limit.unwrap().burst, 100);
    let bad = good
        .replace("1MiB", "lots")
        .replace("16KiB", "1KiB")
        .replace("requests_per_second: 50", "requests_per_second: 0");
    assert_eq!(
        paths(&bad),
        [
            "gateway.clients.max_request_bytes",
            "gateway.clients.max_header_bytes",
            "gateway.clients.rate_limit.requests_per_second"
        ]
    );
}

#[test]
fn an_empty_gateway_section_leaves_the_listeners_to_the_control_plane() {
    let empty = GATEWAY
        .split_once("gateway:\n")
        .map(|(head, _)| format!("{head}gateway: {{}}\n"))
        .unwrap();
    let config = Config::from_yaml(&empty, Path::new("/base")).unwrap();
    assert!(config.gateway.as_ref().unwrap().is_unset());
    assert_eq!(config.base_dir, Path::new("/base"));
    // Without a control plane nothing would ever declare them.
    let alone = empty.replace(
        "control_plane: { address: \"127.0.0.1:15010\", trust_anchor: ca.pem, token_file: token }\n",
        "tls: { cert: c.pem, key: k.pem, trust_bundle: ca.pem }\n",
    );
    let found: Vec<String> = errors(&alone)
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    assert_eq!(
        found,
        ["gateway.listeners: at least one listener is needed"]
    );
}
