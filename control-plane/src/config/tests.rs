use super::*;

fn files(mesh: &str, services: &[(&str, &str)]) -> ConfigFiles {
    let mut files = ConfigFiles::new();
    files.insert(MESH_FILE.into(), mesh.as_bytes().to_vec());
    for (name, text) in services {
        files.insert(format!("services/{name}.yaml"), text.as_bytes().to_vec());
    }
    files
}

fn errors(mesh: &str, services: &[(&str, &str)]) -> Vec<String> {
    parse(&files(mesh, services))
        .unwrap_err()
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn defaults_apply_field_by_field() {
    let config = parse(&files(
        "trust_domain: mesh.local\ndefaults:\n  timeout: 10s\n  load_balancer: round-robin\n",
        &[("a", "name: a\ntimeout: 2s\n"), ("b", "name: b\n")],
    ))
    .unwrap();
    let a = &config.services["a"].policy;
    assert_eq!(a.timeout, Some(Duration::from_secs(2)));
    assert_eq!(a.load_balancer, policy::LoadBalancer::RoundRobin);
    assert_eq!(
        config.services["b"].policy.timeout,
        Some(Duration::from_secs(10))
    );
    assert_eq!(config.namespace, "default");
    assert_eq!(config.certificate_lifetime, DEFAULT_LIFETIME);
    assert_eq!(config.registry.lease, DEFAULT_LEASE);
}

#[test]
fn a_bad_default_is_reported_once_in_mesh_yaml() {
    let errors = errors(
        "trust_domain: mesh.local\ndefaults:\n  retries: {attempts: 0}\n",
        &[
            ("a", "name: a\n"),
            ("b", "name: b\nretries: {attempts: 3}\n"),
        ],
    );
    assert_eq!(
        errors,
        ["mesh.yaml: defaults.retries.attempts: must be between 1 and 10"]
    );
}

#[test]
fn every_error_has_its_file_and_path() {
    let errors = errors(
        "trust_domain: Mesh Local\nnamespace: Default\nregistry: {heartbeat_interval: 5s, lease: 2s}\nauthorization: {default: maybe}\n",
        &[
            (
                "a",
                "name: a\ncalls: [a, a]\nload_balancer: random\nauthorization: {allow: [\"spiffe://x/ns/y/sa/z\", \"Bad Name\"]}\n",
            ),
            ("b", "name: B\nunknown: 1\n"),
            ("c", "name: c\ntraffic_split: {}\n"),
        ],
    );
    for expected in [
        "mesh.yaml: trust_domain: ",
        "mesh.yaml: namespace: ",
        "mesh.yaml: registry.lease: must exceed registry.heartbeat_interval",
        "mesh.yaml: authorization.default: ",
        "services/a.yaml: calls[1]: \"a\" is listed twice",
        "services/a.yaml: load_balancer: ",
        "services/a.yaml: authorization.allow[1]: ",
        "services/b.yaml: unknown: ",
        "services/c.yaml: traffic_split: must list at least one version",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
}

#[test]
fn a_certificate_lifetime_past_what_dates_hold_is_an_error_not_a_crash() {
    for lifetime in ["10000y", "367d"] {
        let errors = errors(
            &format!("trust_domain: mesh.local\ncertificate_lifetime: {lifetime}\n"),
            &[],
        );
        assert_eq!(
            errors,
            [
                "mesh.yaml: certificate_lifetime: must be at most 366d: workload certificates are short-lived and renewed"
            ],
            "{lifetime}"
        );
    }
    let config = parse(&files(
        "trust_domain: mesh.local\ncertificate_lifetime: 366d\n",
        &[],
    ))
    .unwrap();
    assert_eq!(
        config.certificate_lifetime,
        Duration::from_secs(366 * 24 * 3600)
    );
}

/// `errs` are exactly the `expected` errors, each given by how it starts.
fn assert_errors(errs: &[String], expected: &[&str]) {
    for e in expected {
        assert!(
            errs.iter().any(|err| err.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
}

/// The YAML block after `marker` in the README.
fn readme_block(marker: &str) -> &'static str {
    let readme = include_str!("../../../docs/control-plane.md");
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("control-plane.md has no {marker:?}"));
    let block = &readme[at + marker.len()..];
    &block[..block.find("```").unwrap()]
}

/// The README's example configuration directory is valid and means what it says.
#[test]
fn the_documented_configuration_directory_is_valid() {
    let mesh = readme_block("```yaml\n# mesh.yaml\n");
    let inventory = readme_block("```yaml\n# services/inventory.yaml\n");
    let config = parse(&files(
        mesh,
        &[
            ("inventory", inventory),
            ("orders", "name: orders\n"),
            ("storefront", "name: storefront\n"),
            ("payments", "name: payments\n"),
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.trust_domain, "mesh.local");
    let inventory = &config.services["inventory"];
    assert_eq!(inventory.policy.timeout, Some(Duration::from_secs(2)));
    assert_eq!(inventory.policy.retries.attempts, 3);
    assert_eq!(
        inventory.traffic_split.as_ref().unwrap()["v2"],
        10,
        "{inventory:?}"
    );
    // A service that sets nothing gets the mesh's defaults.
    assert_eq!(
        config.services["orders"].policy.timeout,
        Some(Duration::from_secs(10))
    );
}

/// The README's example errors are the errors the validator prints.
#[test]
fn the_documented_validation_errors_are_real() {
    let errs = errors(
        "trust_domain: mesh.local\nregistry: { heartbeat_interval: 5s, lease: 5s }\n",
        &[
            ("inventory", "name: inventory\ntimeout: soon\n"),
            ("orders", "name: orders\ncalls: [inventroy]\n"),
        ],
    );
    let readme = include_str!("../../../docs/control-plane.md");
    for err in &errs {
        assert!(readme.contains(err.as_str()), "docs lack {err:?}");
    }
    assert_eq!(errs.len(), 3, "{errs:?}");
}

/// The example mesh in config/mesh, which the README's first command runs, is valid.
#[test]
fn the_example_mesh_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mesh");
    let config = load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.services.contains_key("orders"));
    assert!(config.services.contains_key("inventory"));
}

#[test]
fn routes_take_the_services_policy_and_replace_what_they_set() {
    let config = parse(&files(
        "trust_domain: mesh.local\ndefaults:\n  timeout: 10s\n",
        &[(
            "inventory",
            "name: inventory\ntimeout: 2s\n\
             retries: { attempts: 2, per_try_timeout: 300ms, retry_on: [5xx] }\n\
             routes:\n\
             - { name: reads, match: { methods: [GET], path_prefix: /stock/ }, \
                 retries: { attempts: 4 } }\n\
             - { name: export, match: { path: /export }, timeout: none }\n\
             - { name: checkout, match: { methods: [POST] }, timeout: 5s }\n",
        )],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let policy = &config.services["inventory"].policy;
    let [reads, export, checkout] = &policy.routes[..] else {
        panic!("{:?}", policy.routes)
    };
    assert_eq!(reads.name, "reads");
    assert_eq!(reads.matches.len(), 1);
    assert_eq!(
        reads.matches[0].path,
        mesh_api::route::PathMatch::PathPrefix("/stock".into())
    );
    assert_eq!(reads.matches[0].method.as_deref(), Some("GET"));
    assert_eq!(reads.timeout, Some(Duration::from_secs(2)));
    assert_eq!(reads.retries.attempts, 4);
    assert_eq!(
        reads.retries.per_try_timeout,
        Some(Duration::from_millis(300))
    );
    assert_eq!(reads.retries.retry_on, [policy::RetryOn::ServerError]);
    assert_eq!(reads.retries.budget, policy.retries.budget);
    assert_eq!(export.timeout, None);
    assert_eq!(export.retries, policy.retries);
    assert_eq!(checkout.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        checkout.matches[0].path,
        mesh_api::route::PathMatch::PathPrefix("/".into())
    );
}

#[test]
fn route_errors_name_the_route_and_field_and_inherited_ones_are_reported_once() {
    let errs = errors(
        "trust_domain: mesh.local\ndefaults:\n  routes: [{ name: all, match: {} }]\n",
        &[(
            "inventory",
            "name: inventory\nretries: { attempts: 0 }\n\
             routes:\n\
             - { name: Reads, match: { methods: [get], path_prefix: stock } }\n\
             - { name: dup, match: { path: /a, path_prefix: /b }, timeout: soon }\n\
             - { name: dup, match: { path: \"/a?b=1\" }, retries: { budget: { ratio: 1.0 } } }\n\
             - { name: both, match: {}, matches: [] }\n\
             - { name: bad-retries, match: {}, retries: { attempts: 11 } }\n",
        )],
    );
    let expected = [
        "mesh.yaml: defaults.routes: routes name paths of one service: put them in that service's file",
        "services/inventory.yaml: retries.attempts: must be between 1 and 10",
        "services/inventory.yaml: routes[0].name: \"Reads\": use 1-63 lowercase letters, digits, '-' and '_'",
        "services/inventory.yaml: routes[0].match.methods[0]: methods are case-sensitive and \"get\" would match no standard one: write \"GET\"",
        "services/inventory.yaml: routes[0].match.path_prefix: \"stock\" must start with '/'",
        "services/inventory.yaml: routes[1].match: set one of path and path_prefix, not both",
        "services/inventory.yaml: routes[1].timeout: invalid duration \"soon\"",
        "services/inventory.yaml: routes[2].name: \"dup\" names two routes",
        "services/inventory.yaml: routes[2].match.path: \"/a?b=1\" contains '?': a path is matched without query or fragment",
        "services/inventory.yaml: routes[2].retries.budget: the retry budget is the destination's",
        "services/inventory.yaml: routes[3].match: set matches or the earlier match, not both",
        "services/inventory.yaml: routes[4].retries.attempts: must be between 1 and 10",
    ];
    assert_errors(&errs, &expected);
}

#[test]
fn none_lifts_a_limit_the_defaults_set() {
    let config = parse(&files(
        "trust_domain: mesh.local\ndefaults:\n  timeout: 10s\n  retries: { per_try_timeout: 1s }\n",
        &[
            (
                "a",
                "name: a\ntimeout: none\nretries: { per_try_timeout: none }\n",
            ),
            ("b", "name: b\n"),
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.services["a"].policy.timeout, None);
    assert_eq!(config.services["a"].policy.retries.per_try_timeout, None);
    let b = &config.services["b"].policy;
    assert_eq!(b.timeout, Some(Duration::from_secs(10)));
    assert_eq!(b.retries.per_try_timeout, Some(Duration::from_secs(1)));
}

#[test]
fn a_tcp_service_carries_its_listener_and_port_and_refuses_http_only_fields() {
    let mesh = "trust_domain: mesh.local\n";
    let config = parse(&files(
        mesh,
        &[(
            "cache",
            "name: cache\nprotocol: tcp\nlisten: 127.0.0.1:6380\nport: 6379\n",
        )],
    ))
    .unwrap();
    let tcp = config.services["cache"].tcp.unwrap();
    assert_eq!(tcp.listen.to_string(), "127.0.0.1:6380");
    assert_eq!(tcp.port, Some(6379));

    let errors = errors(
        mesh,
        &[
            (
                "cache",
                "name: cache\nprotocol: tcp\nlisten: 127.0.0.1:6380\nport: 6379\nretries: { attempts: 2 }\n",
            ),
            (
                "queue",
                "name: queue\nprotocol: tcp\nlisten: 127.0.0.1:6380\nport: 5672\n",
            ),
            ("db", "name: db\nprotocol: tcp\nlisten: 127.0.0.1:5433\n"),
        ],
    );
    assert!(
        errors.iter().any(|e| e.contains("services/cache.yaml")
            && e.contains("retries")
            && e.contains("cannot be replayed")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("services/db.yaml") && e.contains("port")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("listen") && e.contains("already the listen address")),
        "{errors:?}"
    );
}

#[test]
fn an_http_service_may_have_a_listener_whose_port_is_optional() {
    let mesh = "trust_domain: mesh.local\n";
    let config = parse(&files(
        mesh,
        &[(
            "inventory",
            "name: inventory\nlisten: 127.0.0.1:8090\nretries: { attempts: 2 }\n",
        )],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let listener = config.services["inventory"].tcp.unwrap();
    assert!(listener.detect);
    assert_eq!(listener.port, None);
    let errors = errors(mesh, &[("inventory", "name: inventory\nport: 8080\n")]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("port") && e.contains("only a destination with listen")),
        "{errors:?}"
    );
}

#[test]
fn backend_refs_name_declared_services_and_versions_of_their_split() {
    let errs = errors(
        "trust_domain: mesh.local\n",
        &[
            (
                "inventory",
                "name: inventory\ntraffic_split: { v1: 100, v2: 0 }\n\
                 routes:\n\
                 - { name: ok, backendRefs: [{ name: inventory, version: v2 }, { name: next }] }\n\
                 - { name: bad, backendRefs: [{ name: nowhere }, { name: inventory, version: v3 }, \
                     { name: next, version: v2 }, { name: cache }] }\n",
            ),
            ("next", "name: next\n"),
            (
                "cache",
                "name: cache\nprotocol: tcp\nlisten: 127.0.0.1:6380\nport: 6379\n",
            ),
        ],
    );
    let expected = [
        "services/inventory.yaml: routes[1].backendRefs[0].name: service \"nowhere\" is not declared",
        "services/inventory.yaml: routes[1].backendRefs[1].version: \"v3\" is not in inventory's traffic_split",
        "services/inventory.yaml: routes[1].backendRefs[2].version: \"v2\" is not in next's traffic_split",
        "services/inventory.yaml: routes[1].backendRefs[3].name: \"cache\" is a tcp service",
    ];
    assert_errors(&errs, &expected);
}

/// The YAML block that follows `marker` in `doc`.
fn doc_block<'a>(doc: &'a str, marker: &str) -> &'a str {
    let at = doc
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the docs"));
    let section = &doc[at..];
    let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    &section[start..start + section[start..].find("```").unwrap()]
}

/// The routes the docs tell operators to write are valid service files.
#[test]
fn the_documented_routes_are_valid() {
    let resilience = include_str!("../../../docs/resilience.md");
    let control_plane = include_str!("../../../docs/control-plane.md");
    let split = "traffic_split: { v1: 100, v2: 0 }\n";
    let reference: String = doc_block(resilience, "**Routes.**")
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    for (what, body) in [
        ("the reference", format!("{split}{reference}")),
        (
            "the run-pair routes",
            doc_block(
                resilience,
                "these routes to `config/mesh/services/inventory.yaml`",
            )
            .into(),
        ),
        (
            "the mirror route",
            doc_block(resilience, "mirror inventory's `/api` requests").into(),
        ),
        (
            "the chaos route",
            doc_block(resilience, "add to `config/mesh/services/inventory.yaml`:").into(),
        ),
        (
            "the testers route",
            doc_block(
                control_plane,
                "give `config/mesh/services/inventory.yaml` a split",
            )
            .into(),
        ),
    ] {
        let config = parse(&files(
            "trust_domain: mesh.local\n",
            &[("inventory", &format!("name: inventory\n{body}"))],
        ))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            !config.services["inventory"].policy.routes.is_empty(),
            "{what}"
        );
    }
}

#[test]
fn authorization_rules_name_declared_services() {
    let errs = errors(
        "trust_domain: mesh.local\n",
        &[
            (
                "inventory",
                "name: inventory\nauthorization:\n  rules:\n\
                 \x20   - { name: writes, matches: [{ method: POST }], allow: [orders, ordres] }\n\
                 \x20   - { name: writes, deny: [spiffe://other/ns/x/sa/y] }\n",
            ),
            ("orders", "name: orders\n"),
        ],
    );
    assert_eq!(
        errs,
        [
            "services/inventory.yaml: authorization.rules[0].allow[1]: service \"ordres\" is not declared",
            "services/inventory.yaml: authorization.rules[1].name: \"writes\" names two rules",
        ]
    );
}

#[test]
fn faults_belong_to_one_http_service() {
    let errs = errors(
        "trust_domain: mesh.local\ndefaults:\n  fault: { abort: { httpStatus: 503 } }\n",
        &[
            (
                "inventory",
                "name: inventory\nfault: { delay: { fixedDelay: soon } }\n\
                 routes: [{ name: r, fault: { abort: { grpcStatus: NOPE } } }]\n",
            ),
            (
                "cache",
                "name: cache\nprotocol: tcp\nlisten: 127.0.0.1:6380\nport: 6379\n\
                 fault: { abort: { httpStatus: 503 } }\n",
            ),
        ],
    );
    let expected = [
        "mesh.yaml: defaults.fault: faults are an experiment on one service",
        "services/inventory.yaml: fault.delay.fixedDelay: invalid duration \"soon\"",
        "services/inventory.yaml: routes[0].fault.abort.grpcStatus: \"NOPE\" is not a gRPC error status",
        "services/cache.yaml: fault: not allowed on a protocol: tcp destination",
    ];
    assert_errors(&errs, &expected);
}

#[test]
fn a_rate_limit_names_declared_callers_and_reaches_the_snapshot() {
    let errs = errors(
        "trust_domain: mesh.local\n",
        &[(
            "inventory",
            "name: inventory\nrate_limit:\n  requests_per_second: 0\n  \
             callers: { ordres: { requests_per_second: 10 } }\n",
        )],
    );
    assert_eq!(
        errs,
        [
            "services/inventory.yaml: rate_limit.callers.ordres: service \"ordres\" is not declared",
            "services/inventory.yaml: rate_limit.requests_per_second: 0: must be greater than 0 and at most 1000000",
        ]
    );
    let config = parse(&files(
        "trust_domain: mesh.local\n",
        &[
            (
                "inventory",
                "name: inventory\nrate_limit: { requests_per_second: 50, callers: { orders: { requests_per_second: 10 } } }\n",
            ),
            ("orders", "name: orders\n"),
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let limit = &config.services["inventory"].rate_limit;
    assert_eq!(limit.total.map(|t| t.burst), Some(50));
    assert_eq!(limit.callers.len(), 1);
}

#[test]
fn a_mirror_names_a_declared_service_which_callers_get_as_a_destination() {
    let mirror = |to: &str| {
        format!(
            "name: inventory\nroutes:\n  - name: stock\n    filters: [{{ type: RequestMirror, \
             requestMirror: {{ backendRef: {{ name: {to} }}, percent: 10 }} }}]\n"
        )
    };
    let errs = errors(
        "trust_domain: mesh.local\n",
        &[("inventory", &mirror("nowhere"))],
    );
    assert_eq!(
        errs,
        [
            "services/inventory.yaml: routes[0].filters[0].requestMirror.backendRef.name: service \"nowhere\" is not declared"
        ]
    );
    let config = parse(&files(
        "trust_domain: mesh.local\n",
        &[
            ("inventory", &mirror("shadow")),
            ("shadow", "name: shadow\n"),
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let route = &config.services["inventory"].policy.routes[0];
    let backends: Vec<_> = route
        .backends()
        .map(|(at, b)| (at, b.service.clone()))
        .collect();
    assert_eq!(
        backends,
        [(
            "filters[0].requestMirror.backendRef".to_owned(),
            "shadow".to_owned()
        )]
    );
}

#[test]
fn limits_have_defaults_and_bad_ones_name_their_field() {
    let config = parse(&files("trust_domain: mesh.local\n", &[])).unwrap();
    assert_eq!(config.api, ApiLimits::default());
    assert_eq!(config.registration, RegistrationSettings::default());
    assert_eq!(config.admin, AdminLimits::default());

    let config = parse(&files(
        "trust_domain: mesh.local\napi:\n  max_connections: 10\n  max_handshakes: 5\n  \
         request_timeout: 2s\n  rate_limits:\n    register_per_caller: { requests_per_second: 2 }\n\
         registration:\n  allowed_addresses: [10.0.0.0/8, \"fd00::1\"]\n  max_instances_per_service: 3\n\
         admin: { max_connections: 4, header_timeout: 1s }\n",
        &[],
    ))
    .unwrap();
    assert_eq!(config.api.max_connections, 10);
    assert_eq!(config.api.request_timeout, Duration::from_secs(2));
    assert_eq!(config.api.rate_limits.register_per_caller.burst, 2);
    assert_eq!(
        config.registration.allowed_addresses,
        [
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            "fd00::1/128".parse().unwrap()
        ]
    );
    assert_eq!(config.registration.max_instances_per_service, 3);
    assert_eq!(config.admin.header_timeout, Duration::from_secs(1));

    let unknown = errors(
        "trust_domain: mesh.local\napi:\n  rate_limits:\n    nope: {}\n",
        &[],
    );
    assert!(
        unknown[0].starts_with("mesh.yaml: api.rate_limits.nope: "),
        "{unknown:#?}"
    );
    let errors = errors(
        "trust_domain: mesh.local\napi:\n  max_connections: 0\n  max_handshakes: 2000\n  \
         max_concurrent_streams: 0\n  idle_timeout: soon\n  rate_limits:\n    \
         certify_per_source_ip: { requests_per_second: 0 }\n    \
         certify_per_service: { requests_per_second: 1, burst: 0 }\n\
         registration:\n  allowed_addresses: [10.0.0.0/40, example.com]\n  max_instances_per_service: 0\n\
         admin: { max_connections: 0 }\n",
        &[],
    );
    for expected in [
        "mesh.yaml: api.max_connections: must be at least 1",
        "mesh.yaml: api.max_handshakes: 2000 exceeds api.max_connections",
        "mesh.yaml: api.max_concurrent_streams: must be at least 1",
        "mesh.yaml: api.idle_timeout: invalid duration \"soon\"",
        "mesh.yaml: api.rate_limits.certify_per_source_ip.requests_per_second: 0: must be greater than 0",
        "mesh.yaml: api.rate_limits.certify_per_service.burst: must be at least 1",
        "mesh.yaml: registration.allowed_addresses[0]: \"10.0.0.0/40\": the prefix length must be 0 to 32",
        "mesh.yaml: registration.allowed_addresses[1]: \"example.com\" is not an IP address",
        "mesh.yaml: registration.max_instances_per_service: must be at least 1",
        "mesh.yaml: admin.max_connections: must be at least 1",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
}

/// The limits block in the docs is valid and is the defaults, as it says.
#[test]
fn the_documented_limits_are_the_defaults() {
    let block = readme_block("```yaml\n# mesh.yaml: limits, the defaults\n");
    let config = parse(&files(&format!("trust_domain: mesh.local\n{block}"), &[]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.api, ApiLimits::default());
    assert_eq!(config.registration, RegistrationSettings::default());
    assert_eq!(config.admin, AdminLimits::default());
}

#[test]
fn virtual_addresses_default_to_a_loopback_range_clear_of_127_0_0_1() {
    let config = parse(&files(
        "trust_domain: mesh.local\n",
        &[
            ("a", "name: a\nvirtual_address: 127.240.0.9\n"),
            ("b", "name: b\n"),
        ],
    ))
    .unwrap();
    assert_eq!(config.virtual_addresses.range.to_string(), "127.240.0.0/12");
    assert_eq!(
        config.services["a"].virtual_address,
        Some("127.240.0.9".parse().unwrap())
    );
    assert_eq!(config.services["b"].virtual_address, None);
}

#[test]
fn bad_virtual_address_ranges_name_the_field() {
    for (range, expected) in [
        ("nonsense", "is not an IP address or range"),
        ("127.240.0.0/40", "the prefix length must be 0 to 32"),
        (
            "127.240.0.1/12",
            "bits set past its prefix: the range is 127.240.0.0/12",
        ),
        ("127.0.0.0/8", "contains 127.0.0.1"),
        ("0.0.0.0/4", "contains the unspecified address"),
    ] {
        let errors = errors(
            &format!("trust_domain: mesh.local\nvirtual_addresses: {{ range: {range:?} }}\n"),
            &[],
        );
        assert_eq!(errors.len(), 1, "{range}: {errors:?}");
        assert!(
            errors[0].starts_with("mesh.yaml: virtual_addresses.range: ")
                && errors[0].contains(expected),
            "{range}: {errors:?}"
        );
    }
}

#[test]
fn a_range_too_small_for_the_services_is_refused() {
    let errors = errors(
        "trust_domain: mesh.local\nvirtual_addresses: { range: 127.240.0.0/31 }\n",
        &[("a", "name: a\n"), ("b", "name: b\n"), ("c", "name: c\n")],
    );
    assert_eq!(
        errors,
        [
            "mesh.yaml: virtual_addresses.range: 127.240.0.0/31 holds 2 usable addresses, fewer \
          than the 3 declared services: use a larger range"
        ]
    );
}

#[test]
fn pinned_virtual_addresses_must_be_usable_in_the_range_and_unique() {
    let errors = errors(
        "trust_domain: mesh.local\nvirtual_addresses: { range: 127.240.0.0/24 }\n",
        &[
            ("a", "name: a\nvirtual_address: 127.240.0.7\n"),
            ("b", "name: b\nvirtual_address: 127.240.0.7\n"),
            ("c", "name: c\nvirtual_address: 127.9.0.1\n"),
            ("d", "name: d\nvirtual_address: 127.240.0.255\n"),
            ("e", "name: e\nvirtual_address: inventory\n"),
            (
                "f",
                "name: f\nprotocol: tcp\nlisten: 127.240.0.20:6380\nport: 6379\n",
            ),
        ],
    );
    assert_eq!(
        errors,
        [
            "services/e.yaml: virtual_address: \"inventory\" is not an IP address (e.g. 127.240.0.10)",
            "services/b.yaml: virtual_address: 127.240.0.7 is already the virtual address of a",
            "services/c.yaml: virtual_address: 127.9.0.1 is outside virtual_addresses.range 127.240.0.0/24",
            "services/d.yaml: virtual_address: 127.240.0.255 is the network or broadcast address of virtual_addresses.range 127.240.0.0/24",
            "services/f.yaml: listen: 127.240.0.20:6380 is inside virtual_addresses.range 127.240.0.0/24: a listener there would take connections meant for a service's virtual address",
        ]
    );
}
