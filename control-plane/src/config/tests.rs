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
